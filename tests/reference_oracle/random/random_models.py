"""Random mixed models checked against live lme4 (a developer tool; needs R with lme4).

The shared references and the oracle cases are fixed; this draws new data and models
every time (crossed, nested, slopes, `||`, factor slopes, 3-column terms, weights, REML
and ML), fits them with lme4 (defaults, and a tight bobyqa refit) and with mixspec's
`lme` engine, and flags any case where

- mixspec's criterion at lme4's theta differs from lme4's by more than 1e-6 relative,
- mixspec's optimum is above lme4's best by more than 1e-4,
- the singular flags differ, or mixspec reports non-convergence.

From the repository root (writes into DIR):

    .venv/bin/python tests/reference_oracle/random/random_models.py generate DIR --cases 40 --seed 2026 [--set more|harsh]
    (cd DIR && Rscript $OLDPWD/tests/reference_oracle/random/random_models.R)
    .venv/bin/python tests/reference_oracle/random/random_models.py compare DIR

The crossed_three_levels oracle case came from a run of this (seed 2026, case 14).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[3]
TEMPLATES = [
    "y ~ x + (1|a)", "y ~ x + (x|a)", "y ~ x + (x||a)", "y ~ x + (1|a) + (1|b)",
    "y ~ x + (x|a) + (1|b)", "y ~ x + f + (1|a/n)", "y ~ x + (1|a) + (0 + x|b)",
    "y ~ x * f + (x|a) + (1|b) + (1|c)", "y ~ x + (f|a)", "y ~ 1 + (1|a) + (1|b) + (1|c)",
    "y ~ x + (x|b) + (1|a:b)", "y ~ x + I(x^2) + (1 + x + I(x^2)|a)", "y ~ x + (0 + f|a) + (1|b)",
    "y ~ x + (x|a) + (x|b)", "y ~ x + (1|n) + (1|a)",
]
# "more": nested and crossed slopes and glmmTMB structures, each with lme4's spelling
MORE = {
    "y ~ x + (x|a:n) + (1|a)": None, "y ~ x + (1|a/n) + (1|b)": None, "y ~ x + (x|b) + (1|a) + (1|c)": None,
    "y ~ x + (1 + x|a) + (0 + f|b)": None, "y ~ f + (1|a/n) + (x||b)": None,
    "y ~ x + (1|a/n) + (x|a)": None,  # two intercepts on a: unidentifiable, lme4 and mixspec say so
    "y ~ x * f + (1|b/c) + (x|a)": None,
    "y ~ x + diag(0 + f|a) + (1|b)": 'y ~ x + (0 + dummy(f, "p")|a) + (0 + dummy(f, "q")|a) + (0 + dummy(f, "r")|a) + (1|b)',
    "y ~ x + homcs(0 + f|a)": "y ~ x + (1|a) + (1|a:f)",
    "y ~ x + homdiag(0 + f|a) + (1|c)": "y ~ x + (1|a:f) + (1|c)",
}
SETS = ("basic", "more", "harsh")


def generate(out: Path, cases: int, seed: int, which: str = "basic") -> None:
    """Data sets d<i>.csv and cases.tsv (formulas in both R's and mixspec's spelling).

    basic and more: 60-900 rows, up to 40 levels, SDs uniform in [0, 2]; harsh: up to 3,000
    rows and 300 levels, SDs from {0, 0.01, 0.1, 1, 5}, x = z * {0.01, 1, 100} + {0, 50}.
    """
    rng = np.random.default_rng(seed)
    harsh = which == "harsh"
    templates = list(MORE) if which == "more" else TEMPLATES
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(cases):
        n = int(rng.integers(40, 3000)) if harsh else int(rng.integers(60, 900))
        if harsh:
            la, lb, lc = int(rng.integers(3, 300)), int(rng.integers(2, 30)), int(rng.integers(2, 8))
        else:
            la, lb, lc = int(rng.integers(4, 40)), int(rng.integers(3, 15)), int(rng.integers(2, 6))
        a, b, c = rng.integers(0, la, n), rng.integers(0, lb, n), rng.integers(0, lc, n)
        nn = rng.integers(0, 3, n)  # labels that repeat in every level of a
        if harsh:
            x = rng.normal(size=n) * rng.choice([0.01, 1, 100]) + rng.choice([0, 50])
        else:
            x = rng.normal(size=n) * rng.choice([1, 5])
        f = rng.choice(["p", "q", "r"], n)
        sa, sb, sc, ss = rng.choice([0.0, 0.01, 0.1, 1.0, 5.0], 4) if harsh else rng.uniform(0, 2, 4)
        y = (1 + 0.5 * x + sa * rng.normal(size=la)[a] + sb * rng.normal(size=lb)[b]
             + sc * rng.normal(size=lc)[c] + ss * rng.normal(size=la)[a] * x
             + 0.7 * rng.normal(size=(la, 3))[a, nn] + rng.normal(size=n))
        pd.DataFrame({"y": y, "x": x, "f": f, "a": [f"a{v:02d}" for v in a], "b": [f"b{v:02d}" for v in b],
                      "c": [f"c{v}" for v in c], "n": [f"n{v}" for v in nn],
                      "w": rng.uniform(0.5, 2, n)}).to_csv(out / f"d{i}.csv", index=False)
        template = templates[i % len(templates)]
        rows.append({"id": f"c{i}", "data": f"d{i}.csv", "r_formula": MORE.get(template) or template,
                     "formula": template.replace("^", "**"), "method": "REML" if rng.random() < 0.5 else "ML",
                     "weights": "w" if rng.random() < 0.25 else ""})
    with open(out / "cases.tsv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def compare(out: Path) -> int:
    """Print one line per case; return the number flagged."""
    sys.path.insert(0, str(ROOT))
    from runner.design.build import build_design
    from runner.engines import fit_design
    from runner.engines.lme.criterion import Criterion
    from runner.engines.lme.structure import build_problem
    from runner.formula import parse_formula

    ref = json.loads((out / "lme4.json").read_text())
    flagged = 0
    with open(out / "cases.tsv", newline="") as fh:
        cases = list(csv.DictReader(fh, delimiter="\t"))
    for case in cases:
        r = ref[case["id"]]
        try:
            design = build_design(parse_formula(case["formula"]), pd.read_csv(out / case["data"]),
                                  weights=case["weights"] or None)
            fit = fit_design(design, case["method"])
        except Exception as exc:  # both refusing is agreement; only one refusing is flagged
            agree = "error" in r
            flagged += not agree
            print(f"{case['id']}: mixspec refused ({exc}); lme4: {r.get('error', 'fitted')}"
                  f"{'' if agree else '  <-- CHECK'}")
            continue
        if "error" in r:
            flagged += 1
            print(f"{case['id']}: lme4 failed ({r['error']}); mixspec objective {fit.objective:.6f}  <-- CHECK")
            continue
        d_opt = fit.objective - r["objective"]
        if case["r_formula"] == case["formula"].replace("**", "^"):
            at = Criterion(build_problem(design), case["method"])(np.atleast_1d(np.asarray(r["theta"], float)))
            d_at = at - r["objective"]
        else:  # lme4 spells it with other terms: its theta is another parametrization
            d_at = 0.0
        # a singular flag may differ where mixspec's optimum is lower (a component lme4 left
        # at ~1e-3 is exactly 0 here, at a lower criterion) or theta is the same within 1e-3
        same_theta = np.allclose(fit.theta, r["theta"], rtol=0, atol=1e-3)
        bad = (abs(d_at) > 1e-6 * abs(r["objective"]) or d_opt > 1e-4 or not fit.converged
               or (fit.singular != r["singular"] and d_opt > -1e-9 and not same_theta))
        flagged += bad
        print(f"{case['id']:4s} {case['method']:4s} w={case['weights'] or '-'} {case['formula']:40s} "
              f"at lme4 theta {d_at:+.1e}  optimum {d_opt:+.2e}  vs lme4 default "
              f"{fit.objective - r['objective_default']:+.2e}  singular {fit.singular}/{r['singular']}"
              f"{'  <-- CHECK' if bad else ''}")
    print(f"{flagged} of {len(cases)} flagged")
    return flagged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["generate", "compare"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--set", choices=SETS, default="basic", dest="which")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.dir, args.cases, args.seed, args.which)
        return 0
    return 1 if compare(args.dir) else 0


if __name__ == "__main__":
    raise SystemExit(main())
