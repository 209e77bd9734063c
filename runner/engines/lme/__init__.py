"""The native `lme` engine (lme4's criterion, MixedModels.jl's blocked Cholesky)."""

from runner.engines.lme.engine import LmeEngine

__all__ = ["LmeEngine"]
