"""What the report shows, computed from a ResultsRecord: rows of formatted cells, warnings, ICCs.

Pure functions of the record (no files, no plots), shared by the HTML page and the
Markdown summary so both say the same thing. Templates only lay these out.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.report.format import (
    MISSING,
    fmt_fixed,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_weight,
    raw,
)
from runner.results import ModelRecord, RankingGroup, RankingRow, ResultsRecord

INTERCEPT_NAMES = frozenset({"Intercept", "(Intercept)"})

# Columns a phone (<= 600 px) hides so the ones an analyst needs fit without sideways
# scrolling: model, criterion, delta and weight; term, estimate, p and interval; chi-square
# and p. A column not named here (a new field) stays visible everywhere.
SECONDARY = frozenset({"formula", "fit", "npar", "logLik", "BIC", "SE", "t", "z", "df", "source", "fits",
                       "logLik small", "logLik large", "levels", "variance", "p (naive)"})


def secondary_columns(header: list[str]) -> list[int]:
    """Positions of the columns hidden at phone width."""
    return [i for i, h in enumerate(header) if h in SECONDARY]


@dataclass(frozen=True)
class Cell:
    """A table cell: the text people read, the exact value sorting reads, a CSS class."""

    text: str
    v: str = ""
    cls: str = ""


def num(x: float | None, sig: int = 4) -> Cell:
    return Cell(fmt_num(x, sig), raw(x), "n")


def fixed(x: float | None, decimals: int = 2) -> Cell:
    return Cell(fmt_fixed(x, decimals), raw(x), "n")


def pval(p: float | None) -> Cell:
    return Cell(fmt_p(p), raw(p), "n")


def count(n: int | None) -> Cell:
    return Cell(fmt_int(n), raw(n), "n")


def text(s: str | None, cls: str = "") -> Cell:
    return Cell(s if s is not None else MISSING, "", cls)


@dataclass(frozen=True)
class Notice:
    """A warning shown at the top of the page: level 'error' (fails CI) or 'warn'."""

    level: str
    text: str
    model: str | None = None
    code: str | None = None  # a fit warning's code, so the same warning of many models merges
    message: str | None = None


def merged(found: list[Notice]) -> list[Notice]:
    """The page-top list: one line for a warning many models share ("Models a, b [few_levels]: ...").

    Why: five identical lines bury the one warning that differs; each model's own
    section still lists its warnings in full.
    """
    groups: dict[tuple[str, str, str], list[Notice]] = {}
    for n in found:
        if n.code is not None and n.model is not None and n.message is not None:
            groups.setdefault((n.level, n.code, n.message), []).append(n)
    out: list[Notice] = []
    for n in found:
        key = (n.level, n.code or "", n.message or "")
        if key not in groups or n.model is None:
            out.append(n)
            continue
        same = groups[key]
        if n is not same[0]:
            continue  # already merged into the line of its first model
        if len(same) == 1:
            out.append(n)
        else:
            names = ", ".join(m.model or "" for m in same)
            out.append(Notice(n.level, f"Models {names} [{n.code}]: {n.message}", None, n.code, n.message))
    return out


@dataclass
class RankingView:
    caption: str
    note: str | None
    criterion: str
    header: list[str]
    rows: list[list[Cell]]
    best_flags: list[bool]
    best: list[str]


def fit_label(row: RankingRow) -> str:
    """'ML refit', 'ML' or 'REML': which fit a ranking row's numbers come from."""
    return "ML refit" if row.fit_used == "ml_refit" else row.method


def ranking_caption(group: RankingGroup) -> str:
    """Say which fits the numbers come from: the classic trap is comparing REML criteria."""
    kinds = {fit_label(r) for r in group.rows}
    crit = group.rows[0].criterion if group.rows else "AIC"
    if kinds == {"ML refit"}:
        src = "ML refits of the REML fits (as lme4's anova() does); the REML estimates are in the model sections"
    elif kinds == {"ML"}:
        src = "each model's own ML fit"
    elif kinds == {"REML"}:
        src = "the models' own REML fits (refit: false); REML criteria compare only models with identical fixed effects"
    else:
        src = "ML: refits for the models fitted by REML, own fits for those fitted by ML (column 'fit')"
    return f"Ranked by {crit}; logLik, AIC and BIC come from {src}."


def _criteria(model: ModelRecord | None, row: RankingRow) -> tuple[float | None, float | None]:
    if model is None:
        return None, None
    if row.fit_used == "ml_refit" and model.ml_refit is not None:
        return model.ml_refit.aic, model.ml_refit.bic
    return model.aic, model.bic


def ranking_views(record: ResultsRecord) -> list[RankingView]:
    """One comparison table per ranking group (models fitted to the same rows)."""
    views = []
    for group in record.ranking:
        crit = group.rows[0].criterion if group.rows else "AIC"
        header = ["model", "formula", "fit", "npar", "logLik", "AIC", "BIC"]
        if crit == "AICc":
            header.append("AICc")
        header += [f"Δ{crit}", "weight"]
        rows, flags = [], []
        for r in group.rows:
            m = record.models.get(r.model)
            aic, bic = _criteria(m, r)
            cells = [
                Cell(r.model + (" ★" if r.best else ""), r.model, "name"),
                text(m.formula if m else None, "formula"),
                text(fit_label(r)),
                count(r.npar),
                fixed(r.loglik),
                fixed(aic),
                fixed(bic),
            ]
            if crit == "AICc":
                cells.append(fixed(r.value))
            cells += [fixed(r.delta), Cell(fmt_weight(r.weight), raw(r.weight), "n")]
            rows.append(cells)
            flags.append(r.best)
        best = [r.model for r in group.rows if r.best]
        views.append(RankingView(ranking_caption(group), group.note, crit, header, rows, flags, best))
    return views


TEST_HEADER = ["small", "large", "source", "fits", "npar", "logLik small", "logLik large",
               "χ²", "df", "p (naive)", "p (boundary)"]


def test_rows(record: ResultsRecord) -> list[list[Cell]]:
    """Likelihood-ratio tests: naive chi-square p beside the boundary-corrected one."""
    rows = []
    for t in record.tests:
        rows.append([
            Cell(t.small, t.small, "name"),
            Cell(t.large, t.large, "name"),
            text(t.source),
            text("ML refits" if t.refit_ml else t.method),
            Cell(" → ".join(fmt_int(n) for n in t.npar), raw(t.npar[-1] if t.npar else None), "n"),
            fixed(t.loglik[0] if t.loglik else None),
            fixed(t.loglik[1] if len(t.loglik) > 1 else None),
            fixed(t.chisq, 3),
            count(t.df),
            pval(t.p_value),
            pval(t.p_value_boundary),
        ])
    return rows


def test_notes(record: ResultsRecord) -> list[str]:
    """Each test's boundary reasoning and warnings, one line per test under the table
    (as a table column they made every row several lines tall)."""
    out = []
    for t in record.tests:
        note = "; ".join([t.boundary_note or "", *t.warnings]).strip("; ")
        if note:
            out.append(f"{t.small} vs {t.large}: {note}")
    return out


def notices(record: ResultsRecord) -> list[Notice]:
    """Everything a reader must see before trusting the numbers, errors first."""
    errors: list[Notice] = []
    warns: list[Notice] = []
    for name, m in record.models.items():
        if m.status == "failed":
            errors.append(Notice("error", f"Model {name} failed: {m.error or 'no message'}", name))
    for e in record.expectations:
        if not e.passed:
            errors.append(Notice("error", f"Expectation failed: {e.text} — {e.detail}"))
    dropped = {why: n for why, n in record.data.dropped.items() if n}
    if dropped:
        parts = ", ".join(f"{fmt_int(n)} {why}" for why, n in sorted(dropped.items()))
        total = sum(dropped.values())
        warns.append(Notice("warn", f"{fmt_int(total)} of {fmt_int(record.data.rows)} rows dropped ({parts}); "
                                    f"{fmt_int(record.data.rows_used)} rows used."))
    for w in record.warnings:
        warns.append(Notice("warn", w))
    for name, m in record.models.items():
        if m.status != "ok":
            continue
        if m.converged is False:
            msg = m.convergence.message if m.convergence and m.convergence.message else "see the model section"
            warns.append(Notice("warn", f"Model {name} did not converge: {msg}", name))
        if m.singular:
            warns.append(Notice("warn", f"Model {name}: singular fit (a variance at 0 or a correlation at ±1); "
                                        "consider a simpler random-effects structure.", name))
        for fw in m.warnings:
            if (fw.code == "singular" and m.singular) or (fw.code == "convergence" and m.converged is False):
                continue
            warns.append(Notice("warn", f"Model {name} [{fw.code}]: {fw.message}", name, fw.code, fw.message))
        if record.data.na == "per_model" and m.nobs is not None and m.nobs != record.data.rows_used:
            warns.append(Notice("warn", f"Model {name} used {fmt_int(m.nobs)} rows (na: per_model); it is "
                                        "compared only with models fitted to the same rows.", name))
        v = m.verify
        if v is not None and (v.flagged or v.status == "failed"):
            diffs = ", ".join(f"{k} {fmt_num(x, 2)}" for k, x in sorted(v.max_rel_diff.items()) if x is not None)
            detail = v.message or (f"largest relative differences: {diffs}" if diffs else v.status)
            warns.append(Notice("warn", f"Model {name}: verification with {v.engine} differs ({detail}).", name))
    return errors + warns


def report_title(record: ResultsRecord) -> str:
    """The spec's `report.title`, else its `title`, else its name."""
    return record.spec.report.title or record.spec.title or record.spec.name


def best_models(record: ResultsRecord) -> list[str]:
    return [r.model for g in record.ranking for r in g.rows if r.best]


def status_of(record: ResultsRecord) -> tuple[str, str]:
    """('ok'|'failed', human text) for the index page and the summary headline."""
    failed = [n for n, m in record.models.items() if m.status == "failed"]
    broken = [e for e in record.expectations if not e.passed]
    unconverged = [n for n, m in record.models.items() if m.status == "ok" and m.converged is False]
    # with no `expect: converged:` every model must converge (the run exits 1); with one, its
    # own pass/fail is in `broken` and a model it does not gate on is only noted
    gating = not any(e.text.startswith("converged") for e in record.expectations)
    parts = []
    if failed:
        parts.append(f"{len(failed)} failed model{'s' if len(failed) > 1 else ''}")
    if unconverged and gating:
        parts.append(f"{len(unconverged)} did not converge")
    if broken:
        parts.append(f"{len(broken)} expectation{'s' if len(broken) > 1 else ''} failed")
    if parts:
        return "failed", ", ".join(parts)
    return "ok", f"ok, {len(unconverged)} did not converge (not gating)" if unconverged else "ok"
