"""Data sources -> one pandas DataFrame: files, databases, shipped examples, simulation.

Each source is read with the library made for it (pandas readers, duckdb's own API,
SQLAlchemy). Database credentials come only from the URL or an environment
variable and never appear in a message: passwords are redacted everywhere here.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import re
from pathlib import Path

import pandas as pd

from runner.data.errors import DataError
from runner.spec.errors import SpecIssue
from runner.spec.models import DataSpec, SqlSource

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
        close = difflib.get_close_matches(key, list(names), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise _fail("data.example", f"unknown example {name!r}{hint} (available: {', '.join(sorted(names))})")
    resource = importlib.resources.files("runner.data") / "examples" / names[key]
    with importlib.resources.as_file(resource) as file:
        return pd.read_csv(file)


def _read_file(spec: DataSpec, base_dir: Path) -> pd.DataFrame:
    assert spec.path is not None
    file = Path(spec.path)
    if not file.is_absolute():
        file = base_dir / file
    suffixes = "".join(file.suffixes[-2:]).lower()
    kind = _READERS.get(file.suffix.lower()) or ("csv" if suffixes in (".csv.gz", ".csv.bz2", ".csv.zip") else None)
    if kind is None:
        raise _fail("data.path", f"unsupported file type {file.suffix!r}: use .csv, .parquet or .xlsx")
    if not file.is_file():
        raise _fail("data.path", f"data file not found: {spec.path} (looked in {file.parent})")
    try:
        if kind == "csv":
            return pd.read_csv(file)
        if kind == "tsv":
            return pd.read_csv(file, sep="\t")
        if kind == "parquet":
            return pd.read_parquet(file)
        return pd.read_excel(file, sheet_name=spec.sheet if spec.sheet is not None else 0, engine="openpyxl")
    except (ValueError, OSError, ImportError, KeyError) as exc:
        raise _fail("data.path", f"cannot read {spec.path} as {kind}: {exc}") from None


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
    """The URL and where it came from ("data.sql.url" or "data.sql.url_env")."""
    if sql.url_env is not None:
        value = os.environ.get(sql.url_env)
        if not value:
            raise _fail("data.sql.url_env", f"environment variable {sql.url_env} is not set or empty")
        return value, "data.sql.url_env"
    assert sql.url is not None
    return sql.url, "data.sql.url"


def _resolve_file_url(url, base_dir: Path):
    """sqlite/duckdb file paths in a spec are relative to the spec file, like `path:`."""
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:") and not Path(database).is_absolute():
        url = url.set(database=str(base_dir / database))
    return url


def _query(sql: SqlSource, quote: str = '"') -> str:
    if sql.query is not None:
        return sql.query
    assert sql.table is not None
    parts = sql.table.split(".")
    return "SELECT * FROM " + ".".join(quote + p.replace(quote, quote * 2) + quote for p in parts)


def _read_sql(spec: DataSpec, base_dir: Path) -> pd.DataFrame:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    assert spec.sql is not None
    text, where = _sql_url(spec.sql)
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
    try:
        if url.get_backend_name() == "duckdb":
            return _read_duckdb(spec.sql, _resolve_file_url(url, base_dir), shown)
        return _read_sqlalchemy(spec.sql, _resolve_file_url(url, base_dir) if url.get_backend_name() == "sqlite" else url)
    except DataError:
        raise
    except Exception as exc:  # every driver has its own error types; none may leak a password
        message = " ".join(redact(f"{type(exc).__name__}: {exc}", secrets).split())[:500]
        raise _fail("data.sql", f"cannot read from {shown}: {message}") from None


def _read_duckdb(sql: SqlSource, url, shown: str) -> pd.DataFrame:
    import duckdb

    database = url.database or ":memory:"
    if database != ":memory:" and not Path(database).is_file():
        raise _fail("data.sql", f"database file not found: {shown}")
    con = duckdb.connect(database, read_only=database != ":memory:")
    try:
        return con.execute(_query(sql)).df()
    finally:
        con.close()


def _read_sqlalchemy(sql: SqlSource, url) -> pd.DataFrame:
    import sqlalchemy as sa

    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not Path(database).is_file():
            raise _fail("data.sql", f"database file not found: {url.render_as_string(hide_password=True)}")
        # read-only: a spec never writes to the analyst's database
        if database and database != ":memory:":
            url = url.set(database=f"file:{database}", query={"mode": "ro", "uri": "true"})
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            if sql.table is not None:
                parts = sql.table.split(".")
                table = sa.table(parts[-1], schema=".".join(parts[:-1]) or None)
                stmt = sa.select(sa.text("*")).select_from(table)
            else:
                stmt = sa.text(sql.query or "")
            return pd.read_sql(stmt, con)
    finally:
        engine.dispose()


def load_frame(data_spec: DataSpec, base_dir: str | Path) -> pd.DataFrame:
    """The source's rows as loaded (before filter, NA handling or factor conversion)."""
    base = Path(base_dir)
    kind = data_spec.source_kind
    if kind == "path":
        frame = _read_file(data_spec, base)
    elif kind == "sql":
        frame = _read_sql(data_spec, base)
    elif kind == "example":
        frame = load_example(data_spec.example or "")
    else:
        from runner.data.simulate import simulate_students

        assert data_spec.simulate is not None
        frame = simulate_students(data_spec.simulate)
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise _fail(f"data.{kind}", f"the data has no {'columns' if frame.shape[1] == 0 else 'rows'}")
    frame.columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if duplicated:
        raise _fail(f"data.{kind}", f"duplicate column names: {', '.join(duplicated)}")
    return frame.reset_index(drop=True)
