"""Low-level separable filters and closed-form eigenvalues used by :mod:`ilastik_widget.features`.

Everything here works on C-contiguous float32 arrays of 2 or 3 spatial axes and mirrors at the borders
(scipy ``mode="mirror"`` == OpenCV ``BORDER_REFLECT_101``, repeated reflection for short axes).
OpenCV does the 1D passes because it is ~10x faster per pass than scipy.ndimage and releases the GIL.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

BORDER = cv2.BORDER_REFLECT_101
_ONE = np.ones(1, dtype=np.float32)

#: kernel radius in units of sigma (DESIGN.md section 5 asks for at least 3.5)
TRUNCATE = 3.5


def kernel_radius(sigma: float) -> int:
    """Radius (taps each side of the centre) of every kernel at scale ``sigma``."""
    return max(1, int(math.ceil(TRUNCATE * sigma)))


@lru_cache(maxsize=None)
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
        w[:r] = -w[: r : -1]  # bit-exact antisymmetry (also lets OpenCV use its antisymmetric path)
        return w
    if order == 2:
        w = (k * k / sigma**2 - 1.0) * g
        w -= w.sum() * g  # exact zero response to a constant (the Gaussian sums to one)
        w /= 0.5 * np.sum(k * k * w)
        w[:r] = w[: r : -1]
        return w
    raise ValueError(f"derivative order must be 0, 1 or 2, got {order}")


@lru_cache(maxsize=None)
def kernel(sigma: float, order: int) -> np.ndarray:
    """float32 version of :func:`_kernel64` (what OpenCV is given)."""
    k = _kernel64(sigma, order).astype(np.float32)
    k.setflags(write=False)
    return k


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
        # first axis: one column pass over the (n0, rest) view (z of a volume is a 1D filter on (Z, Y*X))
        s2 = src.reshape(src.shape[0], -1)
        d2 = dst.reshape(s2.shape)
        cv2.sepFilter2D(s2, -1, _ONE, k, dst=d2, borderType=BORDER)
    else:  # axis 1 of a volume: one column pass per z slice
        for z in range(src.shape[0]):
            cv2.sepFilter2D(src[z], -1, _ONE, k, dst=dst[z], borderType=BORDER)
    return dst


def separable(src: np.ndarray, kernels: tuple[np.ndarray | None, ...]) -> np.ndarray:
    """Apply one 1D kernel per axis (``None`` = identity) and return a new array."""
    out = src
    for axis, k in enumerate(kernels):
        if k is not None:
            out = filter_axis(out, k, axis)
    if out is src:
        out = src.copy()
    return out


def derivatives(src: np.ndarray, sigma: float, orders: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
    """Gaussian derivatives of ``src`` at ``sigma`` for each multi-index in ``orders``.

    Passes shared between multi-indices (same orders on the leading axes) are computed once,
    e.g. in 2D the three y passes feed all six of smoothing, gradient and Hessian.
    """
    cache: dict[tuple[int, ...], np.ndarray] = {(): src}

    def get(prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in cache:
            prev = get(prefix[:-1])
            cache[prefix] = filter_axis(prev, kernel(sigma, prefix[-1]), len(prefix) - 1)
        return cache[prefix]

    return {o: get(tuple(o)) for o in orders}


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


def eigvals3(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray, f: np.ndarray,
    out0: np.ndarray, out1: np.ndarray, out2: np.ndarray, chunk: int = 1 << 15,
) -> None:
    """Eigenvalues of [[a, b, c], [b, d, e], [c, e, f]] into out0 >= out1 >= out2 (float32 arrays).

    Trigonometric (Smith 1961) method, lambda = q + 2 p cos(phi + 2 pi k / 3), evaluated in float64
    on cache-sized chunks: in float32 the arccos near nearly-equal eigenvalues amplifies rounding
    to ~1e-3 of the spread, which broke block-wise == whole-image.
    """
    ins = [x.reshape(-1) for x in (a, b, c, d, e, f)]
    outs = [x.reshape(-1) for x in (out0, out1, out2)]
    n = ins[0].size
    for i in range(0, n, chunk):
        sl = slice(i, min(n, i + chunk))
        _eig3_chunk(*(x[sl].astype(np.float64) for x in ins), *(o[sl] for o in outs))


def _eig3_chunk(a, b, c, d, e, f, out0, out1, out2) -> None:
    q = (a + d + f) * (1.0 / 3.0)
    a -= q
    d -= q
    f -= q
    off = b * b + c * c + e * e
    p2 = (a * a + d * d + f * f + 2.0 * off) * (1.0 / 6.0)
    p = np.sqrt(p2)
    # det(A - qI) / (2 p^3), clipped to [-1, 1] against rounding
    det = a * (d * f - e * e) - b * (b * f - e * c) + c * (b * e - d * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = det / (2.0 * p2 * p)
    r[~(p2 > 0)] = 0.0  # p == 0: all three eigenvalues equal q
    np.clip(r, -1.0, 1.0, out=r)
    phi = np.arccos(r) * (1.0 / 3.0)
    p *= 2.0
    l0 = q + p * np.cos(phi)
    l2 = q + p * np.cos(phi + 2.0 * math.pi / 3.0)
    # the middle one from the trace; min/max guard the order against rounding
    l1 = 3.0 * q - l0 - l2
    np.minimum(l1, l0, out=l1)
    np.maximum(l1, l2, out=l1)
    out0[...] = l0
    out1[...] = l1
    out2[...] = l2
