"""What every engine reports the same way: information criteria, lme4's warning texts,
Wald rows, VarCorr rows, and the one-BLAS-thread guard of the native fits."""

from __future__ import annotations

import math
import os
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from runner.covariance import CORRELATED
from runner.design.model import Design, RandomBlock
from runner.distributions import norm_ppf, norm_sf
from runner.fit import FitWarning, FixedEffect, RandomEffect

FEW_LEVELS = 30  # fewer levels than this: Wald z tests of the fixed effects are anticonservative
SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"
Z975 = float(norm_ppf(0.975))

_CONTROLLER: Any = None
DENSE_THREADED = 1000  # rows of the dense block from which BLAS may use more than one thread


_CEILING = 1  # BLAS threads the process may use (its pool size when the controller was made)


def _controller() -> Any:
    """threadpoolctl's controller, made once: scanning the loaded libraries costs ~1 ms, as
    much as a small fit's criterion. Made outside any limit, it also records the process's
    BLAS ceiling (OPENBLAS_NUM_THREADS, a pool worker's share of the cores, else the cores)."""
    global _CONTROLLER, _CEILING
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
        _CEILING = max([int(lib.get("num_threads") or 1) for lib in _CONTROLLER.info()], default=1)
    return _CONTROLLER


def evaluation_workers() -> int:
    """How many independent criterion evaluations of an expensive model may run at once, each on
    one BLAS thread (the convergence check's and Satterthwaite's difference points): two where
    the process may use two cores and BLAS itself is not threaded (MIXSPEC_BLAS_THREADS), else
    one. Unlike a threaded BLAS this is deterministic (each evaluation is single-threaded, the
    same bits as one after the other) and degrades gracefully beside a busy process."""
    _controller()
    wanted = os.environ.get("MIXSPEC_BLAS_THREADS", "").strip()
    if wanted.isdigit() and int(wanted) > 1:
        return 1
    return 2 if _CEILING >= 2 else 1


def one_blas_thread() -> AbstractContextManager[Any]:
    """Limit BLAS to one thread during a native fit (threadpoolctl): small dense blocks are
    dispatch-bound, and a multithreaded BLAS beside other busy processes spins."""
    return _controller().limit(limits=1)


def blas_threads(dense_rows: int) -> AbstractContextManager[Any]:
    """BLAS threads for the optimization of a model whose dense block has `dense_rows` rows:
    one, unless MIXSPEC_BLAS_THREADS asks for more and the block has DENSE_THREADED rows or
    more (never more than the caller's BLAS setting: a pool or Dask worker stays at one).

    Opt-in, because the gain needs idle cores: on 2 cores InstEval's criterion and gradient
    took 47 ms with two threads against 66 ms with one, but the whole fit took 3.5 s
    against 1.0 s while another process kept the second core busy (OpenBLAS threads spin)."""
    controller = _controller()
    wanted = os.environ.get("MIXSPEC_BLAS_THREADS", "").strip()
    if dense_rows < DENSE_THREADED or not wanted.isdigit() or int(wanted) <= 1:
        return controller.limit(limits=1)
    current = max([int(lib.get("num_threads") or 1) for lib in controller.info()], default=1)
    return controller.limit(limits=min(current, int(wanted)))


def psd_cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots -> zero columns)."""
    p = a.shape[0]
    low = np.zeros_like(a, dtype=float)
    for j in range(p):
        d = a[j, j] - low[j, :j] @ low[j, :j]
        if d <= 1e-14 * max(1.0, abs(a[j, j])):
            continue
        low[j, j] = math.sqrt(d)
        low[j + 1:, j] = (a[j + 1:, j] - low[j + 1:, :j] @ low[j, :j]) / low[j, j]
    return low


def information_criteria(objective: float, npar: int, nobs: int) -> tuple[float, float]:
    """(AIC, BIC) from -2 log-likelihood (lme4 also computes them from the REML criterion)."""
    return objective + 2 * npar, objective + npar * math.log(nobs)


def ngroups(design: Design) -> dict[str, int]:
    """Levels per grouping factor, in lme4's order of first appearance."""
    out: dict[str, int] = {}
    for b in design.blocks:
        out.setdefault(b.group, b.nlevels)
    return out


def design_warnings(design: Design) -> list[FitWarning]:
    """The design layer's warnings (lme4's check.scaleX, dropped columns, ...) under their codes."""
    return [FitWarning(code=w.code, message=w.message) for w in design.warnings]


def singular_warning() -> FitWarning:
    return FitWarning(code="singular", message=SINGULAR_MESSAGE)


def few_levels_warning(design: Design) -> list[FitWarning]:
    """The warning for grouping factors with fewer than FEW_LEVELS levels, or none."""
    few = sorted({b.group for b in design.blocks if b.nlevels < FEW_LEVELS})
    if not few:
        return []
    many = len(few) > 1
    return [FitWarning(code="few_levels", message=(
        f"grouping factor{'s' if many else ''} {', '.join(few)} ha{'ve' if many else 's'} "
        f"fewer than {FEW_LEVELS} levels: Wald z p-values and intervals are anticonservative"))]


def wald_rows(design: Design, beta: np.ndarray, se: np.ndarray) -> list[FixedEffect]:
    """Wald z tests and 95% intervals per fixed effect (no statistic where the SE is 0)."""
    out = []
    for col, est, sd in zip(design.fixed, beta, se):
        z = float(est / sd) if sd > 0 else None
        out.append(FixedEffect(
            term=col.term, lme4_name=col.lme4_name, variable=col.variable, level=col.level,
            estimate=float(est), std_error=float(sd), statistic=z,
            p_value=None if z is None else float(2 * norm_sf(abs(z))),
            ci_low=float(est - Z975 * sd), ci_high=float(est + Z975 * sd)))
    return out


def varcorr_rows(block: RandomBlock, V: np.ndarray) -> list[RandomEffect]:
    """lme4's VarCorr rows of one term with covariance V: the variances, then the
    covariance pairs (i < j) of a correlated structure (no correlation where an SD is 0)."""
    sd = np.sqrt(np.clip(np.diag(V), 0.0, None))
    names = block.column_names
    rows = [RandomEffect(id=block.id, group=block.group, term=name, variance=float(V[a, a]), sd=float(sd[a]))
            for a, name in enumerate(names)]
    if block.covariance in CORRELATED:
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                corr = float(V[a, b] / (sd[a] * sd[b])) if sd[a] > 0 and sd[b] > 0 else None
                rows.append(RandomEffect(id=block.id, group=block.group, term=names[a], term2=names[b],
                                         covariance=float(V[a, b]), corr=corr))
    return rows
