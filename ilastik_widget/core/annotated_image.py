"""An image with its label classes and brush strokes, and the events that tell listeners (a widget, an autosaver) what
changed. :class:`~ilastik_widget.core.session.Session` adds features, the classifier and predictions on top."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from .annotations import Annotations, LabelClass, LabelImport, Stroke

log = logging.getLogger(__name__)


def check_image(image: Any, channel_axis: Any) -> tuple[Any, int | None, tuple[int, ...]]:
    """(array, normalised channel axis, spatial shape) of an image that can be classified, or ValueError saying why.

    The image needs ``shape``, ``dtype`` and numpy slicing (numpy, zarr, dask...; anything else goes through
    ``np.asarray``), integer or float values, and 2 or 3 spatial axes besides an optional channel axis.
    """
    if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
        image = np.asarray(image)
    try:
        shape = tuple(int(n) for n in image.shape)
    except (TypeError, ValueError):  # a dask array of unknown chunk sizes has NaN in its shape
        raise ValueError(
            f"the image's shape {tuple(image.shape)} is not known: compute the chunk sizes first "
            "(e.g. dask_array.compute_chunk_sizes())"
        ) from None
    dt = np.dtype(image.dtype)
    if dt.kind == "b":
        raise ValueError("boolean images are not supported: convert to an integer or float type first")
    if dt.kind not in "iuf":
        raise ValueError(f"unsupported image dtype {dt}: the image must hold integers or floats")
    if channel_axis is not None:
        if isinstance(channel_axis, (bool, np.bool_)) or not isinstance(channel_axis, (int, np.integer)):
            raise ValueError(f"channel_axis must be a whole number or None, not {channel_axis!r}")
        if not -len(shape) <= int(channel_axis) < len(shape):
            raise ValueError(f"channel_axis {channel_axis!r} is out of range for an image of shape {shape}")
        channel_axis = int(channel_axis) % len(shape)
    spatial = tuple(n for i, n in enumerate(shape) if i != channel_axis)
    if len(spatial) not in (2, 3):
        hint = " (pass channel_axis for a multi-channel image)" if channel_axis is None and len(shape) == 4 else ""
        raise ValueError(
            f"unsupported dimensionality: the image needs 2 or 3 spatial axes, got shape {shape} "
            f"with channel_axis={channel_axis}{hint}"
        )
    if any(n == 0 for n in spatial):
        raise ValueError(f"the image is empty (shape {shape})")
    return image, channel_axis, spatial


class AnnotatedImage:
    """An image, its classes and strokes, and listeners told of every change.

    Parameters
    ----------
    image : array-like or ImageSource
        See :class:`~ilastik_widget.core.session.Session`.
    channel_axis : int, optional
    classes : sequence of str
        Initial class names (at least one).

    Events (``listener(event, **info)``): ``"labels"`` (strokes added, removed, undone), ``"classes"`` (added,
    renamed, recoloured, removed); subclasses add their own.
    """

    def __init__(self, image: Any, channel_axis: int | None, classes: Iterable[Any]) -> None:
        #: The ImageSource the image came from (its URL, voxel sizes, pyramid levels), or None for an array.
        self.source: Any = None
        if hasattr(image, "array") and hasattr(image, "spatial_shape") and hasattr(image, "axes"):
            if image.time_axis is not None:
                raise ValueError(
                    f"the image is a time series of {image.n_times} time points: train on one, e.g. "
                    f"open_source(..., t=0) or source.at_time(0), and predict the others in batch"
                )
            self.source = image
            if channel_axis is None:
                channel_axis = image.channel_axis
            image = image.array
        self.image, self.channel_axis, spatial = check_image(image, channel_axis)
        self.spatial_shape: tuple[int, ...] = spatial
        self.ndim: int = len(spatial)
        self.n_input_channels: int = 1 if self.channel_axis is None else int(self.image.shape[self.channel_axis])
        if isinstance(classes, str) or not list(classes):
            raise ValueError(f"classes must be a non-empty list of class names, not {classes!r}")
        self._annotations = Annotations(spatial, list(classes))
        self._annotations_epoch = 0  # bumps when the annotations object is replaced
        self._classes_epoch = 0  # bumps when class numbering changes (removal)
        self._lock = threading.RLock()
        self._listeners: list[Callable[..., None]] = []

    # ------------------------------------------------------------------ events
    def add_listener(self, fn: Callable[..., None]) -> None:
        """Call ``fn(event, **info)`` on every change (see the class docstring for the events)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[..., None]) -> None:
        """Stop calling ``fn``."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _notify(self, event: str, **info: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, **info)
            except Exception:  # a broken listener must not break the session
                log.exception("ilastik_widget: session listener failed on %r", event)

    def _classes_changed(self, renumbered: str | None) -> None:
        """Hook: the classes changed; ``renumbered`` says how when labels may now mean other classes (a class was
        removed, the classes were replaced), None when they were only added to."""

    # ------------------------------------------------------------------ annotations
    @property
    def annotations(self) -> Annotations:
        """Classes and strokes (assigning a new :class:`Annotations` of the same shape replaces them)."""
        return self._annotations

    @annotations.setter
    def annotations(self, value: Annotations) -> None:
        if not isinstance(value, Annotations) or tuple(value.shape) != self.spatial_shape:
            raise ValueError(f"annotations must be an Annotations object of shape {self.spatial_shape}")
        with self._lock:
            same_classes = [c.name for c in value.classes] == [c.name for c in self._annotations.classes]
            self._annotations = value
            self._annotations_epoch += 1
            self._classes_changed(None if same_classes else "the classes were replaced")
        self._notify("classes", classes=self._class_dicts())
        self._notify("labels", version=value.version)

    @property
    def classes(self) -> list[LabelClass]:
        """The label classes, in label order (class 1 first)."""
        return self.annotations.classes

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return self.annotations.n_classes

    @property
    def strokes(self) -> list[Stroke | LabelImport]:
        """The label entries, oldest first: brush strokes (id, label, points, radius, axes, erase) and imported label
        images (id, runs of voxels, source)."""
        return list(self.annotations.strokes)

    # ------------------------------------------------------------------ labels
    def add_stroke(
        self, label: int, points: Any, radius: float = 2, axes: Sequence[int] | None = None, erase: bool = False
    ) -> int:
        """Paint (or erase) a stroke; returns its id. See :meth:`Annotations.add_stroke`."""
        sid = self.annotations.add_stroke(label, points, radius, axes, erase)
        self._notify("labels", version=self.annotations.version, stroke_id=sid)
        return sid

    def remove_stroke(self, stroke_id: int) -> None:
        """Remove a stroke by id (undoable)."""
        self.annotations.remove_stroke(stroke_id)
        self._notify("labels", version=self.annotations.version, stroke_id=stroke_id)

    def undo(self) -> bool:
        """Undo the last stroke addition or removal."""
        done = self.annotations.undo()
        if done:
            self._notify("labels", version=self.annotations.version)
        return done

    def redo(self) -> bool:
        """Redo the last undone stroke action."""
        done = self.annotations.redo()
        if done:
            self._notify("labels", version=self.annotations.version)
        return done

    def import_labels(self, labels: Any, region: Any = None, **options: Any) -> int:
        """Import a dense label image (0 = unlabelled, 1..n = classes) or one mask per class as one label entry, erased,
        undone and removed like a stroke; returns its id. See :meth:`Annotations.import_labels`."""
        eid = self.annotations.import_labels(labels, region, **options)
        self._notify("labels", version=self.annotations.version, stroke_id=eid)
        return eid

    def labels(self, region: Any = None) -> np.ndarray:
        """Dense uint8 labels of a region (0 = unlabelled)."""
        return self.annotations.labels(region)

    def labelled(self, region: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Sparse labels: (coords (M, ndim) int64, labels (M,) uint8)."""
        return self.annotations.labelled(region)

    # ------------------------------------------------------------------ classes
    def add_class(self, name: str, color: str | None = None) -> int:
        """Add a class; returns its label."""
        label = self.annotations.add_class(name, color)
        self._classes_changed(None)
        self._notify("classes", classes=self._class_dicts())
        return label

    def rename_class(self, label: int, name: str) -> None:
        """Rename class ``label``; listeners get a ``classes`` event."""
        self.annotations.rename_class(label, name)
        self._notify("classes", classes=self._class_dicts())

    def recolor_class(self, label: int, color: str) -> None:
        """Change the colour (``"#rrggbb"``) of class ``label``; listeners get a ``classes`` event."""
        self.annotations.recolor_class(label, color)
        self._notify("classes", classes=self._class_dicts())

    def remove_class(self, label: int) -> None:
        """Remove a class and its strokes; later classes are renumbered."""
        if self.n_classes <= 1:
            raise ValueError("the last class cannot be removed: a session needs at least one class")
        with self._lock:
            self.annotations.remove_class(label)
            self._classes_epoch += 1
            self._classes_changed("a class was removed")
        self._notify("classes", classes=self._class_dicts())
        self._notify("labels", version=self.annotations.version)

    def _class_dicts(self) -> list[dict[str, str]]:
        return [{"name": c.name, "color": c.color} for c in self.classes]
