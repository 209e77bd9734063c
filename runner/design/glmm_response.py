"""GLMM responses in lme4's representation, and the bad-input checks of issue 13.

lme4 (through glm's family initialize) stores a binomial response as the proportion of
successes with the numbers of trials as prior weights, whichever way it was written:
0/1 numbers (trials 1), a two-level factor (success = the second level), a proportion
with `weights` = trials, or `cbind(successes, failures)`. Poisson responses are counts.
Everything that glm would only warn about, or silently round, is an error here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

INTEGER_TOL = 1e-7


class GlmmResponseError(ValueError):
    """The response cannot be modelled by the requested family (a data/spec error)."""


@dataclass
class GlmmResponse:
    y: np.ndarray  # binomial: proportion of successes; poisson: counts
    wt: np.ndarray  # binomial: trials (times any prior weight); poisson: prior weights


def _whole(v: np.ndarray) -> np.ndarray:
    return np.abs(v - np.round(v)) <= INTEGER_TOL * np.maximum(1.0, np.abs(v))


def _rows(mask: np.ndarray) -> str:
    idx = np.flatnonzero(mask)[:3] + 1
    more = " ..." if mask.sum() > 3 else ""
    return f"row{'s' if mask.sum() > 1 else ''} {', '.join(str(i) for i in idx)}{more}"


def response_problems(y: np.ndarray, weights: np.ndarray | None, family: str, response: str = "response"
                      ) -> list[str]:
    """Every reason `y` (with prior `weights`) is not a valid `family` response; [] if fine."""
    y = np.asarray(y, dtype=float)
    out: list[str] = []
    if not np.all(np.isfinite(y)):
        return [f"the response '{response}' has missing or infinite values"]
    if family == "binomial":
        if np.any((y < 0) | (y > 1)):
            bad = (y < 0) | (y > 1)
            out.append(f"family binomial needs '{response}' between 0 and 1 ({_rows(bad)}: e.g. {y[bad][0]:g}); "
                       "for counts of successes write cbind(successes, failures), or a proportion "
                       "with weights: the number of trials")
            return out
        if weights is None:
            frac = ~((y == 0) | (y == 1))
            if np.any(frac):
                out.append(f"'{response}' is a proportion ({_rows(frac)}: e.g. {y[frac][0]:g}) but no `weights:` "
                           "were given: a binomial proportion needs weights: the number of trials "
                           "(lme4's convention), or write cbind(successes, failures)")
            return out
        w = np.asarray(weights, dtype=float)
        if not np.all(_whole(w)):
            out.append(f"the binomial weights (numbers of trials) must be whole numbers ({_rows(~_whole(w))})")
        k = y * w
        if not np.all(_whole(k)):
            bad = ~_whole(k)
            out.append(f"successes = '{response}' x weights is not a whole number ({_rows(bad)}: "
                       f"{y[bad][0]:g} x {w[bad][0]:g} = {k[bad][0]:g}): is `weights:` the number of trials?")
    elif family == "poisson":
        neg = y < 0
        if np.any(neg):
            out.append(f"family poisson needs non-negative counts; '{response}' is negative in {_rows(neg)}")
        frac = ~_whole(y)
        if np.any(frac):
            out.append(f"family poisson needs whole-number counts; '{response}' is not whole in {_rows(frac)} "
                       f"(e.g. {y[frac][0]:g}); for rates use counts with offset(log(exposure))")
    return out


def glmm_response(y: np.ndarray, weights: np.ndarray | None, family: str, response: str = "response"
                  ) -> GlmmResponse:
    """(y, prior weights) as lme4 stores them, or GlmmResponseError with every reason."""
    problems = response_problems(y, weights, family, response)
    if problems:
        raise GlmmResponseError("; ".join(problems))
    y = np.asarray(y, dtype=float)
    wt = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    return GlmmResponse(y=y, wt=wt)


def from_cbind(successes: np.ndarray, failures: np.ndarray, names: tuple[str, str] = ("successes", "failures")
               ) -> tuple[np.ndarray, np.ndarray]:
    """cbind(successes, failures) -> (proportion, trials) as glm's binomial initialize does.

    Rows with no trials get proportion 0 and weight 0 in glm; here they are an error,
    since prior weights must be positive."""
    s = np.asarray(successes, dtype=float)
    f = np.asarray(failures, dtype=float)
    for v, name in ((s, names[0]), (f, names[1])):
        if not np.all(np.isfinite(v)):
            raise GlmmResponseError(f"cbind(): '{name}' has missing or infinite values")
        if np.any(v < 0):
            raise GlmmResponseError(f"cbind(): '{name}' is negative in {_rows(v < 0)}: "
                                    "both columns must be counts >= 0")
        if not np.all(_whole(v)):
            raise GlmmResponseError(f"cbind(): '{name}' is not a whole number in {_rows(~_whole(v))}")
    n = s + f
    if np.any(n == 0):
        raise GlmmResponseError(f"cbind(): no trials (successes + failures = 0) in {_rows(n == 0)}")
    return s / n, n


def from_factor(values: pd.Series, levels: list[str] | None = None, name: str = "response"
                ) -> tuple[np.ndarray, str]:
    """A two-level factor or logical -> (0/1, success level): success is the second level
    (glm's rule), in mixspec's level order (sorted, or `levels` as pinned in the spec)."""
    if values.isna().any():
        raise GlmmResponseError(f"the response '{name}' has missing values")
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.to_numpy(dtype=float), "True"
    if levels is None:
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = [str(c) for c in values.cat.categories if (values == c).any()]
        else:
            levels = sorted(str(v) for v in pd.unique(values))
    text = values.astype(str)
    present = sorted(set(text))
    if len(levels) != 2 or len(present) > 2:
        shown = ", ".join(repr(v) for v in (present if len(present) <= 6 else present[:6] + ["..."]))
        raise GlmmResponseError(
            f"a binomial factor response needs exactly 2 levels; '{name}' has {len(present)} ({shown}): "
            "recode it to two levels, or use a 0/1 column")
    unknown = sorted(set(present) - set(levels))
    if unknown:
        raise GlmmResponseError(f"the response '{name}' has values {unknown} outside its levels {levels}")
    return (text == levels[1]).to_numpy(dtype=float), str(levels[1])
