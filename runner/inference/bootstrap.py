"""Parametric bootstrap: simulated responses, refits, percentile intervals and PBmodcomp
p-values.

Replicate i draws from numpy's default_rng(SeedSequence([seed, i])): new random effects
for every level (lme4's simulate(use.u = FALSE)), then the residuals. `map_replicates`
runs the replicates serially here; it is the seam where a process pool or Dask can run
them (each replicate depends only on its seed). A replicate whose refit fails is recorded
as failed and counted, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import numpy as np
from runner.distributions import norm_ppf

from runner.design.model import Design
from runner.fit import Fit
from runner.inference import varpar
from runner.inference.state import LmmState

T = TypeVar("T")


@dataclass
class Failed:
    """A replicate that raised: its index and the error."""

    index: int
    error: str


@dataclass
class Replicates(Generic[T]):
    values: list[T]
    failed: list[Failed] = field(default_factory=list)


def seeds_for(seed: int, nsim: int) -> list[np.random.SeedSequence]:
    return [np.random.SeedSequence([seed, i]) for i in range(nsim)]


def map_replicates(fn: Callable[[np.random.SeedSequence], T], seeds: Sequence[np.random.SeedSequence]
                   ) -> Replicates[T]:
    """fn(seed) for every seed, in order, serially; exceptions become `Failed` entries. Inside
    `mixspec run` the replicates fan out over its executor instead (runner.run.replicates:
    chunks, the same numbers for any executor, cached so an interrupted run resumes)."""
    from runner.run.replicates import current, map_chunked

    settings = current()
    out: Replicates[T] = Replicates(values=[])
    if settings is not None:
        for i, kind, value in map_chunked(fn, seeds, settings):
            if kind == "ok":
                out.values.append(value)
            else:
                out.failed.append(Failed(i, value))
        return out
    for i, s in enumerate(seeds):
        try:
            out.values.append(fn(s))
        except Exception as exc:  # a failed refit is data for the count, not a crash
            out.failed.append(Failed(i, f"{type(exc).__name__}: {exc}"))
    return out


def simulate(design: Design, beta: np.ndarray, covariances: list[np.ndarray], sigma: float,
             rng: np.random.Generator) -> np.ndarray:
    """y* = X beta + offset + sum_k Z_k b_k + e, b_k ~ N(0, Sigma_k) per level, e ~ N(0, sigma^2 / w)."""
    y = design.X @ beta
    if design.offset is not None:
        y = y + design.offset
    for block, S in zip(design.blocks, covariances):
        w, U = np.linalg.eigh(S)
        F = U * np.sqrt(np.clip(w, 0.0, None))[None, :]
        b = rng.standard_normal((block.nlevels, block.ncols)) @ F.T
        y = y + np.einsum("na,na->n", block.X, b[block.codes])
    e = rng.standard_normal(design.nobs) * sigma
    if design.weights is not None:
        e = e / np.sqrt(design.weights)
    return y + e


def _refit(design: Design, y: np.ndarray, method: str) -> Fit:
    from runner.engines import fit_design

    return fit_design(replace(design, y=y), method)  # type: ignore[arg-type]


def norm_inter(t: np.ndarray, alpha: float) -> float | None:
    """boot's norm.inter: the alpha quantile of replicates, interpolated on the normal scale."""
    t = np.sort(t[np.isfinite(t)])
    R = t.size
    if R == 0:
        return None
    rk = (R + 1) * alpha
    k = int(np.trunc(rk))
    if k == rk and 0 < k <= R:
        return float(t[k - 1])
    if k <= 0:
        return float(t[0])
    if k >= R:
        return float(t[R - 1])
    z, z1, z2 = norm_ppf(alpha), norm_ppf(k / (R + 1)), norm_ppf((k + 1) / (R + 1))
    return float(t[k - 1] + (z - z1) / (z2 - z1) * (t[k] - t[k - 1]))


@dataclass
class BootstrapResult:
    bounds: dict[str, tuple[float | None, float | None]]
    n_ok: int
    n_failed: int
    warnings: list[str] = field(default_factory=list)


def bootstrap_intervals(design: Design, fit: Fit, state: LmmState, level: float, nsim: int, seed: int
                        ) -> BootstrapResult:
    """Percentile intervals (boot.ci type "perc") of (sd/cor..., sigma, beta) as lme4's
    confint(method = "boot"): refits with the model's own method."""
    covs = varpar.block_covariances(state.problem, state.theta, state.sigma)
    names = varpar.names(state.problem) + state.names

    def one(ss: np.random.SeedSequence) -> np.ndarray:
        rng = np.random.default_rng(ss)
        ystar = simulate(design, state.beta, covs, state.sigma, rng)
        f = _refit(design, ystar, fit.method)
        v = varpar.to_sdcor(state.problem, np.asarray(f.theta), f.sigma)
        return np.concatenate([v, [fe.estimate for fe in f.fixed_effects]])

    reps = map_replicates(one, seeds_for(seed, nsim))
    warnings = []
    if reps.failed:
        warnings.append(f"{len(reps.failed)} of {nsim} bootstrap replicates failed (first: {reps.failed[0].error})")
    if not reps.values:
        return BootstrapResult({}, 0, len(reps.failed), warnings + ["no bootstrap replicate succeeded"])
    M = np.vstack(reps.values)
    a = (1 - level) / 2
    bounds = {nm: (norm_inter(M[:, j], a), norm_inter(M[:, j], 1 - a)) for j, nm in enumerate(names)}
    rk = (M.shape[0] + 1) * np.array([a, 1 - a])
    if not np.all((rk > 1) & (rk < M.shape[0])):
        warnings.append("extreme order statistics used as endpoints (too few bootstrap replicates for this level)")
    return BootstrapResult(bounds, M.shape[0], len(reps.failed), warnings)


@dataclass
class PBTest:
    """pbkrtest's PBmodcomp: p = (1 + #{T* > T}) / (1 + #{T* > 0})."""

    p_value: float | None
    n_used: int  # replicates with T* > 0
    n_nonpositive: int  # dropped, as pbkrtest drops them
    n_failed: int


def pb_lrt(small: Design, large: Design, small_ml: Fit, observed: float, nsim: int, seed: int,
           small_problem_state: LmmState) -> PBTest:
    """Simulate from the small model's ML fit, refit both models with ML per replicate."""
    st = small_problem_state
    covs = varpar.block_covariances(st.problem, np.asarray(small_ml.theta), small_ml.sigma)
    beta = np.array([fe.estimate for fe in small_ml.fixed_effects])

    def one(ss: np.random.SeedSequence) -> float:
        rng = np.random.default_rng(ss)
        ystar = simulate(small, beta, covs, small_ml.sigma, rng)
        f0 = _refit(small, ystar, "ML")
        f1 = _refit(large, ystar, "ML")
        return float(2 * (f1.loglik - f0.loglik))

    reps = map_replicates(one, seeds_for(seed, nsim))
    t = np.asarray(reps.values, dtype=float)
    pos = t[t > 0]
    p = (1 + int(np.sum(pos > observed))) / (1 + pos.size)
    return PBTest(p_value=float(p), n_used=int(pos.size), n_nonpositive=int(t.size - pos.size),
                  n_failed=len(reps.failed))


def pb_modcomp(small: Design, large: Design, small_ml: Fit, observed: float, nsim: int, seed: int) -> PBTest:
    """PBmodcomp for two nested linear mixed models on the same rows (ML fit of the small one)."""
    from runner.engines.common import one_blas_thread
    from runner.inference.state import state_from_fit

    with one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return pb_lrt(small, large, small_ml, observed, nsim, seed, state_from_fit(small, small_ml))
