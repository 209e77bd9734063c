"""`FittedModel`: one fitted mixed model, as a notebook user meets it.

It wraps the engine-agnostic `Fit` (the numbers results.json records) and the context it
came from (formula, design, fitted rows), so it can also predict, simulate, give vcov and
refit with ML for comparisons. Numbers follow lme4's conventions throughout.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from runner.api.context import ModelContext
from runner.fit import Fit


class FittedModel:
    """A fitted linear mixed model (from `runner.fit`).

    Attributes as lme4 reports them: `objective` (REML criterion or deviance), `loglik`,
    `aic`, `bic`, `nobs`, `sigma`, `theta`, `converged`, `singular`; `fixed_effects` and
    `random_effects` are DataFrames with the columns of results.json's model records.
    """

    def __init__(self, fit: Fit, context: ModelContext, name: str = "model", inference: Any = None):
        self.fit = fit
        self.context = context
        self.name = name
        self.inference = inference
        self._ml: Fit | None = fit if fit.method == "ML" else None
        self._vcov: np.ndarray | None = None

    # ------------------------------------------------------------------ numbers
    objective = property(lambda self: self.fit.objective, doc="REML criterion (REML) or deviance (ML)")
    loglik = property(lambda self: self.fit.loglik)
    aic = property(lambda self: self.fit.aic)
    bic = property(lambda self: self.fit.bic)
    nobs = property(lambda self: self.fit.nobs)
    npar = property(lambda self: self.fit.npar)
    sigma = property(lambda self: self.fit.sigma)
    converged = property(lambda self: self.fit.converged)
    singular = property(lambda self: self.fit.singular)
    method = property(lambda self: self.fit.method)
    formula = property(lambda self: self.fit.formula)
    ngroups = property(lambda self: dict(self.fit.ngroups))
    family = property(lambda self: self.fit.family or "gaussian")
    link = property(lambda self: self.fit.link or "identity")
    warnings = property(lambda self: [w.message for w in self.fit.warnings])

    @property
    def theta(self) -> np.ndarray:
        """lme4's theta (relative covariance factors, getME(m, "theta") order)."""
        return np.asarray(self.fit.theta, dtype=float)

    @property
    def fixed_effects(self) -> pd.DataFrame:
        """One row per coefficient: term, lme4_name, estimate, std_error, statistic, p_value, CI."""
        return pd.DataFrame([fe.model_dump() for fe in self.fit.fixed_effects])

    @property
    def random_effects(self) -> pd.DataFrame:
        """lme4's VarCorr rows: variances/SDs, then covariance/correlation pairs, then Residual."""
        return pd.DataFrame([re.model_dump() for re in self.fit.random_effects])

    @property
    def coef(self) -> pd.Series:
        """Fixed-effect estimates by lme4 name (lme4's fixef())."""
        return pd.Series([fe.estimate for fe in self.fit.fixed_effects],
                         index=[fe.lme4_name for fe in self.fit.fixed_effects], name="estimate")

    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects (lme4's vcov()), by lme4 names."""
        if self._vcov is None:
            from runner.api.vcov import fixed_vcov

            arrays = self.fit.arrays
            if self.family != "gaussian" and arrays is not None and arrays.vcov is not None:
                self._vcov = np.asarray(arrays.vcov)  # glmer's vcov(): 2 H^-1, or R_X (fit.vcov_method)
            else:
                self._vcov = fixed_vcov(self.context, self.fit)
        names = [fe.lme4_name for fe in self.fit.fixed_effects]
        return pd.DataFrame(self._vcov, index=names, columns=names)

    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes and SDs per grouping factor (lme4's ranef(condVar = TRUE)).

        Each DataFrame is indexed by level, with columns ("mode", term) and ("cond_sd", term);
        terms on one grouping factor (`(x || g)`) share one DataFrame, as in lme4.
        """
        arrays = self.fit.arrays
        if arrays is None:
            return {}
        groups: dict[str, tuple[list[str], list[str], list[np.ndarray], list[np.ndarray]]] = {}
        for blk in arrays.ranef:
            q = len(blk.columns)
            levels, cols, modes, sds = groups.setdefault(blk.group, (list(blk.levels), [], [], []))
            cols += list(blk.columns)
            modes.append(np.asarray(blk.modes, float).reshape(-1, q))
            sds.append(np.asarray(blk.cond_sd, float).reshape(-1, q))
        out = {}
        for group, (levels, cols, modes, sds) in groups.items():
            columns = pd.MultiIndex.from_tuples([("mode", c) for c in cols] + [("cond_sd", c) for c in cols])
            out[group] = pd.DataFrame(np.hstack([*modes, *sds]), index=pd.Index(levels, name=group),
                                      columns=columns)
        return out

    def fitted(self) -> pd.Series:
        """Fitted values (X beta + Z b; for a GLMM the mean, as lme4's fitted()), indexed as the
        fitted rows of the data given."""
        return self._series(self._arrays().fitted, "fitted")

    def residuals(self) -> pd.Series:
        """Response residuals y - fitted."""
        return self._series(self._arrays().residuals, "residuals")

    def _arrays(self) -> Any:
        if self.fit.arrays is None:
            raise ValueError("this fit carries no per-row values")
        return self.fit.arrays

    def _series(self, values: np.ndarray, name: str) -> pd.Series:
        return pd.Series(np.asarray(values, float), index=self.context.row_index, name=name)

    # ------------------------------------------------------------------ inference
    def confint(self, method: str = "wald", level: float = 0.95) -> pd.DataFrame:
        """Confidence intervals of the fixed effects: the inference module's methods when
        installed, else Wald (lme4's confint(method = "Wald"))."""
        from runner.api.inference import confint

        return confint(self, method=method, level=level)

    def anova(self) -> pd.DataFrame:
        """Tests of each fixed-effect term: the inference module's when installed, else Wald."""
        from runner.api.inference import anova

        return anova(self)

    # ------------------------------------------------------------------ new data
    def predict(self, newdata: Any = None, random_effects: bool = True, new_levels: str = "population",
                type: str = "link") -> pd.Series:
        """Predictions as lme4's predict(m, newdata, allow.new.levels = TRUE).

        A grouping level not fitted gets the population value (`new_levels="error"` makes it an
        error naming the level); `random_effects=False` is `re.form = NA`; `type="response"`
        applies the inverse link (the same for a linear mixed model). Without `newdata`: the
        fitted values. Rows missing a predictor give NaN.
        """
        from runner.api.convert import as_pandas
        from runner.api.predict import predict_new

        if newdata is None:
            from runner.api.predict import _check_options, inverse_link, linear_predictor

            _check_options(new_levels, type)
            eta = linear_predictor(self.context, self.fit, random_effects)
            return self._series(inverse_link(self.context.link, eta) if type == "response" else eta, "prediction")
        frame = as_pandas(newdata, "newdata")
        values = predict_new(self.context, self.fit, frame, random_effects=random_effects,
                             new_levels=new_levels, type=type)  # type: ignore[arg-type]
        return pd.Series(values, index=frame.index, name="prediction")

    def simulate(self, nsim: int = 1, seed: int | None = None) -> pd.DataFrame:
        """Responses drawn from the fitted model, lme4's simulate(): columns sim_1 .. sim_nsim."""
        from runner.api.predict import simulate

        sims = simulate(self.context, self.fit, nsim=nsim, seed=seed)
        return pd.DataFrame(sims, index=self.context.row_index, columns=[f"sim_{i + 1}" for i in range(nsim)])

    # ------------------------------------------------------------------ refits, records
    def ml_fit(self) -> Fit:
        """The ML fit of this model (itself when fitted by ML; a REML fit is refitted once)."""
        if self._ml is None:
            from runner.run.tasks import FitTask, execute_task

            task = FitTask(id=f"{self.name}#ml", model=self.name, kind="ml_refit", design=self.context.design,
                           method="ML", engine=self.context.engine, formula_text=self.fit.formula, verify=False,
                           key="")
            result = execute_task(task)
            if result.fit is None:
                from runner.api.fitting import FitError

                raise FitError(f"{self.name} (ML refit): {result.error}")
            self._ml = result.fit
        return self._ml

    def to_record(self, ml_refit: bool = True) -> Any:
        """The results.json model record (`ModelRecord`), with `ml_refit` for a REML fit."""
        from runner.run.record import model_record

        ml = self.ml_fit() if ml_refit and self.fit.method == "REML" else None
        return model_record(self.fit, source="model", ml=ml)

    # ------------------------------------------------------------------ display
    def summary(self) -> str:
        """Text laid out like lme4's summary()."""
        from runner.api.summary import summary_text

        return summary_text(self)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        from runner.api.summary import summary_html

        return summary_html(self)
