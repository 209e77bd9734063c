"""How one `mixspec run` is carried out, and what it exits with.

`RunOptions` is built once (by the CLI, or by a Python caller) and passed whole through
the run path; nothing below re-lists the options. Importing this module is cheap: the CLI
reads the exit codes before it imports anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

ExecutorName = Literal["local", "processes", "dask"]
EXECUTORS: tuple[ExecutorName, ...] = ("local", "processes", "dask")



def executor_named(name: str) -> ExecutorName:
    """The executor called `name`; ValueError with the valid names otherwise."""
    for known in EXECUTORS:
        if known == name:
            return known
    raise ValueError(f"--executor must be local, processes or dask, not {name!r}")


EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2  # 1: a fit or an expectation failed; 2: an invalid spec or data


@dataclass(frozen=True)
class RunOptions:
    """Everything about a run that is not in the spec."""

    out: Path = field(default_factory=lambda: Path("reports"))  # one folder per spec below it
    jobs: int | None = None  # parallel fits; None: the executor's default
    use_cache: bool = True
    verify: bool = False  # also fit with statsmodels and compare
    executor: ExecutorName = "local"
    scheduler: str | None = None  # Dask scheduler address
    quiet: bool = False  # no progress or summaries (never silences why a run failed)
    cache_dir: Path | None = None
    report: bool = True  # write index.html pages (results.json and summary.md always)
    max_memory: str | None = None  # "2GB", "off"; None: 80% of RAM or the cgroup's limit

    @classmethod
    def of(cls, out_dir: str | Path | None = None, **options: Any) -> RunOptions:
        """Options from keywords (the Python API's spelling: `use_cache`, `out_dir` for `out`)."""
        if out_dir is not None:
            options["out"] = out_dir
        for key in ("out", "cache_dir"):
            if options.get(key) is not None:
                options[key] = Path(options[key])
        return cls(**options)

    def but(self, **changes: Any) -> RunOptions:
        """A copy with some options changed."""
        return replace(self, **changes)
