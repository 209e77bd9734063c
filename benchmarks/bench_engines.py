"""Time every reference case: mixspec's `lme` engine beside lme4, mixedlm and statsmodels.

Each case of tests/reference/cases.tsv is fitted from the same CSV by:

- mixspec: the whole path from a DataFrame to a checked fit (design matrices, rank and
  scale checks, optimization, convergence and singularity checks, and the Fit's numbers:
  Wald table, VarCorr, conditional modes and variances, fitted values), in a fresh Python
  process per case: one warm-up fit, then the median of `--repeats` timed fits; the
  process's peak resident memory is reported;
- lme4: `lmer()` timed inside R (Rscript, when present), warm-up plus the median of
  `--repeats`, reading the same CSV with `stringsAsFactors = TRUE`;
- mixedlm (PyPI, Rust backend; `pip install -e .[bench]`), when importable, likewise:
  `lmer()` and then the numbers mixspec's Fit already holds (`vcov()`, `VarCorr()`,
  `ranef(condVar=True)`, `fitted()`, `residuals()`), which mixedlm computes lazily on
  first request. Both Python tools get the same DataFrame: the CSV with its grouping
  columns as categoricals (as R's read.csv(stringsAsFactors = TRUE) makes text columns),
  converted before timing. mixspec also runs lme4's checkConv (finite-difference
  gradient and Hessian, k(k+1) extra evaluations for k covariance parameters), which
  mixedlm has no counterpart of: that stays in mixspec's time;
- statsmodels MixedLM through `fit_design(..., engine="statsmodels")` for the cases it
  can express; a first fit slower than `--slow` seconds is reported alone (not repeated),
  and a run still going after `--timeout` seconds is stopped and marked.

Every child runs with one BLAS thread (`--blas-threads`; 0 keeps the libraries' default):
mixspec limits its own fits to one, and on a shared machine a threaded OpenBLAS in the
mixedlm child's numpy spins against the other processes (sleepstudy: 3 ms with one
thread, 15-100 ms with two under a load of 2).

Prints a Markdown table and writes it to benchmarks/out/engines.md. Not a test: times
depend on the machine and on what else runs on it.

    .venv/bin/python benchmarks/bench_engines.py [--cases a,b] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
CASES_TSV = ROOT / "tests" / "reference" / "cases.tsv"


def data_path(dataset: str) -> Path:
    if dataset == "InstEval":
        return ROOT / "tests" / "data" / "InstEval.csv.gz"
    return ROOT / "runner" / "data" / "examples" / f"{dataset}.csv"


# --- child processes: one per (tool, case), so imports and memory are per case -------------

MIXSPEC_CHILD = textwrap.dedent("""
    import json, resource, statistics, sys, time
    sys.path.insert(0, {root!r})
    import pandas as pd
    from runner.design.build import build_design
    from runner.engines import fit_design
    from runner.formula import parse_formula
    formula, method, path, repeats, groups = {formula!r}, {method!r}, {path!r}, {repeats}, {groups!r}
    df = pd.read_csv(path)
    for g in groups:  # the same DataFrame as the mixedlm child gets
        df[g] = df[g].astype(str).astype("category")
    def fit():
        return fit_design(build_design(parse_formula(formula), df), method, formula_text=formula)
    f = fit()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f = fit()
        times.append(time.perf_counter() - t)
    print(json.dumps({{"seconds": statistics.median(times), "times": times,
                      "evaluations": f.convergence.evaluations, "objective": f.objective,
                      "converged": f.converged, "singular": f.singular, "ngroups": dict(f.ngroups),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

MIXEDLM_CHILD = textwrap.dedent("""
    import json, resource, statistics, sys, time
    import pandas as pd
    import mixedlm
    formula, method, path, repeats, groups = {formula!r}, {method!r}, {path!r}, {repeats}, {groups!r}
    df = pd.read_csv(path)
    for g in groups:  # grouping factors as R's read.csv(stringsAsFactors = TRUE) makes them
        df[g] = df[g].astype(str).astype("category")
    def fit():
        m = mixedlm.lmer(formula, df, REML=(method == "REML"))
        # what mixspec's Fit holds when its fit returns (mixedlm computes these on request)
        m.vcov(), m.VarCorr(), m.ranef(condVar=True), m.fitted(), m.residuals()
        return m
    m = fit()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        m = fit()
        times.append(time.perf_counter() - t)
    obj = float(m.REMLcrit()) if method == "REML" else float(m.deviance)
    print(json.dumps({{"seconds": statistics.median(times), "times": times, "objective": obj,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

STATSMODELS_CHILD = textwrap.dedent("""
    import json, statistics, sys, time, warnings
    sys.path.insert(0, {root!r})
    warnings.simplefilter("ignore")
    import pandas as pd
    from runner.design.build import build_design
    from runner.engines import EngineError, fit_design
    from runner.formula import parse_formula
    formula, method, path, repeats, slow = {formula!r}, {method!r}, {path!r}, {repeats}, {slow}
    df = pd.read_csv(path)
    def fit():
        return fit_design(build_design(parse_formula(formula), df), method, engine="statsmodels")
    try:
        t = time.perf_counter()
        f = fit()
        first = time.perf_counter() - t
    except EngineError as exc:
        msg = str(exc).splitlines()[0]
        print(json.dumps({{"skipped": msg if len(msg) <= 240 else msg[:239] + "…"}}))
        sys.exit(0)
    if first > slow:
        print(json.dumps({{"seconds": first, "times": [first], "objective": f.objective, "single": True}}))
        sys.exit(0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f = fit()
        times.append(time.perf_counter() - t)
    print(json.dumps({{"seconds": statistics.median(times), "times": times, "objective": f.objective,
                      "runs": repeats}}))
""")

R_CHILD = textwrap.dedent("""
    suppressPackageStartupMessages(library(lme4))
    d <- read.csv({path!r}, stringsAsFactors = TRUE)
    f <- as.formula({formula!r})
    reml <- {reml}
    m <- lmer(f, data = d, REML = reml)  # warm-up
    times <- numeric(0)
    for (i in seq_len({repeats})) {{
      t0 <- proc.time()[["elapsed"]]
      m <- lmer(f, data = d, REML = reml)
      times <- c(times, proc.time()[["elapsed"]] - t0)
    }}
    obj <- unname(if (reml) REMLcrit(m) else deviance(m))
    cat(sprintf('{{"seconds": %.6f, "objective": %.10f, "times": [%s]}}\\n', median(times), obj,
                paste(sprintf("%.6f", times), collapse = ", ")))
""")


BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def child_env(blas_threads: int) -> dict[str, str]:
    """The children's environment: BLAS limited to `blas_threads` (0: as installed)."""
    env = dict(os.environ)
    if blas_threads > 0:
        env.update({name: str(blas_threads) for name in BLAS_ENV})
    return env


def run_child(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict:
    """Run a child and parse the JSON of its last output line ({"error": ...} on failure)."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:160]}
    return json.loads(lines[-1])


def grouping_columns(formula: str) -> list[str]:
    sys.path.insert(0, str(ROOT))
    from runner.formula import parse_formula

    cols: list[str] = []
    for term in parse_formula(formula).random:
        for name in term.group:
            if name not in cols:
                cols.append(name)
    return cols


def mixedlm_available() -> bool:
    return subprocess.run([sys.executable, "-c", "import mixedlm"], capture_output=True).returncode == 0


def fmt(result: dict | None, digits: int = 3) -> str:
    """Median seconds (4 decimals below 0.1 s, where 3 would round a 4.6 ms fit to 5 ms), and
    the fastest run after it when there were several: on a shared machine the median moves
    with the load, the minimum much less."""
    if result is None:
        return "n/a"
    if "seconds" in result:
        d = max(digits, 4) if result["seconds"] < 0.1 else digits
        s = f"{result['seconds']:.{d}f}"
        times = result.get("times") or []
        if len(times) > 1:
            s += f" ({min(times):.{d}f})"
        return s + (" (1 run)" if result.get("single") else "")
    if "timeout" in result:
        return f"stopped > {result['timeout']:.0f} s"
    if "skipped" in result:
        return "cannot express"
    return "failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="comma-separated case ids (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per tool and case (median)")
    parser.add_argument("--no-lme4", action="store_true")
    parser.add_argument("--no-mixedlm", action="store_true")
    parser.add_argument("--no-statsmodels", action="store_true")
    parser.add_argument("--slow", type=float, default=10.0,
                        help="a statsmodels first fit slower than this is not repeated")
    parser.add_argument("--timeout", type=float, default=60.0, help="stop a statsmodels run after this")
    parser.add_argument("--out", default=str(OUT / "engines.md"), help="where to write the Markdown table")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads of every child (0: the libraries' default)")
    args, _ = parser.parse_known_args()  # run.py passes its arguments to every script

    with open(CASES_TSV, newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t"))
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c["id"] for c in cases})
        if unknown:
            parser.error(f"unknown case(s): {', '.join(unknown)}")
        cases = [c for c in cases if c["id"] in wanted]

    rscript = None if args.no_lme4 else shutil.which("Rscript")
    env = child_env(args.blas_threads)
    have_mixedlm = not args.no_mixedlm and mixedlm_available()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixspec-bench-") as tmp:
        for case in cases:
            cid, formula, method = case["id"], case["formula"], case["method"]
            path = str(data_path(case["dataset"]))
            print(f"-- {cid}", file=sys.stderr, flush=True)
            fill = dict(root=str(ROOT), formula=formula, method=method, path=path, repeats=args.repeats)
            groups = grouping_columns(formula)
            mine = run_child([sys.executable, "-c", MIXSPEC_CHILD.format(**fill, groups=groups)], timeout=3600,
                             env=env)
            lme4 = None
            if rscript:
                script = Path(tmp) / f"{cid}.R"
                script.write_text(R_CHILD.format(path=path, formula=formula, repeats=args.repeats,
                                                 reml="TRUE" if method == "REML" else "FALSE"))
                lme4 = run_child([rscript, "--vanilla", str(script)], timeout=3600, env=env)
            mlm = None
            if have_mixedlm:
                mlm = run_child([sys.executable, "-c", MIXEDLM_CHILD.format(**fill, groups=groups)],
                                timeout=3600, env=env)
            sm = None
            if not args.no_statsmodels:
                sm = run_child([sys.executable, "-c", STATSMODELS_CHILD.format(**fill, slow=args.slow)],
                               timeout=args.timeout, env=env)
            rows.append((case, mine, lme4, mlm, sm))
            print(f"   mixspec {fmt(mine, 3)}  lme4 {fmt(lme4)}  mixedlm {fmt(mlm)}  statsmodels {fmt(sm)}",
                  file=sys.stderr, flush=True)

    nrows = {}
    import pandas as pd

    for case, *_ in rows:
        if case["dataset"] not in nrows:
            nrows[case["dataset"]] = len(pd.read_csv(data_path(case["dataset"])))

    lines = [
        "# Engine benchmark: mixspec `lme` vs lme4, mixedlm and statsmodels",
        "",
        f"Median of {args.repeats} fits after a warm-up, seconds, each tool on the same CSV; "
        "mixspec's time is the whole path from a DataFrame to a checked fit (design, "
        "optimization, convergence and singularity checks, the Fit's tables); mixedlm's is "
        "`lmer()` plus the same numbers (`vcov`, `VarCorr`, `ranef(condVar=True)`, `fitted`, "
        "`residuals`) from the same DataFrame (grouping columns as categoricals); lme4's is "
        "`lmer()` timed inside R. In parentheses: the fastest of the timed runs. "
        f"BLAS threads per child: {args.blas_threads or 'library default'}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at the end {os.getloadavg()[0]:.2f}.",
        "",
        "| case | rows | mixspec s | evals | lme4 s | lme4 / mixspec | mixedlm s | statsmodels s | mixspec peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for case, mine, lme4, mlm, sm in rows:
        ratio = ""
        if mine and "seconds" in mine and lme4 and "seconds" in lme4 and mine["seconds"] > 0:
            ratio = f"{lme4['seconds'] / mine['seconds']:.1f}x"
        evals = str(mine.get("evaluations", "")) if mine else ""
        peak = f"{mine['peak_mb']:.0f}" if mine and "peak_mb" in mine else ""
        lines.append(f"| {case['id']} | {nrows[case['dataset']]:,} | {fmt(mine, 3)} | {evals} | "
                     f"{fmt(lme4) if rscript else 'not run' if args.no_lme4 else 'no Rscript'} | {ratio} | "
                     f"{fmt(mlm) if have_mixedlm else 'not run' if args.no_mixedlm else 'not installed'} | "
                     f"{fmt(sm) if not args.no_statsmodels else 'not run'} | {peak} |")
        if mine and lme4 and "objective" in mine and "objective" in lme4:
            d = mine["objective"] - lme4["objective"]
            if d > 1e-4:
                notes.append(f"{case['id']}: mixspec's objective is {d:.2e} above lme4's")
        if sm and "skipped" in sm:
            notes.append(f"{case['id']}: statsmodels cannot express it ({sm['skipped']})")
        for name, r in (("mixspec", mine), ("lme4", lme4), ("mixedlm", mlm), ("statsmodels", sm)):
            if r and "error" in r:
                notes.append(f"{case['id']}: {name} failed: {r['error']}")
    lines += ["", "Evals: criterion evaluations of one mixspec fit, including the convergence check's "
              "finite differences. Peak MB: peak resident memory of the mixspec process (Python, "
              "numpy, pandas and the data included). statsmodels: a first fit slower than "
              f"{args.slow:.0f} s is timed once (1 run); a statsmodels run still going after "
              f"{args.timeout:.0f} s is stopped."]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    # rows for run.py's one table (benchmarks/out/bench.md)
    out.with_suffix(".json").write_text(json.dumps([
        {"case": case["id"], "rows": nrows[case["dataset"]], "levels": (mine or {}).get("ngroups", {}),
         "mixspec": mine, "lme4": lme4, "mixedlm": mlm} for case, mine, lme4, mlm, _ in rows], indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
