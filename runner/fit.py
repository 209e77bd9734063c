"""The engine-agnostic result of fitting one model.

Every engine returns a `Fit`; compare, run and report read only this. It is a
pydantic model, so it serializes to results.json and its JSON Schema is generated,
never hand-written. Numbers follow lme4's conventions (objective = REML criterion or
deviance; AIC/BIC of a REML fit from the REML criterion; theta in lme4's order).
Per-row and per-level arrays live in `FitArrays`, which is excluded from JSON and
written to the `fits/<model>.parquet` sidecar instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from runner.vocab import FittingEngine, Method


class FitWarning(BaseModel):
    """A warning attached to a fit; `code` is stable for tools, `message` for people."""

    model_config = ConfigDict(extra="forbid")
    code: str  # e.g. "singular", "convergence", "rank_deficient", "scale_x", "few_levels", "boundary"
    message: str


class FixedEffect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    term: str
    lme4_name: str
    variable: str | None = None
    level: str | None = None
    estimate: float
    std_error: float | None
    statistic: float | None
    df: float | None = None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    std_error_adjusted: float | None = None  # Kenward-Roger's adjusted SE (df: kenward-roger)


class RandomEffect(BaseModel):
    """One row of lme4's VarCorr table: a variance/SD, or a covariance/correlation pair."""

    model_config = ConfigDict(extra="forbid")
    id: str
    group: str
    term: str
    term2: str | None = None
    variance: float | None = None
    sd: float | None = None
    covariance: float | None = None
    corr: float | None = None


class AnovaRow(BaseModel):
    """One type III F test (lmerTest's anova(type = 3)) of a model term."""

    model_config = ConfigDict(extra="forbid")
    term: str  # as R labels it: "Variety", "age:sex"
    num_df: int
    den_df: float | None
    F: float | None
    p_value: float | None


class ConfintRow(BaseModel):
    """An interval with lme4's confint(oldNames = FALSE) name: sd_(Intercept)|Subject, sigma, Days."""

    model_config = ConfigDict(extra="forbid")
    parameter: str
    estimate: float | None  # None: a correlation of a zero SD (lme4: NaN)
    low: float | None
    high: float | None


class R2(BaseModel):
    """Nakagawa's R2 as performance::r2_nakagawa."""

    model_config = ConfigDict(extra="forbid")
    marginal: float
    conditional: float


class ICC(BaseModel):
    """performance::icc: adjusted = random / (random + residual); unadjusted = R2c - R2m."""

    model_config = ConfigDict(extra="forbid")
    adjusted: float
    unadjusted: float


class Convergence(BaseModel):
    model_config = ConfigDict(extra="forbid")
    converged: bool
    optimizer: str
    message: str = ""
    evaluations: int = 0
    max_abs_gradient: float | None = None  # lme4's scaled gradient, projected at active bounds
    hessian_min_eigenvalue: float | None = None


@dataclass
class RanefBlock:
    """Conditional modes (BLUPs) of one random term and their conditional SDs."""

    id: str
    group: str
    columns: list[str]
    levels: list[str]
    modes: np.ndarray  # (nlevels, ncols)
    cond_sd: np.ndarray  # (nlevels, ncols)


@dataclass
class FitArrays:
    """Per-row and per-level output, for plots and the parquet sidecar (not JSON)."""

    fitted: np.ndarray
    residuals: np.ndarray
    ranef: list[RanefBlock] = field(default_factory=list)
    vcov: np.ndarray | None = None  # vcov(beta) where the engine has it at hand (GLMMs: 2 H^-1 or R_X)
    # the lme engine's (R_X' R_X)^{-1} and the theta it and the fixed effects were computed at:
    # inference starts from them while the Fit's theta is still that one (inference/state.py)
    vcov_unscaled: np.ndarray | None = None
    theta: np.ndarray | None = None


class FitFields(BaseModel):
    """What a fit says, as results.json records it: the fields `Fit` and
    `runner.results.ModelRecord` share (one definition, so the record is never a hand copy).

    Optional here because a failed model's record has none of the numbers; `Fit` narrows
    the ones every fit has.
    """

    model_config = ConfigDict(extra="forbid")

    formula: str
    engine: str
    method: Method
    nobs: int | None = None
    npar: int | None = None  # fixed effects + covariance parameters + residual (lme4's df of logLik)
    ngroups: dict[str, int] = Field(default_factory=dict)
    theta: list[float] = Field(default_factory=list)
    theta_names: list[str] = Field(default_factory=list)
    sigma: float | None = None
    loglik: float | None = None
    objective: float | None = None  # REML criterion or deviance (-2 logLik), as lme4 reports
    aic: float | None = None
    bic: float | None = None
    # generalized linear mixed models (None for linear ones): lme4's family and link, nAGQ,
    # the success level of a factor response, how vcov(beta) was computed ("hessian": beta
    # block of 2 H^-1; "rx": (R_X' R_X)^-1), and for nagq > 1 lme4 1.1-31's logLik, which
    # omits the saturated model's term (lme4 issue 161; `loglik` has every constant)
    family: str | None = None
    link: str | None = None
    nagq: int | None = None
    success_level: str | None = None
    vcov_method: Literal["hessian", "rx"] | None = None
    loglik_lme4: float | None = None
    p_method: str | None = None
    ci_method: str | None = None
    fixed_effects: list[FixedEffect] = Field(default_factory=list)
    random_effects: list[RandomEffect] = Field(default_factory=list)
    anova: list[AnovaRow] = Field(default_factory=list)  # type III F tests (lmerTest's anova(type = 3))
    confint: list[ConfintRow] = Field(default_factory=list)  # intervals, lme4's confint names
    r2: R2 | None = None  # Nakagawa, as performance::r2_nakagawa
    icc: ICC | None = None  # as performance::icc
    converged: bool | None = None
    singular: bool | None = None
    convergence: Convergence | None = None
    warnings: list[FitWarning] = Field(default_factory=list)


class Fit(FitFields):
    """One engine's fit of one design: every number present, plus the per-row arrays."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    engine: FittingEngine
    nobs: int
    npar: int
    sigma: float
    loglik: float
    objective: float
    aic: float
    bic: float
    p_method: str = "wald-z"
    ci_method: str = "wald"
    converged: bool
    singular: bool
    convergence: Convergence
    fit_seconds: float = 0.0
    arrays: FitArrays | None = Field(default=None, exclude=True)
