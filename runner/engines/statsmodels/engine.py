"""The `statsmodels` engine: fit a Design with MixedLM and return mixspec's `Fit`.

The Design is translated to arrays (never formula text: nothing of the user's is
evaluated, and statsmodels' caller-namespace formula lookup never runs). Pitfalls of
statsmodels 0.15 this works around:
- the default optimizer chain falls back to L-BFGS, which raised LinAlgError on a
  zero true variance; we use BFGS then CG (both honour `free`);
- its default gradient tolerance (1e-5) leaves SDs up to 6e-4 (relative) away from the
  optimum on students; we ask for 1e-7 and fall back to the default, with a warning,
  if that tighter tolerance is not reached;
- when BFGS and CG both stall (crossed variance components, a zero variance, 3-column
  terms), its derivative-free Powell often reaches lme4's optimum; but Powell ignores
  `free`, so it is tried only for models without a diagonal structure, and any returned
  covariance outside that pattern is an error (a warning names Powell's fits);
- there is no `mle_retvals` on the result: convergence comes from `converged`;
- `bse_re` raises with variance components: it is never used;
- REML `llf` is lme4's REML log-likelihood, but AIC/BIC are NaN under REML: we compute
  them as lme4 does;
- its boundary warning uses an absolute 0.01 cutoff in data units, so it depends on
  the scale of y: it is kept (code "boundary", with that caveat) and the singular flag
  comes from lme4's rule on the reconstructed theta instead;
- `random_effects` refuses a singular cov_re: the conditional modes are then computed
  from statsmodels' own estimates by the Woodbury identity (a warning says so).
"""

from __future__ import annotations

from typing import Any

import math
import time
import warnings

import numpy as np
from statsmodels.regression.mixed_linear_model import MixedLM

from runner import covariance
from runner.design.model import Design
from runner.engines.common import (information_criteria, ngroups, psd_cholesky, singular_warning, varcorr_rows,
                                   wald_rows)
from runner.engines.statsmodels import convert
from runner.engines.statsmodels.errors import EngineError, InexpressibleModel
from runner.engines.statsmodels.translate import DEFAULT_MAX_BYTES, Plan, translate
from runner.fit import Convergence, Fit, FitWarning, RandomEffect

OPTIMIZERS = ["bfgs", "cg"]
GTOL = 1e-7  # statsmodels' default 1e-5 stops SDs up to 6e-4 (relative) short of lme4's optimum
BOUNDARY_NOTE = (
    " (statsmodels flags any variance below 0.01 in the units of the response, so this depends on "
    "the scale of y; the singular flag follows lme4's rule on theta instead)"
)


def _fit_warnings(caught: list[warnings.WarningMessage]) -> list[FitWarning]:
    """statsmodels' warnings as FitWarning entries, deduplicated, in order of appearance."""
    out: list[FitWarning] = []
    seen: set[str] = set()
    for w in caught:
        text = str(w.message)
        if text in seen:
            continue
        seen.add(text)
        # statsmodels' generic text points to `mle_retvals`, which MixedLM results do not have
        text = text.replace(" Check mle_retvals", "").strip()
        cat = w.category.__name__
        if "boundary" in text:
            out.append(FitWarning(code="boundary", message="statsmodels: " + text + BOUNDARY_NOTE))
        elif "Hessian" in text:
            out.append(FitWarning(code="hessian", message="statsmodels: " + text))
        elif cat == "ConvergenceWarning":
            out.append(FitWarning(code="convergence", message="statsmodels: " + text))
        else:
            out.append(FitWarning(code="statsmodels", message=f"statsmodels {cat}: {text}"))
    return out


def _group_effects(result, plan: Plan) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """Per-group conditional modes and covariances: statsmodels' own, or Woodbury if it refuses."""
    model = result.model
    labels = model.group_labels
    try:
        re = result.random_effects
        rc = result.random_effects_cov
        return [np.asarray(re[g], dtype=float) for g in labels], [np.asarray(rc[g], dtype=float) for g in labels], True
    except (ValueError, np.linalg.LinAlgError):
        pass
    scale = float(result.scale)
    vectors, covs = [], []
    for gi in range(len(labels)):
        zg = np.asarray(model._aex_r[gi])
        d = np.zeros((zg.shape[1], zg.shape[1]))
        d[: plan.k_re, : plan.k_re] = result.cov_re
        vc = model._expand_vcomp(np.asarray(result.vcomp), gi)
        d[np.arange(plan.k_re, zg.shape[1]), np.arange(plan.k_re, zg.shape[1])] = vc
        f = psd_cholesky(d)
        r = model.endog_li[gi] - model.exog_li[gi] @ result.fe_params
        zf = zg @ f
        m = scale * np.eye(f.shape[1]) + zf.T @ zf
        vectors.append(f @ np.linalg.solve(m, zf.T @ r))
        covs.append(scale * f @ np.linalg.solve(m, f.T))
    return vectors, covs, False


def _check_free_pattern(result: Any, plan: Plan) -> None:
    """A diagonal structure must come back diagonal: statsmodels silently ignores `free` with
    some optimizers (Powell fitted a correlation of -0.99 into an `(x||g)` model)."""
    if plan.free is None:
        return
    mask = np.asarray(plan.free.cov_re) == 0
    cov = np.asarray(result.cov_re)
    if mask.shape == cov.shape and np.any(np.abs(cov[mask]) > 1e-8 * max(1.0, float(np.max(np.abs(cov))))):
        raise EngineError("statsmodels MixedLM returned covariances that the model's diagonal structure excludes")


class StatsmodelsEngine:
    """Fits a Design with statsmodels' MixedLM when MixedLM can express it exactly."""

    name = "statsmodels"

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes

    def fit(self, design: Design, method: str = "REML", formula_text: str = "", family: str = "gaussian") -> Fit:
        """Fit by REML or ML; raises InexpressibleModel when MixedLM cannot say the model."""
        if family != "gaussian":  # MixedLM is linear; statsmodels' mixed GLMs are variational Bayes
            raise InexpressibleModel(f"statsmodels has no frequentist {family} mixed model (only variational "
                                     "Bayes BinomialBayesMixedGLM/PoissonBayesMixedGLM): use engine: lme")
        if method not in ("REML", "ML"):
            raise ValueError(f"method must be REML or ML, not {method!r}")
        t0 = time.perf_counter()
        plan = translate(design, self.max_bytes)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = MixedLM(plan.endog, plan.exog, plan.groups, exog_re=plan.exog_re, exog_vc=plan.exog_vc)
                result = model.fit(reml=method == "REML", free=plan.free, method=OPTIMIZERS, gtol=GTOL)
                loose = not result.converged
                powell = False
                if loose:
                    caught.clear()
                    result = model.fit(reml=method == "REML", free=plan.free, method=OPTIMIZERS)
                if not result.converged and plan.free is None:
                    # derivative-free Powell reaches lme4's optimum where BFGS and CG stall (crossed
                    # variance components, 3-column terms); statsmodels ignores `free` with it, so
                    # only for models without a diagonal structure
                    alt = model.fit(reml=method == "REML", method=["powell"])
                    if alt.converged and alt.llf >= result.llf - 1e-9:
                        caught.clear()
                        result, powell = alt, True
                _check_free_pattern(result, plan)
                vectors, gcovs, own = _group_effects(result, plan)
            except (np.linalg.LinAlgError, ValueError) as exc:
                if isinstance(exc, InexpressibleModel):
                    raise
                raise EngineError(f"statsmodels MixedLM failed: {exc}") from exc
        fit_warnings = _fit_warnings(caught)
        if loose:
            fit_warnings.append(
                FitWarning(
                    code="convergence",
                    message=f"statsmodels did not reach gradient tolerance {GTOL:g}; refitted with its default tolerance",
                )
            )
        if powell:
            fit_warnings.append(FitWarning(
                code="optimizer",
                message="statsmodels' BFGS and CG did not converge; its Powell method did (the fit is Powell's)"))
        if not own:
            fit_warnings.append(
                FitWarning(
                    code="statsmodels",
                    message="statsmodels cannot predict random effects from a singular covariance; "
                    "conditional modes were computed from its estimates by the Woodbury identity",
                )
            )
        return self._to_fit(design, method, formula_text, plan, result, vectors, gcovs, fit_warnings, t0)

    def _to_fit(self, design, method, formula_text, plan, result, vectors, gcovs, fit_warnings, t0) -> Fit:
        scale = float(result.scale)
        sigma = math.sqrt(scale)
        beta = np.asarray(result.fe_params, dtype=float)
        se = np.asarray(result.bse_fe, dtype=float)
        covs = convert.block_covariances(plan, np.asarray(result.cov_re), np.asarray(result.vcomp), design)
        theta, theta_names, random_effects, singular = [], [], [], False
        for block, cov in zip(design.blocks, covs):
            vals = convert.theta_of(block, cov, sigma)
            theta += vals
            theta_names += covariance.theta_names(block.covariance, block.group, tuple(block.column_names))
            singular = singular or covariance.is_singular(vals, covariance.sd_like(block.covariance, block.ncols))
            random_effects += varcorr_rows(block, cov)
        random_effects.append(RandomEffect(id="Residual", group="Residual", term="", variance=scale, sd=sigma))
        if singular:
            fit_warnings.append(singular_warning())
        npar = design.X.shape[1] + sum(covariance.nparams(b.covariance, b.ncols) for b in design.blocks) + 1
        loglik = float(result.llf)
        objective = -2.0 * loglik
        aic, bic = information_criteria(objective, npar, design.nobs)
        converged = bool(result.converged)
        arrays = convert.arrays_from_group_vectors(design, plan, beta, vectors, gcovs, result.model._aex_r)
        return Fit(
            engine="statsmodels", method=method, formula=formula_text, nobs=design.nobs, npar=npar,
            ngroups=ngroups(design), theta=theta, theta_names=theta_names, sigma=sigma,
            loglik=loglik, objective=objective, aic=aic, bic=bic,
            fixed_effects=wald_rows(design, beta, se), random_effects=random_effects,
            converged=converged,
            singular=singular,
            convergence=Convergence(
                converged=converged,
                optimizer="statsmodels MixedLM (" + ", then ".join(OPTIMIZERS) + ")",
                message="converged" if converged else "statsmodels reports no convergence",
            ),
            warnings=fit_warnings,
            fit_seconds=time.perf_counter() - t0,
            arrays=arrays,
        )

