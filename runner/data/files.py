"""Files a spec names: resolved inside the repository, opened safely, read within limits.

A spec (and what it points at) may come from a pull request, so every file it
names (`data.path`, `sqlite:///` and `duckdb:///` URLs) must resolve, with symlinks
followed, to a regular file under the repository root: the git top level of the
spec's folder, or the spec's folder when it is in no repository. No absolute path
elsewhere, no `..` out of it, no symlink pointing out of it, no FIFO or device,
never /proc, /sys or /dev. Only the person running mixspec can allow other folders
(`--allow-path DIR`, `MIXSPEC_ALLOW_PATHS`), and database variables
(`--allow-env NAME`, `MIXSPEC_URL_ENVS`): a spec cannot grant itself anything.

Compressed files (.gz, .bz2, .zip, .xlsx, Parquet pages) are unpacked with a size cap and a
compression-ratio check, so a small file cannot expand into gigabytes.
"""

from __future__ import annotations

import bz2
import gzip
import os
import stat
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runner.data.errors import DataError
from runner.spec.errors import SpecIssue

ENV_PATHS = "MIXSPEC_ALLOW_PATHS"  # os.pathsep-separated folders
ENV_URL_VARS = "MIXSPEC_URL_ENVS"  # comma-separated variable names
ENV_MAX_MB = "MIXSPEC_MAX_DATA_MB"  # raise the size limits below (megabytes)

MAX_FILE_BYTES = 1 << 30  # a data file as stored
MAX_UNPACKED_BYTES = 1 << 30  # what a compressed file or workbook may expand to
MAX_RATIO = 200  # unpacked / packed, checked once more than RATIO_FLOOR bytes are unpacked
RATIO_FLOOR = 32 << 20
MAX_ARCHIVE_MEMBERS = 10_000
_NEVER = (Path("/proc"), Path("/sys"), Path("/dev"))


def _fail(key: str, message: str) -> DataError:
    return DataError([SpecIssue(None, None, None, key, message)])


# ----------------------------------------------------------------------------- what the person allows


@dataclass(frozen=True)
class Grant:
    """Folders and database variables allowed from outside the spec (CLI options)."""

    paths: tuple[Path, ...] = ()
    url_envs: frozenset[str] = frozenset()


_GRANT: ContextVar[Grant] = ContextVar("mixspec_grant", default=Grant())


@contextmanager
def granted(paths: Iterable[str | Path] = (), url_envs: Iterable[str] = ()) -> Iterator[Grant]:
    """Allow these folders and variables while the block runs (the CLI's --allow-path/--allow-env)."""
    grant = Grant(tuple(Path(p) for p in paths), frozenset(url_envs))
    token = _GRANT.set(grant)
    try:
        yield grant
    finally:
        _GRANT.reset(token)


def allowed_folders() -> list[Path]:
    """Folders outside the repository the person allowed: --allow-path plus MIXSPEC_ALLOW_PATHS."""
    listed = [*_GRANT.get().paths, *(Path(p) for p in os.environ.get(ENV_PATHS, "").split(os.pathsep) if p.strip())]
    out = []
    for folder in listed:
        real = Path(os.path.realpath(folder.expanduser()))
        if real not in out:
            out.append(real)
    return out


def allowed_url_envs() -> frozenset[str]:
    """Environment variables a spec may name in `url_env`: --allow-env plus MIXSPEC_URL_ENVS."""
    from_env = {n.strip() for n in os.environ.get(ENV_URL_VARS, "").split(",") if n.strip()}
    return _GRANT.get().url_envs | frozenset(from_env)


def _limit(default: int) -> int:
    """A size limit, replaced by MIXSPEC_MAX_DATA_MB (megabytes) when that is set."""
    text = os.environ.get(ENV_MAX_MB, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text) << 20
    return default


# ----------------------------------------------------------------------------- resolving


def repository_root(folder: str | Path) -> Path:
    """The git top level above `folder` (walking up for `.git`), else `folder` itself."""
    start = Path(os.path.realpath(folder))
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def resolve_spec_file(name: str, base_dir: str | Path, key: str, what: str = "data file") -> Path:
    """The real path of the file a spec names at `key`, or a DataError saying why not.

    Relative names are relative to the spec's folder. The result has every symlink
    resolved and is a regular file under the repository root or an allowed folder.
    """
    if not name or "\x00" in name:
        raise _fail(key, f"the {what} name is empty or contains a NUL character")
    base = Path(os.path.realpath(base_dir))
    given = Path(name)
    candidate = given if given.is_absolute() else base / given
    real = Path(os.path.realpath(candidate))
    root = repository_root(base)
    allowed = [root, *allowed_folders()]
    through_link = real != Path(os.path.abspath(candidate))
    if any(_inside(real, never) for never in _NEVER):
        raise _fail(key, f"{name!r} {'leads (through a symbolic link) ' if through_link else 'is '}into "
                    f"{next(str(n) for n in _NEVER if _inside(real, n))}: a spec may only name regular data files")
    if not any(_inside(real, folder) for folder in allowed):
        how = "is a symbolic link to a file" if through_link and not given.is_absolute() and ".." not in given.parts \
            else "is"
        raise _fail(key, f"{name!r} {how} outside the repository ({root}): a spec may only name files inside it. "
                    "To read data elsewhere, allow its folder when you run mixspec: --allow-path DIR "
                    f"or the {ENV_PATHS} environment variable (a spec cannot allow itself)")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise _fail(key, f"{what} not found: {name} (looked in {candidate.parent})") from None
    except OSError as exc:
        raise _fail(key, f"cannot open {name}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) \
            else "a device or socket"
        raise _fail(key, f"{name!r} is {kind}, not a regular file")
    limit = _limit(MAX_FILE_BYTES)
    if info.st_size > limit:
        raise _fail(key, f"{name!r} is {info.st_size / 2**20:.0f} MB, over the limit of {limit >> 20} MB "
                    f"(raise it with {ENV_MAX_MB})")
    return real


# ----------------------------------------------------------------------------- opening and unpacking


def open_regular(path: Path, key: str, name: str) -> BinaryIO:
    """Open a resolved file without following a symlink swapped in since, refusing non-regular files."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _fail(key, f"cannot open {name}: {exc.strerror or type(exc).__name__}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > _limit(MAX_FILE_BYTES):
        os.close(fd)
        raise _fail(key, f"{name!r} is not a regular file within the size limit")
    return os.fdopen(fd, "rb")


def _too_big(key: str, name: str, unpacked: int, packed: int) -> DataError:
    limit = _limit(MAX_UNPACKED_BYTES)
    if unpacked > limit:
        return _fail(key, f"{name!r} unpacks to more than {limit >> 20} MB (raise the limit with {ENV_MAX_MB})")
    return _fail(key, f"{name!r} unpacks to more than {MAX_RATIO} times its size ({packed} bytes): "
                 "refused as a decompression bomb")


def _read_capped(stream: BinaryIO, key: str, name: str, packed: int) -> bytes:
    """All of `stream`, stopping with a DataError past the size cap or the ratio limit."""
    limit = _limit(MAX_UNPACKED_BYTES)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit or (total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1)):
            raise _too_big(key, name, total, packed)
        chunks.append(chunk)


def unpack(file: BinaryIO, kind: str, key: str, name: str) -> bytes:
    """The bytes inside a .gz, .bz2 or single-file .zip, within the limits."""
    packed = os.fstat(file.fileno()).st_size
    try:
        if kind == "gz":
            with gzip.GzipFile(fileobj=file) as stream:
                return _read_capped(stream, key, name, packed)  # type: ignore[arg-type]
        if kind == "bz2":
            with bz2.BZ2File(file) as stream:
                return _read_capped(stream, key, name, packed)  # type: ignore[arg-type]
        with zipfile.ZipFile(file) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise _fail(key, f"{name!r} holds {len(members)} files; a zipped data file holds exactly one")
            member = members[0]
            if member.file_size > _limit(MAX_UNPACKED_BYTES):
                raise _too_big(key, name, member.file_size, packed)
            with archive.open(member) as stream:
                return _read_capped(stream, key, name, member.compress_size)  # type: ignore[arg-type]
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        raise _fail(key, f"cannot unpack {name!r}: it is not a valid {kind} file "
                    f"({_first_line(exc)})") from None


def check_workbook(file: BinaryIO, key: str, name: str) -> None:
    """An .xlsx is a zip of XML: refuse one that would unpack beyond the limits, before parsing it."""
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            if len(members) > MAX_ARCHIVE_MEMBERS:
                raise _fail(key, f"{name!r} holds {len(members)} parts; not a workbook mixspec reads")
            total = sum(m.file_size for m in members)
            packed = sum(m.compress_size for m in members)
            if total > _limit(MAX_UNPACKED_BYTES) or (total > RATIO_FLOOR and total > MAX_RATIO * max(packed, 1)):
                raise _too_big(key, name, total, packed)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _fail(key, f"cannot read {name!r}: not a valid .xlsx workbook ({_first_line(exc)})") from None
    file.seek(0)


def check_parquet(file: BinaryIO, key: str, name: str) -> None:
    """Parquet pages are compressed and run-length encoded: refuse a file whose rows would unpack
    beyond the limits (at least 8 bytes a cell, whatever the encoding)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(file).metadata
        total = max(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
                    8 * meta.num_rows * meta.num_columns)
    except Exception as exc:  # pyarrow's errors for a damaged file
        raise _fail(key, f"cannot read {name!r}: not a valid Parquet file ({_first_line(exc)})") from None
    if total > _limit(MAX_UNPACKED_BYTES):  # no ratio check: run-length encoding is legitimately dense
        raise _too_big(key, name, total, os.fstat(file.fileno()).st_size)
    file.seek(0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


__all__ = ["ENV_PATHS", "ENV_URL_VARS", "Grant", "allowed_folders", "allowed_url_envs", "check_parquet",
           "check_workbook",
           "granted", "open_regular", "repository_root", "resolve_spec_file", "unpack"]
