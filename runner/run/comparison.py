"""The compare stage of a run: the one owner of ranking, likelihood-ratio tests,
expectations and the convergence policy, from the fits of a plan.

`compare_all` is pure apart from the parametric bootstrap's refits: it reads the plan,
the fits and the model records, and returns everything the record needs from comparing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.compare.expectations import evaluate_expectations
from runner.compare.lrt import LRTSide, likelihood_ratio_test
from runner.compare.ranking import Candidate, FitStats, rank_models
from runner.fit import Fit
from runner.results import ExpectationRecord, ModelRecord, RankingGroup, TestRecord
from runner.run.plan import ModelPlan, SpecPlan, TestPlan, glmm_kind
from runner.spec.expect import Expectation

BOUNDARY_NOTES = {
    "marginal": "marginal_nesting: nested through the marginal covariance of y, not term by term: "
                "the boundary mixture is not known; the naive p is conservative",
    "undecided": "unproven_nesting: nesting not proven; no boundary correction applied",
}


@dataclass
class Comparison:
    """What comparing the fits of one spec gives the record."""

    ranking: list[RankingGroup]
    tests: list[TestRecord]
    expectations: list[ExpectationRecord]
    warnings: list[str] = field(default_factory=list)  # record-level: tests that could not be computed
    failures: list[str] = field(default_factory=list)  # why the run fails (convergence policy)


def _fit_stats(fit: Fit) -> FitStats:
    return FitStats(fit.loglik, fit.npar, fit.nobs, fit.method)


def ml_fit(m: ModelPlan, fits: dict[str, Fit]) -> Fit | None:
    """The ML fit of a model: its own when fitted by ML, else its ML refit."""
    own = fits.get(m.name)
    if own is None:
        return None
    return own if own.method == "ML" else fits.get(f"{m.name}#ml")


def _side(m: ModelPlan, fit: Fit) -> LRTSide:
    return LRTSide(m.name, fit.loglik, fit.npar, fit.method, singular=fit.singular, converged=fit.converged,
                   terms=m.terms, ngroups=dict(fit.ngroups), fixed_key=m.fixed_key,
                   independent_clusters=m.independent_clusters)


def rank(plan: SpecPlan, fits: dict[str, Fit], criterion: str) -> list[RankingGroup]:
    """Ranking groups by `criterion` over every planned model (failed ones noted)."""
    cands = []
    for m in plan.models.values():
        own, ml = fits.get(m.name), ml_fit(m, fits)
        cands.append(Candidate(m.name, own is not None, _fit_stats(own) if own else None,
                               _fit_stats(ml) if ml else None, m.rows_key, m.fixed_key,
                               family=glmm_kind(m.resolved, nagq=False)))
    return rank_models(cands, criterion, plan.refit)


def _bootstrap_p(plan: SpecPlan, ms: ModelPlan, ml_: ModelPlan, fits: dict[str, Fit], r: TestRecord) -> None:
    """compare: bootstrap: PBmodcomp's p on the ML fits (linear mixed models of the lme engine)."""
    boot = plan.validated.loaded.spec.compare.bootstrap
    if boot is None:
        return
    fs, fl = ml_fit(ms, fits), ml_fit(ml_, fits)
    if fs is None or fl is None or ms.design is None or ml_.design is None:
        return
    if fs.engine != "lme" or fs.family is not None or fl.family is not None:
        r.warnings.append("bootstrap p: linear mixed models of the lme engine only")
        return
    from runner.inference.bootstrap import pb_modcomp

    pb = pb_modcomp(ms.design, ml_.design, fs, 2.0 * (fl.loglik - fs.loglik), boot.nsim, boot.seed)
    r.p_bootstrap, r.p_bootstrap_n = pb.p_value, pb.n_used
    if pb.n_nonpositive or pb.n_failed:
        r.warnings.append(f"bootstrap p: {pb.n_nonpositive} replicates with T* <= 0 dropped, "
                          f"{pb.n_failed} failed, of {boot.nsim}")


def _test(plan: SpecPlan, t: TestPlan, fits: dict[str, Fit]) -> TestRecord | str:
    """One planned likelihood-ratio test, or why it could not be computed."""
    ms, ml_ = plan.models[t.small], plan.models[t.large]
    fs, fl = (ml_fit(ms, fits), ml_fit(ml_, fits)) if t.refit_ml else (fits.get(t.small), fits.get(t.large))
    if fs is None or fl is None:
        missing = [n for n, f in ((t.small, fs), (t.large, fl)) if f is None]
        return (f"test [{t.small}, {t.large}] not computed: no {'ML ' if t.refit_ml else ''}fit of "
                f"{', '.join(missing)}")
    r = likelihood_ratio_test(_side(ms, fs), _side(ml_, fl), refit_ml=t.refit_ml and
                              (ms.method == "REML" or ml_.method == "REML"), source=t.source)
    r.warnings = t.warnings + r.warnings
    if t.nesting != "terms":  # the chi-bar-square analysis needs term-by-term nesting
        r.p_value_boundary = None
        r.boundary_note = BOUNDARY_NOTES["marginal" if t.nesting == "marginal" else "undecided"]
    _bootstrap_p(plan, ms, ml_, fits, r)
    return r


def _mark_convergence(ranking: list[RankingGroup], models: dict[str, ModelRecord]) -> None:
    """Each ranking row says whether the fit its value comes from converged."""
    for group in ranking:
        for row in group.rows:
            m = models.get(row.model)
            if m is None:
                continue
            fit_ok = m.ml_refit.converged if row.fit_used == "ml_refit" and m.ml_refit is not None else m.converged
            row.converged = fit_ok is not False


def convergence_failures(expectations: list[Expectation], models: dict[str, ModelRecord]) -> list[str]:
    """With no `expect: converged:` the policy is `all`: a model that did not converge fails
    the run (exit 1), as a CI gate must; a spec's own `converged:` check replaces this."""
    if any(e.kind == "converged" for e in expectations):
        return []
    out = []
    for name, m in models.items():
        if m.status != "ok":
            continue
        if m.converged is False:
            why = m.convergence.message if m.convergence is not None and m.convergence.message else "no reason given"
            out.append(f"{name} did not converge ({why})")
        elif m.ml_refit is not None and not m.ml_refit.converged:
            out.append(f"{name} (ML refit) did not converge")
    return out


def compare_all(plan: SpecPlan, fits: dict[str, Fit], models: dict[str, ModelRecord]) -> Comparison:
    """Rank, test, apply the convergence policy and check the expectations of one spec."""
    ranking = rank(plan, fits, plan.criterion)
    tests: list[TestRecord] = []
    warnings: list[str] = []
    for t in plan.tests:
        result = _test(plan, t, fits)
        if isinstance(result, str):
            warnings.append(result)
        else:
            tests.append(result)
    _mark_convergence(ranking, models)
    failures = convergence_failures(plan.expectations, models)
    aic = ranking if plan.criterion == "AIC" else rank(plan, fits, "AIC")  # delta_aic expectations
    expectations = evaluate_expectations(plan.expectations, models, ranking, aic)
    return Comparison(ranking, tests, expectations, warnings, failures)
