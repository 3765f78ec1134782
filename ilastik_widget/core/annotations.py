"""Label classes and brush strokes, rasterised into a sparse label volume.

The :class:`Annotations` object holds no image data: only the image shape, the classes (name and
colour), the strokes and the undo/redo history.  Strokes are rasterised one by one into sorted
flat voxel indices (cached per stroke), and combined in stroke order into a sparse label set
``(coords, labels)``.  Nothing here allocates an array of the full image size, so the same code
serves a 20000 x 20000 slide or a 2 GB volume; :meth:`Annotations.labels` allocates only the
region asked for.
"""

from __future__ import annotations

import colorsys
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["LabelClass", "Stroke", "Annotations", "DEFAULT_COLORS", "normalize_region"]

# Saturated colours that stand out over grey-scale data and from each other (order: the first two
# are the default Background / Foreground classes).
DEFAULT_COLORS: list[str] = [
    "#ffd400",  # yellow
    "#1f78ff",  # blue
    "#ff3b30",  # red
    "#2ecc40",  # green
    "#ff00ff",  # magenta
    "#00e5ff",  # cyan
    "#ff8c00",  # orange
    "#8a2be2",  # violet
    "#a0522d",  # brown
    "#7fff00",  # chartreuse
    "#ff69b4",  # pink
    "#008080",  # teal
]

_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
_FORMAT = "ilastik_widget.core.annotations"


def _extra_color(i: int) -> str:
    """A further distinct colour once the palette is used up (golden-angle hue steps)."""
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def _check_color(color: str) -> str:
    if not isinstance(color, str) or not _COLOR_RE.match(color):
        raise ValueError(f"colour must be a string '#rrggbb', got {color!r}")
    return color.lower()


@dataclass
class LabelClass:
    """A label class: its display name and colour ``"#rrggbb"``."""

    name: str
    color: str


@dataclass(frozen=True, eq=False)
class Stroke:
    """One brush stroke.

    Attributes
    ----------
    id : int
        Unique within its :class:`Annotations` (never reused).
    label : int
        Class, 1-based (0 for erase strokes that were given no class).
    points : np.ndarray
        (N, ndim) float64 polyline vertices in array index order of the spatial axes.
    radius : float
        Brush radius in pixels of the plane.
    axes : tuple[int, int]
        The two spatial axes of the plane the stroke was painted in.
    erase : bool
        True for an eraser stroke: removes labels of earlier strokes under it.
    """

    id: int
    label: int
    points: np.ndarray = field(repr=False)
    radius: float
    axes: tuple[int, int]
    erase: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of this stroke."""
        return {
            "id": int(self.id),
            "label": int(self.label),
            "points": self.points.tolist(),
            "radius": float(self.radius),
            "axes": [int(a) for a in self.axes],
            "erase": bool(self.erase),
        }


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


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # floor(x + 0.5): pixel i covers [i - 0.5, i + 0.5); np.rint would send 0.5 to 0 and 1.5 to 2.
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _segment_mask(p0: np.ndarray, p1: np.ndarray, radius: float, lo: np.ndarray, hi: np.ndarray):
    """Pixels of the box [lo, hi) (2D) within ``radius`` of segment p0-p1; returns (u, v) int arrays."""
    u = np.arange(lo[0], hi[0], dtype=np.float64)[:, None]
    v = np.arange(lo[1], hi[1], dtype=np.float64)[None, :]
    d = p1 - p0
    dd = float(d @ d)
    if dd == 0.0:
        t = 0.0
    else:
        # Parameter of the closest point on the segment, clamped to its ends.
        t = np.clip(((u - p0[0]) * d[0] + (v - p0[1]) * d[1]) / dd, 0.0, 1.0)
    du = u - (p0[0] + t * d[0])
    dv = v - (p0[1] + t * d[1])
    # A tiny tolerance so that pixels exactly at the radius count despite float rounding.
    inside = du * du + dv * dv <= radius * radius * (1 + 1e-9) + 1e-12
    uu, vv = np.nonzero(inside)
    return uu + lo[0], vv + lo[1]


def rasterize_stroke(points: np.ndarray, radius: float, axes: tuple[int, int], shape: Sequence[int]) -> np.ndarray:
    """Flat indices (sorted, unique, int64) of all voxels a stroke covers.

    A voxel is covered when its centre (integer index) lies within ``radius`` of the polyline in the
    stroke's plane, at the off-plane coordinates of the points (rounded).  A segment whose two ends
    round to different off-plane positions is drawn in both.  The voxel under each point is always
    covered, so even a brush thinner than a pixel paints something.

    Parameters
    ----------
    points : np.ndarray
        (N, ndim) float polyline vertices, array index order.
    radius : float
        Brush radius in pixels.
    axes : tuple of int
        The plane's two axes.
    shape : sequence of int
        Spatial image shape (voxels outside it are dropped).
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    a, b = axes
    off_axes = [i for i in range(ndim) if i not in (a, b)]
    plane_shape = np.array([shape[a], shape[b]])
    r_int = int(np.ceil(radius))
    pts_plane = points[:, [a, b]]
    off = _round_half_up(points[:, off_axes]) if off_axes else np.zeros((len(points), 0), np.int64)
    pieces = []

    def emit(uu: np.ndarray, vv: np.ndarray, off_pos: np.ndarray) -> None:
        coords = [None] * ndim
        coords[a] = uu
        coords[b] = vv
        for k, ax in enumerate(off_axes):
            coords[ax] = np.full(uu.shape, off_pos[k], dtype=np.int64)
        pieces.append(np.ravel_multi_index(tuple(coords), shape))

    # Long (diagonal) segments are cut into pieces so each bounding box stays small: work and
    # memory grow with the stroke's length, not with the area it spans.
    piece = max(8.0 * radius, 64.0)
    segments = [(i, i + 1) for i in range(len(points) - 1)] or [(0, 0)]
    for i, j in segments:
        q0, q1 = pts_plane[i], pts_plane[j]
        n_pieces = max(1, int(np.ceil(np.hypot(*(q1 - q0)) / piece)))
        offs = {tuple(off[i]), tuple(off[j])}
        for k in range(n_pieces):
            p0 = q0 + (q1 - q0) * (k / n_pieces)
            p1 = q0 + (q1 - q0) * ((k + 1) / n_pieces)
            lo = np.maximum(np.floor(np.minimum(p0, p1)).astype(np.int64) - r_int, 0)
            hi = np.minimum(np.ceil(np.maximum(p0, p1)).astype(np.int64) + r_int + 1, plane_shape)
            if np.any(hi <= lo):
                continue
            uu, vv = _segment_mask(p0, p1, radius, lo, hi)
            for off_pos in offs:
                emit(uu, vv, np.asarray(off_pos, dtype=np.int64))
    # The voxel under each sample point (points were checked to lie inside the image).
    centres = _round_half_up(points)
    pieces.append(np.ravel_multi_index(tuple(centres.T), shape))
    return np.unique(np.concatenate(pieces))


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
    Undo/redo covers adding and removing strokes; changing the classes clears the history
    (removing a class renumbers the labels the history refers to).
    """

    def __init__(self, shape: Sequence[int], classes: Iterable[Any] = ("Background", "Foreground")) -> None:
        shape = tuple(int(n) for n in shape)
        if len(shape) not in (2, 3) or any(n <= 0 for n in shape):
            raise ValueError(f"annotations need a 2D or 3D spatial shape with positive sizes, got {shape}")
        self.shape: tuple[int, ...] = shape
        self.ndim: int = len(shape)
        self.classes: list[LabelClass] = []
        self.strokes: list[Stroke] = []
        self.version: int = 0
        # Bumps only when the labelled voxels or their numbering may change (not on rename/recolour).
        self.labels_version: int = 0
        self._lock = threading.RLock()
        self._voxels: dict[int, np.ndarray] = {}
        self._undo: list[tuple[str, Stroke, int]] = []
        self._redo: list[tuple[str, Stroke, int]] = []
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
        """Add a class; returns its 1-based label.  Without a colour, the first unused default is taken."""
        with self._lock:
            if color is None:
                used = {c.color for c in self.classes}
                color = next((c for c in DEFAULT_COLORS if c not in used), None)
                i = 0
                while color is None or color in used:
                    color = _extra_color(len(self.classes) + i)
                    i += 1
            self.classes.append(LabelClass(str(name), _check_color(color)))
            self.version += 1  # no label is renumbered: the undo history stays valid
            return len(self.classes)

    def rename_class(self, label: int, name: str) -> None:
        """Rename class ``label``."""
        with self._lock:
            self.classes[self._check_label(label) - 1].name = str(name)
            self.version += 1

    def recolor_class(self, label: int, color: str) -> None:
        """Change the colour (``"#rrggbb"``) of class ``label``."""
        with self._lock:
            self.classes[self._check_label(label) - 1].color = _check_color(color)
            self.version += 1

    def remove_class(self, label: int) -> None:
        """Remove class ``label`` and its strokes; later classes move down by one.

        Erase strokes stay (they belong to no class).  Clears the undo/redo history.
        """
        with self._lock:
            label = self._check_label(label)
            del self.classes[label - 1]
            kept = []
            for s in self.strokes:
                if s.erase:
                    # An eraser's class does not matter; keep its number valid.
                    new = 0 if s.label == label else s.label - (s.label > label)
                    kept.append(replace(s, label=new) if new != s.label else s)
                elif s.label == label:
                    self._voxels.pop(s.id, None)
                elif s.label > label:
                    kept.append(replace(s, label=s.label - 1))  # same geometry: voxel cache stays valid
                else:
                    kept.append(s)
            self.strokes = kept
            self._changed(history=False)

    # ------------------------------------------------------------------ strokes
    def _check_points(self, points: Any) -> np.ndarray:
        pts = np.array(points, dtype=np.float64)
        if pts.ndim == 1:
            pts = pts[None, :]
        if pts.ndim != 2 or pts.shape[1] != self.ndim or len(pts) == 0:
            raise ValueError(f"points must have shape (N, {self.ndim}) with N >= 1, got shape {np.shape(points)}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("points must be finite numbers")
        idx = _round_half_up(pts)
        bad = np.any((idx < 0) | (idx >= np.array(self.shape)), axis=1)
        if bad.any():
            raise ValueError(
                f"point {pts[bad][0].tolist()} is outside the image of shape {self.shape} "
                f"({int(bad.sum())} of {len(pts)} points outside)"
            )
        pts.setflags(write=False)
        return pts

    def _check_axes(self, axes: Any) -> tuple[int, int]:
        if axes is None:
            return (self.ndim - 2, self.ndim - 1)
        try:
            a, b = (int(x) for x in axes)
        except (TypeError, ValueError):
            raise ValueError(f"axes must be two spatial axis indices, got {axes!r}") from None
        if not (-self.ndim <= a < self.ndim and -self.ndim <= b < self.ndim):
            raise ValueError(f"axes {tuple(axes)} out of range for {self.ndim} spatial axes")
        a, b = a % self.ndim, b % self.ndim
        if a == b:
            raise ValueError(f"axes must be two different axes, got {tuple(axes)}")
        return (a, b)

    @staticmethod
    def _check_radius(radius: Any) -> float:
        try:
            r = float(radius)
        except (TypeError, ValueError):
            raise ValueError(f"radius must be a positive number of pixels, got {radius!r}") from None
        if not np.isfinite(r) or r <= 0:
            raise ValueError(f"radius must be a positive finite number of pixels, got {radius!r}")
        return r

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
            pts = self._check_points(points)
            r = self._check_radius(radius)
            ax = self._check_axes(axes)
            stroke = Stroke(self._next_id, label, pts, r, ax, bool(erase))
            self._next_id += 1
            self.strokes.append(stroke)
            self._push(("add", stroke, len(self.strokes) - 1))
            return stroke.id

    def _index_of(self, stroke_id: int) -> int:
        for i, s in enumerate(self.strokes):
            if s.id == stroke_id:
                return i
        raise KeyError(f"no stroke with id {stroke_id}")

    def get_stroke(self, stroke_id: int) -> Stroke:
        """The stroke with this id (KeyError if there is none)."""
        with self._lock:
            return self.strokes[self._index_of(stroke_id)]

    def remove_stroke(self, stroke_id: int) -> None:
        """Remove a stroke by id (undoable)."""
        with self._lock:
            i = self._index_of(stroke_id)
            stroke = self.strokes.pop(i)
            self._push(("remove", stroke, i))

    def _push(self, action: tuple[str, Stroke, int]) -> None:
        self._undo.append(action)
        self._redo.clear()
        self._changed(history=True)

    def _apply(self, kind: str, stroke: Stroke, index: int, forward: bool) -> None:
        if (kind == "add") == forward:
            self.strokes.insert(index, stroke)
        else:
            del self.strokes[self._index_of(stroke.id)]

    def undo(self) -> bool:
        """Undo the last stroke addition or removal; False when there is nothing to undo."""
        with self._lock:
            if not self._undo:
                return False
            action = self._undo.pop()
            self._apply(*action, forward=False)
            self._redo.append(action)
            self._changed(history=True)
            return True

    def redo(self) -> bool:
        """Redo the last undone action; False when there is nothing to redo."""
        with self._lock:
            if not self._redo:
                return False
            action = self._redo.pop()
            self._apply(*action, forward=True)
            self._undo.append(action)
            self._changed(history=True)
            return True

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
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
        """Sorted flat indices (int64) of the voxels a stroke covers (cached)."""
        with self._lock:
            vox = self._voxels.get(stroke_id)
            if vox is None:
                s = self.get_stroke(stroke_id)
                vox = rasterize_stroke(s.points, s.radius, s.axes, self.shape)
                vox.setflags(write=False)
                self._voxels[stroke_id] = vox
            return vox

    def stroke_bounds(self, stroke_id: int) -> tuple[slice, ...]:
        """Bounding box of the voxels a stroke covers, as one slice per spatial axis."""
        coords = np.unravel_index(self.stroke_voxels(stroke_id), self.shape)
        return tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)

    def _labelled_flat(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            cache = self._labelled_cache
            if cache is not None and cache[0] == self.labels_version:
                return cache[1], cache[2]
            if not self.strokes:
                flat, lab = np.zeros(0, np.int64), np.zeros(0, np.uint8)
            else:
                vox = [self.stroke_voxels(s.id) for s in self.strokes]
                vals = [np.full(len(v), 0 if s.erase else s.label, np.uint8) for s, v in zip(self.strokes, vox)]
                # Later strokes win: take, for every voxel, its last occurrence in stroke order.
                allv = np.concatenate(vox)[::-1]
                allval = np.concatenate(vals)[::-1]
                flat, first = np.unique(allv, return_index=True)
                lab = allval[first]
                keep = lab != 0  # erased voxels are unlabelled
                flat, lab = flat[keep], lab[keep]
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
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: classes and strokes (the undo history is not saved)."""
        with self._lock:
            return {
                "format": _FORMAT,
                "format_version": 1,
                "shape": list(self.shape),
                "classes": [{"name": c.name, "color": c.color} for c in self.classes],
                "strokes": [s.to_dict() for s in self.strokes],
                "next_id": self._next_id,
            }

    @classmethod
    def from_dict(cls, d: dict[str, Any], shape: Sequence[int] | None = None) -> Annotations:
        """Rebuild from :meth:`to_dict` output; ``shape`` (if given) must match the saved shape."""
        saved = d.get("shape")
        if shape is None:
            if saved is None:
                raise ValueError("annotations data has no shape; pass shape=")
            shape = saved
        shape = tuple(int(n) for n in shape)
        if saved is not None and tuple(int(n) for n in saved) != shape:
            raise ValueError(f"annotations were made for shape {tuple(saved)}, not {shape}")
        ann = cls(shape, classes=[LabelClass(c["name"], c["color"]) for c in d.get("classes", [])])
        for s in d.get("strokes", []):
            ann._next_id = int(s["id"])
            ann.add_stroke(int(s["label"]), s["points"], s["radius"], s.get("axes"), bool(s.get("erase", False)))
        ann._next_id = max(int(d.get("next_id", 1)), ann._next_id)
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
