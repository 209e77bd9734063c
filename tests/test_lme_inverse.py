"""The tail inverse in place (lapack_inplace.py, inverse.tail_inverse with consume)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.design.build import build_design
from runner.engines.lme.factor import factorize
from runner.engines.lme.gradient import balances
from runner.engines.lme.inverse import inverse_blocks
from runner.engines.lme.lapack_inplace import invert_leading_block
from runner.engines.lme.solve import spherical_modes
from runner.engines.lme.structure import build_problem
from runner.formula import parse_formula

ROOT = Path(__file__).resolve().parents[1]


def test_leading_block_inverted_in_place_rest_untouched() -> None:
    rng = np.random.default_rng(4)
    n, rows = 60, 45
    X = rng.normal(size=(n, n + 3))
    L = np.linalg.cholesky(X @ X.T + np.eye(n))
    work = L.copy()
    invert_leading_block(work, rows)
    expected = np.linalg.inv(L[:rows, :rows] @ L[:rows, :rows].T)
    np.testing.assert_allclose(np.tril(work[:rows, :rows]), np.tril(expected), rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(work[rows:], L[rows:])  # the rows after the block: the factor still
    with pytest.raises(ValueError):
        invert_leading_block(np.asfortranarray(L), rows)


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_consumed_inverse_gives_the_same_blocks_and_guards_the_factor(method: str) -> None:
    """InstEval's scalar tail: the blocks from the in-place inverse (read by pair classes) equal
    the copying route's bit for bit (the same LAPACK inverse, the same products in the same
    order), and a solve on the consumed factor is refused, not silently wrong."""
    frame = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    problem = build_problem(build_design(parse_formula("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"), frame))
    assert problem.scalar_tail
    theta = np.array([0.3, 0.5, 0.2])
    copied = inverse_blocks(problem, factorize(problem, theta), with_x=method == "REML")
    f = factorize(problem, theta)
    Q_copy = balances(problem, f, method)
    in_place = inverse_blocks(problem, f, with_x=method == "REML", consume=True)
    assert f.inverted_rows == problem.m_rand + (problem.p if method == "REML" else 0)
    np.testing.assert_array_equal(in_place.first, copied.first)
    for a, b in zip(in_place.tail, copied.tail):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="inverted in place"):
        spherical_modes(problem, f)
    Q_consumed = balances(problem, factorize(problem, theta), method, consume=True)
    for a, b in zip(Q_consumed, Q_copy):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | a) + (0 + x | a) + (1 | c)",  # a slope nested in its intercept
                                     "y ~ x + (x || a) + (1 | c) + (1 | f)"])
@pytest.mark.parametrize("with_x", [False, True])
@pytest.mark.parametrize("consume", [False, True])
def test_staged_inverse_equals_the_dense_one(formula: str, with_x: bool, consume: bool, monkeypatch) -> None:
    """A scalar tail led by one scalar stage (a term nested in the first) is inverted block by
    block (inverse._staged_inverse: the stage's diagonal, the rectangle below it, the dense
    square) instead of densely over the whole leading block: the same level blocks to rounding."""
    import runner.engines.lme.inverse as inverse
    from test_lme_engine import synthetic

    from runner.engines.lme.structure import ensure_update_structure

    problem = build_problem(build_design(parse_formula(formula), synthetic(400, 3)))
    ensure_update_structure(problem)  # a model this small defers it (its criterion is evaluated densely)
    theta = problem.start * 0.7
    assert inverse._staged_applies(problem) and problem.stages[0].l == 40
    staged = inverse_blocks(problem, factorize(problem, theta), with_x=with_x, consume=consume)
    monkeypatch.setattr(inverse, "_staged_applies", lambda problem: False)
    dense = inverse_blocks(problem, factorize(problem, theta), with_x=with_x)
    np.testing.assert_allclose(staged.first, dense.first, rtol=1e-12, atol=1e-15)
    for a, b in zip(staged.tail, dense.tail):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_sparse_rectangle_gram_equals_the_dense_product(monkeypatch) -> None:
    """The rectangle below a stage multiplied as a sparse matrix (factor._row_gram, for stages
    with many levels each touching few dense rows) gives the dense product's factor to rounding."""
    import runner.engines.lme.factor as factor_module
    from runner.engines.lme.criterion import objective_from
    from runner.engines.lme.structure import ensure_update_structure
    from test_lme_engine import synthetic

    problem = build_problem(build_design(parse_formula("y ~ x + (x || a) + (1 | c) + (1 | f)"), synthetic(400, 3)))
    ensure_update_structure(problem)
    theta = problem.start * 0.7
    dense = factorize(problem, theta)
    calls = []
    original = factor_module._row_gram

    def counted(G):
        calls.append(np.count_nonzero(G) / G.size)
        return original(G)

    monkeypatch.setattr(factor_module, "SPARSE_GRAM_FLOPS", 0.0)
    monkeypatch.setattr(factor_module, "SPARSE_GRAM_DENSITY", 1.01)  # every rectangle through the sparse route
    monkeypatch.setattr(factor_module, "_row_gram", counted)
    sparse = factorize(problem, theta)
    assert calls  # the staged route was taken
    for method in ("ML", "REML"):
        assert objective_from(problem, sparse, method) == pytest.approx(objective_from(problem, dense, method), rel=1e-13)
    np.testing.assert_allclose(np.tril(sparse.Ltail), np.tril(dense.Ltail), rtol=1e-10, atol=1e-12)
