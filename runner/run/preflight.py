"""Pre-flight: each model's peak memory and time class from its design, before any fit.

A model that would not fit in memory is refused (exit 2) with the estimate and what
would shrink it, instead of the kernel killing a worker halfway through a run. The
estimate follows what the `lme` engine builds (runner/engines/lme/structure.py):

- the process before its fit (imports, what reading the data leaves resident), the
  prepared frame and the design arrays (y, X, each term's columns and level codes);
- the set-up's transients: Z_1 and the tail's sparse columns, the dense tail A_tt
  (nt x nt), and the update matrix S of the first term (one non-zero per pair of
  non-zeros within a level), written in place while its pairs are listed a block of at
  most MAX_PAIRS at a time (runner/engines/lme/update.py);
- per evaluation, beside S and A_tt: the stored regions of the tail (dense square and
  the rectangles below the nested "stages") a few times (the factor, the gradient's
  inverse) and vectors over S's rows.

The peak is the larger of set-up and evaluation (on the 1M-row benchmark the evaluation:
set-up ~+430 MB, evaluation ~+620 MB over the data; on 5M rows the set-up).

Time: the set-up (rows, pairs) plus the criterion evaluations (the dense Cholesky's
flops; EM steps, L-BFGS-B on the analytic gradient and the convergence check, each
gradient ~3 evaluations; and the ML refit of a REML model), plus lmerTest's Satterthwaite
df when the model asks for them (the default): 6 (ntheta + 1) evaluation-equivalents on
an expensive model (~115 evaluations on a cheap one).

The constants are calibrated against peaks of `mixspec run` measured in a fresh process
(VmHWM, see `measure_peak`) on the scale benchmark (benchmarks/bench_scale.py: 100k rows
336 MB estimated / 312-316 MB measured, 1M rows 962 / 861-901 MB, 5M rows 2,610 / 2,420 MB,
where the set-up's S of 86 million non-zeros sets the peak) and on the students
models; tests/test_preflight.py keeps a 150k-row model's estimate between 1.0 and 1.35
times its measured peak. Times are a class ("seconds", "minutes", ...), not a promise.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np

from runner.engines.lme.structure import EXPENSIVE_FLOPS
from runner.engines.lme.update import MAX_CELLS, MAX_PAIRS

MB = 2 ** 20
BASE_MB = 240.0  # a `mixspec run` process before its first fit: its imports (~186 MB) and what reading
# and preparing the data leaves resident beside the frame (~50 MB; measured 246 MB on 100k rows)
DATA_BYTES = 12.0  # per row and design column: the prepared frame (factor codes, numbers) and what reading
# the rows leaves resident (5M rows x 5 columns: frame 116 MB, ~180 MB beside it)
MARGIN = 1.08  # the data-dependent part is estimated 8% high: the estimate errs on the safe side
PAIR_BYTES = 70.0  # bytes per within-level pair of the block of pairs being listed (update.py)
ENTRY_BYTES = 40.0  # bytes per non-zero of A_1t: the update builder's index arrays over them
TARGET_BYTES = 16.0  # bytes per update target while S is written: its position, count and S's row pointer
SPARSE_BYTES = 24.0  # peak bytes per non-zero while Z_1 / the tail's columns are assembled
S_BYTES = 12.0  # stored bytes per non-zero of a CSR matrix (float64 + int32 index)
S_SETUP_BYTES = 12.5  # per non-zero of S while it is written (its 12 bytes and the heap's slack; 5M rows)
KEPT_TARGET_BYTES = 8.0  # per update target kept for the fit: S's row pointer and its position (int32 each)
# tail-sized arrays alive at once while evaluating: an evaluation with its gradient holds the factor
# and its inverse (a scalar tail inverts in place: one), and the convergence check's and
# Satterthwaite's evaluations run two at a time (engines/lme/parallel.py)
EVAL_COPIES = 2
EVAL_TARGET_BYTES = 16.0  # per update target in an evaluation: the update vector and its gathers
FLOPS = 2.0e10  # dense Cholesky flop rate of one BLAS thread (InstEval: 0.52 GFlop in ~11 ms)
PAIR_SECONDS = 3e-8  # set-up seconds per within-level pair (1M-row benchmark: the update 0.6-0.9 s for 33.6 M)
ROW_SECONDS = 6e-8  # set-up seconds per row and column (1M rows x 6 columns: Z, A_t1, A_tt 0.3-0.4 s)
EVAL_SECONDS = 3e-4  # Python overhead of one criterion evaluation (students models: 0.1-1 ms)
GRADIENT_COST = 3.0  # one analytic gradient and its evaluation, in evaluations


@dataclass(frozen=True)
class Part:
    """One contributor to the peak, with what would shrink it."""

    name: str
    mb: float
    what: str  # e.g. "the crossed block of item (3,000 levels) x user is dense: 3,053 x 3,053"
    shrink: str


@dataclass
class Estimate:
    """A model's estimated peak resident memory (MB) of the process that fits it, and time."""

    model: str
    memory_mb: float
    parts: list[Part] = field(default_factory=list)
    seconds: float = 0.0
    nt: int = 0  # tail size
    dense: int = 0  # dense square of the tail
    pairs: int = 0  # within-level pairs of the first term's update

    @property
    def time_class(self) -> str:
        s = self.seconds
        return ("under a second" if s < 1 else "seconds" if s < 60 else "minutes" if s < 3600
                else "hours" if s < 86400 else "days")

    def summary(self) -> str:
        """One line for `mixspec validate`."""
        top = sorted(self.parts, key=lambda p: -p.mb)[:2]
        detail = "; ".join(f"{p.name} {fmt_mb(p.mb)}" for p in top if p.mb >= 1)
        secs = f"{self.seconds:,.0f}" if self.seconds >= 10 else f"{self.seconds:.2g}"
        return (f"{self.model}: ~{fmt_mb(self.memory_mb)} peak, {self.time_class} (~{secs} s)"
                + (f" [{detail}]" if detail else ""))

    def refusal(self, limit_mb: float, how: str) -> str:
        """Why the model is refused and what would shrink it."""
        top = [p for p in sorted(self.parts, key=lambda p: -p.mb) if p.mb >= 1][:3]
        reasons = "; ".join(f"{p.what}: {fmt_mb(p.mb)} ({p.shrink})" for p in top)
        return (f"{self.model}: estimated peak memory {fmt_mb(self.memory_mb)} exceeds --max-memory "
                f"{fmt_mb(limit_mb)} ({how}); nothing was fitted. Where it goes: Python and its libraries "
                f"~{fmt_mb(BASE_MB)}; {reasons}. Raise --max-memory if the machine has the memory")


def fmt_mb(mb: float) -> str:
    return f"{mb / 1024:,.1f} GB" if mb >= 1024 else f"{mb:,.0f} MB"


# --- limits -----------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> float:
    """'2GB', '500MB', '1.5g', '800M', '2GiB' -> MB (binary units: 1 GB = 1024 MB); a bare
    number is MB. ValueError with the accepted forms otherwise."""
    m = _SIZE.match(str(text))
    if not m or (m.group(3) and not m.group(3).lower().endswith("b")):
        raise ValueError(f"--max-memory {text!r}: give a size such as 2GB, 500MB or 1.5G")
    value = float(m.group(1))
    unit = m.group(2).lower()
    mb = value * {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0 ** 2}[unit]
    if mb <= 0:
        raise ValueError(f"--max-memory {text!r}: must be more than zero")
    return mb


def _cgroup_limit() -> float | None:
    """The cgroup's memory limit in MB (v2 memory.max or v1 memory.limit_in_bytes), or None."""
    candidates: list[Path] = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hid, controllers, path = line.split(":", 2)
            path = path.lstrip("/")
            if hid == "0" and controllers == "":
                candidates.append(Path("/sys/fs/cgroup") / path / "memory.max")
            elif "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory") / path / "memory.limit_in_bytes")
    except (OSError, ValueError):
        pass
    candidates += [Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    for f in candidates:
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text and text != "max":
            value = int(text)
            if 0 < value < 2 ** 60:  # v1 writes ~2^63 for "no limit"
                return value / MB
            return None
    return None


def physical_mb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB
    except (ValueError, OSError, AttributeError):
        return None


def default_limit() -> tuple[float | None, str]:
    """80% of the smaller of physical memory and the cgroup's limit, and how it was found."""
    ram, cg = physical_mb(), _cgroup_limit()
    known = [(v, what) for v, what in ((ram, "RAM"), (cg, "cgroup memory limit")) if v]
    if not known:
        return None, "no limit known"
    value, what = min(known)
    return 0.8 * value, f"default: 80% of {fmt_mb(value)} {what}"


def resolve_limit(text: str | None) -> tuple[float | None, str]:
    """The --max-memory value in MB and a description; None when no limit applies."""
    if text is None or str(text).strip() == "":
        return default_limit()
    if str(text).strip().lower() in ("none", "off", "0"):
        return None, "no limit"
    return parse_size(text), "--max-memory"


# --- the estimate --------------------------------------------------------------------------

def _pairs_per_level(fine: np.ndarray, coarse: np.ndarray, n_fine: int, n_coarse: int) -> np.ndarray:
    """For each level of `fine`, the number of distinct levels of `coarse` among its rows."""
    key = np.sort(fine.astype(np.int64) * n_coarse + coarse.astype(np.int64))  # np.unique: 100x slower here
    if key.size:
        key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    return np.bincount(key // n_coarse, minlength=n_fine)


def _nested_in(fine: np.ndarray, coarse: np.ndarray, n_fine: int, n_coarse: int) -> bool:
    return bool(_pairs_per_level(fine, coarse, n_fine, n_coarse).max(initial=0) <= 1)


def _nbytes(design: Any) -> int:
    total = design.y.nbytes + design.X.nbytes
    for b in design.blocks:
        total += b.X.nbytes + np.asarray(b.codes).nbytes
    for extra in (design.weights, design.offset):
        if extra is not None:
            total += extra.nbytes
    return total


def satterthwaite_evals(ntheta: int, flops: float = 0.0) -> float:
    """Evaluation-equivalents of lmerTest's Satterthwaite df as runner/inference does them: on an
    expensive model (EXPENSIVE_FLOPS) central differences of the analytic gradient and of vcov(beta)
    from the same 2k factorizations (k = ntheta + 1), else numDeriv's Richardson (r = 4) Hessian
    over theta and sigma, then the Jacobian (115 evaluations for three theta)."""
    k, r = ntheta + 1, 4
    if flops >= EXPENSIVE_FLOPS:
        return 2 * k * GRADIENT_COST
    return 1 + 2 * r * (k + k * (k - 1) // 2) + 2 * r * k + 2


def fit_evals(ntheta: int) -> float:
    """Evaluation-equivalents of one fit (engines/lme/optimize.py): three EM steps, ~8 L-BFGS-B
    iterations on the analytic gradient and the convergence check's ntheta + 1 gradients, a
    gradient costing GRADIENT_COST evaluations (the dense block's dpotri is twice its Cholesky)."""
    return GRADIENT_COST * (3 + 8 + ntheta + 1)


def _update_mb(pairs: float, nnz_s: float, entries: float, targets: float, nt: int) -> float:
    """Set-up memory of the update matrix (runner/engines/lme/update.py): S itself, written in
    place, its targets, the builder's index arrays over A_1t's entries, one block of at most
    MAX_PAIRS within-level pairs and the block's row lookup over its tail positions."""
    return (S_SETUP_BYTES * nnz_s + TARGET_BYTES * targets + ENTRY_BYTES * entries
            + PAIR_BYTES * min(pairs, float(MAX_PAIRS)) + 4.0 * min(float(MAX_CELLS), float(nt) * nt)) / MB


def estimate_design(model: str, design: Any, method: str = "ML", fits: int = 1, satterthwaite: bool = False
                    ) -> Estimate:
    """The estimate of one model from its design (lme engine; `fits`: primary + ML refit;
    `satterthwaite`: the inference step's df, which sets the problem up again and evaluates)."""
    n, p = design.X.shape
    blocks = list(design.blocks)
    design_mb = _nbytes(design) / MB
    data_mb = DATA_BYTES * n * (p + 1 + len(blocks)) / MB
    if not blocks:
        return Estimate(model, BASE_MB + MARGIN * (data_mb + 2 * design_mb),
                        [Part("design", design_mb, "design arrays", "fewer rows")])
    q = [b.nlevels * b.ncols for b in blocks]
    order = sorted(range(len(blocks)), key=lambda i: -q[i])
    first, rest = blocks[order[0]], [blocks[i] for i in order[1:]]
    l1, p1 = first.nlevels, first.ncols
    c1 = np.asarray(first.codes)
    # entries of A_1t per first level: each tail term's distinct levels there, times its columns
    per_level = np.full(l1, float(p + 1))
    for b in rest:
        per_level += b.ncols * _pairs_per_level(c1, np.asarray(b.codes), l1, b.nlevels)
    per_level *= p1
    entries = float(per_level.sum())
    pairs = float(np.sum(per_level ** 2))
    both = any(b.ncols > 1 for b in rest)
    nnz_s = pairs if both else (pairs + entries) / 2
    nt = int(sum(b.nlevels * b.ncols for b in rest) + p + 1)
    staged = _staged_columns(c1, l1, rest)
    dense = nt - staged
    random_cols = sum(b.ncols for b in blocks)
    sparse_mb = SPARSE_BYTES * n * (random_cols + p + 1) / MB
    a_tt = 8.0 * nt * nt / MB
    targets = min(nnz_s, float(nt) * nt if both else nt * (nt + 1) / 2.0)  # rows of S (an upper bound)
    pair_mb = _update_mb(nnz_s, nnz_s, entries, targets, nt)
    s_mb = (S_BYTES * nnz_s + KEPT_TARGET_BYTES * targets) / MB  # S (kept once: S_eval + S_rest), targets
    a_t1 = S_BYTES * entries / MB
    stored = 8.0 * dense * nt / MB  # dense square and the rectangles below the stages
    setup = a_tt + a_t1 + max(sparse_mb, pair_mb)
    evaluate = a_tt + a_t1 + s_mb + EVAL_COPIES * stored + EVAL_TARGET_BYTES * targets / MB
    memory = BASE_MB + MARGIN * (data_mb + design_mb + max(setup, evaluate))

    dense_terms = [b for b in rest if sum(x.nlevels * x.ncols for x in rest[:rest.index(b)]) >= staged]
    names = " and ".join(f"{b.group} ({b.nlevels:,} level{'s' if b.nlevels != 1 else ''})" for b in dense_terms)
    parts = [
        Part("design", design_mb + data_mb, f"data and design arrays ({n:,} rows x {p + 1 + 2 * random_cols} columns)",
             "fewer rows or columns"),
        Part("update pairs", pair_mb,
             f"the update from {first.group} ({l1:,} levels, ~{entries / max(l1, 1):.0f} non-zero columns each) "
             f"lists {nnz_s:,.0f} pairs during set-up"
             + f", at most {MAX_PAIRS:,} at a time",
             f"fewer {' and '.join(b.group for b in rest) or 'fixed-effect'} levels met by each {first.group}, or fewer "
             f"rows"),
        Part("dense tail", EVAL_COPIES * stored + a_tt,
             (f"the crossed block of {names} x {first.group} is dense: {dense:,} x {dense:,}" if dense_terms
              else f"the fixed-effect block is dense: {dense:,} x {dense:,}"),
             "fewer levels of the crossed factors (merge rare levels), or nest them" if dense_terms
             else "fewer fixed-effect columns"),
        Part("update matrix", s_mb, f"the update matrix ({nnz_s:,.0f} non-zeros)",
             f"fewer crossed levels per {first.group} level"),
        Part("sparse columns", sparse_mb, f"the sparse random-effect columns ({n:,} rows)", "fewer rows"),
    ]
    flops = dense ** 3 / 3 + 2 * nnz_s + 4 * dense * nt + l1 * p1 ** 3
    seconds = _seconds(blocks, n, random_cols + p + 1, pairs, flops, fits, satterthwaite)
    return Estimate(model, memory, parts, seconds=seconds, nt=nt, dense=dense, pairs=int(pairs))


def _staged_columns(c1: np.ndarray, l1: int, rest: list[Any]) -> int:
    """Columns of the tail terms in which every earlier eliminated factor is nested: those
    stages stay block diagonal (the rest of the tail is dense)."""
    eliminated = [(c1, l1)]
    staged = 0
    for b in rest:
        codes = np.asarray(b.codes)
        if not all(_nested_in(c, codes, lv, b.nlevels) for c, lv in eliminated):
            break
        staged += b.nlevels * b.ncols
        eliminated.append((codes, b.nlevels))
    return staged


def _seconds(blocks: list[Any], n: int, columns: int, pairs: float, flops: float, fits: int,
             satterthwaite: bool) -> float:
    """Fit time: set-up per row-column cell and pair, then the criterion evaluations (and the
    inference step's own set-up and evaluations)."""
    ntheta = sum(len(b.column_names) * (len(b.column_names) + 1) // 2 for b in blocks)
    inference_evals = satterthwaite_evals(ntheta, flops) if satterthwaite else 0.0
    evals = fit_evals(ntheta)
    setup_s = ROW_SECONDS * n * columns + PAIR_SECONDS * pairs
    per_eval = flops / FLOPS + EVAL_SECONDS
    seconds = fits * (setup_s + evals * per_eval)
    if inference_evals:  # on the fit's own problem (handed over, not set up again)
        seconds += inference_evals * per_eval
    return seconds


def estimate_plan(plan: Any) -> dict[str, Estimate]:
    """Estimates of every lme-engine model of a `runner.run.plan.SpecPlan` with a design."""
    out: dict[str, Estimate] = {}
    for name, m in plan.models.items():
        if m.design is None or m.engine not in ("lme", "auto"):
            continue
        sat = getattr(m.inference, "df", None) == "satterthwaite"
        try:
            out[name] = estimate_design(name, m.design, m.method, fits=2 if m.method == "REML" else 1,
                                        satterthwaite=sat)
        except Exception:  # an estimate is advice; a design it cannot read is fitted as before
            continue
    return out


def refusals(estimates: dict[str, Estimate], limit_mb: float | None, how: str) -> list[str]:
    if limit_mb is None:
        return []
    return [e.refusal(limit_mb, how) for e in estimates.values() if e.memory_mb > limit_mb]


def jobs_within(estimates: dict[str, Estimate], jobs: int, limit_mb: float | None) -> int:
    """The most parallel fits whose largest estimates together stay under the limit (at least 1)."""
    if limit_mb is None or jobs <= 1 or not estimates:
        return jobs
    peaks = sorted((e.memory_mb for e in estimates.values()), reverse=True)
    k = jobs
    while k > 1 and sum(peaks[:k]) > limit_mb:
        k -= 1
    return k


# --- the measurement -----------------------------------------------------------------------

def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakMeter:
    """Peak resident memory (MB) of this process while the block ran: the kernel's VmHWM,
    reset at the start, so a pool worker's earlier, larger fits do not count. Where the
    reset is impossible, ru_maxrss (the process's lifetime peak; an upper bound)."""

    def __init__(self) -> None:
        self.peak_mb: float | None = None

    def __enter__(self) -> PeakMeter:
        self._reset = _reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        value = _status_mb("VmHWM") if self._reset else None
        if value is None:
            try:
                import resource

                value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            except (ImportError, OSError):
                value = None
        self.peak_mb = None if value is None else round(value, 1)


@contextmanager
def measure_peak() -> Iterator[PeakMeter]:
    with PeakMeter() as meter:
        yield meter
