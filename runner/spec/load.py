"""Load a spec file: YAML (SafeLoader) -> validated `Spec` -> resolved models and variants.

Models and variants are resolved by `runner.spec.resolve` (`ResolvedModel` is defined there
and re-exported here).

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

from runner.spec.errors import SpecError, SpecIssue, ordered_issues
from runner.spec.limits import MAX_MODELS, MAX_SPEC_BYTES
from runner.spec.models import DataSpec, Spec, safe_name
from runner.spec.resolve import ResolvedModel, Resolver, sections_of, valid_or_none
from runner.spec.validation_issues import pydantic_issues, suggest
from runner.spec.yamlpos import NodeLocator, parse_yaml

__all__ = ["LoadedSpec", "ResolvedModel", "load_spec"]


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

    sections = sections_of(spec, raw)
    resolver = Resolver(sections, locator, file)
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
    data = valid_or_none(TypeAdapter(DataSpec), raw.get("data"))
    if data is None or not models:
        return None
    spec = Spec.model_construct(data=data)  # type: ignore[call-arg]  # a partial spec: its data only
    return LoadedSpec(spec=spec, path=p, file=file, sha256=digest, name=safe_name(p.stem),
                      models=models, locator=locator)
