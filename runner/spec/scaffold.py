"""`mixspec init`: a starter spec written from a data file's columns.

Why: the first spec is the hardest to write. Reading the columns lets the scaffold
name a real numeric response and real grouping factors, so the file validates as
written and the analyst edits formulas rather than YAML structure.

Column names are data (a CSV header can hold anything, newlines included), so the
spec is written by a YAML emitter (`yaml.safe_dump`), names that are not R syntax
are backticked inside formulas, and names in comments are written as escaped literals:
no column name can add a key or end a comment.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from runner.spec.models import safe_name

#: Words that name an outcome (matched against the name's words, case-insensitively).
OUTCOME_WORDS = frozenset({
    "y", "response", "outcome", "score", "scores", "reaction", "yield", "result", "value", "measure",
    "measurement", "dv", "target", "rt", "accuracy", "strength", "diameter", "weight", "height", "length",
    "growth", "output", "rate", "level", "concentration", "dose_response",
})
ID_WORDS = frozenset({"id", "ids", "key", "index", "idx", "uuid", "code"})
#: Words that name a cluster: a numeric column named so may be a grouping factor.
CLUSTER_WORDS = frozenset({
    "subject", "subj", "participant", "person", "patient", "student", "pupil", "child", "school", "class",
    "classroom", "teacher", "site", "centre", "center", "clinic", "hospital", "batch", "plate", "cask", "sample",
    "item", "animal", "chick", "mouse", "rat", "plot", "block", "field", "farm", "tree", "family", "household",
    "village", "country", "region", "province", "state", "group", "cluster", "rater", "judge", "worker",
    "operator", "machine", "lab", "litter", "herd", "team", "firm", "unit",
})
FEW_INTEGER_VALUES = 8  # an integer column with at most this many values may be a factor (Days 0-9 is time)
MAX_FIXED = 3
MAX_GROUPS = 3
_R_RESERVED = frozenset({"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
                         "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in"})
_SYNTACTIC = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")


class ScaffoldError(ValueError):
    """A --response or --group that the data cannot give (the message says what can)."""


def formula_name(name: str) -> str:
    """`name` as it is written in an R formula: backticked unless it is a syntactic name."""
    if _SYNTACTIC.fullmatch(name) and name not in _R_RESERVED:
        return name
    return f"`{name}`"


def writable(name: str) -> bool:
    """Whether a formula can name the column at all (a backtick inside a name cannot be quoted)."""
    return "`" not in name and name.strip() != ""


def literal(name: str) -> str:
    """A name for a YAML comment: an escaped literal when it is not plain, so no line break,
    control character or quote in it reaches the file raw."""
    return name if re.fullmatch(r"[A-Za-z0-9_.\- ]+", name) else repr(name)


def _words(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w}


@dataclass
class Proposal:
    """What the scaffold writes: the chosen columns and the notes that become comments."""

    response: str | None
    fixed: list[str]
    groups: list[str]
    slope: str | None
    notes: list[str] = field(default_factory=list)


class _Columns:
    """Per-column facts the choices are made from."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.n = len(frame)
        self.names = [str(c) for c in frame.columns]
        self.levels = {str(c): int(frame[c].nunique(dropna=True)) for c in frame.columns}
        self.dtype = {str(c): frame[c].dtype for c in frame.columns}

    def numeric(self, c: str) -> bool:
        return pd.api.types.is_numeric_dtype(self.dtype[c]) and not pd.api.types.is_bool_dtype(self.dtype[c])

    def integer(self, c: str) -> bool:
        return pd.api.types.is_integer_dtype(self.dtype[c]) or (
            pd.api.types.is_float_dtype(self.dtype[c]) and self._whole(c))

    def _whole(self, c: str) -> bool:
        values = self.frame[c].dropna()
        return len(values) > 0 and bool((values == values.round()).all())

    def id_like(self, c: str) -> bool:
        """Identifiers: named like one, or a row number (consecutive integers, one per row)."""
        if _words(c) & ID_WORDS:
            return True
        if not (self.integer(c) and self.levels[c] == self.n and self.n > 10):
            return False
        values = self.frame[c]
        return float(values.max()) - float(values.min()) + 1 == self.n

    def grouping(self, c: str) -> bool:
        """Many levels, each repeated: clusters (subjects, schools), not design factors."""
        if self.numeric(c) and not self.integer(c):
            return False
        nlev = self.levels[c]
        return 5 <= nlev <= self.n // 2


def _check_name(name: str, cols: _Columns, what: str) -> str:
    if name in cols.names:
        return name
    close = difflib.get_close_matches(name, cols.names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    shown = ", ".join(repr(c) for c in cols.names[:20]) + (", ..." if len(cols.names) > 20 else "")
    raise ScaffoldError(f"--{what} {name!r} is not a column of the data{hint} (columns: {shown})")


def propose(frame: pd.DataFrame, response: str | None = None, groups: list[str] | None = None) -> Proposal:
    """Choose the response, fixed effects and grouping factors; ScaffoldError for bad options."""
    cols = _Columns(frame)
    notes: list[str] = []
    usable = [c for c in cols.names if writable(c)]
    for c in cols.names:
        if not writable(c):
            notes.append(f"column {literal(c)} is left out: a formula cannot name it (rename it)")
    if response is not None:
        response = _check_name(response, cols, "response")
        if not cols.numeric(response):
            raise ScaffoldError(f"--response {response!r} is not numeric ({cols.dtype[response]}): "
                                "a linear mixed model needs a numeric response")
    if groups:
        groups = [_check_name(g, cols, "group") for g in groups]
        if response in groups:
            raise ScaffoldError(f"{response!r} cannot be both the response and a group")
    if response is None:
        numeric = [c for c in usable if cols.numeric(c) and not cols.id_like(c) and c not in (groups or [])
                   and cols.levels[c] > 2]
        named = [c for c in numeric if _words(c) & OUTCOME_WORDS]
        floats = [c for c in numeric if not cols.integer(c)]
        response = next(iter(named or floats or numeric), None)
    if not groups:
        candidates = [c for c in usable if c != response and cols.grouping(c)
                      and (not cols.numeric(c) or cols.id_like(c) or _words(c) & CLUSTER_WORDS)]
        groups = sorted(candidates, key=lambda c: (-(not cols.numeric(c) or cols.id_like(c)), -cols.levels[c]))
        groups = _primary_first(groups, cols)[:MAX_GROUPS]
    fixed: list[str] = []
    few: set[str] = set()  # integer columns that may be factors: poor random slopes
    for c in usable:
        if c == response or c in groups or cols.id_like(c):
            continue
        if cols.numeric(c):
            if cols.integer(c) and 2 < cols.levels[c] <= FEW_INTEGER_VALUES:
                few.add(c)
                notes.append(f"{literal(c)} has {cols.levels[c]} integer values: a factor? "
                             f"use factor({formula_name(c)})")
            if cols.levels[c] >= 2:
                fixed.append(c)
        elif 2 <= cols.levels[c] <= 5:
            fixed.append(c)
    for c in usable:
        if cols.id_like(c) and cols.numeric(c) and c != response and c not in groups:
            notes.append(f"{literal(c)} looks like an identifier: not used as a fixed effect")
    fixed = fixed[:MAX_FIXED]
    numeric_fixed = [c for c in fixed if cols.numeric(c)]
    slope = next((c for c in numeric_fixed if c not in few), next(iter(numeric_fixed), None))
    return Proposal(response, fixed, list(groups), slope, notes)


def _primary_first(groups: list[str], cols: _Columns) -> list[str]:
    """The first group is the one the slope model varies over: a cluster with several rows
    per level (a subject measured repeatedly) before finer ones with one or two rows."""
    repeated = [g for g in groups if cols.n / max(cols.levels[g], 1) >= 5]
    return repeated + [g for g in groups if g not in repeated]


RESPONSE = "RESPONSE"


def scaffold_spec(name: str, data: dict[str, Any], frame: pd.DataFrame, response: str | None = None,
                  groups: list[str] | None = None) -> str:
    """The YAML text of a starter spec for `frame` (validates when a response and a group exist)."""
    p = propose(frame, response, groups)
    resp = formula_name(p.response) if p.response else RESPONSE
    fixed = " + ".join(formula_name(c) for c in p.fixed) or "1"
    group = formula_name(p.groups[0]) if p.groups else "GROUP"
    models: dict[str, Any] = {"intercept": {"formula": f"{resp} ~ {fixed} + (1 | {group})"}}
    tests: list[list[str]] = []
    if p.slope and p.groups:
        models["slope"] = {"formula": f"{resp} ~ {fixed} + ({formula_name(p.slope)} | {group})"}
        tests.append(["intercept", "slope"])
    if len(p.groups) > 1:
        terms = " + ".join(f"(1 | {formula_name(g)})" for g in p.groups)
        models["groups"] = {"formula": f"{resp} ~ {fixed} + {terms}"}
    spec: dict[str, Any] = {
        "name": safe_name(name),
        "title": name,
        "data": {**data, "na": "common"},
        "defaults": {"method": "REML", "engine": "auto"},
        "models": models,
        "compare": {"criterion": "AIC", **({"tests": tests} if tests else {})},
        "expect": {"converged": "all"},
    }
    columns = ", ".join(f"{literal(str(c))} ({frame[c].dtype})" for c in frame.columns)
    head = [
        "Starter spec written by `mixspec init`; edit the formulas, then `mixspec run` this file.",
        f"Columns: {columns}",
        "na: common drops rows missing anything any model uses; method: REML | ML;",
        "engine: auto (= lme) | lme | statsmodels; criterion: AIC | BIC | AICc (ranked on ML fits).",
    ]
    if p.response is None:
        head.append("No numeric response found: replace RESPONSE in the formulas.")
    if not p.groups:
        head.append("No grouping column found (a column with many repeated levels): replace GROUP.")
    head += p.notes
    comment = "".join(f"# {_one_line(line)}\n" for line in head)
    body = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=10_000, default_flow_style=None)
    return comment + body


def _one_line(text: str) -> str:
    """A comment line: any line break YAML knows (\\n, \\r, NEL, LS, PS) made harmless."""
    return re.sub(r"[\r\n\x85\u2028\u2029]", " ", text)


def data_for(path: Path | None, example: str | None, spec_path: Path) -> dict[str, Any]:
    """The `data:` source: an example name, or the file path relative to the spec's folder."""
    if example:
        return {"example": example}
    assert path is not None
    try:
        relative = Path(path).resolve().relative_to(spec_path.resolve().parent)
    except ValueError:
        relative = Path(path).resolve()
    return {"path": relative.as_posix()}
