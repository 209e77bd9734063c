"""The `mixspec` command: exit codes, stdout/stderr split, no tracebacks for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
runner = CliRunner()


def test_validate_example_specs_exit_0():
    result = runner.invoke(app, ["validate", str(SPECS / "sleepstudy.yaml"), str(SPECS / "penicillin.yaml"),
                                 str(SPECS / "pastes.yaml")])
    assert result.exit_code == 0, result.output
    for text in ("Reaction ~ Days + (Days || Subject)", "plate (24), sample (6)", "cask:batch (30)", "uncorrelated"):
        assert text in result.stdout
    assert result.stderr == ""


def test_validate_broken_spec_exit_2_with_all_messages(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(textwrap.dedent("""
        data: {example: sleepstudy}
        defaults: {method: reml}
        models:
          slopes:
            formla: Reaction ~ Days + (Days|Subject)
          bad:
            formula: Reaction ~ Days + (Days|
        """).lstrip())
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2:20: defaults.method: ")
    assert lines[1] == f"{path}:5:5: models.slopes.formla: unknown key; did you mean 'formula'?"
    assert lines[2].startswith(f"{path}:7:32: models.bad.formula: '(' is never closed")
    assert "Traceback" not in result.output and result.stdout == ""


def test_validate_missing_file_exit_2(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and result.stderr.strip() == f"{tmp_path / 'nope.yaml'}: spec file not found"


def test_validate_prints_warnings_on_stderr(tmp_path):
    path = tmp_path / "trap.yaml"
    path.write_text("data: {example: pastes}\nmodels:\n  trap: {formula: 'strength ~ 1 + (1|batch) + (1|cask)'}\n")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0
    assert "warning: labels of 'cask' repeat in every level of 'batch'" in result.stderr


def test_schema_is_json():
    out = runner.invoke(app, ["schema"])
    assert out.exit_code == 0
    schema = json.loads(out.stdout)
    assert schema["title"] == "Spec" and "models" in schema["properties"]
    assert schema["$defs"]["Defaults"]["properties"]["method"]["enum"] == ["REML", "ML"]


def test_results_schema():
    pytest.importorskip("runner.results")
    result = runner.invoke(app, ["schema", "--results"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "models" in schema["properties"]


def test_validate_exit_code_from_a_real_process(tmp_path):
    """The one process-boundary test: `python -m runner` is the CLI and its exit code is the process's."""
    path = tmp_path / "bad.yaml"
    path.write_text("data: {example: sleepstudy}\nmodels: {m: {formula: 'Reaction ~ Dayz + (1|Subject)'}}\n")
    out = subprocess.run([sys.executable, "-m", "runner", "validate", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"{path}:2:35: models.m.formula: column 'Dayz' not in the data; "
                                  "did you mean 'Days'?")


def test_simulate_writes_csv(tmp_path):
    out = tmp_path / "sim.csv"
    result = runner.invoke(app, ["simulate", str(out), "--provinces", "2", "--schools", "2", "--classrooms", "2",
                                 "--students", "2", "--scores", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 1 + 2 * 2 * 2 * 2 * 2
    bad = runner.invoke(app, ["simulate", str(out), "--provinces", "0"])
    assert bad.exit_code == 2 and "--provinces" in bad.stderr


def test_diff_and_report_missing_files_exit_2(tmp_path):
    diff = runner.invoke(app, ["diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert diff.exit_code == 2
    report = runner.invoke(app, ["report", str(tmp_path / "results.json")])
    assert report.exit_code == 2 and "file not found" in report.stderr


def test_cli_import_stays_light():
    """`mixspec --help` is instant because importing the CLI imports none of the numeric stack
    (a fresh interpreter: this process has imported everything already); `mixspec schema`
    needs pydantic and the spec models only."""
    heavy = ["numpy", "pandas", "scipy", "pydantic", "rich", "jinja2", "pyarrow", "statsmodels", "yaml"]
    code = ("import sys, runner.cli; heavy = {h!r}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy)))"
            "; import runner.spec.models; print(sorted({{m.split('.')[0] for m in sys.modules}} & set(heavy)))")
    out = subprocess.run([sys.executable, "-c", code.format(h=heavy)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    assert out.stdout.splitlines() == ["[]", "['pydantic']"]
