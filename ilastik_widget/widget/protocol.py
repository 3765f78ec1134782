"""Typed custom messages between the browser and the kernel, with validation and one dispatcher.

Every browser->kernel message is a JSON object with a ``"type"`` and a correlation ``"id"`` (a non-negative
integer chosen by the browser). :func:`parse_message` turns the raw dict into one of the frozen request classes
below or raises :class:`MessageError` with a message in plain words; :class:`Dispatcher` routes requests to the
handlers and turns every failure into an ``{"type": "error", "id": ..., "message": ...}`` reply plus a log line,
so a malformed message never raises out of the comm handler.

Kernel->browser messages are built with the small helpers at the bottom (``chunks_reply``, ``refresh``, ...).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("ilastik_widget")

MAX_ID = 2**53 - 1  # JavaScript's largest safe integer
MAX_KEYS = 1024  # chunk keys in one request
MAX_KEY_LENGTH = 512
MAX_CANCEL_IDS = 4096
MAX_POINTS = 100_000  # points in one stroke
MAX_RADIUS = 61.0  # brush radius in pixels (the brush size slider goes up to 61)
MAX_COORDINATE = 2.0**40
MAX_NAME_LENGTH = 100
MAX_CLASSES = 64
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


class MessageError(ValueError):
    """A request that cannot be served; ``message`` is meant to be shown to the user."""

    def __init__(self, message: str, id: int | None = None):
        super().__init__(message)
        self.message = message
        self.id = id


# --------------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    id: int


@dataclass(frozen=True)
class ChunksRequest(Request):
    keys: tuple[str, ...]


@dataclass(frozen=True)
class CancelRequest(Request):
    ids: tuple[int, ...]


@dataclass(frozen=True)
class SeenRequest(Request):
    """Chunk keys the browser served from a push: they are still on screen (no reply)."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class StrokeRequest(Request):
    label: int
    erase: bool
    radius: float
    axes: tuple[int, int] | None
    points: np.ndarray  # (N, ndim) float64

    def __eq__(self, other: object) -> bool:  # numpy arrays do not compare as a bool
        return (
            isinstance(other, StrokeRequest)
            and (self.id, self.label, self.erase, self.radius, self.axes)
            == (other.id, other.label, other.erase, other.radius, other.axes)
            and np.array_equal(self.points, other.points)
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class UndoRequest(Request):
    pass


@dataclass(frozen=True)
class RedoRequest(Request):
    pass


@dataclass(frozen=True)
class RemoveStrokeRequest(Request):
    stroke_id: int


@dataclass(frozen=True)
class UpdateNowRequest(Request):
    pass


@dataclass(frozen=True)
class AddClassRequest(Request):
    name: str | None
    color: str | None


@dataclass(frozen=True)
class RemoveClassRequest(Request):
    label: int


@dataclass(frozen=True)
class RenameClassRequest(Request):
    label: int
    name: str


@dataclass(frozen=True)
class RecolorClassRequest(Request):
    label: int
    color: str


@dataclass(frozen=True)
class SourceFallbackRequest(Request):
    """The browser could not load ``layer`` from ``url`` (``message`` says why) and shows its fallback, the layer
    served by the kernel (no reply)."""

    layer: str
    url: str
    message: str


# ------------------------------------------------------------------------------------------------ field checks


def _field(content: dict, name: str, id: int | None, *, optional: bool = False, default: Any = None) -> Any:
    if name not in content or content[name] is None:
        if optional:
            return default
        raise MessageError(f"the message has no '{name}' field", id)
    return content[name]


def check_int(value: Any, name: str, lo: int, hi: int, id: int | None = None) -> int:
    """An integer in [lo, hi]; floats with an integral value are accepted, bools are not."""
    if isinstance(value, bool):
        raise MessageError(f"'{name}' must be a whole number, not {value!r}", id)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise MessageError(f"'{name}' must be a whole number, not {_short(value)}", id)
    if not lo <= value <= hi:
        raise MessageError(f"'{name}' must be between {lo} and {hi}, not {value}", id)
    return value


def check_float(value: Any, name: str, lo: float, hi: float, id: int | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"'{name}' must be a number, not {_short(value)}", id)
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise MessageError(f"'{name}' must be between {lo:g} and {hi:g}, not {value!r}", id)
    return value


def check_bool(value: Any, name: str, id: int | None = None) -> bool:
    if not isinstance(value, bool):
        raise MessageError(f"'{name}' must be true or false, not {_short(value)}", id)
    return value


def check_name(value: Any, name: str = "name", id: int | None = None) -> str:
    if not isinstance(value, str):
        raise MessageError(f"'{name}' must be text, not {_short(value)}", id)
    value = value.strip()
    if not value:
        raise MessageError(f"'{name}' must not be empty", id)
    if len(value) > MAX_NAME_LENGTH:
        raise MessageError(f"'{name}' is too long ({len(value)} characters, at most {MAX_NAME_LENGTH})", id)
    return value


def check_color(value: Any, name: str = "color", id: int | None = None) -> str:
    if not isinstance(value, str) or not COLOR_RE.match(value):
        raise MessageError(f"'{name}' must be a colour like '#ff8800', not {_short(value)}", id)
    return value.lower()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_points(value: Any, id: int, ndim: int | None) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise MessageError(f"'points' must be a list of points, not {_short(value)}", id)
    if not value:
        raise MessageError("a stroke needs at least one point", id)
    if len(value) > MAX_POINTS:
        raise MessageError(f"a stroke has at most {MAX_POINTS} points, this one has {len(value)}", id)
    width = ndim
    for p in value:
        if not isinstance(p, (list, tuple)):
            raise MessageError(f"each point must be a list of coordinates, not {_short(p)}", id)
        if width is None:
            width = len(p)
        if len(p) != width:
            raise MessageError(f"each point must have {width} coordinates, one has {len(p)}", id)
        for c in p:
            if isinstance(c, bool) or not isinstance(c, (int, float)):
                raise MessageError(f"point coordinates must be numbers, not {_short(c)}", id)
    if width not in (2, 3):
        raise MessageError(f"points must have 2 or 3 coordinates, not {width}", id)
    pts = np.asarray(value, dtype=np.float64).reshape(len(value), width)
    if not np.all(np.isfinite(pts)) or np.any(np.abs(pts) > MAX_COORDINATE):
        raise MessageError("point coordinates must be finite numbers of sensible size", id)
    return pts


# ----------------------------------------------------------------------------------------------------- parsing

REQUEST_TYPES = (
    "chunks",
    "seen",
    "cancel",
    "stroke",
    "undo",
    "redo",
    "remove-stroke",
    "update-now",
    "add-class",
    "remove-class",
    "rename-class",
    "recolor-class",
    "source-fallback",
)


def message_id(content: Any) -> int | None:
    """The correlation id of a raw message if it has a valid one, else None (for error replies)."""
    if isinstance(content, dict):
        value = content.get("id")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
            return value
    return None


def parse_message(
    content: Any, buffers: list | None = None, *, ndim: int | None = None, n_classes: int | None = None
) -> Request:
    """Validate a raw browser->kernel message and return its typed request.

    ``ndim`` (spatial dimensions of the image) and ``n_classes`` tighten the checks of strokes and class numbers.
    Raises :class:`MessageError` naming the offending field.
    """
    if not isinstance(content, dict):
        raise MessageError(f"a message must be a JSON object, not {_short(content)}")
    kind = content.get("type")
    if not isinstance(kind, str):
        raise MessageError("the message has no 'type'", message_id(content))
    if "id" not in content:
        raise MessageError(f"the '{kind}' message has no 'id'")
    id = check_int(content["id"], "id", 0, MAX_ID)
    max_label = n_classes if n_classes is not None else MAX_CLASSES

    if kind in ("chunks", "seen"):
        keys = _field(content, "keys", id)
        if not isinstance(keys, list):
            raise MessageError(f"'keys' must be a list of strings, not {_short(keys)}", id)
        if len(keys) > MAX_KEYS:
            raise MessageError(f"at most {MAX_KEYS} chunk keys per message, got {len(keys)}", id)
        for k in keys:
            if not isinstance(k, str) or not k or len(k) > MAX_KEY_LENGTH:
                raise MessageError(f"chunk keys must be non-empty strings, not {_short(k)}", id)
        return (ChunksRequest if kind == "chunks" else SeenRequest)(id, tuple(keys))
    if kind == "cancel":
        ids = _field(content, "ids", id)
        if not isinstance(ids, list) or len(ids) > MAX_CANCEL_IDS:
            raise MessageError("'ids' must be a list of request ids", id)
        return CancelRequest(id, tuple(check_int(i, "ids", 0, MAX_ID, id) for i in ids))
    if kind == "stroke":
        label = check_int(_field(content, "label", id), "label", 1, max_label, id)
        erase = check_bool(_field(content, "erase", id, optional=True, default=False), "erase", id)
        radius = check_float(_field(content, "radius", id), "radius", 0.0, MAX_RADIUS, id)
        axes_raw = _field(content, "axes", id, optional=True)
        axes = None
        if axes_raw is not None:
            if not isinstance(axes_raw, (list, tuple)) or len(axes_raw) != 2:
                raise MessageError(f"'axes' must be two axis numbers, not {_short(axes_raw)}", id)
            top = (ndim or 3) - 1
            axes = (check_int(axes_raw[0], "axes", 0, top, id), check_int(axes_raw[1], "axes", 0, top, id))
            if axes[0] == axes[1]:
                raise MessageError("the two 'axes' of a stroke must differ", id)
        points = _check_points(_field(content, "points", id), id, ndim)
        return StrokeRequest(id, label, erase, radius, axes, points)
    if kind == "undo":
        return UndoRequest(id)
    if kind == "redo":
        return RedoRequest(id)
    if kind == "remove-stroke":
        return RemoveStrokeRequest(id, check_int(_field(content, "stroke_id", id), "stroke_id", 0, MAX_ID, id))
    if kind == "update-now":
        return UpdateNowRequest(id)
    if kind == "add-class":
        name = _field(content, "name", id, optional=True)
        color = _field(content, "color", id, optional=True)
        return AddClassRequest(
            id,
            None if name is None else check_name(name, "name", id),
            None if color is None else check_color(color, "color", id),
        )
    if kind == "remove-class":
        return RemoveClassRequest(id, check_int(_field(content, "label", id), "label", 1, max_label, id))
    if kind == "rename-class":
        return RenameClassRequest(
            id,
            check_int(_field(content, "label", id), "label", 1, max_label, id),
            check_name(_field(content, "name", id), "name", id),
        )
    if kind == "recolor-class":
        return RecolorClassRequest(
            id,
            check_int(_field(content, "label", id), "label", 1, max_label, id),
            check_color(_field(content, "color", id), "color", id),
        )
    if kind == "source-fallback":
        texts = [_field(content, name, id) for name in ("layer", "url", "message")]
        if not all(isinstance(v, str) for v in texts):
            raise MessageError("'layer', 'url' and 'message' must be strings", id)
        layer, url, message = (v[:limit] for v, limit in zip(texts, (MAX_NAME_LENGTH, 2000, 1000)))
        return SourceFallbackRequest(id, layer, url, message)
    raise MessageError(f"unknown message type {_short(kind)}", id)


# -------------------------------------------------------------------------------------------------- dispatcher

Handler = Callable[[Any, list], None]


class Dispatcher:
    """Routes parsed requests to handlers by request class; every failure becomes an error reply and a log line.

    ``send(content, buffers)`` sends a message to the browser. ``context()`` returns keyword arguments for
    :func:`parse_message` (image dimensionality, number of classes) at the time of the message. ``on_error(text)``
    lets the owner show the error (status line); it must not raise.
    """

    def __init__(
        self,
        send: Callable[[dict, list], None],
        *,
        context: Callable[[], dict] | None = None,
        on_error: Callable[[str], None] | None = None,
    ):
        self._send = send
        self._context = context or (lambda: {})
        self._on_error = on_error
        self._handlers: dict[type, Handler] = {}

    def register(self, request_type: type, handler: Handler) -> None:
        self._handlers[request_type] = handler

    def dispatch(self, content: Any, buffers: list | None = None) -> Request | None:
        """Handle one raw message; never raises. Returns the parsed request (None if it was invalid)."""
        buffers = list(buffers or [])
        request = None
        try:
            request = parse_message(content, buffers, **self._context())
            handler = self._handlers.get(type(request))
            if handler is None:
                raise MessageError(f"messages of type '{content.get('type')}' are not handled here", request.id)
            handler(request, buffers)
        except MessageError as exc:
            self.reply_error(exc.id if exc.id is not None else message_id(content), exc.message, content)
        except Exception as exc:  # a bug or an unexpected failure: report it, keep the kernel alive
            log.exception("ilastik_widget: failed to handle message %s", _short(content))
            self.reply_error(message_id(content), describe_exception(exc), content)
        return request

    def reply_error(self, id: int | None, text: str, content: Any = None) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        log.warning("ilastik_widget: rejected %s message (id %s): %s", kind or "a", id, text)
        try:
            self._send(error(id, text), [])
        except Exception:  # pragma: no cover - the comm is gone
            log.exception("ilastik_widget: could not send an error reply")
        if self._on_error is not None:
            try:
                self._on_error(text)
            except Exception:  # pragma: no cover
                log.exception("ilastik_widget: error callback failed")


def describe_exception(exc: BaseException) -> str:
    """A message in words for an exception (its text, or its class name if it has none)."""
    text = str(exc).strip()
    if isinstance(exc, (ValueError, KeyError, IndexError, TypeError, RuntimeError)) and text:
        return text.strip("'\"") if isinstance(exc, KeyError) else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------- kernel->browser messages


def chunks_reply(id: int, found: list[bool]) -> dict:
    return {"type": "chunks-reply", "id": id, "found": list(found)}


def reply(kind: str, id: int, **fields: Any) -> dict:
    return {"type": f"{kind}-reply", "id": id, **fields}


def error(id: int | None, message: str) -> dict:
    return {"type": "error", "id": id, "message": message}


def refresh(
    layers: list[str], generation: int, keys: list[str] | None = None, missing: list[str] | None = None
) -> dict:
    """Layers to re-read; ``keys`` name the chunks sent along as buffers, in order, and ``missing`` the chunks that
    now have no data (the browser uses both instead of asking for those keys)."""
    return {
        "type": "refresh",
        "layers": list(layers),
        "generation": int(generation),
        "keys": list(keys or []),
        "missing": list(missing or []),
    }
