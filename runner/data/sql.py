"""Databases with least privilege: what a spec's `data.sql` may say, and hardened connections.

A spec is untrusted, so its SQL may only read:

- `url:` names a local SQLite or DuckDB file (inside the repository, checked by
  `runner.data.files`), with no credentials, host or query parameters. Server
  databases come only through `url_env`, whose variable the person running mixspec
  must allow (`--allow-env NAME`, `MIXSPEC_URL_ENVS`).
- `query:` is a single SELECT (or WITH ... SELECT), checked by DuckDB's own statement
  parser before anything runs, and refused if it contains a writing keyword.
- DuckDB files open read-only with external access (files, network, extensions,
  Python objects) off and the configuration locked; SQLite files open read-only with
  an authorizer that refuses ATTACH, DETACH, PRAGMA writes, every write and
  `load_extension`. Server databases should be reached with a read-only role.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd

LOCAL_SCHEMES = ("sqlite", "duckdb")
DUCKDB_CONFIG: dict[str, Any] = {
    "enable_external_access": False,  # no files but the database, no network, no COPY/ATTACH/INSTALL
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "python_enable_replacements": False,  # a table name never resolves to a Python variable
    "memory_limit": "2GB",
    "temp_directory": "",  # never spill to disk next to the database: a query creates no file
}
# Words that only writing or configuring statements use: refused anywhere outside strings and quoted
# names, so a data-modifying CTE (`WITH x AS (DELETE ...) SELECT ...`) or SELECT INTO never runs.
_WRITE_WORDS = ("insert", "update", "delete", "merge", "upsert", "create", "drop", "alter", "truncate",
                "attach", "detach", "copy", "export", "import", "install", "load", "grant", "revoke", "into",
                "pragma", "vacuum", "call", "execute", "exec", "set", "reset", "checkpoint", "lock")
_WRITE_RE = re.compile(r"(?<![\w$])(" + "|".join(_WRITE_WORDS) + r")(?![\w$])", re.IGNORECASE)
_QUOTED = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?\*/|\$(\w*)\$.*?\$\1\$""",
                     re.DOTALL)
_SQLITE_DENIED_FUNCTIONS = frozenset({"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit",
                                      "zipfile", "sqlar_compress", "sqlar_uncompress"})


# ----------------------------------------------------------------------------- what a spec may say


def spec_url_problem(url: str) -> str | None:
    """Why `url` cannot appear in a spec's `data.sql.url` (None when it is a local file URL).

    Never echoes the URL: it may hold a password.
    """
    scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0] if sep else ""
    if "@" in authority and ":" in authority.split("@", 1)[0]:
        return ("holds a password: credentials never belong in a spec. Put the URL in an environment "
                "variable, name it in data.sql.url_env, and allow it when you run mixspec "
                "(--allow-env NAME or MIXSPEC_URL_ENVS)")
    if not sep or scheme.lower() not in LOCAL_SCHEMES:
        return ("a spec's url may only be a local file, sqlite:///file.db or duckdb:///file.duckdb; reach a "
                "database server through data.sql.url_env (allowed with --allow-env NAME or MIXSPEC_URL_ENVS)")
    if authority:
        return "a sqlite:/// or duckdb:/// URL names a local file: three slashes, no user or host"
    if "?" in rest or "#" in rest:
        return "query parameters are not allowed in data.sql.url (the file is always opened read-only)"
    database = rest[1:]
    if not database or database == ":memory:":
        return "the URL names no database file (e.g. sqlite:///scores.db, relative to the spec)"
    return None


def url_file(url: str) -> str:
    """The file a checked sqlite:/// or duckdb:/// URL names (as written: relative or absolute)."""
    return url.partition("://")[2][1:]


def query_problem(query: str) -> str | None:
    """Why `query` may not run (None when it is one SELECT or WITH ... SELECT statement)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(query)
    except Exception as exc:  # duckdb.ParserException and friends
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"not a SQL query mixspec can check ({first}); write one SELECT statement"
    if len(statements) != 1:
        return f"one SELECT statement only, found {len(statements)}" + (
            " (no ';' between statements)" if len(statements) > 1 else "")
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind != "SELECT":
        return f"only a SELECT (or WITH ... SELECT) query may run, not {kind}"
    word = _WRITE_RE.search(_QUOTED.sub(" ", query))
    if word:
        return f"only reading queries may run: {word.group(1).upper()!r} is not allowed in a query"
    return None


def table_query(table: str, quote: str = '"') -> str:
    """SELECT * FROM a (schema-qualified) table name, every part quoted as an identifier."""
    return "SELECT * FROM " + ".".join(quote + p.replace(quote, quote * 2) + quote for p in table.split("."))


# ----------------------------------------------------------------------------- hardened connections


MIN_DUCKDB = (1, 1, 0)  # sniff_csv read files with external access off before 1.1.0 (CVE-2024-41672)


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits))
    return tuple(parts)


def read_duckdb(database: Path | None, query: str) -> pd.DataFrame:
    """Run one checked SELECT on a DuckDB file opened read-only, external access off, config locked."""
    import duckdb

    if _version(duckdb.__version__) < MIN_DUCKDB:
        raise RuntimeError(f"DuckDB {duckdb.__version__} lets queries read files through sniff_csv; "
                           "mixspec needs duckdb >= 1.1.0 (pip install -U duckdb)")
    if database is None:
        con = duckdb.connect(":memory:", config=dict(DUCKDB_CONFIG))
    else:
        con = duckdb.connect(str(database), read_only=True, config=dict(DUCKDB_CONFIG))
    try:
        con.execute("SET lock_configuration = true")
        return con.execute(query).df()
    finally:
        con.close()


def _sqlite_authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _source: str | None) -> int:
    """Allow reading only: SELECT, reading columns, functions (not extension loading), read PRAGMAs."""
    if action in (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None:
        return sqlite3.SQLITE_OK  # reading a pragma; setting one (arg2 given) is denied
    return sqlite3.SQLITE_DENY  # ATTACH, DETACH, INSERT, UPDATE, DELETE, CREATE, DROP, transactions, ...


def read_sqlite(database: Path, query: str) -> pd.DataFrame:
    """Run one checked SELECT on a SQLite file opened read-only (mode=ro) under a read-only authorizer."""
    uri = "file:" + urllib.parse.quote(str(database)) + "?mode=ro"
    con = sqlite3.connect(uri, uri=True)
    try:
        if hasattr(con, "enable_load_extension"):
            con.enable_load_extension(False)
        con.set_authorizer(_sqlite_authorizer)
        return pd.read_sql_query(query, con)
    finally:
        con.close()


__all__ = ["DUCKDB_CONFIG", "query_problem", "read_duckdb", "read_sqlite", "spec_url_problem", "table_query",
           "url_file"]
