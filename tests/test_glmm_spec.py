"""GLMMs through the spec: family/link/nagq resolution, ML rules, comparisons, records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from run_helpers import run_quiet, write_spec
from runner.spec.errors import SpecError
from runner.spec.load import load_spec

ROOT = Path(__file__).resolve().parents[1]
HEAD = """name: g
data:
  example: cbpp
  categorical: {period: {}, herd: {}}
"""


def _issues(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(tmp_path, "g", HEAD + body))
    return [f"{i.path}: {i.message}" for i in info.value.issues]


def test_family_inherits_and_forces_ml(tmp_path: Path) -> None:
    loaded = load_spec(write_spec(tmp_path, "g", HEAD + """defaults: {family: binomial}
models:
  a: {formula: "incidence / size ~ period + (1|herd)", weights: size}
  b: {formula: "incidence / size ~ period + (1|herd)", weights: size, link: probit, nagq: 5}
  c: {formula: "incidence ~ period + (1|herd)", family: gaussian}
variants:
  d: {from: b, drop: [period]}
"""))
    a, b, c, d = (loaded.models[k] for k in "abcd")
    assert (a.family, a.link, a.nagq, a.method) == ("binomial", "logit", 1, "ML")
    assert (b.link, b.nagq) == ("probit", 5)
    assert (c.family, c.link, c.method) == ("gaussian", None, "REML")
    assert (d.family, d.link, d.nagq, d.method) == ("binomial", "probit", 5, "ML")
    assert not [w for w in loaded.warnings if "REML" in w.message]  # REML was not written


def test_inherited_reml_warns_written_reml_is_an_error(tmp_path: Path) -> None:
    loaded = load_spec(write_spec(tmp_path, "g", HEAD + """defaults: {method: REML}
models:
  a: {formula: "incidence / size ~ period + (1|herd)", weights: size, family: binomial}
"""))
    assert loaded.models["a"].method == "ML"
    assert any(w.severity == "warning" and "inherited method REML does not apply to a GLMM" in w.message
               for w in loaded.warnings)
    issues = _issues(tmp_path, """models:
  a: {formula: "incidence / size ~ period + (1|herd)", weights: size, family: binomial, method: REML}
""")
    assert issues == ["models.a.method: a GLMM (family binomial) is fitted by maximum likelihood, as lme4's "
                      "glmer: remove method: REML or write method: ML"]


def test_bad_link_nagq_engine(tmp_path: Path) -> None:
    issues = _issues(tmp_path, """models:
  a: {formula: "incidence / size ~ period + (1|herd)", weights: size, family: binomial, link: log}
  b: {formula: "incidence ~ period + (1|herd)", family: poisson, engine: statsmodels}
  c: {formula: "incidence ~ period + (1|herd)", link: logit}
  d: {formula: "incidence ~ period + (1|herd)", nagq: 3}
  e: {formula: "incidence ~ period + (1|herd)", family: poisson, nagq: 101}
""")
    text = "\n".join(issues)
    assert "models.a.link: link 'log' is not available for family binomial (choose logit, probit, cloglog)" in text
    assert "models.b.engine: engine statsmodels cannot fit a GLMM" in text
    assert "models.c.link: link 'logit' needs family binomial or poisson" in text
    assert "models.d.nagq: nagq applies to GLMMs" in text
    assert "models.e.nagq" in text


def test_listed_test_across_nagq_or_family_is_exit_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "g", HEAD + """defaults: {family: binomial}
models:
  a: {formula: "incidence / size ~ 1 + (1|herd)", weights: size}
  b: {formula: "incidence / size ~ period + (1|herd)", weights: size, nagq: 9}
  c: {formula: "incidence / size ~ period + (1|herd)", weights: size, family: gaussian}
compare:
  tests: [[a, b], [a, c]]
""")
    out = run_quiet(spec, tmp_path, out_dir=tmp_path / "reports")
    assert out.exit_code == 2
    text = "\n".join(out.errors)
    assert "a (binomial (logit, nagq 1)) and b (binomial (logit, nagq 9)) cannot be compared" in text
    assert "a (binomial (logit, nagq 1)) and c (gaussian) cannot be compared" in text


def test_example_spec_runs_and_records_glmm_fields(tmp_path: Path) -> None:
    spec = tmp_path / "cbpp.yaml"
    shutil.copy(ROOT / "specs" / "cbpp.yaml", spec)
    out = run_quiet(spec, tmp_path, out_dir=tmp_path / "reports")
    assert out.exit_code == 0, out.errors
    record = json.loads((tmp_path / "reports" / "cbpp" / "results.json").read_text())
    m = record["models"]["period"]
    assert (m["family"], m["link"], m["nagq"], m["method"], m["vcov_method"]) == ("binomial", "logit", 1, "ML",
                                                                                  "hessian")
    assert m["ml_refit"] is None and m["loglik_lme4"] is None
    assert m["loglik"] == pytest.approx(-92.02628, abs=1e-4)  # glmer (tolPwrss 1e-13): -92.02628
    assert all(r["group"] != "Residual" for r in m["random_effects"])
    agq = record["models"]["period_agq"]
    assert agq["loglik_lme4"] == pytest.approx(-50.00502, abs=1e-4)  # glmer nAGQ = 25
    assert [(t["small"], t["large"]) for t in record["tests"]] == [("herd_only", "period")]
    (group,) = record["ranking"]
    assert {r["model"] for r in group["rows"]} == {"period", "period_agq", "herd_only"}


@pytest.mark.parametrize("body, message", [
    ("  a: {formula: 'incidence / size ~ period + (1|herd)', family: binomial}",
     "'incidence/size' is a proportion (rows 1, 2, 3 ...: e.g. 0.142857) but no `weights:` were given"),
    ("  a: {formula: 'incidence ~ period + (1|herd)', family: binomial}",
     "family binomial needs 'incidence' between 0 and 1"),
    ("  a: {formula: 'incidence / size ~ period + (1|herd)', family: binomial, weights: herd_size}",
     "successes = 'incidence/size' x weights is not a whole number"),
    ("  a: {formula: 'incidence - 1 ~ period + (1|herd)', family: poisson}",
     "family poisson needs non-negative counts"),
    ("  a: {formula: 'incidence / 2 ~ period + (1|herd)', family: poisson}",
     "family poisson needs whole-number counts"),
])
def test_bad_glmm_response_is_exit_2(tmp_path: Path, body: str, message: str) -> None:
    data = tmp_path / "cbpp.csv"
    text = (ROOT / "runner" / "data" / "examples" / "cbpp.csv").read_text().splitlines()
    data.write_text("\n".join([text[0] + ",herd_size"] + [line + ",7.5" for line in text[1:]]) + "\n")
    spec = write_spec(tmp_path, "g", "name: g\ndata:\n  path: cbpp.csv\n  categorical: {period: {}, herd: {}}\n"
                      "models:\n" + body + "\n")
    out = run_quiet(spec, tmp_path, out_dir=tmp_path / "reports")
    assert out.exit_code == 2
    assert any(message in e for e in out.errors), out.errors


def test_binary_response_with_gaussian_warns(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "reference_glmm" / "data" / "binary.csv", tmp_path / "binary.csv")
    spec = write_spec(tmp_path, "lpm", "name: lpm\ndata:\n  path: binary.csv\nmodels:\n"
                      "  lpm: {formula: 'y ~ x + (1|subject)'}\n"
                      "  glmm: {formula: 'y ~ x + (1|subject)', family: binomial}\n")
    out = run_quiet(spec, tmp_path, out_dir=tmp_path / "reports")
    assert out.exit_code == 0
    warnings = json.loads((tmp_path / "reports" / "lpm" / "results.json").read_text())["warnings"]
    hits = [w for w in warnings if "did you mean `family: binomial`?" in w]
    assert len(hits) == 1 and "models.lpm" in hits[0]


def test_verify_on_a_glmm_warns_and_is_skipped(tmp_path: Path) -> None:
    loaded = load_spec(write_spec(tmp_path, "g", HEAD + """defaults: {verify: statsmodels}
models:
  a: {formula: "incidence / size ~ period + (1|herd)", weights: size, family: binomial}
  b: {formula: "incidence ~ period + (1|herd)"}
"""))
    assert loaded.models["a"].verify is None and loaded.models["b"].verify == "statsmodels"
    assert any("verify: statsmodels does not apply to a GLMM" in w.message and w.severity == "warning"
               for w in loaded.warnings)


def test_nagq_on_crossed_terms_is_exit_2(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "reference_glmm" / "data" / "binary.csv", tmp_path / "binary.csv")
    spec = write_spec(tmp_path, "q", "name: q\ndata:\n  path: binary.csv\nmodels:\n"
                      "  a: {formula: 'y ~ x + (1|subject) + (1|item)', family: binomial, nagq: 7}\n")
    out = run_quiet(spec, tmp_path, out_dir=tmp_path / "reports")
    assert out.exit_code == 2
    assert any("nagq: 7 (adaptive Gauss-Hermite quadrature) needs a single scalar random-effect term" in e
               for e in out.errors), out.errors
