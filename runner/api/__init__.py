"""mixspec's Python API: `fit`, `compare`, `run`, `load` and the `FittedModel` they return.

Importing this package is cheap; each function imports what it needs when called.
"""

from __future__ import annotations

from typing import Any

from runner.api.model import FittedModel


def fit(formula: str, data: Any, *, method: str = "REML", family: str = "gaussian", link: str | None = None,
        nagq: int = 1, weights: Any = None, offset: Any = None, categorical: dict[str, Any] | None = None,
        engine: str = "lme", inference: Any = None, name: str = "model") -> FittedModel:
    """Fit one linear mixed model in lme4 syntax, exactly as `mixspec run` fits it.

    `data`: pandas DataFrame, pyarrow Table or polars DataFrame (a pandas Categorical's
    category order is its level order); `weights`/`offset`: a column name or values;
    `categorical`: the spec's `categorical:` mapping, e.g. {"sex": {"reference": "M"}}.
    Raises the CLI's errors (SpecError for the formula or options, DataError for columns
    and values, with did-you-mean hints) and FitError when the engine fails.
    """
    from runner.api.fitting import fit_model

    return fit_model(formula, data, method=method, family=family, link=link, nagq=nagq, weights=weights,
                     offset=offset, categorical=categorical, engine=engine, inference=inference, name=name)


def compare(*models: FittedModel, criterion: str = "AIC", **named: FittedModel) -> Any:
    """Rank models by an information criterion on ML fits and test nested pairs by LRT."""
    from runner.api.comparison import compare_models

    return compare_models(list(models), named, criterion=criterion)


def run(spec_path: Any, out_dir: Any = "reports", **options: Any) -> Any:
    """Run a spec in-process as `mixspec run` does; return its ResultsRecord."""
    from runner.api.specs import run_spec_record

    return run_spec_record(spec_path, out_dir, **options)


def load(results_json: Any) -> Any:
    """Read a results.json back as a ResultsRecord."""
    from runner.api.specs import load_record

    return load_record(results_json)


__all__ = ["FittedModel", "compare", "fit", "load", "run"]
