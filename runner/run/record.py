"""The record stage of a run: the ResultsRecord built from the plan, the fits and the comparison.

Everything outside the `run` section is a pure function of spec, data, versions and
git commit: key order follows the pydantic models (models in spec order), so a rerun
gives a byte-identical results.json there (`runner.results.record_json`). The fit
sidecars (fits/<model>.parquet) are written here, as each model's record is built.
"""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.atomic import replacing
from runner.fit import Fit, FitFields, FitWarning
from runner.results import (
    DataInfo,
    Environment,
    FactorRecord,
    MLRefit,
    ModelRecord,
    ReportOptions,
    ResultsRecord,
    RunInfo,
    SpecInfo,
    Timing,
    VerifyRecord,
)
from runner.run.comparison import Comparison
from runner.run.plan import ModelPlan, SpecPlan
from runner.run.tasks import TaskResult
from runner.spec.models import DataSpec
from runner.vocab import Method

if TYPE_CHECKING:
    import pandas as pd

    from runner.run.preflight import Estimate


# ---------------------------------------------------------------- building


def ml_refit_of(fit: Fit) -> MLRefit:
    """The ML numbers kept in a REML-fitted model's record."""
    return MLRefit(loglik=fit.loglik, deviance=fit.objective, aic=fit.aic, bic=fit.bic, npar=fit.npar,
                   converged=fit.converged)


def model_record(fit: Fit, *, source: str, ml: Fit | None = None, verify: VerifyRecord | None = None,
                 sidecar: str | None = None, extra_warnings: list[FitWarning] | None = None) -> ModelRecord:
    """A fitted model's record: its own fit's numbers, as lme4 reports them, plus the ML refit."""
    shared = {name: _copied(value) for name, value in fit if name in FitFields.model_fields}
    shared["warnings"] = [*fit.warnings, *(extra_warnings or [])]
    return ModelRecord(status="ok", source=source, ml_refit=ml_refit_of(ml) if ml is not None else None,
                       verify=verify, sidecar=sidecar, **shared)


def _copied(value: Any) -> Any:
    """Lists and dicts copied: appending a warning to the record must not change the fit."""
    return value.copy() if isinstance(value, (list, dict)) else value


def failed_record(*, formula: str, engine: str, method: Method, source: str, error: str,
                  nobs: int | None = None) -> ModelRecord:
    """The record of a model whose fit failed: what was asked, and why it failed."""
    return ModelRecord(status="failed", error=error, source=source, formula=formula, engine=engine,
                       method=method, nobs=nobs)


def git_commit(directory: Path) -> str | None:
    """`git rev-parse HEAD` in the spec's directory; None outside a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) >= 40 else None


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
        return str(mod.__version__)
    except Exception:
        return None


def environment(spec_dir: Path) -> Environment:
    import runner

    return Environment(
        mixspec=runner.__version__,
        python=platform.python_version(),
        numpy=_version("numpy") or "",
        scipy=_version("scipy") or "",
        pandas=_version("pandas") or "",
        statsmodels=_version("statsmodels"),
        git_commit=git_commit(spec_dir),
    )


# ---------------------------------------------------------------- sidecars


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """A DataFrame as Parquet, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with replacing(path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)


def _plain_arrow(column: pd.Series) -> Any:
    """A column as the source held it, as an Arrow array: a prepared factor is decoded from its
    codes by Arrow (a million text labels through Python objects took ~0.5 s)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes.to_numpy()
        values = pa.Array.from_pandas(column.cat.categories.to_series())
        if pa.types.is_large_string(values.type):
            values = values.cast(pa.string())  # as the text column was written before
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), values).dictionary_decode()
    return pa.Array.from_pandas(column)


def write_sidecars(fit: Fit, spec_out: Path, model: str, row_ids: np.ndarray | None = None,
                   columns: pd.DataFrame | None = None) -> str | None:
    """fits/<model>.parquet (row, the id and grouping `columns`, fitted, residuals) and
    fits/<model>_ranef.parquet; the relative path. `row` is the 0-based row of the loaded
    source (before filter and missing-value drops), so the file joins back to it."""
    import pandas as pd

    arrays = fit.arrays
    if arrays is None:
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(arrays.fitted)
    rows = np.asarray(row_ids) if row_ids is not None and len(row_ids) == n else np.arange(n)
    fields = {"row": pa.array(rows)}
    if columns is not None and len(columns) == n:
        for name in columns.columns:
            fields[str(name)] = _plain_arrow(columns[name])
    fields["fitted"] = pa.array(np.asarray(arrays.fitted, float))
    fields["residuals"] = pa.array(np.asarray(arrays.residuals, float))
    rel = f"fits/{model}.parquet"
    with replacing(spec_out / rel) as tmp:
        pq.write_table(pa.table(fields), tmp)
    parts = []
    for blk in arrays.ranef:  # one row per (level, column), levels outer, as lme4's ranef lists them
        nl, nc = len(blk.levels), len(blk.columns)
        parts.append(pd.DataFrame({
            "id": np.full(nl * nc, blk.id, dtype=object), "group": np.full(nl * nc, blk.group, dtype=object),
            "level": np.repeat(np.array([str(v) for v in blk.levels], dtype=object), nc),
            "column": np.tile(np.array(list(blk.columns), dtype=object), nl),
            "mode": np.asarray(blk.modes, float).reshape(-1), "cond_sd": np.asarray(blk.cond_sd, float).reshape(-1)}))
    columns = ["id", "group", "level", "column", "mode", "cond_sd"]
    ranef = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in columns})
    write_parquet(ranef, spec_out / f"fits/{model}_ranef.parquet")
    return rel


# ---------------------------------------------------------------- the whole record


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def describe_source(data: DataSpec) -> str:
    """A human description of the data source, never a credential."""
    if data.example:
        return f"example: {data.example}"
    if data.path:
        return f"path: {data.path}"
    if data.sql is not None:
        sql = data.sql
        where = f"env {sql.url_env}" if sql.url_env else (sql.url or "").split("://", 1)[0] + "://…"
        what = f"table {sql.table}" if sql.table else "query"
        return f"sql: {what} from {where}"
    if data.simulate is not None:
        return "simulate: students design"
    return "unknown"


def _timing(parts: list[TaskResult], estimate: Estimate | None) -> Timing:
    peaks = [r.peak_mb for r in parts if r.peak_mb is not None and not r.cached]
    return Timing(fit_seconds=sum(r.seconds for r in parts), cached=bool(parts) and all(r.cached for r in parts),
                  peak_mb=max(peaks) if peaks else None,
                  memory_estimate_mb=round(estimate.memory_mb, 1) if estimate is not None else None)


def _model(plan: SpecPlan, m: ModelPlan, results: dict[str, TaskResult], out: Path,
           failures: list[str]) -> ModelRecord:
    """One model's record (sidecars written); its failures appended to `failures`."""
    from runner.run.predictions import sidecar_columns

    rm, primary, ml_res = m.resolved, results.get(m.name), results.get(f"{m.name}#ml")
    if primary is None or primary.fit is None:
        err = primary.error if primary is not None and primary.error else "not fitted"
        failures.append(f"{m.name}: {err}")
        return failed_record(formula=rm.formula_text, engine=m.engine, method=m.method, source=rm.source,
                             error=err, nobs=m.design.nobs if m.design else None)
    extra: list[FitWarning] = []
    ml_fit = None
    if m.need_ml and m.method == "REML":
        if ml_res is not None and ml_res.fit is not None:
            ml_fit = ml_res.fit
        else:
            err = ml_res.error if ml_res is not None and ml_res.error else "not fitted"
            failures.append(f"{m.name} (ML refit): {err}")
            extra.append(FitWarning(code="ml_refit_failed", message=f"ML refit failed: {err}"))
    sidecar = None
    try:
        sidecar = write_sidecars(primary.fit, out, m.name, m.row_ids,
                                 sidecar_columns(m, plan.validated.data, plan.id_columns))
    except Exception as exc:  # a sidecar is for plots; the numbers stand without it
        extra.append(FitWarning(code="sidecar", message=f"sidecar not written: {exc}"))
    return model_record(primary.fit, source=rm.source, ml=ml_fit, verify=primary.verify, sidecar=sidecar,
                        extra_warnings=extra)


def model_records(plan: SpecPlan, results: dict[str, TaskResult], out: Path,
                  fits: dict[str, Fit]) -> tuple[dict[str, ModelRecord], list[str]]:
    """Every model's record in spec order, predictions written; and the failure messages."""
    failures: list[str] = []
    models = {name: _model(plan, m, results, out, failures) for name, m in plan.models.items()}
    if plan.predict is not None:
        from runner.run.predictions import write_predictions

        written = write_predictions(plan.predict, plan.models, fits, plan.validated.data, out)
        for n, rel in written.items():
            if rel.startswith("error: "):
                failures.append(f"{n}: predictions not written: {rel[7:]}")
                models[n].warnings.append(FitWarning(code="predictions", message=f"predictions not written: "
                                                     f"{rel[7:]}"))
            else:
                models[n].predictions = rel
    return models, failures


def build_record(plan: SpecPlan, results: dict[str, TaskResult], models: dict[str, ModelRecord],
                 comparison: Comparison, *, started: str, jobs: int, executor: str,
                 estimates: dict[str, Estimate] | None = None) -> ResultsRecord:
    """The ResultsRecord of one run from its stages' outputs."""
    loaded, prepared = plan.validated.loaded, plan.validated.data
    spec = loaded.spec
    timings = {name: _timing([r for r in (results.get(name), results.get(f"{name}#ml")) if r is not None],
                             (estimates or {}).get(name)) for name in plan.models}
    factors = {k: FactorRecord(levels=list(v.levels), reference=v.reference, contrast=v.contrast)
               for k, v in prepared.factors.items()}
    return ResultsRecord(
        spec=SpecInfo(name=plan.name, title=spec.title, path=str(loaded.file), sha256=loaded.sha256,
                      report=ReportOptions(**spec.report.model_dump())),
        data=DataInfo(source=describe_source(spec.data), sha256=prepared.sha256, columns=list(prepared.columns),
                      rows=prepared.rows, rows_used=prepared.rows_used, dropped=dict(prepared.dropped), na=prepared.na),
        environment=environment(Path(loaded.path).resolve().parent),
        factors=factors,
        models=models,
        ranking=comparison.ranking,
        tests=comparison.tests,
        expectations=comparison.expectations,
        warnings=[str(w) for w in plan.validated.warnings] + comparison.warnings,
        run=RunInfo(started=started, finished=now(), jobs=jobs, executor=executor, timings=timings),
    )
