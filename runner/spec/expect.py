"""The `expect:` grammar: checks a CI run asserts after fitting, parsed without eval.

Accepted forms (the YAML mapping under `expect:`):

    best: NAME                       # NAME ranks first by the spec's criterion
    fixed: ["TERM > 0", "TERM < -1.5", "TERM in [a, b]"]   # in every fitted model with TERM
    fixed: {NAME: ["TERM > 0"]}      # or per model
    converged: all                   # or a list of model names, or any (absent = all)
    singular: none                   # or a list of model names that must not be singular
    delta_aic: {NAME: "< 2"}         # NAME's AIC delta in its ranking group (<, <=, >, >=)

TERM is a fixed-effect name as R and lme4 print it (`sexM`, `(Intercept)`); the spelling
of schema 1 (formulaic's `sex[T.M]`, `Intercept`) is accepted and read as R's name.
A small regex grammar keeps user text out of `eval` and gives messages that say what
was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["best", "fixed", "converged", "singular", "delta_aic"]
Op = Literal[">", "<", ">=", "<=", "in"]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_COMPARISON = re.compile(rf"^\s*(?P<term>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUMBER})\s*$")
_INTERVAL = re.compile(
    rf"^\s*(?P<term>.+?)\s+in\s*\[\s*(?P<low>{_NUMBER})\s*,\s*(?P<high>{_NUMBER})\s*\]\s*$"
)
_BOUND = re.compile(rf"^\s*(?P<op>>=|<=|>|<)\s*(?P<value>{_NUMBER})\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

KEYS: tuple[str, ...] = ("best", "fixed", "converged", "singular", "delta_aic")


@dataclass(frozen=True)
class Condition:
    """`value OP bound` or `value in [low, high]`, checked without eval."""

    op: Op
    low: float  # the bound for one-sided ops; the interval's lower end for `in`
    high: float | None = None

    def holds(self, value: float) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if self.op == ">":
            return value > self.low
        if self.op == "<":
            return value < self.low
        if self.op == ">=":
            return value >= self.low
        if self.op == "<=":
            return value <= self.low
        assert self.high is not None
        return self.low <= value <= self.high

    def text(self) -> str:
        if self.op == "in":
            return f"in [{_fmt(self.low)}, {_fmt(self.high)}]"
        return f"{self.op} {_fmt(self.low)}"


@dataclass(frozen=True)
class Expectation:
    """One check; `text` is the canonical one-line form shown in results and reports."""

    kind: Kind
    text: str
    model: str | None = None  # best/delta_aic/per-model fixed; None = all models
    term: str | None = None  # fixed only
    condition: Condition | None = None  # fixed and delta_aic
    models: tuple[str, ...] | None = None  # converged/singular: None = all models


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:g}"


def parse_condition_term(text: str) -> tuple[str, Condition]:
    """`"age > 0"` -> ("age", Condition(">", 0)); `"age in [1, 2]"` likewise; else ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string like 'TERM > 0' or 'TERM in [a, b]', got {text!r}")
    m = _INTERVAL.match(text)
    if m:
        low, high = float(m["low"]), float(m["high"])
        if low > high:
            raise ValueError(f"{text!r}: interval [{low:g}, {high:g}] is empty (low > high)")
        return m["term"].strip(), Condition("in", low, high)
    m = _COMPARISON.match(text)
    if m:
        term = m["term"].strip()
        if not term or term[-1] in "<>=!":
            raise ValueError(f"{text!r}: expected 'TERM > 0' etc. with a fixed-effect term before {m['op']}")
        return term, Condition(m["op"], float(m["value"]))  # type: ignore[arg-type]
    raise ValueError(
        f"{text!r}: expected 'TERM > 0', 'TERM < -1.5', 'TERM >= x', 'TERM <= x' or 'TERM in [a, b]'"
    )


def parse_bound(text: Any) -> Condition:
    """`"< 2"` -> Condition("<", 2); a bare number n means `<= n`."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return Condition("<=", float(text))
    if not isinstance(text, str):
        raise ValueError(f"expected a bound like '< 2', got {text!r}")
    m = _BOUND.match(text)
    if not m:
        raise ValueError(f"{text!r}: expected a bound like '< 2', '<= 2', '> 4' or '>= 4'")
    return Condition(m["op"], float(m["value"]))  # type: ignore[arg-type]


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value.strip()):
        raise ValueError(f"expect.{key}: expected a model name, got {value!r}")
    return value.strip()


def _names(value: Any, key: str, everything: str) -> tuple[str, ...] | None:
    """`all`/`none` (the keyword of this key) -> None (every model); else a list of names."""
    if isinstance(value, str) and value.strip().lower() == everything:
        return None
    if isinstance(value, list) and value:
        return tuple(_name(v, key) for v in value)
    raise ValueError(f"expect.{key}: expected '{everything}' or a list of model names, got {value!r}")


def _fixed(value: Any) -> list[Expectation]:
    out: list[Expectation] = []
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        per_model: list[tuple[str | None, Any]] = [(None, v) for v in value]
    elif isinstance(value, dict):
        per_model = []
        for model, items in value.items():
            model = _name(model, "fixed")
            items = [items] if isinstance(items, str) else items
            if not isinstance(items, list):
                raise ValueError(f"expect.fixed.{model}: expected a list like ['age > 0'], got {items!r}")
            per_model.extend((model, v) for v in items)
    else:
        raise ValueError(f"expect.fixed: expected a list like ['age > 0'], got {value!r}")
    for model, item in per_model:
        try:
            term, cond = parse_condition_term(item)
        except ValueError as exc:
            raise ValueError(f"expect.fixed: {exc}") from None
        from runner.design.naming import r_name

        where = f"{model}: " if model else ""
        # the check reads as written; the term it looks up is R's name (`sex[T.M]`, schema 1, is `sexM`)
        out.append(Expectation("fixed", f"fixed: {where}{term} {cond.text()}", model=model, term=r_name(term),
                               condition=cond))
    return out


def parse_expectations(raw: dict[str, Any] | None) -> list[Expectation]:
    """The `expect:` mapping -> checks in a stable order; ValueError says what is wrong."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ValueError(f"expect: expected a mapping with keys {', '.join(KEYS)}, got {raw!r}")
    unknown = [k for k in raw if k not in KEYS]
    if unknown:
        raise ValueError(f"expect: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    out: list[Expectation] = []
    for key in KEYS:
        if raw.get(key) is None:  # absent, or None from a pydantic dump
            continue
        value = raw[key]
        if key == "best":
            name = _name(value, key)
            out.append(Expectation("best", f"best: {name}", model=name))
        elif key == "fixed":
            out.extend(_fixed(value))
        elif key == "converged":
            if isinstance(value, str) and value.strip().lower() == "any":  # no model's convergence gates the run
                out.append(Expectation("converged", "converged: any", models=()))
                continue
            names = _names(value, key, "all")
            out.append(Expectation("converged", f"converged: {'all' if names is None else ', '.join(names)}", models=names))
        elif key == "singular":
            names = _names(value, key, "none")
            out.append(Expectation("singular", f"singular: {'none' if names is None else 'not ' + ', '.join(names)}", models=names))
        elif key == "delta_aic":
            if not isinstance(value, dict) or not value:
                raise ValueError(f"expect.delta_aic: expected a mapping like {{slopes: '< 2'}}, got {value!r}")
            for model, bound in value.items():
                name = _name(model, key)
                try:
                    cond = parse_bound(bound)
                except ValueError as exc:
                    raise ValueError(f"expect.delta_aic.{name}: {exc}") from None
                out.append(Expectation("delta_aic", f"delta_aic: {name} {cond.text()}", model=name, condition=cond))
    return out

