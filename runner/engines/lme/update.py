"""The update matrix S of the first term's elimination, built in bounded memory.

Eliminating the first (largest) random term changes the tail by A_t1 B A_1t, with B the
level-block-diagonal matrix of that term. Each entry of the change is a sum over the
first term's levels of products of two non-zeros of A_1t in the same level, so

    (A_t1 B A_1t)[targets[k]] = (S @ vec B)[k],   S[k, (level, a, b)] = A_1t[(level, a), r] A_1t[(level, b), s]

for the tail position targets[k] = (r, s). No (row, column) of S repeats (a row of A_1t has
each column once): S has one non-zero per pair of A_1t entries in the same level.

S is built a block of tail columns r at a time, so every row (r, s) is complete in the
block holding r: A_t1's row r lists the levels that touch r, and for each of them the
partners s are A_1t's entries of that level (for the lower triangle with one column per
level, the prefix s <= r of the level's sorted row: no pair is listed to be dropped). The
block's pairs come out ordered by r, level, s; one counting sort by row (scipy's COO -> CSR,
in C, stable) puts them in S's row order with each row's levels ascending. Pass 1 lists
the block's positions only (the targets and their non-zero counts: the caller routes rows
before S is written); pass 2 writes values straight into each row's final place. At most
`max_pairs` pairs and `max_cells` block positions (a local row lookup) are alive at once,
on a million rows ~70 bytes a pair, against ~38 per pair for all pairs at once before.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

MAX_PAIRS = 500_000  # within-level pairs alive at once (~35 MB of index and value arrays)
MAX_CELLS = 4_000_000  # tail positions (r, s) of one block: its row lookup (16 MB as int32)


def _index_dtype(bound: int) -> type[np.signedinteger]:
    """int32 for indices below 2^31 (half the memory of int64), else int64."""
    return np.int32 if bound < 2 ** 31 else np.int64


class UpdateBuilder:
    """The within-level pairs of A_1t (rows (level, a), sorted columns), block by block of r.

    `targets` (sorted flat tail positions r * nt + s; int32 when nt^2 < 2^31) and `counts`
    (S's non-zeros in each row) are known after construction (pass 1); `matrix` writes S
    (pass 2)."""

    def __init__(self, A_1t: sp.csr_matrix, l1: int, p1: int, nt: int, both: bool,
                 max_pairs: int = MAX_PAIRS, max_cells: int = MAX_CELLS) -> None:
        A_1t = A_1t.tocsr()
        A_1t.sort_indices()
        self.l1, self.p1, self.nt, self.both = l1, p1, nt, both
        ptr = A_1t.indptr.astype(np.int64)
        nnz = int(ptr[-1])
        entry = _index_dtype(nnz + 1)  # indices into A_1t's entries
        self.s = A_1t.indices.astype(_index_dtype(nt), copy=False)  # the tail column of each entry
        self.v = A_1t.data
        # A_t1's rows (tail column r -> the A_1t rows touching it, ascending), with each entry's index in A_1t
        pos = sp.csr_matrix((np.arange(nnz, dtype=entry), A_1t.indices, A_1t.indptr), shape=A_1t.shape).T.tocsr()
        self.rptr = pos.indptr.astype(np.int64)
        self.row = pos.indices.astype(_index_dtype(A_1t.shape[0]), copy=False)  # A_1t row (level, a) of each entry
        self.k = pos.data  # its index in A_1t
        del pos
        self.ptr = ptr
        self.filter = p1 > 1 and not both  # several rows per level: drop s > r after listing
        self.rowid = np.repeat(np.arange(A_1t.shape[0]), np.diff(ptr)) if p1 > 1 else None
        self.blocks = self._blocks(max_pairs, max_cells)
        self._pass1()

    def _partners(self, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """For A_t1's entries j0..j1 (r, row (level, a)): the first A_1t entry of their level and
        how many partners s they pair with (the level's entries, or its prefix s <= r)."""
        level_row = (self.row[j0:j1] // self.p1) * self.p1
        first = self.ptr[level_row]
        if self.p1 == 1 and not self.both:
            return first, self.k[j0:j1] - first + 1
        return first, self.ptr[level_row + self.p1] - first

    def _blocks(self, max_pairs: int, max_cells: int) -> list[tuple[int, int]]:
        """Consecutive ranges of r holding at most ~max_pairs pairs and max_cells positions."""
        count = self._partners(0, int(self.rptr[-1]))[1]
        cum = np.concatenate([[0], np.cumsum(count, dtype=np.int64)])[self.rptr]  # pairs before each r
        del count
        width = max(1, max_cells // max(self.nt, 1))
        out, r0 = [], 0
        while r0 < self.nt:
            r1 = int(np.searchsorted(cum, cum[r0] + max_pairs, side="right")) - 1
            r1 = min(max(r1, r0 + 1), r0 + width, self.nt)
            out.append((r0, r1))
            r0 = r1
        return out

    def _pairs(self, r0: int, r1: int, values: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The block's pairs in order (r, level, s): local position (r - r0) * nt + s, and with
        `values` each pair's value A_1t[., r] * A_1t[., s] and column (level, a, b) of S."""
        j0, j1 = int(self.rptr[r0]), int(self.rptr[r1])
        first, cnt = self._partners(j0, j1)  # pairs of each A_t1 entry (r, row (level, a)) of the block
        f = np.repeat(first - (np.cumsum(cnt, dtype=np.int64) - cnt), cnt)
        f += np.arange(f.size)  # the partner entry (s) of each pair
        r_local = np.repeat(np.arange(r1 - r0, dtype=self.s.dtype), np.diff(self.rptr[r0:r1 + 1]))
        sf = self.s[f]
        key = np.repeat((r_local * self.nt).astype(_index_dtype((r1 - r0) * self.nt), copy=False), cnt)
        keep = None
        if self.filter:
            keep = sf <= np.repeat(r_local + r0, cnt)
            key, sf, f = key[keep], sf[keep], f[keep]
        key += sf
        del sf, r_local
        if not values:
            return key, None, None
        val = np.repeat(self.v[self.k[j0:j1]], cnt)
        row = self.row[j0:j1]
        p1 = self.p1
        if p1 == 1:
            col = np.repeat(row.astype(_index_dtype(self.l1), copy=False), cnt)
        else:
            col = np.repeat((row // p1) * p1 * p1 + (row % p1) * p1, cnt)
            if keep is not None:
                val, col = val[keep], col[keep]
            assert self.rowid is not None
            col += self.rowid[f] % p1
            col = col.astype(_index_dtype(self.l1 * p1 * p1), copy=False)
        val *= self.v[f]
        return key, val, col

    def _pass1(self) -> None:
        """targets and counts, block by block (a local count over the block's positions)."""
        targets, counts, ends = [], [], [0]
        flat = _index_dtype(self.nt * self.nt)  # int32 positions where nt^2 < 2^31 (half the memory)
        for r0, r1 in self.blocks:
            key, _, _ = self._pairs(r0, r1, values=False)
            cnt = np.bincount(key, minlength=(r1 - r0) * self.nt)
            local: np.ndarray = np.flatnonzero(cnt).astype(flat)
            targets.append(local + flat(r0 * self.nt))
            counts.append(cnt[local].astype(_index_dtype(self.l1 * self.p1 * self.p1 + 1)))  # pairs a target
            ends.append(ends[-1] + local.size)
        self.targets = np.concatenate(targets)
        self.counts = np.concatenate(counts)
        self.ends = ends  # targets[ends[i]:ends[i + 1]] are block i's

    def matrix(self, row_of: np.ndarray | None = None) -> sp.csr_matrix:
        """S with target i's pairs in row row_of[i] (None: row i), each row's columns ascending."""
        n = self.targets.size
        ncols = self.l1 * self.p1 * self.p1
        sizes = self.counts if row_of is None else np.empty(n, dtype=self.counts.dtype)
        if row_of is not None:
            sizes[row_of] = self.counts
        nnz = int(self.counts.sum(dtype=np.int64))
        idx = _index_dtype(max(nnz, ncols, n))
        rptr: np.ndarray = np.zeros(n + 1, dtype=idx)
        np.cumsum(sizes, dtype=idx, out=rptr[1:])
        data = np.empty(nnz)
        ind: np.ndarray = np.empty(nnz, dtype=idx)
        for (r0, r1), t0, t1 in zip(self.blocks, self.ends[:-1], self.ends[1:]):
            if t1 == t0:
                continue
            key, val, col = self._pairs(r0, r1, values=True)
            lookup: np.ndarray = np.zeros((r1 - r0) * self.nt, dtype=_index_dtype(t1 - t0))
            lookup[self.targets[t0:t1] - r0 * self.nt] = np.arange(t1 - t0)
            rows = lookup[key]
            del key, lookup
            blk = sp.coo_matrix((val, (rows, col)), shape=(t1 - t0, ncols)).tocsr()  # stable by row
            del val, rows, col
            if row_of is None:
                data[rptr[t0]:rptr[t1]] = blk.data
                ind[rptr[t0]:rptr[t1]] = blk.indices
            else:
                lengths = np.diff(blk.indptr)
                dest = np.repeat(rptr[row_of[t0:t1]].astype(np.int64) - blk.indptr[:-1], lengths)
                dest += np.arange(blk.nnz)
                data[dest] = blk.data
                ind[dest] = blk.indices
        S = sp.csr_matrix((data, ind, rptr), shape=(n, ncols))
        S.has_sorted_indices = True
        return S


def update_matrix(A_1t: sp.csr_matrix, l1: int, p1: int, nt: int, both: bool, max_pairs: int = MAX_PAIRS,
                  max_cells: int = MAX_CELLS) -> tuple[sp.csr_matrix, np.ndarray]:
    """S and targets with (S @ vec B)[k] = (A_t1 B A_1t)[targets[k]] on the lower
    triangle, or on both triangles when `both` (needed before a non-diagonal scaling)."""
    builder = UpdateBuilder(A_1t, l1, p1, nt, both, max_pairs, max_cells)
    return builder.matrix(), builder.targets


def rows_view(S: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows start..stop of S sharing S's data and index arrays (no copy of the non-zeros;
    scipy's constructor would copy a slice much smaller than its base, so the arrays are set
    on an empty matrix of the right shape)."""
    a, b = int(S.indptr[start]), int(S.indptr[stop])
    out = sp.csr_matrix((stop - start, S.shape[1]), dtype=S.dtype)
    out.indptr = S.indptr[start:stop + 1] - S.indptr.dtype.type(a)
    out.indices = S.indices[a:b]
    out.data = S.data[a:b]
    out.has_sorted_indices = S.has_sorted_indices
    return out
