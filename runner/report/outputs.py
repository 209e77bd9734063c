"""The outputs stage of a run: one function writes results.json, summary.md and index.html.

Files are written to a temporary name in the same folder and renamed, so a killed run
never leaves half a file. When a write fails (a full disk), every output of an earlier
run that this one did not replace is removed: nothing left in the folder may pass for
this run's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.atomic import write_atomic_bytes
from runner.report.api import PAGE_NAME, render_spec_report
from runner.report.markdown import summary_markdown
from runner.results import RESULTS_NAME, ResultsRecord, record_json

SUMMARY_NAME = "summary.md"


def write_results(record: ResultsRecord, spec_out: Path) -> Path:
    return write_atomic_bytes(spec_out / RESULTS_NAME, record_json(record).encode("utf-8"))


def write_summary(record: ResultsRecord, spec_out: Path) -> Path:
    """summary.md, also appended to GitHub's job summary when run in Actions."""
    text = summary_markdown(record)
    path = write_atomic_bytes(spec_out / SUMMARY_NAME, text.encode("utf-8"))
    step = os.environ.get("GITHUB_STEP_SUMMARY")
    if step:
        try:
            with open(step, "a", encoding="utf-8") as fh:
                fh.write(text if text.endswith("\n") else text + "\n")
        except OSError as exc:
            print(f"mixspec: could not append to GITHUB_STEP_SUMMARY ({exc})", file=sys.stderr)
    return path


def write_outputs(record: ResultsRecord, out: Path, page: bool = True) -> tuple[Path | None, str | None]:
    """results.json, summary.md and (with `page`) index.html under `out`: the results path and,
    when a write failed, why (the run then fails)."""
    written: list[str] = []
    results_path: Path | None = None
    try:
        results_path = write_results(record, out)
        written.append(RESULTS_NAME)
        write_summary(record, out)
        written.append(SUMMARY_NAME)
        if page:
            render_spec_report(results_path)
            written.append(PAGE_NAME)
    except Exception as exc:  # OSError (ENOSPC, EROFS, EACCES) or a bug in rendering: the run fails either way
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        failed = (RESULTS_NAME, SUMMARY_NAME, "HTML report")[len(written)]
        removed = []
        for name in (RESULTS_NAME, SUMMARY_NAME, PAGE_NAME):
            if name not in written and (out / name).exists():
                try:
                    (out / name).unlink()
                    removed.append(name)
                except OSError:
                    pass
        note = f"; removed the earlier run's {', '.join(removed)}" if removed else ""
        return results_path, f"{failed} not written: {why}{note}"
    return results_path, None
