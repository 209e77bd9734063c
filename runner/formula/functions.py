"""The functions a formula may call: names, arguments, aliases, and the static check.

`check` walks a parsed expression at parse time and refuses anything the evaluator
(`runner.formula.evaluate`) does not implement, with a caret on it, so an unknown
function (`ns(x, 3)`, `__import__`) never reaches the data. Python spellings that specs
used with formulaic (`np.log`, `C(x, Treatment("b"))`) are aliases of R's functions.
"""

from __future__ import annotations

from collections.abc import Callable

from runner.formula.contrasts import KINDS
from runner.formula.errors import FormulaError
from runner.formula.rexpr import Binary, Call, Name, Node, Num, Paren, Str, Unary, deparse, format_number

UNARY = ("log2", "log10", "log1p", "exp", "expm1", "sqrt", "abs")  # one numeric argument, elementwise

SUPPORTED = ("I(), log(x), log(x, base), log2(), log10(), log1p(), exp(), expm1(), sqrt(), abs(), scale(x), "
             "poly(x, degree), poly(x, degree, raw = TRUE), factor(x), factor(x, levels = c(...)), as.factor(), "
             "ordered(), as.numeric(), "
             "relevel(f, ref = \"b\"), C(f, contr.treatment | contr.sum | contr.helmert | contr.poly), offset(); "
             "in I(): + - * / ^ %% %/%, comparisons, !, &, |")
_NOT_YET = {"ns": "splines are not supported yet", "bs": "splines are not supported yet",
            "s": "smooth terms are not supported (mixspec fits linear mixed models)",
            "lag": "lags are not supported", "cut": "cut() is not supported yet; make the groups a column"}

# Python spellings specs used with formulaic: kept as aliases.
_ALIASES = {"np.log": "log", "numpy.log": "log", "np.log2": "log2", "np.log10": "log10", "np.log1p": "log1p",
            "np.exp": "exp", "np.expm1": "expm1", "np.sqrt": "sqrt", "numpy.sqrt": "sqrt", "numpy.exp": "exp",
            "np.abs": "abs", "as.double": "as.numeric", "as.factor": "factor", "center": "center",
            "as.ordered": "ordered"}
_CONTRASTS = {"contr.treatment": "treatment", "contr.sum": "sum", "contr.helmert": "helmert", "contr.poly": "poly",
              "Treatment": "treatment", "Sum": "sum", "Helmert": "helmert", "Poly": "poly",
              "treatment": "treatment", "sum": "sum", "helmert": "helmert", "poly": "poly", "contr.SAS": "SAS"}
# name -> (min positional, max positional, allowed keywords)
_SIGNATURES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "I": (1, 1, ()), "log": (1, 2, ("base",)), "scale": (1, 3, ("center", "scale")), "center": (1, 1, ()),
    "poly": (1, 3, ("degree", "raw")), "factor": (1, 1, ("levels", "ordered")),
    "ordered": (1, 1, ("levels",)), "as.numeric": (1, 1, ()),
    "relevel": (1, 2, ("ref",)), "C": (1, 3, ("contr", "base", "how.many")), "cbind": (1, 2, ()),
    **{f: (1, 1, ()) for f in UNARY},
}


# how many leading positional arguments hold data; the others (degree, base, ref, contrasts,
# flags) are constants: numbers, strings, TRUE/FALSE or arithmetic of them
DATA_ARGS = {"C": 1, "relevel": 1, "poly": 1, "factor": 1, "ordered": 1, "scale": 1, "center": 1, "log": 1}
CONSTANT_NAMES = frozenset({"TRUE", "FALSE", "T", "F", "pi"})


def constant(node: Node) -> bool:
    """True when `node` reads no column (`2`, `"b"`, `TRUE`, `exp(1)`, `-0.5`)."""
    if isinstance(node, Name):
        return node.name in CONSTANT_NAMES
    if isinstance(node, (Num, Str)):
        return True
    if isinstance(node, Paren):
        return constant(node.inner)
    if isinstance(node, Unary):
        return constant(node.operand)
    if isinstance(node, Binary):
        return constant(node.left) and constant(node.right)
    return all(constant(a) for a in (*node.args, *(v for _, v in node.kwargs)))


def canonical_function(name: str) -> str:
    return _ALIASES.get(name, name)


# ----------------------------------------------------------------------------- static check


_FORMULA_OPS = ("+", "-", ":", "*", "/", "%in%", "^")


def check(node: Node, text: str, where: str = "term", response: bool = False, offsets: bool = False) -> None:
    """Refuse anything the interpreter does not know, at parse time, with a caret on it.

    `offsets`: offset() may stand as a term (the fixed part), reached only through formula
    operators (`x + offset(log(n))`).
    """
    _Checker(text, where, response, offsets).walk(node, True)


class _Checker:
    """One walk of an expression tree for `check`; `top` is True while only formula operators are above."""

    def __init__(self, text: str, where: str, response: bool, offsets: bool) -> None:
        self.text, self.where, self.response, self.offsets = text, where, response, offsets

    def bad(self, message: str, at: Node) -> FormulaError:
        return FormulaError(message, self.text, at.pos)

    def walk(self, n: Node, top: bool) -> None:
        if isinstance(n, (Num, Str)):
            return
        if isinstance(n, Name):
            if n.name == ".":
                raise self.bad("'.' (all other columns) needs the data; list the terms instead", n)
            return
        if isinstance(n, Paren):
            self.walk(n.inner, top)
            return
        if isinstance(n, Unary):
            self.walk(n.operand, top and n.op in "+-" and not self.response)
            return
        if isinstance(n, Binary):
            if n.op.startswith("%") and n.op not in ("%%", "%/%", "%in%"):
                raise self.bad(f"unknown operator {n.op}; supported: %% %/% %in%", n)
            term_op = top and n.op in _FORMULA_OPS and not self.response
            self.walk(n.left, term_op)
            self.walk(n.right, term_op)
            return
        assert isinstance(n, Call)
        self.call(n, top)

    def call(self, n: Call, top: bool) -> None:
        fn = canonical_function(n.fn)
        if fn == "offset":
            if not (self.offsets and top):
                raise self.bad("offset() must stand alone as a term of the fixed part, e.g. y ~ x + offset(log(n))", n)
            if len(n.args) != 1 or n.kwargs:
                raise self.bad("offset() takes one expression, e.g. offset(log(exposure))", n)
            self.walk(n.args[0], False)
            return
        if fn == "cbind" and not (self.response and top):
            raise self.bad("cbind() is only for a binomial response: cbind(successes, failures) ~ ...", n)
        if fn == "c":
            for a in n.args:
                if not isinstance(a, (Num, Str)) and not (isinstance(a, Unary) and isinstance(a.operand, Num)):
                    raise self.bad("c() may only list numbers or strings", a)
            return
        self.signature(n, fn)
        if fn == "C":
            contr = n.args[1] if len(n.args) > 1 else dict(n.kwargs).get("contr")
            if contr is not None:
                contrast_of(contr, lambda m: self.bad(m, contr))
            self.constants(n, 2)
            for a in n.args[:1]:
                self.walk(a, False)
            return
        if fn in DATA_ARGS:
            self.constants(n, DATA_ARGS[fn])
        for a in (*n.args, *(v for _, v in n.kwargs)):
            self.walk(a, False)

    def signature(self, n: Call, fn: str) -> None:
        """A known function, called with as many arguments and such keywords as it takes."""
        if fn not in _SIGNATURES:
            hint = _NOT_YET.get(n.fn)
            what = f"{hint}; " if hint else ""
            raise self.bad(f"unknown function {n.fn}() in {self.where} '{deparse(n)}': {what}supported: {SUPPORTED}", n)
        lo, hi, keys = _SIGNATURES[fn]
        if not lo <= len(n.args) <= hi or len(n.args) + len(n.kwargs) > max(hi, 1 + len(keys)):
            raise self.bad(f"{n.fn}() takes {lo if lo == hi else f'{lo} to {hi}'} argument"
                           f"{'s' if hi > 1 else ''} here: '{deparse(n)}'", n)
        for key, _ in n.kwargs:
            if key not in keys:
                allowed = ", ".join(keys) or "none"
                raise self.bad(f"{n.fn}() has no argument '{key}' (allowed: {allowed})", n)

    def constants(self, n: Call, first: int) -> None:
        """Arguments from position `first` on, and keyword ones (but contr), must be constants."""
        named = [(f"{i + 1}", a) for i, a in enumerate(n.args[first:], start=first)]
        for what, a in named + [(f"'{k}'", a) for k, a in n.kwargs if k != "contr"]:
            if not constant(a):
                raise self.bad(f"argument {what} of {n.fn}() must be a constant (a number, a string, TRUE or "
                               f"FALSE), not a column: '{deparse(a)}'", a)


def contrast_of(node: Node, bad: Callable[[str], Exception]) -> tuple[str, str | None, bool]:
    """C()'s second argument -> (kind, reference level or None, columns numbered).

    As R: a contrast function (`contr.treatment`, `contr.SAS`) is called with the number
    of levels, so its columns are numbered (`C(f, contr.treatment)2`); a name in quotes or
    the short names (`treatment`) use the levels (`C(f, treatment)b`).
    """
    names = ", ".join(f"contr.{k}" for k in KINDS)
    if isinstance(node, (Name, Str)):
        key = node.name if isinstance(node, Name) else node.value
        if key in _CONTRASTS:
            return _CONTRASTS[key], None, isinstance(node, Name) and key.startswith("contr.")
    if isinstance(node, Call) and node.fn in ("Treatment", "contr.treatment") and len(node.args) + len(node.kwargs) == 1:
        ref = node.args[0] if node.args else dict(node.kwargs).get("reference", dict(node.kwargs).get("base"))
        if isinstance(ref, (Str, Num)):
            return "treatment", ref.value if isinstance(ref, Str) else format_number(ref.value), False
    raise bad(f"unknown contrast '{deparse(node)}'; use one of {names} (or Treatment(\"b\"))")


# ----------------------------------------------------------------------------- evaluation
