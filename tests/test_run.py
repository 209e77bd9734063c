"""`mixspec run` end to end on real engine fits of the example data.

Reference numbers come from tests/reference (lme4 1.1-31); data from the package's
examples. Students fits take about a second each, so those tests are few and marked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import runner.run.tasks as tasks
from runner.run.api import run_spec
from runner.run.commands import run_command
from runner.run.options import RunOptions
from run_helpers import run_quiet, write_spec

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference"
LRT = json.loads((REF / "lrt.json").read_text())


_write, _run = write_spec, run_quiet


def _until_run(text: str) -> str:
    """results.json up to its `run` section (the part that must be byte-identical)."""
    head, sep, _ = text.partition('\n  "run": ')
    assert sep, "results.json has a run section at the end"
    return head


# ---------------------------------------------------------------- reference numbers


def test_sleepstudy_lrts_match_lme4_anova_via_ml_refits(tmp_path):
    spec = _write(tmp_path, "sleep", """
name: sleep
data: {example: sleepstudy}
defaults: {method: REML}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
  zerocorr: {formula: "Reaction ~ Days + (Days||Subject)"}
compare:
  tests: [[intercept, slope], [zerocorr, slope]]
""")
    out = _run(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    tests = {(t.small, t.large): t for t in out.record.tests}
    for (small, large), cid in {("intercept", "slope"): "sleepstudy_slope", ("zerocorr", "slope"): "sleepstudy_corr"}.items():
        t, ref = tests[(small, large)], LRT[cid]
        assert t.refit_ml and t.method == "ML"
        assert t.chisq == pytest.approx(ref["chisq"], abs=1e-3)
        assert t.df == ref["df"] and t.npar == ref["npar"]
        assert t.p_value == pytest.approx(ref["p_value"], rel=1e-3)
        assert t.loglik == pytest.approx(ref["loglik_ml"], abs=1e-3)
    slope = tests[("intercept", "slope")]
    x = slope.chisq
    from scipy.stats import chi2

    assert slope.p_value_boundary == pytest.approx(0.5 * chi2.sf(x, 1) + 0.5 * chi2.sf(x, 2), rel=1e-9)
    assert tests[("zerocorr", "slope")].p_value_boundary is None
    assert tests[("zerocorr", "slope")].boundary_note.startswith("correlation_only")
    # each REML model keeps its own REML numbers and carries the ML refit used for ranking
    m = out.record.models["slope"]
    ref = json.loads((REF / "sleepstudy_reml.json").read_text())
    assert m.method == "REML" and m.aic == pytest.approx(ref["aic"], abs=1e-3)
    assert m.ml_refit.aic == pytest.approx(LRT["sleepstudy_slope"]["aic"][1], abs=1e-3)
    (group,) = out.record.ranking
    assert {r.fit_used for r in group.rows} == {"ml_refit"}
    assert [r.model for r in group.rows] == ["zerocorr", "slope", "intercept"]  # ML AIC 1762.0, 1763.9, 1802.1


def _cases() -> list[dict[str, str]]:
    with open(REF / "cases.tsv", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


SMALL_DATASETS = ["sleepstudy", "Penicillin", "Pastes", "Dyestuff", "Dyestuff2"]


@pytest.mark.parametrize("dataset", SMALL_DATASETS)
def test_aic_bic_of_reference_cases_through_the_record(tmp_path, dataset):
    cases = [c for c in _cases() if c["dataset"] == dataset]
    models = "".join(f"  {c['id']}: {{formula: \"{c['formula']}\", method: {c['method']}}}\n" for c in cases)
    spec = _write(tmp_path, dataset.lower(), f"name: {dataset.lower()}\ndata: {{example: {dataset}}}\nmodels:\n{models}")
    out = _run(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    saved = json.loads(out.results_path.read_text())
    for c in cases:
        ref = json.loads((REF / f"{c['id']}.json").read_text())
        m = saved["models"][c["id"]]
        assert m["status"] == "ok" and m["method"] == ref["method"]
        for key in ("aic", "bic", "loglik", "objective"):
            assert m[key] == pytest.approx(ref[key], abs=2e-3), (c["id"], key)
        assert m["npar"] == ref["df"] and m["nobs"] == ref["nobs"]
        assert m["singular"] == ref["singular"]


@pytest.mark.slow
def test_students_spec_ranks_and_tests_intercepts_vs_slopes(tmp_path):
    spec = ROOT / "specs" / "students.yaml"
    if not spec.exists():
        pytest.skip("specs/students.yaml not written yet")
    out = run_spec(spec, RunOptions.of(tmp_path / "out", jobs=2, quiet=True, use_cache=False, report=False))
    rec = out.record
    assert set(rec.models) >= {"intercepts", "slopes"}
    assert all(m.status == "ok" for m in rec.models.values())
    (group,) = rec.ranking
    assert group.rows[0].model == "student" and group.rows[0].best
    assert all(r.method == "ML" for r in group.rows)
    t = next(t for t in rec.tests if (t.small, t.large) == ("intercepts", "slopes"))
    ref = LRT["students_slope"]
    assert t.chisq == pytest.approx(ref["chisq"], abs=1e-3) and t.df == ref["df"]
    assert t.p_value == pytest.approx(ref["p_value"], rel=1e-3)
    assert t.p_value_boundary is not None and t.p_value_boundary < t.p_value
    t = next(t for t in rec.tests if (t.small, t.large) == ("no_sex", "intercepts"))
    assert t.chisq == pytest.approx(LRT["students_sex"]["chisq"], abs=1e-3)
    assert t.boundary_note.startswith("interior")
    assert out.exit_code == 0, out.errors


# ---------------------------------------------------------------- failures and exit codes


DYE = """
name: dye
data: {example: Dyestuff}
models:
  batch: {formula: "Yield ~ 1 + (1|Batch)"}
  batch_ml: {formula: "Yield ~ 1 + (1|Batch)", method: ML}
expect:
  converged: all
"""


def test_one_failing_model_keeps_the_others_and_exits_1(tmp_path, monkeypatch):
    real = tasks._fit

    def fit_or_fail(design, method, engine, formula_text):
        if design.blocks[0].ncols == 2:  # the slope model's engine call breaks
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        return real(design, method, engine, formula_text)

    monkeypatch.setattr(tasks, "_fit", fit_or_fail)
    spec = _write(tmp_path, "sleepfail", """
name: sleepfail
data: {example: sleepstudy}
defaults: {method: ML}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
compare: {tests: [[intercept, slope]]}
expect: {converged: all}
""")
    out = _run(spec, tmp_path)
    assert out.exit_code == 1
    saved = json.loads(out.results_path.read_text())
    assert saved["models"]["slope"]["status"] == "failed"
    assert saved["models"]["slope"]["error"] == "LinAlgError: Matrix is not positive definite"
    ok = saved["models"]["intercept"]
    ref = json.loads((REF / "sleepstudy_intercept_ml.json").read_text())
    assert ok["status"] == "ok" and ok["aic"] == pytest.approx(ref["aic"], abs=1e-3)
    assert "failed to fit): slope" in saved["ranking"][0]["note"]
    assert [r["model"] for r in saved["ranking"][0]["rows"]] == ["intercept"]
    assert saved["tests"] == [] and any("test [intercept, slope] not computed" in w for w in saved["warnings"])
    assert saved["expectations"][0]["passed"] is False
    assert any(e.startswith("slope: LinAlgError") for e in out.errors)


def test_invalid_spec_and_non_nested_pair_exit_2_before_fitting(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(tasks, "_fit", lambda *a: calls.append(a))
    bad = _write(tmp_path, "bad", "name: bad\ndata: {example: Dyestuff}\nmodels:\n  m: {formula: \"Yield ~ nothere + (1|Batch)\"}\n")
    out = _run(bad, tmp_path)
    assert out.exit_code == 2 and out.record is None and any("nothere" in e for e in out.errors)
    pair = _write(tmp_path, "pair", """
name: pair
data: {example: sleepstudy}
models:
  days: {formula: "Reaction ~ Days + (1|Subject)"}
  days2: {formula: "Reaction ~ I(Days**2) + (Days|Subject)"}
compare: {tests: [[days, days2]]}
""")
    out = _run(pair, tmp_path)
    assert out.exit_code == 2
    assert any("days is not nested in days2" in e and "span" in e for e in out.errors), out.errors
    assert calls == [] and not (tmp_path / "out").exists()


def test_rerun_is_byte_identical_outside_run_and_json_flag(tmp_path, capsys, monkeypatch):
    spec = _write(tmp_path, "dye", DYE)
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    a = _run(spec, tmp_path)
    text_a = a.results_path.read_text()
    b = _run(spec, tmp_path, executor="processes", jobs=2)
    text_b = b.results_path.read_text()
    assert a.exit_code == b.exit_code == 0
    assert _until_run(text_a) == _until_run(text_b)
    assert json.loads(text_b)["run"]["executor"] == "processes"
    assert "NaN" not in text_a and "Infinity" not in text_a
    assert (a.results_path.parent / "summary.md").read_text() in summary.read_text()
    assert (a.results_path.parent / "fits" / "batch.parquet").exists()
    import pandas as pd

    ranef = pd.read_parquet(a.results_path.parent / "fits" / "batch_ranef.parquet")
    assert list(ranef.columns) == ["id", "group", "level", "column", "mode", "cond_sd"] and len(ranef) == 6
    capsys.readouterr()
    code = run_command([spec], RunOptions.of(tmp_path / "out", jobs=1, use_cache=False), json_out=True)
    printed = capsys.readouterr().out
    assert code == 0 and _until_run(printed) == _until_run(text_a)


def test_terminal_summary_gives_ranking_tests_and_failures(tmp_path, capsys):
    """`mixspec run` prints the answer (lme4's anova numbers) and what failed, on stderr."""
    spec = _write(tmp_path, "sleep", """
name: sleep
data: {example: sleepstudy}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
compare:
  tests: [[intercept, slope]]
expect:
  best: intercept
""")
    code = run_command([spec], RunOptions.of(tmp_path / "out", jobs=1, use_cache=False))
    err = capsys.readouterr().err
    assert code == 1
    ref = LRT["sleepstudy_slope"]
    assert f"LRT intercept vs slope: chi2 {ref['chisq']:.3f}, df 2, p < 0.001" in err
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("model"))
    assert lines[first + 1].split()[:2] == ["*", "slope"]  # best by AIC, as lme4's anova() ranks
    assert "expectation FAILED best: intercept" in err and "expectations: 0 of 1 pass" in err
    assert f"{tmp_path / 'out' / 'sleep' / 'results.json'} (FAILED)" in err
