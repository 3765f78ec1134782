"""Synthetic microscopy-like images with a known answer, and brush strokes like a user would paint.

Used by the tests, the benchmarks and the browser tests.  The images are made so that pixel
features matter: cells and background overlap in single-pixel intensity (noise), cells carry a
granular texture and a bright rim, and the background has small bright specks that only the
larger-scale features tell apart from cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["synthetic_cells", "simulated_strokes"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="mirror")
    return n / max(float(n.std()), 1e-6)


def synthetic_cells(
    shape: Sequence[int] = (512, 512),
    seed: int = 0,
    *,
    cell_radius: float | None = None,
    fill: float = 0.3,
    noise: float = 0.12,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image or 3D volume of textured cells with their ground truth.

    Parameters
    ----------
    shape : sequence of int
        (y, x) or (z, y, x).
    seed : int
        Random seed (same seed, same image).
    cell_radius : float, optional
        Mean cell radius in pixels (default 12 in 2D, 8 in 3D).
    fill : float
        Approximate fraction of the image covered by cells.
    noise : float
        Standard deviation of the pixel noise (the cell/background contrast is about 0.2).

    Returns
    -------
    image : np.ndarray
        float32, values roughly in [0, 1].
    truth : np.ndarray
        uint8, 1 = background, 2 = cell.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if ndim not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 axes, got {shape}")
    rng = np.random.default_rng(seed)
    r_mean = float(cell_radius or (12.0 if ndim == 2 else 8.0))
    volume = float(np.prod(shape))
    cell_volume = np.pi * r_mean**2 if ndim == 2 else 4 / 3 * np.pi * r_mean**3
    n_cells = max(1, int(round(fill * volume / cell_volume)))

    cells = np.zeros(shape, bool)
    for _ in range(n_cells):
        centre = rng.uniform(0, shape)
        radii = r_mean * rng.uniform(0.6, 1.4, size=ndim)
        # A random rotation in the last two axes gives elongated cells any orientation.
        theta = rng.uniform(0, np.pi)
        ext = int(np.ceil(radii.max())) + 1
        lo = np.maximum(np.floor(centre).astype(int) - ext, 0)
        hi = np.minimum(np.floor(centre).astype(int) + ext + 1, shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) - c for a, b, c in zip(lo, hi, centre)], indexing="ij")
        u, v = grids[-2], grids[-1]
        ur = np.cos(theta) * u + np.sin(theta) * v
        vr = -np.sin(theta) * u + np.cos(theta) * v
        q = (ur / radii[-2]) ** 2 + (vr / radii[-1]) ** 2
        if ndim == 3:
            q = q + (grids[0] / radii[0]) ** 2
        cells[tuple(slice(a, b) for a, b in zip(lo, hi))] |= q <= 1.0

    inside = ndi.distance_transform_edt(cells).astype(np.float32)
    image = np.full(shape, 0.35, np.float32)
    image += 0.05 * _smooth_noise(rng, shape, 40.0 if ndim == 2 else 20.0)  # uneven illumination
    image += np.where(cells, 0.15, 0.0).astype(np.float32)
    # Bright rim (membrane) just inside the boundary, and granular texture inside the cells.
    image += 0.2 * np.exp(-0.5 * ((inside - 1.5) / 1.0) ** 2) * cells
    image += 0.08 * _smooth_noise(rng, shape, 1.2) * cells
    # Small bright background specks: as bright as cells at one pixel, but much smaller.
    n_specks = max(1, n_cells)
    specks = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, n, size=n_specks) for n in shape)
    specks[idx] = 1.0
    specks = ndi.gaussian_filter(specks, 1.0, mode="mirror")
    specks *= 0.3 / max(float(specks.max()), 1e-6)
    image += specks * ~cells
    image += noise * rng.standard_normal(shape).astype(np.float32)
    truth = np.where(cells, 2, 1).astype(np.uint8)
    return image.astype(np.float32), truth


def simulated_strokes(
    truth: np.ndarray,
    n_per_class: int = 5,
    radius: float = 2.0,
    seed: int = 0,
    *,
    length: float = 40.0,
    step: float = 4.0,
    axes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Short brush strokes inside each class region of ``truth``, as a user would paint them.

    Each stroke is a polyline (a random walk of ``step``-pixel segments, up to ``length`` pixels)
    whose brush footprint stays inside its class region, in a plane of the last two axes (at a
    random z for volumes).

    Parameters
    ----------
    truth : np.ndarray
        Integer ground truth, classes 1..K (0 is ignored).
    n_per_class : int
        Strokes per class (fewer if a class has no room for the brush).
    radius : float
        Brush radius in pixels.
    seed : int
        Random seed.
    length, step : float
        Polyline length and segment length in pixels.
    axes : pair of int, optional
        Plane of the strokes, default the last two axes.

    Returns
    -------
    list of dict
        ``{"label": int, "points": list of [coords...], "radius": float, "axes": [a, b]}``, JSON-able
        and ready for ``Session.add_stroke(**stroke)``.
    """
    truth = np.asarray(truth)
    ndim = truth.ndim
    a, b = (ndim - 2, ndim - 1) if axes is None else (int(axes[0]) % ndim, int(axes[1]) % ndim)
    rng = np.random.default_rng(seed)
    strokes: list[dict[str, Any]] = []
    n_steps = max(1, int(length // step))
    for label in range(1, int(truth.max()) + 1):
        # Distance inside the class within each plane: the brush disc must fit there.
        mask = truth == label
        sampling = [1e9 if i not in (a, b) else 1.0 for i in range(ndim)]
        depth = ndi.distance_transform_edt(mask, sampling=sampling) if ndim > 2 else ndi.distance_transform_edt(mask)
        safe = depth > radius + 1.0
        candidates = np.flatnonzero(safe)
        if len(candidates) == 0:
            continue
        for _ in range(n_per_class):
            start = np.array(np.unravel_index(rng.choice(candidates), truth.shape), dtype=np.float64)
            points = [start]
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(n_steps):
                for _attempt in range(8):
                    p = points[-1].copy()
                    p[a] += step * np.cos(angle)
                    p[b] += step * np.sin(angle)
                    mid = (p + points[-1]) / 2
                    if all(_inside(q, safe) for q in (p, mid)):
                        points.append(p)
                        angle += rng.normal(0, 0.4)  # gently curving, like a hand
                        break
                    angle = rng.uniform(0, 2 * np.pi)
                else:
                    break
            strokes.append(
                {
                    "label": label,
                    "points": [[round(float(c), 3) for c in q] for q in points],
                    "radius": float(radius),
                    "axes": [a, b],
                }
            )
    return strokes


def _inside(p: np.ndarray, safe: np.ndarray) -> bool:
    idx = np.floor(p + 0.5).astype(int)
    if np.any(idx < 0) or np.any(idx >= safe.shape):
        return False
    return bool(safe[tuple(idx)])
