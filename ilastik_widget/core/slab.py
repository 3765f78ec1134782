"""The work of one plane: weighted sums of a slab of planes, the structure tensor's gradient planes, phase 4.

Internal to :mod:`ilastik_widget.core.planes` (which documents the method). A :class:`PlaneJob` is one
(input channel, scale) of one plane; it turns into pool tasks, and the task that completes last runs the
filter bank's phase 4 (in-plane passes and per-pixel algebra) into the plane's planar output.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import NamedTuple

import cv2
import numpy as np

from . import filters as _filters
from . import workspace
from .cache import ByteLRU
from .compiled import kernels
from .filters import Scale, ScaleJob

#: bytes of gradient-plane sums held at once per scale (bounds memory on large planes)
GRADIENT_BYTES = 48 << 20
#: pixels per tile when summing tensor products of gradient planes read back from memory (numpy passes)
TILE_PIXELS = 1 << 15
#: the same for the compiled loop, whose partial sums stay in the first-level cache
KERNEL_TILE = 1024
#: gradient planes per stack in the in-plane passes of the structure tensor
STACK = 4


def planes_buffer(n: int, plane_shape: tuple[int, ...], owned: list[np.ndarray]) -> np.ndarray:
    """``n`` planes of work space from the kept buffers, ``(n, *plane_shape)``; ``owned`` gets the buffer.

    The count is rounded up to 8, 12, 16, 24, 32, 48, ... so that calls with different counts share kept
    buffers instead of each keeping its own shape.
    """
    size = 8
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    a = workspace.ARENA.get((size, *plane_shape))
    owned.append(a)
    return a[:n]


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
    if r <= center < n - r:  # nothing mirrored (most planes): the general path's result, without its numpy calls
        return center - r, weights.astype(np.float64)
    pos = mirror_index(np.arange(center - r, center + r + 1), n)
    lo = int(pos.min())
    w = np.zeros(int(pos.max()) - lo + 1)
    np.add.at(w, pos - lo, weights.astype(np.float64))
    return lo, w


def normal_row(scale: Scale, order: int, center: int, n: int, factor: float = 1.0) -> tuple[int, np.ndarray]:
    """Weights over planes for the pass of ``order`` along the normal (frame axis 0) at ``center``."""
    k = scale.kernel(0, order)
    if k is None:
        return center, np.array([factor])
    lo, w = fold(k, center, n)
    return lo, w * factor


class Slab:
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
        res = planes_buffer(len(rows), (self.n_pix,), owned)
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
            mine: list[np.ndarray] = []
            res = planes_buffer(len(gemm), (self.n_pix,), mine)
            if lock is None:
                owned.extend(mine)
            else:
                with lock:
                    owned.extend(mine)
            np.matmul(mat, self.data[c0 - self.origin : c1 - self.origin], out=res)
            for m, i in enumerate(gemm):
                out[i] = res[m].reshape(1, *self.plane_shape)
        return out  # type: ignore[return-value]


class GradientCache(ByteLRU[np.ndarray]):
    """The structure tensor's gradient planes, kept between calls for one volume (bounded in bytes).

    The tensor at a plane needs the gradient on every plane its outer smoothing reaches (37 planes at
    sigma 10); the next slice needs all but one of them again. Pass one cache per volume to
    :func:`plane_features` / :func:`planes_features` (``gradient_cache=``) when scrolling; a cache must not
    outlive a change of the volume's values.

    Two rules drop planes. Of each (channel, axis, in-plane window, scale), only the planes that the tensors of the
    last ``planes_kept`` planes computed there read are kept (:meth:`used`): scrolling then adds one gradient plane
    per scale and drops one, whose recycled buffer the next slice's plane takes, instead of faulting in fresh memory
    slice after slice until the byte bound is reached. And the least recently used planes are dropped beyond
    ``max_bytes``: the default holds what all 61 features of a 512 x 512 slice use (88 gradient planes of 3 MiB) and
    of the two other planes through it, since a cache that falls short of one slice's needs drops, slice after
    slice, planes the next slice asks for again.
    """

    #: (channel, axis, window, scale) groups whose last planes are remembered (their gradient planes are kept)
    GROUPS_REMEMBERED = 256

    def __init__(self, max_bytes: int = 512 << 20, planes_kept: int = 4) -> None:
        super().__init__(max_bytes)
        self.planes_kept = max(1, int(planes_kept))
        self._recent: OrderedDict[Hashable, OrderedDict[int, frozenset[int]]] = OrderedDict()
        self._recent_lock = threading.Lock()

    def used(self, group: tuple, index: int, positions: Iterable[int]) -> None:
        """The tensor at plane ``index`` of ``group`` (the cache keys' prefix: channel, axis, window, scale) read the
        gradient planes at ``positions``: drop the planes of ``group`` that none of the last :attr:`planes_kept`
        planes computed in it reads."""
        with self._recent_lock:
            recent = self._recent.pop(group, None) or OrderedDict()
            self._recent[group] = recent
            while len(self._recent) > self.GROUPS_REMEMBERED:
                self._recent.popitem(last=False)
            recent.pop(index, None)
            recent[index] = frozenset(positions)
            while len(recent) > self.planes_kept:
                recent.popitem(last=False)
            keep = frozenset().union(*recent.values())
            # under the same lock: a concurrent call's older record must not drop the planes this one keeps
            n = len(group)
            self.discard(
                lambda key: isinstance(key, tuple) and len(key) == n + 1 and key[:n] == group and key[n] not in keep
            )

    def clear(self) -> None:
        """Drop every plane."""
        with self._recent_lock:
            self._recent.clear()
        super().clear()


class _KeptPlanes(NamedTuple):
    """Planes kept by a :class:`SlabCache`: the first one's index and float32 (channels, planes, u, v), never written
    once kept."""

    first: int
    planes: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of the planes (what the cache's bound counts)."""
        return int(self.planes.nbytes)


class SlabCache(ByteLRU[_KeptPlanes]):
    """Source planes converted to float32, kept between calls for one volume (bounded in bytes).

    A plane's slab reaches 2 * 35 + 1 planes at sigma 10 and more with the structure tensor: reading and converting
    it for every slice costs as much as a quarter of the slice's features on an array in memory, and on a chunked
    store (zarr, tensorstore) it decompresses the chunks of all those planes again. Kept per (axis, in-plane window),
    the next slice reads only the planes it adds, :attr:`ahead` at a time in the direction of scrolling. Pass one
    cache per volume to :func:`plane_features` / :func:`planes_features` (``slab_cache=``); like a
    :class:`GradientCache` it must not outlive a change of the volume's values. The least recently used windows are
    dropped beyond ``max_bytes``; a window larger than that is used once and not kept.
    """

    def __init__(self, max_bytes: int = 384 << 20, ahead: int = 16) -> None:
        super().__init__(max_bytes)
        self.ahead = max(0, int(ahead))

    def planes(
        self,
        key: Hashable,
        lo: int,
        hi: int,
        n: int,
        shape: tuple[int, ...],
        read: Callable[[int, int, np.ndarray], None],
    ) -> np.ndarray:
        """Planes ``[lo, hi)`` of ``n`` along the normal of the window ``key``, float32 ``(channels, hi - lo, u, v)``.

        ``shape`` is ``(channels, u, v)``; ``read(a, b, out)`` writes planes ``[a, b)`` into ``out`` (float32,
        ``(channels, b - a, u, v)``) and is called only for the planes not kept. The result is read-only.
        """
        kept = self.get(key)
        if kept is not None and (kept.planes.shape[0], *kept.planes.shape[2:]) != shape:  # another channel count
            kept = None
        k0, k1 = (kept.first, kept.first + kept.planes.shape[1]) if kept is not None else (0, 0)
        if kept is not None and k0 <= lo and hi <= k1:
            return kept.planes[:, lo - k0 : hi - k0]
        # scrolling: read ahead, and keep as many planes behind (turning back is cheap too)
        a0, a1 = lo, hi
        if k0 <= lo < k1 < hi:
            a0, a1 = max(k0, lo - self.ahead), min(n, hi + self.ahead)
        elif lo < k0 < hi <= k1:
            a0, a1 = max(0, lo - self.ahead), min(k1, hi + self.ahead)
        # recycled result buffers: fresh pages for ~100 MiB of planes would cost more than reading them
        new = workspace.new_output((shape[0], a1 - a0, *shape[1:]))
        o0, o1 = max(a0, k0), min(a1, k1)
        if kept is not None and o0 < o1:
            new[:, o0 - a0 : o1 - a0] = kept.planes[:, o0 - k0 : o1 - k0]
            for r0, r1 in ((a0, o0), (o1, a1)):
                if r0 < r1:
                    read(r0, r1, new[:, r0 - a0 : r1 - a0])
        else:
            read(a0, a1, new)
        new.setflags(write=False)
        self.put(key, _KeptPlanes(a0, new))
        return new[:, lo - a0 : hi - a0]


class PlaneJob:
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
        self.rows = [normal_row(scale, o, index, n) for o in self.lin_orders]
        if job.dog:
            self.rows.append(normal_row(job.inner, 0, index, n))
        self.positions: list[tuple[int, float]] = []
        if job.st:
            lo, w = normal_row(job.outer, 0, index, n)
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
        if not rows:  # the structure tensor alone, every gradient plane it needs in the cache: nothing to read
            return self.index, self.index + 1
        return min(lo for lo, _ in rows), max(lo + len(w) for lo, w in rows)

    def _gradient_rows(self, positions: list[tuple[int, float]], scaled: bool = False) -> list[tuple[int, np.ndarray]]:
        """Normal-axis sums for the gradient at ``positions``: all order 0, then all order 1 (if filtered);
        ``scaled``: each multiplied by sqrt(weight)."""
        f = [float(np.sqrt(w)) if scaled else 1.0 for _, w in positions]
        rows = [normal_row(self.scale, 0, p, self.n, fk) for (p, _), fk in zip(positions, f)]
        if self.scale.sigmas[0] is not None:
            rows.extend(normal_row(self.scale, 1, p, self.n, fk) for (p, _), fk in zip(positions, f))
        return rows

    def tasks(self, slab: Slab, buf: np.ndarray) -> list[Callable[[], None]]:
        """Pool tasks computing this job into ``buf``; the last one to finish runs phase 4.

        The sums at the output plane join the matrix product of the run of gradient planes nearest to it (one read of
        the slab's planes they share instead of two: scrolling computes one gradient plane per scale, the outer
        smoothing's reach away, whose product then reads 2r + 1 + that reach planes instead of twice 2r + 1); with no
        gradient plane to compute, :attr:`needs_linear` is set and the caller delivers them with :meth:`linear_done`.
        """
        runs: list[list[tuple[int, float]]] = []
        if self.missing:
            n = len(self.missing)
            per = min(-(-n // _filters.N_THREADS), max(1, GRADIENT_BYTES // (8 * slab.n_pix)))
            runs = [self.missing[a : a + per] for a in range(0, n, per)]
        with_linear = min(range(len(runs)), key=lambda k: min(abs(p - self.index) for p, _ in runs[k]), default=None)
        known = [(p, w) for p, w in self.positions if p in self.cached]
        # the cached planes' products in one share per thread: scrolling computes little else
        shares = [known[a :: _filters.N_THREADS] for a in range(min(len(known), _filters.N_THREADS))]
        self.needs_linear = with_linear is None
        self.remaining = len(runs) + self.needs_linear + len(shares)
        self.buf = buf

        def tensor(k: int) -> None:
            self._tensor(slab, runs[k], k == with_linear)
            self._done()

        def cached(share: list[tuple[int, float]]) -> None:
            acc = Accumulator(self, slab.plane_shape)
            try:
                acc.add_many(share, [self.cached[p] for p, _ in share])
                acc.merge()
            finally:
                acc.free()
            self._done()

        tasks: list[Callable[[], None]] = [partial(tensor, k) for k in range(len(runs))]
        return tasks + [partial(cached, share) for share in shares]

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
            if self.cache is not None and self.positions:
                self.cache.used(self.key, self.index, [p for p, _ in self.positions])

    def _keep_linear(self, sums: list[np.ndarray]) -> None:
        self.job.p = dict(zip(self.lin_orders, sums))
        if self.job.dog:
            self.job.pd = sums[len(self.lin_orders)]

    def _tensor(self, slab: Slab, run: list[tuple[int, float]], with_linear: bool) -> None:
        """The gradient planes ``run`` (into the cache if there is one) and their tensor products; with
        ``with_linear`` also the sums at the output plane.

        Without a cache, sqrt(weight) of each gradient plane is folded into its sums (the weighted sum of
        products is then a plain sum). Planes go through the in-plane passes in stacks of
        :data:`STACK` (the work buffers' size), each plane's row pass into the buffer it is kept in.
        """
        sc, shape = self.scale, slab.plane_shape
        scaled = self.cache is None
        mine: list[np.ndarray] = []
        arena = workspace.ARENA
        acc = Accumulator(self, shape)
        try:
            rows = self._gradient_rows(run, scaled)
            sums = slab.product(rows + (self.rows if with_linear else []), mine)
            if with_linear:
                # copied out: the gradient sums are dropped at the end of this task, these live to phase 4
                held: list[np.ndarray] = []
                kept = planes_buffer(len(self.rows), shape, held)
                kept[...] = sums[len(rows) :]
                with self.lock:
                    self.owned.extend(held)
                self._keep_linear([x[None] for x in kept])
            m, n_axes = len(run), len(sc.axes)
            tmp_all = arena.get((STACK, *shape))
            mine.append(tmp_all)
            if scaled:
                g_all = arena.get((n_axes, STACK, *shape))
                mine.append(g_all)
            for c0 in range(0, m, STACK):
                c1 = min(m, c0 + STACK)
                n = c1 - c0
                # stored in the cache: a buffer of its own per plane, recycled once the cache drops that plane (a
                # buffer shared by a stack would wait for all of its planes); otherwise the same buffers every stack
                if scaled:
                    planes = [g_all[:, k] for k in range(n)]
                else:
                    planes = [workspace.new_output((n_axes, *shape)) for _ in range(n)]
                tmp = tmp_all[:n]
                for i, b in enumerate(sc.axes):
                    src = sums[m + c0 : m + c1] if b == 0 else sums[c0:c1]
                    k1, k2 = sc.kernel(1, int(b == 1)), sc.kernel(2, int(b == 2))
                    t = src if k1 is None else _filters.filter_axis(src, k1, 1, tmp)
                    for k, gk in enumerate(planes):
                        _filters.filter_axis(t[k], k2, 1, gk[i])
                if self.cache is not None:
                    for (position, _), gk in zip(run[c0:c1], planes):
                        self.cache.put((*self.key, position), gk)
                acc.add_many(run[c0:c1], planes, scaled)
            acc.merge()
        finally:
            acc.free()
            for a in mine:
                arena.put(a)

    def release(self) -> None:
        """Return the job's buffers to the work buffer arena and forget its partial results."""
        with self.lock:
            owned, self.owned = self.owned, []
            self.job.p, self.job.pd, self.job.j, self.job.ggm = {}, None, [], None
            self.cached = {}
        for a in owned:
            workspace.ARENA.put(a)


class Accumulator:
    """One task's share of a job's tensor: ``sum weight * g_a * g_b`` over gradient planes, merged at the end."""

    def __init__(self, pj: PlaneJob, shape: tuple[int, int]) -> None:
        self.pj, self.shape = pj, shape
        arena = workspace.ARENA
        self.acc = [arena.get(shape) for _ in pj.pairs]
        self.tmp: list[np.ndarray] = []  # weighted gradient planes of the numpy passes, taken when first needed
        # nothing summed yet: the compiled loop's first call writes the sums instead of adding to zeros (a pass over
        # six planes of memory less per task), the numpy passes zero them first
        self.empty = True

    def add_many(self, run: list[tuple[int, float]], grads: list[np.ndarray], scaled: bool = False) -> None:
        """Add ``weight * g_a * g_b`` of each gradient plane ``(position, weight)`` of ``run``; ``scaled``: the
        planes are already multiplied by sqrt(weight).

        Pixels go in tiles, so that the sums stay in cache while every plane is read once (numpy passes plane by
        plane read and write the sums nine times per plane); a compiled loop for 3D gradients
        (:func:`ilastik_widget.core.kernels.tensor_sums`, 2.8x faster than numpy's passes).
        """
        weights = [1.0 if scaled else w for _, w in run]
        if len(self.pj.scale.axes) == 3 and grads:
            compiled = kernels()
            # the job's pairs are the upper triangle in axis order: the kernel's order
            s0, s1, s2, s3, s4, s5 = (a.reshape(-1) for a in self.acc)
            weights_array = np.array(weights, np.float32)
            planes = compiled.flat_planes(grads)
            compiled.tensor_sums(s0, s1, s2, s3, s4, s5, planes, weights_array, KERNEL_TILE, self.empty)
            self.empty = False
        else:
            self._add_tiles(weights, grads)
        for (position, weight), g in zip(run, grads):
            if position == self.pj.index:
                self._magnitude(g, 1.0 / np.sqrt(weight) if scaled else 1.0)

    def _add_tiles(self, weights: list[float], grads: list[np.ndarray]) -> None:
        self._zero_if_empty()
        n = self.shape[0] * self.shape[1]
        step = max(1, TILE_PIXELS // self.shape[1]) * self.shape[1]
        flat_acc = [a.reshape(-1) for a in self.acc]
        flat_tmp = [t.reshape(-1) for t in self._weighted()] if any(w != 1.0 for w in weights) else []
        flat_g = [[x.reshape(-1) for x in g] for g in grads]
        for a in range(0, n, step):
            sl = slice(a, min(n, a + step))
            for weight, fg in zip(weights, flat_g):
                lhs = fg
                if weight != 1.0:
                    lhs = flat_tmp
                    for t, gb in zip(flat_tmp, fg):
                        np.multiply(gb[sl], np.float32(weight), out=t[sl])
                for (i, j), acc in zip(self.pj.pairs, flat_acc):
                    cv2.accumulateProduct(lhs[i][sl], fg[j][sl], acc[sl])

    def _zero_if_empty(self) -> None:
        if self.empty:
            for a in self.acc:
                a.fill(0)
            self.empty = False

    def _weighted(self) -> list[np.ndarray]:
        if not self.tmp:
            self.tmp = [workspace.ARENA.get(self.shape) for _ in self.pj.scale.axes]
        return self.tmp

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
        """Add this task's share into the job's tensor (the first share becomes the tensor)."""
        pj, shape = self.pj, self.shape
        self._zero_if_empty()
        with pj.lock:
            if not pj.job.j:  # the first share becomes the job's tensor
                pj.job.j = [a.reshape(1, *shape) for a in self.acc]
                pj.owned.extend(self.acc)
                self.acc = []
            else:
                for a, j in zip(self.acc, pj.job.j):
                    np.add(j.reshape(shape), a, out=j.reshape(shape))

    def free(self) -> None:
        """Return this task's buffers to the work buffer arena."""
        for a in self.acc + self.tmp:
            workspace.ARENA.put(a)
        self.acc = self.tmp = []


def frame(scale: Scale, axis: int) -> Scale:
    """``scale`` with its axes reordered to (normal, first in-plane, second in-plane)."""
    order = [axis] + [a for a in range(3) if a != axis]
    return Scale(tuple(scale.sigmas[a] for a in order), tuple(scale.steps[a] for a in order))
