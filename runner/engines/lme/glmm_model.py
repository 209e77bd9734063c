"""A GLMM's fixed data for PIRLS: the response, weights, X, and per random term (internal
order, most columns first) its rows' level codes and lhs columns, with Z's CSR pattern.

The terms' covariance templates, theta slices and lme4 positions are `ReTerm`s, as in
the linear engine; Z Lambda is formed on Z's pattern (`zlambda_values`) per theta.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from runner.design.model import Design
from runner.engines.lme.families import Family
from runner.engines.lme.templates import Template
from runner.engines.lme.terms import ReTerm


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
    terms: list[ReTerm]  # internal order (largest q first): template, levels, theta slice, lme4 index
    lower: np.ndarray
    start: np.ndarray
    codes: list[np.ndarray]  # internal order
    Xb: list[np.ndarray]  # internal order: each term's lhs columns
    col_start: list[int]  # internal order: first column of the term in u
    q: int
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
        return len(self.terms) == 1 and self.terms[0].p == 1

    @property
    def l1(self) -> int:
        return self.terms[0].levels

    @property
    def p1(self) -> int:
        return self.terms[0].p

    @property
    def q1(self) -> int:
        return self.terms[0].q

    @property
    def lme4_terms(self) -> list[ReTerm]:
        return sorted(self.terms, key=lambda t: t.index)


def build_model(design: Design, family: Family, y: np.ndarray, wt: np.ndarray) -> GlmmModel:
    blocks = design.blocks
    if not blocks:
        raise PirlsError("a GLMM needs at least one random-effect term (without one it is a GLM)")
    n = design.nobs
    templates = [Template(b.covariance, b.ncols, b.group, tuple(b.column_names)) for b in blocks]
    offs = np.cumsum([0, *(t.ntheta for t in templates)])
    terms = [ReTerm(index=i, template=t, levels=b.nlevels, theta=slice(int(offs[i]), int(offs[i + 1])))
             for i, (b, t) in enumerate(zip(blocks, templates))]
    qs = [t.q for t in terms]
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
    return GlmmModel(
        family=family, y=y, wt=wt, offset=np.zeros(n) if design.offset is None else np.asarray(design.offset, float),
        X=np.ascontiguousarray(design.X, dtype=float), terms=[terms[i] for i in order],
        lower=np.concatenate([t.lower() for t in templates]),
        start=np.concatenate([t.start() for t in templates]),
        codes=[blocks[i].codes for i in order], Xb=[blocks[i].X for i in order], col_start=col_start, q=c,
        indptr=(np.arange(n + 1) * K).astype(np.int32), indices=indices.ravel(), K=K)


def factors(model: GlmmModel, theta: np.ndarray) -> list[np.ndarray]:
    """T_i(theta) per internal term."""
    return [t.factor(theta) for t in model.terms]


def zlambda_values(model: GlmmModel, theta: np.ndarray) -> np.ndarray:
    """(n, K) values of Z Lambda on Z's pattern: row i of term j is x_ij' T_j."""
    return np.hstack([Xb @ T for Xb, T in zip(model.Xb, factors(model, theta))])


def block_cols(model: GlmmModel) -> list[slice]:
    """Columns of zl (n x K) per internal block (computed once per model)."""
    if "cols" not in model.cache:
        out, c = [], 0
        for Xb in model.Xb:
            out.append(slice(c, c + Xb.shape[1]))
            c += Xb.shape[1]
        model.cache["cols"] = out
    return model.cache["cols"]


def levels(model: GlmmModel, pos: int) -> int:
    key = ("levels", pos)
    if key not in model.cache:
        end = model.col_start[pos + 1] if pos + 1 < len(model.Xb) else model.q
        model.cache[key] = (end - model.col_start[pos]) // model.Xb[pos].shape[1]
    return model.cache[key]


def zl_times(model: GlmmModel, zl: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Z Lambda u, term by term (a gather per term, no sparse product)."""
    if len(model.Xb) == 1 and model.p1 == 1:  # one scalar term: a gather
        return zl[:, 0] * u[model.codes[0]]
    out = np.zeros(model.n)
    for pos, sl in enumerate(block_cols(model)):
        p = sl.stop - sl.start
        l = levels(model, pos)
        ub = u[model.col_start[pos]:model.col_start[pos] + l * p].reshape(l, p)
        if p > 1:
            out += np.einsum("np,np->n", zl[:, sl], ub[model.codes[pos]])
        else:
            out += zl[:, sl.start] * ub[model.codes[pos], 0]
    return out
