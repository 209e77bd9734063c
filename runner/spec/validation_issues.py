"""Pydantic validation errors -> located, readable `SpecIssue`s.

Pydantic's locations carry union-member tags (`formula`, `list[...]`, `str`) that a
user never wrote; they are dropped here, union alternatives are merged into one
message, and unknown keys get a did-you-mean from the model's real field names.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from runner.spec.errors import SpecIssue
from runner.spec.models import MODEL_FORM_TAGS
from runner.spec.yamlpos import NodeLocator

_TYPE_TAG = re.compile(r"^(?:[a-z_]+\[.*\]|str|int|float|bool|none|function-[a-z]+\[.*\]|tagged-union\[.*\])$")


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice (case-insensitive), or ''."""
    choices = [c for c in choices if isinstance(c, str)]
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(str(word).lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean '{lowered[match[0]]}'?" if match else ""


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete alternatives of an annotation (Optional/Union/Annotated flattened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_unwrap(arg))
        return out
    return [annotation]


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose fields are the keys at `loc` (raw loc, tags included)."""
    current: list[Any] = [root]
    for seg in loc:
        nxt: list[Any] = []
        alternatives = [alt for ann in current for alt in _unwrap(ann)
                        if isinstance(alt, type) and issubclass(alt, BaseModel)]
        if len(alternatives) > 1 and isinstance(seg, str):
            # a union tag such as "formula" names the alternative (FormulaModel) before any field
            tagged = [alt for alt in alternatives if alt.__name__.lower().startswith(seg.lower())]
            if tagged:
                current = tagged
                continue
        for ann in current:
            for alt in _unwrap(ann):
                origin = typing.get_origin(alt)
                if isinstance(alt, type) and issubclass(alt, BaseModel):
                    for name, field in alt.model_fields.items():
                        if seg in (name, field.alias):
                            nxt.append(field.annotation if not field.metadata else
                                       typing.Annotated[(field.annotation, *field.metadata)])
                    if isinstance(seg, str) and seg.lower() == alt.__name__.lower():
                        nxt.append(alt)
                elif origin is dict:
                    nxt.append(typing.get_args(alt)[1])
                elif origin in (list, tuple) and isinstance(seg, int):
                    args = typing.get_args(alt)
                    nxt.append(args[seg] if origin is tuple and seg < len(args) else args[0])
        if not nxt:
            # a union tag (e.g. "formula" for FormulaModel): keep the alternatives it names
            tagged = [alt for ann in current for alt in _unwrap(ann)
                      if isinstance(alt, type) and issubclass(alt, BaseModel)
                      and alt.__name__.lower().startswith(str(seg).lower())]
            nxt = tagged or current
        current = nxt
    models = [alt for ann in current for alt in _unwrap(ann) if isinstance(alt, type) and issubclass(alt, BaseModel)]
    return models[0] if models else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _clean_loc(locator: NodeLocator, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """Drop union-member tags the user never wrote; report whether any was dropped."""
    out: list[Any] = []
    dropped = False
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if i == 2 and loc[0] == "models" and seg in MODEL_FORM_TAGS and not last:
            continue  # the discriminated model form (always present): one alternative, not a union guess
        if isinstance(seg, str) and not last and locator.node_at((*out, seg)) is None:
            if _TYPE_TAG.match(seg):
                dropped = True
                continue
        if isinstance(seg, str) and last and _TYPE_TAG.match(seg) and locator.node_at((*out, seg)) is None:
            dropped = True
            continue
        out.append(seg)
    return tuple(out), dropped


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(s) for s in loc)


def _describe(value: Any) -> str:
    """What the user wrote, briefly: `a list ['x', ...]`, `the text 'abc'`."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {list: "a list", str: "the text", int: "the number", float: "the number", bool: "the value"}
    return f"{kind.get(type(value), 'the value')} {text}"


def _message(err: dict[str, Any], root: type[BaseModel]) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        model = _model_at(root, loc[:-1])
        hint = suggest(str(loc[-1]), _keys_of(model)) if model else ""
        if not hint and model:
            hint = f"; allowed: {', '.join(_keys_of(model))}"
        return f"unknown key{hint}"
    if kind == "missing" and loc and isinstance(loc[-1], int):
        pair = " (a test is a pair [small, large] of model names)" if "tests" in loc else ""
        return f"too few items: item {loc[-1] + 1} is missing{pair}"
    if kind == "too_long" and "tests" in loc:
        return "a test is a pair [small, large] of model names"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        got = err.get("input")
        hint = suggest(str(got), expected) if isinstance(got, str) else ""
        return f"{err['msg']}, got {got!r}{hint}"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind in ("string_pattern_mismatch",) and loc and loc[-1] == "[key]":
        return (f"name {loc[-2]!r} is not a safe file name: use letters, digits, '_' or '-', "
                "starting with a letter or digit")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _model_at(root, loc)
        if model is not None:
            return (f"expected a mapping with the keys {', '.join(_keys_of(model))}; "
                    f"got {_describe(err.get('input'))}")
    if kind == "string_type" and isinstance(err.get("input"), (bool, int, float)):
        got = err["input"]
        why = ("YAML reads unquoted yes/no/on/off/true/false as true or false" if isinstance(got, bool)
               else "YAML reads unquoted digits as a number")
        return f"expected text, got {got!r}: {why}; put the value in quotes"
    if kind.endswith("_type") and "input" in err:
        return f"{err['msg']}, got {err['input']!r}"
    return str(err["msg"])


def pydantic_issues(exc: ValidationError, root: type[BaseModel], locator: NodeLocator,
                    file: str, prefix: tuple[Any, ...] = ()) -> list[SpecIssue]:
    """Located issues for every error of `exc` (raised validating `root` at `prefix`)."""
    raw = exc.errors(include_url=False)
    prepared: list[tuple[tuple[Any, ...], bool, dict[str, Any]]] = []
    for detail in raw:
        full = (*prefix, *detail["loc"])
        clean, from_union = _clean_loc(locator, full)
        prepared.append((clean, from_union, {**detail, "loc": tuple(detail["loc"])}))

    # unknown keys that are near-misses of a missing one make the "missing" error redundant
    extras = {(c[:-1], str(c[-1])) for c, _, e in prepared if e["type"] == "extra_forbidden"}
    issues: list[SpecIssue] = []
    seen: set[tuple[str, str]] = set()
    by_path: dict[tuple[Any, ...], list[str]] = {}
    for clean, from_union, err in prepared:
        if err["type"] == "missing":
            parent, name = clean[:-1], str(clean[-1])
            if any(p == parent and difflib.get_close_matches(name, [k], n=1, cutoff=0.6) for p, k in extras):
                continue
        if from_union and any(len(o) > len(clean) and o[: len(clean)] == clean for o, _, _ in prepared):
            continue  # a deeper error of another union member says more
        if from_union:
            target = clean[:-1] if err["type"] == "missing" and isinstance(clean[-1], int) else clean
            by_path.setdefault(target, []).append(_message(err, root))
            continue
        if err["type"] == "missing" and isinstance(clean[-1], int):
            path = at = clean[:-1]
            message = _message(err, root)
        elif err["type"] == "missing":
            message, path, at = f"missing required key '{clean[-1]}'", clean[:-1], clean[:-1]
        elif err["loc"] and err["loc"][-1] == "[key]":
            path = clean[:-1]
            message, at = _message(err, root), path
        else:
            message, path, at = _message(err, root), clean, clean
        key = (_dotted(path), message)
        if key in seen:
            continue
        seen.add(key)
        line, col = locator.position(at, at_key=err["type"] in ("extra_forbidden",) or err["loc"][-1:] == ("[key]",))
        issues.append(SpecIssue(file, line, col, _dotted(path), message))
    for clean, messages in by_path.items():
        unique = list(dict.fromkeys(messages))
        line, col = locator.position(clean)
        issues.append(SpecIssue(file, line, col, _dotted(clean), "; or ".join(unique)))
    return issues
