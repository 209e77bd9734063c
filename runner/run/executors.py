"""Run fit tasks inline, over a local process pool, or on a Dask cluster.

All three call `execute_task` and report each result as it arrives through
`on_result`, so the progress display and the cache do not care where a fit ran.
A worker that dies (segfault, out of memory) fails its tasks with a message; an
interrupt (Ctrl-C, SIGTERM) terminates the pool's workers before it propagates.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from runner.run.tasks import (FitTask, TaskResult, execute_task, execute_task_single_thread, limit_blas_threads,
                              worker_blas_threads)

EXECUTORS = ("local", "processes", "dask")
# `local` starts a process pool only when the fits have at least this many rows in all: a pool
# costs about a second (a fresh interpreter importing numpy, scipy and the engine per worker),
# more than every fit of a small spec together (sleepstudy's 8 fits take ~0.1 s inline).
POOL_MIN_ROWS = 20_000
OnResult = Callable[[TaskResult], None]


def default_jobs() -> int:
    return os.cpu_count() or 1


def run_inline(tasks: list[FitTask], on_result: OnResult) -> None:
    for t in tasks:
        on_result(execute_task(t))


def _pool_context() -> multiprocessing.context.BaseContext:
    """forkserver: safe with the progress thread running; modules preloaded once."""
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["runner.run.tasks", "numpy", "scipy.linalg"])
        return ctx
    except ValueError:  # platforms without forkserver
        return multiprocessing.get_context("spawn")


def _terminate(pool: ProcessPoolExecutor) -> None:
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def run_processes(tasks: list[FitTask], jobs: int, on_result: OnResult) -> None:
    """A process pool of `jobs` workers, each with its share of the cores as its BLAS ceiling."""
    workers = max(1, min(jobs, len(tasks)))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(),
                               initializer=limit_blas_threads, initargs=(worker_blas_threads(workers),))
    futures = {}
    broken = False
    try:
        for t in tasks:
            try:
                futures[pool.submit(execute_task, t)] = t
            except BrokenProcessPool as exc:  # a worker died (SIGTERM, OOM) while tasks were still being queued
                broken = True
                on_result(TaskResult(t.id, None, f"worker process died before this fit started ({exc})", 0.0))
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                t = futures[f]
                try:
                    res = f.result()
                except BrokenProcessPool as exc:
                    broken = True
                    res = TaskResult(t.id, None, f"worker process died while fitting ({exc})", 0.0)
                except Exception as exc:  # pickling errors and the like
                    res = TaskResult(t.id, None, f"{type(exc).__name__}: {exc}", 0.0)
                on_result(res)
    except BaseException:
        _terminate(pool)
        raise
    if broken:
        # A worker started after the pool broke is never terminated by the pool (CPython 3.11): it
        # holds the task pipe, the pool's feeder thread blocks writing to it, and the interpreter
        # hangs at exit joining that thread. Terminating every worker we know of unblocks it.
        _terminate(pool)
    else:
        pool.shutdown(wait=True)


def run_dask(tasks: list[FitTask], jobs: int, on_result: OnResult, scheduler: str | None = None) -> None:
    """On a Dask cluster at `scheduler`, or on a LocalCluster of `jobs` single-threaded workers."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=max(1, min(jobs, len(tasks))), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {client.submit(execute_task_single_thread, t, pure=False): t
                   for t in tasks}
        for f in as_completed(list(futures)):
            t = futures[f]
            try:
                res = f.result()
            except Exception as exc:  # a lost worker, a serialization error
                res = TaskResult(t.id, None, f"dask: {type(exc).__name__}: {exc}", 0.0)
            on_result(res)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_tasks(tasks: list[FitTask], on_result: OnResult, *, executor: str = "local", jobs: int | None = None,
              scheduler: str | None = None) -> None:
    """Dispatch: `local` uses a pool when jobs > 1, there is more than one task and the fits are
    big enough to repay starting it (POOL_MIN_ROWS), else runs them inline."""
    if not tasks:
        return
    jobs = jobs or default_jobs()
    if executor == "dask":
        run_dask(tasks, jobs, on_result, scheduler)
    elif executor == "processes" or (executor == "local" and jobs > 1 and len(tasks) > 1
                                     and sum(t.design.nobs for t in tasks) >= POOL_MIN_ROWS):
        run_processes(tasks, jobs, on_result)
    elif executor == "local":
        run_inline(tasks, on_result)
    else:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
