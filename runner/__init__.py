"""mixspec: declarative mixed-effects regression, checked against lme4."""

__version__ = "0.1.0"
