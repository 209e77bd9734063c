"""Helpers shared by the run tests: a spec file in a tmp dir, and a quiet run of it."""

from __future__ import annotations

from pathlib import Path

from runner.run.api import run_spec
from runner.run.options import RunOptions


def write_spec(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def run_quiet(spec: Path, tmp_path: Path, **kw):
    """run_spec inline, quiet, uncached, no HTML (tests override any of these)."""
    kw = {"out_dir": tmp_path / "out", "jobs": 1, "quiet": True, "use_cache": False, "report": False, **kw}
    return run_spec(spec, RunOptions.of(**kw))


def invoke_cli(cwd: Path, *args: str):
    """`mixspec ARGS` in-process in `cwd` (typer's CliRunner); the result, never an uncaught exception."""
    import os

    from typer.testing import CliRunner

    from runner.cli import app

    before = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(before)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result
