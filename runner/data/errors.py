"""Problems found in the data before fitting, in the same located format as spec errors."""

from __future__ import annotations

from typing import Any

from runner.spec.errors import IssueError, SpecIssue

__all__ = ["DataError", "SpecIssue"]


class DataError(IssueError):
    """The data cannot serve the spec: a missing file or column, a bad value, a pin mismatch.

    `partial` is the prepared data when the problems are in some models only, so validate
    can still build the other models' designs and list their problems in the same run.
    """

    def __init__(self, issues: list[SpecIssue], partial: Any = None):
        super().__init__(issues)
        self.partial = partial  # runner.data.prepare.PreparedData | None
