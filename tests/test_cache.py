"""The fit cache: keys follow the inputs, entries are digest-checked, damage means refit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from runner.design.model import Design, FixedColumn, RandomBlock
from runner.fit import Convergence, Fit
from runner.run.cache import FitCache, design_digest, fit_key
from runner.run.tasks import TaskResult

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


def _fit(loglik: float) -> Fit:
    return Fit(engine="lme", method="ML", formula="y ~ x + (1 | g)", nobs=20, npar=4, ngroups={"g": 4},
               theta=[0.5], theta_names=["g.(Intercept)"], sigma=1.0, loglik=loglik, objective=-2 * loglik,
               aic=-2 * loglik + 8, bic=-2 * loglik + 20, fixed_effects=[], random_effects=[], converged=True,
               singular=False, convergence=Convergence(converged=True, optimizer="test"))


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


def test_roundtrip_and_damaged_entries_are_rejected(tmp_path):
    cache = FitCache(tmp_path)
    cache.put("ab" * 32, TaskResult("m", _fit(-10.0), None, 0.5))
    got = cache.get("ab" * 32)
    assert isinstance(got, TaskResult) and got.fit.loglik == -10.0 and got.fit.aic == 28.0
    path = cache.path("ab" * 32)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    assert cache.get("ab" * 32) is None and cache.rejected == ["ab" * 32]
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    path.write_bytes(bytes(flipped))  # corrupt
    assert cache.get("ab" * 32) is None
    path.write_bytes(b"")
    assert cache.get("ab" * 32) is None
    assert cache.get("cd" * 32) is None  # absent
    assert FitCache(tmp_path, enabled=False).get("ab" * 32) is None
    assert not list(tmp_path.rglob(".tmp-*"))  # no temp files left behind


# ---------------------------------------------------------------- with real fits


def _spec(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLES / "Dyestuff.csv", tmp_path / "Dyestuff.csv")
    spec = tmp_path / "dye.yaml"
    spec.write_text(
        "name: dye\ndata: {path: Dyestuff.csv}\n"
        "models:\n  batch: {formula: 'Yield ~ 1 + (1|Batch)'}\n  batch_ml: {formula: 'Yield ~ 1 + (1|Batch)', method: ML}\n"
    )
    return spec


def _timings(path: Path) -> dict:
    return json.loads(path.read_text())["run"]["timings"]


def test_second_run_is_cached_and_corrupt_entry_refitted(tmp_path):
    from runner.run.api import run_spec

    spec, cache_dir = _spec(tmp_path), tmp_path / "cache"
    kw = dict(out_dir=tmp_path / "out", jobs=1, quiet=True, cache_dir=cache_dir, report=False)
    first = run_spec(spec, **kw)
    assert first.exit_code == 0
    assert {k: v["cached"] for k, v in _timings(first.results_path).items()} == {"batch": False, "batch_ml": False}
    text1 = first.results_path.read_text()
    second = run_spec(spec, **kw)
    assert {k: v["cached"] for k, v in _timings(second.results_path).items()} == {"batch": True, "batch_ml": True}
    text2 = second.results_path.read_text()
    strip = lambda t: {k: v for k, v in json.loads(t).items() if k != "run"}  # noqa: E731
    assert strip(text1) == strip(text2)
    # batch's ML refit and batch_ml are the same fit: one entry serves both
    entries = sorted(cache_dir.rglob("*.fit"))
    assert len(entries) == 2
    from runner.run.cache import FitCache
    from runner.run.plan import make_plan

    key = next(t.key for t in make_plan(spec).tasks() if t.id == "batch")
    damaged = FitCache(cache_dir).path(key)
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated
    third = run_spec(spec, **kw)
    assert {k: v["cached"] for k, v in _timings(third.results_path).items()} == {"batch": False, "batch_ml": True}
    assert strip(third.results_path.read_text()) == strip(text1)
    assert FitCache(cache_dir).get(key) is not None  # rewritten whole
    fourth = run_spec(spec, **{**kw, "use_cache": False})
    assert not any(v["cached"] for v in _timings(fourth.results_path).values())
