"""The browser <-> kernel message protocol, defined once.

Every message is a JSON object with a ``"type"``; browser->kernel requests also carry a correlation ``"id"`` (a
non-negative integer chosen by the browser) that the reply repeats. Each message type is a frozen dataclass below
whose fields carry their checks (:class:`Check`). :func:`parse_message` turns a raw dict into one of the request
classes or raises :class:`MessageError` with a sentence that names the field; :class:`Dispatcher` routes requests to
handlers and turns every failure into an :class:`ErrorReply` and a log line, so a malformed message never raises out of
the comm handler.

The TypeScript side (``js/src/protocol.ts``) is generated from this module, with the constants the browser shares with
the kernel (class limit, brush sizes, layer names and their default settings)::

    python -m ilastik_widget.widget.protocol_typescript > js/src/protocol.ts

and ``tests/test_protocol.py`` fails when the committed file differs from what this module generates.

Traits (``classes``, ``brush_size``, ``layers``...) are the shared state; messages are only for transient requests
(chunks, strokes, edits of the class list) and for the kernel's pushes (``refresh``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..core.limits import MAX_NAME_LENGTH
from .protocol_fields import (  # noqa: F401  (re-exported: the protocol's public names)
    AXES,
    BRUSH_SIZE_MAX,
    BRUSH_SIZE_MIN,
    CHUNK_KEYS,
    COLOR,
    COLOR_RE,
    ERASE,
    ID,
    IDS,
    KEYS,
    LABEL,
    MAX_CANCEL_IDS,
    MAX_COORDINATE,
    MAX_ID,
    MAX_KEYS,
    MAX_STROKE_POINTS,
    MAX_STROKE_RADIUS,
    MODES,
    NAME,
    OPTIONAL_COLOR,
    OPTIONAL_COUNT,
    OPTIONAL_FLAG,
    OPTIONAL_NAME,
    OPTIONAL_NAMES,
    OPTIONAL_OBJECT,
    OPTIONAL_POSITION,
    OPTIONAL_REGION,
    OPTIONAL_SIGMA,
    OPTIONAL_TEXT,
    OPTIONAL_UNIT,
    PATH,
    POINTS,
    RADIUS,
    STROKE_ID,
    UNIT,
    Check,
    Context,
    MessageError,
    _axes,
    _chunk_keys,
    _field,
    _ids,
    _keys,
    _label,
    _list,
    _points,
    _position,
    _region,
    _short,
    _text,
    check_bool,
    check_color,
    check_float,
    check_int,
    check_name,
)

log = logging.getLogger("ilastik_widget")

# ----------------------------------------------------------------------------------------------- browser -> kernel


@dataclass(frozen=True)
class Request:
    """A browser->kernel message; ``TYPE`` is its ``"type"``."""

    TYPE: ClassVar[str] = ""
    #: Whether the kernel answers it (with a reply of type ``"<TYPE>-reply"`` or an :class:`ErrorReply`).
    REPLIED: ClassVar[bool] = True
    id: int = _field(ID)


@dataclass(frozen=True)
class ChunksRequest(Request):
    """Zarr keys the viewer reads (one request per animation frame); the reply carries one buffer per found key."""

    TYPE: ClassVar[str] = "chunks"
    keys: tuple[str, ...] = _field(CHUNK_KEYS)


@dataclass(frozen=True)
class SeenRequest(Request):
    """Chunk keys the browser took from a refresh and still shows: the next push keeps them up to date."""

    TYPE: ClassVar[str] = "seen"
    REPLIED: ClassVar[bool] = False
    keys: tuple[str, ...] = _field(KEYS)


@dataclass(frozen=True)
class CancelRequest(Request):
    """Chunk requests the browser no longer needs (skipped if not started)."""

    TYPE: ClassVar[str] = "cancel"
    REPLIED: ClassVar[bool] = False
    ids: tuple[int, ...] = _field(IDS)


@dataclass(frozen=True, eq=False)
class StrokeRequest(Request):
    """A brush stroke painted (or erased) in the browser: points in array index order, radius in pixels of the
    panel's plane (``axes``, the two array axes of the plane; the panel's nearest axis-aligned plane)."""

    TYPE: ClassVar[str] = "stroke"
    label: int = _field(LABEL)
    radius: float = _field(RADIUS)
    points: np.ndarray = _field(POINTS)
    erase: bool = _field(ERASE, default=False)
    axes: tuple[int, int] | None = _field(AXES, default=None)

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
    """Undo the last addition or removal of a stroke."""

    TYPE: ClassVar[str] = "undo"


@dataclass(frozen=True)
class RedoRequest(Request):
    """Redo the last undone action."""

    TYPE: ClassVar[str] = "redo"


@dataclass(frozen=True)
class RemoveStrokeRequest(Request):
    """Remove the stroke ``stroke_id`` (undoable)."""

    TYPE: ClassVar[str] = "remove-stroke"
    stroke_id: int = _field(STROKE_ID)


@dataclass(frozen=True)
class UpdateNowRequest(Request):
    """Train on the current labels now (the panel's "Update now" while live update is off)."""

    TYPE: ClassVar[str] = "update-now"


@dataclass(frozen=True)
class StopRequest(Request):
    """Stop the work under way (training, predictions being computed): the panel's Stop button."""

    TYPE: ClassVar[str] = "stop"


@dataclass(frozen=True)
class AddClassRequest(Request):
    """Add a class (the kernel names and colours it when ``name`` or ``color`` is missing)."""

    TYPE: ClassVar[str] = "add-class"
    name: str | None = _field(OPTIONAL_NAME, default=None)
    color: str | None = _field(OPTIONAL_COLOR, default=None)


@dataclass(frozen=True)
class RemoveClassRequest(Request):
    """Remove class ``label`` and its strokes; later classes are renumbered down."""

    TYPE: ClassVar[str] = "remove-class"
    label: int = _field(LABEL)


@dataclass(frozen=True)
class RenameClassRequest(Request):
    """Rename class ``label``."""

    TYPE: ClassVar[str] = "rename-class"
    label: int = _field(LABEL)
    name: str = _field(NAME)


@dataclass(frozen=True)
class RecolorClassRequest(Request):
    """Change the colour (``"#rrggbb"``) of class ``label``."""

    TYPE: ClassVar[str] = "recolor-class"
    label: int = _field(LABEL)
    color: str = _field(COLOR)


@dataclass(frozen=True)
class SourceFallbackRequest(Request):
    """The browser could not load ``layer`` from ``url`` (``message`` says why) and shows its fallback, the layer
    served by the kernel."""

    TYPE: ClassVar[str] = "source-fallback"
    REPLIED: ClassVar[bool] = False
    layer: str = _field(Check(_text(MAX_NAME_LENGTH), "string"))
    url: str = _field(Check(_text(2000), "string"))
    message: str = _field(Check(_text(1000), "string"))


@dataclass(frozen=True)
class ObjectsRequest(Request):
    """Find the objects of class ``label`` as ``IlastikWidget.objects`` does (sizes and sigma in voxels, ``region``
    [[start, stop], ...] in array order); the reply comes when they are computed."""

    TYPE: ClassVar[str] = "objects"
    label: int = _field(LABEL)
    threshold: float = _field(UNIT)
    low: float | None = _field(OPTIONAL_UNIT, default=None)
    min_size: int | None = _field(OPTIONAL_COUNT, default=None)
    max_size: int | None = _field(OPTIONAL_COUNT, default=None)
    smooth: float | None = _field(OPTIONAL_SIGMA, default=None)
    split: bool = _field(OPTIONAL_FLAG, default=False)
    region: tuple[tuple[int, int], ...] | None = _field(OPTIONAL_REGION, default=None)


@dataclass(frozen=True)
class ObjectRowRequest(Request):
    """The table row of the last objects' object at ``position`` (array order, voxels) or numbered ``object``."""

    TYPE: ClassVar[str] = "object-row"
    position: tuple[float, ...] | None = _field(OPTIONAL_POSITION, default=None)
    object: int | None = _field(OPTIONAL_OBJECT, default=None)


@dataclass(frozen=True)
class ExportRequest(Request):
    """Write the results for the image to ``path`` as ``IlastikWidget.export`` does; the reply comes when done."""

    TYPE: ClassVar[str] = "export"
    path: str = _field(PATH)
    outputs: tuple[str, ...] | None = _field(OPTIONAL_NAMES, default=None)
    format: str | None = _field(OPTIONAL_TEXT, default=None)
    overwrite: bool = _field(OPTIONAL_FLAG, default=False)


REQUESTS: tuple[type[Request], ...] = (
    ChunksRequest,
    SeenRequest,
    CancelRequest,
    StrokeRequest,
    UndoRequest,
    RedoRequest,
    RemoveStrokeRequest,
    UpdateNowRequest,
    StopRequest,
    AddClassRequest,
    RemoveClassRequest,
    RenameClassRequest,
    RecolorClassRequest,
    SourceFallbackRequest,
    ObjectsRequest,
    ObjectRowRequest,
    ExportRequest,
)
_BY_TYPE = {r.TYPE: r for r in REQUESTS}
REQUEST_TYPES = tuple(_BY_TYPE)


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

    Parameters
    ----------
    content : Any
        The decoded JSON of the message.
    buffers : list, optional
        Its binary buffers (no request carries any today).
    ndim, n_classes : int, optional
        Spatial dimensions of the image and number of classes: they tighten the checks of points, axes and labels.

    Raises
    ------
    MessageError
        Naming the offending field, with the request's id when it has a valid one.
    """
    if not isinstance(content, dict):
        raise MessageError(f"a message must be a JSON object, not {_short(content)}")
    kind = content.get("type")
    if not isinstance(kind, str):
        raise MessageError("the message has no 'type'", message_id(content))
    if "id" not in content:
        raise MessageError(f"the '{kind[:60]}' message has no 'id'")
    id = check_int(content["id"], "id", 0, MAX_ID)
    request_type = _BY_TYPE.get(kind)
    if request_type is None:
        raise MessageError(f"unknown message type {_short(kind)}", id)
    context = Context(ndim=ndim, n_classes=n_classes)
    values: dict[str, Any] = {"id": id}
    for f in dataclasses.fields(request_type):
        if f.name == "id":
            continue
        check: Check = f.metadata["check"]
        raw = content.get(f.name)
        if raw is None:
            if not check.optional:
                raise MessageError(f"the message has no '{f.name}' field", id)
            continue
        values[f.name] = check.parse(raw, f.name, id, context)
    return request_type(**values)


# ----------------------------------------------------------------------------------------------- kernel -> browser


@dataclass(frozen=True)
class KernelMessage:
    """A kernel->browser message; :meth:`to_json` gives the content to send."""

    TYPE: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """The content to send: ``type`` and every field (tuples as lists)."""
        out: dict[str, Any] = {"type": self.TYPE}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class ChunksReply(KernelMessage):
    """``found[i]`` says whether ``keys[i]`` of the request has data; the buffers hold the found ones, in order."""

    TYPE: ClassVar[str] = "chunks-reply"
    id: int
    found: tuple[bool, ...]


@dataclass(frozen=True)
class Reply(KernelMessage):
    """The reply to a request without a result of its own (``type`` is ``"<request type>-reply"``)."""

    id: int
    request: str = field(default="", metadata={"ts": False})

    def to_json(self) -> dict[str, Any]:
        """The content to send, of type ``"<request type>-reply"``."""
        out = super().to_json()
        out["type"] = f"{out.pop('request')}-reply"
        return out


@dataclass(frozen=True)
class StrokeReply(KernelMessage):
    """The id of the stroke a ``stroke`` request added."""

    TYPE: ClassVar[str] = "stroke-reply"
    id: int
    stroke_id: int


@dataclass(frozen=True)
class ChangedReply(KernelMessage):
    """Reply to undo or redo: whether there was anything to undo or redo."""

    id: int
    changed: bool
    request: str = field(default="undo", metadata={"ts": False})

    def to_json(self) -> dict[str, Any]:
        """The content to send, of type ``"undo-reply"`` or ``"redo-reply"``."""
        out = super().to_json()
        out["type"] = f"{out.pop('request')}-reply"
        return out


@dataclass(frozen=True)
class AddClassReply(KernelMessage):
    """The label of the class an ``add-class`` request added."""

    TYPE: ClassVar[str] = "add-class-reply"
    id: int
    label: int


@dataclass(frozen=True)
class ObjectsReply(KernelMessage):
    """``count`` objects, served as version ``version`` of the objects array."""

    TYPE: ClassVar[str] = "objects-reply"
    id: int
    count: int
    version: int


@dataclass(frozen=True)
class ObjectRowReply(KernelMessage):
    """The object asked for (0 and ``row`` null when there is none) and its table row (column -> value)."""

    TYPE: ClassVar[str] = "object-row-reply"
    id: int
    object: int
    row: dict[str, Any] | None


@dataclass(frozen=True)
class ExportReply(KernelMessage):
    """The paths of the files and folders written."""

    TYPE: ClassVar[str] = "export-reply"
    id: int
    written: tuple[str, ...]


@dataclass(frozen=True)
class ErrorReply(KernelMessage):
    """A request failed (``id`` is null when the message had no valid id); ``message`` is in words."""

    TYPE: ClassVar[str] = "error"
    id: int | None
    message: str


@dataclass(frozen=True)
class Refresh(KernelMessage):
    """New data of ``layers``: ``keys[i]`` is the chunk in buffer i; the ``missing`` keys now have no data (their fill
    value). Together they cover every chunk of those layers the browser read or reported as seen since the last
    refresh, so the browser updates what it shows without asking."""

    TYPE: ClassVar[str] = "refresh"
    layers: tuple[str, ...] = field(metadata={"ts_type": "LayerName[]"})
    keys: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------------ dispatcher

Handler = Callable[[Any, list], None]


class Dispatcher:
    """Routes parsed requests to handlers by request class; every failure becomes an error reply and a log line.

    Parameters
    ----------
    send : callable
        ``send(message, buffers)`` sends a :class:`KernelMessage` to the browser.
    context : callable, optional
        Returns the :class:`Context` (image dimensionality, number of classes) at the time of a message.
    on_error : callable, optional
        ``on_error(text)`` lets the owner show the error (status line); it must not raise.
    """

    def __init__(
        self,
        send: Callable[[KernelMessage, list], None],
        *,
        context: Callable[[], Context] | None = None,
        on_error: Callable[[str], None] | None = None,
    ):
        self._send = send
        self._context = context or Context
        self._on_error = on_error
        self._handlers: dict[type, Handler] = {}

    def register(self, request_type: type[Request], handler: Handler) -> None:
        """Handle requests of ``request_type`` with ``handler(request, buffers)``."""
        self._handlers[request_type] = handler

    def dispatch(self, content: Any, buffers: list | None = None) -> Request | None:
        """Handle one raw message; never raises. Returns the parsed request (None if it was invalid)."""
        buffers = list(buffers or [])
        request = None
        try:
            context = self._context()
            request = parse_message(content, buffers, ndim=context.ndim, n_classes=context.n_classes)
            handler = self._handlers.get(type(request))
            if handler is None:
                raise MessageError(f"messages of type '{request.TYPE}' are not handled here", request.id)
            handler(request, buffers)
        except MessageError as exc:
            self.reply_error(exc.id if exc.id is not None else message_id(content), exc.message, content)
        except Exception as exc:  # a bug or an unexpected failure: report it, keep the kernel alive
            log.exception("ilastik_widget: failed to handle message %s", _short(content))
            self.reply_error(message_id(content), describe_exception(exc), content)
        return request

    def reply_error(self, id: int | None, text: str, content: Any = None) -> None:
        """Answer request ``id`` with an error message saying ``text``, log it and pass it to
        ``on_error``; never raises."""
        kind = content.get("type") if isinstance(content, dict) else None
        log.warning(
            "ilastik_widget: rejected %s message (id %s): %s", _short(kind) if kind is not None else "a", id, text
        )
        try:
            self._send(ErrorReply(id, text), [])
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
