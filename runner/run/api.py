"""`mixspec run`: spec -> plan -> fit tasks -> compare -> record -> outputs, for each spec.

The order is fixed so failures stay contained: everything that can be found before
fitting raises exit 2 with nothing fitted (`make_plan`, the pre-flight memory check);
then fits run (one model's failure is recorded, the others go on); then `compare_all`,
`build_record`, and `write_outputs` (results.json, summary.md, the HTML page).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from runner.fit import Fit
from runner.results import ResultsRecord
from runner.run.cache import FitCache
from runner.run.comparison import compare_all
from runner.run.console import terminal_safe
from runner.run.executors import default_jobs, run_tasks
from runner.run.options import EXIT_FAILED, EXIT_INVALID, EXIT_OK, RunOptions
from runner.run.plan import SpecPlan, make_plan
from runner.run.progress import Progress
from runner.run.record import build_record, model_records, now
from runner.run.tasks import TaskResult
from runner.spec.errors import IssueError

if TYPE_CHECKING:
    from runner.run.preflight import Estimate


@dataclass
class RunOutcome:
    """What a run gives back: the record (None on exit 2), the exit code, where it was written."""

    record: ResultsRecord | None
    exit_code: int
    results_path: Path | None
    errors: list[str] = field(default_factory=list)  # printable problems (exit 2) or failures (exit 1)
    spec_path: Path | None = None


class Terminated(SystemExit):
    """SIGTERM turned into an exception, so worker processes are stopped before exiting."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit_all(plan: SpecPlan, cache: FitCache, options: RunOptions, jobs: int, progress: Progress
             ) -> dict[str, TaskResult]:
    """Every fit task of the plan: cached ones loaded, identical ones fitted once, the rest run."""
    tasks = plan.tasks()
    results: dict[str, TaskResult] = {}
    todo = []
    for t in tasks:
        hit = cache.load(t)  # re-checked on this run's design; else refitted with a warning
        if hit is not None and hit.fit is not None:
            results[t.id] = hit
        else:
            todo.append(t)
    progress.start(len(tasks))
    for t in tasks:
        if t.id in results:
            progress.done(t.id, True, results[t.id].seconds, True)
    # identical fits (same key: e.g. a REML model's ML refit and an ML model of the same formula) run once
    by_key: dict[str, list[str]] = {}
    unique = []
    for t in todo:
        if t.key not in by_key:
            unique.append(t)
        by_key.setdefault(t.key, []).append(t.id)
    keys = {t.id: t.key for t in unique}

    def on_result(r: TaskResult) -> None:
        if r.fit is not None:
            cache.put(keys[r.id], TaskResult(r.id, r.fit, None, r.seconds, verify=r.verify))
        for tid in by_key[keys[r.id]]:
            results[tid] = TaskResult(tid, r.fit, r.error, r.seconds, verify=r.verify, peak_mb=r.peak_mb)
            progress.done(tid, r.fit is not None, r.seconds, False)

    try:
        run_tasks(unique, on_result, executor=options.executor, jobs=jobs, scheduler=options.scheduler)
    finally:
        progress.close()
    return results


def _output_problem(out: Path) -> str | None:
    """Why results cannot be written under `out` (a file in the way, no permission), or None."""
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"cannot write reports under {out}: {parent} is a file, not a folder (check --out)"
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the output folder {out}: {exc.strerror or exc}"
    return None


def _preflight(plan: SpecPlan, max_memory: str | None, jobs: int, quiet: bool, remote: bool = False
               ) -> tuple[list[str], dict[str, Estimate], int]:
    """Refusals (printed), the memory estimates, and the parallel fits the limit allows. On a
    remote Dask cluster this machine's memory says nothing: no default limit there."""
    from runner.run.preflight import estimate_plan, jobs_within, refusals, resolve_limit

    try:
        limit, how = (None, "remote workers") if remote and max_memory is None else resolve_limit(max_memory)
    except ValueError as exc:
        errors = [f"mixspec: {exc}"]
    else:
        estimates = estimate_plan(plan)
        errors = [f"{plan.spec_path}: {r}" for r in refusals(estimates, limit, how)]
    if errors:
        if not quiet:
            for e in errors:
                print(e, file=sys.stderr)
        return errors, {}, jobs
    fewer = jobs_within(estimates, jobs, limit)
    if fewer < jobs and not quiet:
        print(f"mixspec: {plan.name}: {fewer} parallel fit{'s' if fewer > 1 else ''} instead of {jobs}: the largest "
              f"memory estimates together exceed {how} ({limit:,.0f} MB)", file=sys.stderr)
    return [], estimates, fewer


def _refuse(errors: list[str], path: Path, quiet: bool, prefix: str = "") -> RunOutcome:
    """An exit-2 outcome: nothing fitted; the reasons printed unless quiet."""
    if not quiet:
        for e in errors:
            print(terminal_safe(prefix + e), file=sys.stderr)
    return RunOutcome(None, EXIT_INVALID, None, errors, path)


def _fit_and_record(plan: SpecPlan, options: RunOptions, jobs: int, estimates: dict[str, Estimate], out: Path,
                    started: str) -> tuple[ResultsRecord, list[str]]:
    """Fit tasks -> compare -> record; the record and the failure messages."""
    from runner.run.replicates import ReplicateExecutor, replicate_executor

    cache = FitCache(options.cache_dir, enabled=options.use_cache)
    progress = Progress(plan.name, quiet=options.quiet)
    # bootstrap replicates (ci: bootstrap in an inline fit, compare: bootstrap) fan out over the executor
    with replicate_executor(ReplicateExecutor(options.executor, jobs, options.scheduler,
                                              cache.root if options.use_cache else None, options.quiet)):
        results = _fit_all(plan, cache, options, jobs, progress)
        fits: dict[str, Fit] = {k: r.fit for k, r in results.items() if r.fit is not None}
        models, failures = model_records(plan, results, out, fits)
        comparison = compare_all(plan, fits, models)
    record = build_record(plan, results, models, comparison, started=started, jobs=jobs,
                          executor=options.executor, estimates=estimates)
    record.warnings.extend(cache.warnings)
    return record, failures + comparison.failures


def run_spec(path: str | Path, options: RunOptions | None = None) -> RunOutcome:
    """Run one spec end to end; never raises for invalid specs or failed fits (see exit_code).

    A model whose pre-flight memory estimate exceeds `options.max_memory` is refused before
    anything is fitted (exit 2).
    """
    from runner.report.outputs import write_outputs

    options = options or RunOptions()
    started, path = now(), Path(path)
    jobs = options.jobs or default_jobs()
    quiet = options.quiet
    with _sigterm_raises():
        try:
            plan = make_plan(path, verify=options.verify)
        except IssueError as exc:
            return _refuse([str(i) for i in exc.issues], path, quiet)
        out = options.out / plan.name
        problem = _output_problem(out)
        if problem is not None:  # before any fit: a wrong --out costs nothing
            return _refuse([problem], path, quiet, prefix="mixspec: ")
        refused, estimates, jobs = _preflight(plan, options.max_memory, jobs, quiet,
                                              remote=options.executor == "dask" and bool(options.scheduler))
        if refused:
            return RunOutcome(None, EXIT_INVALID, None, refused, path)
        record, failures = _fit_and_record(plan, options, jobs, estimates, out, started)
        results_path, output_error = write_outputs(record, out, page=options.report)
    failed_expect = [f"expectation failed: {e.text}: {e.detail}" for e in record.expectations if not e.passed]
    errors = failures + failed_expect + ([output_error] if output_error else [])
    if not quiet:
        for e in errors:
            print(terminal_safe(f"mixspec: {plan.name}: {e}"), file=sys.stderr)
    return RunOutcome(record, EXIT_FAILED if errors else EXIT_OK, results_path, errors, path)


def run_specs(paths: list[str | Path], options: RunOptions | None = None) -> list[RunOutcome]:
    """Run several specs, then the index page over `options.out`; the CLI exits with the worst code."""
    options = options or RunOptions()
    outcomes = [run_spec(p, options) for p in paths]
    if options.report and any(o.results_path for o in outcomes):
        try:
            from runner.report.api import render_index

            render_index(options.out)
        except Exception as exc:  # the index is a convenience
            print(f"mixspec: report index skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return outcomes


def exit_code(outcomes: list[RunOutcome]) -> int:
    return max((o.exit_code for o in outcomes), default=EXIT_OK)
