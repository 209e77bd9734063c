"""The first term's update matrix built a block of tail columns at a time equals the plain
all-at-once construction (every pair of entries within every level, np.unique targets)
exactly, for any block size and row order (the engine's numbers cannot depend on them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from runner.design.build import build_design
from runner.engines.lme import structure as st
from runner.engines.lme.update import UpdateBuilder, rows_view, update_matrix
from runner.formula import parse_formula

STUDENTS = Path(__file__).parents[1] / "runner" / "data" / "examples" / "students.csv"


def reference(A_1t: sp.csr_matrix, l1: int, p1: int, nt: int, both: bool) -> tuple[sp.csr_matrix, np.ndarray]:
    """All ordered pairs (e, f) of A_1t's entries within each level at once (the construction
    the engine used before building S in blocks): S[(r_e, r_f), (level, a_e, b_f)] = v_e v_f."""
    A_1t = A_1t.tocsr()
    A_1t.sort_indices()
    rows = np.repeat(np.arange(A_1t.shape[0]), np.diff(A_1t.indptr))
    level = rows // p1
    e_list, f_list = [], []
    starts = np.searchsorted(level, np.arange(l1 + 1))
    for c in range(l1):
        idx = np.arange(starts[c], starts[c + 1])
        e, f = np.repeat(idx, idx.size), np.tile(idx, idx.size)
        e_list.append(e)
        f_list.append(f)
    e, f = np.concatenate(e_list), np.concatenate(f_list)
    r = A_1t.indices.astype(np.int64)
    if not both:
        keep = r[e] >= r[f]
        e, f = e[keep], f[keep]
    targets, inv = np.unique(r[e] * nt + r[f], return_inverse=True)
    cols = level[e] * p1 * p1 + (rows[e] % p1) * p1 + rows[f] % p1
    S = sp.csr_matrix((A_1t.data[e] * A_1t.data[f], (inv.ravel(), cols)), shape=(targets.size, l1 * p1 * p1))
    S.sum_duplicates()
    return S, targets


def first_and_tail(design):
    blocks = design.blocks
    q = [b.nlevels * b.ncols for b in blocks]
    order = sorted(range(len(blocks)), key=lambda i: -q[i])
    first, rest = blocks[order[0]], [blocks[i] for i in order[1:]]
    tail = sp.hstack([*(st._z(b, None, slab=True) for b in rest),
                      sp.csc_matrix(np.column_stack([design.X, design.y]))], format="csc")
    A_1t = (tail.T @ st._z(first, None)).T.tocsr()
    return first, rest, A_1t, tail.shape[1]


def crossed(rows: int = 3_000, seed: int = 5) -> pd.DataFrame:
    """Users crossed with items (users nested in regions), with a slope: p1 > 1 and both triangles."""
    rng = np.random.default_rng(seed)
    user = rng.integers(120, size=rows)
    item = rng.integers(40, size=rows)
    x = rng.normal(size=rows)
    x[rng.random(rows) < 0.05] = 0.0  # zeros in a slope column: rows of a level with different patterns
    return pd.DataFrame({"user": user.astype(str), "item": item.astype(str), "region": (user % 7).astype(str),
                         "x": x, "y": rng.normal(size=rows) + x})


def same(S: sp.csr_matrix, t: np.ndarray, R: sp.csr_matrix, targets: np.ndarray) -> None:
    assert np.array_equal(t, targets)
    assert S.shape == R.shape
    assert np.array_equal(S.indptr, R.indptr) and np.array_equal(S.indices, R.indices)
    assert np.array_equal(S.data, R.data)  # bit for bit


CASES = [
    (STUDENTS, "test_score ~ age + (1|student_id) + (1|classroom) + (1|school)"),  # scalar tail: lower triangle
    (STUDENTS, "test_score ~ age + (1|student_id) + (age|classroom) + (1|school)"),  # a 2-column tail term: both
    (STUDENTS, "test_score ~ age + (age|classroom) + (1|school) + (1|province)"),  # 2-column first term, lower
    (None, "y ~ x + (1|user) + (1|item) + (1|region)"),  # crossed, lower
    (None, "y ~ x + (x|user) + (1|item) + (1|region)"),  # crossed, p1 = 2, lower (pairs dropped: s > r)
    (None, "y ~ x + (x|user) + (x|item) + (1|region)"),  # crossed, p1 = 2, both triangles
    (None, "y ~ x + (1|user) + (x||item)"),  # crossed, both, diagonal 2-column tail term
]


@pytest.mark.parametrize("path,formula", CASES)
def test_blocks_equal_all_at_once(path, formula):
    frame = pd.read_csv(path) if path else crossed()
    design = build_design(parse_formula(formula), frame)
    first, rest, A_1t, nt = first_and_tail(design)
    both = any(b.ncols > 1 for b in rest)
    R, targets = reference(A_1t, first.nlevels, first.ncols, nt, both)
    assert R.nnz > 0
    for max_pairs, max_cells in ((1, 1), (997, 10 ** 9), (10 ** 9, 3 * nt), (10 ** 9, 10 ** 9)):
        S, t = update_matrix(A_1t, first.nlevels, first.ncols, nt, both, max_pairs=max_pairs, max_cells=max_cells)
        same(S, t, R, targets)


@pytest.mark.parametrize("path,formula", [CASES[1], CASES[5]])
def test_rows_in_any_order_and_views(path, formula):
    """Rows written straight to their routed place equal S's rows taken in that order; a row
    range is a view of S's arrays (S_eval and S_rest share them, nothing copied)."""
    frame = pd.read_csv(path) if path else crossed()
    design = build_design(parse_formula(formula), frame)
    first, rest, A_1t, nt = first_and_tail(design)
    builder = UpdateBuilder(A_1t, first.nlevels, first.ncols, nt, True, max_pairs=500)
    order = np.random.default_rng(1).permutation(builder.targets.size)  # row i of the result is target order[i]
    row_of = np.empty_like(order)
    row_of[order] = np.arange(order.size)
    R, targets = reference(A_1t, first.nlevels, first.ncols, nt, True)
    S = builder.matrix(row_of)
    same(S, targets[order], R[order], targets[order])
    k = order.size // 3
    head, rest_rows = rows_view(S, 0, k), rows_view(S, k, order.size)
    assert np.shares_memory(head.data, S.data) and np.shares_memory(rest_rows.indices, S.indices)
    head.check_format(full_check=True)
    rest_rows.check_format(full_check=True)
    same(head, targets[order[:k]], R[order[:k]], targets[order[:k]])
    same(rest_rows, targets[order[k:]], R[order[k:]], targets[order[k:]])


def test_int64_indices_as_for_wide_tails(monkeypatch):
    """Tails wider than 46,340 columns (nt^2 >= 2^31) keep positions and indices in int64:
    the same S as with int32, forced here on a small crossed design."""
    import runner.engines.lme.update as update

    design = build_design(parse_formula(CASES[4][1]), crossed())
    first, rest, A_1t, nt = first_and_tail(design)
    R, targets = reference(A_1t, first.nlevels, first.ncols, nt, False)
    monkeypatch.setattr(update, "_index_dtype", lambda bound: np.int64)
    S, t = update_matrix(A_1t, first.nlevels, first.ncols, nt, False, max_pairs=700, max_cells=5 * nt)
    assert t.dtype == np.int64  # (scipy stores S's indices as int32 again when they fit)
    same(S, t, R, targets)
