"""The `mixspec` command: thin typer wrappers over functions a Python user can call too.

User mistakes (spec, formula, column, data) are caught here and printed as
`file:line:col: path: message` lines on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from runner.run.options import EXIT_FAILED, EXIT_INVALID, EXIT_OK, RunOptions, executor_named  # light

if TYPE_CHECKING:  # imported where used: `mixspec --help` must not pay for formulaic, pandas or rich
    from rich.table import Table

    from runner.run.plan import SpecPlan
    from runner.spec.errors import SpecIssue
    from runner.validate import ValidatedSpec

app = typer.Typer(
    name="mixspec",
    help="Declarative linear mixed-effects models: YAML specs, lme4 formulas, lme4-exact fits, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _err(line: str) -> None:
    """A message on stderr; names and levels in it come from specs and data (terminal_safe)."""
    from runner.run.console import terminal_safe

    print(terminal_safe(line), file=sys.stderr)


def _print_issues(issues: list[SpecIssue]) -> None:
    for issue in issues:
        _err(str(issue))


AllowPath = Annotated[list[Path] | None, typer.Option(
    "--allow-path", help="Also let specs read files in this folder (repeatable; default: only the repository; "
    "or MIXSPEC_ALLOW_PATHS)", show_default=False, metavar="DIR")]
MaxMemory = Annotated[str | None, typer.Option(
    "--max-memory", help="Refuse (exit 2) a model whose estimated peak memory exceeds this: 2GB, 500MB, 1.5G "
    "(binary units), or off (default: 80% of the smaller of RAM and the cgroup's memory limit)",
    show_default=False, metavar="SIZE")]
AllowEnv = Annotated[list[str] | None, typer.Option(
    "--allow-env", help="Let specs read a database URL from this environment variable via url_env "
    "(repeatable; or MIXSPEC_URL_ENVS)", show_default=False, metavar="NAME")]


def _table(validated: ValidatedSpec) -> Table:
    from runner.run.console import terminal_safe

    from rich.table import Table
    from rich.text import Text

    data = validated.data
    title = (f"{validated.loaded.file}: {validated.loaded.name} — {data.rows} rows, "
             f"{data.rows_used} used ({data.na})")
    table = Table(title=Text(terminal_safe(title)), title_justify="left", show_lines=False)
    for header, justify in (("model", "left"), ("formula", "left"), ("nobs", "right"), ("groups", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for s in validated.summaries.values():
        groups = ", ".join(f"{g} ({n})" for g, n in s.groups.items()) or "-"
        name = s.name if s.source == "model" else f"{s.name} ({s.source})"
        table.add_row(*(Text(terminal_safe(c)) for c in (name, s.formula, str(s.nobs), groups)))
    return table


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (YAML)", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only problems")] = False,
    allow_path: AllowPath = None,
    allow_env: AllowEnv = None,
    max_memory: MaxMemory = None,
) -> None:
    """Check specs and their data without fitting: exit 0 when valid, 2 with every problem listed."""
    from rich.console import Console

    from runner.data.files import granted
    from runner.run.plan import make_plan
    from runner.spec.errors import IssueError

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    code = EXIT_OK
    for path in specs:
        try:  # the run's own checks (data, designs, test pairs, expectations), nothing fitted
            with granted(allow_path or (), allow_env or ()):
                plan = make_plan(path)
            validated = plan.validated
        except IssueError as exc:
            _print_issues(exc.issues)
            code = EXIT_INVALID
            continue
        for warning in validated.warnings:
            _err(str(warning))
        if not quiet:
            console.print(_table(validated))
        code = max(code, _preflight_lines(plan, max_memory, path, quiet))
    raise typer.Exit(code)


def _preflight_lines(plan: SpecPlan, max_memory: str | None, path: Path, quiet: bool) -> int:
    """Each model's memory and time estimate (printed unless quiet); refusals on stderr (exit 2)."""
    from runner.run.preflight import estimate_plan, fmt_mb, refusals, resolve_limit

    try:
        limit, how = resolve_limit(max_memory)
    except ValueError as exc:
        _err(f"mixspec validate: {exc}")
        return EXIT_INVALID
    estimates = estimate_plan(plan)
    if not quiet and estimates:
        print(f"pre-flight (limit {fmt_mb(limit) if limit else 'none'}, {how}):")
        for e in estimates.values():
            print(f"  {e.summary()}")
    refused = refusals(estimates, limit, how)
    for r in refused:
        _err(f"{path}: {r}")
    return EXIT_INVALID if refused else EXIT_OK


@app.command()
def schema(
    results: Annotated[bool, typer.Option("--results", help="The results.json schema instead of the spec's")] = False,
) -> None:
    """Print the JSON Schema of spec files (for editor completion) or of results.json."""
    if results:
        from runner.results import ResultsRecord

        document = ResultsRecord.model_json_schema()
        document.setdefault("title", "mixspec results.json")
    else:
        from runner.spec.models import Spec

        document = Spec.model_json_schema()
        document.setdefault("title", "mixspec spec")
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


@app.command()
def run(
    specs: Annotated[list[Path], typer.Argument(help="Spec files (YAML)", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder")] = Path("reports"),
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel fits (default: cores)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Refit even if cached")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Also fit with statsmodels and compare")] = False,
    executor: Annotated[str, typer.Option(help="local | processes | dask")] = "local",
    scheduler: Annotated[str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print results.json to stdout")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder (default .mixspec-cache)")] = None,
    allow_path: AllowPath = None,
    allow_env: AllowEnv = None,
    max_memory: MaxMemory = None,
) -> None:
    """Fit every model of the specs, compare them, write results.json and the HTML report."""
    try:
        named = executor_named(executor)
    except ValueError as exc:
        _err(f"mixspec run: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    options = RunOptions(out=out, jobs=jobs, use_cache=not no_cache, verify=verify, executor=named,
                         scheduler=scheduler, quiet=quiet, cache_dir=cache_dir, max_memory=max_memory)
    from runner.data.files import granted
    from runner.run.commands import run_command
    from runner.spec.errors import IssueError

    try:
        with granted(allow_path or (), allow_env or ()):  # data is loaded in this process, before any fit
            code = run_command(list(specs), options, json_out=json_out)
    except IssueError as exc:
        _print_issues(exc.issues)
        code = EXIT_INVALID
    raise typer.Exit(code)


@app.command()
def report(
    results: Annotated[list[Path], typer.Argument(help="results.json files", show_default=False)],
) -> None:
    """Re-render HTML reports from results.json (and fits/ sidecars) without refitting."""
    from pydantic import ValidationError

    from runner.report.api import PAGE_NAME, render_index, render_spec_report
    from runner.results import RESULTS_NAME

    code = EXIT_OK
    folders: set[Path] = set()
    for path in results:
        if path.is_dir() and (path / RESULTS_NAME).is_file():
            path = path / RESULTS_NAME  # `mixspec report reports/students` means its results.json
        try:
            page = render_spec_report(path)
        except FileNotFoundError:
            _err(f"{path}: file not found")
            code = EXIT_INVALID
            continue
        except IsADirectoryError:
            _err(f"{path}: a folder without results.json; give a results.json file")
            code = EXIT_INVALID
            continue
        except (ValidationError, ValueError) as exc:
            _err(f"{path}: not a valid results.json: {str(exc).splitlines()[0]}")
            code = EXIT_INVALID
            continue
        except OSError as exc:  # a full disk: no older page may stand in for this record's
            old, note = Path(path).parent / PAGE_NAME, ""
            try:
                if old.exists():
                    old.unlink()
                    note = f"; removed the older {old}"
            except OSError:
                pass
            _err(f"{path}: report not written: {exc.strerror or exc}{note}")
            code = max(code, EXIT_FAILED)
            continue
        folders.add(Path(path).resolve().parent.parent)
        _err(str(page))
    for folder in sorted(folders):
        try:
            render_index(folder)
        except OSError as exc:
            _err(f"{folder / PAGE_NAME}: index not written: {exc.strerror or exc}")
            code = max(code, EXIT_FAILED)
    raise typer.Exit(code)


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="Earlier results.json", show_default=False)],
    new: Annotated[Path, typer.Argument(help="Later results.json", show_default=False)],
    rtol: Annotated[float, typer.Option(min=0.0, help="Relative tolerance for numbers")] = 1e-6,
) -> None:
    """What changed between two runs of a spec; exit 1 when anything did."""
    from runner.run.commands import diff_command

    raise typer.Exit(diff_command(old, new, rtol))


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="CSV file to write", show_default=False)],
    seed: Annotated[int, typer.Option(help="Seed of numpy's default_rng")] = 20261125,
    provinces: Annotated[int, typer.Option(help="Number of provinces")] = 8,
    schools: Annotated[int, typer.Option(help="Schools per province")] = 6,
    classrooms: Annotated[int, typer.Option(help="Classrooms per school")] = 4,
    students: Annotated[int, typer.Option(help="Students per classroom")] = 20,
    scores: Annotated[int, typer.Option(help="Scores per student")] = 3,
) -> None:
    """Write the simulated students data set (defaults give the shipped `students` example)."""
    from pydantic import ValidationError

    from runner.data.simulate import simulate_students
    from runner.spec.models import SimulateSource

    try:
        params = SimulateSource(seed=seed, provinces=provinces, schools=schools, classrooms=classrooms,
                                students=students, scores=scores)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            _err(f"mixspec simulate: --{e['loc'][0]}: {e['msg']}" if e["loc"] else f"mixspec simulate: {e['msg'].removeprefix('Value error, ')}")
        raise typer.Exit(EXIT_INVALID) from None
    frame = simulate_students(params)
    try:
        frame.to_csv(out, index=False)
    except OSError as exc:
        _err(f"mixspec simulate: cannot write {out}: {exc.strerror}")
        raise typer.Exit(EXIT_INVALID) from None
    _err(f"{out}: {len(frame)} rows")


@app.command()
def init(
    spec: Annotated[Path, typer.Argument(help="Spec file to write (YAML)", show_default=False)],
    data: Annotated[Path | None, typer.Option(help="CSV, Parquet or xlsx file to model")] = None,
    example: Annotated[str | None, typer.Option(help="A shipped data set instead of --data")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
    response: Annotated[str | None, typer.Option(help="Response column (default: a numeric column named "
                                                 "like an outcome, else the first numeric non-id column)")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Grouping column; repeat for several (default: "
                                                    "columns with many repeated levels)")] = None,
) -> None:
    """Write a starter spec from a data file's columns (then edit it and `mixspec run` it)."""
    from runner.data.errors import DataError
    from runner.data.files import granted
    from runner.data.sources import load_frame
    from runner.spec.models import DataSpec
    from runner.spec.scaffold import ScaffoldError, data_for, scaffold_spec

    if (data is None) == (example is None):
        _err("mixspec init: give exactly one of --data FILE or --example NAME")
        raise typer.Exit(EXIT_INVALID)
    if spec.exists() and not force:
        _err(f"mixspec init: {spec} exists; use --force to overwrite it")
        raise typer.Exit(EXIT_INVALID)
    try:
        source = DataSpec(example=example) if data is None else DataSpec(path=str(data.resolve()))
        with granted([data.resolve().parent] if data is not None else ()):  # the person named this file
            frame = load_frame(source, Path.cwd())
    except DataError as exc:
        _err(f"mixspec init: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    try:
        text = scaffold_spec(spec.stem, data_for(data, example, spec), frame, response, group)
    except ScaffoldError as exc:
        _err(f"mixspec init: {exc}")
        raise typer.Exit(EXIT_INVALID) from None
    try:
        spec.write_text(text, encoding="utf-8")
    except OSError as exc:
        _err(f"mixspec init: cannot write {spec}: {exc.strerror}")
        raise typer.Exit(EXIT_INVALID) from None
    _err(f"{spec}: written; check it with `mixspec validate {spec}`")


def main() -> None:
    """Console entry point (`mixspec`, `python -m runner`).

    One BLAS thread unless the user says otherwise: fits limit BLAS to one thread anyway
    (parallelism is --jobs), and on a busy machine OpenBLAS's thread hand-off made the
    small products of `mixspec validate` 0.5 s slower. Set before numpy is imported.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    app()


if __name__ == "__main__":
    main()
