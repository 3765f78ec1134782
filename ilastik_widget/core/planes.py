"""Exact features of single axis-aligned planes of a volume, without computing blocks around them.

:func:`plane_features` returns what :func:`~ilastik_widget.core.features.compute_features` of the whole
volume holds at one plane (every feature and scale, at every position including the borders, to float32
rounding), reading only the slab of planes that the filters reach (:func:`plane_slab`) and never computing
another plane's features. :func:`planes_features` computes several planes in one go (the three panels of a
viewer), :class:`GradientCache` keeps the structure tensor's gradient planes for the next slice.

How: every filter is separable, so its pass along the plane's normal, restricted to the output plane, is a
weighted sum of the 2r+1 neighbouring planes (mirroring at the volume's border folds the weights back
inside). All such sums of one scale (derivative orders 0/1/2, the DoG's inner scale) are one matrix product
of a (sums x planes) weight matrix with the slab viewed as (planes x pixels). The in-plane passes and the
per-pixel algebra then run on single planes with the engine of :mod:`ilastik_widget.core.filters`. The
structure tensor smooths products of gradients, so it needs the gradient on every plane its outer
smoothing (sigma/2) reaches (2 * ceil(1.75 sigma) + 1 planes): those are computed the same way, multiplied
pairwise and summed with the outer weights. All work runs as tasks on the filter bank's thread pool, with
BLAS on one thread meanwhile.

Memory: the float32 slab (up to 2 * halo + 1 planes of the plane's size, per input channel), the planar
output, and a few planes per task; nothing of the size of the volume.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from functools import partial
from typing import Any

import cv2
import numpy as np

from . import filters as _filters
from . import workspace
from .compiled import kernels
from .features import (
    FeatureSelection,
    Layout,
    all_finite,
    axis_halo,
    channels_last,
    check_finite,
    check_request,
    normalize_region,
    too_large_for_float32,
)
from .slab import GradientCache, PlaneJob, Slab, SlabCache, frame, planes_buffer
from .soon import once_soon

__all__ = ["GradientCache", "SlabCache", "compile_soon", "plane_features", "plane_slab", "planes_features"]


def compile_soon(delay: float = 2.0) -> threading.Timer:
    """Compile the engine's kernels (:mod:`ilastik_widget.core.kernels`) in a background thread after ``delay``
    seconds, once per process, so that the first plane of a volume does not wait for them; returns that run's
    timer."""
    return once_soon("plane kernels", _warm_up_kernels, delay)


def _warm_up_kernels() -> None:
    kernels().warm_up()


def _check_plane(lay: Layout, axis: Any, index: Any) -> tuple[int, int]:
    if len(lay.spatial) != 3:
        raise ValueError(f"planes are defined for volumes; this image has {len(lay.spatial)} spatial axes")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2 (or -3..-1), got {axis!r}")
    axis = int(axis) % 3
    n = lay.spatial[axis]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise ValueError(f"plane index {index!r} is outside spatial axis {axis} of length {n}")
    return axis, int(index) % n


def plane_slab(
    shape: tuple[int, ...],
    axis: int,
    index: int,
    selection: FeatureSelection | Mapping | None = None,
    *,
    channel_axis: int | None = None,
    mode: str = "3d",
    voxel_size: Any = None,
) -> tuple[int, int]:
    """Planes ``[lo, hi)`` along ``axis`` that :func:`plane_features` reads for the plane ``index``.

    For a cache of source planes, or to see what a plane costs; arguments as for :func:`plane_features`.
    """
    lay = check_request(shape, np.float32, selection, channel_axis, mode, voxel_size)
    p = _Plane(lay, (axis, index))
    return p.lo, p.hi


def plane_features(
    image: Any,
    axis: int,
    index: int,
    selection: FeatureSelection | Mapping | None = None,
    *,
    region: tuple[slice, slice] | None = None,
    channel_axis: int | None = None,
    mode: str = "3d",
    voxel_size: Any = None,
    gradient_cache: GradientCache | None = None,
    slab_cache: SlabCache | None = None,
) -> np.ndarray:
    """Features of one axis-aligned plane of a volume, equal to the whole volume's features there.

    Parameters
    ----------
    image : array-like
        A volume (z, y, x), optionally with a channel axis: anything with ``shape``, ``dtype`` and
        numpy-style slicing (numpy, zarr, dask, ...). Only the slab of planes around ``index`` that the
        filters reach (:func:`plane_slab`), restricted to ``region`` plus the in-plane halo, is read.
    axis : int
        Spatial axis normal to the plane (0: a z slice (y, x); 1: an (z, x) plane; 2: an (z, y) plane).
    index : int
        Position of the plane along ``axis`` (negative counts from the end).
    selection : FeatureSelection or dict, optional
        As for :func:`~ilastik_widget.core.features.compute_features` (scales in 2D included).
    region : (slice, slice), optional
        Part of the plane, over its two axes in array order (step 1). Defaults to the whole plane.
    channel_axis, mode, voxel_size
        As for :func:`~ilastik_widget.core.features.compute_features`.
    gradient_cache : GradientCache, optional
        Keeps the structure tensor's gradient planes for the next call on the same volume (scrolling to the
        next slice then computes one gradient plane per scale instead of up to 37).
    slab_cache : SlabCache, optional
        Keeps the source planes read, as float32, for the next call on the same volume (scrolling to the next
        slice then reads the planes it adds instead of the whole slab).

    Returns
    -------
    numpy.ndarray
        float32 ``(*plane_region_shape, C)``, equal to ``compute_features(image, ...)`` taken at
        ``index`` along ``axis`` and cropped to ``region``, to float32 rounding.

    Raises
    ------
    ValueError
        For a 2D image, an axis or plane index outside the volume, values so large that their features
        overflow float32, and everything :func:`~ilastik_widget.core.features.compute_features` rejects.

    See Also
    --------
    planes_features : several planes at once (keeps both cores busy; what a viewer's three panels need).
    """
    return planes_features(
        image,
        [(axis, index, region)],
        selection,
        channel_axis=channel_axis,
        mode=mode,
        voxel_size=voxel_size,
        gradient_cache=gradient_cache,
        slab_cache=slab_cache,
    )[0]


#: bytes of float32 slabs that :func:`planes_features` holds at once (planes are computed in batches)
SLAB_BYTES = 384 << 20


def planes_features(
    image: Any,
    planes: Sequence[tuple[int, int] | tuple[int, int, tuple[slice, slice] | None]],
    selection: FeatureSelection | Mapping | None = None,
    *,
    channel_axis: int | None = None,
    mode: str = "3d",
    voxel_size: Any = None,
    gradient_cache: GradientCache | None = None,
    slab_cache: SlabCache | None = None,
) -> list[np.ndarray]:
    """Features of several axis-aligned planes (or parts of them), computed together.

    Parameters
    ----------
    image : array-like
        As for :func:`plane_features`.
    planes : sequence of (axis, index) or (axis, index, region)
        The planes, as the arguments of :func:`plane_features`.
    selection, channel_axis, mode, voxel_size, gradient_cache, slab_cache
        As for :func:`plane_features`.

    Returns
    -------
    list of numpy.ndarray
        One float32 ``(*plane_region_shape, C)`` array per plane, in order: what :func:`plane_features`
        returns for each. The work of all planes shares the thread pool (the tail of one plane overlaps the
        next); slabs are held for at most :data:`SLAB_BYTES` at once, so memory does not grow with the number
        of planes.
    """
    lay = check_request(image.shape, image.dtype, selection, channel_axis, mode, voxel_size)
    if isinstance(planes, (str, bytes)) or not isinstance(planes, Sequence):
        raise ValueError(f"planes must be a sequence of (axis, index[, region]) tuples, got {planes!r}")
    if gradient_cache is not None and not isinstance(gradient_cache, GradientCache):
        raise ValueError(f"gradient_cache must be a GradientCache or None, got {type(gradient_cache).__name__}")
    if slab_cache is not None and not isinstance(slab_cache, SlabCache):
        raise ValueError(f"slab_cache must be a SlabCache or None, got {type(slab_cache).__name__}")
    specs = [_Plane(lay, p, gradient_cache) for p in planes]
    out: list[np.ndarray] = []
    batch: list[_Plane] = []
    for spec in specs:
        if batch and sum(p.slab_bytes for p in batch) + spec.slab_bytes > SLAB_BYTES:
            out.extend(_compute_planes(image, batch, slab_cache))
            batch = []
        batch.append(spec)
    out.extend(_compute_planes(image, batch, slab_cache))
    return out


class _Plane:
    """One requested plane: what to read, the jobs of every (channel, scale), its buffers while computed."""

    def __init__(self, lay: Layout, spec: Any, cache: GradientCache | None = None) -> None:
        if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
            raise ValueError(f"a plane must be (axis, index) or (axis, index, region), got {spec!r}")
        axis, index = _check_plane(lay, spec[0], spec[1])
        region = spec[2] if len(spec) == 3 else None
        self.lay, self.axis, self.index = lay, axis, index
        in_plane = [a for a in range(3) if a != axis]
        self.in_plane = in_plane
        self.region = normalize_region(region, tuple(lay.spatial[a] for a in in_plane))
        self.empty = any(sl.stop <= sl.start for sl in self.region)
        h = axis_halo(lay.selection, lay.steps)
        self.window = [
            slice(max(0, sl.start - h[a]), min(lay.spatial[a], sl.stop + h[a])) for sl, a in zip(self.region, in_plane)
        ]
        self.plane_shape = (self.window[0].stop - self.window[0].start, self.window[1].stop - self.window[1].start)
        plan, _ = lay.plan()
        n = lay.spatial[axis]
        where = (axis, *((w.start, w.stop) for w in self.window))
        self.jobs = [PlaneJob(frame(scale, axis), outputs, index, n, cache, (c, *where)) for c, scale, outputs in plan]
        self.job_images = [item[0] for item in plan]
        ext = [j.extent() for j in self.jobs]
        self.lo, self.hi = min(e[0] for e in ext), max(e[1] for e in ext)
        self.lock = threading.Lock()
        self.slab_bytes = 0 if self.empty else 4 * (self.hi - self.lo) * self.plane_shape[0] * self.plane_shape[1]
        self.buffers: list[np.ndarray] = []

    def read(self, image: Any, lo: int, hi: int, out: np.ndarray, pieces: int = 1) -> None:
        """Planes ``[lo, hi)`` of ``image`` in this plane's window, float32 into ``out`` (channels, planes, u, v);
        converted in ``pieces`` parts on the filter pool (when it is idle: the first plane of a call)."""
        read: list[slice] = [slice(None)] * 3
        read[self.axis] = slice(lo, hi)
        read[self.in_plane[0]], read[self.in_plane[1]] = self.window
        if self.lay.channel_axis is not None:
            read.insert(self.lay.channel_axis, slice(None))
        block = np.asarray(image[tuple(read)])
        check_finite(block)
        block = channels_last(block, self.lay.channel_axis)
        for c in range(self.lay.n_in):
            _load(block[..., c], self.axis, out[c], pieces)

    def slabs(self, image: Any, cache: SlabCache | None, pieces: int = 1) -> np.ndarray:
        """The slab ``[lo, hi)`` of every input channel, float32 ``(channels, planes, u, v)``: from ``cache`` (read
        there if missing), or read into a work buffer; ``pieces`` as for :meth:`read`."""
        shape = (self.lay.n_in, *self.plane_shape)
        if cache is not None:
            key = (self.axis, *((w.start, w.stop) for w in self.window))
            n = self.lay.spatial[self.axis]
            return cache.planes(key, self.lo, self.hi, n, shape, partial(self.read, image, pieces=pieces))
        # the plane count rounded (planes_buffer): slabs cut by the volume's border, one plane shorter at every
        # slice, share kept buffers instead of each leaving one of its own
        count = self.hi - self.lo
        out = planes_buffer(count * self.lay.n_in, self.plane_shape, self.buffers)
        out = out.reshape(self.lay.n_in, count, *self.plane_shape)
        self.read(image, self.lo, self.hi, out, pieces)
        return out

    def tasks(self, slabs: np.ndarray) -> list[Callable[[], None]]:
        """The pool tasks computing the planar output from the slab of every input channel."""
        self.buf = self._get((self.lay.n_channels, 1, *self.plane_shape))
        tasks = []
        for c in range(self.lay.n_in):
            slab = Slab(slabs[c].reshape(self.hi - self.lo, -1), self.lo, self.plane_shape)
            jobs = [j for j, i in zip(self.jobs, self.job_images) if i == c]
            # largest scales first: they take longest
            for job in sorted(jobs, key=lambda j: -max(s or 0.0 for s in j.scale.sigmas)):
                tasks.extend(job.tasks(slab, self.buf))
            # the sums of each scale over its own planes: one product over all scales' planes multiplies the small
            # scales' few weights by the zeros of the largest scale's reach
            tasks[:0] = [partial(self._linear, slab, j) for j in jobs if j.needs_linear]
        return tasks

    def _linear(self, slab: Slab, job: PlaneJob) -> None:
        """The sums at the output plane of ``job``, as one matrix product over its own planes."""
        owned: list[np.ndarray] = []
        sums = slab.sums(job.rows, owned)
        with self.lock:
            self.buffers.extend(owned)
        job.linear_done(sums)

    def result(self) -> np.ndarray:
        n_total = self.lay.n_channels
        if self.empty:
            return np.zeros((*(sl.stop - sl.start for sl in self.region), n_total), np.float32)
        crop = tuple(slice(sl.start - w.start, sl.stop - w.start) for sl, w in zip(self.region, self.window))
        planar = self.buf[:, 0, crop[0], crop[1]]
        if planar.shape[1:] != self.plane_shape:
            planar = np.ascontiguousarray(planar)
        out = _filters.new_output((*planar.shape[1:], n_total))
        src, dst = planar.reshape(n_total, -1), out.reshape(-1, n_total)
        bounds = np.linspace(0, len(dst), _filters.N_THREADS + 1).astype(int) // 4096 * 4096
        bounds[-1] = len(dst)
        parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        finite = [True] * len(parts)

        def part(k: int) -> None:
            # checked in pieces just transposed (still in cache), on the pool: the whole output afterwards
            # is a serial pass over 64 MiB per 512 x 512 plane
            for a in range(parts[k].start, parts[k].stop, 4096):
                piece = slice(a, min(a + 4096, parts[k].stop))
                _filters.interleave(src[:, piece], dst[piece])
                finite[k] = finite[k] and all_finite(dst[piece])

        _filters._run(part, range(len(parts)))
        if not all(finite):
            # the input is finite (checked when read): values near the float32 limit overflowed in the filters
            raise too_large_for_float32()
        return out

    def _get(self, shape: tuple[int, ...]) -> np.ndarray:
        a = workspace.ARENA.get(shape)
        self.buffers.append(a)
        return a

    def release(self) -> None:
        for j in self.jobs:
            j.release()
        for a in self.buffers:
            workspace.ARENA.put(a)
        self.buffers = []


def _compute_planes(image: Any, planes: list[_Plane], slab_cache: SlabCache | None) -> list[np.ndarray]:
    """Read and convert the slabs of ``planes``, run all their tasks on the pool, return the results.

    Each plane's tasks are queued as soon as its slab is ready, so the pool works while the next is read.
    """
    workspace.touch(+1)
    pending: list[Future] = []
    try:
        with workspace.single_threaded_blas():
            for p in planes:
                if not p.empty:
                    # the first slab is converted on the idle pool; later ones on this thread while it works
                    pieces = 1 if pending else _filters.N_THREADS
                    tasks = p.tasks(p.slabs(image, slab_cache, pieces))
                    if _filters.N_THREADS == 1:
                        for t in tasks:
                            t()
                    else:
                        pending.extend(_filters.submit(t) for t in tasks)
            wait(pending)  # every task is done with the buffers before anyone releases them
            for f in pending:
                f.result()
            return [p.result() for p in planes]
    finally:
        wait(pending)
        for p in planes:
            p.release()
        workspace.touch(-1)


def _load(src: np.ndarray, axis: int, out: np.ndarray, pieces: int = 1) -> None:
    """``src`` (a read block, any numeric dtype) with ``axis`` first, into the float32 array ``out``; in ``pieces``
    parts (of the in-plane rows) on the filter pool."""
    n = out.shape[0]
    if axis < 2:
        view = np.moveaxis(src, axis, 0)
        rows = _row_parts(view.shape[1], pieces)
        _filters._run(lambda r: np.copyto(out[:, r], view[:, r], casting="unsafe"), rows)
        return
    # the normal is the innermost axis: convert with the rows intact, then one blocked transpose
    rows = src.shape[0] * src.shape[1]
    flat_src, flat_out = src.reshape(rows, n), out.reshape(n, rows)
    owned: list[np.ndarray] = []
    tmp = planes_buffer(n, (rows,), owned).reshape(rows, n)

    def part(r: slice) -> None:
        np.copyto(tmp[r], flat_src[r], casting="unsafe")
        cv2.transpose(tmp[r], flat_out[:, r])

    try:
        _filters._run(part, _row_parts(rows, pieces))
    finally:
        workspace.ARENA.put(owned[0])


def _row_parts(n: int, pieces: int) -> list[slice]:
    """``range(n)`` in ``pieces`` slices (fewer for small ``n``)."""
    bounds = np.linspace(0, n, max(1, min(pieces, n)) + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
