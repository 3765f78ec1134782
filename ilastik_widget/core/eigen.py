"""Closed-form eigenvalues of many small symmetric matrices at once (float32, vectorised, largest first).

The filter bank's structure tensor and Hessian eigenvalues (:mod:`ilastik_widget.core.filters`): 2 x 2 in 2D, 3 x 3 in
3D, one matrix per pixel, the matrix entries given as arrays.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["PIECE", "eigvals2", "eigvals3"]


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
    """Eigenvalues of [[a, b, c], [b, d, e], [c, e, f]] into out0 >= out1 >= out2 (float32 arrays).

    Trigonometric (Smith 1961) method, lambda_k = q + 2 p cos(phi + 2 pi k / 3) with
    cos(3 phi) = r = det((A - q I) / p) / 2. Near r = +-1 two eigenvalues nearly coincide and their split
    (~ p sqrt(1 - |r|)) amplifies float32 rounding of r to ~1e-3 of p; there r and sqrt(1 - r^2) are
    recomputed in float64 and the angle taken with arctan2, which keeps float32 relative precision.
    Everywhere else float32 is accurate to ~1e-6 of the largest eigenvalue (and 5x faster than float64).
    Computed in pieces of :data:`PIECE` elements with every temporary in buffers of this thread, kept
    between calls (fresh temporaries made this 2.5x slower).
    """
    ins = [x.reshape(-1) for x in (a, b, c, d, e, f)]
    outs = [x.reshape(-1) for x in (out0, out1, out2)]
    n = ins[0].size
    work = _eig_work()
    for i in range(0, n, PIECE):
        sl = slice(i, min(n, i + PIECE))
        _eigvals3(work, *(x[sl] for x in ins), *(o[sl] for o in outs))


_EIG_WORK = threading.local()


def _eig_work() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This thread's scratch of the eigenvalue pieces: 12 float32 rows, 11 float64 rows, a boolean row."""
    work = getattr(_EIG_WORK, "buffers", None)
    if work is None:
        work = (np.empty((12, PIECE), np.float32), np.empty((11, PIECE), np.float64), np.empty(PIECE, bool))
        _EIG_WORK.buffers = work
    return work


def _eigvals3(
    work: tuple[np.ndarray, np.ndarray, np.ndarray],
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
    """One piece of :func:`eigvals3`, every temporary in ``work``."""
    f32 = np.float32
    m = a.size
    q, a_, d_, f_, p, inv, bn, cn, en, r, t, phi = (x[:m] for x in work[0])
    np.add(a, d, out=q)
    q += f
    q *= f32(1.0 / 3.0)
    np.subtract(a, q, out=a_)
    np.subtract(d, q, out=d_)
    np.subtract(f, q, out=f_)
    np.multiply(b, b, out=p)
    np.multiply(c, c, out=t)
    p += t
    np.multiply(e, e, out=t)
    p += t
    p *= f32(2.0)
    for x in (a_, d_, f_):
        np.multiply(x, x, out=t)
        p += t
    p *= f32(1.0 / 6.0)
    np.sqrt(p, out=p)
    # B = (A - q I) / p, normalised before the determinant so that p^3 cannot underflow; where p == 0
    # (all eigenvalues equal q) the floor makes B = 0 and r = 0
    np.maximum(p, f32(1e-30), out=inv)
    np.reciprocal(inv, out=inv)
    a_ *= inv
    d_ *= inv
    f_ *= inv
    np.multiply(b, inv, out=bn)
    np.multiply(c, inv, out=cn)
    np.multiply(e, inv, out=en)
    _half_det(a_, bn, cn, d_, en, f_, r, t, phi)  # phi holds the second temporary
    np.minimum(r, f32(1.0), out=r)
    np.maximum(r, f32(-1.0), out=r)
    np.arccos(r, out=phi)
    np.multiply(r, r, out=t)
    ill_mask = work[2][:m]
    np.greater(t, f32(0.96), out=ill_mask)
    ill = np.flatnonzero(ill_mask)
    if ill.size:
        phi[ill] = _angle64(work[1], ill, a, b, c, d, e, f)
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


def _half_det(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    e: np.ndarray,
    f: np.ndarray,
    r: np.ndarray,
    t: np.ndarray,
    u: np.ndarray,
) -> None:
    """``r`` = det([[a, b, c], [b, d, e], [c, e, f]]) / 2 elementwise, in the arrays' own dtype, in this order:
    (a (d f - e e) - b (b f - e c) + c (b e - d c)) / 2; ``t`` and ``u`` are temporaries."""
    np.multiply(d, f, out=r)
    np.multiply(e, e, out=t)
    r -= t
    r *= a
    np.multiply(b, f, out=t)
    np.multiply(e, c, out=u)
    t -= u
    t *= b
    r -= t
    np.multiply(b, e, out=t)
    np.multiply(d, c, out=u)
    t -= u
    t *= c
    r += t
    r *= r.dtype.type(0.5)


def _angle64(work: np.ndarray, ill: np.ndarray, *entries: np.ndarray) -> np.ndarray:
    """3 phi = arccos(r) at the elements ``ill`` from float64 invariants, via arctan2(sqrt(1 - r^2), r) for
    relative precision; ``work`` holds the float64 temporaries."""
    m = ill.size
    a, b, c, d, e, f, q, p2, t, u, r = (x[:m] for x in work)
    for src, dst in zip(entries, (a, b, c, d, e, f)):
        dst[...] = src[ill]
    np.add(a, d, out=q)
    q += f
    q *= 1.0 / 3.0
    a -= q
    d -= q
    f -= q
    # p2 = (a a + d d + f f + 2 (b b + c c + e e)) / 6, summed in that order
    np.multiply(a, a, out=p2)
    np.multiply(d, d, out=t)
    p2 += t
    np.multiply(f, f, out=t)
    p2 += t
    np.multiply(b, b, out=t)
    np.multiply(c, c, out=u)
    t += u
    np.multiply(e, e, out=u)
    t += u
    t *= 2.0
    p2 += t
    p2 *= 1.0 / 6.0
    np.sqrt(p2, out=p2)
    np.maximum(p2, 1e-300, out=p2)
    np.divide(1.0, p2, out=p2)
    for x in (a, b, c, d, e, f):
        x *= p2
    _half_det(a, b, c, d, e, f, r, t, u)
    np.clip(r, -1.0, 1.0, out=r)
    np.subtract(1.0, r, out=t)
    np.add(1.0, r, out=u)
    t *= u
    np.sqrt(t, out=t)
    return np.arctan2(t.astype(np.float32), r.astype(np.float32))
