"""What the Python API costs beyond the engine: `runner.fit` beside the engine path.

For each case of tests/reference/cases.tsv (InstEval only with --cases), in this one
process after a warm-up, interleaved so both see the same machine:

- engine: `fit_design(build_design(parse_formula(formula), df), method)` from the
  DataFrame, what bench_engines.py times as mixspec's fit;
- api: `runner.fit(formula, df, method=method)`: the run's data preparation (factors,
  missing values, lme4's pre-fit checks), the design, the fit task, the FittedModel.

Prints the medians and the difference in milliseconds of CPU time (time.process_time:
on a shared machine wall time mostly measures the other processes; BLAS runs on one
thread during fits, so CPU time is the work done), and writes benchmarks/out/api.md.
Not a test: times depend on the machine.

    .venv/bin/python benchmarks/bench_api.py [--cases a,b] [--repeats 7]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).resolve().parent / "out"


def _frame(dataset: str):  # noqa: ANN202
    import pandas as pd

    if dataset == "InstEval":
        return pd.read_csv(ROOT / "tests" / "data" / "InstEval.csv.gz")
    return pd.read_csv(ROOT / "runner" / "data" / "examples" / f"{dataset}.csv")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    import runner
    from runner.design.build import build_design
    from runner.engines import fit_design
    from runner.formula import parse_formula

    with open(ROOT / "tests" / "reference" / "cases.tsv", newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t"))
    wanted = [c for c in args.cases.split(",") if c]
    cases = [c for c in cases if (c["id"] in wanted if wanted else c["id"] != "insteval_crossed")]
    rows = ["| case | rows | engine CPU ms | runner.fit CPU ms | API overhead ms |",
            "| --- | ---: | ---: | ---: | ---: |"]
    print(rows[0])
    print(rows[1])
    for c in cases:
        df = _frame(c["dataset"])
        formula, method = c["formula"], c["method"]

        def engine() -> object:
            return fit_design(build_design(parse_formula(formula), df), method, formula_text=formula)

        def api() -> object:
            return runner.fit(formula, df, method=method)

        engine(), api()  # warm-up
        t_engine, t_api = [], []
        for _ in range(args.repeats):
            for fn, times in ((engine, t_engine), (api, t_api)):
                t0 = time.process_time()
                fn()
                times.append(time.process_time() - t0)
        e, a = statistics.median(t_engine) * 1e3, statistics.median(t_api) * 1e3
        line = f"| {c['id']} | {len(df):,} | {e:.1f} | {a:.1f} | {a - e:+.1f} |"
        rows.append(line)
        print(line, flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "api.md").write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
