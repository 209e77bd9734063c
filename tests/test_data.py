"""Data sources on real files made here, the canonical hash, simulation, and `prepare`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runner.data.errors import DataError
from runner.data.hashing import data_sha256
from runner.data.prepare import prepare
from runner.data.simulate import simulate_students
from runner.data.sources import example_names, load_example, load_frame, redact
from runner.formula import parse_formula, render
from runner.spec.load import ResolvedModel
from runner.spec.models import DataSpec, SimulateSource

EXAMPLES = Path(__file__).resolve().parent.parent / "runner" / "data" / "examples"


def frame_small() -> pd.DataFrame:
    return pd.DataFrame({
        "y": [1.0, 2.5, 3.0, 4.5, 5.0, 6.5, 7.0, 8.5],
        "x": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
        "w": [1.0, 1.0, 1.0, np.nan, 2.0, 2.0, 1.0, 1.0],
        "g": ["a", "a", "b", "b", "c", "c", "d", "d"],
        "sex": ["M", "F", "M", "F", "M", "F", "M", "F"],
    })


def model(name: str, text: str, **kw) -> ResolvedModel:
    mf = parse_formula(text)
    opts = {"weights": None, "offset": None, "method": "REML", "engine": "auto", "verify": None}
    opts.update(kw)
    return ResolvedModel(name=name, formula=mf, formula_text=render(mf), source="model",
                         spec_path=("models", name, "formula"), written=text, **opts)


def data(**kw) -> DataSpec:
    kw.setdefault("example", "sleepstudy")
    return DataSpec(**kw)


# ----------------------------------------------------------------------------- sources


def test_csv_parquet_xlsx_read_the_same_rows(tmp_path):
    df = frame_small()
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet", index=False)
    df.to_excel(tmp_path / "d.xlsx", index=False, sheet_name="scores")
    digests = set()
    for name, extra in (("d.csv", {}), ("d.parquet", {}), ("d.xlsx", {"sheet": "scores"})):
        got = load_frame(DataSpec(path=name, **extra), tmp_path)
        assert got.shape == (8, 5), name
        assert got["x"].isna().sum() == 1 and list(got["g"]) == list(df["g"])
        digests.add(data_sha256(got))
    assert len(digests) == 1  # the canonical hash does not depend on the file format


def test_missing_file_and_bad_suffix(tmp_path):
    with pytest.raises(DataError) as info:
        load_frame(DataSpec(path="nope.csv"), tmp_path)
    assert info.value.issues[0].path == "data.path" and "data file not found: nope.csv" in str(info.value)
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type '.json'"):
        load_frame(DataSpec(path="d.json"), tmp_path)


def test_sqlite_file_query_and_table(tmp_path):
    df = frame_small()
    with sqlite3.connect(tmp_path / "scores.db") as con:
        df.to_sql("scores", con, index=False)
    by_table = load_frame(DataSpec(sql={"url": "sqlite:///scores.db", "table": "scores"}), tmp_path)
    assert by_table.shape == (8, 5) and by_table["y"].sum() == pytest.approx(df["y"].sum())
    by_query = load_frame(DataSpec(sql={"url": "sqlite:///scores.db", "query": "select y, g from scores where y > 4"}),
                          tmp_path)
    assert list(by_query.columns) == ["y", "g"] and len(by_query) == 5
    assert data_sha256(by_table) == data_sha256(df)  # same values, same hash as the CSV/frame


def test_sqlite_missing_table_message(tmp_path):
    with sqlite3.connect(tmp_path / "s.db") as con:
        con.execute("create table t (a int)")
    with pytest.raises(DataError) as info:
        load_frame(DataSpec(sql={"url": "sqlite:///s.db", "table": "nope"}), tmp_path)
    assert info.value.issues[0].path == "data.sql" and "no such table" in str(info.value)


def test_duckdb_file(tmp_path):
    import duckdb

    df = frame_small()
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    con.register("df", df)
    con.execute("create table scores as select * from df")
    con.close()
    got = load_frame(DataSpec(sql={"url": "duckdb:///s.duckdb", "table": "scores"}), tmp_path)
    assert got.shape == (8, 5) and got["y"].tolist() == df["y"].tolist()
    q = load_frame(DataSpec(sql={"url": "duckdb:///s.duckdb", "query": "select g, count(*) n from scores group by g order by g"}),
                   tmp_path)
    assert q["n"].tolist() == [2, 2, 2, 2]


def test_url_env(tmp_path, monkeypatch):
    with sqlite3.connect(tmp_path / "e.db") as con:
        frame_small().to_sql("scores", con, index=False)
    monkeypatch.setenv("MIXSPEC_TEST_DB", f"sqlite:///{tmp_path / 'e.db'}")
    with pytest.raises(DataError, match="'MIXSPEC_TEST_DB' is not allowed"):  # the person must allow it
        load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)
    monkeypatch.setenv("MIXSPEC_URL_ENVS", "OTHER,MIXSPEC_TEST_DB")
    got = load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)
    assert len(got) == 8
    monkeypatch.delenv("MIXSPEC_TEST_DB")
    with pytest.raises(DataError, match="environment variable MIXSPEC_TEST_DB is not set"):
        load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)


def test_password_never_in_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXSPEC_URL_ENVS", "MIXSPEC_TEST_DB")
    monkeypatch.setenv("MIXSPEC_TEST_DB", "postgresql://analyst:s3cr3t-pw@127.0.0.1:1/scores")
    with pytest.raises(DataError) as info:
        load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)
    text = str(info.value)
    assert "s3cr3t-pw" not in text and "cannot read from postgresql://analyst:***@127.0.0.1:1/scores" in text
    monkeypatch.setenv("MIXSPEC_TEST_DB", "not a url s3cr3t-pw")
    with pytest.raises(DataError) as info:
        load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)
    assert "s3cr3t-pw" not in str(info.value) and "not a valid database URL" in str(info.value)


def test_redact():
    assert redact("x postgresql://u:pw@h/db y", []) == "x postgresql://u:***@h/db y"
    assert redact("error for pw123 here", ["pw123"]) == "error for *** here"
    assert redact("dsn host=h password=Leak123 dbname=x", []) == "dsn host=h password=*** dbname=x"


def test_password_in_a_url_query_is_never_shown(tmp_path, monkeypatch):
    """libpq and other drivers take ?password= (and tokens) in the query string."""
    monkeypatch.setenv("MIXSPEC_URL_ENVS", "MIXSPEC_TEST_DB")
    monkeypatch.setenv("MIXSPEC_TEST_DB", "postgresql://u@127.0.0.1:1/db?password=Leak123&sslmode=disable")
    with pytest.raises(DataError) as info:
        load_frame(DataSpec(sql={"url_env": "MIXSPEC_TEST_DB", "table": "scores"}), tmp_path)
    text = str(info.value)
    assert "Leak123" not in text and "cannot read from postgresql://u@127.0.0.1:1/db?password=***" in text


def test_examples_case_insensitive():
    assert {"sleepstudy", "penicillin", "pastes", "dyestuff", "dyestuff2", "students"} <= set(example_names())
    assert load_example("Penicillin").shape == (144, 3)
    assert load_frame(data(example="PASTES"), ".").shape == (60, 4)
    with pytest.raises(DataError, match="unknown example 'sleepstudi'; did you mean 'sleepstudy'"):
        load_example("sleepstudi")


def test_simulate_defaults_reproduce_students_csv():
    sim = load_frame(DataSpec(simulate={}), ".")
    shipped = pd.read_csv(EXAMPLES / "students.csv")
    pd.testing.assert_frame_equal(sim, shipped)
    assert data_sha256(sim) == data_sha256(shipped)


def test_simulate_sizes_and_seed():
    small = simulate_students(SimulateSource(provinces=2, schools=2, classrooms=2, students=3, scores=2, seed=1))
    assert len(small) == 2 * 2 * 2 * 3 * 2
    assert small["classroom"].nunique() == 8 and small["student_id"].nunique() == 24
    again = simulate_students(SimulateSource(provinces=2, schools=2, classrooms=2, students=3, scores=2, seed=1))
    other = simulate_students(SimulateSource(provinces=2, schools=2, classrooms=2, students=3, scores=2, seed=2))
    assert data_sha256(small) == data_sha256(again) != data_sha256(other)


def test_hash_sees_changes():
    df = frame_small()
    base = data_sha256(df)
    assert data_sha256(df.iloc[::-1].reset_index(drop=True)) != base
    changed = df.copy()
    changed.loc[0, "y"] = 1.0000001
    assert data_sha256(changed) != base
    assert data_sha256(df.rename(columns={"y": "z"})) != base
    assert data_sha256(df.astype({"g": "category"})) == base  # a factor of the same labels is the same data


# ----------------------------------------------------------------------------- prepare


def test_na_common_drops_every_models_rows():
    df = frame_small()
    models = {"a": model("a", "y ~ x + (1|g)"), "b": model("b", "y ~ 1 + (1|g)", weights="w")}
    prep = prepare(df, DataSpec(path="d.csv"), models)
    assert (prep.rows, prep.rows_used) == (8, 6)
    assert prep.dropped == {"filter": 0, "missing": 2}
    assert prep.missing_by_column == {"x": 1, "w": 1}
    assert prep.nobs("a") == prep.nobs("b") == 6
    assert len(prep.frame_for("a")) == 6


def test_na_per_model_masks():
    df = frame_small()
    models = {"a": model("a", "y ~ x + (1|g)"), "b": model("b", "y ~ 1 + (1|g)", weights="w")}
    prep = prepare(df, DataSpec(path="d.csv", na="per_model"), models)
    assert prep.nobs("a") == 7 and prep.nobs("b") == 7
    assert prep.rows_used == 8 and prep.dropped == {"filter": 0, "missing": 0}
    assert prep.dropped_for("a") == {"filter": 0, "missing": 1}
    assert prep.frame_for("a")["x"].notna().all()


def test_filter_counts_and_unused_levels_dropped():
    df = frame_small()
    prep = prepare(df, DataSpec(path="d.csv", filter="y > 2 and g != 'd'"), {"a": model("a", "y ~ x + (1|g)")})
    assert prep.rows_after_filter == 5 and prep.dropped == {"filter": 3, "missing": 1}
    g = prep.frame_for("a")["g"]
    assert isinstance(g.dtype, pd.CategoricalDtype) and list(g.cat.categories) == ["a", "b", "c"]


def test_bad_filter_names_the_column():
    with pytest.raises(DataError) as info:
        prepare(frame_small(), DataSpec(path="d.csv", filter="yy > 2"), {"a": model("a", "y ~ x + (1|g)")})
    (issue,) = info.value.issues
    assert issue.path == "data.filter" and "unknown column 'yy' in filter; did you mean 'y'?" in issue.message
    with pytest.raises(DataError, match=r"unknown column 'y.__class__' in filter \(columns: y, x, w, g, sex\)"):
        prepare(frame_small(), DataSpec(path="d.csv", filter="y.__class__"), {})


@pytest.mark.parametrize("text,reason", [
    ("y >> 2", "invalid filter: >> is not supported; a filter uses column names"),
    ("y.max() > 2", "invalid filter: y.max(...) is not a function a filter can call (only is.na(x)"),
    ("y.mean() > 2 and 1 == 1", "y.mean(...) is not a function"),
    ("1 == 1", "it gives one True/False for the whole table, not one per row"),
])
def test_unsupported_filter_says_what_is_wrong_and_what_is_valid(text, reason):
    with pytest.raises(DataError) as info:
        prepare(frame_small(), DataSpec(path="d.csv", filter=text), {})
    (issue,) = info.value.issues
    assert issue.path == "data.filter" and reason in issue.message
    assert "Error" not in issue.message  # no exception class names, no internals


def test_categorical_reference_and_levels():
    df = frame_small()
    models = {"a": model("a", "y ~ sex + (1|g)")}
    default = prepare(df, DataSpec(path="d.csv"), models)
    assert default.factors["sex"].as_dict() == {"levels": ["F", "M"], "reference": "F", "contrast": "treatment"}
    chosen = prepare(df, DataSpec(path="d.csv", categorical={"sex": {"reference": "M"}}), models)
    assert chosen.factors["sex"].levels == ["M", "F"]
    assert list(chosen.frame_for("a")["sex"].cat.categories) == ["M", "F"]
    with pytest.raises(DataError) as info:
        prepare(df, DataSpec(path="d.csv", categorical={"sex": {"reference": "X"}}), models)
    assert info.value.issues[0].path == "data.categorical.sex.reference"


def test_numeric_grouping_levels_sort_as_numbers():
    df = pd.DataFrame({"y": np.arange(12.0), "g": [10, 9, 100] * 4})
    prep = prepare(df, DataSpec(path="d.csv"), {"a": model("a", "y ~ 1 + (1|g)")})
    assert list(prep.frame_for("a")["g"].cat.categories) == [9, 10, 100]


def test_center_and_scale():
    df = frame_small()
    models = {"a": model("a", "y ~ x + (1|g)")}
    prep = prepare(df, DataSpec(path="d.csv", center={"x": "mean", "y": {"center": 1, "scale": True}}), models)
    used = prep.frame_for("a")
    assert used["x"].mean() == pytest.approx(0.0, abs=1e-12)
    assert prep.centered["x"]["center"] == pytest.approx(np.mean([1, 2, 4, 5, 6, 7, 8]))
    assert used["y"].std() == pytest.approx(1.0)


def test_missing_columns_with_suggestions():
    models = {"a": model("a", "y ~ xx + (1|gg)"), "b": model("b", "y ~ x + (1|g)", offset="ofs")}
    with pytest.raises(DataError) as info:
        prepare(frame_small(), DataSpec(path="d.csv", categorical={"sexx": {}}), models)
    messages = {(i.path, i.message) for i in info.value.issues}
    assert ("models.a.formula", "column 'gg' not in the data; did you mean 'g'?") in messages
    assert ("models.a.formula", "column 'xx' not in the data; did you mean 'x'?") in messages
    assert any(p == "models.b.offset" and "'ofs'" in m for p, m in messages)
    assert ("data.categorical.sexx", "column 'sexx' not in the data; did you mean 'sex'?") in messages
    offsets = {i.message: i.offset for i in info.value.issues}
    assert offsets["column 'gg' not in the data; did you mean 'g'?"] == len("y ~ xx + (1|")


def test_lme4_prefit_checks():
    df = frame_small()
    df["one"] = "only"
    df["id"] = [f"r{i}" for i in range(8)]
    models = {
        "text_response": model("text_response", "sex ~ x + (1|g)"),
        "one_level": model("one_level", "y ~ 1 + (1|one)"),
        "per_row": model("per_row", "y ~ 1 + (1|id)"),
        "too_many": model("too_many", "y ~ 1 + (x|g)"),
    }
    with pytest.raises(DataError) as info:
        prepare(df, DataSpec(path="d.csv", na="per_model"), models)
    by_model = {i.path.split(".")[1]: i.message for i in info.value.issues}
    assert by_model["text_response"] == "response 'sex' is not numeric (e.g. 'M')"
    assert "'one' has 1 level" in by_model["one_level"]
    assert "8 levels for 8 observations: random effect not identifiable from the residual" in by_model["per_row"]
    assert "8 random effects for 7 observations" in by_model["too_many"]


def test_weights_must_be_positive_and_finite():
    df = frame_small()
    df["w"] = [1.0, -1.0, 1, 1, 1, 1, np.inf, 1]
    with pytest.raises(DataError) as info:
        prepare(df, DataSpec(path="d.csv", na="per_model"), {"a": model("a", "y ~ 1 + (1|g)", weights="w")})
    (issue,) = info.value.issues
    assert issue.path == "models.a.weights" and "2 rows are not" in issue.message
    df["w"] = [1.0, 0.0, 1, 1, 1, 1, 0.0, 1]  # lme4 1.1-31 gives REMLcrit Inf with a zero weight
    with pytest.raises(DataError) as info:
        prepare(df, DataSpec(path="d.csv", na="per_model"), {"a": model("a", "y ~ 1 + (1|g)", weights="w")})
    (issue,) = info.value.issues
    assert "has 2 zero weights" in issue.message and 'filter: "w > 0"' in issue.message


def test_sha256_pin_mismatch():
    df = frame_small()
    models = {"a": model("a", "y ~ x + (1|g)")}
    digest = data_sha256(df[["y", "x", "g"]])  # the pin covers the columns the models use, in the frame's order
    assert prepare(df, DataSpec(path="d.csv", sha256=digest), models).sha256 == digest
    with pytest.raises(DataError) as info:
        prepare(df, DataSpec(path="d.csv", sha256="0" * 64), models)
    message = info.value.issues[0].message
    assert info.value.issues[0].path == "data.sha256" and digest in message
    assert "covers the columns the spec uses, in the source's order (y, x, g)" in message


def test_pastes_crossed_labels_warning():
    pastes = load_example("pastes")
    models = {"trap": model("trap", "strength ~ 1 + (1|batch) + (1|cask)"),
              "nested": model("nested", "strength ~ 1 + (1|batch/cask)")}
    prep = prepare(pastes, DataSpec(example="pastes"), models)
    (warning,) = prep.warnings
    assert warning.severity == "warning" and warning.path == "models.trap.formula"
    assert "labels of 'cask' repeat in every level of 'batch'" in warning.message
    assert "(1|batch/cask)" in warning.message


def test_truly_crossed_and_nested_designs_do_not_warn():
    penicillin = load_example("penicillin")
    prep = prepare(penicillin, DataSpec(example="penicillin"), {"c": model("c", "diameter ~ 1 + (1|plate) + (1|sample)")})
    assert prep.warnings == []
    students = load_example("students").head(2000)
    prep = prepare(students, DataSpec(example="students"),
                   {"n": model("n", "test_score ~ age + (1|classroom) + (1|school) + (1|province)")})
    assert prep.warnings == []


def test_double_bar_on_factor_warns():
    df = load_example("penicillin")
    df["half"] = np.where(np.arange(len(df)) % 2 == 0, "u", "v")
    prep = prepare(df, DataSpec(path="d.csv"), {"m": model("m", "diameter ~ 1 + (half || plate)")})
    assert any("'||' on factor 'half'" in w.message for w in prep.warnings)


def test_text_slope_becomes_factor():
    df = load_example("penicillin")
    df["half"] = np.where(np.arange(len(df)) % 2 == 0, "u", "v")
    prep = prepare(df, DataSpec(path="d.csv"), {"m": model("m", "diameter ~ 1 + (0 + half | plate)")})
    assert isinstance(prep.frame_for("m")["half"].dtype, pd.CategoricalDtype)


def test_number_column_in_a_grouping_factor_stays_a_number_in_the_fixed_part():
    """As lme4 (InstEval's `service` beside `(1|dept:service)`): the grouping factor is built
    apart, the fixed column is the number. lme4 1.1-31: fixef (Intercept) 60.0075, num 0.1375,
    REML criterion 294.627430285."""
    import runner

    df = pd.read_csv(Path(__file__).parents[1] / "runner" / "data" / "examples" / "Pastes.csv")
    df["num"] = (df["cask"] == "b").astype(int)
    m = runner.fit("strength ~ num + (1|batch:num)", df)
    assert list(m.fixed_effects["term"]) == ["(Intercept)", "num"]
    assert m.fixed_effects["estimate"].tolist() == pytest.approx([60.0075, 0.1375], abs=1e-6)
    assert m.objective == pytest.approx(294.627430285, abs=1e-6)
