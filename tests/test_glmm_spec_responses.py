"""GLMM responses written in a spec as glm reads them: `cbind(successes, failures)` and a
two-level text factor, fitted end to end (`mixspec run`'s path) against glmer 1.1-31
(tests/reference_glmm/extra.json, made by tests/reference_glmm/lme4_glmm.R)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from run_helpers import run_quiet, write_spec

ROOT = Path(__file__).parent / "reference_glmm"
EXTRA = json.loads((ROOT / "extra.json").read_text())


def _check(record, ref) -> None:
    assert record.status == "ok" and record.family == "binomial"
    assert record.loglik >= ref["loglik"] - 1e-3
    fe = {f.lme4_name: f for f in record.fixed_effects}
    for r in ref["fixed_effects"]:
        got = fe[r["term"]]
        assert abs(got.estimate - r["estimate"]) <= 0.02 * r["std_error"]
        assert got.std_error == pytest.approx(r["std_error"], rel=0.015)  # cbpp: glmer's early PIRLS stop, 1.3%
    (sd,) = [v.sd for v in record.random_effects if v.sd is not None]
    assert sd == pytest.approx(ref["random_effects"][0]["sd"], rel=5e-3)


def test_cbind_response_in_a_spec_matches_glmer(tmp_path):
    shutil.copy(ROOT / "data" / "cbpp.csv", tmp_path / "cbpp.csv")
    spec = write_spec(tmp_path, "cbind", """
name: cbind
data: {path: cbpp.csv}
defaults: {family: binomial}
models:
  m: {formula: "cbind(incidence, size - incidence) ~ factor(period) + (1|herd)"}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    _check(out.record.models["m"], EXTRA["cbpp_cbind"])
    assert out.record.models["m"].nobs == 56


def test_text_factor_response_in_a_spec_matches_glmer(tmp_path):
    shutil.copy(ROOT / "data" / "binary.csv", tmp_path / "binary.csv")
    spec = write_spec(tmp_path, "factor", """
name: factor
data: {path: binary.csv}
defaults: {family: binomial}
models:
  m: {formula: "answer ~ x + (1|subject)"}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    rec = out.record.models["m"]
    _check(rec, EXTRA["bin_factor"])
    assert rec.success_level == "yes"


@pytest.mark.parametrize("formula,needle", [
    ("cbind(incidence, -size) ~ period + (1|herd)", "is negative"),
    ("cbind(incidence, size / 2) ~ period + (1|herd)", "not a whole number"),
])
def test_bad_cbind_columns_are_spec_errors(tmp_path, formula, needle):
    shutil.copy(ROOT / "data" / "cbpp.csv", tmp_path / "cbpp.csv")
    spec = write_spec(tmp_path, "bad", f"""
name: bad
data: {{path: cbpp.csv}}
defaults: {{family: binomial}}
models:
  m: {{formula: "{formula}"}}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 2
    assert any(needle in e for e in out.errors), out.errors


def test_cbind_with_gaussian_names_the_family(tmp_path):
    shutil.copy(ROOT / "data" / "cbpp.csv", tmp_path / "cbpp.csv")
    spec = write_spec(tmp_path, "gauss", """
name: gauss
data: {path: cbpp.csv}
models:
  m: {formula: "cbind(incidence, size - incidence) ~ period + (1|herd)"}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 2 and any("family: binomial" in e for e in out.errors)
