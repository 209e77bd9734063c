"""The structured YAML form of a model -> ModelFormula.

Analysts who avoid formula syntax list the random terms as mappings:
`{group: classroom, within: school, terms: [1, age], covariance: diagonal}`.
This is built into formula text and parsed, so it yields exactly the ModelFormula
of the equivalent lme4 text (`diag(age | classroom:school)`), and any mistake gets
the same caret message as a written formula.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.covariance import COVARIANCES, FUNCTION_OF_COVARIANCE
from runner.formula.model import ModelFormula
from runner.formula.expand import GroupExpr, deparse_group
from runner.formula.parser import parse_formula, parse_group_chain

_KEYS = ("group", "within", "terms", "covariance")


def _factor_names(value: Any, where: str) -> list[GroupExpr]:
    """`school`, `province/school` or [province, school] -> outer-to-inner group expressions."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, (bytes, Mapping)) or not items:
        raise ValueError(f"{where} must be a factor name, 'outer/inner', or a list of names; got {value!r}")
    parts: list[GroupExpr] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{where} must name grouping factors; got {item!r}")
        if any(ch in item for ch in "/:()`"):
            parts.extend(parse_group_chain(item))
        else:
            parts.append(item.strip())  # a plain column name, spaces allowed: no quoting in YAML
    return parts


def _lhs(terms: Any, where: str) -> str:
    """[1, age] -> `1 + age`; [age] -> `0 + age` (lme4: no 1 means no intercept)."""
    if terms is None:
        return "1"
    if isinstance(terms, (str, int)) and not isinstance(terms, bool):
        terms = [terms]
    if not isinstance(terms, Sequence) or not terms:
        raise ValueError(f"{where}.terms must be a non-empty list such as [1, age]; got {terms!r}")
    texts = []
    for t in terms:
        if isinstance(t, bool) or not isinstance(t, (str, int)) or not str(t).strip():
            raise ValueError(f"{where}.terms items must be 1, 0 or variable expressions; got {t!r}")
        texts.append(str(t).strip())
    if not any(t in ("1", "0", "-1") for t in texts):
        texts.insert(0, "0")
    return " + ".join(texts)


def random_text(item: Mapping[str, Any], where: str = "random") -> str:
    """One structured random item as glmmTMB/lme4 term text, e.g. `diag(1 + age | classroom:school)`."""
    if not isinstance(item, Mapping):
        raise ValueError(
            f"{where} must be a mapping with 'group' (and optional within, terms, covariance); got {item!r}"
        )
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed: {', '.join(_KEYS)}")
    if "group" not in item:
        raise ValueError(f"{where} needs 'group', the grouping factor")
    group_parts = _factor_names(item["group"], f"{where}.group")
    if len(group_parts) != 1:
        raise ValueError(f"{where}.group must be one factor; write the enclosing ones in 'within'")
    group = group_parts[0]
    if item.get("within") is not None:
        chain = _factor_names(item["within"], f"{where}.within")
        outer = chain[0]
        for part in chain[1:]:
            outer = (part, outer)
        group = (group, outer)
    covariance = item.get("covariance") or "unstructured"
    if covariance not in COVARIANCES:
        raise ValueError(f"{where}.covariance must be one of {', '.join(COVARIANCES)}; got {covariance!r}")
    text = f"{_lhs(item.get('terms'), where)} | {deparse_group(group)}"
    return f"({text})" if covariance == "unstructured" else f"{FUNCTION_OF_COVARIANCE[covariance]}({text})"


def structured_formula(
    response: str, fixed: list[str], random: list[dict], intercept: bool = True
) -> ModelFormula:
    """Build the ModelFormula of the structured form; equal to parsing the same model's text."""
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"response must be a column name or expression; got {response!r}")
    fixed = list(fixed or [])
    for f in fixed:
        if not isinstance(f, str) or not f.strip():
            raise ValueError(f"fixed terms must be text such as 'age' or 'C(sex)'; got {f!r}")
    terms = ["1" if intercept else "0", *fixed]
    terms += [random_text(item, f"random[{i}]") for i, item in enumerate(random or [])]
    return parse_formula(f"{response} ~ {' + '.join(terms)}")
