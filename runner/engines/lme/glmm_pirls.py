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

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from runner.design.model import Design
from runner.engines.lme.families import Family
from runner.engines.lme.templates import Template

MAX_ITER = 100
MAX_HALVINGS = 20
NOISE = 1e-13  # relative change of the penalized deviance below its rounding
STEP_TOL = 1e-13  # converged when the largest change of (u, beta) is below this (relative to 1 + size):
# the Laplace deviance depends on u to first order through log|L|, so PIRLS's tolerance is
# the criterion's noise, and a finite-difference Hessian (step 1e-4) divides it by 1e-8
FLOOR_TOL = 1e-9
SEARCH_TOL = 1e-11  # while the optimizer searches: one PIRLS iteration fewer per evaluation; the
# optimum's value, Hessian and checks use STEP_TOL (at 1e-11 glmer's SEs moved by up to 0.4%)


class PirlsError(ArithmeticError):
    """PIRLS diverged or did not converge at this theta."""


@dataclass
class GlmmModel:
    """Everything per model that does not depend on theta or the weights."""

    family: Family
    y: np.ndarray
    wt: np.ndarray
    offset: np.ndarray
    X: np.ndarray
    templates: list[Template]  # lme4 block order
    theta_slices: list[slice]  # lme4 block order
    lower: np.ndarray
    start: np.ndarray
    order: list[int]  # internal position -> lme4 block index (largest q first)
    codes: list[np.ndarray]  # internal order
    Xb: list[np.ndarray]  # internal order: each term's lhs columns
    col_start: list[int]  # internal order: first column of the term in u
    q: int
    q1: int
    l1: int
    p1: int
    indptr: np.ndarray  # CSR pattern of Z (n x q), K entries per row
    indices: np.ndarray
    K: int
    cache: dict = field(default_factory=dict)  # level-pair indices and level indicators, built on first use

    def pair_index(self, a: int, b: int) -> np.ndarray:
        """codes_a * levels_b + codes_b per row (internal positions a, b)."""
        key = ("pair", a, b)
        if key not in self.cache:
            lb = (self.col_start[b + 1] if b + 1 < len(self.Xb) else self.q) - self.col_start[b]
            lb //= self.Xb[b].shape[1]
            self.cache[key] = self.codes[a].astype(np.int64) * lb + self.codes[b]
        return self.cache[key]

    def indicator(self, pos: int) -> sp.csr_matrix:
        """(levels x n) 0/1 matrix of a term's grouping factor (sums over each level's rows)."""
        key = ("ind", pos)
        if key not in self.cache:
            codes = self.codes[pos]
            l = ((self.col_start[pos + 1] if pos + 1 < len(self.Xb) else self.q) - self.col_start[pos]) \
                // self.Xb[pos].shape[1]
            self.cache[key] = sp.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))),
                                            shape=(l, codes.size))
        return self.cache[key]

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def p(self) -> int:
        return int(self.X.shape[1])

    @property
    def scalar_single(self) -> bool:
        return len(self.templates) == 1 and self.templates[0].p == 1


def build_model(design: Design, family: Family, y: np.ndarray, wt: np.ndarray) -> GlmmModel:
    blocks = design.blocks
    if not blocks:
        raise PirlsError("a GLMM needs at least one random-effect term (without one it is a GLM)")
    n = design.nobs
    templates = [Template(b.covariance, b.ncols, b.group, tuple(b.column_names)) for b in blocks]
    sizes = [t.ntheta for t in templates]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    qs = [b.nlevels * b.ncols for b in blocks]
    order = sorted(range(len(blocks)), key=lambda i: -qs[i])
    col_start, c = [], 0
    for i in order:
        col_start.append(c)
        c += qs[i]
    cols = []
    for pos, i in enumerate(order):
        b = blocks[i]
        cols.append(col_start[pos] + b.codes[:, None] * b.ncols + np.arange(b.ncols)[None, :])
    indices = np.hstack(cols).astype(np.int32)
    K = indices.shape[1]
    first = blocks[order[0]]
    return GlmmModel(
        family=family, y=y, wt=wt, offset=np.zeros(n) if design.offset is None else np.asarray(design.offset, float),
        X=np.ascontiguousarray(design.X, dtype=float), templates=templates,
        theta_slices=[slice(offs[i], offs[i + 1]) for i in range(len(blocks))],
        lower=np.concatenate([t.lower() for t in templates]),
        start=np.concatenate([t.start() for t in templates]),
        order=order, codes=[blocks[i].codes for i in order], Xb=[blocks[i].X for i in order],
        col_start=col_start, q=c, q1=qs[order[0]], l1=first.nlevels, p1=first.ncols,
        indptr=(np.arange(n + 1) * K).astype(np.int32), indices=indices.ravel(), K=K)


def factors(model: GlmmModel, theta: np.ndarray) -> list[np.ndarray]:
    """T_i(theta) per internal block."""
    return [model.templates[i].factor(theta[model.theta_slices[i]]) for i in model.order]


def zlambda_values(model: GlmmModel, theta: np.ndarray) -> np.ndarray:
    """(n, K) values of Z Lambda on Z's pattern: row i of term j is x_ij' T_j."""
    return np.hstack([Xb @ T for Xb, T in zip(model.Xb, factors(model, theta))])


@dataclass
class Decomposition:
    """The blocked Cholesky of [Lambda'Z'WZLambda + I, .; X'WZLambda, X'WX] at one W."""

    L1: np.ndarray  # (l1, p1, p1) lower factors of the first block
    L1inv: np.ndarray
    Bs: np.ndarray  # (tail, q1) dense: B L1^{-T}
    Ls: np.ndarray  # lower factor of the tail Schur complement (random tail, then X)
    logdet: float  # log |L|^2 of the random part
    qr: int  # random tail size

    def solve(self, r: np.ndarray) -> np.ndarray:
        """x with M x = r (r from `rhs`): [u (internal order); beta]."""
        q1 = self.Bs.shape[1]
        r1, rt = r[:q1], r[q1:]
        p1 = self.L1.shape[1]
        if p1 == 1:
            y1 = r1 / self.L1[:, 0, 0]
        else:
            y1 = np.einsum("cab,cb->ca", self.L1inv, r1.reshape(-1, p1)).ravel()
        if self.Ls.shape[0]:
            yt, _ = lapack.dtrtrs(self.Ls, rt - self.Bs @ y1, lower=1)
            xt, _ = lapack.dtrtrs(self.Ls, yt, lower=1, trans=1)
            y1 = y1 - self.Bs.T @ xt
        else:
            xt = np.zeros(0)
        if p1 == 1:
            x1 = y1 / self.L1[:, 0, 0]
        else:
            x1 = np.einsum("cba,cb->ca", self.L1inv, y1.reshape(-1, p1)).ravel()
        return np.concatenate([x1, xt])


def _block_cols(model: GlmmModel) -> list[slice]:
    """Columns of zl (n x K) per internal block (computed once per model)."""
    if "cols" not in model.cache:
        out, c = [], 0
        for Xb in model.Xb:
            out.append(slice(c, c + Xb.shape[1]))
            c += Xb.shape[1]
        model.cache["cols"] = out
    return model.cache["cols"]


def _levels(model: GlmmModel, pos: int) -> int:
    key = ("levels", pos)
    if key not in model.cache:
        end = model.col_start[pos + 1] if pos + 1 < len(model.Xb) else model.q
        model.cache[key] = (end - model.col_start[pos]) // model.Xb[pos].shape[1]
    return model.cache[key]


def _cross(model: GlmmModel, a: int, b: int, va: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Dense (q_a x q_b) sum over rows of va zb' placed by (level_a, level_b), level-major."""
    la, lb = _levels(model, a), _levels(model, b)
    pa, pb = va.shape[1], zb.shape[1]
    idx = model.pair_index(a, b)
    out = np.empty((la, pa, lb, pb))
    for i in range(pa):
        for j in range(pb):
            out[:, i, :, j] = np.bincount(idx, weights=va[:, i] * zb[:, j], minlength=la * lb).reshape(la, lb)
    return out.reshape(la * pa, lb * pb)


def _level_sums(model: GlmmModel, pos: int, v: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(q_pos x m): per level and column i of the block, sum of v_i M over its rows."""
    l = _levels(model, pos)
    if v.shape[1] * M.shape[1] <= 8:  # a few bincounts beat a sparse product's overhead
        codes = model.codes[pos]
        out = np.empty((l, v.shape[1], M.shape[1]))
        for i in range(v.shape[1]):
            for j in range(M.shape[1]):
                out[:, i, j] = np.bincount(codes, weights=v[:, i] * M[:, j], minlength=l)
        return out.reshape(l * v.shape[1], -1)
    G = model.indicator(pos)
    return np.stack([G @ (M * v[:, i:i + 1]) for i in range(v.shape[1])], axis=1).reshape(l * v.shape[1], -1)


def rhs(model: GlmmModel, zl: np.ndarray, w: np.ndarray, z: np.ndarray, with_x: bool) -> np.ndarray:
    """[Lambda'Z'W z; X'W z] in the internal column order."""
    wz = (w * z)[:, None]
    parts = [_level_sums(model, pos, zl[:, sl], wz).ravel() for pos, sl in enumerate(_block_cols(model))]
    if with_x:
        parts.append(model.X.T @ wz[:, 0])
    return np.concatenate(parts)


def decompose(model: GlmmModel, zl: np.ndarray, w: np.ndarray, with_x: bool) -> Decomposition:
    """The blocked factor of the penalized weighted system at working weights w.

    Dense blocks by bincount on precomputed level-pair indices (no sparse matrices are
    built per iteration: their construction cost dominated small fits)."""
    p1, l1, q1 = model.p1, model.l1, model.q1
    cols = _block_cols(model)
    V = zl * w[:, None]
    V1, Z1 = V[:, cols[0]], zl[:, cols[0]]
    codes1 = model.codes[0]
    D = np.empty((l1, p1, p1))
    for a in range(p1):
        for b in range(a, p1):
            sv = np.bincount(codes1, weights=V1[:, a] * Z1[:, b], minlength=l1)
            D[:, a, b] = sv
            D[:, b, a] = sv
    D += np.eye(p1)
    qr = model.q - q1
    nb = len(cols)
    xp = model.p if with_x else 0
    nt = qr + xp
    B = np.empty((nt, q1))
    C = np.zeros((nt, nt))
    offs = [model.col_start[pos] - q1 for pos in range(nb)]
    for a in range(1, nb):
        va, za = V[:, cols[a]], zl[:, cols[a]]
        qa = _levels(model, a) * za.shape[1]
        ra = slice(offs[a], offs[a] + qa)
        B[ra] = _cross(model, a, 0, va, Z1)
        for b in range(1, a + 1):
            rb = slice(offs[b], offs[b] + _levels(model, b) * zl[:, cols[b]].shape[1])
            blk = _cross(model, a, b, va, zl[:, cols[b]])
            C[ra, rb] = blk
            C[rb, ra] = blk.T
        if xp:
            xa = _level_sums(model, a, va, model.X)
            C[qr:, ra] = xa.T
            C[ra, qr:] = xa
    if xp:
        Xw = model.X * w[:, None]
        B[qr:] = _level_sums(model, 0, V1, model.X).T
        C[qr:, qr:] = Xw.T @ model.X
    if p1 == 1:
        d = D[:, 0, 0]
        L1 = np.sqrt(d)[:, None, None]
        L1inv = 1.0 / L1
        logdet = float(np.sum(np.log(d)))
        Bs = B / L1[:, 0, 0][None, :]
    else:
        L1 = np.linalg.cholesky(D)
        L1inv = np.linalg.inv(L1)
        logdet = 2.0 * float(np.sum(np.log(np.diagonal(L1, axis1=1, axis2=2))))
        # B L1^{-T}: per level c, columns c*p1..: B_c @ L1inv_c^T
        Bs = np.einsum("tca,cba->tcb", B.reshape(nt, l1, p1), L1inv).reshape(nt, q1)
    if nt:
        C[np.arange(qr), np.arange(qr)] += 1.0
        C -= Bs @ Bs.T
        Ls, info = lapack.dpotrf(C, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise PirlsError("the penalized weighted system is not positive definite")
        dg = np.diagonal(Ls)
        if not np.all(dg > 0) or not np.all(np.isfinite(dg)):
            raise PirlsError("the penalized weighted system is not positive definite")
        logdet += 2.0 * float(np.sum(np.log(dg[:qr])))
    else:
        Ls = np.zeros((0, 0))
    return Decomposition(L1=L1, L1inv=L1inv, Bs=Bs, Ls=Ls, logdet=logdet, qr=qr)


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


def zl_times(model: GlmmModel, zl: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Z Lambda u, term by term (a gather per term, no sparse product)."""
    if len(model.Xb) == 1 and model.p1 == 1:  # one scalar term: a gather
        return zl[:, 0] * u[model.codes[0]]
    out = np.zeros(model.n)
    for pos, sl in enumerate(_block_cols(model)):
        p = sl.stop - sl.start
        l = _levels(model, pos)
        ub = u[model.col_start[pos]:model.col_start[pos] + l * p].reshape(l, p)
        if p > 1:
            out += np.einsum("np,np->n", zl[:, sl], ub[model.codes[pos]])
        else:
            out += zl[:, sl.start] * ub[model.codes[pos], 0]
    return out


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
    y, wt = model.y, model.wt
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
