"""`make bench`: run every benchmark script and collect their Markdown tables.

Benchmarks are never timed assertions in tests; they print tables (and write them to
benchmarks/out/) so a reader can compare mixspec with lme4 and mixedlm on this machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_engines.py", "bench_report.py"]  # statsmodels is a column of bench_engines


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
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
