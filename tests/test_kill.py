"""A run killed in the middle of writing results.json leaves no partial results.json.

The run is a real `mixspec run` in a subprocess. Before it starts, the subprocess
replaces the `open` that runner.atomic uses (a module global shadowing the builtin)
with one whose files, when they belong to results.json, write the first half of the
bytes, flush them to the OS, print `MIDWRITE <half> <total> <path>` on stderr and then
sleep 30 s before writing the rest. The test waits for that line and only then sends
the signal, so the kill is known to land while half of results.json is on disk,
wherever the writer put it. Only the file write is slowed; which file is opened, and
what happens before and after (temp file, fsync, chmod, rename, clean-up), is the
writer's own code.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runner.run.commands import run_command
from runner.run.options import RunOptions

ROOT = Path(__file__).resolve().parents[1]
MARKER = "MIDWRITE"
MARKER_TIMEOUT = 60.0  # seconds to reach the write; a run of the spec takes about 2 s

SPEC = """\
name: k
data: {example: dyestuff}
models:
  m: {formula: "Yield ~ 1 + (1|Batch)"}
"""

# Run in the subprocess as `python -c SCRIPT SPEC OUT`, cwd at the repository root.
SCRIPT = r"""
import builtins, os, sys, time
import runner.atomic

class SlowFile:
    def __init__(self, fh, path):
        self._fh, self._path = fh, os.path.abspath(path)
    def write(self, data):
        half = len(data) // 2
        self._fh.write(data[:half])
        self._fh.flush()
        sys.stderr.write(f"MIDWRITE {half} {len(data)} {self._path}\n")
        sys.stderr.flush()
        time.sleep(30)
        return half + self._fh.write(data[half:])
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)
    def __getattr__(self, name):
        return getattr(self._fh, name)

def slow_open(file, mode="r", *args, **kwargs):
    fh = builtins.open(file, mode, *args, **kwargs)
    if any(m in mode for m in "wax") and "results.json" in os.path.basename(os.fspath(file)):
        return SlowFile(fh, os.fspath(file))
    return fh

runner.atomic.open = slow_open

from runner.run.commands import run_command
from runner.run.options import RunOptions
spec, out = sys.argv[1], sys.argv[2]
sys.exit(run_command([spec], RunOptions.of(out, jobs=1, use_cache=False, quiet=True)))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _lines(stream, sink: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        sink.put(line)
    sink.put(None)


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "over-previous"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_kill_in_the_middle_of_writing_results_json(tmp_path, sig, previous):
    """SIGKILL/SIGTERM while half of results.json's bytes are on disk.

    Asserts: the marker was seen (the signal really landed mid-write) and the process
    died of it; the half-written file is a hidden temp file in the spec's output folder,
    not results.json; afterwards results.json does not exist (fresh) or is byte-identical
    to the complete one an earlier unpatched run wrote and still parses (over-previous);
    no other file is named like results.json; a temp file left behind holds exactly the
    half (SIGKILL gives no chance to clean up), and after SIGTERM none is left.

    Why it fails for a non-atomic writer: if write_atomic_bytes opened results.json
    itself (`open(path, "wb")`, or truncated it first), the marker would name
    results.json and, at the kill, results.json would hold only the first half of the
    bytes: the fresh case finds a results.json that should not exist and the
    over-previous case finds it changed and not valid JSON. (Checked by running this
    test against a scratch copy of the package whose write_atomic_bytes writes in
    place.) A writer that does not go through runner.atomic's `open` never prints the
    marker, and the test fails on that instead of passing without a kill.
    """
    spec = tmp_path / "k.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    folder = out / "k"
    results = folder / "results.json"
    before = None
    if previous:
        assert run_command([spec], RunOptions.of(out, jobs=1, use_cache=False, quiet=True)) == 0
        before = results.read_bytes()
        json.loads(before)

    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(spec), str(out)], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    seen: list[str] = []
    marker = None
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT
        while marker is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {MARKER} line within {MARKER_TIMEOUT} s; stderr so far: {seen}"
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"run ended (rc={proc.wait()}) without a {MARKER} line: {seen}"
            seen.append(line)
            if line.startswith(MARKER + " "):
                _, half, total, path = line.rstrip("\n").split(" ", 3)
                marker = (int(half), int(total), Path(path))
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    half, total, partial = marker
    assert 0 < half < total
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), proc.returncode

    if previous:
        assert results.read_bytes() == before, "results.json changed: a partial write replaced it"
        json.loads(results.read_bytes())
    else:
        assert not results.exists(), f"partial results.json left behind ({results.stat().st_size} of {total} bytes)"

    # The half-written file is a hidden temp file beside results.json, never results.json.
    assert partial.parent == folder
    assert partial != results and partial.name.startswith("."), partial

    named_like_results = {p for p in folder.iterdir() if "results.json" in p.name}
    assert named_like_results <= {results, partial}
    if partial.exists():
        assert sig == signal.SIGKILL, "SIGTERM should have removed the temp file"
        assert partial.stat().st_size == half
