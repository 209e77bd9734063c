"""`mixspec run`: validate, fit every model (cached, in parallel), compare, write results.

The order is fixed so failures stay contained: everything that can be found before
fitting raises exit 2 with nothing fitted; then fits run (one model's failure is
recorded, the others go on); then comparisons, expectations, and files written
atomically (sidecars, results.json, summary.md, HTML report).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from runner.compare.expectations import evaluate_expectations
from runner.compare.lrt import LRTSide, likelihood_ratio_test
from runner.compare.ranking import Candidate, FitStats, rank_models
from runner.fit import Fit, FitWarning
from runner.results import (
    DataInfo,
    FactorInfo,
    ModelRecord,
    ReportOptions,
    ResultsRecord,
    RunInfo,
    SpecInfo,
    TestRecord,
    Timing,
)
from runner.run import record as rec
from runner.run.cache import FitCache
from runner.run.console import terminal_safe
from runner.run.executors import default_jobs, run_tasks
from runner.run.plan import ModelPlan, Plan, glmm_kind, make_plan, prepared_of
from runner.run.progress import Progress
from runner.run.tasks import TaskResult
from runner.spec.errors import IssueError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


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

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def describe_source(data: Any) -> str:
    """A human description of the data source, never a credential."""
    if getattr(data, "example", None):
        return f"example: {data.example}"
    if getattr(data, "path", None):
        return f"path: {data.path}"
    sql = getattr(data, "sql", None)
    if sql is not None:
        where = f"env {sql.url_env}" if sql.url_env else (sql.url or "").split("://", 1)[0] + "://…"
        what = f"table {sql.table}" if sql.table else "query"
        return f"sql: {what} from {where}"
    if getattr(data, "simulate", None) is not None:
        return "simulate: students design"
    return "unknown"


def _fit_stats(fit: Fit) -> FitStats:
    return FitStats(fit.loglik, fit.npar, fit.nobs, fit.method)


def _ml_fit(m: ModelPlan, fits: dict[str, Fit]) -> Fit | None:
    own = fits.get(m.name)
    if own is None:
        return None
    return own if own.method == "ML" else fits.get(f"{m.name}#ml")


def _side(m: ModelPlan, fit: Fit) -> LRTSide:
    return LRTSide(m.name, fit.loglik, fit.npar, fit.method, singular=fit.singular, converged=fit.converged,
                   terms=m.terms, ngroups=dict(fit.ngroups), fixed_key=m.fixed_key,
                   independent_clusters=m.independent_clusters)


def _bootstrap_p(plan: Plan, ms: ModelPlan, ml_: ModelPlan, fits: dict[str, Fit], r: TestRecord) -> None:
    """compare: bootstrap: PBmodcomp's p on the ML fits (linear mixed models of the lme engine)."""
    boot = getattr(plan.validated.loaded.spec.compare, "bootstrap", None)
    if boot is None:
        return
    fs, fl = _ml_fit(ms, fits), _ml_fit(ml_, fits)
    if fs is None or fl is None or ms.design is None or ml_.design is None:
        return
    if fs.engine != "lme" or fs.family is not None or fl.family is not None:
        r.warnings.append("bootstrap p: linear mixed models of the lme engine only")
        return
    from runner.inference.bootstrap import pb_modcomp

    pb = pb_modcomp(ms.design, ml_.design, fs, 2.0 * (fl.loglik - fs.loglik), boot.nsim, boot.seed)
    r.p_bootstrap, r.p_bootstrap_n = pb.p_value, pb.n_used
    if pb.n_nonpositive or pb.n_failed:
        r.warnings.append(f"bootstrap p: {pb.n_nonpositive} replicates with T* <= 0 dropped, "
                          f"{pb.n_failed} failed, of {boot.nsim}")


def compare_models(plan: Plan, fits: dict[str, Fit]) -> tuple[list, list[TestRecord], list[str]]:
    """Ranking groups, test records and record-level warnings from the fits that succeeded."""
    cands = []
    for m in plan.models.values():
        own = fits.get(m.name)
        ml = _ml_fit(m, fits)
        cands.append(Candidate(m.name, own is not None, _fit_stats(own) if own else None,
                               _fit_stats(ml) if ml else None, m.rows_key, m.fixed_key,
                               family=glmm_kind(m.resolved, nagq=False)))
    ranking = rank_models(cands, plan.criterion, plan.refit)
    tests: list[TestRecord] = []
    warnings: list[str] = []
    for t in plan.tests:
        ms, ml_ = plan.models[t.small], plan.models[t.large]
        if t.refit_ml:
            fs, fl = _ml_fit(ms, fits), _ml_fit(ml_, fits)
        else:
            fs, fl = fits.get(t.small), fits.get(t.large)
        if fs is None or fl is None:
            missing = [n for n, f in ((t.small, fs), (t.large, fl)) if f is None]
            warnings.append(f"test [{t.small}, {t.large}] not computed: no {'ML ' if t.refit_ml else ''}fit of "
                            f"{', '.join(missing)}")
            continue
        r = likelihood_ratio_test(_side(ms, fs), _side(ml_, fl), refit_ml=t.refit_ml and
                                  (ms.method == "REML" or ml_.method == "REML"), source=t.source)
        r.warnings = t.warnings + r.warnings
        if t.nesting != "terms":  # the chi-bar-square analysis needs term-by-term nesting
            r.p_value_boundary = None
            r.boundary_note = ("marginal_nesting: nested through the marginal covariance of y, not term by term: "
                               "the boundary mixture is not known; the naive p is conservative"
                               if t.nesting == "marginal" else
                               "unproven_nesting: nesting not proven; no boundary correction applied")
        tests.append(r)
        _bootstrap_p(plan, ms, ml_, fits, r)
    return ranking, tests, warnings


def _aic_ranking(plan: Plan, fits: dict[str, Fit], ranking: list) -> list:
    if plan.criterion == "AIC":
        return ranking
    cands = [Candidate(m.name, fits.get(m.name) is not None,
                       _fit_stats(fits[m.name]) if m.name in fits else None,
                       _fit_stats(f) if (f := _ml_fit(m, fits)) else None, m.rows_key, m.fixed_key,
                       family=glmm_kind(m.resolved, nagq=False))
             for m in plan.models.values()]
    return rank_models(cands, "AIC", plan.refit)


def _fit_all(plan: Plan, cache: FitCache, executor: str, jobs: int, scheduler: str | None,
             progress: Progress) -> dict[str, TaskResult]:
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
        run_tasks(unique, on_result, executor=executor, jobs=jobs, scheduler=scheduler)
    finally:
        progress.close()
    return results


def _mark_convergence(ranking: list, models: dict[str, ModelRecord]) -> None:
    """Each ranking row says whether the fit its value comes from converged."""
    for group in ranking:
        for row in group.rows:
            m = models.get(row.model)
            if m is None:
                continue
            fit_ok = m.ml_refit.converged if row.fit_used == "ml_refit" and m.ml_refit is not None else m.converged
            row.converged = fit_ok is not False


def convergence_failures(expectations: list, models: dict[str, ModelRecord]) -> list[str]:
    """With no `expect: converged:` the policy is `all`: a model that did not converge fails
    the run (exit 1), as a CI gate must; a spec's own `converged:` check replaces this."""
    if any(e.kind == "converged" for e in expectations):
        return []
    out = []
    for name, m in models.items():
        if m.status != "ok":
            continue
        if m.converged is False:
            why = m.convergence.message if m.convergence is not None and m.convergence.message else "no reason given"
            out.append(f"{name} did not converge ({why})")
        elif m.ml_refit is not None and not m.ml_refit.converged:
            out.append(f"{name} (ML refit) did not converge")
    return out


def build_record(plan: Plan, results: dict[str, TaskResult], out: Path, *, started: str, jobs: int,
                 executor: str, estimates: dict[str, Any] | None = None) -> tuple[ResultsRecord, list[str]]:
    """The ResultsRecord, writing fit sidecars as it goes; also the failure messages."""
    loaded, prepared = plan.validated.loaded, prepared_of(plan.validated)
    fits: dict[str, Fit] = {k: r.fit for k, r in results.items() if r.fit is not None}
    models: dict[str, ModelRecord] = {}
    failures: list[str] = []
    timings: dict[str, Timing] = {}
    for name, m in plan.models.items():
        rm = m.resolved
        primary = results.get(name)
        ml_res = results.get(f"{name}#ml")
        parts = [r for r in (primary, ml_res) if r is not None]
        peaks = [r.peak_mb for r in parts if r.peak_mb is not None and not r.cached]
        estimate = (estimates or {}).get(name)
        timings[name] = Timing(fit_seconds=sum(r.seconds for r in parts), cached=bool(parts) and all(r.cached for r in parts),
                               peak_mb=max(peaks) if peaks else None,
                               memory_estimate_mb=round(estimate.memory_mb, 1) if estimate is not None else None)
        if primary is None or primary.fit is None:
            err = primary.error if primary is not None else "not fitted"
            failures.append(f"{name}: {err}")
            models[name] = rec.failed_record(formula=rm.formula_text, engine=m.engine, method=m.method,
                                             source=rm.source, error=err, nobs=m.design.nobs if m.design else None)
            continue
        extra: list[FitWarning] = []
        ml_fit = None
        if m.need_ml and m.method == "REML":
            if ml_res is not None and ml_res.fit is not None:
                ml_fit = ml_res.fit
            else:
                err = ml_res.error if ml_res is not None else "not fitted"
                failures.append(f"{name} (ML refit): {err}")
                extra.append(FitWarning(code="ml_refit_failed", message=f"ML refit failed: {err}"))
        sidecar = None
        try:
            from runner.run.predictions import sidecar_columns

            sidecar = rec.write_sidecars(primary.fit, out, name, m.row_ids,
                                         sidecar_columns(m, prepared, getattr(plan, "id_columns", [])))
        except Exception as exc:  # a sidecar is for plots; the numbers stand without it
            extra.append(FitWarning(code="sidecar", message=f"sidecar not written: {exc}"))
        models[name] = rec.model_record(primary.fit, source=rm.source, ml=ml_fit, verify=primary.verify,
                                        sidecar=sidecar, extra_warnings=extra)
    if getattr(plan, "predict", None) is not None:
        from runner.run.predictions import write_predictions

        written = write_predictions(plan.predict, plan.models, fits, prepared, out)
        for n, rel in written.items():
            if rel.startswith("error: "):
                failures.append(f"{n}: predictions not written: {rel[7:]}")
                models[n].warnings.append(FitWarning(code="predictions", message=f"predictions not written: "
                                                     f"{rel[7:]}"))
            else:
                models[n].predictions = rel
    ranking, tests, test_warnings = compare_models(plan, fits)
    _mark_convergence(ranking, models)
    failures += convergence_failures(plan.expectations, models)
    expectations = evaluate_expectations(plan.expectations, models, ranking, _aic_ranking(plan, fits, ranking))
    spec = loaded.spec
    warnings = [str(w) for w in getattr(plan.validated, "warnings", [])]
    warnings += test_warnings
    factors = {k: FactorInfo(levels=list(v.levels), reference=v.reference, contrast=v.contrast)
               for k, v in getattr(prepared, "factors", {}).items()}
    record = ResultsRecord(
        spec=SpecInfo(name=plan.name, title=spec.title, path=str(loaded.file), sha256=loaded.sha256,
                      report=ReportOptions(**spec.report.model_dump())),
        data=DataInfo(source=describe_source(spec.data), sha256=prepared.sha256, rows=prepared.rows,
                      rows_used=prepared.rows_used, dropped=dict(prepared.dropped), na=prepared.na),
        environment=rec.environment(Path(loaded.path).resolve().parent),
        factors=factors,
        models=models,
        ranking=ranking,
        tests=tests,
        expectations=expectations,
        warnings=warnings,
        run=RunInfo(started=started, finished=_now(), jobs=jobs, executor=executor, timings=timings),
    )
    return record, failures


def _write_outputs(record: ResultsRecord, out: Path, report: bool) -> tuple[Path | None, str | None]:
    """results.json, summary.md and the page; on a failure (a full disk) the reason, and every
    output of an earlier run that this one did not replace is removed: no page, summary or
    record left in `out` may pass for this run's."""
    from runner.report.api import PAGE_NAME, render_spec_report

    written: list[str] = []
    try:
        results_path = rec.write_results(record, out)
        written.append(rec.RESULTS_NAME)
        rec.write_summary(record, out)
        written.append(rec.SUMMARY_NAME)
        if report:
            render_spec_report(results_path)
            written.append(PAGE_NAME)
    except Exception as exc:  # OSError (ENOSPC, EROFS, EACCES) or a bug in rendering: the run fails either way
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        failed = (rec.RESULTS_NAME, rec.SUMMARY_NAME, "HTML report")[len(written)]
        removed = []
        for name in (rec.RESULTS_NAME, rec.SUMMARY_NAME, PAGE_NAME):
            if name not in written and (out / name).exists():
                try:
                    (out / name).unlink()
                    removed.append(name)
                except OSError:
                    pass
        note = f"; removed the earlier run's {', '.join(removed)}" if removed else ""
        return (out / rec.RESULTS_NAME if written else None), f"{failed} not written: {why}{note}"
    return results_path, None


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


def _preflight(plan: Plan, max_memory: str | None, jobs: int, quiet: bool, remote: bool = False
               ) -> tuple[list[str], dict, int]:
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


def run_spec(path: str | Path, out_dir: str | Path = "reports", jobs: int | None = None, use_cache: bool = True,
             verify: bool = False, executor: str = "local", scheduler: str | None = None, quiet: bool = False,
             cache_dir: str | Path | None = None, report: bool = True, max_memory: str | None = None) -> RunOutcome:
    """Run one spec end to end; never raises for invalid specs or failed fits (see exit_code).

    `max_memory` ("2GB", "500MB"; None: 80% of RAM or the cgroup's limit, "off": none): a model
    whose pre-flight memory estimate exceeds it is refused before anything is fitted (exit 2).
    """
    started = _now()
    jobs = jobs or default_jobs()
    with _sigterm_raises():
        try:
            plan = make_plan(path, verify=verify)
        except IssueError as exc:
            errors = [str(i) for i in exc.issues]
            if not quiet:
                for e in errors:
                    print(terminal_safe(e), file=sys.stderr)
            return RunOutcome(None, EXIT_INVALID, None, errors, Path(path))
        out = Path(out_dir) / plan.name
        problem = _output_problem(out)
        if problem is not None:  # before any fit: a wrong --out costs nothing
            if not quiet:
                print(f"mixspec: {problem}", file=sys.stderr)
            return RunOutcome(None, EXIT_INVALID, None, [problem], Path(path))
        refused, estimates, jobs = _preflight(plan, max_memory, jobs, quiet,
                                              remote=executor == "dask" and bool(scheduler))
        if refused:
            return RunOutcome(None, EXIT_INVALID, None, refused, Path(path))
        progress = Progress(plan.name, quiet=quiet)
        cache = FitCache(cache_dir, enabled=use_cache)
        from runner.run.replicates import ReplicateExecutor, replicate_executor

        # bootstrap replicates (ci: bootstrap in an inline fit, compare: bootstrap) fan out over the executor
        with replicate_executor(ReplicateExecutor(executor, jobs, scheduler, cache.root if use_cache else None,
                                                  quiet)):
            results = _fit_all(plan, cache, executor, jobs, scheduler, progress)
            record, failures = build_record(plan, results, out, started=started, jobs=jobs, executor=executor,
                                            estimates=estimates)
        record.warnings.extend(cache.warnings)
        results_path, output_error = _write_outputs(record, out, report)
    failed_expect = [f"expectation failed: {e.text}: {e.detail}" for e in record.expectations if not e.passed]
    errors = failures + failed_expect + ([output_error] if output_error else [])
    if not quiet:
        for e in errors:
            print(terminal_safe(f"mixspec: {plan.name}: {e}"), file=sys.stderr)
    return RunOutcome(record, EXIT_FAILED if errors else EXIT_OK, results_path, errors, Path(path))


def run_specs(paths: list[str | Path], out_dir: str | Path = "reports", **kwargs: Any) -> list[RunOutcome]:
    """Run several specs, then the index page over `out_dir`; the CLI exits with the worst code."""
    outcomes = [run_spec(p, out_dir, **kwargs) for p in paths]
    if kwargs.get("report", True) and any(o.results_path for o in outcomes):
        try:
            from runner.report.api import render_index

            render_index(Path(out_dir))
        except Exception as exc:  # the index is a convenience
            print(f"mixspec: report index skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return outcomes


def exit_code(outcomes: list[RunOutcome]) -> int:
    return max((o.exit_code for o in outcomes), default=EXIT_OK)
