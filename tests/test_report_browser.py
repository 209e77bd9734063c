"""The students report in a real browser: headless Chromium (Debian's chromium + chromium-driver).

Checks what only a browser can: no console errors, the rendered DOM carries the
numbers of results.json, nothing overflows sideways at phone width (375 px), and
clicking a header sorts the table. A screenshot is saved under the test's tmp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_samples import students_results

from runner.report.api import render_index, render_spec_report
from runner.report.format import fmt_fixed, fmt_num, fmt_weight

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def students_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("reports")
    results = students_results(out / "students", failed_model=True)
    page = render_spec_report(results)
    render_index(out)
    return page, json.loads(results.read_text())


_VISIBLE_COLUMNS = """
const t = document.querySelector('table.' + arguments[0]);
return Array.from(t.querySelectorAll('thead th')).filter(th => th.getClientRects().length > 0)
            .map(th => th.textContent.trim());"""
_WIDEST_RIGHT_EDGE = """
const cells = document.querySelectorAll('table.' + arguments[0] + ' td, table.' + arguments[0] + ' th');
return Math.max(...Array.from(cells).filter(c => c.getClientRects().length > 0)
                                     .map(c => c.getBoundingClientRect().right));"""
_SCROLLS_SIDEWAYS = """
const tw = document.querySelector('table.' + arguments[0]).parentElement;
return tw.scrollWidth > tw.clientWidth;"""
_SMALLEST_PLOT_TEXT = """
let smallest = Infinity;
for (const svg of document.querySelectorAll('svg.plot')) {
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  for (const t of svg.querySelectorAll('text'))
    smallest = Math.min(smallest, parseFloat(getComputedStyle(t).fontSize) * scale);
}
return smallest;"""


def _set_width(drv, width: int) -> None:  # type: ignore[no-untyped-def]
    """Emulate a phone viewport; a headless window may refuse to get that narrow."""
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": True})


def test_students_report_in_chromium(driver, students_page: tuple[Path, dict], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    page, results = students_page
    driver.get(page.as_uri())
    assert driver.title == "Test scores by classroom, school and province — mixspec report"

    # no console errors (a broken sort script would show here)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []

    # key numbers in the DOM equal results.json
    rows = driver.find_elements(By.CSS_SELECTOR, "table.ranking tbody tr")
    ranking = results["ranking"][0]["rows"]
    assert len(rows) == len(ranking) == 2
    for tr, r in zip(rows, ranking):
        tds = tr.find_elements(By.TAG_NAME, "td")
        m = results["models"][r["model"]]
        assert tds[0].get_attribute("data-v") == r["model"]
        assert tds[4].text == fmt_fixed(r["loglik"]) and float(tds[4].get_attribute("data-v")) == r["loglik"]
        assert tds[5].text == fmt_fixed(m["ml_refit"]["aic"]) and float(tds[5].get_attribute("data-v")) == m["ml_refit"]["aic"]
        assert tds[7].text == fmt_fixed(r["delta"])
        assert tds[8].text == fmt_weight(r["weight"])
    assert rows[0].find_elements(By.TAG_NAME, "td")[5].text == "86,480.96"  # lme4's ML AIC of slopes
    assert "best" in rows[0].get_attribute("class")
    fixed = driver.find_elements(By.CSS_SELECTOR, "#model-1 table.fixed tbody tr")
    intercept = results["models"]["intercepts"]["fixed_effects"][0]
    first = fixed[0].find_elements(By.TAG_NAME, "td")
    assert first[1].text == fmt_num(intercept["estimate"]) == "25.60"
    assert float(first[1].get_attribute("data-v")) == intercept["estimate"]
    assert driver.find_element(By.ID, "status").text == "1 failed model"
    assert "LinAlgError" in driver.find_element(By.CSS_SELECTOR, ".error-box").text

    # clicking a header sorts: logLik ascending puts intercepts (-43,238.02) first
    header = driver.find_elements(By.CSS_SELECTOR, "table.ranking thead th")[4]
    header.click()
    names = [tr.find_element(By.TAG_NAME, "td").get_attribute("data-v")
             for tr in driver.find_elements(By.CSS_SELECTOR, "table.ranking tbody tr")]
    assert names == ["intercepts", "slopes"] and header.get_attribute("aria-sort") == "ascending"
    header.click()
    names = [tr.find_element(By.TAG_NAME, "td").get_attribute("data-v")
             for tr in driver.find_elements(By.CSS_SELECTOR, "table.ranking tbody tr")]
    assert names == ["slopes", "intercepts"] and header.get_attribute("aria-sort") == "descending"

    # at phone width nothing overflows sideways: wide tables scroll inside their wrappers
    _set_width(driver, 375)
    try:
        driver.get(page.as_uri())
        assert driver.execute_script("return window.innerWidth") == 375
        assert driver.execute_script("return document.documentElement.scrollWidth") <= 375
        plot_width = driver.execute_script(
            "return Math.max(...Array.from(document.querySelectorAll('svg.plot'), s => s.getBoundingClientRect().right))")
        assert plot_width <= 375
        # the columns an analyst needs are on screen without scrolling sideways, secondary ones hidden
        for table, needed, hidden in (("ranking", ["model", "AIC", "ΔAIC", "weight"], ["formula", "BIC"]),
                                      ("fixed", ["term", "estimate", "p", "95% CI"], ["SE", "df"]),
                                      ("tests", ["small", "large", "χ²", "p (boundary)"], ["logLik small"])):
            shown = driver.execute_script(_VISIBLE_COLUMNS, table)
            assert [h for h in needed if h in shown] == needed, (table, shown)
            assert not set(hidden) & set(shown), (table, shown)
            assert driver.execute_script(_WIDEST_RIGHT_EDGE, table) <= 375, table
            assert driver.execute_script(_SCROLLS_SIDEWAYS, table) is False, table
        ranking = driver.find_elements(By.CSS_SELECTOR, "table.ranking tbody tr")[0].find_elements(By.TAG_NAME, "td")
        assert [ranking[i].text for i in (5, 7, 8)] == ["86,480.96", "0.00", "0.989"]  # AIC, ΔAIC, weight on screen
        # every plot label is readable: rendered at 9 px or more after the plot is scaled to the screen
        smallest = driver.execute_script(_SMALLEST_PLOT_TEXT)
        assert smallest >= 9.0, smallest
        shot = tmp_path / "students-375.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.get(page.as_uri())
    shot = tmp_path / "students-1200.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []


@pytest.mark.slow
def test_index_page_links_and_print(driver, students_page: tuple[Path, dict], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    page, _ = students_page
    driver.get((page.parent.parent / "index.html").as_uri())
    link = driver.find_element(By.CSS_SELECTOR, "table.index a")
    assert link.text == "students"
    link.click()
    assert driver.current_url == page.as_uri()
    # print media: the nav is hidden and the page still lays out without errors
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert driver.find_element(By.CSS_SELECTOR, "nav.toc").is_displayed() is False
        pdf = driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})
        assert len(pdf["data"]) > 10_000
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []
