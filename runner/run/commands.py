"""The `run` and `diff` commands as plain functions returning exit codes.

`runner.cli` (typer) wraps these; a Python user can call them too. Messages go to
stderr; `--json` prints results records to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runner.results import record_json
from runner.run.api import exit_code, run_specs
from runner.run.console import summary_lines, terminal_safe
from runner.run.diff import diff_files
from runner.run.options import EXIT_INVALID, RunOptions


def run_command(specs: list[str | Path], options: RunOptions | None = None, json_out: bool = False) -> int:
    """Run specs; 0 ok, 1 a model or an expectation failed, 2 an invalid spec or data."""
    from runner.report.api import PAGE_NAME

    options = options or RunOptions()
    quiet = options.quiet or json_out
    outcomes = run_specs(list(specs), options.but(quiet=quiet))
    if json_out:
        records = [o.record for o in outcomes if o.record is not None]
        if len(records) == 1:
            sys.stdout.write(record_json(records[0]))
        elif records:
            sys.stdout.write("[\n" + ",\n".join(record_json(r).rstrip("\n") for r in records) + "\n]\n")
    if quiet:  # quiet silences progress and summaries, never the reasons for a failure
        for o in outcomes:
            for e in o.errors:  # located spec errors already start with the file
                print(terminal_safe(e if e.startswith(str(o.spec_path)) else f"mixspec: {o.spec_path}: {e}"),
                      file=sys.stderr)
    else:
        for o in outcomes:
            if o.results_path is not None:
                state = "ok" if o.exit_code == 0 else "FAILED"
                if o.record is not None:
                    page = o.results_path.parent / PAGE_NAME
                    print("\n".join(summary_lines(o.record, str(page) if page.exists() else None)),
                          file=sys.stderr)
                print(f"{o.results_path} ({state})", file=sys.stderr)
    return exit_code(outcomes)


def diff_command(old: str | Path, new: str | Path, rtol: float = 1e-6) -> int:
    """Print what changed between two results.json files; 1 when anything did."""
    try:
        report = diff_files(old, new, rtol)
    except (OSError, ValueError) as exc:
        print(f"mixspec diff: {exc}", file=sys.stderr)
        return EXIT_INVALID
    sys.stdout.write(terminal_safe(report.text()))
    return report.exit_code
