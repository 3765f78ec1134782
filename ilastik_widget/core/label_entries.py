"""The records of an annotation: label classes, brush strokes and imported labels, with their checks.

:class:`~ilastik_widget.core.annotations.Annotations` keeps these records in order; this module defines them, checks
what a user or a file gives for them (class names and colours, stroke points, label images and masks) and turns
their saved form back into records.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from .colors import check_color
from .limits import MAX_NAME_LENGTH
from .rasterize import label_runs, round_half_up

__all__ = [
    "DEFAULT_COLORS",
    "LabelClass",
    "Stroke",
    "LabelImport",
    "check_class_name",
    "check_color",
    "next_color",
    "check_points",
    "check_axes",
    "check_radius",
    "dense_import",
    "make_import",
    "import_from_record",
    "without_class",
]

# The Okabe-Ito colours, which people with the common colour-vision deficiencies tell apart, ordered so that the first
# classes avoid the hues of common stains: sky blue and bluish green first, away from haematoxylin and eosin's purples
# and pinks and from DAB's browns; vermillion, orange, reddish purple and yellow later. (Background, Foreground) take
# the first two.
DEFAULT_COLORS: list[str] = [
    "#56b4e9",  # sky blue
    "#009e73",  # bluish green
    "#f0e442",  # yellow
    "#d55e00",  # vermillion
    "#0072b2",  # blue
    "#cc79a7",  # reddish purple
    "#e69f00",  # orange
    "#f5f5f5",  # near white (dark data)
    "#7f7f7f",  # grey
]


def _extra_color(i: int) -> str:
    """A further distinct colour once the palette is used up (golden-angle hue steps)."""
    h = (i * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def next_color(used: set[str], n_classes: int) -> str:
    """The first default colour not in ``used``, then further distinct colours."""
    color = next((c for c in DEFAULT_COLORS if c not in used), None)
    i = 0
    while color is None or color in used:
        color = _extra_color(n_classes + i)
        i += 1
    return color


def check_class_name(name: Any) -> str:
    """A class name with surrounding white space removed; ValueError for non-text, blank or over-long names."""
    if not isinstance(name, str):
        raise ValueError(f"a class name must be text, got {name!r}")
    stripped = name.strip()
    if not stripped:
        raise ValueError(f"a class name must not be empty or blank, got {name!r}")
    if len(stripped) > MAX_NAME_LENGTH:
        raise ValueError(
            f"a class name has at most {MAX_NAME_LENGTH} characters, got {len(stripped)}: {stripped[:40]!r}..."
        )
    return stripped


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
    kind: ClassVar[str] = "stroke"

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


@dataclass(frozen=True, eq=False)
class LabelImport:
    """Labels imported from a label image or masks: an entry erased, undone, redone and removed like a stroke.

    The voxels are stored as runs along the last axis (compact for painted regions).

    Attributes
    ----------
    id : int
        Unique within its :class:`Annotations`, shared with the strokes (never reused).
    starts : np.ndarray
        (R,) int64 flat index of each run's first voxel, ascending, runs disjoint.
    lengths : np.ndarray
        (R,) int64 run lengths (>= 1).
    values : np.ndarray
        (R,) uint8 class of each run, 1..n_classes.
    source : str
        Where the labels came from (a file name, or empty).
    """

    id: int
    starts: np.ndarray = field(repr=False)
    lengths: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    source: str = ""
    erase: ClassVar[bool] = False
    kind: ClassVar[str] = "import"

    @property
    def label(self) -> int:
        """The class of all voxels when there is one, else 0 (several classes)."""
        classes = np.unique(self.values)
        return int(classes[0]) if len(classes) == 1 else 0

    @property
    def n_voxels(self) -> int:
        """Number of voxels this entry labels."""
        return int(self.lengths.sum())

    def voxel_labels(self) -> np.ndarray:
        """Class of each voxel, aligned with the entry's sorted voxel indices (uint8)."""
        return np.repeat(self.values, self.lengths)

    def to_dict(self, arrays: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """JSON-able dict; with ``arrays``, the three arrays go there (keys named in the dict) instead of lists."""
        out: dict[str, Any] = {"kind": "import", "id": int(self.id), "source": str(self.source)}
        for name in ("starts", "lengths", "values"):
            value = getattr(self, name)
            if arrays is None:
                out[name] = value.tolist()
            else:
                key = f"import{int(self.id)}_{name}"
                arrays[key] = value
                out[name] = {"array": key}
        return out


def check_points(points: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Stroke points as a read-only (N, ndim) float64 array; ValueError unless finite and inside the image."""
    ndim = len(shape)
    pts = np.array(points, dtype=np.float64)
    if pts.ndim == 1:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != ndim or len(pts) == 0:
        raise ValueError(f"points must have shape (N, {ndim}) with N >= 1, got shape {np.shape(points)}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points must be finite numbers")
    idx = round_half_up(pts)
    bad = np.any((idx < 0) | (idx >= np.array(shape)), axis=1)
    if bad.any():
        raise ValueError(
            f"point {pts[bad][0].tolist()} is outside the image of shape {shape} "
            f"({int(bad.sum())} of {len(pts)} points outside)"
        )
    pts.setflags(write=False)
    return pts


def check_axes(axes: Any, ndim: int) -> tuple[int, int]:
    """The plane of a stroke as two distinct axis indices (default: the last two)."""
    if axes is None:
        return (ndim - 2, ndim - 1)
    try:
        a, b = (int(x) for x in axes)
    except (TypeError, ValueError):
        raise ValueError(f"axes must be two spatial axis indices, got {axes!r}") from None
    if not (-ndim <= a < ndim and -ndim <= b < ndim):
        raise ValueError(f"axes {tuple(axes)} out of range for {ndim} spatial axes")
    a, b = a % ndim, b % ndim
    if a == b:
        raise ValueError(f"axes must be two different axes, got {tuple(axes)}")
    return (a, b)


def check_radius(radius: Any) -> float:
    """A brush radius as a positive finite float."""
    try:
        r = float(radius)
    except (TypeError, ValueError):
        raise ValueError(f"radius must be a positive number of pixels, got {radius!r}") from None
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"radius must be a positive finite number of pixels, got {radius!r}")
    return r


def dense_import(
    labels: Any, want: tuple[int, ...], n_classes: int, label: int | None = None, masks: bool | None = None
) -> np.ndarray:
    """Check imported labels or masks (see :meth:`Annotations.import_labels`); a dense label box of shape ``want``.

    ``label``, when given, must already be a valid class.
    """
    if label is not None:
        mask = _integer_array(labels, "the mask")
        _check_shape(mask.shape, want, "the mask")
        return np.where(mask != 0, np.uint8(label), np.uint8(0))
    if masks is None:
        masks = isinstance(labels, (list, tuple)) or (
            getattr(labels, "dtype", None) == np.bool_ and np.ndim(labels) == len(want) + 1
        )
    if not masks:
        dense = _integer_array(labels, "the label image")
        _check_shape(dense.shape, want, "the label image")
        if dense.size and dense.min() < 0:
            raise ValueError(f"the label image has negative values (down to {dense.min()}); 0 means unlabelled")
        if dense.size and dense.max() > n_classes:
            raise ValueError(
                f"the label image has classes up to {dense.max()} but there are {n_classes} classes; add classes first"
            )
        return dense
    stack = [_integer_array(m, f"mask {i}") for i, m in enumerate(labels)]
    if len(stack) > n_classes:
        raise ValueError(f"{len(stack)} masks were given but there are {n_classes} classes; add classes first")
    out = np.zeros(want, np.uint8)
    for i, m in enumerate(stack):
        _check_shape(m.shape, want, f"mask {i}")
        on = m != 0
        clash = on & (out != 0)
        if clash.any():
            raise ValueError(
                f"mask {i} (class {i + 1}) overlaps mask {int(out[clash][0]) - 1} at {int(clash.sum())} voxel(s)"
            )
        out[on] = i + 1
    return out


def make_import(
    entry_id: int, boxes: Sequence[tuple[tuple[int, ...], np.ndarray]], shape: tuple[int, ...], source: str = ""
) -> LabelImport:
    """A :class:`LabelImport` of the non-zero voxels of checked label boxes, each ``(origin, dense)``.

    Memory follows the boxes' runs, not their bounding box. Boxes whose labelled voxels overlap are refused: which
    one would win is not defined."""
    runs = [label_runs(dense, origin, shape) for origin, dense in boxes]
    starts = np.concatenate([r[0] for r in runs]) if runs else np.zeros(0, np.int64)
    if not len(starts):
        raise ValueError("the labels have no labelled voxel (all 0): nothing to import")
    order = np.argsort(starts, kind="stable")
    starts = starts[order]
    lengths = np.concatenate([r[1] for r in runs])[order]
    values = np.concatenate([r[2] for r in runs])[order]
    clash = np.flatnonzero(starts[1:] < starts[:-1] + lengths[:-1])
    if len(clash):
        at = np.unravel_index(starts[clash[0] + 1], shape)
        raise ValueError(f"the label boxes overlap: voxel {tuple(int(c) for c in at)} is labelled by two of them")
    return _frozen(LabelImport(int(entry_id), starts, lengths, values.astype(np.uint8), str(source)))


def import_from_record(
    sid: int, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None, shape: tuple[int, ...], n_classes: int
) -> LabelImport:
    """Rebuild a :class:`LabelImport` from :meth:`LabelImport.to_dict` output, checking every run."""

    def get(name: str) -> np.ndarray:
        value = record[name]
        if isinstance(value, Mapping):
            if arrays is None or value.get("array") not in arrays:
                raise ValueError(f"imported labels {sid}: array {value.get('array')!r} is missing")
            value = arrays[value["array"]]
        arr = np.asarray(value)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"imported labels {sid}: '{name}' must be a list of whole numbers")
        return arr.astype(np.int64)

    starts, lengths, values = get("starts"), get("lengths"), get("values")
    size = int(np.prod(shape, dtype=np.int64))
    if not (len(starts) == len(lengths) == len(values)) or not len(starts):
        raise ValueError(f"imported labels {sid}: starts, lengths and values must have one equal, non-zero length")
    ends = starts + lengths
    if lengths.min() < 1 or starts.min() < 0 or ends.max() > size or np.any(starts[1:] < ends[:-1]):
        raise ValueError(f"imported labels {sid}: runs must be ascending, disjoint and inside the image")
    if values.min() < 1 or values.max() > n_classes:
        raise ValueError(f"imported labels {sid}: classes must be 1..{n_classes}, got {values.max()}")
    return _frozen(LabelImport(sid, starts, lengths, values.astype(np.uint8), str(record.get("source", ""))))


def _frozen(entry: LabelImport) -> LabelImport:
    for arr in (entry.starts, entry.lengths, entry.values):
        arr.setflags(write=False)
    return entry


def _integer_array(values: Any, what: str) -> np.ndarray:
    """``values`` as an integer (or boolean) array; ValueError naming ``what`` for other dtypes."""
    arr = np.asarray(values)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr
    nan = " (it contains NaN)" if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any() else ""
    raise ValueError(
        f"{what} must have an integer or boolean dtype (0 = unlabelled), got {arr.dtype}{nan}; "
        "convert whole-number labels with .astype(np.uint8)"
    )


def _check_shape(got: tuple[int, ...], want: tuple[int, ...], what: str) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{what} has shape {tuple(got)} but the region it goes to has shape {tuple(want)}")


def without_class(entries: list[Stroke | LabelImport], label: int) -> tuple[list[Stroke | LabelImport], set[int]]:
    """The entries once class ``label`` is removed: its strokes and imported voxels go, higher classes move down
    by one, erase strokes stay. Also returns the ids of the entries whose voxels changed (their caches are stale).
    """
    kept: list[Stroke | LabelImport] = []
    reshaped: set[int] = set()
    for s in entries:
        if isinstance(s, LabelImport):
            keep = s.values != label
            if not keep.all():
                reshaped.add(s.id)
            if keep.any():
                values = s.values[keep] - (s.values[keep] > label).astype(np.uint8)
                kept.append(_frozen(replace(s, starts=s.starts[keep], lengths=s.lengths[keep], values=values)))
        elif s.erase:
            # An eraser's class does not matter; keep its number valid.
            new = 0 if s.label == label else s.label - (s.label > label)
            kept.append(replace(s, label=new) if new != s.label else s)
        elif s.label == label:
            reshaped.add(s.id)
        else:
            kept.append(replace(s, label=s.label - 1) if s.label > label else s)  # same geometry, same voxels
    return kept, reshaped
