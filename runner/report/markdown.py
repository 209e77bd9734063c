"""The Markdown summary of a run, for summary.md and $GITHUB_STEP_SUMMARY.

Short by design: status, ranking, tests, expectations, failures and warnings, then per
model its fixed effects with df and p, type III F tests, intervals and R2/ICC. Text
from the spec or the data is escaped so a model named `<script>` or a formula with
`|` cannot break the table or inject HTML into a CI page.
"""

from __future__ import annotations

import re

from runner.report import views
from runner.report.format import fmt_fixed, fmt_int, fmt_p, fmt_weight
from runner.results import ModelRecord, ResultsRecord

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


def _model(name: str, m: ModelRecord) -> list[str]:
    """One fitted model: fixed effects (df, p, interval), F tests, variance intervals, R2/ICC."""
    state = "" if m.converged is not False else " (did not converge)"
    family = f" · {m.family} ({m.link})" if m.family not in (None, "gaussian") else ""
    lines = [f"### {md(name)}{state}", "", f"{md_code(m.formula or '')}{family} · p: {md(m.p_method or '—')}"
             f" · intervals: {md(m.ci_method or '—')}", ""]
    stat = "z" if (m.p_method or "").startswith("wald") else "t"
    rows = [[md(fe.lme4_name), fmt_fixed(fe.estimate, 4), fmt_fixed(fe.std_error, 4), fmt_fixed(fe.df, 1),
             fmt_fixed(fe.statistic, 2), fmt_p(fe.p_value),
             f"[{fmt_fixed(fe.ci_low, 4)}, {fmt_fixed(fe.ci_high, 4)}]"] for fe in m.fixed_effects]
    lines += _table(["term", "estimate", "SE", "df", stat, "p", "CI"], rows, {1, 2, 3, 4, 5}) + [""]
    if m.anova:
        rows = [[md(a.term), fmt_int(a.num_df), fmt_fixed(a.den_df, 1), fmt_fixed(a.F, 3), fmt_p(a.p_value)]
                for a in m.anova]
        lines += ["Type III F tests:", "", *_table(["term", "num df", "den df", "F", "p"], rows, {1, 2, 3, 4}), ""]
    fixed_names = {fe.lme4_name for fe in m.fixed_effects}
    variance = [c for c in (m.confint or []) if c.parameter not in fixed_names  # Wald gives them no bounds
                and (c.low is not None or c.high is not None)]
    if variance:
        rows = [[md(c.parameter), fmt_fixed(c.estimate, 4), f"[{fmt_fixed(c.low, 4)}, {fmt_fixed(c.high, 4)}]"]
                for c in variance]
        lines += ["Variance parameters:", "", *_table(["parameter", "estimate", "CI"], rows, {1}), ""]
    if m.r2 is not None:
        icc = f"; ICC adjusted {fmt_fixed(m.icc.adjusted, 3)}, unadjusted {fmt_fixed(m.icc.unadjusted, 3)}" \
            if m.icc is not None else ""
        lines += [f"R² marginal {fmt_fixed(m.r2.marginal, 3)}, conditional {fmt_fixed(m.r2.conditional, 3)}{icc}", ""]
    return lines


def _models(record: ResultsRecord) -> list[str]:
    fitted = [(n, m) for n, m in record.models.items() if m.status == "ok"]
    if not fitted:
        return []
    out = ["## Models", ""]
    for name, m in fitted:
        out += _model(name, m)
    return out


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
    lines += _models(record)
    return "\n".join(lines).rstrip("\n") + "\n"
