"""Predictions and simulations from a fitted model, in lme4's conventions.

predict: X beta + offset + sum over terms of Z b at each row's level, where a level never
fitted contributes 0 (lme4's `allow.new.levels = TRUE`: the population value) or is an
error; `random_effects=False` is lme4's `re.form = NA`. simulate: lme4's `simulate()`
with new random effects b ~ N(0, Sigma) and residuals N(0, sigma^2 / w).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.special import ndtr

from runner.api.context import ModelContext, block_covariance
from runner.api.newdata import new_design
from runner.data.errors import DataError
from runner.fit import Fit
from runner.spec.errors import SpecIssue

NewLevels = Literal["population", "error"]
PredictType = Literal["link", "response"]

_INVERSE = {
    "identity": lambda eta: eta,
    "log": np.exp,
    "logit": expit,
    "probit": ndtr,
    "cloglog": lambda eta: -np.expm1(-np.exp(eta)),
    "inverse": lambda eta: 1.0 / eta,
    "sqrt": np.square,
}


def inverse_link(link: str, eta: np.ndarray) -> np.ndarray:
    """The mean from the linear predictor (type="response")."""
    try:
        return _INVERSE[link](eta)
    except KeyError:
        raise ValueError(f"unknown link {link!r}: one of {', '.join(_INVERSE)}") from None


def _check_options(new_levels: str, type: str) -> None:
    if new_levels not in ("population", "error"):
        raise ValueError(f"new_levels must be 'population' or 'error', got {new_levels!r}")
    if type not in ("link", "response"):
        raise ValueError(f"type must be 'link' or 'response', got {type!r}")


def beta_of(fit: Fit) -> np.ndarray:
    return np.array([fe.estimate for fe in fit.fixed_effects], dtype=float)


def predict_new(ctx: ModelContext, fit: Fit, newdata: pd.DataFrame, random_effects: bool = True,
                new_levels: NewLevels = "population", type: PredictType = "link") -> np.ndarray:
    """Predictions on `newdata` (NaN where a predictor is missing)."""
    _check_options(new_levels, type)
    nd = new_design(ctx, newdata, random_effects=random_effects)
    if new_levels == "error" and nd.new_levels:
        raise DataError([SpecIssue(None, None, None, f"newdata.{group}",
                                   f"level{'s' if len(lv) > 1 else ''} {', '.join(map(repr, lv[:5]))} of grouping "
                                   f"factor {group!r} {'were' if len(lv) > 1 else 'was'} not fitted (new_levels="
                                   "'error'; 'population' predicts them at the population value)")
                         for group, lv in nd.new_levels.items()])
    eta = nd.X @ beta_of(fit)
    if nd.offset is not None:
        eta = eta + nd.offset
    if random_effects:
        arrays = fit.arrays
        if arrays is None:
            raise ValueError("this fit has no conditional modes (arrays); refit it to predict")
        for (Z, codes), blk in zip(nd.blocks, arrays.ranef):
            modes = np.asarray(blk.modes, float).reshape(len(blk.levels), len(blk.columns))
            known = codes >= 0
            eta[known] += np.einsum("na,na->n", Z[known], modes[codes[known]])
    eta = np.where(nd.missing, np.nan, eta)
    return inverse_link(ctx.link, eta) if type == "response" else eta


def linear_predictor(ctx: ModelContext, fit: Fit, random_effects: bool = True) -> np.ndarray:
    """X beta + offset (+ Z b at the conditional modes) on the fitted rows."""
    eta = population_fitted(ctx, fit)
    if random_effects and fit.arrays is not None:
        for block, blk in zip(ctx.design.blocks, fit.arrays.ranef):
            modes = np.asarray(blk.modes, float).reshape(len(blk.levels), len(blk.columns))
            eta = eta + np.einsum("na,na->n", block.X, modes[block.codes])
    return eta


def population_fitted(ctx: ModelContext, fit: Fit) -> np.ndarray:
    """X beta (+ offset) on the fitted rows."""
    d = ctx.design
    eta = d.X @ beta_of(fit)
    return eta + d.offset if d.offset is not None else eta


def _sqrt_psd(S: np.ndarray) -> np.ndarray:
    """A square root L with L L' = S, also for a singular S (a zero variance at the boundary)."""
    w, V = np.linalg.eigh(S)
    return V * np.sqrt(np.clip(w, 0.0, None))


def simulate(ctx: ModelContext, fit: Fit, nsim: int = 1, seed: int | None = None) -> np.ndarray:
    """(n, nsim) responses drawn from the fitted model (new random effects each time), as
    lme4's simulate(): gaussian y + N(0, sigma^2 / w); binomial the proportion of w trials
    (a 0/1 response without weights); poisson counts."""
    if not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    rng = np.random.default_rng(seed)
    d = ctx.design
    n = d.nobs
    eta = np.repeat(population_fitted(ctx, fit)[:, None], nsim, axis=1)
    for block in d.blocks:
        L = _sqrt_psd(block_covariance(fit, block))
        b = rng.standard_normal((nsim, block.nlevels, block.ncols)) @ L.T  # (nsim, levels, q)
        eta += np.einsum("nq,snq->ns", block.X, b[:, block.codes, :])
    if ctx.family == "gaussian":
        scale = fit.sigma / np.sqrt(d.weights) if d.weights is not None else np.full(n, fit.sigma)
        return eta + rng.standard_normal((n, nsim)) * scale[:, None]
    mu = inverse_link(ctx.link, eta)
    if ctx.family == "binomial":
        trials = np.rint(d.weights).astype(np.int64) if d.weights is not None else np.ones(n, np.int64)
        return rng.binomial(trials[:, None], np.clip(mu, 0.0, 1.0)) / trials[:, None]
    if ctx.family == "poisson":
        return rng.poisson(mu).astype(float)
    raise NotImplementedError(f"simulate for family {ctx.family!r}")
