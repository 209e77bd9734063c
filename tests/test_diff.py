"""`mixspec diff`: changes between two results.json records are found, and only those."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from report_samples import sleepstudy_results
from typer.testing import CliRunner

from runner.cli import app
from runner.run.diff import diff_files, diff_results


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


def test_changes_to_and_from_infinity_and_nan():
    old = _record()
    cases = [(-100.0, -math.inf, True), (-math.inf, -100.0, True), (math.inf, -math.inf, True),
             (math.inf, math.inf, False), (math.nan, math.nan, False), (math.nan, -100.0, True),
             (-100.0, math.nan, True), (math.nan, math.inf, True), (None, math.nan, True)]
    for before, after, changed in cases:
        a, b = copy.deepcopy(old), copy.deepcopy(old)
        a["models"]["a"]["loglik"], b["models"]["a"]["loglik"] = before, after
        rep = diff_results(a, b)
        assert rep.changed is changed, (before, after, rep.changes)
        if changed:
            assert rep.changes == [f"a: loglik: {before!r} -> {after!r}"]


def _results(tmp_path: Path, name: str) -> tuple[Path, dict]:
    path = sleepstudy_results(tmp_path / name)
    return path, json.loads(path.read_text())


def test_diff_files_and_command_exit_codes(tmp_path):
    old_path, old = _results(tmp_path, "old")
    new = copy.deepcopy(old)
    new["tests"][0]["chisq"] = 3.0
    new["models"]["slopes"]["loglik"] = float("-inf")  # written by another tool as -Infinity
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "same.json").write_text(json.dumps(old))
    assert "-Infinity" in (tmp_path / "new.json").read_text()
    assert diff_files(old_path, tmp_path / "new.json").changes == [
        "slopes: loglik: -871.814135979976 -> -inf",
        f"test uncorrelated vs slopes chisq: {old['tests'][0]['chisq']!r} -> 3.0"]
    cli = CliRunner()
    assert cli.invoke(app, ["diff", str(old_path), str(tmp_path / "same.json")]).exit_code == 0
    changed = cli.invoke(app, ["diff", str(old_path), str(tmp_path / "new.json")])
    assert changed.exit_code == 1 and "chisq" in changed.stdout
    assert cli.invoke(app, ["diff", str(old_path), str(tmp_path / "missing.json")]).exit_code == 2


@pytest.mark.parametrize("name,text,message", [
    ("deep", "[" * 100_000 + "]" * 100_000, "deep.json: not a results.json: nested more than 64 levels deep"),
    ("deep_object", '{"models": ' + '{"a": ' * 200 + "1" + "}" * 201,
     "deep_object.json: not a results.json: nested more than 64 levels deep"),
    ("huge", '{"models": {}, "schema_version": ' + "1" + "0" * 400 + "}",
     "huge.json: not a results.json: an integer of 401 digits (results.json has none above 64 bits)"),
    ("garbage", "{not json", "garbage.json: not a results.json: Expecting property name enclosed in double quotes"),
    ("binary", b"\xff\xfe{}", "binary.json: not a results.json: not UTF-8 text"),
])
def test_hostile_files_exit_2_without_a_traceback(tmp_path, name, text, message):
    good, _ = _results(tmp_path, "good")
    bad = tmp_path / f"{name}.json"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    for args in ([str(good), str(bad)], [str(bad), str(good)]):
        result = CliRunner().invoke(app, ["diff", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"mixspec diff: {tmp_path}/{message}")
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_both_files_are_checked_against_the_results_schema(tmp_path):
    good, data = _results(tmp_path, "good")
    data["models"]["slopes"]["status"] = "maybe"
    data["models"]["intercept"]["npar"] = "four"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    for args in ([good, bad], [bad, good]):
        result = CliRunner().invoke(app, ["diff", *map(str, args)])
        assert result.exit_code == 2
        assert result.stderr.startswith(f"mixspec diff: {bad}: not a valid results.json: models.")
        assert "(and 1 more)" in result.stderr
    minimal = tmp_path / "minimal.json"  # a dict with models but nothing else a record needs
    minimal.write_text(json.dumps(_record()))
    result = CliRunner().invoke(app, ["diff", str(good), str(minimal)])
    assert result.exit_code == 2 and "not a valid results.json" in result.stderr
