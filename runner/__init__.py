"""mixspec: declarative mixed-effects regression, checked against lme4.

The Python API (`runner.fit`, `runner.compare`, `runner.run`, `runner.load`,
`runner.FittedModel`) is exported lazily (PEP 562), so `import runner` and the CLI's
start stay fast: nothing numeric is imported until one of them is used.

`runner.run` and `runner.compare` are also the names of subpackages (the orchestration
and the comparison code). Both stay modules, so `runner.run.api` and `runner.compare.lrt`
work as before, and they are made callable: `runner.run("spec.yaml")` and
`runner.compare(m1, m2)` call the API. Their `__init__` files are empty, so this costs
nothing at import time.
"""

from __future__ import annotations

import types
from typing import Any

__version__ = "0.1.0"

_API = ("fit", "load", "FittedModel")
__all__ = ["FittedModel", "__version__", "compare", "fit", "load", "run"]


class _RunPackage(types.ModuleType):
    def __call__(self, spec_path: Any, out_dir: Any = "reports", **options: Any) -> Any:
        """Run a spec in-process as `mixspec run` does; return its ResultsRecord."""
        from runner.api import run

        return run(spec_path, out_dir, **options)


class _ComparePackage(types.ModuleType):
    def __call__(self, *models: Any, criterion: str = "AIC", **named: Any) -> Any:
        """Rank fitted models (ML fits) and test nested pairs by likelihood ratio."""
        from runner.api import compare

        return compare(*models, criterion=criterion, **named)


def _make_callable() -> None:
    from runner import compare as compare_pkg
    from runner import run as run_pkg

    run_pkg.__class__ = _RunPackage
    compare_pkg.__class__ = _ComparePackage


_make_callable()


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module("runner.api"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
