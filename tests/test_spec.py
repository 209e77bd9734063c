"""Spec loading: schema, located errors (line:col, dotted path, did-you-mean), variants."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner.spec.errors import SpecError
from runner.spec.load import load_spec
from runner.spec.models import Spec, check_safe_name, safe_name

SPECS = Path(__file__).resolve().parent.parent / "specs"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [str(i) for i in info.value.issues]


GOOD = """
data:
  example: sleepstudy
models:
  intercept:
    formula: Reaction ~ Days + (1|Subject)
  slopes:
    formula: Reaction ~ Days + (Days|Subject)
"""


def test_students_spec_resolves_models_and_variants():
    loaded = load_spec(SPECS / "students.yaml")
    assert loaded.name == "students"
    assert list(loaded.models) == ["intercepts", "slopes", "slopes_diag", "no_sex", "student"]
    assert loaded.models["no_sex"].formula.fixed_terms == ("age",)
    assert loaded.models["no_sex"].source == "variant of intercepts"
    student = loaded.models["student"]
    assert [t.group_name for t in student.formula.random][-1] == "student_id"
    assert student.formula_text.endswith("(1 | student_id)")
    diag = loaded.models["slopes_diag"].formula
    assert [t.covariance for t in diag.random].count("diagonal") == 1
    assert all(m.method == "REML" for m in loaded.models.values())
    assert [e.kind for e in loaded.expectations] == ["best", "fixed", "converged"]
    assert len(loaded.sha256) == 64


def test_name_defaults_to_sanitized_stem(tmp_path):
    loaded = load_spec(write(tmp_path, GOOD, "my study (v2).yaml"))
    assert loaded.name == "my_study_v2"
    assert loaded.file.endswith("my study (v2).yaml")


def test_unknown_key_with_line_col_and_suggestion(tmp_path):
    path = write(tmp_path, """
        data:
          example: sleepstudy
        models:
          ok:
            formula: Reaction ~ Days + (1|Subject)
          slopes:
            formla: Reaction ~ Days + (Days|Subject)
        """)
    errs = errors_of(path)
    assert errs == [f"{path}:7:5: models.slopes.formla: unknown key; did you mean 'formula'?"]


def test_bad_method_points_at_value(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy}
        defaults:
          method: reml
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)"}
        """)
    (err,) = errors_of(path)
    assert err.startswith(f"{path}:3:11: defaults.method: ")
    assert "'REML' or 'ML'" in err and "did you mean 'REML'?" in err


def test_unknown_variant_base_and_cycle(tmp_path):
    path = write(tmp_path, GOOD + """variants:
  v1: {from: slope, add: ["(1|Days)"]}
  a: {from: b}
  b: {from: a}
""")
    errs = errors_of(path)
    assert f"{path}:9:14: variants.v1.from: unknown model 'slope'; did you mean 'slopes'?" in errs
    assert f"{path}:11:13: variants.b.from: variants form a cycle: a -> b -> a" in errs


def test_formula_error_points_at_character(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy}
        models:
          broken:
            formula: Reaction ~ Days + (Days|)
          quoted:
            formula: "Reaction ~ Days + (1|Subject"
        """)
    errs = errors_of(path)
    assert len(errs) == 2
    first = errs[0].splitlines()
    # `    formula: ` is 13 characters; ')' is at index 24 of the formula -> column 14 + 24
    assert first[0].startswith(f"{path}:4:38: models.broken.formula: ")
    assert first[-1].index("^") - 2 == 24  # the caret rendering of the formula error
    assert errs[1].startswith(f"{path}:6:")


def test_formula_error_in_block_scalar(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy}
        models:
          m:
            formula: >
              Reaction ~ Days +
              (Days|)
        """)
    (err,) = errors_of(path)
    # the ')' after '|' on the second line of the folded scalar: line 6, column 13
    assert err.startswith(f"{path}:6:13: models.m.formula: ")


def test_many_errors_at_once_in_file_order(tmp_path):
    path = write(tmp_path, """
        name: ../evil
        data:
          example: sleepstudy
          na: sometimes
        models:
          a: {formula: "Reaction ~ Days + (1|Subject)", engine: lmer}
          b: {response: Reaction, fixd: [Days]}
        compare:
          criterion: aic
          tests: [[a, c], [a]]
        expect:
          best: aa
        report: {colour: red}
        """)
    errs = errors_of(path)
    lines = [int(e.split(":")[1]) for e in errs]
    assert lines == sorted(lines)
    text = "\n".join(errs)
    assert f"{path}:1:7: name: " in text and "not a safe file name" in text
    assert f"{path}:4:7: data.na:" in text
    assert f"{path}:6:57: models.a.engine:" in text and "did you mean 'lme'?" in text
    assert f"{path}:7:27: models.b.fixd: unknown key; did you mean 'fixed'?" in text
    assert f"{path}:9:14: compare.criterion:" in text
    assert "compare.tests.1: too few items" in text
    assert f"{path}:13:10: report.colour: unknown key; allowed: title, caterpillar_max_levels" in text
    assert f"{path}:12:9: expect.best: unknown model 'aa'; did you mean 'a'?" in text


def test_reference_errors_when_schema_is_valid(tmp_path):
    path = write(tmp_path, GOOD + """compare:
  tests: [[intercept, slopez], [slopes, slopes]]
expect:
  best: slope
  delta_aic: {intercep: "< 2"}
  fixed: ["Days >> 0"]
""")
    text = "\n".join(errors_of(path))
    assert f"{path}:9:23: compare.tests.0.1: unknown model 'slopez'; did you mean 'slopes'?" in text
    assert "compare.tests.1: a test needs two different models" in text
    # the expect grammar error is reported first (parse stops there), at the offending item
    assert f"{path}:13:11: expect.fixed.0:" in text


def test_expect_unknown_model_names(tmp_path):
    path = write(tmp_path, GOOD + """expect:
  best: slope
  delta_aic: {intercep: "< 2"}
""")
    errs = errors_of(path)
    assert f"{path}:9:9: expect.best: unknown model 'slope'; did you mean 'slopes'?" in errs
    assert f"{path}:10:15: expect.delta_aic.intercep: unknown model 'intercep'; did you mean 'intercept'?" in errs


def test_variant_options_inherit_and_override(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy}
        defaults: {method: ML}
        models:
          base: {formula: "Reaction ~ Days + (Days|Subject)", method: REML, engine: lme}
        variants:
          a: {from: base, drop: ["(Days|Subject)"], add: ["(1|Subject)"]}
          b: {from: a, method: ML}
        """)
    loaded = load_spec(path)
    a, b = loaded.models["a"], loaded.models["b"]
    assert a.formula_text == "Reaction ~ Days + (1 | Subject)"
    assert (a.method, a.engine, b.method, b.engine) == ("REML", "lme", "ML", "lme")
    assert b.source == "variant of a" and a.spec_path == ("variants", "a")


def test_yaml_syntax_error_and_duplicate_keys(tmp_path):
    bad = write(tmp_path, "data: {example: sleepstudy\nmodels: [\n", "bad.yaml")
    (err,) = errors_of(bad)
    assert err.startswith(f"{bad}:") and "invalid YAML" in err
    dup = write(tmp_path, GOOD + "models: {}\n", "dup.yaml")
    assert any(e.startswith(f"{dup}:8:1: models: duplicate key") for e in errors_of(dup))


def test_not_a_mapping_empty_and_missing_file(tmp_path):
    assert errors_of(write(tmp_path, "- a\n- b\n", "list.yaml"))[0].endswith("a spec is a mapping of keys (name, data, models, ...)")
    assert "the spec is empty" in errors_of(write(tmp_path, "", "empty.yaml"))[0]
    assert "spec file not found" in errors_of(tmp_path / "nope.yaml")[0]


def test_safe_loader_only(tmp_path):
    path = write(tmp_path, "data: !!python/object/apply:os.system ['echo hi']\nmodels: {}\n")
    (err,) = errors_of(path)
    assert "invalid YAML" in err and "python/object" in err


def test_data_source_exactly_one(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy, path: x.csv}
        models: {m: {formula: "Reaction ~ Days + (1|Subject)"}}
        """)
    (err,) = errors_of(path)
    assert "data: give exactly one data source" in err and "(got path, example)" in err


def test_sql_source_needs_url_or_env(tmp_path):
    path = write(tmp_path, """
        data: {sql: {url: "sqlite:///a.db", url_env: DB, table: t}}
        models: {m: {formula: "Reaction ~ Days + (1|Subject)"}}
        """)
    (err,) = errors_of(path)
    assert "data.sql: give exactly one of 'url' or 'url_env'" in err


def test_model_names_must_be_safe(tmp_path):
    path = write(tmp_path, """
        data: {example: sleepstudy}
        models:
          "a/b": {formula: "Reaction ~ Days + (1|Subject)"}
        """)
    (err,) = errors_of(path)
    assert err.startswith(f"{path}:3:3: models.a/b: name 'a/b' is not a safe file name")


@pytest.mark.parametrize("bad", ["../x", "a/b", "a\\b", ".hidden", "", "x" * 101, "con", "a..b"])
def test_check_safe_name_rejects(bad):
    with pytest.raises(ValueError):
        check_safe_name(bad)


def test_safe_name_sanitizes():
    assert safe_name("../../etc/passwd") == "etc_passwd"
    assert safe_name("students") == "students"
    check_safe_name(safe_name("a b/c..d"))


def test_schema_describes_fields():
    schema = Spec.model_json_schema()
    assert schema["additionalProperties"] is False
    assert "models" in schema["required"] and "data" in schema["required"]
    assert "description" in schema["$defs"]["DataSpec"]["properties"]["filter"]
    assert "from" in schema["$defs"]["VariantSpec"]["properties"]


def test_example_specs_load():
    for path in sorted(SPECS.glob("*.yaml")):
        loaded = load_spec(path)
        assert loaded.models, path
        assert loaded.spec.data.example, path  # examples run from a fresh clone


def test_a_list_or_text_where_a_mapping_belongs_names_the_keys(tmp_path):
    path = write(tmp_path, """
        data: sleepstudy
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)"}
        expect:
          - best == m
        """)
    errs = errors_of(path)
    assert errs == [
        f"{path}:1:7: data: expected a mapping with the keys path, sheet, sql, example, simulate, filter, "
        "na, categorical, center, sha256, id_columns; got the text 'sleepstudy'",
        f"{path}:4:1: expect: expected a mapping with the keys best, fixed, converged, singular, delta_aic; "
        "got a list ['best == m']",
    ]


def test_yaml_booleans_and_numbers_where_text_belongs_say_quote_it(tmp_path):
    path = write(tmp_path, """
        data:
          example: sleepstudy
          sha256: 0000000000000000000000000000000000000000000000000000000000000000
        models:
          m: {formula: "Reaction ~ Days + (1|Subject)", offset: off}
        """)
    errs = errors_of(path)
    assert errs == [
        f"{path}:3:11: data.sha256: expected text, got 0: YAML reads unquoted digits as a number; "
        "put the value in quotes",
        f"{path}:5:57: models.m.offset: expected text, got False: YAML reads unquoted "
        "yes/no/on/off/true/false as true or false; put the value in quotes",
    ]
