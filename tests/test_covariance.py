"""runner.covariance: the one definition of each covariance structure, as lme4/glmmTMB count and name it."""

from __future__ import annotations

import numpy as np
import pytest

from runner.compare.shapes import TermShape
from runner.covariance import (COVARIANCES, FUNCTION_OF_COVARIANCE, GLMMTMB_FUNCTIONS, is_singular,
                               lower_triangle, nparams, sd_like, sdcor_names, theta_names)
from runner.engines.lme.templates import Template


@pytest.mark.parametrize(("covariance", "p", "expected"), [
    ("unstructured", 1, 1), ("unstructured", 2, 3), ("unstructured", 4, 10),
    ("diagonal", 1, 1), ("diagonal", 3, 3), ("identity", 1, 1), ("identity", 5, 1),
    ("compound_symmetry", 2, 2), ("compound_symmetry", 6, 2),
])
def test_nparams_as_lme4_and_glmmtmb_count(covariance, p, expected) -> None:
    cols = tuple(f"c{i}" for i in range(p))
    assert nparams(covariance, p) == expected
    # every user of the count reads this one function
    assert Template(covariance, p, "g", cols).ntheta == expected
    assert TermShape("g", cols, covariance).nparams == expected
    assert len(theta_names(covariance, "g", cols)) == expected
    assert len(sdcor_names(covariance, "g", cols)) == expected
    assert len(sd_like(covariance, p)) == expected


def test_names_in_lme4_theta_order() -> None:
    assert lower_triangle(3) == [(0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2)]
    cols = ("(Intercept)", "Days")
    assert theta_names("unstructured", "Subject", cols) == [
        "Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    assert sdcor_names("unstructured", "Subject", cols) == [
        "sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject"]
    assert theta_names("compound_symmetry", "g", ("a", "b")) == ["g.cs_shared", "g.cs_own"]
    assert sdcor_names("identity", "g", ("a", "b")) == ["sd|g"]
    assert sdcor_names("identity", "g", ("a",)) == ["sd_a|g"]


def test_bounds_and_singularity() -> None:
    assert sd_like("unstructured", 2) == [True, False, True]
    assert list(Template("unstructured", 2, "g", ("a", "b")).lower()) == [0.0, -np.inf, 0.0]
    assert is_singular([1.0, -0.5, 5e-5], sd_like("unstructured", 2))
    assert not is_singular([1.0, -5e-5, 0.5], sd_like("unstructured", 2))  # an off-diagonal entry


def test_glmmtmb_spelling_round_trips() -> None:
    assert set(GLMMTMB_FUNCTIONS.values()) == set(COVARIANCES)
    assert all(GLMMTMB_FUNCTIONS[FUNCTION_OF_COVARIANCE[c]] == c for c in COVARIANCES)
