"""The results.json contract: pydantic models, so the JSON Schema is generated.

Everything outside `run` is a pure function of spec, data, package versions and git
commit, so a rerun gives byte-identical output there (timings live only in `run`).
Floats that are NaN or infinite are written as null (`record_json`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from runner.vocab import Method
from runner.fit import FitFields

SCHEMA_VERSION = 2  # 2: fixed-effect `term` is R's name (sexM), as lme4_name; 1 had formulaic's (sex[T.M])
RESULTS_NAME = "results.json"  # one per spec, in <out>/<spec name>/


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReportOptions(_Strict):
    """The spec's `report:` section, kept in the record so `mixspec report` redraws the same page."""

    title: str | None = None
    caterpillar_max_levels: int | None = Field(None, ge=1)


class SpecInfo(_Strict):
    name: str
    title: str | None = None
    path: str
    sha256: str
    report: ReportOptions = Field(default_factory=ReportOptions)


class DataInfo(_Strict):
    source: str  # human description with credentials redacted, e.g. "example: students"
    sha256: str  # of the columns loaded (`columns`), in the source's order, before the filter
    columns: list[str] = Field(default_factory=list)  # the columns the spec uses, loaded and hashed; no others are read
    rows: int  # rows loaded
    rows_used: int  # rows after filter and NA handling (na: common); per model see ModelRecord.nobs
    dropped: dict[str, int] = Field(default_factory=dict)  # reason -> rows, e.g. {"filter": 3, "missing": 2}
    na: Literal["common", "per_model"] = "common"


class Environment(_Strict):
    mixspec: str
    python: str
    numpy: str
    scipy: str
    pandas: str
    statsmodels: str | None = None
    formulaic: str | None = None  # no longer a dependency: always null (kept so the schema stays 2)
    git_commit: str | None = None


class FactorRecord(_Strict):
    """A categorical predictor: its levels, reference level and contrast."""

    levels: list[str]
    reference: str | None = None
    contrast: str = "treatment"


class MLRefit(_Strict):
    """ML values of a REML-fitted model, used for ranking and likelihood-ratio tests."""

    loglik: float
    deviance: float
    aic: float
    bic: float
    npar: int
    converged: bool = True


class VerifyRecord(_Strict):
    """Cross-check of the model against a second engine (`verify: statsmodels`)."""

    engine: str
    status: Literal["ok", "failed", "inexpressible"]
    message: str | None = None
    max_rel_diff: dict[str, float | None] = Field(default_factory=dict)  # objective, fixed_effects, sds
    flagged: bool = False  # any difference above 1e-4


class ModelRecord(FitFields):
    """One model of the spec: its `Fit`'s fields, flat, plus run bookkeeping."""

    status: Literal["ok", "failed"]
    error: str | None = None
    source: str = "model"  # "model" or "variant of <name>"
    ml_refit: MLRefit | None = None
    verify: VerifyRecord | None = None
    sidecar: str | None = None  # relative path of fits/<model>.parquet
    predictions: str | None = None  # relative path of predictions/<model>.parquet (spec predict:)

    @model_serializer(mode="wrap")
    def _in_record_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """results.json's key order (schema 2): bookkeeping first, ml_refit after the likelihoods."""
        data = handler(self)
        return {key: data[key] for key in _RECORD_ORDER if key in data}


def _record_order() -> tuple[str, ...]:
    fit = list(FitFields.model_fields)
    at = fit.index("p_method")
    return ("status", "error", "source", *fit[:at], "ml_refit", *fit[at:], "verify", "sidecar", "predictions")


_RECORD_ORDER = _record_order()


class RankingRow(_Strict):
    model: str
    criterion: Literal["AIC", "BIC", "AICc"]
    method: Method  # which fit the value comes from
    fit_used: Literal["own", "ml_refit"]  # own fit, or the ML refit of a REML fit
    value: float
    delta: float
    weight: float
    loglik: float
    npar: int
    best: bool = False
    converged: bool = True  # false: the value comes from a fit that did not converge


class RankingGroup(_Strict):
    """Models ranked together: same response and the same rows."""

    models: list[str]
    rows: list[RankingRow]
    note: str | None = None  # why some models are absent (different rows, failed)


class TestRecord(_Strict):
    small: str
    large: str
    source: Literal["listed", "auto"] = "listed"
    refit_ml: bool
    method: Method
    npar: list[int]  # [small, large]
    loglik: list[float]  # [small, large]
    chisq: float
    df: int
    p_value: float | None
    p_value_boundary: float | None = None
    boundary_note: str | None = None  # structured reason when p_value_boundary is null, or the mixture used
    p_bootstrap: float | None = None  # parametric bootstrap (pbkrtest's PBmodcomp), compare: bootstrap
    p_bootstrap_n: int | None = None  # replicates used (T* > 0); dropped and failed ones are in warnings
    warnings: list[str] = Field(default_factory=list)


class ExpectationRecord(_Strict):
    text: str
    passed: bool
    detail: str


class Timing(_Strict):
    fit_seconds: float
    cached: bool
    # peak resident memory (MB) of the process that fitted the model, during its fit (the largest of the
    # primary fit and its ML refit; null when cached), beside the pre-flight estimate (runner/run/preflight.py)
    peak_mb: float | None = None
    memory_estimate_mb: float | None = None


class RunInfo(_Strict):
    started: str
    finished: str | None = None
    jobs: int = 1
    executor: str = "local"
    timings: dict[str, Timing] = Field(default_factory=dict)


class ResultsRecord(_Strict):
    """The whole results.json of one spec run."""

    schema_version: int = SCHEMA_VERSION
    spec: SpecInfo
    data: DataInfo
    environment: Environment
    factors: dict[str, FactorRecord] = Field(default_factory=dict)
    models: dict[str, ModelRecord]
    ranking: list[RankingGroup] = Field(default_factory=list)
    tests: list[TestRecord] = Field(default_factory=list)
    expectations: list[ExpectationRecord] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)  # spec/data level warnings (validate's)
    run: RunInfo


def _clean(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (json then refuses NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def record_json(record: ResultsRecord) -> str:
    """The results.json text: stable key order, null for NaN/inf, trailing newline."""
    data = _clean(record.model_dump(mode="python"))
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
