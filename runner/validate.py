"""The first step of planning: spec, data, and each model's design against the data.

`runner.run.plan.make_plan` calls `validate_spec` and plans on the designs it built;
`mixspec validate` is that plan without fitting, so both find the same problems. Every
problem is located in the spec file and all of them are raised together (SpecError
or DataError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from runner.data.errors import DataError
from runner.data.model_checks import count_levels
from runner.data.prepare import PreparedData, prepare
from runner.data.sources import read_source
from runner.design.build import DesignError, design_for
from runner.design.model import Design
from runner.spec.errors import IssueError, SpecError, SpecIssue, ordered_issues
from runner.spec.load import LoadedSpec, ResolvedModel, load_spec
from runner.vocab import Method


@dataclass(frozen=True)
class ModelSummary:
    """One row of validate's table."""

    name: str
    formula: str  # lme4 text
    source: str  # "model" or "variant of X"
    method: Method
    engine: str
    nobs: int
    groups: dict[str, int]  # grouping factor (lme4 name) -> levels in the rows used


@dataclass
class ValidatedSpec:
    """A spec ready to fit: loaded, its data prepared, every model checked."""

    loaded: LoadedSpec
    data: PreparedData
    summaries: dict[str, ModelSummary]
    warnings: list[SpecIssue] = field(default_factory=list)
    designs: dict[str, Design] = field(default_factory=dict)  # every model's, unless build_designs=False


def _groups(data: PreparedData, name: str, model: ResolvedModel) -> dict[str, int]:
    frame = data.frame.loc[data.masks[name]]
    out: dict[str, int] = {}
    for term in model.formula.random:
        if term.group_name in out:
            continue
        out[term.group_name] = count_levels(frame, term.group)
    return out


def _build_designs(loaded: LoadedSpec, data: PreparedData, names: list[str] | None = None
                   ) -> tuple[dict[str, Design], list[SpecIssue]]:
    """Build each model's design (or those in `names`): rank, scale and lme4's checks."""
    designs: dict[str, Design] = {}
    issues: list[SpecIssue] = []
    for name, model in loaded.models.items():
        if names is not None and name not in names:
            continue
        try:
            designs[name] = design_for(data, name, model.formula, weights=model.weights,
                                       offset=model.offset, family=model.family)
        except DesignError as exc:
            from runner.formula.rexpr import find_expression

            at = find_expression(model.written, exc.term) if exc.term and model.written else None
            issues.append(loaded.issue(model.spec_path, str(exc), offset=at))
    return designs, issues


def _models_without_errors(loaded: LoadedSpec, data: PreparedData, issues: list[SpecIssue]) -> list[str]:
    """Models whose data checks passed although others' did not (their designs can be built)."""
    bad = {i.path for i in issues if i.severity == "error"}
    return [name for name, m in loaded.models.items() if name in data.masks
            and not any(p == ".".join(m.spec_path[:2]) or p.startswith(".".join(m.spec_path[:2]) + ".")
                        for p in bad)]


def _with_design_issues(loaded: LoadedSpec, exc: DataError, build_designs: bool,
                        errors_only: bool) -> list[SpecIssue]:
    """A DataError's issues, located, plus the design errors of the models its data checks
    passed (`exc.partial`), so that nothing is found only in a second round."""
    located = [loaded.locate(i) for i in (exc.errors if errors_only else exc.issues)]
    if exc.partial is not None and build_designs:
        located += _build_designs(loaded, exc.partial, _models_without_errors(loaded, exc.partial, located))[1]
    return located


def _prepared(loaded: LoadedSpec) -> PreparedData:
    """The spec's data, read with only the columns it uses (`runner.data.columns`), prepared."""
    from runner.data.columns import used_columns

    source = read_source(loaded.spec.data, loaded.base_dir, used_columns(loaded.spec.data, loaded.models))
    return prepare(source.frame, loaded.spec.data, loaded.models, source.columns)


def _data_issues(loaded: LoadedSpec, build_designs: bool) -> list[SpecIssue]:
    """Every data, column and design error of the models `loaded` holds: what validate lists
    beside the spec's own errors when the spec itself is invalid."""
    try:
        data = _prepared(loaded)
    except DataError as exc:
        return _with_design_issues(loaded, exc, build_designs, errors_only=True)
    return _build_designs(loaded, data)[1] if build_designs else []


def validate_spec(path: str | Path, *, build_designs: bool = True) -> ValidatedSpec:
    """Load a spec and its data and check every model; raise SpecError/DataError with all issues."""
    try:
        loaded = load_spec(path)
    except SpecError as exc:
        more = _data_issues(exc.partial, build_designs) if exc.partial is not None else []
        raise SpecError(ordered_issues([*exc.issues, *more])) from None
    try:
        data = _prepared(loaded)
    except DataError as exc:
        raise DataError(ordered_issues(_with_design_issues(loaded, exc, build_designs, errors_only=False))) from None
    warnings = [loaded.locate(w) for w in [*loaded.warnings, *data.warnings]]
    designs: dict[str, Design] = {}
    if build_designs:
        designs, issues = _build_designs(loaded, data)
        if issues:
            raise DataError(ordered_issues([*issues, *warnings]))
        for name, design in designs.items():
            for w in design.warnings:
                warnings.append(loaded.issue(loaded.models[name].spec_path, w.message, "warning"))
    summaries = {
        name: ModelSummary(name=name, formula=m.formula_text, source=m.source, method=m.method,
                           engine=m.engine, nobs=data.nobs(name), groups=_groups(data, name, m))
        for name, m in loaded.models.items()
    }
    return ValidatedSpec(loaded=loaded, data=data, summaries=summaries, warnings=warnings, designs=designs)


__all__ = ["IssueError", "ModelSummary", "ValidatedSpec", "validate_spec"]
