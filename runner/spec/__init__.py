"""The spec layer: YAML file -> validated, resolved models, with located errors."""

from runner.spec.errors import IssueError, SpecError, SpecIssue
from runner.spec.load import LoadedSpec, ResolvedModel, load_spec
from runner.spec.models import Spec

__all__ = ["IssueError", "LoadedSpec", "ResolvedModel", "Spec", "SpecError", "SpecIssue", "load_spec"]
