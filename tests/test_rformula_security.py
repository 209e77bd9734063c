"""A formula is untrusted input: nothing in it may run code, open files or import modules.

Three guards:
- the attacks from issue 10 in every position a formula has (response, fixed term,
  random lhs, structured `fixed:`, a variant's `add:`) are FormulaErrors and create nothing;
- `runner/` is walked with `ast`: no eval/exec/compile, no pandas query/eval, no pickle,
  no getattr/setattr/import by a computed name outside reviewed places;
- random formula text is parsed and materialized with an audit hook armed: any exec,
  compile, open, import, os.system, subprocess or pickle event fails the test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.design.build import DesignError, build_design
from runner.formula import FormulaError, add_terms, parse_formula, required_variables, structured_formula

ROOT = Path(__file__).resolve().parents[1]

ATTACKS = [
    "__import__('os').system('touch {f}')",
    "I(Days + 0*__import__('os').system('touch {f}'))",
    "open('{f}', 'w')",
    "exec(\"open('{f}', 'w')\")",
    "eval('1')",
    "Days.to_csv('{f}')",
    "().__class__.__bases__[0]",
    "getattr(Days, 'to_csv')('{f}')",
    "(lambda: 1)()",
    "np.log(Days).to_pickle('{f}')",
    "C(Days, __import__('os').system('touch {f}'))",
    "poly(Days, __import__('os').system('touch {f}'))",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_in_every_position_are_formula_errors(attack: str, tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    expr = attack.format(f=target)
    texts = [
        f"Reaction ~ Days + {expr} + (1 | Subject)",
        f"{expr} ~ Days + (1 | Subject)",
        f"Reaction ~ Days + ({expr} | Subject)",
        f"Reaction ~ Days + (1 + {expr} || Subject)",
    ]
    for text in texts:
        with pytest.raises(FormulaError):
            parse_formula(text)
    with pytest.raises(FormulaError):
        structured_formula("Reaction", [expr], [{"group": "Subject"}])
    with pytest.raises((FormulaError, ValueError)):
        add_terms(parse_formula("Reaction ~ Days + (1 | Subject)"), [expr])
    assert not target.exists()


# ----------------------------------------------------------------------------- the source


FORBIDDEN_CALLS = {"eval", "exec", "compile", "breakpoint", "input"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
DYNAMIC = {"getattr", "setattr", "delattr", "import_module", "__import__"}
# Computed names reviewed by hand: none of them comes from a spec or a data file.
REVIEWED = {
    ("runner/__init__.py", "__getattr__"): "module attribute names from Python code, checked against lists",
    ("runner/__init__.py", "<module>"): "re-binds the package's own submodules on reload",
    ("runner/spec/__init__.py", "__getattr__"): "names checked against the module's _HOME table",
    ("runner/engines/base.py", "get_engine"): "module and class from the engine registry constant",
    ("runner/compare/expectations.py", "_flags"): "callers pass the literal 'converged' or 'singular'",
    ("runner/run/cache_verify.py", "_compare_models"): "field names of mixspec's own pydantic records",
    ("runner/run/record.py", "_version"): "package names listed in the code, for the versions block",
}
# Pickling reviewed by hand: mixspec's own objects sent to its worker processes, never bytes from a file.
REVIEWED_PICKLE = {
    ("runner/run/replicates.py", "_run_chunk"): "loads the refit closure map_chunked pickled in this run",
    ("runner/run/replicates.py", "map_chunked"): "pickles the refit closure for the worker processes",
}


def _literal_strings(node: ast.AST) -> bool:
    """A literal tuple/list of strings, or of tuples whose first item is a string."""
    if not isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return False
    for elt in node.elts:
        first = elt.elts[0] if isinstance(elt, ast.Tuple) and elt.elts else elt
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            return False
    return True


def _loop_literal_names(tree: ast.AST) -> set[int]:
    """ids of Name nodes bound by `for name in ("a", "b")` (or a comprehension over a literal)."""
    bound: dict[str, bool] = {}
    safe: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)) and _literal_strings(node.iter):
            target = node.target.elts[0] if isinstance(node.target, ast.Tuple) else node.target
            if isinstance(target, ast.Name):
                bound[target.id] = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and bound.get(node.id):
            safe.add(id(node))
    return safe


def _functions(tree: ast.AST) -> dict[int, str]:
    """Node id -> name of the innermost function defining it ('<module>' at top level)."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            owner[id(child)] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return owner


def violations(path: Path, rel: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    safe = _loop_literal_names(tree)
    owner = _functions(tree)
    out: list[str] = []
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                    else [])
            bad = [n for n in names if n.split(".")[0] in FORBIDDEN_MODULES]
            if bad and (rel, owner.get(id(node), "<module>")) not in REVIEWED_PICKLE:
                out.append(f"{where}: imports {bad[0]}")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if isinstance(f, ast.Name) and name in FORBIDDEN_CALLS:
            out.append(f"{where}: calls {name}()")
        own = (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self") or (
            isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name)
            and f.value.func.id.lstrip("_")[:1].isupper())  # self.eval(), _Evaluator(frame).eval(): our own
        if isinstance(f, ast.Attribute) and name in ("query", "eval") and not own:
            out.append(f"{where}: calls .{name}() (pandas evaluates text)")
        if name in DYNAMIC:
            one_arg = name in ("import_module", "__import__")
            arg = node.args[1] if not one_arg and len(node.args) > 1 else node.args[0] if node.args else None
            literal = isinstance(arg, ast.Constant)
            if arg is not None and not literal and id(arg) not in safe \
                    and (rel, owner.get(id(node), "<module>")) not in REVIEWED:
                out.append(f"{where}: {name}() with a computed name in {owner.get(id(node))}()")
    return out


def test_runner_never_evaluates_text() -> None:
    found = []
    for path in sorted((ROOT / "runner").rglob("*.py")):
        found += violations(path, path.relative_to(ROOT).as_posix())
    assert found == []


def test_the_source_walk_finds_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nx = eval('1')\ndf.query('a > 1')\ngetattr(o, name)\n"
                   "for k in ('a', 'b'):\n    getattr(o, k)\n")
    found = violations(bad, "bad.py")
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted([
        "imports pickle", "calls eval()", "calls .query() (pandas evaluates text)",
        "getattr() with a computed name in <module>()"])


# ----------------------------------------------------------------------------- audit hook

FLAGGED = ("exec", "compile", "open", "import", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
           "subprocess.Popen", "pickle.find_class", "marshal.loads", "shutil.", "os.remove", "os.rename")
_AUDIT: dict[str, object] = {"armed": False, "events": []}


def _hook(event: str, args: tuple) -> None:
    if _AUDIT["armed"] and event.startswith(FLAGGED):
        _AUDIT["events"].append((event, repr(args)[:200]))  # type: ignore[union-attr]


def _install_hook() -> None:
    """Audit hooks cannot be removed: install one per process and arm it only around the code under test."""
    if not getattr(sys, "_mixspec_formula_hook", False):
        sys.addaudithook(_hook)
        sys._mixspec_formula_hook = True  # type: ignore[attr-defined]


RNG = np.random.default_rng(3)
FRAME = pd.DataFrame({
    "y": RNG.normal(size=40), "x": RNG.normal(size=40) + 3, "z": RNG.integers(0, 5, 40).astype(float),
    "a": RNG.choice(["p", "q", "r"], 40), "b": RNG.choice(["u", "v"], 40), "f": RNG.choice(["k", "m"], 40),
    "g": np.repeat(["g1", "g2", "g3", "g4", "g5", "g6", "g7", "g8"], 5), "odd name": RNG.normal(size=40),
})

PIECES = st.sampled_from([
    "y", "x", "z", "a", "b", "f", "g", "`odd name`", "~", " ~ ", "+", "-", "*", ":", "/", "^", "**", "(", ")", "|",
    "||", ",", "0", "1", "2", "I(", "log(", "sqrt(", "poly(", "scale(", "factor(", "C(", "relevel(", "offset(",
    "contr.sum", "ref = 'q'", "exp(", "%in%", "%%", ">", "==", "!", "&", "'s'", "\"", "`", ".", "[", "]", "@", "$",
    "__import__('os').system('id')", "open('f')", "exec", "eval(", "lambda", "getattr(", "__class__", "{", ";",
])
BASES = st.sampled_from([
    "y ~ x + (1|g)", "y ~ I(x^2) + log(x) + (1|g)", "y ~ poly(x, 2) + a*b + (x|g)", "log(x) ~ C(a, contr.sum) + (1|g)",
    "y ~ scale(z) + relevel(a, ref = 'q') + offset(z) + (0 + f|g)", "y ~ (a + b + f)^2 + (1|g)",
    "y ~ I(x > 3) + factor(z) + (1|g)", "y ~ `odd name` + x:a + (1 + x || g)",
])


@st.composite
def texts(draw: st.DrawFn) -> str:
    text = draw(BASES)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(PIECES) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 4)):]
    return text


def _parse_and_materialize(text: str) -> None:
    try:
        mf = parse_formula(text)
        required_variables(mf)
        build_design(mf, FRAME)
    except (FormulaError, DesignError):
        pass


def test_warm_paths_import_nothing_once_loaded() -> None:
    """Each base formula materializes (so the fuzzer reaches evaluation), and a second run is silent."""
    _install_hook()
    for base in BASES.elements:  # type: ignore[attr-defined]
        build_design(parse_formula(base), FRAME)  # loads every lazily imported module once
    _AUDIT["events"] = []
    _AUDIT["armed"] = True
    try:
        for base in BASES.elements:  # type: ignore[attr-defined]
            build_design(parse_formula(base), FRAME)
    finally:
        _AUDIT["armed"] = False
    assert _AUDIT["events"] == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts())
def test_random_formulas_run_nothing(text: str) -> None:
    _install_hook()
    _parse_and_materialize("y ~ x + (1|g)")  # warm: lazy imports of the error paths happen unarmed
    _AUDIT["events"] = []
    _AUDIT["armed"] = True
    try:
        _parse_and_materialize(text)
    finally:
        _AUDIT["armed"] = False
    assert _AUDIT["events"] == [], text


def test_the_audit_hook_sees_an_open() -> None:
    """The guard can fail: an open() while armed is recorded."""
    import os

    _install_hook()
    _AUDIT["events"] = []
    _AUDIT["armed"] = True
    try:
        with open(os.devnull):
            pass
    finally:
        _AUDIT["armed"] = False
    assert [e for e, _ in _AUDIT["events"]] == ["open"]  # type: ignore[union-attr]


POSITIONS = {
    "formula": 'm: {{formula: "Reaction ~ Days + {e} + (1 | Subject)"}}',
    "response": 'm: {{formula: "{e} ~ Days + (1 | Subject)"}}',
    "random lhs": 'm: {{formula: "Reaction ~ Days + (1 + {e} | Subject)"}}',
    "structured fixed": 'm: {{response: Reaction, fixed: ["{e}"], random: [{{group: Subject}}]}}',
    "structured random terms": 'm: {{response: Reaction, fixed: [Days], random: [{{group: Subject, terms: [1, "{e}"]}}]}}',
    "variant add": 'm: {{formula: "Reaction ~ Days + (1 | Subject)"}}\nvariants:\n  v: {{from: m, add: ["{e}"]}}',
}


@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_exits_2_and_runs_nothing(position: str, command: str, tmp_path: Path) -> None:
    """Issue 10's attack in every position of a spec: exit 2 from validate and run, no file."""
    from typer.testing import CliRunner

    from runner.cli import app

    target = tmp_path / "pwned"
    attack = f"I(Days + 0*__import__('os').system('touch {target}'))"
    spec = "data: {example: sleepstudy}\nmodels:\n  " + POSITIONS[position].format(e=attack) + "\n"
    path = tmp_path / "s.yaml"
    path.write_text(spec)
    args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "__import__" in result.output or "not valid formula syntax" in result.output
    assert not target.exists()


TERMS = st.sampled_from([
    "C(a, contr.sum, base = 2)", "factor(x, levels = c(1, 2))", "ordered(z)", "relevel(z, 2)", "poly(z, 2)",
    "scale(a)", "I(a == 'p')", "I(a %in% c('p'))", "log(x, base = 2)", "as.numeric(a)", "factor(g)", "C(f, poly)",
    "I(x %% 0)", "I(0/0)", "exp(1000 * x)", "relevel(factor(z), ref = 99)", "poly(x, 2, raw = 'yes')",
    "scale(x, center = FALSE)", "factor(x, ordered = TRUE)", "I(!a)", "I(-a)", "C(a, Treatment(1))",
    "C(a, Treatment(reference = 'q'))", "cbind(x, z)", "x", "a", "z:a", "b*f", "offset(z)", "(a + b)^2", "a/b",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TERMS, min_size=1, max_size=4), st.sampled_from(["y", "log(x)", "x / z", "cbind(x, z)"]))
def test_valid_syntax_materializes_or_fails_cleanly(terms: list[str], response: str) -> None:
    """Every combination of supported terms builds a design or raises FormulaError/DesignError."""
    _install_hook()
    _parse_and_materialize("y ~ x + (1|g)")
    _AUDIT["events"] = []
    _AUDIT["armed"] = True
    try:
        _parse_and_materialize(f"{response} ~ {' + '.join(terms)} + (1|g)")
    finally:
        _AUDIT["armed"] = False
    assert _AUDIT["events"] == []
