"""`runner.run` and `runner.load`: a spec run in-process, and a results.json read back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.spec.errors import IssueError, SpecError, SpecIssue

if TYPE_CHECKING:
    from runner.results import ResultsRecord


def run_spec_record(spec_path: str | Path, out_dir: str | Path = "reports", **options: Any) -> ResultsRecord:
    """The ResultsRecord of `mixspec run SPEC` (files written as the CLI writes them).

    A spec the CLI would refuse (exit 2) raises its located errors; failed fits and failed
    expectations are in the record, as in results.json.
    """
    from runner.run.api import run_spec
    from runner.run.options import RunOptions

    options.setdefault("quiet", True)
    outcome = run_spec(spec_path, RunOptions.of(out_dir, **options))
    if outcome.record is None:  # exit 2: the CLI's messages, already located
        err = SpecError([])
        err.args = ("\n".join(outcome.errors) or f"{spec_path}: the spec could not be run",)
        raise err
    return outcome.record


def load_record(results_json: str | Path) -> ResultsRecord:
    """A results.json (path, or its text) as a ResultsRecord."""
    from runner.results import ResultsRecord

    text = str(results_json)
    if not text.lstrip().startswith("{"):
        try:
            text = Path(results_json).read_text(encoding="utf-8")
        except OSError as exc:
            raise IssueError([SpecIssue(str(results_json), None, None, "", f"cannot read: {exc.strerror}")]) from None
    return ResultsRecord.model_validate_json(text)
