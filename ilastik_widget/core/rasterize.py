"""Rasterisation of brush strokes into flat voxel indices, at a cost that follows the painted area.

A stroke is a polyline with a brush radius in one plane of the image. A voxel is painted when its centre lies within
the radius of the polyline. The painted set of one segment is a capsule (a rectangle with two half discs), which is
convex: every row of the plane meets it in one interval, whose ends follow in closed form from the segment's end
points. The rasteriser therefore computes, for every segment, one interval per row it spans, merges the intervals of
each row, and writes out the merged runs. The work is the number of rows the segments span plus the painted area;
no per-segment box of pixels is ever built. Densely sampled strokes (a browser may send 100,000 points) are first
simplified to within 0.005 pixel, so the number of segments follows the stroke's shape, not its sampling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["rasterize_stroke", "round_half_up", "label_runs", "expand_runs"]

# Relative and absolute slack on the squared radius, so that pixels exactly at the radius count despite float
# rounding (the same rule for every segment and every row).
_RADIUS_SLACK = (1e-9, 1e-12)
# Rows (segment x row intervals) computed at once.
_CHUNK_ROWS = 16384
#: Pixels by which the simplification of densely sampled strokes may move the brush's path.
SIMPLIFY_TOLERANCE = 0.005
_MAX_SPLITS = 5_000
# Largest box (pixels) for the mask-based union of strokes that paint over themselves many times.
_MAX_DENSE_BOX = 2**24


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
    with np.errstate(
        divide="ignore", invalid="ignore", over="ignore"
    ):  # huge quotients of near-zero slopes work as infinities
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


def _merge_runs(
    key: np.ndarray, lo: np.ndarray, hi: np.ndarray, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _simplify(plane: np.ndarray, off: np.ndarray, tolerance: float) -> np.ndarray:
    """Which vertices to keep so that the polyline moves by at most ``tolerance`` (Ramer-Douglas-Peucker).

    Every dropped vertex lies within ``tolerance`` of the segment that replaces it, so the simplified and the
    original polyline are within ``tolerance`` of each other both ways (the original path between two kept
    vertices crosses every perpendicular of their segment). Vertices where the off-plane position changes are
    kept. The work is bounded: ranges still open after a fixed budget keep all their vertices.
    """
    n = len(plane)
    keep = np.ones(n, bool)
    if n < 3:
        return keep
    keep[1:-1] = np.any(off[1:-1] != off[:-2], axis=1) | np.any(off[1:-1] != off[2:], axis=1)
    anchors = np.flatnonzero(keep)
    stack = [(int(i), int(j)) for i, j in zip(anchors[:-1], anchors[1:]) if j > i + 1]
    # Bounded work: vertices examined (a zigzag would cost n^2) and splits (one Python step each). A stroke that
    # does not simplify within them is not a densely sampled smooth path; its remaining vertices are all kept.
    budget, splits = 40 * n, _MAX_SPLITS
    while stack:
        i, j = stack.pop()
        budget -= j - i
        if budget < 0 or splits <= 0:
            keep[i : j + 1] = True
            continue
        splits -= 1
        p0, d = plane[i], plane[j] - plane[i]
        q = plane[i + 1 : j] - p0
        dd = float(d @ d)
        t = np.clip(q @ d / dd, 0.0, 1.0) if dd > 0 else np.zeros(len(q))
        dist2 = ((q - t[:, None] * d) ** 2).sum(axis=1)
        k = int(np.argmax(dist2))
        if dist2[k] > tolerance * tolerance:
            keep[i + 1 + k] = True
            stack.extend(r for r in ((i, i + 1 + k), (i + 1 + k, j)) if r[1] > r[0] + 1)
    return keep


def _segment_rows(q0: np.ndarray, q1: np.ndarray, radius: float, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """First row and number of rows (clipped to the image) each segment's capsule spans."""
    row_lo = np.maximum(np.ceil(np.minimum(q0[:, 0], q1[:, 0]) - radius).astype(np.int64), 0)
    row_hi = np.minimum(np.floor(np.maximum(q0[:, 0], q1[:, 0]) + radius).astype(np.int64), n_rows - 1)
    return row_lo, np.maximum(row_hi - row_lo + 1, 0)


def _intervals(
    q0: np.ndarray,
    q1: np.ndarray,
    radius: float,
    row_lo: np.ndarray,
    counts: np.ndarray,
    segs: np.ndarray,
    n_cols: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer column intervals ``(segment, row, lo, hi)`` of segments ``segs`` that hit the image."""
    c = counts[segs]
    seg_of_row = np.repeat(segs, c)
    rows = np.repeat(row_lo[segs], c) + (np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c))
    lo, hi = _row_intervals(q0[seg_of_row], q1[seg_of_row], radius, rows.astype(np.float64))
    # Integer columns inside the interval, clipped to the image (a tiny slack against float rounding).
    lo = np.maximum(np.ceil(lo - 1e-9), 0)
    hi = np.minimum(np.floor(hi + 1e-9), n_cols - 1)
    hit = lo <= hi
    return seg_of_row[hit], rows[hit], lo[hit].astype(np.int64), hi[hit].astype(np.int64)


def _chunks(counts: np.ndarray, segs: np.ndarray) -> Iterator[np.ndarray]:
    """``segs`` in consecutive groups of about _CHUNK_ROWS rows (at least one segment each)."""
    ends = np.cumsum(counts[segs])
    start = 0
    while start < len(segs):
        stop = max(int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK_ROWS, side="right")), start + 1)
        yield segs[start:stop]
        start = stop


def _union_runs(
    q0: np.ndarray,
    q1: np.ndarray,
    pos_id: np.ndarray,
    radius: float,
    row_lo: np.ndarray,
    counts: np.ndarray,
    n_rows: int,
    n_cols: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union of the capsules as merged runs ``(key, lo, hi)`` per (off-plane position, row); chunk by chunk, so
    memory holds one chunk and the runs merged so far (about the painted outline)."""
    run_key = run_lo = run_hi = np.zeros(0, np.int64)
    for segs in _chunks(counts, np.arange(len(q0))):
        seg, rows, lo, hi = _intervals(q0, q1, radius, row_lo, counts, segs, n_cols)
        if len(seg):
            run_key, run_lo, stop = _merge_runs(
                np.r_[run_key, pos_id[seg] * n_rows + rows], np.r_[run_lo, lo], np.r_[run_hi, hi], n_cols
            )
            run_hi = stop - 1
    return run_key, run_lo, run_hi


def _union_dense(
    q0: np.ndarray,
    q1: np.ndarray,
    radius: float,
    row_lo: np.ndarray,
    counts: np.ndarray,
    box: tuple[tuple[int, int], tuple[int, int]],
    n_cols: int,
) -> np.ndarray:
    """Union of the capsules of one plane as a boolean mask over ``box`` (rows, columns of the plane).

    For strokes that paint over the same place many times: segments go in passes of doubling size, and a segment
    whose whole bounding box is already painted (a summed-area table answers in O(1)) adds nothing and is skipped.
    """
    (u0, u1), (v0, v1) = box
    mask = np.zeros((u1 - u0, v1 - v0), bool)
    r_box = int(np.ceil(radius))
    seg_v_lo = np.maximum(np.floor(np.minimum(q0[:, 1], q1[:, 1])).astype(np.int64) - r_box, v0) - v0
    seg_v_hi = np.minimum(np.ceil(np.maximum(q0[:, 1], q1[:, 1])).astype(np.int64) + r_box, v1 - 1) - v0
    seg_u_lo, seg_u_hi = row_lo - u0, row_lo + counts - 1 - u0
    order, done, size = np.arange(len(q0)), 0, 256
    while done < len(order):
        segs = order[done : done + size]
        done, size = done + len(segs), size * 2
        if mask.any():
            table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
            table[1:, 1:] = mask.cumsum(0).cumsum(1)
            a, b, c, d = seg_u_lo[segs], seg_u_hi[segs] + 1, seg_v_lo[segs], seg_v_hi[segs] + 1
            painted = table[b, d] - table[a, d] - table[b, c] + table[a, c]
            segs = segs[(counts[segs] > 0) & (painted < (b - a) * np.maximum(d - c, 0))]
        diff = np.zeros((mask.shape[0], mask.shape[1] + 1), np.int32)
        for chunk in _chunks(counts, segs):
            _, rows, lo, hi = _intervals(q0, q1, radius, row_lo, counts, chunk, n_cols)
            np.add.at(diff, (rows - u0, lo - v0), 1)
            np.add.at(diff, (rows - u0, hi + 1 - v0), -1)
        mask |= diff.cumsum(axis=1)[:, :-1] > 0
    return mask


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
    Densely sampled strokes are first simplified to within :data:`SIMPLIFY_TOLERANCE` pixels (so only voxel
    centres that close to the brush's edge can differ from the exact rule). The capsules' union is built as merged
    row runs (cost: one interval per segment and row it spans, plus the painted voxels), or, for a stroke painting
    over its own bounding box many times over, in a mask of that box where covered segments are skipped.
    """
    shape = tuple(int(n) for n in shape)
    points = np.asarray(points, dtype=np.float64)
    ndim = len(shape)
    a, b = axes
    off_axes = [i for i in range(ndim) if i not in (a, b)]
    n_rows, n_cols = shape[a], shape[b]
    off_all = round_half_up(points[:, off_axes]) if off_axes else np.zeros((len(points), 0), np.int64)
    kept = _simplify(points[:, [a, b]], off_all, SIMPLIFY_TOLERANCE)
    plane, off = points[kept][:, [a, b]], off_all[kept]

    # Segments, each drawn at the off-plane position of either end (one entry per distinct position).
    i0 = np.arange(max(len(plane) - 1, 1))
    i1 = np.minimum(i0 + 1, len(plane) - 1)
    seg0, seg1, seg_off = np.r_[i0, i0], np.r_[i1, i1], np.concatenate([off[i0], off[i1]])
    keep = np.r_[np.ones(len(i0), bool), np.any(off[i1] != off[i0], axis=1)]
    seg0, seg1, seg_off = seg0[keep], seg1[keep], seg_off[keep]
    positions, pos_id = np.unique(seg_off, axis=0, return_inverse=True)
    pos_id = pos_id.reshape(-1)
    q0, q1 = plane[seg0], plane[seg1]
    row_lo, counts = _segment_rows(q0, q1, radius, n_rows)

    lo_corner = np.maximum(np.floor(plane.min(axis=0) - radius).astype(np.int64), 0)
    hi_corner = np.minimum(np.ceil(plane.max(axis=0) + radius).astype(np.int64) + 1, (n_rows, n_cols))
    box_area = int(np.prod(hi_corner - lo_corner))
    pieces = []
    if len(positions) == 1 and int(counts.sum()) > 8 * box_area and box_area <= _MAX_DENSE_BOX:
        box = ((int(lo_corner[0]), int(hi_corner[0])), (int(lo_corner[1]), int(hi_corner[1])))
        uu, vv = np.nonzero(_union_dense(q0, q1, radius, row_lo, counts, box, n_cols))
        coords: list[np.ndarray] = [np.empty(0)] * ndim
        coords[a], coords[b] = uu + box[0][0], vv + box[1][0]
        for k, ax in enumerate(off_axes):
            coords[ax] = np.full(len(uu), positions[0, k], np.int64)
        pieces.append(np.ravel_multi_index(tuple(coords), shape))
    else:
        run_key, run_lo, run_hi = _union_runs(q0, q1, pos_id, radius, row_lo, counts, n_rows, n_cols)
        lengths = run_hi + 1 - run_lo
        coords = [np.empty(0)] * ndim
        coords[a], coords[b] = run_key % n_rows, run_lo
        pos = positions[run_key // n_rows]
        for k, ax in enumerate(off_axes):
            coords[ax] = pos[:, k]
        base = np.ravel_multi_index(tuple(coords), shape)
        stride_b = int(np.prod(shape[b + 1 :], dtype=np.int64))
        pieces.append(expand_runs(base, lengths, stride_b))
    # The voxel under each sample point, all of them (points were checked to lie inside the image).
    pieces.append(np.ravel_multi_index(tuple(round_half_up(points).T), shape))
    return _sorted_unique(np.concatenate(pieces))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # Sort, then drop repeats: several times faster than numpy 2's hash-based np.unique on millions of voxels.
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


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


def expand_runs(starts: np.ndarray, lengths: np.ndarray, stride: int = 1) -> np.ndarray:
    """Flat indices covered by runs ``(starts, lengths)`` of voxels ``stride`` apart, in run order (int64)."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    within = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + within * stride
