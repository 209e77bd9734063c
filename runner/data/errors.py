"""Problems found in the data before fitting, in the same located format as spec errors."""

from __future__ import annotations

from runner.spec.errors import IssueError, SpecIssue

__all__ = ["DataError", "SpecIssue"]


class DataError(IssueError):
    """The data cannot serve the spec: a missing file or column, a bad value, a pin mismatch."""
