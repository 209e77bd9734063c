"""Located problems in a spec or its data, collected and reported together.

Every check before fitting appends a `SpecIssue` instead of raising at once, so a
user sees all mistakes of a spec in one run, each as `file:line:col: path: message`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class SpecIssue:
    """One problem, located in the spec file where possible (line/col 1-based)."""

    file: str | None
    line: int | None
    col: int | None
    path: str  # dotted key path in the spec, e.g. "models.slopes.formula"
    message: str
    severity: Severity = "error"
    offset: int | None = None  # character inside the scalar at `path` (for locating only)

    def located(self, file: str | None, line: int | None, col: int | None) -> SpecIssue:
        """A copy with a position filled in (used once the spec's node tree is known)."""
        return replace(self, file=file, line=line, col=col)

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        prefix = "" if self.severity == "error" else f"{self.severity}: "
        path = f" {self.path}:" if self.path else ""
        return f"{where}:{path} {prefix}{self.message}"


class IssueError(ValueError):
    """Base of errors that carry a list of located issues (the CLI prints them all)."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

    @property
    def errors(self) -> list[SpecIssue]:
        return [i for i in self.issues if i.severity == "error"]


class SpecError(IssueError):
    """The spec file is not valid: unknown keys, bad values, formula errors, bad references.

    `partial` is what could still be checked against the data (a valid data section and
    the models that resolved), so validate can list column errors beside the spec's own.
    """

    def __init__(self, issues: list[SpecIssue], partial: Any = None):
        super().__init__(issues)
        self.partial = partial  # runner.spec.load.LoadedSpec | None


def ordered_issues(issues: list[SpecIssue]) -> list[SpecIssue]:
    """File order (messages read top to bottom like the spec), each problem once."""
    ordered = sorted(issues, key=lambda i: (i.line if i.line is not None else 10**9, i.col or 0))
    seen: set[tuple[Any, ...]] = set()
    out = []
    for i in ordered:
        key = (i.line, i.col, i.path, i.message)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out
