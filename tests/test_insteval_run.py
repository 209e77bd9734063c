"""InstEval (73,421 rows, 2,972 students x 1,128 instructors crossed) through `mixspec run`:
lme4's REML criterion, and a report that summarizes rather than draws every row (< 2 MB)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runner.run.api import run_spec
from runner.run.options import RunOptions

ROOT = Path(__file__).resolve().parent.parent

SPEC = """
name: insteval
title: Lecture evaluations (InstEval)
data:
  path: InstEval.csv.gz
  categorical: {service: {reference: "0"}}
models:
  crossed:
    formula: y ~ service + (1|s) + (1|d) + (1|dept:service)
"""


def test_insteval_run_matches_lme4_and_report_is_small(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "data" / "InstEval.csv.gz", tmp_path / "InstEval.csv.gz")
    spec = tmp_path / "insteval.yaml"
    spec.write_text(SPEC)
    result = run_spec(spec, RunOptions.of(tmp_path / "out", jobs=1, quiet=True, use_cache=False))
    assert result.exit_code == 0, result.errors
    record = json.loads(result.results_path.read_text())
    ref = json.loads((ROOT / "tests" / "reference" / "insteval_crossed.json").read_text())
    model = record["models"]["crossed"]
    assert model["nobs"] == ref["nobs"] == 73421
    assert model["objective"] <= ref["objective"] + 1e-4
    assert model["objective"] == pytest.approx(ref["objective"], abs=1e-3)
    assert model["ngroups"] == ref["ngroups"]
    page = result.results_path.parent / "index.html"
    assert page.stat().st_size < 2_000_000
    assert "73,421" in page.read_text(encoding="utf-8")
