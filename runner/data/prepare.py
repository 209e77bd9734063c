"""Loaded rows -> the rows each model uses: filter, missing values, factors, centring, checks.

Every row removed is counted with its reason (never silent), factors get their
levels and reference level here once for all models, and everything lme4 would
refuse before fitting (missing columns, a non-numeric response, a grouping factor
with one level, more random effects than observations) is collected as located
issues, so `mixspec validate` lists all of them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from runner.data.errors import DataError
from runner.data.filter import SYNTAX as FILTER_SYNTAX
from runner.data.filter import FilterError, close_columns, filter_rows
from runner.data.hashing import data_sha256
from runner.data.numbers import text_in_number_columns
from runner.formula import grouping_variables, required_variables
from runner.formula.variables import expression_variables, fixed_variables, response_variables, slope_variables
from runner.spec.errors import SpecIssue, ordered_issues
from runner.spec.models import CenterSpec, DataSpec

if TYPE_CHECKING:
    from runner.spec.load import ResolvedModel


@dataclass(frozen=True)
class FactorInfo:
    """A categorical column as results.json records it."""

    levels: list[str]
    reference: str
    contrast: str = "treatment"

    def as_dict(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "reference": self.reference, "contrast": self.contrast}


@dataclass
class PreparedData:
    """The prepared frame plus which rows each model uses and why others were dropped."""

    frame: pd.DataFrame  # after filter, factor conversion and centring; NA rows kept for per_model
    sha256: str  # of the loaded frame, before filtering
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


# ----------------------------------------------------------------------------- helpers


def _issue(path: str, message: str, severity: str = "error", offset: int | None = None) -> SpecIssue:
    return SpecIssue(None, None, None, path, message, severity, offset)  # type: ignore[arg-type]


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype)


def _is_text(series: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(series.dtype) or series.dtype == object) and not isinstance(
        series.dtype, pd.CategoricalDtype)


def _model_path(model: ResolvedModel) -> str:
    return ".".join(model.spec_path)


def _offset_in_formula(model: ResolvedModel, name: str) -> int | None:
    """Where a column name first appears in the formula as written (for the caret)."""
    if model.spec_path[-1:] != ("formula",):
        return None
    from runner.formula import render

    text = model.written or render(model.formula)
    m = re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)
    return m.start() if m else None


def _model_columns(model: ResolvedModel) -> set[str]:
    cols = set(required_variables(model.formula))
    cols |= {c for c in (model.weights, model.offset) if c}
    return cols


def _sort_levels(values: pd.Series) -> list[Any]:
    """Distinct non-missing values in lme4's order: numbers as numbers, text as text."""
    unique = pd.unique(values.dropna())
    if _is_numeric(values):
        return sorted(unique.tolist())
    return sorted(unique.tolist(), key=str)


def _same_level(a: Any, b: Any) -> bool:
    if str(a) == str(b):
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


# ----------------------------------------------------------------------------- steps


def _apply_filter(frame: pd.DataFrame, text: str, issues: list[SpecIssue]) -> pd.DataFrame | None:
    """mixspec's own filter grammar (runner.data.filter), never pandas query or eval: a bad
    filter is a spec error at its operator or column, with did-you-mean and the valid syntax."""
    try:
        keep = filter_rows(frame, text)
    except FilterError as exc:
        message = exc.message  # an unknown column gets did-you-mean instead of the syntax
        if not message.startswith("unknown column"):
            message = f"{message}; {FILTER_SYNTAX}"
        issues.append(_issue("data.filter", message, offset=exc.offset))
        return None
    if not keep.any():
        issues.append(_issue("data.filter", f"the filter keeps no rows (of {len(frame)})"))
        return None
    return frame.loc[keep]  # the index is the source row (PreparedData.source_rows)


def _factorize(frame: pd.DataFrame, col: str, spec: Any, rows: np.ndarray, issues: list[SpecIssue],
               path: str) -> FactorInfo | None:
    """Make `col` a pandas Categorical with its reference level first."""
    values = frame.loc[rows, col]
    present = _sort_levels(values)
    order = present
    if spec is not None and spec.levels is not None:
        listed = list(spec.levels)
        outside = [v for v in present if not any(_same_level(v, w) for w in listed)]
        if outside:
            shown = ", ".join(repr(v) for v in outside[:5])
            issues.append(_issue(f"{path}.levels", f"values of {col!r} not among the listed levels: {shown}"))
            return None
        order = [next(v for v in present if _same_level(v, w)) for w in listed
                 if any(_same_level(v, w) for v in present)]  # unused listed levels are dropped
    if not order:
        return None
    reference = order[0]
    if spec is not None and spec.reference is not None:
        match = [v for v in order if _same_level(v, spec.reference)]
        if not match:
            shown = ", ".join(str(v) for v in order[:10])
            hint = close_columns(str(spec.reference), [str(v) for v in order])
            issues.append(_issue(f"{path}.reference", f"reference level {spec.reference!r} of {col!r} is not in "
                                 f"the data after filter and missing values (levels: {shown}){hint if 'did' in hint else ''}"))
            return None
        reference = match[0]
        order = [reference, *(v for v in order if v is not reference)]
    values = frame[col]
    outside = ~values.isin(order)  # rows no model uses may hold other labels: they become missing
    if outside.any():
        values = values.astype(object).where(~outside, None)
    frame[col] = pd.Categorical(values, categories=order)
    contrast = getattr(spec, "contrast", None) or "treatment"
    return FactorInfo(levels=[str(v) for v in order], reference=str(reference), contrast=contrast)


def _center(frame: pd.DataFrame, col: str, how: Any, rows: np.ndarray,
            issues: list[SpecIssue]) -> dict[str, float | None] | None:
    if not _is_numeric(frame[col]):
        issues.append(_issue(f"data.center.{col}", f"cannot centre {col!r}: it is not numeric"))
        return None
    spec = how if isinstance(how, CenterSpec) else CenterSpec(center=how)
    values = frame.loc[rows, col].astype(float)
    center = float(values.mean()) if spec.center == "mean" else float(spec.center)
    scale = float(values.std(ddof=1)) if spec.scale else None
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        issues.append(_issue(f"data.center.{col}", f"cannot scale {col!r}: its standard deviation is {scale}"))
        return None
    shifted = frame[col].astype(float) - center
    frame[col] = shifted / scale if scale else shifted
    return {"center": center, "scale": scale}


def _random_columns(model: ResolvedModel, frame: pd.DataFrame, term: Any) -> int:
    """Columns of a random term's lhs (a factor gives its levels, minus one with an intercept)."""
    p = 1 if term.intercept else 0
    for i, text in enumerate(term.terms):
        col = frame[text] if text in frame.columns else None
        if col is not None and isinstance(col.dtype, pd.CategoricalDtype):
            k = len(col.cat.categories)
            p += k if (not term.intercept and i == 0) else k - 1
        else:
            p += 1
    return max(p, 1)


def count_levels(frame: pd.DataFrame, group: tuple[str, ...]) -> int:
    """Levels of a grouping factor (an interaction of columns) present in `frame`."""
    return int(frame.groupby(list(group), observed=True, dropna=True, sort=False).ngroups)


def _check_model(model: ResolvedModel, frame: pd.DataFrame, issues: list[SpecIssue],
                 warnings: list[SpecIssue], memo: dict[Any, Any] | None = None) -> None:
    """lme4's pre-fit checks on one model's rows (`memo`: verdicts shared by models with the same rows)."""
    memo = {} if memo is None else memo
    path = _model_path(model)
    n = len(frame)
    if n == 0:
        issues.append(_issue(path, "no rows left after the filter and missing values"))
        return
    mf = model.formula
    binomial = getattr(model, "family", "gaussian") == "binomial"  # a factor response is glm's 0/1
    if mf.response in frame.columns and not _is_numeric(frame[mf.response]) and not binomial:
        example = frame[mf.response].dropna().astype(str).head(1).tolist()
        issues.append(_issue(path, f"response {mf.response!r} is not numeric"
                             + (f" (e.g. {example[0]!r})" if example else ""),
                             offset=_offset_in_formula(model, mf.response)))
    for key in ("weights", "offset"):
        col = getattr(model, key)
        if not col:
            continue
        if not _is_numeric(frame[col]):
            issues.append(_issue(f"{path.rsplit('.formula', 1)[0]}.{key}", f"{key} column {col!r} is not numeric"))
            continue
        values = frame[col].to_numpy(dtype=float)
        where = f"{path.rsplit('.formula', 1)[0]}.{key}"
        bad = ~np.isfinite(values) | ((values < 0) if key == "weights" else False)
        if bad.any():
            what = "positive and finite" if key == "weights" else "finite"
            issues.append(_issue(where, f"{key} column {col!r} must be {what}: {int(bad.sum())} rows are not "
                                 f"(first: {values[bad][0]!r})"))
        elif key == "weights" and (values == 0).any():
            issues.append(_issue(where, f"weights column {col!r} has {int((values == 0).sum())} zero weights: "
                                 "a zero prior weight makes the criterion infinite (lme4 returns Inf); "
                                 f"drop those rows with `filter: \"{col} > 0\"`"))
    seen_groups: dict[str, int] = {}
    for term in mf.random:
        name = term.group_name
        if name not in seen_groups:
            if ("levels", term.group) not in memo:
                memo["levels", term.group] = count_levels(frame, term.group)
            seen_groups[name] = memo["levels", term.group]
        nlev = seen_groups[name]
        if nlev <= 1:
            issues.append(_issue(path, f"grouping factor {name!r} has {nlev} level in the rows used; "
                                 "a grouping factor needs at least 2", offset=_offset_in_formula(model, term.group[0])))
            continue
        if nlev >= n:
            issues.append(_issue(path, f"grouping factor {name!r} has {nlev} levels for {n} observations: random "
                                 "effect not identifiable from the residual (lme4's check.nobs.vs.nlev)",
                                 offset=_offset_in_formula(model, term.group[0])))
            continue
        q = nlev * _random_columns(model, frame, term)
        if q >= n:
            issues.append(_issue(path, f"term on {name!r} has {q} random effects for {n} observations: random "
                                 "effect not identifiable from the residual (lme4's check.nobs.vs.nRE)",
                                 offset=_offset_in_formula(model, term.group[0])))
        if term.double_bar:
            factors = [t for t in term.terms
                       if any(v in frame.columns and isinstance(frame[v].dtype, pd.CategoricalDtype)
                              for v in expression_variables(t))]
            if factors:
                warnings.append(_issue(path, f"'||' on factor {factors[0]!r} in the term on {name!r} keeps the "
                                       "correlations among the factor's columns (lme4's meaning); for independent "
                                       f"columns write diag(0 + {factors[0]} | {name})", "warning"))
    _crossed_trap(model, frame, warnings, memo)


def _crossed_trap(model: ResolvedModel, frame: pd.DataFrame, warnings: list[SpecIssue],
                  memo: dict[Any, Any] | None = None) -> None:
    """Warn when labels of one grouping factor repeat inside every level of another.

    `(1|batch) + (1|cask)` with casks a, b, c in every batch is read as crossed (as
    lme4 does); when each batch-cask cell has replicates, nesting was probably meant.
    """
    singles = sorted({t.group[0] for t in model.formula.random if len(t.group) == 1})
    pairs = {frozenset(t.group) for t in model.formula.random if len(t.group) == 2}
    for outer in singles:
        for inner in singles:
            if inner == outer or frozenset((outer, inner)) in pairs:
                continue
            memo = {} if memo is None else memo
            if ("trap", outer, inner) not in memo:
                memo["trap", outer, inner] = _labels_repeat(frame, outer, inner)
            if memo["trap", outer, inner]:
                warnings.append(_issue(
                    _model_path(model),
                    f"labels of {inner!r} repeat in every level of {outer!r}, so ({'1'}|{inner}) is crossed with "
                    f"({'1'}|{outer}) (lme4's reading); if each {outer} has its own {inner}s, write "
                    f"(1|{outer}/{inner})", "warning"))


def _labels_repeat(frame: pd.DataFrame, outer: str, inner: str) -> bool:
    """The crossed-labels trap for one pair of grouping columns (see _crossed_trap)."""
    sub = frame[[outer, inner]].dropna()
    n_outer, n_inner = sub[outer].nunique(), sub[inner].nunique()
    if not (n_inner < n_outer and n_inner >= 2):
        return False
    spread = sub.groupby(inner, observed=True)[outer].nunique()  # outer levels per inner label
    within = sub.groupby(outer, observed=True)[inner].nunique()  # inner labels per outer level
    cells = sub.groupby([outer, inner], observed=True).size()
    return bool(spread.min() > 1 and within.min() > 1 and cells.min() >= 2)


# ----------------------------------------------------------------------------- main


def prepare(frame: pd.DataFrame, data_spec: DataSpec, models: dict[str, ResolvedModel]) -> PreparedData:
    """Apply the spec's data options and check every model; raise DataError listing all problems."""
    issues: list[SpecIssue] = []
    warnings: list[SpecIssue] = []
    digest = data_sha256(frame)
    if data_spec.sha256 is not None and data_spec.sha256 != digest:
        issues.append(_issue("data.sha256", f"the data changed: its sha256 is {digest}, the spec pins "
                             f"{data_spec.sha256}"))
    rows = len(frame)
    columns = list(frame.columns)

    usable: dict[str, ResolvedModel] = {}
    for name, model in models.items():
        missing = sorted(c for c in _model_columns(model) if c not in columns)
        for col in missing:
            where = _model_path(model)
            if col in (model.weights, model.offset) and col not in required_variables(model.formula):
                where = f"{where.rsplit('.formula', 1)[0]}.{'weights' if col == model.weights else 'offset'}"
                offset = None
            else:
                offset = _offset_in_formula(model, col)
            issues.append(_issue(where, f"column {col!r} not in the data{close_columns(col, columns)}", offset=offset))
        if not missing:
            usable[name] = model
    for section in ("categorical", "center"):
        for col in getattr(data_spec, section):
            if col not in columns:
                issues.append(_issue(f"data.{section}.{col}", f"column {col!r} not in the data{close_columns(col, columns)}"))

    work = frame.copy()
    source_rows = np.arange(rows)
    if data_spec.filter:
        filtered = _apply_filter(work, data_spec.filter, issues)
        if filtered is None:
            raise DataError(issues)
        source_rows = filtered.index.to_numpy()
        work = filtered.reset_index(drop=True)
    rows_after_filter = len(work)
    # a number column with text in some rows is an error naming the rows, never a silent factor
    issues += text_in_number_columns(
        work, usable.values(), set().union(*(grouping_variables(m.formula) for m in usable.values())),
        set(data_spec.categorical), bool(data_spec.filter))[0]

    used_cols = sorted(set().union(*(_model_columns(m) for m in usable.values())) if usable else set())
    na = work[used_cols].isna() if used_cols else pd.DataFrame(index=work.index)
    missing_by_column = {c: int(na[c].sum()) for c in used_cols if int(na[c].sum())}
    if data_spec.na == "common":
        keep = ~na.any(axis=1).to_numpy() if used_cols else np.ones(len(work), bool)
        masks = {name: keep.copy() for name in usable}
        union = keep
    else:
        masks = {name: ~na[sorted(_model_columns(m))].any(axis=1).to_numpy() for name, m in usable.items()}
        union = np.logical_or.reduce(list(masks.values())) if masks else np.ones(len(work), bool)

    # factors: grouping columns, columns named in `categorical`, and text columns a model uses
    grouping = set().union(*(grouping_variables(m.formula) for m in usable.values())) if usable else set()
    numeric_roles: set[str] = set()
    for m in usable.values():
        numeric_roles |= response_variables(m.formula)
        numeric_roles |= {c for c in (m.weights, m.offset) if c}
    # a number column that is also a grouping factor stays a number in the fixed part and
    # random slopes, as in R (lme4 builds grouping factors apart): `y ~ service + (1|dept:service)`
    in_terms = set().union(*(fixed_variables(m.formula) | slope_variables(m.formula) for m in usable.values()))
    factors: dict[str, FactorInfo] = {}
    to_factor = [c for c in columns if c in set(data_spec.categorical)
                 or (c in grouping and not (c in numeric_roles | in_terms and _is_numeric(work[c])))
                 or (c in used_cols and _is_text(work[c]) and c not in numeric_roles)]
    for col in to_factor:
        info = _factorize(work, col, data_spec.categorical.get(col), union, issues, f"data.categorical.{col}")
        if info is not None and (col not in grouping or col in data_spec.categorical):
            factors[col] = info

    centered: dict[str, dict[str, float | None]] = {}
    for col, how in data_spec.center.items():
        if col in work.columns:
            rows_c = union & work[col].notna().to_numpy()
            done = _center(work, col, how, rows_c, issues)
            if done is not None:
                centered[col] = done

    # every model with its columns present is checked, whatever else is wrong, so one
    # validate lists all of a spec's problems (not in rounds)
    # models on the same rows share their frame and the row-only verdicts (levels, the
    # crossed-labels trap): with 500 models these were most of `validate`'s time
    shared: dict[bytes, tuple[pd.DataFrame, dict[Any, Any]]] = {}
    for name, model in usable.items():
        rows_key = np.asarray(masks[name]).tobytes()
        if rows_key not in shared:
            shared[rows_key] = (work.loc[masks[name]].reset_index(drop=True), {})
        sub, memo = shared[rows_key]
        _check_model(model, sub, issues, warnings, memo)
    rows_used = int(union.sum())
    dropped = {"filter": rows - rows_after_filter, "missing": rows_after_filter - rows_used}
    prepared = PreparedData(frame=work, sha256=digest, na=data_spec.na, rows=rows, rows_after_filter=rows_after_filter,
                            rows_used=rows_used, dropped=dropped, missing_by_column=missing_by_column, masks=masks,
                            factors=factors, grouping=grouping, centered=centered, warnings=warnings,
                            source_rows=source_rows)
    if any(i.severity == "error" for i in issues):
        raise DataError(ordered_issues([*issues, *warnings]), partial=prepared)
    return prepared
