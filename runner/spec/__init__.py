"""The spec layer: YAML file -> validated, resolved models, with located errors.

Names are imported on first use (PEP 562), so `runner.spec.errors` or `runner.spec.models`
does not import the loader and its formula parser: `mixspec schema` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.spec.errors import IssueError, SpecError, SpecIssue
    from runner.spec.load import LoadedSpec, ResolvedModel, load_spec
    from runner.spec.models import Spec

_HOME = {"IssueError": "errors", "SpecError": "errors", "SpecIssue": "errors", "LoadedSpec": "load",
         "ResolvedModel": "load", "load_spec": "load", "Spec": "models"}

__all__ = ["IssueError", "LoadedSpec", "ResolvedModel", "Spec", "SpecError", "SpecIssue", "load_spec"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'runner.spec' has no attribute {name!r}")
    return getattr(importlib.import_module(f"runner.spec.{_HOME[name]}"), name)
