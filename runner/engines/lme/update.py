"""The update matrix S of the first term's elimination, built in bounded memory.

Eliminating the first (largest) random term changes the tail by A_t1 B A_1t, with B the
level-block-diagonal matrix of that term. Each entry of the change is a sum over the
first term's levels of products of two non-zeros of A_1t in the same level, so

    (A_t1 B A_1t)[targets[k]] = (S @ vec B)[k],   S[k, (level, a, b)] = A_1t[(level, a), r] A_1t[(level, b), s]

for the tail position targets[k] = (r, s). Listing every pair of non-zeros within every
level at once costs ~38 bytes a pair (33 million pairs, +1.2 GB, on a million rows of
40,000 users crossed with 3,000 items). Here levels are taken in chunks of at most
`max_pairs` pairs: pass 1 marks the target positions, pass 2 counts S's non-zeros per row,
pass 3 writes values in place. No (row, column) of S repeats (a row of A_1t has each
column once), so the result equals the all-at-once construction exactly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

MAX_PAIRS = 2_000_000  # pairs alive at once (~80 MB of index arrays)
MARKER_LIMIT = 50_000_000  # a boolean marker over the tail's nt x nt positions up to this size


def ragged_pairs(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ordered pairs (e, f) of entries within each group of consecutive entries."""
    starts = np.cumsum(counts) - counts
    per_entry = np.repeat(counts, counts)  # group size, for each entry
    entry_start = np.repeat(starts, counts)
    e = np.repeat(np.arange(per_entry.size), per_entry)
    offsets = np.repeat(np.cumsum(per_entry) - per_entry, per_entry)
    f = np.repeat(entry_start, per_entry) + (np.arange(e.size) - offsets)
    return e, f


def _spans(counts: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Consecutive level ranges holding at most ~max_pairs within-level pairs each."""
    cum = np.cumsum(counts ** 2)
    cuts = [0]
    while cuts[-1] < counts.size:
        base = cum[cuts[-1] - 1] if cuts[-1] else 0
        cuts.append(max(int(np.searchsorted(cum, base + max_pairs, side="right")), cuts[-1] + 1))
    cuts[-1] = counts.size
    return list(zip(cuts[:-1], cuts[1:]))


class _Pairs:
    """The within-level pairs of A_1t's non-zeros, one span of levels at a time."""

    def __init__(self, A_1t: sp.csr_matrix, p1: int, both: bool) -> None:
        self.indptr = A_1t.indptr
        self.p1 = p1
        self.both = both
        self.r = A_1t.indices.astype(np.int64)
        self.v = A_1t.data
        self.counts = (self.indptr[p1::p1] - self.indptr[0:-1:p1]).astype(np.int64)  # entries per level

    def of(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        e, f = ragged_pairs(self.counts[a:b])
        e += self.indptr[a * self.p1]
        f += self.indptr[a * self.p1]
        if not self.both:  # the lower triangle only
            keep = self.r[e] >= self.r[f]
            e, f = e[keep], f[keep]
        return e, f

    def columns(self, e: np.ndarray, f: np.ndarray) -> np.ndarray:
        """S's column (level, a, b) of each pair, from the rows (level, a) and (level, b) of A_1t."""
        p1 = self.p1
        re = np.searchsorted(self.indptr, e, side="right") - 1
        rf = np.searchsorted(self.indptr, f, side="right") - 1
        return (re // p1) * (p1 * p1) + (re % p1) * p1 + (rf % p1)


def update_matrix(A_1t: sp.csr_matrix, l1: int, p1: int, nt: int, both: bool,
                  max_pairs: int = MAX_PAIRS) -> tuple[sp.csr_matrix, np.ndarray]:
    """S and targets with (S @ vec B)[k] = (A_t1 B A_1t)[targets[k]] on the lower
    triangle, or on both triangles when `both` (needed before a non-diagonal scaling)."""
    A_1t = A_1t.tocsr()
    A_1t.sort_indices()
    pairs = _Pairs(A_1t, p1, both)
    if nt * nt > MARKER_LIMIT:
        return _all_at_once(pairs, l1, p1, nt)
    spans = _spans(pairs.counts, max_pairs)
    r = pairs.r
    mark = np.zeros(nt * nt, dtype=bool)  # pass 1: which tail positions receive an update
    for a, b in spans:
        e, f = pairs.of(a, b)
        mark[r[e] * nt + r[f]] = True
    targets = np.flatnonzero(mark)
    pos = np.cumsum(mark, dtype=np.int64) - 1
    del mark
    rowcount = np.zeros(targets.size, dtype=np.int64)  # pass 2: non-zeros per row of S
    for a, b in spans:
        e, f = pairs.of(a, b)
        rowcount += np.bincount(pos[r[e] * nt + r[f]], minlength=targets.size)
    rptr = np.concatenate([[0], np.cumsum(rowcount)])
    del rowcount
    data = np.empty(int(rptr[-1]))
    ind = np.empty(int(rptr[-1]), dtype=np.int32 if l1 * p1 * p1 < 2 ** 31 else np.int64)
    fill = rptr[:-1].copy()
    for a, b in spans:  # pass 3: values written in place, each row's entries in level order
        e, f = pairs.of(a, b)
        row = pos[r[e] * nt + r[f]]
        order = np.argsort(row, kind="stable")
        row, col, val = row[order], pairs.columns(e, f)[order], (pairs.v[e] * pairs.v[f])[order]
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


def _all_at_once(pairs: _Pairs, l1: int, p1: int, nt: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Every pair at once, targets by np.unique: for tails too wide for a position marker."""
    e, f = pairs.of(0, pairs.counts.size)
    targets, inv = np.unique(pairs.r[e] * nt + pairs.r[f], return_inverse=True)
    S = sp.csr_matrix((pairs.v[e] * pairs.v[f], (inv.ravel(), pairs.columns(e, f))),
                      shape=(targets.size, l1 * p1 * p1))
    S.sum_duplicates()
    return S, targets
