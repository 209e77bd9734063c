"""Evaluating one formula variable on a DataFrame: a whitelist interpreter, no `eval`.

A variable (`age`, `I(age^2)`, `log(x, base = 2)`, `poly(Time, 2)`, `relevel(f, ref = "b")`)
is a parsed R expression (`runner.formula.rexpr`). It evaluates to a numeric block
(n x k with column suffixes, as `poly` gives `1 2`) or a factor (codes, levels,
contrast). Functions compute what R computes. Stateful ones (`scale`, `poly`,
`factor` levels) learn their parameters once on the rows R's model.frame sees (after
the filter, before rows with missing values are dropped) and keep them in a plain,
JSON-serializable dict, so new data is evaluated with the same parameters.
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable

import numpy as np
import pandas as pd

from runner.formula.functions import canonical_function, contrast_of
from runner.formula.poly import poly_coefs, poly_predict
from runner.formula.rexpr import CONSTANTS, Binary, Call, Name, Node, Num, Paren, Str, Unary, deparse
from runner.formula.values import Block, EvalError, Factor, as_variable, coded, level_label, relevel

__all__ = ["Block", "EvalError", "Evaluator", "Factor", "State", "evaluate", "level_label"]

State = dict[str, Any]
MAX_DEGREE = 25  # poly(): beyond this the columns are numerically meaningless (and a huge degree is a DoS)

_UNARY_FUNCS: dict[str, Callable[[Any], np.ndarray]] = {  # numpy ufuncs: arrays or scalars
    "log2": np.log2, "log10": np.log10, "log1p": np.log1p, "exp": np.exp, "expm1": np.expm1, "sqrt": np.sqrt,
    "abs": np.abs,
}


def text_factor(s: pd.Series) -> Factor:
    """A text column as a factor: levels its distinct strings in code-point order, code -1
    for anything else (missing, or a non-text value in an object column). One factorize
    and a lookup per distinct value, not a Python pass over the rows (11,520 rows: 1.3 ms)."""
    try:
        codes, uniques = pd.factorize(s, sort=False)  # missing values -> -1
    except TypeError:  # unhashable cells (lists in a Parquet column): none of them is text
        values = s.to_numpy(dtype=object)
        labels = np.asarray([v if isinstance(v, str) else None for v in values], dtype=object)
        return coded(labels, sorted({v for v in labels if v is not None}))
    distinct = uniques.tolist()
    levels = sorted({u for u in distinct if isinstance(u, str)})
    where = {v: i for i, v in enumerate(levels)}
    remap = np.array([where[u] if isinstance(u, str) else -1 for u in distinct] + [-1], dtype=np.int64)
    return Factor(remap[np.asarray(codes, dtype=np.int64)], levels)


class Evaluator:
    """Evaluates variables on one frame; `learning` fills `state`, otherwise reads it."""

    def __init__(self, frame: pd.DataFrame, state: State, learning: bool,
                 contrasts: dict[str, str] | None = None) -> None:
        self.frame = frame
        self.n = len(frame)
        self.state = state
        self.learning = learning
        self.contrasts = contrasts or {}

    # -- helpers
    def fail(self, message: str) -> EvalError:
        return EvalError(message)

    def remember(self, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if key not in self.state:
            if not self.learning:
                raise self.fail(f"'{key}' has no learned parameters")
            self.state[key] = compute()
        return self.state[key]

    def column(self, name: str) -> Any:
        if name not in self.frame.columns:
            raise self.fail(f"column '{name}' is not in the data")
        s = self.frame[name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            cats = list(s.cat.categories)
            contrast = self.contrasts.get(name, "treatment")
            return Factor(np.asarray(s.cat.codes, dtype=np.int64), [level_label(c) for c in cats],
                          contrast, 0)
        if pd.api.types.is_bool_dtype(s.dtype):
            return s.to_numpy(dtype=bool)
        if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf":
            # numpy-backed numbers have no missing marker but NaN: a plain copy as float
            # (pandas' na_value path scans for missing values first, ~40 us a column)
            return np.array(s.to_numpy(), dtype=float)
        if pd.api.types.is_numeric_dtype(s.dtype):
            return s.to_numpy(dtype=float, na_value=np.nan)
        f = text_factor(s)  # text: a factor with levels in code-point order
        f.contrast = self.contrasts.get(name, "treatment")
        return f

    def numeric(self, value: Any, what: str) -> np.ndarray | float:
        """A value as numbers (logical as 0/1, as R); factors and text are refused."""
        if isinstance(value, (bool, np.bool_)):
            return float(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, np.ndarray) and value.ndim == 1:
            return value.astype(float)
        if isinstance(value, Block):
            if value.values.shape[1] != 1:
                raise self.fail(f"{what} needs one column; it has {value.values.shape[1]}")
            return value.values[:, 0]
        if isinstance(value, Factor):
            raise self.fail(f"{what} needs numbers, but its input is a factor (text); "
                            "use as.numeric() if the levels are numbers")
        raise self.fail(f"{what} needs numbers, got {type(value).__name__}")

    # -- the interpreter
    def value(self, node: Node) -> Any:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Str):
            return node.value
        if isinstance(node, Paren):
            return self.value(node.inner)
        if isinstance(node, Name):
            if node.name not in self.frame.columns:
                if node.name in CONSTANTS:
                    return CONSTANTS[node.name]
                if node.name == "pi":
                    return math.pi
            return self.column(node.name)
        if isinstance(node, Unary):
            v = self.value(node.operand)
            if node.op == "!":
                return ~self.logical(v, deparse(node))
            x = self.numeric(v, f"'{deparse(node)}'")
            return -x if node.op == "-" else x
        if isinstance(node, Binary):
            return self.binary(node)
        assert isinstance(node, Call)
        return self.call(node)

    def logical(self, v: Any, what: str) -> np.ndarray:
        if isinstance(v, np.ndarray) and v.dtype == bool:
            return v
        if isinstance(v, (bool, np.bool_)):
            return np.full(self.n, bool(v))
        x = self.numeric(v, what)
        return np.asarray(x) != 0

    def binary(self, node: Binary) -> Any:
        op = node.op
        what = f"'{deparse(node)}'"
        if op == "%in%":
            left = self.value(node.left)
            right = node.right.inner if isinstance(node.right, Paren) else node.right
            if isinstance(right, Call) and right.fn == "c":
                allowed = [self.value(a) for a in right.args]
            else:
                allowed = [self.value(right)]
            return self.membership(left, allowed)
        if op in ("&", "&&", "|", "||"):
            pa = self.logical(self.value(node.left), what)
            pb = self.logical(self.value(node.right), what)
            return (pa & pb) if op in ("&", "&&") else (pa | pb)
        left, right = self.value(node.left), self.value(node.right)
        if op in ("==", "!=") and (isinstance(left, (Factor, str)) or isinstance(right, (Factor, str))):
            la, lb = self.labels(left), self.labels(right)
            out = (la == lb) if op == "==" else (la != lb)
            return np.asarray(out, dtype=bool)
        a = self.numeric(left, what)
        b = self.numeric(right, what)
        with np.errstate(all="ignore"):
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return np.true_divide(a, b)
            if op == "^":
                return np.power(np.asarray(a, dtype=float), b)
            if op == "%%":
                return np.mod(a, b)
            if op == "%/%":
                return np.floor_divide(a, b)
            cmp = {"<": np.less, ">": np.greater, "<=": np.less_equal, ">=": np.greater_equal,
                   "==": np.equal, "!=": np.not_equal}.get(op)
            if cmp is not None:
                return np.asarray(cmp(a, b), dtype=bool)
        raise self.fail(f"operator {op} is not supported in {what}")

    def labels(self, v: Any) -> Any:
        if isinstance(v, Factor):
            lv = np.asarray(v.levels + [None], dtype=object)
            return lv[np.where(v.codes < 0, len(v.levels), v.codes)]
        if isinstance(v, np.ndarray):
            return np.asarray([level_label(x) for x in v], dtype=object)
        return level_label(v) if not isinstance(v, str) else v

    def membership(self, left: Any, allowed: list[Any]) -> np.ndarray:
        if isinstance(left, Factor):
            labels = self.labels(left)
            keys = {a if isinstance(a, str) else level_label(a) for a in allowed}
            return np.asarray([x in keys for x in labels], dtype=bool)
        x = self.numeric(left, "%in%")
        return np.isin(x, [float(a) for a in allowed if not isinstance(a, str)])

    def call(self, node: Call) -> Any:
        fn = canonical_function(node.fn)
        kw = dict(node.kwargs)
        key = deparse(node)
        what = f"'{key}'"
        if fn == "I":
            return self.value(node.args[0])
        if fn == "log":
            x = self.numeric(self.value(node.args[0]), what)
            base_node = node.args[1] if len(node.args) > 1 else kw.get("base")
            with np.errstate(all="ignore"):
                if base_node is None:
                    return np.log(x)
                base = self.numeric(self.value(base_node), what)
                if isinstance(base, float) and base in (2.0, 10.0):  # R's logbase uses log2/log10 here
                    return np.log2(x) if base == 2.0 else np.log10(x)
                return np.log(x) / np.log(base)
        if fn in _UNARY_FUNCS:
            x = self.numeric(self.value(node.args[0]), what)
            with np.errstate(all="ignore"):
                return _UNARY_FUNCS[fn](x)
        if fn in ("scale", "center"):
            return self.scale(node, fn, key)
        if fn == "poly":
            return self.poly(node, key)
        if fn == "as.numeric":
            v = self.value(node.args[0])
            if isinstance(v, Factor):
                labels = self.labels(v)
                return pd.to_numeric(pd.Series(labels, dtype=object), errors="coerce").to_numpy(dtype=float)
            return np.asarray(self.numeric(v, what), dtype=float)
        if fn in ("factor", "ordered"):
            return self.factor_call(node, fn, kw, key)
        if fn == "relevel":
            f = self.value(node.args[0])
            if not isinstance(f, Factor):
                raise self.fail(f"relevel() needs a factor: write relevel(factor(x), ref = ...) in {what}")
            ref_node = node.args[1] if len(node.args) > 1 else kw.get("ref")
            if ref_node is None:
                raise self.fail(f"relevel() needs ref = the reference level in {what}")
            ref = self.value(ref_node)
            return relevel(f, ref, what)
        if fn == "C":
            return self.contrast_call(node, kw, what)
        if fn == "cbind":
            cols = [np.asarray(self.numeric(self.value(a), what), dtype=float) for a in node.args]
            return Block(np.column_stack(cols), [deparse(a) for a in node.args])
        raise self.fail(f"unknown function {node.fn}()")

    def scale(self, node: Call, fn: str, key: str) -> Block:
        x = np.asarray(self.numeric(self.value(node.args[0]), f"'{key}'"), dtype=float)
        kw = dict(node.kwargs)
        center = True if len(node.args) < 2 else self.value(node.args[1])
        center = self.value(kw["center"]) if "center" in kw else center
        scale = fn == "scale" and (True if len(node.args) < 3 else self.value(node.args[2]))
        scale = self.value(kw["scale"]) if "scale" in kw else scale
        for name, v in (("center", center), ("scale", scale)):
            if isinstance(v, str) or not isinstance(v, (bool, float)):
                raise self.fail(f"{name} = in '{key}' must be TRUE, FALSE or a number")

        def learn() -> dict[str, Any]:
            ok = x[~np.isnan(x)]
            c = float(ok.mean()) if center is True else (float(center) if center is not False else 0.0)
            s = None
            if scale is True:
                d = ok - c
                s = float(np.sqrt(np.sum(d**2) / max(1, ok.size - 1)))
            elif scale not in (False, None):
                s = float(scale)
            return {"center": c, "scale": s}

        p = self.remember(key, learn)
        out = x - p["center"]
        if p["scale"] is not None:
            out = out / p["scale"]
        return Block(out[:, None], [""])

    def poly(self, node: Call, key: str) -> Block:
        kw = dict(node.kwargs)
        x = np.asarray(self.numeric(self.value(node.args[0]), f"'{key}'"), dtype=float)
        deg_node = node.args[1] if len(node.args) > 1 else kw.get("degree")
        degree = 1.0 if deg_node is None else self.value(deg_node)
        raw_node = node.args[2] if len(node.args) > 2 else kw.get("raw")
        raw = False if raw_node is None else self.value(raw_node)
        if not isinstance(raw, bool):
            raise self.fail(f"raw = in '{key}' must be TRUE or FALSE")
        if not isinstance(degree, float) or degree != int(degree) or not 1 <= degree <= MAX_DEGREE:
            raise self.fail(f"the degree of '{key}' must be a whole number from 1 to {MAX_DEGREE}")
        d = int(degree)
        names = [str(j) for j in range(1, d + 1)]
        if raw:
            with np.errstate(all="ignore"):
                return Block(np.column_stack([x**j for j in range(1, d + 1)]), names)

        def learn() -> dict[str, Any]:
            ok = x[~np.isnan(x)]
            if np.unique(ok).size <= d:
                raise self.fail(f"'{key}': the degree must be less than the number of distinct values "
                                f"({np.unique(ok).size})")
            alpha, norm2 = poly_coefs(ok, d)
            return {"alpha": alpha, "norm2": norm2}

        p = self.remember(key, learn)
        return Block(poly_predict(x, d, p["alpha"], p["norm2"]), names)

    def factor_call(self, node: Call, fn: str, kw: dict[str, Node], key: str) -> Factor:
        """factor(x), factor(x, levels = c(...)), ordered(x) / factor(x, ordered = TRUE)
        (an ordered factor is coded by contr.poly, R's default for ordered factors)."""
        v = self.value(node.args[0])
        ordered = fn == "ordered" or ("ordered" in kw and self.value(kw["ordered"]) is True)
        if "levels" in kw:
            lv = kw["levels"]
            items = lv.args if isinstance(lv, Call) and lv.fn == "c" else (lv,)
            listed = [self.value(a) for a in items]
            if not all(isinstance(x, (str, float)) for x in listed):
                raise self.fail(f"levels = in '{key}' must list numbers or strings, e.g. c(\"low\", \"high\")")
            levels = [x if isinstance(x, str) else level_label(x) for x in listed]
            if len(set(levels)) < len(levels):
                raise self.fail(f"levels = in '{key}' lists a level twice (as R: a duplicated factor level)")
            f = self.factor(v, key, fixed=levels)
        else:
            f = self.factor(v, key)
        if ordered:
            f.contrast = "poly"
        return f

    def factor(self, v: Any, key: str, fixed: list[str] | None = None) -> Factor:
        if fixed is not None:  # levels given: values outside them are missing (an error on used rows)
            labels = self.labels(v) if isinstance(v, Factor) else np.asarray(
                [None if isinstance(x, float) and math.isnan(x) else level_label(x)
                 for x in np.asarray(self.numeric(v, f"'{key}'"), dtype=float)], dtype=object) \
                if not (isinstance(v, np.ndarray) and v.dtype == bool) else np.where(v, "TRUE", "FALSE")
            return coded(np.asarray(labels, dtype=object), self.remember(key, lambda: {"levels": fixed})["levels"])
        if isinstance(v, Factor):
            used = np.unique(v.codes[v.codes >= 0])  # factor(f) drops unused levels, keeps their order
            levels = [v.levels[int(j)] for j in used]
            return self.learned_levels(key, levels, v.levels, v.codes)
        if isinstance(v, np.ndarray) and v.dtype == bool:
            return self.from_labels(key, np.where(v, "TRUE", "FALSE").astype(object), ["FALSE", "TRUE"])
        x = np.asarray(self.numeric(v, f"'{key}'"), dtype=float)
        ok = ~np.isnan(x)

        def learn() -> dict[str, Any]:
            return {"levels": [level_label(u) for u in np.unique(x[ok])]}

        levels = self.remember(key, learn)["levels"]
        uniq, inverse = np.unique(x[ok], return_inverse=True)  # label each distinct value once
        index = {lv: j for j, lv in enumerate(levels)}
        to_code = np.asarray([index.get(level_label(u), -1) for u in uniq], dtype=np.int64)
        codes = np.full(x.size, -1, dtype=np.int64)
        codes[ok] = to_code[inverse.ravel()] if uniq.size else -1
        return Factor(codes, list(levels))

    def learned_levels(self, key: str, present: list[str], levels: list[str], codes: np.ndarray) -> Factor:
        order = self.remember(key, lambda: {"levels": present})["levels"]
        lv = np.asarray(levels + [None], dtype=object)
        return coded(lv[np.where(codes < 0, len(levels), codes)], order)

    def from_labels(self, key: str, values: np.ndarray, fixed: list[str] | None = None) -> Factor:
        present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
        labels = np.asarray([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                             for v in values], dtype=object)
        levels = self.remember(key, lambda: {"levels": fixed or sorted({str(v) for v in present})})["levels"]
        return coded(labels, levels)

    def contrast_call(self, node: Call, kw: dict[str, Node], what: str) -> Factor:
        v = self.value(node.args[0])
        f = v if isinstance(v, Factor) else self.factor(v, f"factor({deparse(node.args[0])})")
        f = Factor(f.codes, list(f.levels), f.contrast, f.base)
        contr = node.args[1] if len(node.args) > 1 else kw.get("contr")
        if contr is None:
            return Factor(f.codes, f.levels, "treatment", 0)
        kind, ref, numbered = contrast_of(contr, lambda m: self.fail(m))
        base = 0
        if kind == "SAS":
            kind, base = "treatment", len(f.levels) - 1
        if ref is not None:
            if ref not in f.levels:
                raise self.fail(f"reference '{ref}' in {what} is not a level (levels: {', '.join(f.levels[:10])})")
            base = f.levels.index(ref)
        base_node = node.args[2] if len(node.args) > 2 else kw.get("base")
        if base_node is not None:
            b = self.value(base_node)
            if not isinstance(b, float) or b != int(b) or not 1 <= b <= len(f.levels):
                raise self.fail(f"base in {what} must be a level number 1..{len(f.levels)}")
            # R calls contr.treatment(nlevels, base = b): its columns are named by level number
            return Factor(f.codes, f.levels, kind, int(b) - 1, numbered=True)
        return Factor(f.codes, f.levels, kind, base, numbered=numbered)


def evaluate(node: Node, frame: pd.DataFrame, state: State, learning: bool = False,
             contrasts: dict[str, str] | None = None) -> Block | Factor:
    """One variable on `frame`: learn into `state` (learning) or use what it holds."""
    ev = Evaluator(frame, state, learning, contrasts)
    v = ev.value(node)
    if isinstance(v, (int, float, str)) and not isinstance(v, bool):
        raise EvalError(f"'{deparse(node)}' is a constant, not a variable; a term needs one value per row")
    if isinstance(v, (bool, np.bool_)):
        raise EvalError(f"'{deparse(node)}' is a constant, not a variable; a term needs one value per row")
    return as_variable(v, deparse(node))
