"""`mixspec init`: a starter spec from real data that validates and fits as written."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from runner.cli import app
from runner.spec.load import load_spec

runner = CliRunner()


def test_init_from_a_csv_names_real_columns_and_runs(tmp_path):
    frame = pd.DataFrame({
        "subject": [f"s{i // 6}" for i in range(60)],
        "dose": [float(i % 6) for i in range(60)],
        "arm": ["a", "b"] * 30,
        "outcome": [1.0 + 0.5 * (i % 6) + (i // 6) * 0.3 + ((i * 7) % 5) * 0.1 for i in range(60)],
    })
    frame.to_csv(tmp_path / "trial.csv", index=False)
    spec = tmp_path / "trial.yaml"
    result = runner.invoke(app, ["init", str(spec), "--data", str(tmp_path / "trial.csv")])
    assert result.exit_code == 0, result.output
    loaded = load_spec(spec)
    formulas = {name: m.formula_text for name, m in loaded.models.items()}
    assert formulas == {"intercept": "outcome ~ dose + arm + (1 | subject)",
                        "slope": "outcome ~ dose + arm + (dose | subject)"}
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(spec), "--out", str(out), "--quiet", "--no-cache", "--jobs", "1"])
    assert result.exit_code in (0, 1), result.output  # 1 only if the toy fit does not converge
    record = json.loads((out / "trial" / "results.json").read_text())
    assert record["models"]["intercept"]["status"] == "ok"
    assert record["tests"][0]["small"] == "intercept"


def test_init_refuses_to_overwrite_and_needs_one_source(tmp_path):
    spec = tmp_path / "x.yaml"
    spec.write_text("keep me\n")
    result = runner.invoke(app, ["init", str(spec), "--example", "sleepstudy"])
    assert result.exit_code == 2 and "exists" in result.stderr
    assert spec.read_text() == "keep me\n"
    result = runner.invoke(app, ["init", str(tmp_path / "y.yaml")])
    assert result.exit_code == 2 and "exactly one" in result.stderr
    result = runner.invoke(app, ["init", str(tmp_path / "z.yaml"), "--data", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "z.yaml").exists()


def test_init_example_picks_subject_as_cluster(tmp_path):
    spec = tmp_path / "sleep.yaml"
    assert runner.invoke(app, ["init", str(spec), "--example", "sleepstudy"]).exit_code == 0
    text = spec.read_text()
    assert "example: sleepstudy" in text and "Reaction ~ Days + (Days | Subject)" in text
