"""The once-per-model precomputation: every O(n) product the criterion needs.

Terms are ordered internally by q_i = l_i p_i, largest first. The first term's
diagonal block A_11 is uniform block diagonal ((l_1, p_1, p_1) array). Everything
after it (the other random terms and W = [X y]) forms the "tail" of size nt.
Eliminating block 1 changes the tail by

    L_t1 L_t1' = Lambda_t' A_t1 B A_1t Lambda_t,   B = blockdiag_c Lambda_1 M_c^{-1} Lambda_1'

which is linear in vec(B) with a fixed sparsity pattern: `S @ vec(B)` gives it at the
tail's lower-triangle positions `targets` (MixedModels.jl's rankUpdate of the first
block, done as one sparse product). The tail is then scaled and factored: its leading
nested terms ("stages") level by level, the rest densely (see factor.py); `_route` says
where each update target is stored. terms.whiten whitens unstructured terms' columns
(same model; better conditioned Gram matrices and optimizer parameters).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from runner.design.model import Design, RandomBlock
from runner.memory import release_freed, small_pages
from runner.engines.lme.templates import Template
from runner.engines.lme.terms import ReTerm, whiten
from runner.engines.lme.update import UpdateBuilder, rows_view

EXPENSIVE_FLOPS = 2e7  # estimated work of one evaluation from which a model counts as expensive
# the largest system (q + p + 1 rows) the criterion evaluates densely (dense.py): a scalar-only
# model costs N^3 / 3 for the factor and 2 N^3 / 3 for the gradient's inverse (plus two N^3
# products for wider terms), against ~40 + 60 numpy calls (~100 us) of the blocked route
DENSE_MAX_SCALAR = 120
DENSE_MAX = 72


def small_model(terms: list[ReTerm], nt: int) -> bool:
    """Whether the model's criterion is evaluated densely: q + p + 1 = first.q + nt rows."""
    scalar = all(t.p == 1 for t in terms)
    return terms[0].q + nt <= (DENSE_MAX_SCALAR if scalar else DENSE_MAX)


@dataclass
class Stage:
    """A tail block whose diagonal block stays level-block-diagonal after the updates
    from the blocks before it (its factor is nested in theirs): factored batched."""

    start: int
    l: int
    p: int
    rows: np.ndarray  # (l, p, p) tail row of entry (c, a, b) in slab layout
    cols: np.ndarray  # (l, p, p) tail column of that entry


@dataclass
class Problem:
    """Precomputed blocked Gram matrix of one design (no per-row data after this).

    `terms` are in internal order, largest first: the first term's Gram blocks are A11
    (level-block-diagonal), the others' and W = [X y]'s form the tail (A_tt, A_t1)."""

    n: int
    p: int
    ldw: float  # sum(log w): lme4 subtracts it from the criterion
    terms: list[ReTerm]  # internal order
    lower: np.ndarray  # bounds of theta (lme4 order)
    start: np.ndarray
    A11: np.ndarray  # (l1, p1, p1): the first term's per-level Gram blocks
    nt: int  # tail size: sum of the tail terms' q + p + 1
    A_tt: np.ndarray  # (nt, nt), symmetric
    A_t1: sp.csr_matrix  # (nt, q1)
    scalar_tail: bool  # every tail term has p_i == 1 (Lambda_t is diagonal)
    stages: list[Stage]  # leading tail terms that stay block diagonal (nested factors)
    dense_start: int  # first tail row of the dense remainder
    # the per-theta evaluation's view of the update `S @ vec(B)` (see `_route`)
    S_eval: sp.csr_matrix  # rows of S that land in a stored region, grouped as below
    t_dense: np.ndarray  # flat tail indices of the first rows of S_eval (rectangles, dense square)
    stage_diag: list[np.ndarray]  # per stage: A_tt's diagonal blocks (l, p, p)
    t_stage: list[np.ndarray]  # per stage: flat indices into its (l, p, p) blocks, next rows of S_eval
    # S is kept once: its rows are S_eval's (tail positions `targets_eval`, in S_eval's order)
    # and, when both triangles are listed, the upper-triangle rows the evaluation drops
    targets_eval: np.ndarray
    S_rest: sp.csr_matrix
    targets_rest: np.ndarray
    update_pending: bool = False  # a small model deferred the update structure (ensure_update_structure)

    @property
    def first(self) -> ReTerm:
        return self.terms[0]

    @property
    def tail(self) -> list[ReTerm]:
        return self.terms[1:]

    @property
    def lme4_terms(self) -> list[ReTerm]:
        """The terms in lme4's order (Design.blocks, theta)."""
        return sorted(self.terms, key=lambda t: t.index)

    @property
    def m_rand(self) -> int:
        return int(sum(t.q for t in self.tail))

    @property
    def expensive(self) -> bool:
        """One evaluation costs EXPENSIVE_FLOPS or more: derivatives come from the analytic
        gradient (the convergence check, Satterthwaite), not from differences of the criterion."""
        return self.eval_flops >= EXPENSIVE_FLOPS

    @property
    def eval_flops(self) -> float:
        """A deterministic estimate of one evaluation's work (picks the optimizer)."""
        if self.update_pending:  # a small model, evaluated densely (dense.py)
            return float((self.first.q + self.nt) ** 3)
        k = self.dense_start
        rects = sum((self.nt - st.start - st.l * st.p) * st.l * st.p for st in self.stages)
        return float((self.nt - k) ** 3 / 3 + 2 * self.S_eval.nnz + 4 * (rects + (self.nt - k) ** 2)
                     + self.first.levels * self.first.p ** 3)


def _z(block: RandomBlock, sw: np.ndarray | None, slab: bool = False) -> sp.csc_matrix:
    """Z_i (n x l_i p_i): columns level-major as lme4 lays them out, or column-major
    ("slab": all levels of column 0, then of column 1) where Lambda_i = T_i (x) I."""
    n, p = block.X.shape
    vals = block.X if sw is None else block.X * sw[:, None]
    cols = _z_columns(block, slab)
    rows = np.repeat(np.arange(n), p)
    return sp.csc_matrix((vals.ravel(), (rows, cols.ravel())), shape=(n, block.nlevels * p))


def _z_columns(block: RandomBlock, slab: bool) -> np.ndarray:
    """(n, p): the column of Z_i each row's value of each term column lands in (`_z`'s layouts)."""
    a = np.arange(block.X.shape[1])[None, :]
    return a * block.nlevels + block.codes[:, None] if slab else block.codes[:, None] * block.X.shape[1] + a


def _block_diag_gram(block: RandomBlock, sw: np.ndarray | None) -> np.ndarray:
    """A_11 as (l, p, p): per level, the sum of x x' over its rows."""
    X = block.X if sw is None else block.X * sw[:, None]
    l, p = block.nlevels, X.shape[1]
    out = np.empty((l, p, p))
    for a in range(p):
        for b in range(a, p):
            s = np.bincount(block.codes, weights=X[:, a] * X[:, b], minlength=l)
            out[:, a, b] = s
            out[:, b, a] = s
    return out


def _stages(A_tt: np.ndarray, targets: np.ndarray, tail_q: list[int], ps: list[int]) -> list[Stage]:
    """Symbolic elimination: which leading tail blocks keep a block-diagonal pattern."""
    nt = A_tt.shape[0]
    pattern = A_tt != 0
    flat = pattern.reshape(-1)
    flat[targets] = True
    pattern |= pattern.T
    stages: list[Stage] = []
    start = 0
    for q, p in zip(tail_q, ps):
        l = q // p
        local = np.arange(q)
        block = pattern[start:start + q, start:start + q]
        same_level = (local[:, None] % l) == (local[None, :] % l)
        if np.any(block & ~same_level):
            break
        c, a, b = np.meshgrid(np.arange(l), np.arange(p), np.arange(p), indexing="ij")
        stages.append(Stage(start=start, l=l, p=p, rows=start + a * l + c, cols=start + b * l + c))
        rest = slice(start + q, nt)
        P = pattern[rest, start:start + q].astype(np.float64)
        pattern[rest, rest] |= (P @ P.T) > 0
        start += q
    return stages


def _route(targets: np.ndarray, nt: int, stages: list[Stage], dense_start: int
           ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Which update targets the evaluation stores, and where.

    The evaluation keeps each stage's diagonal as (l, p, p) blocks and, in the dense tail
    matrix, only the rectangle below each stage and the dense square after the stages
    (everything else there is structurally zero). Targets elsewhere (upper-triangle
    positions outside the dense square) are dropped. Returns the targets' order in S_eval
    (indices into `targets`), t_dense, t_stage and the dropped targets (ascending).
    """
    if not stages and dense_start == 0:  # everything in the dense square, in order
        return np.arange(targets.size), targets, [], np.zeros(0, dtype=np.int64)
    row, col = targets // nt, targets % nt
    keep_dense = (row >= dense_start) & (col >= dense_start)
    pieces = []
    t_stage = []
    for st in stages:
        q = st.l * st.p
        end = st.start + q
        keep_dense |= (col >= st.start) & (col < end) & (row >= end)
        inside = (row >= st.start) & (row < end) & (col >= st.start) & (col < end)
        lr, lc = row[inside] - st.start, col[inside] - st.start
        a, c = lr // st.l, lr % st.l
        b, c2 = lc // st.l, lc % st.l
        if np.any(c != c2):
            raise AssertionError("a stage's diagonal block is not level-block-diagonal")
        pieces.append(np.flatnonzero(inside))
        t_stage.append(c * st.p * st.p + a * st.p + b)
    idx_dense = np.flatnonzero(keep_dense)
    order = np.concatenate([idx_dense, *pieces]).astype(np.int64)
    dropped = np.ones(targets.size, dtype=bool)
    dropped[order] = False
    return order, targets[idx_dense], t_stage, np.flatnonzero(dropped)


def _terms(design: Design) -> tuple[list[ReTerm], list[RandomBlock]]:
    """The terms largest first (q = levels x columns; ties keep lme4's order) and their
    blocks, with whitened columns where `whiten` applies."""
    blocks = design.blocks
    templates = [Template(b.covariance, b.ncols, b.group, tuple(b.column_names)) for b in blocks]
    offsets = np.cumsum([0, *(t.ntheta for t in templates)])
    terms, used = [], []
    for i, (b, t) in enumerate(zip(blocks, templates)):
        wt = whiten(b, t, design.weights)
        terms.append(ReTerm(index=i, template=t, levels=b.nlevels, theta=slice(int(offsets[i]), int(offsets[i + 1])),
                            basis=None if wt is None else wt[1],
                            precond=None if wt is None else np.linalg.inv(wt[1])))
        used.append(b if wt is None else replace(b, X=wt[0]))
    order = sorted(range(len(blocks)), key=lambda i: -terms[i].q)  # stable
    terms = [terms[i] for i in order]
    start = 0
    for term in terms[1:]:
        term.tail_start = start
        start += term.q
    return terms, [used[i] for i in order]


def _csc_columns(columns: list[np.ndarray], n: int) -> sp.csc_matrix:
    """The n x k CSC matrix of these columns, zeros dropped (as sp.csc_matrix of the dense
    matrix stores it), built a column at a time: no dense copy of the whole matrix."""
    data, indices = [], []
    for col in columns:
        nz = np.flatnonzero(col).astype(np.int32 if n < 2 ** 31 else np.int64)
        indices.append(nz)
        data.append(col[nz])
    indptr = np.concatenate([[0], np.cumsum([d.size for d in data])])
    return sp.csc_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(n, len(columns)))


def _tail_gram(rest: list[RandomBlock], sw: np.ndarray | None, Zs: list[sp.csc_matrix], Wc: sp.csc_matrix,
               nt: int, wcols: list[np.ndarray] | None = None) -> np.ndarray:
    """A_tt = tail' tail (dense nt x nt) block by block, equal bit for bit to the sparse product:
    the random terms' blocks by np.bincount over level pairs (each cell a sum over rows in row
    order, as scipy's product sums them; the zero products a bincount adds change no sum),
    their blocks with the mostly non-zero columns of [X y] (`wcols`, as in Wc) by bincounts
    too, and the other blocks with [X y] by sparse products (dummy columns: few non-zeros)."""
    A_tt = np.zeros((nt, nt))
    vals = [b.X if sw is None else b.X * sw[:, None] for b in rest]
    offs = np.cumsum([0, *(b.nlevels * b.ncols for b in rest)])
    for i, bi in enumerate(rest):
        li, oi = bi.nlevels, offs[i]
        for j in range(i, len(rest)):
            bj, lj, oj = rest[j], rest[j].nlevels, offs[j]
            key = bi.codes if i == j else bi.codes.astype(np.int64) * lj + bj.codes
            for a in range(bi.ncols):
                for b in range(bj.ncols):
                    cell = np.bincount(key, weights=vals[i][:, a] * vals[j][:, b], minlength=li if i == j else li * lj)
                    if i == j:
                        c = np.arange(li)
                        A_tt[oi + a * li + c, oj + b * lj + c] = cell
                    else:
                        A_tt[oi + a * li:oi + (a + 1) * li, oj + b * lj:oj + (b + 1) * lj] = cell.reshape(li, lj)
                        A_tt[oj + b * lj:oj + (b + 1) * lj, oi + a * li:oi + (a + 1) * li] = cell.reshape(li, lj).T
        for k in range(Wc.shape[1]):
            if wcols is not None and 2 * (Wc.indptr[k + 1] - Wc.indptr[k]) > Wc.shape[0]:  # mostly non-zero
                for a in range(bi.ncols):
                    cell = np.bincount(bi.codes, weights=vals[i][:, a] * wcols[k], minlength=li)
                    A_tt[oi + a * li:oi + (a + 1) * li, offs[-1] + k] = cell
                    A_tt[offs[-1] + k, oi + a * li:oi + (a + 1) * li] = cell
            else:
                cell = (Zs[i].T @ Wc[:, k]).toarray()[:, 0]
                A_tt[oi:offs[i + 1], offs[-1] + k] = cell
                A_tt[offs[-1] + k, oi:offs[i + 1]] = cell
    A_tt[offs[-1]:, offs[-1]:] = (Wc.T @ Wc).toarray()
    return A_tt


DENSE_BUILD_CELLS = 2_000_000  # a small model's [Z X y] up to this many cells is built dense


def _small_gram(design: Design, terms: list[ReTerm], blocks: list[RandomBlock], sw: np.ndarray | None,
                y: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """(A11, A_t1, A_tt) of a small model from its dense [Z_1 Z_t X y] (W'W: one product instead
    of a dozen sparse constructions, which cost a textbook model ~0.5 ms). Z_1 level-major,
    the tail's terms in slab layout, as `_z` lays them out."""
    n = design.nobs
    widths = [b.nlevels * b.ncols for b in blocks]
    q1, p = widths[0], design.X.shape[1]
    N = sum(widths) + p + 1
    W = np.zeros((n, N))
    rows = np.arange(n)[:, None]
    offset = 0
    for i, b in enumerate(blocks):
        W[rows, offset + _z_columns(b, slab=i > 0)] = b.X
        offset += widths[i]
    W[:, offset:offset + p] = design.X
    W[:, -1] = y
    if sw is not None:
        W *= sw[:, None]
    G = W.T @ W
    first = terms[0]
    c = np.arange(q1).reshape(first.levels, first.p)
    A11 = G[c[:, :, None], c[:, None, :]]
    return A11, sp.csr_matrix(G[q1:, :q1]), np.ascontiguousarray(G[q1:, q1:])


def _update_structure(A_t1: sp.csr_matrix, A_tt: np.ndarray, terms: list[ReTerm], scalar_tail: bool
                      ) -> dict[str, Any]:
    """The blocked evaluation's fixed pattern (factor.py): the update matrix S of the first
    term's elimination, the nested stages and where each update target is stored."""
    first, nt = terms[0], A_tt.shape[0]
    builder = UpdateBuilder(A_t1.T.tocsr(), first.levels, first.p, nt, both=not scalar_tail)
    targets = builder.targets
    stages = _stages(A_tt, targets, [t.q for t in terms[1:]], [t.p for t in terms[1:]])
    dense_start = sum(s.l * s.p for s in stages)
    order, t_dense, t_stage, dropped = _route(targets, nt, stages, dense_start)
    n_dense, n_eval = t_dense.size, order.size
    row_of = None  # S's rows in S_eval's order, then the dropped ones
    if n_eval < targets.size or np.any(order != np.arange(n_eval)):
        row_of = np.empty(targets.size, dtype=np.int64)
        row_of[order] = np.arange(n_eval)
        row_of[dropped] = np.arange(n_eval, targets.size)
        targets_eval, targets_rest = targets[order], targets[dropped]
    else:
        targets_eval, targets_rest = targets, targets[:0].copy()
    del order, dropped, t_dense, targets
    release_freed(12.0 * builder.counts.sum(dtype=np.int64))  # pass 1's freed blocks, before S is allocated
    S = builder.matrix(row_of)  # written once, in place
    del builder, row_of
    S_eval = S if n_eval == S.shape[0] else rows_view(S, 0, n_eval)
    S_rest = rows_view(S, n_eval, S.shape[0])
    t_dense = targets_eval[:n_dense]  # S_eval's first rows are the dense ones: one array, not two
    del S
    release_freed(12.0 * (S_eval.nnz + S_rest.nnz))  # the builder's freed blocks, before the evaluations
    return dict(stages=stages, dense_start=dense_start, S_eval=S_eval, t_dense=t_dense,
                stage_diag=[A_tt[st.rows, st.cols] for st in stages], t_stage=t_stage,
                targets_eval=targets_eval, S_rest=S_rest, targets_rest=targets_rest)


def _pending_structure(first: ReTerm) -> dict[str, Any]:
    """Placeholders until `ensure_update_structure` (a small model's fit never needs it)."""
    empty = np.zeros(0, dtype=np.int64)
    S = sp.csr_matrix((0, first.levels * first.p * first.p))
    return dict(stages=[], dense_start=0, S_eval=S, t_dense=empty, stage_diag=[], t_stage=[],
                targets_eval=empty, S_rest=S, targets_rest=empty, update_pending=True)


def ensure_update_structure(problem: Problem) -> None:
    """Build the blocked evaluation's pattern of a problem that deferred it (factor.py calls this:
    small models evaluate densely, and only a caller of the blocked route pays for it)."""
    if problem.update_pending:
        built = _update_structure(problem.A_t1, problem.A_tt, problem.terms, problem.scalar_tail)
        problem.stages, problem.dense_start = built["stages"], built["dense_start"]
        problem.S_eval, problem.t_dense = built["S_eval"], built["t_dense"]
        problem.stage_diag, problem.t_stage = built["stage_diag"], built["t_stage"]
        problem.targets_eval, problem.S_rest = built["targets_eval"], built["S_rest"]
        problem.targets_rest = built["targets_rest"]
        problem.update_pending = False


def build_problem(design: Design) -> Problem:
    """All Gram products of [Z_1 .. Z_k, X, y] with sqrt prior weights and offset applied."""
    sw = None if design.weights is None else np.sqrt(design.weights)
    y = design.y if design.offset is None else design.y - design.offset
    setup_bytes = 8.0 * design.nobs * (design.X.shape[1] + 1 + 2 * len(design.blocks))
    small_pages(setup_bytes)  # large set-ups: no huge pages from here on (runner/memory.py)
    release_freed(setup_bytes)  # data loading's garbage
    terms, blocks = _terms(design)
    first, rest = blocks[0], blocks[1:]
    scalar_tail = all(b.ncols == 1 for b in rest)
    nt = sum(b.nlevels * b.ncols for b in rest) + design.X.shape[1] + 1
    if small_model(terms, nt) and design.nobs * (terms[0].q + nt) <= DENSE_BUILD_CELLS:
        A11, A_t1, A_tt = _small_gram(design, terms, blocks, sw, y)
        structure = _pending_structure(terms[0])
    else:
        columns = [*(design.X[:, j] for j in range(design.X.shape[1])), y]  # W = [X y]
        if sw is not None:
            columns = [c * sw for c in columns]
        Wc = _csc_columns(columns, design.nobs)
        del y
        Z1 = _z(first, sw).tocsr()
        Zs = [_z(b, sw, slab=True) for b in rest]
        A_t1 = sp.vstack([*(z.T @ Z1 for z in Zs), Wc.T @ Z1], format="csr")  # = tail' Z_1, row by row
        del Z1
        A_tt = np.ascontiguousarray(_tail_gram(rest, sw, Zs, Wc, nt, columns))
        del Zs, Wc, columns
        release_freed(12.0 * design.nobs * (len(design.blocks) + design.X.shape[1] + 1))  # the Z's, before S
        A11 = _block_diag_gram(first, sw)
        structure = _update_structure(A_t1, A_tt, terms, scalar_tail)
    lme4 = sorted(terms, key=lambda t: t.index)
    return Problem(
        n=design.nobs, p=design.X.shape[1],
        ldw=0.0 if design.weights is None else float(np.sum(np.log(design.weights))),
        terms=terms, lower=np.concatenate([t.template.lower() for t in lme4]),
        start=np.concatenate([t.template.start() for t in lme4]),
        A11=A11, nt=nt, A_tt=A_tt, A_t1=A_t1, scalar_tail=scalar_tail, **structure)


# The problem of the design the engine fitted last, handed once to the inference step of the
# same fit (runner.inference.state): building it again took ~1 s on a million rows and ~8 s
# on five million. One entry, dropped before the engine builds the next problem, so no two
# problems are alive because of it.
_HANDOVER: dict[str, Any] = {}


def hand_over(design: Design, problem: Problem | None) -> None:
    """Keep `problem` for the next `take_over(design)` (None: drop what is kept)."""
    _HANDOVER.clear()
    if problem is not None:
        _HANDOVER["design"], _HANDOVER["problem"] = weakref.ref(design), problem


def take_over(design: Design) -> Problem:
    """The kept problem if it was built for this very design object (once), else a new one."""
    ref, problem = _HANDOVER.get("design"), _HANDOVER.get("problem")
    _HANDOVER.clear()
    if ref is not None and ref() is design and problem is not None:
        return problem
    return build_problem(design)
