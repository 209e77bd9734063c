"""`verify: statsmodels` and `mixspec run --verify`, end to end through results.json and the report.

The numbers the verify record holds are engine-to-engine differences; each engine is
checked against lme4 itself in tests/test_lme_reference.py and tests/test_statsmodels.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from runner.design.build import build_design
from runner.engines import fit_design
from runner.engines.statsmodels.verify import VERIFY_TOL, relative_differences, verify_fit
from runner.formula import parse_formula
from run_helpers import run_quiet, write_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "runner" / "data" / "examples"


_write, _run = write_spec, run_quiet


SLEEP_SPEC = """
name: sleepverify
data: {path: sleep_period.csv}
defaults: {method: REML, verify: statsmodels}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slopes: {formula: "Reaction ~ Days + (Days|Subject)"}
  zerocorr: {formula: "Reaction ~ Days + (Days||Subject)", method: ML}
  crossed_slope: {formula: "Reaction ~ Days + (Days|Subject) + (1|period)"}
"""


def test_spec_default_verify_records_small_differences_and_inexpressible(tmp_path: Path) -> None:
    df = pd.read_csv(EXAMPLES / "sleepstudy.csv")
    df["period"] = ["early" if d < 5 else "late" for d in df["Days"]]  # crossed with Subject
    df.to_csv(tmp_path / "sleep_period.csv", index=False)
    out = _run(_write(tmp_path, "sleepverify", SLEEP_SPEC), tmp_path, report=True)
    assert out.exit_code == 0, out.errors
    data = json.loads(out.results_path.read_text())
    models = data["models"]
    for name in ("intercept", "slopes", "zerocorr"):
        m = models[name]
        assert m["status"] == "ok" and m["engine"] == "lme"
        v = m["verify"]
        assert v["engine"] == "statsmodels" and v["status"] == "ok"
        assert set(v["max_rel_diff"]) == {"objective", "fixed_effects", "sds"}
        assert v["max_rel_diff"]["objective"] < 1e-8
        assert v["max_rel_diff"]["fixed_effects"] < 1e-6
        assert v["max_rel_diff"]["sds"] < 1e-4
        assert v["flagged"] is False
        assert "agrees" in v["message"]
    # MixedLM cannot say it: recorded as such, and the model itself is fine
    m = models["crossed_slope"]
    assert m["status"] == "ok" and m["error"] is None
    v = m["verify"]
    assert v["status"] == "inexpressible" and v["flagged"] is False and v["max_rel_diff"] == {}
    assert "(Days | Subject)" in v["message"] and "crossed" in v["message"] and "'lme'" in v["message"]
    assert not any("crossed_slope" in e for e in out.errors)
    html = (out.results_path.parent / "index.html").read_text()
    assert html.count("verify (statsmodels)") == 4
    assert "inexpressible — not verified: MixedLM cannot express" in html
    assert "verification with statsmodels differs" not in html


def test_broken_cross_check_is_recorded_and_the_fit_stands(tmp_path: Path, monkeypatch) -> None:
    import runner.run.tasks as tasks

    def boom(design, method, fit):
        raise RuntimeError("second engine exploded")

    monkeypatch.setattr(tasks, "_verify", boom)
    spec = _write(tmp_path, "broken", """
name: broken
data: {example: Dyestuff}
defaults: {verify: statsmodels}
models:
  m: {formula: "Yield ~ 1 + (1|Batch)"}
""")
    out = _run(spec, tmp_path)
    m = out.record.models["m"]
    assert m.status == "ok" and m.objective is not None
    assert m.verify.status == "failed" and m.verify.message == "RuntimeError: second engine exploded"


def test_verify_per_model_and_off_by_default(tmp_path: Path) -> None:
    spec = _write(tmp_path, "permodel", """
name: permodel
data: {example: Dyestuff}
models:
  plain: {formula: "Yield ~ 1 + (1|Batch)"}
  checked: {formula: "Yield ~ 1 + (1|Batch)", method: ML, verify: statsmodels}
""")
    out = _run(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    assert out.record.models["plain"].verify is None
    v = out.record.models["checked"].verify
    assert v is not None and v.status == "ok" and not v.flagged
    assert v.max_rel_diff["objective"] < 1e-8


def test_statsmodels_model_is_verified_against_lme(tmp_path: Path) -> None:
    spec = _write(tmp_path, "smfirst", """
name: smfirst
data: {example: Penicillin}
defaults: {engine: statsmodels, verify: statsmodels}
models:
  crossed: {formula: "diameter ~ 1 + (1|plate) + (1|sample)"}
""")
    out = _run(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    m = out.record.models["crossed"]
    assert m.engine == "statsmodels"
    assert m.verify.engine == "lme" and m.verify.status == "ok" and not m.verify.flagged


def test_difference_above_tolerance_is_flagged_and_reported(tmp_path: Path) -> None:
    """An uncorrelated slope on a 3-level cohort under ML: MixedLM's gradient optimizers stop
    short of the optimum the native engine (and lme4) reach. The verify record flags it; the
    report says so."""
    df = pd.read_csv(EXAMPLES / "sleepstudy.csv")
    subjects = sorted(df["Subject"].unique())
    df["cohort"] = df["Subject"].map({s: f"c{i % 3}" for i, s in enumerate(subjects)})
    df.to_csv(tmp_path / "sleep_cohort.csv", index=False)
    spec = _write(tmp_path, "flagged", """
name: flagged
data: {path: sleep_cohort.csv}
defaults: {verify: statsmodels, method: ML}
models:
  cohort: {formula: "Reaction ~ Days + (Days||cohort) + (1|Subject)"}
""")
    out = _run(spec, tmp_path, report=True)
    v = out.record.models["cohort"].verify
    assert v.status == "ok" and v.flagged
    assert v.max_rel_diff["sds"] > VERIFY_TOL
    assert "differs" in v.message and "SDs" in v.message and "did not converge" in v.message
    html = (out.results_path.parent / "index.html").read_text()
    assert "verify (statsmodels)" in html
    assert "verification with statsmodels differs" in html


def test_cli_verify_flag_and_report(tmp_path: Path) -> None:
    spec = _write(tmp_path, "cli", """
name: cli
data: {example: sleepstudy}
models:
  slopes: {formula: "Reaction ~ Days + (Days|Subject)"}
""")
    out = tmp_path / "reports"
    from typer.testing import CliRunner

    from runner.cli import app

    result = CliRunner().invoke(app, ["run", str(spec), "--out", str(out), "--no-cache", "--verify", "--quiet"])
    assert result.exit_code == 0, result.stderr
    data = json.loads((out / "cli" / "results.json").read_text())
    v = data["models"]["slopes"]["verify"]
    assert v["engine"] == "statsmodels" and v["status"] == "ok" and v["flagged"] is False
    assert max(v["max_rel_diff"].values()) < 1e-4
    html = (out / "cli" / "index.html").read_text()
    assert "verify (statsmodels)" in html and "ok: max rel. diff" in html


def test_zero_sd_against_boundary_sd_is_not_a_difference() -> None:
    """Dyestuff2: lme4 and the native engine put the Batch SD at exactly 0, MixedLM at 5e-5 (of 3.7)."""
    df = pd.read_csv(EXAMPLES / "Dyestuff2.csv")
    design = build_design(parse_formula("Yield ~ 1 + (1|Batch)"), df)
    fit = fit_design(design, "REML", engine="lme")
    v = verify_fit(design, "REML", fit)
    assert v.status == "ok" and not v.flagged
    assert v.max_rel_diff["sds"] < 1e-4


def test_mismatched_fits_are_not_compared() -> None:
    df = pd.read_csv(EXAMPLES / "Dyestuff.csv")
    a = fit_design(build_design(parse_formula("Yield ~ 1 + (1|Batch)"), df), "REML")
    df["x"] = range(len(df))
    b = fit_design(build_design(parse_formula("Yield ~ x + (1|Batch)"), df), "REML")
    with pytest.raises(ValueError, match="fixed effects differ"):
        relative_differences(a, b)
