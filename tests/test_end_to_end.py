"""The product path, for real: `mixspec run specs/students.yaml` in a subprocess, its
results.json against lme4 1.1-31, and the page it wrote opened in headless Chromium.

No synthetic records here: every number on the page came out of the native engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.report.format import fmt_fixed, fmt_num

ROOT = Path(__file__).resolve().parent.parent
REF = ROOT / "tests" / "reference"


def reference(case: str) -> dict:
    return json.loads((REF / f"{case}.json").read_text())


@pytest.fixture(scope="module")
def students_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("reports")
    cache = tmp_path_factory.mktemp("cache")
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(ROOT / "specs" / "students.yaml"), "--out", str(out),
         "--cache-dir", str(cache), "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    results = out / "students" / "results.json"
    return out, json.loads(results.read_text()) if results.exists() else {}, proc


def test_students_run_exits_0_and_matches_lme4(students_run) -> None:  # type: ignore[no-untyped-def]
    out, record, proc = students_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    models = record["models"]
    assert set(models) == {"intercepts", "slopes", "slopes_diag", "no_sex", "student"}
    assert all(m["status"] == "ok" and m["converged"] for m in models.values())
    # REML fits against lme4's own numbers
    for name, case in (("intercepts", "students_intercepts"), ("student", "students_repeated"),
                       ("slopes", "students_slopes")):
        ref = reference(case)
        assert models[name]["objective"] <= ref["objective"] + 1e-4
        assert models[name]["objective"] == pytest.approx(ref["objective"], abs=1e-3)
        estimates = {f["lme4_name"]: f["estimate"] for f in models[name]["fixed_effects"]}
        for fe in ref["fixed_effects"]:  # within 1e-3 of lme4's SE
            assert abs(estimates[fe["term"]] - fe["estimate"]) <= 1e-3 * fe["std_error"]
    # ranking on ML refits, as lme4's anova(): the design card's numbers
    rows = record["ranking"][0]["rows"]
    assert rows[0]["model"] == "student" and rows[0]["best"]
    aic = {r["model"]: r["value"] for r in rows}
    assert aic["student"] == pytest.approx(85220.9, abs=0.05)
    assert aic["slopes"] == pytest.approx(86480.96, abs=0.01)
    # intercepts vs slopes: lme4's anova() (tests/reference/lrt.json)
    lrt = json.loads((REF / "lrt.json").read_text())["students_slope"]
    test = next(t for t in record["tests"] if (t["small"], t["large"]) == ("intercepts", "slopes"))
    assert test["chisq"] == pytest.approx(lrt["chisq"], abs=1e-3)
    assert test["df"] == lrt["df"]
    assert test["p_value"] == pytest.approx(lrt["p_value"], rel=1e-3)
    assert test["p_value_boundary"] < test["p_value"]
    assert all(e["passed"] for e in record["expectations"])
    assert (out / "students" / "summary.md").exists() and (out / "index.html").exists()


@pytest.mark.browser
def test_students_page_in_chromium(driver, students_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    out, record, _ = students_run
    page = out / "students" / "index.html"
    driver.get(page.as_uri())
    assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []
    rows = driver.find_elements(By.CSS_SELECTOR, "table.ranking tbody tr")
    ranking = record["ranking"][0]["rows"]
    assert [r.find_element(By.TAG_NAME, "td").get_attribute("data-v") for r in rows] == [r["model"] for r in ranking]
    for tr, r in zip(rows, ranking):
        tds = tr.find_elements(By.TAG_NAME, "td")
        assert tds[4].text == fmt_fixed(r["loglik"])
        assert float(tds[5].get_attribute("data-v")) == r["value"]
    assert driver.find_element(By.CSS_SELECTOR, ".best-model").text == "student"
    first_model = next(iter(record["models"]))
    intercept = record["models"][first_model]["fixed_effects"][0]
    cell = driver.find_elements(By.CSS_SELECTOR, "#model-1 table.fixed tbody tr")[0].find_elements(By.TAG_NAME, "td")[1]
    assert cell.text == fmt_num(intercept["estimate"])
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 375, "height": 800, "deviceScaleFactor": 1, "mobile": True})
    try:
        driver.get(page.as_uri())
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 375
        shot = tmp_path / "students-real-375.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
