"""A spec's predict: section and the fit sidecars' identifying columns, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import runner
from runner.run.api import run_spec
from runner.run.options import RunOptions

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "reference_api"

SPEC = """\
name: sleeppred
data:
  path: sleep.csv
  filter: "Days >= 1"
  id_columns: [obs_id]
models:
  slopes:
    formula: Reaction ~ Days + (Days | Subject)
  intercept:
    formula: Reaction ~ Days + (1 | Subject)
predict:
  data: {path: new.csv, id_columns: [key]}
  models: [slopes]
  formats: [parquet, csv]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("predict")
    source = pd.read_csv(ROOT / "runner" / "data" / "examples" / "sleepstudy.csv")
    source.insert(0, "obs_id", [f"o{i}" for i in range(len(source))])
    source.loc[3, "Reaction"] = np.nan  # a missing value: dropped, its row number skipped
    source.to_csv(folder / "sleep.csv", index=False)
    new = pd.read_csv(REF / "sleepstudy_slopes_newdata.csv")
    new.assign(key=[f"k{i}" for i in range(len(new))]).to_csv(folder / "new.csv", index=False)
    (folder / "spec.yaml").write_text(SPEC)
    outcome = run_spec(folder / "spec.yaml", RunOptions.of(folder / "out", use_cache=False, quiet=True, report=False, jobs=1))
    assert outcome.exit_code == 0, outcome.errors
    return folder / "out" / "sleeppred", source


def test_predictions_file_and_record(run: tuple[Path, pd.DataFrame]) -> None:
    out, source = run
    record = json.loads((out / "results.json").read_text())
    assert record["models"]["slopes"]["predictions"] == "predictions/slopes.parquet"
    assert record["models"]["intercept"]["predictions"] is None
    pred = pd.read_parquet(out / "predictions" / "slopes.parquet")
    assert list(pred.columns) == ["row", "key", "Subject", "prediction"]
    assert pred["row"].tolist() == list(range(7)) and pred["key"].tolist()[0] == "k0"
    csv = pd.read_csv(out / "predictions" / "slopes.csv")
    np.testing.assert_allclose(csv["prediction"], pred["prediction"], rtol=1e-12)
    # the same numbers as the API on the same rows
    kept = source[source["Days"] >= 1].dropna(subset=["Reaction"])
    m = runner.fit("Reaction ~ Days + (Days | Subject)", kept)
    new = pd.read_csv(REF / "sleepstudy_slopes_newdata.csv")
    np.testing.assert_allclose(pred["prediction"], m.predict(new), rtol=1e-9)


def test_fit_sidecar_rows_join_the_source(run: tuple[Path, pd.DataFrame]) -> None:
    out, source = run
    fits = pd.read_parquet(out / "fits" / "slopes.parquet")
    assert list(fits.columns) == ["row", "obs_id", "Subject", "fitted", "residuals"]
    assert 0 not in set(fits["row"]) and 3 not in set(fits["row"]) and 1 in set(fits["row"])  # filter, NA
    joined = fits.merge(source.reset_index(names="source_row"), left_on="row", right_on="source_row",
                        suffixes=("", "_src"))
    assert (joined["obs_id"] == joined["obs_id_src"]).all()
    # the grouping factor is written as the source held it (decoded from its codes by Arrow)
    assert fits["Subject"].dtype == source["Subject"].dtype and (joined["Subject"] == joined["Subject_src"]).all()
    np.testing.assert_allclose(joined["fitted"] + joined["residuals"], joined["Reaction"], rtol=1e-12)
    ranef = pd.read_parquet(out / "fits" / "slopes_ranef.parquet")
    assert set(ranef["level"]) == {str(s) for s in source["Subject"].unique()}


def test_predict_problems_are_spec_errors(tmp_path: Path) -> None:
    pd.read_csv(ROOT / "runner" / "data" / "examples" / "sleepstudy.csv").to_csv(tmp_path / "sleep.csv", index=False)
    pd.DataFrame({"Subject": [308]}).to_csv(tmp_path / "new.csv", index=False)
    (tmp_path / "spec.yaml").write_text(
        "data: {path: sleep.csv, id_columns: [obs]}\nmodels:\n  slopes: {formula: Reaction ~ Days + (Days | Subject)}\n"
        "predict:\n  data: {path: new.csv}\n  models: [slope, slopes]\n")
    outcome = run_spec(tmp_path / "spec.yaml", RunOptions.of(tmp_path / "out", use_cache=False, quiet=True, report=False))
    assert outcome.exit_code == 2
    text = "\n".join(outcome.errors)
    assert "predict.models.0: unknown model 'slope'; did you mean 'slopes'?" in text
    assert "model slopes: column 'Days' not in the new data" in text
    assert "data.id_columns.0: id column 'obs' not in the data" in text
    with pytest.raises(Exception, match="predict.models.0: unknown model 'slope'"):
        runner.run(tmp_path / "spec.yaml", tmp_path / "out")
