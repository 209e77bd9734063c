"""Honest convergence: a model whose fit did not converge is said so on the terminal, in
the ranking and the summary, and gates the run (exit 1) under the spec's policy."""

from __future__ import annotations

import pytest

from run_helpers import run_quiet, write_spec
from runner.engines.lme import optimize as lme_optimize
from runner.engines.lme.convergence import ConvergenceCheck
from runner.run.console import summary_lines

SPEC = """
name: conv
data: {example: sleepstudy}
defaults: {method: ML}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slopes: {formula: "Reaction ~ Days + (Days|Subject)"}
"""


@pytest.fixture
def slopes_do_not_converge(monkeypatch):
    """The real convergence check, reporting failure for three-parameter theta (the slope model)."""
    real = lme_optimize.check_convergence

    def check(fun, theta, fval, lower, singular):
        out = real(fun, theta, fval, lower, singular)
        if len(theta) == 3:
            return ConvergenceCheck(False, 0.5, None, "max|grad| 0.5 above tolerance 0.002 (test)")
        return out

    monkeypatch.setattr(lme_optimize, "check_convergence", check)


def _run(tmp_path, expect: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = write_spec(tmp_path, "conv", SPEC + expect)
    return run_quiet(spec, tmp_path)


def test_default_policy_gates_on_every_model(tmp_path, slopes_do_not_converge):
    out = _run(tmp_path)
    assert out.exit_code == 1
    assert any("slopes did not converge (max|grad| 0.5" in e for e in out.errors)
    rec = out.record
    assert rec.models["slopes"].status == "ok" and rec.models["slopes"].converged is False
    rows = {r.model: r for g in rec.ranking for r in g.rows}
    assert rows["slopes"].converged is False and rows["intercept"].converged is True
    lines = summary_lines(rec)
    assert lines[0] == "conv: 2 of 2 models fitted, 1 did not converge"
    assert any("slopes (did not converge)" in line for line in lines)
    assert any(line.strip().startswith("slopes did not converge (max|grad| 0.5") for line in lines)


def test_listed_models_gate_only_themselves(tmp_path, slopes_do_not_converge):
    assert _run(tmp_path / "a", "expect: {converged: [intercept]}\n").exit_code == 0
    out = _run(tmp_path / "b", "expect: {converged: [slopes]}\n")
    assert out.exit_code == 1
    assert [e.passed for e in out.record.expectations] == [False]


def test_any_gates_nothing_but_still_reports(tmp_path, slopes_do_not_converge):
    out = _run(tmp_path, "expect: {converged: any}\n")
    assert out.exit_code == 0
    (e,) = out.record.expectations
    assert e.passed and "slopes" in e.detail


def test_best_model_that_did_not_converge_fails_best(tmp_path, slopes_do_not_converge):
    out = _run(tmp_path, "expect: {best: slopes, converged: any}\n")
    best = next(e for e in out.record.expectations if e.text.startswith("best"))
    assert not best.passed and "did not converge" in best.detail
    assert out.exit_code == 1


def test_converged_models_pass_unchanged(tmp_path):
    out = _run(tmp_path)
    assert out.exit_code == 0
    assert all(r.converged for g in out.record.ranking for r in g.rows)


def test_report_badges_say_did_not_converge(tmp_path, slopes_do_not_converge):
    from runner.report.views import status_of

    out = _run(tmp_path / "gate", "")
    assert status_of(out.record) == ("failed", "1 did not converge")
    out = _run(tmp_path / "any", "expect: {converged: any}\n")
    assert status_of(out.record) == ("ok", "ok, 1 did not converge (not gating)")
    html_out = run_quiet(write_spec(tmp_path / "any", "page", SPEC), tmp_path / "page", report=True)
    page = (html_out.results_path.parent / "index.html").read_text()
    assert "did not converge</span>" in page
