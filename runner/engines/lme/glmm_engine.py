"""GLMM fit strategy, as lme4's glmer: two stages, then lme4's derivatives and vcov.

Stage 1 (glmer's nAGQ = 0): minimize the Laplace deviance over theta with beta found
inside PIRLS. Stage 2 (nAGQ >= 1): minimize the Laplace (or quadrature) deviance jointly
over (theta, beta), PIRLS then finding u alone. beta is optimized in whitened
coordinates gamma = R_X (beta - beta_1) (R_X from stage 1, so the deviance's Hessian
in gamma is about 2 I; lme4's BOBYQA/Nelder-Mead work on raw beta). At the optimum, as
lme4's deriv12: the central-difference gradient and Hessian (step 1e-4) in (theta,
beta); lme4's checkConv decides convergence, and vcov(beta) is the beta block of
2 H^{-1} (falling back, with lme4's warning, to (R_X' R_X)^{-1} when that block is not
positive definite; nAGQ = 0 always uses the R_X form).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import Bounds, minimize
from scipy.stats import norm

from runner.design.model import Design
from runner.engines.lme.convergence import GRAD_TOL, is_singular
from runner.engines.lme.engine import _one_blas_thread
from runner.engines.lme.families import make_family
from runner.engines.lme.glmm_pirls import (SEARCH_TOL, STEP_TOL, GlmmModel, Mode, PirlsError, agq, build_model,
                                           decompose, factors, gh_rule, laplace, pirls, zlambda_values)
from runner.design.glmm_response import glmm_response
from runner.engines.lme.optimize import (BOUNDARY_TOL, FD_STEP, MAX_EVALUATIONS, Optimum, minimize_theta,
                                          probe_edges, scan_start)
from runner.fit import Convergence, Fit, FitArrays, FitWarning, FixedEffect, RanefBlock, RandomEffect

FAILED = 1e30
DELTA = 1e-4  # lme4's deriv12 step
MAX_AGQ = 100  # lme4's GHrule accepts orders below 101
Z975 = float(norm.ppf(0.975))
RX_WARNING = ("variance-covariance matrix computed from finite-difference Hessian is not positive definite "
              "or contains NA values: falling back to var-cov estimated from RX")


class GlmmFitError(RuntimeError):
    """The GLMM cannot be fitted (PIRLS failed at the optimum, nAGQ not applicable)."""


class _Deviance:
    """params -> deviance with PIRLS warm-started from the previous converged mode."""

    def __init__(self, model: GlmmModel, stage: int, nagq: int = 1, beta1: np.ndarray | None = None,
                 Rinv: np.ndarray | None = None) -> None:
        self.model, self.stage, self.nagq = model, stage, nagq
        self.beta1, self.Rinv = beta1, Rinv
        self.k = model.lower.size
        self.rule = gh_rule(nagq) if nagq > 1 else None
        self.warm: Mode | None = None
        self.evaluations = 0
        self.step_tol = SEARCH_TOL  # set to STEP_TOL for the optimum's value and derivatives

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.asarray(x[:self.k], dtype=float)
        if self.stage == 1:
            return theta, np.zeros(self.model.p) if self.warm is None else self.warm.beta
        return theta, self.beta1 + self.Rinv @ np.asarray(x[self.k:], dtype=float)

    def mode(self, x: np.ndarray) -> tuple[Mode, np.ndarray]:
        theta, beta = self.split(x)
        zl = zlambda_values(self.model, theta)
        joint = self.stage == 1
        try:
            if self.warm is None:
                raise PirlsError("cold start")
            m = pirls(self.model, zl, beta, self.warm.u, joint, self.step_tol)
        except PirlsError:
            m = pirls(self.model, zl, beta, None if joint else np.zeros(self.model.q), joint, self.step_tol)
        return m, zl

    def values(self, x: np.ndarray) -> tuple[float, float, Mode]:
        """(full deviance, lme4's value, mode)."""
        m, zl = self.mode(x)
        if self.rule is not None:
            full, lme4 = agq(self.model, zl, m, self.rule)
        else:
            full = lme4 = laplace(self.model, m)
        return full, lme4, m

    def __call__(self, x: np.ndarray) -> float:
        self.evaluations += 1
        x = np.asarray(x, dtype=float)
        if not np.all(np.isfinite(x)):
            return FAILED
        try:
            full, _, m = self.values(x)
        except (PirlsError, np.linalg.LinAlgError, FloatingPointError):
            return FAILED
        if not np.isfinite(full):
            return FAILED
        self.warm = m
        return float(full)


def _deriv12(fun: _Deviance, x: np.ndarray, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """lme4's deriv12: central-difference gradient and Hessian, step DELTA, no bounds."""
    k = x.size
    g, H = np.empty(k), np.empty((k, k))
    plus, minus = np.empty(k), np.empty(k)
    for i in range(k):
        e = np.zeros(k)
        e[i] = DELTA
        plus[i], minus[i] = fun(x + e), fun(x - e)
    g = (plus - minus) / (2 * DELTA)
    H[np.diag_indices(k)] = (plus - 2 * fx + minus) / DELTA ** 2
    for i in range(k):
        for j in range(i):
            e = np.zeros(k)
            e[i] = e[j] = DELTA
            fpp, fmm = fun(x + e), fun(x - e)
            H[i, j] = H[j, i] = ((fpp + fmm - 2 * fx) / DELTA ** 2 - H[i, i] - H[j, j]) / 2
    return g, H


def _check(g: np.ndarray, H: np.ndarray, x: np.ndarray, lower: np.ndarray, singular: bool
           ) -> tuple[bool, float, float | None, str]:
    """lme4's checkConv: gradient at active bounds projected; singular fits skip the Hessian."""
    active = np.isfinite(lower) & (x <= lower + DELTA) & (g > 0)
    g = np.where(active, 0.0, g)
    if singular:
        mg = float(np.max(np.abs(g)))
        return mg < GRAD_TOL, mg, None, ""
    ev = float(np.min(np.linalg.eigvalsh(H)))
    try:
        R = np.linalg.cholesky(H).T
        scaled = np.linalg.solve(R, g)
    except np.linalg.LinAlgError:
        return (False, float(np.max(np.abs(g))), ev,
                "unable to evaluate scaled gradient: Hessian is not positive definite")
    mg = float(np.max(np.minimum(np.abs(scaled), np.abs(g))))
    return mg < GRAD_TOL, mg, ev, ""


@dataclass
class _Result:
    x: np.ndarray
    value: float
    success: bool
    message: str
    optimizer: str


LBFGS_FTOL = 1e-10  # looser than the linear engine's (1e-12, 1e-5): the deviance is followed by
LBFGS_GTOL = 1e-4  # lme4's derivative check and a Newton polish when that fails (11% fewer evaluations)
STAGE1_TOL = (1e-8, 1e-3)  # (ftol, gtol) of glmer's first stage when a second one follows


def _lbfgs(fun: _Deviance, start: np.ndarray, lower: np.ndarray, scan: bool,
           tol: tuple[float, float] = (LBFGS_FTOL, LBFGS_GTOL)) -> Optimum:
    """L-BFGS-B on difference gradients from lme4's start (halved while it improves), then
    lme4's boundary step (components within 1e-5 of a zero bound set to 0 if not worse)."""
    if scan:
        start = scan_start(fun, start)
    res = minimize(fun, start, method="L-BFGS-B", bounds=Bounds(lower, np.full(lower.size, np.inf)),
                   options={"eps": FD_STEP, "ftol": tol[0], "gtol": tol[1], "maxfun": MAX_EVALUATIONS})
    x = np.maximum(np.asarray(res.x, dtype=float), lower)
    value = float(fun(x)) if not np.array_equal(x, res.x) else float(res.fun)
    near = (lower == 0.0) & (x > 0.0) & (x < BOUNDARY_TOL)
    if np.any(near):
        trial = np.where(near, 0.0, x)
        tv = float(fun(trial))
        if tv <= value:
            x, value = trial, tv
    return Optimum(theta=x, value=value, success=bool(res.success) or res.status == 2, message=str(res.message),
                   optimizer="L-BFGS-B (scipy)")


def _optimize(fun: _Deviance, start: np.ndarray, lower: np.ndarray, scan: bool,
              tol: tuple[float, float] = (LBFGS_FTOL, LBFGS_GTOL)) -> _Result:
    opt = _lbfgs(fun, start, lower, scan, tol)
    off = probe_edges(fun, opt.theta, opt.value, lower)
    if off is not None:
        restart = _lbfgs(fun, off, lower, scan=False)
        if restart.value < opt.value:
            restart.optimizer = f"{opt.optimizer}, restarted off the boundary"
            opt = restart
    if not opt.success:
        polish = minimize_theta(fun, opt.theta, lower, eval_flops=np.inf, scan=False)
        if polish.value <= opt.value:
            polish.optimizer = f"{opt.optimizer}, then COBYQA (scipy)"
            opt = polish
    return _Result(opt.theta, opt.value, opt.success, opt.message, opt.optimizer)


def _cond_var(model: GlmmModel, mode: Mode, theta: np.ndarray) -> list[np.ndarray]:
    """Diagonal blocks of Lambda (L L')^{-1} Lambda' per internal term, (levels, p) each
    (lme4's condVar with sigma = 1), from the blocked factor of the random part."""
    dec = mode.dec
    qr = dec.qr
    p1, l1 = model.p1, model.l1
    Ls = dec.Ls[:qr, :qr]
    Bs = dec.Bs[:qr] if qr else np.zeros((0, model.q1))
    Kmat = solve_triangular(Ls, Bs, lower=True) if qr else Bs
    # first block: L1^{-T} (I + K_c' K_c) L1^{-1}
    Kc = Kmat.reshape(qr, l1, p1)
    inner = np.einsum("rca,rcb->cab", Kc, Kc) + np.eye(p1)
    V1 = np.swapaxes(dec.L1inv, 1, 2) @ inner @ dec.L1inv
    Ts = factors(model, theta)
    out = [np.diagonal(Ts[0] @ V1 @ Ts[0].T, axis1=1, axis2=2).copy()]
    if qr:
        Linv = solve_triangular(Ls, np.eye(qr), lower=True)
        Sinv = Linv.T @ Linv
        for pos in range(1, len(Ts)):
            T = Ts[pos]
            p = T.shape[0]
            start = model.col_start[pos] - model.q1
            nl = (model.col_start[pos + 1] if pos + 1 < len(Ts) else model.q) - model.col_start[pos]
            l = nl // p
            idx = start + np.arange(l)[:, None] * p + np.arange(p)[None, :]
            blk = Sinv[idx[:, :, None], idx[:, None, :]]
            out.append(np.diagonal(T @ blk @ T.T, axis1=1, axis2=2).copy())
    return out


def fit_glmm(design: Design, family: str, link: str | None = None, nagq: int = 1,
             formula_text: str = "") -> Fit:
    """Fit a binomial or Poisson GLMM by maximum likelihood as glmer(nAGQ = nagq) does."""
    t0 = time.perf_counter()
    fam = make_family(family, link)
    if not 0 <= int(nagq) <= MAX_AGQ:
        raise GlmmFitError(f"nagq must be between 0 and {MAX_AGQ} (got {nagq})")
    resp = glmm_response(design.y, design.weights, family, design.response)
    model = build_model(design, fam, resp.y, resp.wt)
    if nagq > 1 and not model.scalar_single:
        raise GlmmFitError("nagq > 1 (adaptive Gauss-Hermite quadrature) is only available for models with a "
                           "single, scalar random-effects term, as in lme4; use nagq: 1 (Laplace)")
    # one BLAS thread (as the linear engine): the small dense products of every PIRLS
    # iteration took 25 ms instead of microseconds with OpenBLAS threads on a busy machine
    with _one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        dev1 = _Deviance(model, stage=1)
        # stage 1 only starts stage 2 (unless nagq = 0): a looser stop saves a third of its evaluations
        opt1 = _optimize(dev1, model.start, model.lower, scan=True, tol=STAGE1_TOL if nagq else
                         (LBFGS_FTOL, LBFGS_GTOL))
        dev1.step_tol = STEP_TOL
        full1, _, mode1 = dev1.values(opt1.x)
        k, p = model.lower.size, model.p
        if nagq == 0:
            dev, opt, lower = dev1, opt1, model.lower
            final_mode, full, lme4_value = mode1, full1, full1
        else:
            Lx = mode1.dec.Ls[mode1.dec.qr:, mode1.dec.qr:]
            Rinv = solve_triangular(Lx, np.eye(p), lower=True, trans="T") if p else np.zeros((0, 0))
            dev = _Deviance(model, stage=2, nagq=nagq, beta1=mode1.beta.copy(), Rinv=Rinv)
            dev.warm = mode1
            lower = np.concatenate([model.lower, np.full(p, -np.inf)])
            opt = _optimize(dev, np.concatenate([opt1.x, np.zeros(p)]), lower, scan=False)
            dev.warm = None
            dev.step_tol = STEP_TOL
            try:
                full, lme4_value, final_mode = dev.values(opt.x)
            except PirlsError as exc:
                raise GlmmFitError(f"PIRLS failed at the optimum: {exc}") from exc
        # lme4's deriv12 at the optimum, taken in the optimizer's coordinates (theta, gamma):
        # beta = beta_1 + R^-1 gamma is linear, so H(theta, beta) = J^-T H J^-1 exactly, and
        # the difference steps are well scaled whatever the units of X (lme4's raw-beta
        # steps make its Hessian noise for an uncentred HEIGHT ~ 450: "rescale variables")
        dev.warm = final_mode
        g, H = _deriv12(dev, opt.x, full)
        singular = is_singular(dev.split(opt.x)[0], model.lower)
        if nagq > 0 and not _check(g, H, opt.x, lower, singular)[0]:
            # Newton polish on those derivatives when checkConv fails (L-BFGS-B on difference
            # gradients stops within its own tolerance; a Newton step on the Hessian sharpens it)
            for _ in range(2):
                try:
                    step = np.linalg.solve(H, g)
                except np.linalg.LinAlgError:
                    break
                x_new = np.maximum(opt.x - step, lower)
                if not dev(x_new) < full - 1e-10:
                    break
                full, lme4_value, final_mode = dev.values(x_new)
                opt.x = x_new
                dev.warm = final_mode
                g, H = _deriv12(dev, opt.x, full)
        evaluations = dev1.evaluations + (dev.evaluations if dev is not dev1 else 0)
        theta, beta = dev.split(opt.x)
        if nagq == 0:
            beta = final_mode.beta
        singular = is_singular(theta, model.lower)
        conv_ok, max_grad, min_ev, conv_msg = _check(g, H, opt.x, lower, singular)
        warnings: list[FitWarning] = []
        # vcov(beta)
        Lx_final = _rx(model, theta, beta, final_mode)
        Linv = solve_triangular(Lx_final, np.eye(p), lower=True) if p else np.zeros((0, 0))
        V_rx = Linv.T @ Linv
        vcov_method = "rx" if p else None  # no fixed effects: no vcov
        V = V_rx
        if nagq > 0 and p:
            try:
                Hinv = np.linalg.inv(H)
                Vg = Hinv[k:, k:] + Hinv[k:, k:].T  # 2 H^-1, symmetrized as lme4's calc.vcov.hess
                Vb = dev.Rinv @ Vg @ dev.Rinv.T
                if np.all(np.isfinite(Vb)) and np.min(np.linalg.eigvalsh(Vb)) > 0:
                    V, vcov_method = Vb, "hessian"
            except np.linalg.LinAlgError:
                pass
            if vcov_method == "rx":
                warnings.append(FitWarning(code="vcov_rx", message=RX_WARNING))
    return _record(design, model, fam, nagq, theta, beta, final_mode, full, lme4_value, V, vcov_method,
                   singular, conv_ok and opt.success, opt, max_grad, min_ev, conv_msg, warnings,
                   evaluations, formula_text, time.perf_counter() - t0)


def _rx(model: GlmmModel, theta: np.ndarray, beta: np.ndarray, mode: Mode) -> np.ndarray:
    """R_X' (lower) of the joint system at the mode's weights (lme4's RX after the last PIRLS)."""
    dec = decompose(model, zlambda_values(model, theta), mode.w, with_x=True)
    return dec.Ls[dec.qr:, dec.qr:]


def _record(design: Design, model: GlmmModel, fam, nagq: int, theta: np.ndarray, beta: np.ndarray,
            mode: Mode, full: float, lme4_value: float, V: np.ndarray, vcov_method: str | None, singular: bool,
            converged: bool, opt: _Result, max_grad: float, min_ev: float | None, conv_msg: str,
            warnings: list[FitWarning], evaluations: int, formula_text: str, seconds: float) -> Fit:
    n, p = model.n, model.p
    npar = p + theta.size
    loglik = -full / 2
    se = np.sqrt(np.clip(np.diag(V), 0.0, None))
    fixed = []
    for col, est, sd in zip(design.fixed, beta, se):
        z = float(est / sd) if sd > 0 else None
        fixed.append(FixedEffect(term=col.term, lme4_name=col.lme4_name, variable=col.variable, level=col.level,
                                 estimate=float(est), std_error=float(sd), statistic=z,
                                 p_value=None if z is None else float(2 * norm.sf(abs(z))),
                                 ci_low=float(est - Z975 * sd), ci_high=float(est + Z975 * sd)))
    inv = np.argsort(model.order)
    Ts_int = factors(model, theta)
    Ts = [Ts_int[i] for i in inv]
    rand: list[RandomEffect] = []
    for block, T in zip(design.blocks, Ts):
        Vb = T @ T.T
        sd = np.sqrt(np.clip(np.diag(Vb), 0.0, None))
        for a, name in enumerate(block.column_names):
            rand.append(RandomEffect(id=block.id, group=block.group, term=name, variance=float(Vb[a, a]),
                                     sd=float(sd[a])))
        if block.covariance in ("unstructured", "compound_symmetry"):
            names = block.column_names
            for a in range(len(names)):
                for b in range(a + 1, len(names)):
                    corr = float(Vb[a, b] / (sd[a] * sd[b])) if sd[a] > 0 and sd[b] > 0 else None
                    rand.append(RandomEffect(id=block.id, group=block.group, term=names[a], term2=names[b],
                                             covariance=float(Vb[a, b]), corr=corr))
    cvar_int = _cond_var(model, mode, theta)
    ranef = []
    for pos_lme4, block in enumerate(design.blocks):
        pos = int(inv[pos_lme4])
        start = model.col_start[pos]
        pb = block.ncols
        u = mode.u[start:start + block.nlevels * pb].reshape(block.nlevels, pb)
        b = u @ Ts[pos_lme4].T
        ranef.append(RanefBlock(id=block.id, group=block.group, columns=list(block.column_names),
                                levels=list(block.levels), modes=b,
                                cond_sd=np.sqrt(np.clip(cvar_int[pos], 0.0, None))))
    for w in design.warnings:
        code = "scale_x" if "different scales" in w else "rank_deficient" if "rank deficient" in w else "design"
        warnings.insert(0, FitWarning(code=code, message=w))
    if singular:
        warnings.append(FitWarning(code="singular", message="boundary (singular) fit: see help('isSingular')"))
    message = conv_msg or ("" if converged else f"Model failed to converge with max|grad| = {max_grad:.6g} "
                                                f"(tol = {GRAD_TOL})")
    if not converged:
        warnings.append(FitWarning(code="convergence", message=message or opt.message))
    few = sorted({b.group for b in design.blocks if b.nlevels < 30})
    if few:
        warnings.append(FitWarning(code="few_levels", message=(
            f"grouping factor{'s' if len(few) > 1 else ''} {', '.join(few)} ha{'ve' if len(few) > 1 else 's'} "
            "fewer than 30 levels: Wald z p-values and intervals are anticonservative")))
    ngroups: dict[str, int] = {}
    for b in design.blocks:
        ngroups.setdefault(b.group, b.nlevels)
    names = [nm for i in range(len(design.blocks)) for nm in model.templates[i].names()]
    objective = -2 * loglik
    return Fit(
        engine="lme", method="ML", formula=formula_text, nobs=n, npar=npar, ngroups=ngroups,
        theta=[float(t) for t in theta], theta_names=names, sigma=1.0,
        loglik=loglik, objective=objective, aic=objective + 2 * npar, bic=objective + npar * float(np.log(n)),
        p_method="wald-z", ci_method="wald", fixed_effects=fixed, random_effects=rand,
        converged=converged, singular=singular,
        convergence=Convergence(converged=converged, optimizer=opt.optimizer, message=message,
                                evaluations=evaluations, max_abs_gradient=max_grad, hessian_min_eigenvalue=min_ev),
        warnings=warnings, fit_seconds=seconds,
        family=fam.name, link=fam.link.name, nagq=int(nagq), vcov_method=vcov_method,
        success_level=getattr(design, "success_level", None),  # set by the design for a factor response
        loglik_lme4=-lme4_value / 2 if nagq > 1 else None,
        arrays=FitArrays(fitted=mode.mu, residuals=model.y - mode.mu, ranef=ranef))
