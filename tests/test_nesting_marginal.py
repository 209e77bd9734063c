"""Nesting proven on the marginal covariance of y: pairs lme4's anova() compares that term
matching refuses, checked against lme4 1.1-31 (tests/reference_nesting/nesting.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from run_helpers import run_quiet, write_spec
from runner.compare.marginal import ReTerm, Verdict, prove_contained

REF = json.loads((Path(__file__).parent / "reference_nesting" / "nesting.json").read_text())
PASTES = Path(__file__).parents[1] / "runner" / "data" / "examples" / "Pastes.csv"


def _terms() -> dict[str, ReTerm]:
    df = pd.read_csv(PASTES)
    batch = pd.factorize(df["batch"], sort=True)[0]
    cask_codes = pd.factorize(df["cask"], sort=True)[0]
    inner = pd.factorize(df["cask"] + ":" + df["batch"], sort=True)[0]
    ones = np.ones((len(df), 1))
    return {
        "batch": ReTerm("batch", batch, ones, "unstructured"),
        "cask:batch": ReTerm("cask:batch", inner, ones, "unstructured"),
        "cask|batch": ReTerm("batch", batch, np.eye(3)[cask_codes], "unstructured"),
        "homcs": ReTerm("batch", batch, np.eye(3)[cask_codes], "compound_symmetry"),
        "diag": ReTerm("batch", batch, np.eye(3)[cask_codes], "diagonal"),
        "homdiag": ReTerm("batch", batch, np.eye(3)[cask_codes], "identity"),
    }


def test_marginal_proof_contains_textbook_pairs_and_refutes_the_reverse():
    t = _terms()
    nested = [t["batch"], t["cask:batch"]]
    assert prove_contained(nested, [t["cask|batch"]]).verdict is Verdict.CONTAINED
    assert prove_contained([t["batch"]], [t["cask|batch"]]).verdict is Verdict.CONTAINED
    assert prove_contained(nested, [t["homcs"]]).verdict is Verdict.CONTAINED  # the same model
    assert prove_contained([t["homcs"]], nested).verdict is Verdict.CONTAINED
    # the reverse directions need covariances the smaller structures cannot give
    assert prove_contained([t["cask|batch"]], nested).verdict is Verdict.NOT_CONTAINED
    assert prove_contained([t["diag"]], nested).verdict is Verdict.NOT_CONTAINED
    assert prove_contained([t["batch"]], [t["diag"]]).verdict is Verdict.NOT_CONTAINED  # needs covariances
    # (1|batch) inside equal variances without covariances: a rank-one J is not a multiple of I
    assert prove_contained([t["batch"]], [t["homdiag"]]).verdict is Verdict.NOT_CONTAINED
    assert prove_contained([t["homdiag"]], [t["diag"]]).verdict is Verdict.CONTAINED


@pytest.fixture(scope="module")
def pastes_tests(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("marginal")
    spec = write_spec(tmp, "marginal", """
name: marginal
data: {example: pastes}
defaults: {method: ML}
models:
  nested: {formula: "strength ~ 1 + (1|batch/cask)"}
  intercept: {formula: "strength ~ 1 + (1|batch)"}
  unstructured: {formula: "strength ~ 1 + (0 + cask|batch)"}
compare:
  tests:
    - [nested, unstructured]
    - {models: [intercept, unstructured], nested: strict}
""")
    out = run_quiet(spec, tmp)
    assert out.exit_code in (0, 1), out.errors  # the unstructured fit is singular: that may warn
    return {(t.small, t.large): t for t in out.record.tests}


@pytest.mark.parametrize("ref", REF["tests"], ids=lambda r: f"{r['small']}-{r['large']}")
def test_marginal_pairs_match_lme4_anova(pastes_tests, ref):
    t = pastes_tests[(ref["small"], ref["large"])]
    assert t.df == ref["df"]
    assert t.chisq == pytest.approx(ref["chisq"], abs=1e-3)
    assert t.p_value == pytest.approx(ref["p_value"], rel=2e-3)
    assert t.p_value_boundary is None
    assert t.boundary_note.startswith("marginal_nesting:")


def test_non_nested_listed_pair_is_still_a_spec_error(tmp_path):
    spec = write_spec(tmp_path, "bad", """
name: bad
data: {example: pastes}
defaults: {method: ML}
models:
  nested: {formula: "strength ~ 1 + (1|batch/cask)"}
  diag: {formula: "strength ~ 1 + diag(0 + cask|batch)"}
compare:
  tests: [[nested, diag]]
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 2
    text = " ".join(str(e) for e in out.errors)
    assert "nested is not nested in diag" in text and "marginal covariance" in text
