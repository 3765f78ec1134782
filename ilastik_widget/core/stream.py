"""Features of consecutive z planes of a volume, streamed: every plane is read and filtered once.

:func:`stream_features` yields the features of the planes ``z_start .. z_stop - 1`` one after the other, each
equal to :func:`~ilastik_widget.core.features.compute_features` of the whole volume at that plane (every feature
and scale, 2D scales, anisotropic voxels, several channels, at the borders; to float32 rounding), reading only
``[z_start - halo, z_stop + halo)`` (clipped to the volume), each plane once. Batch prediction runs it per range of
planes (:mod:`ilastik_widget.io.batch`) instead of recomputing a halo around every block.

How: every filter is separable. For a step of a few output planes ``[z0, z1)`` and each (input channel, scale):

- the passes along z restricted to the output planes are weighted sums of the input planes around them (the
  mirror at the volume's ends folds the weights back inside), one matrix product over a ring buffer that holds the
  input planes the step needs (:class:`Ring`: slot ``z % size``, so nothing is copied as the window slides);
- the structure tensor needs the gradient products on every plane its outer smoothing reaches: each plane's
  gradient is computed once, when it first enters that reach, and its products are kept in a second ring; the
  tensor at the output planes is then one weighted sum over that ring;
- the in-plane passes and the per-pixel algebra of the output planes are the filter bank's own
  (:meth:`~ilastik_widget.core.filters.ScaleJob.phase4`).

Memory holds the rings (the input planes within the halo of a step, and per scale with the structure tensor its
products on ``planes + 2 * ceil(1.75 sigma)`` planes) and the step's outputs: it depends on the size of a plane and
on the largest scale, not on the depth of the volume (:func:`stream_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

import numpy as np

from . import filters as _filters
from . import workspace
from .features import FeatureSelection, Layout, axis_halo, channels_last, check_finite, check_request, normalize_region
from .filters import Scale, ScaleJob
from .slab import normal_row

__all__ = ["stream_bytes", "stream_features"]

#: output planes per step by default (several planes share each matrix product over a ring)
STEP = 8
#: columns per task of the matrix products over a ring (few enough tasks, and each keeps its rows in cache)
COLUMNS = 1 << 16


def _columns(n: int) -> list[slice]:
    """Column ranges of a matrix product with ``n`` columns: about :data:`COLUMNS` each, at least one per thread."""
    parts = max(_filters.N_THREADS, -(-n // COLUMNS))
    bounds = [n * i // parts // 16 * 16 for i in range(parts)] + [n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class Ring:
    """Planes of consecutive positions along an axis, position ``p`` in slot ``p % size`` of one array.

    Positions held are a range ``[lo, hi)`` no longer than ``size``; adding planes beyond ``lo + size`` drops the
    oldest. Weighted sums of held planes are matrix products over at most two runs of slots.
    """

    def __init__(self, size: int, plane: tuple[int, ...]) -> None:
        self.size = int(size)
        self.plane = plane
        self.data = workspace.ARENA.get((self.size, *plane))
        self.flat = self.data.reshape(self.size, -1)
        self.lo = self.hi = 0

    def runs(self, a: int, b: int) -> list[tuple[int, int, int]]:
        """``(first position, first slot, count)`` of the runs of consecutive slots holding positions ``[a, b)``."""
        out = []
        while a < b:
            s = a % self.size
            n = min(b - a, self.size - s)
            out.append((a, s, n))
            a += n
        return out

    def reserve(self, a: int, b: int) -> None:
        """Make positions ``[a, b)`` (following the held ones) writable; the oldest planes are dropped."""
        if a != self.hi and self.hi > self.lo:
            raise ValueError(f"ring positions must follow each other: {a} after {self.hi}")
        if a != self.hi:
            self.lo = a
        self.hi = b
        self.lo = max(self.lo, b - self.size)

    def view(self, slot: int, n: int) -> np.ndarray:
        return self.data[slot : slot + n]

    def sums(self, rows: list[tuple[int, np.ndarray]], out: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
        """``out[m] = sum_k w[k] * plane[lo + k]`` for each row ``(lo, w)`` (positions held); ``out`` is
        ``(len(rows), values of a plane)`` float32. ``columns``: only these values of each plane."""
        c0 = min(lo for lo, _ in rows)
        c1 = max(lo + len(w) for lo, w in rows)
        if c0 < self.lo or c1 > self.hi:
            raise AssertionError(f"planes {c0}..{c1} asked of a ring holding {self.lo}..{self.hi}")
        mat = np.zeros((len(rows), c1 - c0), np.float32)
        for m, (lo, w) in enumerate(rows):
            mat[m, lo - c0 : lo - c0 + len(w)] = w
        first, dst = True, out[:, columns]
        for a, s, n in self.runs(c0, c1):
            part = mat[:, a - c0 : a - c0 + n]
            if first:
                np.matmul(part, self.flat[s : s + n, columns], out=dst)
                first = False
            else:
                dst += part @ self.flat[s : s + n, columns]
        return out

    def release(self) -> None:
        workspace.ARENA.put(self.data)


class _Job:
    """One (input channel, scale) of the stream: its linear sums, its tensor's product ring, phase 4."""

    def __init__(self, image: int, scale: Scale, outputs: list[tuple[str, int]], n: int, start: int, step: int):
        self.image, self.scale, self.n = image, scale, n
        self.job = ScaleJob(scale, outputs)
        self.lin = sorted({o[0] for o in self.job.orders})
        self.st = self.job.st
        self.reach = scale.scaled(0.5).radius(0) if self.st else 0  # planes the tensor's z smoothing reaches
        self.next = max(0, start - self.reach)  # the next plane whose gradient products are to be computed
        self.products: Ring | None = None
        if self.st:
            self.gjob = ScaleJob(scale, [("structure_tensor_eigenvalues", 0)])
            self.ring_size = min(n, step + 2 * self.reach)
        self.owned: list[np.ndarray] = []

    def _buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        a = workspace.ARENA.get(shape)
        self.owned.append(a)
        return a

    def gradient_tasks(self, inputs: Ring, stop: int, plane_shape: tuple[int, int]) -> list[Callable[[], None]]:
        """Tasks computing the gradient products of the planes from :attr:`next` up to ``stop`` into the product
        ring, a few planes each."""
        if not self.st or stop <= self.next:
            return []
        npix = plane_shape[0] * plane_shape[1]
        if self.products is None:
            self.products = Ring(self.ring_size, (len(self.job.pairs), npix))
            self.products.lo = self.products.hi = self.next
        self.products.reserve(self.next, stop)
        positions = list(range(self.next, stop))
        self.next = stop
        per = max(1, -(-len(positions) // (2 * _filters.N_THREADS)))
        return [
            partial(self._gradients, inputs, positions[a : a + per], plane_shape) for a in range(0, len(positions), per)
        ]

    def _gradients(self, inputs: Ring, positions: list[int], plane_shape: tuple[int, int]) -> None:
        """Gradient products of ``positions`` (the filter bank's phase 2: z sums, in-plane passes, products)."""
        m, along_z = len(positions), self.scale.sigmas[0] is not None
        rows = [normal_row(self.scale, 0, p, self.n) for p in positions]
        if along_z:
            rows += [normal_row(self.scale, 1, p, self.n) for p in positions]
        sums = workspace.ARENA.get((len(rows), plane_shape[0] * plane_shape[1]))
        try:
            inputs.sums(rows, sums)
            p = {0: sums[:m].reshape(m, *plane_shape)}
            if along_z:
                p[1] = sums[m:].reshape(m, *plane_shape)
            g = self.gjob
            index = {a: i for i, a in enumerate(g.scale.axes)}
            assert self.products is not None
            for t, position in enumerate(positions):
                ((_, slot, _),) = self.products.runs(position, position + 1)
                out = self.products.data[slot].reshape(len(g.pairs), 1, *plane_shape)
                cache: dict[tuple[int, ...], np.ndarray] = {}
                grad = [g.derivative(p, cache, slice(t, t + 1), o) for o in g.grads]
                for k, (a, b) in enumerate(g.pairs):
                    np.multiply(grad[index[a]], grad[index[b]], out=out[k])
        finally:
            workspace.ARENA.put(sums)

    def prepare_tasks(self, inputs: Ring, z0: int, z1: int, plane_shape: tuple[int, int]) -> list[Callable[[], object]]:
        """Tasks computing the z sums and the tensor at the output planes ``[z0, z1)`` for phase 4 (the matrix
        products split by columns), after setting up where they go."""
        b, npix = z1 - z0, plane_shape[0] * plane_shape[1]
        job = self.job
        tasks: list[Callable[[], object]] = []
        rows = [normal_row(self.scale, o, z, self.n) for o in self.lin for z in range(z0, z1)]
        if job.dog:
            rows += [normal_row(job.inner, 0, z, self.n) for z in range(z0, z1)]
        if rows:
            sums = self._buffer((len(rows), npix))
            tasks += [partial(inputs.sums, rows, sums, cols) for cols in _columns(npix)]
            planes = sums.reshape(len(rows), *plane_shape)
            job.p = {o: planes[i * b : (i + 1) * b] for i, o in enumerate(self.lin)}
            if job.dog:
                job.pd = planes[len(self.lin) * b :]
        if self.st and self.products is not None:
            n_pairs = len(job.pairs)
            rows = [normal_row(job.outer, 0, z, self.n) for z in range(z0, z1)]
            tensor = self._buffer((b, n_pairs * npix))
            tasks += [partial(self.products.sums, rows, tensor, cols) for cols in _columns(n_pairs * npix)]
            pairs = tensor.reshape(b, n_pairs, *plane_shape)
            job.j = [pairs[:, i] for i in range(n_pairs)]
            if "gaussian_gradient_magnitude" in job.want:
                job.ggm = self._buffer((b, *plane_shape))
                tasks.append(partial(self._magnitude, z0, z1, plane_shape))
        return tasks

    def _magnitude(self, z0: int, z1: int, plane_shape: tuple[int, int]) -> None:
        """As the filter bank's phase 2: the root of the unsmoothed products' trace at each output plane."""
        job, ring = self.job, self.products
        assert ring is not None and job.ggm is not None
        diag = [i for i, (a, c) in enumerate(job.pairs) if a == c]
        for t, z in enumerate(range(z0, z1)):
            ((_, s, _),) = ring.runs(z, z + 1)
            here = ring.data[s].reshape(len(job.pairs), *plane_shape)
            out = job.ggm[t]
            np.add(here[diag[0]], here[diag[1]], out=out)
            for i in diag[2:]:
                out += here[i]
            np.sqrt(out, out=out)

    def phase4(self, t: int, buf: np.ndarray) -> None:
        self.job.phase4(slice(t, t + 1), buf)

    def end_step(self) -> None:
        job = self.job
        job.p, job.pd, job.j, job.ggm = {}, None, [], None
        for a in self.owned:
            workspace.ARENA.put(a)
        self.owned = []

    def release(self) -> None:
        self.end_step()
        if self.products is not None:
            self.products.release()
            self.products = None


def _check_range(z: Any, n: int) -> tuple[int, int]:
    if z is None:
        return 0, n
    if isinstance(z, slice):
        start, stop, step = z.indices(n)
        if step != 1:
            raise ValueError(f"z must be a slice with step 1, got {z!r}")
        return start, max(start, stop)
    try:
        start, stop = (int(v) for v in z)
    except (TypeError, ValueError):
        raise ValueError(f"z must be None, a slice or (start, stop), got {z!r}") from None
    if not 0 <= start <= stop <= n:
        raise ValueError(f"z range {z!r} is outside the volume's {n} planes")
    return start, stop


def stream_features(
    image: Any,
    selection: FeatureSelection | Mapping | None = None,
    *,
    z: Any = None,
    region: tuple[slice, slice] | None = None,
    channel_axis: int | None = None,
    mode: str = "3d",
    voxel_size: Any = None,
    step: int = STEP,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, features)`` of consecutive z planes of a volume, each plane read and filtered once.

    Parameters
    ----------
    image : array-like
        A volume (z, y, x), optionally with a channel axis: anything with ``shape``, ``dtype`` and numpy slicing
        (numpy, zarr, dask...). Only the planes ``[z_start - halo, z_stop + halo)`` (clipped), restricted to
        ``region`` plus the in-plane halo, are read, each once.
    selection : FeatureSelection or dict, optional
        As for :func:`~ilastik_widget.core.features.compute_features` (scales in 2D included).
    z : slice or (start, stop), optional
        The planes to yield; default all.
    region : (slice, slice), optional
        Part of each plane (y, x), step 1; default the whole plane.
    channel_axis, mode, voxel_size
        As for :func:`~ilastik_widget.core.features.compute_features`.
    step : int
        Output planes computed together (they share the matrix products over the rings; more costs memory).

    Yields
    ------
    (int, numpy.ndarray)
        The plane's index along z and its features, float32 ``(*region_shape, C)``: equal to
        ``compute_features(image, ...)[index]`` cropped to ``region``, to float32 rounding. Each array is new
        (the consumer may keep it).

    Raises
    ------
    ValueError
        For a 2D image, a z range or region outside the volume, and everything ``compute_features`` rejects.

    Notes
    -----
    While a stream is open (from its first plane until it is exhausted or closed), BLAS runs on one thread in
    this process: the stream's matrix products run on the filter bank's threads.
    """
    lay = check_request(image.shape, image.dtype, selection, channel_axis, mode, voxel_size)
    if len(lay.spatial) != 3:
        raise ValueError(f"streaming along z needs a volume; this image has {len(lay.spatial)} spatial axes")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be a positive whole number, got {step!r}")
    n = lay.spatial[0]
    start, stop = _check_range(z, n)
    reg = normalize_region(region, lay.spatial[1:])
    return _stream(image, lay, start, stop, reg, int(step))


def _stream(
    image: Any, lay: Layout, start: int, stop: int, reg: tuple[slice, ...], step: int
) -> Iterator[tuple[int, np.ndarray]]:
    if stop <= start:
        return
    n = lay.spatial[0]
    h = axis_halo(lay.selection, lay.steps)
    window = [slice(max(0, sl.start - hh), min(m, sl.stop + hh)) for sl, hh, m in zip(reg, h[1:], lay.spatial[1:])]
    plane_shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
    crop = tuple(slice(sl.start - w.start, sl.stop - w.start) for sl, w in zip(reg, window))
    out_shape = tuple(sl.stop - sl.start for sl in reg)
    plan, n_total = lay.plan()
    if 0 in out_shape:
        for z in range(start, stop):
            yield z, np.zeros((*out_shape, n_total), np.float32)
        return
    npix = plane_shape[0] * plane_shape[1]
    jobs = [_Job(c, scale, outputs, n, start, step) for c, scale, outputs in plan]
    inputs = [Ring(min(n, step + 2 * h[0]), (npix,)) for _ in range(lay.n_in)]
    for r in inputs:
        r.lo = r.hi = max(0, start - h[0])
    workspace.touch(+1)
    # BLAS on one thread from the first plane to the last: the matrix products run on the pool's threads, and
    # OpenBLAS threads woken at every step spin after their work (1.5 s of CPU in 4 s beside Dask's threads)
    blas = workspace.single_threaded_blas()
    blas.__enter__()
    # phase 4 of a few planes at a time (one per thread), each yielded when done: the planar buffers of a whole step
    # would hold as much as the rings
    group = max(1, min(step, _filters.N_THREADS))
    bufs = [workspace.ARENA.get((n_total, 1, *plane_shape)) for _ in range(group)]
    try:
        for z0 in range(start, stop, step):
            z1 = min(stop, z0 + step)
            _read(image, lay, inputs, min(n, z1 + h[0]), window)
            _prepare_step(jobs, inputs, z0, z1, plane_shape)
            for t0 in range(0, z1 - z0, group):
                ts = range(t0, min(z1 - z0, t0 + group))
                _filters._run(_phase4, [(j, t, bufs[t - t0]) for t in ts for j in jobs])
                for t in ts:
                    planar = bufs[t - t0][:, 0, crop[0], crop[1]]
                    if planar.shape[1:] != plane_shape:
                        planar = np.ascontiguousarray(planar)
                    out = _filters.new_output((*out_shape, n_total))
                    _interleave(planar.reshape(n_total, -1), out.reshape(-1, n_total))
                    yield z0 + t, out
            for j in jobs:
                j.end_step()
    finally:
        blas.__exit__(None, None, None)
        for buf in bufs:
            workspace.ARENA.put(buf)
        for j in jobs:
            j.release()
        for r in inputs:
            r.release()
        workspace.touch(-1)


def _prepare_step(jobs: list[_Job], inputs: list[Ring], z0: int, z1: int, plane_shape: tuple[int, int]) -> None:
    """The gradient products and the sums that phase 4 of the output planes ``[z0, z1)`` needs, each stage's tasks
    on the filter bank's pool."""
    n = jobs[0].n
    _filters._run(
        _call, [t for j in jobs for t in j.gradient_tasks(inputs[j.image], min(n, z1 + j.reach), plane_shape)]
    )
    _filters._run(_call, [t for j in jobs for t in j.prepare_tasks(inputs[j.image], z0, z1, plane_shape)])


def _call(task: Callable[[], object]) -> None:
    task()


def _phase4(item: tuple[_Job, int, np.ndarray]) -> None:
    job, t, buf = item
    job.phase4(t, buf)


def _interleave(planar: np.ndarray, out: np.ndarray) -> None:
    """``(C, n)`` planes into the ``(n, C)`` rows of ``out``, in pixel ranges on the pool."""
    _filters._run(lambda sl: _filters.interleave(planar[:, sl], out[sl]), _columns(len(out)))


def _read(image: Any, lay: Layout, inputs: list[Ring], stop: int, window: list[slice]) -> None:
    """Read the planes from the rings' end up to ``stop`` (converted to float32 into the rings' slots)."""
    first = inputs[0].hi
    if stop <= first:
        return
    index: list[slice] = [slice(first, stop), *window]
    if lay.channel_axis is not None:
        index.insert(lay.channel_axis, slice(None))
    block = np.asarray(image[tuple(index)])
    check_finite(block)
    block = channels_last(block, lay.channel_axis)
    for c, ring in enumerate(inputs):
        ring.reserve(first, stop)
        done = 0
        for _, s, k in ring.runs(first, stop):
            dst = ring.view(s, k).reshape(k, *block.shape[1:3])
            np.copyto(dst, block[done : done + k, :, :, c], casting="unsafe")
            done += k


def stream_bytes(
    plane_shape: tuple[int, int],
    selection: FeatureSelection | Mapping | None = None,
    *,
    n_channels: int = 1,
    mode: str = "3d",
    voxel_size: Any = None,
    step: int = STEP,
) -> int:
    """Bytes that :func:`stream_features` holds for planes of ``plane_shape`` (in-plane halo included), at most.

    The rings, the step's sums and tensors and the output planes: what to budget per task when choosing how much
    of a plane to stream at once. It does not depend on the depth of the volume.
    """
    shape = (1 << 30, *plane_shape) if n_channels == 1 else (1 << 30, *plane_shape, n_channels)
    lay = check_request(shape, np.float32, selection, None if n_channels == 1 else -1, mode, voxel_size)
    h = axis_halo(lay.selection, lay.steps)
    plan, n_total = lay.plan()
    planes = lay.n_in * (step + 2 * h[0])
    scratch = 0
    for _, scale, outputs in plan:
        job = ScaleJob(scale, outputs)
        scratch = max(scratch, job.scratch_planes())
        lin = len({o[0] for o in job.orders}) + job.dog
        planes += step * lin
        if job.st:
            pairs = len(job.pairs)
            planes += pairs * (step + 2 * scale.scaled(0.5).radius(0)) + step * (pairs + 1) + 2 * step
    planes += (min(step, _filters.N_THREADS) + 1) * n_total  # the planar buffers and an output
    # the intermediate passes of the planes in phase 4 at once (one job each)
    planes += min(step, _filters.N_THREADS) * scratch
    return 4 * planes * plane_shape[0] * plane_shape[1]
