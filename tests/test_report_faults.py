"""A run whose outputs cannot be written (a full disk) fails, and leaves no page of an
earlier run that could pass for this one.

The disk is "full" for one file name: the atomic writer's `open` (a module global, as
in test_kill.py) hands out files whose `write` raises ENOSPC for that target, so the
writer's own clean-up of its temp file runs for real.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest
from run_helpers import run_quiet, write_spec

import runner.atomic

SPEC = """\
name: dye
data: {example: dyestuff}
models:
  m: {formula: "Yield ~ 1 + (1|Batch)"}
"""


class _FullDisk:
    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    real_open = open

    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(path, *args, **kwargs)
        return _FullDisk(fh) if Path(path).name.startswith(f".{target}.") else fh

    monkeypatch.setattr(runner.atomic, "open", fake_open, raising=False)


@pytest.fixture
def earlier_run(tmp_path: Path) -> tuple[Path, Path]:
    """A spec and the outputs of a successful earlier run of it."""
    spec = write_spec(tmp_path, "dye", SPEC)
    first = run_quiet(spec, tmp_path, report=True)
    assert first.exit_code == 0
    out = tmp_path / "out" / "dye"
    assert {p.name for p in out.iterdir()} >= {"results.json", "summary.md", "index.html"}
    return spec, out


def _leftover_temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_page_not_written_fails_the_run_and_removes_the_old_page(earlier_run: tuple[Path, Path],
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    spec, out = earlier_run
    old_started = json.loads((out / "results.json").read_text())["run"]["started"]
    _disk_full_for(monkeypatch, "index.html")
    outcome = run_quiet(spec, tmp_path, report=True)
    assert outcome.exit_code == 1
    assert outcome.errors == ["HTML report not written: No space left on device; removed the earlier run's index.html"]
    assert not (out / "index.html").exists()  # the earlier run's page would claim to show this run
    assert outcome.results_path == out / "results.json"  # this run's numbers were written before the page
    record = json.loads((out / "results.json").read_text())
    assert record["models"]["m"]["loglik"] == pytest.approx(-159.827138421129, abs=1e-6)  # tests/reference/dyestuff.json
    assert record["run"]["started"] >= old_started
    assert _leftover_temps(out) == []


def test_results_not_written_removes_every_earlier_output(earlier_run: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec, out = earlier_run
    _disk_full_for(monkeypatch, "results.json")
    outcome = run_quiet(spec, tmp_path, report=True)
    assert outcome.exit_code == 1 and outcome.results_path is None
    assert outcome.errors == ["results.json not written: No space left on device; removed the earlier run's "
                              "results.json, summary.md, index.html"]
    assert not (out / "results.json").exists()  # the old record survived the failed atomic write: removed too
    assert not (out / "summary.md").exists() and not (out / "index.html").exists()
    assert _leftover_temps(out) == []


def test_full_disk_through_the_cli_exits_1_without_a_traceback(earlier_run: tuple[Path, Path],
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from runner.cli import app

    spec, out = earlier_run
    _disk_full_for(monkeypatch, "index.html")
    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(tmp_path / "out"), "--no-cache", "--jobs", "1"])
    assert result.exit_code == 1, result.output
    assert "mixspec: dye: HTML report not written: No space left on device" in result.stderr
    assert "Traceback" not in result.output and not (out / "index.html").exists()


def test_mixspec_report_on_a_full_disk_exits_1_and_removes_the_older_page(earlier_run: tuple[Path, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from runner.cli import app

    _, out = earlier_run
    _disk_full_for(monkeypatch, "index.html")
    result = CliRunner().invoke(app, ["report", str(out / "results.json")])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"{out / 'results.json'}: report not written: No space left on device; removed the older {out / 'index.html'}"]
    assert not (out / "index.html").exists() and _leftover_temps(out) == []
