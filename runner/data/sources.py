"""Data sources -> one pandas DataFrame: files, databases, shipped examples, simulation.

Each source is read with the library made for it (pandas readers, duckdb's own API,
sqlite3, SQLAlchemy for servers). A spec is untrusted: files are resolved inside the
repository and read within size limits (`runner.data.files`), SQL runs read-only on
hardened connections (`runner.data.sql`). Database credentials come only from an
environment variable the person running mixspec allows, and never appear in a
message: passwords are redacted everywhere here.

Only the columns a spec uses are kept (`read_source(..., columns)`, from
`runner.data.columns.used_columns`): CSV is read with `usecols` after its header,
Parquet with Arrow's column projection after its schema, so other columns are never
converted or held; workbooks, databases, examples and simulations drop them after
reading. Every column name of the source is still returned, for did-you-mean.
"""

from __future__ import annotations

import importlib.resources
import io
import os
import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.data.errors import DataError
from runner.data.files import (ENV_URL_VARS, allowed_url_envs, check_parquet, check_workbook, open_regular,
                               resolve_spec_file, unpack)
from runner.data.sql import query_problem, read_duckdb, read_sqlite, spec_url_problem, table_query, url_file
from runner.memory import small_pages
from runner.spec.errors import SpecIssue
from runner.spec.models import DataSpec, SqlSource
from runner.spec.validation_issues import suggest

LARGE_FILE_FACTOR = 8  # bytes in memory per byte of a data file, about (compressed Parquet: more)
_READERS = {".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
            ".xlsx": "xlsx", ".xlsm": "xlsx"}


def _fail(path: str, message: str) -> DataError:
    return DataError([SpecIssue(None, None, None, path, message)])


def example_names() -> dict[str, str]:
    """Lower-case example name -> file name inside runner/data/examples."""
    root = importlib.resources.files("runner.data") / "examples"
    out: dict[str, str] = {}
    for entry in root.iterdir():
        name = entry.name
        for suffix in (".csv.gz", ".csv"):
            if name.endswith(suffix):
                out[name[: -len(suffix)].lower()] = name
    return out


def load_example(name: str) -> pd.DataFrame:
    """A data set shipped inside the package, by case-insensitive name."""
    names = example_names()
    key = name.strip().lower()
    if key not in names:
        raise _fail("data.example", f"unknown example {name!r}{suggest(key, names)} (available: {', '.join(sorted(names))})")
    resource = importlib.resources.files("runner.data") / "examples" / names[key]
    with importlib.resources.as_file(resource) as file:
        return pd.read_csv(file)


def _file_kind(name: str) -> tuple[str, str | None] | None:
    """(reader, compression) from the file name, or None when the type is not supported."""
    lowered = name.lower()
    for suffix, packing in ((".gz", "gz"), (".bz2", "bz2"), (".zip", "zip")):
        if lowered.endswith(".csv" + suffix) or lowered.endswith(".tsv" + suffix):
            return ("tsv" if lowered.endswith(".tsv" + suffix) else "csv"), packing
    kind = _READERS.get(Path(lowered).suffix)
    return (kind, None) if kind else None


def _wanted(names: list[str], columns: AbstractSet[str] | None) -> list[str] | None:
    """The source's columns to read, in its order; None: all of them (nothing asked, every column
    asked, or none of the asked columns there: then the checks that follow name what is missing)."""
    if columns is None:
        return None
    keep = [n for n in names if n in columns]
    return keep if keep and len(keep) < len(names) else None


def _project(frame: pd.DataFrame, columns: AbstractSet[str] | None) -> pd.DataFrame:
    """A source read whole (workbook, database, example, simulation) cut to the columns asked for."""
    keep = _wanted([str(c) for c in frame.columns], columns)
    return frame if keep is None else frame.loc[:, [str(c) in set(keep) for c in frame.columns]]


def _read_file(spec: DataSpec, base_dir: Path, columns: AbstractSet[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """A data file inside the repository (or an allowed folder), read within the size limits:
    (the columns asked for, or all, in the file's order; every column name the file has)."""
    assert spec.path is not None
    found = _file_kind(spec.path)
    if found is None:
        raise _fail("data.path", f"unsupported file type {Path(spec.path).suffix!r}: use .csv, .tsv, .csv.gz, "
                    ".parquet or .xlsx")
    kind, packing = found
    real = resolve_spec_file(spec.path, base_dir, "data.path")
    small_pages(LARGE_FILE_FACTOR * os.path.getsize(real))  # a large file: no huge pages (runner/memory.py)
    with open_regular(real, "data.path", spec.path) as handle:
        source: Any = handle
        if packing is not None:
            source = io.BytesIO(unpack(handle, packing, "data.path", spec.path))
        elif kind == "xlsx":
            check_workbook(handle, "data.path", spec.path)
        elif kind == "parquet":
            check_parquet(handle, "data.path", spec.path)
        try:
            if kind in ("csv", "tsv"):
                return _read_csv(source, "\t" if kind == "tsv" else ",", columns)
            if kind == "parquet":
                return _read_parquet(source, columns)
            frame = _read_workbook(source, spec)
            return _project(frame, columns), [str(c) for c in frame.columns]
        except DataError:
            raise
        except Exception as exc:  # every reader has its own errors (a corrupt file must not be a traceback)
            raise _fail("data.path", f"cannot read {spec.path} as {kind}: {_reason(exc)}") from None


def _read_csv(source: Any, sep: str, columns: AbstractSet[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The header first (every name, for did-you-mean), then only the columns asked for (`usecols`):
    the parser still scans each line, but converts and keeps only those columns."""
    names = [str(c) for c in pd.read_csv(source, sep=sep, nrows=0).columns]
    source.seek(0)
    keep = _wanted(names, columns)
    return pd.read_csv(source, sep=sep, usecols=keep), names


def _read_parquet(source: Any, columns: AbstractSet[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """pd.read_parquet of only the columns asked for (Arrow's projection: the other columns' pages
    are never read or decoded), with every column name from the schema (pandas' index columns
    are not data: they are dropped as before).

    Arrow's buffers come from the C allocator (malloc) rather than Arrow's own pool, which
    keeps freed memory (the decoder's pages, and the loaded frame's text once it is
    converted to factors) resident for the rest of the process, and are decoded on this
    thread (the reader's worker threads leave freed memory in per-thread heaps): on the
    1M-row benchmark ~65 + ~20 MB less resident during the fit, for ~0.1 s more reading."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(source).schema_arrow
    source.seek(0)
    index = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    names = [n for n in schema.names if n not in index]
    _check_names(names, "data.path")  # before Arrow meets a name twice
    keep = _wanted(names, columns)
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return pd.read_parquet(source, columns=keep, use_threads=False), names
    finally:
        pa.set_memory_pool(previous)


def _read_workbook(source: Any, spec: DataSpec) -> pd.DataFrame:
    import openpyxl.xml

    if not openpyxl.xml.DEFUSEDXML:  # XML entity expansion and external entities must be off
        raise _fail("data.path", "reading .xlsx needs the defusedxml package (pip install defusedxml)")
    return pd.read_excel(source, sheet_name=spec.sheet if spec.sheet is not None else 0, engine="openpyxl")


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join((lines[0] if lines else type(exc).__name__).split())[:300]


_SECRET_PARAM = re.compile(r"(?i)\b((?:password|passwd|pwd|pass|token|secret|api_?key|access_?key|auth)\w*=)[^&\s;]*")


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret, any `user:password@` part of a URL and any password-like
    `key=value` parameter in `text` with ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"(\w+://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return _SECRET_PARAM.sub(r"\1***", text)


def _sql_url(sql: SqlSource) -> tuple[str, str]:
    """The URL and where it came from ("data.sql.url" or "data.sql.url_env").

    A variable is read only when the person running mixspec allowed its name: a spec
    naming any other variable is refused before the environment is looked at.
    """
    if sql.url_env is not None:
        allowed = allowed_url_envs()
        if sql.url_env not in allowed:
            shown = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
            raise _fail("data.sql.url_env", f"environment variable {sql.url_env!r} is not allowed{shown}: a spec "
                        "may only read a database URL from a variable the person running mixspec allows, with "
                        f"--allow-env {sql.url_env} or {ENV_URL_VARS}={sql.url_env}")
        value = os.environ.get(sql.url_env)
        if not value:
            raise _fail("data.sql.url_env", f"environment variable {sql.url_env} is not set or empty")
        return value, "data.sql.url_env"
    assert sql.url is not None
    return sql.url, "data.sql.url"


def _local_database(database: str, base_dir: Path, where: str, from_spec: bool) -> Path | None:
    """The file of a sqlite/duckdb URL: inside the repository when the spec names it; as given
    (relative to the spec) when it comes from an allowed environment variable."""
    if database in ("", ":memory:"):
        if from_spec:
            raise _fail(where, "the URL names no database file")
        return None
    if from_spec:
        return resolve_spec_file(database, base_dir, where, "database file")
    file = Path(database) if Path(database).is_absolute() else base_dir / database
    if not file.is_file():
        raise _fail(where, "database file not found (the URL comes from the environment and is not shown)")
    return file


def _read_sql(spec: DataSpec, base_dir: Path) -> pd.DataFrame:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    assert spec.sql is not None
    text, where = _sql_url(spec.sql)
    from_spec = where == "data.sql.url"
    if from_spec:  # the schema refuses these too; checked here for specs built in Python
        problem = spec_url_problem(text)
        if problem:
            raise _fail(where, problem)
    query = spec.sql.query if spec.sql.query is not None else table_query(spec.sql.table or "")
    problem = query_problem(query)
    if problem:
        raise _fail("data.sql.query" if spec.sql.query is not None else "data.sql.table", problem)
    secrets = []
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise _fail(where, "not a valid database URL (expected e.g. sqlite:///file.db or "
                    "postgresql://user@host/db); the value is not shown") from None
    if url.password:
        secrets.append(str(url.password))
    # query parameters can carry credentials too (?password=, ?sslkey=, ?token=): never shown
    secrets += [str(v) for values in url.query.values() for v in ((values,) if isinstance(values, str) else values)
                if len(str(v)) >= 3]
    shown = url.set(query={}).render_as_string(hide_password=True)
    if url.query:
        shown += "?" + "&".join(f"{k}=***" for k in url.query)
    backend = url.get_backend_name()
    try:
        if backend in ("duckdb", "sqlite"):
            database = url_file(text) if from_spec else (url.database or "")
            file = _local_database(database, base_dir, where, from_spec)
            if backend == "duckdb":
                return read_duckdb(file, query)
            if file is None:
                raise _fail(where, "an in-memory SQLite database holds no data")
            return read_sqlite(file, query)
        return _read_sqlalchemy(spec.sql, url, query)
    except DataError:
        raise
    except Exception as exc:  # every driver has its own error types; none may leak a password
        message = " ".join(redact(f"{type(exc).__name__}: {exc}", secrets).split())[:500]
        raise _fail("data.sql", f"cannot read from {shown}: {message}") from None


def _read_sqlalchemy(sql: SqlSource, url: Any, query: str) -> pd.DataFrame:
    """A server database (URL from an allowed environment variable): the checked query only.

    Connect with a read-only, least-privilege role: mixspec checks that the query is one
    SELECT, but only the server can stop a function with side effects.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            if sql.table is not None:
                parts = sql.table.split(".")
                table = sa.table(parts[-1], schema=".".join(parts[:-1]) or None)
                return pd.read_sql(sa.select(sa.text("*")).select_from(table), con)
            return pd.read_sql(sa.text(query), con)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SourceFrame:
    """A source's rows as loaded, and every column name it has (for did-you-mean on a misspelled
    column that was therefore not read)."""

    frame: pd.DataFrame  # the columns asked for that the source has (or all), in the source's order
    columns: list[str]  # all the source's columns, in its order


def read_source(data_spec: DataSpec, base_dir: str | Path, columns: Iterable[str] | None = None) -> SourceFrame:
    """The source's rows as loaded (before filter, NA handling or factor conversion), with only
    `columns` where given (`runner.data.columns.used_columns`; names the source lacks are skipped):
    CSV and Parquet read no other column, the other sources drop them after reading."""
    base = Path(base_dir)
    wanted = None if columns is None else frozenset(columns)
    kind = data_spec.source_kind
    if kind == "path":
        frame, names = _read_file(data_spec, base, wanted)
    else:
        if kind == "sql":
            frame = _read_sql(data_spec, base)
        elif kind == "example":
            frame = load_example(data_spec.example or "")
        else:
            from runner.data.simulate import simulate_students

            assert data_spec.simulate is not None
            frame = simulate_students(data_spec.simulate)
        frame.columns = [str(c) for c in frame.columns]
        names = list(frame.columns)
        frame = _project(frame, wanted)
    if not names or frame.shape[0] == 0:
        raise _fail(f"data.{kind}", f"the data has no {'columns' if not names else 'rows'}")
    frame.columns = [str(c) for c in frame.columns]
    _check_names(names, f"data.{kind}")
    _check_values(frame, f"data.{kind}")
    return SourceFrame(frame.reset_index(drop=True), names)


def load_frame(data_spec: DataSpec, base_dir: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """The source's rows as loaded, all columns or only `columns` (see `read_source`)."""
    return read_source(data_spec, base_dir, columns).frame


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_names(names: list[str], key: str) -> None:
    """No control characters in any column name of the source, read or not (names reach terminals,
    YAML, reports and did-you-mean), and no name twice."""
    for i, name in enumerate(names):
        if _CONTROL.search(name):
            raise _fail(key, f"column {i + 1}'s name {name[:60]!r} contains a control character "
                        "(a NUL, newline, escape...): rename it in the data")
    duplicated = sorted({c for c, n in Counter(names).items() if n > 1})
    if duplicated:
        raise _fail(key, f"duplicate column names: {', '.join(duplicated)}")


def _check_values(frame: pd.DataFrame, key: str) -> None:
    """No NUL bytes in the text values read: an error naming the place, shown escaped."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object and not pd.api.types.is_string_dtype(column.dtype):
            continue
        if isinstance(column.dtype, pd.StringDtype):  # every value a str or missing: one vectorized search
            has_nul = column.str.contains("\x00", regex=False, na=False).to_numpy(dtype=bool)
        else:  # object columns may hold other values: a Python check per value (1.4 s on 3M text cells)
            has_nul = column.map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
        if has_nul.any():
            row = int(np.flatnonzero(has_nul)[0])
            raise _fail(key, f"column {name!r} holds a NUL character in {int(has_nul.sum())} rows (first: data "
                        f"row {row + 1}, {str(column.iloc[row])[:40]!r}): the file is damaged or not text")
