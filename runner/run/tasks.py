"""One unit of work (a fit of one design) and the function every executor runs.

Tasks are plain picklable data so the same function runs inline, in a process pool
or on a Dask worker. Any exception inside a fit becomes a failed result with its
message, so one model's numerical failure never loses the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from runner.design.model import Design
from runner.fit import Fit
from runner.vocab import Method

if TYPE_CHECKING:
    from runner.inference.settings import InferenceSettings
    from runner.results import VerifyRecord

BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


@dataclass
class FitTask:
    """Fit `design` with `method`; `kind` is "primary" or "ml_refit"."""

    id: str  # "<model>" or "<model>#ml"
    model: str
    kind: Literal["primary", "ml_refit"]
    design: Design
    method: Method
    engine: str
    formula_text: str
    verify: bool
    key: str  # cache key
    inference: InferenceSettings | None = None  # primary fits only
    glmm: tuple[str, str | None, int] | None = None  # (family, link, nagq) of a GLMM; None for a linear model


@dataclass
class TaskResult:
    id: str
    fit: Fit | None
    error: str | None
    seconds: float
    verify: VerifyRecord | None = None
    cached: bool = False
    peak_mb: float | None = None  # peak resident memory of the fitting process during the task (preflight.PeakMeter)


def _fit(design: Design, method: Method, engine: str, formula_text: str,
         glmm: tuple[str, str | None, int] | None = None) -> Fit:
    """The engine call (a seam: tests replace it to make one model fail)."""
    from runner.engines.base import fit_design

    if glmm is not None:
        family, link, nagq = glmm
        return fit_design(design, method, engine=engine, formula_text=formula_text, family=family, link=link,
                          nagq=nagq)
    return fit_design(design, method, engine=engine, formula_text=formula_text)


def _inference(task: FitTask, fit: Fit, settings: InferenceSettings) -> Fit:
    """df, p-values, intervals, F tests, R2/ICC; a failure is a warning, the fit stands."""
    from runner.fit import FitWarning
    from runner.inference.apply import apply_inference

    try:
        return apply_inference(task.design, fit, settings)
    except Exception as exc:  # numerical trouble in an inference method must not lose the fit
        return fit.model_copy(update={"warnings": [*fit.warnings, FitWarning(
            code="inference", message=f"inference failed ({type(exc).__name__}: {exc}); Wald z kept")]})


def _verify(design: Design, method: Method, fit: Fit) -> VerifyRecord:
    from runner.engines.statsmodels.verify import verify_fit

    return verify_fit(design, method, fit)


def _load_engines(task: FitTask) -> None:
    """Import the engine(s) before the clock starts: a worker's first task would otherwise
    report the imports (~0.4 s) as its fit time."""
    from runner.engines.base import get_engine

    for name in [task.engine, *(["statsmodels"] if task.verify else [])]:
        try:
            get_engine(name)
        except Exception:  # an unknown engine is reported by the fit itself
            pass


def execute_task(task: FitTask) -> TaskResult:
    """Fit one task; never raises for a numerical failure (the result says failed). The
    result carries the process's peak resident memory during the task (VmHWM, reset first)."""
    from runner.run.preflight import measure_peak

    _load_engines(task)
    with measure_peak() as meter:
        result = _execute(task)
    result.peak_mb = meter.peak_mb
    return result


def _execute(task: FitTask) -> TaskResult:
    t0 = time.perf_counter()
    try:
        fit = _fit(task.design, task.method, task.engine, task.formula_text,
                   *([task.glmm] if task.glmm is not None else []))
    except Exception as exc:  # EngineError, LinAlgError, anything inside a fit
        return TaskResult(task.id, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    if task.inference is not None and fit.family in (None, "gaussian"):  # GLMMs keep glmer's Wald z
        fit = _inference(task, fit, task.inference)
    verify = None
    if task.verify:
        try:
            verify = _verify(task.design, task.method, fit)
        except Exception as exc:  # a broken cross-check is reported, the fit stands
            from runner.results import VerifyRecord

            verify = VerifyRecord(engine="statsmodels", status="failed", message=f"{type(exc).__name__}: {exc}")
    return TaskResult(task.id, fit, None, time.perf_counter() - t0, verify=verify)


def limit_blas_threads(threads: int = 1) -> None:
    """A worker's BLAS threads: one, or its share of the cores when the pool has fewer workers
    than cores (with N workers on N cores, more threads only oversubscribe). A ceiling only:
    fits use one unless MIXSPEC_BLAS_THREADS asks for more (runner.engines.common.blas_threads)."""
    threads = max(1, int(threads))
    for name in BLAS_ENV:
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # a dependency; with no BLAS found it limits nothing


def worker_blas_threads(workers: int) -> int:
    """The cores per worker of a pool of `workers` processes (the BLAS ceiling of each)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def execute_task_single_thread(task: FitTask) -> TaskResult:
    """`execute_task` under a one-thread BLAS limit (for Dask workers, which we do not start)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return execute_task(task)
