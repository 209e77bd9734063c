"""The million-row model of issue 15: users crossed with items, users nested in regions.

Simulates `--rows` rows (default 1,000,000: 40,000 users crossed with 3,000 items, each
user in one of 50 regions), writes them as Parquet under benchmarks/out/scale/, and fits

    y ~ x + (1 | user) + (1 | item) + (1 | region)      (ML)

- with mixspec, twice, each in a fresh process: (1) `mixspec run` of a one-model spec
  (the whole run: Parquet, validation, design, pre-flight, fit, results.json), its wall
  time and the run's own `run.timings` (fit seconds, peak MB, memory estimate); (2) the
  same steps called one by one, each step's seconds and peak resident memory (the
  kernel's VmHWM, reset before each step through /proc/self/clear_refs), and inside the
  engine's set-up (`build_problem`) each of its steps ([X y] and Z, A_t1, A_tt, the
  update matrix's two passes) with what it keeps: where the time and memory go;
- with `mixedlm` (PyPI, Rust) when importable, and lme4 through Rscript with
  `--lme4-timeout` seconds (0 = skip; lme4 did not finish in 14 minutes on this model).

Prints a Markdown table and writes benchmarks/out/scale.md. Not a test; run it alone
(`nice`), nothing else fitting: it takes minutes and up to a few GB.

    .venv/bin/python benchmarks/bench_scale.py [--rows 1000000 --users 40000 --items 3000 --regions 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out"
FORMULA = "y ~ x + (1 | user) + (1 | item) + (1 | region)"
TRUE = dict(intercept=10.0, x=0.5, user=1.0, item=0.7, region=0.5, resid=2.0)


def simulate(rows: int, users: int, items: int, regions: int, seed: int):  # -> pd.DataFrame
    """Every user appears (rows // users times, the rest drawn), items drawn uniformly, each
    user in one region; string identifiers as a CSV-born file has them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    region_of_user = rng.integers(regions, size=users)
    user = np.concatenate([np.repeat(np.arange(users), rows // users),
                           rng.integers(users, size=rows - users * (rows // users))])
    rng.shuffle(user)
    item = rng.integers(items, size=rows)
    x = rng.normal(size=rows)
    u = rng.normal(0, TRUE["user"], users)
    v = rng.normal(0, TRUE["item"], items)
    w = rng.normal(0, TRUE["region"], regions)
    region = region_of_user[user]
    y = TRUE["intercept"] + TRUE["x"] * x + u[user] + v[item] + w[region] + rng.normal(0, TRUE["resid"], rows)
    labels = lambda prefix, k: np.array([f"{prefix}{i:06d}" for i in range(k)], dtype=object)  # noqa: E731
    return pd.DataFrame({"user": labels("u", users)[user], "item": labels("i", items)[item],
                         "region": labels("r", regions)[region], "x": np.round(x, 4), "y": np.round(y, 4)})


SPEC = """\
name: {name}
title: Issue 15 scale benchmark ({rows:,} rows)
data:
  path: {data}
defaults:
  method: ML
  inference: {{df: {df}}}
models:
  crossed:
    formula: {formula}
"""

# One step at a time, each step's peak resident memory (VmHWM reset before it).
MIXSPEC_STEPS = textwrap.dedent("""
    import gc, json, os, sys, time
    sys.path.insert(0, {root!r})
    path, formula, breakdown = {path!r}, {formula!r}, {breakdown!r}

    def status():
        out = {{}}
        for line in open("/proc/self/status"):
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
        return out

    def reset():
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass

    steps = []
    def step(name, fn):
        reset()
        before = status()["VmRSS"]
        t = time.perf_counter()
        value = fn()
        s = status()
        steps.append({{"step": name, "seconds": time.perf_counter() - t, "rss_before_mb": before,
                       "peak_mb": s["VmHWM"], "rss_after_mb": s["VmRSS"]}})
        print(json.dumps(steps[-1]), file=sys.stderr, flush=True)
        return value

    import numpy as np, pandas as pd, scipy.sparse as sp
    from runner.design.build import build_design
    from runner.engines import fit_design
    from runner.formula import parse_formula
    from runner.data.sources import load_frame
    from runner.spec.models import DataSpec
    steps.append({{"step": "imports", "seconds": 0.0, "rss_before_mb": 0.0, **{{"peak_mb": status()["VmHWM"],
                   "rss_after_mb": status()["VmRSS"]}}}})
    df = step("read Parquet (runner.data.load_frame)", lambda: load_frame(DataSpec(path=path), os.path.dirname(path)))
    frame_mb = float(df.memory_usage(deep=True).sum()) / 2**20
    design = step("build_design", lambda: build_design(parse_formula(formula), df))
    del df
    design_mb = (design.X.nbytes + design.y.nbytes + sum(b.X.nbytes + b.codes.nbytes for b in design.blocks)) / 2**20
    arrays = {{}}
    if breakdown:  # build_problem's own steps, one by one (runner/engines/lme/structure.py)
        from runner.engines.lme import structure as st
        from runner.engines.lme.update import UpdateBuilder
        terms, blocks = st._terms(design)
        first, rest = blocks[0], blocks[1:]
        Wc = step("[X y] as CSC", lambda: st._csc_columns([*(design.X[:, j] for j in range(design.X.shape[1])),
                                                           design.y], design.nobs))
        Z1, Zs = step("Z_1, Z_tail (sparse)", lambda: (st._z(first, None).tocsr(),
                                                       [st._z(b, None, slab=True) for b in rest]))
        nt = sum(z.shape[1] for z in Zs) + Wc.shape[1]
        A_t1 = step("A_t1 = tail' Z_1 (sparse, a term at a time)", lambda: sp.vstack(
            [*(z.T @ Z1 for z in Zs), Wc.T @ Z1], format="csr"))
        A_tt = step("A_tt dense (bincounts, [X y] products)", lambda: st._tail_gram(rest, None, Zs, Wc, nt))
        del Z1, Zs, Wc
        scalar_tail = all(b.ncols == 1 for b in rest)
        builder = step("update S, pass 1: targets and counts", lambda: UpdateBuilder(
            A_t1.T.tocsr(), first.nlevels, first.ncols, nt, both=not scalar_tail))
        S = step("update S, pass 2: values in place", lambda: builder.matrix())
        arrays = {{"nt": nt, "A_tt_mb": A_tt.nbytes / 2**20, "S_nnz": int(S.nnz),
                   "S_mb": (S.data.nbytes + S.indices.nbytes + S.indptr.nbytes) / 2**20,
                   "targets": int(builder.targets.size), "A_t1_nnz": int(A_t1.nnz)}}
        del A_tt, A_t1, S, builder
        from runner.engines.lme.structure import build_problem
        problem = step("build_problem (all of it)", lambda: build_problem(design))
        arrays["S_eval_nnz"] = int(problem.S_eval.nnz)
        arrays["dense_start"] = int(problem.dense_start)
        arrays["eval_gflop"] = problem.eval_flops / 1e9
        del problem
    fit = step("fit_design (set-up + optimization + checks)", lambda: fit_design(design, "ML", formula_text=formula))
    print(json.dumps({{"steps": steps, "frame_mb": frame_mb, "design_mb": design_mb, "arrays": arrays,
                      "deviance": fit.objective, "evaluations": fit.convergence.evaluations,
                      "converged": fit.converged, "theta": list(fit.theta), "sigma": fit.sigma}}))
""")

MIXEDLM_CHILD = textwrap.dedent("""
    import json, resource, time
    import pandas as pd
    import mixedlm
    t0 = time.perf_counter()
    df = pd.read_parquet({path!r})
    for g in ("user", "item", "region"):
        df[g] = df[g].astype("category")
    t = time.perf_counter()
    m = mixedlm.lmer({formula!r}, df, REML=False)
    fit = time.perf_counter() - t
    print(json.dumps({{"seconds": fit, "whole": time.perf_counter() - t0, "deviance": float(m.deviance),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

R_CHILD = textwrap.dedent("""
    suppressPackageStartupMessages({{library(lme4); library(arrow)}})
    d <- as.data.frame(read_parquet({path!r}))
    for (g in c("user", "item", "region")) d[[g]] <- factor(d[[g]])
    t0 <- proc.time()[["elapsed"]]
    m <- lmer({formula!r}, data = d, REML = FALSE)
    cat(sprintf('{{"seconds": %.3f, "deviance": %.6f, "peak_mb": %.0f}}\\n', proc.time()[["elapsed"]] - t0,
                deviance(m), max(gc()[, 6])))
""")


def _child(argv: list[str], timeout: float | None, env: dict | None = None) -> dict:
    """Run a child, wall time and its peak RSS (ru_maxrss of the waited-for child)."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    out: dict = json.loads(lines[-1]) if lines else {}
    out["wall"] = wall
    out["returncode"] = proc.returncode
    if proc.returncode not in (0, 1) or (not lines and proc.returncode != 0):
        out["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    out["stderr_tail"] = proc.stderr.strip().splitlines()[-5:]
    return out


def _peak_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_mixspec_cli(spec: Path, out: Path, blas_threads: int = 1, serial: bool = False) -> dict:
    """`mixspec run` of the spec, the whole run; the run's own record of the fit. With
    `blas_threads` > 1 the child may use that many (OpenBLAS's pool is sized by
    OPENBLAS_NUM_THREADS when it loads: set to 1, MIXSPEC_BLAS_THREADS could not raise it)."""
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)  # mixspec's own default: one BLAS thread per evaluation
    if blas_threads > 1:
        env["OPENBLAS_NUM_THREADS"] = env["MIXSPEC_BLAS_THREADS"] = str(blas_threads)
    elif serial:
        env["OPENBLAS_NUM_THREADS"] = "1"  # a one-core ceiling: no two evaluations at once either
    res = _child([str(ROOT / ".venv" / "bin" / "mixspec"), "run", str(spec), "--no-cache", "-q", "-j", "1",
                  "--out", str(out)], timeout=None, env=env)
    results = out / spec.stem / "results.json"
    if results.exists():
        rec = json.loads(results.read_text())
        res["record"] = {"timings": rec["run"]["timings"], "deviance": rec["models"]["crossed"].get("objective"),
                         "converged": rec["models"]["crossed"].get("converged")}
    return res


def fmt_s(r: dict | None, key: str = "seconds") -> str:
    if not r:
        return "not run"
    if "timeout" in r:
        return f"stopped > {r['timeout']:.0f} s"
    if "error" in r and key not in r:
        return "failed"
    return f"{r[key]:.1f}" if key in r else "n/a"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=40_000)
    p.add_argument("--items", type=int, default=3_000)
    p.add_argument("--regions", type=int, default=50)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--no-mixedlm", action="store_true")
    p.add_argument("--lme4-timeout", type=float, default=0.0, help="seconds for lme4 (0: not run)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the step-by-step mixspec process")
    p.add_argument("--df", default="none", choices=["none", "satterthwaite"],
                   help="the run's denominator df (none: the fit alone, as mixedlm and lme4's lmer() do; "
                        "satterthwaite: mixspec's default, ~100 more criterion evaluations)")
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS threads of the mixspec run (default 1, as mixspec fits by default; mixedlm is "
                        "single-threaded); 2 measures MIXSPEC_BLAS_THREADS=2 on an idle machine")
    p.add_argument("--serial", action="store_true",
                   help="one core for mixspec: no two independent evaluations at once (engines/lme/parallel.py)")
    p.add_argument("--out", default=str(OUT / "scale.md"))
    args, _ = p.parse_known_args()  # run.py passes its arguments to every script

    folder = OUT / "scale"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"scale_{args.rows // 1000}k"
    data = folder / f"{name}_{args.users}u_{args.items}i_{args.regions}r_s{args.seed}.parquet"
    if not data.exists():
        t = time.perf_counter()
        frame = simulate(args.rows, args.users, args.items, args.regions, args.seed)
        frame.to_parquet(data, index=False)
        print(f"simulated {len(frame):,} rows in {time.perf_counter() - t:.1f} s: {data}", file=sys.stderr)
        del frame
    spec = folder / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, rows=args.rows, data=data.name, formula=FORMULA, df=args.df))

    print("-- mixspec run (whole run)", file=sys.stderr, flush=True)
    whole = run_mixspec_cli(spec, folder / "reports", args.blas_threads, args.serial)
    whole["peak_mb_children"] = _peak_children_mb()
    print(json.dumps({k: v for k, v in whole.items() if k != "stderr_tail"}), file=sys.stderr, flush=True)
    steps = None
    if not args.no_breakdown:
        print("-- mixspec step by step", file=sys.stderr, flush=True)
        steps = _child([sys.executable, "-c", MIXSPEC_STEPS.format(root=str(ROOT), path=str(data), formula=FORMULA,
                                                                   breakdown=True)], timeout=None,
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        print(json.dumps({k: v for k, v in steps.items() if k != "stderr_tail"}), file=sys.stderr, flush=True)
    mlm = None
    if not args.no_mixedlm:
        ok = subprocess.run([sys.executable, "-c", "import mixedlm"], capture_output=True).returncode == 0
        if ok:
            print("-- mixedlm", file=sys.stderr, flush=True)
            mlm = _child([sys.executable, "-c", MIXEDLM_CHILD.format(path=str(data), formula=FORMULA)],
                         timeout=3600, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
            print(json.dumps(mlm), file=sys.stderr, flush=True)
        else:
            mlm = {"error": "not installed (pip install -e '.[bench]')"}
    lme4 = None
    if args.lme4_timeout > 0 and shutil.which("Rscript"):
        print("-- lme4", file=sys.stderr, flush=True)
        script = folder / "lme4_scale.R"
        script.write_text(R_CHILD.format(path=str(data), formula=FORMULA))
        lme4 = _child(["Rscript", "--vanilla", str(script)], timeout=args.lme4_timeout)
        print(json.dumps(lme4), file=sys.stderr, flush=True)

    text = report(args, whole, steps, mlm, lme4)
    Path(args.out).write_text(text)
    timing = (whole.get("record") or {}).get("timings", {}).get("crossed", {})
    mine = ({"seconds": timing["fit_seconds"], "whole": whole["wall"], "peak_mb": timing.get("peak_mb"),
             "memory_estimate_mb": timing.get("memory_estimate_mb"),
             "objective": (whole.get("record") or {}).get("deviance")} if timing else {"error": "failed"})
    Path(args.out).with_suffix(".json").write_text(json.dumps([{  # a row of run.py's one table
        "case": f"scale_{args.rows // 1000}k", "rows": args.rows,
        "levels": {"user": args.users, "item": args.items, "region": args.regions},
        "mixspec": mine, "lme4": lme4, "mixedlm": mlm}], indent=1))
    print(text)
    return 0


def report(args: argparse.Namespace, whole: dict, steps: dict | None, mlm: dict | None, lme4: dict | None) -> str:
    timing = (whole.get("record") or {}).get("timings", {}).get("crossed", {})
    fit_s = timing.get("fit_seconds")
    lines = [
        f"# Scale benchmark: {args.rows:,} rows, {args.users:,} users x {args.items:,} items, "
        f"users in {args.regions} regions",
        "",
        f"`{FORMULA}`, ML, `inference: {{df: {args.df}}}`, simulated (seed {args.seed}), Parquet with string "
        f"identifiers. mixspec run: {args.blas_threads} BLAS thread(s) per evaluation, "
        f"{'one evaluation at a time' if args.serial or args.blas_threads > 1 else 'independent evaluations two at a time'}"
        "; mixedlm is single-threaded. "
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average at the end {os.getloadavg()[0]:.2f}.",
        "",
        "| tool | rows | levels (user / item / region) | fit s | whole run s | peak MB | deviance |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    levels = f"{args.users:,} / {args.items:,} / {args.regions}"
    dev = (whole.get("record") or {}).get("deviance")
    peak = timing.get("peak_mb") or whole.get("peak_mb_children")
    lines.append(f"| mixspec | {args.rows:,} | {levels} | {fit_s:.1f} | {whole['wall']:.1f} | {peak:.0f} | "
                 f"{dev:.3f} |" if fit_s is not None else f"| mixspec | {args.rows:,} | {levels} | failed | "
                 f"{whole.get('wall', 0):.1f} | | |")
    for tool, r in (("mixedlm", mlm), ("lme4", lme4)):
        if r is None:
            lines.append(f"| {tool} | {args.rows:,} | {levels} | not run | | | |")
            continue
        extra = f"{r['peak_mb']:.0f}" if "peak_mb" in r else ""
        d = f"{r['deviance']:.3f}" if "deviance" in r else r.get("error", "")
        lines.append(f"| {tool} | {args.rows:,} | {levels} | {fmt_s(r)} | {fmt_s(r, 'whole') if 'whole' in r else ''}"
                     f" | {extra} | {d} |")
    if fit_s and mlm and "seconds" in mlm:
        lines += ["", f"mixedlm / mixspec fit time: {mlm['seconds'] / fit_s:.2f}x; peak memory mixspec / mixedlm: "
                  f"{peak / mlm['peak_mb']:.2f}x."]
    if timing:
        lines += ["", f"mixspec's own record (`run.timings.crossed`): fit {timing.get('fit_seconds', 0):.1f} s, "
                  f"peak {timing.get('peak_mb')} MB, pre-flight estimate {timing.get('memory_estimate_mb')} MB. "
                  f"Peak of the whole `mixspec run` process: {whole.get('peak_mb_children', 0):.0f} MB."]
    if steps and "steps" in steps:
        lines += ["", "## Where mixspec's memory goes (one process, step by step)", "",
                  "| step | seconds | RSS before MB | peak MB | RSS after MB |", "| --- | ---: | ---: | ---: | ---: |"]
        for s in steps["steps"]:
            lines.append(f"| {s['step']} | {s['seconds']:.2f} | {s['rss_before_mb']:.0f} | {s['peak_mb']:.0f} | "
                         f"{s['rss_after_mb']:.0f} |")
        a = steps.get("arrays", {})
        lines += ["", f"DataFrame {steps['frame_mb']:.0f} MB (deep), design arrays {steps['design_mb']:.0f} MB; "
                  + (f"dense tail {a['nt']:,} x {a['nt']:,} = {a['A_tt_mb']:.0f} MB per copy, update matrix S "
                     f"{a['S_nnz']:,} non-zeros in {a['targets']:,} rows ({a['S_mb']:.0f} MB), A_t1 "
                     f"{a['A_t1_nnz']:,} non-zeros, one evaluation ~{a['eval_gflop']:.1f} GFlop; "
                     f"{steps['evaluations']} evaluations." if a else "")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
