"""Objects from a probability map: thresholding as ilastik does, connected components and their table.

The steps follow ilastik's Thresholding applet (``ilastik/applets/thresholdTwoLevels/opThresholdTwoLevels.py``
and ``thresholdingTools.py`` in ilastik 1.4's public source):

1. the class's probability map is smoothed by a Gaussian (``smooth``: sigma per axis, kernel cut at 2 sigma,
   mirrored borders; ilastik's default sigma is 1.0);
2. *simple*: voxels with ``p >= threshold`` form objects; *hysteresis* (``low`` given): voxels with
   ``p >= threshold`` are seeds (cores), voxels with ``p >= low`` the objects they grow into; an object is kept only
   when it contains a core that passes the size filter itself;
3. connected components in the direct neighbourhood (4-connected in 2D, 6-connected in 3D, as vigra's
   ``labelMultiArrayWithBackground``);
4. objects of fewer than ``min_size`` or more than ``max_size`` voxels are dropped (ilastik's defaults: 10 and
   1,000,000);
5. optionally (``split``), touching objects are separated by a watershed on the distance transform (below).

Objects are numbered 1..n in the raster order of their first voxel (the order of ``scipy.ndimage.label``), so
the same probabilities give the same numbering, whole or block by block (:mod:`ilastik_widget.core.object_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Objects", "ObjectParams", "objects_from_probabilities", "check_object_params", "smoothing_halo"]

#: Depth (in voxels of the finest axis) of the distance-transform maxima that seed a split, for ``split=True``.
SPLIT_DEPTH = 2.0
# ilastik cuts its smoothing kernel at 2 sigma (vigra ``window_size=2.0``).
_TRUNCATE = 2.0


@dataclass(frozen=True)
class ObjectParams:
    """Checked parameters of an object extraction (see :func:`objects_from_probabilities`)."""

    label: int
    threshold: float
    low: float | None
    min_size: int
    max_size: int | None
    smooth: tuple[float, ...]
    split: float | None
    voxel_size: tuple[float, ...] | None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-able data (``split`` is the depth used, or None)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Objects:
    """Objects of one class: a label image and a table with one row per object.

    Attributes
    ----------
    labels : np.ndarray
        int32 label image of the region computed (0 = no object, 1..n = objects, raster order of first voxels).
    table : pandas.DataFrame
        One row per object, columns ``label``, ``class``, ``area`` (voxels), ``area_physical`` (with voxel
        sizes), ``centroid-<axis>`` (array order, voxels, image coordinates), ``centroid_physical-<axis>``,
        ``bbox-<k>`` (scikit-image order: starts then stops, image coordinates), ``clipped`` (the object touches
        a side of the region computed inside the image: only its part in the region is labelled and measured;
        always False for a whole image), ``probability_mean`` (of the class, before smoothing), and with an
        image ``intensity_mean``, ``intensity_min``, ``intensity_max`` (suffix ``-<channel>`` for several channels).
    params : ObjectParams
        The parameters used (with the voxel sizes of the physical columns).
    offset : tuple of int
        Image index of ``labels[0, 0(, 0)]``.
    units : tuple of str or None, optional
        Unit of each axis's voxel size when known (e.g. ``"micrometer"``).
    """

    labels: np.ndarray
    table: pd.DataFrame
    params: ObjectParams
    offset: tuple[int, ...]
    units: tuple | None = None

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        return f"Objects({len(self)} objects of class {self.params.label}, labels shape {self.labels.shape})"


# ---------------------------------------------------------------------- parameters
def check_object_params(
    n_classes: int,
    ndim: int,
    label: Any,
    threshold: Any = 0.5,
    *,
    low: Any = None,
    min_size: Any = 10,
    max_size: Any = None,
    smooth: Any = 1.0,
    split: Any = False,
    voxel_size: Any = None,
) -> ObjectParams:
    """Check the parameters of :func:`objects_from_probabilities`; ValueError naming the first bad one."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 1 <= int(label) <= n_classes:
        raise ValueError(f"label must be a class 1..{n_classes}, got {label!r}")
    threshold = _unit_float(threshold, "threshold")
    if low is not None:
        low = _unit_float(low, "low")
        if low > threshold:
            raise ValueError(
                f"low ({low:g}) must not be above threshold ({threshold:g}): low grows what threshold seeds"
            )
    min_size = _count(min_size, "min_size")
    if max_size is not None:
        max_size = _count(max_size, "max_size")
        if min_size > max_size:
            raise ValueError(f"min_size ({min_size}) is larger than max_size ({max_size})")
    try:
        sig = np.asarray(smooth, dtype=np.float64)
    except (TypeError, ValueError):
        sig = np.full(1, np.nan)
    if sig.ndim == 0:
        sig = np.full(ndim, float(sig))
    if sig.shape != (ndim,) or not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"smooth must be a sigma >= 0, or one per axis ({ndim}), got {smooth!r}")
    if isinstance(split, bool):
        split_depth = SPLIT_DEPTH if split else None
    else:
        split_depth = float(split)
        if not np.isfinite(split_depth) or split_depth <= 0:
            raise ValueError(f"split must be True/False or a positive depth in voxels, got {split!r}")
    if voxel_size is not None:
        vs = np.asarray(voxel_size, dtype=np.float64).reshape(-1)
        if len(vs) != ndim or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
            raise ValueError(f"voxel_size must be {ndim} positive numbers, got {voxel_size!r}")
        voxel_size = tuple(float(v) for v in vs)
    return ObjectParams(
        int(label), threshold, low, min_size, max_size, tuple(float(s) for s in sig), split_depth, voxel_size
    )


def _unit_float(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def _check_arrays(probabilities: Any, image: Any) -> tuple[np.ndarray, np.ndarray | None]:
    prob = np.asarray(probabilities)
    if prob.ndim not in (3, 4) or not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(
            "probabilities must be a float array (*spatial, n_classes) of a 2D or 3D image, "
            f"got shape {prob.shape} and dtype {prob.dtype}"
        )
    if image is None:
        return prob, None
    img = np.asarray(image)
    spatial = prob.shape[:-1]
    if img.shape[: len(spatial)] != spatial or img.ndim > len(spatial) + 1:
        raise ValueError(f"image has shape {img.shape}; expected {spatial} or {spatial} + (channels,)")
    return prob, img


# ---------------------------------------------------------------------- the steps
def smoothing_halo(smooth: Sequence[float]) -> tuple[int, ...]:
    """Voxels per axis the smoothing reads beyond a block (the kernel radius)."""
    return tuple(int(_TRUNCATE * s + 0.5) if s >= 0.1 else 0 for s in smooth)


def grown_region(region: Sequence[slice], halo: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """``region`` grown by ``halo`` voxels per axis, clipped to ``shape``."""
    return tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(region, halo, shape))


def smoothed_map(probabilities: np.ndarray, params: ObjectParams) -> np.ndarray:
    """The class's probability map (float32), smoothed as ilastik does (axes with sigma < 0.1 are not smoothed)."""
    p = np.asarray(probabilities[..., params.label - 1], dtype=np.float32)
    sigma = [s if s >= 0.1 else 0.0 for s in params.smooth]
    if any(sigma):
        p = ndi.gaussian_filter(p, sigma, mode="mirror", truncate=_TRUNCATE)
    return p


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components in the direct neighbourhood, numbered in raster order (int32)."""
    labels, n = ndi.label(mask, output=np.int32)
    return labels, int(n)


def size_ok(area: np.ndarray, params: ObjectParams) -> np.ndarray:
    """Which sizes pass ``min_size <= area <= max_size``."""
    ok = area >= params.min_size
    if params.max_size is not None:
        ok &= area <= params.max_size
    return ok


def renumber(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Keep the labels flagged in ``keep`` (indexed by label, ``keep[0]`` ignored), numbered 1..n in raster order."""
    return raster_lookup(labels, keep)[labels]


def raster_lookup(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The renumbering of :func:`renumber` as a lookup table (old label -> new label, int32; 0 = dropped)."""
    flat = labels.reshape(-1)
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    first = np.full(len(keep), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, lab, fg)
    kept = np.flatnonzero(keep)
    kept = kept[(kept > 0) & (first[kept] < np.iinfo(np.int64).max)]
    order = kept[np.argsort(first[kept], kind="stable")]
    lookup = np.zeros(len(keep), np.int32)
    lookup[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lookup


def _distance_to_background(mask: np.ndarray, voxel_size: Sequence[float] | None) -> np.ndarray:
    """Euclidean distance of object voxels to the background, in voxels of the finest axis."""
    sampling = None
    if voxel_size is not None:
        vs = np.asarray(voxel_size, float)
        sampling = vs / vs.min()
    if mask.ndim == 2 and (sampling is None or np.all(sampling == 1)):
        import cv2

        # OpenCV's exact 2D transform is several times faster than scipy's, but its float32 results vary in the
        # last bits from call to call (with the memory's alignment): squared distances are whole numbers, so
        # rounding them gives scipy's exact values, the same on every call (for distances up to 1,000 voxels, where
        # the error stays far below 0.5).
        d = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        if d.size == 0 or d.max() <= 1000:
            return np.sqrt(np.rint(np.square(d, dtype=np.float64))).astype(np.float32)
    return ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)


def split_object(inside: np.ndarray, depth: float, voxel_size: Sequence[float] | None) -> tuple[np.ndarray, int]:
    """Pieces of one object: a watershed of its negated distance transform from the transform's h-maxima.

    Parameters
    ----------
    inside : np.ndarray
        bool mask of the object in its bounding box grown by one voxel on every side (clipped to the image).
    depth : float
        h of the h-maxima: maxima at least this much higher than the saddle between them seed a piece.
    voxel_size : sequence of float, optional
        Voxel sizes (the distance is measured in voxels of the finest axis).

    Returns
    -------
    pieces : np.ndarray
        int32, 1..k on the object's voxels (0 elsewhere); all 1 when the object is not cut.
    k : int
        Number of pieces.

    Notes
    -----
    The result depends on the object's voxels only, not on what surrounds it: for a voxel ``v`` of the object at
    distance ``r`` from the background, every voxel closer than ``r`` to ``v`` is foreground and (a lattice ball
    being 4/6-connected) belongs to the same component, and the nearest background voxel is a direct neighbour of
    the object. So the distance transform of ``inside`` alone equals, on the object, that of the whole image, and
    an object is split identically whether it is found in a whole image, a region or blocks.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    d = np.where(inside, _distance_to_background(inside, voxel_size), 0.0)
    full = np.ones((3,) * inside.ndim, bool)
    markers, k = ndi.label((h_maxima(d, depth) > 0) & inside, structure=full)
    if k < 2:
        return inside.astype(np.int32), 1
    return watershed(-d, markers, mask=inside, connectivity=1).astype(np.int32), int(k)


def object_box(box: Sequence[slice], shape: Sequence[int]) -> tuple[slice, ...]:
    """A bounding box grown by one voxel on every side, clipped to ``shape`` (the box :func:`split_object` reads)."""
    return tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, shape))


def split_touching(labels: np.ndarray, depth: float, voxel_size: Sequence[float] | None) -> np.ndarray:
    """Separate touching objects: :func:`split_object` on every object, in its bounding box.

    The Euclidean distance to the background (in voxels of the finest axis when voxel sizes differ) has one
    maximum per roundish object; two objects touching through a neck give two maxima. Maxima at least ``depth``
    higher than the saddle between them (h-maxima) seed a watershed of the negated distance inside the object,
    which cuts along the neck; shallower bumps (rough outlines) do not split. New pieces get new numbers.
    """
    out = labels.astype(np.int32, copy=True)
    next_label = int(labels.max()) + 1
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        box = object_box(box, labels.shape)
        inside = labels[box] == i
        pieces, k = split_object(inside, depth, voxel_size)
        if k < 2:
            continue
        target = out[box]
        target[pieces > 1] = pieces[pieces > 1] + (next_label - 2)
        next_label += k - 1
    return out


# ---------------------------------------------------------------------- statistics and table
def object_stats(
    labels: np.ndarray,
    n: int,
    origin: Sequence[int],
    shape: Sequence[int],
    prob: np.ndarray,
    image: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """Additive per-object statistics of ``labels`` (1..n) placed at ``origin`` in an image of ``shape``.

    Every entry is indexed by label (row 0 unused) and merges across blocks by sum, min or max: ``area``,
    ``coord_sum`` (n+1, ndim, image coordinates), ``bbox_min``/``bbox_max`` (inclusive), ``first`` (flat image
    index of the first voxel), ``prob_sum``, ``int_sum``/``int_min``/``int_max`` (n+1, channels).
    """
    ndim = labels.ndim
    flat = labels.reshape(-1)
    fg = np.flatnonzero(flat)
    lab = flat[fg]
    m = n + 1
    area = np.bincount(lab, minlength=m).astype(np.int64)
    local = np.unravel_index(fg, labels.shape)
    coord_sum = np.zeros((m, ndim))
    bbox_min = np.full((m, ndim), np.iinfo(np.int64).max, np.int64)
    bbox_max = np.full((m, ndim), -1, np.int64)
    for k in range(ndim):
        c = local[k] + int(origin[k])
        coord_sum[:, k] = np.bincount(lab, weights=c, minlength=m)
        np.minimum.at(bbox_min[:, k], lab, c)
        np.maximum.at(bbox_max[:, k], lab, c)
    first = np.full(m, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, lab, np.ravel_multi_index(tuple(c + int(o) for c, o in zip(local, origin)), tuple(shape)))
    stats = {
        "area": area,
        "coord_sum": coord_sum,
        "bbox_min": bbox_min,
        "bbox_max": bbox_max,
        "first": first,
        # (np.bincount of no voxels returns int64 even with weights)
        "prob_sum": np.bincount(lab, weights=prob.reshape(-1)[fg], minlength=m).astype(np.float64),
    }
    if image is not None:
        img = image.reshape(len(flat), -1)
        n_ch = img.shape[1]
        stats["int_sum"] = np.zeros((m, n_ch))
        stats["int_min"] = np.full((m, n_ch), np.inf)
        stats["int_max"] = np.full((m, n_ch), -np.inf)
        for ch in range(n_ch):
            v = img[fg, ch].astype(np.float64)
            stats["int_sum"][:, ch] = np.bincount(lab, weights=v, minlength=m)
            np.minimum.at(stats["int_min"][:, ch], lab, v)
            np.maximum.at(stats["int_max"][:, ch], lab, v)
    return stats


def clipped_objects(
    stats: dict[str, np.ndarray], origin: Sequence[int], shape: Sequence[int], image_shape: Sequence[int]
) -> np.ndarray:
    """Which objects 1..n of a region (at ``origin``, of ``shape``) touch a side of the region inside the image.

    Such an object may go on outside the region: only its part inside is labelled and measured.
    """
    lo, hi = stats["bbox_min"][1:], stats["bbox_max"][1:] + 1
    out = np.zeros(len(lo), bool)
    for k, (o, n, size) in enumerate(zip(origin, shape, image_shape)):
        if o > 0:
            out |= lo[:, k] == o
        if o + n < size:
            out |= hi[:, k] == o + n
    return out


def object_table(
    stats: dict[str, np.ndarray],
    params: ObjectParams,
    n_channels: int | None,
    multichannel: bool,
    clipped: np.ndarray | None = None,
) -> pd.DataFrame:
    """The table of objects 1..n from :func:`object_stats` (row 0 dropped); ``clipped`` from
    :func:`clipped_objects` (none by default)."""
    area = stats["area"][1:]
    ndim = stats["coord_sum"].shape[1]
    cols: dict[str, Any] = {
        "label": np.arange(1, len(area) + 1, dtype=np.int32),
        "class": np.full(len(area), params.label, np.int32),
        "area": area,
    }
    vs = params.voxel_size
    if vs is not None:
        cols["area_physical"] = area * float(np.prod(vs))
    centroid = stats["coord_sum"][1:] / np.maximum(area, 1)[:, None]
    for k in range(ndim):
        cols[f"centroid-{k}"] = centroid[:, k]
    if vs is not None:
        for k in range(ndim):
            cols[f"centroid_physical-{k}"] = centroid[:, k] * vs[k]
    for k in range(ndim):
        cols[f"bbox-{k}"] = stats["bbox_min"][1:, k]
    for k in range(ndim):
        cols[f"bbox-{ndim + k}"] = stats["bbox_max"][1:, k] + 1
    cols["clipped"] = np.zeros(len(area), bool) if clipped is None else np.asarray(clipped, bool)
    cols["probability_mean"] = stats["prob_sum"][1:] / np.maximum(area, 1)
    if n_channels:
        for name, values in (
            ("intensity_mean", stats["int_sum"][1:] / np.maximum(area, 1)[:, None]),
            ("intensity_min", stats["int_min"][1:]),
            ("intensity_max", stats["int_max"][1:]),
        ):
            for ch in range(n_channels):
                cols[f"{name}-{ch}" if multichannel else name] = values[:, ch]
    import pandas as pd  # imported when needed: it takes a while

    return pd.DataFrame(cols)


# ---------------------------------------------------------------------- the whole pipeline
def keep_components(labels: np.ndarray, n: int, p: np.ndarray, params: ObjectParams) -> np.ndarray:
    """Which components 1..n of the (smoothed) map ``p`` pass the size filter and, with hysteresis, hold a seed
    (a component of ``p >= threshold``) that passes it too; bool (n+1,), entry 0 False."""
    keep = size_ok(np.bincount(labels.reshape(-1), minlength=n + 1), params)
    if params.low is not None:
        cores, n_cores = label_components(p >= params.threshold)
        core_ok = size_ok(np.bincount(cores.reshape(-1), minlength=n_cores + 1), params)
        core_ok[0] = False
        seeded = np.zeros(n + 1, bool)
        seeded[labels[core_ok[cores]]] = True
        keep &= seeded
    keep[0] = False
    return keep


def extract_objects(
    p: np.ndarray,
    prob: np.ndarray,
    params: ObjectParams,
    image: np.ndarray | None,
    origin: Sequence[int],
    image_shape: Sequence[int],
    units: tuple | None = None,
) -> Objects:
    """Steps 2-5 and the table, on the smoothed map ``p`` of a region at ``origin`` in an image of ``image_shape``;
    ``prob`` is the class's probability before smoothing and ``image`` the intensities, both of the region."""
    ndim = p.ndim
    labels, n = label_components(p >= (params.low if params.low is not None else params.threshold))
    keep = keep_components(labels, n, p, params)
    if not keep[1:].all():
        labels = renumber(labels, keep)
    if params.split is not None:
        labels = split_touching(labels, params.split, params.voxel_size)
        n = int(labels.max())
        labels = renumber(labels, size_ok(np.bincount(labels.reshape(-1), minlength=n + 1), params))
    n = int(labels.max())
    origin = tuple(int(o) for o in origin)
    stats = object_stats(labels, n, origin, image_shape, prob, image)
    n_ch = None if image is None else (1 if image.ndim == ndim else image.shape[-1])
    clipped = clipped_objects(stats, origin, labels.shape, image_shape)
    table = object_table(stats, params, n_ch, image is not None and image.ndim == ndim + 1, clipped)
    return Objects(labels, table, params, origin, units)


def objects_from_probabilities(
    probabilities: Any,
    label: int,
    threshold: float = 0.5,
    *,
    low: float | None = None,
    min_size: int = 10,
    max_size: int | None = None,
    smooth: float | Sequence[float] = 1.0,
    split: bool | float = False,
    image: Any = None,
    voxel_size: Sequence[float] | None = None,
    offset: Sequence[int] | None = None,
    image_shape: Sequence[int] | None = None,
) -> Objects:
    """Objects of one class from class probabilities, with their table.

    Parameters
    ----------
    probabilities : array-like
        float (*spatial, n_classes) probabilities of a 2D or 3D image (or region), as ``Session.predict`` gives.
    label : int
        The class (1..n_classes) whose objects are wanted.
    threshold : float
        Voxels with a (smoothed) probability ``>= threshold`` are object voxels (the seeds with ``low``), in [0, 1].
    low : float, optional
        Hysteresis: objects grow from the seeds through voxels with probability ``>= low`` (``low <= threshold``).
    min_size, max_size : int, optional
        Objects (and seeds) of fewer or more voxels are dropped; no upper limit by default.
    smooth : float or sequence of float
        Gaussian sigma (voxels, per axis or one for all) applied to the probability map first; 0 for none.
    split : bool or float
        Separate touching objects (watershed of the distance transform seeded by its h-maxima, depth
        :data:`SPLIT_DEPTH` voxels, or this number); the size filter applies again to the pieces.
    image : array-like, optional
        (*spatial) or (*spatial, channels) intensities for the intensity columns.
    voxel_size : sequence of float, optional
        Physical size of a voxel per axis (array order) for the physical columns.
    offset : sequence of int, optional
        Image index of the first voxel of these arrays (when they are a region): table coordinates are the image's.
    image_shape : sequence of int, optional
        Spatial shape of the whole image when these arrays are a region of it (default: the region ends where
        the image ends); objects touching a side of the region inside the image are ``clipped``. Note that
        smoothing mirrors at the sides of these arrays: :meth:`Session.objects` reads a margin around a region so
        that its map equals the whole image's.

    Returns
    -------
    Objects

    Raises
    ------
    ValueError
        Thresholds outside [0, 1], ``low > threshold``, ``min_size > max_size``, a label beyond the classes, arrays
        of the wrong shape or dtype.
    """
    prob, img = _check_arrays(probabilities, image)
    ndim = prob.ndim - 1
    params = check_object_params(
        prob.shape[-1],
        ndim,
        label,
        threshold,
        low=low,
        min_size=min_size,
        max_size=max_size,
        smooth=smooth,
        split=split,
        voxel_size=voxel_size,
    )
    origin = (0,) * ndim if offset is None else tuple(int(o) for o in offset)
    if len(origin) != ndim or min(origin) < 0:
        raise ValueError(f"offset must be {ndim} whole numbers >= 0, got {offset!r}")
    end = tuple(o + n for o, n in zip(origin, prob.shape[:-1]))
    full = end if image_shape is None else tuple(int(n) for n in image_shape)
    if len(full) != ndim or any(f < e for f, e in zip(full, end)):
        raise ValueError(
            f"image_shape must be {ndim} sizes holding offset + the arrays' shape {end}, got {image_shape!r}"
        )
    return extract_objects(smoothed_map(prob, params), prob[..., params.label - 1], params, img, origin, full)
