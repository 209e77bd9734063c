"""A content hash of a DataFrame that does not depend on where the rows came from.

The same table read from CSV, Parquet or a database hashes the same (dtypes are
reduced to their kind: integer, float, bool, string, datetime), while any change of a
column name, a value or the row order changes the hash. Used for `sha256:` pins and
the results record, over the columns the spec uses in the source's order
(`runner.data.columns`; `runner.data.prepare` cuts the frame to them): the hash covers
what the results depend on, so fixing a column no model reads leaves a pin alone, and a
spec that uses every column hashes the whole table as before.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return _kind(series.astype(dtype.categories.dtype))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def _column_bytes(series: pd.Series, kind: str) -> bytes:
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.dtype.categories.dtype)
    missing = series.isna().to_numpy()
    if kind in ("int", "bool"):
        values = series.fillna(0).to_numpy(dtype=np.int64)
        body = values.astype("<i8").tobytes()
    elif kind == "float":
        values = series.to_numpy(dtype=np.float64, na_value=np.nan).copy()
        values[missing] = 0.0
        values[values == 0.0] = 0.0  # -0.0 and 0.0 hash alike
        body = values.astype("<f8").tobytes()
    elif kind == "datetime":
        body = series.astype("datetime64[ns]").to_numpy().astype("<i8").tobytes()
    else:
        body = _text_bytes(series, missing)
    return np.packbits(missing).tobytes() + body


def _text_bytes(series: pd.Series, missing: np.ndarray) -> bytes:
    """The values as text joined by US (\\x1f), "" for missing. Where every value is a str
    (the common case) one C-level join, without a Python pass per row; otherwise str() of each."""
    if pd.api.types.infer_dtype(series, skipna=True) == "string":
        values = series.tolist() if not missing.any() else series.where(~missing, "").tolist()
        return "\x1f".join(values).encode("utf-8")
    return "\x1f".join("" if m else str(v) for v, m in zip(series.tolist(), missing)).encode("utf-8")


def data_sha256(frame: pd.DataFrame) -> str:
    """sha256 of column names, dtype kinds and values in row order."""
    h = hashlib.sha256()
    h.update(f"mixspec-frame-v1 {frame.shape[0]} {frame.shape[1]}\n".encode())
    for name in frame.columns:
        series = frame[name]
        kind = _kind(series)
        body = _column_bytes(series, kind)
        h.update(f"{len(str(name))}:{name}:{kind}:{len(body)}\n".encode())
        h.update(body)
    return h.hexdigest()
