"""The autosave journal: changes appended next to a project file, so that saving a stroke costs the stroke.

An autosaved project is a complete project file (``name.ilastikw``, rewritten now and then) plus a hidden journal
``.name.ilastikw.journal`` of the changes since. The journal is a text file of lines ``<crc32 hex> <json>``: a header
naming the autosave it belongs to, then one record per change. A record holds the small state in full (classes,
features, classifier settings...) and the strokes as a change of the stroke list: keep the first ``keep`` strokes of
the previous state, then ``then`` (stroke ids), with the full data of every stroke that was not in the previous state
or changed. Records are numbered; the project file says up to which number it already holds them
(``autosave.journal_seq``), so a project file and a journal written in any order, and a kernel killed at any moment,
load as the newest state that reached the disk. A torn last line (a write cut by the kill) is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .archive import ProjectError, _host, loads_json, replace_atomically

__all__ = [
    "JOURNAL_FORMAT",
    "MAX_JOURNAL_BYTES",
    "Journal",
    "apply_records",
    "journal_path",
    "make_record",
    "read_journal",
]

log = logging.getLogger("ilastik_widget")

JOURNAL_FORMAT = "ilastik-widget-journal"
#: Largest journal read (it is folded into the project file long before: see AutoSaver's ``compact_bytes``).
MAX_JOURNAL_BYTES = 256 * 2**20


def journal_path(project: Path) -> Path:
    """The journal of the autosaved project ``project``: ``.<name>.journal`` next to it."""
    return project.parent / f".{project.name}.journal"


def _line(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _stroke_record(s: Any, with_points: bool) -> dict:
    if getattr(s, "kind", "stroke") == "import":  # imported labels: their runs as lists
        rec = s.to_dict()
        del rec["id"]
        return rec
    rec = {"label": int(s.label), "radius": float(s.radius), "axes": [int(a) for a in s.axes], "erase": bool(s.erase)}
    if with_points:
        rec["points"] = np.asarray(s.points, np.float64).tolist()
    return rec


def make_record(seq: int, old: Sequence[Any], new: Sequence[Any], state: dict) -> dict:
    """The record that turns stroke list ``old`` into ``new`` (Stroke objects, which never change: a changed stroke
    is a new object), with the small ``state``; its cost follows the change, not the number of strokes."""
    keep = 0
    for a, b in zip(old, new):
        if a is not b:
            break
        keep += 1
    before = {s.id: s for s in old[keep:]}
    strokes = {}
    for s in new[keep:]:
        prev = before.get(s.id)
        if prev is not s:
            same_points = prev is not None and getattr(prev, "points", None) is getattr(s, "points", False)
            strokes[str(s.id)] = _stroke_record(s, with_points=not same_points)
    return {"seq": seq, "keep": keep, "then": [int(s.id) for s in new[keep:]], "strokes": strokes, "state": state}


class Journal:
    """Append-only writer of one autosave's journal (not thread-safe: the AutoSaver serialises calls).

    ``append`` writes one record with one ``write`` call and no flush to disk: a killed process loses nothing that
    was appended (the data is with the operating system); ``os.fsync(fd)`` makes it durable against power loss.
    """

    def __init__(self, project: Path, autosave_id: str) -> None:
        self.path = journal_path(project)
        self.header = {
            "journal": JOURNAL_FORMAT,
            "version": 1,
            "autosave_id": autosave_id,
            "host": _host(),
            "pid": os.getpid(),
        }
        self.nbytes = 0
        self.fd: int | None = None
        self._lines: list[tuple[int, bytes]] = []  # (seq, line) not yet folded into the project file

    def reset(self, after_seq: int) -> None:
        """Rewrite the journal atomically with the records after ``after_seq`` (those the project file lacks)."""
        self._lines = [(seq, line) for seq, line in self._lines if seq > after_seq]
        data = _line(self.header) + b"".join(line for _, line in self._lines)
        replace_atomically(self.path, lambda fh: fh.write(data))
        self.close()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.nbytes = len(data)

    def append(self, record: dict) -> int:
        """Append one record; returns its size in bytes."""
        line = _line(record)
        if self.fd is None:
            raise OSError(f"the journal {self.path} is not open")
        view = memoryview(line)
        while view:
            view = view[os.write(self.fd, view) :]
        self._lines.append((record["seq"], line))
        self.nbytes += len(line)
        return len(line)

    def intact(self) -> bool:
        """False when the journal file was removed or replaced under us (appends would go nowhere)."""
        try:
            return (
                self.fd is not None
                and os.fstat(self.fd).st_nlink > 0
                and os.path.samestat(os.fstat(self.fd), os.stat(self.path))
            )
        except OSError:
            return False

    def close(self, remove: bool = False) -> None:
        """Close the journal file; with ``remove`` also delete it."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _parse(data: bytes, path: Path) -> list[Any]:
    """The valid lines of a journal; a torn last line is dropped, a damaged line stops the reading (with a warning:
    the changes after it cannot be applied without it)."""
    lines = data.split(b"\n")
    out = []
    for i, line in enumerate(lines[:-1]):  # lines[-1] is what follows the last newline: empty or torn
        crc, _, body = line.partition(b" ")
        try:
            ok = len(crc) == 8 and int(crc, 16) == zlib.crc32(body)
        except ValueError:
            ok = False
        if not ok:
            msg = f"{path}: line {i + 1} of the autosave journal is damaged; changes after it are not loaded"
            warnings.warn(msg, stacklevel=4)
            log.warning("ilastik_widget: %s", msg)
            break
        out.append(loads_json(body, f"{path} line {i + 1}"))
    return out


def read_journal(project: Path, autosave_id: str, after_seq: int) -> list[dict]:
    """The records of the autosave ``autosave_id`` numbered after ``after_seq``, in order (none when there is no
    journal, or one of another autosave)."""
    path = journal_path(project)
    try:
        size = path.stat().st_size
    except OSError:
        return []
    if size > MAX_JOURNAL_BYTES:
        raise ProjectError(f"{path}: the autosave journal is {size:,} bytes, more than {MAX_JOURNAL_BYTES:,}")
    try:
        data = path.read_bytes()[:MAX_JOURNAL_BYTES]
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read the autosave journal ({exc})") from exc
    items = _parse(data, path)
    if not items or not isinstance(items[0], dict) or items[0].get("journal") != JOURNAL_FORMAT:
        return []
    if items[0].get("autosave_id") != autosave_id:
        return []  # another autosave's journal: the project file was saved since
    records: list[dict] = []
    for i, rec in enumerate(items[1:], start=2):
        if not isinstance(rec, dict) or isinstance(rec.get("seq"), bool) or not isinstance(rec.get("seq"), int):
            raise ProjectError(f"{path} is damaged: line {i} is not a journal record")
        if rec["seq"] <= after_seq:
            continue
        if rec["seq"] != after_seq + 1 + len(records):
            raise ProjectError(f"{path} is damaged: record {rec['seq']} follows {after_seq + len(records)}")
        records.append(rec)
    return records


def apply_records(path: Path, strokes: list[dict], state: dict, records: Sequence[dict]) -> tuple[list[dict], dict]:
    """Apply journal records to ``strokes`` (dicts with ``id`` and ``points`` arrays) and the small ``state``.

    Raises
    ------
    ProjectError
        For a record that does not fit the state before it.
    """
    for rec in records:
        where = f"{path}: journal record {rec.get('seq')}"
        keep, then, new = rec.get("keep"), rec.get("then"), rec.get("strokes")
        if (
            isinstance(keep, bool)
            or not isinstance(keep, int)
            or not 0 <= keep <= len(strokes)
            or not isinstance(then, list)
            or not isinstance(new, dict)
            or not isinstance(rec.get("state"), dict)
        ):
            raise ProjectError(f"{where} is damaged (keep/then/strokes/state)")
        before = {s["id"]: s for s in strokes[keep:]}
        out = strokes[:keep]
        for sid in then:
            if isinstance(sid, bool) or not isinstance(sid, int):
                raise ProjectError(f"{where}: stroke id {sid!r} is not an integer")
            data, prev = new.get(str(sid)), before.get(sid)
            if data is None:
                if prev is None:
                    raise ProjectError(f"{where}: stroke {sid} is neither in the state before nor in the record")
                out.append(prev)
                continue
            if not isinstance(data, dict):
                raise ProjectError(f"{where}: stroke {sid} is not an object")
            if data.get("kind") == "import":  # checked with the other entries when the annotations are built
                out.append({**data, "id": sid})
                continue
            stroke = {"id": sid, **{k: data.get(k) for k in ("label", "radius", "axes", "erase")}}
            if "points" in data:
                try:
                    pts = np.asarray(data["points"], dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise ProjectError(f"{where}: the points of stroke {sid} are not numbers ({exc})") from exc
                if pts.ndim != 2:
                    raise ProjectError(f"{where}: the points of stroke {sid} must be a list of coordinates")
                stroke["points"] = pts
            elif prev is not None and "points" in prev:
                stroke["points"] = prev["points"]
            else:
                raise ProjectError(f"{where}: stroke {sid} has no points")
            out.append(stroke)
        strokes = out
        state = {**state, **rec["state"]}
    return strokes, state
