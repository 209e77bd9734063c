"""Which data columns a spec reads, so a source is loaded (and hashed) with those columns only.

A wide file (a survey with hundreds of columns, a warehouse extract) costs memory and
time for every column read, and a pin (`data.sha256`) over columns no model uses would
move when an unrelated column is fixed. So mixspec reads only the columns the spec
names: every variable of every model's formula (fixed part, random slopes, grouping
factors, `a/b` and `a:b` included), weights and offset, the columns `data.filter`
compares, `data.categorical`, `data.center` and `data.id_columns`. The filter is parsed
with mixspec's own grammar (`runner.data.filter_syntax`), never evaluated here.

A name the source lacks is not an error here: the loader skips it, and the checks
that need it (`runner.data.prepare`, the filter) report it with did-you-mean over all the
source's columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from runner.data.filter_syntax import FilterError, Node, parse_filter
from runner.data.model_checks import model_columns
from runner.formula.variables import required_variables
from runner.spec.models import DataSpec

if TYPE_CHECKING:
    from runner.spec.load import ResolvedModel
    from runner.spec.models import PredictSpec


def _column_nodes(node: Node) -> Iterator[Node]:
    if node.kind == "col":
        yield node
    for arg in node.args:
        yield from _column_nodes(arg)


def filter_columns(text: str | None) -> list[tuple[str, int]]:
    """(column, offset in the text) of every column a filter names, in text order; none when the
    filter does not parse (its error is reported where the filter is applied)."""
    if not text:
        return []
    try:
        tree = parse_filter(text)
    except FilterError:
        return []
    return [(str(n.value), n.pos) for n in _column_nodes(tree)]


def filter_message(text: str, exc: FilterError, source_columns: list[str]) -> str:
    """A filter error's message; for an unknown column, with did-you-mean over every column of the
    source (the frame the filter ran on holds only the columns read)."""
    from runner.data.filter import close_columns

    if exc.message.startswith("unknown column"):
        name = next((n for n, at in filter_columns(text) if at == exc.offset), None)
        if name is not None:
            return f"unknown column {name!r} in filter{close_columns(name, source_columns)}"
    return exc.message


# R's constants a formula may name; a column of that name is read instead (R looks in the data
# first, and so does runner.formula.evaluate), so such a column is loaded when the source has it
_CONSTANT_NAMES = re.compile(r"(?<![\w.])(TRUE|FALSE|T|F|pi)(?![\w.])")


def _formula_columns(model: ResolvedModel) -> set[str]:
    """The model's columns (`model_columns`), and any constant name it writes (`T`, `pi`...)."""
    return model_columns(model) | set(_CONSTANT_NAMES.findall(model.formula_text or ""))


def used_columns(data_spec: DataSpec, models: Mapping[str, ResolvedModel]) -> list[str]:
    """The columns of the source the spec uses (sorted): the models' variables, weights and offsets,
    and the columns named by `data.filter`, `data.categorical`, `data.center` and `data.id_columns`."""
    names: set[str] = set()
    for model in models.values():
        names |= _formula_columns(model)
    names |= {name for name, _ in filter_columns(data_spec.filter)}
    names |= set(data_spec.categorical) | set(data_spec.center) | set(data_spec.id_columns or [])
    return sorted(names)


def predict_columns(predict: PredictSpec, data_spec: DataSpec, models: Mapping[str, ResolvedModel]) -> list[str]:
    """The columns of `predict.data` a prediction may read (sorted): the predicting models' variables
    (the response too, when the new rows have it) and offsets, `predict.data.filter`'s columns and
    the id columns (`predict.data.id_columns`, else `data.id_columns`)."""
    chosen = [models[n] for n in (predict.models or list(models)) if n in models]
    names: set[str] = set()
    for model in chosen:
        names |= required_variables(model.formula) | _formula_columns(model)
        names |= {model.offset} if model.offset else set()
    names |= {name for name, _ in filter_columns(predict.data.filter)}
    names |= set(predict.data.id_columns or []) | set(data_spec.id_columns or [])
    return sorted(names)


__all__ = ["filter_columns", "filter_message", "predict_columns", "used_columns"]
