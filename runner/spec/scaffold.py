"""`mixspec init`: a starter spec written from a data file's columns.

Why: the first spec is the hardest to write. Reading the columns lets the scaffold
name a real numeric response and real grouping factors, so the file validates as
written and the analyst edits formulas rather than YAML structure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from runner.spec.models import safe_name


def _yaml_str(text: str) -> str:
    """A YAML double-quoted scalar (column names are user data)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pick_columns(frame: pd.DataFrame) -> tuple[str | None, list[str], str | None]:
    """A numeric response, fixed-effect predictors and one grouping factor.

    The grouping factor is the text column with the most levels (at most n/2), else
    the integer column with the most levels: clusters (subjects, schools) usually
    outnumber design factors (days, sex). Text columns with few levels (<= 5) and the
    other numeric columns become fixed effects; the last float column is the response.
    """
    n = len(frame)
    levels = {str(c): int(frame[c].nunique(dropna=True)) for c in frame.columns}
    text = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    ints = [str(c) for c in frame.columns if pd.api.types.is_integer_dtype(frame[c])]
    floats = [str(c) for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]

    def clusters(cols: list[str]) -> list[str]:
        return sorted((c for c in cols if 5 < levels[c] <= max(2, n // 2)), key=lambda c: -levels[c])

    group = next(iter(clusters(text) or clusters(ints)), None)
    response = floats[-1] if floats else next((c for c in reversed(ints) if c != group), None)
    predictors = [c for c in [*floats, *ints] if c not in (response, group)]
    predictors += [c for c in text if 2 <= levels[c] <= 5]
    return response, predictors, group


RESPONSE = "RESPONSE"


def scaffold_spec(name: str, data_line: str, frame: pd.DataFrame) -> str:
    """The YAML text of a starter spec for `frame` (validates when a response exists)."""
    response, predictors, group = _pick_columns(frame)
    columns = ", ".join(f"{c} ({frame[c].dtype})" for c in frame.columns)
    fixed = " + ".join(predictors[:2]) or "1"
    group = group or "GROUP"
    lines = [
        "# Starter spec written by `mixspec init`; edit the formulas, then `mixspec run` this file.",
        f"# Columns: {columns}",
        f"name: {safe_name(name)}",
        f"title: {_yaml_str(name)}",
        "data:",
        f"  {data_line}",
        "  na: common                # drop rows missing anything any model uses",
        "defaults:",
        "  method: REML              # REML | ML",
        "  engine: auto              # auto (= lme) | lme | statsmodels",
        "models:",
        "  intercept:",
        f"    formula: {_yaml_str(f'{response or RESPONSE} ~ {fixed} + (1 | {group})')}",
    ]
    slope = next((c for c in predictors if pd.api.types.is_numeric_dtype(frame[c])), None)
    if slope:
        lines += ["  slope:", f"    formula: {_yaml_str(f'{response} ~ {fixed} + ({slope} | {group})')}"]
    lines += ["compare:", "  criterion: AIC             # AIC | BIC | AICc (ranked on ML fits)"]
    if slope:
        lines += ["  tests:", "    - [intercept, slope]      # likelihood-ratio test"]
    lines += ["expect:", "  converged: all"]
    return "\n".join(lines) + "\n"


def data_line_for(path: Path | None, example: str | None, spec_path: Path) -> str:
    """The `data:` entry: an example name, or the file path relative to the spec's folder."""
    if example:
        return f"example: {example}"
    assert path is not None
    try:
        relative = Path(path).resolve().relative_to(spec_path.resolve().parent)
    except ValueError:
        relative = Path(path).resolve()
    return f"path: {_yaml_str(relative.as_posix())}"
