"""`make bench`: run every benchmark script, then print one table of all fits.

Benchmarks are never timed assertions in tests; they print tables (and write them to
benchmarks/out/) so a reader can compare mixspec with lme4 and mixedlm on this machine.
The closing table (benchmarks/out/bench.md) gathers the rows the scripts leave as JSON
(out/engines.json: the reference cases; out/scale.json: the million-row model): rows,
levels, seconds of each tool, the ratios, peak memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_engines.py", "bench_scale.py", "bench_report.py",  # statsmodels is a column of bench_engines
           "bench_glmm.py", "bench_run.py", "bench_api.py", "bench_inference.py"]
TABLE_SOURCES = ["engines.json", "scale.json", "glmm.json"]


def _s(r: dict | None) -> str:
    if not r:
        return "not run"
    if "seconds" in r:
        return f"{r['seconds']:.3f}" if r["seconds"] < 10 else f"{r['seconds']:.1f}"
    if "timeout" in r:
        return f"stopped > {r['timeout']:.0f} s"
    return "failed" if "error" in r else "n/a"


def _ratio(other: dict | None, mine: dict | None) -> str:
    if other and mine and "seconds" in other and mine.get("seconds"):
        return f"{other['seconds'] / mine['seconds']:.1f}x"
    if other and mine and "timeout" in other and mine.get("seconds"):
        return f"> {other['timeout'] / mine['seconds']:.0f}x"
    return ""


def _mb(r: dict | None) -> str:
    return f"{r['peak_mb']:,.0f}" if r and r.get("peak_mb") else ""


def one_table(out: Path = HERE / "out") -> str:
    """The rows every script left in out/*.json as one Markdown table."""
    rows = []
    for name in TABLE_SOURCES:
        f = out / name
        if f.exists():
            rows += json.loads(f.read_text())
    lines = ["# mixspec beside lme4 and mixedlm", "",
             "| case | rows | levels | mixspec s | lme4 s | mixedlm s | lme4 / mixspec | mixedlm / mixspec | "
             "mixspec peak MB | mixedlm peak MB |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        levels = " / ".join(f"{v:,}" for v in r.get("levels", {}).values())
        lines.append(f"| {r['case']} | {r['rows']:,} | {levels} | {_s(r.get('mixspec'))} | {_s(r.get('lme4'))} | "
                     f"{_s(r.get('mixedlm'))} | {_ratio(r.get('lme4'), r.get('mixspec'))} | "
                     f"{_ratio(r.get('mixedlm'), r.get('mixspec'))} | {_mb(r.get('mixspec'))} | "
                     f"{_mb(r.get('mixedlm'))} |")
    lines += ["", "Seconds: the reference cases are the median of repeated fits (bench_engines.py), the scale "
              "rows one fit (bench_scale.py; mixspec's is the fit inside `mixspec run`). Peak MB: the "
              "whole process's peak resident memory (data included); for the scale rows mixspec's is the "
              "fitting process's peak during the fit (results.json `run.timings`)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    (HERE / "out").mkdir(exist_ok=True)
    failed = []
    for name in SCRIPTS:
        script = HERE / name
        if not script.exists():
            continue
        print(f"== {name}", flush=True)
        # each script takes its own options (see its --help); run with their defaults here
        if subprocess.call([sys.executable, str(script)], cwd=HERE.parent) != 0:
            failed.append(name)
    table = one_table()
    (HERE / "out" / "bench.md").write_text(table)
    print("== all fits\n" + table, flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
