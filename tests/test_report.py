"""The HTML report and the Markdown summary, rendered from results.json + sidecars.

Inputs are realistic records built by `tests/report_samples.py` (lme4's numbers for the
students models, simulated residuals and modes). The page is checked through its DOM
(html5lib, strict), not by grepping: a number must sit in the right table cell.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import html5lib
import numpy as np
import pandas as pd
import pytest
from report_samples import insteval_results, sleepstudy_results, students_results

from runner.report import plots
from runner.report.api import render_index, render_spec_report
from runner.report.format import fmt_fixed, fmt_int, fmt_num, fmt_p, fmt_weight, raw
from runner.report.html import plot_svg
from runner.report.markdown import md, md_code, summary_markdown
from runner.report.model_views import icc_view
from runner.results import ResultsRecord

NS = "{http://www.w3.org/1999/xhtml}"


def parse_strict(html: str) -> ET.Element:
    """html5lib strict parsing: raises on any parse error."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=True).parse(html)


def text_of(el: ET.Element) -> str:
    return "".join(el.itertext()).strip()


def table_rows(doc: ET.Element, cls: str) -> list[list[ET.Element]]:
    """Body rows (as lists of td elements) of the tables with a class."""
    out = []
    for table in doc.iter(f"{NS}table"):
        if cls in (table.get("class") or "").split():
            for tr in table.iter(f"{NS}tr"):
                tds = list(tr.iter(f"{NS}td"))
                if tds:
                    out.append(tds)
    return out


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, ResultsRecord]:
    out = tmp_path_factory.mktemp("students")
    results = students_results(out, failed_model=True)
    page = render_spec_report(results)
    record = ResultsRecord.model_validate_json(results.read_text())
    return page, page.read_text(encoding="utf-8"), record


# ----------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    ("value", "expected"),
    [(25.5958267673007, "25.60"), (0.0948556233001239, "0.09486"), (612.100158, "612.1"), (86491.91, "86,492"),
     (-1.7913952462845, "-1.791"), (0.0, "0"), (1.23e-7, "1.230e-07"), (None, "—"), (float("nan"), "—"),
     (12345678.0, "1.235e+07")],
)
def test_fmt_num(value: float | None, expected: str) -> None:
    assert fmt_num(value) == expected


def test_fmt_p_weight_int_fixed() -> None:
    assert fmt_p(7.07e-10) == "< 0.001"
    assert fmt_p(0.0014453723194209) == "0.0014"
    assert fmt_p(0.800418431994874) == "0.800"
    assert fmt_p(None) == "—"
    assert fmt_weight(1e-20) == "< 0.001" and fmt_weight(0.98943) == "0.989" and fmt_weight(0.0) == "0.000"
    assert fmt_int(73421) == "73,421"
    assert fmt_fixed(-43231.4794423503) == "-43,231.48"
    assert raw(0.1) == "0.1" and raw(None) == "" and raw(7) == "7"


# ----------------------------------------------------------------- the spec page


def test_page_is_strict_valid_html(students: tuple[Path, str, ResultsRecord]) -> None:
    _, html, _ = students
    doc = parse_strict(html)
    assert doc.find(f"{NS}head/{NS}title") is not None
    assert len(re.findall(r"<script\b", html)) == 1  # only the sort script
    assert "http://" not in html.replace("http://www.w3.org/", "") and "https://" not in html  # no network


def test_ranking_numbers_equal_results(students: tuple[Path, str, ResultsRecord]) -> None:
    _, html, record = students
    rows = table_rows(parse_strict(html), "ranking")
    group = record.ranking[0]
    assert len(rows) == len(group.rows) == 2
    for tds, r in zip(rows, group.rows):
        m = record.models[r.model]
        assert m.ml_refit is not None
        assert text_of(tds[0]).removesuffix(" ★") == r.model
        assert text_of(tds[2]) == "ML refit"
        assert text_of(tds[4]) == fmt_fixed(r.loglik) and float(tds[4].get("data-v")) == r.loglik
        assert text_of(tds[5]) == fmt_fixed(m.ml_refit.aic)  # the ML refit's AIC, not the REML one
        assert text_of(tds[6]) == fmt_fixed(m.ml_refit.bic)
        assert text_of(tds[7]) == fmt_fixed(r.delta)
        assert text_of(tds[8]) == fmt_weight(r.weight)
    # literal values from lme4 (tests/reference/lrt.json): slopes best, AIC 86480.96 vs 86490.04
    best = rows[0]
    assert text_of(best[0]) == "slopes ★" and text_of(best[5]) == "86,480.96" and text_of(best[7]) == "0.00"
    assert text_of(rows[1][5]) == "86,490.04" and text_of(rows[1][7]) == "9.08"
    assert "ML refits of the REML fits" in html


def test_lrt_and_expectations(students: tuple[Path, str, ResultsRecord]) -> None:
    _, html, record = students
    doc = parse_strict(html)
    (tds,) = table_rows(doc, "tests")
    t = record.tests[0]
    assert text_of(tds[7]) == "13.079"  # lme4: chisq 13.0787766602152
    assert text_of(tds[9]) == "0.0014"  # lme4: p 0.0014453723194209
    assert text_of(tds[10]) == fmt_p(t.p_value_boundary) == "< 0.001"
    assert len(tds) == 11  # the boundary reasoning is a line under the table, not a column
    assert f"<li>{t.small} vs {t.large}: {t.boundary_note}</li>" in html
    exp = table_rows(doc, "expectations")
    assert [text_of(r[1]) for r in exp] == ["pass", "pass"]


def test_fixed_and_random_effects_tables(students: tuple[Path, str, ResultsRecord]) -> None:
    _, html, _ = students
    doc = parse_strict(html)
    fixed = table_rows(doc, "fixed")
    intercept = fixed[0]  # first model: intercepts
    assert [text_of(td) for td in intercept[:3]] == ["Intercept", "25.60", "1.786"]
    assert text_of(fixed[2][0]) == "sex[T.M]" and text_of(fixed[2][1]) == "-1.791"
    assert text_of(intercept[5]) == "< 0.001"
    assert text_of(intercept[6]) == "[22.10, 29.10]"  # 25.5958 -+ 1.96 * 1.7859
    rand = table_rows(doc, "random")
    assert [text_of(td) for td in rand[0]] == ["classroom", "Intercept", "192", "26.94", "5.190", ""]
    corr = next(r for r in rand if "↔" in text_of(r[1]))
    assert text_of(corr[5]) == "-0.8442"  # lme4: corr -0.844181514390997
    icc = table_rows(doc, "icc")
    # classroom ICC = 26.94 / (26.94 + 15.39 + 12.17 + 101.09) = 0.1732 (intercepts model)
    assert [text_of(td) for td in icc[0]] == ["classroom", "26.94", "0.173"]
    assert "No ICC for classroom: it has random slopes (age)" in html


def test_icc_values() -> None:
    rec = ResultsRecord.model_validate_json(students_results(Path(_tmp()) / "icc").read_text())
    view = icc_view(rec.models["intercepts"])
    total = 26.9407473980027 + 15.3854091071258 + 12.1699366082458 + 101.088383359767
    assert [r.id for r in view.rows] == ["classroom", "school", "province"]
    assert view.rows[0].icc == pytest.approx(26.9407473980027 / total, rel=1e-12)
    sloped = icc_view(rec.models["slopes"])
    assert [r.id for r in sloped.rows] == ["school", "province"]
    assert sloped.rows[0].icc == pytest.approx(15.4171919262938 / (87.3107120181322 + 15.4171919262938
                                                                   + 12.2943507306948 + 100.453636541429))


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="mixspec-report-")


def test_warnings_on_top_and_failed_model(students: tuple[Path, str, ResultsRecord]) -> None:
    _, html, _ = students
    doc = parse_strict(html)
    notices = [li for ul in doc.iter(f"{NS}ul") if ul.get("class") == "notices" for li in ul]
    first = text_of(notices[0])
    assert first.startswith("Error: Model all_slopes failed: LinAlgError: Cholesky")
    texts = [text_of(li) for li in notices]
    assert any("3 of 11,523 rows dropped (3 missing); 11,520 rows used." in t for t in texts)
    assert any("[scale_x]" in t for t in texts)
    # warnings come before the comparison table
    assert html.index("Model all_slopes failed") < html.index('id="comparison"')
    assert '<div class="error-box">LinAlgError: Cholesky factor not positive definite at theta=[...]</div>' in html
    assert 'id="status">1 failed model<' in html


def test_plots_present_and_summarized(students: tuple[Path, str, ResultsRecord]) -> None:
    page, html, _ = students
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    # per ok model: coefficient, residuals, QQ, 3 or 4 caterpillars
    assert len(svgs) == (1 + 2 + 3) + (1 + 2 + 3)
    assert "Showing the 50 levels with the largest |mode| of 192." in html
    assert "2D histogram of 11,520 rows" in html
    assert "500 quantiles of 11,520 residuals" in html
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert all(re.match(r'<svg class="plot" role="img" aria-label="[^"]+" viewBox="0 0 [\d.]+ [\d.]+"', s) for s in svgs)
    # students: 11,520 rows per model, so the residual plots are one raster each, not 11,520 dots
    assert html.count('href="data:image/png;base64,') == 2 * 2  # histogram and colour bar of each ok model
    assert (page.parent / "fits" / "slopes_ranef.parquet").is_file()


def test_deterministic_bytes(tmp_path: Path) -> None:
    results = sleepstudy_results(tmp_path)
    first = render_spec_report(results).read_bytes()
    second = render_spec_report(results).read_bytes()
    assert first == second
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_xss_is_escaped(tmp_path: Path) -> None:
    results = sleepstudy_results(tmp_path, hostile=True)
    html = render_spec_report(results).read_text(encoding="utf-8")
    parse_strict(html)
    assert "<script>alert(1)" not in html
    assert len(re.findall(r"<script\b", html)) == 1
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    # model name: ranking, test (small), expectation detail, nav link, section heading, status text; level: factors
    assert html.count(escaped) >= 6
    assert f"<title>Sleep {escaped} — mixspec report</title>" in html  # the spec's report.title
    svgs = re.findall(r"<svg\b.*?</svg>", html, re.S)
    kinds = {"coefficient plot", "residuals vs fitted", "normal QQ plot", "caterpillar plot"}
    hostile: dict[str, int] = {}
    for svg in svgs:
        label = re.match(r'<svg [^>]*aria-label="([^"]*)"', svg).group(1)  # type: ignore[union-attr]
        kind = next(k for k in kinds if label.startswith(k))
        if escaped in svg:
            hostile[kind] = hostile.get(kind, 0) + 1
    # every kind of plot carries the hostile text somewhere (a term, a level, a column, the model name), escaped
    assert set(hostile) == kinds, hostile
    # the hostile level is a tick label of every caterpillar: intercept 1, slopes 1, uncorrelated 2 (Subject, Subject.1)
    cats = [s for s in svgs if 'aria-label="caterpillar plot Subject' in s]
    assert len(cats) == 4 and all(f">{escaped}</text>" in c for c in cats)
    coefs = [s for s in svgs if 'aria-label="coefficient plot' in s]  # the term label is cut to 28 characters
    assert len(coefs) == 3 and all(">Days&lt;script&gt;alert(1)&lt;/scrip…</text>" in c for c in coefs)
    md_text = summary_markdown(ResultsRecord.model_validate_json(results.read_text()))
    assert "<script>" not in md_text and "\\<script\\>alert(1)\\</script\\>" in md_text


def test_every_plot_escapes_hostile_text() -> None:
    """Each plot function, fed hostile text wherever it takes text (model name, terms, levels,
    columns), renders it escaped. A new plot function fails here until it is added."""
    from runner.fit import FixedEffect

    evil = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    rng = np.random.default_rng(3)
    fixed = [FixedEffect(term=f"x{evil}"[:28], lme4_name="x", estimate=1.0, std_error=0.5, statistic=2.0,
                         p_value=0.05, ci_low=0.0, ci_high=2.0)]
    ranef = pd.DataFrame({"id": "g", "group": "g", "level": [evil, "b", "c"], "column": f"c{evil}",
                          "mode": [0.5, -0.2, 0.1], "cond_sd": 0.1})
    charts = {
        "coefficient_plot": plots.coefficient_plot(fixed, evil),
        "residual_plot": plots.residual_plot(rng.normal(size=50), rng.normal(size=50), evil),
        "qq_plot": plots.qq_plot(rng.normal(size=50), evil),
        "binned_residual_plot": plots.binned_residual_plot(rng.uniform(size=200), rng.normal(0, 0.3, 200), evil),
        "caterpillar_plot": plots.caterpillar_plot(ranef, evil, evil),
    }
    assert set(charts) == {name for name in plots.__all__ if name.endswith("_plot")}
    for name, chart in charts.items():
        assert chart is not None, name
        svg = plot_svg(chart)
        assert "<script" not in svg and escaped in svg, name
        parse_strict(f"<!DOCTYPE html><html><head><title>t</title></head><body>{svg}</body></html>")
    cat = plot_svg(charts["caterpillar_plot"])  # level, column (cut to 20 characters) and title, all escaped
    assert f">{escaped}</text>" in cat and ">c&lt;script&gt;alert(1)&lt;/…</text>" in cat


def test_report_section_title_and_caterpillar_levels(tmp_path: Path) -> None:
    """The spec's `report:` section, carried in results.json, sets the page title and caterpillar size."""
    results = students_results(tmp_path)
    data = json.loads(results.read_text())
    data["spec"]["report"] = {"title": "Scores, report view", "caterpillar_max_levels": 7}
    results.write_text(json.dumps(data))
    html = render_spec_report(results).read_text(encoding="utf-8")
    assert "<title>Scores, report view — mixspec report</title>" in html
    assert "Showing the 7 levels with the largest |mode| of 192." in html
    classroom = next(s for s in re.findall(r"<svg\b.*?</svg>", html, re.S)
                     if 'aria-label="caterpillar plot classroom of intercepts"' in s)
    modes = pd.read_parquet(tmp_path / "fits" / "intercepts_ranef.parquet").query("group == 'classroom'")
    top = modes.assign(a=modes["mode"].abs()).nlargest(7, "a").sort_values("mode", ascending=False)
    labels = re.findall(r'text-anchor="end">([^<]+)</text>', classroom)
    assert labels == list(top["level"])  # the 7 most extreme classrooms, largest mode on top
    assert summary_markdown(ResultsRecord.model_validate_json(results.read_text())).startswith(
        "# mixspec: Scores, report view\n")


def test_missing_sidecar_is_a_note(tmp_path: Path) -> None:
    results = sleepstudy_results(tmp_path)
    (tmp_path / "fits" / "intercept.parquet").unlink()
    html = render_spec_report(results).read_text(encoding="utf-8")
    assert "no fitted/residuals sidecar (intercept.parquet): its plots are not drawn" in html
    assert html.count("Residuals vs fitted values") == 2  # slopes and uncorrelated still have theirs
    assert "one point per row, 180 rows" in html


def _dots(svg: str) -> int:
    return len(re.findall(r"M[\d.]+ [\d.]+h0", svg))


def test_plot_sizes_summarize_big_data() -> None:
    rng = np.random.default_rng(1)
    n = 73421
    svg = plot_svg(plots.residual_plot(rng.normal(3, 0.5, n), rng.normal(0, 1, n)))
    assert len(svg) < 20_000 and _dots(svg) == 0  # one raster, not a point per row
    assert svg.count("<image") == 2  # the 2D histogram and its colour bar
    qq = plot_svg(plots.qq_plot(rng.normal(0, 1, n)))
    assert _dots(qq) == 500  # 500 quantiles, one dot each
    small = plot_svg(plots.residual_plot(np.arange(180.0), rng.normal(0, 1, 180)))
    assert _dots(small) == 180 and "<image" not in small
    levels = [f"s{i}" for i in range(2972)]
    frame = pd.DataFrame({"id": "s", "group": "s", "level": levels, "column": "Intercept",
                          "mode": rng.normal(0, 0.3, 2972), "cond_sd": 0.1})
    cat = plots.caterpillar_plot(frame, "s")
    assert cat is not None and "Showing the 50 levels with the largest |mode| of 2,972." in cat.caption
    shown = re.findall(r">(s\d+)</text>", plot_svg(cat))
    top = frame.assign(a=frame["mode"].abs()).nlargest(50, "a").sort_values("mode", ascending=False)
    assert shown == list(top["level"])  # exactly the 50 most extreme levels, largest mode on top


def test_plot_geometry_matches_the_data() -> None:
    """A dot sits where its value maps: read the coefficient plot's dots back through its axis ticks."""
    from runner.fit import FixedEffect

    def fe(term: str, estimate: float, low: float | None, high: float | None) -> FixedEffect:
        return FixedEffect(term=term, lme4_name=term, estimate=estimate, std_error=None, statistic=None,
                           p_value=None, ci_low=low, ci_high=high)

    fixed = [fe("Intercept", 250.0, None, None), fe("Days", 10.5, 7.5, 13.5), fe("Night", -4.0, -6.0, -2.0)]
    chart = plots.coefficient_plot(fixed, "m")
    assert chart is not None and "The intercept is omitted" in chart.caption
    svg = plot_svg(chart)
    ticks = {float(v.replace(",", "")): float(x) for x, v in
             re.findall(r'<text class="tick" x="([\d.]+)" y="[\d.]+" text-anchor="middle">([-\d.,]+)</text>', svg)}
    (a, xa), (b, xb) = sorted(ticks.items())[:2]
    to_data = lambda px: a + (px - xa) * (b - a) / (xb - xa)  # noqa: E731
    dots = [float(x) for x in re.findall(r"M([\d.]+) [\d.]+h0", svg)]
    assert [round(to_data(x), 1) for x in dots] == [10.5, -4.0]
    bars = re.findall(r"M([\d.]+) [\d.]+H([\d.]+)", svg)
    assert [(round(to_data(float(lo)), 1), round(to_data(float(hi)), 1)) for lo, hi in bars] == [(7.5, 13.5),
                                                                                                (-6.0, -2.0)]
    assert re.findall(r'text-anchor="end">([^<]+)</text>', svg) == ["Days", "Night"]


def test_each_plot_takes_milliseconds(tmp_path: Path) -> None:
    """The students page draws 12 plots from 11,520-row sidecars; matplotlib took ~0.3 s per plot.
    A loose bound (the benchmark measures properly): 12 plots and the page in well under 2 s."""
    results = students_results(tmp_path)
    render_spec_report(results)  # templates compiled, modules imported
    t0 = time.perf_counter()
    render_spec_report(results)
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.slow
def test_insteval_sized_page_under_2mb(tmp_path: Path) -> None:
    results = insteval_results(tmp_path, models=2)
    t0 = time.perf_counter()
    page = render_spec_report(results)
    seconds = time.perf_counter() - t0
    size = page.stat().st_size
    assert size < 2_000_000, size
    html = page.read_text(encoding="utf-8")
    parse_strict(html)
    assert "Showing the 50 levels with the largest |mode| of 2,972." in html
    assert "2D histogram of 73,421 rows" in html
    assert seconds < 30  # the benchmark measures it properly; this only catches a pathological slowdown


# ----------------------------------------------------------------- index and Markdown


def test_index_lists_specs(tmp_path: Path) -> None:
    students_results(tmp_path / "students", failed_model=True)
    ok = students_results(tmp_path / "other")
    data = json.loads(ok.read_text())
    data["spec"]["name"] = "other"
    ok.write_text(json.dumps(data))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{not json")
    page = render_index(tmp_path)
    html = page.read_text(encoding="utf-8")
    doc = parse_strict(html)
    rows = table_rows(doc, "index")
    assert [text_of(r[0]) for r in rows] == ["other", "students"]
    assert [text_of(r[2]) for r in rows] == ["slopes", "slopes"]
    assert [text_of(r[3]) for r in rows] == ["ok", "1 failed model"]
    links = [a.get("href") for a in doc.iter(f"{NS}a")]
    assert links == ["other/index.html", "students/index.html"]
    assert "broken/results.json unreadable" in html


def test_summary_markdown(students: tuple[Path, str, ResultsRecord]) -> None:
    _, _, record = students
    text = summary_markdown(record)
    assert text.startswith("# mixspec: Test scores by classroom, school and province\n")
    assert "❌ **1 failed model**" in text
    lines = text.splitlines()
    best = next(line for line in lines if line.startswith("| **slopes**"))
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", best)[1:-1]]
    assert cells[0] == "**slopes** ★"
    assert cells[1] == "`test_score ~ age + sex + (age \\| classroom) + (1 \\| school) + (1 \\| province)`"
    assert cells[2:] == ["ML refit", "9", "-43,231.48", "86,480.96", "0.00", "0.989"]
    assert "| intercepts | slopes | ML refits | 7 → 9 | 13.079 | 2 | 0.0014 | < 0.001 |" in text
    assert "- ❌ Model all\\_slopes failed: LinAlgError: Cholesky factor not positive definite at theta=\\[...\\]" in text
    assert "- ✅ pass: `best: slopes` — best by AIC is slopes" in text
    assert summary_markdown(record) == text


def test_markdown_escaping() -> None:
    assert md("a|b <i> *x*") == "a\\|b \\<i\\> \\*x\\*"
    assert md_code("y ~ (1|g)") == "`y ~ (1\\|g)`"


def test_report_never_imports_engines_or_runner() -> None:
    src = Path(__file__).resolve().parents[1] / "runner" / "report"
    for path in src.glob("*.py"):
        code = path.read_text()
        assert "runner.engines" not in code and "runner.run" not in code, path.name


def test_shared_warning_merges_at_the_top_but_stays_per_model() -> None:
    from runner.report.views import Notice, merged

    found = [Notice("error", "Model c failed: boom", "c"),
             Notice("warn", "Model a [few_levels]: province has 8 levels", "a", "few_levels", "province has 8 levels"),
             Notice("warn", "Model a [scale]: x is large", "a", "scale", "x is large"),
             Notice("warn", "Model b [few_levels]: province has 8 levels", "b", "few_levels", "province has 8 levels")]
    top = merged(found)
    assert [n.text for n in top] == ["Model c failed: boom",
                                     "Models a, b [few_levels]: province has 8 levels",
                                     "Model a [scale]: x is large"]


def test_written_files_get_ordinary_permissions(students: tuple[Path, str, ResultsRecord]) -> None:
    """Atomic writes go through mkstemp (mode 0600); the published page, results.json and
    sidecars must be readable as the umask says (a web server serving reports/ reads them)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    page = students[0]
    written = [page, page.parent / "results.json", *sorted((page.parent / "fits").glob("*.parquet"))]
    assert len(written) > 2
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path.name


@pytest.mark.parametrize("case,example,formula", [
    ("dyestuff", "Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    ("penicillin_crossed", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("pastes_nested", "Pastes", "strength ~ 1 + (1 | batch/cask)"),
    ("students_intercepts", "students", "test_score ~ age + sex + (1|classroom) + (1|school) + (1|province)"),
])
def test_icc_per_factor_sums_to_the_adjusted_icc_of_performance(tmp_path: Path, case: str, example: str,
                                                                   formula: str) -> None:
    """Per-factor ICCs of an intercept-only model add up to R performance::icc()'s adjusted ICC
    (tests/reference/inference.json, from lme4's fit of the same model)."""
    from run_helpers import run_quiet, write_spec

    spec = write_spec(tmp_path, "icc", f"data: {{example: {example}}}\nmodels:\n  m: {{formula: '{formula}'}}\n")
    record = ResultsRecord.model_validate_json(run_quiet(spec, tmp_path).results_path.read_text())
    view = icc_view(record.models["m"])
    assert view.rows and not view.notes
    reference = json.loads((Path(__file__).parent / "reference" / "inference.json").read_text())[case]["icc"]
    assert sum(r.icc for r in view.rows) == pytest.approx(reference["adjusted"], rel=1e-4)


def test_inference_results_get_their_tables(tmp_path: Path) -> None:
    """F tests, intervals, R2 and ICC (lmerTest, lme4 and performance's numbers from the
    references) appear when a record carries them, each number in its own cell."""
    root = Path(__file__).parent
    anova = json.loads((root / "reference_inference" / "anova.json").read_text())["students_age_sex"]
    ref = json.loads((root / "reference" / "inference.json").read_text())["students_intercepts"]
    results = students_results(tmp_path)
    data = json.loads(results.read_text())
    m = data["models"]["intercepts"]
    m["anova"] = anova["anova_satterthwaite"]
    estimates = {r["term"]: r["estimate"] for r in ref["satterthwaite"]}
    m["confint"] = [{"parameter": r["parameter"], "estimate": estimates[r["parameter"]], "low": r["low"],
                     "high": r["high"]} for r in ref["profile_ci"] if r["parameter"] in estimates]
    m["r2"], m["icc"] = ref["r2_nakagawa"], ref["icc"]
    results.write_text(json.dumps(data))
    html = render_spec_report(results).read_text(encoding="utf-8")
    doc = parse_strict(html)
    rows = table_rows(doc, "anova")
    assert [[text_of(td) for td in r] for r in rows] == [
        ["age", "1", "11,343", "454.1", "< 0.001"],  # lmerTest: F 454.09, den df 11342.89
        ["sex", "1", "11,342", "0.5356", "0.464"],
        ["age:sex", "1", "11,342", "0.007671", "0.930"]]
    assert float(rows[1][3].get("data-v")) == 0.535579441895553
    confint = table_rows(doc, "confint")
    assert [[text_of(td) for td in r] for r in confint] == [
        ["(Intercept)", "25.60", "[22.06, 29.13]"], ["age", "2.021", "[1.835, 2.207]"],
        ["sexM", "-1.791", "[-2.168, -1.414]"]]
    assert "R² (Nakagawa)</dt><dd>marginal 0.0303, conditional 0.370</dd>" in html
    assert "ICC (performance)</dt><dd>adjusted 0.350, unadjusted 0.340</dd>" in html
    assert html.count("Type III F tests") == 1  # only the model that has them


def test_report_section_of_a_spec_reaches_the_page(tmp_path: Path) -> None:
    """`report: {title, caterpillar_max_levels}` in a spec: recorded in results.json by the run,
    used by the page it renders and again by `mixspec report` (which reads only results.json)."""
    from run_helpers import run_quiet, write_spec

    spec = write_spec(tmp_path, "sleep", "data: {example: sleepstudy}\n"
                                         "report: {title: Sleep deprived, caterpillar_max_levels: 5}\n"
                                         "models:\n  m: {formula: 'Reaction ~ Days + (1|Subject)'}\n")
    outcome = run_quiet(spec, tmp_path, report=True)
    assert outcome.exit_code == 0 and outcome.results_path is not None
    record = json.loads(outcome.results_path.read_text())
    assert record["spec"]["report"] == {"title": "Sleep deprived", "caterpillar_max_levels": 5}
    for _ in range(2):  # as the run wrote it, then re-rendered from results.json alone
        html = (outcome.results_path.parent / "index.html").read_text(encoding="utf-8")
        assert "<title>Sleep deprived — mixspec report</title>" in html
        assert "Showing the 5 levels with the largest |mode| of 18." in html
        ranef = pd.read_parquet(outcome.results_path.parent / "fits" / "m_ranef.parquet")
        top = ranef.assign(a=ranef["mode"].abs()).nlargest(5, "a").sort_values("mode", ascending=False)
        cat = next(s for s in re.findall(r"<svg\b.*?</svg>", html, re.DOTALL) if "caterpillar plot" in s)
        assert re.findall(r'text-anchor="end">([^<]+)</text>', cat) == list(top["level"].astype(str))
        render_spec_report(outcome.results_path)
