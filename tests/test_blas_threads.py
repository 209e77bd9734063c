"""The BLAS thread policy of native fits (runner.engines.common.blas_threads): one thread
unless MIXSPEC_BLAS_THREADS asks for more on a large dense block, never above the caller's
own limit (a pool or Dask worker limited to one stays at one)."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from runner.engines.common import DENSE_THREADED, blas_threads


def _threads() -> int:
    info = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    if not info:
        pytest.skip("no BLAS library that threadpoolctl can see")
    return max(int(lib["num_threads"]) for lib in info)


def test_one_thread_by_default(monkeypatch) -> None:
    monkeypatch.delenv("MIXSPEC_BLAS_THREADS", raising=False)
    with threadpool_limits(limits=2):
        with blas_threads(DENSE_THREADED * 5):
            assert _threads() == 1


def test_more_threads_only_when_asked_and_the_block_is_large(monkeypatch) -> None:
    monkeypatch.setenv("MIXSPEC_BLAS_THREADS", "2")
    with threadpool_limits(limits=2):
        if _threads() < 2:
            pytest.skip("BLAS runs one thread here")
        with blas_threads(DENSE_THREADED):
            assert _threads() == 2
        with blas_threads(DENSE_THREADED - 1):
            assert _threads() == 1


def test_a_worker_limited_to_one_stays_at_one(monkeypatch) -> None:
    monkeypatch.setenv("MIXSPEC_BLAS_THREADS", "8")
    with threadpool_limits(limits=1):
        with blas_threads(DENSE_THREADED * 5):
            assert _threads() == 1


@pytest.mark.parametrize("value", ["", "0", "one", "-2"])
def test_unusable_values_mean_one_thread(monkeypatch, value: str) -> None:
    monkeypatch.setenv("MIXSPEC_BLAS_THREADS", value)
    with threadpool_limits(limits=2):
        with blas_threads(DENSE_THREADED * 5):
            assert _threads() == 1


def test_pool_workers_get_their_share_of_the_cores_as_ceiling(monkeypatch) -> None:
    import runner.run.tasks as tasks

    monkeypatch.setattr(tasks.os, "cpu_count", lambda: 8)
    assert [tasks.worker_blas_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
