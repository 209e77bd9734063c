"""`python -m runner.run run SPEC... | diff OLD NEW`: the runner without the typer CLI."""

from __future__ import annotations

import argparse
import sys

from runner.run.commands import diff_command, run_command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runner.run")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="fit, compare and report specs")
    r.add_argument("specs", nargs="+")
    r.add_argument("--out", default="reports")
    r.add_argument("--jobs", type=int, default=None)
    r.add_argument("--no-cache", action="store_true")
    r.add_argument("--verify", action="store_true")
    r.add_argument("--executor", default="local", choices=["local", "processes", "dask"])
    r.add_argument("--scheduler", default=None)
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--json", action="store_true", dest="json_out")
    r.add_argument("--cache-dir", default=None)
    r.add_argument("--allow-path", action="append", default=[], help="folder specs may also read (repeatable)")
    r.add_argument("--allow-env", action="append", default=[], help="variable url_env may name (repeatable)")
    d = sub.add_parser("diff", help="what changed between two results.json")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--rtol", type=float, default=1e-6)
    a = p.parse_args(argv)
    if a.command == "run":
        from runner.data.files import granted

        with granted(a.allow_path, a.allow_env):
            return run_command(a.specs, a.out, a.jobs, a.no_cache, a.verify, a.executor, a.scheduler, a.quiet,
                               a.json_out, a.cache_dir)
    return diff_command(a.old, a.new, a.rtol)


if __name__ == "__main__":
    sys.exit(main())
