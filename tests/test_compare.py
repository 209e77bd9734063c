"""Ranking, likelihood-ratio tests and nesting proofs (numbers only, no engine needed).

Real engine fits of the reference pairs are in tests/test_run.py; here the lme4
reference log-likelihoods (tests/reference/lrt.json) go through the same code. The
one exception fits sleepstudy's random structures written several ways (about a
second) to check that the same model gets the same boundary classification.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from runner.compare.lrt import LRTSide, chibar_p, classify_boundary, likelihood_ratio_test
from runner.compare.nesting import NestSide, auto_pairs, check_nested, in_span, random_contained
from runner.compare.ranking import Candidate, FitStats, criterion_value, rank_models
from runner.compare.shapes import TermShape

REF = Path(__file__).parent / "reference"
LRT = json.loads((REF / "lrt.json").read_text())

I = "(Intercept)"


def T(group: str, *cols: str, cov: str = "unstructured") -> TermShape:
    return TermShape(group, tuple(cols), cov)


SLEEP_TERMS = {
    "sleepstudy_slope": ((T("Subject", I),), (T("Subject", I, "Days"),)),
    "sleepstudy_corr": ((T("Subject", I), T("Subject", "Days")), (T("Subject", I, "Days"),)),
    "students_slope": (
        (T("classroom", I), T("school", I), T("province", I)),
        (T("classroom", I, "age"), T("school", I), T("province", I)),
    ),
    "students_sex": (
        (T("classroom", I), T("school", I), T("province", I)),
        (T("classroom", I), T("school", I), T("province", I)),
    ),
}
NGROUPS = {"Subject": 18, "classroom": 200, "school": 40, "province": 8}


def _sides(case: dict, cid: str) -> tuple[LRTSide, LRTSide]:
    ts, tl = SLEEP_TERMS[cid]
    fx = ("X1", "X2") if cid == "students_sex" else ("X", "X")
    small = LRTSide("small", case["loglik_ml"][0], case["npar"][0], "ML", terms=ts, ngroups=NGROUPS, fixed_key=fx[0])
    large = LRTSide("large", case["loglik_ml"][1], case["npar"][1], "ML", terms=tl, ngroups=NGROUPS, fixed_key=fx[1])
    return small, large


@pytest.mark.parametrize("cid", sorted(LRT))
def test_lrt_matches_lme4_anova_from_reference_logliks(cid):
    case = LRT[cid]
    rec = likelihood_ratio_test(*_sides(case, cid), refit_ml=True)
    assert rec.chisq == pytest.approx(case["chisq"], abs=1e-9)
    assert rec.df == case["df"]
    assert rec.p_value == pytest.approx(case["p_value"], rel=1e-9)
    assert rec.npar == case["npar"] and rec.refit_ml and rec.method == "ML"


def test_boundary_mixtures_against_scipy_by_hand():
    case = LRT["sleepstudy_slope"]
    rec = likelihood_ratio_test(*_sides(case, "sleepstudy_slope"), refit_ml=True)
    x = case["chisq"]
    assert rec.p_value_boundary == pytest.approx(0.5 * chi2.sf(x, 1) + 0.5 * chi2.sf(x, 2), rel=1e-12)
    assert rec.boundary_note.startswith("slope_added")
    # one added variance: 0.5 chi2(0) + 0.5 chi2(1), chi2(0) a point mass at 0
    assert chibar_p(2.7055, 0) == pytest.approx(0.5 * chi2.sf(2.7055, 1), rel=1e-12)
    assert chibar_p(2.7055, 0) == pytest.approx(0.05, abs=1e-4)
    assert chibar_p(0.0, 0) == 1.0
    assert chibar_p(5.0, 2) == pytest.approx(0.5 * chi2.sf(5.0, 2) + 0.5 * chi2.sf(5.0, 3), rel=1e-12)
    small = LRTSide("s", -100.0, 3, "ML", terms=(T("g", I),), ngroups={"g": 30, "h": 12})
    large = LRTSide("l", -98.0, 4, "ML", terms=(T("g", I), T("h", I)), ngroups={"g": 30, "h": 12})
    rec = likelihood_ratio_test(small, large, refit_ml=True)
    assert rec.chisq == 4.0 and rec.df == 1
    assert rec.p_value_boundary == pytest.approx(0.5 * chi2.sf(4.0, 1), rel=1e-12)
    assert rec.p_value_boundary == pytest.approx(rec.p_value / 2, rel=1e-12)
    assert rec.boundary_note.startswith("one_variance") and not rec.warnings


def test_correlation_only_is_interior_and_students_slope_uses_mixture():
    rec = likelihood_ratio_test(*_sides(LRT["sleepstudy_corr"], "sleepstudy_corr"), refit_ml=True)
    assert rec.p_value_boundary is None and rec.boundary_note.startswith("correlation_only")
    case = LRT["students_slope"]
    rec = likelihood_ratio_test(*_sides(case, "students_slope"), refit_ml=True)
    assert rec.p_value_boundary == pytest.approx(0.5 * chi2.sf(case["chisq"], 1) + 0.5 * chi2.sf(case["chisq"], 2))
    rec = likelihood_ratio_test(*_sides(LRT["students_sex"], "students_sex"), refit_ml=True)
    assert rec.p_value_boundary is None and rec.boundary_note.startswith("interior")


def test_boundary_refused_where_theory_fails():
    s, l = _sides(LRT["sleepstudy_slope"], "sleepstudy_slope")
    reml = likelihood_ratio_test(LRTSide(**{**s.__dict__, "method": "REML"}), LRTSide(**{**l.__dict__, "method": "REML"}), refit_ml=False)
    assert reml.p_value_boundary is None and reml.boundary_note.startswith("not_ml") and reml.method == "REML"
    sing = likelihood_ratio_test(LRTSide(**{**s.__dict__, "singular": True}), l, refit_ml=True)
    assert sing.p_value_boundary is None and sing.boundary_note.startswith("null_singular")
    crossed = likelihood_ratio_test(s, LRTSide(**{**l.__dict__, "independent_clusters": False}), refit_ml=True)
    assert crossed.p_value_boundary is None and crossed.boundary_note.startswith("crossed_factors")
    two = classify_boundary(
        LRTSide("s", 0, 3, "ML", terms=(T("g", I),)),
        LRTSide("l", 0, 6, "ML", terms=(T("g", I, "x"), T("h", I))),
    )
    assert two.mixture is None and two.code == "several_groups"
    both = classify_boundary(LRTSide("s", 0, 3, "ML", terms=(T("g", I),), fixed_key="a"),
                             LRTSide("l", 0, 5, "ML", terms=(T("g", I, "x"),), fixed_key="b"))
    assert both.code == "fixed_and_random_differ"
    new_block = classify_boundary(LRTSide("s", 0, 3, "ML", terms=()), LRTSide("l", 0, 6, "ML", terms=(T("g", I, "x"),)))
    assert new_block.mixture is None and new_block.code == "not_covered"


def test_negative_chisq_warns_and_is_kept_few_levels_warns():
    small = LRTSide("s", -50.0, 3, "ML", terms=(T("Batch", I),), ngroups={"Batch": 6})
    large = LRTSide("l", -50.5, 5, "ML", terms=(T("Batch", I, "x"),), ngroups={"Batch": 6})
    rec = likelihood_ratio_test(small, large, refit_ml=True)
    assert rec.chisq == -1.0
    assert any("negative chi-square" in w for w in rec.warnings)
    assert any("only 6 levels" in w for w in rec.warnings)
    assert rec.p_value == 1.0 and rec.p_value_boundary is None


# ---------------------------------------------------------------- ranking


def _cand(name, ll, k, n=180, method="ML", ml=None, rows="r", fixed="X", ok=True):
    own = FitStats(ll, k, n, method)
    return Candidate(name, ok, own if ok else None, (own if method == "ML" else ml) if ok else None, rows, fixed)


def test_criteria_values_match_lme4_reference():
    case = LRT["sleepstudy_slope"]
    for i in range(2):
        s = FitStats(case["loglik_ml"][i], case["npar"][i], 180, "ML")
        assert criterion_value(s, "AIC") == pytest.approx(case["aic"][i], abs=1e-8)
        assert criterion_value(s, "BIC") == pytest.approx(case["bic"][i], abs=1e-8)
    s = FitStats(-100.0, 4, 20, "ML")
    assert criterion_value(s, "AICc") == pytest.approx(208.0 + 2 * 4 * 5 / 15)


def test_rank_uses_ml_refits_and_weights():
    case = LRT["sleepstudy_slope"]
    a = _cand("intercept", -893.2, 4, method="REML", ml=FitStats(case["loglik_ml"][0], 4, 180, "ML"))
    b = _cand("slope", -871.8, 6, method="REML", ml=FitStats(case["loglik_ml"][1], 6, 180, "ML"))
    (g,) = rank_models([a, b], "AIC")
    assert [r.model for r in g.rows] == ["slope", "intercept"]
    assert [r.fit_used for r in g.rows] == ["ml_refit", "ml_refit"] and g.rows[0].method == "ML"
    assert g.rows[0].value == pytest.approx(case["aic"][1], abs=1e-8)
    assert g.rows[1].delta == pytest.approx(case["aic"][0] - case["aic"][1], abs=1e-8)
    w = math.exp(-g.rows[1].delta / 2)
    assert g.rows[0].weight == pytest.approx(1 / (1 + w)) and g.rows[0].best and not g.rows[1].best
    assert sum(r.weight for r in g.rows) == pytest.approx(1.0)


def test_refit_false_same_fixed_keeps_reml_otherwise_falls_back():
    a = _cand("a", -871.8, 6, method="REML", ml=FitStats(-876.0, 6, 180, "ML"))
    b = _cand("b", -882.0, 5, method="REML", ml=FitStats(-880.0, 5, 180, "ML"))
    (g,) = rank_models([a, b], "BIC", refit=False)
    assert {r.fit_used for r in g.rows} == {"own"} and {r.method for r in g.rows} == {"REML"}
    assert g.note is None
    c = _cand("c", -890.0, 4, method="REML", ml=FitStats(-891.0, 4, 180, "ML"), fixed="other")
    (g,) = rank_models([a, b, c], "AIC", refit=False)
    assert {r.method for r in g.rows} == {"ML"} and "refit: false" in g.note


def test_different_rows_and_failed_models_are_grouped_with_notes():
    a = _cand("a", -100.0, 3, rows="r1")
    b = _cand("b", -90.0, 4, rows="r1")
    c = _cand("c", -80.0, 4, rows="r2", n=170)
    d = _cand("d", 0, 0, rows="r1", ok=False)
    g1, g2 = rank_models([a, b, c, d], "AIC")
    assert g1.models == ["a", "b", "d"] and [r.model for r in g1.rows] == ["b", "a"]
    assert "failed to fit): d" in g1.note and "different data than c" in g1.note
    assert [r.model for r in g2.rows] == ["c"] and g2.rows[0].weight == 1.0


# ---------------------------------------------------------------- nesting


def test_span_is_numerical():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    one = np.ones(50)
    small = np.column_stack([one, x])
    large = np.column_stack([one, 2 * x + 3, x**2])  # reparametrized, still spans [1, x]
    assert in_span(small, large) == []
    assert in_span(np.column_stack([one, x**3]), large) == [1]


def test_random_containment_rules():
    assert random_contained((T("g", I),), (T("g", I, "age"),)) is None
    assert random_contained((T("g", I), T("g", "x")), (T("g", I, "x"),)) is None  # (x||g) in (x|g)
    assert random_contained((T("g", "a", "b", cov="diagonal"),), (T("g", "a", "b"),)) is None
    assert random_contained((T("g", "a", "b", cov="identity"),), (T("g", "a", "b", cov="compound_symmetry"),)) is None
    assert random_contained((T("g", "a", "b"),), (T("g", "a", "b", cov="diagonal"),)) is not None
    assert random_contained((T("g", "a", "b", cov="diagonal"),), (T("g", "a", "b", cov="identity"),)) is not None
    assert random_contained((T("g", "a", "b", cov="compound_symmetry"),), (T("g", "a", "b", cov="diagonal"),)) is not None
    assert "no counterpart" in random_contained((T("h", I),), (T("g", I),))
    assert random_contained((T("g", I, "x"),), (T("g", I), T("g", "x"))) is not None  # (x|g) not in (x||g)


def test_check_nested_and_auto_pairs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    X1 = np.column_stack([np.ones(40), x])
    X2 = np.column_stack([np.ones(40), x, x**2])
    m1 = NestSide("m1", "y", "rows", X1, (T("g", I),), 4)
    m2 = NestSide("m2", "y", "rows", X1, (T("g", I, "x"),), 6)
    m3 = NestSide("m3", "y", "rows", X2, (T("g", I, "x"),), 7)
    m4 = NestSide("m4", "y", "other", X2, (T("g", I, "x"),), 7)
    assert check_nested(m1, m3).nested
    assert "different rows" in check_nested(m1, m4).reason
    assert "not fewer" in check_nested(m3, m1).reason
    no = check_nested(NestSide("q", "y", "rows", X2, (T("g", I),), 5), m2)
    assert not no.nested and "not in the span" in no.reason
    assert auto_pairs([m1, m2, m3, m4]) == [("m1", "m2"), ("m1", "m3"), ("m2", "m3")]


# ---------------------------------------------------------------- same model written two ways


@pytest.fixture(scope="module")
def sleep_ml_tests(tmp_path_factory) -> dict:
    """Real ML fits of sleepstudy random structures, every proven-nested pair tested."""
    from run_helpers import run_quiet, write_spec

    tmp_path = tmp_path_factory.mktemp("forms")

    spec = write_spec(tmp_path, "forms", """
name: forms
data: {example: sleepstudy}
defaults: {method: ML}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slopeonly: {formula: "Reaction ~ Days + (0 + Days|Subject)"}
  zerocorr: {formula: "Reaction ~ Days + (Days||Subject)"}
  diag: {formula: "Reaction ~ Days + diag(Days|Subject)"}
  homdiag: {formula: "Reaction ~ Days + homdiag(Days|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
compare: {tests: auto}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    return {(t.small, t.large): t for t in out.record.tests}


def test_diag_term_is_classified_like_double_bar_on_real_fits(sleep_ml_tests):
    tests = sleep_ml_tests
    for small in ("intercept", "slopeonly"):  # one added variance: the slope, or the intercept
        d, z = tests[(small, "diag")], tests[(small, "zerocorr")]
        assert d.df == 1 and d.chisq == pytest.approx(z.chisq, abs=1e-4)
        assert d.boundary_note.startswith("one_variance:") and z.boundary_note.startswith("one_variance:")
        assert d.p_value_boundary == pytest.approx(0.5 * chi2.sf(d.chisq, 1), rel=1e-9)
        assert d.p_value_boundary == pytest.approx(z.p_value_boundary, rel=1e-3)
    assert tests[("intercept", "diag")].chisq == pytest.approx(42.0754, abs=1e-3)
    d, z = tests[("diag", "slope")], tests[("zerocorr", "slope")]  # correlation only: interior
    assert d.p_value_boundary is None and d.boundary_note.startswith("correlation_only:")
    assert z.boundary_note == d.boundary_note and d.p_value == pytest.approx(z.p_value, rel=1e-6)


def test_equal_variances_against_free_or_unstructured_is_interior_on_real_fits(sleep_ml_tests):
    tests = sleep_ml_tests
    for large in ("diag", "zerocorr"):
        t = tests[("homdiag", large)]
        assert t.df == 1 and t.chisq > 0 and t.p_value == pytest.approx(chi2.sf(t.chisq, 1), rel=1e-12)
        assert t.p_value_boundary is None
        assert t.boundary_note.startswith("interior_variances:") and "naive p is right" in t.boundary_note
    t = tests[("homdiag", "slope")]
    assert t.df == 2 and t.p_value_boundary is None and t.boundary_note.startswith("interior_covariance:")


def test_normalized_classification_by_hand():
    def cb(ts, tl, ns, nl):
        return classify_boundary(LRTSide("s", 0, ns, "ML", terms=ts), LRTSide("l", 0, nl, "ML", terms=tl))

    diag = (T("g", I, "x", cov="diagonal"),)
    assert cb((T("g", I),), diag, 3, 4).code == "one_variance"
    assert cb((T("g", "x", cov="identity"),), diag, 3, 4).code == "one_variance"  # one-column identity
    assert cb(diag, (T("g", I), T("g", "x")), 4, 4).code == "same_structure"
    assert cb(diag, (T("g", I, "x"),), 4, 5).code == "correlation_only"
    ident = (T("g", I, "x", cov="identity"),)
    assert cb(ident, diag, 3, 4).code == "interior_variances"
    assert cb(ident, (T("g", I, "x", cov="compound_symmetry"),), 3, 4).code == "interior_covariance"
    assert cb((T("g", I, "x", cov="compound_symmetry"),), (T("g", I, "x"),), 4, 5).code == "interior_covariance"
    # two added variances, or a diagonal term with a column more: still not covered
    assert cb((T("g", I),), (T("g", I, "x", "z", cov="diagonal"),), 3, 5).code == "not_covered"
    assert cb(ident, (T("g", I, "x", "z", cov="diagonal"),), 3, 5).code == "not_covered"
