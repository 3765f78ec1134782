"""The fields of the browser's messages: each field's check (types, ranges, sizes) and its TypeScript type, and the
limits the browser shares with the kernel. :mod:`~ilastik_widget.widget.protocol` declares the messages with them."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.limits import MAX_CLASSES, MAX_NAME_LENGTH
from ..serving.chunk_keys import MAX_KEY_LENGTH

#: JavaScript's largest safe integer: the largest id a request may carry.
MAX_ID = 2**53 - 1
#: Chunk keys in one ``chunks`` or ``seen`` request.
MAX_KEYS = 1024
MAX_CANCEL_IDS = 4096
#: Points in one stroke (the browser thins longer strokes to this many).
MAX_STROKE_POINTS = 50_000
#: Brush size: the diameter in pixels of the brush's footprint; the stroke's radius is ``(size - 1) / 2``.
BRUSH_SIZE_MIN, BRUSH_SIZE_MAX = 1, 61
MAX_STROKE_RADIUS = (BRUSH_SIZE_MAX - 1) / 2
#: Coordinates beyond this are not positions in any image (and would overflow the index arithmetic).
MAX_COORDINATE = 2.0**40
#: What the mouse does: paint with the active class, erase, or pan and zoom as in plain Neuroglancer.
MODES = ("paint", "erase", "navigate")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


class MessageError(ValueError):
    """A request that cannot be served; ``message`` is meant to be shown to the user."""

    def __init__(self, message: str, id: int | None = None):
        super().__init__(message)
        self.message = message
        self.id = id


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(value: Any, name: str, lo: int, hi: int, id: int | None = None) -> int:
    """An integer in [lo, hi]; floats with an integral value are accepted, bools are not."""
    if isinstance(value, bool):
        raise MessageError(f"'{name}' must be a whole number, not {value!r}", id)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise MessageError(f"'{name}' must be a whole number, not {_short(value)}", id)
    if not lo <= value <= hi:
        raise MessageError(f"'{name}' must be between {lo} and {hi}, not {_short(value)}", id)
    return value


def check_float(value: Any, name: str, lo: float, hi: float, id: int | None = None) -> float:
    """A finite number in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"'{name}' must be a number, not {_short(value)}", id)
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range, e.g. 10**400 from JSON
        raise MessageError(f"'{name}' must be between {lo:g} and {hi:g}, not {_short(value)}", id) from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise MessageError(f"'{name}' must be between {lo:g} and {hi:g}, not {_short(value)}", id)
    return number


def check_bool(value: Any, name: str, id: int | None = None) -> bool:
    """``value`` if it is true or false, else MessageError naming the field ``name``."""
    if not isinstance(value, bool):
        raise MessageError(f"'{name}' must be true or false, not {_short(value)}", id)
    return value


def check_name(value: Any, name: str = "name", id: int | None = None) -> str:
    """A class name: text, not blank, at most :data:`MAX_NAME_LENGTH` characters (surrounding space removed)."""
    if not isinstance(value, str):
        raise MessageError(f"'{name}' must be text, not {_short(value)}", id)
    value = value.strip()
    if not value:
        raise MessageError(f"'{name}' must not be empty", id)
    if len(value) > MAX_NAME_LENGTH:
        raise MessageError(f"'{name}' is too long ({len(value)} characters, at most {MAX_NAME_LENGTH})", id)
    return value


def check_color(value: Any, name: str = "color", id: int | None = None) -> str:
    """A colour ``"#rrggbb"``, returned in lower case."""
    if not isinstance(value, str) or not COLOR_RE.match(value):
        raise MessageError(f"'{name}' must be a colour like '#ff8800', not {_short(value)}", id)
    return value.lower()


@dataclass(frozen=True)
class Context:
    """What the checks need to know about the widget when a message arrives."""

    ndim: int | None = None
    n_classes: int | None = None


@dataclass(frozen=True)
class Check:
    """How one field is read from JSON: ``parse(value, name, id, context)`` returns the typed value or raises
    :class:`MessageError`; ``ts`` is its TypeScript type; an ``optional`` field may be missing or null."""

    parse: Callable[[Any, str, int, Context], Any]
    ts: str
    optional: bool = False


def _field(check: Check, default: Any = dataclasses.MISSING) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"check": check})
    return field(default=default, metadata={"check": check})


def _list(value: Any, name: str, id: int, most: int) -> list:
    if not isinstance(value, list):
        raise MessageError(f"'{name}' must be a list, not {_short(value)}", id)
    if len(value) > most:
        raise MessageError(f"'{name}' holds at most {most} items, this one {len(value)}", id)
    return value


def _keys(value: Any, name: str, id: int, _context: Context) -> tuple[str, ...]:
    for key in _list(value, name, id, MAX_KEYS):
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise MessageError(
                f"chunk keys must be non-empty strings of at most {MAX_KEY_LENGTH} characters, not {_short(key)}", id
            )
    return tuple(value)


def _chunk_keys(value: Any, name: str, id: int, _context: Context) -> tuple[str, ...]:
    """Keys of a ``chunks`` request: a malformed key is answered as not found, it does not fail the request."""
    return tuple(
        key if isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH else ""
        for key in _list(value, name, id, MAX_KEYS)
    )


def _ids(value: Any, name: str, id: int, _context: Context) -> tuple[int, ...]:
    return tuple(check_int(i, name, 0, MAX_ID, id) for i in _list(value, name, id, MAX_CANCEL_IDS))


def _label(value: Any, name: str, id: int, context: Context) -> int:
    return check_int(value, name, 1, context.n_classes or MAX_CLASSES, id)


def _axes(value: Any, name: str, id: int, context: Context) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise MessageError(f"'{name}' must be two axis numbers, not {_short(value)}", id)
    top = (context.ndim or 3) - 1
    axes = (check_int(value[0], name, 0, top, id), check_int(value[1], name, 0, top, id))
    if axes[0] == axes[1]:
        raise MessageError(f"the two '{name}' of a stroke must differ", id)
    return axes


def _points(value: Any, name: str, id: int, context: Context) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise MessageError(f"'{name}' must be a non-empty list of points, not {_short(value)}", id)
    if len(value) > MAX_STROKE_POINTS:
        raise MessageError(f"a stroke has at most {MAX_STROKE_POINTS} points, this one has {len(value)}", id)
    width = context.ndim
    for p in value:
        if not isinstance(p, list):
            raise MessageError(f"each point must be a list of coordinates, not {_short(p)}", id)
        if width is None:
            width = len(p)
        if len(p) != width:
            raise MessageError(f"each point must have {width} coordinates, one has {len(p)}", id)
        for c in p:
            check_float(c, "point coordinates", -MAX_COORDINATE, MAX_COORDINATE, id)
    if width not in (2, 3):
        raise MessageError(f"points must have 2 or 3 coordinates, not {width}", id)
    return np.asarray(value, dtype=np.float64).reshape(len(value), width)


def _text(most: int) -> Callable[[Any, str, int, Context], str]:
    def parse(value: Any, name: str, id: int, _context: Context) -> str:
        if not isinstance(value, str):
            raise MessageError(f"'{name}' must be text, not {_short(value)}", id)
        return value[:most]

    return parse


ID = Check(lambda v, n, i, c: check_int(v, n, 0, MAX_ID, i), "number")
KEYS = Check(_keys, "string[]")
CHUNK_KEYS = Check(_chunk_keys, "string[]")
IDS = Check(_ids, "number[]")
LABEL = Check(_label, "number")
STROKE_ID = ID
NAME = Check(lambda v, n, i, c: check_name(v, n, i), "string")
OPTIONAL_NAME = Check(NAME.parse, "string", optional=True)
COLOR = Check(lambda v, n, i, c: check_color(v, n, i), "string")
OPTIONAL_COLOR = Check(COLOR.parse, "string", optional=True)
RADIUS = Check(lambda v, n, i, c: check_float(v, n, 0.0, MAX_STROKE_RADIUS, i), "number")
ERASE = Check(lambda v, n, i, c: check_bool(v, n, i), "boolean", optional=True)
AXES = Check(_axes, "[number, number]", optional=True)
POINTS = Check(_points, "number[][]")


def _region(value: Any, name: str, id: int, context: Context) -> tuple[tuple[int, int], ...]:
    """``[[start, stop], ...]``: one half-open voxel range per spatial axis, array order."""
    ndim = context.ndim or (len(value) if isinstance(value, list) else 0)
    if not isinstance(value, list) or len(value) != ndim or ndim not in (2, 3):
        raise MessageError(f"'{name}' must be one [start, stop] per spatial axis, not {_short(value)}", id)
    spans = [_list(v, name, id, 2) for v in value]
    out = tuple((check_int(a, name, 0, MAX_ID, id), check_int(b, name, 1, MAX_ID, id)) for a, b in spans)
    if any(b <= a for a, b in out):
        raise MessageError(f"'{name}' needs start < stop on every axis, not {_short(value)}", id)
    return out


def _position(value: Any, name: str, id: int, context: Context) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != (context.ndim or len(value)) or len(value) not in (2, 3):
        raise MessageError(f"'{name}' must be one coordinate per spatial axis, not {_short(value)}", id)
    return tuple(check_float(v, name, -MAX_COORDINATE, MAX_COORDINATE, id) for v in value)


UNIT = Check(lambda v, n, i, c: check_float(v, n, 0.0, 1.0, i), "number")
OPTIONAL_UNIT = Check(UNIT.parse, "number", optional=True)
OPTIONAL_COUNT = Check(lambda v, n, i, c: check_int(v, n, 0, MAX_ID, i), "number", optional=True)
OPTIONAL_SIGMA = Check(lambda v, n, i, c: check_float(v, n, 0.0, 100.0, i), "number", optional=True)
OPTIONAL_REGION = Check(_region, "[number, number][]", optional=True)
OPTIONAL_POSITION = Check(_position, "number[]", optional=True)
OPTIONAL_OBJECT = Check(lambda v, n, i, c: check_int(v, n, 1, 2**32 - 1, i), "number", optional=True)
PATH = Check(_text(4096), "string")
OPTIONAL_NAMES = Check(_keys, "string[]", optional=True)
OPTIONAL_TEXT = Check(_text(MAX_NAME_LENGTH), "string", optional=True)
OPTIONAL_FLAG = Check(ERASE.parse, "boolean", optional=True)
