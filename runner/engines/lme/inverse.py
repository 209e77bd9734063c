"""Selected blocks of the inverse of the scaled system, from the blocked factor.

The conditional variances (solve.py) and the analytic gradient (gradient.py) both need,
per random term, the level-diagonal blocks of M^{-1}, where M = Lambda' G Lambda + I is
the scaled system over [Z (, X)] whose factor factor.py computes: the random part alone
(ML's log|L|^2, lme4's condVar) or with X (REML's log|L|^2 + log|R_X|^2).

    tail:  P^{-1}, P = the tail's Schur complement (LAPACK dpotri on its factor: 2/3 m^3,
           not a triangular inverse and a product, 7/3 m^3)
    first: M_c^{-1} + M_c^{-1} T_1' (A_1t Q A_t1)_c T_1 M_c^{-1},  Q = Lambda_t P^{-1} Lambda_t'

The middle product is S' vec(Q) (structure.py's update matrix read backwards), one
sparse product over S's rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from runner.engines.lme.factor import Factor, scale_vector, sandwich
from runner.engines.lme.lapack_inplace import invert_leading_block
from runner.engines.lme.sparse_ops import rmatvec
from runner.engines.lme.structure import Problem


CHUNK = 1 << 20  # update targets read at once
SMALL_TARGETS = 1 << 16  # target lists this short keep their (row, column) plan per problem
MAX_CLASSED_TERMS = 64  # scalar tails with fewer terms read P^{-1} in place by pair classes


@dataclass
class InverseBlocks:
    """Level-diagonal blocks of M^{-1} per term, in the scaled (spherical) coordinates."""

    first: np.ndarray  # (l1, p1, p1)
    tail: list[np.ndarray]  # per tail term: (l, p, p)


def tail_inverse(f: Factor, rows: int, symmetric: bool = True, consume: bool = False) -> np.ndarray:
    """The inverse of L L' for the tail factor's leading `rows` rows: whole, or (not
    `symmetric`) with only its lower triangle valid. With `consume` (and not `symmetric`) it
    is written over the factor's leading block (lapack_inplace: no copy, no second tail-sized
    array) and returned as a view of it; the factor then serves no solve (Factor.inverted_rows)."""
    if rows == 0:
        return np.zeros((0, 0))
    if consume and not symmetric:
        invert_leading_block(f.Ltail, rows)
        f.inverted_rows = rows
        return f.Ltail[:rows, :rows]
    # f.Ltail is C-ordered with its lower triangle valid: its transpose is the Fortran-ordered
    # upper factor U = L', so dpotri(upper) inverts U'U = L L'; the result's upper triangle
    # is valid, so its transpose (C-ordered) holds the inverse in its lower triangle
    inv, info = lapack.dpotri(f.Ltail[:rows, :rows].T, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri info {info}")
    lower = inv.T
    if symmetric:
        upper = np.triu_indices(rows, 1)
        lower[upper] = inv[upper]
    return lower


def _flat(Pinv: np.ndarray) -> tuple[np.ndarray, int]:
    """A flat view of P^{-1}'s memory and its row stride in elements: P^{-1} may be the leading
    block of the larger tail factor (tail_inverse with consume), read in place."""
    rows = Pinv.shape[0]
    if Pinv.flags.c_contiguous:
        return Pinv.reshape(-1), rows
    stride = Pinv.strides[0] // Pinv.itemsize
    assert Pinv.strides[1] == Pinv.itemsize and stride >= rows
    return np.lib.stride_tricks.as_strided(Pinv, shape=((rows - 1) * stride + rows,), strides=(Pinv.itemsize,)), stride


def _tail_blocks(problem: Problem, Pinv: np.ndarray) -> list[np.ndarray]:
    """Per tail term, the (l, p, p) level blocks of P^{-1} (slab layout: row start + a l + c)."""
    out = []
    for term in problem.tail:
        p, l, s = term.p, term.levels, term.tail_start
        blk = np.empty((l, p, p))
        for a in range(p):
            for b in range(p):
                blk[:, a, b] = Pinv[s + a * l + np.arange(l), s + b * l + np.arange(l)]
        out.append(blk)
    return out


def _first_blocks(problem: Problem, f: Factor, Pinv: np.ndarray, buffer: np.ndarray | None = None) -> np.ndarray:
    """The first term's (l1, p1, p1) level blocks of M^{-1}; `buffer`: the nt x nt array whose
    leading block Pinv is (an in-place or staged inverse), read at the targets' own positions."""
    nt, rows = problem.nt, Pinv.shape[0]
    l1, p1 = problem.first.levels, problem.first.p
    T1 = f.factors[0]
    Minv = level_inverse(f)
    if not rows or not (problem.targets_eval.size or problem.targets_rest.size):
        return Minv
    if buffer is not None:
        # P^{-1} lies in an nt-strided buffer, so a target's flat index is its position
        qe = _scaled_in_place(problem, f, buffer, problem.targets_eval, rows)
        qr = _scaled_in_place(problem, f, buffer, problem.targets_rest, rows)
        W = _s_transpose(problem, qe, qr).reshape(l1, p1, p1)
        Fq = W + np.swapaxes(W, 1, 2)
    elif problem.scalar_tail:  # lower triangle only: halve the diagonal, add the transpose
        lam = scale_vector(problem, f.factors)
        qe = _scaled_at(problem, Pinv, problem.targets_eval, lam)
        qr = _scaled_at(problem, Pinv, problem.targets_rest, lam)
        W = _s_transpose(problem, qe, qr).reshape(l1, p1, p1)
        Fq = W + np.swapaxes(W, 1, 2)
    else:
        Q = np.zeros((nt, nt))
        Q[:rows, :rows] = Pinv
        sandwich(Q[:rows, :rows], problem, f.factors, transpose=False)
        qe, qr = Q.reshape(-1)[problem.targets_eval], Q.reshape(-1)[problem.targets_rest]
        del Q
        Fq = _s_transpose(problem, qe, qr).reshape(l1, p1, p1)
    if p1 == 1:
        return Minv + Minv * Minv * (T1[0, 0] ** 2) * Fq
    return Minv + Minv @ (T1.T @ Fq @ T1) @ Minv


def level_inverse(f: Factor) -> np.ndarray:
    """M_c^{-1} per level of the first term, (l1, p1, p1), from its factor L11 (kept on the
    factor: the gradient's inverse blocks and the modes both need it)."""
    kept = f.__dict__.get("_level_inverse")
    if kept is not None:
        return kept
    L = f.L11
    if L.shape[1] == 1:
        Minv = 1.0 / (L * L)
    elif L.shape[1] == 2:  # closed form: L = [[a, 0], [b, c]], (L L')^{-1} = L^{-T} L^{-1}
        a, b, c = L[:, 0, 0], L[:, 1, 0], L[:, 1, 1]
        i11 = 1.0 / (c * c)
        i01 = -b / (a * c * c)
        Minv = np.empty_like(L)
        Minv[:, 0, 0] = 1.0 / (a * a) + (b * b) * i11 / (a * a)
        Minv[:, 0, 1] = Minv[:, 1, 0] = i01
        Minv[:, 1, 1] = i11
    else:
        Minv = np.linalg.inv(L @ np.swapaxes(L, 1, 2))
    f.__dict__["_level_inverse"] = Minv
    return Minv


def _target_plan(problem: Problem, targets: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which targets lie within P's rows, their rows, their columns) for a short target list,
    kept per problem and row count (at most ~1.5 MB each; a longer list is read in chunks
    instead, see `_scaled_at`)."""
    key = ("_target_plan", targets.ctypes.data, targets.size, rows)
    plans = problem.__dict__.setdefault("_inverse_plans", {})
    if key not in plans:
        r, c = np.divmod(targets.astype(np.int64), problem.nt)
        inside = np.flatnonzero((r < rows) & (c < rows))
        plans[key] = (inside, r[inside], c[inside])
    return plans[key]


def _rows_columns(targets: np.ndarray, nt: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first index, rows, columns) of flat tail positions r nt + c, CHUNK at a time (no
    targets-sized int64 temporaries at once)."""
    for a in range(0, targets.size, CHUNK):
        r, c = np.divmod(targets[a:a + CHUNK].astype(np.int64), nt)
        yield a, r, c


def _scaled_at(problem: Problem, Pinv: np.ndarray, targets: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """lam_r lam_s P^{-1}[r, s] at the lower-triangle tail positions r nt + s (0 past P's rows),
    halved on the diagonal; read from P^{-1}'s own lower triangle (a large list a chunk at a
    time, so no tail-sized scaled copy is made: 75 MB on a million rows)."""
    rows, nt = Pinv.shape[0], problem.nt
    flat, stride = _flat(Pinv)
    out = np.zeros(targets.size)
    if targets.size <= SMALL_TARGETS:
        inside, r, c = _target_plan(problem, targets, rows)
        v = flat[r * stride + c] * lam[r] * lam[c]
        v[r == c] *= 0.5
        out[inside] = v
        return out
    for a, r, c in _rows_columns(targets, nt):
        inside = np.flatnonzero((r < rows) & (c < rows))
        r, c = r[inside], c[inside]
        v = flat[r * stride + c] * lam[r] * lam[c]
        v[r == c] *= 0.5
        out[a + inside] = v
    return out


def _pair_classes(problem: Problem, targets: np.ndarray) -> np.ndarray:
    """Per target (lower-triangle tail position r nt + c of a scalar tail) the class of its pair,
    (class(r) n + class(c)) 2 + [r == c], where a row's class is its tail term, then X's rows,
    then y's: lam_r lam_s and the halving of the diagonal depend on nothing else. Kept per
    problem (one byte per target where the classes fit, else two)."""
    key = ("_pair_classes", targets.ctypes.data, targets.size)
    kept = problem.__dict__.setdefault("_inverse_plans", {})
    if key not in kept:
        nt, K = problem.nt, len(problem.tail)
        n = K + 2
        row_class = np.repeat(np.arange(n), [*(t.q for t in problem.tail), problem.p, 1])
        out = np.empty(targets.size, dtype=np.uint8 if 2 * n * n <= 256 else np.uint16)
        for a, r, c in _rows_columns(targets, nt):
            out[a:a + CHUNK] = (row_class[r] * n + row_class[c]) * 2 + (r == c)
        kept[key] = out
    return kept[key]


def _scaled_in_place(problem: Problem, f: Factor, buffer: np.ndarray, targets: np.ndarray, rows: int) -> np.ndarray:
    """`_scaled_at` where P^{-1} was written over the factor's leading `rows` rows: the value at a
    target is the factor buffer's entry at the target's own flat index, times a factor looked
    up by its pair class (`_pair_classes`): lam_r lam_s, halved on the diagonal, 0 for rows
    past P's (the factor's X or y rows there are finite and multiplied by 0)."""
    K = len(problem.tail)
    n = K + 2
    lam = np.array([*(T[0, 0] for T in f.factors[1:]), 1.0 if rows > problem.m_rand else 0.0, 0.0])
    code = np.arange(2 * n * n)
    row_factor = lam[code // 2 // n]
    col_factor = lam[code // 2 % n] * np.where(code % 2 == 1, 0.5, 1.0)  # exact: a power of 2
    classes = _pair_classes(problem, targets)
    flat = buffer.reshape(-1)
    out = np.empty(targets.size)
    for a in range(0, targets.size, CHUNK):  # (v lam_r) lam_s, as `_scaled_at` multiplies
        b = min(a + CHUNK, targets.size)
        cls = classes[a:b]
        np.multiply(flat[targets[a:b]], row_factor[cls], out=out[a:b])
        out[a:b] *= col_factor[cls]
    return out


def _s_transpose(problem: Problem, qe: np.ndarray, qr: np.ndarray) -> np.ndarray:
    """S' q over S's rows, which the problem keeps as S_eval's and S_rest's."""
    out = rmatvec(problem.S_eval, qe)
    if problem.S_rest.nnz:
        out += rmatvec(problem.S_rest, qr)
    return out


def inverse_blocks(problem: Problem, f: Factor, with_x: bool, consume: bool = False) -> InverseBlocks:
    """Level blocks of M^{-1} over the random part (with_x False: (L_ZZ L_ZZ')^{-1}) or over
    [Z X] (with_x True: the REML system). `consume`: the factor is not needed for solves
    afterwards (a scalar tail is then inverted in place, tail_inverse)."""
    rows = problem.m_rand + (problem.p if with_x else 0)
    if rows and _staged_applies(problem):
        buffer = f.Ltail if consume else np.zeros((problem.nt, problem.nt))  # untouched pages stay unmapped
        _staged_inverse(problem, f, rows, buffer)
        if consume:
            f.inverted_rows = rows
        Pinv = buffer[:rows, :rows]
        return InverseBlocks(first=_first_blocks(problem, f, Pinv, buffer), tail=_tail_blocks(problem, Pinv))
    # a diagonal Lambda_t keeps the lower triangle's entries apart, and the update targets
    # of a scalar tail are lower-triangle positions: the triangle is all that is read
    Pinv = tail_inverse(f, rows, symmetric=not problem.scalar_tail, consume=consume)
    in_place = problem.scalar_tail and f.inverted_rows == rows and len(problem.tail) < MAX_CLASSED_TERMS
    return InverseBlocks(first=_first_blocks(problem, f, Pinv, f.Ltail if in_place else None),
                         tail=_tail_blocks(problem, Pinv))


def _staged_applies(problem: Problem) -> bool:
    """A scalar tail whose one scalar stage (a term nested in the first) is read at its diagonal
    only: the first term's levels each touch one level of it, so no update target lies off
    the stage's diagonal (checked once per problem)."""
    if not (problem.scalar_tail and len(problem.stages) == 1 and problem.stages[0].p == 1
            and len(problem.tail) < MAX_CLASSED_TERMS):
        return False
    plans = problem.__dict__.setdefault("_inverse_plans", {})
    key = ("_stage_diagonal_only", problem.targets_eval.ctypes.data, problem.targets_rest.ctypes.data)
    if key not in plans:
        k, nt = problem.stages[0].l, problem.nt
        ok = True
        for targets in (problem.targets_eval, problem.targets_rest):
            for _, r, c in _rows_columns(targets, nt):
                ok = ok and not np.any((r < k) & (c < k) & (r != c))
        plans[key] = ok
    return bool(plans[key])


def _staged_inverse(problem: Problem, f: Factor, rows: int, buffer: np.ndarray) -> None:
    """The parts of (L_a L_a')^{-1} the gradient reads, for a tail whose leading k rows are one
    scalar stage: with L_a = [[D, 0], [R, L22]] (D the stage's diagonal pivots, R the rectangle
    below it, L22 the dense factor after it) and K = R D^{-1},

        P22^{-1} = (L22 L22')^{-1},  P21^{-1} = -P22^{-1} K,  diag P11^{-1} = d^-2 + colsum(K * P22^{-1} K)

    written into `buffer` where the factor keeps those blocks (the dense square, the rectangle,
    the stage's diagonal). A dense inverse of the whole leading block would cost (k + m)^3 and
    touch all of the k x k stage block: 15 GB for (x || user) on 40,000 users."""
    C, k = f.Ltail, problem.stages[0].l
    d = np.diagonal(C)[:k].copy()  # the stage's pivots (one column per level)
    m2 = rows - k
    diag = 1.0 / (d * d)
    if m2 > 0:
        K = C[k:rows, :k] / d  # R D^{-1}, read before the buffer (maybe the factor) is written
        if buffer is not C:
            buffer[k:rows, k:rows] = C[k:rows, k:rows]
        invert_leading_block(buffer, m2, start=k)
        lower = np.tril(buffer[k:rows, k:rows])
        P22 = lower + np.tril(lower, -1).T
        P21 = P22 @ K
        P21 *= -1.0
        diag -= np.einsum("ij,ij->j", K, P21)
        buffer[k:rows, :k] = P21
    buffer[np.arange(k), np.arange(k)] = diag
