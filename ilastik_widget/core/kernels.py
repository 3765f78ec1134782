"""Compiled per-pixel loops (numba) for the two steps of the filter bank that numpy does in too many passes.

Elementwise numpy runs one operation over a whole piece of memory at a time, so a formula of 40 operations reads
and writes its piece 40 times. Two steps are dominated by that and are compiled here, each a loop that keeps
its temporaries in registers:

* :func:`eig3_invariants` and :func:`eig3_combine`: the algebra of the closed-form eigenvalues of symmetric
  3 x 3 matrices (:func:`ilastik_widget.core.eigen.eigvals3`), in float64 throughout; the trigonometry between
  them stays with numpy, whose float32 ``arctan2`` and ``cos`` are vectorised (the compiled scalar ones are not).
* :func:`tensor_sums`: the structure tensor's weighted sums of gradient products over planes (the plane engine's
  gradient planes, just computed or cached, :mod:`ilastik_widget.core.slab`), in tiles that stay in the first-level
  cache.

Compiled at first use (about a second) and cached on disk beside this file, or in numba's cache directory when
that is not writable; importing this module imports numba (about 0.2 s), so callers get it when first needed from
:func:`ilastik_widget.core.compiled.kernels` (one thread at a time: numba cannot be imported by two at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar, cast

import numba
import numpy as np
from numba.typed import List

__all__ = ["eig3_combine", "eig3_invariants", "flat_planes", "tensor_sums", "warm_up"]

F = TypeVar("F", bound=Callable[..., None])


def _compiled(fn: F) -> F:
    """``fn`` compiled without the GIL (so the filter threads run it in parallel) and cached on disk, or compiled
    afresh in each process where numba finds no writable cache directory (a read-only installation without a
    writable home); typed as itself for the type checker."""
    try:
        return cast(F, numba.njit(nogil=True, cache=True)(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast(F, numba.njit(nogil=True)(fn))


@_compiled
def eig3_invariants(
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    d: np.ndarray,
    e: np.ndarray,
    f: np.ndarray,
    q: np.ndarray,
    p: np.ndarray,
    r: np.ndarray,
    s: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """For each [[a, b, c], [b, d, e], [c, e, f]]: q = trace / 3, p = sqrt(trace((A - q I)^2) / 6),
    r = det((A - q I) / p) / 2 (clipped to [-1, 1]) and s = sqrt(1 - r^2), so that the eigenvalues are
    q + 2 p cos(phi + 2 pi k / 3) with 3 phi = arctan2(s, r).

    Computed in float64: near r = +-1 (two nearly equal eigenvalues) their split ~ p sqrt(1 - |r|) amplifies
    the rounding of r, which float32 would make ~1e-3 of p. Normalising by p before the determinant keeps it
    from underflowing or overflowing at any scale of the entries.
    """
    for i in range(a.size):
        aa = np.float64(a[i])
        dd = np.float64(d[i])
        ff = np.float64(f[i])
        bb = np.float64(b[i])
        cc = np.float64(c[i])
        ee = np.float64(e[i])
        qq = (aa + dd + ff) / 3.0
        aa -= qq
        dd -= qq
        ff -= qq
        pp = math.sqrt((aa * aa + dd * dd + ff * ff + 2.0 * (bb * bb + cc * cc + ee * ee)) / 6.0)
        inv = 1.0 / max(pp, 1e-300)  # p == 0: all eigenvalues equal q; B = 0 and r = 0
        aa *= inv
        bb *= inv
        cc *= inv
        dd *= inv
        ee *= inv
        ff *= inv
        rr = 0.5 * (aa * (dd * ff - ee * ee) - bb * (bb * ff - ee * cc) + cc * (bb * ee - dd * cc))
        rr = min(1.0, max(-1.0, rr))
        q[i] = qq
        p[i] = pp
        r[i] = rr
        s[i] = math.sqrt((1.0 - rr) * (1.0 + rr))


@_compiled
def eig3_combine(
    q: np.ndarray,
    p: np.ndarray,
    cos0: np.ndarray,
    cos2: np.ndarray,
    out0: np.ndarray,
    out1: np.ndarray,
    out2: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Eigenvalues from :func:`eig3_invariants` and the cosines of phi and phi + 2 pi / 3: out0 >= out1 >= out2;
    the middle one from the trace, guarded against rounding out of order."""
    for i in range(q.size):
        qq = np.float64(q[i])
        pp = 2.0 * np.float64(p[i])
        hi = qq + pp * cos0[i]
        lo = qq + pp * cos2[i]
        mid = 3.0 * qq - hi - lo
        out0[i] = hi
        out1[i] = min(max(mid, lo), hi)
        out2[i] = lo


@_compiled
def tensor_sums(
    s0: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    s3: np.ndarray,
    s4: np.ndarray,
    s5: np.ndarray,
    planes: numba.typed.List,
    weights: np.ndarray,
    tile: int,
    write: bool,
) -> None:  # pragma: no cover - compiled
    """``s_k += sum_j weights[j] * g_j[a_k] * g_j[b_k]`` over 3D gradient planes ``g_j``, for the pairs
    (a_k, b_k) = (0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2); with ``write``, ``s_k = ...`` instead (the sums'
    first call: no pass to zero them before).

    The sums are flat float32 arrays; ``planes`` holds the three components of every gradient plane in order, flat
    float32 arrays. Pixels go in tiles of ``tile`` whose partial sums stay in the first-level cache while every
    plane is read once.
    """
    n = s0.size
    part = np.empty((6, tile), np.float32)
    p0, p1, p2, p3, p4, p5 = part[0], part[1], part[2], part[3], part[4], part[5]
    for t0 in range(0, n, tile):
        m = min(n, t0 + tile) - t0
        part[:, :m] = 0.0
        for j in range(weights.size):
            w = np.float32(weights[j])
            ga = planes[3 * j][t0 : t0 + m]
            gb = planes[3 * j + 1][t0 : t0 + m]
            gc = planes[3 * j + 2][t0 : t0 + m]
            for i in range(m):
                x, y, z = ga[i], gb[i], gc[i]
                wx, wy = w * x, w * y
                p0[i] += wx * x
                p1[i] += wx * y
                p2[i] += wx * z
                p3[i] += wy * y
                p4[i] += wy * z
                p5[i] += w * z * z
        if write:
            s0[t0 : t0 + m] = p0[:m]
            s1[t0 : t0 + m] = p1[:m]
            s2[t0 : t0 + m] = p2[:m]
            s3[t0 : t0 + m] = p3[:m]
            s4[t0 : t0 + m] = p4[:m]
            s5[t0 : t0 + m] = p5[:m]
        else:
            for i in range(m):
                s0[t0 + i] += p0[i]
                s1[t0 + i] += p1[i]
                s2[t0 + i] += p2[i]
                s3[t0 + i] += p3[i]
                s4[t0 + i] += p4[i]
                s5[t0 + i] += p5[i]


def flat_planes(grads: list[np.ndarray]) -> List:
    """The components of every gradient plane in ``grads`` (each ``(3, u, v)``) as flat arrays in a numba typed list,
    in the order :func:`tensor_sums` reads them."""
    return List([x.reshape(-1) for g in grads for x in g])


def warm_up() -> None:
    """Compile (or load from the disk cache) every kernel and numba's typed list, on tiny inputs: a first plane of a
    volume then does not wait for it (about 0.7 s with the cache, 2 s without)."""
    x = np.zeros(4, np.float32)
    eig3_invariants(x, x, x, x, x, x, x.copy(), x.copy(), x.copy(), x.copy())
    eig3_combine(x, x, x, x, x.copy(), x.copy(), x.copy())
    s = np.zeros((6, 4), np.float32)
    tensor_sums(
        s[0], s[1], s[2], s[3], s[4], s[5], flat_planes([np.zeros((3, 4), np.float32)]), np.ones(1, np.float32), 4, True
    )
