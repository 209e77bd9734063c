"""The first term's update matrix built in chunks of levels equals the all-at-once
construction exactly (the engine's numbers cannot depend on the chunk size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from runner.design.build import build_design
from runner.engines.lme import structure as st
from runner.engines.lme.update import _all_at_once, _Pairs, update_matrix
from runner.formula import parse_formula

STUDENTS = Path(__file__).parents[1] / "runner" / "data" / "examples" / "students.csv"


@pytest.mark.parametrize("formula", [
    "test_score ~ age + (1|student_id) + (1|classroom) + (1|school)",  # scalar tail: lower triangle
    "test_score ~ age + (1|student_id) + (age|classroom) + (1|school)",  # a 2-column tail term: both
    "test_score ~ age + (age|classroom) + (1|school) + (1|province)",  # a 2-column first term
])
def test_chunks_equal_all_at_once(formula):
    design = build_design(parse_formula(formula), pd.read_csv(STUDENTS))
    blocks = design.blocks
    q = [b.nlevels * b.ncols for b in blocks]
    order = sorted(range(len(blocks)), key=lambda i: -q[i])
    first, rest = blocks[order[0]], [blocks[i] for i in order[1:]]
    tail = sp.hstack([*(st._z(b, None, slab=True) for b in rest),
                      sp.csc_matrix(np.column_stack([design.X, design.y]))], format="csc")
    A_1t = (tail.T @ st._z(first, None)).T.tocsr()
    A_1t.sort_indices()
    nt = tail.shape[1]
    both = any(b.ncols > 1 for b in rest)
    whole, targets = _all_at_once(_Pairs(A_1t, first.ncols, both), first.nlevels, first.ncols, nt)
    for max_pairs in (1, 997, 10 ** 9):
        S, t = update_matrix(A_1t, first.nlevels, first.ncols, nt, both, max_pairs=max_pairs)
        assert np.array_equal(t, targets)
        assert np.array_equal(S.indptr, whole.indptr) and np.array_equal(S.indices, whole.indices)
        assert np.array_equal(S.data, whole.data)
