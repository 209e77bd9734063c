"""`mixspec diff OLD.json NEW.json`: what changed between two runs of a spec.

For CI on a pull request: models added or removed, status changes, estimates, SDs,
variances, theta, objective and logLik moved beyond a relative tolerance, ranking
order and best model, test p-values, expectation results. The `run` section
(timings) is ignored. Exit 1 when anything changed.

Both files are untrusted: each is parsed with limits (nesting depth, integer size)
and validated against the results.json schema before anything is compared, so a
broken or hostile file is a one-line error (exit 2), never a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.run.options import EXIT_FAILED, EXIT_OK


@dataclass
class DiffReport:
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.changes else EXIT_OK

    def text(self) -> str:
        if not self.changes:
            return "no changes\n"
        return "".join(f"- {c}\n" for c in self.changes)


MAX_DEPTH = 64  # results.json nests about 6 deep; far below the parser's recursion limit
MAX_INT_DIGITS = 20  # every integer in results.json fits in 64 bits


def _moved(a: Any, b: Any, rtol: float, atol: float = 1e-12) -> bool:
    """Whether a value changed beyond the tolerance; NaN equals NaN, +-inf equals only itself."""
    if a is None or b is None:
        return (a is None) != (b is None)
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a != b
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)):  # inf - inf is NaN and inf > inf is False: compare exactly
        return not (a == b or (math.isnan(a) and math.isnan(b)))
    return abs(a - b) > atol + rtol * max(abs(a), abs(b))


def _num(label: str, a: Any, b: Any, rtol: float, out: list[str]) -> None:
    if _moved(a, b, rtol):
        out.append(f"{label}: {a!r} -> {b!r}")


def _keyed(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(r.get(k) for k in key): r for r in rows}


def _model(name: str, old: dict[str, Any], new: dict[str, Any], rtol: float, out: list[str]) -> None:
    if old.get("status") != new.get("status"):
        out.append(f"{name}: status {old.get('status')} -> {new.get('status')}"
                   + (f" ({new.get('error')})" if new.get("error") else ""))
        return
    for k in ("formula", "engine", "method", "nobs", "npar", "converged", "singular"):
        if old.get(k) != new.get(k):
            out.append(f"{name}: {k} {old.get(k)!r} -> {new.get(k)!r}")
    for k in ("objective", "loglik", "aic", "bic", "sigma"):
        _num(f"{name}: {k}", old.get(k), new.get(k), rtol, out)
    for k in ("loglik", "aic", "bic"):
        _num(f"{name}: ml_refit.{k}", (old.get("ml_refit") or {}).get(k), (new.get("ml_refit") or {}).get(k), rtol, out)
    t_old, t_new = old.get("theta") or [], new.get("theta") or []
    if len(t_old) != len(t_new):
        out.append(f"{name}: theta has {len(t_old)} -> {len(t_new)} values")
    else:
        for i, (a, b) in enumerate(zip(t_old, t_new)):
            _num(f"{name}: theta[{i}]", a, b, rtol, out)
    fo, fn = _keyed(old.get("fixed_effects") or [], ("term",)), _keyed(new.get("fixed_effects") or [], ("term",))
    for term in fo.keys() - fn.keys():
        out.append(f"{name}: fixed effect {term[0]} removed")
    for term in fn.keys() - fo.keys():
        out.append(f"{name}: fixed effect {term[0]} added")
    for term in [t for t in fo if t in fn]:
        for f in ("estimate", "std_error"):
            _num(f"{name}: {term[0]} {f}", fo[term].get(f), fn[term].get(f), rtol, out)
    key = ("id", "group", "term", "term2")
    ro, rn = _keyed(old.get("random_effects") or [], key), _keyed(new.get("random_effects") or [], key)
    for rk in ro.keys() ^ rn.keys():
        label = f"{rk[1]} {rk[2]}" + (f"/{rk[3]}" if rk[3] else "")
        out.append(f"{name}: random effect {label} {'removed' if rk in ro else 'added'}")
    for rk in [r for r in ro if r in rn]:
        label = f"{rk[1]} {rk[2] or 'residual'}" + (f"/{rk[3]}" if rk[3] else "")
        for f in ("sd", "variance", "corr"):
            _num(f"{name}: {label} {f}", ro[rk].get(f), rn[rk].get(f), rtol, out)


def _ranking(old: list[dict[str, Any]], new: list[dict[str, Any]], rtol: float, out: list[str]) -> None:
    def orders(groups: list[dict[str, Any]]) -> list[list[str]]:
        return [[r["model"] for r in g.get("rows", [])] for g in groups]

    if orders(old) != orders(new):
        out.append(f"ranking order: {orders(old)} -> {orders(new)}")
        return
    for go, gn in zip(old, new):
        for ro, rn in zip(go.get("rows", []), gn.get("rows", [])):
            _num(f"ranking {ro['model']} delta", ro.get("delta"), rn.get("delta"), rtol, out)
            if ro.get("criterion") != rn.get("criterion") or ro.get("method") != rn.get("method"):
                out.append(f"ranking {ro['model']}: {ro.get('criterion')}/{ro.get('method')} -> "
                           f"{rn.get('criterion')}/{rn.get('method')}")


def _tests(old: list[dict[str, Any]], new: list[dict[str, Any]], rtol: float, out: list[str]) -> None:
    to, tn = _keyed(old, ("small", "large")), _keyed(new, ("small", "large"))
    for k in to.keys() ^ tn.keys():
        out.append(f"test {k[0]} vs {k[1]} {'removed' if k in to else 'added'}")
    for k in [k for k in to if k in tn]:
        for f in ("chisq", "df", "p_value", "p_value_boundary"):
            _num(f"test {k[0]} vs {k[1]} {f}", to[k].get(f), tn[k].get(f), rtol, out)


def diff_results(old: dict[str, Any], new: dict[str, Any], rtol: float = 1e-6) -> DiffReport:
    """Everything that changed between two results.json records, beyond `rtol`."""
    out: list[str] = []
    if old.get("schema_version") != new.get("schema_version"):
        out.append(f"schema_version {old.get('schema_version')} -> {new.get('schema_version')}")
    if (old.get("data") or {}).get("sha256") != (new.get("data") or {}).get("sha256"):
        out.append("data sha256 changed")
    mo, mn = old.get("models") or {}, new.get("models") or {}
    for name in mo:
        if name not in mn:
            out.append(f"model {name} removed")
    for name in mn:
        if name not in mo:
            out.append(f"model {name} added")
    for name in mo:
        if name in mn:
            _model(name, mo[name], mn[name], rtol, out)
    _ranking(old.get("ranking") or [], new.get("ranking") or [], rtol, out)
    _tests(old.get("tests") or [], new.get("tests") or [], rtol, out)
    eo = {e["text"]: e.get("passed") for e in old.get("expectations") or []}
    en = {e["text"]: e.get("passed") for e in new.get("expectations") or []}
    for text in sorted(eo.keys() | en.keys()):
        if eo.get(text) != en.get(text):
            state = {True: "pass", False: "fail", None: "absent"}
            out.append(f"expectation {text!r}: {state[eo.get(text)]} -> {state[en.get(text)]}")
    return DiffReport(out)


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (results.json has none above 64 bits)")
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth, iteratively (a recursive walk is what a hostile file would overflow)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_record(path: str | Path) -> dict[str, Any]:
    """One results.json as a dict, parsed with limits and checked against the results schema.

    ValueError (with the file name and the first problem) for anything that is not one
    spec's record; `--json` of a several-spec run prints a list, refused with the reason.
    """
    from pydantic import ValidationError

    from runner.results import ResultsRecord

    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"), parse_int=_int)
    except RecursionError:
        raise ValueError(f"{path}: not a results.json: nested more than {MAX_DEPTH} levels deep") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a results.json: not UTF-8 text ({exc.reason})") from None
    except ValueError as exc:  # JSONDecodeError or _int's refusal
        raise ValueError(f"{path}: not a results.json: {exc}") from None
    if _depth(data) > MAX_DEPTH:
        raise ValueError(f"{path}: not a results.json: nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict) or "models" not in data:
        what = f"a list of {len(data)} records" if isinstance(data, list) else "not a results record"
        raise ValueError(f"{path} is {what}: diff compares two results.json files of one spec "
                         "(reports/<spec>/results.json)")
    try:
        ResultsRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValueError(f"{path}: not a valid results.json: {where}: {first['msg']}{more}") from None
    return data


def diff_files(old_path: str | Path, new_path: str | Path, rtol: float = 1e-6) -> DiffReport:
    """`diff_results` of two results.json files, each validated by `load_record` first."""
    return diff_results(load_record(old_path), load_record(new_path), rtol)
