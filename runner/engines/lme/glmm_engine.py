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
from typing import Literal

import numpy as np
from scipy.linalg import solve_triangular

from runner.design.glmm_response import glmm_response
from runner.design.model import Design
from runner.engines.common import (design_warnings, few_levels_warning, information_criteria, ngroups,
                                   one_blas_thread, singular_warning, varcorr_rows, wald_rows)
from runner.engines.lme.convergence import ConvergenceCheck, deriv12, failed_message, is_singular, judge
from runner.engines.lme.criterion import FAILED
from runner.engines.lme.families import Family, make_family
from runner.engines.lme.glmm_model import GlmmModel, PirlsError, build_model, factors, zlambda_values
from runner.engines.lme.glmm_pirls import SEARCH_TOL, STEP_TOL, Mode, agq, gh_rule, laplace, pirls
from runner.engines.lme.glmm_system import decompose
from runner.engines.lme.optimize import (Optimizer, Optimum, Step, minimize_theta, polish_with_cobyqa, probe_edges,
                                          restart_if_lower)
from runner.fit import Convergence, Fit, FitArrays, FitWarning, RanefBlock

MAX_AGQ = 100  # lme4's GHrule accepts orders below 101
RX_WARNING = ("variance-covariance matrix computed from finite-difference Hessian is not positive definite "
              "or contains NA values: falling back to var-cov estimated from RX")


VcovMethod = Literal["hessian", "rx"] | None


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


def _derivatives(fun: _Deviance, x: np.ndarray, fx: float) -> tuple[np.ndarray, np.ndarray]:
    """lme4's deriv12 (gradient and Hessian, no bounds) of the deviance."""
    g, H = deriv12(fun, x, fx)
    assert H is not None
    return g, H


def _check(g: np.ndarray, H: np.ndarray, x: np.ndarray, lower: np.ndarray, singular: bool) -> ConvergenceCheck:
    """lme4's checkConv: gradient at active bounds projected; singular fits skip the Hessian."""
    return judge(g, None if singular else H, x, lower)


LBFGS_TOL = (1e-10, 1e-4)  # (ftol, gtol): looser than the linear engine's, as the deviance is followed by
# lme4's derivative check and a Newton polish when that fails
STAGE1_TOL = (1e-8, 1e-3)  # (ftol, gtol) of glmer's first stage when a second one follows


def _optimize(fun: _Deviance, start: np.ndarray, lower: np.ndarray, scan: bool,
              tol: tuple[float, float] = LBFGS_TOL) -> Optimum:
    """L-BFGS-B on difference gradients (from lme4's start halved while it improves, with
    lme4's boundary step), restarted off a flat edge, polished by COBYQA if it failed."""
    opt = minimize_theta(fun, start, lower, Optimizer.LBFGSB, scan, tol)
    off = probe_edges(fun, opt.theta, opt.value, lower)
    if off is not None:
        opt = restart_if_lower(fun, opt, [off], lower, Step.EDGE_RESTART, tol=LBFGS_TOL)
    if not opt.success:
        opt = polish_with_cobyqa(fun, opt, lower)
    return opt


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


@dataclass
class _Stage:
    """Where a stage's optimizer stopped: the deviance, its optimum, bounds, values and mode."""

    dev: _Deviance
    opt: Optimum
    lower: np.ndarray
    full: float  # the deviance as optimized
    lme4_value: float  # lme4's reported value (differs from `full` under quadrature)
    mode: Mode


def _first_stage(model: GlmmModel, nagq: int) -> _Stage:
    """glmer's nAGQ = 0 stage: theta only, beta inside PIRLS."""
    dev1 = _Deviance(model, stage=1)
    # stage 1 only starts stage 2 (unless nagq = 0): a looser stop saves a third of its evaluations
    opt1 = _optimize(dev1, model.start, model.lower, scan=True, tol=STAGE1_TOL if nagq else LBFGS_TOL)
    dev1.step_tol = STEP_TOL
    full1, _, mode1 = dev1.values(opt1.theta)
    return _Stage(dev1, opt1, model.lower, full1, full1, mode1)


def _second_stage(model: GlmmModel, nagq: int, first: _Stage) -> _Stage:
    """Theta and beta jointly, beta whitened by the first stage's R_X: gamma = R_X (beta - beta_1)."""
    p = model.p
    Lx = first.mode.dec.Ls[first.mode.dec.qr:, first.mode.dec.qr:]
    Rinv = solve_triangular(Lx, np.eye(p), lower=True, trans="T") if p else np.zeros((0, 0))
    dev = _Deviance(model, stage=2, nagq=nagq, beta1=first.mode.beta.copy(), Rinv=Rinv)
    dev.warm = first.mode
    lower = np.concatenate([model.lower, np.full(p, -np.inf)])
    opt = _optimize(dev, np.concatenate([first.opt.theta, np.zeros(p)]), lower, scan=False)
    dev.warm = None
    dev.step_tol = STEP_TOL
    try:
        full, lme4_value, mode = dev.values(opt.theta)
    except PirlsError as exc:
        raise GlmmFitError(f"PIRLS failed at the optimum: {exc}") from exc
    return _Stage(dev, opt, lower, full, lme4_value, mode)


def _derivatives_at_optimum(st: _Stage, model: GlmmModel, nagq: int) -> tuple[np.ndarray, np.ndarray]:
    """lme4's deriv12 at the optimum, in the optimizer's coordinates (theta, gamma): beta =
    beta_1 + R^-1 gamma is linear, so H(theta, beta) = J^-T H J^-1 exactly, and the difference
    steps are well scaled whatever the units of X. When checkConv fails after the joint
    stage, up to two Newton steps on those derivatives (L-BFGS-B on difference gradients
    stops within its own tolerance); `st` is updated in place."""
    dev = st.dev
    dev.warm = st.mode
    g, H = _derivatives(dev, st.opt.theta, st.full)
    singular = is_singular(dev.split(st.opt.theta)[0], model.lower)
    if nagq > 0 and not _check(g, H, st.opt.theta, st.lower, singular).ok:
        for _ in range(2):
            try:
                step = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                break
            x_new = np.maximum(st.opt.theta - step, st.lower)
            if not dev(x_new) < st.full - 1e-10:
                break
            st.full, st.lme4_value, st.mode = dev.values(x_new)
            st.opt.theta = x_new
            dev.warm = st.mode
            g, H = _derivatives(dev, st.opt.theta, st.full)
    return g, H


def _vcov(model: GlmmModel, st: _Stage, theta: np.ndarray, beta: np.ndarray, H: np.ndarray, nagq: int
          ) -> tuple[np.ndarray, VcovMethod, list[FitWarning]]:
    """vcov(beta): the beta block of 2 H^-1 (lme4's use.hessian), else from R_X with lme4's warning."""
    k, p = model.lower.size, model.p
    Linv = solve_triangular(_rx(model, theta, beta, st.mode), np.eye(p), lower=True) if p else np.zeros((0, 0))
    V = Linv.T @ Linv
    vcov_method: VcovMethod = "rx" if p else None  # no fixed effects: no vcov
    if not (nagq > 0 and p):
        return V, vcov_method, []
    assert st.dev.Rinv is not None  # the joint stage's
    try:
        Hinv = np.linalg.inv(H)
        Vg = Hinv[k:, k:] + Hinv[k:, k:].T  # 2 H^-1, symmetrized as lme4's calc.vcov.hess
        Vb = st.dev.Rinv @ Vg @ st.dev.Rinv.T
        if np.all(np.isfinite(Vb)) and np.min(np.linalg.eigvalsh(Vb)) > 0:
            return Vb, "hessian", []
    except np.linalg.LinAlgError:
        pass
    return V, vcov_method, [FitWarning(code="vcov_rx", message=RX_WARNING)]


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
    # iteration are far slower with OpenBLAS threads on a busy machine
    with one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        first = _first_stage(model, nagq)
        st = first if nagq == 0 else _second_stage(model, nagq, first)
        g, H = _derivatives_at_optimum(st, model, nagq)
        evaluations = first.dev.evaluations + (st.dev.evaluations if st.dev is not first.dev else 0)
        theta, beta = st.dev.split(st.opt.theta)
        if nagq == 0:
            beta = st.mode.beta
        singular = is_singular(theta, model.lower)
        check = _check(g, H, st.opt.theta, st.lower, singular)
        V, vcov_method, warnings = _vcov(model, st, theta, beta, H, nagq)
    return _record(design, model, fam, nagq, theta, beta, st.mode, st.full, st.lme4_value, V, vcov_method,
                   singular, check.ok and st.opt.success, st.opt, check, warnings,
                   evaluations, formula_text, time.perf_counter() - t0)


def _rx(model: GlmmModel, theta: np.ndarray, beta: np.ndarray, mode: Mode) -> np.ndarray:
    """R_X' (lower) of the joint system at the mode's weights (lme4's RX after the last PIRLS)."""
    dec = decompose(model, zlambda_values(model, theta), mode.w, with_x=True)
    return dec.Ls[dec.qr:, dec.qr:]


def _record(design: Design, model: GlmmModel, fam: Family, nagq: int, theta: np.ndarray, beta: np.ndarray,
            mode: Mode, full: float, lme4_value: float, V: np.ndarray, vcov_method: VcovMethod, singular: bool,
            converged: bool, opt: Optimum, check: ConvergenceCheck,
            warnings: list[FitWarning], evaluations: int, formula_text: str, seconds: float) -> Fit:
    n, p = model.n, model.p
    npar = p + theta.size
    loglik = -full / 2
    fixed = wald_rows(design, beta, np.sqrt(np.clip(np.diag(V), 0.0, None)))
    inv = np.argsort([t.index for t in model.terms])
    Ts_int = factors(model, theta)
    Ts = [Ts_int[i] for i in inv]
    rand = [row for block, T in zip(design.blocks, Ts) for row in varcorr_rows(block, T @ T.T)]
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
    warnings = design_warnings(design) + warnings
    if singular:
        warnings.append(singular_warning())
    message = check.message or ("" if converged else failed_message(check.max_abs_gradient or 0.0))
    if not converged:
        warnings.append(FitWarning(code="convergence", message=message or opt.message))
    warnings += few_levels_warning(design)
    names = [nm for t in model.lme4_terms for nm in t.template.names()]
    objective = -2 * loglik
    aic, bic = information_criteria(objective, npar, n)
    return Fit(
        engine="lme", method="ML", formula=formula_text, nobs=n, npar=npar, ngroups=ngroups(design),
        theta=[float(t) for t in theta], theta_names=names, sigma=1.0,
        loglik=loglik, objective=objective, aic=aic, bic=bic,
        p_method="wald-z", ci_method="wald", fixed_effects=fixed, random_effects=rand,
        converged=converged, singular=singular,
        convergence=Convergence(converged=converged, optimizer=opt.label, message=message,
                                evaluations=evaluations, max_abs_gradient=check.max_abs_gradient,
                                hessian_min_eigenvalue=check.hessian_min_eigenvalue),
        warnings=warnings, fit_seconds=seconds,
        family=fam.name, link=fam.link.name, nagq=int(nagq), vcov_method=vcov_method,
        success_level=getattr(design, "success_level", None),  # set by the design for a factor response
        loglik_lme4=-lme4_value / 2 if nagq > 1 else None,
        arrays=FitArrays(fitted=mode.mu, residuals=model.y - mode.mu, ranef=ranef, vcov=V))
