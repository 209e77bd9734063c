"""The spec file's schema: pydantic models are the single source of truth.

The `data:` section is in `runner.spec.data_models`, the shared base in `runner.spec.base`;
their names are re-exported here, where callers have always imported them.

Everything a spec may say is declared here with a description, so `mixspec schema`
gives editors completion and hover help, and unknown keys are errors
(`extra="forbid"`), never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from runner.covariance import Covariance as CovarianceName
from runner.spec.base import Strict, check_safe_name, safe_name
from runner.spec.data_models import CategoricalSpec, CenterSpec, DataSpec, SimulateSource, SqlSource
from runner.spec.limits import MAX_NAGQ, MAX_NSIM
from runner.vocab import EngineName, Method

__all__ = ["CategoricalSpec", "CenterSpec", "DataSpec", "SimulateSource", "SqlSource", "Strict", "check_safe_name",
           "safe_name"]  # defined in runner.spec.base and runner.spec.data_models

_PARQUET: list[Literal["parquet", "csv"]] = ["parquet"]  # predict's default formats (copied per spec)
FamilyName = Literal["gaussian", "binomial", "poisson"]
LinkName = Literal["identity", "logit", "probit", "cloglog", "log"]
Verify = Literal["statsmodels"]

# ----------------------------------------------------------------------------- models


class BootstrapSpec(Strict):
    """Parametric bootstrap: replicate i is seeded with numpy's SeedSequence([seed, i])."""

    nsim: int = Field(1000, ge=1, le=MAX_NSIM, description="Number of simulated replicates")
    seed: int = Field(1, ge=0, description="Seed of the replicates")


class InferenceSpec(Strict):
    """Denominator df, p-values and intervals of a linear mixed model (GLMMs: Wald z)."""

    df: Literal["satterthwaite", "kenward-roger", "none"] | None = Field(
        None, description="satterthwaite (default, as lmerTest), kenward-roger (REML only, as pbkrtest) "
        "or none (Wald z, as lme4)")
    ci: Literal["wald", "profile", "bootstrap"] | None = Field(
        None, description="wald (default; t on the df above), profile (lme4's confint) or bootstrap (parametric)")
    level: float | None = Field(None, gt=0, lt=1, description="Confidence level (default 0.95)")
    bootstrap: BootstrapSpec | None = Field(None, description="nsim and seed for ci: bootstrap")


class Defaults(Strict):
    """Options every model inherits unless it says otherwise."""

    method: Method = Field("REML", description="REML or ML (linear models; a GLMM is always ML)")
    engine: EngineName = Field("auto", description="auto (the native lme engine), lme or statsmodels")
    family: FamilyName = Field("gaussian", description="gaussian (linear mixed model), binomial or poisson (GLMM)")
    link: LinkName | None = Field(None, description="binomial: logit (default), probit, cloglog; poisson: log")
    nagq: int = Field(1, ge=0, le=MAX_NAGQ, description="lme4's nAGQ: 1 Laplace, > 1 adaptive Gauss-Hermite "
                                                   "quadrature (one scalar random term), 0 glmer's fast stage")
    verify: Verify | None = Field(None, description="Also fit with statsmodels and report the difference")
    inference: InferenceSpec = Field(default_factory=InferenceSpec, description="df, p-values and intervals")


class ModelOptions(Strict):
    """Per-model options shared by both model forms."""

    weights: str | None = Field(None, description="Column of prior weights (positive, finite)")
    offset: str | None = Field(None, description="Numeric column added to the linear predictor")
    method: Method | None = Field(None, description="REML or ML (default: defaults.method)")
    engine: EngineName | None = Field(None, description="Engine (default: defaults.engine)")
    family: FamilyName | None = Field(None, description="gaussian, binomial or poisson (default: defaults.family)")
    link: LinkName | None = Field(None, description="Link function (default: the family's canonical link)")
    nagq: int | None = Field(None, ge=0, le=MAX_NAGQ, description="lme4's nAGQ (default: defaults.nagq)")
    verify: Verify | None = Field(None, description="Cross-check with statsmodels")
    inference: InferenceSpec | None = Field(None, description="df, p-values and intervals (over defaults)")


class FormulaModel(ModelOptions):
    """A model written as an lme4 formula: `y ~ x + (x|g) + (1|a/b)`."""

    formula: str = Field(description="lme4 formula; glmmTMB's diag()/homdiag()/homcs() for other covariances")


class RandomSpec(Strict):
    """One grouping level of the structured form."""

    group: str = Field(description="Grouping column")
    within: str | None = Field(None, description="Enclosing grouping column: the group is nested in it")
    terms: list[str | int] = Field(default_factory=lambda: list[str | int]([1]),
                                   description="Random-effect terms: 1 for the intercept, column names for slopes")
    covariance: CovarianceName = Field("unstructured", description="Covariance of the terms")


class StructuredModel(ModelOptions):
    """A model written as response, fixed terms and a list of grouping levels."""

    response: str = Field(description="Response column")
    fixed: list[str] = Field(default_factory=list, description="Fixed-effect terms (R formula syntax)")
    intercept: bool = Field(True, description="Include a fixed intercept")
    random: list[RandomSpec] = Field(default_factory=list, description="Grouping levels")


def _model_form(value: Any) -> str:
    """Pick the model form from its keys, so errors speak of one form, not both."""
    keys = value.keys() if isinstance(value, dict) else vars(value).keys() if hasattr(value, "__dict__") else ()
    if "formula" in keys:
        return "formula"
    if {"response", "fixed", "random"} & set(keys):
        return "structured"
    return "formula"


ModelSpec = Annotated[
    Annotated[FormulaModel, Tag("formula")] | Annotated[StructuredModel, Tag("structured")],
    Discriminator(_model_form),
]
#: Tags of the model union; they appear in pydantic error locations and are skipped there.
MODEL_FORM_TAGS = ("formula", "structured")


class VariantSpec(ModelOptions):
    """A model derived from another (or from another variant) by adding or dropping terms."""

    base: str = Field(alias="from", description="Model or variant this one starts from")
    add: list[str] = Field(default_factory=list, description="Terms to add, e.g. \"(1|student_id)\"")
    drop: list[str] = Field(default_factory=list, description="Terms to drop, e.g. sex or \"(1|school)\"")


class TestSpec(Strict):
    """One likelihood-ratio test written as a mapping, to set how nesting is required."""

    models: tuple[str, str] = Field(description="[small, large]")
    nested: Literal["proven", "strict"] = Field(
        "proven", description="proven: a pair whose nesting can be neither proven nor refuted is tested with a "
        "warning (lme4 checks nothing); strict: it is an error")


class CompareSpec(Strict):
    """How models are ranked and tested."""

    criterion: Literal["AIC", "BIC", "AICc"] = Field("AIC", description="Ranking criterion")
    refit: bool = Field(True, description="Refit REML fits with ML for ranking and tests (as lme4's anova())")
    tests: list[tuple[str, str] | TestSpec] | Literal["auto"] = Field(
        default_factory=list, description="Likelihood-ratio tests as [small, large] pairs "
        "(or {models: [small, large], nested: strict}), or 'auto'")
    bootstrap: BootstrapSpec | None = Field(
        None, description="Also a parametric-bootstrap p-value per test (pbkrtest's PBmodcomp)")

    def test_pairs(self) -> list[tuple[str, str, str]]:
        """(small, large, nested) of every listed test; empty for 'auto'."""
        if self.tests == "auto":
            return []
        return [(t.models[0], t.models[1], t.nested) if isinstance(t, TestSpec) else (t[0], t[1], "proven")
                for t in self.tests]


class ExpectSpec(Strict):
    """Checks evaluated after fitting; a failing one makes the run exit 1.

    The shapes are declared here for editors; the condition grammar is parsed by
    `runner.spec.expect.parse_expectations` (never by eval).
    """

    best: str | None = Field(None, description="The model expected to rank first")
    fixed: str | list[str] | dict[str, str | list[str]] | None = Field(
        None, description="Fixed-effect conditions: [\"age > 0\", \"sexM in [-3, 0]\"], "
        "or per model {NAME: [...]}")
    converged: Literal["all", "any"] | list[str] | None = Field(
        None, description="Which models must converge for the run to pass: 'all' (also when absent), a list "
        "(the others are reported, not gating) or 'any' (none gates)")
    singular: Literal["none"] | list[str] | None = Field(
        None, description="'none' or a list of models that must not be singular")
    delta_aic: dict[str, str | float] | None = Field(
        None, description="Bounds on a model's criterion delta: {NAME: \"< 2\"}")


class ReportSpec(Strict):
    """Options of the HTML report."""

    title: str | None = Field(None, description="Report title (default: the spec's title)")
    caterpillar_max_levels: int | None = Field(
        None, ge=1, description="Show at most this many levels per caterpillar plot")


_NameKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")]  # no dots: paths are dotted


class PredictSpec(Strict):
    """Predictions of fitted models on new rows, written to predictions/<model>.parquet."""

    data: DataSpec = Field(description="The new rows: a data source as under data: (path, sql, example), "
                           "with filter and id_columns; factor levels and centring come from the fitted data")
    models: list[str] | None = Field(None, description="Models to predict with (default: every model)")
    random_effects: bool = Field(True, description="Include the random effects (false: the population "
                                 "prediction, lme4's re.form = NA)")
    new_levels: Literal["population", "error"] = Field(
        "population", description="A grouping level not fitted: predict at the population value "
        "(lme4's allow.new.levels = TRUE) or make it an error")
    formats: list[Literal["parquet", "csv"]] = Field(default_factory=lambda: _PARQUET.copy(), min_length=1,
                                                     description="Files to write per model")

    @model_validator(mode="after")
    def _prepared_like_fitted(self) -> PredictSpec:
        for key in ("categorical", "center"):
            if getattr(self.data, key):
                raise ValueError(f"predict.data.{key} is not allowed: the new rows are coded as the fitted "
                                 f"data (set {key} under data:)")
        return self


class Spec(Strict):
    """A mixspec spec: data, models, variants, comparisons and expectations."""

    name: str | None = Field(None, description="Report folder name; default: the spec file's stem")
    title: str | None = Field(None, description="Human title")
    data: DataSpec
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[_NameKey, ModelSpec] = Field(min_length=1, description="Models by name")
    variants: dict[_NameKey, VariantSpec] = Field(default_factory=dict, description="Derived models by name")
    compare: CompareSpec = Field(default_factory=CompareSpec)
    expect: ExpectSpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)
    predict: PredictSpec | None = Field(None, description="Predict new rows with the fitted models")

    @field_validator("name")
    @classmethod
    def _safe(cls, value: str | None) -> str | None:
        return None if value is None else check_safe_name(value)

    @field_validator("models", "variants")
    @classmethod
    def _safe_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            check_safe_name(key, "model name")
        return value
