"""Low-level separable filters and closed-form eigenvalues used by :mod:`ilastik_widget.core.features`.

Everything here works on C-contiguous float32 arrays of 2 or 3 spatial axes and mirrors at the borders
(scipy ``mode="mirror"`` == OpenCV ``BORDER_REFLECT_101``, repeated reflection for short axes).
OpenCV does the 1D passes because it is ~10x faster per pass than scipy.ndimage and releases the GIL.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import cv2
import numpy as np

BORDER = cv2.BORDER_REFLECT_101
_ONE = np.ones(1, dtype=np.float32)

#: kernel radius in units of sigma (DESIGN.md section 5 asks for at least 3.5)
TRUNCATE = 3.5


def kernel_radius(sigma: float) -> int:
    """Radius (taps each side of the centre) of every kernel at scale ``sigma``."""
    return max(1, int(math.ceil(TRUNCATE * sigma)))


@cache
def _kernel64(sigma: float, order: int) -> np.ndarray:
    """Sampled Gaussian (derivative) correlation kernel in float64, normalised by its moments.

    order 0: sums to 1.  order 1: exactly antisymmetric, response 1 to the ramp f(x) = x.
    order 2: exactly symmetric, sums to 0 (no response to a constant), response 1 to f(x) = x**2 / 2.
    Normalising the moments keeps small scales (0.7, 1.0) true to the derivative they stand for.
    """
    r = kernel_radius(sigma)
    k = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k / sigma) ** 2)
    g /= g.sum()
    if order == 0:
        return g
    if order == 1:
        w = k * g
        w /= np.sum(k * w)  # correlation: sum_k f(x+k) w_k == f'(x) for a ramp
        w[r] = 0.0
        w[:r] = -w[:r:-1]  # bit-exact antisymmetry (also lets OpenCV use its antisymmetric path)
        return w
    if order == 2:
        w = (k * k / sigma**2 - 1.0) * g
        w -= w.sum() * g  # exact zero response to a constant (the Gaussian sums to one)
        w /= 0.5 * np.sum(k * k * w)
        w[:r] = w[:r:-1]
        return w
    raise ValueError(f"derivative order must be 0, 1 or 2, got {order}")


@cache
def kernel(sigma: float, order: int) -> np.ndarray:
    """float32 version of :func:`_kernel64` (what OpenCV is given)."""
    k = _kernel64(sigma, order).astype(np.float32)
    k.setflags(write=False)
    return k


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


def filter_axis(src: np.ndarray, k: np.ndarray, axis: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Correlate a C-contiguous float32 array (2 or 3 axes) with the 1D kernel ``k`` along ``axis``."""
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
# closed-form eigenvalues of symmetric matrices, float32, vectorised, largest first


def eigvals2(a: np.ndarray, b: np.ndarray, c: np.ndarray, out0: np.ndarray, out1: np.ndarray) -> None:
    """Eigenvalues of [[a, b], [b, c]] into out0 >= out1."""
    mean = (a + c) * np.float32(0.5)
    d = (a - c) * np.float32(0.5)
    np.multiply(d, d, out=d)
    d += b * b
    np.sqrt(d, out=d)
    np.add(mean, d, out=out0)
    np.subtract(mean, d, out=out1)


#: elements per piece for the per-pixel algebra: temporaries stay in L2 and below glibc's mmap threshold
PIECE = 1 << 15


def eigvals3(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    e: np.ndarray,
    f: np.ndarray,
    out0: np.ndarray,
    out1: np.ndarray,
    out2: np.ndarray,
) -> None:
    """Eigenvalues of [[a, b, c], [b, d, e], [c, e, f]] into out0 >= out1 >= out2 (float32 arrays)."""
    ins = [x.reshape(-1) for x in (a, b, c, d, e, f)]
    outs = [x.reshape(-1) for x in (out0, out1, out2)]
    n = ins[0].size
    for i in range(0, n, PIECE):
        sl = slice(i, min(n, i + PIECE))
        _eigvals3(*(x[sl] for x in ins), *(o[sl] for o in outs))


def _eigvals3(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    e: np.ndarray,
    f: np.ndarray,
    out0: np.ndarray,
    out1: np.ndarray,
    out2: np.ndarray,
) -> None:
    """Eigenvalues of [[a, b, c], [b, d, e], [c, e, f]] into out0 >= out1 >= out2 (float32 arrays).

    Trigonometric (Smith 1961) method, lambda_k = q + 2 p cos(phi + 2 pi k / 3) with
    cos(3 phi) = r = det((A - q I) / p) / 2. Near r = +-1 two eigenvalues nearly coincide and their split
    (~ p sqrt(1 - |r|)) amplifies float32 rounding of r to ~1e-3 of p; there r and sqrt(1 - r^2) are
    recomputed in float64 and the angle taken with arctan2, which keeps float32 relative precision.
    Everywhere else float32 is accurate to ~1e-6 of the largest eigenvalue (and 5x faster than float64).
    """
    f32 = np.float32
    q = a + d
    q += f
    q *= f32(1.0 / 3.0)
    a_, d_, f_ = a - q, d - q, f - q
    p2 = b * b
    p2 += c * c
    p2 += e * e
    p2 *= f32(2.0)
    p2 += a_ * a_
    p2 += d_ * d_
    p2 += f_ * f_
    p2 *= f32(1.0 / 6.0)
    p = np.sqrt(p2)
    # B = (A - q I) / p, normalised before the determinant so that p^3 cannot underflow; where p == 0
    # (all eigenvalues equal q) the floor makes B = 0 and r = 0
    inv = np.maximum(p, f32(1e-30))
    np.reciprocal(inv, out=inv)
    a_ *= inv
    d_ *= inv
    f_ *= inv
    bn, cn, en = b * inv, c * inv, e * inv
    r = d_ * f_
    r -= en * en
    r *= a_
    t = bn * f_
    t -= en * cn
    t *= bn
    r -= t
    np.multiply(bn, en, out=t)
    t -= d_ * cn
    t *= cn
    r += t
    r *= f32(0.5)
    np.minimum(r, f32(1.0), out=r)
    np.maximum(r, f32(-1.0), out=r)
    phi = np.arccos(r)
    ill = np.flatnonzero(r * r > f32(0.96))
    if ill.size:
        phi.reshape(-1)[ill] = _angle64(*(x.reshape(-1)[ill] for x in (a, b, c, d, e, f)))
    phi *= f32(1.0 / 3.0)
    p *= f32(2.0)
    np.cos(phi, out=out0)
    out0 *= p
    out0 += q
    phi += f32(2.0 * math.pi / 3.0)
    np.cos(phi, out=out2)
    out2 *= p
    out2 += q
    # the middle one from the trace; min/max guard the order against rounding
    np.multiply(q, f32(3.0), out=out1)
    out1 -= out0
    out1 -= out2
    np.minimum(out1, out0, out=out1)
    np.maximum(out1, out2, out=out1)


def _angle64(a, b, c, d, e, f) -> np.ndarray:
    """3 phi = arccos(r) from float64 invariants, via arctan2(sqrt(1 - r^2), r) for relative precision."""
    a, b, c, d, e, f = (x.astype(np.float64) for x in (a, b, c, d, e, f))
    q = (a + d + f) * (1.0 / 3.0)
    a -= q
    d -= q
    f -= q
    p2 = (a * a + d * d + f * f + 2.0 * (b * b + c * c + e * e)) * (1.0 / 6.0)
    inv = 1.0 / np.maximum(np.sqrt(p2), 1e-300)
    a, b, c, d, e, f = (x * inv for x in (a, b, c, d, e, f))
    r = 0.5 * (a * (d * f - e * e) - b * (b * f - e * c) + c * (b * e - d * c))
    np.clip(r, -1.0, 1.0, out=r)
    s = np.sqrt((1.0 - r) * (1.0 + r))
    return np.arctan2(s.astype(np.float32), r.astype(np.float32))


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


class _Arena:
    """Free-list of whole-array work buffers, kept between calls.

    Fresh multi-megabyte arrays come from mmap and cost a page fault per page on first touch (and glibc
    returns them on free); a filter bank call needs dozens of them, so reusing them saves ~10-20% of a
    call. At most ``max_bytes`` are kept (env ``ILASTIK_WIDGET_FEATURE_WORKSPACE_MB``; default
    min(2 GiB, RAM / 8)); they are dropped after :data:`IDLE_TRIM_SECONDS` without a call, or by
    :func:`clear_workspace`.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            stack = self._free.get(shape)
            if stack:
                a = stack.pop()
                self._bytes -= a.nbytes
                return a
        return np.empty(shape, dtype=np.float32)

    def put(self, a: np.ndarray | None) -> None:
        if a is None or a.base is not None or not a.flags.c_contiguous or a.dtype != np.float32:
            return
        with self._lock:
            if self._bytes + a.nbytes <= self.max_bytes:
                self._free.setdefault(a.shape, []).append(a)
                self._bytes += a.nbytes

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _budget(env: str, cap: int, fraction: int) -> int:
    """Bytes from env var ``env`` (in MB) or ``min(cap, physical memory / fraction)``."""
    if os.environ.get(env):
        return int(float(os.environ[env]) * (1 << 20))
    return min(cap, _physical_memory() // fraction)


_ARENA = _Arena(_budget("ILASTIK_WIDGET_FEATURE_WORKSPACE_MB", 2 << 30, 8))


class _OutputRecycler:
    """Hands out result arrays as views of kept buffers, and reuses a buffer once no view of it is alive.

    A result of 49 channels is 200 MB per megapixel; faulting in that much fresh memory on every call
    costs as much as a third of the filtering on this kind of machine. Whether the caller still holds
    a result is read from the buffer's reference count (every numpy view references its base), so a
    live result is never reused. At most ``max_bytes`` of buffers are kept (env
    ``ILASTIK_WIDGET_FEATURE_RESULTS_MB``; default min(2 GiB, RAM / 8)), dropped like the work buffers.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._owners: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        if n * 4 > self.max_bytes or n == 0:
            return np.empty(shape, dtype=np.float32)
        with self._lock:
            best = None
            for owner in self._owners:
                # free = referenced only by the list, the loop variable and getrefcount's argument
                free = sys.getrefcount(owner) <= 3
                if free and n <= owner.size <= 2 * n and (best is None or owner.size < best.size):
                    best = owner
            owner = None  # drop the loop's reference before anything else counts references
            if best is None:
                # make room: drop free buffers until the new one fits
                total = sum(o.nbytes for o in self._owners)
                i = 0
                while i < len(self._owners) and total + n * 4 > self.max_bytes:
                    if sys.getrefcount(self._owners[i]) <= 2:  # the list and the argument
                        total -= self._owners.pop(i).nbytes
                    else:
                        i += 1
                if total + n * 4 > self.max_bytes:
                    return np.empty(shape, dtype=np.float32)
                best = np.empty(n, dtype=np.float32)
                self._owners.append(best)
            return best[:n].reshape(shape)

    def clear(self) -> None:
        with self._lock:
            self._owners.clear()


_RESULTS = _OutputRecycler(_budget("ILASTIK_WIDGET_FEATURE_RESULTS_MB", 2 << 30, 8))


def new_output(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 result array, recycled from results nobody references any more."""
    return _RESULTS.empty(shape)


def clear_workspace() -> None:
    """Drop the work and result buffers kept between calls."""
    _ARENA.clear()
    _RESULTS.clear()


#: buffers kept for reuse are dropped after this many seconds without a filter bank call
IDLE_TRIM_SECONDS = 20.0
_last_use = 0.0
_active = 0  # calls in progress: never trim under a running call
_trim_timer: threading.Timer | None = None
_trim_lock = threading.Lock()


def _touch_workspace(delta: int) -> None:
    """Note a call starting (+1) or ending (-1); keep an idle trim scheduled (daemon timer)."""
    global _last_use, _trim_timer, _active
    with _trim_lock:
        _active += delta
        _last_use = time.monotonic()
        if _trim_timer is None:
            _trim_timer = threading.Timer(IDLE_TRIM_SECONDS, _trim_if_idle)
            _trim_timer.daemon = True
            _trim_timer.start()


def _trim_if_idle() -> None:
    global _trim_timer
    with _trim_lock:
        idle = time.monotonic() - _last_use
        if _active:
            idle = 0.0
        if idle >= IDLE_TRIM_SECONDS:
            _trim_timer = None
            clear_workspace()
            return
        _trim_timer = threading.Timer(IDLE_TRIM_SECONDS - idle + 0.1, _trim_if_idle)
        _trim_timer.daemon = True
        _trim_timer.start()


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


class _ScaleJob:
    """What one (input channel, scale) needs: derivative orders, DoG, structure tensor, output slots."""

    def __init__(self, image: np.ndarray, sigma: float, outputs: list[tuple[str, int]]) -> None:
        nd = image.ndim
        self.image, self.sigma, self.nd, self.outputs = image, sigma, nd, outputs
        want = {f for f, _ in outputs}
        self.want = want
        zero = (0,) * nd
        orders: set[tuple[int, ...]] = set()
        if want & {"gaussian_smoothing", "difference_of_gaussians"}:
            orders.add(zero)
        self.grads = [_unit(nd, a) for a in range(nd)]
        if "gaussian_gradient_magnitude" in want and "structure_tensor_eigenvalues" not in want:
            orders.update(self.grads)
        self.seconds = [_unit(nd, a, b) for a in range(nd) for b in range(a, nd)]
        if "hessian_of_gaussian_eigenvalues" in want:
            orders.update(self.seconds)
        if "laplacian_of_gaussian" in want:
            orders.update(_unit(nd, a, a) for a in range(nd))
        self.orders = orders
        self.dog = "difference_of_gaussians" in want
        self.st = "structure_tensor_eigenvalues" in want
        # phase-1 results: axis-0 pass of the image per axis-0 derivative order
        self.axis0_orders = {o[0] for o in orders} | ({0, 1} if self.st else set())
        self.p: dict[int, np.ndarray] = {}
        self.pd: np.ndarray | None = None
        self.j: list[np.ndarray] = []  # tensor products, then their axis-0 smoothed versions
        self.ggm: np.ndarray | None = None  # gradient magnitude, from phase 2 when the tensor is computed

    def phase1_tasks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        tasks = []
        shape = self.image.shape
        for o0 in sorted(self.axis0_orders):
            self.p[o0] = _ARENA.get(shape)
            tasks.append((self.image, kernel(self.sigma, o0), self.p[o0]))
        if self.dog:
            self.pd = _ARENA.get(shape)
            tasks.append((self.image, kernel(DOG_RATIO * self.sigma, 0), self.pd))
        if self.st:
            self.j = [_ARENA.get(shape) for _ in self.seconds]
            if "gaussian_gradient_magnitude" in self.want:
                self.ggm = _ARENA.get(shape)
        return tasks

    def rest(self, src: np.ndarray, sigma: float, orders: tuple[int, ...], dst: np.ndarray | None = None) -> np.ndarray:
        """Passes along axes 1.. of a chunk ``src`` (already filtered along axis 0)."""
        out = src
        last = len(orders) - 1
        for axis in range(1, len(orders)):
            out = filter_axis(out, kernel(sigma, orders[axis]), axis, dst if axis == last else None)
        return out

    def _derivative(self, cache: dict, ch: slice, o: tuple[int, ...], dst: np.ndarray | None = None) -> np.ndarray:
        """Gaussian derivative ``o`` at sigma on chunk ``ch``, memoising every prefix of passes.

        In 3D the y pass of a prefix such as (0, 1) feeds both (0, 1, 0) and (0, 1, 1).
        """
        if o in cache:
            if dst is not None:
                dst[...] = cache[o]
            return cache[o]
        if len(o) == 1:
            res = self.p[o[0]][ch]
        else:
            prev = self._derivative(cache, ch, o[:-1])
            res = filter_axis(prev, kernel(self.sigma, o[-1]), len(o) - 1, dst)
        cache[o] = res
        return res

    def phase2(self, ch: slice) -> None:
        """Structure tensor products of the gradient at sigma for chunk ``ch``.

        The gradient magnitude is taken here from the same products (sqrt of the tensor's trace before
        smoothing), so phase 4 need not compute the gradient again.
        """
        cache: dict[tuple[int, ...], np.ndarray] = {}
        g = [self._derivative(cache, ch, o) for o in self.grads]
        for (a, b), j in zip(_pairs(self.nd), self.j):
            np.multiply(g[a], g[b], out=j[ch])
        if self.ggm is not None:
            diag = [j for (a, b), j in zip(_pairs(self.nd), self.j) if a == b]
            out = self.ggm[ch]
            np.add(diag[0][ch], diag[1][ch], out=out)
            for j in diag[2:]:
                out += j[ch]
            np.sqrt(out, out=out)

    def phase3_tasks(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if not self.st:
            return []
        k = kernel(self.sigma / 2, 0)
        # OpenCV filters in place correctly (checked bit-exact against a separate output)
        return [(j, k, j) for j in self.j]

    def phase4(self, ch: slice, buf: np.ndarray) -> None:
        """All selected features of this (channel, scale) for chunk ``ch`` into planes of ``buf``."""
        nd, s = self.nd, self.sigma
        cache: dict[tuple[int, ...], np.ndarray] = {}

        def d(o: tuple[int, ...], dst: np.ndarray | None = None) -> np.ndarray:
            return self._derivative(cache, ch, o, dst)

        zero = (0,) * nd
        for feature, c in self.outputs:
            if feature == "gaussian_smoothing":
                d(zero, dst=buf[c])  # the last pass writes straight into the output plane
            elif feature == "laplacian_of_gaussian":
                np.add(d(_unit(nd, 0, 0)), d(_unit(nd, 1, 1)), out=buf[c])
                if nd == 3:
                    buf[c] += d(_unit(nd, 2, 2))
            elif feature == "gaussian_gradient_magnitude" and self.ggm is not None:
                buf[c][...] = self.ggm[ch]
            elif feature == "gaussian_gradient_magnitude":
                np.multiply(d(self.grads[0]), d(self.grads[0]), out=buf[c])
                for o in self.grads[1:]:
                    g = d(o)
                    buf[c] += g * g
                np.sqrt(buf[c], out=buf[c])
            elif feature == "difference_of_gaussians":
                inner = self.rest(self.pd[ch], DOG_RATIO * s, zero)
                np.subtract(d(zero), inner, out=buf[c])
            elif feature == "structure_tensor_eigenvalues":
                comps = [self.rest(j[ch], s / 2, zero) for j in self.j]
                _eig_into(comps, buf[c : c + nd])
            elif feature == "hessian_of_gaussian_eigenvalues":
                _eig_into([d(o) for o in self.seconds], buf[c : c + nd])

    def release(self) -> None:
        for a in [*self.p.values(), self.pd, *self.j, self.ggm]:
            _ARENA.put(a)
        self.p.clear()
        self.pd = None
        self.j = []
        self.ggm = None


def _pairs(nd: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(nd) for b in range(a, nd)]


def _eig_into(comps: list[np.ndarray], outs: np.ndarray) -> None:
    if len(outs) == 2:
        eigvals2(*comps, outs[0], outs[1])
    else:
        eigvals3(*comps, outs[0], outs[1], outs[2])


#: inner scale of the difference of Gaussians, as a fraction of the outer one
DOG_RATIO = 0.66


def filter_bank(
    images: Sequence[np.ndarray],
    cells: Sequence[tuple[str, float]],
    n_outputs: Callable[[str], int],
    out: np.ndarray,
) -> None:
    """Compute features of single-channel float32 images into ``out``.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        C-contiguous float32 arrays of one shape (2 or 3 axes), one per input channel.
    cells : sequence of (feature, scale)
        Selected cells in output order.
    n_outputs : callable
        Channels per feature.
    out : numpy.ndarray
        C-contiguous float32 ``(*shape, len(images) * channels per image)``, filled completely.
    """
    shape = images[0].shape
    per_image = sum(n_outputs(f) for f, _ in cells)
    jobs: list[_ScaleJob] = []
    for i, img in enumerate(images):
        by_scale: dict[float, list[tuple[str, int]]] = {}
        c = i * per_image
        for f, s in cells:
            by_scale.setdefault(s, []).append((f, c))
            c += n_outputs(f)
        jobs.extend(_ScaleJob(img, s, outs) for s, outs in sorted(by_scale.items()))
    chunks = _chunks(shape)
    n_total = out.shape[-1]
    out2 = out.reshape(-1, n_total)
    row = int(np.prod(shape[1:]))
    _touch_workspace(+1)
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
            planar = buf.reshape(n_total, -1)
            dst = out2[ch.start * row : ch.stop * row]
            # transposing in blocks of 4096 pixels keeps OpenCV's reads in L1/L2 (~25% faster)
            for a in range(0, planar.shape[1], 4096):
                cv2.transpose(planar[:, a : a + 4096], dst[a : a + 4096])
            _ARENA.put(buf)

        _run(phase4, chunks)
    finally:
        for job in jobs:
            job.release()
        _touch_workspace(-1)
