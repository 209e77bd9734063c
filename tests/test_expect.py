"""The expect grammar (parsed without eval) and its evaluation against records."""

from __future__ import annotations

import pytest

from runner.compare.expectations import evaluate_expectations
from runner.compare.ranking import Candidate, FitStats, rank_models
from runner.fit import FixedEffect
from runner.results import ModelRecord
from runner.spec.expect import Condition, parse_bound, parse_condition_term, parse_expectations


def test_parse_all_forms():
    exps = parse_expectations(
        {
            "best": "slopes",
            "fixed": ["age > 0", "sex[T.M] < -1.5", "age in [0.5, 2]", "x >= 1e-3"],
            "converged": "all",
            "singular": "none",
            "delta_aic": {"slopes": "< 2", "intercepts": ">= 4"},
        }
    )
    texts = [e.text for e in exps]
    assert texts == [
        "best: slopes",
        "fixed: age > 0",
        "fixed: sex[T.M] < -1.5",
        "fixed: age in [0.5, 2]",
        "fixed: x >= 0.001",
        "converged: all",
        "singular: none",
        "delta_aic: slopes < 2",
        "delta_aic: intercepts >= 4",
    ]
    assert exps[3].condition == Condition("in", 0.5, 2.0)
    assert exps[2].term == "sexM" and exps[2].condition  # schema 1's spelling looks up R's name == Condition("<", -1.5)


def test_per_model_fixed_and_none_keys():
    exps = parse_expectations({"fixed": {"slopes": ["age:sex[T.M] <= 0"]}, "best": None})
    assert len(exps) == 1
    assert exps[0].model == "slopes" and exps[0].term == "age:sexM"
    assert exps[0].text == "fixed: slopes: age:sex[T.M] <= 0"


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"bestest": "a"}, "unknown key 'bestest'"),
        ({"fixed": ["age >> 0"]}, "expected 'TERM > 0'"),
        ({"fixed": ["age in [2, 1]"]}, "empty"),
        ({"fixed": ["__import__('os').system('x') > 0 or 1"]}, "expected 'TERM > 0'"),
        ({"delta_aic": {"m": "about 2"}}, "expect.delta_aic.m"),
        ({"converged": "some"}, "expected 'all'"),
        ({"best": "no spaces allowed"}, "expected a model name"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_parse_errors_are_clear(raw, fragment):
    with pytest.raises(ValueError, match=None) as info:
        parse_expectations(raw)
    assert fragment in str(info.value)


def test_condition_semantics():
    term, c = parse_condition_term("age in [-1, 1]")
    assert term == "age" and c.holds(1.0) and c.holds(-1.0) and not c.holds(1.0001)
    assert not parse_condition_term("b > 0")[1].holds(0.0)
    assert parse_condition_term("b >= 0")[1].holds(0.0)
    assert parse_bound(3) == Condition("<=", 3.0)
    assert not parse_bound("< 2").holds(float("nan"))


def _record(estimates: dict[str, float], *, converged=True, singular=False, status="ok") -> ModelRecord:
    lme4 = {"Intercept": "(Intercept)", "sex[T.M]": "sexM"}
    return ModelRecord(
        status=status,
        formula="y ~ ...",
        engine="lme",
        method="ML",
        converged=converged,
        singular=singular,
        fixed_effects=[
            FixedEffect(term=t, lme4_name=lme4.get(t, t), estimate=v, std_error=1.0, statistic=v, p_value=0.5,
                        ci_low=v - 2, ci_high=v + 2)
            for t, v in estimates.items()
        ],
    )


def _ranking(logliks: dict[str, tuple[float, int]], criterion="AIC"):
    cands = [
        Candidate(n, True, FitStats(ll, k, 100, "ML"), FitStats(ll, k, 100, "ML"), "rows", "X")
        for n, (ll, k) in logliks.items()
    ]
    return rank_models(cands, criterion)


def test_evaluate_pass_and_fail_with_reasons():
    models = {
        "a": _record({"Intercept": 1.0, "age": 0.3, "sex[T.M]": -2.0}),
        "b": _record({"Intercept": 1.0, "age": -0.1}, singular=True),
    }
    ranking = _ranking({"a": (-100.0, 4), "b": (-99.5, 3)})  # AIC a=208, b=205
    exps = parse_expectations(
        {
            "best": "a",
            "fixed": ["sexM < -1.5", "age > 0", "nothere > 0"],
            "converged": "all",
            "singular": "none",
            "delta_aic": {"a": "< 2", "b": "<= 0"},
        }
    )
    recs = evaluate_expectations(exps, models, ranking)
    got = {r.text: (r.passed, r.detail) for r in recs}
    assert got["best: a"][0] is False and "best by AIC is b" in got["best: a"][1]
    assert got["fixed: sexM < -1.5"][0] is True  # lme4 name accepted; only model a has it
    assert got["fixed: age > 0"][0] is False and "b: age = -0.1" in got["fixed: age > 0"][1]
    assert got["fixed: nothere > 0"][0] is False
    assert got["converged: all"][0] is True
    assert got["singular: none"] == (False, "singular or failed: b")
    assert got["delta_aic: a < 2"][0] is False and "delta AIC of a is 3" in got["delta_aic: a < 2"][1]
    assert got["delta_aic: b <= 0"][0] is True


def test_failed_model_fails_converged_and_unknown_best():
    models = {"a": _record({"x": 1.0}), "b": _record({}, status="failed")}
    recs = evaluate_expectations(parse_expectations({"converged": "all", "best": "zzz"}), models, [])
    assert [r.passed for r in recs] == [False, False]
    assert "b" in recs[1].detail and "unknown model" in recs[0].detail
