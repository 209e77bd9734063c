"""R expressions: a precedence-climbing parser over `rtokens`' tokens, and R's `deparse`.

Formula terms, responses and random-effect left sides are R expressions. They are
parsed here into a small tree of frozen dataclasses and never handed to Python's
`eval`: `runner.formula.evaluate` interprets the tree over a whitelist. Every node
keeps its offset in the text so errors point at the term. `deparse` gives the text R
would print for the same expression, which is R's variable label and so the stem of
coefficient names (`I(x^2)`, `log(x, base = 2)`, `poly(Time, 2)`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from runner.formula.errors import FormulaError
from runner.formula.rtokens import CONSTANTS, LITERALS, R_NAME, RESERVED, Token, tokenize

__all__ = ["CONSTANTS", "Token", "tokenize"]  # the tokenizer's names, as before it had its own module

# ----------------------------------------------------------------------------- the tree


@dataclass(frozen=True)
class Num:
    value: float
    text: str  # as written (R keeps `2L` an integer)
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Str:
    value: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Name:
    name: str  # without backticks
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Node, ...]  # positional arguments in order
    kwargs: tuple[tuple[str, Node], ...]  # named arguments in order
    pos: int = field(default=0, compare=False)
    order: tuple[str | None, ...] = field(default=(), compare=False)  # None = positional, as written


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Paren:
    inner: Node
    pos: int = field(default=0, compare=False)


Node = Num | Str | Name | Call | Unary | Binary | Paren

# binding powers (R's ?Syntax, lowest first); `^` is right-associative
_BINARY = {"|": 2, "||": 2, "&": 3, "&&": 3, "==": 5, "!=": 5, "<": 5, ">": 5, "<=": 5, ">=": 5,
           "+": 6, "-": 6, "*": 7, "/": 7, ":": 9, "^": 11}
_SPECIAL_BP = 8
MAX_DEPTH = 100  # nesting of an expression: far beyond any formula, well inside Python's recursion limit
_NOT_BP = 4
_UNARY_BP = 10


class _Parser:
    def __init__(self, tokens: list[Token], text: str, end: int) -> None:
        self.toks = tokens
        self.text = text
        self.end = end
        self.i = 0
        self.level = 0

    def error(self, message: str, pos: int | None = None) -> FormulaError:
        if pos is None:
            pos = self.toks[self.i].pos if self.i < len(self.toks) else self.end
        return FormulaError(message, self.text, pos)

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Token:
        t = self.peek()
        if t is None:
            raise self.error("the expression ends too early")
        self.i += 1
        return t

    def expect(self, op: str) -> Token:
        t = self.peek()
        if t is None or t.kind != "op" or t.text != op:
            got = "the end" if t is None else f"'{t.text}'"
            raise self.error(f"expected '{op}' here, found {got}")
        self.i += 1
        return t

    def binding(self, t: Token) -> int:
        if t.kind != "op":
            return -1
        if t.text in _BINARY:
            return _BINARY[t.text]
        if t.text.startswith("%"):
            return _SPECIAL_BP
        return -1

    def expr(self, min_bp: int = 0) -> Node:
        self.level += 1
        if self.level > MAX_DEPTH:
            raise self.error(f"the expression is nested more than {MAX_DEPTH} levels deep")
        try:
            return self._expr(min_bp)
        finally:
            self.level -= 1

    def _expr(self, min_bp: int) -> Node:
        left = self.prefix()
        while (t := self.peek()) is not None:
            bp = self.binding(t)
            if bp < 0:
                if t.kind == "name" and t.text.startswith(".") and t.pos == self.toks[self.i - 1].pos + len(
                        self.toks[self.i - 1].text):
                    raise self.error(f"unexpected '{t.text}': attribute access is not part of R formulas "
                                     "(call a supported function by name, e.g. log(x))")
                if t.kind != "op" or t.text not in (")", ",", "="):
                    raise self.error(f"unexpected '{t.text}': an operator (+, -, *, :, ...) is missing before it"
                                     if t.kind != "op" else f"unexpected '{t.text}'")
                break
            if bp < min_bp:
                break
            self.i += 1
            right = self.expr(bp if t.text == "^" else bp + 1)
            left = Binary(t.text, left, right, t.pos)
        return left

    def prefix(self) -> Node:
        t = self.take()
        if t.kind == "number":
            txt = t.text
            try:
                value = float(txt[:-1] if txt.endswith("L") else txt)
            except ValueError:
                raise self.error(f"'{txt}' is not a number", t.pos) from None
            return Num(value, txt, t.pos)
        if t.kind == "string":
            return Str(_unescape(t.text[1:-1]), t.pos)
        if t.kind == "name":
            name = t.text[1:-1] if t.text.startswith("`") else t.text
            if t.text.startswith("`") and not name:
                raise self.error("a quoted name cannot be empty", t.pos)
            nxt = self.peek()
            if nxt is not None and nxt.kind == "op" and nxt.text == "(":
                return self.call(name, t.pos)
            return Name(name, t.pos)
        if t.text == "(":
            if (nxt := self.peek()) is not None and nxt.kind == "op" and nxt.text == ")":
                raise self.error("expected an expression inside '()'", nxt.pos)
            inner = self.expr()
            self.expect(")")
            return Paren(inner, t.pos)
        if t.text in ("-", "+"):
            return Unary(t.text, self.expr(_UNARY_BP), t.pos)
        if t.text == "!":
            return Unary("!", self.expr(_NOT_BP), t.pos)
        raise self.error(f"expected a name, number or '(' here, found '{t.text}'", t.pos)

    def call(self, name: str, pos: int) -> Call:
        self.expect("(")
        args: list[Node] = []
        kwargs: list[tuple[str, Node]] = []
        order: list[str | None] = []
        if (t := self.peek()) is not None and t.kind == "op" and t.text == ")":
            self.i += 1
            return Call(name, (), (), pos, ())
        while True:
            t = self.peek()
            nxt = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
            if t is not None and t.kind in ("name", "string") and nxt is not None and nxt.kind == "op" \
                    and nxt.text == "=":
                key = t.text[1:-1] if t.text[0] in "`'\"" else t.text
                self.i += 2
                kwargs.append((key, self.expr()))
                order.append(key)
            else:
                args.append(self.expr())
                order.append(None)
            t = self.take()
            if t.kind == "op" and t.text == ")":
                break
            if not (t.kind == "op" and t.text == ","):
                raise self.error(f"expected ',' or ')' in the call to {name}(), found '{t.text}'", t.pos)
        return Call(name, tuple(args), tuple(kwargs), pos, tuple(order))


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), s)


def parse_expression(text: str, base: int = 0, full_text: str | None = None) -> Node:
    """Parse one R expression; FormulaError with a caret in `full_text` on bad syntax."""
    shown = text if full_text is None else full_text
    tokens = tokenize(text, base, shown)
    end = base + len(text.rstrip())
    if not tokens:
        raise FormulaError("expected an expression", shown, base)
    p = _Parser(tokens, shown, end)
    node = p.expr()
    if p.i < len(tokens):
        t = tokens[p.i]
        raise FormulaError(f"unexpected '{t.text}'", shown, t.pos)
    if _depth(node) > MAX_DEPTH:
        raise FormulaError(f"the expression is nested more than {MAX_DEPTH} levels deep (split it into "
                           "several terms)", shown, base)
    return node


def _depth(node: Node) -> int:
    """Depth of the tree, without recursion (a chain a + b + c + ... is as deep as it is long)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(n, Paren):
            stack.append((n.inner, d + 1))
        elif isinstance(n, Unary):
            stack.append((n.operand, d + 1))
        elif isinstance(n, Binary):
            stack += [(n.left, d + 1), (n.right, d + 1)]
        elif isinstance(n, Call):
            stack += [(a, d + 1) for a in (*n.args, *(v for _, v in n.kwargs))]
    return deepest


# ----------------------------------------------------------------------------- deparse

_SPACED = {"+", "-", "*", "==", "!=", "<", ">", "<=", ">=", "&", "&&", "|", "||", "~"}


def syntactic(name: str) -> bool:
    """R's rule for a name that needs no backticks."""
    return bool(R_NAME.fullmatch(name)) and name not in RESERVED


def quote(name: str) -> str:
    return name if syntactic(name) else "`" + name.replace("`", "\\`") + "`"


def format_number(value: float) -> str:
    """A number as R's deparse / as.character writes it (15 significant digits, the shorter
    of fixed and scientific notation: 1e+05, 10000, 0.5, 1e-10)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        fixed = str(int(value))
    else:
        fixed = None
    for digits in range(1, 16):
        sci = f"{value:.{digits - 1}e}"
        if float(sci) == value or digits == 15:
            break
    mant, exp = sci.split("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    e = int(exp)
    sci_text = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if fixed is None:
        if e >= 15:
            return sci_text
        fixed = f"{value:.{max(0, digits - 1 - e)}f}"
        if "." in fixed:
            fixed = fixed.rstrip("0").rstrip(".")
    return sci_text if len(fixed) > len(sci_text) else fixed


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def deparse(node: Node) -> str:
    """The expression as R's deparse writes it: the variable's label in R."""
    if isinstance(node, Num):
        if node.text.endswith("L"):
            return format_number(node.value) + "L"
        return format_number(node.value)
    if isinstance(node, Str):
        return _string(node.value)
    if isinstance(node, Name):
        return node.name if node.name in LITERALS else quote(node.name)
    if isinstance(node, Paren):
        return f"({deparse(node.inner)})"
    if isinstance(node, Unary):
        return f"{node.op}{deparse(node.operand)}"
    if isinstance(node, Binary):
        op = node.op
        sep = f" {op} " if op in _SPACED or (op.startswith("%") and op not in ("%%", "%/%")) else op
        return f"{deparse(node.left)}{sep}{deparse(node.right)}"
    assert isinstance(node, Call)
    parts: list[str] = []
    ai = ki = 0
    order = node.order or tuple([None] * len(node.args) + [k for k, _ in node.kwargs])
    for key in order:
        if key is None:
            parts.append(deparse(node.args[ai]))
            ai += 1
        else:
            parts.append(f"{quote(key)} = {deparse(node.kwargs[ki][1])}")
            ki += 1
    return f"{quote(node.fn)}({', '.join(parts)})"


def find_expression(text: str, label: str) -> int | None:
    """Where the expression `label` (deparsed) is written in `text`, spacing and `**`/`^`
    aside: the offset for a caret under a term named in an error, or None."""
    try:
        want = [("^" if t.text == "^" else t.text, t.kind) for t in tokenize(label)]
        toks = tokenize(text)
    except FormulaError:
        return None
    norm = [(("^" if t.text == "^" else t.text), t.kind) for t in toks]
    for i in range(len(norm) - len(want) + 1):
        if all(_same_token(norm[i + k], want[k]) for k in range(len(want))):
            return toks[i].pos
    return None


def _same_token(a: tuple[str, str], b: tuple[str, str]) -> bool:
    if a[1] == "string" and b[1] == "string":
        return a[0][1:-1] == b[0][1:-1]
    if a[1] == "name" and b[1] == "name":
        return a[0].strip("`") == b[0].strip("`")
    if a[1] == "number" and b[1] == "number":
        return float(a[0].rstrip("L")) == float(b[0].rstrip("L"))
    return a == b
