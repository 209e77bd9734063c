"""Column names in the three vocabularies: formulaic's, lme4's, and (variable, level).

formulaic names a treatment-coded factor column `sex[T.M]` and a full-rank one `f[a]`;
lme4 pastes the variable and the level (`sexM`, `fa`). Reports show both, so the
mapping lives in one place.
"""

from __future__ import annotations

import re

from runner.design.model import FixedColumn

_FACTOR = re.compile(r"^(?P<var>.+?)\[(?:T\.)?(?P<level>.*)\]$")
_CWRAP = re.compile(r"^C\((?P<inner>[^,()]+)(?:,.*)?\)$")


def split_top_level(name: str, sep: str = ":") -> list[str]:
    """Split on `sep` outside brackets and parentheses (`I(a:b):c` keeps `I(a:b)`)."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(name):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


_R_RESERVED = frozenset({"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
                         "FALSE", "NULL", "Inf", "NaN", "NA", "in"})


def _r_syntactic(name: str) -> bool:
    """R's rule for a name that needs no backticks (letters may be any Unicode letters)."""
    if not name or name in _R_RESERVED:
        return False
    if not (name[0].isalpha() or (name[0] == "." and not name[1:2].isdigit())):
        return False
    return all(ch.isalnum() or ch in "._" for ch in name)


def _r_spelling(var: str) -> str:
    """How R deparses a variable in a coefficient name: a plain column with spaces or other
    non-syntactic characters gets backticks (`my x`); expressions such as I(x^2) do not."""
    if "(" in var or _r_syntactic(var):
        return var
    return f"`{var}`"


def _part(part: str) -> tuple[str, str | None, str]:
    """One interaction component -> (variable, level or None, lme4 spelling)."""
    m = _FACTOR.match(part)
    if m is None:
        return _plain_variable(part), None, _r_spelling(part)
    var, level = m.group("var"), m.group("level")
    return _plain_variable(var), level, f"{_r_spelling(var)}{level}"


def _plain_variable(var: str) -> str:
    """`C(x)` and `C(x, Treatment('b'))` name the data column x."""
    m = _CWRAP.match(var.strip())
    return m.group("inner").strip() if m else var


def column_names(term: str) -> FixedColumn:
    """formulaic column name -> FixedColumn with lme4's name, variable and level."""
    if term == "Intercept":
        return FixedColumn(term=term, lme4_name="(Intercept)", variable=None, level=None)
    parts = [_part(p) for p in split_top_level(term)]
    variable = ":".join(p[0] for p in parts)
    levels = [p[1] for p in parts if p[1] is not None]
    level = ":".join(levels) if levels else None
    lme4_name = ":".join(p[2] for p in parts)
    return FixedColumn(term=term, lme4_name=lme4_name, variable=variable, level=level)


def lme4_name(term: str) -> str:
    """lme4's spelling of one formulaic column name."""
    return column_names(term).lme4_name
