"""Progress of a run: a rich bar on a terminal, plain lines in CI logs, nothing when quiet.

Everything goes to stderr, so `--json` output on stdout stays clean.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID


class Progress:
    """`start(total)`, `done(label, ok, seconds, cached)` per task, `close()`."""

    def __init__(self, title: str, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.title = title
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None
        self.count = 0
        self.total = 0

    def start(self, total: int) -> None:
        self.total = total
        if self.quiet or total == 0:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(file=self.stream), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(f"fitting {self.title}", total=total)
            return
        print(f"{self.title}: fitting {total} task(s)", file=self.stream, flush=True)

    def done(self, label: str, ok: bool, seconds: float, cached: bool) -> None:
        self.count += 1
        if self.quiet:
            return
        state = "cached" if cached else ("ok" if ok else "FAILED")
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, advance=1, description=f"{self.title}: {label} {state}")
            return
        print(f"[{self.count}/{self.total}] {self.title}: {label} {state} ({seconds:.2f} s)", file=self.stream,
              flush=True)

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
