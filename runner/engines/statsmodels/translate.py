"""Design -> the arguments of statsmodels' MixedLM, exactly or not at all.

MixedLM has one grouping factor (independent groups of rows), one covariance
matrix `cov_re` for the columns of `exog_re` (repeated per group), and variance
components: columns inside a group whose coefficients are independent with one
shared variance. A mixspec model maps onto that without approximation when:

- the groups are the connected components of the rows under all grouping factors
  (rows sharing any level of any factor are in one group). For nested factors this
  is the top factor; for crossed factors it is usually one all-rows group. The data
  decide, never the labels: `(1|batch) + (1|cask)` with cask labels repeated across
  batches joins all rows into one group, i.e. crossed, as lme4 reads it;
- terms whose grouping factor *is* that partition become `exog_re` columns
  (unstructured, or diagonal / block-diagonal through fit's `free` mask);
- every other term is a set of variance components: a scalar term is one, a
  diagonal term one per column, an identity term one for all columns, and a
  compound-symmetry term (rho >= 0) two: a common effect on the row sums of its
  columns plus an identity part.

A correlated (unstructured) term with two or more columns on any other factor has
no MixedLM form; it raises `InexpressibleModel`. So does a design whose dense
per-group matrices would not fit in memory (MixedLM works with dense n_g x q_g
blocks), prior weights, and a model without random effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from statsmodels.regression.mixed_linear_model import MixedLMParams, VCSpec

from runner.design.model import Design, RandomBlock
from runner.engines.statsmodels.errors import ADVICE, InexpressibleModel

DEFAULT_MAX_BYTES = 2 * 1024**3  # MixedLM's dense work above this is refused, with advice


@dataclass
class ReSlot:
    """A Design block carried by `exog_re` columns start:stop (one level per group).

    The columns are divided by `scales` (their RMS) before MixedLM sees them: an exact
    reparametrization (cov_re becomes S^-1 Sigma S^-1) that keeps BFGS from stalling
    when a slope variable is large (age ~ 11 made it stop at its start values).
    """

    block: int
    start: int
    stop: int
    scales: np.ndarray


@dataclass
class VcSlot:
    """One MixedLM variance component, and what it is of a Design block.

    kind: "columns" (the block's columns `cols` share this variance: a scalar term,
    one column of a diagonal term, or all columns of an identity term), "cs_common"
    (the common part of a compound-symmetry term), "cs_unique" (its identity part).
    """

    block: int
    kind: str
    cols: tuple[int, ...]
    name: str
    scale: float = 1.0  # the component's columns are divided by this (RMS); variance times scale^2


@dataclass
class Coef:
    """Where one random coefficient (block, level, column) sits in a group's vector."""

    block: int
    level: int
    col: int
    positions: list[int]  # statsmodels positions summed to give this coefficient


@dataclass
class Plan:
    """Everything needed to call MixedLM and to map its results back to the Design."""

    endog: np.ndarray
    exog: np.ndarray
    groups: np.ndarray  # (n,) int group label of each row (0 .. ngroups-1)
    exog_re: np.ndarray | None
    exog_vc: VCSpec | None
    free: MixedLMParams | None
    re_slots: list[ReSlot]
    vc_slots: list[VcSlot]
    group_rows: list[np.ndarray]
    coefs: list[list[Coef]] = field(default_factory=list)  # per group
    group_scales: list[np.ndarray] = field(default_factory=list)  # per group: divisor of each position
    estimated_bytes: int = 0

    @property
    def k_re(self) -> int:
        return 0 if self.exog_re is None else int(self.exog_re.shape[1])


def term_text(block: RandomBlock) -> str:
    """The block as lme4-like text for messages: `(age | classroom)`."""
    cols = [c for c in block.column_names if c != "(Intercept)"]
    lhs = " + ".join(cols) if cols else "1"
    if "(Intercept)" not in block.column_names:
        lhs = "0 + " + lhs
    return f"({lhs} | {block.group})"


def row_groups(blocks: list[RandomBlock], nobs: int) -> np.ndarray:
    """Connected components of the rows: two rows share a group if they share any level."""
    offsets = np.cumsum([0] + [b.nlevels for b in blocks])
    rows = np.concatenate([np.arange(nobs)] * len(blocks))
    cols = np.concatenate([nobs + offsets[i] + b.codes for i, b in enumerate(blocks)])
    size = nobs + int(offsets[-1])
    graph = sparse.coo_array((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    _, groups = np.unique(labels[:nobs], return_inverse=True)  # relabel 0.. in order of label
    return groups.astype(np.int64)


def nested_in(inner: np.ndarray, outer: np.ndarray) -> bool:
    """True when every level of `inner` occurs within exactly one level of `outer`."""
    pairs = np.unique(np.column_stack([inner, outer]), axis=0)
    return pairs.shape[0] == np.unique(inner).size


def _is_group_factor(block: RandomBlock, groups: np.ndarray) -> bool:
    return nested_in(block.codes, groups) and nested_in(groups, block.codes)


def _refuse_correlated(block: RandomBlock, blocks: list[RandomBlock], groups: np.ndarray) -> None:
    """Raise the error for a correlated multi-column term off MixedLM's grouping factor."""
    ngroups = int(groups.max()) + 1
    if ngroups == 1:
        where = (
            "the grouping factors are crossed, so MixedLM needs a single all-rows group and "
            "variance components, which carry only independent effects with one variance each"
        )
    else:
        top = [b.group for b in blocks if _is_group_factor(b, groups)]
        outer = f"'{top[0]}'" if top else f"the {ngroups} independent groups of rows"
        where = (
            f"'{block.group}' lies below {outer}, which must be MixedLM's grouping factor; "
            "below it only variance components (independent effects, one variance each) exist"
        )
    raise InexpressibleModel(
        f"MixedLM cannot express the correlated random-effects term {term_text(block)} "
        f"({block.covariance} covariance of {block.ncols} columns): MixedLM allows a correlated "
        f"covariance only on its one grouping factor, and {where}. "
        f"Fitting it as independent effects would be a different model. {ADVICE}"
    )


def _vc_slots(i: int, block: RandomBlock) -> list[VcSlot]:
    """The variance components that express block i exactly (off the grouping factor)."""
    p = block.ncols
    if (block.covariance == "unstructured" and p == 1) or block.covariance == "diagonal":
        return [VcSlot(i, "columns", (c,), f"{block.id}|{block.column_names[c]}") for c in range(p)]
    if block.covariance == "identity" or block.covariance == "compound_symmetry" and p == 1:
        return [VcSlot(i, "columns", tuple(range(p)), f"{block.id}|identity")]
    if block.covariance == "compound_symmetry":
        allc = tuple(range(p))
        return [VcSlot(i, "cs_common", allc, f"{block.id}|cs_common"), VcSlot(i, "cs_unique", allc, f"{block.id}|cs_unique")]
    raise AssertionError(block.covariance)


def _rms(x: np.ndarray) -> float:
    """Root mean square of a column set; 1 for an all-zero one (nothing to rescale)."""
    r = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return r if r > 0 and np.isfinite(r) else 1.0


def _slot_scale(slot: VcSlot, block: RandomBlock) -> float:
    cols = block.X[:, list(slot.cols)]
    return _rms(cols.sum(axis=1)) if slot.kind == "cs_common" else _rms(cols)


def _vc_matrix(slot: VcSlot, block: RandomBlock, rows: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The dense columns of one variance component in one group, and their (level, col)."""
    codes = block.codes[rows]
    levels, local = np.unique(codes, return_inverse=True)
    if slot.kind == "cs_common":
        mat = np.zeros((rows.size, levels.size))
        mat[np.arange(rows.size), local] = block.X[rows][:, list(slot.cols)].sum(axis=1) / slot.scale
        return mat, [(int(lv), -1) for lv in levels]
    k = len(slot.cols)
    mat = np.zeros((rows.size, levels.size * k))
    xr = block.X[rows] / slot.scale
    for j, c in enumerate(slot.cols):
        mat[np.arange(rows.size), local * k + j] = xr[:, c]
    return mat, [(int(lv), c) for lv in levels for c in slot.cols]


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'; 3 * 1024**3 -> '3.0 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def estimate_bytes(group_sizes: list[int], group_q: list[int]) -> int:
    """MixedLM's dense memory: stored n_g x q_g blocks (twice) and q_g^2, plus working copies."""
    stored = sum(2 * n * q + q * q for n, q in zip(group_sizes, group_q))
    working = max((2 * n * q + 2 * q * q for n, q in zip(group_sizes, group_q)), default=0)
    return 8 * (stored + working)


def _free_mask(design: Design, re_slots: list[ReSlot], k_re: int, k_fe: int, k_vc: int) -> MixedLMParams | None:
    """fit's `free` pattern: block-diagonal cov_re, diagonal inside diagonal blocks."""
    mask = np.zeros((k_re, k_re))
    for s in re_slots:
        if design.blocks[s.block].covariance == "diagonal":
            mask[np.arange(s.start, s.stop), np.arange(s.start, s.stop)] = 1.0
        else:
            mask[s.start : s.stop, s.start : s.stop] = 1.0
    if np.all(mask == 1.0):
        return None
    return MixedLMParams.from_components(fe_params=np.ones(k_fe), cov_re=mask, vcomp=np.ones(k_vc))


def translate(design: Design, max_bytes: int = DEFAULT_MAX_BYTES) -> Plan:
    """Map a Design onto MixedLM's arguments, or raise `InexpressibleModel` saying why."""
    blocks = design.blocks
    if not blocks:
        raise InexpressibleModel(f"MixedLM needs at least one random-effects term; this model has none. {ADVICE}")
    if design.weights is not None:
        raise InexpressibleModel(f"MixedLM has no prior weights, and this model has weights. {ADVICE}")
    n = design.nobs
    groups = row_groups(blocks, n)
    ngroups = int(groups.max()) + 1
    on_group = [_is_group_factor(b, groups) and b.covariance in ("unstructured", "diagonal") for b in blocks]
    for i, b in enumerate(blocks):
        if not on_group[i] and b.covariance == "unstructured" and b.ncols > 1:
            _refuse_correlated(b, blocks, groups)
    group_rows = [np.flatnonzero(groups == g) for g in range(ngroups)]

    re_slots: list[ReSlot] = []
    start = 0
    for i, b in enumerate(blocks):
        if on_group[i]:
            scales = np.array([_rms(b.X[:, c]) for c in range(b.ncols)])
            re_slots.append(ReSlot(i, start, start + b.ncols, scales))
            start += b.ncols
    k_re = start
    exog_re = np.hstack([blocks[s.block].X / s.scales for s in re_slots]) if re_slots else None
    vc_slots = [s for i, b in enumerate(blocks) if not on_group[i] for s in _vc_slots(i, b)]
    for s in vc_slots:
        s.scale = _slot_scale(s, blocks[s.block])

    need = _check_size(blocks, group_rows, k_re, vc_slots, max_bytes)
    mats, coefs, group_scales = _group_columns(blocks, group_rows, re_slots, k_re, vc_slots)
    exog_vc = None
    if vc_slots:
        names = [s.name for s in vc_slots]
        colnames = [[[str(k) for k in range(m.shape[1])] for m in ms] for ms in mats]
        exog_vc = VCSpec(names, colnames, mats)
    endog = design.y - design.offset if design.offset is not None else design.y
    return Plan(
        endog=np.asarray(endog, dtype=float), exog=np.asarray(design.X, dtype=float), groups=groups,
        exog_re=exog_re, exog_vc=exog_vc, free=_free_mask(design, re_slots, k_re, design.X.shape[1], len(vc_slots)),
        re_slots=re_slots, vc_slots=vc_slots, group_rows=group_rows, coefs=coefs, group_scales=group_scales,
        estimated_bytes=need,
    )


def _check_size(blocks: list[RandomBlock], group_rows: list[np.ndarray], k_re: int, vc_slots: list[VcSlot],
                max_bytes: int) -> int:
    """MixedLM's memory for this model, checked before building anything dense."""
    sizes = [r.size for r in group_rows]
    qs = []
    for rows in group_rows:
        q = k_re
        for s in vc_slots:
            nl = np.unique(blocks[s.block].codes[rows]).size
            q += nl if s.kind == "cs_common" else nl * len(s.cols)
        qs.append(q)
    need = estimate_bytes(sizes, qs)
    if need > max_bytes:
        ngroups = len(group_rows)
        kind = "one all-rows group (the factors are crossed)" if ngroups == 1 else f"{ngroups} groups"
        raise InexpressibleModel(
            f"MixedLM would need about {human_bytes(need)} of memory for this model (limit "
            f"{human_bytes(max_bytes)}): it works with dense matrices of rows x random effects per group, "
            f"here {kind} with up to {max(sizes)} rows x {max(qs)} random effects. "
            f"The sparse engine 'lme' fits it in a fraction of that. {ADVICE}"
        )
    return need


def _group_columns(blocks: list[RandomBlock], group_rows: list[np.ndarray], re_slots: list[ReSlot], k_re: int,
                   vc_slots: list[VcSlot]) -> tuple[list[list[np.ndarray]], list[list[Coef]], list[np.ndarray]]:
    """Per group: the variance-component matrices, where each Design coefficient sits, the column scales."""
    mats: list[list[np.ndarray]] = [[] for _ in vc_slots]
    coefs: list[list[Coef]] = []
    group_scales: list[np.ndarray] = []
    re_scales = np.concatenate([s.scales for s in re_slots]) if re_slots else np.zeros(0)
    for rows in group_rows:
        group_coefs: list[Coef] = []
        scales_g = [re_scales]
        for r in re_slots:
            level = int(blocks[r.block].codes[rows[0]])
            for c in range(r.stop - r.start):
                group_coefs.append(Coef(r.block, level, c, [r.start + c]))
        pos = k_re
        common: dict[tuple[int, int], int] = {}  # (block, level) -> position of a cs common effect
        for j, s in enumerate(vc_slots):
            mat, cols = _vc_matrix(s, blocks[s.block], rows)
            mats[j].append(mat)
            for k, (level, c) in enumerate(cols):
                if s.kind == "cs_common":
                    common[(s.block, level)] = pos + k
                elif s.kind == "cs_unique":
                    group_coefs.append(Coef(s.block, level, c, [pos + k, common[(s.block, level)]]))
                else:
                    group_coefs.append(Coef(s.block, level, c, [pos + k]))
            pos += mat.shape[1]
            scales_g.append(np.full(mat.shape[1], s.scale))
        coefs.append(group_coefs)
        group_scales.append(np.concatenate(scales_g))
    return mats, coefs, group_scales
