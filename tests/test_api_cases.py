"""runner.fit gives the numbers `mixspec run` gives, on every shared case and on a spec.

The API goes through the run's own steps (prepare, build_design, execute_task); these
tests hold it to that: lme4's references for every case of tests/reference/cases.tsv,
and field-by-field equality with the records of a real `mixspec run`.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference"
SLOW = {"insteval_crossed", "students_slopes", "students_slopes_repeated_ml"}

with open(REF / "cases.tsv", newline="") as fh:
    CASES = list(csv.DictReader(fh, delimiter="\t"))


def _frame(dataset: str) -> pd.DataFrame:
    if dataset == "InstEval":
        return pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    return pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")


@pytest.mark.parametrize("case", [pytest.param(c, id=c["id"], marks=[pytest.mark.slow] if c["id"] in SLOW else [])
                                  for c in CASES])
def test_fit_matches_lme4_reference(case: dict) -> None:
    ref = json.loads((REF / f"{case['id']}.json").read_text())
    m = runner.fit(case["formula"], _frame(case["dataset"]), method=case["method"])
    assert m.objective <= ref["objective"] + 1e-4
    assert m.objective == pytest.approx(ref["objective"], abs=5e-3)
    assert m.nobs == ref["nobs"] and m.npar == ref["df"]
    assert m.singular == ref["singular"]
    assert m.ngroups == ref["ngroups"]
    fe = m.fixed_effects.set_index("lme4_name")
    for r in ref["fixed_effects"]:
        term = r["term"]  # InstEval's `service` stays a number beside the grouping factor dept:service
        assert fe.loc[term, "estimate"] == pytest.approx(r["estimate"], rel=1e-3, abs=1e-3)
    assert m.sigma == pytest.approx(ref["sigma"], rel=1e-3)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-10, abs_tol=1e-12)


def test_fit_equals_mixspec_run(tmp_path: Path) -> None:
    """Every model of specs/sleepstudy.yaml: runner.fit(...).to_record() == the run's record."""
    record = runner.run(ROOT / "specs" / "sleepstudy.yaml", tmp_path, use_cache=False, report=False, jobs=1)
    data = pd.read_csv(ROOT / "runner" / "data" / "examples" / "sleepstudy.csv")
    assert set(record.models) == {"intercept", "slopes", "uncorrelated"}
    for name, rec in record.models.items():
        mine = runner.fit(rec.formula, data, method=rec.method, name=name).to_record()
        for key in ("objective", "loglik", "aic", "bic", "sigma"):
            assert _same(getattr(mine, key), getattr(rec, key)), (name, key)
        assert np.allclose(mine.theta, rec.theta, rtol=1e-10, atol=1e-12)
        assert [f.lme4_name for f in mine.fixed_effects] == [f.lme4_name for f in rec.fixed_effects]
        for a, b in zip(mine.fixed_effects, rec.fixed_effects):
            assert _same(a.estimate, b.estimate) and _same(a.std_error, b.std_error)
        assert _same(mine.ml_refit.aic, rec.ml_refit.aic)
        assert (mine.converged, mine.singular, mine.nobs, mine.npar) == (rec.converged, rec.singular, rec.nobs,
                                                                         rec.npar)


def test_load_reads_the_run_back(tmp_path: Path) -> None:
    record = runner.run(ROOT / "specs" / "sleepstudy.yaml", tmp_path, use_cache=False, report=False, jobs=1)
    path = tmp_path / "sleepstudy" / "results.json"
    back = runner.load(path)
    assert back.models["slopes"].objective == record.models["slopes"].objective
    assert runner.load(path.read_text()).spec.name == "sleepstudy"
