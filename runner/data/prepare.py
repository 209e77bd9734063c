"""Loaded rows -> the rows each model uses: filter, missing values, factors, centring, checks.

Every row removed is counted with its reason (never silent), factors get their
levels and reference level here once for all models (`runner.data.factors`), and
everything lme4 would refuse before fitting is collected as located issues
(`runner.data.model_checks`), so `mixspec validate` lists all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from runner.data.columns import filter_message, used_columns
from runner.data.errors import DataError
from runner.data.factors import FactorInfo, center, factorize
from runner.data.filter import SYNTAX as FILTER_SYNTAX
from runner.data.filter import FilterError, close_columns, filter_rows
from runner.data.hashing import data_sha256
from runner.data.model_checks import (
    check_model,
    is_numeric,
    is_text,
    issue,
    model_columns,
    model_path,
    offset_in_formula,
)
from runner.data.numbers import text_in_number_columns
from runner.formula import grouping_variables, required_variables
from runner.formula.variables import fixed_variables, response_variables, slope_variables
from runner.spec.errors import SpecIssue, ordered_issues
from runner.spec.models import DataSpec

if TYPE_CHECKING:
    from runner.spec.load import ResolvedModel

__all__ = ["FactorInfo", "PreparedData", "prepare"]

MAX_SHOWN_COLUMNS = 30  # listed in a pin mismatch


@dataclass
class PreparedData:
    """The prepared frame plus which rows each model uses and why others were dropped."""

    frame: pd.DataFrame  # after filter, factor conversion and centring; NA rows kept for per_model
    sha256: str  # of the loaded frame (the columns the spec uses, in source order), before filtering
    na: str
    rows: int  # rows loaded
    rows_after_filter: int
    rows_used: int  # common: the shared rows; per_model: rows used by at least one model
    dropped: dict[str, int]  # reason -> rows ("filter", "missing")
    missing_by_column: dict[str, int]  # missing values per used column, after the filter
    masks: dict[str, np.ndarray]  # model -> boolean row mask over `frame`
    factors: dict[str, FactorInfo]  # categorical predictors (grouping factors are in ngroups)
    grouping: set[str] = field(default_factory=set)  # columns used as grouping factors
    centered: dict[str, dict[str, float | None]] = field(default_factory=dict)
    warnings: list[SpecIssue] = field(default_factory=list)
    source_rows: np.ndarray | None = None  # 0-based row in the loaded source of each row of `frame`
    columns: list[str] = field(default_factory=list)  # the columns loaded and hashed, in source order
    source_columns: list[str] = field(default_factory=list)  # every column of the source (did-you-mean)

    def frame_for(self, model_name: str) -> pd.DataFrame:
        """The rows `model_name` uses, with levels unused in those rows dropped."""
        sub = self.frame.loc[self.masks[model_name]].reset_index(drop=True)
        for col in sub.columns:
            if isinstance(sub[col].dtype, pd.CategoricalDtype):
                sub[col] = sub[col].cat.remove_unused_categories()
        return sub

    def nobs(self, model_name: str) -> int:
        return int(self.masks[model_name].sum())

    @property
    def contrasts(self) -> dict[str, str]:
        """Columns coded other than by treatment contrasts (`data.categorical.<col>.contrast`)."""
        return {col: info.contrast for col, info in self.factors.items() if info.contrast != "treatment"}

    def dropped_for(self, model_name: str) -> dict[str, int]:
        """Rows this model loses to the filter and to missing values."""
        return {"filter": self.dropped.get("filter", 0),
                "missing": self.rows_after_filter - self.nobs(model_name)}

# ----------------------------------------------------------------------------- steps


def _usable_models(data_spec: DataSpec, models: dict[str, ResolvedModel], loaded: list[str], columns: list[str],
                   issues: list[SpecIssue]) -> dict[str, ResolvedModel]:
    """The models whose columns are all in the data loaded; each missing column is an issue at its
    key, with did-you-mean over `columns` (all the source's, read or not)."""
    usable: dict[str, ResolvedModel] = {}
    present = set(loaded)
    for name, model in models.items():
        missing = sorted(c for c in model_columns(model) if c not in present)
        for col in missing:
            where = model_path(model)
            if col in (model.weights, model.offset) and col not in required_variables(model.formula):
                where = f"{where.rsplit('.formula', 1)[0]}.{'weights' if col == model.weights else 'offset'}"
                offset = None
            else:
                offset = offset_in_formula(model, col)
            issues.append(issue(where, f"column {col!r} not in the data{close_columns(col, columns)}", offset=offset))
        if not missing:
            usable[name] = model
    for section in ("categorical", "center"):
        for col in getattr(data_spec, section):
            if col not in present:
                issues.append(issue(f"data.{section}.{col}", f"column {col!r} not in the data{close_columns(col, columns)}"))
    return usable


def _apply_filter(frame: pd.DataFrame, text: str, issues: list[SpecIssue],
                  source_columns: list[str]) -> pd.DataFrame | None:
    """mixspec's own filter grammar (runner.data.filter), never pandas query or eval: a bad
    filter is a spec error at its operator or column, with did-you-mean (over all the source's
    columns, read or not) and the valid syntax."""
    try:
        keep = filter_rows(frame, text)
    except FilterError as exc:
        message = filter_message(text, exc, source_columns)  # an unknown column gets did-you-mean instead of the syntax
        if not message.startswith("unknown column"):
            message = f"{message}; {FILTER_SYNTAX}"
        issues.append(issue("data.filter", message, offset=exc.offset))
        return None
    if not keep.any():
        issues.append(issue("data.filter", f"the filter keeps no rows (of {len(frame)})"))
        return None
    return frame.loc[keep]  # the index is the source row (PreparedData.source_rows)


def _row_masks(work: pd.DataFrame, usable: dict[str, ResolvedModel], na_policy: str,
               ) -> tuple[list[str], dict[str, int], dict[str, np.ndarray], np.ndarray]:
    """Used columns, missing values per column, each model's rows and the rows any model uses."""
    used_cols = sorted(set().union(*(model_columns(m) for m in usable.values())) if usable else set())
    na = work[used_cols].isna() if used_cols else pd.DataFrame(index=work.index)
    missing_by_column = {c: int(na[c].sum()) for c in used_cols if int(na[c].sum())}
    if na_policy == "common":
        keep = ~na.any(axis=1).to_numpy() if used_cols else np.ones(len(work), bool)
        masks = {name: keep.copy() for name in usable}
        union = keep
    else:
        masks = {name: ~na[sorted(model_columns(m))].any(axis=1).to_numpy() for name, m in usable.items()}
        union = np.logical_or.reduce(list(masks.values())) if masks else np.ones(len(work), bool)
    return used_cols, missing_by_column, masks, union


def _make_factors(work: pd.DataFrame, data_spec: DataSpec, usable: dict[str, ResolvedModel], used_cols: list[str],
                  union: np.ndarray, issues: list[SpecIssue]) -> tuple[dict[str, FactorInfo], set[str]]:
    """Factors: grouping columns, columns named in `categorical`, and text columns a model uses."""
    grouping = set().union(*(grouping_variables(m.formula) for m in usable.values())) if usable else set()
    numeric_roles: set[str] = set()
    for m in usable.values():
        numeric_roles |= response_variables(m.formula)
        numeric_roles |= {c for c in (m.weights, m.offset) if c}
    # a number column that is also a grouping factor stays a number in the fixed part and
    # random slopes, as in R (lme4 builds grouping factors apart): `y ~ service + (1|dept:service)`
    in_terms = set().union(*(fixed_variables(m.formula) | slope_variables(m.formula) for m in usable.values()))
    factors: dict[str, FactorInfo] = {}
    to_factor = [c for c in work.columns if c in set(data_spec.categorical)
                 or (c in grouping and not (c in numeric_roles | in_terms and is_numeric(work[c])))
                 or (c in used_cols and is_text(work[c]) and c not in numeric_roles)]
    for col in to_factor:
        info = factorize(work, col, data_spec.categorical.get(col), union, issues, f"data.categorical.{col}")
        if info is not None and (col not in grouping or col in data_spec.categorical):
            factors[col] = info
    return factors, grouping


def _center_columns(work: pd.DataFrame, data_spec: DataSpec, union: np.ndarray,
                    issues: list[SpecIssue]) -> dict[str, dict[str, float | None]]:
    """`data.center`: each column centred (and scaled) over the rows the models use."""
    centered: dict[str, dict[str, float | None]] = {}
    for col, how in data_spec.center.items():
        if col in work.columns:
            rows_c = union & work[col].notna().to_numpy()
            done = center(work, col, how, rows_c, issues)
            if done is not None:
                centered[col] = done
    return centered


def _check_models(work: pd.DataFrame, usable: dict[str, ResolvedModel], masks: dict[str, np.ndarray],
                  issues: list[SpecIssue], warnings: list[SpecIssue]) -> None:
    """Every model with its columns present is checked, so one validate lists all problems.

    Models on the same rows share their frame and the row-only verdicts (levels, the
    crossed-labels trap): with 500 models these were most of `validate`'s time.
    """
    shared: dict[bytes, tuple[pd.DataFrame, dict[Any, Any]]] = {}
    for name, model in usable.items():
        rows_key = np.asarray(masks[name]).tobytes()
        if rows_key not in shared:
            shared[rows_key] = (work.loc[masks[name]].reset_index(drop=True), {})
        sub, memo = shared[rows_key]
        check_model(model, sub, issues, warnings, memo)


# ----------------------------------------------------------------------------- main


def _pin_issue(digest: str, pin: str, columns: list[str]) -> SpecIssue:
    """A pin that does not match, saying what the hash covers: a new model or filter naming
    another column moves it as surely as a changed value."""
    shown = ", ".join(columns[:MAX_SHOWN_COLUMNS]) + (f", ... ({len(columns)} in all)"
                                                       if len(columns) > MAX_SHOWN_COLUMNS else "")
    return issue("data.sha256", f"the data changed: its sha256 is {digest}, the spec pins {pin}. The hash "
                 f"covers the columns the spec uses, in the source's order ({shown or 'none'}): their names, "
                 "types, values and row order; a model, filter or data option naming another column moves it too")


def _used_part(frame: pd.DataFrame, data_spec: DataSpec, models: dict[str, ResolvedModel]) -> pd.DataFrame:
    """`frame` cut to the columns the spec uses, in its own order (a source is usually loaded with
    just those already; a DataFrame given to the API is not)."""
    used = set(used_columns(data_spec, models))
    keep = [c for c in frame.columns if c in used]
    return frame if len(keep) == frame.shape[1] else frame.loc[:, keep]


def prepare(frame: pd.DataFrame, data_spec: DataSpec, models: dict[str, ResolvedModel],
            source_columns: list[str] | None = None) -> PreparedData:
    """Apply the spec's data options and check every model; raise DataError listing all problems.

    Only the columns the spec uses are kept and hashed (`runner.data.columns`);
    `source_columns` (default: `frame`'s) are all the source's, for did-you-mean.
    """
    issues: list[SpecIssue] = []
    warnings: list[SpecIssue] = []
    all_columns = [str(c) for c in (frame.columns if source_columns is None else source_columns)]
    frame = _used_part(frame, data_spec, models)
    digest = data_sha256(frame)
    if data_spec.sha256 is not None and data_spec.sha256 != digest:
        issues.append(_pin_issue(digest, data_spec.sha256, [str(c) for c in frame.columns]))
    rows = len(frame)
    usable = _usable_models(data_spec, models, [str(c) for c in frame.columns], all_columns, issues)

    work = frame.copy()
    source_rows = np.arange(rows)
    if data_spec.filter:
        filtered = _apply_filter(work, data_spec.filter, issues, all_columns)
        if filtered is None:
            raise DataError(issues)
        source_rows = filtered.index.to_numpy()
        work = filtered.reset_index(drop=True)
    rows_after_filter = len(work)
    # a number column with text in some rows is an error naming the rows, never a silent factor
    issues += text_in_number_columns(
        work, usable.values(), set().union(*(grouping_variables(m.formula) for m in usable.values())),
        set(data_spec.categorical), bool(data_spec.filter))[0]

    used_cols, missing_by_column, masks, union = _row_masks(work, usable, data_spec.na)
    factors, grouping = _make_factors(work, data_spec, usable, used_cols, union, issues)
    centered = _center_columns(work, data_spec, union, issues)
    _check_models(work, usable, masks, issues, warnings)
    rows_used = int(union.sum())
    dropped = {"filter": rows - rows_after_filter, "missing": rows_after_filter - rows_used}
    prepared = PreparedData(frame=work, sha256=digest, na=data_spec.na, rows=rows, rows_after_filter=rows_after_filter,
                            rows_used=rows_used, dropped=dropped, missing_by_column=missing_by_column, masks=masks,
                            factors=factors, grouping=grouping, centered=centered, warnings=warnings,
                            source_rows=source_rows, columns=[str(c) for c in frame.columns],
                            source_columns=all_columns)
    if any(i.severity == "error" for i in issues):
        raise DataError(ordered_issues([*issues, *warnings]), partial=prepared)
    return prepared
