"""On-disk cache of fits, so CI does not refit a model whose inputs did not change.

A fit is keyed by the sha256 of everything that can change its numbers: the design
arrays themselves (which capture data, filter, NA handling, centring and coding), the
normalized formula, the data sha256, method, engine, options, package versions and a
digest of the engine and design source code.

The cache directory is untrusted (CI restores it from a cache anyone with a pull request
may have written), so an entry is data, never code: one JSON file per fit (the `Fit`
record; no arrays, they are recomputed), read with a size limit and validated by
pydantic. Nothing here unpickles. An entry is reused only after `cache_verify` has
reproduced its objective at its theta on this run's design and recomputed its derived
numbers; anything else (unparsable, stale, forged) is refitted with a warning that
reaches results.json. Only lme fits without `verify` are cached (a statsmodels fit or a
cross-check cannot be re-checked cheaply).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.design.model import Design
from runner.fit import Fit

if TYPE_CHECKING:
    from runner.run.tasks import FitTask, TaskResult

DEFAULT_DIR = ".mixspec-cache"
CACHE_FORMAT = 2
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # a Fit record without arrays is far smaller


def default_cache_dir() -> Path:
    """`$MIXSPEC_CACHE_DIR`, else `.mixspec-cache/` in the working directory."""
    return Path(os.environ.get("MIXSPEC_CACHE_DIR") or DEFAULT_DIR)


def _update_array(h: hashlib._Hash, a: np.ndarray | None) -> None:
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
    from importlib.metadata import version

    import numpy
    import scipy

    import runner

    return {"mixspec": runner.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "statsmodels": version("statsmodels")}  # not imported: ~1 s


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
    """JSON entries under one directory, re-checked before reuse; `enabled=False` is a no-op cache."""

    def __init__(self, root: str | Path | None = None, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.rejected: list[str] = []  # keys whose entries were not reused (for logs and tests)
        self.warnings: list[str] = []  # for results.json's warnings
        self._checked: dict[str, tuple[Fit, float] | None] = {}

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    @staticmethod
    def cacheable(task: FitTask) -> bool:
        """Only fits that can be re-checked from their numbers: lme, no statsmodels cross-check."""
        return task.engine == "lme" and not task.verify and task.glmm is None

    def read(self, key: str) -> tuple[Fit, float] | None:
        """The entry's Fit (without arrays) and fit seconds; None when absent.

        Raises CacheMismatch when an entry exists but is not a valid record of this key."""
        from runner.run.cache_verify import CacheMismatch

        p = self.path(key)
        try:  # never a symlink (O_NOFOLLOW), never block on a FIFO (O_NONBLOCK), only a regular file
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheMismatch(f"unreadable ({exc.strerror or exc}; a symlink is not followed)") from None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise CacheMismatch("not a regular file")
            raw = fh.read(MAX_ENTRY_BYTES + 1)
        if len(raw) > MAX_ENTRY_BYTES:
            raise CacheMismatch(f"larger than {MAX_ENTRY_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("key") != key:
                raise ValueError("not an entry of this format and key")
            seconds = float(doc.get("seconds", 0.0))
            fit = Fit.model_validate(doc["fit"])
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # JSON, UTF-8 and pydantic errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CacheMismatch(f"not a valid entry ({first[:200]})") from None
        return fit, seconds

    def load(self, task: FitTask) -> TaskResult | None:
        """A verified cached result for `task`, or None (absent, or refit with a warning)."""
        from runner.run.cache_verify import CacheMismatch, recompute_lme
        from runner.run.tasks import TaskResult

        if not self.enabled or not self.cacheable(task):
            return None
        if task.key in self._checked:  # one check (and one warning) per entry and run
            done = self._checked[task.key]
            return None if done is None else TaskResult(task.id, done[0], None, done[1], cached=True)
        self._checked[task.key] = None
        try:
            found = self.read(task.key)
            if found is None:
                return None
            fit, seconds = found
            if fit.method != task.method or fit.formula != task.formula_text:
                raise CacheMismatch("method or formula differ from the key's")
            fit = recompute_lme(task.design, fit, wald=task.inference is None)
            if task.inference is not None:  # df, p-values, intervals: derived, so recomputed too
                from runner.run import tasks

                fit = tasks._inference(task, fit, task.inference)
        except CacheMismatch as exc:
            self._reject(task, str(exc))
            return None
        except Exception as exc:  # a numerical failure while re-checking: refit, never fail the run
            self._reject(task, f"re-check failed: {type(exc).__name__}: {exc}")
            return None
        self._checked[task.key] = (fit, seconds)
        return TaskResult(task.id, fit, None, seconds, cached=True)

    def _reject(self, task: FitTask, reason: str) -> None:
        self.rejected.append(task.key)
        self.warnings.append(f"{task.id}: cached fit {task.key[:12]} not reused ({reason}); refitted")

    def put(self, key: str, value: TaskResult) -> None:
        """Store atomically; a cache that cannot be written never fails the run."""
        if (not self.enabled or value.fit is None or value.fit.engine != "lme" or value.verify is not None
                or getattr(value.fit, "family", None) not in (None, "gaussian")):
            return
        p = self.path(key)
        if any(d.is_symlink() for d in (self.root, p.parent)):  # planted to write elsewhere
            print(f"mixspec: cache not written ({p.parent} is a symbolic link)", file=sys.stderr)
            return
        try:  # a record that would not read back (a non-finite number) is not cached
            text = value.fit.model_dump_json()
            Fit.model_validate_json(text)
        except ValueError:
            return
        doc = {"format": CACHE_FORMAT, "key": key, "seconds": value.seconds, "fit": json.loads(text)}
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps(doc, allow_nan=False).encode()
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, p)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except (OSError, ValueError) as exc:  # ValueError: a non-finite number (not cached)
            print(f"mixspec: cache not written ({exc})", file=sys.stderr)
