"""Models and variants -> `ResolvedModel`s: formulas parsed, options inherited, GLMM rules.

A variant inherits from its base (a model or another variant) and drops or adds terms;
options come from the model, else its base, else `defaults:`. An invalid spec is still
resolved from whatever sections are valid, so one `validate` reports every problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from runner.formula.model import ModelFormula
from runner.spec.errors import SpecIssue
from runner.spec.models import CompareSpec, Defaults, FormulaModel, ModelSpec, Spec, StructuredModel, TestSpec, VariantSpec
from runner.spec.validation_issues import suggest
from runner.spec.yamlpos import NodeLocator
from runner.vocab import EngineName, Method

_MODEL_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelSpec)


@dataclass(frozen=True)
class ResolvedModel:
    """One model to fit, whether written as a model or derived as a variant."""

    name: str
    formula: ModelFormula
    formula_text: str  # rendered back (lme4 syntax where lme4 can say it)
    weights: str | None
    offset: str | None
    method: Method
    engine: EngineName
    verify: str | None
    source: str  # "model" or "variant of X"
    spec_path: tuple[str, ...]  # where it is defined, e.g. ("models", "slopes", "formula")
    written: str | None = None  # the formula text as written in the spec (formula models only)
    family: str = "gaussian"  # gaussian | binomial | poisson (a GLMM is always fitted by ML)
    link: str | None = None  # None: the family's canonical link
    nagq: int = 1


def _formula_issue(exc: Exception, loc: tuple[Any, ...], locator: NodeLocator, file: str) -> SpecIssue:
    """A formula error pointing at the offending character inside the YAML scalar."""
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        line, col = locator.char_position(loc, position)
    else:
        line, col = locator.position(loc)
    return SpecIssue(file, line, col, ".".join(str(s) for s in loc), str(exc))


@dataclass
class _Sections:
    """The parts of a spec the resolver needs; best effort when the whole spec is invalid."""

    defaults: Defaults
    models: dict[str, FormulaModel | StructuredModel]
    variants: dict[str, VariantSpec]
    names: list[str]  # every model and variant name written, valid or not
    tests: list[tuple[str, str] | TestSpec] | str | None


class Resolver:
    """Builds `ResolvedModel`s for models and variants, collecting issues."""

    def __init__(self, sections: _Sections, locator: NodeLocator, file: str):
        from runner import formula as formula_api

        self.f = formula_api
        self.s = sections
        self.locator = locator
        self.file = file
        self.issues: list[SpecIssue] = []
        self.done: dict[str, ResolvedModel | None] = {}

    def issue(self, loc: tuple[Any, ...], message: str, severity: str = "error") -> None:
        line, col = self.locator.position(loc)
        self.issues.append(SpecIssue(self.file, line, col, ".".join(str(s) for s in loc), message,
                                     severity))  # type: ignore[arg-type]

    def _options(self, own: Any, base: ResolvedModel | None) -> dict[str, Any]:
        d = self.s.defaults
        out: dict[str, Any] = {}
        for key, default in (("method", d.method), ("engine", d.engine), ("verify", d.verify),
                             ("weights", None), ("offset", None), ("family", d.family), ("link", d.link),
                             ("nagq", d.nagq)):
            value = getattr(own, key)
            if key in own.model_fields_set or value is not None:
                out[key] = value
            elif base is not None:
                out[key] = getattr(base, key)
            else:
                out[key] = default
        return self._glmm_options(own, base, out)

    def _glmm_options(self, own: Any, base: ResolvedModel | None, out: dict[str, Any]) -> dict[str, Any]:
        """GLMM rules (issue 13): a GLMM is fitted by ML (REML written on the model itself is
        an error; an inherited REML does not apply, with a warning); link and nagq must suit
        the family; statsmodels cannot fit one."""
        from runner.engines.lme.families import DEFAULT_LINK, FAMILY_LINKS

        family, link, where = out["family"], out["link"], self._where(own)
        if family == "gaussian":
            if link not in (None, "identity"):
                self.issue((*where, "link"), f"link {link!r} needs family binomial or poisson "
                                             "(family gaussian has the identity link)")
            if "nagq" in own.model_fields_set and own.nagq != 1:
                self.issue((*where, "nagq"), "nagq applies to GLMMs (family binomial or poisson) only")
            out["link"] = None
            return out
        if link is not None and link not in FAMILY_LINKS[family]:
            self.issue((*where, "link"), f"link {link!r} is not available for family {family} "
                                         f"(choose {', '.join(FAMILY_LINKS[family])})")
        out["link"] = link or DEFAULT_LINK[family]
        if out["method"] == "REML":
            if "method" in own.model_fields_set:
                self.issue((*where, "method"), f"a GLMM (family {family}) is fitted by maximum likelihood, as "
                                               "lme4's glmer: remove method: REML or write method: ML")
            elif (base is None or base.family == "gaussian") and "method" in self.s.defaults.model_fields_set:
                self.issue((*where, "family"), f"family {family}: fitted by ML (the inherited method REML "
                                               "does not apply to a GLMM)", severity="warning")
        out["method"] = "ML"
        if out["engine"] == "statsmodels":
            self.issue((*where, "engine"), "engine statsmodels cannot fit a GLMM (statsmodels has no frequentist "
                                           "mixed GLM); use engine: lme or auto")
        if out["verify"]:
            if "verify" in own.model_fields_set or "verify" in self.s.defaults.model_fields_set:
                self.issue((*where, "family"), "verify: statsmodels does not apply to a GLMM (statsmodels has no "
                                               "frequentist mixed GLM): not cross-checked", severity="warning")
            out["verify"] = None
        return out

    def _where(self, own: Any) -> tuple[Any, ...]:
        for section in ("models", "variants"):
            for name, m in getattr(self.s, section).items():
                if m is own:
                    return (section, name)
        return ()

    def model(self, name: str, m: FormulaModel | StructuredModel) -> ResolvedModel | None:
        if isinstance(m, FormulaModel):
            loc: tuple[Any, ...] = ("models", name, "formula")
            try:
                mf = self.f.parse_formula(m.formula)
            except ValueError as exc:
                self.issues.append(_formula_issue(exc, loc, self.locator, self.file))
                return None
        else:
            loc = ("models", name)
            try:
                mf = self.f.structured_formula(
                    m.response, list(m.fixed), [r.model_dump() for r in m.random], intercept=m.intercept)
            except ValueError as exc:
                self.issue(loc, str(exc))
                return None
        return ResolvedModel(name=name, formula=mf, formula_text=self.f.render(mf), source="model",
                             spec_path=tuple(str(s) for s in loc),
                             written=m.formula if isinstance(m, FormulaModel) else None,
                             **self._options(m, None))

    def variant(self, name: str, stack: tuple[str, ...] = ()) -> ResolvedModel | None:
        if name in self.done:
            return self.done[name]
        v: VariantSpec = self.s.variants[name]
        loc = ("variants", name)
        base_name = v.base
        if base_name in stack or base_name == name:
            chain = " -> ".join((*stack, name, base_name))
            self.issue((*loc, "from"), f"variants form a cycle: {chain}")
            self.done[name] = None
            return None
        if base_name in self.s.models:
            base = self.done.get(base_name)
        elif base_name in self.s.variants:
            base = self.variant(base_name, (*stack, name))
        elif base_name in self.s.names:
            base = None  # written but invalid: its own error is reported
        else:
            self.issue((*loc, "from"), f"unknown model {base_name!r}{suggest(base_name, self.s.names)}")
            self.done[name] = None
            return None
        if base is None:  # the base had its own error, already reported
            self.done[name] = None
            return None
        mf = base.formula
        ok = True
        for key, op in (("drop", self.f.drop_terms), ("add", self.f.add_terms)):
            for i, term in enumerate(getattr(v, key)):
                try:
                    mf = op(mf, [term])
                except ValueError as exc:
                    self.issues.append(_formula_issue(exc, (*loc, key, i), self.locator, self.file))
                    ok = False
        if not ok:
            self.done[name] = None
            return None
        resolved = ResolvedModel(name=name, formula=mf, formula_text=self.f.render(mf),
                                 source=f"variant of {base_name}", spec_path=loc, **self._options(v, base))
        self.done[name] = resolved
        return resolved


def valid_or_none(adapter: TypeAdapter[Any], value: Any) -> Any:
    """`value` validated by `adapter`, or None: resolving an invalid spec keeps its valid parts."""
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def sections_of(spec: Spec | None, raw: dict[str, Any]) -> _Sections:
    """From a valid spec, or else from whatever parts of the raw data are valid on their own."""
    def names_of(key: str) -> list[str]:
        value = raw.get(key)
        return [str(k) for k in value] if isinstance(value, dict) else []

    names = [*names_of("models"), *names_of("variants")]
    if spec is not None:
        return _Sections(spec.defaults, dict(spec.models), dict(spec.variants), names, spec.compare.tests)
    defaults = valid_or_none(TypeAdapter(Defaults), raw.get("defaults") or {}) or Defaults()
    models = {}
    if isinstance(raw.get("models"), dict):
        for name, value in raw["models"].items():
            if (m := valid_or_none(_MODEL_ADAPTER, value)) is not None:
                models[str(name)] = m
    variants = {}
    if isinstance(raw.get("variants"), dict):
        for name, value in raw["variants"].items():
            if (v := valid_or_none(TypeAdapter(VariantSpec), value)) is not None:
                variants[str(name)] = v
    tests = None
    if isinstance(raw.get("compare"), dict):
        valid = valid_or_none(TypeAdapter(CompareSpec), raw["compare"])
        tests = valid.tests if valid is not None else None
    return _Sections(defaults, models, variants, names, tests)
