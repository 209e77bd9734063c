"""A whole `mixspec run` (4 models, LRTs, Satterthwaite df, report) beside the same analysis in R.

Both are timed as fresh processes, as a user meets them: `mixspec run --no-cache` on a
4-model sleepstudy spec (results.json, summary.md and the HTML page included) and
`Rscript` fitting the same 4 models with lmer, lmerTest's summaries (Satterthwaite df, as
mixspec reports by default) and anova() likelihood-ratio tests. Median of `--repeats` wall
times; prints one line per tool and writes benchmarks/out/run.md.

    .venv/bin/python benchmarks/bench_run.py --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = """name: sleep4
title: Reaction time under sleep deprivation, four models
data: {example: sleepstudy}
models:
  intercept: {formula: "Reaction ~ Days + (1|Subject)"}
  slopes: {formula: "Reaction ~ Days + (Days|Subject)"}
  uncorrelated: {formula: "Reaction ~ Days + (Days||Subject)"}
  no_days: {formula: "Reaction ~ 1 + (Days|Subject)"}
compare:
  tests:
    - [intercept, uncorrelated]
    - [uncorrelated, slopes]
    - [no_days, slopes]
"""
R_SCRIPT = """suppressPackageStartupMessages({library(lme4); library(lmerTest)})
m1 <- lmer(Reaction ~ Days + (1|Subject), sleepstudy)
m2 <- lmer(Reaction ~ Days + (Days|Subject), sleepstudy)
m3 <- lmer(Reaction ~ Days + (Days||Subject), sleepstudy)
m4 <- lmer(Reaction ~ 1 + (Days|Subject), sleepstudy)
a <- anova(m1, m3, m2); b <- anova(m4, m2)
s <- lapply(list(m1, m2, m3, m4), summary)
invisible(lapply(list(m1, m2, m3, m4), function(m) anova(m, type = 3)))
cat("ok\\n")
"""


def _time(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sleep4.yaml").write_text(SPEC)
        (work / "sleep4.R").write_text(R_SCRIPT)
        mixspec = [str(Path(sys.executable).with_name("mixspec")), "run", "sleep4.yaml", "--out", "out",
                   "--no-cache", "--quiet"]
        times = [_time(mixspec, work) for _ in range(args.repeats)]
        rows.append(("mixspec run (4 fits + ML refits, LRTs, Satterthwaite, report)", statistics.median(times)))
        if shutil.which("Rscript"):
            times = [_time(["Rscript", "sleep4.R"], work) for _ in range(args.repeats)]
            rows.append(("Rscript (4 lmer fits, lmerTest summaries and anova, LRTs)", statistics.median(times)))
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| tool | wall s (median) |", "| --- | ---: |"] + [f"| {name} | {s:.2f} |" for name, s in rows]
    (out / "run.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
