"""`data.filter`: a small row-condition language of its own, evaluated with numpy.

A spec is untrusted, so the filter never reaches pandas `query`/`eval` or Python
`eval`: `runner.data.filter_syntax` tokenizes and parses it into a tiny tree (its
docstring has the grammar), and the tree is evaluated here over the frame's columns
as numpy arrays. Nothing in the text can name a method, an attribute, a module or a
file: a name is a column, and the only functions are `is.na(...)` and `c(...)`.

Missing values compare as pandas compares NaN: `==`, `<`, `<=`, `>`, `>=` and `in`
are false for a missing value, `!=` is true; `is.na(x)` tests for them.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from runner.data.filter_syntax import COMPARISONS as _CMP
from runner.data.filter_syntax import SYNTAX, FilterError, Node, parse_filter

_ARITH: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                                "/": operator.truediv}


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class _Value:
    kind: str  # "num", "str", "bool"
    data: Any  # numpy array over the rows, or a scalar
    na: Any  # boolean array (or scalar) of missing values
    what: str  # how messages name it: "column 'age'", "the number 3", ...

    @property
    def scalar(self) -> bool:
        return not isinstance(self.data, np.ndarray)


def _column_value(series: pd.Series, name: str) -> _Value:
    """A column as a typed numpy array plus its missing-value mask."""
    what = f"column {name!r}"
    na = series.isna().to_numpy(dtype=bool)
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return _Value("bool", series.fillna(False).to_numpy(dtype=bool), na, what)
    if pd.api.types.is_numeric_dtype(dtype):
        return _Value("num", series.to_numpy(dtype=float, na_value=np.nan), na, what)
    if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
        raise FilterError(f"{what} holds dates or times; a filter compares numbers and text")
    values = series.to_numpy(dtype=object)
    present = values[~na]
    if len(present) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                            for v in present):
        return _Value("num", pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan), na, what)
    data = np.array(["" if missing else (v if isinstance(v, str) else str(v)) for v, missing in zip(values, na)],
                    dtype=object)
    return _Value("str", data, na, what)


def _literal(node: Node) -> _Value:
    if node.kind == "num":
        # a numpy scalar, so that 1/0 is inf and 0/0 NaN under errstate, as for columns (never ZeroDivisionError)
        return _Value("num", np.float64(node.value), False, f"the number {node.value:g}")
    if node.kind == "str":
        return _Value("str", node.value, False, f"the text {node.value!r}")
    return _Value("bool", bool(node.value), False, "TRUE" if node.value else "FALSE")


def close_columns(name: str, columns: Iterable[str]) -> str:
    """"; did you mean 'x'?" for a near-miss column name, else the columns there are."""
    columns = list(columns)
    lowered = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(f"'{lowered[c]}'" for c in close) + "?"
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    return f" (columns: {shown})"


class _Evaluator:
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.n = len(frame)
        self.columns = [str(c) for c in frame.columns]
        self.cache: dict[str, _Value] = {}

    def column(self, node: Node) -> _Value:
        name = node.value
        if name not in self.cache:
            if name not in self.columns and name in ("NA", "NaN", "None", "null", "NULL", "nan"):
                raise FilterError(f"invalid filter: {name} is not a value to compare with; test for missing "
                                  "values with is.na(x) or !is.na(x)", node.pos)
            if name not in self.columns:
                raise FilterError(f"unknown column {name!r} in filter{close_columns(name, self.columns)}", node.pos)
            try:
                self.cache[name] = _column_value(self.frame[name], name)
            except FilterError as exc:
                raise FilterError(exc.message, node.pos) from None
        return self.cache[name]

    def value(self, node: Node) -> _Value:
        kind = node.kind
        if kind == "col":
            return self.column(node)
        if kind in ("num", "str", "bool"):
            return _literal(node)
        if kind == "neg":
            value = self.numeric(self.value(node.args[0]), "-", node.pos)
            return _Value("num", -value.data, value.na, f"-{value.what}")
        if kind == "arith":
            return self.arith(node)
        if kind == "cmp":
            return self.compare(node)
        if kind == "in":
            return self.member(node)
        if kind == "isna":
            value = self.value(node.args[0])
            return _Value("bool", self.missing(value), False, "is.na(...)")
        if kind == "not":
            value = self.logical(self.value(node.args[0]), str(node.value), node.pos)
            return _Value("bool", ~value.data if not value.scalar else not value.data, False, "a condition")
        if kind in ("and", "or"):
            combine = np.logical_and if kind == "and" else np.logical_or
            result = self.logical(self.value(node.args[0]), node.value[0][2], node.value[0][1]).data
            for (_, pos, word), arg in zip(node.value, node.args[1:]):
                result = combine(result, self.logical(self.value(arg), word, pos).data)
            return _Value("bool", result, False, "a condition")
        raise FilterError(f"invalid filter: {kind} is not supported", node.pos)  # pragma: no cover

    def missing(self, value: _Value) -> Any:
        if value.kind == "num":
            return np.isnan(value.data) if not value.scalar else bool(np.isnan(value.data))
        return value.na

    def numeric(self, value: _Value, op: str, pos: int) -> _Value:
        if value.kind == "bool":
            data = value.data.astype(float) if not value.scalar else np.float64(value.data)
            return _Value("num", data, value.na, value.what)
        if value.kind != "num":
            raise FilterError(f"invalid filter: {op!r} needs numbers, but {value.what} is text", pos)
        return value

    def logical(self, value: _Value, op: str, pos: int) -> _Value:
        if value.kind != "bool":
            raise FilterError(f"invalid filter: {op!r} combines conditions (e.g. age > 3 & sex == 'F'), "
                              f"but {value.what} is {'a number' if value.kind == 'num' else 'text'}", pos)
        return value

    def arith(self, node: Node) -> _Value:
        first_op, first_pos, _ = node.value[0]
        data = self.numeric(self.value(node.args[0]), first_op, first_pos).data
        for (op, pos, _), arg in zip(node.value, node.args[1:]):
            right = self.numeric(self.value(arg), op, pos)
            with np.errstate(all="ignore"):
                data = _ARITH[op](data, right.data)
        return _Value("num", data, False, "a computed number")

    def _pair(self, left: _Value, right: _Value, op: str, pos: int) -> tuple[_Value, _Value]:
        if left.kind == "bool" and right.kind != "str":
            left = self.numeric(left, op, pos)
        if right.kind == "bool" and left.kind != "str":
            right = self.numeric(right, op, pos)
        if left.kind != right.kind:
            text, number = (left, right) if left.kind == "str" else (right, left)
            raise FilterError(f"invalid filter: {op!r} compares {number.what}, a number, with {text.what}, "
                              "which is text (quote the number to compare as text, e.g. g == \"1\")", pos)
        return left, right

    def compare(self, node: Node) -> _Value:
        values = [self.value(a) for a in node.args]
        result: Any = True
        for (op, pos), left, right in zip(node.value, values, values[1:]):
            left, right = self._pair(left, right, op, pos)
            with np.errstate(invalid="ignore"):
                if left.kind == "num":
                    hit = _CMP[op](left.data, right.data)
                else:
                    hit = self._compare_text(left, right, op)
            result = np.logical_and(result, hit)
        return _Value("bool", result, False, "a condition")

    @staticmethod
    def _compare_text(left: _Value, right: _Value, op: str) -> Any:
        na = np.logical_or(left.na, right.na)
        if left.scalar and right.scalar:
            hit: bool | np.ndarray = bool(_CMP[op](left.data, right.data))
        else:
            a = left.data if not left.scalar else np.full(1, left.data, dtype=object)
            b = right.data if not right.scalar else np.full(1, right.data, dtype=object)
            hit = np.asarray(_CMP[op](a, b), dtype=bool)
        return np.logical_or(hit, na) if op == "!=" else np.logical_and(hit, np.logical_not(na))

    def member(self, node: Node) -> _Value:
        left = self.value(node.args[0])
        items = node.args[1].args
        pos = node.pos
        if left.kind == "bool":
            left = self.numeric(left, str(node.value), pos)
        kinds = {"str" if i.kind == "str" else "num" for i in items}
        if len(kinds) > 1:
            raise FilterError("invalid filter: the list mixes numbers and text", node.args[1].pos)
        if kinds and kinds != {left.kind}:
            raise FilterError(f"invalid filter: {node.value!r} looks for {'text' if 'str' in kinds else 'numbers'} "
                              f"in {left.what}, which holds {'text' if left.kind == 'str' else 'numbers'}", pos)
        if left.kind == "num":
            wanted = np.array([float(i.value) for i in items], dtype=float)
            hit = np.isin(left.data, wanted)
            return _Value("bool", hit, False, "a condition")
        wanted_text = {str(i.value) for i in items}
        data = left.data if not left.scalar else np.full(1, left.data, dtype=object)
        hit = np.fromiter((v in wanted_text for v in data), dtype=bool, count=len(data))
        return _Value("bool", np.logical_and(hit, np.logical_not(left.na)), False, "a condition")


def evaluate_filter(tree: Node, frame: pd.DataFrame) -> np.ndarray:
    """The rows `tree` keeps, as a boolean array; FilterError when it is not a row condition."""
    value = _Evaluator(frame).value(tree)
    if value.kind != "bool":
        raise FilterError("the filter must be a condition on rows, e.g. \"age >= 9\", "
                          f"but it gives {'numbers' if value.kind == 'num' else 'text'}", tree.pos)
    data = np.asarray(value.data, dtype=bool)
    if data.ndim == 0 or data.shape != (len(frame),):
        raise FilterError("it gives one True/False for the whole table, not one per row "
                          "(compare a column with a value)", tree.pos)
    return data


def filter_rows(frame: pd.DataFrame, text: str) -> np.ndarray:
    """Parse and evaluate `text` over `frame`: the boolean mask of the rows kept."""
    return evaluate_filter(parse_filter(text), frame)


__all__ = ["SYNTAX", "FilterError", "evaluate_filter", "filter_rows", "parse_filter"]
