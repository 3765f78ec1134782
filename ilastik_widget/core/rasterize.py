"""Rasterisation of brush strokes into flat voxel indices, at a cost that follows the painted area.

A stroke is a polyline with a brush radius in one plane of the image. A voxel is painted when its centre lies within
the radius of the polyline. The painted set of one segment is a capsule (a rectangle with two half discs), which is
convex: every row of the plane meets it in one interval, whose ends follow in closed form from the segment's end
points. The rasteriser therefore computes, for every segment, one interval per row it spans, merges the intervals of
each row, and writes out the merged runs. The work is the number of rows the segments span (points x brush diameter)
plus the painted area; no per-segment box of pixels is ever built, so 1,500 points at radius 61 cost the same
memory as the voxels they paint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["rasterize_stroke", "round_half_up", "label_runs", "expand_runs"]

# Relative and absolute slack on the squared radius, so that pixels exactly at the radius count despite float
# rounding (the same rule for every segment and every row).
_RADIUS_SLACK = (1e-9, 1e-12)
# Rows (segment x row intervals) computed at once.
_CHUNK_ROWS = 16384


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Index of the pixel a coordinate falls in: ``floor(x + 0.5)`` as int64.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5)``; ``np.rint`` would send 0.5 to 0 and 1.5 to 2.
    """
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def _row_intervals(p0: np.ndarray, p1: np.ndarray, radius: float, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Interval ``[lo, hi]`` of column coordinates within ``radius`` of segment ``p0``-``p1`` on each row.

    ``p0``, ``p1`` are (R, 2) arrays (one segment per row entry, in (row, column) coordinates), ``rows`` (R,) the row
    coordinate. Rows that miss the capsule get ``lo > hi``. The capsule is the union of the two end discs and the
    band of points whose projection falls on the segment; each piece meets a row in one interval and, the capsule
    being convex, their union is one interval: the smallest start and the largest end of the non-empty pieces.
    """
    r2 = radius * radius * (1 + _RADIUS_SLACK[0]) + _RADIUS_SLACK[1]
    lo = np.full(rows.shape, np.inf)
    hi = np.full(rows.shape, -np.inf)
    for c in (p0, p1):
        du = rows - c[:, 0]
        h2 = r2 - du * du
        inside = h2 >= 0
        h = np.sqrt(np.where(inside, h2, 0.0))
        lo = np.where(inside, np.minimum(lo, c[:, 1] - h), lo)
        hi = np.where(inside, np.maximum(hi, c[:, 1] + h), hi)
    # The band: 0 <= t <= 1 (t the projection parameter) and |cross| <= r |d|, both linear in the column v:
    #   t * dd = (u - p0u) du + (v - p0v) dv          cross = (u - p0u) dv - (v - p0v) du
    d = p1 - p0
    dd = d[:, 0] ** 2 + d[:, 1] ** 2
    moving = dd > 0
    du_row = rows - p0[:, 0]
    b_lo = np.full(rows.shape, -np.inf)
    b_hi = np.full(rows.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0 <= du_row * d_u + (v - p0v) * d_v <= dd
        a = du_row * d[:, 0]
        dv = d[:, 1]
        nz = dv != 0
        t0 = p0[:, 1] + (0 - a) / dv
        t1 = p0[:, 1] + (dd - a) / dv
        b_lo = np.where(nz, np.maximum(b_lo, np.minimum(t0, t1)), b_lo)
        b_hi = np.where(nz, np.minimum(b_hi, np.maximum(t0, t1)), b_hi)
        # dv == 0: the constraint does not depend on v; it holds on the whole row or nowhere.
        off = ~nz & ((a < 0) | (a > dd))
        b_lo = np.where(off, np.inf, b_lo)
        # -r|d| <= du_row * d_v - (v - p0v) * d_u <= r|d|
        rd = np.sqrt(r2 * dd)
        c0 = du_row * d[:, 1]
        du_ = d[:, 0]
        nzu = du_ != 0
        s0 = p0[:, 1] + (c0 - rd) / du_
        s1 = p0[:, 1] + (c0 + rd) / du_
        b_lo = np.where(nzu, np.maximum(b_lo, np.minimum(s0, s1)), b_lo)
        b_hi = np.where(nzu, np.minimum(b_hi, np.maximum(s0, s1)), b_hi)
        off = ~nzu & (np.abs(c0) > rd)
        b_lo = np.where(off, np.inf, b_lo)
    band = moving & (b_lo <= b_hi)
    lo = np.where(band, np.minimum(lo, b_lo), lo)
    hi = np.where(band, np.maximum(hi, b_hi), hi)
    return lo, hi


def _merge_runs(key: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int):
    """Union of integer intervals ``[lo, hi]`` per key: returns (key, start, stop_exclusive) of disjoint runs."""
    # Shift every key's columns into its own range, separated by a gap, so that one sort and one running
    # maximum merge the intervals of all keys at once.
    span = np.int64(width + 2)
    glo = key * span + lo
    ghi = key * span + hi
    order = np.argsort(glo, kind="stable")
    glo, ghi = glo[order], ghi[order]
    reach = np.maximum.accumulate(ghi)
    # A run starts where an interval begins beyond the reach of all earlier ones (adjacent pixels join).
    starts = np.ones(len(glo), bool)
    starts[1:] = glo[1:] > reach[:-1] + 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:] - 1, len(glo) - 1]
    run_lo = glo[first]
    run_hi = reach[last]
    run_key = run_lo // span
    return run_key, run_lo - run_key * span, run_hi - run_key * span + 1


def rasterize_stroke(points: np.ndarray, radius: float, axes: tuple[int, int], shape: Sequence[int]) -> np.ndarray:
    """Flat indices (sorted, unique, int64) of all voxels a stroke covers.

    A voxel is covered when its centre (integer index) lies within ``radius`` of the polyline in the stroke's
    plane, at the off-plane coordinates of the points (rounded). A segment whose two ends round to different
    off-plane positions is drawn in both. The voxel under each point is always covered, so even a brush thinner
    than a pixel paints something.

    Parameters
    ----------
    points : np.ndarray
        (N, ndim) float polyline vertices, array index order, inside the image.
    radius : float
        Brush radius in pixels (> 0).
    axes : tuple of int
        The plane's two axes.
    shape : sequence of int
        Spatial image shape (voxels outside it are dropped).

    Notes
    -----
    Cost: one interval per segment and row it spans, plus the painted voxels; memory follows the painted area.
    """
    shape = tuple(int(n) for n in shape)
    points = np.asarray(points, dtype=np.float64)
    ndim = len(shape)
    a, b = axes
    off_axes = [i for i in range(ndim) if i not in (a, b)]
    n_rows, n_cols = shape[a], shape[b]
    plane = points[:, [a, b]]
    off = round_half_up(points[:, off_axes]) if off_axes else np.zeros((len(points), 0), np.int64)

    # Segments, each drawn at the off-plane position of either end (one entry per distinct position).
    i0 = np.arange(max(len(points) - 1, 1))
    i1 = np.minimum(i0 + 1, len(points) - 1)
    seg0 = np.concatenate([i0, i0])
    seg1 = np.concatenate([i1, i1])
    seg_off = np.concatenate([off[i0], off[i1]])
    keep = np.r_[np.ones(len(i0), bool), np.any(off[i1] != off[i0], axis=1)]
    seg0, seg1, seg_off = seg0[keep], seg1[keep], seg_off[keep]
    # Number the distinct off-plane positions; runs are keyed by (position, row).
    if off_axes:
        positions, pos_id = np.unique(seg_off, axis=0, return_inverse=True)
        pos_id = pos_id.reshape(-1)
    else:
        positions, pos_id = np.zeros((1, 0), np.int64), np.zeros(len(seg0), np.int64)

    q0, q1 = plane[seg0], plane[seg1]
    row_lo = np.maximum(np.ceil(np.minimum(q0[:, 0], q1[:, 0]) - radius).astype(np.int64), 0)
    row_hi = np.minimum(np.floor(np.maximum(q0[:, 0], q1[:, 0]) + radius).astype(np.int64), n_rows - 1)
    counts = np.maximum(row_hi - row_lo + 1, 0)
    # Segments in chunks of about _CHUNK_ROWS rows, so the float temporaries of one chunk stay small; only the
    # integer intervals that hit the image are kept.
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(_CHUNK_ROWS, int(ends[-1]) + _CHUNK_ROWS, _CHUNK_ROWS), side="right")
    keys, los, his = [], [], []
    start = 0
    for stop in np.unique(np.r_[cuts, len(seg0)]):
        stop = max(int(stop), start + 1)
        if start >= len(seg0):
            break
        sl = slice(start, stop)
        c = counts[sl]
        seg_of_row = np.repeat(np.arange(start, stop), c)
        rows = np.repeat(row_lo[sl], c) + (np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c))
        lo, hi = _row_intervals(q0[seg_of_row], q1[seg_of_row], radius, rows.astype(np.float64))
        # Integer columns inside the interval, clipped to the image (a tiny slack against float rounding).
        lo = np.maximum(np.ceil(lo - 1e-9), 0)
        hi = np.minimum(np.floor(hi + 1e-9), n_cols - 1)
        hit = lo <= hi
        keys.append(pos_id[seg_of_row[hit]] * n_rows + rows[hit])
        los.append(lo[hit].astype(np.int64))
        his.append(hi[hit].astype(np.int64))
        start = stop
    key = np.concatenate(keys)
    pieces = []
    if key.size:
        run_key, run_start, run_stop = _merge_runs(key, np.concatenate(los), np.concatenate(his), n_cols)
        lengths = run_stop - run_start
        coords: list[np.ndarray] = [np.empty(0)] * ndim
        coords[a] = run_key % n_rows
        coords[b] = run_start
        pos = positions[run_key // n_rows]
        for k, ax in enumerate(off_axes):
            coords[ax] = pos[:, k]
        base = np.ravel_multi_index(tuple(coords), shape)
        stride_b = int(np.prod(shape[b + 1 :], dtype=np.int64))
        total = int(lengths.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pieces.append(np.repeat(base, lengths) + within * stride_b)
    # The voxel under each sample point (points were checked to lie inside the image).
    centres = round_half_up(points)
    pieces.append(np.ravel_multi_index(tuple(centres.T), shape))
    return np.unique(np.concatenate(pieces))


def label_runs(
    labels: np.ndarray, origin: Sequence[int], shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal non-zero labels along the last axis of a label box placed in an image.

    Parameters
    ----------
    labels : np.ndarray
        Integer label box (0 = unlabelled), same number of axes as ``shape``.
    origin : sequence of int
        Index of the box's first voxel in the image.
    shape : sequence of int
        Spatial shape of the image.

    Returns
    -------
    starts, lengths, values : np.ndarray
        Flat image index of each run's first voxel (int64, ascending), its length (int64) and its label (as in
        ``labels``). Memory follows the number of runs: a painted mask costs about its outline, not its area.
    """
    shape = tuple(int(n) for n in shape)
    width = labels.shape[-1]
    rows = labels.reshape(-1, width)
    change = np.ones(rows.shape, bool)
    np.not_equal(rows[:, 1:], rows[:, :-1], out=change[:, 1:])
    first = np.flatnonzero(change)  # every row starts a run
    lengths = np.diff(np.r_[first, rows.size])
    values = rows.reshape(-1)[first]
    keep = values != 0
    first, lengths, values = first[keep], lengths[keep], values[keep]
    row, col = np.divmod(first, width)
    coords = np.unravel_index(row, labels.shape[:-1]) if labels.ndim > 1 else ()
    global_coords = [c + int(o) for c, o in zip(coords, origin)] + [col + int(origin[-1])]
    starts = np.ravel_multi_index(tuple(global_coords), shape).astype(np.int64, copy=False)
    return starts, lengths.astype(np.int64, copy=False), values


def expand_runs(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat indices covered by runs ``(starts, lengths)``, in run order (int64)."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within
