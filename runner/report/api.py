"""Public entry points of the report layer: files in, files out, never a refit.

`mixspec report RESULTS.json` and `mixspec run` call these; a Python user can too.
Writes are atomic (temp file in the same folder, then os.replace), so a reader never
sees half a page and an interrupted render leaves the old page in place.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from runner.atomic import write_atomic_text
from runner.report.html import IndexEntry, render_index_page, render_spec_page
from runner.report.views import best_models, status_of
from runner.results import RESULTS_NAME, ResultsRecord

PAGE_NAME = "index.html"


def load_results(results_path: Path) -> ResultsRecord:
    """Parse and validate a results.json (pydantic raises on a record that breaks the contract)."""
    return ResultsRecord.model_validate_json(Path(results_path).read_bytes())


def render_spec_report(results_path: Path) -> Path:
    """Render `<dir of results.json>/index.html` from results.json and its fits/ sidecars."""
    results_path = Path(results_path)
    record = load_results(results_path)
    html = render_spec_page(record, results_path.parent)
    return write_atomic_text(results_path.parent / PAGE_NAME, html)


def render_index(out_dir: Path) -> Path:
    """Render `<out_dir>/index.html` listing every `<out_dir>/<spec>/results.json`."""
    out_dir = Path(out_dir)
    entries: list[IndexEntry] = []
    problems: list[str] = []
    for results in sorted(out_dir.glob(f"*/{RESULTS_NAME}")):
        folder = results.parent.name
        try:
            record = load_results(results)
        except Exception as exc:  # one broken record must not hide the others
            problems.append(f"{folder}/{RESULTS_NAME} unreadable: {str(exc).splitlines()[0]}")
            continue
        status, status_text = status_of(record)
        entries.append(IndexEntry(
            name=record.spec.name,
            title=record.spec.report.title or record.spec.title or "",
            href=f"{quote(folder)}/{PAGE_NAME}",
            best=", ".join(best_models(record)),
            status=status,
            status_text=status_text,
            models=len(record.models),
            started=record.run.started,
        ))
    return write_atomic_text(out_dir / PAGE_NAME, render_index_page(entries, problems))
