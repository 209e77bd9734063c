"""Data given to the API -> a pandas DataFrame (pandas, pyarrow and polars accepted).

Why here: the rest of mixspec reads pandas only. A pyarrow Table or polars DataFrame
is converted once; polars is optional and never imported unless such a frame is given.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from runner.spec.errors import IssueError, SpecIssue


class ApiDataError(IssueError):
    """The object given as data is not a table mixspec can read."""


def as_pandas(data: Any, what: str = "data") -> pd.DataFrame:
    """A pandas DataFrame of `data`: pandas as is, pyarrow Table / polars DataFrame converted,
    a dict of columns accepted. Anything else is an error naming what is accepted."""
    if isinstance(data, pd.DataFrame):
        return data
    module = type(data).__module__.split(".", 1)[0]
    if module == "pyarrow" and hasattr(data, "to_pandas") and hasattr(data, "schema"):
        return data.to_pandas()
    if module == "polars" and hasattr(data, "to_pandas") and hasattr(data, "schema"):
        try:
            return data.to_pandas()
        except ImportError:  # polars converts through pyarrow; name the fix
            raise ApiDataError([SpecIssue(None, None, None, what, "converting a polars DataFrame needs pyarrow "
                                          "installed")]) from None
    if isinstance(data, dict):
        return pd.DataFrame(data)
    raise ApiDataError([SpecIssue(None, None, None, what, f"expected a pandas DataFrame, a pyarrow Table or a "
                                  f"polars DataFrame, got {type(data).__name__}")])
