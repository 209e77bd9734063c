"""The Markdown summary of a run, for summary.md and $GITHUB_STEP_SUMMARY.

Short by design: status, ranking, tests, expectations, failures and warnings. Text
from the spec or the data is escaped so a model named `<script>` or a formula with
`|` cannot break the table or inject HTML into a CI page.
"""

from __future__ import annotations

import re

from runner.report import views
from runner.report.format import fmt_fixed, fmt_int, fmt_p, fmt_weight
from runner.results import ResultsRecord

_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~!&$])")


def md(text: str) -> str:
    """Escape Markdown and inline HTML in plain text (also safe inside table cells)."""
    return _SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def md_code(text: str) -> str:
    """A code span; `|` is escaped because GFM splits table cells before code spans."""
    body = text.replace("\n", " ").replace("|", "\\|")
    fence = "``" if "`" in body else "`"
    return f"{fence} {body} {fence}" if fence == "``" else f"`{body}`"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _ranking(record: ResultsRecord) -> list[str]:
    out: list[str] = ["## Ranking", ""]
    if not record.ranking:
        return out + ["No ranking: fewer than two models could be compared.", ""]
    for k, group in enumerate(record.ranking, start=1):
        if len(record.ranking) > 1:
            out += [f"### Group {k}", ""]
        crit = group.rows[0].criterion if group.rows else "AIC"
        rows = []
        for r in group.rows:
            m = record.models.get(r.model)
            rows.append([
                ("**" + md(r.model) + "** ★") if r.best else md(r.model),
                md_code(m.formula) if m else "",
                views.fit_label(r),
                fmt_int(r.npar),
                fmt_fixed(r.loglik),
                fmt_fixed(r.value),
                fmt_fixed(r.delta),
                fmt_weight(r.weight),
            ])
        out += _table(["model", "formula", "fit", "npar", "logLik", crit, f"Δ{crit}", "weight"], rows,
                      {3, 4, 5, 6, 7})
        out += ["", md(views.ranking_caption(group)), ""]
        if group.note:
            out += [md(group.note), ""]
    return out


def _tests(record: ResultsRecord) -> list[str]:
    if not record.tests:
        return []
    rows = [[
        md(t.small), md(t.large), "ML refits" if t.refit_ml else t.method,
        " → ".join(fmt_int(n) for n in t.npar), fmt_fixed(t.chisq, 3), fmt_int(t.df),
        fmt_p(t.p_value), fmt_p(t.p_value_boundary), md(t.boundary_note or ""),
    ] for t in record.tests]
    header = ["small", "large", "fits", "npar", "χ²", "df", "p (naive)", "p (boundary)", "note"]
    return ["## Likelihood-ratio tests", "", *_table(header, rows, {3, 4, 5, 6, 7}), ""]


def _expectations(record: ResultsRecord) -> list[str]:
    if not record.expectations:
        return []
    lines = ["## Expectations", ""]
    for e in record.expectations:
        mark = "✅ pass" if e.passed else "❌ **FAIL**"
        lines.append(f"- {mark}: {md_code(e.text)} — {md(e.detail)}")
    return lines + [""]


def _notices(record: ResultsRecord) -> list[str]:
    found = views.merged(views.notices(record))
    if not found:
        return []
    lines = ["## Failures and warnings", ""]
    for n in found:
        lines.append(f"- {'❌' if n.level == 'error' else '⚠️'} {md(n.text)}")
    return lines + [""]


def summary_markdown(record: ResultsRecord) -> str:
    """The whole summary as Markdown text (ends with a newline)."""
    status, status_text = views.status_of(record)
    title = views.report_title(record)
    ok = sum(1 for m in record.models.values() if m.status == "ok")
    best = ", ".join(md(b) for b in views.best_models(record)) or "—"
    lines = [
        f"# mixspec: {md(title)}",
        "",
        f"{'✅' if status == 'ok' else '❌'} **{md(status_text)}** · spec {md_code(record.spec.name)} · "
        f"{ok} of {len(record.models)} models fitted · {fmt_int(record.data.rows_used)} rows used · best: {best}",
        "",
    ]
    lines += _notices(record)
    lines += _ranking(record)
    lines += _tests(record)
    lines += _expectations(record)
    return "\n".join(lines).rstrip("\n") + "\n"
