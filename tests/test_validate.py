"""validate_spec: spec + data + every model checked, all problems located in the spec file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pytest

from runner.data.errors import DataError
from runner.spec.errors import SpecError
from runner.validate import validate_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.mark.parametrize("name,models,nobs,groups", [
    ("sleepstudy", ["intercept", "slopes", "uncorrelated"], 180, {"Subject": 18}),
    ("penicillin", ["crossed", "plate_only"], 144, {"plate": 24, "sample": 6}),
    ("pastes", ["nested", "no_batch"], 60, {"cask:batch": 30, "batch": 10}),
])
def test_example_specs_validate(name, models, nobs, groups):
    v = validate_spec(SPECS / f"{name}.yaml")
    assert list(v.summaries) == models
    first = v.summaries[models[0]]
    assert first.nobs == nobs and first.groups == groups
    assert v.warnings == []
    assert v.data.rows == v.data.rows_used == nobs


@pytest.mark.slow
def test_students_spec_validates():
    v = validate_spec(SPECS / "students.yaml")
    s = v.summaries
    assert s["student"].groups == {"classroom": 192, "school": 48, "province": 8, "student_id": 3840}
    assert s["slopes"].formula == "test_score ~ age + sex + (age | classroom) + (1 | school) + (1 | province)"
    assert all(x.nobs == 11520 for x in s.values())
    assert v.data.factors["sex"].reference == "F"
    assert v.warnings == []


def test_data_errors_are_located_in_the_spec(tmp_path):
    pd.DataFrame({"y": [1.0, 2, 3, 4, 5, 6], "x": [1.0, 2, 3, 4, 5, 6], "g": list("aabbcc")}).to_csv(
        tmp_path / "d.csv", index=False)
    path = write(tmp_path, """
        data:
          path: d.csv
          categorical: {grp: {reference: a}}
        models:
          m1:
            formula: y ~ xx + (1|g)
          m2: {formula: "y ~ x + (1|g)", weights: wt}
        """)
    with pytest.raises(DataError) as info:
        validate_spec(path)
    lines = sorted(str(i) for i in info.value.issues)
    assert f"{path}:3:17: data.categorical.grp: column 'grp' not in the data (columns: y, x, g)" in lines
    # the column name inside the formula: `    formula: ` is 13 characters, 'xx' at index 4
    assert f"{path}:6:18: models.m1.formula: column 'xx' not in the data; did you mean 'x'?" in lines
    assert any(line.startswith(f"{path}:7:43: models.m2.weights: column 'wt' not in the data") for line in lines)


def test_crossed_trap_warning_is_located(tmp_path):
    path = write(tmp_path, """
        data: {example: pastes}
        models:
          trap:
            formula: strength ~ 1 + (1|batch) + (1|cask)
        """)
    v = validate_spec(path)
    (w,) = v.warnings
    assert str(w).startswith(f"{path}:4:14: models.trap.formula: warning: labels of 'cask' repeat")


def test_filter_error_located(tmp_path):
    path = write(tmp_path, """
        data:
          example: sleepstudy
          filter: "Dayz > 2"
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)"}
        """)
    with pytest.raises(DataError) as info:
        validate_spec(path)
    (issue,) = info.value.issues
    assert str(issue) == f"{path}:3:12: data.filter: unknown column 'Dayz' in filter; did you mean 'Days'?"


def test_filter_and_na_counts(tmp_path):
    df = pd.read_csv(SPECS.parent / "runner" / "data" / "examples" / "sleepstudy.csv")
    df.loc[[0, 5], "Reaction"] = None
    df.to_parquet(tmp_path / "sleep.parquet")
    path = write(tmp_path, """
        data:
          path: sleep.parquet
          filter: Days >= 2
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)"}
        """)
    v = validate_spec(path)
    assert v.data.dropped == {"filter": 36, "missing": 1}  # row 0 has Days 0 (filtered), row 5 has Days 5
    assert v.summaries["m"].nobs == 143


def test_spec_error_stops_before_data(tmp_path):
    path = write(tmp_path, """
        data: {example: nosuch}
        models:
          m: {formul: "y ~ x"}
        """)
    with pytest.raises(SpecError) as info:
        validate_spec(path)
    assert [i.path for i in info.value.issues] == ["models.m.formul"]


def test_unknown_example_located(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudi}
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)"}
        """)
    with pytest.raises(DataError) as info:
        validate_spec(path)
    assert str(info.value.issues[0]).startswith(f"{path}:1:17: data.example: unknown example 'sleepstudi'")


def test_spec_errors_and_column_errors_are_listed_together(tmp_path):
    """An unknown key in one model must not hide a misspelt column in another."""
    path = write(tmp_path, """
        data: {example: sleepstudy}
        models:
          m1:
            formula: Reaction ~ Dayz + (Days | Subjekt)
          m2:
            formla: Reaction ~ Days + (1|Subject)
        """)
    with pytest.raises(SpecError) as info:
        validate_spec(path)
    assert [str(i) for i in info.value.issues] == [
        f"{path}:4:25: models.m1.formula: column 'Dayz' not in the data; did you mean 'Days'?",
        f"{path}:4:40: models.m1.formula: column 'Subjekt' not in the data; did you mean 'Subject'?",
        f"{path}:6:5: models.m2.formla: unknown key; did you mean 'formula'?",
    ]


def test_invalid_data_section_reports_only_the_spec_errors(tmp_path):
    path = write(tmp_path, """
        data: {exampel: sleepstudy}
        models:
          m1: {formula: "Reaction ~ Dayz + (1 | Subject)"}
        """)
    with pytest.raises(SpecError) as info:
        validate_spec(path)
    (issue,) = info.value.issues
    assert "data.exampel: unknown key; did you mean 'example'?" in str(issue)


def test_every_data_column_and_design_error_in_one_round(tmp_path):
    """A bad reference level, a misspelt column, a text response, a one-level factor, text
    weights and an unknown function, each in its own place: all six in one validate."""
    d = pd.read_csv(SPECS.parent / "runner" / "data" / "examples" / "sleepstudy.csv")
    d["txt"] = ["even", "odd"] * 90
    d["one"] = "x"
    d.to_csv(tmp_path / "s.csv", index=False)
    path = write(tmp_path, """
        data:
          path: s.csv
          categorical: {txt: {reference: od}}
        models:
          a: {formula: "Reaction ~ Dayz + (1|Subject)"}
          b: {formula: "txt ~ Days + (1|Subject)"}
          c: {formula: "Reaction ~ Days + (1|one)"}
          d: {formula: "Reaction ~ Days + (1|Subject)", weights: txt}
          e: {formula: "Reaction ~ foo(Days) + (1|Subject)"}
        """)
    with pytest.raises((DataError, SpecError)) as info:  # foo() is now refused when the formula is parsed
        validate_spec(path)
    got = [(i.line, i.path) for i in info.value.errors]
    assert got == [(3, "data.categorical.txt.reference"), (5, "models.a.formula"), (6, "models.b.formula"),
                   (7, "models.c.formula"), (8, "models.d.weights"), (9, "models.e.formula")]
    messages = [i.message for i in info.value.errors]
    assert "did you mean 'odd'?" in messages[0] and "did you mean 'Days'?" in messages[1]
    assert "not numeric" in messages[2] and "1 level" in messages[3] and "foo(Days)" in messages[5]


def test_validate_runs_the_runs_checks_test_pairs_and_expectation_terms(tmp_path):
    """What `mixspec run` would reject (exit 2), `mixspec validate` rejects too, in one round."""
    from typer.testing import CliRunner

    from runner.cli import app

    path = write(tmp_path, """
        data: {example: sleepstudy}
        models:
          d: {formula: "Reaction ~ Days + (Days|Subject)"}
          e: {formula: "Reaction ~ Days + (1|Subject)"}
        compare:
          tests: [[d, e]]
        expect:
          fixed: ["Dayz > 0"]
        """)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:6:") and "d is not nested in e" in lines[0]
    assert lines[1].startswith(f"{path}:8:") and "no fixed effect 'Dayz' in any model; did you mean 'Days'?" in lines[1]
