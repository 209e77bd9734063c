"""Load a spec file: YAML (SafeLoader) -> validated `Spec` -> resolved models and variants.

All problems of a file are collected and raised together as one `SpecError`, each
located as `file:line:col: dotted.path: message`, so a user fixes a spec in one pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from runner.formula.model import ModelFormula
from runner.spec.errors import SpecError, SpecIssue, ordered_issues
from runner.spec.limits import MAX_MODELS, MAX_SPEC_BYTES
from runner.vocab import EngineName, Method
from runner.spec.models import (
    CompareSpec,
    DataSpec,
    Defaults,
    FormulaModel,
    ModelSpec,
    Spec,
    StructuredModel,
    TestSpec,
    VariantSpec,
    safe_name,
)
from runner.spec.validation_issues import pydantic_issues, suggest
from runner.spec.yamlpos import NodeLocator, parse_yaml

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


@dataclass
class LoadedSpec:
    """A valid spec with every model resolved, plus what is needed to locate later problems."""

    spec: Spec
    path: Path
    file: str  # the path as the user gave it (used in messages)
    sha256: str  # of the file's bytes
    name: str  # spec.name or the sanitized file stem
    models: dict[str, ResolvedModel]
    locator: NodeLocator = field(repr=False)
    expectations: list[Any] = field(default_factory=list)  # runner.spec.expect.Expectation
    warnings: list[SpecIssue] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        """Directory that relative data paths are resolved against."""
        return self.path.resolve().parent

    def issue(self, path: tuple[Any, ...] | str, message: str, severity: str = "error",
              offset: int | None = None) -> SpecIssue:
        """A SpecIssue located at `path` in this file (at character `offset` of a scalar)."""
        loc = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        loc = tuple(int(s) if isinstance(s, str) and s.isdigit() else s for s in loc)
        if offset is None:
            line, col = self.locator.position(loc)
        else:
            line, col = self.locator.char_position(loc, offset)
        return SpecIssue(self.file, line, col, ".".join(str(s) for s in loc), message, severity)  # type: ignore[arg-type]

    def locate(self, issue: SpecIssue) -> SpecIssue:
        """Fill in file/line/col of an issue that only knows its dotted path."""
        if issue.line is not None:
            return issue
        loc = tuple(int(s) if s.isdigit() else s for s in issue.path.split(".")) if issue.path else ()
        if issue.offset is not None:
            line, col = self.locator.char_position(loc, issue.offset)
        else:
            line, col = self.locator.position(loc)
        return issue.located(issue.file or self.file, line, col)


def _read(path: Path, file: str) -> bytes:
    """The file's bytes, refusing more than MAX_SPEC_BYTES without reading them all."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError([SpecIssue(file, 1, None, "", f"the spec file is larger than {MAX_SPEC_BYTES:,} bytes "
                                       "(the limit is 1 MB)")])
        return data
    except FileNotFoundError:
        raise SpecError([SpecIssue(file, None, None, "", "spec file not found")]) from None
    except IsADirectoryError:
        raise SpecError([SpecIssue(file, None, None, "", "is a directory, not a spec file")]) from None
    except OSError as exc:
        raise SpecError([SpecIssue(file, None, None, "", f"cannot read spec: {exc.strerror}")]) from None


def _check_model_count(raw: dict[str, Any], locator: NodeLocator, file: str) -> None:
    """At most MAX_MODELS models plus variants, checked before any of them is resolved."""
    names = [(section, key) for section in ("models", "variants") if isinstance(raw.get(section), dict)
             for key in raw[section]]
    if len(names) <= MAX_MODELS:
        return
    section, first_over = names[MAX_MODELS]
    line, col = locator.position((section, str(first_over)), at_key=True)
    raise SpecError([SpecIssue(file, line, col, f"{section}.{first_over}",
                               f"{len(names):,} models and variants; the limit is {MAX_MODELS} "
                               "(split the spec into several files)")])


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


class _Resolver:
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


def _check_references(tests: Any, names: list[str], locator: NodeLocator, file: str) -> list[SpecIssue]:
    """Model names used by compare.tests must exist."""
    issues: list[SpecIssue] = []
    known = set(names)
    if isinstance(tests, list):
        for i, test in enumerate(tests):
            mapped = not isinstance(test, (tuple, list))
            small, large = test.models if mapped else test
            for j, ref in enumerate((small, large)):
                if ref not in known:
                    line, col = locator.position(("compare", "tests", i, *(("models",) if mapped else ()), j))
                    issues.append(SpecIssue(file, line, col, f"compare.tests.{i}.{j}",
                                            f"unknown model {ref!r}{suggest(ref, names)}"))
            if small == large:
                line, col = locator.position(("compare", "tests", i))
                issues.append(SpecIssue(file, line, col, f"compare.tests.{i}",
                                        f"a test needs two different models, got {small!r} twice"))
    return issues


def _expectations(raw: Any, names: list[str], locator: NodeLocator, file: str) -> tuple[list[Any], list[SpecIssue]]:
    """Parse `expect:` with its grammar and check the model names it mentions."""
    from runner.spec.expect import parse_expectations

    try:
        expectations = parse_expectations(raw)
    except ValueError as exc:
        text = str(exc)
        path = text.split(":", 1)[0] if text.startswith("expect") else "expect"
        message = text.split(":", 1)[1].strip() if text.startswith("expect") and ":" in text else text
        loc: tuple[Any, ...] = tuple(path.split("."))
        node = locator.node_at(loc)
        if isinstance(node, yaml.SequenceNode):  # point at the item the message quotes
            for i, item in enumerate(node.value):
                if isinstance(item, yaml.ScalarNode) and repr(item.value) in message:
                    loc, path = (*loc, i), f"{path}.{i}"
                    break
        line, col = locator.position(loc)
        return [], [SpecIssue(file, line, col, path, message)]
    issues: list[SpecIssue] = []
    for e in expectations:
        refs = [e.model] if e.model else list(e.models or ())
        for ref in refs:
            if ref not in names:
                loc = _find_reference(locator, ("expect", e.kind), ref)
                line, col = locator.position(loc, at_key=e.kind in ("delta_aic", "fixed") and len(loc) > 2)
                issues.append(SpecIssue(file, line, col, ".".join(str(s) for s in loc),
                                        f"unknown model {ref!r}{suggest(ref, names)}"))
    return expectations, issues


def _find_reference(locator: NodeLocator, loc: tuple[Any, ...], ref: str) -> tuple[Any, ...]:
    """The most precise location of a model name inside `expect.<kind>`."""
    node = locator.node_at(loc)
    if isinstance(node, yaml.MappingNode) and locator.node_at((*loc, ref)) is not None:
        return (*loc, ref)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if getattr(item, "value", None) == ref:
                return (*loc, i)
    return loc


def _valid(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


def _sections(spec: Spec | None, raw: dict[str, Any]) -> _Sections:
    """From a valid spec, or else from whatever parts of the raw data are valid on their own."""
    def names_of(key: str) -> list[str]:
        value = raw.get(key)
        return [str(k) for k in value] if isinstance(value, dict) else []

    names = [*names_of("models"), *names_of("variants")]
    if spec is not None:
        return _Sections(spec.defaults, dict(spec.models), dict(spec.variants), names, spec.compare.tests)
    defaults = _valid(TypeAdapter(Defaults), raw.get("defaults") or {}) or Defaults()
    models = {}
    if isinstance(raw.get("models"), dict):
        for name, value in raw["models"].items():
            if (m := _valid(_MODEL_ADAPTER, value)) is not None:
                models[str(name)] = m
    variants = {}
    if isinstance(raw.get("variants"), dict):
        for name, value in raw["variants"].items():
            if (v := _valid(TypeAdapter(VariantSpec), value)) is not None:
                variants[str(name)] = v
    tests = None
    if isinstance(raw.get("compare"), dict):
        valid = _valid(TypeAdapter(CompareSpec), raw["compare"])
        tests = valid.tests if valid is not None else None
    return _Sections(defaults, models, variants, names, tests)


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, validate and resolve a spec file; raise `SpecError` listing every problem."""
    file = str(path)
    p = Path(path)
    data = _read(p, file)
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError([SpecIssue(file, line, col, "", f"not UTF-8 text (byte {exc.start} is "
                                   f"0x{data[exc.start]:02x}): save the spec as UTF-8")]) from None
    raw, locator, issues = parse_yaml(text, file)
    if raw is None:
        raise SpecError([SpecIssue(file, 1, 1, "", "the spec is empty")])
    if not isinstance(raw, dict):
        raise SpecError([SpecIssue(file, 1, 1, "", "a spec is a mapping of keys (name, data, models, ...)")])
    _check_model_count(raw, locator, file)

    spec: Spec | None = None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        issues.extend(pydantic_issues(exc, Spec, locator, file))

    sections = _sections(spec, raw)
    resolver = _Resolver(sections, locator, file)
    for name, m in sections.models.items():
        resolver.done[name] = resolver.model(name, m)
    for name in sections.variants:
        if name in sections.models:
            resolver.issue(("variants", name), f"name {name!r} is already a model; variants need their own names")
            continue
        resolver.variant(name)
    issues.extend(resolver.issues)
    issues.extend(_check_references(sections.tests, sections.names, locator, file))
    expect_raw = raw.get("expect")
    expectations: list[Any] = []
    if isinstance(expect_raw, dict):
        expectations, more = _expectations(expect_raw, sections.names, locator, file)
        issues.extend(more)
    resolved = {n: m for n, m in resolver.done.items() if m is not None}
    ordered = {n: resolved[n] for n in sections.names if n in resolved}
    if spec is None or any(i.severity == "error" for i in issues):
        raise SpecError(ordered_issues(issues), partial=_partial(raw, p, file, digest, ordered, locator))

    return LoadedSpec(spec=spec, path=p, file=file, sha256=digest, name=spec.name or safe_name(p.stem),
                      models=ordered, locator=locator, expectations=expectations, warnings=issues)


def _partial(raw: dict[str, Any], p: Path, file: str, digest: str, models: dict[str, ResolvedModel],
             locator: NodeLocator) -> LoadedSpec | None:
    """The checkable part of an invalid spec: its data section, if valid on its own, and the
    models that resolved (validate then reports their column errors with the spec's)."""
    data = _valid(TypeAdapter(DataSpec), raw.get("data"))
    if data is None or not models:
        return None
    spec = Spec.model_construct(data=data)  # type: ignore[call-arg]  # a partial spec: its data only
    return LoadedSpec(spec=spec, path=p, file=file, sha256=digest, name=safe_name(p.stem),
                      models=models, locator=locator)
