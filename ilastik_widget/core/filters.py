"""Low-level separable filters and the filter bank engine used by :mod:`ilastik_widget.core.features`.

Everything here works on C-contiguous float32 arrays of 2 or 3 spatial axes and mirrors at the borders
(scipy ``mode="mirror"`` == OpenCV ``BORDER_REFLECT_101``, repeated reflection for short axes).
OpenCV does the 1D passes because it is ~10x faster per pass than scipy.ndimage and releases the GIL.
A :class:`Scale` says how one scale is filtered along each axis: its sigma in voxels (``None``: that axis
is not filtered, as for slice-wise 2D filters on a volume) and the voxel step that derivatives are
divided by (anisotropic voxels). The closed-form eigenvalues are in :mod:`ilastik_widget.core.eigen`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np

from . import workspace
from .eigen import eigvals2, eigvals3
from .workspace import ARENA as _ARENA
from .workspace import clear_workspace, new_output

__all__ = [
    "DOG_RATIO",
    "Scale",
    "clear_workspace",
    "filter_axis",
    "filter_bank",
    "kernel",
    "kernel_radius",
    "new_output",
]

BORDER = cv2.BORDER_REFLECT_101
_ONE = np.ones(1, dtype=np.float32)

#: kernel radius in units of sigma (at least 3.5 keeps truncation invisible)
TRUNCATE = 3.5

#: inner scale of the difference of Gaussians, as a fraction of the outer one
DOG_RATIO = 0.66


def kernel_radius(sigma: float) -> int:
    """Radius (taps each side of the centre) of every kernel at scale ``sigma``."""
    return max(1, int(math.ceil(TRUNCATE * sigma)))


@cache
def _kernel64(sigma: float, order: int) -> np.ndarray:
    """Sampled Gaussian (derivative) correlation kernel in float64, normalised by its moments.

    order 0: sums to 1.  order 1: exactly antisymmetric, response 1 to the ramp f(x) = x.
    order 2: exactly symmetric, sums to 0 (no response to a constant), response 1 to f(x) = x**2 / 2.
    Normalising the moments keeps small scales (0.7, 1.0) true to the derivative they stand for. For a sigma
    far below one voxel (an anisotropic axis) the normalised kernels tend to the central differences
    [-1/2, 0, 1/2] and [1, -2, 1], which are used once the Gaussian's side taps underflow.
    """
    if order not in (0, 1, 2):
        raise ValueError(f"derivative order must be 0, 1 or 2, got {order}")
    r = kernel_radius(sigma)
    k = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    g /= g.sum()
    if order == 0:
        return g
    if g[r + 1] < 1e-280:
        w = np.zeros_like(g)
        w[r - 1 : r + 2] = (-0.5, 0.0, 0.5) if order == 1 else (1.0, -2.0, 1.0)
        return w
    if order == 1:
        w = k * g
        w /= np.sum(k * w)  # correlation: sum_k f(x+k) w_k == f'(x) for a ramp
        w[r] = 0.0
        w[:r] = -w[:r:-1]  # bit-exact antisymmetry (also lets OpenCV use its antisymmetric path)
        return w
    # (k^2 / s^2 - 1) g minus its sum times g, written without the cancellation that ruins small sigmas
    w = (k * k - np.sum(k * k * g)) * g
    w -= w.sum() * g  # exact zero response to a constant (the Gaussian sums to one)
    w /= 0.5 * np.sum(k * k * w)
    w[:r] = w[:r:-1]
    return w


@cache
def kernel(sigma: float, order: int, step: float = 1.0) -> np.ndarray:
    """float32 kernel of :func:`_kernel64` for derivatives per ``step`` voxels (what OpenCV is given)."""
    k = _kernel64(sigma, order)
    if step != 1.0:
        k = k / step**order
    k = k.astype(np.float32)
    k.setflags(write=False)
    return k


@dataclass(frozen=True)
class Scale:
    """How one scale is filtered along each axis.

    Attributes
    ----------
    sigmas : tuple of float or None
        Gaussian sigma in voxels per axis; ``None`` leaves that axis unfiltered (slice-wise 2D filters).
    steps : tuple of float
        Voxel size per axis in the unit of length of the derivatives (1 for isotropic data).
    """

    sigmas: tuple[float | None, ...]
    steps: tuple[float, ...]

    @property
    def axes(self) -> tuple[int, ...]:
        """The filtered axes."""
        return tuple(a for a, s in enumerate(self.sigmas) if s is not None)

    def scaled(self, factor: float) -> Scale:
        """The same scale with every sigma multiplied by ``factor`` (DoG inner scale, tensor smoothing)."""
        return Scale(tuple(None if s is None else s * factor for s in self.sigmas), self.steps)

    def kernel(self, axis: int, order: int) -> np.ndarray | None:
        """Kernel along ``axis`` for a derivative of ``order``; ``None`` (identity) on an unfiltered axis."""
        s = self.sigmas[axis]
        if s is None:
            if order:
                raise ValueError(f"no derivative along the unfiltered axis {axis}")
            return None
        return kernel(s, order, self.steps[axis])

    def radius(self, axis: int) -> int:
        """Kernel radius along ``axis`` (0 on an unfiltered axis)."""
        s = self.sigmas[axis]
        return 0 if s is None else kernel_radius(s)


def column_band(ksize: int) -> int:
    """Column band width for a column pass with a kernel of ``ksize`` taps.

    OpenCV's column filter keeps ``ksize`` rows of the band in a ring buffer; past ~48 KB it falls
    out of L1/L2 and a sigma-10 pass over a (128, 65536) view gets 6x slower (measured 245 vs 40 ms).
    """
    w = 2048
    while w > 128 and ksize * w * 4 > 48 * 1024:
        w //= 2
    return w


def column_pass(src: np.ndarray, k: np.ndarray, dst: np.ndarray) -> None:
    """Column (axis 0) pass of 2D float32 arrays, in cache-sized column bands."""
    width = src.shape[1]
    w = column_band(len(k))
    if width <= w * 1.5:
        cv2.sepFilter2D(src, -1, _ONE, k, dst=dst, borderType=BORDER)
        return
    for a in range(0, width, w):
        b = a + w if a + 2 * w <= width else width  # no sliver at the end
        cv2.sepFilter2D(src[:, a:b], -1, _ONE, k, dst=dst[:, a:b], borderType=BORDER)
        if b == width:
            break


def filter_axis(src: np.ndarray, k: np.ndarray | None, axis: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Correlate a C-contiguous float32 array (2 or 3 axes) with the 1D kernel ``k`` along ``axis``.

    ``k=None`` is the identity: ``src`` itself is returned, or copied into ``dst`` when one is given.
    """
    if k is None:
        if dst is None:
            return src
        dst[...] = src
        return dst
    if dst is None:
        dst = np.empty_like(src)
    nd = src.ndim
    if axis == nd - 1:
        # rows: filter2D with a 1 x n kernel is the fastest OpenCV row pass (about 2x sepFilter2D's)
        s2 = src.reshape(-1, src.shape[-1])
        d2 = dst.reshape(s2.shape)
        cv2.filter2D(s2, -1, k[None, :], dst=d2, borderType=BORDER)
    elif axis == 0:
        # first axis: a column pass over the (n0, rest) view (z of a volume is a 1D filter on (Z, Y*X))
        s2 = src.reshape(src.shape[0], -1)
        column_pass(s2, k, dst.reshape(s2.shape))
    else:  # axis 1 of a volume: one column pass per z slice
        for z in range(src.shape[0]):
            column_pass(src[z], k, dst[z])
    return dst


# ----------------------------------------------------------------------------------------------
# the filter bank engine
#
# Work is split in four phases so that every pass is either a long streaming OpenCV call or runs on a
# cache-sized chunk (a band of rows in 2D, a z slice in 3D), and so that the output is written once,
# already in the (*spatial, C) layout the classifier reads:
#   1. passes along axis 0 on the whole array (the only passes that need rows outside a chunk);
#   2. per chunk: gradients -> structure tensor products (only if the structure tensor is selected);
#   3. axis-0 smoothing of the tensor products on the whole array;
#   4. per chunk: the remaining passes, the per-pixel algebra (LoG, magnitude, DoG, eigenvalues) into
#      a planar chunk buffer, then one transpose into the interleaved output.
# Phases 1 and 3 split each pass into column bands, phases 2 and 4 split by chunk; both run on a
# thread pool because OpenCV and numpy release the GIL.

N_THREADS = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None
#: target pixels per chunk: ~40 planes of this size stay in L2/L3
CHUNK_PIXELS = 1 << 16


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=N_THREADS, thread_name_prefix="ilastik-features")
    return _POOL


def _run(fn: Callable, items: Sequence) -> None:
    """Run ``fn`` over ``items`` on the pool (inline for a single item or a single thread)."""
    if N_THREADS == 1 or len(items) <= 1:
        for it in items:
            fn(it)
        return
    for _ in _pool().map(fn, items):
        pass


def submit(fn: Callable, *args: Any) -> Future:
    """Run ``fn(*args)`` on the pool (at once, inline, with a single thread)."""
    if N_THREADS == 1:
        f: Future = Future()
        try:
            f.set_result(fn(*args))
        except BaseException as e:  # handed to whoever waits on the future
            f.set_exception(e)
        return f
    return _pool().submit(fn, *args)


def _axis0_passes(tasks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """Run axis-0 passes ``(src, kernel, dst)`` on whole arrays, split into column ranges per thread."""
    parts = []
    for src, k, dst in tasks:
        s2 = src.reshape(src.shape[0], -1)
        d2 = dst.reshape(s2.shape)
        width = s2.shape[1]
        n = N_THREADS if width >= 256 * N_THREADS else 1
        bounds = [width * i // n for i in range(n + 1)]
        parts.extend((s2[:, a:b], k, d2[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
    # one pool task per (pass, column range): a thread that gets less CPU (shared machine) takes fewer
    _run(lambda part: column_pass(*part), parts)


def _chunks(shape: tuple[int, ...]) -> list[slice]:
    """Bands along axis 0 of about CHUNK_PIXELS pixels each."""
    per = max(1, int(np.prod(shape[1:])))
    step = max(1, CHUNK_PIXELS // per)
    return [slice(a, min(shape[0], a + step)) for a in range(0, shape[0], step)]


def _unit(nd: int, *axes: int) -> tuple[int, ...]:
    o = [0] * nd
    for a in axes:
        o[a] += 1
    return tuple(o)


class ScaleJob:
    """What one (input channel, scale) needs: derivative orders, DoG, structure tensor, output slots.

    The state filled by phases 1-3 (``p``: the image filtered along axis 0 per derivative order, ``pd``: the
    DoG's inner smoothing along axis 0, ``j``: tensor products smoothed along axis 0, ``ggm``: gradient
    magnitude) is all that :meth:`phase4` reads, so :mod:`ilastik_widget.core.planes` fills it for one plane
    from its own axis-0 sums and reuses the rest.
    """

    def __init__(self, scale: Scale, outputs: list[tuple[str, int]], image: np.ndarray | None = None) -> None:
        nd = len(scale.sigmas)
        self.scale, self.nd, self.outputs, self.image = scale, nd, outputs, image
        want = {f for f, _ in outputs}
        self.want = want
        axes = scale.axes
        zero = (0,) * nd
        orders: set[tuple[int, ...]] = set()
        if want & {"gaussian_smoothing", "difference_of_gaussians"}:
            orders.add(zero)
        self.grads = [_unit(nd, a) for a in axes]
        if "gaussian_gradient_magnitude" in want and "structure_tensor_eigenvalues" not in want:
            orders.update(self.grads)
        self.pairs = [(a, b) for i, a in enumerate(axes) for b in axes[i:]]
        self.seconds = [_unit(nd, a, b) for a, b in self.pairs]
        if "hessian_of_gaussian_eigenvalues" in want:
            orders.update(self.seconds)
        if "laplacian_of_gaussian" in want:
            orders.update(_unit(nd, a, a) for a in axes)
        self.orders = orders
        self.dog = "difference_of_gaussians" in want
        self.st = "structure_tensor_eigenvalues" in want
        self.inner = scale.scaled(DOG_RATIO)
        self.outer = scale.scaled(0.5)
        # phase-1 results: axis-0 pass of the image per axis-0 derivative order
        self.axis0_orders = {o[0] for o in orders} | ({0, 1} if self.st else set())
        if scale.sigmas[0] is None:
            self.axis0_orders.discard(1)
        self.p: dict[int, np.ndarray] = {}
        self.pd: np.ndarray | None = None
        self.j: list[np.ndarray] = []  # tensor products, then their axis-0 smoothed versions
        self.ggm: np.ndarray | None = None  # gradient magnitude, from phase 2 when the tensor is computed
        self._owned: list[np.ndarray] = []

    def _own(self, shape: tuple[int, ...]) -> np.ndarray:
        a = _ARENA.get(shape)
        self._owned.append(a)
        return a

    def phase1_tasks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        tasks = []
        shape = self.image.shape
        for o0 in sorted(self.axis0_orders):
            k = self.scale.kernel(0, o0)
            if k is None:  # axis 0 is not filtered: the image itself
                self.p[o0] = self.image
                continue
            self.p[o0] = self._own(shape)
            tasks.append((self.image, k, self.p[o0]))
        if self.dog:
            k = self.inner.kernel(0, 0)
            if k is None:
                self.pd = self.image
            else:
                self.pd = self._own(shape)
                tasks.append((self.image, k, self.pd))
        if self.st:
            self.j = [self._own(shape) for _ in self.seconds]
            if "gaussian_gradient_magnitude" in self.want:
                self.ggm = self._own(shape)
        return tasks

    def rest(
        self,
        src: np.ndarray,
        scale: Scale,
        orders: tuple[int, ...],
        dst: np.ndarray | None = None,
        scratch: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Passes along axes 1.. of a chunk ``src`` (already filtered along axis 0); intermediate results are taken
        from the work buffers and listed in ``scratch`` when it is given (the caller returns them)."""
        out = src
        last = len(orders) - 1
        for axis in range(1, len(orders)):
            k = scale.kernel(axis, orders[axis])
            to = dst if axis == last and dst is not None else _scratch(out, k, scratch)
            out = filter_axis(out, k, axis, to)
        return out

    def scratch_planes(self) -> int:
        """Work-buffer chunks that :meth:`phase4` holds at most (its intermediate passes), for memory budgets."""
        nd = self.nd
        zero = (0,) * nd
        needed: set[tuple[int, ...]] = set()
        for feature, _ in self.outputs:
            if feature in ("gaussian_smoothing", "difference_of_gaussians"):
                needed.add(zero)
            elif feature == "laplacian_of_gaussian":
                needed.update(_unit(nd, a, a) for a in self.scale.axes)
            elif feature == "gaussian_gradient_magnitude" and not self.st:
                needed.update(self.grads)
            elif feature == "hessian_of_gaussian_eigenvalues":
                needed.update(self.seconds)
        n = len({o[:k] for o in needed for k in range(2, nd + 1)})
        if self.dog:
            n += nd - 1
        if self.st:
            n += len(self.pairs) * (nd - 1)
        return n

    def derivative(
        self,
        p: dict[int, np.ndarray],
        cache: dict,
        ch: slice,
        o: tuple[int, ...],
        dst: np.ndarray | None = None,
        scratch: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        """Gaussian derivative ``o`` on chunk ``ch`` of the axis-0 results ``p``, memoising every prefix; results
        without ``dst`` are taken from the work buffers and listed in ``scratch`` when it is given.

        In 3D the y pass of a prefix such as (0, 1) feeds both (0, 1, 0) and (0, 1, 1).
        """
        if o in cache:
            if dst is not None:
                dst[...] = cache[o]
            return cache[o]
        if len(o) == 1:
            res = p[o[0]][ch]
            if dst is not None:
                dst[...] = res
        else:
            prev = self.derivative(p, cache, ch, o[:-1], scratch=scratch)
            k = self.scale.kernel(len(o) - 1, o[-1])
            res = filter_axis(prev, k, len(o) - 1, dst if dst is not None else _scratch(prev, k, scratch))
        cache[o] = res
        return res

    def gradient(self, p: dict[int, np.ndarray], ch: slice) -> list[np.ndarray]:
        """Gradient components (filtered axes) of chunk ``ch`` of the axis-0 results ``p``."""
        cache: dict[tuple[int, ...], np.ndarray] = {}
        return [self.derivative(p, cache, ch, o) for o in self.grads]

    def phase2(self, ch: slice) -> None:
        """Structure tensor products of the gradient at sigma for chunk ``ch``.

        The gradient magnitude is taken here from the same products (sqrt of the tensor's trace before
        smoothing), so phase 4 need not compute the gradient again.
        """
        g = self.gradient(self.p, ch)
        index = {a: i for i, a in enumerate(self.scale.axes)}
        for (a, b), j in zip(self.pairs, self.j):
            np.multiply(g[index[a]], g[index[b]], out=j[ch])
        if self.ggm is not None:
            diag = [j for (a, b), j in zip(self.pairs, self.j) if a == b]
            out = self.ggm[ch]
            np.add(diag[0][ch], diag[1][ch], out=out)
            for j in diag[2:]:
                out += j[ch]
            np.sqrt(out, out=out)

    def phase3_tasks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        k = self.outer.kernel(0, 0)
        if not self.st or k is None:
            return []
        # OpenCV filters in place correctly (checked bit-exact against a separate output)
        return [(j, k, j) for j in self.j]

    def phase4(self, ch: slice, buf: np.ndarray) -> None:
        """All selected features of this (channel, scale) for chunk ``ch`` into planes of ``buf``."""
        nd = self.nd
        axes = self.scale.axes
        cache: dict[tuple[int, ...], np.ndarray] = {}
        # intermediate planes come from the work buffers: fresh ones cost a page fault per 4 KiB on every call
        # (most of the system time of a volume's plane)
        scratch: list[np.ndarray] = []

        def d(o: tuple[int, ...], dst: np.ndarray | None = None) -> np.ndarray:
            return self.derivative(self.p, cache, ch, o, dst, scratch)

        zero = (0,) * nd
        n_eig = len(axes)
        try:
            for feature, c in self.outputs:
                if feature == "gaussian_smoothing":
                    d(zero, dst=buf[c])  # the last pass writes straight into the output plane
                elif feature == "laplacian_of_gaussian":
                    np.add(d(_unit(nd, axes[0], axes[0])), d(_unit(nd, axes[1], axes[1])), out=buf[c])
                    for a in axes[2:]:
                        buf[c] += d(_unit(nd, a, a))
                elif feature == "gaussian_gradient_magnitude" and self.ggm is not None:
                    buf[c][...] = self.ggm[ch]
                elif feature == "gaussian_gradient_magnitude":
                    np.multiply(d(self.grads[0]), d(self.grads[0]), out=buf[c])
                    for o in self.grads[1:]:
                        g = d(o)
                        buf[c] += g * g
                    np.sqrt(buf[c], out=buf[c])
                elif feature == "difference_of_gaussians":
                    inner = self.rest(self.pd[ch], self.inner, zero, scratch=scratch)
                    np.subtract(d(zero), inner, out=buf[c])
                elif feature == "structure_tensor_eigenvalues":
                    comps = [self.rest(j[ch], self.outer, zero, scratch=scratch) for j in self.j]
                    _eig_into(comps, buf[c : c + n_eig])
                elif feature == "hessian_of_gaussian_eigenvalues":
                    _eig_into([d(o) for o in self.seconds], buf[c : c + n_eig])
        finally:
            for buffer in scratch:
                _ARENA.put(buffer)

    def release(self) -> None:
        for a in self._owned:
            _ARENA.put(a)
        self._owned = []
        self.p.clear()
        self.pd = None
        self.j = []
        self.ggm = None


def _scratch(like: np.ndarray, k: np.ndarray | None, scratch: list[np.ndarray] | None) -> np.ndarray | None:
    """A work buffer of ``like``'s shape listed in ``scratch`` for a filter pass with kernel ``k`` (None when the pass
    is the identity or there is no list: :func:`filter_axis` then returns or allocates its result itself)."""
    if scratch is None or k is None:
        return None
    a = _ARENA.get(like.shape)
    scratch.append(a)
    return a


def _eig_into(comps: list[np.ndarray], outs: np.ndarray) -> None:
    if len(outs) == 2:
        eigvals2(*comps, outs[0], outs[1])
    else:
        eigvals3(*comps, outs[0], outs[1], outs[2])


#: one (input channel, scale) of a filter bank call: image index, how it is filtered, (feature, out channel)
PlanItem = tuple[int, Scale, list[tuple[str, int]]]


def filter_bank(images: Sequence[np.ndarray], plan: Sequence[PlanItem], out: np.ndarray) -> None:
    """Compute features of single-channel float32 images into ``out``.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        C-contiguous float32 arrays of one shape (2 or 3 axes), one per input channel.
    plan : sequence of (int, Scale, list of (str, int))
        Per (input channel, scale): the image's index, how the scale filters each axis, and the selected
        features with their first output channel (eigenvalues take one channel per filtered axis).
    out : numpy.ndarray
        C-contiguous float32 ``(*shape, C)``; the plan must fill every channel.
    """
    shape = images[0].shape
    jobs = [ScaleJob(scale, outputs, images[i]) for i, scale, outputs in plan]
    chunks = _chunks(shape)
    n_total = out.shape[-1]
    out2 = out.reshape(-1, n_total)
    row = int(np.prod(shape[1:]))
    workspace.touch(+1)
    try:
        _axis0_passes([t for job in jobs for t in job.phase1_tasks()])
        st_jobs = [job for job in jobs if job.st]
        if st_jobs:
            _run(lambda ch: [job.phase2(ch) for job in st_jobs], chunks)
            _axis0_passes([t for job in st_jobs for t in job.phase3_tasks()])

        def phase4(ch: slice) -> None:
            buf = _ARENA.get((n_total, ch.stop - ch.start, *shape[1:]))
            for job in jobs:
                job.phase4(ch, buf)
            interleave(buf.reshape(n_total, -1), out2[ch.start * row : ch.stop * row])
            _ARENA.put(buf)

        _run(phase4, chunks)
    finally:
        for job in jobs:
            job.release()
        workspace.touch(-1)


def interleave(planar: np.ndarray, dst: np.ndarray) -> None:
    """Transpose ``(C, n)`` planes into the ``(n, C)`` rows of ``dst``.

    Transposing in blocks of 4096 pixels keeps OpenCV's reads in L1/L2 (~25% faster).
    """
    for a in range(0, planar.shape[1], 4096):
        cv2.transpose(planar[:, a : a + 4096], dst[a : a + 4096])
