"""The Dask executor on a real LocalCluster gives the same record as fitting inline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.run.api import run_spec
from runner.run.options import RunOptions

SPEC = """
name: sleepdask
data: {example: sleepstudy}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slope: {formula: "Reaction ~ Days + (Days|Subject)"}
  zerocorr: {formula: "Reaction ~ Days + (Days||Subject)"}
compare: {tests: [[intercept, zerocorr], [zerocorr, slope]]}
"""


def _numbers(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("run")
    return data


def test_local_cluster_matches_inline(tmp_path):
    pytest.importorskip("dask.distributed")
    spec = tmp_path / "sleepdask.yaml"
    spec.write_text(SPEC)
    kw = dict(quiet=True, use_cache=False, report=False)
    local = run_spec(spec, RunOptions.of(tmp_path / "local", jobs=1, **kw))
    dask = run_spec(spec, RunOptions.of(tmp_path / "dask", jobs=2, executor="dask", **kw))
    assert local.exit_code == dask.exit_code == 0, dask.errors
    assert json.loads(dask.results_path.read_text())["run"]["executor"] == "dask"
    a, b = _numbers(local.results_path), _numbers(dask.results_path)
    assert a.keys() == b.keys()
    assert a == b  # DESIGN: everything outside `run` is byte-identical whatever the executor
    assert a["models"].keys() == b["models"].keys()
    for name in a["models"]:
        ma, mb = a["models"][name], b["models"][name]
        assert mb["status"] == "ok"
        for key in ("loglik", "objective", "aic", "bic", "sigma"):
            assert mb[key] == pytest.approx(ma[key], rel=1e-9, abs=1e-9), (name, key)
        assert mb["theta"] == pytest.approx(ma["theta"], rel=1e-7, abs=1e-9)
        assert [f["estimate"] for f in mb["fixed_effects"]] == pytest.approx(
            [f["estimate"] for f in ma["fixed_effects"]], rel=1e-9)
    assert [t["chisq"] for t in b["tests"]] == pytest.approx([t["chisq"] for t in a["tests"]], rel=1e-7, abs=1e-8)
    assert [r["model"] for r in b["ranking"][0]["rows"]] == [r["model"] for r in a["ranking"][0]["rows"]]
