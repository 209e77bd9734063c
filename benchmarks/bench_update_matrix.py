"""The lme engine's update matrix S built in level chunks straight into CSR, beside the engine's own.

A proposal for runner/engines/lme/structure.py `_update_matrix` (not used by mixspec): the
engine lists every pair of non-zeros within each level of the first term at once (~38 bytes
a pair: on the 1M-row benchmark 33 million pairs, +1.2 GB). Here the levels are taken in
chunks of ~2 million pairs, three passes (targets, row counts, values written in place),
and the result is checked identical (targets, indptr, indices, data). Measured on the
1M-row benchmark's Parquet (benchmarks/bench_scale.py makes it), load average 1.8:
csr-direct 4.3-4.4 s, peak +414-462 MB (S itself is 207 MB); engine 3.9-5.1 s, +1,195-1,204 MB.

    .venv/bin/python benchmarks/bench_update_matrix.py benchmarks/out/scale/scale_1000k_40000u_3000i_50r_s15.parquet
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMULA = "y ~ x + (1 | user) + (1 | item) + (1 | region)"


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _spans(counts: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive level ranges of at most ~max_pairs within-level pairs each."""
    cum = np.cumsum(counts ** 2)
    cuts = [0]
    while cuts[-1] < counts.size:
        base = cum[cuts[-1] - 1] if cuts[-1] else 0
        cuts.append(max(int(np.searchsorted(cum, base + max_pairs, side="right")), cuts[-1] + 1))
    cuts[-1] = counts.size
    return list(zip(cuts[:-1], cuts[1:]))


def update_matrix_csr(A_1t: sp.csr_matrix, l1: int, p1: int, nt: int, both: bool,
                      max_pairs: int = 2_000_000) -> tuple[sp.csr_matrix, np.ndarray]:
    """The engine's (S, targets), with no more than ~max_pairs pairs alive at once."""
    from runner.engines.lme.structure import _ragged_pairs

    A_1t = A_1t.tocsr()
    A_1t.sort_indices()
    indptr = A_1t.indptr
    counts = (indptr[p1::p1] - indptr[0:-1:p1]).astype(np.int64)
    r_all = A_1t.indices.astype(np.int64)
    v_all = A_1t.data
    spans = _spans(counts, max_pairs)

    def pairs(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        e, f = _ragged_pairs(counts[a:b])
        e += indptr[a * p1]
        f += indptr[a * p1]
        if not both:
            keep = r_all[e] >= r_all[f]
            e, f = e[keep], f[keep]
        return e, f

    mark = np.zeros(nt * nt, dtype=bool)  # pass 1: which tail positions are targets
    for a, b in spans:
        e, f = pairs(a, b)
        mark[r_all[e] * nt + r_all[f]] = True
    targets = np.flatnonzero(mark)
    pos = (np.cumsum(mark, dtype=np.int64) - 1).astype(np.int32)
    del mark
    rowcount = np.zeros(targets.size, dtype=np.int64)  # pass 2: non-zeros per row of S
    for a, b in spans:
        e, f = pairs(a, b)
        rowcount += np.bincount(pos[r_all[e] * nt + r_all[f]], minlength=targets.size)
    rptr = np.concatenate([[0], np.cumsum(rowcount)])
    del rowcount
    data = np.empty(int(rptr[-1]))
    ind = np.empty(int(rptr[-1]), dtype=np.int32)
    fill = rptr[:-1].copy()
    for a, b in spans:  # pass 3: values written in place, rows in order, levels in order within a row
        e, f = pairs(a, b)
        re = np.searchsorted(indptr, e, side="right") - 1
        rf = np.searchsorted(indptr, f, side="right") - 1
        col = (re // p1) * (p1 * p1) + (re % p1) * p1 + (rf % p1)
        row = pos[r_all[e] * nt + r_all[f]]
        o = np.argsort(row, kind="stable")
        row, col, val = row[o], col[o], (v_all[e] * v_all[f])[o]
        starts = np.flatnonzero(np.concatenate([[True], row[1:] != row[:-1]]))
        sizes = np.diff(np.concatenate([starts, [row.size]]))
        where = fill[row] + (np.arange(row.size) - np.repeat(starts, sizes))
        data[where] = val
        ind[where] = col
        fill[row[starts]] += sizes
    S = sp.csr_matrix((data, ind, rptr), shape=(targets.size, l1 * p1 * p1))
    S.has_sorted_indices = False
    S.sort_indices()
    return S, targets


def _measure(name: str, fn: Callable[[], tuple[sp.csr_matrix, np.ndarray]]) -> tuple[sp.csr_matrix, np.ndarray]:
    gc.collect()
    before = _status_mb("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    out = fn()
    print(f"{name}: {time.perf_counter() - t:.2f} s, peak +{_status_mb('VmHWM') - before:,.0f} MB, "
          f"{out[0].nnz:,} non-zeros", flush=True)
    return out


def main(path: str) -> int:
    import pandas as pd

    from runner.design.build import build_design
    from runner.engines.lme import structure as st
    from runner.formula import parse_formula

    design = build_design(parse_formula(FORMULA), pd.read_parquet(path))
    blocks = design.blocks
    q = [b.nlevels * b.ncols for b in blocks]
    order = sorted(range(len(blocks)), key=lambda i: -q[i])
    first, rest = blocks[order[0]], [blocks[i] for i in order[1:]]
    Z1 = st._z(first, None)
    tail = sp.hstack([*(st._z(b, None, slab=True) for b in rest),
                      sp.csc_matrix(np.column_stack([design.X, design.y]))], format="csc")
    nt = tail.shape[1]
    A_1t = (tail.T @ Z1).tocsr().T.tocsr()
    del Z1, tail
    S1, t1 = _measure("csr-direct", lambda: update_matrix_csr(A_1t, first.nlevels, first.ncols, nt, False))
    S2, t2 = _measure("engine", lambda: st._update_matrix(A_1t, first.nlevels, first.ncols, nt, both=False))
    same = (np.array_equal(t1, t2) and np.array_equal(S1.indptr, S2.indptr)
            and np.array_equal(S1.indices, S2.indices) and np.array_equal(S1.data, S2.data))
    print("identical S and targets" if same else "S DIFFERS", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
