"""Exact features of single axis-aligned planes of a volume, without computing blocks around them.

:func:`plane_features` returns what :func:`~ilastik_widget.core.features.compute_features` of the whole
volume holds at one plane (every feature and scale, at every position including the borders, to float32
rounding), reading only the slab of planes that the filters reach and never computing another plane's
features.

How: every filter is separable, so its pass along the plane's normal, restricted to the output plane, is a
weighted sum of the 2r+1 neighbouring planes (mirroring at the volume's border folds the weights back
inside). All such sums of one scale (derivative orders 0/1/2, the DoG's inner scale) are one matrix product
of a (sums x planes) weight matrix with the slab viewed as (planes x pixels). The in-plane passes and the
per-pixel algebra then run on single planes with the engine of :mod:`ilastik_widget.core.filters`. The
structure tensor smooths products of gradients, so it needs the gradient on every plane its outer
smoothing (sigma/2) reaches: those are summed with the outer weights folded in (sqrt(w) scales each
gradient plane, so the weighted sum of products is a plain sum of products of scaled gradients).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import wait
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np

try:  # installed with scikit-learn
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

from . import filters as _filters
from . import workspace
from .features import FeatureSelection, Layout, axis_halo, channels_last, check_finite, check_request, normalize_region
from .filters import Scale, ScaleJob

__all__ = ["plane_features", "plane_slab"]

#: bytes of gradient-plane sums held at once per scale (bounds memory on large planes)
GRADIENT_BYTES = 48 << 20

_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while planes are computed: the matrix products run on the pool's threads
    already, and BLAS threads spinning beside them cost ~30% on two cores. Counted, so that concurrent
    calls restore the original setting only when the last one ends.
    """
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0 and threadpoolctl is not None:
            if _blas_controller is None:
                _blas_controller = threadpoolctl.ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def mirror_index(p: np.ndarray, n: int) -> np.ndarray:
    """Positions ``p`` on an axis of length ``n`` mirrored like scipy ``mode="mirror"`` (repeatedly)."""
    if n == 1:
        return np.zeros_like(p)
    period = 2 * (n - 1)
    p = np.mod(p, period)
    return np.where(p >= n, period - p, p)


def fold(weights: np.ndarray, center: int, n: int) -> tuple[int, np.ndarray]:
    """Correlation ``weights`` (2r+1 taps) at ``center`` of an axis of length ``n``, mirrored at the borders.

    Returns ``(lo, w)``: the sum equals ``sum_k w[k] * plane[lo + k]`` (float64 weights).
    """
    r = len(weights) // 2
    pos = mirror_index(np.arange(center - r, center + r + 1), n)
    lo = int(pos.min())
    w = np.zeros(int(pos.max()) - lo + 1)
    np.add.at(w, pos - lo, weights.astype(np.float64))
    return lo, w


def _normal_row(scale: Scale, order: int, center: int, n: int, factor: float = 1.0) -> tuple[int, np.ndarray]:
    """Weights over planes for the pass of ``order`` along the normal (frame axis 0) at ``center``."""
    k = scale.kernel(0, order)
    if k is None:
        return center, np.array([factor])
    lo, w = fold(k, center, n)
    return lo, w * factor


class _Slab:
    """The planes one plane's features need, as float32 ``(planes, pixels)``, and weighted sums of them."""

    def __init__(self, data: np.ndarray, origin: int, plane_shape: tuple[int, int]) -> None:
        self.data, self.origin, self.plane_shape = data, origin, plane_shape
        self.n_pix = plane_shape[0] * plane_shape[1]

    def sums(
        self, rows: list[tuple[int, np.ndarray]], owned: list[np.ndarray], lock: threading.Lock | None = None
    ) -> list[np.ndarray]:
        """``(1, u, v)`` planes, one per row ``(lo, weights)``; a single plane of weight 1 is a view of the slab."""
        out: list[np.ndarray | None] = [None] * len(rows)
        gemm = []
        for i, (lo, w) in enumerate(rows):
            if len(w) == 1 and w[0] == 1.0:
                out[i] = self.data[lo - self.origin].reshape(1, *self.plane_shape)
            else:
                gemm.append(i)
        if gemm:
            c0 = min(rows[i][0] for i in gemm)
            c1 = max(rows[i][0] + len(rows[i][1]) for i in gemm)
            mat = np.zeros((len(gemm), c1 - c0), np.float32)
            for m, i in enumerate(gemm):
                lo, w = rows[i]
                mat[m, lo - c0 : lo - c0 + len(w)] = w
            res = workspace.ARENA.get((len(gemm), self.n_pix))
            if lock is None:
                owned.append(res)
            else:
                with lock:
                    owned.append(res)
            np.matmul(mat, self.data[c0 - self.origin : c1 - self.origin], out=res)
            for m, i in enumerate(gemm):
                out[i] = res[m].reshape(1, *self.plane_shape)
        return out  # type: ignore[return-value]


class _PlaneJob:
    """One (input channel, scale) of a plane: the normal-axis sums, the tensor's gradient planes, phase 4.

    Its work runs as pool tasks: one for the sums at the output plane, one per run of gradient planes; the
    task that completes last runs phase 4 (in-plane passes and algebra) into the planar output.
    """

    def __init__(self, scale: Scale, outputs: list[tuple[str, int]], index: int, n: int) -> None:
        self.job = ScaleJob(scale, outputs)
        self.scale, self.index, self.n = scale, index, n
        job = self.job
        self.lin_orders = sorted({o[0] for o in job.orders})
        self.rows = [_normal_row(scale, o, index, n) for o in self.lin_orders]
        if job.dog:
            self.rows.append(_normal_row(job.inner, 0, index, n))
        self.positions: list[tuple[int, float]] = []
        if job.st:
            lo, w = _normal_row(job.outer, 0, index, n)
            self.positions = [(lo + k, float(wk)) for k, wk in enumerate(w) if wk > 0]
        index_of = {a: i for i, a in enumerate(scale.axes)}
        self.pairs = [(index_of[a], index_of[b]) for a, b in job.pairs]
        self.owned: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.remaining = 0

    def extent(self) -> tuple[int, int]:
        """Planes ``[lo, hi)`` that this job reads."""
        rows = list(self.rows)
        for p, _ in self.positions:
            rows.extend(self._gradient_rows([(p, 1.0)]))
        return min(lo for lo, _ in rows), max(lo + len(w) for lo, w in rows)

    def _gradient_rows(self, positions: list[tuple[int, float]]) -> list[tuple[int, np.ndarray]]:
        """Normal-axis sums for the gradient at ``positions``: all order 0, then all order 1 (if filtered)."""
        f = [float(np.sqrt(w)) for _, w in positions]
        rows = [_normal_row(self.scale, 0, p, self.n, fk) for (p, _), fk in zip(positions, f)]
        if self.scale.sigmas[0] is not None:
            rows.extend(_normal_row(self.scale, 1, p, self.n, fk) for (p, _), fk in zip(positions, f))
        return rows

    def tasks(self, slab: _Slab, buf: np.ndarray) -> list[Callable[[], None]]:
        """Pool tasks computing this job into ``buf``; the last one to finish runs phase 4.

        The sums at the output plane join the matrix product of the gradient planes around it (one read of
        the slab instead of two); without a structure tensor they are a task of their own.
        """
        runs: list[list[tuple[int, float]]] = []
        if self.positions:
            n = len(self.positions)
            per = min(-(-n // _filters.N_THREADS), max(1, GRADIENT_BYTES // (8 * slab.n_pix)))
            runs = [self.positions[a : a + per] for a in range(0, n, per)]
        with_linear = next((k for k, run in enumerate(runs) if any(p == self.index for p, _ in run)), None)
        self.remaining = len(runs) + (with_linear is None)

        def done() -> None:
            with self.lock:
                self.remaining -= 1
                last = self.remaining == 0
            if last:
                try:
                    self.job.phase4(slice(0, 1), buf)
                finally:
                    self.release()

        def linear() -> None:
            self._keep_linear(slab.sums(self.rows, self.owned, self.lock))
            done()

        def tensor(k: int) -> None:
            self._tensor(slab, runs[k], k == with_linear)
            done()

        return ([linear] if with_linear is None else []) + [lambda k=k: tensor(k) for k in range(len(runs))]

    def _keep_linear(self, sums: list[np.ndarray]) -> None:
        self.job.p = dict(zip(self.lin_orders, sums))
        if self.job.dog:
            self.job.pd = sums[len(self.lin_orders)]

    def _tensor(self, slab: _Slab, run: list[tuple[int, float]], with_linear: bool) -> None:
        """Sum of the tensor products over the gradient planes ``run``, added into the job's (what phases 2
        and 3 make for a whole volume); with ``with_linear`` also the sums at the output plane."""
        job, sc, shape = self.job, self.scale, slab.plane_shape
        mine: list[np.ndarray] = []
        arena = workspace.ARENA

        def get(zero: bool = False) -> np.ndarray:
            a = arena.get(shape)
            if zero:
                a.fill(0)
            mine.append(a)
            return a

        try:
            rows = self._gradient_rows(run)
            n_lin = len(self.rows) if with_linear else 0
            sums = slab.sums(rows + (self.rows if with_linear else []), mine)
            if n_lin:
                # copied out: the gradient sums are dropped at the end of this task, these live to phase 4
                kept = []
                for x in sums[len(rows) :]:
                    y = arena.get(x.shape)
                    y[...] = x
                    kept.append(y)
                with self.lock:
                    self.owned.extend(kept)
                self._keep_linear(kept)
            sums = [x.reshape(shape) for x in sums[: len(rows)]]
            m = len(run)
            axes = sc.axes
            tmp, grads = get(), [get() for _ in axes]
            acc = [get(zero=True) for _ in self.pairs]
            for k, (position, weight) in enumerate(run):
                for g, b in zip(grads, axes):
                    src = sums[m + k] if b == 0 else sums[k]
                    k1, k2 = sc.kernel(1, int(b == 1)), sc.kernel(2, int(b == 2))
                    t = src if k1 is None else _filters.filter_axis(src, k1, 0, tmp)
                    _filters.filter_axis(t, k2, 1, g)
                for (a, b), j in zip(self.pairs, acc):
                    cv2.accumulateProduct(grads[a], grads[b], j)
                if position == self.index and "gaussian_gradient_magnitude" in job.want:
                    # the magnitude is unweighted: undo the sqrt(weight) folded into the sums
                    ggm = arena.get((1, *shape))
                    m2 = ggm.reshape(shape)
                    cv2.multiply(grads[0], grads[0], dst=m2)
                    for g in grads[1:]:
                        cv2.accumulateSquare(g, m2)
                    np.sqrt(m2, out=m2)
                    m2 *= np.float32(1.0 / np.sqrt(weight))
                    with self.lock:
                        self.owned.append(ggm)
                        job.ggm = ggm
            with self.lock:
                if not job.j:
                    job.j = [a.reshape(1, *shape) for a in acc]
                    self.owned.extend(acc)
                    mine = [x for x in mine if not any(x is a for a in acc)]
                else:
                    for a, j in zip(acc, job.j):
                        np.add(j.reshape(shape), a, out=j.reshape(shape))
        finally:
            for a in mine:
                arena.put(a)

    def release(self) -> None:
        with self.lock:
            owned, self.owned = self.owned, []
            self.job.p, self.job.pd, self.job.j, self.job.ggm = {}, None, [], None
        for a in owned:
            workspace.ARENA.put(a)


def _frame(scale: Scale, axis: int) -> Scale:
    """``scale`` with its axes reordered to (normal, first in-plane, second in-plane)."""
    order = [axis] + [a for a in range(3) if a != axis]
    return Scale(tuple(scale.sigmas[a] for a in order), tuple(scale.steps[a] for a in order))


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
    axis, index = _check_plane(lay, axis, index)
    jobs = _jobs(lay, axis, index)
    ext = [j.extent() for j in jobs]
    return min(lo for lo, _ in ext), max(hi for _, hi in ext)


def _jobs(lay: Layout, axis: int, index: int) -> list[_PlaneJob]:
    plan, _ = lay.plan()
    n = lay.spatial[axis]
    return [_PlaneJob(_frame(scale, axis), outputs, index, n) for _, scale, outputs in plan]


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

    Returns
    -------
    numpy.ndarray
        float32 ``(*plane_region_shape, C)``, equal to ``compute_features(image, ...)`` taken at
        ``index`` along ``axis`` and cropped to ``region``, to float32 rounding.

    Raises
    ------
    ValueError
        For a 2D image, an axis or plane index outside the volume, and everything
        :func:`~ilastik_widget.core.features.compute_features` rejects.
    """
    lay = check_request(image.shape, image.dtype, selection, channel_axis, mode, voxel_size)
    axis, index = _check_plane(lay, axis, index)
    in_plane = [a for a in range(3) if a != axis]
    reg = normalize_region(region, tuple(lay.spatial[a] for a in in_plane))
    n_total = lay.n_channels
    if any(sl.stop <= sl.start for sl in reg):
        return np.zeros((*(sl.stop - sl.start for sl in reg), n_total), np.float32)
    h = axis_halo(lay.selection, lay.steps)
    window = [slice(max(0, sl.start - h[a]), min(lay.spatial[a], sl.stop + h[a])) for sl, a in zip(reg, in_plane)]
    plane_shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)

    jobs = _jobs(lay, axis, index)
    ext = [j.extent() for j in jobs]
    lo, hi = min(e[0] for e in ext), max(e[1] for e in ext)
    read: list[slice] = [slice(None)] * 3
    read[axis] = slice(lo, hi)
    read[in_plane[0]], read[in_plane[1]] = window
    if lay.channel_axis is not None:
        read.insert(lay.channel_axis, slice(None))
    block = np.asarray(image[tuple(read)])
    check_finite(block)
    block = channels_last(block, lay.channel_axis)
    plan_images = [item[0] for item in lay.plan()[0]]

    workspace.touch(+1)
    buf = workspace.ARENA.get((n_total, 1, *plane_shape))
    blas = _single_threaded_blas()
    blas.__enter__()
    try:
        for c in range(lay.n_in):
            data = workspace.ARENA.get((hi - lo, *plane_shape))
            try:
                _load(block[..., c], axis, data)
                slab = _Slab(data.reshape(hi - lo, -1), lo, plane_shape)
                _run_jobs([j for j, i in zip(jobs, plan_images) if i == c], slab, buf)
            finally:
                workspace.ARENA.put(data)
        crop = tuple(slice(sl.start - w.start, sl.stop - w.start) for sl, w in zip(reg, window))
        planar = buf[:, 0, crop[0], crop[1]]
        if planar.shape[1:] != plane_shape:
            planar = np.ascontiguousarray(planar)
        out = _filters.new_output((*planar.shape[1:], n_total))
        _filters.interleave(planar.reshape(n_total, -1), out.reshape(-1, n_total))
        return out
    finally:
        blas.__exit__(None, None, None)
        workspace.ARENA.put(buf)
        for j in jobs:
            j.release()
        workspace.touch(-1)


def _load(src: np.ndarray, axis: int, out: np.ndarray) -> None:
    """``src`` (a read block, any numeric dtype) with ``axis`` first, into the float32 array ``out``."""
    n = out.shape[0]
    if axis < 2:
        view = np.moveaxis(src, axis, 0)
        parts = [slice(a * n // 4, (a + 1) * n // 4) for a in range(4)]
        _filters._run(lambda sl: np.copyto(out[sl], view[sl], casting="unsafe"), parts)
        return
    # the normal is the innermost axis: convert with the rows intact, then one blocked transpose
    rows = src.shape[0] * src.shape[1]
    tmp = workspace.ARENA.get((rows, n))
    try:
        flat, rows_view = out.reshape(n, rows), src.reshape(rows, n)
        parts = [slice(a * rows // 4, (a + 1) * rows // 4) for a in range(4)]

        def one(sl: slice) -> None:
            np.copyto(tmp[sl], rows_view[sl], casting="unsafe")
            cv2.transpose(tmp[sl], flat[:, sl])

        _filters._run(one, parts)
    finally:
        workspace.ARENA.put(tmp)


def _run_jobs(jobs: list[_PlaneJob], slab: _Slab, buf: np.ndarray) -> None:
    """The scales of one input channel, all on the pool (largest scales first: they take longest)."""
    tasks = []
    for job in sorted(jobs, key=lambda j: -max(s or 0.0 for s in j.scale.sigmas)):
        tasks.extend(job.tasks(slab, buf))
    if _filters.N_THREADS == 1:
        for t in tasks:
            t()
        return
    pending = [_filters.submit(t) for t in tasks]
    wait(pending)  # every task is done with the buffers before anyone releases them
    for f in pending:
        f.result()
