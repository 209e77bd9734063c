"""Simulated data for the extra GLMM references (run once; the CSVs are committed).

binary.csv: 60 subjects x 20 items (crossed), continuous x, 0/1 response with a
correlated random x slope by subject, and the same response as a two-level factor.
counts.csv: 80 sites x 6 visits, exposure, Poisson counts with log(exposure) offset.
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(20261201)
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
rows = []
b_item = rng.normal(0, 0.7, 20)
cov = np.array([[1.0, 0.3 * 1.0 * 0.5], [0.3 * 1.0 * 0.5, 0.25]])
for s in range(60):
    b0, b1 = rng.multivariate_normal([0, 0], cov)
    for i in range(20):
        x = round(rng.normal(0, 1), 3)
        eta = -0.4 + 0.8 * x + b0 + b1 * x + b_item[i]
        y = int(rng.random() < 1 / (1 + np.exp(-eta)))
        rows.append(dict(subject=f"s{s + 1:02d}", item=f"i{i + 1:02d}", x=x, y=y,
                         answer="yes" if y else "no"))
pd.DataFrame(rows).to_csv(out / "binary.csv", index=False)
rows = []
for s in range(80):
    b = rng.normal(0, 0.6)
    for _v in range(6):
        x = round(rng.normal(0, 1), 3)
        exposure = round(rng.uniform(0.5, 5.0), 2)
        mu = exposure * np.exp(0.3 + 0.5 * x + b)
        rows.append(dict(site=f"site{s + 1:02d}", x=x, exposure=exposure, y=int(rng.poisson(mu))))
pd.DataFrame(rows).to_csv(out / "counts.csv", index=False)
