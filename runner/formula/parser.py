"""lme4 formula text -> ModelFormula: R's tokens (rtokens.tokenize) and a recursive-descent parser.

This module finds the structure lme4 adds to R's formulas (bars, `||`, `a/b` nesting,
glmmTMB covariance functions); every fixed-effect term, random-effect lhs term and the
response is an R expression parsed by `runner.formula.rexpr`, checked against the
functions mixspec can evaluate, and stored as R's deparsed text. The expansions of
`a/b` and `||` (lme4 1.1's `expandSlash` and `expandDoubleVerts`, term for term) are
in `runner.formula.expand`.
Nothing here evaluates text.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.formula import rexpr, rterms, rtokens
from runner.formula.errors import FormulaError
from runner.formula.functions import check as check_functions
from runner.covariance import GLMMTMB_FUNCTIONS
from runner.formula.expand import (
    GroupExpr,
    expand_double_bar,
    expand_nesting,
    quote_name,
    random_term,
)
from runner.formula.model import ModelFormula, RandomTerm

# glmmTMB's covariance functions that mixspec does not support (runner.covariance: those it does)
_UNSUPPORTED_FUNCTIONS = ("cs", "hetar1", "ar1", "ou", "exp", "gau", "mat", "toep", "rr", "propto", "equalto")
_UNSUPPORTED_HINTS = {
    "cs": (" (glmmTMB's cs() has a variance per column and one common correlation, p + 1 parameters; "
           "homcs() is compound symmetry with one variance and one correlation >= 0, as (1|g) + (1|g:f))"),
}

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {v: k for k, v in _OPEN.items()}
_BARS = ("|", "||")


@dataclass
class Rhs:
    """The terms of a right-hand side; `intercept` is None when not mentioned."""

    fixed: list[str]
    intercept: bool | None
    random: list[RandomTerm]


class _Parser:
    """Recursive descent over the token list of one formula text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = rtokens.tokenize(text, lenient=True)
        self.match: dict[int, int] = {}
        self.depth: list[int] = []
        self.in_call: list[bool] = []  # inside the parentheses of a function call, e.g. I(a | b)
        self._match_brackets()

    # -- helpers -----------------------------------------------------------------
    def error(self, message: str, position: int) -> FormulaError:
        return FormulaError(message, self.text, position)

    def pos(self, i: int) -> int:
        """Text position of token i, or the end of the text past the last token."""
        return self.toks[i].pos if i < len(self.toks) else len(self.text.rstrip())

    def _match_brackets(self) -> None:
        stack: list[int] = []
        for i, t in enumerate(self.toks):
            self.depth.append(len(stack))
            self.in_call.append(any(j > 0 and self.toks[j - 1].kind == "name" for j in stack))
            if t.kind != "op":
                continue
            if t.text in _OPEN:
                stack.append(i)
            elif t.text in _CLOSE:
                if not stack:
                    raise self.error(f"unmatched '{t.text}'", t.pos)
                j = stack.pop()
                if self.toks[j].text != _CLOSE[t.text]:
                    raise self.error(f"'{t.text}' does not close '{self.toks[j].text}'", t.pos)
                self.match[j] = i
                self.depth[-1] = len(stack)
        if stack:
            t = self.toks[stack[-1]]
            raise self.error(f"'{t.text}' is never closed", t.pos)

    def top(self, lo: int, hi: int) -> list[int]:
        """Indices of the tokens in [lo, hi) outside any bracket pair within the range."""
        out, i = [], lo
        while i < hi:
            out.append(i)
            i = self.match[i] + 1 if i in self.match else i + 1
        return out

    def op_at(self, i: int, *ops: str) -> bool:
        return i < len(self.toks) and self.toks[i].kind == "op" and self.toks[i].text in ops

    def wrapped(self, lo: int, hi: int) -> bool:
        """True when tokens [lo, hi) are one bracket pair `( ... )`."""
        return hi - lo >= 2 and self.op_at(lo, "(") and self.match.get(lo) == hi - 1

    def bars(self, lo: int, hi: int) -> list[int]:
        return [i for i in self.top(lo, hi) if self.op_at(i, *_BARS)]

    def end(self, i: int) -> int:
        """Text position just past token i."""
        return self.toks[i].pos + len(self.toks[i].text)

    def expression(self, lo: int, hi: int, what: str, response: bool = False) -> rexpr.Node:
        """Tokens [lo, hi) parsed as one R expression and checked against what mixspec evaluates."""
        for i in range(lo, hi):
            if self.op_at(i, *_BARS) and not self.in_call[i]:
                raise self.error("'|' may only appear inside a random-effects term such as (x | g)", self.pos(i))
            if self.op_at(i, "~"):
                raise self.error("'~' may only separate the response from the terms", self.pos(i))
        a, b = self.pos(lo), self.end(hi - 1)
        try:
            node = rexpr.parse_expression(self.text[a:b], a, self.text)
        except FormulaError as exc:
            shown = " ".join(self.text[a:b].split())
            raise self.error(f"{what} '{shown}' is not valid formula syntax: {exc.message}", exc.position) from None
        check_functions(node, self.text, what.split()[-1], response=response, offsets=what == "the term")
        return node

    def check_expression(self, lo: int, hi: int, what: str, removal: bool = False) -> str:
        """Validate tokens [lo, hi) as formula terms and return their canonical (deparsed) text."""
        node = self.expression(lo, hi, what)
        expanded = rterms.expand(node, self.text)
        if removal and expanded.offsets:
            raise self.error("an offset() cannot be removed with '-'", self.pos(lo))
        if not expanded.terms and not expanded.offsets:
            text = rexpr.deparse(node)
            raise self.error(f"{what} '{text}' adds no columns (write 1 or 0 for the intercept)", self.pos(lo))
        return rexpr.deparse(node)

    def split_terms(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        """Split [lo, hi) at top-level + and -: (sign, start, end) per term."""
        cuts = [i for i in self.top(lo, hi) if self.op_at(i, "+", "-")]
        pieces: list[tuple[str, int, int]] = []
        start, sign = lo, "+"
        for c in cuts:
            if c == start and not pieces and start == lo:
                sign = self.toks[c].text  # a leading sign, as in `-1 + x`
                start = c + 1
                continue
            if c == start:
                raise self.error(f"expected a term after '{self.toks[c - 1].text}'", self.pos(c))
            pieces.append((sign, start, c))
            sign, start = self.toks[c].text, c + 1
        if start >= hi:
            raise self.error(f"expected a term after '{sign}'", self.pos(hi))
        pieces.append((sign, start, hi))
        return pieces

    def intercept_term(self, sign: str, lo: int, hi: int) -> bool | None:
        """A term `1` or `0` (with its sign) sets the intercept: whether there is one; None for other terms."""
        if hi - lo == 1 and self.toks[lo].text in ("0", "1"):
            return (self.toks[lo].text == "1") == (sign == "+")
        return None

    # -- grammar -----------------------------------------------------------------
    def formula(self) -> ModelFormula:
        if not self.toks:
            raise self.error("the formula is empty; write it as response ~ terms", 0)
        for i, tok in enumerate(self.toks):
            if self.op_at(i, "~") and self.depth[i] > 0:
                raise self.error("'~' may only separate the response from the terms", tok.pos)
        tildes = [i for i in range(len(self.toks)) if self.op_at(i, "~")]
        if not tildes:
            self.rhs(0, len(self.toks))  # report a broken term first: `(1|)` says what is wrong in it
            raise self.error(
                "a formula needs '~' between the response and the terms, e.g. y ~ x + (1 | g)",
                len(self.text.rstrip()),
            )
        if len(tildes) > 1:
            raise self.error("a formula has exactly one '~'", self.pos(tildes[1]))
        t = tildes[0]
        if t == 0:
            raise self.error("expected a response before '~'", self.pos(t))
        if t + 1 == len(self.toks):
            raise self.error("expected terms after '~'", len(self.text.rstrip()))
        response = rexpr.deparse(self.expression(0, t, "the response", response=True))
        rhs = self.rhs(t + 1, len(self.toks))
        intercept = True if rhs.intercept is None else rhs.intercept
        return ModelFormula(response, tuple(rhs.fixed), intercept, tuple(rhs.random))

    def rhs(self, lo: int, hi: int) -> Rhs:
        fixed: list[str] = []
        intercept: bool | None = None
        random: list[RandomTerm] = []
        for sign, a, b in self.split_terms(lo, hi):
            if (sets := self.intercept_term(sign, a, b)) is not None:
                intercept = sets
                continue
            bar_term = self.random_terms(a, b)
            if bar_term is not None:
                if sign == "-":
                    raise self.error("a random-effects term cannot be removed with '-'", self.pos(a - 1))
                for term in bar_term:
                    if term in random:
                        raise self.error(
                            f"the random-effects term {_show(term)} appears twice (after expanding '/' and '||')",
                            self.pos(a),
                        )
                    random.append(term)
                continue
            if sign == "-":
                # R's removal (`a*b - a:b`): the terms so far and the removal become one term
                # text, which rterms expands as R does
                if not fixed:
                    raise self.error("nothing to remove: '-' removes a term written before it, e.g. "
                                     "a*b - a:b (or the intercept: x - 1)", self.pos(a - 1))
                removed = self.check_expression(a, b, "the term", removal=True)
                fixed = [self.fixed_removal(fixed, removed, a)]
                continue
            text = self.check_expression(a, b, "the term")
            if text not in fixed:
                fixed.append(text)
        return Rhs(fixed, intercept, random)

    def fixed_removal(self, fixed: list[str], removed: str, at: int) -> str:
        """`a * b` then `- a:b` -> the single term `a * b - a:b` (canonical text)."""
        text = " + ".join(fixed) + " - " + removed
        node = rexpr.parse_expression(text)
        if not rterms.expand(node, text).terms:
            raise self.error(f"removing '{removed}' leaves no terms", self.pos(at))
        return rexpr.deparse(node)  # one term per removal: depth grows only with the removals

    def random_terms(self, lo: int, hi: int) -> list[RandomTerm] | None:
        """The terms of `(lhs | g)` or `fn(lhs | g)` in [lo, hi), or None for a fixed term."""
        a, b = lo, hi
        while self.wrapped(a, b) and self.wrapped(a + 1, b - 1):
            a, b = a + 1, b - 1  # lme4 looks through redundant parentheses: ((1 | g))
        if self.wrapped(a, b) and self.bars(a + 1, b - 1):
            return self.bar(a + 1, b - 1, None)
        if self.toks[a].kind == "name" and self.wrapped(a + 1, b) and self.bars(a + 2, b - 1):
            name = self.toks[a].text
            if name in GLMMTMB_FUNCTIONS:
                return self.bar(a + 2, b - 1, name)
            supported = ", ".join(f"{f}()" for f in GLMMTMB_FUNCTIONS)
            if name in _UNSUPPORTED_FUNCTIONS:
                extra = _UNSUPPORTED_HINTS.get(name, "")
                raise self.error(f"covariance structure {name}() is not supported; use one of {supported}{extra}",
                                 self.pos(a))
            raise self.error(f"unknown covariance function '{name}'; expected one of {supported}", self.pos(a))
        if self.op_at(a, "(") and self.bars(a + 1, self.match[a]) and self.match[a] < b - 1:
            message = "a random-effects term (x | g) must stand alone between '+' signs"
            raise self.error(message, self.pos(self.match[a] + 1))
        return None

    def bar(self, lo: int, hi: int, function: str | None) -> list[RandomTerm]:
        """`lhs | group` or `lhs || group` in [lo, hi), expanded as lme4's findbars does."""
        bars = self.bars(lo, hi)
        if len(bars) > 1:
            raise self.error("a random-effects term has one '|'", self.pos(bars[1]))
        b = bars[0]
        double = self.toks[b].text == "||"
        if double and function is not None:
            raise self.error(
                f"'||' cannot be used inside {function}(); write {function}(x | g)"
                + (" (diag() already makes the terms independent)" if function == "diag" else ""),
                self.pos(b),
            )
        if b == lo:
            raise self.error(f"expected the random-effects terms before '{self.toks[b].text}'", self.pos(b))
        if b + 1 == hi:
            raise self.error(f"expected a grouping factor after '{self.toks[b].text}'", self.pos(hi))
        intercept, terms = self.lhs(lo, b)
        groups = self.group(b + 1, hi)
        covariance = GLMMTMB_FUNCTIONS[function] if function else "unstructured"
        lhss = expand_double_bar(intercept, terms) if double else [(intercept, terms)]
        return [random_term(g, i, t, covariance, double) for i, t in lhss for g in groups]

    def lhs(self, lo: int, hi: int) -> tuple[bool, tuple[str, ...]]:
        intercept = True
        terms: list[str] = []
        for sign, a, b in self.split_terms(lo, hi):
            if (sets := self.intercept_term(sign, a, b)) is not None:
                intercept = sets
                continue
            if sign == "-":
                raise self.error("only the intercept can be removed with '-' (write 0 + x)", self.pos(a - 1))
            text = self.check_expression(a, b, "the random-effects term")
            if text not in terms:
                terms.append(text)
        if not intercept and not terms:
            raise self.error("this random-effects term has no columns; write (1 | g) for an intercept", self.pos(lo))
        return intercept, tuple(terms)

    def group(self, lo: int, hi: int) -> list[GroupExpr]:
        """A grouping factor: `g`, `a:b`, or the nesting `a/b/c`, expanded."""
        cuts = [i for i in self.top(lo, hi) if self.op_at(i, "/")]
        parts: list[GroupExpr] = []
        start = lo
        for c in [*cuts, hi]:
            if c == start:
                if c < hi:
                    raise self.error("expected a grouping factor before '/'", self.pos(c))
                raise self.error("expected a grouping factor after '/'", self.pos(c))
            parts.append(self.interaction(start, c))
            start = c + 1
        return expand_nesting(parts)

    def interaction(self, lo: int, hi: int) -> GroupExpr:
        cuts = [i for i in self.top(lo, hi) if self.op_at(i, ":")]
        expr: GroupExpr | None = None
        start = lo
        for c in [*cuts, hi]:
            if c == start:
                where = f"after '{self.toks[c - 1].text}'" if c > lo else f"before '{self.toks[c].text}'"
                raise self.error(f"expected a grouping factor {where}", self.pos(c))
            piece = self.factor(start, c)
            expr = piece if expr is None else (expr, piece)
            start = c + 1
        assert expr is not None
        return expr

    def factor(self, lo: int, hi: int) -> GroupExpr:
        if self.wrapped(lo, hi):
            inner = [i for i in self.top(lo + 1, hi - 1) if self.op_at(i, "/")]
            if inner:
                raise self.error("'/' cannot be used inside parentheses in a grouping factor", self.pos(inner[0]))
            if hi - lo == 2:
                raise self.error("expected a grouping factor inside '()'", self.pos(hi - 1))
            return (self.interaction(lo + 1, hi - 1),)
        t = self.toks[lo]
        if hi - lo != 1 or t.kind != "name" or t.text.startswith("."):
            bad = lo if t.kind != "name" or t.text.startswith(".") else lo + 1
            raise self.error(
                "a grouping factor must be a column name (or names joined by ':' or '/')", self.pos(bad)
            )
        name = t.text[1:-1] if t.text.startswith("`") else t.text
        if not name.strip():
            raise self.error("a grouping factor name cannot be empty", t.pos)
        return name


def _show(term: RandomTerm) -> str:
    """A short lme4 spelling of one term, for messages."""
    lhs = term.lhs.replace("1 + ", "") if term.intercept and term.terms else term.lhs
    return f"({lhs} | {term.label or ':'.join(map(quote_name, term.group))})"


def parse_formula(text: str) -> ModelFormula:
    """Parse lme4 / glmmTMB formula text into a ModelFormula.

    Raises FormulaError (a ValueError) with a caret under the offending character.
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be text, not {type(text).__name__}", "", 0)
    return _Parser(text).formula()


def parse_group_chain(text: str) -> list[GroupExpr]:
    """`province/school` -> [province, school]: the factors of a nesting, outer first, unexpanded."""
    parser = _Parser(text)
    n = len(parser.toks)
    if not n:
        raise parser.error("expected a grouping factor", 0)
    cuts = [-1, *(i for i in parser.top(0, n) if parser.op_at(i, "/")), n]
    for a, b in zip(cuts, cuts[1:]):
        if b == a + 1:
            raise parser.error("expected a grouping factor", parser.pos(b))
    return [parser.interaction(a + 1, b) for a, b in zip(cuts, cuts[1:])]


def parse_rhs(text: str) -> Rhs:
    """Parse `+`-separated terms without response or '~' (for variants' add/drop)."""
    if not isinstance(text, str):
        raise FormulaError(f"a term must be text, not {type(text).__name__}", "", 0)
    parser = _Parser(text)
    if not parser.toks:
        raise parser.error("expected a term", 0)
    for i, t in enumerate(parser.toks):
        if parser.op_at(i, "~"):
            raise parser.error("a term cannot contain '~'", t.pos)
    return parser.rhs(0, len(parser.toks))
