"""The base of every spec section model (unknown keys are errors) and the safe-name rule.

Model, variant and predict names become file names in the report folder, so they are
checked here once for every section that names something.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                     *(f"lpt{i}" for i in range(1, 10))}


def check_safe_name(value: str, what: str = "name") -> str:
    """Reject names that would be unsafe as file names (they become report paths).

    Allowed: letters, digits, `_`, `-`, `.`, starting with a letter or digit, no `..`.
    """
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} is not a safe file name: use letters, digits, '_', '-' or '.', "
            "start with a letter or digit, no path separators or '..' (at most 100 characters)"
        )
    if value.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise ValueError(f"{what} {value!r} is a reserved device name on Windows")
    return value


def safe_name(text: str) -> str:
    """Turn any text (a file stem) into a safe name by replacing unsafe characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:100] or "spec"
    if cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        cleaned = f"spec_{cleaned}"
    return cleaned


class Strict(BaseModel):
    """Base: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
