"""The fit cache: keys follow the inputs; entries are JSON data, re-checked on this run's
design before reuse; anything unparsable, stale or forged is refitted with a warning."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from runner.design.model import Design, FixedColumn, RandomBlock
from runner.run.cache import FitCache, design_digest, fit_key

EXAMPLES = Path(__file__).resolve().parents[1] / "runner" / "data" / "examples"


def _design(y_shift: float = 0.0) -> Design:
    rng = np.random.default_rng(0)
    n = 20
    codes = np.repeat(np.arange(4), 5)
    return Design(
        response="y",
        y=rng.normal(size=n) + y_shift,
        X=np.column_stack([np.ones(n), np.arange(n, dtype=float)]),
        fixed=[FixedColumn("Intercept", "(Intercept)", None, None), FixedColumn("x", "x", "x", None)],
        blocks=[RandomBlock("g", "g", "unstructured", ["(Intercept)"], codes, ["a", "b", "c", "d"], np.ones((n, 1)))],
    )


def test_key_follows_design_method_and_options():
    d = _design()
    base = dict(method="REML", engine="lme", formula_repr="mf", formula_text="y ~ x + (1 | g)", data_sha256="s",
                verify=False)
    k = fit_key(d, **base)
    assert k == fit_key(_design(), **base)  # same inputs, same key
    assert k != fit_key(_design(1e-12), **base)  # one bit of y
    assert k != fit_key(d, **{**base, "method": "ML"})
    assert k != fit_key(d, **{**base, "engine": "statsmodels"})
    assert k != fit_key(d, **{**base, "verify": True})
    assert k != fit_key(d, **{**base, "data_sha256": "t"})
    d2 = _design()
    d2.blocks[0].codes = d2.blocks[0].codes[::-1].copy()
    assert design_digest(d2) != design_digest(d)


def test_nothing_in_runner_reads_a_pickle():
    """No code path loads pickles from files: pickle.load(s), Unpickler, pandas.read_pickle,
    joblib/dill loads, numpy.load with allow_pickle=True (process pools pickle in memory only)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "runner"
    # in-memory IPC, not files: a bootstrap worker loads the closure its own run sent it
    allowed = {("run/replicates.py", "cloudpickle.loads")}
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads", "Unpickler", "read_pickle"):
                base = node.value.id if isinstance(node.value, ast.Name) else ""
                if (path.relative_to(root).as_posix(), f"{base}.{node.attr}") in allowed:
                    continue
                if base in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") or node.attr in ("Unpickler",
                                                                                               "read_pickle"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and not (
                    isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{path.relative_to(root)}:{node.value.lineno} allow_pickle")
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "dill", "cloudpickle"):
                found.append(f"{path.relative_to(root)}:{node.lineno} from {node.module} import")
    assert found == []


# ---------------------------------------------------------------- with real fits


def _spec(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / "Dyestuff.csv", tmp_path / "Dyestuff.csv")
    spec = tmp_path / "dye.yaml"
    spec.write_text(
        "name: dye\ndata: {path: Dyestuff.csv}\n"
        "models:\n  batch: {formula: 'Yield ~ 1 + (1|Batch)'}\n  batch_ml: {formula: 'Yield ~ 1 + (1|Batch)', method: ML}\n"
    )
    return spec


@pytest.fixture
def fits(monkeypatch) -> list[str]:
    """Counts real engine fits (the executor is inline with jobs=1)."""
    import runner.run.tasks as tasks

    calls: list[str] = []
    real = tasks._fit

    def counting(design, method, engine, formula_text):
        calls.append(method)
        return real(design, method, engine, formula_text)

    monkeypatch.setattr(tasks, "_fit", counting)
    return calls


def _run(spec: Path, tmp_path: Path, **extra):
    from runner.run.api import run_spec

    kw = dict(out_dir=tmp_path / "out", jobs=1, quiet=True, cache_dir=tmp_path / "cache", report=False)
    from runner.run.options import RunOptions

    return run_spec(spec, RunOptions.of(**{**kw, **extra}))


def _record(outcome) -> dict:
    return json.loads(outcome.results_path.read_text())


def _cached(outcome) -> dict[str, bool]:
    return {k: v["cached"] for k, v in _record(outcome)["run"]["timings"].items()}


def _strip(outcome) -> dict:
    return {k: v for k, v in _record(outcome).items() if k != "run"}


def _key(spec: Path, task_id: str) -> str:
    from runner.run.plan import make_plan

    return next(t.key for t in make_plan(spec).tasks() if t.id == task_id)


def test_valid_entry_is_reused_and_gives_the_same_record(tmp_path, fits):
    spec = _spec(tmp_path)
    first = _run(spec, tmp_path)
    assert first.exit_code == 0 and _cached(first) == {"batch": False, "batch_ml": False}
    keys = {_key(spec, t) for t in ("batch", "batch#ml", "batch_ml")}
    assert len(fits) == len(keys)  # identical fits (same key) run once
    entries = sorted((tmp_path / "cache").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert len(files) == len(keys) and all(p.suffix == ".json" for p in files)
    doc = json.loads(files[0].read_text())  # plain data
    assert doc["format"] == 2 and "theta" in doc["fit"]
    second = _run(spec, tmp_path, out_dir=tmp_path / "out2")
    assert len(fits) == len(keys)  # nothing refitted
    assert _cached(second) == {"batch": True, "batch_ml": True}
    assert _strip(second) == _strip(first)  # recomputed numbers identical, warnings none
    assert _record(second)["warnings"] == []
    # the sidecar arrays (fitted values, residuals, BLUPs: recomputed from theta) are identical too
    import pandas as pd

    sidecars = sorted((tmp_path / "out" / "dye" / "fits").glob("*.parquet"))
    assert len(sidecars) >= 4
    for path in sidecars:
        again = tmp_path / "out2" / "dye" / "fits" / path.name
        assert pd.read_parquet(path).equals(pd.read_parquet(again)), path.name
    # lme4's REML criterion for Dyestuff (Yield ~ 1 + (1|Batch)): 319.6543
    assert _record(second)["models"]["batch"]["objective"] == pytest.approx(319.6543, abs=1e-3)
    third = _run(spec, tmp_path, use_cache=False)
    assert len(fits) == 2 * len(keys) and not any(_cached(third).values())


def _forge(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc["fit"])
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("what,task", [("estimate", "batch"), ("objective", "batch"), ("theta", "batch"),
                                       ("std_error", "batch#ml"), ("variance", "batch"), ("singular", "batch")])
def test_forged_entry_is_detected_and_refitted_with_a_warning(tmp_path, fits, what, task):
    """batch#ml is an ML refit without an inference step: its Wald rows are compared whole."""
    spec = _spec(tmp_path)
    first = _run(spec, tmp_path)
    path = FitCache(tmp_path / "cache").path(_key(spec, task))

    def edit(fit: dict) -> None:
        if what == "estimate":
            fit["fixed_effects"][0]["estimate"] += 5.0
        elif what == "objective":  # objective and everything derived from it, consistently
            for k in ("objective", "aic", "bic"):
                fit[k] -= 10.0
            fit["loglik"] += 5.0
        elif what == "theta":
            fit["theta"][0] *= 1.5
        elif what == "std_error":
            fit["fixed_effects"][0]["std_error"] *= 0.5
        elif what == "variance":
            fit["random_effects"][0]["variance"] *= 2
        else:
            fit["singular"] = not fit["singular"]

    _forge(path, edit)
    n = len(fits)
    second = _run(spec, tmp_path)
    assert len(fits) == n + 1  # that entry refitted, the others reused
    assert _cached(second) == {"batch": False, "batch_ml": True}
    warnings = _record(second)["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{task}: cached fit") and "refitted" in warnings[0]
    assert _strip(second)["models"] == _strip(first)["models"]  # the true numbers, not the forged ones
    third = _run(spec, tmp_path)  # the rewritten entry is valid again
    assert len(fits) == n + 1 and _record(third)["warnings"] == []


def test_forged_inference_numbers_are_recomputed(tmp_path, fits):
    """Where an inference step made the rows (df, p, intervals), they are recomputed on reuse."""
    spec = _spec(tmp_path)
    first = _run(spec, tmp_path)
    path = FitCache(tmp_path / "cache").path(_key(spec, "batch"))

    def edit(fit: dict) -> None:
        for row in fit["fixed_effects"]:
            row.update(std_error=1e-9, p_value=1e-300, ci_low=0.0, ci_high=0.0)

    _forge(path, edit)
    second = _run(spec, tmp_path)
    assert _strip(second)["models"] == _strip(first)["models"]
    assert _record(second)["models"]["batch"]["fixed_effects"][0]["std_error"] > 1.0


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[1, 2]", b'{"format": 2}', b"[" * 100_000,
                                     b'{"format": 2, "key": "x", "fit": {}}'])
def test_unparsable_entries_are_refitted_with_a_warning(tmp_path, fits, content):
    spec = _spec(tmp_path)
    _run(spec, tmp_path)
    FitCache(tmp_path / "cache").path(_key(spec, "batch")).write_bytes(content)
    second = _run(spec, tmp_path)
    assert second.exit_code == 0 and _cached(second) == {"batch": False, "batch_ml": True}
    assert len(_record(second)["warnings"]) == 1 and "not reused" in _record(second)["warnings"][0]


class _Planted:
    """A pickle that, when unpickled, creates a folder (the attack: code run from the cache)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


_UNPICKLED: list[str] = []
_HOOKED = False


def _audit(event: str, args) -> None:
    if event == "pickle.find_class":
        _UNPICKLED.append(f"{args}")


def test_planted_pickle_is_never_unpickled(tmp_path, fits):
    global _HOOKED
    if not _HOOKED:  # audit hooks cannot be removed: install one that only records
        sys.addaudithook(_audit)
        _HOOKED = True
    spec = _spec(tmp_path)
    _run(spec, tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Planted(marker))
    cache = FitCache(tmp_path / "cache")
    for task_id in ("batch", "batch#ml", "batch_ml"):
        key = _key(spec, task_id)
        json_path = cache.path(key)
        json_path.write_bytes(payload)  # where an entry is read
        json_path.with_suffix(".fit").write_bytes(payload)  # where format 1 kept its pickles
        json_path.with_suffix(".npz").write_bytes(payload)
    _UNPICKLED.clear()
    second = _run(spec, tmp_path)
    assert not marker.exists()
    assert _UNPICKLED == []
    assert second.exit_code == 0 and not any(_cached(second).values())
    keys = {_key(spec, t) for t in ("batch", "batch#ml", "batch_ml")}
    assert len(_record(second)["warnings"]) == len(keys)  # one per entry, not per task
    pickle.loads(payload)  # the planted payload does run when unpickled: the test can fail
    assert marker.exists() and _UNPICKLED


def test_statsmodels_and_verify_fits_are_not_cached(tmp_path):
    from runner.fit import Convergence, Fit
    from runner.run.tasks import TaskResult

    fit = Fit(engine="statsmodels", method="ML", formula="y ~ 1 + (1 | g)", nobs=20, npar=3, ngroups={"g": 4},
              theta=[0.5], theta_names=["g.(Intercept)"], sigma=1.0, loglik=-10.0, objective=20.0, aic=26.0,
              bic=29.0, fixed_effects=[], random_effects=[], converged=True, singular=False,
              convergence=Convergence(converged=True, optimizer="test"))
    cache = FitCache(tmp_path)
    cache.put("ab" * 32, TaskResult("m", fit, None, 0.5))
    assert not cache.path("ab" * 32).exists()
    cache.put("ab" * 32, TaskResult("m", fit.model_copy(update={"engine": "lme"}), None, 0.5, verify=object()))
    assert not cache.path("ab" * 32).exists()


def test_glmm_fits_are_not_read_from_the_cache(tmp_path):
    """A GLMM's criterion is not the linear one: its entries are never reused (or written)."""
    from types import SimpleNamespace

    cache = FitCache(tmp_path)
    task = SimpleNamespace(engine="lme", verify=False, glmm=("binomial", "logit", 1), key="ab" * 32)
    assert not cache.cacheable(task)
    assert cache.cacheable(SimpleNamespace(engine="lme", verify=False, glmm=None))
    assert not cache.cacheable(SimpleNamespace(engine="statsmodels", verify=False, glmm=None))


def test_a_consistent_forgery_away_from_the_optimum_is_caught_by_the_convergence_check(tmp_path, fits):
    """Every number recomputed consistently at another theta, marked converged: only lme4's
    gradient check at that theta can tell, and it does."""
    from runner.fit import Fit
    from runner.run.cache_verify import derive
    from runner.run.plan import make_plan

    spec = _spec(tmp_path)
    first = _run(spec, tmp_path)
    task = next(t for t in make_plan(spec).tasks() if t.id == "batch#ml")
    path = FitCache(tmp_path / "cache").path(task.key)
    doc = json.loads(path.read_text())
    fit = Fit.model_validate(doc["fit"])
    assert fit.converged
    moved = fit.model_copy(update={"theta": [fit.theta[0] * 1.3]})
    from runner.engines.lme.criterion import Criterion
    from runner.engines.lme.structure import build_problem

    moved.objective = Criterion(build_problem(task.design), "ML")(np.array(moved.theta))
    fresh = derive(task.design, moved)[0]
    forged = moved.model_copy(update=fresh)
    assert forged.objective > fit.objective + 0.01  # a worse fit, claimed converged
    doc["fit"] = json.loads(forged.model_dump_json())
    path.write_text(json.dumps(doc))
    n = len(fits)
    second = _run(spec, tmp_path)
    assert len(fits) == n + 1
    warnings = _record(second)["warnings"]
    assert len(warnings) == 1 and "convergence check fails" in warnings[0]
    assert _strip(second)["models"] == _strip(first)["models"]


def test_a_fifo_or_symlink_entry_is_refitted_without_blocking_or_following(tmp_path, fits):
    spec = _spec(tmp_path)
    _run(spec, tmp_path)
    cache = FitCache(tmp_path / "cache")
    secret = tmp_path / "secret.json"
    secret.write_text('{"format": 2, "token": "s3cr3t"}')
    fifo_path = cache.path(_key(spec, "batch"))
    fifo_path.unlink()
    os.mkfifo(fifo_path)  # reading would block forever
    link_path = cache.path(_key(spec, "batch_ml"))
    link_path.unlink()
    link_path.symlink_to(secret)
    second = _run(spec, tmp_path)
    warnings = _record(second)["warnings"]
    assert len(warnings) == 2 and any("not a regular file" in w for w in warnings)
    assert any("symlink is not followed" in w for w in warnings)
    assert "s3cr3t" not in second.results_path.read_text()


def test_no_entry_is_written_through_a_planted_symlink(tmp_path):
    from runner.fit import Convergence, Fit
    from runner.run.tasks import TaskResult

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "cache"
    root.mkdir()
    (root / "ab").symlink_to(elsewhere)
    fit = Fit(engine="lme", method="ML", formula="y ~ 1 + (1 | g)", nobs=20, npar=3, ngroups={"g": 4},
              theta=[0.5], theta_names=["g.(Intercept)"], sigma=1.0, loglik=-10.0, objective=20.0, aic=26.0,
              bic=29.0, fixed_effects=[], random_effects=[], converged=True, singular=False,
              convergence=Convergence(converged=True, optimizer="test"))
    FitCache(root).put("ab" * 32, TaskResult("m", fit, None, 0.5))
    assert list(elsewhere.iterdir()) == []
    FitCache(root).put("cd" * 32, TaskResult("m", fit, None, 0.5))
    assert FitCache(root).path("cd" * 32).is_file()  # an ordinary entry is written
