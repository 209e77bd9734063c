"""User mistakes at the command line: a clear message and exit 2, never a traceback,
and --quiet never hides why a run failed.

In-process through typer's CliRunner (the exit code and the stdout/stderr split are what
is tested, not the process boundary; test_cli.py has the one real-process check).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from run_helpers import invoke_cli

SPEC = """name: dye
data: {example: dyestuff}
models:
  m: {formula: "Yield ~ 1 + (1|Batch)"}
"""


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def mixspec(*args: str, cwd: Path) -> Outcome:
    """`mixspec ARGS` run in `cwd`, in this process."""
    result = invoke_cli(cwd, *args)
    return Outcome(result.exit_code, result.stdout, result.stderr)


def test_quiet_still_prints_the_errors_of_an_invalid_spec(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(SPEC.replace("Batch)", "Bacth)"))
    out = mixspec("run", "bad.yaml", "--out", "out", "--quiet", cwd=tmp_path)
    assert out.returncode == 2
    assert "bad.yaml:4:" in out.stderr and "column 'Bacth' not in the data; did you mean 'Batch'?" in out.stderr
    assert "Traceback" not in out.stderr


def test_quiet_still_prints_a_failed_expectation(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC + "expect:\n  fixed: [\"Intercept < 0\"]\n")
    out = mixspec("run", "s.yaml", "--out", "out", "--quiet", "--no-cache", "--jobs", "1", cwd=tmp_path)
    assert out.returncode == 1
    assert "expectation failed: fixed: Intercept < 0" in out.stderr


def test_out_that_is_a_file_is_refused_before_fitting(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC)
    (tmp_path / "afile").write_text("x")
    out = mixspec("run", "s.yaml", "--out", "afile", cwd=tmp_path)
    assert out.returncode == 2 and "afile is a file, not a folder (check --out)" in out.stderr
    assert "fitting" not in out.stderr and "Traceback" not in out.stderr


def test_report_of_a_folder_and_diff_of_a_list(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC)
    run = mixspec("run", "s.yaml", "--out", "out", "--json", "--no-cache", "--jobs", "1", cwd=tmp_path)
    assert run.returncode == 0
    (tmp_path / "one.json").write_text(run.stdout)
    (tmp_path / "many.json").write_text("[" + run.stdout + "," + run.stdout + "]")
    folder = mixspec("report", "out/dye", cwd=tmp_path)  # the spec's folder means its results.json
    assert folder.returncode == 0 and folder.stderr.strip().endswith("out/dye/index.html")
    empty = mixspec("report", ".", cwd=tmp_path)
    assert empty.returncode == 2 and "a folder without results.json" in empty.stderr
    listed = mixspec("diff", "one.json", "many.json", cwd=tmp_path)
    assert listed.returncode == 2 and "many.json is a list of 2 records" in listed.stderr
    assert "Traceback" not in folder.stderr + empty.stderr + listed.stderr


def test_bad_jobs_and_rtol_values(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SPEC)
    jobs = mixspec("run", "s.yaml", "--jobs", "-3", cwd=tmp_path)
    assert jobs.returncode == 2 and "--jobs" in jobs.stderr
    rtol = mixspec("diff", "a.json", "b.json", "--rtol", "-1", cwd=tmp_path)
    assert rtol.returncode == 2 and "--rtol" in rtol.stderr
