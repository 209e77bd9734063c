"""The README's "Python API" example runs as written and prints what the README shows.

A small doctest: each `>>> ` statement is run (an expression's repr printed, as in the
REPL) and its output compared with the README's lines, whitespace-normalized per line
and blank lines ignored (the summary has blank lines, which plain doctest cannot show).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    body = re.search(r"```pycon\n(.*?)```", section, re.S)
    assert body is not None, "no pycon block in the Python API section"
    steps: list[tuple[str, list[str]]] = []
    for line in body.group(1).splitlines():
        if line.startswith(">>> "):
            steps.append((line[4:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _norm(lines: list[str]) -> list[str]:
    return [" ".join(line.split()) for line in lines if line.strip()]


def test_readme_python_api_example() -> None:
    steps = _block()
    assert len(steps) > 10
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for source, expected in steps:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    code = compile(source, "README", "eval")
                except SyntaxError:
                    exec(compile(source, "README", "exec"), namespace)
                else:
                    value = eval(code, namespace)
                    if value is not None:
                        print(repr(value))
            assert _norm(out.getvalue().splitlines()) == _norm(expected), source
    finally:
        os.chdir(cwd)
