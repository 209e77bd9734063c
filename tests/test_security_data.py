"""Attacks through a spec's data section: each is exit 2 from `mixspec validate` and `mixspec run`,
creates no file, runs nothing and leaks nothing (issue 10, items 2-4 and 7).

A spec and the files committed with it come from a pull request: it may name files only
inside its repository, read databases only read-only, and never reach a secret.
"""

from __future__ import annotations

import gzip
import io
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from run_helpers import invoke_cli

from runner.data import files
from runner.data.errors import DataError
from runner.data.files import granted, repository_root
from runner.data.sources import load_frame
from runner.data.sql import DUCKDB_CONFIG, query_problem, read_duckdb, read_sqlite, spec_url_problem
from runner.spec.models import DataSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "runner" / "data" / "examples"
SECRET = "FAKE-SECRET-7f3a9c"
MODEL = 'models:\n  m: {formula: "Yield ~ 1 + (1|Batch)"}\n'


@pytest.fixture(autouse=True)
def _no_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (files.ENV_PATHS, files.ENV_URL_VARS, files.ENV_MAX_MB):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding Dyestuff.csv, with a secret in a file outside it."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "Dyestuff.csv").write_bytes((EXAMPLES / "Dyestuff.csv").read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"Batch,Yield\n{SECRET},1\n{SECRET},2\nB,3\nB,4\n")
    (outside / "Dyestuff.csv").write_bytes((EXAMPLES / "Dyestuff.csv").read_bytes())
    return root


def spec(folder: Path, data: str, name: str = "s.yaml", model: str = MODEL) -> Path:
    path = folder / name
    path.write_text(f"name: s\ndata:\n{data}\n{model}")
    return path


def cli(*args: str, cwd: Path) -> tuple[int, str]:
    """`mixspec ARGS` in-process; exit code and everything it printed (stdout and stderr)."""
    result = invoke_cli(cwd, *args)
    return result.exit_code, result.stdout + result.stderr


def both(spec_path: Path, *extra: str) -> list[tuple[int, str]]:
    """validate and run (quiet, no cache) of one spec."""
    cwd = spec_path.parent
    return [cli("validate", spec_path.name, *extra, cwd=cwd),
            cli("run", spec_path.name, "--out", "out", "--no-cache", "--quiet", *extra, cwd=cwd)]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if ".git" not in p.parts}


def no_secret_anywhere(folder: Path, outputs: list[str]) -> None:
    """The secret is in no output and in no file written under `folder` (the secret file aside)."""
    for text in outputs:
        assert SECRET not in text
    for path in files_under(folder):
        if path.is_file() and not path.is_symlink() and path.name != "secret.csv":
            assert SECRET.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------- files outside the repository


def test_repository_root_is_the_git_top_level(repo: Path, tmp_path: Path) -> None:
    (repo / "specs" / "deep").mkdir(parents=True)
    assert repository_root(repo / "specs" / "deep") == repo.resolve()
    (tmp_path / "loose").mkdir()
    assert repository_root(tmp_path / "loose") == (tmp_path / "loose").resolve()


def test_committed_symlink_to_a_secret_is_exit_2_and_leaks_nothing(repo: Path, tmp_path: Path) -> None:
    (repo / "data").mkdir()
    os.symlink(tmp_path / "outside" / "secret.csv", repo / "data" / "scores.csv")
    path = spec(repo, "  path: data/scores.csv")
    before = files_under(tmp_path)
    outputs = []
    for code, text in both(path):
        assert code == 2, text
        assert "data.path: 'data/scores.csv' is a symbolic link to a file outside the repository" in text
        assert "--allow-path" in text and "Traceback" not in text
        outputs.append(text)
    # the real processes too: nothing on stdout or stderr, nothing in any file they write
    for command in (["validate", "s.yaml"], ["run", "s.yaml", "--out", "out", "--no-cache"]):
        proc = subprocess.run([sys.executable, "-m", "runner", *command], capture_output=True, text=True, cwd=repo,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
        assert proc.returncode == 2, proc.stderr
        outputs += [proc.stdout, proc.stderr]
    no_secret_anywhere(tmp_path, outputs)
    assert {p for p in files_under(tmp_path) - before if p.is_file()} == set()  # no results, no report


@pytest.mark.parametrize("name", ["ABS", "../outside/secret.csv", "data/../../outside/secret.csv"])
def test_absolute_and_dotdot_paths_outside_are_refused(repo: Path, tmp_path: Path, name: str) -> None:
    name = str(tmp_path / "outside" / "secret.csv") if name == "ABS" else name
    path = spec(repo, f"  path: '{name}'")
    outputs = []
    for code, text in both(path):
        assert code == 2 and f"'{name}' is outside the repository" in text, text
        outputs.append(text)
    no_secret_anywhere(tmp_path, outputs)
    assert not (repo / "out").exists()


def test_allow_path_and_environment_let_the_person_read_elsewhere(repo: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = spec(repo, "  path: ../outside/Dyestuff.csv")
    assert cli("validate", "s.yaml", cwd=repo)[0] == 2
    code, text = cli("validate", "s.yaml", "--allow-path", str(tmp_path / "outside"), cwd=repo)
    assert code == 0, text
    monkeypatch.setenv(files.ENV_PATHS, os.pathsep.join(["/nonexistent", str(tmp_path / "outside")]))
    assert cli("validate", path.name, cwd=repo)[0] == 0
    # an allowed folder never opens /proc, /sys or /dev
    os.symlink("/proc/self/environ", repo / "env.csv")
    with granted(["/"]):
        with pytest.raises(DataError, match=r"'env.csv' leads \(through a symbolic link\) into /proc"):
            load_frame(DataSpec(path="env.csv"), repo)


def test_proc_environ_through_a_symlink_leaks_nothing(repo: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXSPEC_TEST_TOKEN", SECRET)
    os.symlink("/proc/self/environ", repo / "env.csv")
    path = spec(repo, "  path: env.csv")
    outputs = []
    for code, text in both(path):
        assert code == 2 and "into /proc: a spec may only name regular data files" in text, text
        outputs.append(text)
    no_secret_anywhere(tmp_path, outputs)


def test_fifo_and_folder_are_not_data_files(repo: Path) -> None:
    os.mkfifo(repo / "pipe.csv")  # opening it for reading would block forever
    (repo / "folder.csv").mkdir()
    for name, kind in (("pipe.csv", "a FIFO"), ("folder.csv", "a folder")):
        code, text = cli("validate", spec(repo, f"  path: {name}").name, cwd=repo)
        assert code == 2 and f"'{name}' is {kind}, not a regular file" in text, text


def test_database_urls_follow_the_same_rule(repo: Path, tmp_path: Path) -> None:
    db = tmp_path / "outside" / "s.db"
    with sqlite3.connect(db) as con:
        pd.DataFrame({"Batch": [SECRET, "B"], "Yield": [1, 2]}).to_sql("t", con, index=False)
    os.symlink(db, repo / "s.db")
    for url in (f"sqlite:///{db}", "sqlite:///../outside/s.db", "sqlite:///s.db", "duckdb:///../outside/s.db"):
        path = spec(repo, f"  sql: {{url: '{url}', table: t}}")
        for code, text in both(path):
            assert code == 2 and "outside the repository" in text and SECRET not in text, (url, text)


# ----------------------------------------------------------------------------- size and decompression limits


def test_gzip_over_the_size_limit_and_bomb(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_UNPACKED_BYTES", 1 << 20)
    big = b"Batch,Yield\n" + b"A,1\n" * 600_000  # 2.4 MB of text, 5 kB packed
    (repo / "big.csv.gz").write_bytes(gzip.compress(big))
    with pytest.raises(DataError, match="'big.csv.gz' unpacks to more than 1 MB"):
        load_frame(DataSpec(path="big.csv.gz"), repo)
    monkeypatch.setattr(files, "MAX_UNPACKED_BYTES", 1 << 30)
    monkeypatch.setattr(files, "RATIO_FLOOR", 1 << 20)
    with pytest.raises(DataError, match="more than 200 times its size .* decompression bomb"):
        load_frame(DataSpec(path="big.csv.gz"), repo)
    monkeypatch.setenv(files.ENV_MAX_MB, "1")
    monkeypatch.setattr(files, "RATIO_FLOOR", 1 << 40)
    with pytest.raises(DataError, match="unpacks to more than 1 MB .raise the limit with MIXSPEC_MAX_DATA_MB"):
        load_frame(DataSpec(path="big.csv.gz"), repo)


def test_gzip_and_zip_within_limits_read_the_rows(repo: Path) -> None:
    frame = pd.read_csv(repo / "Dyestuff.csv")
    (repo / "d.csv.gz").write_bytes(gzip.compress((repo / "Dyestuff.csv").read_bytes()))
    with zipfile.ZipFile(repo / "d.csv.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(repo / "Dyestuff.csv", "Dyestuff.csv")
    for name in ("d.csv.gz", "d.csv.zip"):
        got = load_frame(DataSpec(path=name), repo)
        assert got.shape == (30, 2) and got["Yield"].sum() == frame["Yield"].sum() == 45825
    with zipfile.ZipFile(repo / "two.csv.zip", "w") as z:
        z.writestr("a.csv", "x\n1\n")
        z.writestr("b.csv", "x\n2\n")
    with pytest.raises(DataError, match="holds 2 files; a zipped data file holds exactly one"):
        load_frame(DataSpec(path="two.csv.zip"), repo)


def test_file_over_the_size_limit(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match="'Dyestuff.csv' is 0 MB, over the limit of 0 MB"):
        load_frame(DataSpec(path="Dyestuff.csv"), repo)


def test_xlsx_bomb_is_refused_before_parsing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "RATIO_FLOOR", 1 << 20)
    with zipfile.ZipFile(repo / "bomb.xlsx", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/worksheets/sheet1.xml", b" " * (8 << 20))
    code, text = cli("validate", spec(repo, "  path: bomb.xlsx").name, cwd=repo)
    assert code == 2 and "'bomb.xlsx' unpacks to more than 200 times its size" in text, text


@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04broken", "zip-without-workbook"])
def test_corrupt_xlsx_is_exit_2_with_a_message(repo: Path, content: bytes | str) -> None:
    if content == "zip-without-workbook":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr("hello.txt", "hi")
        content = buffer.getvalue()
    (repo / "bad.xlsx").write_bytes(content)  # type: ignore[arg-type]
    path = spec(repo, "  path: bad.xlsx")
    for code, text in both(path):
        assert code == 2 and "bad.xlsx" in text and "Traceback" not in text, text
        assert "not a valid .xlsx workbook" in text or "cannot read bad.xlsx as xlsx" in text, text


def test_xlsx_is_read_with_defusedxml(repo: Path) -> None:
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML  # entity expansion and external entities are off
    pd.read_csv(repo / "Dyestuff.csv").to_excel(repo / "d.xlsx", index=False)
    got = load_frame(DataSpec(path="d.xlsx"), repo)
    assert got.shape == (30, 2) and got["Yield"].sum() == 45825


# ----------------------------------------------------------------------------- SQL


@pytest.fixture
def duck(repo: Path) -> Path:
    import duckdb

    con = duckdb.connect(str(repo / "d.duckdb"))
    con.execute("CREATE TABLE dye AS SELECT * FROM read_csv_auto(?)", [str(repo / "Dyestuff.csv")])
    con.close()
    return repo / "d.duckdb"


@pytest.fixture
def lite(repo: Path) -> Path:
    with sqlite3.connect(repo / "d.db") as con:
        pd.read_csv(repo / "Dyestuff.csv").to_sql("dye", con, index=False)
    return repo / "d.db"


def test_hardened_databases_still_read(duck: Path, lite: Path) -> None:
    q = "SELECT Batch, Yield FROM dye WHERE Yield > 1500"
    assert len(read_duckdb(duck, q)) == len(read_sqlite(lite, q)) == 19
    code, text = cli("validate", spec(duck.parent, "  sql: {url: 'duckdb:///d.duckdb', query: 'SELECT * FROM dye'}").name,
                     cwd=duck.parent)
    assert code == 0, text


def test_duckdb_connection_settings_are_locked(duck: Path) -> None:
    got = read_duckdb(duck, "SELECT current_setting('enable_external_access') AS ext, "
                      "current_setting('lock_configuration') AS locked, "
                      "current_setting('autoload_known_extensions') AS autoload, "
                      "current_setting('autoinstall_known_extensions') AS autoinstall, "
                      "current_setting('allow_community_extensions') AS community, "
                      "current_setting('python_enable_replacements') AS replacements, "
                      "current_setting('temp_directory') AS spill")
    assert got.iloc[0].tolist() == [False, True, False, False, False, False, ""]
    assert DUCKDB_CONFIG["memory_limit"] == "2GB"
    secret_frame = pd.DataFrame({"token": [SECRET]})  # noqa: F841 - a Python replacement scan would find it
    with pytest.raises(Exception, match="secret_frame") as info:
        read_duckdb(None, "SELECT * FROM secret_frame")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("query,message", [
    ("SELECT * FROM read_csv('/etc/passwd')", "Cannot access file \"/etc/passwd\""),
    ("SELECT content FROM read_text('/proc/self/environ')", "Cannot access file \"/proc/self/environ\""),
    ("SELECT * FROM read_csv('OUTSIDE')", "file system operations are disabled"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "Cannot access file"),
    ("COPY (SELECT 1) TO 'PWNED'", "only a SELECT (or WITH ... SELECT) query may run, not COPY"),
    ("SELECT 1; COPY (SELECT 1) TO 'PWNED'", "one SELECT statement only, found 2"),
    ("ATTACH 'PWNED' AS x", "not ATTACH"),
    ("INSTALL httpfs", "not"),
    ("WITH x AS (DELETE FROM dye RETURNING *) SELECT * FROM x", "'DELETE' is not allowed"),
])
def test_duckdb_attacks(duck: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str,
                        message: str) -> None:
    monkeypatch.setenv("MIXSPEC_TEST_TOKEN", SECRET)
    query = query.replace("OUTSIDE", str(tmp_path / "outside" / "secret.csv"))
    query = query.replace("PWNED", str(tmp_path / "pwned.csv"))
    path = spec(duck.parent, f"  sql:\n    url: duckdb:///d.duckdb\n    query: \"{query}\"")
    outputs = []
    for code, text in both(path):
        assert code == 2 and message in text and "data.sql" in text, text
        outputs.append(text)
    assert not (tmp_path / "pwned.csv").exists()
    no_secret_anywhere(tmp_path, outputs)


@pytest.mark.parametrize("query,message", [
    ("ATTACH DATABASE 'PWNED' AS x", "not ATTACH"),
    ("SELECT 1; SELECT 2", "one SELECT statement only, found 2"),
    ("SELECT * FROM dye; DROP TABLE dye", "one SELECT statement only, found 2"),
    ("PRAGMA journal_mode = WAL", "only a SELECT (or WITH ... SELECT) query may run, not SET"),
    ("SELECT load_extension('PWNED')", "not authorized"),
])
def test_sqlite_attacks(lite: Path, tmp_path: Path, query: str, message: str) -> None:
    query = query.replace("PWNED", str(tmp_path / "pwned.db"))
    path = spec(lite.parent, f"  sql:\n    url: sqlite:///d.db\n    query: \"{query}\"")
    for code, text in both(path):
        assert code == 2 and message in text, text
    assert not (tmp_path / "pwned.db").exists()
    assert len(read_sqlite(lite, "SELECT * FROM dye")) == 30  # the database is untouched


@pytest.mark.parametrize("statement", [
    "ATTACH DATABASE 'PWNED' AS x", "DETACH DATABASE main", "CREATE TABLE t (a)", "INSERT INTO dye VALUES ('X', 1)",
    "DELETE FROM dye", "UPDATE dye SET Yield = 0", "DROP TABLE dye", "PRAGMA user_version = 5",
    "SELECT load_extension('PWNED')", "SELECT fts3_tokenizer('simple')",
])
def test_sqlite_authorizer_denies_even_past_the_parser(lite: Path, tmp_path: Path, statement: str) -> None:
    """The statement check is one layer; the read-only connection and its authorizer are another."""
    statement = statement.replace("PWNED", str(tmp_path / "pwned.db"))
    with pytest.raises(Exception, match="not authorized"):
        read_sqlite(lite, statement)
    assert not (tmp_path / "pwned.db").exists()
    assert len(read_sqlite(lite, "SELECT * FROM dye")) == 30
    with sqlite3.connect(lite) as con:
        assert con.execute("PRAGMA user_version").fetchone() == (0,)


def test_statement_check_is_in_the_schema_too() -> None:
    assert query_problem("SELECT 1") is None and query_problem("WITH a AS (SELECT 1) SELECT * FROM a") is None
    assert query_problem("SELECT replace(name, 'set', 'into') AS \"delete\" FROM t") is None  # quoted words
    assert "found 0" in (query_problem("  ;  ") or "")
    assert "not a SQL query" in (query_problem("SELEC 1") or "")
    with pytest.raises(ValueError, match="one SELECT statement only, found 2"):
        DataSpec(sql={"url": "sqlite:///d.db", "query": "SELECT 1; SELECT 2"})


@pytest.mark.parametrize("url,message", [
    ("sqlite://admin:PASSWORD@/d.db", "holds a password"),
    ("postgresql://admin:PASSWORD@db.example.org/prod", "holds a password"),
    ("postgresql://db.example.org/prod", "reach a database server through data.sql.url_env"),
    ("sqlite:///d.db?mode=rwc", "query parameters are not allowed"),
    ("duckdb:///:memory:", "names no database file"),
    ("sqlite://host/d.db", "no user or host"),
])
def test_spec_urls_are_local_files_without_credentials(lite: Path, url: str, message: str) -> None:
    assert message in (spec_url_problem(url.replace("PASSWORD", SECRET)) or "")
    path = spec(lite.parent, f"  sql: {{url: '{url.replace('PASSWORD', SECRET)}', table: dye}}")
    for code, text in both(path):
        assert code == 2 and "data.sql.url: " in text and message in text, text
        assert SECRET not in text


def test_url_env_must_be_allowed_and_is_not_read_otherwise(lite: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_DB_URL", f"postgresql://admin:{SECRET}@db.example.org/prod")
    path = spec(lite.parent, "  sql: {url_env: SECRET_DB_URL, table: dye}")
    outputs = []
    for code, text in both(path):
        assert code == 2 and "environment variable 'SECRET_DB_URL' is not allowed" in text, text
        assert "--allow-env SECRET_DB_URL" in text
        outputs.append(text)

    class Watched(dict):
        read: list[str] = []

        def get(self, key, default=None):  # type: ignore[no-untyped-def]
            self.read.append(key)
            return super().get(key, default)

        def __getitem__(self, key):  # type: ignore[no-untyped-def]
            self.read.append(key)
            return super().__getitem__(key)

    watched = Watched(os.environ)
    monkeypatch.setattr(os, "environ", watched)
    with pytest.raises(DataError, match="not allowed"):
        load_frame(DataSpec(sql={"url_env": "SECRET_DB_URL", "table": "dye"}), lite.parent)
    assert "SECRET_DB_URL" not in watched.read  # refused without reading the variable
    monkeypatch.undo()
    no_secret_anywhere(tmp_path, outputs)
    # allowed by the person: read (here a local file URL), from the option or the environment
    monkeypatch.setenv("DYE_DB", f"sqlite:///{lite}")
    spec(lite.parent, "  sql: {url_env: DYE_DB, table: dye}", name="ok.yaml")
    assert cli("validate", "ok.yaml", "--allow-env", "DYE_DB", cwd=lite.parent)[0] == 0
    monkeypatch.setenv(files.ENV_URL_VARS, "OTHER, DYE_DB")
    assert cli("validate", "ok.yaml", cwd=lite.parent)[0] == 0


# ----------------------------------------------------------------------------- number columns with text


def test_number_column_with_text_names_the_rows(repo: Path) -> None:
    frame = pd.read_csv(repo / "Dyestuff.csv")
    frame["Yield"] = frame["Yield"].astype(object)
    frame.loc[3, "Yield"] = "1,540"
    frame.loc[11, "Yield"] = "n.a."
    frame["dose"] = np.arange(30) % 5
    frame["dose"] = frame["dose"].astype(object)
    frame.loc[7, "dose"] = "high"
    frame["plate"] = ["p1", "p2", "p3"] * 10  # a text factor stays a factor
    frame.to_csv(repo / "mixed.csv", index=False)
    path = spec(repo, "  path: mixed.csv", model='models:\n  m: {formula: "Yield ~ dose + plate + (1|Batch)"}\n')
    code, text = cli("validate", path.name, cwd=repo)
    assert code == 2
    assert ("column 'Yield' is the response but holds text in 2 of 30 rows (data rows, counting from 1): "
            "4 ('1,540'), 12 ('n.a.')") in text
    assert "column 'dose' is a numeric term but holds text in 1 of 30 rows (data rows, counting from 1): " \
           "8 ('high')" in text and "write factor(dose)" in text
    assert "plate" not in text
    frame.loc[[3, 11], "Yield"] = [1540, 1500]
    frame.to_csv(repo / "mixed.csv", index=False)
    path = spec(repo, "  path: mixed.csv", model='models:\n  m: {formula: "Yield ~ factor(dose) + plate + (1|Batch)"}\n')
    code, text = cli("validate", path.name, cwd=repo)
    assert code == 0, text  # written as a factor: its text level is a level


def test_nul_bytes_and_control_characters_in_data_are_exit_2(repo: Path) -> None:
    (repo / "nul.csv").write_bytes(b"Batch,Yield\nA,1\nA\x00,2\nB,3\nB,4\n")
    (repo / "name.csv").write_bytes(b'"Ba\x1b[2Jtch",Yield\nA,1\nB,2\n')
    for name, message in (("nul.csv", "column 'Batch' holds a NUL character in 1 rows (first: data row 2, 'A\\x00')"),
                          ("name.csv", "column 1's name 'Ba\\x1b[2Jtch' contains a control character")):
        path = spec(repo, f"  path: {name}")
        for code, text in both(path):
            assert code == 2 and message in text, text
            assert "\x00" not in text and "\x1b" not in text


def test_parquet_that_unpacks_too_far_is_refused(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pd.DataFrame({"Batch": ["A"] * 300_000, "Yield": np.zeros(300_000)}).to_parquet(repo / "z.parquet")
    assert load_frame(DataSpec(path="z.parquet"), repo).shape == (300_000, 2)
    monkeypatch.setattr(files, "MAX_UNPACKED_BYTES", 1 << 20)
    with pytest.raises(DataError, match="'z.parquet' unpacks to more than 1 MB"):
        load_frame(DataSpec(path="z.parquet"), repo)
    (repo / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot read 'bad.parquet': not a valid Parquet file"):
        load_frame(DataSpec(path="bad.parquet"), repo)
