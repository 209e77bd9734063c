"""Render time and size of an InstEval-sized HTML report (not a timed test: machines differ).

73,421 residual rows, caterpillars of 2,972 / 1,128 / 28 levels, two models. Inputs
are synthetic (tests/report_samples.py) so the benchmark measures the report alone.
Prints a Markdown table and writes it to benchmarks/out/report.md.

    .venv/bin/python benchmarks/bench_report.py [--repeat 3] [--models 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # report_samples: test fixtures

TARGET_SECONDS = 5.0
TARGET_BYTES = 2_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", type=int, default=2)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from runner.report.api import render_spec_report
    from report_samples import insteval_results
    import_seconds = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="mixspec-bench-report-") as tmp:
        results = insteval_results(Path(tmp), models=args.models)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            page = render_spec_report(results)
            times.append(time.perf_counter() - t)
        size = page.stat().st_size
        svgs = page.read_text(encoding="utf-8").count("<svg")

    median = statistics.median(times)
    lines = [
        "# HTML report benchmark (InstEval-sized)",
        "",
        f"Input: 73,421 rows, random effects s (2,972 levels), d (1,128), dept:service (28); "
        f"{args.models} models; {svgs} inline SVG plots.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}.",
        "",
        "| measure | value | target |",
        "| --- | ---: | ---: |",
        f"| render time, median of {args.repeat} | {median:.2f} s | < {TARGET_SECONDS:.0f} s |",
        f"| render time, min / max | {min(times):.2f} / {max(times):.2f} s | |",
        f"| import of runner.report (once per process) | {import_seconds:.2f} s | |",
        f"| page size | {size / 1e6:.3f} MB ({size:,} bytes) | < {TARGET_BYTES / 1e6:.0f} MB |",
        "",
        f"Result: {'within' if median < TARGET_SECONDS and size < TARGET_BYTES else 'OUTSIDE'} the targets.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    tmp_path = out / ".report.md.tmp"
    tmp_path.write_text(text, encoding="utf-8")
    os.replace(tmp_path, out / "report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
