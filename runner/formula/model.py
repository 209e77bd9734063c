"""The parsed model: what every layer after `formula/` works from.

A `ModelFormula` is plain, hashable data. Two spellings of one model (lme4 text,
glmmTMB's covariance syntax, the structured YAML form) parse to equal objects, so
variants, caching and nesting checks compare models by value, not by text.
"""

from __future__ import annotations

from dataclasses import dataclass
from runner.covariance import Covariance


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term `(lhs | group)`.

    The lhs columns share one covariance template, repeated for every level of the
    grouping factor. `group` lists the factors whose interaction is the grouping
    factor, in lme4's naming order: `(1|batch/cask)` gives the terms with group
    ("batch",) and ("cask", "batch") (lme4 names the latter `cask:batch`).
    """

    group: tuple[str, ...]
    intercept: bool = True
    terms: tuple[str, ...] = ()  # non-intercept lhs terms as R deparses them, e.g. ("age", "I(age^2)")
    covariance: Covariance = "unstructured"
    double_bar: bool = False  # produced by expanding `(x||g)`; kept for rendering and warnings
    # lme4's name for the grouping factor when it is not ":".join(group): the
    # expansion of `(1|a/b/c)` names its innermost term `c:(b:a)`; None otherwise.
    label: str | None = None

    @property
    def group_name(self) -> str:
        """The grouping factor's name as lme4 prints it (`cask:batch`, `c:(b:a)`; a lone
        backticked name without its backticks, as lme4 names `(1 | `sub ject`)` "sub ject")."""
        if self.label is not None and len(self.group) == 1 and self.label == f"`{self.group[0]}`":
            return self.group[0]
        return self.label if self.label is not None else ":".join(self.group)

    @property
    def lhs(self) -> str:
        """The lhs as formula text, e.g. `1 + age` or `0 + f`."""
        parts = ["1" if self.intercept else "0", *self.terms]
        return " + ".join(parts)


@dataclass(frozen=True)
class ModelFormula:
    """`response ~ fixed + random` with the fixed part kept as R expressions (deparsed text).

    `fixed_terms` are the top-level `+`-separated terms exactly as written
    (`a*b`, `C(x)`, `I(x**2)` stay whole), so variants can add and drop them.
    """

    response: str
    fixed_terms: tuple[str, ...] = ()
    intercept: bool = True
    random: tuple[RandomTerm, ...] = ()

    @property
    def fixed_rhs(self) -> str:
        """The fixed part as formula text (`1 + age + sex`)."""
        return " + ".join(["1" if self.intercept else "0", *self.fixed_terms])
