"""A few lines per spec on the terminal after a run: the answer without opening a file.

Plain text (CI logs keep it as it is): the ranking, the likelihood-ratio tests, failed
models and expectations. Everything else is in results.json, summary.md and the page.
"""

from __future__ import annotations

import re

from runner.report.format import fmt_fixed, fmt_p, fmt_weight
from runner.results import ResultsRecord

# C0 controls but tab and newline, DEL, C1 controls (ESC starts terminal escape sequences,
# CR rewrites a line), and bidirectional overrides that make text read differently
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# what CI runners read as commands at the start of a line (after blanks): GitHub Actions'
# `::error::` / `::add-mask::` and the older `##[command]`
_WORKFLOW_COMMAND = re.compile(r"^(\s*)(::|##\[)")


def terminal_safe(text: object) -> str:
    """`text` fit for a terminal or CI log: control characters removed, tabs as spaces, and
    every line that a CI runner would take as a workflow command escaped with a backslash.

    Names, levels and messages come from specs and data files (untrusted); this is applied
    where lines are printed, so results.json keeps the text as it is."""
    lines = _CONTROL.sub("", str(text).replace("\r\n", "\n")).replace("\t", " ").split("\n")
    return "\n".join(_WORKFLOW_COMMAND.sub(r"\1\\\2", line) for line in lines)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def summary_lines(record: ResultsRecord, page: str | None = None) -> list[str]:
    """What `mixspec run` prints for one spec (no colour, no width assumptions)."""
    ok = [n for n, m in record.models.items() if m.status == "ok"]
    failed = [n for n, m in record.models.items() if m.status != "ok"]
    unconverged = [n for n in ok if record.models[n].converged is False]
    lines = [f"{record.spec.name}: {len(ok)} of {len(record.models)} models fitted"
             + (f", {len(unconverged)} did not converge" if unconverged else "")
             + (f" · report {page}" if page else "")]
    for group in record.ranking:
        if not group.rows:
            continue
        head = group.rows[0]
        source = "ML refits" if any(r.fit_used == "ml_refit" for r in group.rows) else head.method
        rows = [["model", head.criterion, f"Δ{head.criterion}", "weight", "npar"]]
        rows += [[("* " if r.best else "  ") + r.model + ("" if r.converged else " (did not converge)"), fmt_fixed(r.value), fmt_fixed(r.delta), fmt_weight(r.weight),
                  str(r.npar)] for r in group.rows]
        lines.append(f"  ranked by {head.criterion} ({source}):")
        lines += _table(rows, right={1, 2, 3, 4})
        if group.note:
            lines.append(f"  note: {group.note}")
    for t in record.tests:
        boundary = f", boundary p {fmt_p(t.p_value_boundary)}" if t.p_value_boundary is not None else ""
        lines.append(f"  LRT {t.small} vs {t.large}: chi2 {t.chisq:.3f}, df {t.df}, p {fmt_p(t.p_value)}{boundary}")
    for name in failed:
        lines.append(f"  FAILED {name}: {record.models[name].error or 'no message'}")
    for name in unconverged:
        conv = record.models[name].convergence
        lines.append(f"  {name} did not converge ({conv.message if conv is not None and conv.message else 'no reason given'})")
    for e in record.expectations:
        if not e.passed:
            lines.append(f"  expectation FAILED {e.text}: {e.detail}")
    passed = sum(e.passed for e in record.expectations)
    if record.expectations:
        lines.append(f"  expectations: {passed} of {len(record.expectations)} pass")
    return [terminal_safe(line) for line in lines]
