"""mixspec: declarative mixed-effects regression, checked against lme4.

The Python API is `runner.fit`, `runner.compare`, `runner.run`, `runner.load` and
`runner.FittedModel`, exported lazily (PEP 562) so `import runner` and the CLI's start
stay fast: nothing numeric is imported until one of them is used.

`fit`, `run` and `compare` are also the names of modules of this package (the Fit
record, the orchestration, the comparison code), which Python binds on the package
when they are imported. They stay those modules, so `from runner.fit import Fit` and
`runner.run.api` work as before, and are made callable: `runner.fit(formula, data)`,
`runner.run("spec.yaml")` and `runner.compare(m1, m2)` call the API in `runner.api`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

__all__ = ["FittedModel", "__version__", "compare", "fit", "load", "run"]


class _FitModule(types.ModuleType):
    def __call__(self, formula: str, data: Any, **options: Any) -> Any:
        """runner.fit(formula, data, ...): see runner.api.fit."""
        return importlib.import_module("runner.api").fit(formula, data, **options)


class _RunPackage(types.ModuleType):
    def __call__(self, spec_path: Any, out_dir: Any = "reports", **options: Any) -> Any:
        """runner.run(spec_path): see runner.api.run."""
        return importlib.import_module("runner.api").run(spec_path, out_dir, **options)


class _ComparePackage(types.ModuleType):
    def __call__(self, *models: Any, **options: Any) -> Any:
        """runner.compare(m1, m2, ...): see runner.api.compare."""
        return importlib.import_module("runner.api").compare(*models, **options)


_CALLABLE = {"fit": _FitModule, "run": _RunPackage, "compare": _ComparePackage}


class _Package(types.ModuleType):
    """This package's module type: a submodule named fit/run/compare becomes callable the
    moment the import system binds it here."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value.__class__ = _CALLABLE[name]
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
for _name in _CALLABLE:  # already imported (a reload): make them callable too
    _mod = sys.modules.get(f"{__name__}.{_name}")
    if _mod is not None:
        setattr(sys.modules[__name__], _name, _mod)


def __getattr__(name: str) -> Any:
    if name in _CALLABLE:
        return importlib.import_module(f"{__name__}.{name}")  # binds (and so makes callable) the module
    if name in ("load", "FittedModel"):
        value = getattr(importlib.import_module("runner.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
