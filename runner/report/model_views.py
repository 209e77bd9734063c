"""What a model's section shows, computed from its ModelRecord: fixed and random effects,
ICCs, inference tables (F tests, intervals, ratios) and facts.

Pure functions of the record, like `views`; the page lays them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from runner.report.format import fmt_ci, fmt_num, raw
from runner.report.views import INTERCEPT_NAMES, Cell, count, num, pval, text
from runner.results import ModelRecord


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
    return None if x is None else math.exp(x) if x < 700 else math.inf


def _method(name: str | None) -> str:
    return f"; {name}" if name else ""


def inference_facts(model: ModelRecord) -> list[tuple[str, str]]:
    """Nakagawa's R2 and performance's ICC, when computed."""
    facts = []
    if model.family:  # GLMM header: what was fitted and how
        how = {0: "nAGQ = 0 (glmer's first stage)", 1: "Laplace approximation"}.get(
            model.nagq or 1, f"adaptive Gauss-Hermite quadrature, {model.nagq} points")
        facts.append(("family", f"{model.family} ({model.link} link), maximum likelihood by {how}"
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
    for i in terms:
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
