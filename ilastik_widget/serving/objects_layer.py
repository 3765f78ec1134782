"""The objects array the viewer reads: the label image of the widget's last objects, as a segmentation.

Objects are computed by :meth:`ilastik_widget.core.session.Session.objects` for the whole image or for a region; the
array served covers the whole image (0 outside the region), with the labels pyramid's levels and chunks, as
``uint32`` (Neuroglancer's segmentation layers read unsigned integers). Coarse levels are strided subsamples (nearest
voxel), as for the labels. Every new result gets a new version number, which is part of the array's path
(``objects/<version>``; see :mod:`~ilastik_widget.serving.chunk_keys`): the viewer's layer then has a new URL and
never mixes chunks of two results.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .pyramid import Pyramid

if TYPE_CHECKING:
    from .chunk_store import ChunkStore

__all__ = ["ObjectsArray"]


def _strided_overlap(region: slice, start: int, stop: int) -> tuple[slice, slice] | None:
    """Where the strided ``region`` meets ``[start, stop)``: (positions in the region's samples, positions in the
    array that starts at ``start``); None when no sample falls inside."""
    step = region.step or 1
    n = len(range(region.start, region.stop, step))
    lo = max(0, -(-(start - region.start) // step))
    hi = min(n, -(-(stop - region.start) // step))
    if hi <= lo:
        return None
    first = region.start + lo * step - start
    return slice(lo, hi), slice(first, first + (hi - lo - 1) * step + 1, step)


class ObjectsArray:
    """The label image of the last objects (or none), served at the labels' levels and chunks.

    Parameters
    ----------
    store : ChunkStore
        The store this array belongs to (its spatial shape, chunks, levels and encoding).
    """

    def __init__(self, store: ChunkStore):
        self._store = store
        self._lock = threading.Lock()
        self._labels: np.ndarray | None = None
        self._offset: tuple[int, ...] = ()
        self._version = 0

    @property
    def version(self) -> int:
        """Number of the current result (0 before the first); part of the array's path."""
        return self._version

    @property
    def present(self) -> bool:
        """Whether there is a result to show."""
        return self._labels is not None

    def show(self, labels: Any, offset: Sequence[int] | None = None) -> int:
        """Serve ``labels`` (an integer label image of the region starting at ``offset``, default the whole image;
        int32 labels are shared, not copied); returns the new version.

        Raises
        ------
        ValueError
            Labels that are not whole numbers >= 0, or a region outside the image.
        """
        array = np.asarray(labels)
        shape = self._store.spatial_shape
        start = tuple(int(o) for o in (offset if offset is not None else (0,) * len(shape)))
        if array.dtype.kind not in "iu" or array.ndim != len(shape) or len(start) != len(shape):
            raise ValueError(
                f"objects must be a {len(shape)}D integer label image, got shape {array.shape} and dtype {array.dtype}"
            )
        if any(o < 0 or o + n > s for o, n, s in zip(start, array.shape, shape)):
            raise ValueError(f"objects of shape {array.shape} at {start} do not fit in the image of shape {shape}")
        if array.size and int(array.min()) < 0:
            raise ValueError("object labels must be >= 0")
        # int32 labels >= 0 are their uint32 values: served without a copy (the caller must not change them later;
        # Session.objects gives a fresh array)
        served = array.view(np.uint32) if array.dtype == np.int32 else array.astype(np.uint32)
        with self._lock:
            self._labels, self._offset = served, start
            self._version += 1
            return self._version

    def clear(self) -> int:
        """Stop serving objects; returns the new version."""
        with self._lock:
            self._labels, self._offset = None, ()
            self._version += 1
            return self._version

    def pyramid(self) -> Pyramid:
        """The array's levels and chunks: the labels', as uint32 without a channel axis."""
        labels = self._store.labels
        return Pyramid(labels.spatial_shape, labels.chunk, labels.factors, np.dtype(np.uint32), None)

    def block(self, region: Sequence[slice]) -> np.ndarray | None:
        """The labels of a (strided) full-resolution region, uint32; None when no object lies there."""
        with self._lock:
            labels, offset = self._labels, self._offset
        if labels is None:
            return None
        out = np.zeros(tuple(len(range(r.start, r.stop, r.step or 1)) for r in region), np.uint32)
        dst, src = [], []
        for r, o, n in zip(region, offset, labels.shape):
            overlap = _strided_overlap(r, o, o + n)
            if overlap is None:
                return None
            dst.append(overlap[0])
            src.append(overlap[1])
        part = labels[tuple(src)]
        if not part.any():
            return None
        out[tuple(dst)] = part
        return out

    def label_at(self, position: Sequence[float]) -> int:
        """The object label at a position (array order, voxels; rounded down to the voxel), 0 outside objects."""
        with self._lock:
            labels, offset = self._labels, self._offset
        if labels is None:
            return 0
        index = tuple(int(np.floor(float(p))) - o for p, o in zip(position, offset))
        if len(index) != labels.ndim or any(not 0 <= i < n for i, n in zip(index, labels.shape)):
            return 0
        return int(labels[index])
