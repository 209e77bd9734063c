"""`runner.fit`: a formula and a DataFrame through the same steps `mixspec run` takes.

The steps are the run's own functions, in the run's order: the formula is parsed by
the spec loader's parser, the data prepared by `runner.data.prepare.prepare` (factors,
missing values, lme4's pre-fit checks), the design built by `design_for`, and the fit
made by `runner.run.tasks.execute_task`. So the numbers are those of `mixspec run`.
Problems are raised as the CLI's located errors (SpecError, DataError).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from runner.api.context import ModelContext
from runner.api.convert import as_pandas
from runner.data.errors import DataError
from runner.spec.errors import SpecError, SpecIssue
from runner.spec.validation_issues import suggest
from runner.vocab import EngineName, Method, engine_name

METHODS = ("REML", "ML")
ENGINES = ("auto", "lme", "statsmodels")
FAMILIES = ("gaussian", "binomial", "poisson")
WEIGHTS_COLUMN, OFFSET_COLUMN = "(weights)", "(offset)"


class FitError(RuntimeError):
    """The engine failed on this model (what `mixspec run` records as a failed model)."""


def _issue(path: str, message: str, col: int | None = None) -> SpecIssue:
    return SpecIssue("<formula>" if path == "formula" else None, 1 if col is not None else None, col, path, message)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value in choices:
        return value
    if isinstance(value, str) and value.upper() in choices:
        return value.upper()
    raise SpecError([_issue(name, f"{name} must be one of {', '.join(choices)}, got {value!r}"
                            f"{suggest(str(value), choices)}")])


def _method(value: Any) -> Method:
    return "ML" if _choice("method", value, METHODS) == "ML" else "REML"


def resolve_formula(formula: str, name: str = "model", *, method: Method = "REML", engine: EngineName = "lme",
                    weights: str | None = None, offset: str | None = None, family: str = "gaussian") -> Any:
    """A ResolvedModel as the spec loader makes it; a bad formula is a SpecError with its caret."""
    from runner import formula as f
    from runner.spec.load import ResolvedModel

    if not isinstance(formula, str):
        raise SpecError([_issue("formula", f"the formula must be text, got {type(formula).__name__}")])
    try:
        mf = f.parse_formula(formula)
    except ValueError as exc:
        pos = getattr(exc, "position", None)
        raise SpecError([_issue("formula", str(exc), pos + 1 if isinstance(pos, int) else None)]) from None
    return ResolvedModel(name=name, formula=mf, formula_text=f.render(mf), weights=weights, offset=offset,
                         method=method, engine=engine, verify=None, source="model", spec_path=("formula",),
                         written=formula, family=family)


def _vector_column(frame: pd.DataFrame, value: Any, column: str, what: str) -> tuple[pd.DataFrame, str | None]:
    """weights/offset given as a column name, or as values (added as a column)."""
    if value is None or isinstance(value, str):
        return frame, value
    values = np.asarray(value, dtype=float)
    if values.shape != (len(frame),):
        raise DataError([SpecIssue(None, None, None, what, f"{what} has {values.size} values for "
                                   f"{len(frame)} rows")])
    return frame.assign(**{column: values}), column


def _categorical(frame: pd.DataFrame, categorical: dict[str, Any] | None, used: set[str]) -> Any:
    """The data spec's `categorical:`; a pandas Categorical's category order is its level order."""
    from runner.spec.models import DataSpec

    given = dict(categorical or {})
    for col in used:
        if col in frame.columns and col not in given and isinstance(frame[col].dtype, pd.CategoricalDtype):
            given[col] = {"levels": [v for v in frame[col].cat.categories.tolist()]}
    try:
        return DataSpec(path="<DataFrame>", categorical=given)
    except ValidationError as exc:
        issues = [SpecIssue(None, None, None, ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise SpecError(issues) from None


def prepare_model(formula: str, data: Any, *, method: str = "REML", engine: str = "lme",
                  weights: Any = None, offset: Any = None, categorical: dict[str, Any] | None = None,
                  name: str = "model", family: str = "gaussian") -> tuple[Any, Any, Any, pd.DataFrame]:
    """(resolved model, prepared data, design, frame given) or the run's located errors."""
    from runner.data.prepare import prepare
    from runner.design.build import DesignError, design_for
    from runner.formula.variables import required_variables

    method = _method(method)
    engine = engine_name(_choice("engine", engine, ENGINES))
    frame = as_pandas(data)
    frame, weights = _vector_column(frame, weights, WEIGHTS_COLUMN, "weights")
    frame, offset = _vector_column(frame, offset, OFFSET_COLUMN, "offset")
    rm = resolve_formula(formula, name, method=method, engine=engine, weights=weights, offset=offset, family=family)
    data_spec = _categorical(frame, categorical, set(required_variables(rm.formula)))
    source = frame if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
        and frame.index.step == 1 else frame.reset_index(drop=True)
    prepared = prepare(source, data_spec, {name: rm})
    try:
        design = design_for(prepared, name, rm.formula, weights=rm.weights, offset=rm.offset, family=rm.family)
    except DesignError as exc:
        raise DataError([SpecIssue("<formula>", None, None, "formula", str(exc))]) from None
    return rm, prepared, design, frame


def fit_model(formula: str, data: Any, *, method: str = "REML", family: str = "gaussian", link: str | None = None,
              nagq: int = 1, weights: Any = None, offset: Any = None, categorical: dict[str, Any] | None = None,
              engine: str = "lme", inference: Any = None, name: str = "model") -> Any:
    """See `runner.fit`."""
    from runner.api.model import FittedModel
    from runner.run.tasks import FitTask, execute_task

    family = _choice("family", family, FAMILIES) if family != "gaussian" else family
    if family == "gaussian" and link not in (None, "identity"):
        raise SpecError([_issue("link", f"link {link!r}: the gaussian family uses the identity link")])
    if family == "gaussian" and nagq != 1:
        raise SpecError([_issue("nagq", "nagq applies to GLMMs only (a linear mixed model's likelihood is exact)")])
    if family != "gaussian":
        method = "ML"  # glmer: maximum likelihood (Laplace or adaptive Gauss-Hermite), no REML
    rm, prepared, design, frame = prepare_model(formula, data, method=method, engine=engine, weights=weights,
                                                offset=offset, categorical=categorical, name=name, family=family)
    if family == "gaussian":
        task = FitTask(id=name, model=name, kind="primary", design=design, method=rm.method,
                       engine=engine_name(rm.engine), formula_text=rm.formula_text, verify=False, key="",
                       **_inference_option(inference))
        result = execute_task(task)
        if result.fit is None:
            raise FitError(f"{name}: {result.error}")
        fit, seconds, engine_used = result.fit, result.seconds, task.engine
    else:
        fit, seconds, engine_used = _fit_glmm(design, rm, family, link, nagq, name)
    rows = np.flatnonzero(prepared.masks[name])
    ctx = ModelContext(formula=rm.formula, formula_text=rm.formula_text, design=design,
                       rows=lambda: prepared.frame_for(name), centered=dict(prepared.centered), weights=rm.weights,
                       offset=rm.offset, engine=engine_used, row_index=frame.index[rows],
                       family=fit.family or "gaussian", link=fit.link or "identity",
                       extra={"prepared": prepared, "resolved": rm, "seconds": seconds})
    return FittedModel(fit, ctx, name=name, inference=inference)


def _inference_option(inference: Any) -> dict[str, Any]:
    """FitTask's `inference` (InferenceSettings) from a dict such as {"df": "kenward-roger"}."""
    if inference is None:
        return {}
    from runner.inference.apply import InferenceSettings

    if isinstance(inference, InferenceSettings):
        return {"inference": inference}
    if not isinstance(inference, dict):
        raise SpecError([_issue("inference", "inference takes a mapping such as {'df': 'satterthwaite', "
                                "'ci': 'profile'}")])
    try:
        return {"inference": InferenceSettings(**inference)}
    except TypeError:
        keys = ("df", "ci", "level", "nsim", "seed")
        bad = [k for k in inference if k not in keys]
        raise SpecError([_issue(f"inference.{k}", f"unknown key {k!r}{suggest(str(k), keys)} (keys: "
                                f"{', '.join(keys)})") for k in bad]) from None


def _fit_glmm(design: Any, rm: Any, family: str, link: str | None, nagq: int, name: str) -> tuple[Any, float, str]:
    """A GLMM through the engine dispatcher (the run fits GLMMs through the same function)."""
    import time

    from runner.engines.base import fit_design

    engine = engine_name(rm.engine)
    t0 = time.perf_counter()
    try:
        fit = fit_design(design, "ML", engine=engine, formula_text=rm.formula_text, family=family, link=link,
                         nagq=nagq)
    except Exception as exc:  # EngineError, a response the family cannot take
        raise FitError(f"{name}: {type(exc).__name__}: {exc}") from None
    return fit, time.perf_counter() - t0, engine
