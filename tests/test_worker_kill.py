"""A fit worker ended by SIGTERM (an OOM killer's cousin, an operator, a CI runner tidying
up) fails its fits with a message; the run ends with exit 1 and prints no traceback.

A real `mixspec run --executor processes` in a subprocess: the process boundary and the
signal are what is tested. The test sends SIGTERM to the first pool worker it sees (a
child of the forkserver, itself a child of the run) as soon as it exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _first_worker(run_pid: int) -> int | None:
    """A process forked by the run's forkserver: a pool worker."""
    for child in _children(run_pid):
        if "forkserver" in _cmdline(child):
            workers = _children(child)
            if workers:
                return workers[0]
    return None


@pytest.mark.slow  # a real students run in a process pool: ~15 s
def test_sigterm_to_a_worker_fails_its_fits_without_a_traceback(tmp_path: Path) -> None:
    if not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists():
        pytest.skip("needs Linux /proc children lists")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(ROOT / "specs" / "students.yaml"), "--out", str(tmp_path / "out"),
         "--executor", "processes", "--jobs", "2", "--no-cache"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    worker = None
    deadline = time.monotonic() + 120
    while worker is None and proc.poll() is None and time.monotonic() < deadline:
        worker = _first_worker(proc.pid)
        time.sleep(0.01)
    assert worker is not None, "no pool worker appeared"
    os.kill(worker, signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        stragglers = [g for c in _children(proc.pid) for g in [c, *_children(c)]]
        proc.kill()
        for pid in stragglers:
            os.kill(pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("the run hung after its worker was killed") from None
    assert "Traceback" not in err and "Traceback" not in out, err
    assert proc.returncode == 1, err
    assert "worker process died while fitting" in err
    assert (tmp_path / "out" / "students" / "results.json").is_file()  # the run still records what happened
