"""Proofs that one model is nested in another, from the design matrices themselves.

A likelihood-ratio test is valid only for nested models: same response and rows,
the small model's fixed-effect columns in the column span of the large model's
(checked numerically, so `x` within `poly(x, 2)` or a recoded factor are found), and
each random term's covariance space contained in the large model's. Containment
rules (per grouping factor, on evaluated column names):

- a term with a full (unstructured) covariance needs a large unstructured term holding
  all its columns (`(1|g)` within `(age|g)`);
- a term with independent columns (diagonal, or one column) needs each column inside a
  large unstructured or diagonal term (`(x||g)` within `(x|g)`, diagonal within
  unstructured), or a one-column identity;
- identity needs the same columns in a large identity, compound-symmetry, diagonal or
  unstructured term; compound symmetry needs the same columns in compound symmetry or
  a large unstructured term.

Pairs these rules do not cover are decided on the marginal covariance of y
(`marginal.py`): `(1|g/f)` within `(0 + f|g)`, `(1|g)` within `(0 + f|g)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from runner.compare.marginal import ReTerm, Verdict, prove_contained
from runner.compare.shapes import TermShape, by_group

SPAN_RTOL = 1e-7


@dataclass(frozen=True)
class NestSide:
    """What a nesting proof needs from one model (built before fitting)."""

    name: str
    response: str
    rows_key: str  # hash of the rows used and the response values
    X: np.ndarray
    terms: tuple[TermShape, ...]
    npar: int  # fixed + covariance parameters + residual
    re_terms: tuple[ReTerm, ...] = ()  # the random terms on the rows, for the marginal proof


@dataclass(frozen=True)
class Nesting:
    """`how`: terms (matched term by term: the boundary analysis applies), marginal
    (proven on the marginal covariance of y), or undecided (neither proven nor refuted)."""

    nested: bool
    reason: str
    how: str = "terms"


def in_span(small: np.ndarray, large: np.ndarray, rtol: float = SPAN_RTOL) -> list[int]:
    """Indices of the small matrix's columns that are not in the column span of `large`."""
    if small.shape[1] == 0:
        return []
    if large.shape[1] == 0:
        return [j for j in range(small.shape[1]) if np.linalg.norm(small[:, j]) > 0]
    coef, *_ = np.linalg.lstsq(large, small, rcond=None)
    resid = small - large @ coef
    bad = []
    for j in range(small.shape[1]):
        scale = max(float(np.linalg.norm(small[:, j])), 1e-300)
        if np.linalg.norm(resid[:, j]) > rtol * scale:
            bad.append(j)
    return bad


def _free(c: str, big: TermShape) -> bool:
    """Column c has a free variance (and may have zero covariances) in the large term."""
    return c in big.columns and (big.covariance in ("unstructured", "diagonal") or len(big.columns) == 1)


def _term_within(t: TermShape, large_terms: list[TermShape]) -> bool:
    """Is the small term's covariance space inside the large terms' (same grouping factor)?"""
    cols = set(t.columns)
    if len(cols) > 1 and t.covariance in ("unstructured", "compound_symmetry"):
        for big in large_terms:
            if big.covariance == "unstructured" and cols <= set(big.columns):
                return True
            if t.covariance == "compound_symmetry" and big.covariance == "compound_symmetry" and cols == set(big.columns):
                return True
        return False
    if t.covariance == "identity" and len(cols) > 1:
        if any(big.covariance in ("identity", "compound_symmetry") and cols == set(big.columns) for big in large_terms):
            return True
    # a diagonal covariance (own or tied variances, no covariances): each column free somewhere
    return all(any(_free(c, big) for big in large_terms) for c in t.columns)


def random_contained(small: tuple[TermShape, ...], large: tuple[TermShape, ...]) -> str | None:
    """None when the small random part is within the large one; else the reason."""
    lg = by_group(large)
    for g, terms in by_group(small).items():
        if g not in lg:
            return f"random term on {g} has no counterpart in the larger model"
        cols = [c for t in terms for c in t.columns]
        if len(cols) != len(set(cols)):
            return f"random terms on {g} repeat a column"
        for t in terms:
            if not _term_within(t, lg[g]):
                lhs = " + ".join(t.columns)
                return f"random term ({lhs} | {g}, {t.covariance}) is not within the larger model's terms on {g}"
        # two small terms inside one large identity would force equal variances: not contained
        for big in lg[g]:
            if big.covariance == "identity" and len(big.columns) > 1:
                inside = [t for t in terms if set(t.columns) & set(big.columns)]
                if len(inside) > 1:
                    return f"several random terms on {g} inside one identity term of the larger model"
    return None


def check_nested(small: NestSide, large: NestSide) -> Nesting:
    """Prove `small` nested in `large`, or say why not."""
    if small.response != large.response:
        return Nesting(False, f"different responses ({small.response} vs {large.response})")
    if small.rows_key != large.rows_key:
        return Nesting(False, "fitted to different rows (missing values differ): likelihoods are not comparable")
    if small.npar >= large.npar:
        return Nesting(False, f"{small.name} has {small.npar} parameters, not fewer than {large.name}'s {large.npar}")
    if small.X.shape[0] != large.X.shape[0]:
        return Nesting(False, "different numbers of rows")
    bad = in_span(small.X, large.X)
    if bad:
        return Nesting(False, f"fixed-effect column(s) {', '.join(str(j) for j in bad)} of {small.name} are not in the span of {large.name}'s fixed effects")
    return _random_nesting(small, large)


def _random_nesting(small: NestSide, large: NestSide) -> Nesting:
    """The random part of `check_nested` (its fixed part and rows already agree)."""
    why = random_contained(small.terms, large.terms)
    if not why:
        return Nesting(True, "nested")
    if not small.re_terms or not large.re_terms:
        return Nesting(False, why)
    proof = prove_contained(list(small.re_terms), list(large.re_terms))
    if proof.verdict is Verdict.CONTAINED:
        return Nesting(True, f"nested: {proof.reason}", how="marginal")
    if proof.verdict is Verdict.UNDECIDED:
        return Nesting(False, f"{why}, and on the marginal covariance of y {proof.reason}", how="undecided")
    return Nesting(False, f"{why}; {proof.reason}")


def _digest(*arrays: np.ndarray, text: str = "") -> str:
    h = hashlib.sha256(text.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def auto_pairs(sides: list[NestSide]) -> list[tuple[str, str]]:
    """Every (small, large) pair proven nested, in spec order (small first, then large)."""
    return list(auto_nesting(sides))


def auto_nesting(sides: list[NestSide]) -> dict[tuple[str, str], Nesting]:
    """Every (small, large) pair proven nested with its proof, in spec order.

    The same verdicts as `check_nested` on every pair, but the two costly parts are computed
    once per distinct input: the span test per pair of fixed-effect matrices, the random part
    per pair of term lists (and their evaluated columns). With 500 models the pairs number
    125,000 while the distinct fixed parts and random parts are few; checking each pair from
    scratch took minutes on 11,520 rows.
    """
    x_key = {id(s): _digest(s.X) for s in sides}
    re_key = {id(s): _digest(*(a for t in s.re_terms for a in (t.codes, t.X)),
                             text=repr([(t.group, t.covariance) for t in s.re_terms])) for s in sides}
    spans: dict[tuple[str, str], bool] = {}
    randoms: dict[tuple[Any, ...], Nesting] = {}
    out: dict[tuple[str, str], Nesting] = {}
    for a in sides:
        for b in sides:
            if (a is b or a.npar >= b.npar or a.response != b.response or a.rows_key != b.rows_key
                    or a.X.shape[0] != b.X.shape[0]):
                continue
            span = (x_key[id(a)], x_key[id(b)])
            if span not in spans:
                spans[span] = not in_span(a.X, b.X)
            if not spans[span]:
                continue
            rand = (a.terms, b.terms, re_key[id(a)], re_key[id(b)], bool(a.re_terms), bool(b.re_terms))
            if rand not in randoms:
                randoms[rand] = _random_nesting(a, b)
            if randoms[rand].nested:
                out[a.name, b.name] = randoms[rand]
    return out
