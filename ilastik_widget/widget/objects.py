"""Objects, class insight and export in the widget: the Python API, the kernel-only traits the panel shows, and the
handlers of the browser's ``objects``, ``object-row`` and ``export`` requests.

:class:`WidgetResults` is a base of :class:`~ilastik_widget.widget.widget.IlastikWidget` (it keeps the widget class
small): ``w.objects(...)``, ``w.last_objects``, ``w.objects_table``, ``w.object_row(...)``, ``w.clear_objects()``,
``w.labelled_per_class()``, ``w.class_fractions(...)``, ``w.export(...)`` and ``w.export_ilp(...)``. Its traits are
written by the kernel only:

``objects_info``
    ``{}`` before any objects, else ``{"version", "count", "label", "class_name", "color", "params", "region",
    "columns", "total_area", "generation", "stale", "layer"}``: ``version`` is the objects array's number (the
    ``objects`` layer's URL carries it), ``params`` the extraction parameters (``ObjectParams.to_dict()``),
    ``region`` ``[[start, stop], ...]`` in array order, ``generation`` the predictions they were made from and
    ``stale`` whether the predictions changed since.
``class_insight``
    See :mod:`~ilastik_widget.widget.insight`.

The objects layer is added to ``source_info["layer_specs"]`` (a Neuroglancer ``segmentation`` layer named
``objects``, source ``mem://<widget>/objects/<version>/``) when objects are computed, with their metadata in
``source_info["metadata"]``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import traitlets as t

from ..serving.layer_specs import OBJECTS_LAYER
from . import state
from .export_task import ExportTask
from .insight import InsightUpdater
from .protocol import (
    Dispatcher,
    ErrorReply,
    ExportReply,
    ExportRequest,
    MessageError,
    ObjectRowReply,
    ObjectRowRequest,
    ObjectsReply,
    ObjectsRequest,
    describe_exception,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..core.objects import Objects
    from .widget import IlastikWidget

log = logging.getLogger("ilastik_widget")

#: The traits of this module (set by the kernel only).
RESULT_TRAITS = ("objects_info", "class_insight")


def json_value(value: Any) -> Any:
    """A table cell as JSON: Python int, float (None for NaN), bool or str."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return None if value is None else str(value)


def objects_summary(objects: Objects, session: Any, version: int) -> dict[str, Any]:
    """The ``objects_info`` trait of a result (see the module docstring)."""
    label = objects.params.label
    classes = session.classes
    cls = classes[label - 1] if label <= len(classes) else None
    region = [[int(o), int(o) + int(n)] for o, n in zip(objects.offset, objects.labels.shape)]
    return {
        "version": int(version),
        "count": len(objects),
        "label": int(label),
        "class_name": "" if cls is None else str(cls.name),
        "color": "" if cls is None else str(cls.color),
        "params": objects.params.to_dict(),
        "region": region,
        "columns": [str(c) for c in objects.table.columns],
        "total_area": int(objects.table["area"].sum()) if len(objects) else 0,
        "generation": int(session.generation),
        "stale": False,
        "layer": OBJECTS_LAYER,
    }


class WidgetResults(t.HasTraits):
    """Objects, class insight and export of an :class:`~ilastik_widget.widget.widget.IlastikWidget`."""

    objects_info = t.Dict().tag(sync=True)
    class_insight = t.Dict().tag(sync=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Called from the widget's own __init__ once its session, chunk server and live updater exist.
        self._results = ResultsController(self)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ objects
    def objects(
        self,
        label: int,
        threshold: float = 0.5,
        *,
        low: float | None = None,
        min_size: int = 10,
        max_size: int | None = None,
        smooth: float | Sequence[float] = 1.0,
        split: bool | float = False,
        region: Any = None,
    ) -> Objects:
        """Find the objects of class ``label`` and show them as the ``objects`` layer (see
        :meth:`~ilastik_widget.core.session.Session.objects` for the parameters and the result).

        The result is kept (:attr:`last_objects`, :attr:`objects_table`) and summarised in the ``objects_info``
        trait; the layer shows every object in its own colour. ``region="view"`` computes the region in view (see
        :mod:`~ilastik_widget.widget.insight`; the whole image when the browser has not said what it shows).

        Raises
        ------
        RuntimeError
            Before the session is trained.
        ValueError
            Bad parameters (thresholds outside [0, 1], low > threshold, min_size > max_size, a label beyond the
            classes or without prediction, a region outside the image). The widget then keeps its last objects.
        """
        if isinstance(region, str) and region == "view":
            region = self._results.insight.view_region()
        options = dict(low=low, min_size=min_size, max_size=max_size, smooth=smooth, split=split, region=region)
        return self._results.compute(label, threshold, **options)

    @property
    def last_objects(self) -> Objects | None:
        """The last result of :meth:`objects` (or of the panel's Objects button), None before any."""
        return self._results.last

    @property
    def objects_table(self) -> pd.DataFrame | None:
        """The table of :attr:`last_objects` (one row per object), None before any."""
        last = self._results.last
        return None if last is None else last.table

    def object_row(self, position: Sequence[float] | None = None, object: int | None = None) -> dict | None:
        """The table row (column -> value) of the last objects' object at ``position`` (array order, voxels) or
        numbered ``object``; None where there is no object."""
        return self._results.row(position, object)[1]

    def clear_objects(self) -> None:
        """Forget the last objects and remove the ``objects`` layer."""
        self._results.clear()

    # ------------------------------------------------------------------ class insight
    def labelled_per_class(self) -> pd.DataFrame:
        """Labelled voxels of every class (see :meth:`~ilastik_widget.core.session.Session.labelled_per_class`)."""
        return self._results.widget.session.labelled_per_class()

    def class_fractions(self, region: Any = None, method: str = "argmax") -> pd.DataFrame:
        """Predicted share of every class in ``region`` (default the whole image; ``"view"`` for the region in view,
        see :mod:`~ilastik_widget.widget.insight`). See
        :meth:`~ilastik_widget.core.session.Session.class_fractions`."""
        if isinstance(region, str) and region == "view":
            region = self._results.insight.view_region()
        return self._results.widget.session.class_fractions(region, method)

    # ------------------------------------------------------------------ export
    def export(
        self,
        path: str | os.PathLike,
        outputs: Sequence[str] = ("probabilities", "segmentation", "objects"),
        *,
        objects: dict | None = None,
        format: str = "zarr",
        overwrite: bool = False,
        wait: bool = True,
    ) -> dict | Future:
        """Write the results for the session's own image (see :func:`~ilastik_widget.io.export.export_session`),
        with progress in the ``progress`` trait and the status line; :meth:`stop` (or the panel's Stop) ends it and
        removes what it wrote.

        ``objects`` are the parameters of the objects (``{"label": 2, "threshold": 0.5, ...}``); by default those
        of :attr:`last_objects`. With ``wait=False`` it returns at once with a Future of the result.
        """
        future = self._results.export.start(path, outputs, objects=objects, format=format, overwrite=overwrite)
        return future.result() if wait else future

    def export_ilp(self, path: str | os.PathLike, **options: Any) -> Path:
        """Write an ilastik Pixel Classification project (see :func:`~ilastik_widget.io.export.export_ilp`)."""
        from ..io.export import export_ilp

        return export_ilp(self._results.widget.session, path, **options)

    def close(self) -> None:
        """Stop the objects, class insight and export work, then close the widget."""
        results = getattr(self, "_results", None)
        if results is not None:
            results.close()
        super().close()  # type: ignore[misc]


class ResultsController:
    """The state behind :class:`WidgetResults`: the last objects and the layer that shows them, the class insight
    updater and the export task, and the session events and view changes that update them."""

    def __init__(self, widget: IlastikWidget):
        self.widget = widget
        self.last: Objects | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.insight = InsightUpdater(widget)
        self.export = ExportTask(widget)
        widget.session.add_listener(self._on_session_event)
        widget.observe(lambda change: self.insight.view_changed(), names="viewer_state")
        self.insight.labels_changed()
        if widget.session.is_trained:
            self.insight.predictions_changed()

    # ------------------------------------------------------------------ objects
    def compute(self, label: int, threshold: float, **options: Any) -> Objects:
        """Find the objects of class ``label`` at ``threshold`` (see
        :meth:`~ilastik_widget.core.session.Session.objects`), show them in the objects layer and keep them as the last
        objects; returns them. What the session raises, it raises before anything changes."""
        w = self.widget
        objects = w.session.objects(label, threshold, **options)  # raises before anything changes
        version = w.chunk_server.objects.show(objects.labels, objects.offset)
        self.last = objects
        w._set_traits(
            objects_info=objects_summary(objects, w.session, version),
            source_info=state.source_info(w.session, w.chunk_server),
        )
        n = len(objects)
        w._live.status.show(f"{n:,} object{'s' if n != 1 else ''} of class {objects.params.label}.")
        return objects

    def clear(self) -> None:
        """Forget the last objects and empty the objects layer."""
        w = self.widget
        self.last = None
        w.chunk_server.objects.clear()
        w._set_traits(objects_info={}, source_info=state.source_info(w.session, w.chunk_server))

    def row(self, position: Sequence[float] | None, number: int | None) -> tuple[int, dict | None]:
        """(object number, its row) at ``position`` or of object ``number``; (0, None) where there is none."""
        last = self.last
        if last is None:
            return 0, None
        if number is None:
            if position is None:
                raise ValueError("give the position of an object or its number")
            number = self.widget.chunk_server.objects.label_at(position)
        number = int(number)
        if not 1 <= number <= len(last):
            return 0, None
        row = last.table.iloc[number - 1]
        return number, {str(k): json_value(v) for k, v in row.items()}

    # ------------------------------------------------------------------ events
    def _on_session_event(self, event: str, **info: Any) -> None:
        if self.widget._closed:
            return
        try:
            if event == "labels":
                self.insight.labels_changed()
            elif event in ("trained", "classes", "features"):
                self.insight.labels_changed()
                self.insight.predictions_changed()
                self._mark_stale()
        except Exception:  # a listener must not fail the session's change
            log.exception("ilastik_widget: could not update the results after %r", event)

    def _mark_stale(self) -> None:
        info = self.widget.objects_info
        if info and not info.get("stale") and info.get("generation") != int(self.widget.session.generation):
            self.widget._set_traits(objects_info={**info, "stale": True})

    # ------------------------------------------------------------------ browser requests
    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ilastik-objects")
        return self._executor

    def _fail(self, id: int, exc: BaseException, what: str) -> None:
        text = f"{what}: {describe_exception(exc)}"
        self.widget._send_message(ErrorReply(id, text), [])
        self.widget._live.status.error(text)

    def on_objects(self, request: ObjectsRequest, _buffers: list) -> None:
        """Handle the browser's ``objects`` request: find the objects in a worker thread,
        then reply with their count and the objects array's version."""
        options: dict[str, Any] = {"low": request.low, "split": request.split, "max_size": request.max_size}
        if request.min_size is not None:
            options["min_size"] = request.min_size
        if request.smooth is not None:
            options["smooth"] = request.smooth
        if request.region is not None:
            options["region"] = tuple(slice(a, b) for a, b in request.region)

        def run() -> None:
            try:
                objects = self.compute(request.label, request.threshold, **options)
            except Exception as exc:
                self._fail(request.id, exc, "Objects not computed")
                return
            version = self.widget.chunk_server.objects.version
            self.widget._send_message(ObjectsReply(request.id, len(objects), version), [])

        self._worker().submit(run)

    def on_object_row(self, request: ObjectRowRequest, _buffers: list) -> None:
        """Handle the browser's ``object-row`` request: reply with the object at a
        position (or of a number) and its table row."""
        if request.position is None and request.object is None:
            raise MessageError("an object-row request needs a 'position' or an 'object'", request.id)
        if self.last is None:
            raise MessageError("there are no objects yet: find them first", request.id)
        number, row = self.row(request.position, request.object)
        self.widget._send_message(ObjectRowReply(request.id, number, row), [])

    def on_export(self, request: ExportRequest, _buffers: list) -> None:
        """Handle the browser's ``export`` request: start the export, and reply with the
        paths written once it is done."""
        options: dict[str, Any] = {"overwrite": request.overwrite}
        if request.format is not None:
            options["format"] = request.format
        outputs = request.outputs if request.outputs is not None else ("probabilities", "segmentation", "objects")
        try:
            future = self.export.start(request.path, outputs, **options)
        except Exception as exc:
            raise MessageError(f"Export not started: {describe_exception(exc)}", request.id) from None

        def done(f: Future) -> None:
            exc = f.exception()
            if exc is not None:
                self._fail(request.id, exc, "Export failed")
                return
            result = f.result()
            written = [str(result[o]) for o in outputs if o in result]
            written += [str(p) for p in result.get("objects_table", [])]
            self.widget._send_message(ExportReply(request.id, tuple(written)), [])

        future.add_done_callback(done)

    # ------------------------------------------------------------------ life cycle
    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the objects requests, the class insight and the export under way are done (for tests)."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result(timeout)
        self.insight.wait(timeout)
        self.export.wait(timeout)

    def close(self) -> None:
        """Stop listening to the session; stop the class insight, the export and the worker thread."""
        try:
            self.widget.session.remove_listener(self._on_session_event)
        except ValueError:
            pass
        self.insight.close()
        self.export.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def register(dispatcher: Dispatcher, widget: IlastikWidget) -> None:
    """Handle the browser's ``objects``, ``object-row`` and ``export`` requests through the widget's results."""
    results = widget._results
    dispatcher.register(ObjectsRequest, results.on_objects)
    dispatcher.register(ObjectRowRequest, results.on_object_row)
    dispatcher.register(ExportRequest, results.on_export)
