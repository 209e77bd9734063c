"""`data.filter`: mixspec's own grammar, evaluated with numpy, never pandas query/eval or Python eval.

Rows kept are checked against pandas' boolean indexing written by hand; errors point at the
operator or column; random text under an audit hook never compiles, imports, opens or runs anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from run_helpers import invoke_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.data.errors import DataError
from runner.data.filter import SYNTAX, FilterError, filter_rows, parse_filter
from runner.data.prepare import prepare
from runner.spec.models import DataSpec

FRAME = pd.DataFrame({
    "y": [1.0, 2.5, 3.0, 4.5, 5.0, 6.5, 7.0, 8.5],
    "x": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0, 8.0],
    "g": ["a", "a", "b", None, "c", "c", "d", "d"],
    "n": [1, 2, 3, 4, 5, 6, 7, 8],
    "f": pd.Categorical(["u", "v", "u", "v", "u", "v", "u", "v"]),
    "ok": [True, False, True, True, False, True, False, True],
    "test score": [10, 20, 30, 40, 50, 60, 70, 80],
    "dot.name": [0, 0, 0, 0, 1, 1, 1, 1],
})
Y, X, G, N = FRAME["y"], FRAME["x"], FRAME["g"], FRAME["n"]


@pytest.mark.parametrize("text,expected", [
    ("y > 2", Y > 2),
    ("y >= 2.5 & y < 7", (Y >= 2.5) & (Y < 7)),
    ("y > 2 and g != 'd'", (Y > 2) & (G != "d")),  # NaN != 'd' is True, as pandas
    ("y <= 2 | y == 8.5", (Y <= 2) | (Y == 8.5)),
    ("y < 2 || n == 8 && ok", (Y < 2) | ((N == 8) & FRAME["ok"])),  # & binds tighter than |
    ("!(y > 3)", ~(Y > 3)),
    ("not y > 3", ~(Y > 3)),  # R and Python: not/! is looser than a comparison
    ("~(n == 1)", N != 1),
    ("g %in% c('a', 'd')", G.isin(["a", "d"])),
    ("g in ['a', 'd']", G.isin(["a", "d"])),
    ("g not in ['a', 'd']", ~G.isin(["a", "d"])),
    ("!(g %in% c(\"a\"))", ~G.isin(["a"])),
    ("n %in% c(1, 3, -5)", N.isin([1, 3])),
    ("is.na(x)", X.isna()),
    ("!is.na(x) & !is.na(g)", X.notna() & G.notna()),
    ("x == 4", X == 4),  # NaN == 4 is False
    ("x != 4", X != 4),  # NaN != 4 is True (pandas, IEEE)
    ("x > 0", X > 0),  # NaN > 0 is False
    ("(y + 1) * 2 > 10", (Y + 1) * 2 > 10),
    ("y / n >= 1 - 0.1", Y / N >= 0.9),
    ("y / (n - 1) > 2 | 0/0 == 0", Y / (N - 1) > 2),  # 1/0 is inf, 0/0 NaN: never an exception
    ("-y < -4", -Y < -4),
    ("2 < n <= 5", (N > 2) & (N <= 5)),  # a chained comparison, as Python
    ("`test score` >= 50", FRAME["test score"] >= 50),
    ("dot.name == 1", FRAME["dot.name"] == 1),
    ("f == 'u'", FRAME["f"] == "u"),
    ("ok", FRAME["ok"]),
    ("ok == TRUE & n > 2", FRAME["ok"] & (N > 2)),
    ("y > 1e0 & n < 3L", (Y > 1) & (N < 3)),
    ("g < 'c'", G.fillna("z") < "c"),
    ("g == \"it's\" | n == 1", N == 1),
])
def test_rows_kept_match_pandas_written_by_hand(text: str, expected: pd.Series) -> None:
    got = filter_rows(FRAME, text)
    assert got.dtype == bool and got.tolist() == expected.astype(bool).tolist()


@pytest.mark.parametrize("text,message,column", [
    ("yy > 2", "unknown column 'yy' in filter; did you mean 'y'?", 1),
    ("y > 2 & Y > 3", "unknown column 'Y' in filter; did you mean 'y'?", 9),
    ("y >> 2", "invalid filter: >> is not supported", 3),
    ("y = 3", "invalid filter: '=' assigns; compare with '=='", 3),
    ("y ** 2 > 1", "invalid filter: powers are not supported", 3),
    ("y ^ 2 > 1", "invalid filter: powers are not supported", 3),
    ("g == 1", "'==' compares the number 1, a number, with column 'g', which is text", 3),
    ("y & n", "'&' combines conditions", 3),
    ("y + g > 1", "'+' needs numbers, but column 'g' is text", 3),
    ("(y > 2", "expected ')' to close the '(' at 1:1, found the end of the filter", 7),
    ("y > 2)", "unexpected ')'", 6),
    ("y > 2 n < 3", "unexpected 'n': combine conditions with & or |", 7),
    ("g %in% c(1, 'a')", "the list mixes numbers and text", 8),
    ("g %in% 'a'", "expected a list after '%in%', e.g. c(1, 2) or [1, 2]", 8),
    ("n %in% c('a')", "'%in%' looks for text in column 'n', which holds numbers", 3),
    ("Days.to_csv('/tmp/x') == 1", "Days.to_csv(...) is not a function a filter can call", 1),
    ("__import__('os').system('id')", "__import__(...) is not a function a filter can call", 1),
    ("y.max() > 2", "y.max(...) is not a function a filter can call", 1),
    ("y > 1 & x.isna()", "x.isna(...) is not a function a filter can call (only is.na(x), and c(...) after "
                         "%in%); did you mean is.na(x)?", 9),
    ("notnull(x)", "did you mean !is.na(x)?", 1),
    ("@y > 2", "'@' is not supported", 1),
    ("y > 2;", "one condition only", 6),
    ("'abc", "the string starting here has no closing '", 1),
    ("y > 2 %% 1", "%% is not supported", 7),
    ("x %like% 'a'", "%like% is not supported (only %in%)", 3),
    ("", "the filter is empty", 1),
    ("x != NA", "NA is not a value to compare with; test for missing values with is.na(x)", 6),
    ("1 == 1", "it gives one True/False for the whole table", 3),
    ("y + 1", "the filter must be a condition on rows", 3),
    ("y > 2 &\n  n <<< 3", "<< is not supported", 5),  # second line, column 5
])
def test_errors_point_at_the_operator_or_column(text: str, message: str, column: int) -> None:
    with pytest.raises(FilterError) as info:
        filter_rows(FRAME, text)
    assert message in info.value.message
    offset = info.value.offset
    assert offset is not None
    line_start = text.rfind("\n", 0, offset) + 1
    assert offset - line_start + 1 == column


def test_nesting_is_bounded_without_recursion_errors() -> None:
    assert filter_rows(FRAME, "(" * 30 + "y > 2" + ")" * 30).sum() == 7
    with pytest.raises(FilterError, match="nested more than 40 levels deep"):
        parse_filter("(" * 200 + "y > 2" + ")" * 200)
    with pytest.raises(FilterError, match="nested more than 40 levels deep"):
        parse_filter("!" * 5000 + "ok")
    assert filter_rows(FRAME, " | ".join(["n == 1"] * 5000)).sum() == 1  # long chains are loops


def test_prepare_reports_the_key_the_syntax_and_the_offset() -> None:
    with pytest.raises(DataError) as info:
        prepare(FRAME, DataSpec(path="d.csv", filter="y > 2 & n >> 1"), {})
    (issue,) = info.value.issues
    assert issue.path == "data.filter" and issue.offset == 10
    assert issue.message == f"invalid filter: >> is not supported; {SYNTAX}"
    with pytest.raises(DataError, match="the filter keeps no rows \\(of 8\\)"):
        prepare(FRAME, DataSpec(path="d.csv", filter="y > 100"), {})


def _write(folder: Path, filter_text: str) -> Path:
    path = folder / "s.yaml"
    path.write_text("name: s\ndata:\n  example: sleepstudy\n"
                    f"  filter: {filter_text}\n"
                    "models:\n  m: {formula: \"Reaction ~ Days + (1|Subject)\"}\n")
    return path


def _cli(folder: Path, *args: str) -> tuple[int, str]:
    result = invoke_cli(folder, *args)
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize("method,suffix", [("to_csv", "csv"), ("to_pickle", "pkl"), ("to_parquet", "pq")])
def test_filter_that_writes_a_file_through_pandas_is_exit_2_and_writes_nothing(tmp_path: Path, method: str,
                                                                               suffix: str) -> None:
    target = tmp_path / f"pwned.{suffix}"
    _write(tmp_path, f"\"Days.{method}('{target}') == 1\"")
    for args in (("validate", "s.yaml"), ("run", "s.yaml", "--out", "out", "--no-cache", "--quiet")):
        code, text = _cli(tmp_path, *args)
        assert code == 2, text
        assert f"s.yaml:4:12: data.filter: invalid filter: Days.{method}(...) is not a function a filter can " \
               "call" in text
        assert not target.exists()
    assert not (tmp_path / "out").exists()


def test_cli_error_is_located_at_the_operator(tmp_path: Path) -> None:
    _write(tmp_path, "\"Days > 2 & Reaction >> 300\"")
    code, text = _cli(tmp_path, "validate", "s.yaml")
    assert code == 2 and text.startswith("s.yaml:4:32: data.filter: invalid filter: >> is not supported; "), text
    _write(tmp_path, "\"Days >= 2 & Subject %in% c(308, 309)\"")
    code, text = _cli(tmp_path, "validate", "s.yaml")
    assert code == 0, text
    assert "180 rows, 16 used" in text  # 2 subjects x 8 days from day 2 on


# ----------------------------------------------------------------------------- nothing runs


_FORBIDDEN = ("exec", "compile", "open", "import", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
              "os.spawn", "os.fork", "pickle.", "marshal.", "ctypes.", "code.__new__", "builtins.input",
              "os.remove", "os.rename", "shutil.")
_SEEN: list[str] = []
_ARMED = [False]


def _hook(event: str, args: tuple) -> None:
    if _ARMED[0] and event.startswith(_FORBIDDEN):
        _SEEN.append(event)


sys.addaudithook(_hook)  # cannot be removed; it records only while armed

_PIECES = ["y", "x", "g", "n", "f", "ok", "`test score`", "dot.name", "is.na", "c", "(", ")", "[", "]", ",",
           "1", "2.5", "-3", "1e3", "'a'", "\"b\"", "==", "!=", "<", "<=", ">", ">=", "&", "|", "!", "&&", "||",
           "and", "or", "not", "in", "%in%", "+", "-", "*", "/", "TRUE", "FALSE", "~", ".", "__class__",
           "__import__('os').system('id')", "Days.to_csv('/tmp/mixspec-pwned')", "y.to_pickle('p')", "@y",
           "lambda", "open('f')", "exec('1')", "eval('1')", "**", "^", ";", "=", "{", "}", "#", "\\", "$"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(_PIECES), max_size=14).map(" ".join),
                 st.lists(st.sampled_from(_PIECES), max_size=14).map("".join)))
def test_random_filter_text_runs_nothing(text: str) -> None:
    """Parse and evaluate random text with an audit hook armed: only FilterError or a mask."""
    filter_rows(FRAME, "y > 1 & g == 'a' | x %in% c(1, 2) | is.na(x)")  # warm every code path up
    _SEEN.clear()
    _ARMED[0] = True
    try:
        mask = filter_rows(FRAME, text)
    except FilterError as exc:
        mask = None
        assert exc.message
    finally:
        _ARMED[0] = False
    assert _SEEN == [], (text, _SEEN)
    if mask is not None:
        assert mask.dtype == bool and mask.shape == (len(FRAME),)
    assert not os.path.exists("/tmp/mixspec-pwned")


def test_the_hook_sees_what_it_guards_against(tmp_path: Path) -> None:
    """The audit test can fail: the same hook records an open and a compile."""
    _SEEN.clear()
    _ARMED[0] = True
    try:
        compile("1", "<x>", "eval")
        (tmp_path / "f").write_text("x")
    finally:
        _ARMED[0] = False
    assert "compile" in _SEEN and "open" in _SEEN
