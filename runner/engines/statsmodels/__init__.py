"""statsmodels' MixedLM as a second engine, for models it can express exactly."""

from runner.engines.statsmodels.engine import StatsmodelsEngine
from runner.engines.statsmodels.errors import InexpressibleModel
from runner.engines.statsmodels.translate import DEFAULT_MAX_BYTES, translate

__all__ = ["DEFAULT_MAX_BYTES", "InexpressibleModel", "StatsmodelsEngine", "translate"]
