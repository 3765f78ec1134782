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
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

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
        ``bbox-<k>`` (scikit-image order: starts then stops, image coordinates), ``probability_mean`` (of the class,
        before smoothing), and with an
        image ``intensity_mean``, ``intensity_min``, ``intensity_max`` (suffix ``-<channel>`` for several channels).
    params : ObjectParams
        The parameters used.
    offset : tuple of int
        Image index of ``labels[0, 0(, 0)]``.
    """

    labels: np.ndarray
    table: pd.DataFrame
    params: ObjectParams
    offset: tuple[int, ...]

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
    return lookup[labels]


def _distance_to_background(mask: np.ndarray, voxel_size: Sequence[float] | None) -> np.ndarray:
    """Euclidean distance of object voxels to the background, in voxels of the finest axis."""
    sampling = None
    if voxel_size is not None:
        vs = np.asarray(voxel_size, float)
        sampling = vs / vs.min()
    if mask.ndim == 2 and (sampling is None or np.all(sampling == 1)):
        import cv2

        # OpenCV's exact 2D transform: the same distances as scipy's (to float32), several times faster.
        return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)


def split_touching(labels: np.ndarray, depth: float, voxel_size: Sequence[float] | None) -> np.ndarray:
    """Separate touching objects: watershed of the negated distance transform from its h-maxima.

    The Euclidean distance to the background (in voxels of the finest axis when voxel sizes differ) has one
    maximum per roundish object; two objects touching through a neck give two maxima. Maxima at least ``depth``
    higher than the saddle between them (h-maxima) seed a watershed of the negated distance inside the object,
    which cuts along the neck. Shallower bumps (rough outlines) do not split. Each object is processed in its
    bounding box, and only objects with two or more seeds are cut. New pieces get new numbers (not in raster order).
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = _distance_to_background(labels > 0, voxel_size)
    out = labels.astype(np.int32, copy=True)
    next_label = int(labels.max()) + 1
    full = np.ones((3,) * labels.ndim, bool)
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        # One voxel of margin: the object's outline meets background (distance 0) inside the box.
        box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, labels.shape))
        inside = labels[box] == i
        d = np.where(inside, dist[box], 0.0)
        markers, n_seeds = ndi.label((h_maxima(d, depth) > 0) & inside, structure=full)
        if n_seeds < 2:
            continue
        pieces = watershed(-d, markers, mask=inside, connectivity=1)
        target = out[box]
        target[inside & (pieces > 1)] = pieces[inside & (pieces > 1)] + (next_label - 2)
        next_label += n_seeds - 1
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


def object_table(
    stats: dict[str, np.ndarray], params: ObjectParams, n_channels: int | None, multichannel: bool
) -> pd.DataFrame:
    """The table of objects 1..n from :func:`object_stats` (row 0 dropped)."""
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
    cols["probability_mean"] = stats["prob_sum"][1:] / np.maximum(area, 1)
    if n_channels:
        for name, values in (
            ("intensity_mean", stats["int_sum"][1:] / np.maximum(area, 1)[:, None]),
            ("intensity_min", stats["int_min"][1:]),
            ("intensity_max", stats["int_max"][1:]),
        ):
            for ch in range(n_channels):
                cols[f"{name}-{ch}" if multichannel else name] = values[:, ch]
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------- the whole pipeline
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
    p = smoothed_map(prob, params)
    labels, n = label_components(p >= (params.low if params.low is not None else params.threshold))
    area = np.bincount(labels.reshape(-1), minlength=n + 1)
    keep = size_ok(area, params)
    if params.low is not None:
        cores, n_cores = label_components(p >= params.threshold)
        core_ok = size_ok(np.bincount(cores.reshape(-1), minlength=n_cores + 1), params)
        core_ok[0] = False
        seeded = np.zeros(n + 1, bool)
        seeded[labels[core_ok[cores]]] = True
        keep &= seeded
    if not keep[1:].all():
        labels = renumber(labels, keep)
    if params.split is not None:
        labels = split_touching(labels, params.split, params.voxel_size)
        n = int(labels.max())
        labels = renumber(labels, size_ok(np.bincount(labels.reshape(-1), minlength=n + 1), params))
    n = int(labels.max())
    shape = tuple(o + s for o, s in zip(origin, labels.shape))
    stats = object_stats(labels, n, origin, shape, prob[..., params.label - 1], img)
    n_ch = None if img is None else (1 if img.ndim == ndim else img.shape[-1])
    table = object_table(stats, params, n_ch, img is not None and img.ndim == ndim + 1)
    return Objects(labels, table, params, origin)
