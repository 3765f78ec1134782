"""Label classes, brush strokes and imported labels, rasterised into a sparse label volume.

The :class:`Annotations` object holds no image data: only the image shape, the classes (name and
colour), the entries (brush strokes and imported label images, in the order they were made) and the
undo/redo history.  Entries are rasterised one by one into sorted flat voxel indices (cached per
entry), and combined in entry order into a sparse label set ``(coords, labels)``: later entries win,
eraser strokes clear.  Nothing here allocates an array of the full image size, so the same code
serves a 20000 x 20000 slide or a 2 GB volume; :meth:`Annotations.labels` allocates only the
region asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .label_entries import (
    DEFAULT_COLORS,
    LabelClass,
    LabelImport,
    Stroke,
    check_axes,
    check_class_name,
    check_color,
    check_points,
    check_radius,
    dense_import,
    import_from_record,
    make_import,
    next_color,
    without_class,
)
from .limits import MAX_CLASSES
from .rasterize import expand_runs, rasterize_stroke

__all__ = [
    "LabelClass",
    "Stroke",
    "LabelImport",
    "Annotations",
    "DEFAULT_COLORS",
    "normalize_region",
    "check_class_name",
]

_FORMAT = "ilastik_widget.core.annotations"


def normalize_region(region: Any, shape: Sequence[int]) -> tuple[slice, ...]:
    """Check a region (tuple of slices over the spatial axes, or None) and make its bounds explicit.

    Parameters
    ----------
    region : tuple of slice or None
        ``None`` means the whole image.  Fewer slices than axes are padded with full slices.
    shape : sequence of int
        Spatial shape of the image.

    Returns
    -------
    tuple of slice
        One ``slice(start, stop)`` per axis with ``0 <= start < stop <= size``.

    Raises
    ------
    ValueError
        For steps other than 1, negative or out-of-range bounds, or empty regions.
    """
    ndim = len(shape)
    if region is None:
        return tuple(slice(0, int(n)) for n in shape)
    if isinstance(region, slice):
        region = (region,)
    region = tuple(region)
    if len(region) > ndim:
        raise ValueError(f"region has {len(region)} slices but the image has {ndim} spatial axes")
    out = []
    for axis, n in enumerate(shape):
        s = region[axis] if axis < len(region) else slice(None)
        if not isinstance(s, slice):
            raise ValueError(f"region must be a tuple of slices, got {s!r} on axis {axis}")
        if s.step not in (None, 1):
            raise ValueError(f"region slices must have step 1, got step {s.step} on axis {axis}")
        start = 0 if s.start is None else int(s.start)
        stop = int(n) if s.stop is None else int(s.stop)
        if start < 0 or stop > n or start >= stop:
            raise ValueError(
                f"region {_fmt_region(region)} is outside the image of shape {tuple(int(x) for x in shape)} "
                f"(axis {axis}: {start}:{stop} not within 0:{n}, or empty)"
            )
        out.append(slice(start, stop))
    return tuple(out)


def _fmt_region(region: Sequence[slice]) -> str:
    return (
        "("
        + ", ".join(f"{s.start if s.start is not None else ''}:{s.stop if s.stop is not None else ''}" for s in region)
        + ")"
    )


#: One step of the history: ("add" or "remove", the entry, its index among the entries).
_Action = tuple[str, Stroke | LabelImport, int]


class Annotations:
    """Classes and strokes with undo/redo; no image data.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image (2 or 3 axes, array index order).
    classes : sequence of str or LabelClass or dict
        Initial classes; default ``("Background", "Foreground")``.

    Notes
    -----
    ``version`` increases with every change, ``labels_version`` with every change of the labelled
    voxels or their class numbers.  All methods are thread-safe (one re-entrant lock).
    Undo/redo covers adding and removing entries (strokes and imports); changing the classes clears
    the history (removing a class renumbers the labels the history refers to).  At most
    :data:`~ilastik_widget.core.limits.MAX_CLASSES` classes, so labels always fit uint8.
    """

    def __init__(self, shape: Sequence[int], classes: Iterable[Any] = ("Background", "Foreground")) -> None:
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3) or any(n <= 0 for n in shape):
            raise ValueError(f"annotations need a 2D or 3D spatial shape with positive sizes, got {shape}")
        self.shape: tuple[int, ...] = shape
        self.ndim: int = len(shape)
        self.classes: list[LabelClass] = []
        self.strokes: list[Stroke | LabelImport] = []  # every entry, in the order they apply
        self.version: int = 0
        # Bumps only when the labelled voxels or their numbering may change (not on rename/recolour).
        self.labels_version: int = 0
        self._lock = threading.RLock()
        self._voxels: dict[int, np.ndarray] = {}
        self._undo: list[_Action] = []
        self._redo: list[_Action] = []
        self._next_id = 1
        self._labelled_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        for c in classes:
            if isinstance(c, LabelClass):
                self.add_class(c.name, c.color)
            elif isinstance(c, dict):
                self.add_class(c["name"], c.get("color"))
            else:
                self.add_class(str(c))
        self.version = 0
        self.labels_version = 0

    # ------------------------------------------------------------------ classes
    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def _check_label(self, label: int) -> int:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(f"class label must be an integer 1..{self.n_classes}, got {label!r}")
        label = int(label)
        if not 1 <= label <= self.n_classes:
            raise ValueError(f"unknown class {label}: classes are 1..{self.n_classes}")
        return label

    def add_class(self, name: str, color: str | None = None) -> int:
        """Add a class; returns its 1-based label.  Without a colour, the first unused default is taken.

        Raises
        ------
        ValueError
            A blank or over-long name, a bad colour, or a class beyond ``MAX_CLASSES``.
        """
        with self._lock:
            name = check_class_name(name)
            if len(self.classes) >= MAX_CLASSES:
                raise ValueError(
                    f"at most {MAX_CLASSES} classes are allowed; class {len(self.classes) + 1} ({name!r}) was not added"
                )
            if color is None:
                color = next_color({c.color for c in self.classes}, len(self.classes))
            self.classes.append(LabelClass(name, check_color(color)))
            self.version += 1  # no label is renumbered: the undo history stays valid
            return len(self.classes)

    def rename_class(self, label: int, name: str) -> None:
        """Rename class ``label``."""
        with self._lock:
            label = self._check_label(label)
            self.classes[label - 1].name = check_class_name(name)
            self.version += 1

    def recolor_class(self, label: int, color: str) -> None:
        """Change the colour (``"#rrggbb"``) of class ``label``."""
        with self._lock:
            self.classes[self._check_label(label) - 1].color = check_color(color)
            self.version += 1

    def remove_class(self, label: int) -> None:
        """Remove class ``label``, its strokes and its imported voxels; later classes move down by one.

        Erase strokes stay (they belong to no class).  Clears the undo/redo history.
        """
        with self._lock:
            label = self._check_label(label)
            del self.classes[label - 1]
            kept, reshaped = without_class(self.strokes, label)
            for sid in reshaped:
                self._voxels.pop(sid, None)
            self.strokes = kept
            self._changed(history=False)

    # ------------------------------------------------------------------ strokes
    def add_stroke(
        self, label: int, points: Any, radius: float = 2, axes: Sequence[int] | None = None, erase: bool = False
    ) -> int:
        """Add a stroke; returns its id.

        Parameters
        ----------
        label : int
            Class 1..n_classes (for erase strokes 0 is also accepted; their class does not matter).
        points : array-like
            (N, ndim) or (ndim,) points in array index order of the spatial axes.
        radius : float
            Brush radius in pixels (> 0).
        axes : pair of int, optional
            Plane of the stroke; default the last two spatial axes.
        erase : bool
            Erase labels of earlier strokes instead of painting.

        Raises
        ------
        ValueError
            Unknown class, points outside the image, bad radius or axes.
        """
        with self._lock:
            if not (erase and label == 0):
                label = self._check_label(label)
            pts = check_points(points, self.shape)
            r = check_radius(radius)
            ax = check_axes(axes, self.ndim)
            return self._add(Stroke(self._next_id, label, pts, r, ax, bool(erase)))

    def import_labels(
        self, labels: Any, region: Any = None, *, label: int | None = None, masks: bool | None = None, source: str = ""
    ) -> int:
        """Add labels from a label image or masks as one entry (erased, undone and removed like a stroke); returns its id.

        Parameters
        ----------
        labels : array-like
            A dense label image (integer dtype, 0 = unlabelled, 1..n_classes = classes) of the region's shape; or
            masks (one per class, class ``i + 1`` for mask ``i``): a list of arrays, or a boolean array with one
            more (leading) axis; or, with ``label``, one mask whose non-zero voxels get class ``label``.
        region : tuple of slice, optional
            Where the labels go; default the whole image.  The array's shape must equal the region's.
        label : int, optional
            Class for every non-zero voxel of a single mask.
        masks : bool, optional
            True: ``labels`` is a stack of masks (also for 0/1 integer stacks); False: a dense label image;
            default: masks when boolean with one more axis than the image, or a list.
        source : str
            Where the labels came from (kept with the entry).

        Raises
        ------
        ValueError
            Shape mismatch, a non-integer dtype (NaN included), negative values, classes beyond ``n_classes``,
            overlapping masks, or nothing labelled.  Nothing is changed then.
        """
        with self._lock:
            region = normalize_region(region, self.shape)
            want = tuple(s.stop - s.start for s in region)
            if label is not None:
                label = self._check_label(label)
            dense = dense_import(labels, want, self.n_classes, label, masks)
            return self._add(make_import(self._next_id, [(tuple(s.start for s in region), dense)], self.shape, source))

    def import_label_boxes(self, boxes: Iterable[tuple[Any, Any]], *, source: str = "") -> int:
        """Add dense label images (as in :meth:`import_labels`) at several regions, ``(region, labels)`` pairs, as one
        entry; returns its id. Memory follows the boxes, not their bounding box (label blocks far apart in a large
        image). ValueError as for :meth:`import_labels`, and when the boxes' labelled voxels overlap."""
        with self._lock:
            placed = []
            for region, labels in boxes:
                region = normalize_region(region, self.shape)
                want = tuple(s.stop - s.start for s in region)
                placed.append((tuple(s.start for s in region), dense_import(labels, want, self.n_classes, masks=False)))
            return self._add(make_import(self._next_id, placed, self.shape, source))

    def _add(self, entry: Stroke | LabelImport) -> int:
        """Append a new entry made with the next id (undoable); its id."""
        self._next_id += 1
        self.strokes.append(entry)
        self._push(("add", entry, len(self.strokes) - 1))
        return entry.id

    def _index_of(self, stroke_id: int) -> int:
        for i, s in enumerate(self.strokes):
            if s.id == stroke_id:
                return i
        raise KeyError(f"no stroke with id {stroke_id}")

    def get_stroke(self, stroke_id: int) -> Stroke | LabelImport:
        """The entry (stroke or import) with this id (KeyError if there is none)."""
        with self._lock:
            return self.strokes[self._index_of(stroke_id)]

    def remove_stroke(self, stroke_id: int) -> None:
        """Remove an entry (stroke or import) by id (undoable)."""
        with self._lock:
            i = self._index_of(stroke_id)
            stroke = self.strokes.pop(i)
            self._push(("remove", stroke, i))

    def _push(self, action: _Action) -> None:
        self._undo.append(action)
        self._redo.clear()
        self._changed(history=True)

    def _apply(self, kind: str, stroke: Stroke | LabelImport, index: int, forward: bool) -> None:
        if (kind == "add") == forward:
            self.strokes.insert(index, stroke)
        else:
            del self.strokes[self._index_of(stroke.id)]

    def undo(self) -> bool:
        """Undo the last addition or removal of an entry; False when there is nothing to undo."""
        return self._replay(self._undo, self._redo, forward=False)

    def redo(self) -> bool:
        """Redo the last undone action; False when there is nothing to redo."""
        return self._replay(self._redo, self._undo, forward=True)

    def _replay(self, done: list[_Action], then: list[_Action], forward: bool) -> bool:
        with self._lock:
            if not done:
                return False
            action = done.pop()
            self._apply(*action, forward=forward)
            then.append(action)
            self._changed(history=True)
            return True

    @property
    def can_undo(self) -> bool:
        """True when there is an action to undo."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """True when there is an undone action to redo."""
        return bool(self._redo)

    def _changed(self, history: bool) -> None:
        if not history:
            self._undo.clear()
            self._redo.clear()
        self.version += 1
        self.labels_version += 1
        self._labelled_cache = None

    # ------------------------------------------------------------------ rasterisation
    def stroke_voxels(self, stroke_id: int) -> np.ndarray:
        """Sorted flat indices (int64) of the voxels an entry covers (cached)."""
        with self._lock:
            vox = self._voxels.get(stroke_id)
            if vox is None:
                s = self.get_stroke(stroke_id)
                if isinstance(s, LabelImport):
                    vox = expand_runs(s.starts, s.lengths)
                else:
                    vox = rasterize_stroke(s.points, s.radius, s.axes, self.shape)
                vox.setflags(write=False)
                self._voxels[stroke_id] = vox
            return vox

    def stroke_bounds(self, stroke_id: int) -> tuple[slice, ...]:
        """Bounding box of the voxels an entry covers, as one slice per spatial axis."""
        coords = np.unravel_index(self.stroke_voxels(stroke_id), self.shape)
        return tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)

    def _labelled_flat(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            cache = self._labelled_cache
            if cache is not None and cache[0] == self.labels_version:
                return cache[1], cache[2]
            flat, lab = _combine(self.strokes, [self.stroke_voxels(s.id) for s in self.strokes])
            flat.setflags(write=False)
            lab.setflags(write=False)
            self._labelled_cache = (self.labels_version, flat, lab)
            # Drop cached voxel sets of strokes that are neither present nor in the history.
            live = {s.id for s in self.strokes} | {a[1].id for a in self._undo} | {a[1].id for a in self._redo}
            for sid in [k for k in self._voxels if k not in live]:
                del self._voxels[sid]
            return flat, lab

    def labelled_flat(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Sparse labels as sorted flat voxel indices, their labels (uint8) and their ``labels_version``."""
        with self._lock:
            flat, lab = self._labelled_flat()
            return flat, lab, self.labels_version

    def labelled(self, region: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Labelled voxels, sparse.

        Parameters
        ----------
        region : tuple of slice, optional
            Restrict to this region (coordinates stay global).

        Returns
        -------
        coords : np.ndarray
            (M, ndim) int64 voxel coordinates, in C order.
        labels : np.ndarray
            (M,) uint8 labels 1..n_classes.
        """
        region = normalize_region(region, self.shape)
        flat, lab = self._labelled_flat()
        coords = np.stack(np.unravel_index(flat, self.shape), axis=1).astype(np.int64, copy=False)
        if len(coords):
            lo = np.array([s.start for s in region])
            hi = np.array([s.stop for s in region])
            inside = np.all((coords >= lo) & (coords < hi), axis=1)
            coords, lab = coords[inside], lab[inside]
        return coords.reshape(-1, self.ndim), np.array(lab, dtype=np.uint8)

    def labels(self, region: Any = None) -> np.ndarray:
        """Dense uint8 label image of a region (0 = unlabelled); allocates only the region."""
        region = normalize_region(region, self.shape)
        out = np.zeros(tuple(s.stop - s.start for s in region), np.uint8)
        coords, lab = self.labelled(region)
        if len(lab):
            local = coords - np.array([s.start for s in region])
            out[tuple(local.T)] = lab
        return out

    def count_per_class(self) -> np.ndarray:
        """Number of labelled voxels per class, (n_classes,) int64 (index 0 = class 1)."""
        _, lab = self._labelled_flat()
        return np.bincount(lab, minlength=self.n_classes + 1)[1 : self.n_classes + 1].astype(np.int64)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """Plain JSON-able data: classes and entries (the undo history is not saved).

        Imported labels are runs of voxels: as lists, or with ``arrays`` (a dict the caller stores, e.g. as
        ``.npy`` members) as named arrays that :meth:`from_dict` resolves from the same dict.
        """
        with self._lock:
            return {
                "format": _FORMAT,
                "format_version": 1,
                "shape": list(self.shape),
                "classes": [{"name": c.name, "color": c.color} for c in self.classes],
                "strokes": [s.to_dict(arrays) if isinstance(s, LabelImport) else s.to_dict() for s in self.strokes],
                "next_id": self._next_id,
            }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], shape: Sequence[int] | None = None, arrays: Mapping[str, np.ndarray] | None = None
    ) -> Annotations:
        """Rebuild from :meth:`to_dict` output; ``shape`` (if given) must match the saved shape.

        ``arrays`` resolves the named arrays of imported labels.  Raises ValueError for invalid data (unknown
        classes, duplicate ids, runs outside the image or overlapping).
        """
        saved = d.get("shape")
        if shape is None:
            if saved is None:
                raise ValueError("annotations data has no shape; pass shape=")
            shape = saved
        shape = tuple(int(n) for n in shape)
        if saved is not None and tuple(int(n) for n in saved) != shape:
            raise ValueError(f"annotations were made for shape {tuple(saved)}, not {shape}")
        ann = cls(shape, classes=[LabelClass(c["name"], c["color"]) for c in d.get("classes", [])])
        seen: set[int] = set()
        for s in d.get("strokes", []):
            sid = int(s["id"])
            if sid in seen:
                raise ValueError(f"two entries have id {sid}")
            seen.add(sid)
            if s.get("kind", "stroke") == "import":
                ann.strokes.append(import_from_record(sid, s, arrays, ann.shape, ann.n_classes))
                continue
            ann._next_id = sid
            ann.add_stroke(int(s["label"]), s["points"], s["radius"], s.get("axes"), bool(s.get("erase", False)))
        ann._next_id = max(int(d.get("next_id", 1)), max(seen, default=0) + 1)
        ann._undo.clear()
        ann._redo.clear()
        ann.version = 0
        ann.labels_version = 0
        ann._labelled_cache = None
        return ann

    def __repr__(self) -> str:
        return (
            f"Annotations(shape={self.shape}, classes={[c.name for c in self.classes]}, "
            f"strokes={len(self.strokes)}, version={self.version})"
        )


def _combine(entries: Sequence[Stroke | LabelImport], voxels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted flat indices and uint8 labels of entries applied in order: later entries win, erasers clear."""
    if not entries:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    vals = [
        s.voxel_labels() if isinstance(s, LabelImport) else np.full(len(v), 0 if s.erase else s.label, np.uint8)
        for s, v in zip(entries, voxels)
    ]
    # For every voxel, its last occurrence in entry order.
    allv = np.concatenate(voxels)[::-1]
    allval = np.concatenate(vals)[::-1]
    flat, first = np.unique(allv, return_index=True)
    lab = allval[first]
    keep = lab != 0  # erased voxels are unlabelled
    return flat[keep], lab[keep]
