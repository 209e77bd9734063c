"""Time GLMM fits: mixspec's lme engine beside lme4's glmer and mixedlm's glmer.

Cases: the shared GLMM references (cbpp proportion, Laplace and nAGQ = 25; grouseticks
Poisson with crossed BROOD and LOCATION), lme4's VerbAgg (7,584 0/1 answers, persons
crossed with items; when Rscript can write it) and a simulated crossed binomial model of
7,500 rows (300 subjects x 25 items, a continuous x; simulated as
../shared/tools/make_students.py simulates its data: fixed seed, written to a CSV).
mixspec: design + fit from the DataFrame, in this process, one warm-up then the median
of --repeats; glmer: timed inside R (Rscript, when present), same protocol; mixedlm
(PyPI, when importable) likewise. Not a test: prints a Markdown table and writes
benchmarks/out/glmm.md, and out/glmm.json for `make bench`'s closing table (benchmarks/run.py).

    .venv/bin/python benchmarks/bench_glmm.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
OUT = Path(__file__).resolve().parent / "out"

from glmm_cases import CASES, ROOT as REF, design, frame  # noqa: E402

from runner.design.build import build_design  # noqa: E402
from runner.engines.lme.glmm_engine import fit_glmm  # noqa: E402
from runner.design.glmm_response import from_factor  # noqa: E402
from runner.formula import parse_formula  # noqa: E402

# id -> (csv, lme4 formula, family, nAGQ, weights)
R_CASES = {
    "cbpp_prop": ("cbpp", "incidence / size ~ factor(period) + (1 | herd)", "binomial", 1, "size"),
    "cbpp_agq": ("cbpp", "incidence / size ~ factor(period) + (1 | herd)", "binomial", 25, "size"),
    "grouse_pois": ("grouseticks", "TICKS ~ factor(YEAR) + HEIGHT + (1 | BROOD) + (1 | LOCATION)", "poisson", 1, None),
    "sim_crossed": ("sim_crossed", "y ~ x + (1 | subject) + (1 | item)", "binomial", 1, None),
    # lme4's VerbAgg (written by R when Rscript exists): 316 persons crossed with 24 items, 0/1
    "verbagg": ("VerbAgg", "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial", 1, None),
}
VERBAGG_TEXT = {c: str for c in ("id", "item", "Gender", "btype", "situ", "r2")}


def simulate(path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(20261201)
    ns, ni = 300, 25
    bs, bi = rng.normal(0, 1.0, ns), rng.normal(0, 0.6, ni)
    s = np.repeat(np.arange(ns), ni)
    i = np.tile(np.arange(ni), ns)
    x = np.round(rng.normal(0, 1, ns * ni), 3)
    eta = -0.3 + 0.7 * x + bs[s] + bi[i]
    y = (rng.random(ns * ni) < 1 / (1 + np.exp(-eta))).astype(int)
    d = pd.DataFrame({"subject": [f"s{k:03d}" for k in s], "item": [f"i{k:02d}" for k in i], "x": x, "y": y})
    d.to_csv(path, index=False)
    return d


def time_mixspec(case: str, sim: pd.DataFrame, repeats: int, data_dir: Path) -> tuple[float, float, dict[str, int]]:
    if case == "verbagg":
        va = pd.read_csv(data_dir / "VerbAgg.csv", dtype=VERBAGG_TEXT)

        def run():  # the factor response as the design layer will code it (success = "Y")
            frame_ = va.assign(r2y=from_factor(va["r2"])[0])
            f = "r2y ~ Anger + Gender + btype + situ + (1|id) + (1|item)"
            return fit_glmm(build_design(parse_formula(f), frame_), "binomial")
    elif case == "sim_crossed":
        def run():
            return fit_glmm(build_design(parse_formula("y ~ x + (1|subject) + (1|item)"), sim), "binomial")
    else:
        _, _, _, _, fam, link, nagq = CASES[case]

        def run():  # the DataFrame is read once (glmer is timed after read.csv too)
            return fit_glmm(design(case), fam, link, nagq)
    fit = run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return (statistics.median(times), fit.loglik_lme4 if fit.loglik_lme4 is not None else fit.loglik,
            dict(fit.ngroups))


def time_glmer(case: str, data_dir: Path, repeats: int) -> float | None:
    if shutil.which("Rscript") is None:
        return None
    csv, formula, fam, nagq, weights = R_CASES[case]
    w = f", weights = d${weights}" if weights else ""
    script = textwrap.dedent(f"""
        suppressPackageStartupMessages(library(lme4))
        d <- read.csv("{data_dir / (csv + '.csv')}", stringsAsFactors = TRUE)
        f <- function() glmer({formula}, data = d, family = {fam}, nAGQ = {nagq}{w})
        invisible(f())
        t <- sapply(1:{repeats}, function(i) system.time(f())[["elapsed"]])
        cat(median(t), "\\n")
    """)
    res = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True)
    try:
        return float(res.stdout.split()[-1])
    except (IndexError, ValueError):
        print(res.stderr[-500:], file=sys.stderr)
        return None


def time_mixedlm(case: str, data_dir: Path, repeats: int) -> float | None:
    try:
        import mixedlm
        from mixedlm import families
    except ImportError:
        return None
    csv, formula, fam, nagq, weights = R_CASES[case]
    d = pd.read_csv(data_dir / f"{csv}.csv")
    if case == "verbagg":
        d["r2"] = (d["r2"] == "Y").astype(float)
    for c in ("herd", "period", "BROOD", "LOCATION", "YEAR", "subject", "item", "id", "Gender", "btype", "situ"):
        if c in d:
            d[c] = d[c].astype(str)
    if case.startswith("cbpp"):
        d["prop"] = d["incidence"] / d["size"]
        formula = "prop ~ period + (1 | herd)"
    if case == "grouse_pois":
        formula = "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)"
    family = families.Binomial() if fam == "binomial" else families.Poisson()

    def run():
        w = d[weights].to_numpy(float) if weights else None
        return mixedlm.glmer(formula, d, family=family, nAGQ=nagq, weights=w)
    try:
        run()
    except Exception as exc:  # report, do not stop the benchmark
        print(f"mixedlm {case}: {exc}", file=sys.stderr)
        return None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        for f in (REF / "data").glob("*.csv"):
            shutil.copy(f, data_dir / f.name)
        sim = simulate(data_dir / "sim_crossed.csv")
        sim = pd.read_csv(data_dir / "sim_crossed.csv", dtype={"subject": str, "item": str})
        cases = list(R_CASES)
        if shutil.which("Rscript") is None or subprocess.run(
                ["Rscript", "-e", f"data(VerbAgg, package = 'lme4'); write.csv(VerbAgg, "
                 f"'{data_dir / 'VerbAgg.csv'}', row.names = FALSE)"], capture_output=True).returncode != 0:
            cases.remove("verbagg")
        rows = ["| case | rows | mixspec s | glmer s | glmer / mixspec | mixedlm s | mixspec logLik |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        table = []
        for case in cases:
            n = {"sim_crossed": len(sim), "verbagg": 7584}.get(case) or len(frame(CASES[case][0]))
            mine, ll, levels = time_mixspec(case, sim, args.repeats, data_dir)
            r = time_glmer(case, data_dir, args.repeats)
            m = time_mixedlm(case, data_dir, args.repeats)
            ratio = f"{r / mine:.1f}x" if r else "-"
            rows.append(f"| {case} | {n:,} | {mine:.3f} | {r if r is not None else '-'} | {ratio} | "
                        f"{'-' if m is None else f'{m:.3f}'} | {ll:.3f} |")
            print(rows[-1], flush=True)
            table.append({"case": f"glmm {case}", "rows": n, "levels": levels, "mixspec": {"seconds": mine},
                          "lme4": {"seconds": r} if r is not None else None,
                          "mixedlm": {"seconds": m} if m is not None else None})
    OUT.mkdir(exist_ok=True)
    (OUT / "glmm.md").write_text("\n".join(rows) + "\n")
    (OUT / "glmm.json").write_text(json.dumps(table, indent=1))  # rows of `make bench`'s closing table
    print("\n".join(rows))


if __name__ == "__main__":
    main()
