"""Every REML model keeps its ML refit (`ml_refit`), also alone in its group, and is ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_helpers import run_quiet, write_spec

REF = Path(__file__).resolve().parent / "reference"


def test_a_lone_reml_model_has_its_ml_refit_and_is_ranked(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "dye", """
name: dye
data: {example: dyestuff}
models:
  m: {formula: "Yield ~ 1 + (1|Batch)"}
expect:
  delta_aic: {m: "< 2"}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    rec = out.record.models["m"]
    ml = json.loads((REF.parent / "reference_oracle" / "dyestuff_ml.json").read_text())  # lme4, REML = FALSE
    assert rec.method == "REML" and rec.ml_refit is not None
    assert rec.ml_refit.loglik == pytest.approx(ml["loglik"], abs=1e-6)
    assert rec.ml_refit.aic == pytest.approx(ml["aic"], abs=1e-6)
    (group,) = out.record.ranking
    (row,) = group.rows
    assert (row.model, row.fit_used, row.delta, row.weight, row.best) == ("m", "ml_refit", 0.0, 1.0, True)
    assert group.note is None


def test_models_on_different_data_are_ranked_apart_with_the_reason(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "sleep", """
name: sleep
data: {example: sleepstudy, na: per_model}
models:
  a: {formula: "Reaction ~ Days + (1|Subject)"}
  b: {formula: "np.log(Reaction) ~ Days + (1|Subject)"}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    first, second = out.record.ranking
    assert [r.model for r in first.rows] == ["a"] and [r.model for r in second.rows] == ["b"]
    assert all(r.best and r.weight == 1.0 for r in first.rows + second.rows)
    assert "fitted to different data than b (other rows, response values or prior weights)" in first.note
    assert out.record.models["b"].ml_refit is not None
