"""`mixspec diff`: changes between two results.json records are found, and only those."""

from __future__ import annotations

import copy
import json

from runner.run.diff import diff_files, diff_results
from runner.run.__main__ import main as run_main


def _record() -> dict:
    fe = lambda t, e: {"term": t, "lme4_name": t, "estimate": e, "std_error": 1.0}  # noqa: E731
    model = lambda ll: {  # noqa: E731
        "status": "ok", "formula": "y ~ x + (1|g)", "engine": "lme", "method": "REML", "nobs": 100, "npar": 4,
        "theta": [0.5], "loglik": ll, "objective": -2 * ll, "aic": -2 * ll + 8, "bic": -2 * ll + 18, "sigma": 2.0,
        "fixed_effects": [fe("Intercept", 1.0), fe("x", 0.25)],
        "random_effects": [{"id": "g", "group": "g", "term": "(Intercept)", "variance": 1.0, "sd": 1.0},
                           {"id": "Residual", "group": "Residual", "term": "", "variance": 4.0, "sd": 2.0}],
        "converged": True, "singular": False,
    }
    return {
        "schema_version": 1, "data": {"sha256": "abc"},
        "models": {"a": model(-100.0), "b": model(-99.0)},
        "ranking": [{"models": ["a", "b"], "rows": [{"model": "b", "criterion": "AIC", "method": "ML", "delta": 0.0},
                                                    {"model": "a", "criterion": "AIC", "method": "ML", "delta": 2.0}]}],
        "tests": [{"small": "a", "large": "b", "chisq": 2.0, "df": 1, "p_value": 0.157, "p_value_boundary": None}],
        "expectations": [{"text": "best: b", "passed": True, "detail": ""}],
        "run": {"started": "2026-01-01", "timings": {"a": {"fit_seconds": 1.0, "cached": False}}},
    }


def test_identical_records_and_timings_do_not_count():
    old = _record()
    new = copy.deepcopy(old)
    new["run"] = {"started": "2027-01-01", "timings": {"a": {"fit_seconds": 9.0, "cached": True}}}
    new["models"]["a"]["fixed_effects"][1]["estimate"] *= 1 + 1e-9  # below rtol
    rep = diff_results(old, new)
    assert not rep.changed and rep.exit_code == 0 and rep.text() == "no changes\n"


def test_changed_estimate_sd_status_ranking_and_models():
    old = _record()
    new = copy.deepcopy(old)
    new["models"]["a"]["fixed_effects"][1]["estimate"] = 0.26
    new["models"]["b"]["random_effects"][0]["sd"] = 1.1
    rep = diff_results(old, new)
    assert rep.exit_code == 1
    assert "a: x estimate: 0.25 -> 0.26" in rep.changes
    assert any(c.startswith("b: g (Intercept) sd: 1.0 -> 1.1") for c in rep.changes)
    assert len(rep.changes) == 2
    # a looser tolerance hides the 4% move but not the 10% one
    assert len(diff_results(old, new, rtol=0.05).changes) == 1

    new = copy.deepcopy(old)
    new["models"]["b"] = {**new["models"]["b"], "status": "failed", "error": "LinAlgError: boom"}
    del new["models"]["a"]
    new["models"]["c"] = old["models"]["a"]
    new["ranking"][0]["rows"].reverse()
    new["expectations"][0]["passed"] = False
    rep = diff_results(old, new)
    assert "model a removed" in rep.changes and "model c added" in rep.changes
    assert "b: status ok -> failed (LinAlgError: boom)" in rep.changes
    assert any(c.startswith("ranking order:") for c in rep.changes)
    assert "expectation 'best: b': pass -> fail" in rep.changes


def test_diff_files_and_command_exit_codes(tmp_path, capsys):
    old = _record()
    new = copy.deepcopy(old)
    new["tests"][0]["chisq"] = 3.0
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "same.json").write_text(json.dumps(old))
    assert diff_files(tmp_path / "old.json", tmp_path / "new.json").changes == ["test a vs b chisq: 2.0 -> 3.0"]
    assert run_main(["diff", str(tmp_path / "old.json"), str(tmp_path / "same.json")]) == 0
    assert run_main(["diff", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    assert "chisq" in capsys.readouterr().out
    assert run_main(["diff", str(tmp_path / "old.json"), str(tmp_path / "missing.json")]) == 2
