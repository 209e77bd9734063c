"""Independent evaluations two at a time (runner/engines/lme/parallel.py): the same bits as one
after the other, for the convergence check's gradients and Satterthwaite's difference points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner.engines.lme.parallel as parallel
from runner.design.build import build_design
from runner.engines import fit_design
from runner.engines.common import evaluation_workers, one_blas_thread
from runner.engines.lme.criterion import Criterion
from runner.engines.lme.structure import build_problem
from runner.formula import parse_formula
from runner.inference.satterthwaite import _from_gradient
from runner.inference.state import state_from_fit

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"


@pytest.fixture(scope="module")
def insteval() -> pd.DataFrame:
    return pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")


def test_gradients_two_at_a_time_equal_one_after_the_other(insteval, monkeypatch) -> None:
    problem = build_problem(build_design(parse_formula(FORMULA), insteval))
    assert problem.expensive
    x = np.array([0.31, 0.52, 0.19])
    points = [x + 1e-4 * e for e in np.eye(3)]
    with one_blas_thread():
        serial = [Criterion(problem, "REML", whitened=True).value_and_gradient(p) for p in points]
        monkeypatch.setattr(parallel, "evaluation_workers", lambda: 2)
        crit = Criterion(problem, "REML", whitened=True)
        both = crit.gradients_at(points)
    assert crit.evaluations == 3
    for (v1, g1), (v2, g2) in zip(serial, both):
        assert v1 == v2
        np.testing.assert_array_equal(g1, g2)


def test_satterthwaite_points_two_at_a_time_equal_one_after_the_other(insteval, monkeypatch) -> None:
    design = build_design(parse_formula(FORMULA), insteval)
    fit = fit_design(design, "REML")
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(parallel, "evaluation_workers", lambda w=workers: w)
        with one_blas_thread():
            found = _from_gradient(state_from_fit(design, fit))
        assert found is not None
        results.append(found)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_threaded_blas_asked_for_means_one_evaluation_at_a_time(monkeypatch) -> None:
    monkeypatch.setenv("MIXSPEC_BLAS_THREADS", "2")
    assert evaluation_workers() == 1
