"""The GLMM reference cases as mixspec designs (shared by tests and the benchmark).

Each lme4 formula of tests/reference_glmm/*.json is written here in mixspec's terms on
a prepared frame: proportions with `weights`, cbind() and factor responses through
runner.design.glmm_response (what the design layer will call), offsets as columns.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from runner.design.build import build_design
from runner.design.model import Design
from runner.design.glmm_response import from_cbind, from_factor
from runner.formula import parse_formula

ROOT = Path(__file__).parent / "reference_glmm"

# id -> (dataset, mixspec formula, weights column, offset column, family, link, nagq)
CASES: dict[str, tuple[str, str, str | None, str | None, str, str | None, int]] = {
    "cbpp_prop": ("cbpp", "prop ~ period + (1|herd)", "size", None, "binomial", None, 1),
    "cbpp_agq": ("cbpp", "prop ~ period + (1|herd)", "size", None, "binomial", None, 25),
    "grouse_pois": ("grouseticks", "TICKS ~ YEAR + HEIGHT + (1|BROOD) + (1|LOCATION)", None, None, "poisson", None, 1),
    "bin_slopes": ("binary", "y ~ x + (x|subject)", None, None, "binomial", None, 1),
    "bin_crossed": ("binary", "y ~ x + (1|subject) + (1|item)", None, None, "binomial", None, 1),
    "bin_factor": ("binary", "answer01 ~ x + (1|subject)", None, None, "binomial", None, 1),
    "bin_agq": ("binary", "y ~ x + (1|subject)", None, None, "binomial", None, 7),
    "cbpp_cbind": ("cbpp", "cbind_prop ~ period + (1|herd)", "cbind_n", None, "binomial", None, 1),
    "cbpp_probit": ("cbpp", "cbind_prop ~ period + (1|herd)", "cbind_n", None, "binomial", "probit", 1),
    "cbpp_cloglog": ("cbpp", "cbind_prop ~ period + (1|herd)", "cbind_n", None, "binomial", "cloglog", 1),
    "cbpp_nagq0": ("cbpp", "cbind_prop ~ period + (1|herd)", "cbind_n", None, "binomial", None, 0),
    "cbpp_cloglog_agq": ("cbpp", "cbind_prop ~ period + (1|herd)", "cbind_n", None, "binomial", "cloglog", 12),
    "pois_offset": ("counts", "y ~ x + (1|site)", None, "log_exposure", "poisson", None, 1),
    "pois_agq": ("counts", "y ~ x + (1|site)", None, "log_exposure", "poisson", None, 9),
    "grouse_slope": ("grouseticks", "TICKS ~ YEAR + cHEIGHT + (1|BROOD) + (1|LOCATION)", None, None, "poisson",
                     None, 1),
}


@cache
def frame(dataset: str) -> pd.DataFrame:
    text = {"cbpp": ["herd", "period"], "grouseticks": ["BROOD", "YEAR", "LOCATION", "INDEX"],
            "binary": ["subject", "item", "answer"], "counts": ["site"]}[dataset]
    d = pd.read_csv(ROOT / "data" / f"{dataset}.csv", dtype={c: str for c in text})
    if dataset == "cbpp":
        d["prop"] = d["incidence"] / d["size"]
        d["cbind_prop"], d["cbind_n"] = from_cbind(d["incidence"], d["size"] - d["incidence"])
    if dataset == "binary":
        d["answer01"], _ = from_factor(d["answer"])
    if dataset == "counts":
        d["log_exposure"] = np.log(d["exposure"])
    return d


def design(case_id: str) -> Design:
    dataset, formula, weights, offset, *_ = CASES[case_id]
    return build_design(parse_formula(formula), frame(dataset), weights=weights, offset=offset)


@cache
def references() -> dict[str, dict]:
    out = dict(json.loads((ROOT / "glmm.json").read_text()))
    out.update(json.loads((ROOT / "extra.json").read_text()))
    return out
