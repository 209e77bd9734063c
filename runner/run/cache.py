"""On-disk cache of fits, so CI does not refit a model whose inputs did not change.

A fit is keyed by the sha256 of everything that can change its numbers: the design
arrays themselves (which capture data, filter, NA handling, centring and coding), the
normalized formula, the data sha256, method, engine, options, package versions and a
digest of the engine and design source code. Each entry is one file whose first line
is the sha256 of the rest, written to a temporary file and renamed; an entry whose
digest does not match (truncated, corrupt, half-written) is ignored and refitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from runner.design.model import Design

DEFAULT_DIR = ".mixspec-cache"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """`$MIXSPEC_CACHE_DIR`, else `.mixspec-cache/` in the working directory."""
    return Path(os.environ.get("MIXSPEC_CACHE_DIR") or DEFAULT_DIR)


def _update_array(h: "hashlib._Hash", a: np.ndarray | None) -> None:
    if a is None:
        h.update(b"none")
        return
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def design_digest(design: Design) -> str:
    """sha256 of the numbers and names an engine sees (not of the DataFrame)."""
    h = hashlib.sha256()
    h.update(design.response.encode())
    for a in (design.y, design.X, design.weights, design.offset):
        _update_array(h, a)
    h.update(json.dumps([[c.term, c.lme4_name, c.variable, c.level] for c in design.fixed]).encode())
    h.update(json.dumps(list(design.dropped_fixed)).encode())
    for b in design.blocks:
        h.update(json.dumps([b.id, b.group, b.covariance, list(b.column_names), list(map(str, b.levels))]).encode())
        _update_array(h, b.codes)
        _update_array(h, b.X)
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the engine, design and Fit source, so a changed engine invalidates fits."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    files = sorted(
        p for sub in ("engines", "design") for p in (root / sub).rglob("*.py")
    ) + [root / "fit.py"]
    for p in files:
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions that can change a fit's numbers."""
    import numpy
    import scipy

    import runner

    out = {"mixspec": runner.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "scipy": scipy.__version__}
    try:
        import statsmodels

        out["statsmodels"] = statsmodels.__version__
    except ImportError:  # optional for the lme engine
        pass
    return out


def fit_key(design: Design, *, method: str, engine: str, formula_repr: str, formula_text: str,
            data_sha256: str, verify: bool, options: dict[str, Any] | None = None) -> str:
    """The cache key of one fit."""
    payload = {
        "format": CACHE_FORMAT,
        "design": design_digest(design),
        "method": method,
        "engine": engine,
        "formula": formula_repr,
        "formula_text": formula_text,
        "data_sha256": data_sha256,
        "verify": verify,
        "options": options or {},
        "versions": package_versions(),
        "code": code_digest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class FitCache:
    """Digest-checked pickle entries under one directory; `enabled=False` is a no-op cache."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.rejected: list[str] = []  # keys whose entries were corrupt (for logs and tests)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.fit"

    def get(self, key: str) -> Any | None:
        """The stored object, or None when absent or not intact (then it is refitted)."""
        if not self.enabled:
            return None
        p = self.path(key)
        try:
            raw = p.read_bytes()
        except OSError:
            return None
        head, sep, body = raw.partition(b"\n")
        if not sep or head.decode("ascii", "replace") != hashlib.sha256(body).hexdigest():
            self.rejected.append(key)
            return None
        try:
            return pickle.loads(body)
        except Exception:  # digest matched but unpicklable (e.g. a class moved): refit
            self.rejected.append(key)
            return None

    def put(self, key: str, value: Any) -> None:
        """Store atomically; a cache that cannot be written never fails the run."""
        if not self.enabled:
            return
        p = self.path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            data = hashlib.sha256(body).hexdigest().encode() + b"\n" + body
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".fit")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, p)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            print(f"mixspec: cache not written ({exc})", file=sys.stderr)
