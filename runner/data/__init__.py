"""The data layer: sources -> DataFrame (+ canonical sha256), then the rows each model uses."""

from runner.data.errors import DataError
from runner.data.hashing import data_sha256
from runner.data.prepare import FactorInfo, PreparedData, prepare
from runner.data.sources import load_frame

__all__ = ["DataError", "FactorInfo", "PreparedData", "data_sha256", "load_frame", "prepare"]
