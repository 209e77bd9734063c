"""The one error a formula can raise, pointing at the offending character.

Analysts write formulas by hand in YAML; a message with a caret under the
problem is what they need, never a traceback from a parser's internals.
"""

from __future__ import annotations


class FormulaError(ValueError):
    """A malformed formula: `message`, the formula `text`, and the 0-based `position`.

    str() shows the message, then the formula with a `^` under `position`
    (which may be `len(text)` when something is missing at the end).
    """

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(message, text, position)
        self.message = message
        self.text = text
        self.position = max(0, min(position, len(text)))

    def __str__(self) -> str:
        shown = "".join(" " if c in "\r\n\t\f\v" else c for c in self.text)
        return f"{self.message}\n  {shown}\n  {' ' * self.position}^"
