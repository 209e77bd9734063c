"""What the report shows, computed from a ResultsRecord: rows of formatted cells, warnings, ICCs.

Pure functions of the record (no files, no plots), shared by the HTML page and the
Markdown summary so both say the same thing. Templates only lay these out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.report.format import (
    MISSING,
    fmt_ci,
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


@dataclass
class IccRow:
    id: str
    group: str
    variance: float
    icc: float


@dataclass
class IccView:
    rows: list[IccRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def fixed_effect_rows(model: ModelRecord) -> tuple[list[str], list[list[Cell]]]:
    """Fixed effects as lme4's summary() shows them, plus the interval."""
    stat = "t" if model.p_method and model.p_method.lower() not in {"wald-z", "z"} else "z"
    header = ["term", "estimate", "SE", stat, "df", "p", "95% CI"]
    rows = [
        [
            Cell(f.term, f.term, "name"),
            num(f.estimate),
            num(f.std_error),
            num(f.statistic),
            num(f.df),
            pval(f.p_value),
            Cell(fmt_ci(f.ci_low, f.ci_high), raw(f.ci_low), "n"),
        ]
        for f in model.fixed_effects
    ]
    return header, rows


@dataclass
class TableView:
    """An optional table of a model section: shown only when the record has its rows."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    cls: str
    caption: str | None = None


def inference_tables(model: ModelRecord) -> list[TableView]:
    """Type III F tests and confint() intervals, when the run computed them (empty lists otherwise).

    New optional result fields get a table here; the template lays out any TableView.
    """
    out = []
    if model.anova:
        out.append(TableView("Type III F tests", ["term", "num df", "den df", "F", "p"],
                             [[Cell(r.term, r.term, "name"), count(r.num_df), num(r.den_df), num(r.F), pval(r.p_value)]
                              for r in model.anova], "anova",
                             f"F tests of each term (lmerTest's anova, type III){_method(model.p_method)}."))
    if model.confint:
        out.append(TableView("Intervals", ["parameter", "estimate", "95% CI"],
                             [[Cell(r.parameter, r.parameter, "name"), num(r.estimate),
                               Cell(fmt_ci(r.low, r.high), raw(r.low), "n")] for r in model.confint], "confint",
                             f"95% intervals with lme4's confint() names{_method(model.ci_method)}."))
    ratio = {"logit": "Odds ratios", "log": "Rate ratios"}.get(model.link or "")
    if ratio and model.fixed_effects:  # GLMM: exp(beta) on the response scale, as users read them
        out.append(TableView(ratio, ["term", "exp(estimate)", "95% CI"],
                             [[Cell(f.term, f.term, "name"), num(_exp(f.estimate)),
                               Cell(fmt_ci(_exp(f.ci_low), _exp(f.ci_high)), raw(_exp(f.ci_low)), "n")]
                              for f in model.fixed_effects], "ratios",
                             f"{ratio}: exp of the {model.link}-scale estimates and of their Wald intervals "
                             f"(the intercept's is the baseline {'odds' if model.link == 'logit' else 'rate'})."))
    return out


def _exp(x: float | None) -> float | None:
    import math

    return None if x is None else math.exp(x) if x < 700 else math.inf


def _method(name: str | None) -> str:
    return f"; {name}" if name else ""


def inference_facts(model: ModelRecord) -> list[tuple[str, str]]:
    """Nakagawa's R2 and performance's ICC, when computed."""
    facts = []
    if model.family:  # GLMM header: what was fitted and how
        how = {0: "nAGQ = 0 (glmer's first stage)", 1: "Laplace approximation"}.get(
            model.nagq or 1, f"adaptive Gauss-Hermite quadrature, {model.nagq} points")
        facts.append(("Family", f"{model.family} ({model.link} link), maximum likelihood by {how}"
                                + (f"; success = {model.success_level}" if model.success_level else "")
                                + (f"; vcov from {'the Hessian' if model.vcov_method == 'hessian' else 'R_X'}"
                                   if model.vcov_method else "")))
    if model.r2 is not None:
        facts.append(("R² (Nakagawa)", f"marginal {fmt_num(model.r2.marginal, 3)}, "
                                       f"conditional {fmt_num(model.r2.conditional, 3)}"))
    if model.icc is not None:
        facts.append(("ICC (performance)", f"adjusted {fmt_num(model.icc.adjusted, 3)}, "
                                           f"unadjusted {fmt_num(model.icc.unadjusted, 3)}"))
    return facts


def fixed_caption(model: ModelRecord) -> str | None:
    """Say how p-values and intervals were computed, when the record says so."""
    parts = []
    if model.p_method:
        parts.append(f"p-values: {model.p_method}")
    if model.ci_method:
        parts.append(f"95% intervals: {model.ci_method}")
    return "; ".join(parts) + "." if parts else None


def random_effect_rows(model: ModelRecord) -> list[list[Cell]]:
    """VarCorr: variance and SD per term, correlation rows, the residual last."""
    rows = []
    for r in model.random_effects:
        levels = model.ngroups.get(r.group)
        group = r.group if r.id in (r.group, "Residual") else f"{r.group} ({r.id})"
        if r.term2 is not None:
            rows.append([text(group), text(f"{r.term} ↔ {r.term2}"), count(levels),
                         text(""), text(""), num(r.corr)])
        else:
            rows.append([text(group), text(r.term or ""), count(levels) if r.group != "Residual" else text(""),
                         num(r.variance), num(r.sd), text("")])
    return rows


def icc_view(model: ModelRecord) -> IccView:
    """ICC per intercept-only grouping factor: var_g / (sum of intercept variances + residual).

    With a random slope on a factor its variance share changes with the covariate, so
    that factor gets no ICC, and the page says why.
    """
    view = IccView()
    resid = next((r.variance for r in model.random_effects if r.group == "Residual" and r.term2 is None), None)
    terms: dict[str, list[str]] = {}
    group_of: dict[str, str] = {}
    intercepts: dict[str, float] = {}
    for r in model.random_effects:
        if r.group == "Residual" or r.term2 is not None:
            continue
        terms.setdefault(r.id, []).append(r.term)
        group_of[r.id] = r.group
        if r.term in INTERCEPT_NAMES and r.variance is not None:
            intercepts[r.id] = r.variance
    if resid is None or not terms:
        return view
    sloped_groups = {group_of[i] for i, ts in terms.items() if any(t not in INTERCEPT_NAMES for t in ts)}
    denom = resid + sum(intercepts.values())
    for i, ts in terms.items():
        g = group_of[i]
        if g in sloped_groups:
            slopes = [t for ts2 in (terms[j] for j in terms if group_of[j] == g) for t in ts2
                      if t not in INTERCEPT_NAMES]
            view.notes.append(
                f"No ICC for {i}: it has random slopes ({', '.join(dict.fromkeys(slopes))}), so its share "
                "of the variance depends on the covariate values (the origin)."
            )
        elif i in intercepts and denom > 0:
            view.rows.append(IccRow(i, g, intercepts[i], intercepts[i] / denom))
    if sloped_groups and view.rows:
        view.notes.append("With slopes in the model, the denominator uses the variances at covariate value 0.")
    return view


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
    parts = []
    if failed:
        parts.append(f"{len(failed)} failed model{'s' if len(failed) > 1 else ''}")
    if broken:
        parts.append(f"{len(broken)} expectation{'s' if len(broken) > 1 else ''} failed")
    return ("failed", ", ".join(parts)) if parts else ("ok", "ok")
