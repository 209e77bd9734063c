"""Profile intervals against lme4 1.1-31's confint(method = "profile", oldNames = FALSE)
(tests/reference_inference/inference.json): every bound within 1% of the interval's width."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runner.design.build import build_design
from runner.engines import fit_design
from runner.formula import parse_formula
from runner.inference.apply import InferenceSettings, apply_inference

ROOT = Path(__file__).resolve().parents[1]
REF = json.loads((ROOT / "tests" / "reference_inference" / "inference.json").read_text())
SLOW = {"students_intercepts", "students_slopes"}  # 11,520 rows: a minute or more each


def _param(case: str) -> object:
    return pytest.param(case, id=case, marks=[pytest.mark.slow] if case in SLOW else [])


@pytest.mark.parametrize("case", [_param(c) for c in REF if REF[c].get("profile_ci")])
def test_profile_matches_lme4(case: str) -> None:
    c = REF[case]
    data = pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{c['dataset']}.csv")
    design = build_design(parse_formula(c["formula"]), data)
    fit = fit_design(design, c["method"], formula_text=c["formula"])
    out = apply_inference(design, fit, InferenceSettings(ci="profile"))
    assert out.ci_method == "profile"
    rows = {r.parameter: r for r in out.confint}
    assert list(rows) == [r["parameter"] for r in c["profile_ci"]]
    for ref in c["profile_ci"]:
        row = rows[ref["parameter"]]
        width = ref["high"] - ref["low"]
        assert row.low == pytest.approx(ref["low"], abs=0.01 * width), ref["parameter"]
        assert row.high == pytest.approx(ref["high"], abs=0.01 * width), ref["parameter"]
    for fe in out.fixed_effects:  # the REML estimates, the ML profile's bounds
        assert (fe.ci_low, fe.ci_high) == (rows[fe.lme4_name].low, rows[fe.lme4_name].high)
        assert rows[fe.lme4_name].estimate == fe.estimate
    assert out.fixed_effects[0].estimate == fit.fixed_effects[0].estimate
