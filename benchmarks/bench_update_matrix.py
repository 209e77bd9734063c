"""The lme engine's update matrix S built in level chunks straight into CSR, beside the engine's own.

A proposal for runner/engines/lme/structure.py `_update_matrix` (not used by mixspec): the
engine lists every pair of non-zeros within each level of the first term at once (~38 bytes
a pair: on the 1M-row benchmark 33 million pairs, +1.2 GB). Here the levels are taken in
chunks of ~2 million pairs, three passes (targets, row counts, values written in place),
and the result is checked identical (targets, indptr, indices, data). Measured on the
1M-row benchmark's Parquet (benchmarks/bench_scale.py makes it), load average 1.8:
csr-direct 4.3 s, peak +462 MB (S itself is 207 MB); engine 5.1 s, +1,204 MB.

    .venv/bin/python benchmarks/bench_update_matrix.py benchmarks/out/scale/scale_1000k_40000u_3000i_50r_s15.parquet
"""
import sys, time, gc
import numpy as np, scipy.sparse as sp
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from runner.engines.lme import structure as st

def hwm_reset(): open("/proc/self/clear_refs", "w").write("5")
def status(k):
    for line in open("/proc/self/status"):
        if line.startswith(k): return int(line.split()[1]) / 1024

def update_matrix_csr(A_1t, l1, p1, nt, both, max_pairs=2_000_000):
    A_1t = A_1t.tocsr(); A_1t.sort_indices()
    indptr = A_1t.indptr
    counts = (indptr[p1::p1] - indptr[0:-1:p1]).astype(np.int64)
    r_all = A_1t.indices.astype(np.int64); v_all = A_1t.data
    cum = np.cumsum(counts ** 2)
    cuts = [0]
    while cuts[-1] < l1:
        base = cum[cuts[-1] - 1] if cuts[-1] else 0
        cuts.append(max(int(np.searchsorted(cum, base + max_pairs, side="right")), cuts[-1] + 1))
    cuts[-1] = l1
    spans = list(zip(cuts[:-1], cuts[1:]))
    def chunk(L0, L1, values=True):
        e0 = indptr[L0 * p1]
        e, f = st._ragged_pairs(counts[L0:L1]); e += e0; f += e0
        if not both:
            keep = r_all[e] >= r_all[f]; e, f = e[keep], f[keep]
        t = r_all[e] * nt + r_all[f]
        if not values:
            return t, None, None
        re = np.searchsorted(indptr, e, side="right") - 1
        rf = np.searchsorted(indptr, f, side="right") - 1
        col = (re // p1) * (p1 * p1) + (re % p1) * p1 + (rf % p1)
        return t, col, v_all[e] * v_all[f]
    mark = np.zeros(nt * nt, dtype=bool)
    for a, b in spans:
        mark[chunk(a, b, False)[0]] = True
    targets = np.flatnonzero(mark)
    pos = (np.cumsum(mark, dtype=np.int64) - 1).astype(np.int32); del mark
    rowcount = np.zeros(targets.size, dtype=np.int64)
    for a, b in spans:
        rowcount += np.bincount(pos[chunk(a, b, False)[0]], minlength=targets.size)
    rptr = np.concatenate([[0], np.cumsum(rowcount)]); del rowcount
    nnz = int(rptr[-1])
    data = np.empty(nnz); ind = np.empty(nnz, dtype=np.int32)
    fill = rptr[:-1].copy()
    for a, b in spans:
        t, c, v = chunk(a, b)
        r = pos[t]
        o = np.argsort(r, kind="stable"); r, c, v = r[o], c[o], v[o]
        starts = np.flatnonzero(np.concatenate([[True], r[1:] != r[:-1]]))
        rank = np.arange(r.size) - np.repeat(starts, np.diff(np.concatenate([starts, [r.size]])))
        where = fill[r] + rank
        data[where] = v; ind[where] = c
        np.add.at(fill, r[starts], np.diff(np.concatenate([starts, [r.size]])))
    S = sp.csr_matrix((data, ind, rptr), shape=(targets.size, l1 * p1 * p1))
    S.has_sorted_indices = False; S.sort_indices()
    return S, targets

import pandas as pd
from runner.design.build import build_design
from runner.formula import parse_formula
df = pd.read_parquet(sys.argv[1])
design = build_design(parse_formula("y ~ x + (1 | user) + (1 | item) + (1 | region)"), df); del df
blocks = design.blocks
q = [b.nlevels * b.ncols for b in blocks]
order = sorted(range(len(blocks)), key=lambda i: -q[i])
first, rest = blocks[order[0]], [blocks[i] for i in order[1:]]
W = np.column_stack([design.X, design.y])
Z1 = st._z(first, None)
tail = sp.hstack([*(st._z(b, None, slab=True) for b in rest), sp.csc_matrix(W)], format="csc")
nt = tail.shape[1]
A_1t = (tail.T @ Z1).tocsr().T.tocsr(); del Z1, tail, W; gc.collect()
res = {}
for name, fn in (("csr-direct", lambda: update_matrix_csr(A_1t, first.nlevels, first.ncols, nt, False)),
                 ("engine", lambda: st._update_matrix(A_1t, first.nlevels, first.ncols, nt, both=False))):
    gc.collect(); before = status("VmRSS"); hwm_reset(); t = time.perf_counter()
    res[name] = fn()
    print(name, f"{time.perf_counter() - t:.2f} s", f"peak +{status('VmHWM') - before:.0f} MB", "nnz", res[name][0].nnz, flush=True)
    if name == "csr-direct":
        keep = res.pop(name)
        res[name] = keep
(S1, t1), (S2, t2) = res["csr-direct"], res["engine"]
print("same targets", np.array_equal(t1, t2), "same indptr", np.array_equal(S1.indptr, S2.indptr),
      "same indices", np.array_equal(S1.indices, S2.indices), "max |dS|", np.abs(S1.data - S2.data).max())
