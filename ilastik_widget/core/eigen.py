"""Closed-form eigenvalues of many small symmetric matrices at once (float32, largest first).

The filter bank's structure tensor and Hessian eigenvalues (:mod:`ilastik_widget.core.filters`): 2 x 2 in 2D, 3 x 3 in
3D, one matrix per pixel, the matrix entries given as arrays.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .compiled import kernels

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
    cos(3 phi) = r = det((A - q I) / p) / 2, the angle taken as arctan2(sqrt(1 - r^2), r). Near r = +-1 two
    eigenvalues nearly coincide and their split (~ p sqrt(1 - |r|)) amplifies the rounding of r (float32 would
    make it ~1e-3 of p), so the invariants are computed in float64 by a compiled loop
    (:func:`ilastik_widget.core.kernels.eig3_invariants`); the trigonometry runs in float32 with numpy's
    vectorised functions. Accurate to 1e-6 of the largest eigenvalue (tested). Computed in pieces of :data:`PIECE`
    elements with every temporary in buffers of this thread, kept between calls.
    """
    compiled = kernels()  # imported (and compiled) at first use

    ins = [np.ascontiguousarray(x).reshape(-1) for x in (a, b, c, d, e, f)]
    outs = [x.reshape(-1) for x in (out0, out1, out2)]
    n = ins[0].size
    q, p, r, t, cos0, cos2 = _eig_work()
    for i in range(0, n, PIECE):
        sl = slice(i, min(n, i + PIECE))
        m = sl.stop - sl.start
        a_, b_, c_, d_, e_, f_ = (x[sl] for x in ins)
        compiled.eig3_invariants(a_, b_, c_, d_, e_, f_, q[:m], p[:m], r[:m], t[:m])
        phi = r[:m]
        np.arctan2(t[:m], r[:m], out=phi)
        phi *= np.float32(1.0 / 3.0)
        np.cos(phi, out=cos0[:m])
        phi += np.float32(2.0 * math.pi / 3.0)
        np.cos(phi, out=cos2[:m])
        compiled.eig3_combine(q[:m], p[:m], cos0[:m], cos2[:m], outs[0][sl], outs[1][sl], outs[2][sl])


_EIG_WORK = threading.local()


def _eig_work() -> np.ndarray:
    """This thread's scratch of the eigenvalue pieces: 6 float32 rows of :data:`PIECE`."""
    work = getattr(_EIG_WORK, "buffers", None)
    if work is None:
        work = np.empty((6, PIECE), np.float32)
        _EIG_WORK.buffers = work
    return work
