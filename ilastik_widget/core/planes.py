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
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
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

__all__ = ["GradientCache", "plane_features", "plane_slab", "planes_features"]

#: bytes of gradient-plane sums held at once per scale (bounds memory on large planes)
GRADIENT_BYTES = 48 << 20
#: pixels per tile when summing tensor products of gradient planes read back from memory
TILE_PIXELS = 1 << 15
#: gradient planes per stack in the in-plane passes of the structure tensor
STACK = 4

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

    def product(self, rows: list[tuple[int, np.ndarray]], owned: list[np.ndarray]) -> np.ndarray:
        """The sums of all ``rows`` as one ``(len(rows), u, v)`` array (a matrix product; ``owned`` gets it)."""
        c0 = min(lo for lo, _ in rows)
        c1 = max(lo + len(w) for lo, w in rows)
        mat = np.zeros((len(rows), c1 - c0), np.float32)
        for m, (lo, w) in enumerate(rows):
            mat[m, lo - c0 : lo - c0 + len(w)] = w
        res = workspace.ARENA.get((len(rows), self.n_pix))
        owned.append(res)
        np.matmul(mat, self.data[c0 - self.origin : c1 - self.origin], out=res)
        return res.reshape(len(rows), *self.plane_shape)

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


class GradientCache:
    """The structure tensor's gradient planes, kept between calls for one volume (bounded in bytes).

    The tensor at a plane needs the gradient on every plane its outer smoothing reaches (37 planes at
    sigma 10); the next slice needs all but one of them again. Pass one cache per volume to
    :func:`plane_features` / :func:`planes_features` (``gradient_cache=``) when scrolling; a cache must not
    outlive a change of the volume's values. Least recently used planes are dropped beyond ``max_bytes``.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            while self._data and self.nbytes + value.nbytes > self.max_bytes:
                self.nbytes -= self._data.popitem(last=False)[1].nbytes
            self._data[key] = value
            self.nbytes += value.nbytes

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0


class _PlaneJob:
    """One (input channel, scale) of a plane: the normal-axis sums, the tensor's gradient planes, phase 4.

    Its work runs as pool tasks: the sums at the output plane, runs of gradient planes to compute, the
    gradient planes found in the cache; the task that completes last runs phase 4 (in-plane passes and
    algebra) into the planar output.
    """

    def __init__(
        self,
        scale: Scale,
        outputs: list[tuple[str, int]],
        index: int,
        n: int,
        cache: GradientCache | None = None,
        key: tuple = (),
    ) -> None:
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
        self.cache, self.key = cache, (*key, scale)
        # gradient planes already known, held from now on (the cache may drop them meanwhile)
        self.cached: dict[int, np.ndarray] = {}
        if cache is not None:
            for p, _ in self.positions:
                g = cache.get((*self.key, p))
                if g is not None:
                    self.cached[p] = g
        self.missing = [(p, w) for p, w in self.positions if p not in self.cached]
        self.owned: list[np.ndarray] = []
        self.lock = threading.Lock()
        self.remaining = 0

    def extent(self) -> tuple[int, int]:
        """Planes ``[lo, hi)`` that this job reads."""
        rows = self.rows + self._gradient_rows(self.missing)
        return min(lo for lo, _ in rows), max(lo + len(w) for lo, w in rows)

    def _gradient_rows(self, positions: list[tuple[int, float]], scaled: bool = False) -> list[tuple[int, np.ndarray]]:
        """Normal-axis sums for the gradient at ``positions``: all order 0, then all order 1 (if filtered);
        ``scaled``: each multiplied by sqrt(weight)."""
        f = [float(np.sqrt(w)) if scaled else 1.0 for _, w in positions]
        rows = [_normal_row(self.scale, 0, p, self.n, fk) for (p, _), fk in zip(positions, f)]
        if self.scale.sigmas[0] is not None:
            rows.extend(_normal_row(self.scale, 1, p, self.n, fk) for (p, _), fk in zip(positions, f))
        return rows

    def tasks(self, slab: _Slab, buf: np.ndarray) -> list[Callable[[], None]]:
        """Pool tasks computing this job into ``buf``; the last one to finish runs phase 4.

        The sums at the output plane join the matrix product of the gradient planes around it (one read of
        the slab instead of two) when that plane's gradient is to be computed; otherwise
        :attr:`needs_linear` is set and the caller delivers them with :meth:`linear_done` (one product for
        the sums of every scale).
        """
        runs: list[list[tuple[int, float]]] = []
        if self.missing:
            n = len(self.missing)
            per = min(-(-n // _filters.N_THREADS), max(1, GRADIENT_BYTES // (8 * slab.n_pix)))
            runs = [self.missing[a : a + per] for a in range(0, n, per)]
        with_linear = next((k for k, run in enumerate(runs) if any(p == self.index for p, _ in run)), None)
        known = [(p, w) for p, w in self.positions if p in self.cached]
        self.needs_linear = with_linear is None
        self.remaining = len(runs) + self.needs_linear + bool(known)
        self.buf = buf

        def tensor(k: int) -> None:
            self._tensor(slab, runs[k], k == with_linear)
            self._done()

        def cached() -> None:
            acc = _Accumulator(self, slab.plane_shape)
            try:
                acc.add_many(known, [self.cached[p] for p, _ in known])
                acc.merge()
            finally:
                acc.free()
            self._done()

        return [lambda k=k: tensor(k) for k in range(len(runs))] + ([cached] if known else [])

    def linear_done(self, sums: list[np.ndarray]) -> None:
        """The sums at the output plane (``self.rows``), computed by the caller."""
        self._keep_linear(sums)
        self._done()

    def _done(self) -> None:
        with self.lock:
            self.remaining -= 1
            last = self.remaining == 0
        if last:
            try:
                self.job.phase4(slice(0, 1), self.buf)
            finally:
                self.release()

    def _keep_linear(self, sums: list[np.ndarray]) -> None:
        self.job.p = dict(zip(self.lin_orders, sums))
        if self.job.dog:
            self.job.pd = sums[len(self.lin_orders)]

    def _tensor(self, slab: _Slab, run: list[tuple[int, float]], with_linear: bool) -> None:
        """The gradient planes ``run`` (into the cache if there is one) and their tensor products; with
        ``with_linear`` also the sums at the output plane.

        Without a cache, sqrt(weight) of each gradient plane is folded into its sums (the weighted sum of
        products is then a plain sum). Planes go through the in-plane passes in stacks of
        :data:`STACK` (one row pass per stack).
        """
        sc, shape = self.scale, slab.plane_shape
        scaled = self.cache is None
        mine: list[np.ndarray] = []
        arena = workspace.ARENA
        acc = _Accumulator(self, shape)
        try:
            rows = self._gradient_rows(run, scaled)
            sums = slab.product(rows + (self.rows if with_linear else []), mine)
            if with_linear:
                # copied out: the gradient sums are dropped at the end of this task, these live to phase 4
                kept = arena.get((len(self.rows), *shape))
                kept[...] = sums[len(rows) :]
                with self.lock:
                    self.owned.append(kept)
                self._keep_linear([x[None] for x in kept])
            m, n_axes = len(run), len(sc.axes)
            for c0 in range(0, m, STACK):
                c1 = min(m, c0 + STACK)
                n = c1 - c0
                if scaled:
                    g = arena.get((n_axes, n, *shape))
                    mine.append(g)
                else:
                    g = np.empty((n_axes, n, *shape), np.float32)
                tmp = arena.get((n, *shape))
                mine.append(tmp)
                for i, b in enumerate(sc.axes):
                    src = sums[m + c0 : m + c1] if b == 0 else sums[c0:c1]
                    k1, k2 = sc.kernel(1, int(b == 1)), sc.kernel(2, int(b == 2))
                    t = src if k1 is None else _filters.filter_axis(src, k1, 1, tmp)
                    _filters.filter_axis(t, k2, 2, g[i])
                for k in range(n):
                    position, weight = run[c0 + k]
                    gk = g[:, k]
                    if self.cache is not None:
                        self.cache.put((*self.key, position), gk)
                    acc.add(position, weight, gk, scaled)
            acc.merge()
        finally:
            acc.free()
            for a in mine:
                arena.put(a)

    def release(self) -> None:
        with self.lock:
            owned, self.owned = self.owned, []
            self.job.p, self.job.pd, self.job.j, self.job.ggm = {}, None, [], None
            self.cached = {}
        for a in owned:
            workspace.ARENA.put(a)


class _Accumulator:
    """One task's share of a job's tensor: ``sum weight * g_a * g_b`` over gradient planes, merged at the end."""

    def __init__(self, pj: _PlaneJob, shape: tuple[int, int]) -> None:
        self.pj, self.shape = pj, shape
        arena = workspace.ARENA
        self.acc = [arena.get(shape) for _ in pj.pairs]
        self.tmp = [arena.get(shape) for _ in pj.scale.axes]
        for a in self.acc:
            a.fill(0)

    def add(self, position: int, weight: float, g: np.ndarray, scaled: bool = False) -> None:
        """Add ``weight * g_a * g_b``; ``scaled``: ``g`` is already multiplied by sqrt(weight)."""
        pj = self.pj
        if scaled:
            lhs = g
        else:
            lhs = self.tmp
            for t, gb in zip(self.tmp, g):
                np.multiply(gb, np.float32(weight), out=t)
        for (a, b), j in zip(pj.pairs, self.acc):
            cv2.accumulateProduct(lhs[a], g[b], j)
        if position == pj.index:
            self._magnitude(g, 1.0 / np.sqrt(weight) if scaled else 1.0)

    def add_many(self, run: list[tuple[int, float]], grads: list[np.ndarray]) -> None:
        """:meth:`add` for gradient planes read from memory: in tiles of pixels, so that the sums stay in cache
        while every plane is read once (3x less memory traffic than plane by plane)."""
        n = self.shape[0] * self.shape[1]
        step = max(1, TILE_PIXELS // self.shape[1]) * self.shape[1]
        flat_acc = [a.reshape(-1) for a in self.acc]
        flat_tmp = [t.reshape(-1) for t in self.tmp]
        flat_g = [[x.reshape(-1) for x in g] for g in grads]
        for a in range(0, n, step):
            sl = slice(a, min(n, a + step))
            for (_, weight), g in zip(run, flat_g):
                for t, gb in zip(flat_tmp, g):
                    np.multiply(gb[sl], np.float32(weight), out=t[sl])
                for (i, j), acc in zip(self.pj.pairs, flat_acc):
                    cv2.accumulateProduct(flat_tmp[i][sl], g[j][sl], acc[sl])
        for (position, _), g in zip(run, grads):
            if position == self.pj.index:
                self._magnitude(g)

    def _magnitude(self, g: np.ndarray, factor: float = 1.0) -> None:
        pj = self.pj
        if "gaussian_gradient_magnitude" not in pj.job.want:
            return
        ggm = workspace.ARENA.get((1, *self.shape))
        m2 = ggm.reshape(self.shape)
        cv2.multiply(g[0], g[0], dst=m2)
        for gb in g[1:]:
            cv2.accumulateSquare(gb, m2)
        np.sqrt(m2, out=m2)
        if factor != 1.0:
            m2 *= np.float32(factor)
        with pj.lock:
            pj.owned.append(ggm)
            pj.job.ggm = ggm

    def merge(self) -> None:
        pj, shape = self.pj, self.shape
        with pj.lock:
            if not pj.job.j:  # the first share becomes the job's tensor
                pj.job.j = [a.reshape(1, *shape) for a in self.acc]
                pj.owned.extend(self.acc)
                self.acc = []
            else:
                for a, j in zip(self.acc, pj.job.j):
                    np.add(j.reshape(shape), a, out=j.reshape(shape))

    def free(self) -> None:
        for a in self.acc + self.tmp:
            workspace.ARENA.put(a)
        self.acc = self.tmp = []


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
) -> list[np.ndarray]:
    """Features of several axis-aligned planes (or parts of them), computed together.

    Parameters
    ----------
    image : array-like
        As for :func:`plane_features`.
    planes : sequence of (axis, index) or (axis, index, region)
        The planes, as the arguments of :func:`plane_features`.
    selection, channel_axis, mode, voxel_size, gradient_cache
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
    specs = [_Plane(lay, p, gradient_cache) for p in planes]
    out: list[np.ndarray] = []
    batch: list[_Plane] = []
    for spec in specs:
        if batch and sum(p.slab_bytes for p in batch) + spec.slab_bytes > SLAB_BYTES:
            out.extend(_compute_planes(image, batch))
            batch = []
        batch.append(spec)
    out.extend(_compute_planes(image, batch))
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
        self.jobs = [
            _PlaneJob(_frame(scale, axis), outputs, index, n, cache, (c, *where)) for c, scale, outputs in plan
        ]
        self.job_images = [item[0] for item in plan]
        ext = [j.extent() for j in self.jobs]
        self.lo, self.hi = min(e[0] for e in ext), max(e[1] for e in ext)
        self.lock = threading.Lock()
        self.slab_bytes = 0 if self.empty else 4 * (self.hi - self.lo) * self.plane_shape[0] * self.plane_shape[1]
        self.buffers: list[np.ndarray] = []

    def read(self, image: Any) -> np.ndarray:
        read: list[slice] = [slice(None)] * 3
        read[self.axis] = slice(self.lo, self.hi)
        read[self.in_plane[0]], read[self.in_plane[1]] = self.window
        if self.lay.channel_axis is not None:
            read.insert(self.lay.channel_axis, slice(None))
        block = np.asarray(image[tuple(read)])
        check_finite(block)
        return channels_last(block, self.lay.channel_axis)

    def tasks(self, block: np.ndarray) -> list[Callable[[], None]]:
        """Convert the slab of every input channel and return the pool tasks computing the planar output."""
        self.buf = self._get((self.lay.n_channels, 1, *self.plane_shape))
        tasks = []
        for c in range(self.lay.n_in):
            data = self._get((self.hi - self.lo, *self.plane_shape))
            _load(block[..., c], self.axis, data)
            slab = _Slab(data.reshape(self.hi - self.lo, -1), self.lo, self.plane_shape)
            jobs = [j for j, i in zip(self.jobs, self.job_images) if i == c]
            # largest scales first: they take longest
            for job in sorted(jobs, key=lambda j: -max(s or 0.0 for s in j.scale.sigmas)):
                tasks.extend(job.tasks(slab, self.buf))
            linear = [j for j in jobs if j.needs_linear]
            if linear:
                tasks.insert(0, lambda slab=slab, linear=linear: self._linear(slab, linear))
        return tasks

    def _linear(self, slab: _Slab, jobs: list[_PlaneJob]) -> None:
        """The sums at the output plane of every job in ``jobs``, as one matrix product."""
        owned: list[np.ndarray] = []
        sums = slab.sums([r for j in jobs for r in j.rows], owned)
        with self.lock:
            self.buffers.extend(owned)
        k = 0
        for j in jobs:
            j.linear_done(sums[k : k + len(j.rows)])
            k += len(j.rows)

    def result(self) -> np.ndarray:
        n_total = self.lay.n_channels
        if self.empty:
            return np.zeros((*(sl.stop - sl.start for sl in self.region), n_total), np.float32)
        crop = tuple(slice(sl.start - w.start, sl.stop - w.start) for sl, w in zip(self.region, self.window))
        planar = self.buf[:, 0, crop[0], crop[1]]
        if planar.shape[1:] != self.plane_shape:
            planar = np.ascontiguousarray(planar)
        out = _filters.new_output((*planar.shape[1:], n_total))
        _filters.interleave(planar.reshape(n_total, -1), out.reshape(-1, n_total))
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


def _compute_planes(image: Any, planes: list[_Plane]) -> list[np.ndarray]:
    """Read and convert the slabs of ``planes``, run all their tasks on the pool, return the results.

    Each plane's tasks are queued as soon as its slab is ready, so the pool works while the next is read.
    """
    workspace.touch(+1)
    pending: list[Future] = []
    try:
        with _single_threaded_blas():
            for p in planes:
                if not p.empty:
                    tasks = p.tasks(p.read(image))
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


def _load(src: np.ndarray, axis: int, out: np.ndarray) -> None:
    """``src`` (a read block, any numeric dtype) with ``axis`` first, into the float32 array ``out``."""
    n = out.shape[0]
    if axis < 2:
        view = np.moveaxis(src, axis, 0)
        np.copyto(out, view, casting="unsafe")
        return
    # the normal is the innermost axis: convert with the rows intact, then one blocked transpose
    rows = src.shape[0] * src.shape[1]
    tmp = workspace.ARENA.get((rows, n))
    try:
        np.copyto(tmp, src.reshape(rows, n), casting="unsafe")
        cv2.transpose(tmp, out.reshape(n, rows))
    finally:
        workspace.ARENA.put(tmp)
