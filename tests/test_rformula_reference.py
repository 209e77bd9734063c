"""R's formula language against R itself: model.matrix names and values, and lmer fits.

The references (tests/reference_rformula/*.json) come from make_refs.R over cases.tsv:
for each formula R's column names, the first rows and column sums of lme4's fixed-effects
matrix, the random terms' column names, and lmer's estimates, SEs, criterion and theta.
The engine's usual tolerances apply (tests/test_lme_reference.py).
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import build_design
from runner.design.model import Design
from runner.engines import fit_design
from runner.engines.lme.criterion import Criterion
from runner.engines.lme.structure import build_problem
from runner.fit import Fit
from runner.formula import parse_formula, required_variables

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference_rformula"

with open(REF / "cases.tsv", newline="") as fh:
    CASES = {c["id"]: c for c in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)}


@cache
def data(name: str) -> pd.DataFrame:
    path = ROOT / "runner" / "data" / "examples" / f"{name}.csv"
    return pd.read_csv(path if path.exists() else REF / "data" / f"{name}.csv")


def reference(case_id: str) -> dict:
    return json.loads((REF / f"{case_id}.json").read_text())


@cache
def design(case_id: str) -> Design:
    case = CASES[case_id]
    mf = parse_formula(case["formula"])
    full = data(case["dataset"])
    kept = full.dropna(subset=sorted(required_variables(mf))).reset_index(drop=True)
    contrasts = dict(kv.split("=") for kv in case["contrasts"].split(";") if kv)
    # variables are evaluated on all rows (R's model.frame), then rows with NA are dropped
    return build_design(mf, kept, learn_frame=full, contrasts=contrasts)


@cache
def fitted(case_id: str) -> Fit:
    case = CASES[case_id]
    return fit_design(design(case_id), case["method"], formula_text=case["formula"])


def close(a: float, b: float, rel: float, abs_: float) -> bool:
    return abs(a - b) <= max(rel * abs(b), abs_)


@pytest.mark.parametrize("case_id", list(CASES))
def test_model_matrix_as_r(case_id: str) -> None:
    ref = reference(case_id)
    d = design(case_id)
    assert [c.lme4_name for c in d.fixed] == ref["columns"]
    assert [c.term for c in d.fixed] == ref["columns"]
    assert d.nobs == ref["nobs"]
    np.testing.assert_allclose(d.X[:5], np.asarray(ref["head"], dtype=float), rtol=1e-10, atol=1e-12)
    scale = np.abs(d.X).sum(axis=0)
    np.testing.assert_allclose(d.X.sum(axis=0), ref["colsums"], rtol=1e-9, atol=1e-9 * float(scale.max()))
    np.testing.assert_allclose(d.y[:5], ref["y_head"], rtol=1e-12)
    cnms = {g: [c] if isinstance(c, str) else c for g, c in ref["cnms"].items()}  # R's JSON unboxes length 1
    assert {b.group: b.column_names for b in d.blocks} == cnms
    if ref["offset"] is not None:
        np.testing.assert_allclose(d.offset[:5], ref["offset"], rtol=1e-12)
    else:
        assert d.offset is None


@pytest.mark.parametrize("case_id", list(CASES))
def test_criterion_at_lme4_theta(case_id: str) -> None:
    ref = reference(case_id)
    crit = Criterion(build_problem(design(case_id)), CASES[case_id]["method"])
    assert crit(np.atleast_1d(np.asarray(ref["theta"], dtype=float))) == pytest.approx(ref["objective"], rel=1e-8)


@pytest.mark.parametrize("case_id", list(CASES))
def test_fit_matches_lme4(case_id: str) -> None:
    ref = reference(case_id)
    fit = fitted(case_id)
    assert fit.objective <= ref["objective"] + 1e-4
    tol_sd = 1e-4 * ref["sigma"]
    for mine, theirs in zip(fit.fixed_effects, ref["fixed"], strict=True):
        assert mine.lme4_name == theirs["term"]
        assert abs(mine.estimate - theirs["estimate"]) <= 1e-3 * theirs["std_error"]
        assert close(mine.std_error, theirs["std_error"], 1e-3, tol_sd)
    theta = np.atleast_1d(np.asarray(ref["theta"], dtype=float))
    for mine, theirs in zip(fit.theta, theta, strict=True):
        assert close(mine, theirs, 1e-3, 1e-4 * float(np.max(np.abs(theta))))
    assert close(fit.sigma, ref["sigma"], 1e-3, tol_sd)


def test_power_outside_I_warns() -> None:
    assert any("did you mean I(Days^2)?" in w.message for w in design("power_outside_I").warnings)


def test_scale_and_poly_learned_before_missing_rows_are_dropped() -> None:
    """R's model.frame evaluates scale() and poly() on all rows, then drops rows with NA."""
    d = design("na_scale_poly")
    full = data("sleepstudy_na")
    mean, sd = full["Days"].mean(), full["Days"].std(ddof=1)
    assert d.formula_state["scale(Days)"] == pytest.approx({"center": mean, "scale": sd})
    assert d.dropped_fixed == ["poly(Days, 2)1"]
    json.dumps(d.formula_state)  # plain data: kept for predictions on new rows
