"""Adds df, p-values, intervals, type III F tests, R2 and ICC to a fitted linear mixed model.

Called once per fit by the run (runner/run/tasks.py) with the model's `InferenceSettings`;
linear mixed models of either engine (both report lme4's theta); GLMMs keep Wald z.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runner.design.model import Design
from runner.distributions import norm_sf, t_sf
from runner.fit import ICC, R2, AnovaRow, ConfintRow, Fit, FitWarning, FixedEffect
from runner.inference import varpar
from runner.inference.anova import anova_rows, type3_contrasts
from runner.inference.terms import structure_from_design
from runner.inference.intervals import variance_rows, wald_bounds
from runner.inference.r2 import variance_shares
from runner.inference.satterthwaite import Satterthwaite, satterthwaite
from runner.inference.settings import InferenceRefused, InferenceSettings, check_settings  # noqa: F401 (used by callers)
from runner.inference.state import InferenceError, LmmState, state_from_fit

if TYPE_CHECKING:
    from runner.inference.kenward_roger import KenwardRoger  # _apply imports it only when asked for

def _fixed_rows(state: LmmState, fit: Fit, sat: Satterthwaite | None, settings: InferenceSettings,
                kr: object | None) -> list[FixedEffect]:
    out = []
    p = state.beta.size
    for j, fe in enumerate(fit.fixed_effects):
        est = float(fe.estimate)
        if sat is None and kr is None:
            se = float(fe.std_error) if fe.std_error is not None else float("nan")
            z = est / se if se > 0 else None
            low, high = wald_bounds(est, se, None, settings.level)
            out.append(fe.model_copy(update=dict(statistic=z, df=None, ci_low=low, ci_high=high,
                                                 p_value=None if z is None else float(2 * norm_sf(abs(z))))))
            continue
        l = np.eye(p)[j]
        adjusted = None
        if kr is not None:
            var, df = kr.contrast(l)  # type: ignore[attr-defined]
            adjusted = float(np.sqrt(var))
        else:
            var, df = sat.contrast(l)  # type: ignore[union-attr]
        se = float(np.sqrt(var))
        t = est / se if se > 0 else None
        pv = None if t is None else float(2 * t_sf(abs(t), df))
        low, high = wald_bounds(est, se, df, settings.level)
        out.append(fe.model_copy(update=dict(statistic=t, df=float(df), p_value=pv, ci_low=low, ci_high=high,
                                             std_error_adjusted=adjusted)))
    return out


def _anova(design: Design, state: LmmState, tester: object | None) -> tuple[list[AnovaRow], str | None]:
    """Type III rows (F without df and p when df: none), or a note why there are none."""
    structure = structure_from_design(design)
    if isinstance(structure, str):
        return [], f"no type III F tests: {structure}"
    if not structure.terms:
        return [], None
    try:
        contrasts = type3_contrasts(structure, design.X)
    except (ValueError, np.linalg.LinAlgError) as exc:
        return [], f"no type III F tests: {exc}"
    if tester is None:
        rows = []
        for label, L in contrasts.items():
            q = L.shape[0]
            V = L @ state.vcov @ L.T
            Lb = L @ state.beta
            F = float(Lb @ np.linalg.solve(V, Lb) / q) if q else None
            rows.append(AnovaRow(term=label, num_df=q, den_df=None, F=F, p_value=None))
        return rows, None
    return anova_rows(contrasts, state.beta, tester), None


def _other_intervals(design: Design, fit: Fit, state: LmmState, settings: InferenceSettings
                     ) -> tuple[dict[str, tuple[float | None, float | None]], list[str]]:
    """Profile (on the ML fit, as lme4 refits) or parametric-bootstrap bounds by confint name."""
    if settings.ci == "profile":
        from runner.engines import fit_design
        from runner.inference.profile import profile_intervals

        ml = state if not state.reml else state_from_fit(design, fit_design(design, "ML"))
        res = profile_intervals(ml, settings.level)
        return res.bounds, res.warnings
    from runner.inference.bootstrap import bootstrap_intervals

    boot = bootstrap_intervals(design, fit, state, settings.level, settings.nsim, settings.seed)
    return boot.bounds, boot.warnings


def apply_inference(design: Design, fit: Fit, settings: InferenceSettings) -> Fit:
    """A copy of `fit` with the requested inference (the fit itself is not changed).
    One BLAS thread, as the engine fits: ~100 small factorizations, each slower threaded."""
    from runner.engines.common import one_blas_thread

    with one_blas_thread(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _apply(design, fit, settings)


def _apply(design: Design, fit: Fit, settings: InferenceSettings) -> Fit:
    if fit.family is not None and fit.family != "gaussian":
        return fit.model_copy(update={"warnings": [*fit.warnings, FitWarning(
            code="inference", message="GLMM: Wald z p-values and intervals; R2 and ICC not computed for GLMMs yet")]})
    if fit.engine not in ("lme", "statsmodels"):  # both report lme4's theta, the state's input
        return fit
    warnings: list[FitWarning] = []
    state = state_from_fit(design, fit)
    sat, kr, p_method = _small_sample_df(design, state, settings, warnings)
    fixed = _fixed_rows(state, fit, sat, settings, kr)
    update: dict = dict(fixed_effects=fixed, p_method=p_method, ci_method=settings.ci)
    update["confint"] = _intervals(design, fit, state, settings, update, warnings)
    update["anova"], note = _anova(design, state, kr if kr is not None else sat)
    if note:
        warnings.append(FitWarning(code="anova", message=note))
    shares = variance_shares(design, state.beta, varpar.block_covariances(state.problem, state.theta, state.sigma),
                             state.sigma)
    update["r2"] = R2(marginal=shares.r2_marginal, conditional=shares.r2_conditional)
    update["icc"] = ICC(adjusted=shares.icc_adjusted, unadjusted=shares.icc_unadjusted)
    kept = [w for w in fit.warnings if not (w.code == "few_levels" and p_method != "wald-z")]
    update["warnings"] = kept + warnings
    return fit.model_copy(update=update)


def _small_sample_df(design: Design, state: LmmState, settings: InferenceSettings, warnings: list[FitWarning],
                     ) -> tuple[Satterthwaite | None, KenwardRoger | None, str]:
    """Satterthwaite, then Kenward-Roger when asked; each failure falls back one step, said in a warning."""
    sat = kr = None
    p_method = "wald-z"
    if settings.df != "none":
        try:
            sat = satterthwaite(state)
            p_method = "satterthwaite"
            warnings += [FitWarning(code="satterthwaite", message=w) for w in sat.warnings]
        except (InferenceError, np.linalg.LinAlgError) as exc:
            warnings.append(FitWarning(code="satterthwaite", message=f"Satterthwaite df failed ({exc}): Wald z used"))
    if settings.df == "kenward-roger" and sat is not None:
        from runner.inference.kenward_roger import kenward_roger

        try:
            kr = kenward_roger(state)
            p_method = "kenward-roger"
            if design.weights is not None:
                warnings.append(FitWarning(code="kenward_roger", message=(
                    "Kenward-Roger with prior weights is computed for the weighted model (residual variance "
                    "sigma^2 / w); pbkrtest ignores the weights there, so its numbers differ")))
        except (InferenceError, np.linalg.LinAlgError, ArithmeticError) as exc:
            warnings.append(FitWarning(code="kenward_roger", message=(
                f"Unable to compute Kenward-Roger t-test: using Satterthwaite instead ({exc})")))
    return sat, kr, p_method


def _intervals(design: Design, fit: Fit, state: LmmState, settings: InferenceSettings, update: dict,
               warnings: list[FitWarning]) -> list[ConfintRow]:
    """confint rows: Wald, or profile/bootstrap bounds (also set on update's fixed effects)."""
    fixed = update["fixed_effects"]
    vnames = varpar.names(state.problem)
    vest = varpar.to_sdcor(state.problem, state.theta, state.sigma)
    confint = variance_rows(vnames, vest) + [
        ConfintRow(parameter=fe.lme4_name, estimate=fe.estimate, low=fe.ci_low, high=fe.ci_high) for fe in fixed]
    try:
        other = _other_intervals(design, fit, state, settings) if settings.ci != "wald" else None
    except Exception as exc:  # a failed ML refit or profile keeps the Wald intervals, said so
        other = None
        update["ci_method"] = "wald"
        warnings.append(FitWarning(code=settings.ci, message=(
            f"{settings.ci} intervals failed ({type(exc).__name__}: {exc}): Wald intervals kept")))
    if other is not None:
        bounds, notes = other
        warnings += [FitWarning(code=settings.ci, message=m) for m in notes]
        confint = [r.model_copy(update=dict(zip(("low", "high"), bounds.get(r.parameter, (None, None)))))
                   for r in confint]
        by_name = {r.parameter: r for r in confint}
        fixed = [fe.model_copy(update=dict(ci_low=by_name[fe.lme4_name].low, ci_high=by_name[fe.lme4_name].high))
                 for fe in fixed]
        update["fixed_effects"] = fixed
    return confint
