"""Bootstrap replicates on the run's executor: identical numbers serially, on a process pool
and on Dask (per-replicate seeds), and an interrupted run resumes from cached chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runner.inference.bootstrap import map_replicates, seeds_for
from runner.run.api import run_spec
from runner.run.options import RunOptions
from runner.run.replicates import ReplicateExecutor, map_chunked, replicate_executor


def _draws(scale: float):
    """A closure, as the bootstrap's replicate functions are (cloudpickled to workers)."""
    def one(ss: np.random.SeedSequence) -> np.ndarray:
        if ss.spawn_key == () and ss.entropy[1] == 7:  # [seed, 7]: this replicate fails
            raise ValueError("replicate 7 fails")
        return scale * np.random.default_rng(ss).normal(size=3)
    return one


def _values(settings: ReplicateExecutor | None, n: int = 23):
    if settings is None:
        reps = map_replicates(_draws(2.0), seeds_for(11, n))
    else:
        with replicate_executor(settings):
            reps = map_replicates(_draws(2.0), seeds_for(11, n))
    return np.vstack(reps.values), [(f.index, f.error) for f in reps.failed]


def test_same_replicates_serial_inline_and_process_pool():
    serial, failed = _values(None)
    assert serial.shape == (22, 3) and failed == [(7, "ValueError: replicate 7 fails")]
    # replicate 0 is default_rng(SeedSequence([11, 0])) whatever runs it
    assert np.array_equal(serial[0], 2.0 * np.random.default_rng(np.random.SeedSequence([11, 0])).normal(size=3))
    for settings in (ReplicateExecutor("local", 1), ReplicateExecutor("processes", 2)):
        values, f = _values(settings)
        assert np.array_equal(values, serial) and f == failed


@pytest.mark.slow
def test_same_replicates_on_dask_local_cluster():
    pytest.importorskip("dask.distributed")
    serial, failed = _values(None)
    values, f = _values(ReplicateExecutor("dask", 2))
    assert np.array_equal(values, serial) and f == failed


def test_interrupted_run_resumes_from_cached_chunks(tmp_path):
    seeds = seeds_for(5, 40)
    settings = ReplicateExecutor("local", 1, cache_dir=tmp_path, quiet=True)  # chunks of 10

    def interrupt_after_two(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        map_chunked(_draws(1.0), seeds, settings, on_chunk=interrupt_after_two)
    files = sorted(p.name for p in (tmp_path / "replicates").rglob("*.json"))
    assert files == ["000000-000001.json", "000001-000011.json"]  # replicate 0 alone (the key), then 10s
    calls = []

    def counted(ss: np.random.SeedSequence) -> np.ndarray:
        calls.append(int(ss.entropy[1]))
        return np.random.default_rng(ss).normal(size=3)

    # a different function is a different key: nothing reused
    rows = map_chunked(counted, seeds, settings)
    assert sorted(calls) == list(range(40))
    # the same function again: every chunk cached, only replicate 0 (the key) is computed; identical numbers
    calls.clear()
    again = map_chunked(counted, seeds, settings)
    assert calls == [0] and [(i, k) for i, k, _ in again] == [(i, k) for i, k, _ in rows]
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(rows, again))
    # the interrupted function resumes: only the 20 replicates not cached are computed
    resumed_calls = []

    def one(ss: np.random.SeedSequence) -> np.ndarray:
        return np.random.default_rng(ss).normal(size=3)

    # same closure identity as the interrupted run: `_draws(1.0)` (replicate 7 fails, cached as an error)
    rows = map_chunked(_draws(1.0), seeds, ReplicateExecutor("local", 1, cache_dir=tmp_path, quiet=True),
                       on_chunk=lambda done: resumed_calls.append(done))
    assert resumed_calls == [3, 4, 5]  # two chunks loaded, three computed
    assert rows[7][1] == "error" and "replicate 7 fails" in rows[7][2]
    assert all(np.array_equal(v, one(s)) for (i, k, v), s in zip(rows, seeds) if k == "ok")


SPEC = """
name: bootexec
data: {example: sleepstudy}
defaults:
  method: ML
  inference: {ci: bootstrap, bootstrap: {nsim: 12, seed: 3}}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
compare:
  tests: [[intercept, slope]]
  bootstrap: {nsim: 12, seed: 4}
"""


def _record(tmp_path: Path, executor: str) -> dict:
    spec = tmp_path / "bootexec.yaml"
    spec.write_text(SPEC)
    out = run_spec(spec, RunOptions.of(tmp_path / executor, jobs=2, executor=executor, quiet=True,
                                       use_cache=False, report=False))
    assert out.exit_code == 0, out.errors
    data = json.loads(out.results_path.read_text())
    return {"p_bootstrap": [t["p_bootstrap"] for t in data["tests"]],
            "confint": {m: data["models"][m]["confint"] for m in data["models"]}}


@pytest.mark.slow
def test_bootstrap_numbers_identical_on_processes_and_dask(tmp_path):
    pytest.importorskip("dask.distributed")
    a = _record(tmp_path, "processes")
    b = _record(tmp_path, "dask")
    assert a == b
    assert a["p_bootstrap"][0] is not None and a["confint"]["slope"]


def test_a_second_process_reuses_the_cached_replicates(tmp_path):
    """The key survives a new process with another hash seed (a pickled closure's bytes do not)."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "bootexec.yaml"
    spec.write_text(SPEC)
    lines = []
    for hashseed in ("1", "2"):
        proc = subprocess.run([sys.executable, "-m", "runner", "run", str(spec), "--out", str(tmp_path / "o"),
                               "--jobs", "1", "--cache-dir", str(tmp_path / "cache")],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "PYTHONHASHSEED": hashseed}, timeout=600)
        assert proc.returncode == 0, proc.stderr
        lines.append([ln for ln in proc.stderr.splitlines() if ln.startswith("bootstrap: 12 replicates")])
    assert lines[0] == ["bootstrap: 12 replicates"] * 3  # two models' intervals, one test's p
    assert lines[1] == ["bootstrap: 12 replicates (12 cached)"] * 3
