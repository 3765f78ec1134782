"""The container of a project file: a zip archive of one JSON document and ``.npy`` arrays.

Reading treats the file as untrusted: members are read as streams with a byte budget (a member's declared size is
checked before anything is allocated, and its data must be exactly what its ``.npy`` header declares), only stored or
deflated members are accepted and a deflated member may not inflate beyond :data:`MAX_RATIO` times its stored size,
``.npy`` headers are parsed without pickle and must describe a plain numeric array, and JSON must be strict (no NaN,
no infinities, bounded size). Every failure is a :class:`ProjectError` naming the file and the member.

Writing is atomic: a temporary file next to the target (named by :func:`temporary_name`, which the cleaning on open
recognises: :func:`remove_stale_temporaries`), flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "ArchiveReader",
    "ProjectError",
    "loads_json",
    "remove_stale_temporaries",
    "commit",
    "replace_atomically",
    "stage",
    "stage_archive",
    "temporary_name",
    "write_archive",
]

#: Largest JSON document read from a project (the stroke records of ~500,000 strokes).
MAX_JSON_BYTES = 64 * 2**20
#: Largest total of all members read from one project, uncompressed: an embedded image (at most 256 MiB), the
#: stroke points and a stored forest of 100 full-depth trees fit well below it.
MAX_TOTAL_BYTES = 1024 * 2**20
#: A deflated member may hold at most this many times its stored size (plus 1 MiB): a 300 kB file cannot inflate to
#: hundreds of MB. Projects store their arrays uncompressed (ratio 1) and only the JSON document deflated.
MAX_RATIO = 50
_SLACK = 2**20
_CHUNK = 16 * 2**20
_NPY_KINDS = "biuf"  # bool, signed, unsigned, float: nothing else is ever stored
_MAX_NDIM = 8
_STALE_AFTER = 60.0


class ProjectError(ValueError):
    """A project file that cannot be read: damaged, not a project, or made by a newer version."""


# ---------------------------------------------------------------------- JSON
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_json(raw: bytes, what: str) -> Any:
    """Strict JSON from bytes: UTF-8, no NaN or infinities, bounded nesting; ProjectError naming ``what``."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ProjectError(f"{what} is not valid JSON ({exc})") from exc


# ---------------------------------------------------------------------- reading
class ArchiveReader:
    """Read members of a zip archive under a byte budget. Use as a context manager.

    Parameters
    ----------
    path : path
        The zip file.
    max_total : int
        Uncompressed bytes that all reads together may return.
    """

    def __init__(self, path: Path, max_total: int = MAX_TOTAL_BYTES) -> None:
        self.path = path
        self.budget = int(max_total)
        try:
            self._zf = zipfile.ZipFile(path, "r")
        except Exception as exc:  # BadZipFile, LargeZipFile, EOFError, OSError, struct errors of a crafted file
            raise ProjectError(
                f"{path} is not an ilastik-widget project (not a zip archive, or truncated/damaged: {exc})"
            ) from exc
        self.names = set(self._zf.namelist())

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._zf.close()

    def _info(self, member: str, limit: int) -> zipfile.ZipInfo:
        if member not in self.names:
            raise ProjectError(f"{self.path} is damaged: missing {member}")
        info = self._zf.getinfo(member)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ProjectError(f"{self.path}: {member} uses zip compression method {info.compress_type}, not supported")
        if info.flag_bits & 0x1:
            raise ProjectError(f"{self.path}: {member} is encrypted")
        size = info.file_size
        if size > min(limit, self.budget):
            raise ProjectError(
                f"{self.path}: {member} declares {size:,} bytes, more than a project may hold here "
                f"({min(limit, self.budget):,} bytes left of {MAX_TOTAL_BYTES:,})"
            )
        if info.compress_type == zipfile.ZIP_DEFLATED and size > MAX_RATIO * info.compress_size + _SLACK:
            raise ProjectError(
                f"{self.path}: {member} would inflate from {info.compress_size:,} to {size:,} bytes "
                f"(more than {MAX_RATIO}x): refused"
            )
        return info

    def _stream(self, info: zipfile.ZipInfo, fn: Callable[[Any], Any]) -> Any:
        try:
            with self._zf.open(info) as fh:
                out = fn(fh)
                if fh.read(1):  # also makes zipfile check the CRC at the end
                    raise ValueError("more data than declared")
            return out
        except ProjectError:
            raise
        except Exception as exc:  # CRC errors, zlib errors, truncation, bad headers, MemoryError
            raise ProjectError(f"{self.path} is damaged: cannot read {info.filename} ({exc})") from exc
        finally:
            self.budget -= info.file_size

    def read_json(self, member: str) -> Any:
        """The member parsed as strict JSON (at most :data:`MAX_JSON_BYTES`)."""
        info = self._info(member, MAX_JSON_BYTES)
        raw = self._stream(info, lambda fh: _read_exactly(fh, info.file_size))
        return loads_json(raw, f"{self.path}: {member}")

    def read_array(self, member: str) -> np.ndarray:
        """The member as a numpy array: a ``.npy`` of a plain numeric dtype whose data is exactly its header's size."""
        info = self._info(member, self.budget)
        return self._stream(info, lambda fh: _read_npy(fh, info.file_size))


def _read_exactly(fh: Any, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    pos = 0
    while pos < n:
        got = fh.readinto(view[pos : pos + _CHUNK])
        if not got:
            raise ValueError(f"truncated: {pos} of {n} bytes")
        pos += got
    return buf


def _read_npy(fh: Any, member_size: int) -> np.ndarray:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:  # pragma: no cover - read_magic accepts only these
        raise ValueError(f"unsupported .npy version {version}")
    header = fh.tell()
    if dtype.kind not in _NPY_KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"dtype {dtype} is not a plain numeric type")
    if len(shape) > _MAX_NDIM or any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"invalid shape {shape}")
    nbytes = dtype.itemsize
    for n in shape:  # Python ints: no overflow
        nbytes *= n
    if nbytes != member_size - header:
        raise ValueError(
            f"header declares shape {shape} of {dtype} ({nbytes:,} bytes) but {member_size - header:,} follow"
        )
    data = _read_exactly(fh, nbytes)
    arr = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


# ---------------------------------------------------------------------- writing
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname())[:32] or "host"


def temporary_name(final: Path) -> Path:
    """A hidden temporary file next to ``final``: ``.<name>.<host>.<pid>.<random>.tmp`` (no second dot in front of
    names that are hidden already, such as the journal's)."""
    hidden = final.name if final.name.startswith(".") else f".{final.name}"
    return final.parent / f"{hidden}.{_host()}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"


def _fsync_dir(directory: Path) -> None:
    try:  # makes a rename durable (not possible on every platform)
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stage(final: Path, write: Callable[[Any], None]) -> Path:
    """Write a temporary file next to ``final`` through ``write(binary file)`` and flush it to disk; returns its
    path (removed again if writing fails)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def commit(tmp: Path, final: Path) -> os.stat_result:
    """Rename a staged temporary file over ``final`` (atomic; durable where directories can be synced); returns the
    new file's stat. On failure the temporary file is removed and ``final`` is untouched."""
    try:
        os.replace(tmp, final)
        st = os.stat(final)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(final.parent)
    return st


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def replace_atomically(final: Path, write: Callable[[Any], None]) -> os.stat_result:
    """:func:`stage` then :func:`commit`: a crash at any moment leaves either the old or the new complete file."""
    return commit(stage(final, write), final)


def stage_archive(path: Path, doc: Mapping[str, Any], doc_name: str, arrays: Mapping[str, np.ndarray]) -> Path:
    """:func:`stage` a zip archive: ``doc`` as JSON (deflated) and each array as a stored ``.npy`` member."""

    def write(fh: Any) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(doc_name, json.dumps(doc, indent=1, allow_nan=False), compress_type=zipfile.ZIP_DEFLATED)
            for name, arr in arrays.items():
                with zf.open(name, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)

    return stage(path, write)


def write_archive(
    path: Path, doc: Mapping[str, Any], doc_name: str, arrays: Mapping[str, np.ndarray]
) -> os.stat_result:
    """Write the archive atomically (:func:`stage_archive` then :func:`commit`); returns the file's stat."""
    return commit(stage_archive(path, doc, doc_name, arrays), path)


# ---------------------------------------------------------------------- stale temporaries
def _temp_pattern(final: Path) -> re.Pattern:
    # .<name>.<host>.<pid>.<random>.tmp, the same for the journal (.<name>.journal.<...>.tmp), and the older
    # .<name>.<random>.tmp of mkstemp.
    return re.compile(
        r"^\."
        + re.escape(final.name)
        + r"\.(?:journal\.)?(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp$"
    )


def writer_is_gone(host: str | None, pid: str | int | None) -> bool:
    """True when the process ``pid`` on this machine has ended (unknown hosts or pids count as alive)."""
    if host != _host() or pid is None:
        return False
    pid = int(pid)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, OverflowError):
        return False
    return False


def remove_stale_temporaries(final: Path, min_age: float = _STALE_AFTER) -> list[Path]:
    """Remove temporary files that interrupted saves of ``final`` left (a killed kernel): only files named like ours,
    and only those not written for ``min_age`` seconds or whose writer process on this machine has ended.
    Returns the removed paths; files that cannot be removed are left (this never fails)."""
    pattern = _temp_pattern(final)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - st.st_mtime > min_age or writer_is_gone(m.group("host"), m.group("pid")):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed
