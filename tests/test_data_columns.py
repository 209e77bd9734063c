"""Only the columns a spec uses are read and hashed (issue 15: wide files).

sleepstudy with 20 unused float columns between its own, as Parquet and CSV: the spec's
run loads three columns, records them in results.json, fits lme4's numbers, and its
`data.sha256` is that of those three columns whatever the format; unused columns can
change without moving the pin, and a misspelt column still gets did-you-mean over
every column of the file, read or not.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runner.api.fitting import prepare_model
from runner.data.columns import filter_columns, predict_columns, used_columns
from runner.data.errors import DataError
from runner.data.hashing import data_sha256
from runner.data.sources import load_example, read_source
from runner.formula import parse_formula, render
from runner.report.html import provenance
from runner.spec.load import ResolvedModel
from runner.spec.models import DataSpec, PredictSpec
from runner.validate import validate_spec
from run_helpers import invoke_cli, run_quiet, write_spec

REF = Path(__file__).resolve().parent / "reference"
USED = ["Subject", "Reaction", "Days"]  # in the file's order
EXTRA = [f"extra_{j:02d}" for j in range(20)]


def wide_sleepstudy() -> pd.DataFrame:
    """sleepstudy's columns among 20 float columns no model uses."""
    sleep = load_example("sleepstudy")
    rng = np.random.default_rng(15)
    extra = {name: rng.normal(size=len(sleep)) for name in EXTRA}
    order = [*EXTRA[:7], "Subject", *EXTRA[7:14], "Reaction", *EXTRA[14:17], "Days", *EXTRA[17:]]
    return pd.DataFrame({**extra, **{c: sleep[c] for c in USED}})[order]


def write(frame: pd.DataFrame, folder: Path, fmt: str) -> str:
    name = f"wide.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(folder / name, index=False)
    else:
        frame.to_csv(folder / name, index=False)
    return name


def spec_text(path: str, formula: str = "Reaction ~ Days + (1|Subject)", data_extra: str = "") -> str:
    return f"""
name: wide
data:
  path: {path}{data_extra}
defaults: {{method: ML}}
models:
  intercept: {{formula: "{formula}"}}
"""


def model(name: str, text: str, **kw) -> ResolvedModel:
    mf = parse_formula(text)
    opts = {"weights": None, "offset": None, "method": "REML", "engine": "auto", "verify": None, **kw}
    return ResolvedModel(name=name, formula=mf, formula_text=render(mf), source="model",
                         spec_path=("models", name, "formula"), written=text, **opts)


# ----------------------------------------------------------------------------- which columns


def test_used_columns_names_every_key_that_names_a_column():
    models = {"a": model("a", "y ~ x * z + log(u) + I(v^2) + (1 + s | a/b) + (1 | c:d) + offset(log(n))",
                         weights="w", offset="o"),
              "b": model("b", "y2 ~ poly(t, 2) + factor(f) + (0 + r || g)")}
    spec = DataSpec(path="d.csv", filter="`odd name` > 1 & h %in% c('a', 'b') | !is.na(k) & 2 * m < 3",
                    categorical={"cat": {}}, center={"cen": "mean"}, id_columns=["row_id"])
    assert used_columns(spec, models) == sorted(
        ["y", "x", "z", "u", "v", "s", "a", "b", "c", "d", "n", "w", "o", "y2", "t", "f", "r", "g",
         "odd name", "h", "k", "m", "cat", "cen", "row_id"])
    # R's constants are read from the data when it has such a column (R looks in the data first)
    assert used_columns(DataSpec(path="d.csv"), {"c": model("c", "y ~ T + I(pi * x) + (1|g)")}) == \
        ["T", "g", "pi", "x", "y"]
    assert filter_columns("age >= 9 & sex == 'F'") == [("age", 0), ("sex", 11)]
    assert filter_columns("age >=") == [] and filter_columns(None) == []  # its error is reported where applied
    predict = PredictSpec(data=DataSpec(path="new.csv", filter="q > 0", id_columns=["pid"]), models=["b"])
    assert predict_columns(predict, spec, models) == ["f", "g", "pid", "q", "r", "row_id", "t", "y2"]


# ----------------------------------------------------------------------------- reading and hashing


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_wide_file_loads_only_the_used_columns(tmp_path, fmt):
    wide = wide_sleepstudy()
    name = write(wide, tmp_path, fmt)
    source = read_source(DataSpec(path=name), tmp_path, ["Days", "Reaction", "Subject", "not_there"])
    assert list(source.frame.columns) == USED and source.columns == list(wide.columns)
    pd.testing.assert_frame_equal(source.frame, wide[USED], check_dtype=False)
    validated = validate_spec(write_spec(tmp_path, "wide", spec_text(name)), build_designs=False)
    assert list(validated.data.frame.columns) == USED and validated.data.columns == USED
    assert validated.data.sha256 == data_sha256(wide[USED])


def test_run_records_the_columns_and_one_hash_for_parquet_csv_and_a_dataframe(tmp_path):
    wide = wide_sleepstudy()
    ref = json.loads((REF / "sleepstudy_intercept_ml.json").read_text())
    digests = set()
    for fmt in ("parquet", "csv"):
        folder = tmp_path / fmt
        folder.mkdir()
        out = run_quiet(write_spec(folder, "wide", spec_text(write(wide, folder, fmt))), folder)
        assert out.exit_code == 0, out.errors
        saved = json.loads(out.results_path.read_text())
        assert saved["data"]["columns"] == USED and saved["data"]["rows"] == 180
        assert saved["models"]["intercept"]["aic"] == pytest.approx(ref["aic"], abs=1e-3)  # lme4's fit
        assert ("data columns", "Subject, Reaction, Days (the columns read and hashed)") in provenance(out.record)
        digests.add(saved["data"]["sha256"])
    api_digest = prepare_model("Reaction ~ Days + (1|Subject)", wide, method="ML")[1].sha256  # all 23 given
    assert digests == {data_sha256(wide[USED]), api_digest}
    assert len(digests) == 1 and api_digest != data_sha256(wide)


def test_other_sources_keep_only_the_used_columns(tmp_path):
    wide = wide_sleepstudy()
    with sqlite3.connect(tmp_path / "wide.db") as con:
        wide.to_sql("sleep", con, index=False)
    wide.to_excel(tmp_path / "wide.xlsx", index=False)
    for spec in (DataSpec(sql={"url": "sqlite:///wide.db", "table": "sleep"}), DataSpec(path="wide.xlsx")):
        source = read_source(spec, tmp_path, USED)
        assert list(source.frame.columns) == USED and source.columns == list(wide.columns)
        assert data_sha256(source.frame) == data_sha256(wide[USED])
    example = read_source(DataSpec(example="sleepstudy"), tmp_path, ["Days", "Subject"])
    assert list(example.frame.columns) == ["Days", "Subject"] and example.columns == ["Reaction", "Days", "Subject"]
    simulated = read_source(DataSpec(simulate={"provinces": 1, "schools": 1}), tmp_path, ["test_score", "age"])
    assert list(simulated.frame.columns) == ["age", "test_score"] and len(simulated.columns) == 7


def test_a_column_named_like_a_constant_is_still_read(tmp_path):
    sleep = wide_sleepstudy().rename(columns={"Days": "T"})  # R's T is TRUE unless the data has a T
    sleep.to_csv(tmp_path / "t.csv", index=False)
    spec = write_spec(tmp_path, "t", spec_text("t.csv", formula="Reaction ~ T + (1|Subject)"))
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    saved = json.loads(out.results_path.read_text())
    ref = json.loads((REF / "sleepstudy_intercept_ml.json").read_text())
    assert saved["data"]["columns"] == ["Subject", "Reaction", "T"]
    fixed = {f["term"]: f["estimate"] for f in saved["models"]["intercept"]["fixed_effects"]}
    assert fixed["T"] == pytest.approx(ref["fixed_effects"][1]["estimate"], rel=1e-6)  # lme4's Days slope


def test_a_spec_using_every_column_keeps_the_whole_frame_hash(tmp_path):
    spec = write_spec(tmp_path, "sleep", "name: sleep\ndata: {example: sleepstudy}\n"
                      "models:\n  m: {formula: \"Reaction ~ Days + (Days|Subject)\"}\n")
    assert validate_spec(spec, build_designs=False).data.sha256 == data_sha256(load_example("sleepstudy"))


def test_unread_columns_are_not_checked_but_every_name_is(tmp_path):
    wide = wide_sleepstudy()
    wide["notes"] = "fine"
    wide.loc[3, "notes"] = "bro\x00ken"  # a NUL in a column the spec does not use: never read
    wide.to_parquet(tmp_path / "wide.parquet", index=False)
    assert validate_spec(write_spec(tmp_path, "wide", spec_text("wide.parquet")), build_designs=False)
    wide = wide.drop(columns="notes").rename(columns={"extra_05": "extra\x1b05"})
    wide.to_parquet(tmp_path / "wide.parquet", index=False)
    with pytest.raises(DataError, match="column 6's name 'extra\\\\x1b05' contains a control character"):
        validate_spec(write_spec(tmp_path, "wide", spec_text("wide.parquet")), build_designs=False)
    table = pa.Table.from_pandas(wide_sleepstudy(), preserve_index=False)
    pq.write_table(table.rename_columns([*table.column_names[:-1], "extra_00"]), tmp_path / "wide.parquet")
    for columns in (None, USED):  # an unread column named twice is still refused, before Arrow reads
        with pytest.raises(DataError, match="data.path: duplicate column names: extra_00$"):
            read_source(DataSpec(path="wide.parquet"), tmp_path, columns)


# ----------------------------------------------------------------------------- pins


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_pin_over_the_used_columns(tmp_path, fmt):
    wide = wide_sleepstudy()
    pin = data_sha256(wide[USED])
    spec = write_spec(tmp_path, "wide", spec_text(write(wide, tmp_path, fmt), data_extra=f"\n  sha256: {pin}"))
    assert validate_spec(spec, build_designs=False).data.sha256 == pin

    wide["extra_03"] = wide["extra_03"] + 1.0  # an unused column changed: same hash, the pin holds
    write(wide, tmp_path, fmt)
    assert validate_spec(spec, build_designs=False).data.sha256 == pin

    wide.loc[5, "Reaction"] += 0.5  # a used value changed: the pin fails, saying what it covers
    write(wide, tmp_path, fmt)
    with pytest.raises(DataError) as info:
        validate_spec(spec, build_designs=False)
    (pin_issue,) = [i for i in info.value.issues if i.path == "data.sha256"]
    assert data_sha256(wide[USED]) in pin_issue.message and pin in pin_issue.message
    assert "covers the columns the spec uses, in the source's order (Subject, Reaction, Days)" in pin_issue.message
    result = invoke_cli(tmp_path, "validate", str(spec))
    assert result.exit_code == 2 and "(Subject, Reaction, Days)" in " ".join(result.output.split())


# ----------------------------------------------------------------------------- misspelt columns


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_misspelt_columns_get_did_you_mean_over_unread_columns(tmp_path, fmt):
    name = write(wide_sleepstudy(), tmp_path, fmt)
    spec = write_spec(tmp_path, "wide", spec_text(name, formula="Reaction ~ Dayz + extra_5 + (1|Subject)",
                                                  data_extra="\n  filter: \"extra_7 > -100\"\n"
                                                             "  categorical: {Subjct: {}}"))
    with pytest.raises(DataError) as info:
        validate_spec(spec, build_designs=False)
    messages = [(i.path, i.message) for i in info.value.issues]
    formula, filter_, categorical = "models.intercept.formula", "data.filter", "data.categorical.Subjct"
    assert (formula, "column 'Dayz' not in the data; did you mean 'Days'?") in messages
    assert (formula, "column 'extra_5' not in the data; did you mean 'extra_15' or 'extra_05' or 'extra_19'?") \
        in messages  # columns never read
    assert (categorical, "column 'Subjct' not in the data; did you mean 'Subject'?") in messages
    (filtered,) = [m for p, m in messages if p == filter_]
    assert filtered.startswith("unknown column 'extra_7' in filter; did you mean 'extra_17' or 'extra_07'")
    result = invoke_cli(tmp_path, "validate", str(spec))
    assert result.exit_code == 2 and "did you mean 'extra_17' or 'extra_07'" in result.output


# ----------------------------------------------------------------------------- predictions


def test_predict_reads_only_what_it_needs_and_suggests_from_every_column(tmp_path):
    wide = wide_sleepstudy()
    write(wide, tmp_path, "parquet")
    new = wide.assign(row_id=[f"r{i}" for i in range(len(wide))])
    new.drop(columns="Reaction").to_parquet(tmp_path / "new.parquet", index=False)
    predict = "\npredict:\n  data: {path: new.parquet, id_columns: [row_id], filter: \"extra_02 > -100\"}\n"
    out = run_quiet(write_spec(tmp_path, "wide", spec_text("wide.parquet") + predict), tmp_path)
    assert out.exit_code == 0, out.errors
    got = pd.read_parquet(tmp_path / "out" / "wide" / "predictions" / "intercept.parquet")
    fits = pd.read_parquet(tmp_path / "out" / "wide" / "fits" / "intercept.parquet")
    assert list(got.columns) == ["row", "row_id", "Subject", "prediction"] and list(got["row_id"]) == list(new["row_id"])
    np.testing.assert_allclose(got["prediction"], fits["fitted"], rtol=1e-10)  # the same rows: the fitted values

    for typo, message in (("filter: \"extra_2 > 0\"", "unknown column 'extra_2' in filter; did you mean 'extra_12' or "
                           "'extra_02'"),
                          ("id_columns: [rowid]", "id column 'rowid' not in the data; did you mean 'row_id'?")):
        spec = spec_text("wide.parquet") + f"\npredict:\n  data: {{path: new.parquet, {typo}}}\n"
        out = run_quiet(write_spec(tmp_path, "typo", spec), tmp_path)
        assert out.exit_code == 2 and message in " ".join(out.errors), out.errors
