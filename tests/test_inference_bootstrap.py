"""Parametric bootstrap: deterministic for a seed, failures counted, percentile intervals as
boot.ci(type = "perc"), PBmodcomp's p-value formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import build_design
from runner.engines import fit_design
from runner.formula import parse_formula
from runner.inference import bootstrap as B
from runner.inference.apply import InferenceSettings, apply_inference
from runner.inference.state import state_from_fit

ROOT = Path(__file__).resolve().parents[1]


def _design(formula: str, dataset: str = "Dyestuff"):
    data = pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")
    return build_design(parse_formula(formula), data)


def test_norm_inter_as_boot() -> None:
    """Values from R: boot:::norm.inter(x, c(0.025, 0.975, 0.1, 0.5))."""
    x = np.array([3.1, 0.2, 5.5, 2.2, 9.1, 4.4, 1.7, 6.3, 7.8, 0.9, 2.8, 5.0])
    assert B.norm_inter(x, 0.025) == 0.2
    assert B.norm_inter(x, 0.975) == 9.1
    assert B.norm_inter(x, 0.1) == pytest.approx(0.449181170841728, rel=1e-12)
    assert B.norm_inter(x, 0.5) == pytest.approx(3.75, rel=1e-12)


def test_map_replicates_counts_failures_in_order() -> None:
    def fn(ss: np.random.SeedSequence) -> float:
        if ss.entropy[1] == 2:
            raise ValueError("no")
        return float(np.random.default_rng(ss).random())

    out = B.map_replicates(fn, B.seeds_for(7, 5))
    assert len(out.values) == 4 and [f.index for f in out.failed] == [2]
    assert out.values[0] == np.random.default_rng(np.random.SeedSequence([7, 0])).random()


def test_bootstrap_intervals_deterministic_for_a_seed() -> None:
    design = _design("Yield ~ 1 + (1 | Batch)")
    fit = fit_design(design, "REML")
    s = InferenceSettings(ci="bootstrap", nsim=60, seed=11)
    a = apply_inference(design, fit, s)
    b = apply_inference(design, fit, s)
    assert a.confint == b.confint
    assert a.ci_method == "bootstrap"
    c = apply_inference(design, fit, InferenceSettings(ci="bootstrap", nsim=60, seed=12))
    assert c.confint != a.confint
    rows = {r.parameter: r for r in a.confint}
    assert list(rows) == ["sd_(Intercept)|Batch", "sigma", "(Intercept)"]
    icpt = rows["(Intercept)"]
    assert icpt.low < icpt.estimate < icpt.high
    # the percentile interval of the intercept is near the profile one (1486.5, 1568.5): the
    # simulation is right in scale
    assert 1470 < icpt.low < 1505 and 1550 < icpt.high < 1585
    assert (a.fixed_effects[0].ci_low, a.fixed_effects[0].ci_high) == (icpt.low, icpt.high)


def test_simulate_has_the_model_variance() -> None:
    """Marginal variance of simulated y: sigma_b^2 + sigma^2 (Dyestuff, over many draws)."""
    design = _design("Yield ~ 1 + (1 | Batch)")
    st = state_from_fit(design, fit_design(design, "REML"))
    from runner.inference import varpar

    covs = varpar.block_covariances(st.problem, st.theta, st.sigma)
    rng = np.random.default_rng(1)
    ys = np.array([B.simulate(design, st.beta, covs, st.sigma, rng) for _ in range(4000)])
    assert ys.var(axis=0).mean() == pytest.approx(covs[0][0, 0] + st.sigma ** 2, rel=0.05)


def test_pb_lrt_deterministic_and_formula() -> None:
    small = _design("Reaction ~ Days + (1 | Subject)", "sleepstudy")
    large = _design("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    f0, f1 = fit_design(small, "ML"), fit_design(large, "ML")
    T = 2 * (f1.loglik - f0.loglik)
    st = state_from_fit(small, f0)
    r1 = B.pb_lrt(small, large, f0, T, 20, 3, st)
    r2 = B.pb_lrt(small, large, f0, T, 20, 3, st)
    assert r1 == r2
    assert r1.n_used + r1.n_nonpositive + r1.n_failed == 20
    # T = 42 is far in the tail: no replicate exceeds it, p = 1 / (1 + #{T* > 0})
    assert r1.p_value == pytest.approx(1 / (1 + r1.n_used))
