"""The Jupyter widget: Neuroglancer with a brush, live predictions, a control panel and keyboard shortcuts.

```python
from ilastik_widget import IlastikWidget
w = IlastikWidget(image)      # numpy / dask / zarr array, an ImageSource, or a Session
w                             # shows the viewer and the controls
w.session                     # the core Session: labels, training, predictions
```

Everything the browser can do is also a traitlet or a method here. The kernel is the single source of truth:
browser edits of classes and strokes arrive as custom messages (see :mod:`ilastik_widget.widget.protocol`), are applied
to the session, and the resulting state is synced back as traitlets.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from ..serving.chunk_server import ChunkPush
from . import protocol as m

log = logging.getLogger("ilastik_widget")

STATIC = Path(__file__).parent.parent / "static"
MODES = ("paint", "erase", "navigate")
LAYER_NAMES = ("raw", "labels", "probabilities", "segmentation", "uncertainty")
PREDICTION_LAYERS = ("probabilities", "segmentation", "uncertainty")
DEFAULT_LAYERS = {
    "raw": {"visible": True, "opacity": 1.0},
    "labels": {"visible": True, "opacity": 0.8},
    "probabilities": {"visible": True, "opacity": 0.5},
    "segmentation": {"visible": False, "opacity": 0.5},
    "uncertainty": {"visible": False, "opacity": 0.7},
}
MIN_BRUSH, MAX_BRUSH = 1, 61
PAINT_HINT = "Paint at least one stroke in each of two classes to see predictions."
MAX_VIEWER_STATE_BYTES = 64 * 1024
# Chunks sent along with one refresh message (kernel->browser messages of 8 MB take ~0.13 s on loopback).
PUSH_BYTES = 16 * 2**20
# After a stroke with live update on, the new labels wait this long (s) for the retrained predictions, so both reach
# the browser in one refresh (one reload of the view instead of two); the stroke is drawn in the browser meanwhile.
LABELS_WAIT_FOR_PREDICTIONS = 0.4
# Traits a user may also give to the constructor.
INIT_TRAITS = ("height", "live", "brush_size", "mode", "active_class", "layers", "viewer_state")
# Traits only the kernel writes; the browser's attempts are rejected and reverted.
KERNEL_ONLY = ("status", "error", "busy", "strokes", "generation", "source_info", "widget_id")

_FALLBACK_ESM = """
export default { render({ model, el }) {
  el.innerHTML = '<div class="ilastik-widget" style="padding:1em;border:1px solid #c33">' +
    'ilastik_widget: the JavaScript bundle is missing (ilastik_widget/static/widget.js). ' +
    'Build it with <code>cd js && npm install && node build.mjs</code> or reinstall the package.</div>';
} };
"""


def _read_static(name: str, fallback: str) -> str:
    path = STATIC / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return fallback


def _session_class():
    from ..core.session import Session

    return Session


class IlastikWidget(anywidget.AnyWidget):
    """Interactive pixel classification on ``image`` (or on an existing ``Session``).

    Parameters
    ----------
    image_or_session:
        A numpy, dask or zarr array (2D ``(y, x)`` or 3D ``(z, y, x)``, optionally with a channel axis), an
        ``ImageSource``, a path or URL (zarr, OME-Zarr, TIFF; opened with :func:`~ilastik_widget.open_source`), or a
        :class:`~ilastik_widget.core.session.Session` to attach to.
    channel_axis:
        Index of the channel axis of ``image`` if it has one.
    classes:
        Class names (default: ``("Background", "Foreground")``).
    autosave:
        A project file to save to after every change of strokes, classes or features, so a kernel crash loses
        nothing; reopen it with :meth:`IlastikWidget.from_project`.
    raw_from:
        Where the browser reads the image of a zarr / OME-Zarr on a web server (an ``http(s)://`` URL):
        ``"auto"`` (default) straight from the URL, falling back to the kernel's copy if the browser cannot load it
        (a server on another network, or one without CORS headers; ``raw_fallback`` then says why); ``"browser"``
        from the URL only (``ValueError`` if the source cannot be shown that way); ``"kernel"`` always through the
        widget's comm, like in-memory images. Labels, predictions and the features are computed in the kernel
        either way.
    max_predict_pixels:
        The most full-resolution pixels (voxels) one prediction chunk of the viewer may cover (default 1024 x 1024).
        Zoomed out beyond the pyramid level this allows, the viewer shows that level's chunks, computed as they
        come into view: a smaller value keeps each chunk quick on large images.
    height, live, brush_size, mode, active_class, layers, viewer_state:
        Initial values of these traits (see below).
    **session_kwargs:
        Passed to :class:`~ilastik_widget.core.session.Session` (``features``, ``seed``, ``classifier``...).

    Traits (synced with the browser; invalid values raise ``TraitError`` in Python and are rejected, with the
    reason in ``error``, when they come from the browser): ``classes`` (list of ``{name, color}``), ``active_class``
    (1-based), ``brush_size`` (1..61 px), ``mode`` ("paint", "erase", "navigate"), ``live``, ``feature_selection``
    (``FeatureSelection.to_dict()``), ``layers`` (name -> ``{visible, opacity}`` for raw, labels, probabilities,
    segmentation, uncertainty), ``viewer_state`` (position in array index order, crossSectionScale, layout, ...),
    ``height`` (px). Set by the kernel only: ``status``, ``error``, ``busy``, ``strokes`` (summaries), ``generation``,
    ``source_info``, ``widget_id``.
    """

    # anywidget reads these when an instance is created, so a rebuilt bundle is picked up by the next widget
    @property
    def _esm(self) -> str:  # type: ignore[override]
        return _read_static("widget.js", _FALLBACK_ESM)

    @property
    def _css(self) -> str:  # type: ignore[override]
        return _read_static("widget.css", "")

    widget_id = t.Unicode("").tag(sync=True)
    classes = t.List(t.Dict()).tag(sync=True)
    active_class = t.Int(1).tag(sync=True)
    brush_size = t.Int(5).tag(sync=True)
    mode = t.Unicode("paint").tag(sync=True)
    live = t.Bool(True).tag(sync=True)
    feature_selection = t.Dict().tag(sync=True)
    layers = t.Dict().tag(sync=True)
    viewer_state = t.Dict().tag(sync=True)
    status = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    strokes = t.List(t.Dict()).tag(sync=True)
    generation = t.Int(0).tag(sync=True)
    source_info = t.Dict().tag(sync=True)
    height = t.Int(600).tag(sync=True)  # of the viewer and the panel, in CSS pixels

    @t.validate("height")
    def _valid_height(self, proposal):
        value = proposal["value"]
        if isinstance(value, bool) or not 200 <= value <= 4000:
            raise t.TraitError(f"height must be a number of pixels from 200 to 4000, not {value!r}")
        return value

    def __init__(
        self,
        image_or_session: Any,
        channel_axis: int | None = None,
        classes=None,
        *,
        autosave: str | os.PathLike | None = None,
        raw_from: str = "auto",
        max_predict_pixels: int | None = None,
        **session_kwargs,
    ):
        Session = _session_class()
        # ipywidgets habit: traits as keyword arguments (IlastikWidget(image, height=800, live=False))
        trait_values = {name: session_kwargs.pop(name) for name in INIT_TRAITS if name in session_kwargs}
        if isinstance(image_or_session, (str, os.PathLike)):
            from ..io.sources import open_source

            image_or_session, channel_axis = open_source(image_or_session, channel_axis=channel_axis), None
        if isinstance(image_or_session, Session):
            if channel_axis is not None or classes is not None or session_kwargs:
                raise ValueError(
                    "channel_axis, classes and session options apply only when passing an image, not a Session"
                )
            session = image_or_session
        else:
            kwargs = dict(session_kwargs)
            if classes is not None:
                kwargs["classes"] = tuple(classes)
            session = Session(image_or_session, channel_axis=channel_axis, **kwargs)
        if getattr(session, "ndim", len(session.spatial_shape)) not in (2, 3):
            raise ValueError(f"the widget shows 2D or 3D images, this one has spatial shape {session.spatial_shape}")
        self._session = session
        self._lock = threading.RLock()  # guards trait updates coming from worker threads
        self._syncing = False  # True while the widget writes session state into traits
        self._executor: ThreadPoolExecutor | None = None  # prediction chunks
        self._fast_executor: ThreadPoolExecutor | None = None  # raw and label chunks
        self._chunk_futures: set[Future] = set()
        self._cancelled: set[int] = set()
        self._pending_prediction_keys = 0
        self._train_future: Future | None = None
        self._trained_version: Any = None
        self._closed = False
        self._labels_timer: threading.Timer | None = None  # a labels refresh waiting for new predictions
        self._published_generation = int(getattr(session, "generation", 0))
        widget_id = uuid.uuid4().hex[:12]

        from ..serving.chunk_server import ChunkServer

        # close() (also called by __del__ when __init__ fails) reads these
        self._autosaver = None
        self._listener_ok = False
        try:
            self._chunks = ChunkServer(
                session,
                widget_id,
                **({} if max_predict_pixels is None else {"max_predict_pixels": int(max_predict_pixels)}),
            )
            self._set_raw_from(raw_from)
            #: Why the browser could not load the raw image from its URL and shows the kernel's copy instead (None
            #: while no view has reported such a failure).
            self.raw_fallback: str | None = None
            super().__init__(
                widget_id=widget_id,
                classes=self._classes_from_session(),
                feature_selection=self._features_from_session(),
                layers={k: dict(v) for k, v in DEFAULT_LAYERS.items()},
                strokes=self._stroke_summaries(),
                generation=int(getattr(session, "generation", 0)),
                source_info=self._source_info(),
                status=PAINT_HINT,
            )
            for name, value in trait_values.items():  # validated like any later change
                setattr(self, name, value)
        except BaseException:
            self._closed = True  # never shown: nothing for close() to stop
            raise
        self._dispatcher = m.Dispatcher(self._send_message, context=self._parse_context, on_error=self._show_error)
        self._register_handlers()
        self.on_msg(self._on_custom_msg)
        # The saver listens before the widget does, so the widget sees a failed save of the same change.
        if autosave is not None:
            from ..io.project import enable_autosave

            self._autosaver = enable_autosave(session, autosave)
        add_listener = getattr(session, "add_listener", None)
        if add_listener is not None:
            add_listener(self._on_session_event)
            self._listener_ok = True
        if getattr(session, "is_trained", False):
            self._trained_version = self._labels_version()
            self._set_status("Ready")
        elif self.live and self._labelled_classes()[1] >= 2:
            self._retrain()
        else:
            from ..core.classifier import import_sklearn_soon

            import_sklearn_soon()  # ready before two classes are painted; the widget shows without waiting for it

    # ------------------------------------------------------------------------------------------ properties

    @property
    def session(self):
        """The core :class:`~ilastik_widget.core.session.Session` behind this widget."""
        return self._session

    @property
    def chunk_server(self):
        return self._chunks

    def __repr__(self) -> str:
        return (
            f"IlastikWidget(shape={tuple(self._session.spatial_shape)}, classes={[c['name'] for c in self.classes]},"
            f" strokes={len(self.strokes)}, widget_id={self.widget_id!r})"
        )

    # ------------------------------------------------------------------------------------------ validation

    @t.validate("brush_size")
    def _valid_brush_size(self, proposal):
        value = proposal["value"]
        if isinstance(value, bool) or not MIN_BRUSH <= value <= MAX_BRUSH:
            raise t.TraitError(f"brush_size must be a whole number from {MIN_BRUSH} to {MAX_BRUSH}, not {value!r}")
        return value

    @t.validate("active_class")
    def _valid_active_class(self, proposal):
        value = proposal["value"]
        n = len(self.classes) if self.classes else 1
        if isinstance(value, bool) or not 1 <= value <= max(1, n):
            raise t.TraitError(f"active_class must be a class number from 1 to {n}, not {value!r}")
        return value

    @t.validate("mode")
    def _valid_mode(self, proposal):
        value = proposal["value"]
        if value not in MODES:
            raise t.TraitError(f"mode must be one of {', '.join(MODES)}, not {value!r}")
        return value

    @t.validate("classes")
    def _valid_classes(self, proposal):
        value = proposal["value"]
        out = []
        if not value:
            raise t.TraitError("there must be at least one class")
        if len(value) > m.MAX_CLASSES:
            raise t.TraitError(f"at most {m.MAX_CLASSES} classes")
        for i, c in enumerate(value, start=1):
            if not isinstance(c, dict):
                raise t.TraitError(f"class {i} must be a dict with 'name' and 'color', not {c!r}")
            try:
                out.append(
                    {
                        "name": m.check_name(c.get("name"), f"name of class {i}"),
                        "color": m.check_color(c.get("color"), f"color of class {i}"),
                    }
                )
            except m.MessageError as exc:
                raise t.TraitError(exc.message) from None
        return out

    @t.validate("feature_selection")
    def _valid_feature_selection(self, proposal):
        from ..core.features import FeatureSelection

        value = proposal["value"]
        try:
            selection = FeatureSelection.from_dict(value)
        except Exception as exc:
            raise t.TraitError(f"feature_selection is not valid: {m.describe_exception(exc)}") from None
        return selection.to_dict()

    @t.validate("layers")
    def _valid_layers(self, proposal):
        value = proposal["value"]
        if not isinstance(value, dict):
            raise t.TraitError("layers must be a dict of layer name -> {visible, opacity}")
        out = {k: dict(v) for k, v in (self.layers or DEFAULT_LAYERS).items()}
        for name, settings in value.items():
            if name not in LAYER_NAMES:
                raise t.TraitError(f"unknown layer {name!r}; layers are {', '.join(LAYER_NAMES)}")
            if not isinstance(settings, dict):
                raise t.TraitError(f"settings of layer {name!r} must be a dict with 'visible' and 'opacity'")
            unknown = set(settings) - {"visible", "opacity"}
            if unknown:
                raise t.TraitError(f"layer {name!r} has unknown settings {sorted(unknown)}")
            entry = out.setdefault(name, dict(DEFAULT_LAYERS[name]))
            if "visible" in settings:
                if not isinstance(settings["visible"], bool):
                    raise t.TraitError(f"'visible' of layer {name!r} must be true or false")
                entry["visible"] = settings["visible"]
            if "opacity" in settings:
                try:
                    entry["opacity"] = m.check_float(settings["opacity"], f"opacity of {name}", 0.0, 1.0)
                except m.MessageError as exc:
                    raise t.TraitError(exc.message) from None
        return out

    @t.validate("viewer_state")
    def _valid_viewer_state(self, proposal):
        value = proposal["value"]
        if not isinstance(value, dict):
            raise t.TraitError("viewer_state must be a dict")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise t.TraitError(f"viewer_state must be plain JSON data: {exc}") from None
        if len(text) > MAX_VIEWER_STATE_BYTES:
            raise t.TraitError(f"viewer_state is too large ({len(text)} bytes)")
        if "position" in value:
            pos = value["position"]
            ndim = len(self._session.spatial_shape)
            if (
                not isinstance(pos, list)
                or len(pos) < ndim
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in pos)
            ):
                raise t.TraitError(f"viewer_state['position'] must be a list of {ndim} numbers, not {pos!r}")
        for key in ("crossSectionScale", "projectionScale"):
            if key in value:
                v = value[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise t.TraitError(f"viewer_state[{key!r}] must be a positive number, not {v!r}")
        if "layout" in value and not isinstance(value["layout"], (str, dict)):
            raise t.TraitError("viewer_state['layout'] must be a layout name such as 'xy' or '4panel'")
        return value

    def set_state(self, sync_data):
        """State from the browser: each trait separately, invalid values rejected (and reverted in the browser)."""
        with self._lock:  # trait updates from worker threads wait (ipywidgets' sync bookkeeping is not thread-safe)
            for name, value in dict(sync_data).items():
                if name in KERNEL_ONLY:
                    self._reject(name, f"'{name}' is set by the kernel only")
                    continue
                try:
                    super().set_state({name: value})
                except Exception as exc:
                    self._reject(name, m.describe_exception(exc))

    def _reject(self, name: str, text: str) -> None:
        message = f"Rejected a change of {name}: {text}"
        log.warning("ilastik_widget: %s", message)
        self._show_error(message)
        try:
            self.send_state(name)  # put the browser back in sync with the kernel's value
        except Exception:  # pragma: no cover
            log.exception("ilastik_widget: could not resend %s", name)

    # ------------------------------------------------------------------------------------------ trait -> session

    @t.observe("classes")
    def _classes_changed(self, change):
        if self._syncing:
            return
        try:
            self._apply_classes(change["old"] or [], change["new"])
        except Exception as exc:
            self._show_error(f"Could not change the classes: {m.describe_exception(exc)}")
        self._sync_classes()

    def _apply_classes(self, old: list[dict], new: list[dict]) -> None:
        current = self._classes_from_session()
        for i, (cur, want) in enumerate(zip(current, new), start=1):
            if cur["name"] != want["name"]:
                self._class_op("rename_class", i, want["name"])
            if cur["color"] != want["color"]:
                self._class_op("recolor_class", i, want["color"])
        for want in new[len(current) :]:
            self._class_op("add_class", want["name"], want["color"])
        for label in range(len(current), len(new), -1):
            self._class_op("remove_class", label)

    @t.observe("feature_selection")
    def _features_changed(self, change):
        if self._syncing:
            return
        try:
            from ..core.features import FeatureSelection

            selection = FeatureSelection.from_dict(change["new"])
            if selection == self._session.feature_selection:
                return
            self._session.feature_selection = selection
            if not self._listener_ok:
                self._on_session_event("features")
        except Exception as exc:
            self._show_error(f"Could not change the features: {m.describe_exception(exc)}")
            self._syncing = True
            try:
                self.feature_selection = self._features_from_session()
            finally:
                self._syncing = False

    @t.observe("live")
    def _live_changed(self, change):
        if change["new"]:
            if self._needs_training():
                self._retrain()
            elif not self.busy:
                self._set_status(self._idle_status())
        else:
            self._set_status("Live update is off: press “Update now” to train on the new labels.")

    # ------------------------------------------------------------------------------------------ Python API

    def add_class(self, name: str | None = None, color: str | None = None) -> int:
        """Add a class; returns its 1-based label."""
        if name is not None:
            name = m.check_name(name)
        if color is not None:
            color = m.check_color(color)
        if name is None:
            name = f"Class {len(self._session.classes) + 1}"
        label = self._class_op("add_class", name, color)
        self._after_class_change()
        return int(label) if label is not None else len(self._session.classes)

    def remove_class(self, label: int) -> None:
        """Remove class ``label`` and its strokes; later classes are renumbered down."""
        label = self._check_label(label)
        if len(self._session.classes) <= 1:
            raise ValueError("cannot remove the last class")
        self._class_op("remove_class", label)
        self._after_class_change()

    def rename_class(self, label: int, name: str) -> None:
        self._class_op("rename_class", self._check_label(label), m.check_name(name))
        self._after_class_change()

    def recolor_class(self, label: int, color: str) -> None:
        self._class_op("recolor_class", self._check_label(label), m.check_color(color))
        self._after_class_change()

    def add_stroke(self, label: int, points, radius: float = 2, axes=None, erase: bool = False) -> int:
        """Paint a stroke from Python (points in array index order); returns its id."""
        sid = self._session.add_stroke(
            self._check_label(label),
            np.asarray(points, dtype=np.float64),
            radius=radius,
            axes=None if axes is None else tuple(axes),
            erase=bool(erase),
        )
        self._after_label_change()
        return int(sid)

    def remove_stroke(self, stroke_id: int) -> None:
        self._session.remove_stroke(int(stroke_id))
        self._after_label_change()

    def undo(self) -> bool:
        changed = bool(self._session.undo())
        self._after_label_change()
        return changed

    def redo(self) -> bool:
        changed = bool(self._session.redo())
        self._after_label_change()
        return changed

    def update_now(self) -> Future | None:
        """Train on the current labels now (also when live update is off); returns the training future."""
        return self._retrain(force=True)

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the current training and all chunk requests are done (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futures = list(self._chunk_futures)
                if self._train_future is not None:
                    futures.append(self._train_future)
            if not futures:
                return
            for f in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    f.result(timeout=remaining)
                except Exception:
                    pass
                if f.done():
                    with self._lock:
                        self._chunk_futures.discard(f)
            with self._lock:
                training = self._train_future
                pending = [f for f in self._chunk_futures if not f.done()]
            if not pending and (training is None or training.done()):
                # the done-callback of the training may still be running in its thread
                time.sleep(0.01)
                with self._lock:
                    if self._train_future is None or self._train_future.done():
                        return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the widget is still busy")

    def go_to_stroke(self, stroke_id: int) -> None:
        """Move the view to the centre of a stroke."""
        for s in self.strokes:
            if s["id"] == int(stroke_id):
                self.go_to(s["center"])
                return
        raise KeyError(f"no stroke with id {stroke_id}")

    def go_to(self, position) -> None:
        """Centre the view on ``position`` (array index order of the spatial axes, in voxels)."""
        pos = [float(p) for p in position]
        if len(pos) != len(self._session.spatial_shape):
            raise ValueError(f"position needs {len(self._session.spatial_shape)} coordinates")
        # viewer_state positions are in voxels with the centre of voxel i at i (the viewer converts)
        self.viewer_state = {**self.viewer_state, "position": pos}

    def set_layer(self, name: str, visible: bool | None = None, opacity: float | None = None) -> None:
        settings = {}
        if visible is not None:
            settings["visible"] = bool(visible)
        if opacity is not None:
            settings["opacity"] = float(opacity)
        self.layers = {**self.layers, name: {**self.layers.get(name, {}), **settings}}

    def select_features(self, which: str | dict = "all") -> None:
        """``"all"``, ``"none"``, ``"default"`` or a ``FeatureSelection.to_dict()`` dict."""
        from ..core.features import FeatureSelection

        if isinstance(which, dict):
            self.feature_selection = which
        elif which in ("all", "none", "default"):
            self.feature_selection = getattr(FeatureSelection, which)().to_dict()
        else:
            raise ValueError("select_features takes 'all', 'none', 'default' or a selection dict")

    def set_feature(self, feature: str, scale: float, on: bool = True) -> None:
        from ..core.features import FeatureSelection

        selection = FeatureSelection.from_dict(self.feature_selection).with_feature(feature, float(scale), bool(on))
        self.feature_selection = selection.to_dict()

    def segmentation(self, region=None):
        return self._session.segmentation(region)

    def probabilities(self, region=None):
        return self._session.predict(region)

    @classmethod
    def from_project(cls, path: str | os.PathLike, image: Any = None, *, autosave: bool = True) -> IlastikWidget:
        """Reopen a saved or autosaved project: every class and stroke comes back, and the model is retrained.

        Parameters
        ----------
        path : str or os.PathLike
            A project file written by ``session.save`` or by a widget's autosave.
        image : array-like, optional
            The image, when the project only references it (a file that moved, an array from a cell).
        autosave : bool
            Keep saving every change back to ``path`` (default), so the reopened widget is as safe as the first.
        """
        from ..io.project import load_session

        return cls(load_session(path, image=image), autosave=path if autosave else None)

    @property
    def autosave_path(self) -> Path | None:
        """The project file this widget saves to after every change, or None."""
        return None if self._autosaver is None else self._autosaver.path

    def close(self) -> None:
        """Stop serving the browser: cancel training, stop the chunk threads, detach from the session."""
        if getattr(self, "_closed", True) is False:
            self._closed = True
            self._take_held_labels()
            session = self._session
            if self._autosaver is not None:
                self._autosaver.close()
            try:
                training = self._train_future
                if training is not None and not training.done():
                    session.cancel_training()
                remove = getattr(session, "remove_listener", None)
                if remove is not None and self._listener_ok:
                    remove(self._on_session_event)
            except Exception:  # pragma: no cover
                log.exception("ilastik_widget: error while closing")
            for executor in (self._executor, self._fast_executor):
                if executor is not None:
                    executor.shutdown(wait=False, cancel_futures=True)
        super().close()

    # ------------------------------------------------------------------------------------------ messages

    def _parse_context(self) -> dict:
        return {"ndim": len(self._session.spatial_shape), "n_classes": len(self._session.classes)}

    def _send_message(self, content: dict, buffers: list) -> None:
        if self._closed or self.comm is None:
            return
        self.send(content, buffers or None)

    def _on_custom_msg(self, _widget, content, buffers=None):
        """Entry point of browser->kernel custom messages; never raises."""
        self._dispatcher.dispatch(content, buffers)

    def handle_message(self, content, buffers=None):
        """Handle one browser message (for tests and tools); returns the parsed request or None."""
        return self._dispatcher.dispatch(content, buffers)

    def _register_handlers(self) -> None:
        d = self._dispatcher
        d.register(m.ChunksRequest, self._on_chunks)
        d.register(m.SeenRequest, lambda r, b: self._chunks.note_keys(r.keys))
        d.register(m.CancelRequest, self._on_cancel)
        d.register(m.StrokeRequest, self._on_stroke)
        d.register(m.UndoRequest, lambda r, b: self._reply("undo", r.id, changed=self.undo()))
        d.register(m.RedoRequest, lambda r, b: self._reply("redo", r.id, changed=self.redo()))
        d.register(m.RemoveStrokeRequest, self._on_remove_stroke)
        d.register(m.UpdateNowRequest, self._on_update_now)
        d.register(
            m.AddClassRequest, lambda r, b: self._reply("add-class", r.id, label=self.add_class(r.name, r.color))
        )
        d.register(m.RemoveClassRequest, self._on_remove_class)
        d.register(
            m.RenameClassRequest, lambda r, b: (self.rename_class(r.label, r.name), self._reply("rename-class", r.id))
        )
        d.register(
            m.RecolorClassRequest,
            lambda r, b: (self.recolor_class(r.label, r.color), self._reply("recolor-class", r.id)),
        )
        d.register(m.SourceFallbackRequest, self._on_source_fallback)

    def _set_raw_from(self, raw_from: str) -> None:
        self._chunks.raw_from = raw_from  # checks the value
        if raw_from == "browser":
            try:
                self._chunks.browser_raw_source()
            except ValueError as exc:
                raise ValueError(f"raw_from='browser': the browser cannot load this image itself: {exc}") from None

    def _on_source_fallback(self, request: m.SourceFallbackRequest, _buffers) -> None:
        text = (
            f"The browser could not load the {request.layer} layer from {request.url} ({request.message}); "
            f"the kernel serves it instead."
        )
        log.warning("ilastik_widget: %s", text)
        self.raw_fallback = text
        self._set_status(text)

    def _reply(self, kind: str, id: int, **fields) -> None:
        self._send_message(m.reply(kind, id, **fields), [])

    def _on_chunks(self, request: m.ChunksRequest, _buffers) -> None:
        n_pred = sum(1 for k in request.keys if k.startswith("predictions/") and "/." not in k)
        # Two lanes: image and label chunks are quick and must not wait behind predictions being computed.
        with self._lock:
            self._ensure_executors()
            executor = self._executor if n_pred else self._fast_executor
            self._pending_prediction_keys += n_pred
        if n_pred:
            self._update_busy_status()
        future = executor.submit(self._serve_chunks, request, n_pred)
        with self._lock:
            self._chunk_futures.add(future)
        future.add_done_callback(self._chunk_done)

    def _ensure_executors(self) -> None:
        """Thread pools of the two chunk lanes (call with the lock held)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"ilastik-{self.widget_id}-p")
            self._fast_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"ilastik-{self.widget_id}-r")

    def _chunk_done(self, future: Future) -> None:
        with self._lock:
            self._chunk_futures.discard(future)

    def _serve_chunks(self, request: m.ChunksRequest, n_pred: int) -> None:
        try:
            with self._lock:
                cancelled = request.id in self._cancelled
                self._cancelled.discard(request.id)
            if cancelled:
                return
            try:
                data = self._chunks.read(list(request.keys))
            except Exception as exc:
                log.exception("ilastik_widget: chunk request %s failed", request.id)
                self._send_message(m.error(request.id, f"Could not read chunks: {m.describe_exception(exc)}"), [])
                return
            found = [d is not None for d in data]
            self._send_message(m.chunks_reply(request.id, found), [bytes(d) for d in data if d is not None])
        finally:
            if n_pred:
                with self._lock:
                    self._pending_prediction_keys -= n_pred
                self._update_busy_status()

    def _on_cancel(self, request: m.CancelRequest, _buffers) -> None:
        with self._lock:
            self._cancelled.update(request.ids)
            if len(self._cancelled) > 10_000:  # ids of requests already served: forget the oldest
                self._cancelled = set(sorted(self._cancelled)[-5000:])

    def _on_stroke(self, request: m.StrokeRequest, _buffers) -> None:
        shape = self._session.spatial_shape
        if request.points.shape[1] != len(shape):
            raise m.MessageError(f"stroke points need {len(shape)} coordinates", request.id)
        try:
            sid = self._session.add_stroke(
                request.label, request.points, radius=request.radius, axes=request.axes, erase=request.erase
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise m.MessageError(f"Stroke not added: {m.describe_exception(exc)}", request.id) from None
        self._clear_error()
        self._reply("stroke", request.id, stroke_id=int(sid))
        self._after_label_change()

    def _on_remove_stroke(self, request: m.RemoveStrokeRequest, _buffers) -> None:
        if not any(s["id"] == request.stroke_id for s in self._stroke_summaries()):
            raise m.MessageError(f"there is no stroke {request.stroke_id}", request.id)
        self.remove_stroke(request.stroke_id)
        self._reply("remove-stroke", request.id)

    def _on_update_now(self, request: m.UpdateNowRequest, _buffers) -> None:
        self._retrain(force=True)
        self._reply("update-now", request.id)

    def _on_remove_class(self, request: m.RemoveClassRequest, _buffers) -> None:
        if len(self._session.classes) <= 1:
            raise m.MessageError("the last class cannot be removed", request.id)
        self.remove_class(request.label)
        self._reply("remove-class", request.id)

    # ------------------------------------------------------------------------------------------ session events

    def _on_session_event(self, event: str, **info) -> None:
        """Listener on the session (called from any thread)."""
        if self._closed:
            return
        saver = self._autosaver
        if saver is not None and saver.last_error is not None and event in saver.EVENTS:
            self._show_error(f"Autosave to {saver.path} failed: {saver.last_error}")
        try:
            if event == "labels":
                self._sync_strokes()
                if self.live and self._retrain() is not None:
                    self._hold_labels_refresh()
                else:
                    self._send_labels_refresh()
            elif event == "classes":
                self._sync_classes()
                if self.live:
                    self._retrain()
            elif event == "features":
                self._syncing = True
                try:
                    self.feature_selection = self._features_from_session()
                finally:
                    self._syncing = False
                if self.live:
                    self._retrain()
            elif event == "trained":
                # also when training ran outside the widget (w.session.train() in a cell)
                self._publish_generation()
                with self._lock:
                    training = self._train_future is not None and not self._train_future.done()
                if not training:
                    self._update_busy_status()
            elif event == "error":
                self._show_error(str(info.get("message") or info.get("error") or "unknown error"))
        except Exception:
            log.exception("ilastik_widget: failed to handle session event %r", event)

    def _hold_labels_refresh(self) -> None:
        """Send the labels refresh with the next predictions, or on its own after LABELS_WAIT_FOR_PREDICTIONS."""
        timer = threading.Timer(LABELS_WAIT_FOR_PREDICTIONS, self._send_held_labels)
        timer.daemon = True
        with self._lock:
            if self._labels_timer is not None:
                self._labels_timer.cancel()
            self._labels_timer = timer
        timer.start()

    def _take_held_labels(self) -> bool:
        """True if a labels refresh was waiting (it is now the caller's to send)."""
        with self._lock:
            timer, self._labels_timer = self._labels_timer, None
        if timer is not None:
            timer.cancel()
        return timer is not None

    def _labels_push(self) -> ChunkPush:
        # label chunks are quick to make (sparse rasterisation): the visible ones go with the refresh
        return self._chunks.take_push("labels", PUSH_BYTES)

    def _send_labels_refresh(self) -> None:
        self._take_held_labels()  # this refresh has the newest labels: a held one has nothing more to send
        self._send_labels()

    def _send_held_labels(self) -> None:
        """The wait is over: send the held labels refresh, unless the predictions' refresh took it meanwhile."""
        if self._take_held_labels():
            self._send_labels()

    def _send_labels(self) -> None:
        push = self._labels_push()
        self._send_message(m.refresh(["labels"], self._session_generation(), push.keys, push.missing), push.data)

    def _after_label_change(self) -> None:
        if not self._listener_ok:
            self._on_session_event("labels")

    def _after_class_change(self) -> None:
        if not self._listener_ok:
            self._on_session_event("classes")
        else:
            self._sync_classes()

    # ------------------------------------------------------------------------------------------ training

    def _labels_version(self):
        ann = getattr(self._session, "annotations", None)
        return (getattr(ann, "version", None), self._session_generation())

    def _needs_training(self) -> bool:
        needs = getattr(self._session, "needs_training", None)
        if needs is not None:
            return bool(needs)
        return self._trained_version != self._labels_version()

    def _labelled_classes(self) -> tuple[int, int]:
        """(number of labelled pixels, number of distinct classes labelled)."""
        try:
            _coords, values = self._session.annotations.labelled(None)
            values = np.asarray(values)
            return int(values.size), int(np.unique(values[values > 0]).size)
        except Exception:
            log.debug("ilastik_widget: could not count labels", exc_info=True)
            return 0, 0

    def _retrain(self, force: bool = False) -> Future | None:
        if self._closed:
            return None
        if not (self.live or force):
            self._set_status("Live update is off: press “Update now” to train on the new labels.")
            return None
        n_pixels, n_classes = self._labelled_classes()
        if n_classes < 2:
            self._set_status(PAINT_HINT, busy=False)
            return None
        from ..core.features import FeatureSelection

        if FeatureSelection.from_dict(self.feature_selection).is_empty:
            self._set_status("No features are selected: pick at least one in the feature matrix.", busy=False)
            return None
        version = self._labels_version()
        self._set_status(f"Training on {n_pixels:,} labelled pixels…", busy=True)
        try:
            future = self._session.train_async()
        except Exception as exc:
            self._show_error(f"Training failed: {m.describe_exception(exc)}")
            return None
        with self._lock:
            self._train_future = future
        future.add_done_callback(lambda f: self._training_done(f, version))
        return future

    def _training_done(self, future: Future, version) -> None:
        with self._lock:
            if future is not self._train_future:
                return  # superseded by a newer training
        if self._closed:
            return
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if type(exc).__name__ in ("CancelledError", "TrainingCancelled"):
                return
            self._show_error(f"Training failed: {m.describe_exception(exc)}")
            with self._lock:
                self._set_traits(busy=False)
            return
        if future.result() is False:
            # our newest training was cancelled (session.cancel_training(), or a training started elsewhere)
            self._set_status("Training was cancelled." if not self._session.is_trained else "Ready", busy=False)
            return
        self._trained_version = version
        self._publish_generation()
        with self._lock:
            self._set_traits(error="")
        self._update_busy_status()

    def _publish_generation(self) -> None:
        """New predictions: bump the generation trait, then (in a worker thread) compute the prediction chunks the
        browser shows and send them with the refresh message, so the view changes without a request round trip."""
        generation = self._session_generation()
        with self._lock:
            if generation == self._published_generation or self._closed:
                return
            self._published_generation = generation
            self._set_traits(generation=generation)
            self._ensure_executors()
            n_pred = self._chunks.pending_push("predictions")
            self._pending_prediction_keys += n_pred
            future = self._executor.submit(self._push_predictions, generation, n_pred)
            self._chunk_futures.add(future)
        future.add_done_callback(self._chunk_done)

    def _push_predictions(self, generation: int, n_pred: int) -> None:
        try:

            def superseded() -> bool:
                return self._closed or self._session_generation() != generation

            push = self._chunks.take_push("predictions", PUSH_BYTES, cancelled=superseded)
            if superseded():
                return  # the newer generation sends its own refresh
            layers = list(PREDICTION_LAYERS)
            if self._take_held_labels():
                labels = self._labels_push()
                layers.insert(0, "labels")
                push = ChunkPush(labels.keys + push.keys, labels.data + push.data, labels.missing + push.missing)
            self._send_message(m.refresh(layers, generation, push.keys, push.missing), push.data)
        finally:
            with self._lock:
                self._pending_prediction_keys -= n_pred
            self._update_busy_status()
        # A small image: compute the rest of its prediction chunks now, so panning finds them ready.
        self._chunks.warm_predictions()

    # ------------------------------------------------------------------------------------------ status

    def _idle_status(self) -> str:
        if getattr(self._session, "is_trained", False):
            return "Ready"
        return PAINT_HINT

    def _update_busy_status(self) -> None:
        with self._lock:
            training = self._train_future is not None and not self._train_future.done()
            n = self._pending_prediction_keys
        if training:
            return
        if n > 0:
            # Only the change idle -> busy goes to the browser: a status message per chunk request competes with the
            # chunk replies for the browser's main thread.
            if not (self.busy and self.status.startswith("Predicting")):
                self._set_status(f"Predicting {n} chunk{'s' if n != 1 else ''}…", busy=True)
        else:
            self._set_status(self._idle_status(), busy=False)

    def _set_status(self, text: str, busy: bool | None = None) -> None:
        with self._lock:
            if busy is None:
                self._set_traits(status=text)
            else:
                self._set_traits(status=text, busy=busy)

    def _show_error(self, text: str) -> None:
        log.warning("ilastik_widget: %s", text)
        with self._lock:
            self._set_traits(error=text, status=f"Error: {text}")

    def _clear_error(self) -> None:
        """A user action succeeded: an earlier error no longer needs to be shown."""
        saver = self._autosaver
        if saver is not None and saver.last_error is not None:
            return  # the labels are not safe on disk yet: keep saying so until a save succeeds
        with self._lock:
            if self.error:
                values = {"error": ""}
                if self.status.startswith("Error: "):
                    values["status"] = self._idle_status()
                self._set_traits(**values)

    def _set_traits(self, **values) -> None:
        if self._closed:
            return
        with self.hold_sync():
            for k, v in values.items():
                if getattr(self, k) != v:
                    setattr(self, k, v)

    # ------------------------------------------------------------------------------------------ session -> traits

    def _session_generation(self) -> int:
        return int(getattr(self._session, "generation", 0))

    def _classes_from_session(self) -> list[dict]:
        return [{"name": str(c.name), "color": str(c.color).lower()} for c in self._session.classes]

    def _features_from_session(self) -> dict:
        return self._session.feature_selection.to_dict()

    def _sync_classes(self) -> None:
        classes = self._classes_from_session()
        with self._lock:
            self._syncing = True
            try:
                values = {"classes": classes, "source_info": self._source_info()}
                if self.active_class > len(classes):
                    values["active_class"] = len(classes)
                # strokes renumber when a class is removed
                values["strokes"] = self._stroke_summaries()
                with self.hold_sync():
                    if "active_class" in values:
                        self.active_class = values.pop("active_class")
                    self._set_traits(**values)
            finally:
                self._syncing = False

    def _sync_strokes(self) -> None:
        with self._lock:
            self._set_traits(strokes=self._stroke_summaries())

    def _stroke_summaries(self) -> list[dict]:
        session = self._session
        strokes = getattr(session, "strokes", None)
        if strokes is None:
            strokes = session.annotations.strokes
        ann = getattr(session, "annotations", None)
        out = []
        for s in strokes:
            pts = np.asarray(s.points, dtype=np.float64).reshape(-1, len(session.spatial_shape))
            try:
                bounds = [[int(b.start), int(b.stop)] for b in ann.stroke_bounds(s.id)]
            except Exception:
                r = float(s.radius)
                bounds = [
                    [int(math.floor(lo - r)), int(math.ceil(hi + r)) + 1]
                    for lo, hi in zip(pts.min(axis=0), pts.max(axis=0))
                ]
            out.append(
                {
                    "id": int(s.id),
                    "label": int(s.label),
                    "radius": float(s.radius),
                    "n_points": int(len(pts)),
                    "center": [round(float(c), 2) for c in pts.mean(axis=0)],
                    "bounds": bounds,
                    "erase": bool(getattr(s, "erase", False)),
                    "axes": [int(a) for a in (getattr(s, "axes", None) or ())],
                }
            )
        return out

    def _source_info(self) -> dict:
        from ..core.features import feature_table

        session = self._session
        image = session.image
        shape = [int(s) for s in session.spatial_shape]
        channel_axis = getattr(session, "channel_axis", None)
        channels = int(image.shape[channel_axis]) if channel_axis is not None else 1
        try:
            specs = self._chunks.layer_specs()
        except Exception:
            log.exception("ilastik_widget: could not build layer specs")
            specs = []
        return {
            "shape": shape,
            "dtype": str(np.dtype(image.dtype)),
            "ndim": len(shape),
            "channels": channels,
            "axes": ["z", "y", "x"][-len(shape) :],
            "sources": self._chunks.sources(),
            "layer_specs": specs,
            "chunk_shape": list(self._chunks.chunk_shape),
            # the zarr metadata the viewer reads first: no round trip before the first chunks
            "metadata": self._chunks.metadata(),
            # the panel builds its feature matrix and brush slider from these, so they are defined here only
            "feature_table": feature_table(),
            "brush_size": {"min": MIN_BRUSH, "max": MAX_BRUSH},
        }

    def _class_op(self, name: str, *args):
        target = self._session if hasattr(self._session, name) else self._session.annotations
        return getattr(target, name)(*args)

    def _check_label(self, label: int) -> int:
        n = len(self._session.classes)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 1 <= int(label) <= n:
            raise ValueError(f"class must be a number from 1 to {n}, not {label!r}")
        return int(label)
