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


# ---------------------------------------------------------------- hardening and choices

import yaml  # noqa: E402

from runner.spec.scaffold import literal, propose  # noqa: E402

EXPECTED_KEYS = ["name", "title", "data", "defaults", "models", "compare", "expect"]


def _frame_with(names: dict[str, list]) -> pd.DataFrame:
    return pd.DataFrame(names)


def _base(n: int = 60) -> dict[str, list]:
    return {
        "subject": [f"s{i // 6}" for i in range(n)],
        "dose": [float(i % 6) for i in range(n)],
        "outcome": [1.0 + 0.5 * (i % 6) + (i // 6) * 0.3 + ((i * 7) % 5) * 0.1 for i in range(n)],
    }


EVIL = [
    "x\nmodels: {}\nexpect: {best: pwned}\nname",  # new top-level keys after a newline
    "a: b",  # a key inside a value
    "c # comment",
    "'quoted\"",
    "::error::ci",
    "line\u2028sep\x85nel",  # YAML line breaks other than \n
    "- entry",
]


def _evil_frame(names: list[str]) -> pd.DataFrame:
    data = _base()
    for i, name in enumerate(names):  # numeric: candidates for fixed effects
        data[name] = [float((j * (i + 2)) % 7) for j in range(60)]
    return pd.DataFrame(data)


def test_column_names_with_line_breaks_cannot_inject_keys():
    """The emitter's output for hostile names: exactly the expected keys, formulas that parse."""
    from runner.formula import parse_formula
    from runner.spec.scaffold import scaffold_spec

    frame = _evil_frame(EVIL)
    frame["note\n::warning::x\nname: evil"] = ["t"] * 60
    text = scaffold_spec("evil", {"path": "evil.csv"}, frame)
    doc = yaml.safe_load(text)
    assert list(doc) == EXPECTED_KEYS
    assert doc["name"] == "evil" and doc["data"] == {"path": "evil.csv", "na": "common"}
    assert list(doc["models"]) == ["intercept", "slope"] and doc["expect"] == {"converged": "all"}
    assert not any(line.startswith("::") for line in text.splitlines())
    assert sum(line.startswith("name:") for line in text.splitlines()) == 1
    for m in doc["models"].values():
        parsed = parse_formula(m["formula"])  # backticked where not syntactic
        assert parsed is not None
    assert "`x\nmodels: {}\nexpect: {best: pwned}\nname`" in doc["models"]["intercept"]["formula"]


def test_hostile_but_loadable_names_give_a_spec_that_validates(tmp_path):
    names = ["a: b", "c # comment", "'quoted\"", "::error::ci", "- entry", "test score"]
    _evil_frame(names).to_csv(tmp_path / "evil.csv", index=False)
    spec = tmp_path / "evil.yaml"
    result = runner.invoke(app, ["init", str(spec), "--data", str(tmp_path / "evil.csv")])
    assert result.exit_code == 0, result.output
    text = spec.read_text()
    doc = yaml.safe_load(text)
    assert list(doc) == EXPECTED_KEYS and list(doc["models"]) == ["intercept", "slope"]
    loaded = load_spec(spec)
    assert loaded.models["intercept"].formula_text == "outcome ~ dose + `a: b` + `c # comment` + (1 | subject)"
    result = runner.invoke(app, ["validate", "-q", str(spec)])
    assert result.exit_code == 0, result.output


def test_a_line_break_in_a_data_column_name_is_exit_2_without_a_file(tmp_path):
    _evil_frame(["x\nname: evil"]).to_csv(tmp_path / "evil.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "e.yaml"), "--data", str(tmp_path / "evil.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "e.yaml").exists()


def test_response_group_and_integer_factor_choices():
    n = 96
    frame = pd.DataFrame({
        "Chick": [str(i // 12) for i in range(n)],  # 8 chicks, 12 rows each: the group
        "record_id": list(range(n)),  # a numeric id: never a fixed effect
        "Diet": [1 + (i // 12) % 4 for i in range(n)],  # 4 integer values: flagged
        "Time": [float(2 * (i % 12)) for i in range(n)],
        "weight": [40.0 + 8.5 * (i % 12) + 0.7 * (i // 12) for i in range(n)],  # named like an outcome
    })
    p = propose(frame)
    assert p.response == "weight" and p.groups == ["Chick"] and "record_id" not in p.fixed
    assert p.fixed == ["Diet", "Time"] and p.slope == "Time"  # not the maybe-factor
    assert "Diet has 4 integer values: a factor? use factor(Diet)" in p.notes
    assert "record_id looks like an identifier: not used as a fixed effect" in p.notes
    frame2 = frame.rename(columns={"weight": "w"})
    assert propose(frame2).response == "w"  # no outcome name: the first float non-id column
    assert propose(frame, response="Time", groups=["Diet"]).groups == ["Diet"]


def test_response_and_group_options_are_checked(tmp_path):
    pd.DataFrame(_base()).to_csv(tmp_path / "d.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "a.yaml"), "--data", str(tmp_path / "d.csv"),
                                 "--response", "outcme"])
    assert result.exit_code == 2 and "did you mean 'outcome'" in result.stderr
    assert not (tmp_path / "a.yaml").exists()
    result = runner.invoke(app, ["init", str(tmp_path / "a.yaml"), "--data", str(tmp_path / "d.csv"),
                                 "--response", "subject"])
    assert result.exit_code == 2 and "not numeric" in result.stderr
    result = runner.invoke(app, ["init", str(tmp_path / "a.yaml"), "--data", str(tmp_path / "d.csv"),
                                 "--group", "subjet"])
    assert result.exit_code == 2 and "did you mean 'subject'" in result.stderr
    result = runner.invoke(app, ["init", str(tmp_path / "b.yaml"), "--data", str(tmp_path / "d.csv"),
                                 "--response", "dose", "--group", "subject"])
    assert result.exit_code == 0, result.output
    assert load_spec(tmp_path / "b.yaml").models["intercept"].formula_text == "dose ~ outcome + (1 | subject)"


def test_literal_escapes_line_breaks():
    for name in EVIL:
        out = literal(name)
        assert not any(ch in out for ch in "\n\r\x85\u2028\u2029")
