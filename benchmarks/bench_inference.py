"""Inference cost beside the fit: Satterthwaite df + type III F + R2 on InstEval (73,421 rows,
three crossed factors), the issue's scale check. Prints seconds and the peak RSS.

    .venv/bin/python benchmarks/bench_inference.py
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pandas as pd

from runner.design.build import build_design
from runner.engines import fit_design
from runner.formula import parse_formula
from runner.inference.apply import InferenceSettings, apply_inference

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"


def main() -> None:
    data = pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    design = build_design(parse_formula(FORMULA), data)
    t0 = time.perf_counter()
    fit = fit_design(design, "REML", formula_text=FORMULA)
    t1 = time.perf_counter()
    out = apply_inference(design, fit, InferenceSettings())
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"InstEval {design.nobs:,} rows: fit {t1 - t0:.2f} s, Satterthwaite + type III + R2 {t2 - t1:.2f} s "
          f"({(t2 - t1) / (t1 - t0):.1f}x the fit), peak RSS {peak:.0f} MB")
    for fe in out.fixed_effects:
        print(f"  {fe.lme4_name}: df {fe.df:.3f}, p {fe.p_value:.3g}")


if __name__ == "__main__":
    main()
