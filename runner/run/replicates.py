"""Bootstrap replicates fanned out in chunks over the run's executor, cached so a run resumes.

`runner.inference.bootstrap.map_replicates(fn, seeds)` calls `map_chunked` when a run has
set an executor (`replicate_executor(...)`, done by `mixspec run`); otherwise it runs
serially. Each replicate depends only on its own seed, and results are put back in seed
order, so every executor and worker count gives identical numbers.

- Executors: inline, a local process pool (one BLAS thread per worker), or Dask (a cluster
  at the address given on the command line, or a LocalCluster). `fn` is usually a closure
  (the design and the fitted state in it), so it is serialized once with cloudpickle; the
  workers are this run's own processes or a cluster the user trusts (Dask's wire format is
  pickle too: use a `tls://` address across machines).
- Cache: each finished chunk is written as JSON (numbers and error strings only, never
  pickle) under `<cache>/replicates/<key>/`; a rerun after an interruption loads the
  finished chunks and computes the rest. The key must be the same in the next process,
  and a pickled closure is not (pydantic's field sets follow PYTHONHASHSEED), so it hashes
  the function's code, the seeds and replicate 0's value, which every input of a refit
  (data, design, estimates) moves: replicate 0 is computed first, inline, on every run.
- Progress: "bootstrap: 40/200 replicates" lines on stderr (a bar on a terminal), unless quiet.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_MAX = 50  # replicates per chunk at most: the unit of caching and of progress


@dataclass(frozen=True)
class ReplicateExecutor:
    """Where replicates run: `executor` as `mixspec run --executor` (local | processes | dask)."""

    executor: str = "local"
    jobs: int = 1
    scheduler: str | None = None
    cache_dir: Path | None = None  # None: no replicate cache
    quiet: bool = False


_CURRENT: contextvars.ContextVar[ReplicateExecutor | None] = contextvars.ContextVar("replicates", default=None)


@contextmanager
def replicate_executor(settings: ReplicateExecutor) -> Iterator[ReplicateExecutor]:
    """Run `map_replicates` calls inside the block on `settings` (mixspec run sets it)."""
    token = _CURRENT.set(settings)
    try:
        yield settings
    finally:
        _CURRENT.reset(token)


def current() -> ReplicateExecutor | None:
    return _CURRENT.get()


# --- chunks --------------------------------------------------------------------------------

def _run_chunk(payload: bytes, start: int, seeds: list[Any]) -> list[tuple[int, str, Any]]:
    """In a worker: fn(seed) for each seed of the chunk -> (index, "ok"|"error", value).

    `payload` is the run's own refit closure, pickled by this run's process for its own pool
    workers or the trusted Dask cluster named on the command line; it never comes from a file,
    a cache or a spec (the replicate cache is JSON; tests/test_cache.py and
    tests/test_rformula_security.py walk runner/ for any other unpickling)."""
    import cloudpickle

    return _run_fn(cloudpickle.loads(payload), start, seeds)


def _run_fn(fn: Callable[[Any], Any], start: int, seeds: list[Any]) -> list[tuple[int, str, Any]]:
    out: list[tuple[int, str, Any]] = []
    for k, s in enumerate(seeds):
        try:
            out.append((start + k, "ok", _plain(fn(s))))
        except Exception as exc:  # a failed refit is data for the count, not a crash
            out.append((start + k, "error", f"{type(exc).__name__}: {exc}"))
    return out


def _plain(value: Any) -> Any:
    """A replicate's value as JSON data: float, or a (nested) list of floats."""
    if isinstance(value, np.ndarray):
        return {"array": value.astype(float).tolist(), "shape": list(value.shape)}
    if isinstance(value, (float, int, np.floating, np.integer)):
        return float(value)
    raise TypeError(f"a replicate must return a float or an array of floats, not {type(value).__name__}")


def _restore(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=float).reshape(value["shape"])
    return float(value) if value is not None else float("nan")


def _chunks(n: int, jobs: int) -> list[tuple[int, int]]:
    size = max(1, min(CHUNK_MAX, math.ceil(n / max(1, 4 * jobs))))
    return [(a, min(n, a + size)) for a in range(0, n, size)]


def _key(fn: Callable[[Any], Any], first: list[tuple[int, str, Any]], seeds: Sequence[Any]) -> str:
    h = hashlib.sha256(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}".encode())
    code = getattr(fn, "__code__", None)
    if code is not None:
        h.update(code.co_code)
    h.update(json.dumps(first).encode())
    for s in seeds:
        h.update(repr((getattr(s, "entropy", s), getattr(s, "spawn_key", ()))).encode())
    return h.hexdigest()[:32]


class _ChunkCache:
    """Finished chunks as JSON files; unreadable or foreign files are ignored (recomputed)."""

    def __init__(self, root: Path | None, key: str):
        self.folder = None if root is None else Path(root) / "replicates" / key

    def load(self, a: int, b: int) -> list[tuple[int, str, Any]] | None:
        if self.folder is None:
            return None
        try:
            rows = json.loads((self.folder / f"{a:06d}-{b:06d}.json").read_text())
            out = [(int(i), str(kind), v) for i, kind, v in rows]
        except (OSError, ValueError, TypeError):
            return None
        if [i for i, _, _ in out] != list(range(a, b)) or any(k not in ("ok", "error") for _, k, _ in out):
            return None
        return out

    def put(self, a: int, b: int, rows: list[tuple[int, str, Any]]) -> None:
        if self.folder is None:
            return
        from runner.atomic import replacing

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with replacing(self.folder / f"{a:06d}-{b:06d}.json") as tmp:
                Path(tmp).write_text(json.dumps(rows))
        except (OSError, TypeError, ValueError):  # a cache is a convenience
            pass


class _Progress:
    def __init__(self, total: int, done: int, quiet: bool):
        self.total, self.done, self.quiet = total, done, quiet
        self.step = max(1, total // 10)
        self.last = done
        if not quiet:
            print(f"bootstrap: {total} replicates" + (f" ({done} cached)" if done else ""), file=sys.stderr,
                  flush=True)

    def add(self, n: int) -> None:
        self.done += n
        if not self.quiet and (self.done - self.last >= self.step or self.done == self.total):
            self.last = self.done
            print(f"bootstrap: {self.done}/{self.total} replicates", file=sys.stderr, flush=True)


def map_chunked(fn: Callable[[Any], Any], seeds: Sequence[Any], settings: ReplicateExecutor,
                on_chunk: Callable[[int], None] | None = None) -> list[tuple[int, str, Any]]:
    """(index, "ok"|"error", value) for every seed, in seed order, computed where `settings` says."""
    import cloudpickle

    payload = cloudpickle.dumps(fn)
    seeds = list(seeds)
    chunks = _chunks(len(seeds), settings.jobs)
    first: list[tuple[int, str, Any]] | None = None
    key = ""
    if settings.cache_dir is not None and seeds:
        first = _run_fn(fn, 0, seeds[:1])
        key = _key(fn, first, seeds)
        chunks = [(0, 1)] + [(a + 1, b + 1) for a, b in _chunks(len(seeds) - 1, settings.jobs)]
    cache = _ChunkCache(settings.cache_dir if first is not None else None, key)
    results: dict[tuple[int, int], list] = {}
    for a, b in chunks:
        hit = cache.load(a, b)
        if hit is not None:
            results[(a, b)] = [(i, k, _restore(v) if k == "ok" else v) for i, k, v in hit]
    todo = [c for c in chunks if c not in results]
    progress = _Progress(len(seeds), len(seeds) - sum(b - a for a, b in todo), settings.quiet)

    def finished(c: tuple[int, int], rows: list[tuple[int, str, Any]]) -> None:
        cache.put(c[0], c[1], rows)
        results[c] = [(i, k, _restore(v) if k == "ok" else v) for i, k, v in rows]
        progress.add(c[1] - c[0])
        if on_chunk is not None:
            on_chunk(len(results))

    if first is not None and (0, 1) in todo:
        todo.remove((0, 1))
        finished((0, 1), first)
    if todo:
        _dispatch(fn, payload, seeds, todo, settings, finished)
    return [row for c in chunks for row in results[c]]


def _dispatch(fn: Callable[[Any], Any], payload: bytes, seeds: list[Any], todo: list[tuple[int, int]],
              settings: ReplicateExecutor, finished: Callable[[tuple[int, int], list], None]) -> None:
    if settings.executor == "dask":
        _on_dask(payload, seeds, todo, settings, finished)
    elif settings.jobs > 1 and len(todo) > 1 and settings.executor in ("local", "processes"):
        _on_processes(payload, seeds, todo, settings.jobs, finished)
    else:
        for a, b in todo:  # inline: fn itself, not a copy
            finished((a, b), _run_fn(fn, a, seeds[a:b]))


def _on_processes(payload: bytes, seeds: list[Any], todo: list[tuple[int, int]], jobs: int,
                  finished: Callable[[tuple[int, int], list], None]) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from runner.run.executors import _pool_context, _terminate
    from runner.run.tasks import limit_blas_threads

    pool = ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo))), mp_context=_pool_context(),
                               initializer=limit_blas_threads)
    try:
        futures = {pool.submit(_run_chunk, payload, a, seeds[a:b]): (a, b) for a, b in todo}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                finished(futures[f], f.result())
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)


def _on_dask(payload: bytes, seeds: list[Any], todo: list[tuple[int, int]], settings: ReplicateExecutor,
             finished: Callable[[tuple[int, int], list], None]) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if settings.scheduler:
        client = Client(settings.scheduler)
    else:
        cluster = LocalCluster(n_workers=max(1, min(settings.jobs, len(todo))), threads_per_worker=1,
                               processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        client.run(_one_blas_thread_worker)
        shared = client.scatter(payload, broadcast=True)
        futures = {client.submit(_run_chunk, shared, a, seeds[a:b], pure=False): (a, b) for a, b in todo}
        for f in as_completed(list(futures)):
            finished(futures[f], f.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _one_blas_thread_worker() -> None:
    from runner.run.tasks import limit_blas_threads

    limit_blas_threads()
