"""Independent evaluations of an expensive model, two at a time.

The convergence check's difference points and Satterthwaite's are independent of each other;
each is a dense factorization and inverse that releases the GIL inside LAPACK. Run on two
Python threads with one BLAS thread each, they give the same bits as run one after the other
(tests/test_lme_parallel.py) and take ~40% less time on two cores (a million rows: the
check's three gradients 2.3 s -> 1.4 s). A threaded BLAS would change the last bits with the
thread count and spins beside other busy processes (engines.common.blas_threads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from runner.engines.common import evaluation_workers

T = TypeVar("T")
R = TypeVar("R")


def map_evaluations(fn: Callable[[T], R], points: Sequence[T], workers: int | None = None) -> list[R]:
    """[fn(p) for p in points], two at a time where `evaluation_workers` allows; fn must not
    mutate shared state (a problem's caches are filled idempotently)."""
    workers = evaluation_workers() if workers is None else workers
    if workers <= 1 or len(points) <= 1:
        return [fn(p) for p in points]

    def quiet(point: T) -> R:  # numpy's error state is per thread: the engine's, in the workers too
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return fn(point)

    with ThreadPoolExecutor(max_workers=min(workers, len(points)), thread_name_prefix="mixspec-eval") as pool:
        return list(pool.map(quiet, points))
