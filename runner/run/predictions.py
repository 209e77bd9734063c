"""A spec's `predict:` section and the identifying columns of the fit sidecars.

Planned before any fit (exit 2 on problems, like every other spec error): the new rows
are loaded by the same loader as `data:` (same file and SQL rules), filtered by the same
grammar, and every listed model's columns must be there. After fitting, each model's
predictions go to predictions/<model>.parquet (and .csv), with the new rows' `row`, the
id columns, the model's grouping columns and `prediction`; the model record names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from runner.spec.errors import SpecIssue

if TYPE_CHECKING:
    from runner.api.context import ModelContext
    from runner.data.prepare import PreparedData
    from runner.fit import Fit
    from runner.run.plan import ModelPlan
    from runner.spec.load import LoadedSpec
    from runner.spec.models import PredictSpec


@dataclass
class PredictPlan:
    frame: pd.DataFrame  # the new rows after predict.data.filter
    rows: np.ndarray  # their 0-based rows in the loaded source
    models: list[str]
    random_effects: bool = True
    new_levels: str = "population"
    formats: list[str] = field(default_factory=lambda: ["parquet"])
    id_columns: list[str] = field(default_factory=list)


def _suggest(word: str, choices: list[str]) -> str:
    from runner.spec.validation_issues import suggest

    return suggest(word, [str(c) for c in choices])


def _id_issues(loaded: LoadedSpec, columns: list[str], ids: list[str], where: str) -> list[SpecIssue]:
    return [loaded.issue((*where.split("."), i), f"id column {c!r} not in the data{_suggest(c, columns)}")
            for i, c in enumerate(ids) if c not in columns]


def _new_rows(loaded: LoadedSpec, p: PredictSpec
              ) -> tuple[pd.DataFrame | None, np.ndarray, list[SpecIssue], list[str]]:
    """The new rows (only the columns a prediction may read), their source rows, problems, and
    every column of the source (for did-you-mean)."""
    from runner.data.columns import filter_message, predict_columns
    from runner.data.errors import DataError
    from runner.data.filter import FilterError, filter_rows
    from runner.data.sources import read_source

    try:
        source = read_source(p.data, loaded.base_dir, predict_columns(p, loaded.spec.data, loaded.models))
    except DataError as exc:
        return None, np.zeros(0, int), [loaded.issue(f"predict.{i.path}" if i.path else "predict.data", i.message)
                                        for i in exc.issues], []
    frame, columns = source.frame, source.columns
    rows = np.arange(len(frame))
    if p.data.filter:
        try:
            keep = np.asarray(filter_rows(frame, p.data.filter), dtype=bool)
        except FilterError as exc:
            message = filter_message(p.data.filter, exc, columns)
            return None, rows, [loaded.issue(("predict", "data", "filter"), message)], columns
        frame, rows = frame.loc[keep].reset_index(drop=True), rows[keep]
    return frame, rows, [], columns


def plan_predictions(loaded: LoadedSpec, prepared: PreparedData, models: dict[str, ModelPlan]
                     ) -> tuple[PredictPlan | None, list[SpecIssue]]:
    """The predictions to make after fitting, and every problem of `predict:`/`data.id_columns`."""
    from runner.formula.variables import required_variables, response_variables

    spec = loaded.spec
    ids = list(getattr(spec.data, "id_columns", None) or [])
    issues = _id_issues(loaded, list(prepared.source_columns or prepared.frame.columns), ids, "data.id_columns")
    p = getattr(spec, "predict", None)
    if p is None:
        return None, issues
    names = list(p.models) if p.models else list(models)
    for i, n in enumerate(names):
        if n not in models:
            issues.append(loaded.issue(("predict", "models", i), f"unknown model {n!r}{_suggest(n, list(models))}"))
    frame, rows, more, source_columns = _new_rows(loaded, p)
    issues += more
    if frame is None:
        return None, issues
    own_ids = list(p.data.id_columns or [])
    issues += _id_issues(loaded, source_columns, own_ids, "predict.data.id_columns")
    for n in names:
        if n not in models:
            continue
        rm = models[n].resolved
        need = (required_variables(rm.formula) - response_variables(rm.formula)) | ({rm.offset} if rm.offset else set())
        for col in sorted(c for c in need if c not in frame.columns):
            issues.append(loaded.issue(("predict", "data"), f"model {n}: column {col!r} not in the new data"
                                       f"{_suggest(col, source_columns)}"))
    id_columns = own_ids or [c for c in ids if c in frame.columns]
    return PredictPlan(frame=frame, rows=rows, models=[n for n in names if n in models],
                       random_effects=p.random_effects, new_levels=p.new_levels, formats=list(p.formats),
                       id_columns=id_columns), issues


def _context(m: ModelPlan, prepared: PreparedData) -> ModelContext:
    from runner.api.context import ModelContext

    rm = m.resolved
    return ModelContext(formula=rm.formula, formula_text=rm.formula_text, design=m.design,
                        rows=prepared.frame_for(m.name), centered=dict(getattr(prepared, "centered", {}) or {}),
                        weights=rm.weights, offset=rm.offset, engine=m.engine)


def _write(frame: pd.DataFrame, out: Path, stem: str, formats: list[str]) -> str:
    from runner.atomic import write_atomic_bytes
    from runner.run.record import write_parquet

    rel = None
    if "parquet" in formats:
        rel = f"predictions/{stem}.parquet"
        write_parquet(frame, out / rel)
    if "csv" in formats:
        rel_csv = f"predictions/{stem}.csv"
        write_atomic_bytes(out / rel_csv, frame.to_csv(index=False).encode("utf-8"))
        rel = rel or rel_csv
    assert rel is not None
    return rel


def _plain(values: pd.Series) -> pd.Series:
    """A column as the source held it (a prepared factor back to its values)."""
    return values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values


def write_predictions(pp: PredictPlan, plan_models: dict[str, ModelPlan], fits: dict[str, Fit], prepared: PreparedData,
                      out: Path) -> dict[str, str]:
    """predictions/<model>.parquet per model; model -> relative path, or "error: ..." text."""
    from runner.api.predict import predict_new

    result: dict[str, str] = {}
    for name in pp.models:
        fit, m = fits.get(name), plan_models[name]
        if fit is None or m.design is None:
            result[name] = "error: the model did not fit"
            continue
        try:
            values = predict_new(_context(m, prepared), fit, pp.frame, random_effects=pp.random_effects,
                                 new_levels=pp.new_levels)  # type: ignore[arg-type]
            groups = [g for t in m.resolved.formula.random for g in t.group]
            keep = list(dict.fromkeys([c for c in [*pp.id_columns, *groups] if c in pp.frame.columns]))
            frame = pd.DataFrame({"row": pp.rows, **{c: _plain(pp.frame[c]) for c in keep},
                                  "prediction": values})
            result[name] = _write(frame, out, name, pp.formats)
        except Exception as exc:  # one model's prediction problem is recorded, the run goes on
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result[name] = f"error: {text}"
    return result


def sidecar_columns(m: ModelPlan, prepared: PreparedData, id_columns: list[str]) -> pd.DataFrame | None:
    """The fitted rows' id columns and grouping columns, for fits/<model>.parquet."""
    if m.design is None:
        return None
    frame, rows = prepared.frame, prepared.masks[m.name]  # the model's rows, only the columns kept
    groups = [g for t in m.resolved.formula.random for g in t.group]
    keep = list(dict.fromkeys(c for c in [*id_columns, *groups] if c in frame.columns and c not in
                              ("row", "fitted", "residuals")))
    # factors stay categorical: the sidecar writer decodes them (record._plain_arrow)
    return pd.DataFrame({c: frame[c][rows].reset_index(drop=True) for c in keep}) if keep else None
