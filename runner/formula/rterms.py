"""R's `terms()` on the fixed part of a formula: the algebra of `+ - : * / %in% ^`.

A term is a set of variables; a variable is any expression that is not formula
algebra (`age`, `I(age^2)`, `poly(Time, 2)`), named by its deparsed text. The rules
follow R's model.c (EncodeVars, InteractTerms, CrossTerms, NestTerms, InTerms,
PowerTerms, DeleteTerms): `a*b` = a + b + a:b, `a/b` = a + a:b, `(a+b+c)^2` = all
two-way interactions, `a %in% b` = a:b; repeated terms are dropped, terms are ordered
by degree (stable), variables by first appearance, and a term's label lists its
variables in that order (`b + a:b` gives `b` and `b:a`). `offset(...)` is not a term.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.formula.errors import FormulaError
from runner.formula.rexpr import Binary, Call, Name, Node, Num, Paren, Str, Unary, deparse

Term = frozenset  # of variable indices
MAX_TERMS = 10_000  # a bound on expansions: (a+b+...+z)^26 would otherwise be 67 million terms


@dataclass(frozen=True)
class Terms:
    """The expanded fixed part: intercept, variables in R's order, terms ordered as R orders them."""

    intercept: bool
    variables: tuple[str, ...]  # deparsed expressions, R's variable order
    nodes: tuple[Node, ...]  # the expression of each variable
    terms: tuple[tuple[int, ...], ...]  # variable indices of each term, ascending
    offsets: tuple[Node, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def labels(self) -> list[str]:
        """R's term labels (`age`, `b:a`, `I(age^2)`)."""
        return [":".join(self.variables[i] for i in t) for t in self.terms]


class _Encoder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.variables: list[str] = []
        self.index: dict[str, int] = {}
        self.nodes: list[Node] = []
        self.offsets: list[Node] = []
        self.warnings: list[str] = []

    def error(self, message: str, node: Node) -> FormulaError:
        return FormulaError(message, self.text, node.pos)

    def variable(self, node: Node) -> int:
        label = deparse(node)
        if label not in self.index:
            self.index[label] = len(self.variables)
            self.variables.append(label)
            self.nodes.append(node)
        return self.index[label]

    def encode(self, node: Node) -> tuple[list[Term], bool | None]:
        """Terms of `node` in order of appearance, and the intercept it sets (None: untouched)."""
        if isinstance(node, Paren):
            return self.encode(node.inner)
        if isinstance(node, Num):
            if node.value in (0.0, 1.0):
                return [], node.value == 1.0
            raise self.error(f"the term '{deparse(node)}' is not valid formula syntax: a number in a formula "
                             "can only be 0 or 1 (the intercept); write I(x * 2) to compute with it", node)
        if isinstance(node, Str):
            raise self.error("a string cannot be a term (a column name with spaces is written in backticks: "
                             "`my column`)", node)
        if isinstance(node, Name):
            if node.name == ".":
                raise self.error("'.' (all other columns) needs the data; list the terms instead", node)
            return [frozenset({self.variable(node)})], None
        if isinstance(node, Call):
            if node.fn == "offset":
                if len(node.args) != 1 or node.kwargs:
                    raise self.error("offset() takes one expression, e.g. offset(log(exposure))", node)
                self.offsets.append(node.args[0])
                return [], None
            return [frozenset({self.variable(node)})], None
        if isinstance(node, Unary):
            if node.op == "+":
                return self.encode(node.operand)
            if node.op == "-":
                terms, icpt = self.encode(node.operand)
                if terms:
                    raise self.error("a term can only be removed from the terms before it, e.g. a*b - a:b", node)
                return [], (None if icpt is None else not icpt)
            raise self.error(f"'{deparse(node)}' is not a formula term: wrap a condition in I(), "
                             f"e.g. I({deparse(node)})", node)
        assert isinstance(node, Binary)
        return self.binary(node)

    def binary(self, node: Binary) -> tuple[list[Term], bool | None]:
        """R's formula operators: `+`, `-`, `:`, `*`, `/`, `%in%` and `^` on terms."""
        op = node.op
        if op == "+":
            lt, li = self.encode(node.left)
            rt, ri = self.encode(node.right)
            return _unique(lt + rt), ri if ri is not None else li
        if op == "-":
            lt, li = self.encode(node.left)
            rt, ri = self.encode(node.right)
            drop = set(rt)
            return [t for t in lt if t not in drop], (li if ri is None else not ri)
        if op in (":", "*", "/", "%in%", "^"):
            lt = self.pure(node.left, op)
            if op == "^":
                return self.power(node, lt), None
            rt = self.pure(node.right, op)
            self.bound(len(lt) * len(rt) + len(lt) + len(rt), node)
            if op == ":":
                return _unique([a | b for a in lt for b in rt]), None
            if op == "*":
                return _unique(lt + rt + [a | b for a in lt for b in rt]), None
            if op == "/":
                whole = frozenset().union(*lt)
                return _unique(lt + [whole | b for b in rt]), None
            whole = frozenset().union(*rt)
            return _unique([a | whole for a in lt]), None
        raise self.error(f"'{op}' is not a formula operator; to compute a value write it in I(), "
                         f"e.g. I({deparse(node)})", node)

    def pure(self, node: Node, op: str) -> list[Term]:
        terms, icpt = self.encode(node)
        if icpt is not None:
            raise self.error(f"the intercept (0 or 1) cannot be used with '{op}'; add or remove it with + or -", node)
        return terms

    def power(self, node: Binary, base: list[Term]) -> list[Term]:
        exp = node.right
        while isinstance(exp, Paren):
            exp = exp.inner
        if not isinstance(exp, Num) or exp.value != int(exp.value) or exp.value < 1:
            raise self.error("the power of terms must be a whole number, e.g. (a + b + c)^2", node.right)
        if not isinstance(node.left, Paren):
            text = deparse(node)
            self.warnings.append(f"'{text}' in a formula means the term {deparse(node.left)} (as in R), not a "
                                 f"square; did you mean I({text})?")
        out = list(base)
        for _ in range(min(int(exp.value), len(base)) - 1):  # past the number of variables nothing changes
            self.bound(len(out) * len(base), node)
            out = _unique(out + [a | b for a in out for b in base])
        return out

    def bound(self, n: int, node: Node) -> None:
        if n > MAX_TERMS:
            raise self.error(f"this expands to more than {MAX_TERMS:,} terms; write the terms you need", node)


def _unique(terms: list[Term]) -> list[Term]:
    """Non-empty terms, first occurrence kept (R's TrimRepeats)."""
    return list(dict.fromkeys(t for t in terms if t))


def expand(node: Node | list[Node] | None, text: str, intercept: bool = True) -> Terms:
    """R's terms() of a right-hand side; `node` None means no terms (`y ~ 1`).

    A list of nodes is read as the nodes joined by `+` (without building a deep tree for a
    model with thousands of terms). `intercept` is the default when the expression does
    not say (`0 +`, `- 1`).
    """
    enc = _Encoder(text)
    terms: list[Term] = []
    seen: dict[Term, None] = {}
    for part in [] if node is None else node if isinstance(node, list) else [node]:
        more, icpt = enc.encode(part)
        seen.update(dict.fromkeys(more))
        enc.bound(len(seen), part)
        if icpt is not None:
            intercept = icpt
    terms = list(seen)
    ordered = sorted(terms, key=len)  # stable: by degree, then as they appeared
    return Terms(intercept=intercept, variables=tuple(enc.variables), nodes=tuple(enc.nodes),
                 terms=tuple(tuple(sorted(t)) for t in ordered), offsets=tuple(enc.offsets),
                 warnings=tuple(enc.warnings))
