"""Covariance structures of a random term: names, glmmTMB spelling, parameter counts, theta names.

The one place that knows what each structure is. The formula parser reads glmmTMB's
function names with it, the spec schema lists the names from it, both engines and the
comparisons count parameters with `nparams`, and the lme engine's Cholesky templates
(engines/lme/templates.py) lay out theta in `lower_triangle` order. Pure Python: the
spec schema and the formula layer import it without the numeric stack.

Per term of p columns with relative covariance T T' = Sigma / sigma^2:

    unstructured       T lower triangular, p (p + 1) / 2 parameters (lme4's default)
    diagonal           T = diag(t_1 .. t_p), p parameters (lme4's `||` on numeric columns)
    identity           T = t I, 1 parameter (glmmTMB's homdiag)
    compound_symmetry  T T' = t_shared^2 J + t_own^2 I, 2 parameters (glmmTMB's homcs;
                       the correlation t_shared^2 / (t_shared^2 + t_own^2) is >= 0)
"""

from __future__ import annotations

from typing import Literal, get_args
from collections.abc import Callable

Covariance = Literal["unstructured", "diagonal", "identity", "compound_symmetry"]
COVARIANCES: tuple[Covariance, ...] = get_args(Covariance)

# glmmTMB's covariance functions that mixspec supports, and their structures
GLMMTMB_FUNCTIONS: dict[str, Covariance] = {
    "us": "unstructured",
    "diag": "diagonal",
    "homdiag": "identity",
    "homcs": "compound_symmetry",
}
FUNCTION_OF_COVARIANCE: dict[str, str] = {v: k for k, v in GLMMTMB_FUNCTIONS.items()}

# correlated structures: their terms have covariance (and correlation) rows in VarCorr
CORRELATED: tuple[Covariance, ...] = ("unstructured", "compound_symmetry")


def nparams(covariance: Covariance, p: int) -> int:
    """Covariance parameters (theta entries) of a term with p columns, as lme4/glmmTMB count them.

    Compound symmetry always has 2: the design layer refuses it on one column, where a
    shared and an own part cannot be told apart."""
    if covariance == "unstructured":
        return p * (p + 1) // 2
    if covariance == "diagonal":
        return p
    if covariance == "identity":
        return 1
    return 2


def lower_triangle(p: int) -> list[tuple[int, int]]:
    """(row, column) of a p x p lower triangle by column: lme4's order of theta in a term."""
    return [(i, j) for j in range(p) for i in range(j, p)]


def sd_like(covariance: Covariance, p: int) -> list[bool]:
    """Per theta entry: True for a relative SD (bounded below by 0), False for an off-diagonal
    factor entry (unbounded): the optimizer's bounds and lme4's isSingular rule."""
    if covariance == "unstructured":
        return [i == j for i, j in lower_triangle(p)]
    return [True] * nparams(covariance, p)


SINGULAR_TOL = 1e-4  # lme4's isSingular: a fit is singular when an SD-like theta entry is below this


def is_singular(theta: list[float], sd_flags: list[bool]) -> bool:
    """lme4's isSingular on one term's (or all terms') theta."""
    return any(t < SINGULAR_TOL for t, sd in zip(theta, sd_flags) if sd)


def _names(covariance: Covariance, columns: tuple[str, ...], entry: Callable[[str, str | None], str],
           identity: str, cs: list[str]) -> list[str]:
    """Per theta entry: entry(column, None) for a diagonal one, entry(row, column) off it."""
    if covariance == "unstructured":
        return [entry(columns[i], None) if i == j else entry(columns[i], columns[j])
                for i, j in lower_triangle(len(columns))]
    if covariance == "diagonal":
        return [entry(c, None) for c in columns]
    return [identity] if covariance == "identity" else cs


def theta_names(covariance: Covariance, group: str, columns: tuple[str, ...]) -> list[str]:
    """theta names as lme4's getME(m, "theta"): group.col, group.col_i.col_j."""
    return _names(covariance, columns, lambda a, b: f"{group}.{a}" if b is None else f"{group}.{a}.{b}",
                  f"{group}.identity", [f"{group}.cs_shared", f"{group}.cs_own"])


def sdcor_names(covariance: Covariance, group: str, columns: tuple[str, ...]) -> list[str]:
    """The term's parameters on lme4's sigma scale (`confint(oldNames = FALSE)`): sd_col|group
    for a standard deviation, cor_row.col|group for a correlation, in theta's order (one
    column: sd_col|group whatever the structure)."""
    return _names("unstructured" if len(columns) == 1 else covariance, columns,
                  lambda a, b: f"sd_{a}|{group}" if b is None else f"cor_{a}.{b}|{group}",
                  f"sd|{group}", [f"sd|{group}", f"cor|{group}"])  # compound symmetry: common SD, correlation
