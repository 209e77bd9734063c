"""The inference: spec key through a run: defaults (Satterthwaite, Wald t), per-model
settings over defaults, refusals before fitting (exit 2), bootstrap p-values on tests."""

from __future__ import annotations

import json

import pytest

import runner.run.tasks as tasks
from run_helpers import run_quiet, write_spec

SPEC = """
name: inf
data: {example: sleepstudy}
defaults:
  inference: {level: 0.9}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slopes:
    formula: "Reaction ~ Days + (Days|Subject)"
    inference: {df: kenward-roger}
  plain:
    formula: "Reaction ~ Days + (Days||Subject)"
    inference: {df: none}
compare:
  tests: [[intercept, slopes]]
  bootstrap: {nsim: 25, seed: 4}
"""


def test_inference_settings_reach_the_record(tmp_path):
    out = run_quiet(write_spec(tmp_path, "inf", SPEC), tmp_path)
    assert out.exit_code == 0, out.errors
    data = json.loads(out.results_path.read_text())
    m = data["models"]
    assert m["intercept"]["p_method"] == "satterthwaite" and m["intercept"]["ci_method"] == "wald"
    assert m["slopes"]["p_method"] == "kenward-roger"
    days = m["slopes"]["fixed_effects"][1]
    assert days["df"] == pytest.approx(17.0, rel=1e-3)  # pbkrtest: 17
    assert days["std_error_adjusted"] == pytest.approx(1.54578964390598, rel=1e-3)
    from scipy import stats

    q = stats.t.ppf(0.95, days["df"])  # level 0.9 from defaults
    assert days["ci_high"] == pytest.approx(days["estimate"] + q * days["std_error_adjusted"], rel=1e-9)
    assert m["plain"]["p_method"] == "wald-z" and m["plain"]["fixed_effects"][1]["df"] is None
    assert [r["term"] for r in m["intercept"]["anova"]] == ["Days"]
    assert m["slopes"]["r2"]["marginal"] == pytest.approx(0.278651058161875, rel=1e-3)
    t = data["tests"][0]
    assert t["p_bootstrap_n"] is not None and t["p_bootstrap"] == pytest.approx(1 / (1 + t["p_bootstrap_n"]))
    again = run_quiet(write_spec(tmp_path, "inf", SPEC), tmp_path)
    assert json.loads(again.results_path.read_text())["tests"][0]["p_bootstrap"] == t["p_bootstrap"]


@pytest.mark.parametrize("body, message", [
    ("data: {example: sleepstudy}\nmodels:\n  m:\n    formula: \"Reaction ~ Days + (Days|Subject)\"\n"
     "    method: ML\n    inference: {df: kenward-roger}\n", "needs a REML fit"),
    ("data: {example: students}\nmodels:\n  m:\n    formula: \"test_score ~ age + (1|classroom)\"\n"
     "    inference: {df: kenward-roger}\n", "above 10,000 rows"),
    ("data: {example: sleepstudy}\ndefaults:\n  inference: {df: kenwardroger}\n"
     "models:\n  m: {formula: \"Reaction ~ Days + (1|Subject)\"}\n", "kenward-roger"),
])
def test_refusals_exit_2_before_fitting(tmp_path, monkeypatch, body, message):
    calls = []
    monkeypatch.setattr(tasks, "_fit", lambda *a: calls.append(a))
    out = run_quiet(write_spec(tmp_path, "bad", "name: bad\n" + body), tmp_path)
    assert out.exit_code == 2 and calls == []
    assert any(message in e for e in out.errors), out.errors


def test_settings_resolve_defaults_base_and_variant():
    from runner.inference.apply import InferenceSettings
    from runner.inference.settings import settings_for
    from runner.spec.models import Spec

    spec = Spec.model_validate({
        "data": {"example": "sleepstudy"},
        "defaults": {"inference": {"level": 0.9, "ci": "profile"}},
        "models": {"a": {"formula": "Reaction ~ Days + (1|Subject)",
                         "inference": {"df": "kenward-roger", "bootstrap": {"nsim": 50, "seed": 3}}},
                   "b": {"formula": "Reaction ~ Days + (Days|Subject)"}},
        "variants": {"a2": {"from": "a", "inference": {"df": "none"}}, "a3": {"from": "a2"}},
    })
    assert settings_for(spec, "b") == InferenceSettings(level=0.9, ci="profile")
    assert settings_for(spec, "a") == InferenceSettings(df="kenward-roger", ci="profile", level=0.9, nsim=50, seed=3)
    assert settings_for(spec, "a2").df == "none" and settings_for(spec, "a2").nsim == 50
    assert settings_for(spec, "a3") == settings_for(spec, "a2")
