"""R expression text -> tokens: names, numbers, strings and R's operators, each with its offset.

`runner.formula.rexpr` parses them into a tree; the lme4 formula parser
(`runner.formula.parser`) reads them in lenient mode to find bars and brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.formula.errors import FormulaError

_NAME = re.compile(r"(?:[^\W\d]|\.(?!\d))[\w.]*")
R_NAME = re.compile(r"(?:[^\W\d_]|\.(?!\d))[\w.]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?")
_SPECIAL = re.compile(r"%[^%\n]*%")
_OPS = ("**", "&&", "||", "==", "!=", "<=", ">=", "+", "-", "*", "/", "^", ":", "(", ")", ",", "=",
        "<", ">", "!", "&", "|", "~")
_OP = re.compile("|".join(re.escape(o) for o in _OPS))  # the first of _OPS that matches, as a loop over them
# R's reserved words that are constants when they stand alone.
CONSTANTS = {"TRUE": True, "FALSE": False, "T": True, "F": False}
LITERALS = frozenset({"TRUE", "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_"})
RESERVED = frozenset({"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
                       "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in"})


@dataclass(frozen=True)
class Token:
    """One lexeme: kind is name | number | string | op; `pos` indexes the text."""

    kind: str
    text: str
    pos: int


def tokenize(text: str, base: int = 0, full_text: str | None = None, lenient: bool = False) -> list[Token]:
    """Split R expression text into tokens (`**` is read as `^`, as R does).

    `base` is the offset of `text` inside `full_text`, the text errors show. `lenient` is
    the formula parser's mode: it only finds bars, brackets and `+`, and hands each term's
    text back to `parse_expression`, so a character R's grammar rejects becomes a
    one-character op token here and the error names the term it is in.
    """
    shown = text if full_text is None else full_text
    out: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if m := _NAME.match(text, i):
            out.append(Token("name", m.group(), base + i))
            i = m.end()
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            assert m is not None
            out.append(Token("number", m.group(), base + i))
            i = m.end()
        elif c in "'\"`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" and c != "`" else 1
            if j >= n:
                what = "quoted name" if c == "`" else "string"
                raise FormulaError(f"this {what} is never closed (missing {c})", shown, base + i)
            out.append(Token("name" if c == "`" else "string", text[i: j + 1], base + i))
            i = j + 1
        elif c == "%":
            m = _SPECIAL.match(text, i)
            if m is None and lenient:
                out.append(Token("op", c, base + i))
                i += 1
                continue
            if m is None:
                raise FormulaError("an operator starting with '%' is never closed (e.g. %in%, %%)", shown, base + i)
            out.append(Token("op", m.group(), base + i))
            i = m.end()
        else:
            m = _OP.match(text, i)
            op = m.group() if m is not None else c if lenient else None
            if op is None:
                raise FormulaError(f"unexpected character {c!r}", shown, base + i)
            out.append(Token("op", "^" if op == "**" and not lenient else op, base + i))
            i += len(op)
    return out
