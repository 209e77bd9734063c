"""spec -> plan: everything decided before fitting: designs, test pairs, ML refits, cache keys.

`make_plan` validates the spec and its data (`runner.validate`, which builds every
model's design) and then plans on those designs. All problems found (spec, data, a
design the data cannot give, a listed test pair that is not nested) are collected and
raised together as an `IssueError`: exit 2 before any model is fitted. `mixspec
validate` is `make_plan` without the fits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from runner.compare.marginal import ReTerm
from runner.compare.nesting import NestSide, Nesting, auto_nesting, check_nested
from runner.compare.shapes import TermShape, shapes_of
from runner.design.model import Design
from runner.inference.settings import InferenceRefused, check_settings, settings_for
from runner.run.cache import fit_key
from runner.run.tasks import FitTask
from runner.spec.errors import IssueError, SpecIssue, ordered_issues
from runner.spec.expect import Expectation
from runner.spec.load import LoadedSpec, ResolvedModel
from runner.validate import ValidatedSpec, validate_spec
from runner.vocab import Method, engine_name

if TYPE_CHECKING:
    from runner.inference.settings import InferenceSettings
    from runner.run.predictions import PredictPlan


class PlanError(IssueError):
    """Problems found before fitting (exit 2)."""


@dataclass
class ModelPlan:
    name: str
    resolved: ResolvedModel
    design: Design
    engine: str
    method: Method
    verify: bool
    rows_key: str = ""
    fixed_key: str = ""
    npar: int = 0
    terms: tuple[TermShape, ...] = ()
    independent_clusters: bool = True
    row_ids: np.ndarray | None = None
    need_ml: bool = False
    inference: InferenceSettings | None = None  # of the primary fit


@dataclass
class TestPlan:
    small: str
    large: str
    source: str  # "listed" | "auto"
    refit_ml: bool
    warnings: list[str] = field(default_factory=list)
    nesting: str = "terms"  # terms | marginal | undecided (runner.compare.nesting.Nesting.how)


@dataclass
class SpecPlan:
    """Everything one spec's run needs before fitting: designs, test pairs, expectations."""

    validated: ValidatedSpec
    name: str
    spec_path: Path
    models: dict[str, ModelPlan]
    tests: list[TestPlan]
    criterion: str
    refit: bool
    expectations: list[Expectation]
    data_sha256: str
    predict: PredictPlan | None = None  # the spec's predict: section
    id_columns: list[str] = field(default_factory=list)  # data.id_columns, carried into the fit sidecars

    def tasks(self) -> list[FitTask]:
        out = []
        for m in self.models.values():
            if m.design is None:
                continue
            kinds: list[tuple[Literal["primary", "ml_refit"], Method]] = [("primary", m.method)]
            if m.need_ml:
                kinds.append(("ml_refit", "ML"))
            glmm = None if m.resolved.family == "gaussian" else (m.resolved.family, m.resolved.link,
                                                                    m.resolved.nagq)
            for kind, method in kinds:
                options: dict[str, Any] = {"inference": repr(m.inference)} if kind == "primary" else {}
                if glmm is not None:
                    options["glmm"] = list(glmm)
                key = fit_key(m.design, method=method, engine=m.engine, formula_repr=repr(m.resolved.formula),
                              formula_text=m.resolved.formula_text, data_sha256=self.data_sha256,
                              verify=m.verify and kind == "primary", options=options or None)
                out.append(FitTask(id=m.name if kind == "primary" else f"{m.name}#ml", model=m.name, kind=kind,
                                   design=m.design, method=method, engine=m.engine,
                                   formula_text=m.resolved.formula_text, verify=m.verify and kind == "primary",
                                   key=key, inference=m.inference if kind == "primary" else None, glmm=glmm))
        return out


def _hash(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def _distinct(x: np.ndarray) -> int:
    """Number of distinct values, by sorting: numpy 2.4's np.unique took 2.9 s on a million int64
    codes that sort in 0.04 s (nested_factors on the 1M-row benchmark: 8.1 s -> 0.2 s)."""
    if x.size == 0:
        return 0
    s = np.sort(x)
    return int(1 + np.count_nonzero(s[1:] != s[:-1]))


def nested_factors(design: Design) -> bool:
    """True when every pair of grouping factors is nested (the data splits into independent clusters)."""
    groups: dict[str, np.ndarray] = {}
    for block in design.blocks:
        groups.setdefault(block.group, np.asarray(block.codes, dtype=np.int64))
    items = list(groups.values())
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            fine, coarse = (a, b) if _distinct(a) >= _distinct(b) else (b, a)
            if _distinct(fine * (int(coarse.max()) + 1) + coarse) != _distinct(fine):
                return False
    return True


def _nest_side(m: ModelPlan) -> NestSide:
    assert m.design is not None
    re_terms = tuple(ReTerm(b.group, np.asarray(b.codes), b.X, b.covariance) for b in m.design.blocks)
    return NestSide(m.name, m.design.response, m.rows_key, m.design.X, m.terms, m.npar, re_terms)


def _issue(loaded: LoadedSpec, path: tuple[Any, ...], message: str) -> SpecIssue:
    return loaded.issue(path, message)


def _expectation_terms(loaded: LoadedSpec, models: dict[str, ModelPlan]) -> list[SpecIssue]:
    """`fixed:` expectations naming a term no targeted model has: a spec error (exit 2) with
    a did-you-mean, found before fitting rather than as a failed check afterwards."""
    from runner.spec.validation_issues import suggest

    issues = []
    for e in loaded.expectations:
        if e.kind != "fixed" or e.term is None:
            continue
        targets = [e.model] if e.model else list(models)
        names = [n for t in targets if t in models and models[t].design is not None
                 for c in models[t].design.fixed for n in (c.term, c.lme4_name)]
        if e.term in names or (e.term in ("Intercept", "(Intercept)") and "(Intercept)" in names):
            continue
        where = f"model {e.model}" if e.model else "any model"
        shown = ", ".join(dict.fromkeys(c.term for t in targets if t in models and models[t].design is not None
                                        for c in models[t].design.fixed))
        issues.append(_issue(loaded, ("expect", "fixed"),
                             f"no fixed effect {e.term!r} in {where}{suggest(e.term, names)} (terms: {shown})"))
    return issues


def _family_problems(rm: ResolvedModel, d: Design) -> list[str]:
    """A response the family cannot model, or nagq > 1 on more than one scalar term (exit 2)."""
    if rm.family == "gaussian":
        return []
    from runner.design.glmm_response import response_problems

    problems = response_problems(d.y, d.weights, rm.family, d.response)
    if rm.nagq > 1 and (len(d.blocks) != 1 or d.blocks[0].ncols != 1):
        problems.append(f"nagq: {rm.nagq} (adaptive Gauss-Hermite quadrature) needs a single scalar "
                        "random-effect term such as (1|g), as in lme4; use nagq: 1 (Laplace)")
    return problems


def _model_plan(validated: ValidatedSpec, name: str, rm: ResolvedModel, verify: bool,
                issues: list[SpecIssue]) -> ModelPlan:
    """One model's plan on the design validation built; its problems appended to `issues`."""
    loaded, prepared, d = validated.loaded, validated.data, validated.designs[name]
    mp = ModelPlan(name=name, resolved=rm, design=d, engine=engine_name(rm.engine), method=rm.method,
                   verify=bool(verify or rm.verify) and rm.family == "gaussian")  # no GLMM in statsmodels
    if rm.family == "gaussian" and d.weights is None and d.nobs and np.all((d.y == 0) | (d.y == 1)):
        validated.warnings.append(loaded.issue(tuple(rm.spec_path), f"the response '{d.response}' is 0/1 but the "
                                               "model is linear (family gaussian): did you mean `family: binomial`?",
                                               "warning"))
    problems = _family_problems(rm, d)
    if problems:
        issues.extend(_issue(loaded, tuple(rm.spec_path), msg) for msg in problems)
        return mp
    mask = prepared.masks.get(name)
    used = np.flatnonzero(mask) if mask is not None else np.arange(d.nobs)
    source = prepared.source_rows
    mp.row_ids = source[used] if source is not None else used  # rows of the loaded source
    mp.rows_key = _hash(d.response, d.y, mp.row_ids, d.weights if d.weights is not None else "w",
                        glmm_kind(rm, nagq=False))  # ranked within one family and link
    mp.fixed_key = _hash(d.X)
    mp.terms = shapes_of(d)
    mp.npar = d.X.shape[1] + sum(t.nparams for t in mp.terms) + 1
    mp.independent_clusters = nested_factors(d)
    try:
        mp.inference = settings_for(loaded.spec, name)
        check_settings(mp.inference, mp.method, d.nobs)
    except InferenceRefused as exc:
        issues.append(_issue(loaded, (*rm.spec_path[:2], "inference"), str(exc)))
    return mp


def _pairs(loaded: LoadedSpec, models: dict[str, ModelPlan]) -> tuple[list[tuple[str, str, str, Any]],
                                                                       dict[tuple[str, str], Nesting]]:
    """(small, large, source, required) of every test, and the proofs of the auto pairs."""
    compare = loaded.spec.compare
    if compare.tests == "auto":
        proven = auto_nesting([_nest_side(m) for m in models.values()])  # with their proof: not proven twice
        return [(a, b, "auto", "proven") for a, b in proven], proven
    return [(a, b, "listed", nested) for a, b, nested in compare.test_pairs()], {}


def _test_plans(loaded: LoadedSpec, models: dict[str, ModelPlan], issues: list[SpecIssue]) -> list[TestPlan]:
    """The likelihood-ratio tests to compute; a listed pair that cannot be tested is an issue."""
    refit = loaded.spec.compare.refit
    pairs, proven = _pairs(loaded, models)
    tests: list[TestPlan] = []
    for i, (small, large, source, required) in enumerate(pairs):
        where = ("compare", "tests", i)
        if small not in models or large not in models:
            issues.append(_issue(loaded, where, f"unknown model in test [{small}, {large}]"))
            continue
        ms, ml = models[small], models[large]
        kinds = glmm_kind(ms.resolved), glmm_kind(ml.resolved)
        if kinds[0] != kinds[1]:  # GLMMs are compared within one family, link and nagq (lme4's anova)
            if source == "listed":
                issues.append(_issue(loaded, where, f"{small} ({kinds[0]}) and {large} ({kinds[1]}) cannot be "
                                     "compared by a likelihood-ratio test: both models need the same family, "
                                     "link and nagq"))
            continue
        why = proven.get((small, large)) or check_nested(_nest_side(ms), _nest_side(ml))
        if source == "listed" and not why.nested and (why.how != "undecided" or required == "strict"):
            issues.append(_issue(loaded, where, f"{small} is not nested in {large}: {why.reason}; a likelihood-ratio "
                                 "test needs nested models" + (" (nested: strict)" if why.how == "undecided" else "")))
            continue
        same_fixed = ms.fixed_key == ml.fixed_key and ms.method == ml.method
        t = TestPlan(small, large, source, refit or not same_fixed, nesting=why.how)
        if why.how == "undecided":
            t.warnings.append(f"nesting of {small} in {large} could not be proven ({why.reason}); tested as lme4's "
                              "anova() would, without a check: set nested: strict to make this an error")
        if not refit and not same_fixed:
            if source == "listed":
                issues.append(_issue(loaded, where, "refit: false keeps REML fits only when the fixed-effect matrices "
                                     f"(and methods) of {small} and {large} are identical; they are not: set "
                                     "refit: true"))
                continue
            t.warnings.append("refit: false, but the fixed effects differ: both refitted with ML")
        tests.append(t)
    return tests


def make_plan(path: str | Path, verify: bool = False) -> SpecPlan:
    """Validate the spec and data (designs built), plan each model, prove nesting of test pairs;
    PlanError with every problem found."""
    validated = validate_spec(Path(path))
    loaded = validated.loaded
    issues: list[SpecIssue] = []
    models = {name: _model_plan(validated, name, rm, verify, issues) for name, rm in loaded.models.items()}
    if issues:
        raise PlanError(issues)
    issues = _expectation_terms(loaded, models)  # listed with the test-pair problems below
    from runner.run.predictions import plan_predictions

    predict, predict_issues = plan_predictions(loaded, validated.data, models)
    issues += predict_issues
    tests = _test_plans(loaded, models, issues)
    if issues:
        raise PlanError(ordered_issues(issues))
    # ML refits: every REML model keeps its ML values in its record (`ml_refit`), which the
    # ranking (lme4's anova() compares ML fits) and the likelihood-ratio tests use
    for m in models.values():
        m.need_ml = m.method == "REML"
    compare, data = loaded.spec.compare, loaded.spec.data
    return SpecPlan(validated=validated, name=loaded.name, spec_path=Path(path), models=models, tests=tests,
                criterion=compare.criterion, refit=compare.refit, expectations=list(loaded.expectations),
                data_sha256=validated.data.sha256, predict=predict, id_columns=list(data.id_columns or []))


def glmm_kind(rm: ResolvedModel, nagq: bool = True) -> str:
    """"gaussian", or a GLMM's family, link (and nagq): what likelihoods may be compared within."""
    if rm.family == "gaussian":
        return "gaussian"
    return f"{rm.family} ({rm.link}" + (f", nagq {rm.nagq})" if nagq else ")")
