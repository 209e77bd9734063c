"""Profile-likelihood intervals as lme4 1.1-31's confint(method = "profile").

lme4 profiles the ML deviance (a REML fit is refitted with ML first): for a variance
parameter on the sigma scale (sd_, cor_, sigma) the deviance with sigma explicit and beta
at its conditional optimum, minimized over the other variance parameters; for a fixed
effect beta_j the ML deviance with beta_j held (lme4's offset method), minimized over
theta. zeta = sign(x - x_hat) sqrt(dev(x) - dev_min); the interval is where zeta = -+
qnorm((1 + level) / 2). lme4 interpolates a spline through profile points; here the roots
are found directly (brentq), which agrees with lme4 to a small fraction of the width.
A bound the profile does not reach is lme4's parameter bound: 0 for SDs, -1/+1 for
correlations; otherwise (fixed effects, sigma, an SD's upper end) null with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from runner.distributions import norm_ppf

from runner.inference import varpar
from runner.inference.state import InferenceError, LmmState, factor_at, unscaled_vcov

BIG = 1e30


@dataclass
class ProfileResult:
    bounds: dict[str, tuple[float | None, float | None]]
    warnings: list[str] = field(default_factory=list)


def _dev2(state: LmmState, values: np.ndarray) -> float:
    """ML deviance at (sd/cor..., sigma), beta at its conditional optimum."""
    try:
        theta, sigma = varpar.from_sdcor(state.problem, values)
        f = factor_at(state.problem, theta)
    except (ValueError, InferenceError):
        return BIG
    n = state.problem.n
    s2 = sigma * sigma
    return float(f.logdet_z + f.r2 / s2 + n * np.log(2 * np.pi * s2))


def _dev_beta(state: LmmState, theta: np.ndarray, j: int, b: float) -> float:
    """ML deviance (sigma profiled) at theta with beta_j held at b."""
    try:
        f = factor_at(state.problem, theta)
    except InferenceError:
        return BIG
    from runner.inference.state import beta_at

    beta = beta_at(state.problem, f)
    V = unscaled_vcov(state.problem, f)
    r2 = f.r2 + (b - beta[j]) ** 2 / V[j, j]
    n = state.problem.n
    return float(f.logdet_z + n * (1 + np.log(2 * np.pi * r2 / n)))


def _bounds(names: list[str], sigma: float) -> list[tuple[float, float]]:
    out = []
    for nm in names:
        if nm == "sigma":
            out.append((1e-8 * sigma, np.inf))
        elif nm.startswith("cor"):
            out.append((0.0 if nm.startswith("cor|") else -1.0, 1.0))
        else:
            out.append((0.0, np.inf))
    return out


class _Profiler:
    def __init__(self, state: LmmState) -> None:
        self.state = state
        self.names = varpar.names(state.problem)
        self.vhat = varpar.to_sdcor(state.problem, state.theta, state.sigma)
        self.undefined = np.isnan(self.vhat)  # correlations of a zero SD: not profiled
        self.vhat = np.where(self.undefined, 0.0, self.vhat)
        self.dev_min = _dev2(state, self.vhat)
        self.box = _bounds(self.names, state.sigma)
        self.warm: dict[tuple[int, int], np.ndarray] = {}
        self.lowest = self.dev_min  # lme4 stops when a profile finds a lower deviance than the fit's

    def _minimize(self, fun: Callable[[np.ndarray], float], x0: np.ndarray, bounds: list) -> float:
        if x0.size == 0:
            return fun(x0)
        best = optimize.minimize(fun, x0, method="L-BFGS-B", bounds=bounds,
                                 options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": 500})
        self._last = best.x
        return float(best.fun)

    def zeta_var(self, k: int, x: float, side: int) -> float:
        free = [i for i in range(len(self.names)) if i != k]
        x0 = self.warm.get((k, side), self.vhat[free])

        def fun(z: np.ndarray) -> float:
            v = self.vhat.copy()
            v[free] = z
            v[k] = x
            return _dev2(self.state, v)

        dev = self._minimize(fun, np.asarray(x0, dtype=float), [self.box[i] for i in free])
        self.warm[(k, side)] = self._last
        return self._zeta(x - self.vhat[k], dev)

    def zeta_beta(self, j: int, b: float, side: int) -> float:
        st = self.state
        x0 = self.warm.get((-1 - j, side), st.theta)
        lower = st.problem.lower
        bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
        dev = self._minimize(lambda th: _dev_beta(st, th, j, b), np.asarray(x0, dtype=float), bounds)
        self.warm[(-1 - j, side)] = self._last
        return self._zeta(b - st.beta[j], dev)

    def _zeta(self, offset: float, dev: float) -> float:
        self.lowest = min(self.lowest, dev)
        return float(np.sign(offset) * np.sqrt(max(dev - self.dev_min, 0.0)))


def _root(zeta_fresh: Callable[[float], float], x0: float, target: float, step: float, limit: float | None
          ) -> tuple[float | None, bool]:
    """The x on the side of `target` where zeta(x) = target, stepping out from x0 by
    doubling `step`; (None, False) if not reached before `limit` (a bound) or 40 steps;
    (limit, True) when the bound itself is inside the interval.

    zeta is memoized: its inner minimization starts from the last point's optimum, so a second
    evaluation at the same x can land elsewhere, and brentq must see the values that
    bracketed the root."""
    seen: dict[float, float] = {}

    def zeta(x: float) -> float:
        if x not in seen:
            seen[x] = zeta_fresh(x)
        return seen[x]

    a = x0
    for _ in range(40):
        b = x0 + step
        if limit is not None and (b - limit) * np.sign(step) >= 0:
            b = limit
        zb = zeta(b)
        if (zb - target) * np.sign(target) >= 0:
            return float(optimize.brentq(lambda x: zeta(x) - target, a, b, xtol=1e-6 * abs(b - x0),
                                         rtol=1e-8)), False
        if limit is not None and b == limit:
            return limit, True
        a = b
        step *= 2
    return None, False


def profile_intervals(state: LmmState, level: float) -> ProfileResult:
    """`state` is the ML fit. Bounds per confint name (variance parameters, then fixed effects)."""
    if state.reml:
        raise InferenceError("profile intervals need the ML fit")
    prof = _Profiler(state)
    z = float(norm_ppf((1 + level) / 2))
    out: dict[str, tuple[float | None, float | None]] = {}
    warnings: list[str] = []
    for k, name in enumerate(prof.names):
        est = float(prof.vhat[k])
        if prof.undefined[k]:
            out[name] = (None, None)
            warnings.append(f"{name} is undefined (a zero SD at the ML fit): not profiled")
            continue
        lo_b, hi_b = prof.box[k]
        scale = max(abs(est), 1e-3 * prof.state.sigma) if not name.startswith("cor") else 0.1
        bounds: list[float | None] = []
        for side, target, limit in ((0, -z, lo_b), (1, z, hi_b if np.isfinite(hi_b) else None)):
            step = (-1 if side == 0 else 1) * 0.25 * scale
            if name.startswith("cor"):
                step = (-1 if side == 0 else 1) * min(0.1, max(abs((limit or 0) - est) / 4, 1e-6))
            elif side == 0:
                step = -0.25 * est if est > 0 else -1e-3
            x, at_limit = _root(lambda x: prof.zeta_var(k, x, side), est, target, step, limit)  # noqa: B023 - called here
            if at_limit and name == "sigma":
                x, at_limit = None, False
            if x is None:
                warnings.append(f"the profile of {name} does not reach its {'lower' if side == 0 else 'upper'} "
                                "bound: interval end left null")
            bounds.append(x)
        out[name] = (bounds[0], bounds[1])
    se = np.sqrt(np.diag(state.vcov))
    for j, name in enumerate(state.names):
        ends: list[float | None] = []
        for side, target in ((0, -z), (1, z)):
            step = (-1 if side == 0 else 1) * se[j]
            x, _ = _root(lambda b: prof.zeta_beta(j, b, side), float(state.beta[j]), target, step,  # noqa: B023
                         None)  # the lambda is called inside _root, in this iteration
            if x is None:
                warnings.append(f"the profile of {name} does not reach its {'lower' if side == 0 else 'upper'} "
                                "bound: interval end left null")
            ends.append(x)
        out[name] = (ends[0], ends[1])
    if prof.lowest < prof.dev_min - 1e-3:
        warnings.append(f"profiling found a deviance {prof.dev_min - prof.lowest:.3g} below the ML fit's: the fit "
                        "is not at its optimum and these intervals are unreliable (lme4 stops with an error)")
    return ProfileResult(bounds=out, warnings=warnings)
