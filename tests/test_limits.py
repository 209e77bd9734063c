"""Limits and hardening of spec loading: every bound is exit 2 with file:line and the
limit, hostile bytes never give a traceback, names stay names, the terminal stays clean."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app
from runner.run.console import terminal_safe
from runner.spec.errors import SpecError
from runner.spec.limits import MAX_MODELS, MAX_SPEC_BYTES, MAX_STRING
from runner.spec.load import load_spec

runner = CliRunner()
HEAD = "name: t\ndata: {example: sleepstudy}\n"
MODEL = "{formula: 'Reaction ~ Days + (1|Subject)'}"
BASE = HEAD + f"models:\n  m: {MODEL}\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _both(tmp_path: Path, spec: Path) -> list[str]:
    """stderr of `mixspec validate` and `mixspec run`; both must exit 2 without a traceback."""
    out = []
    for args in (["validate", "-q", str(spec)],
                 ["run", str(spec), "--out", str(tmp_path / "out"), "--no-cache", "-j", "1", "-q"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args[0], result.output, result.exception)
        assert isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        out.append(result.stderr)
    assert not (tmp_path / "out" / "t").exists()  # nothing fitted or written
    return out


def _located(stderr: str, spec: Path, line: int | None, needle: str) -> None:
    where = f"{spec}:{line}:" if line is not None else f"{spec}:"
    assert any(ln.startswith(where) and needle in ln for ln in stderr.splitlines()), stderr


# ---------------------------------------------------------------- size limits


def test_a_spec_larger_than_1_mb_is_refused(tmp_path):
    text = BASE + "title: " + "x" * 5000 + "\n"
    text += "".join(f"# {'c' * 1000}\n" for _ in range(MAX_SPEC_BYTES // 1000))
    spec = _write(tmp_path, text)
    for err in _both(tmp_path, spec):
        _located(err, spec, 1, "larger than 1,048,576 bytes (the limit is 1 MB)")


def test_a_spec_just_under_1_mb_is_read(tmp_path):
    text = BASE + "".join(f"# {'c' * 998}\n" for _ in range((MAX_SPEC_BYTES - len(BASE)) // 1001))
    assert len(text.encode()) <= MAX_SPEC_BYTES
    assert list(load_spec(_write(tmp_path, text)).models) == ["m"]


def test_more_than_500_models_and_variants_is_refused_at_the_first_one_over(tmp_path):
    models = "".join(f"  m{i}: {MODEL}\n" for i in range(300))
    variants = "".join(f"  v{i}: {{from: m{i}, method: ML}}\n" for i in range(201))
    spec = _write(tmp_path, HEAD + "models:\n" + models + "variants:\n" + variants)
    for err in _both(tmp_path, spec):
        # models on lines 4-303, `variants:` on 304, v0 on 305: the 501st name is v200 on line 505
        _located(err, spec, 505, f"variants.v200: 501 models and variants; the limit is {MAX_MODELS}")


def test_a_spec_at_the_limits_validates_in_seconds(tmp_path):
    """500 models and variants, with expectations and tests: loading and resolving stays linear."""
    models = "".join(f"  m{i}: {{formula: 'Reaction ~ Days + ({'Days' if i % 2 else '1'} | Subject)'}}\n"
                     for i in range(250))
    variants = "".join(f"  v{i}: {{from: m{i}, drop: [Days], method: ML}}\n" for i in range(250))
    expect = "expect:\n  best: m1\n  fixed:\n" + "".join(f"    m{i}: ['Days > 0']\n" for i in range(250))
    text = HEAD + "models:\n" + models + "variants:\n" + variants + "compare: {tests: auto}\n" + expect
    spec = _write(tmp_path, text)
    t0 = time.perf_counter()
    loaded = load_spec(spec)
    load_seconds = time.perf_counter() - t0
    assert len(loaded.models) == MAX_MODELS and len(loaded.expectations) >= 250
    assert load_seconds < 10, load_seconds  # measured ~0.3 s
    t0 = time.perf_counter()
    result = runner.invoke(app, ["validate", "-q", str(spec)])
    seconds = time.perf_counter() - t0
    assert result.exit_code == 0, result.output
    assert seconds < 90, seconds  # designs of 500 models on sleepstudy: measured ~3-10 s on 2 busy cores


def test_auto_pairs_give_the_verdicts_of_check_nested_on_every_pair(tmp_path):
    from runner.compare.nesting import auto_nesting, check_nested
    from runner.run.plan import _nest_side, make_plan

    formulas = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)",
                "Reaction ~ Days + (Days || Subject)", "Reaction ~ 1 + (1 | Subject)",
                "Reaction ~ 1 + (Days | Subject)", "Reaction ~ poly(Days, 2) + (1 | Subject)",
                "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"]
    models = "".join(f"  m{i}: {{formula: '{f}', method: ML}}\n" for i, f in enumerate(formulas * 2))
    spec = _write(tmp_path, HEAD + "models:\n" + models + "compare: {tests: auto}\n")
    plan = make_plan(spec)
    sides = [_nest_side(m) for m in plan.models.values()]
    naive = {(a.name, b.name): check_nested(a, b) for a in sides for b in sides
             if a is not b and a.npar < b.npar and check_nested(a, b).nested}
    fast = auto_nesting(sides)
    assert list(fast) == list(naive) and len(fast) >= 20
    assert {k: v.how for k, v in fast.items()} == {k: v.how for k, v in naive.items()}
    assert [(t.small, t.large) for t in plan.tests] == list(naive)


def test_a_string_longer_than_10000_characters_is_refused_where_it_is(tmp_path):
    long_formula = "Reaction ~ Days" + " + Days" * (MAX_STRING // 7) + " + (1|Subject)"
    spec = _write(tmp_path, BASE + f"  big: {{formula: '{long_formula}'}}\n")
    for err in _both(tmp_path, spec):
        _located(err, spec, 5, f"the limit is {MAX_STRING:,}")
    # the expectation grammar only sees bounded text too
    spec = _write(tmp_path, BASE + "expect:\n  fixed: ['Days > " + "0" * (MAX_STRING + 1) + "']\n", "e.yaml")
    _located(_both(tmp_path, spec)[0], spec, 6, f"a string of {MAX_STRING + 8:,} characters")
    spec = _write(tmp_path, BASE + "title: " + "t" * MAX_STRING + "\n", "ok.yaml")
    assert load_spec(spec).spec.title == "t" * MAX_STRING  # at the limit: fine


def test_simulate_more_than_10_million_rows_is_refused(tmp_path):
    spec = _write(tmp_path, "name: t\ndata:\n  simulate: {provinces: 100, schools: 100, classrooms: 100, "
                  "students: 11, scores: 10}\nmodels:\n  m: {formula: 'test_score ~ age + (1|school)'}\n")
    for err in _both(tmp_path, spec):
        _located(err, spec, 3, "simulate gives 110,000,000 rows (provinces x schools x classrooms x students x "
                               "scores); the limit is 10,000,000")
    result = runner.invoke(app, ["simulate", str(tmp_path / "x.csv"), "--provinces", "1000", "--students", "2000"])
    assert result.exit_code == 2 and "the limit is 10,000,000" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_nsim_above_100000_is_refused():
    from pydantic import ValidationError

    from runner.spec.models import BootstrapSpec

    assert BootstrapSpec(nsim=100_000).nsim == 100_000
    with pytest.raises(ValidationError, match="less than or equal to 100000"):
        BootstrapSpec(nsim=100_001)


# ---------------------------------------------------------------- hostile bytes


def test_a_nul_byte_is_exit_2_with_its_position(tmp_path):
    spec = _write(tmp_path, BASE + "title: ab\x00c\n")
    for err in _both(tmp_path, spec):
        _located(err, spec, 5, "a NUL byte is not allowed in a spec")
    spec = _write(tmp_path, BASE + "title: a\x07b\n", "bell.yaml")
    _located(_both(tmp_path, spec)[0], spec, 5, "non-printable character U+0007")


@pytest.mark.parametrize("style", ["flow", "block", "alias"])
def test_yaml_nested_thousands_deep_is_exit_2(tmp_path, style):
    if style == "flow":
        text, line = BASE + "title: " + "[" * 5000 + "]" * 5000 + "\n", 5
    elif style == "block":
        text = BASE + "report:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(1200)) + " " * 1201 + "x\n"
        line = 55
    else:  # no textual nesting at all: each anchor holds the previous one
        text = BASE + "x0: &a0 [1]\n" + "".join(f"x{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 3000))
        line = None
    spec = _write(tmp_path, text)
    for err in _both(tmp_path, spec):
        _located(err, spec, line, "nested more than 50 levels deep (the limit)")


def test_a_recursive_alias_is_exit_2(tmp_path):
    spec = _write(tmp_path, BASE + "x: &a [1, *a]\n")
    for err in _both(tmp_path, spec):
        _located(err, spec, 5, "recursive structure")


def test_a_non_utf8_spec_is_exit_2_with_its_position(tmp_path):
    spec = _write(tmp_path, (BASE + "title: caf\xe9\n").encode("latin-1"))
    for err in _both(tmp_path, spec):
        _located(err, spec, 5, "not UTF-8 text (byte")


# ---------------------------------------------------------------- names stay names


YAML11 = ["null", "yes", "no", "on", "off", "true", "false", "Yes", "NO", "y", "n"]


def test_yaml_1_1_words_are_model_and_variant_names(tmp_path):
    models = "".join(f"  {n}: {MODEL}\n" for n in YAML11)
    text = (HEAD + "models:\n" + models + "variants:\n  On: {from: on, method: ML}\n  ~x: {from: off, method: ML}\n"
            "compare: {tests: [[no, yes], {models: [NO, On], nested: strict}]}\n"
            "expect: {best: true, converged: [null, off], singular: [n]}\n")
    text = text.replace("  ~x:", "  'True':")
    loaded = load_spec(_write(tmp_path, text))
    assert list(loaded.models) == [*YAML11, "On", "True"]
    assert loaded.models["On"].source == "variant of on" and loaded.models["True"].source == "variant of off"
    assert loaded.spec.compare.test_pairs() == [("no", "yes", "proven"), ("NO", "On", "strict")]
    assert loaded.spec.expect.best == "true" and loaded.spec.expect.converged == ["null", "off"]
    # elsewhere YAML 1.1 is unchanged: booleans are booleans
    assert loaded.spec.compare.refit is True


def test_yaml_names_keep_their_positions_in_errors(tmp_path):
    text = HEAD + f"models:\n  yes: {MODEL}\n  no: {{formula: 'Reaction ~ Dayz + (1|Subject)'}}\n"
    spec = _write(tmp_path, text)
    result = runner.invoke(app, ["validate", "-q", str(spec)])
    assert result.exit_code == 2
    _located(result.stderr, spec, 5, "models.no.formula")


# ---------------------------------------------------------------- terminal


def test_terminal_safe_strips_controls_and_escapes_workflow_commands():
    assert terminal_safe("a\x1b]0;title\x07b\x1b[31mc") == "a]0;titleb[31mc"
    assert terminal_safe("x\n::error::pwned\n  ::add-mask::y\n##[warning]z") == \
        "x\n\\::error::pwned\n  \\::add-mask::y\n\\##[warning]z"
    assert terminal_safe("x\r::error::y") == "x::error::y"
    assert terminal_safe("left\u202eright\ttab") == "leftright tab"
    assert terminal_safe("a :: b") == "a :: b"


def _clean(stderr: str) -> None:
    assert "\x1b" not in stderr and "\r" not in stderr and "\u202e" not in stderr
    assert not any(re.match(r"\s*(::|##\[)", line) for line in stderr.splitlines()), stderr


def test_names_from_the_spec_reach_the_terminal_clean(tmp_path):
    # YAML double-quoted escapes put ESC, CR and newlines into keys without raw control bytes
    spec = _write(tmp_path, BASE + '"\\e]0;pwned\\a\\r\\n::error file=x::owned\\u202e": 1\n'
                  'models2: {"\\e[31m\\n::add-mask::x": 1}\n')
    for err in _both(tmp_path, spec):
        _clean(err)
        assert "\\::error file=x::owned" in err


def test_levels_from_the_data_reach_the_terminal_clean(tmp_path):
    levels = ["\x1b[31mred", "::error::g1", "b\u202ec", "plain"]
    rows = "".join(f"{(i * 7) % 11 + 0.5 * i},\"{levels[i % 4]}\",{i}\n" for i in range(40))
    (tmp_path / "d.csv").write_text("y,g,x\n" + rows, encoding="utf-8")
    spec = _write(tmp_path, "name: t\ndata: {path: d.csv, categorical: {g: {reference: nope}}}\nmodels:\n"
                  "  m: {formula: 'y ~ x + (1|g)'}\n")
    for err in _both(tmp_path, spec):
        _clean(err)
        assert "(levels: [31mred, ::error::g1, bc, plain)" in err  # printed, without the controls


def test_nagq_above_25_is_refused_at_its_line(tmp_path):
    spec = _write(tmp_path, "name: t\ndata: {example: sleepstudy}\ndefaults: {nagq: 25}\nmodels:\n"
                  f"  m: {MODEL}\n  g: {{formula: 'Reaction ~ Days + (1|Subject)', nagq: 26}}\n")
    for err in _both(tmp_path, spec):
        _located(err, spec, 6, "less than or equal to 25")


def test_mutated_specs_give_located_errors_never_exceptions(tmp_path):
    """Hostile fragments spliced into a real spec (NUL, tags, anchors, brackets, BOM-less
    bytes, bidi marks): load_spec raises SpecError or loads, nothing else."""
    import random

    base = (Path(__file__).resolve().parents[1] / "specs" / "students.yaml").read_bytes()
    pieces = [b"\x00", b"\n", b": ", b"- ", b"&a ", b"*a", b"[", b"]", b"{", b"}", b"? ", b"\t", b"\xff", b"'",
              b'"', b"|", b">", b"%YAML 1.1\n", b"---\n", b"...\n", b"yes", b"~", b"<<: *a\n", b"!!binary ",
              b"!!python/object/apply:os.system ['id'] ", b"!!set ", b"\xe2\x80\xae", b"\x1b", b"[" * 300]
    rng = random.Random(2026)
    spec = tmp_path / "s.yaml"
    outcomes = {"loaded": 0, "error": 0}
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.3:
                del data[pos:pos + rng.randint(1, 20)]
            else:
                data[pos:pos] = rng.choice(pieces)
        spec.write_bytes(bytes(data))
        try:
            load_spec(spec)
            outcomes["loaded"] += 1
        except SpecError as exc:
            assert exc.issues and all(i.file == str(spec) for i in exc.issues)
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["loaded"] > 10  # both paths exercised
