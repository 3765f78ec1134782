"""The browser's requests to a widget: one handler per message type of the protocol, each applying the request
through the widget's Python API (so the browser can do nothing Python cannot) and replying."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import objects as results
from .protocol import (
    AddClassReply,
    AddClassRequest,
    CancelRequest,
    ChangedReply,
    ChunksRequest,
    Context,
    Dispatcher,
    MessageError,
    RecolorClassRequest,
    RedoRequest,
    RemoveClassRequest,
    RemoveStrokeRequest,
    RenameClassRequest,
    Reply,
    Request,
    SeenRequest,
    SourceFallbackRequest,
    StopRequest,
    StrokeReply,
    StrokeRequest,
    UndoRequest,
    UpdateNowRequest,
    describe_exception,
)

if TYPE_CHECKING:
    from .widget import IlastikWidget

log = logging.getLogger("ilastik_widget")


class BrowserRequests:
    """Parses, checks and handles every message from the browser views of one widget (never raises)."""

    def __init__(self, widget: IlastikWidget):
        self.widget = widget
        self.dispatcher = Dispatcher(widget._send_message, context=self._context, on_error=widget._live.status.error)
        self._register_handlers()

    def dispatch(self, content: Any, buffers: list | None = None) -> Request | None:
        """Parse, check and handle one message from the browser; returns the request (None
        when it was rejected with an error reply). Never raises."""
        return self.dispatcher.dispatch(content, buffers)

    def _context(self) -> Context:
        return Context(ndim=len(self.widget.session.spatial_shape), n_classes=len(self.widget.session.classes))

    def _register_handlers(self) -> None:
        d = self.dispatcher
        d.register(ChunksRequest, lambda r, b: self.widget._requests.submit(r))
        d.register(SeenRequest, lambda r, b: self.widget.chunk_server.note_keys(r.keys))
        d.register(CancelRequest, lambda r, b: self.widget._requests.cancel(r))
        d.register(StrokeRequest, self._on_stroke)
        d.register(
            UndoRequest, lambda r, b: self.widget._send_message(ChangedReply(r.id, self.widget.undo(), "undo"), [])
        )
        d.register(
            RedoRequest, lambda r, b: self.widget._send_message(ChangedReply(r.id, self.widget.redo(), "redo"), [])
        )
        d.register(RemoveStrokeRequest, self._on_remove_stroke)
        d.register(UpdateNowRequest, lambda r, b: (self.widget.update_now(), self._reply(r)))
        d.register(StopRequest, lambda r, b: (self.widget.stop(), self._reply(r)))
        d.register(AddClassRequest, self._on_add_class)
        d.register(RemoveClassRequest, self._on_remove_class)
        d.register(RenameClassRequest, lambda r, b: (self.widget.rename_class(r.label, r.name), self._reply(r)))
        d.register(RecolorClassRequest, lambda r, b: (self.widget.recolor_class(r.label, r.color), self._reply(r)))
        d.register(SourceFallbackRequest, self._on_source_fallback)
        results.register(d, self.widget)  # objects, object-row, export

    def _reply(self, request: Any) -> None:
        self.widget._send_message(Reply(request.id, request.TYPE), [])

    def _on_stroke(self, request: StrokeRequest, _buffers: list) -> None:
        try:
            sid = self.widget.session.add_stroke(
                request.label, request.points, radius=request.radius, axes=request.axes, erase=request.erase
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise MessageError(f"Stroke not added: {describe_exception(exc)}", request.id) from None
        self.widget._live.status.clear_error()
        self.widget._send_message(StrokeReply(request.id, int(sid)), [])

    def _on_remove_stroke(self, request: RemoveStrokeRequest, _buffers: list) -> None:
        if not any(s.id == request.stroke_id for s in self.widget.session.strokes):
            raise MessageError(f"there is no stroke {request.stroke_id}", request.id)
        self.widget.remove_stroke(request.stroke_id)
        self._reply(request)

    def _on_add_class(self, request: AddClassRequest, _buffers: list) -> None:
        self.widget._send_message(AddClassReply(request.id, self.widget.add_class(request.name, request.color)), [])

    def _on_remove_class(self, request: RemoveClassRequest, _buffers: list) -> None:
        self.widget.remove_class(request.label)
        self._reply(request)

    def _on_source_fallback(self, request: SourceFallbackRequest, _buffers: list) -> None:
        text = (
            f"The browser could not load the {request.layer} layer from {request.url} ({request.message}); "
            "the kernel serves it instead."
        )
        log.warning("ilastik_widget: %s", text)
        self.widget.raw_fallback = text
        self.widget._live.status.show(text)
