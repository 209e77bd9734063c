"""The variance parameters on lme4's "sigma scale" (`sd_`, `cor_`, `sigma`), as
`confint(oldNames = FALSE)` and `profile()` name and order them: per random term in
lme4's order, theta's lower-triangle order (diagonal -> `sd_col|group`, off-diagonal
-> `cor_row.col|group`), then `sigma`. Also the maps between them and theta."""

from __future__ import annotations

import numpy as np

from runner.engines.common import psd_cholesky
from runner.engines.lme.structure import Problem
from runner.engines.lme.templates import Template


def lme4_templates(problem: Problem) -> list[tuple[Template, slice]]:
    """(template, theta slice) per random term in lme4's order."""
    return [(t.template, t.theta) for t in problem.lme4_terms]


def names(problem: Problem) -> list[str]:
    return [n for t, _ in lme4_templates(problem) for n in t.sdcor_names()] + ["sigma"]


def is_sd(name: str) -> bool:
    return name.startswith("sd")


def to_sdcor(problem: Problem, theta: np.ndarray, sigma: float) -> np.ndarray:
    """theta, sigma -> (sd/cor per term..., sigma); a correlation with a zero SD is NaN (as lme4)."""
    out: list[float] = []
    for t, s in lme4_templates(problem):
        T = t.factor(theta[s])
        V = sigma * sigma * (T @ T.T)
        sd = np.sqrt(np.clip(np.diag(V), 0.0, None))
        if t.covariance == "unstructured" or t.p == 1:
            r, c = t.tri()
            for i, j in zip(r, c):
                if i == j:
                    out.append(float(sd[i]))
                else:
                    out.append(float(V[i, j] / (sd[i] * sd[j])) if sd[i] > 0 and sd[j] > 0 else np.nan)
        elif t.covariance == "diagonal":
            out.extend(float(x) for x in sd)
        elif t.covariance == "identity":
            out.append(float(sd[0]))
        else:
            out.append(float(sd[0]))
            out.append(float(V[0, 1] / V[0, 0]) if V[0, 0] > 0 else np.nan)
    out.append(float(sigma))
    return np.asarray(out)


def from_sdcor(problem: Problem, values: np.ndarray) -> tuple[np.ndarray, float]:
    """(sd/cor..., sigma) -> (theta, sigma); raises ValueError off the parameter space."""
    sigma = float(values[-1])
    if not sigma > 0:
        raise ValueError("sigma must be positive")
    theta = np.zeros(problem.lower.size)
    k = 0
    for t, s in lme4_templates(problem):
        n = len(t.sdcor_names())
        v = values[k:k + n]
        k += n
        if t.covariance == "unstructured" or t.p == 1:
            r, c = t.tri()
            sd = np.zeros(t.p)
            R = np.eye(t.p)
            for x, i, j in zip(v, r, c):
                if i == j:
                    sd[i] = x
                else:
                    R[i, j] = R[j, i] = x
            V = (R * sd[:, None] * sd[None, :]) / (sigma * sigma)
            if np.min(np.linalg.eigvalsh(R)) < -1e-10 or np.any(sd < 0):
                raise ValueError("not a covariance matrix")
            L = psd_cholesky(V)
            theta[s] = L[r, c]
        elif t.covariance == "diagonal":
            theta[s] = np.asarray(v) / sigma
        elif t.covariance == "identity":
            theta[s] = [v[0] / sigma]
        else:
            var, rho = (v[0] / sigma) ** 2, v[1]
            if not 0 <= rho <= 1:
                raise ValueError("compound symmetry needs 0 <= cor <= 1")
            theta[s] = [np.sqrt(rho * var), np.sqrt((1 - rho) * var)]
    return theta, sigma


def block_covariances(problem: Problem, theta: np.ndarray, sigma: float) -> list[np.ndarray]:
    """Sigma_k = sigma^2 T T' per random term, lme4 order."""
    return [sigma * sigma * (t.factor(theta[s]) @ t.factor(theta[s]).T) for t, s in lme4_templates(problem)]
