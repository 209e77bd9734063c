"""Pre-flight memory estimate: refusal above --max-memory (exit 2, nothing fitted), the
estimate recorded beside the measured peak, on its safe side and close to it, and
the estimate's structure (tail size, dense square, update non-zeros) equal to the engine's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.design.build import build_design
from runner.engines.lme.structure import build_problem, ensure_update_structure
from runner.formula import parse_formula
from runner.run import preflight
from runner.run.preflight import estimate_design, parse_size, resolve_limit

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "runner" / "data" / "examples"
CROSSED = "y ~ x + (1 | user) + (1 | item) + (1 | region)"


def crossed_frame(rows: int, users: int, items: int, regions: int, seed: int = 3) -> pd.DataFrame:
    """The benchmark's design in small: users crossed with items, users nested in regions."""
    rng = np.random.default_rng(seed)
    region_of = rng.integers(regions, size=users)
    user = np.concatenate([np.repeat(np.arange(users), rows // users),
                           rng.integers(users, size=rows - users * (rows // users))])
    item = rng.integers(items, size=rows)
    x = rng.normal(size=rows)
    y = (1 + 0.5 * x + rng.normal(0, 1, users)[user] + rng.normal(0, 0.7, items)[item]
         + rng.normal(0, 0.5, regions)[region_of[user]] + rng.normal(0, 2, rows))
    return pd.DataFrame({"user": [f"u{i}" for i in user], "item": [f"i{i}" for i in item],
                         "region": [f"r{i}" for i in region_of[user]], "x": x, "y": y})


def write_spec(tmp_path: Path, frame: pd.DataFrame, formula: str = CROSSED, method: str = "ML") -> Path:
    frame.to_csv(tmp_path / "d.csv", index=False)
    spec = tmp_path / "scale.yaml"
    spec.write_text(f"name: scale\ndata:\n  path: d.csv\ndefaults:\n  method: {method}\n"
                    f"  inference: {{df: none}}\nmodels:\n  crossed:\n    formula: {formula}\n")
    return spec


def test_parse_size_units_and_errors():
    assert parse_size("2GB") == 2048
    assert parse_size("500MB") == 500
    assert parse_size("1.5g") == 1536
    assert parse_size("800M") == 800
    assert parse_size("2GiB") == 2048
    assert parse_size("300") == 300
    assert parse_size("1TB") == 1024 ** 2
    for bad in ("lots", "2XB", "-1GB", "0MB", "2 G B"):
        with pytest.raises(ValueError, match="--max-memory"):
            parse_size(bad)
    assert resolve_limit("off") == (None, "no limit")


def test_default_limit_is_80_percent_of_the_smaller(monkeypatch):
    monkeypatch.setattr(preflight, "physical_mb", lambda: 10_000.0)
    monkeypatch.setattr(preflight, "_cgroup_limit", lambda: 4_000.0)
    assert preflight.default_limit() == (3_200.0, "default: 80% of 3.9 GB cgroup memory limit")
    monkeypatch.setattr(preflight, "_cgroup_limit", lambda: None)
    assert preflight.default_limit()[0] == 8_000.0


@pytest.mark.parametrize("case", ["students_repeated", "students_slopes_repeated_ml", "penicillin", "pastes",
                                  "crossed"])
def test_structure_matches_the_engine(case):
    """Tail size, dense square and the update's non-zeros are the engine's own (build_problem)."""
    if case == "crossed":
        df, formula = crossed_frame(6_000, 300, 80, 7), CROSSED
    elif case == "penicillin":
        df, formula = pd.read_csv(EXAMPLES / "Penicillin.csv"), "diameter ~ 1 + (1 | plate) + (1 | sample)"
    elif case == "pastes":
        df, formula = pd.read_csv(EXAMPLES / "Pastes.csv"), "strength ~ 1 + (1 | batch/cask)"
    else:
        df = pd.read_csv(EXAMPLES / "students.csv")
        slope = "(age | classroom)" if "slopes" in case else "(1 | classroom)"
        formula = f"test_score ~ age + sex + {slope} + (1 | school) + (1 | province) + (1 | student_id)"
    design = build_design(parse_formula(formula), df)
    e = estimate_design("m", design)
    problem = build_problem(design)
    ensure_update_structure(problem)  # small models defer it (their criterion is evaluated densely)
    assert e.nt == problem.nt
    assert e.dense == problem.nt - problem.dense_start
    # every non-zero of the update matrix is a pair the estimate counted (exact without zero columns)
    both = not problem.scalar_tail
    entries = problem.A_t1.nnz
    nnz = e.pairs if both else (e.pairs + entries) / 2
    s_nnz = problem.S_eval.nnz + problem.S_rest.nnz
    assert s_nnz <= nnz <= 1.2 * s_nnz


def test_refused_above_max_memory_exit_2_nothing_fitted(tmp_path):
    spec = write_spec(tmp_path, crossed_frame(30_000, 2_000, 1_500, 10))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "-j", "1", "--no-cache", "-q",
                                   "--max-memory", "150MB", "--allow-path", str(tmp_path)])
    assert res.exit_code == 2, res.output
    text = res.output
    assert "crossed: estimated peak memory" in text and "exceeds --max-memory 150 MB (--max-memory)" in text
    assert "the crossed block of item (1,500 levels) and region (10 levels) x user is dense: 1,513 x 1,513" in text
    assert "update from user (2,000 levels" in text and "nothing was fitted" in text
    assert not (out / "scale" / "results.json").exists()
    # validate prints the estimate and refuses the same way
    res = CliRunner().invoke(app, ["validate", str(spec), "--max-memory", "150MB", "--allow-path", str(tmp_path)])
    assert res.exit_code == 2
    assert "pre-flight (limit 150 MB, --max-memory):" in res.output and "crossed: ~" in res.output
    res = CliRunner().invoke(app, ["validate", str(spec), "--max-memory", "lots", "--allow-path", str(tmp_path)])
    assert res.exit_code == 2 and "give a size such as 2GB" in res.output


def test_estimate_beside_measured_peak_safe_and_close(tmp_path):
    """A medium model (150,000 rows; the fit's own memory dominates the interpreter's), run in
    a fresh process: results.json records the measured peak beside the estimate, which is on
    the safe side and close (1M rows: 962 MB estimated, 861-901 MB measured; 5M: 2,610 / 2,420)."""
    spec = write_spec(tmp_path, crossed_frame(150_000, 4_000, 800, 20))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(spec), "--out", str(out), "--jobs", "1",
                           "--no-cache", "--quiet", "--allow-path", str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    timing = json.loads((out / "scale" / "results.json").read_text())["run"]["timings"]["crossed"]
    peak, estimate = timing["peak_mb"], timing["memory_estimate_mb"]
    assert peak is not None and estimate is not None
    print("estimate", estimate, "peak", peak)
    assert estimate > preflight.BASE_MB + 50  # the fit, not only the interpreter, counts in this estimate
    assert 1.0 <= estimate / peak <= 1.35, (estimate, peak)


def test_fewer_parallel_fits_when_the_largest_estimates_exceed_the_limit():
    est = {name: preflight.Estimate(name, mb) for name, mb in (("a", 900.0), ("b", 700.0), ("c", 200.0))}
    assert preflight.jobs_within(est, 2, 2_000.0) == 2
    assert preflight.jobs_within(est, 3, 1_500.0) == 1  # 900 + 700 > 1,500
    assert preflight.jobs_within(est, 2, None) == 2
    assert preflight.refusals(est, 800.0, "x") == [est["a"].refusal(800.0, "x")]
    assert "exceeds --max-memory 800 MB (x); nothing was fitted" in est["a"].refusal(800.0, "x")
