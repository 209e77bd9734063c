"""results.json and its companions: built from fits, written atomically.

Everything outside the `run` section is a pure function of spec, data, versions and
git commit: key order follows the pydantic models (models in spec order), NaN and
infinities become null, and floats print with Python's shortest round-trip repr, so
a rerun is byte-identical there. Files are written to a temporary name in the same
folder and renamed, so a killed run never leaves half a results.json.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from runner.atomic import replacing, write_atomic_bytes
from runner.fit import Fit, FitWarning
from runner.results import Environment, MLRefit, ModelRecord, ResultsRecord

RESULTS_NAME = "results.json"
SUMMARY_NAME = "summary.md"


# ---------------------------------------------------------------- building


def ml_refit_of(fit: Fit) -> MLRefit:
    """The ML numbers kept in a REML-fitted model's record."""
    return MLRefit(loglik=fit.loglik, deviance=fit.objective, aic=fit.aic, bic=fit.bic, npar=fit.npar,
                   converged=fit.converged)


def model_record(fit: Fit, *, source: str, ml: Fit | None = None, verify: Any = None,
                 sidecar: str | None = None, extra_warnings: list[FitWarning] | None = None) -> ModelRecord:
    """A fitted model's record: its own fit's numbers, as lme4 reports them, plus the ML refit."""
    return ModelRecord(
        status="ok",
        source=source,
        formula=fit.formula,
        engine=fit.engine,
        method=fit.method,
        nobs=fit.nobs,
        npar=fit.npar,
        ngroups=dict(fit.ngroups),
        theta=list(fit.theta),
        theta_names=list(fit.theta_names),
        sigma=fit.sigma,
        loglik=fit.loglik,
        objective=fit.objective,
        aic=fit.aic,
        bic=fit.bic,
        family=fit.family, link=fit.link, nagq=fit.nagq, success_level=fit.success_level,
        vcov_method=fit.vcov_method, loglik_lme4=fit.loglik_lme4,
        ml_refit=ml_refit_of(ml) if ml is not None else None,
        p_method=fit.p_method,
        ci_method=fit.ci_method,
        fixed_effects=list(fit.fixed_effects),
        random_effects=list(fit.random_effects),
        anova=list(fit.anova),
        confint=list(fit.confint),
        r2=fit.r2,
        icc=fit.icc,
        converged=fit.converged,
        singular=fit.singular,
        convergence=fit.convergence,
        warnings=list(fit.warnings) + list(extra_warnings or []),
        verify=verify,
        sidecar=sidecar,
    )


def failed_record(*, formula: str, engine: str, method: str, source: str, error: str,
                  nobs: int | None = None) -> ModelRecord:
    return ModelRecord(status="failed", error=error, source=source, formula=formula, engine=engine,
                       method=method, nobs=nobs)  # type: ignore[arg-type]


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
        formulaic=_version("formulaic"),
        git_commit=git_commit(spec_dir),
    )


# ---------------------------------------------------------------- serializing


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


def write_results(record: ResultsRecord, spec_out: Path) -> Path:
    return write_atomic_bytes(spec_out / RESULTS_NAME, record_json(record).encode("utf-8"))


# ---------------------------------------------------------------- sidecars


def _write_parquet(frame: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with replacing(path) as tmp:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)


def write_sidecars(fit: Fit, spec_out: Path, model: str, row_ids: Any = None, columns: Any = None) -> str | None:
    """fits/<model>.parquet (row, the id and grouping `columns`, fitted, residuals) and
    fits/<model>_ranef.parquet; the relative path. `row` is the 0-based row of the loaded
    source (before filter and missing-value drops), so the file joins back to it."""
    import pandas as pd

    arrays = fit.arrays
    if arrays is None:
        return None
    n = len(arrays.fitted)
    rows = np.asarray(row_ids) if row_ids is not None and len(row_ids) == n else np.arange(n)
    fits = pd.DataFrame({"row": rows, "fitted": np.asarray(arrays.fitted, float),
                         "residuals": np.asarray(arrays.residuals, float)})
    if columns is not None and len(columns) == n:
        for j, name in enumerate(columns.columns):
            fits.insert(1 + j, str(name), columns[name].to_numpy())
    rel = f"fits/{model}.parquet"
    _write_parquet(fits, spec_out / rel)
    recs: dict[str, list[Any]] = {"id": [], "group": [], "level": [], "column": [], "mode": [], "cond_sd": []}
    for blk in arrays.ranef:
        modes = np.asarray(blk.modes, float).reshape(len(blk.levels), len(blk.columns))
        sds = np.asarray(blk.cond_sd, float).reshape(len(blk.levels), len(blk.columns))
        for i, level in enumerate(blk.levels):
            for j, col in enumerate(blk.columns):
                recs["id"].append(blk.id)
                recs["group"].append(blk.group)
                recs["level"].append(str(level))
                recs["column"].append(col)
                recs["mode"].append(float(modes[i, j]))
                recs["cond_sd"].append(float(sds[i, j]))
    _write_parquet(pd.DataFrame(recs), spec_out / f"fits/{model}_ranef.parquet")
    return rel


# ---------------------------------------------------------------- summary


def _fallback_summary(record: ResultsRecord) -> str:
    lines = [f"## mixspec: {record.spec.title or record.spec.name}", ""]
    lines += ["| model | status | method | logLik | AIC | BIC |", "|---|---|---|---:|---:|---:|"]
    for name, m in record.models.items():
        def g(x: float | None) -> str:
            return "—" if x is None or not math.isfinite(x) else f"{x:.2f}"

        lines.append(f"| {name} | {m.status} | {m.method} | {g(m.loglik)} | {g(m.aic)} | {g(m.bic)} |")
    if record.expectations:
        lines += ["", "| expectation | result | detail |", "|---|---|---|"]
        for e in record.expectations:
            lines.append(f"| {e.text} | {'pass' if e.passed else 'FAIL'} | {e.detail} |")
    return "\n".join(lines) + "\n"


def summary_text(record: ResultsRecord) -> str:
    """The report layer's Markdown summary when available, else a minimal table."""
    try:
        from runner.report.markdown import summary_markdown
    except ImportError:
        return _fallback_summary(record)
    try:
        return summary_markdown(record)
    except Exception as exc:  # the summary must not fail a run
        print(f"mixspec: Markdown summary failed ({exc}); wrote a minimal one", file=sys.stderr)
        return _fallback_summary(record)


def write_summary(record: ResultsRecord, spec_out: Path) -> Path:
    text = summary_text(record)
    path = write_atomic_bytes(spec_out / SUMMARY_NAME, text.encode("utf-8"))
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        try:
            with open(step, "a", encoding="utf-8") as fh:
                fh.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            print(f"mixspec: could not append to GITHUB_STEP_SUMMARY ({exc})", file=sys.stderr)
    return path
