"""summary() text laid out like lme4's summary(), and the notebook HTML of the same.

Why lme4's layout: the users this API is for read lme4 output daily; the same blocks in
the same order (criterion, scaled residuals, random effects, fixed effects, correlations)
let them compare at a glance.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns right-aligned except the first `left`, like R's print of a matrix."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        cells = [str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append(" " + " ".join(cells).rstrip())
    return out


def _random_rows(model: Any) -> list[list[str]]:
    fit = model.fit
    rows: list[list[str]] = []
    by_id: dict[str, list[Any]] = {}
    for r in fit.random_effects:
        by_id.setdefault(r.id, []).append(r)
    for items in by_id.values():
        sds = [r for r in items if r.term2 is None]
        pairs = {(r.term, r.term2): r.corr for r in items if r.term2 is not None}
        for i, r in enumerate(sds):
            corr = [pairs.get((sds[j].term, r.term)) for j in range(i)]
            shown = [f"{c:.2f}" if c is not None else "" for c in corr] if any(
                (a.term, b.term) in pairs for a in sds for b in sds) else []
            rows.append([r.group if i == 0 else "", r.term, f"{r.variance:.4g}", f"{r.sd:.4g}",
                         " ".join(shown)])
    has_corr = any(row[4] for row in rows)
    return [row if has_corr else row[:4] for row in rows]


def summary_text(model: Any) -> str:
    fit = model.fit
    lines = []
    family = fit.family or "gaussian"
    if family != "gaussian":
        approx = "Laplace Approximation" if (fit.nagq or 1) == 1 else f"Adaptive Gauss-Hermite Quadrature (nAGQ = {fit.nagq})"
        lines.append(f"Generalized linear mixed model fit by maximum likelihood ({approx}) ['glmerMod']")
        lines.append(f" Family: {family}  ( {fit.link} )")
    else:
        how = "REML" if fit.method == "REML" else "maximum likelihood "
        lines.append(f"Linear mixed model fit by {how} ['lmerMod']")
    lines.append(f"Formula: {fit.formula}")
    lines.append("")
    if fit.method == "REML":
        lines.append(f"REML criterion at convergence: {fit.objective:.1f}")
    else:
        dfres = fit.nobs - fit.npar
        lines += _table(["     AIC", "     BIC", "  logLik", "deviance", "df.resid"],
                        [[f"{fit.aic:.1f}", f"{fit.bic:.1f}", f"{fit.loglik:.1f}", f"{fit.objective:.1f}",
                          str(dfres)]], left=0)
    if fit.arrays is not None and family == "gaussian":
        r = np.asarray(fit.arrays.residuals, float)
        d = model.context.design
        if d.weights is not None:
            r = r * np.sqrt(d.weights)
        q = np.quantile(r / fit.sigma, [0, 0.25, 0.5, 0.75, 1])
        lines += ["", "Scaled residuals: "]
        lines += _table(["Min", "1Q", "Median", "3Q", "Max"], [[f"{v:.4f}" for v in q]], left=0)
    lines += ["", "Random effects:"]
    rows = _random_rows(model)
    header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] if rows and len(rows[0]) > 4 else [])
    lines += _table(header, rows, left=2)
    groups = ", ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    lines.append(f"Number of obs: {fit.nobs}, groups:  {groups}")
    lines += ["", "Fixed effects:"]
    fe = fit.fixed_effects
    lines += _table(["", "Estimate", "Std. Error", "t value" if family == "gaussian" else "z value"],
                    [[f.lme4_name, f"{f.estimate:.4g}" if abs(f.estimate) >= 1e4 else f"{f.estimate:.3f}",
                      f"{f.std_error:.3f}" if f.std_error is not None else "NA",
                      f"{f.statistic:.3f}" if f.statistic is not None else "NA"] for f in fe])
    if 1 < len(fe) <= 12:
        try:
            V = model.vcov().to_numpy()
            sd = np.sqrt(np.diag(V))
            C = V / np.outer(sd, sd)
            short = [_abbrev(f.lme4_name) for f in fe]
            lines += ["", "Correlation of Fixed Effects:"]
            rows_c = [[short[i]] + [f"{C[i, j]:.3f}" for j in range(i)] + [""] * (len(fe) - 1 - i)
                      for i in range(1, len(fe))]
            lines += _table([""] + short[:-1], rows_c)
        except Exception:  # the correlations are a courtesy; the numbers above stand
            pass
    warns = [w.message for w in fit.warnings if w.code != "few_levels"]
    if warns or not fit.converged:
        lines.append("")
        lines += [f"warning: {w}" for w in warns]
    return "\n".join(lines)


def _abbrev(name: str) -> str:
    """R's abbreviate(minlength = 6) for column labels, near enough: (Intercept) -> (Intr)."""
    if name == "(Intercept)":
        return "(Intr)"
    return name if len(name) <= 6 else name[:6]


def summary_html(model: Any) -> str:
    """The summary in a <pre> plus the two tables, for notebooks."""
    fe = model.fixed_effects[["lme4_name", "estimate", "std_error", "statistic", "p_value", "ci_low", "ci_high"]]
    re_ = model.random_effects.drop(columns=["id"]).astype(object).where(lambda f: f.notna(), "")
    return (f"<div class='mixspec-model'><pre>{html.escape(model.summary())}</pre>"
            f"<details><summary>fixed effects</summary>{fe.to_html(index=False)}</details>"
            f"<details><summary>random effects</summary>{re_.to_html(index=False)}</details></div>")
