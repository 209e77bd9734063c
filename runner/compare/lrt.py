"""Likelihood-ratio tests exactly as lme4's anova(), plus the boundary-aware p-value.

chisq = 2 (logLik_large - logLik_small), df = npar_large - npar_small, naive p from
chi2(df); both fits ML by default (lme4 refits REML fits with ML). When the larger
model adds a variance parameter that is 0 under the null (on the boundary of its
space), the naive p is conservative; the asymptotic null is a chi-bar-square
mixture (Self and Liang 1987; Stram and Lee 1994):

    one added variance (a new scalar term):        0.5 chi2(0) + 0.5 chi2(1)
    a slope added to a term with q columns (q covariances come along): 0.5 chi2(q) + 0.5 chi2(q+1)

It is used only where that theory holds: ML fits, independent clusters (nested
grouping factors), the models differing in one grouping factor's term, the null
fit not singular. Otherwise `p_value_boundary` is null and `boundary_note` says
why as `code: message`. A test of a correlation alone is interior: naive p; so is
a test of equal variances (identity) against free variances or a covariance
structure on the same columns.

Terms are compared after normalization: a diagonal term on k columns is the same
model as k independent one-column terms (`diag(1 + x | g)` is `(1|g) + (0 + x|g)`,
as `(x || g)` writes it), so it is split into them; a one-column term has one
variance whatever its covariance label. The same model written either way thus
gets the same classification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.distributions import chi2_sf

from runner.compare.shapes import TermShape, by_group
from runner.results import TestRecord

FEW_LEVELS = 10


@dataclass(frozen=True)
class LRTSide:
    """One model of a test, with the fit the test uses (ML unless refit: false)."""

    name: str
    loglik: float
    npar: int
    method: str
    singular: bool = False
    converged: bool = True
    terms: tuple[TermShape, ...] = ()
    ngroups: dict[str, int] = field(default_factory=dict)
    fixed_key: str = ""
    independent_clusters: bool = True  # grouping factors nested in one another (no crossing)


@dataclass(frozen=True)
class Boundary:
    """Result of the boundary analysis: a mixture (k, k+1) or a reason there is none."""

    mixture: tuple[int, int] | None
    code: str
    message: str
    group: str | None = None


def chibar_p(chisq: float, k: int) -> float:
    """P(X >= chisq) for X ~ 0.5 chi2(k) + 0.5 chi2(k+1); chi2(0) is a point mass at 0."""
    low = (1.0 if chisq <= 0 else 0.0) if k == 0 else float(chi2_sf(chisq, k))
    return 0.5 * low + 0.5 * float(chi2_sf(chisq, k + 1))


def normalize_terms(terms: tuple[TermShape, ...] | list[TermShape]) -> list[TermShape]:
    """Terms in a canonical form: diagonal terms split into one-column terms, and every
    one-column term labelled unstructured (its one variance is free either way).

    Exact for any columns: a diagonal covariance has one free variance per column and
    no covariances, which is what separate one-column terms on the same factor give.
    (lme4's `||` keeps a factor's columns together in one unstructured term; that term
    is not diagonal and is left as it is.)
    """
    out: list[TermShape] = []
    for t in terms:
        if len(t.columns) == 1 or t.covariance == "diagonal":
            out.extend(TermShape(t.group, (c,), "unstructured") for c in t.columns)
        else:
            out.append(t)
    return out


def _diff_terms(small: list[TermShape], large: list[TermShape]) -> tuple[list[TermShape], list[TermShape]]:
    """Terms only in small and only in large (multiset difference)."""
    rest = list(large)
    only_small = []
    for t in small:
        if t in rest:
            rest.remove(t)
        else:
            only_small.append(t)
    return only_small, rest


def classify_boundary(small: LRTSide, large: LRTSide) -> Boundary:
    """Which boundary mixture applies to this pair, structurally (no p-values here)."""
    sg, lg = by_group(tuple(normalize_terms(small.terms))), by_group(tuple(normalize_terms(large.terms)))
    changed = sorted(g for g in set(sg) | set(lg) if sorted(map(repr, sg.get(g, []))) != sorted(map(repr, lg.get(g, []))))
    if small.fixed_key != large.fixed_key:
        if not changed:
            return Boundary(None, "interior", "only fixed effects differ: no variance on the boundary, the naive p is right")
        return Boundary(None, "fixed_and_random_differ", "fixed and random effects both differ: no chi-bar-square theory applied")
    if not changed:
        return Boundary(None, "same_structure", "random structures are the same: nothing tested on the boundary")
    if len(changed) > 1:
        return Boundary(None, "several_groups", f"models differ on several grouping factors ({', '.join(changed)}): mixture weights unknown")
    g = changed[0]
    d_small, d_large = _diff_terms(sg.get(g, []), lg.get(g, []))
    cols_small = [c for t in d_small for c in t.columns]
    if len(d_large) == 1 and d_large[0].full:
        new = d_large[0]
        if not d_small and len(new.columns) == 1:
            return Boundary((0, 1), "one_variance", f"one variance added on {g}: 0.5 chi2(0) + 0.5 chi2(1)", g)
        if sorted(cols_small) == sorted(new.columns) and all(t.independent for t in d_small) and len(new.columns) > 1:
            return Boundary(None, "correlation_only", f"only correlations on {g} are tested: interior, the naive p is right", g)
        if len(d_small) == 1 and d_small[0].full and set(cols_small) < set(new.columns) and len(new.columns) == len(cols_small) + 1:
            q = len(cols_small)
            return Boundary((q, q + 1), "slope_added", f"one random slope added to a {q}-column term on {g} with {q} covariance{'s' if q > 1 else ''}: 0.5 chi2({q}) + 0.5 chi2({q + 1})", g)
    interior = _interior_structure(d_small, d_large)
    if interior is not None:
        code, what = interior
        return Boundary(None, code, f"{what}, same columns on {g}: interior (no variance is 0 under the null), the naive p is right", g)
    return Boundary(None, "not_covered", f"the change on {g} is not one added variance or one added slope: no chi-bar-square theory applied", g)


def _interior_structure(d_small: list[TermShape], d_large: list[TermShape]) -> tuple[str, str] | None:
    """(code, what is tested) when the small model restricts a covariance structure on the
    same columns without putting a variance on 0: equal variances (identity) against free
    variances, or identity / compound symmetry against compound symmetry / unstructured.
    None otherwise. (Independent columns against unstructured is `correlation_only`.)"""
    if len(d_small) != 1 or len(d_small[0].columns) < 2:
        return None
    t = d_small[0]
    cols = sorted(t.columns)
    if t.covariance == "identity":
        if all(len(b.columns) == 1 for b in d_large) and sorted(b.columns[0] for b in d_large) == cols:
            return "interior_variances", "equal variances (identity) against free variances (diagonal)"
        if len(d_large) == 1 and sorted(d_large[0].columns) == cols:
            if d_large[0].covariance == "compound_symmetry":
                return "interior_covariance", "equal variances with no correlation (identity) against compound symmetry"
            if d_large[0].covariance == "unstructured":
                return "interior_covariance", "equal variances with no correlation (identity) against an unstructured covariance"
    if (t.covariance == "compound_symmetry" and len(d_large) == 1 and d_large[0].covariance == "unstructured"
            and sorted(d_large[0].columns) == cols):
        return "interior_covariance", "compound symmetry against an unstructured covariance"
    return None


def likelihood_ratio_test(small: LRTSide, large: LRTSide, refit_ml: bool, source: str = "listed") -> TestRecord:
    """One row of lme4's anova(small, large), with the boundary p where the theory holds."""
    chisq = 2.0 * (large.loglik - small.loglik)
    df = int(large.npar - small.npar)
    warnings: list[str] = []
    p = float(chi2_sf(chisq, df)) if df > 0 else None
    if chisq < 0:
        warnings.append(
            f"negative chi-square ({chisq:.6g}): the larger model {large.name} fitted worse than {small.name}; "
            "a fit did not converge to its optimum"
        )
    for side in (small, large):
        if not side.converged:
            warnings.append(f"{side.name} did not converge: the test may be wrong")
    method = "ML" if small.method == large.method == "ML" else "REML"
    b = classify_boundary(small, large)
    p_b: float | None = None
    note = f"{b.code}: {b.message}"
    if b.mixture is not None:
        k = b.mixture[0]
        if method != "ML":
            note = "not_ml: the chi-bar-square mixture needs ML fits; these are REML"
        elif not large.independent_clusters:
            note = "crossed_factors: grouping factors are crossed, clusters are not independent; mixture not applied"
        elif small.singular:
            note = f"null_singular: the null model {small.name} is singular (on the boundary); mixture not applied"
        elif df != k + 1:
            note = f"df_mismatch: parameter difference {df} is not the {k + 1} the added terms have; mixture not applied"
        elif chisq < 0:
            note = "negative_chisq: a fit did not reach its optimum; mixture not applied"
        else:
            p_b = chibar_p(chisq, k)
    if b.group is not None:
        levels = large.ngroups.get(b.group)
        if levels is not None and levels < FEW_LEVELS:
            warnings.append(f"{b.group} has only {levels} levels (< {FEW_LEVELS}): chi-square asymptotics are poor")
    return TestRecord(
        small=small.name,
        large=large.name,
        source=source,
        refit_ml=refit_ml,
        method=method,
        npar=[small.npar, large.npar],
        loglik=[small.loglik, large.loglik],
        chisq=chisq,
        df=df,
        p_value=p,
        p_value_boundary=p_b,
        boundary_note=note,
        warnings=warnings,
    )
