"""The spec's `data:` section: where the rows come from and how they are prepared.

One source (a file path, SQL through DuckDB, a bundled example or a simulation), then
filter, missing values, categorical columns and centring (`runner.data.prepare`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from runner.spec.base import Strict

class SqlSource(Strict):
    """Rows from a database: a SQLite or DuckDB file in the repository (`url`), or a server
    whose SQLAlchemy URL is in an environment variable (`url_env`) that the person running
    mixspec allows with --allow-env. A spec never holds credentials, and only reads.
    """

    url: str | None = Field(None, description="A local database file in the repository: sqlite:///scores.db or "
                            "duckdb:///scores.duckdb (relative to the spec); no password, host or parameters")
    url_env: str | None = Field(None, description="Name of an environment variable holding the URL (for database "
                                "servers); the person running mixspec must allow it: --allow-env NAME")
    query: str | None = Field(None, description="One SELECT (or WITH ... SELECT) statement returning the rows")
    table: str | None = Field(None, description="Table to read whole (instead of query)")

    @model_validator(mode="after")
    def _one_each(self) -> SqlSource:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of 'url' or 'url_env'")
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        if self.url_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.url_env):
            raise ValueError(f"url_env {self.url_env!r} is not an environment variable name")
        return self

    @field_validator("url")
    @classmethod
    def _local_file(cls, value: str | None) -> str | None:
        """Only a local sqlite/duckdb file without credentials (the value is never echoed)."""
        from runner.data.sql import spec_url_problem

        problem = None if value is None else spec_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("query")
    @classmethod
    def _one_select(cls, value: str | None) -> str | None:
        """One reading statement, checked by DuckDB's parser before anything runs (validate too)."""
        from runner.data.sql import query_problem

        problem = None if value is None else query_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class SimulateSource(Strict):
    """Students with repeated test scores in classrooms, schools and provinces, with known truth.

    The defaults reproduce the shipped `students` example exactly.
    """

    provinces: int = Field(8, ge=1, description="Number of provinces")
    schools: int = Field(6, ge=1, description="Schools per province")
    classrooms: int = Field(4, ge=1, description="Classrooms per school")
    students: int = Field(20, ge=1, description="Students per classroom")
    scores: int = Field(3, ge=1, description="Test scores per student (one per year of age)")
    sd_province: float = Field(3.0, ge=0, description="SD of province intercepts")
    sd_school: float = Field(4.0, ge=0, description="SD of school intercepts")
    sd_classroom: float = Field(5.0, ge=0, description="SD of classroom intercepts")
    sd_classroom_age: float = Field(0.8, ge=0, description="SD of classroom slopes of age")
    corr_classroom: float = Field(0.3, ge=-1, le=1, description="Correlation of classroom intercept and age slope")
    sd_student: float = Field(6.0, ge=0, description="SD of student intercepts")
    sd_residual: float = Field(8.0, gt=0, description="Residual SD")
    intercept: float = Field(50.0, description="Mean score at age 11 for sex F")
    age: float = Field(2.0, description="Fixed effect of age (per year)")
    sex_m: float = Field(-1.5, description="Fixed effect of sex M relative to F")
    seed: int = Field(20261125, ge=0, description="Seed of numpy's default_rng")

    @model_validator(mode="after")
    def _rows_limit(self) -> SimulateSource:
        from runner.spec.limits import MAX_SIMULATE_ROWS

        rows = self.provinces * self.schools * self.classrooms * self.students * self.scores
        if rows > MAX_SIMULATE_ROWS:
            raise ValueError(f"simulate gives {rows:,} rows (provinces x schools x classrooms x students x "
                             f"scores); the limit is {MAX_SIMULATE_ROWS:,}")
        return self


class CategoricalSpec(Strict):
    """How a column becomes a factor: its reference level and optionally its level order."""

    reference: str | int | float | None = Field(
        None, description="Reference (baseline) level; default: the first level")
    levels: list[str | int | float] | None = Field(
        None, description="Level order; values outside it are an error")
    contrast: Literal["treatment", "sum", "helmert", "poly"] = Field(
        "treatment", description="Coding of the factor in the fixed effects, as R's contr.treatment "
        "(default: reference level), contr.sum, contr.helmert or contr.poly (ordered levels)")


class CenterSpec(Strict):
    """Centre (and optionally scale) a numeric predictor before fitting."""

    center: float | Literal["mean"] = Field("mean", description="Value subtracted, or 'mean'")
    scale: bool = Field(False, description="Also divide by the standard deviation (as R's scale())")


class DataSpec(Strict):
    """Where the rows come from (exactly one source) and how they are prepared."""

    path: str | None = Field(None, description="CSV, Parquet or xlsx file inside the repository, relative to "
                             "the spec file (other folders only with --allow-path DIR)")
    sheet: str | int | None = Field(None, description="Sheet of an xlsx file (name or 0-based index)")
    sql: SqlSource | None = Field(None, description="Rows from a database")
    example: str | None = Field(None, description="A data set shipped with mixspec: sleepstudy, "
                                "penicillin, pastes, dyestuff, dyestuff2, students")
    simulate: SimulateSource | None = Field(None, description="Simulated students design")
    filter: str | None = Field(None, description="Row condition, e.g. \"age >= 9 & sex == 'F'\": columns, "
                               "numbers, strings, == != < <= > >=, & | ! (and or not), %in% c(...), is.na(x), "
                               "+ - * /")
    na: Literal["common", "per_model"] = Field(
        "common", description="common: drop rows with a missing value in any column any model "
        "uses (models stay comparable); per_model: drop per model as lme4 does")
    categorical: dict[str, CategoricalSpec] = Field(
        default_factory=dict, description="Columns to treat as factors, with reference levels")
    center: dict[str, float | Literal["mean"] | CenterSpec] = Field(
        default_factory=dict, description="Columns to centre: a number, 'mean', or {center, scale}")
    sha256: str | None = Field(None, description="Pin: fail if the loaded data's hash differs. The hash covers "
                               "the columns the spec uses (models, weights, offset, filter, categorical, center, "
                               "id_columns), in the source's order: results.json data.columns lists them")
    id_columns: list[str] = Field(default_factory=list, description="Columns that identify a row; carried "
                                  "into fits/<model>.parquet and predictions/<model>.parquet to join them back")

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        given = [k for k in ("path", "sql", "example", "simulate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one data source: path, sql, example or simulate"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.removeprefix("sha256:").strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return digest

    @property
    def source_kind(self) -> str:
        """Which source is given: path, sql, example or simulate."""
        return next(k for k in ("path", "sql", "example", "simulate") if getattr(self, k) is not None)
