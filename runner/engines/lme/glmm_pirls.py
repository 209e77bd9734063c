"""PIRLS and the Laplace / adaptive Gauss-Hermite deviance of a GLMM (lme4's glmer).

For fixed theta (and, in glmer's second stage, fixed beta) the conditional modes u
maximize the penalized log-likelihood; penalized iteratively reweighted least squares
finds them. Each iteration is a weighted linear mixed-model solve with working weights
W = wt mu'(eta)^2 / V(mu) and working response z = eta - offset + (y - mu) / mu'(eta):

    (Lambda' Z' W Z Lambda + I) u + Lambda' Z' W X beta = Lambda' Z' W z   (and X' rows)

solved with MixedModels.jl's blocked Cholesky: the term with the most columns (q_1 =
levels x columns) is eliminated level by level (its diagonal block is block diagonal),
only the rest (other terms and, in stage 1, X) is a dense Cholesky. Per iteration the
weighted Gram products are O(nnz) sparse products on a fixed pattern (every row has one
entry per column of every term). Steps that raise the penalized deviance are halved
(lme4's pwrssUpdate); a step that cannot be made to decrease it, or no convergence in
`MAX_ITER` iterations, raises PirlsError.

Laplace deviance (lme4's glmResp::Laplace, with aic() = -2 sum log p(y | mu)):
    -2 sum log p(y | mu(u)) + ||u||^2 + log|L|^2.
AGQ (lme4's glmerAGQ, one scalar term): per level, the deviance contributions at
u + z_k sd are weighted by the Gauss-Hermite rule; lme4 1.1-31 sums deviance residuals
there (no saturated log-likelihood), so both that value and the full one are returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.engines.lme.glmm_model import GlmmModel, PirlsError, zl_times
from runner.engines.lme.glmm_system import Decomposition, decompose, rhs

MAX_ITER = 100
MAX_HALVINGS = 20
NOISE = 1e-13  # relative change of the penalized deviance below its rounding
STEP_TOL = 1e-13  # converged when the largest change of (u, beta) is below this (relative to 1 + size):
# the Laplace deviance depends on u to first order through log|L|, so PIRLS's tolerance is
# the criterion's noise, and a finite-difference Hessian (step 1e-4) divides it by 1e-8
FLOOR_TOL = 1e-9
SEARCH_TOL = 1e-11  # while the optimizer searches: one PIRLS iteration fewer per evaluation; the
# optimum's value, Hessian and checks use STEP_TOL (SEARCH_TOL there would move the SEs visibly)


@dataclass
class Mode:
    """The converged conditional mode at one theta (and beta)."""

    u: np.ndarray  # internal order
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    w: np.ndarray  # working weights at the mode
    dec: Decomposition  # factor at the mode's weights
    iterations: int


def pirls(model: GlmmModel, zl: np.ndarray, beta: np.ndarray, u: np.ndarray | None, with_x: bool,
          step_tol: float = STEP_TOL) -> Mode:
    """Conditional modes at theta (zl = Z Lambda's values); with_x also beta (glmer's nAGQ=0).

    `u` None starts as glm does (eta from the family's mustart, first step taken whole);
    otherwise from (u, beta), with steps halved while the penalized deviance rises."""
    fam, link = model.family, model.family.link
    y, wt, off, X = model.y, model.wt, model.offset, model.X
    if u is None:
        mu = fam.mustart(y, wt)
        eta = link.linkfun(mu)
        u = np.zeros(model.q)
        old = np.inf
    else:
        eta = off + X @ beta + zl_times(model, zl, u)
        mu = link.linkinv(eta)
        old = float(np.sum(dev_rows(model, mu)) + u @ u)
    last = np.inf
    for it in range(MAX_ITER):
        me = link.mu_eta(eta)
        w = wt * me * me / fam.variance(mu)
        z = eta - off + (y - mu) / me
        if not with_x:
            z = z - X @ beta
        if not np.isfinite(w.sum() + z.sum()):  # one reduction: NaN or inf anywhere shows in the sum
            raise PirlsError("PIRLS produced non-finite working weights (the linear predictor diverged)")
        dec = decompose(model, zl, w, with_x)
        x = dec.solve(rhs(model, zl, w, z, with_x))
        u_new = x[:model.q]
        b_new = x[model.q:] if with_x else beta
        du, db = u_new - u, b_new - beta
        size = 1.0 + max(np.abs(u).max(initial=0.0), np.abs(beta).max(initial=0.0))
        step = max(np.abs(du).max(initial=0.0), np.abs(db).max(initial=0.0))
        # converged when the step is tiny, or small and no longer shrinking (its rounding floor)
        if np.isfinite(old) and (step <= step_tol * size or (step <= FLOOR_TOL * size and step >= 0.5 * last)):
            return Mode(u=u, beta=beta, eta=eta, mu=mu, w=w, dec=dec, iterations=it)
        last = step
        fac = 1.0
        for _ in range(MAX_HALVINGS + 1):
            uc, bc = u + fac * du, beta + fac * db
            etac = off + X @ bc + zl_times(model, zl, uc)
            muc = link.linkinv(etac)
            pdev = float(np.sum(dev_rows(model, muc)) + uc @ uc)
            # a rise within rounding noise is no rise: near the mode, a Fisher-scoring step
            # (probit, cloglog) changes the deviance by less than its rounding, and halving
            # it there would stop PIRLS early (a noisy deviance, a wrong Hessian)
            if np.isfinite(pdev) and pdev <= old + NOISE * (1.0 + abs(old)):
                break
            fac *= 0.5
        else:
            raise PirlsError(f"PIRLS step-halvings failed to reduce the penalized deviance "
                             f"({old:.6g}) after {MAX_HALVINGS} halvings")
        u, beta, eta, mu, old = uc, bc, etac, muc, pdev
    raise PirlsError(f"PIRLS did not converge in {MAX_ITER} iterations")


def _kernel_parts(model: GlmmModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, saturated kernel sum) with log p(y | mu) = const + a log mu + b log(1 - mu)
    (binomial: a = successes, b = failures) or a log mu - b mu (Poisson: a = wt y, b = wt)."""
    if "kernel" not in model.cache:
        y, wt = model.y, model.wt
        if model.family.name == "binomial":
            n = np.round(wt)
            a = np.round(wt * y)
            b = n - a
        else:
            a, b = wt * y, wt
        sat = model.family.log_kernel(y, np.clip(y, 1e-300, None) if model.family.name == "poisson" else y, wt)
        model.cache["kernel"] = (a, b, np.where(np.isfinite(sat), sat, 0.0))
    return model.cache["kernel"]


def dev_rows(model: GlmmModel, mu: np.ndarray) -> np.ndarray:
    """Deviance residuals 2 (log p(y | y) - log p(y | mu)) per row (lme4's devResid), with
    the saturated part precomputed: two logs per row instead of xlogy with divisions."""
    a, b, sat = _kernel_parts(model)
    if model.family.name == "binomial":
        return 2.0 * (sat - a * np.log(mu) - b * np.log1p(-mu))
    return 2.0 * (sat - a * np.log(mu) + b * mu)


def dev_rows_matrix(model: GlmmModel, mu: np.ndarray) -> np.ndarray:
    """`dev_rows` for an (n, k) array of means (one column per quadrature knot)."""
    a, b, sat = (v[:, None] for v in _kernel_parts(model))
    if model.family.name == "binomial":
        return 2.0 * (sat - a * np.log(mu) - b * np.log1p(-mu))
    return 2.0 * (sat - a * np.log(mu) + b * mu)


def cond_dev(model: GlmmModel, mu: np.ndarray) -> float:
    """-2 sum log p(y | mu) with every constant (lme4's family aic()); the constants
    (log C(n, k), -log y!) are summed once per model."""
    if "ll_const" not in model.cache:
        model.cache["ll_const"] = float(np.sum(model.family.log_constant(model.y, model.wt)))
    a, b, _ = _kernel_parts(model)
    kernel = a @ np.log(mu) + (b @ np.log1p(-mu) if model.family.name == "binomial" else -(b @ mu))
    return -2.0 * (model.cache["ll_const"] + float(kernel))


def laplace(model: GlmmModel, mode: Mode) -> float:
    """The Laplace deviance (-2 x approximate marginal log-likelihood, constants included)."""
    return cond_dev(model, mode.mu) + float(mode.u @ mode.u) + mode.dec.logdet


def gh_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite knots and weights for the standard normal (lme4's GHrule: z, w/sum w)."""
    x, w = np.polynomial.hermite.hermgauss(n)
    z = x * np.sqrt(2.0)
    z = (z - z[::-1]) / 2.0  # exactly symmetric, as lme4's GHrule and MixedModels.jl
    w = (w + w[::-1]) / 2.0
    return z, w / w.sum()


def agq(model: GlmmModel, zl: np.ndarray, mode: Mode, rule: tuple[np.ndarray, np.ndarray]
        ) -> tuple[float, float]:
    """(full deviance, lme4 1.1-31's deviance) by adaptive Gauss-Hermite quadrature.

    One scalar term: the levels are independent given beta, so the integral is a product
    of one-dimensional ones, each centred at the mode with the conditional SD 1/L_cc."""
    fam = model.family
    codes = model.codes[0]
    q = model.q
    x = zl[:, 0]  # Z Lambda's single value per row
    sd = 1.0 / mode.dec.L1[:, 0, 0]
    dr0 = dev_rows(model, mode.mu)
    devc0 = mode.u ** 2 + np.bincount(codes, weights=dr0, minlength=q)
    zs, ws = rule
    nz = zs != 0.0
    zk, wk = zs[nz], ws[nz]
    du = sd[:, None] * zk[None, :]  # (q, knots)
    muk = fam.link.linkinv(mode.eta[:, None] + x[:, None] * du[codes])  # (n, knots)
    drk = dev_rows_matrix(model, muk)
    G = model.indicator(0)
    devck = (mode.u[:, None] + du) ** 2 + G @ drk  # (q, knots)
    mult = np.exp(-0.5 * (devck - devc0[:, None]) + 0.5 * zk[None, :] ** 2) @ wk + float(ws[~nz].sum())
    dev_lme4 = float(devc0.sum()) + mode.dec.logdet - 2.0 * float(np.sum(np.log(mult)))
    full = dev_lme4 - float(dr0.sum()) + cond_dev(model, mode.mu)
    return full, dev_lme4
