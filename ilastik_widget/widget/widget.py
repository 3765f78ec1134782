"""The Jupyter widget: Neuroglancer with a brush, live predictions, a control panel and keyboard shortcuts.

```python
from ilastik_widget import IlastikWidget
w = IlastikWidget(image)      # numpy / dask / zarr array, an ImageSource, a path or URL, or a Session
w                             # shows the viewer and the controls
w.session                     # the core Session: labels, training, predictions
```

Everything the browser can do is also a trait or a method here. The kernel is the single source of truth: browser
edits of classes and strokes arrive as messages (:mod:`~ilastik_widget.widget.protocol`), are applied to the session,
and the resulting state is synced back as traits (:mod:`~ilastik_widget.widget.state`). The live update cycle
(train -> push -> status) is :class:`~ilastik_widget.widget.live.LiveUpdater`; chunk requests are answered by
:class:`~ilastik_widget.widget.chunk_requests.ChunkRequests`.

Where the browser reads an image on a web server (``raw_from``): zarr, OME-Zarr, precomputed, N5 and Deep Zoom are
loaded by the browser straight from their URL (not an image opened with a token, which the browser does not have),
falling back to the kernel's copy if the browser cannot load it; labels, predictions and features are computed in the
kernel either way. Zoomed out beyond the pyramid level ``max_predict_pixels`` allows, the viewer shows that level's
prediction chunks, computed as they come into view.

Traits (synced with the browser; invalid values raise ``TraitError`` in Python and are rejected, with the reason
in ``error``, when they come from the browser): ``active_class`` (1-based), ``brush_size`` (the brush's diameter
in pixels, 1..61), ``mode`` ("paint", "erase", "navigate"), ``live``, ``feature_selection``
(``FeatureSelection.to_dict()``), ``layers`` (name -> ``{visible, opacity}``), ``viewer_state`` (position in
array index order, crossSectionScale, layout...), ``height`` (CSS px). ``classes`` (list of ``{name, color}``)
may be set from Python; the browser edits classes with messages. Set by the kernel only: ``status``, ``error``,
``busy``, ``progress`` (``{task, done, total, seconds_left}`` while chunks are predicted), ``strokes``
(summaries), ``source_info``, ``widget_id``, ``objects_info`` and ``class_insight`` (objects, class insight and
export are :mod:`~ilastik_widget.widget.objects`).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from ..core.classifier import import_sklearn_soon
from ..core.features import FeatureSelection
from ..core.session import Session
from ..io.project import enable_autosave, load_session, save_session
from ..io.sources import open_source
from ..serving.chunk_server import ChunkServer
from ..serving.layer_specs import DEFAULT_LAYER_SETTINGS
from . import state
from . import trait_checks as checks
from .browser_requests import BrowserRequests
from .chunk_requests import ChunkRequests
from .display import WidgetDisplay
from .features_ahead import FeaturesAhead
from .live import PAINT_HINT, LiveUpdater
from .objects import RESULT_TRAITS, WidgetResults
from .protocol import KernelMessage, describe_exception

log = logging.getLogger("ilastik_widget")

STATIC = Path(__file__).parent.parent / "static"
#: Traits a user may also give to the constructor.
INIT_TRAITS = ("height", "live", "brush_size", "mode", "active_class", "layers", "viewer_state")
#: Traits only the kernel writes; the browser's attempts are rejected and reverted.
KERNEL_ONLY = ("status", "error", "busy", "progress", "strokes", "source_info", "widget_id", "classes", *RESULT_TRAITS)

_FALLBACK_ESM = """
export default { render({ model, el }) {
  el.innerHTML = '<div class="ilastik-widget" style="padding:1em;border:1px solid #c33">' +
    'ilastik_widget: the JavaScript bundle is missing (ilastik_widget/static/widget.js). ' +
    'Build it with <code>cd js && npm ci && node build.mjs</code> or reinstall the package.</div>';
} };
"""


def _read_static(name: str, fallback: str) -> str:
    try:
        return (STATIC / name).read_text(encoding="utf-8")
    except OSError:
        return fallback


def _session_for(image_or_session: Any, channel_axis: int | None, classes: Any, options: dict) -> Session:
    """The session a widget shows: the one given, or a new one on the image (a path or URL is opened first)."""
    remote = {k: options.pop(k) for k in ("token", "timeout") if k in options}
    if isinstance(image_or_session, (str, os.PathLike)):
        image_or_session, channel_axis = open_source(image_or_session, channel_axis=channel_axis, **remote), None
    elif remote:
        raise ValueError(f"{' and '.join(remote)} apply to an image given as a path or URL (see open_source)")
    if isinstance(image_or_session, Session):
        if channel_axis is not None or classes is not None or options:
            raise ValueError(
                "channel_axis, classes and session options apply only when passing an image, not a Session"
            )
        return image_or_session
    if classes is not None:
        options["classes"] = tuple(classes)
    return Session(image_or_session, channel_axis=channel_axis, **options)


class _TraitStatus:
    """The live updater's status line, written into the widget's ``status``, ``busy`` and ``error`` traits."""

    def __init__(self, widget: IlastikWidget):
        self.widget = widget

    def show(self, text: str, busy: bool | None = None) -> None:
        self.widget._set_traits(status=text, **({} if busy is None else {"busy": busy}))

    def error(self, text: str) -> None:
        log.warning("ilastik_widget: %s", text)
        self.widget._set_traits(error=text, status=f"Error: {text}")

    def progress(self, values: dict) -> None:
        self.widget._set_traits(progress=values)

    def clear_error(self) -> None:
        saver = self.widget._autosaver
        if saver is not None and saver.last_error is not None:
            return  # the labels are not safe on disk yet: keep saying so until a save succeeds
        w = self.widget
        if w.error:
            values: dict[str, Any] = {"error": ""}
            if w.status.startswith("Error: "):
                values["status"] = w._live.idle_text()
            w._set_traits(**values)


class IlastikWidget(WidgetDisplay, WidgetResults, anywidget.AnyWidget):
    """Interactive pixel classification on ``image`` (or on an existing ``Session``).

    Parameters
    ----------
    image_or_session : array-like, ImageSource, str, os.PathLike or Session
        A numpy, dask or zarr array (2D ``(y, x)`` or 3D ``(z, y, x)``, optionally with a channel axis), an
        ``ImageSource``, a path or URL (opened with :func:`~ilastik_widget.open_source`), or a
        :class:`~ilastik_widget.Session` to attach to.
    channel_axis : int, optional
        Index of the channel axis of ``image`` if it has one.
    classes : sequence of str, optional
        Class names (default: ``("Background", "Foreground")``).
    autosave : str or os.PathLike, optional
        A project file to save to after every change of strokes, classes or features, so a kernel crash loses
        nothing; reopen it with :meth:`IlastikWidget.from_project`.
    token, timeout : optional
        For an image given as a URL: the bearer token (never saved, never sent to the browser) and the timeout, as
        :func:`~ilastik_widget.open_source` takes them.
    raw_from : {"auto", "browser", "kernel"}
        Where the browser reads an image on a web server: ``"auto"`` from its URL, else the kernel's copy
        (``raw_fallback`` says why); ``"browser"`` from the URL only; ``"kernel"`` always through the comm.
    max_predict_pixels : int, optional
        The most full-resolution pixels one prediction chunk may cover (default 1024 x 1024).
    height, live, brush_size, mode, active_class, layers, viewer_state
        Initial values of these traits.
    **session_kwargs
        Passed to :class:`~ilastik_widget.Session` (``features``, ``seed``, ``classifier``...).

    See the module docstring for the traits.
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
    source_info = t.Dict().tag(sync=True)
    progress = t.Dict().tag(sync=True)
    height = t.Int(600).tag(sync=True)

    def __init__(
        self,
        image_or_session: Any,
        channel_axis: int | None = None,
        classes: Any = None,
        *,
        autosave: str | os.PathLike | None = None,
        raw_from: str = "auto",
        max_predict_pixels: int | None = None,
        **session_kwargs: Any,
    ):
        # ipywidgets habit: traits as keyword arguments (IlastikWidget(image, height=800, live=False))
        trait_values = {name: session_kwargs.pop(name) for name in INIT_TRAITS if name in session_kwargs}
        self._closed = True  # until fully made: close() (also from __del__ of a failed __init__) has nothing to stop
        self._autosaver: Any = None
        session = _session_for(image_or_session, channel_axis, classes, session_kwargs)
        self._session = session
        self._lock = threading.RLock()  # trait updates from worker threads (ipywidgets' bookkeeping is not thread-safe)
        self._syncing = False  # True while the widget writes session state into traits
        widget_id = uuid.uuid4().hex[:12]
        options = {} if max_predict_pixels is None else {"max_predict_pixels": int(max_predict_pixels)}
        self._server = ChunkServer(session, widget_id, raw_from=raw_from, plane_chunks=True, **options)
        if raw_from == "browser":
            try:
                self._server.browser_raw_source()
            except ValueError as exc:
                raise ValueError(f"raw_from='browser': the browser cannot load this image itself: {exc}") from None
        #: Why the browser could not load the raw image from its URL and shows the kernel's copy (None until then).
        self.raw_fallback: str | None = None
        self._live = LiveUpdater(session, self._server, self._send_message, _TraitStatus(self))
        self._requests = ChunkRequests(
            self._server,
            self._send_message,
            self._live.predictions_asked,
            self._live.prediction_done,
            name=f"ilastik-{widget_id}",
        )
        super().__init__(
            widget_id=widget_id,
            classes=state.class_list(session),
            feature_selection=session.feature_selection.to_dict(),
            layers={k: dict(v) for k, v in DEFAULT_LAYER_SETTINGS.items()},
            strokes=state.stroke_summaries(session),
            source_info=state.source_info(session, self._server),
            status=PAINT_HINT,
        )
        for name, value in trait_values.items():  # checked like any later change
            setattr(self, name, value)
        self._live.live = self.live
        self._browser = BrowserRequests(self)
        self._ahead = FeaturesAhead(self)
        self.on_msg(lambda _widget, content, buffers=None: self._browser.dispatch(content, buffers))
        # The saver listens before the widget does, so the widget sees a failed save of the same change.
        if autosave is not None:
            self._autosaver = enable_autosave(session, autosave)
        session.add_listener(self._on_session_event)
        self._closed = False
        if session.is_trained:
            self._live.status.show("Ready")
        elif self.live and self._live.labelled_classes()[1] >= 2:
            self._live.train()
        else:
            import_sklearn_soon()  # ready before two classes are painted; the widget shows without waiting for it

    # ------------------------------------------------------------------------------------------ properties
    @property
    def session(self) -> Session:
        """The core :class:`~ilastik_widget.Session` behind this widget."""
        return self._session

    @property
    def chunk_server(self) -> ChunkServer:
        """What feeds the viewer (zarr keys -> bytes, pushes, layer specs)."""
        return self._server

    @property
    def autosave_path(self) -> Path | None:
        """The project file this widget saves to after every change, or None."""
        return None if self._autosaver is None else self._autosaver.path

    def __repr__(self) -> str:
        return (
            f"IlastikWidget(shape={tuple(self._session.spatial_shape)}, classes={[c['name'] for c in self.classes]},"
            f" strokes={len(self.strokes)}, widget_id={self.widget_id!r})"
        )

    # ------------------------------------------------------------------------------------------ trait checks
    @t.validate(*checks.CHECKED)
    def _check_trait(self, proposal: dict) -> Any:
        return checks.check(proposal["trait"].name, proposal["value"], self)

    def set_state(self, sync_data: dict) -> None:
        """State from the browser: each trait separately, invalid values rejected (and reverted in the browser)."""
        with self._lock:  # trait updates from worker threads wait
            for name, value in dict(sync_data).items():
                if name in KERNEL_ONLY:
                    self._reject(name, f"'{name}' is set by the kernel only")
                    continue
                try:
                    super().set_state({name: value})
                except Exception as exc:
                    self._reject(name, describe_exception(exc))

    def _reject(self, name: str, text: str) -> None:
        self._live.status.error(f"Rejected a change of {name}: {text}")
        try:
            self.send_state(name)  # put the browser back in sync with the kernel's value
        except Exception:  # pragma: no cover
            log.exception("ilastik_widget: could not resend %s", name)

    # ------------------------------------------------------------------------------------------ traits -> session
    @t.observe("classes")
    def _classes_changed(self, change: dict) -> None:
        self._apply("classes", state.apply_class_list, change["new"], self._sync_classes)

    @t.observe("feature_selection")
    def _features_changed(self, change: dict) -> None:
        self._apply("features", state.apply_feature_selection, change["new"], self._sync_features)

    def _apply(self, what: str, apply: Callable[[Session, Any], None], value: Any, resync: Callable[[], None]) -> None:
        """Change the session as a trait now says; if it refuses, say why and put the trait back."""
        if self._syncing:
            return
        try:
            apply(self._session, value)
        except Exception as exc:
            self._live.status.error(f"Could not change the {what}: {describe_exception(exc)}")
            resync()

    @t.observe("live")
    def _live_changed(self, change: dict) -> None:
        self._live.live = bool(change["new"])
        if not change["new"]:
            self._live.status.show("Live update is off: press “Update now” to train on the new labels.")
        elif self._live.needs_training:
            self._live.train()
        elif not self.busy:
            self._live.status.show(self._live.idle_text())

    # ------------------------------------------------------------------------------------------ session -> traits
    def _on_session_event(self, event: str, **info: Any) -> None:
        """Listener on the session (called from any thread)."""
        if self._closed:
            return
        saver = self._autosaver
        if saver is not None and saver.last_error is not None and event in saver.EVENTS:
            self._live.status.error(f"Autosave to {saver.path} failed: {saver.last_error}")
        try:
            if event == "labels":
                self._set_traits(strokes=state.stroke_summaries(self._session))
                self._live.labels_changed()
            elif event == "classes":
                self._sync_classes()
                self._live.classes_or_features_changed()
            elif event == "features":
                self._sync_features()
                self._live.classes_or_features_changed()
            elif event == "trained":  # also when training ran outside the widget (w.session.train() in a cell)
                self._live.trained()
            elif event == "error":
                self._live.status.error(str(info.get("message") or "unknown error"))
        except Exception:
            log.exception("ilastik_widget: failed to handle session event %r", event)

    def _sync_classes(self) -> None:
        classes = state.class_list(self._session)
        values = {
            "classes": classes,
            "source_info": state.source_info(self._session, self._server),
            "strokes": state.stroke_summaries(self._session),
        }  # strokes renumber when a class is removed
        with self._lock:
            self._syncing = True
            try:
                with self.hold_sync():
                    if self.active_class > len(classes):
                        self.active_class = len(classes)
                    self._set_traits(**values)
            finally:
                self._syncing = False

    def _sync_features(self) -> None:
        with self._lock:
            self._syncing = True
            try:
                self._set_traits(feature_selection=self._session.feature_selection.to_dict())
            finally:
                self._syncing = False

    def _set_traits(self, **values: Any) -> None:
        with self._lock:
            if self._closed:
                return
            with self.hold_sync():
                for k, v in values.items():
                    if getattr(self, k) != v:
                        setattr(self, k, v)

    # ------------------------------------------------------------------------------------------ Python API
    def add_class(self, name: str | None = None, color: str | None = None) -> int:
        """Add a class; returns its 1-based label."""
        return self._session.add_class(name if name is not None else f"Class {len(self._session.classes) + 1}", color)

    def remove_class(self, label: int) -> None:
        """Remove class ``label`` and its strokes; later classes are renumbered down."""
        self._session.remove_class(self._check_label(label))

    def rename_class(self, label: int, name: str) -> None:
        """Rename class ``label``; ValueError for a class that does not exist or a name that is not valid."""
        self._session.rename_class(self._check_label(label), name)

    def recolor_class(self, label: int, color: str) -> None:
        """Change the colour (``"#rrggbb"``) of class ``label``; ValueError for a class or colour not valid."""
        self._session.recolor_class(self._check_label(label), color)

    def add_stroke(self, label: int, points: Any, radius: float = 2, axes: Any = None, erase: bool = False) -> int:
        """Paint a stroke from Python (points in array index order, radius in pixels); returns its id."""
        return self._session.add_stroke(
            self._check_label(label),
            np.asarray(points, dtype=np.float64),
            radius=radius,
            axes=None if axes is None else tuple(axes),
            erase=bool(erase),
        )

    def remove_stroke(self, stroke_id: int) -> None:
        """Remove a stroke (or imported labels) by id, undoably; KeyError when there is no such stroke."""
        self._session.remove_stroke(int(stroke_id))

    def undo(self) -> bool:
        """Undo the last addition or removal of a stroke; False when there was nothing to undo."""
        return bool(self._session.undo())

    def redo(self) -> bool:
        """Redo the last undone action; False when there was nothing to redo."""
        return bool(self._session.redo())

    def update_now(self) -> Future | None:
        """Train on the current labels now (also when live update is off); returns the training future."""
        return self._live.train(force=True)

    def stop(self) -> None:
        """Stop the work under way: the training and the predictions being computed (what is not computed yet stays
        empty until the next training, or until the view asks again)."""
        self._requests.stop()
        self._live.stop()

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the training, the pushes, the chunk requests and the features computed ahead are done."""
        self._ahead.wait(timeout)
        self._live.wait(timeout, others=self._requests.futures)

    def go_to_stroke(self, stroke_id: int) -> None:
        """Move the view to the centre of a stroke."""
        for s in self.strokes:
            if s["id"] == int(stroke_id):
                self.go_to(s["center"])
                return
        raise KeyError(f"no stroke with id {stroke_id}")

    def go_to(self, position: Any) -> None:
        """Centre the view on ``position`` (array index order of the spatial axes, in voxels)."""
        pos = [float(p) for p in position]
        if len(pos) != len(self._session.spatial_shape):
            raise ValueError(f"position needs {len(self._session.spatial_shape)} coordinates")
        self.viewer_state = {**self.viewer_state, "position": pos}

    def set_layer(self, name: str, visible: bool | None = None, opacity: float | None = None) -> None:
        """Show or hide a layer and set its opacity."""
        settings: dict[str, Any] = {}
        if visible is not None:
            settings["visible"] = bool(visible)
        if opacity is not None:
            settings["opacity"] = float(opacity)
        self.layers = {**self.layers, name: {**self.layers.get(name, {}), **settings}}

    def select_features(self, which: str | dict = "all") -> None:
        """``"all"``, ``"none"``, ``"default"`` or a ``FeatureSelection.to_dict()`` dict."""
        if isinstance(which, dict):
            self.feature_selection = which
        elif which in ("all", "none", "default"):
            self.feature_selection = getattr(FeatureSelection, which)().to_dict()
        else:
            raise ValueError("select_features takes 'all', 'none', 'default' or a selection dict")

    def set_feature(self, feature: str, scale: float, on: bool = True) -> None:
        """Switch one cell of the feature matrix on or off."""
        selection = FeatureSelection.from_dict(self.feature_selection).with_feature(feature, float(scale), bool(on))
        self.feature_selection = selection.to_dict()

    def segmentation(self, region: Any = None) -> np.ndarray:
        """Most probable class per pixel of ``region`` (see :meth:`Session.segmentation`)."""
        return self._session.segmentation(region)

    def probabilities(self, region: Any = None) -> np.ndarray:
        """Class probabilities of ``region`` (see :meth:`Session.predict`)."""
        return self._session.predict(region)

    def save(self, path: str | os.PathLike, **options: Any) -> Path:
        """Save the project (see :func:`~ilastik_widget.save_session`); returns the file's path."""
        return save_session(self._session, path, **options)

    @classmethod
    def from_project(
        cls, path: str | os.PathLike, image: Any = None, *, autosave: bool = True, token: str | None = None
    ) -> IlastikWidget:
        """Reopen a saved or autosaved project (:func:`~ilastik_widget.save_session`, or a widget's autosave):
        every class and stroke comes back, and the model is retrained. ``image`` replaces the image the project
        refers to (a file that moved, an array from a cell); ``autosave`` keeps saving every change back to ``path``;
        ``token`` is the bearer token for an image the project refers to by URL (a project file never holds one)."""
        return cls(load_session(path, image=image, token=token), autosave=path if autosave else None)

    def close(self) -> None:
        """Stop serving the browser: cancel training, stop the chunk threads, detach from the session."""
        if getattr(self, "_closed", True) is False:
            self._closed = True
            try:
                if self._autosaver is not None:
                    self._autosaver.close()
                self._ahead.close()
                self._live.close()
                self._requests.close()
                self._session.remove_listener(self._on_session_event)
            except Exception:  # pragma: no cover
                log.exception("ilastik_widget: error while closing")
        super().close()

    def _check_label(self, label: int) -> int:
        n = len(self._session.classes)
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 1 <= int(label) <= n:
            raise ValueError(f"class must be a number from 1 to {n}, not {label!r}")
        return int(label)

    # ------------------------------------------------------------------------------------------ messages
    def _send_message(self, message: KernelMessage, buffers: list) -> None:
        if self._closed or self.comm is None:
            return
        self.send(message.to_json(), buffers or None)

    def handle_message(self, content: Any, buffers: list | None = None) -> Any:
        """Handle one browser message as the comm would (for tests and tools); returns the parsed request or None."""
        return self._browser.dispatch(content, buffers)
