"""Objects of a large image block by block: per-block components merged across block faces into one labelling.

A batch run cannot hold a whole volume; objects are found in three steps that give exactly what
:func:`~ilastik_widget.core.objects.objects_from_probabilities` gives on the whole image (same labels, same numbering,
same table up to float rounding of sums), for ``split=False``:

1. :func:`block_objects` on every block (in any order, in parallel): the probabilities of the block and a halo of
   :func:`block_read_region` (the smoothing kernel's reach) give the block's connected components (local numbers),
   their additive statistics and the labels on the block's faces (a :class:`BlockSummary`, small);
2. :func:`merge_blocks` on all summaries: components that touch across a face become one object, statistics add
   up, the size filter and the hysteresis rule apply to whole objects, objects are numbered in the raster order of
   their first voxel; it returns the table and one lookup per block (local number -> global number, 0 = dropped);
3. each block's local labels are rewritten through its lookup (``lookup[local_labels]``).

Splitting touching objects needs the whole image (a distance transform has no bounded reach) and is refused here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .objects import (
    ObjectParams,
    Objects,
    check_object_params,
    label_components,
    object_stats,
    object_table,
    size_ok,
    smoothed_map,
    smoothing_halo,
)

__all__ = ["BlockSummary", "BlockMerge", "block_read_region", "block_objects", "merge_blocks", "objects_blockwise"]


@dataclass(frozen=True)
class BlockSummary:
    """What :func:`merge_blocks` needs of one block: no more than its faces and per-object numbers.

    Attributes
    ----------
    region : tuple of slice
        The block in image coordinates.
    n : int
        Number of local components (1..n).
    stats : dict
        Additive statistics per local component (see :func:`~ilastik_widget.core.objects.object_stats`).
    faces : dict
        ``(axis, side)`` -> local labels on the block's first (side 0) or last (side 1) plane along ``axis``.
    core_faces, core_area, core_parent
        Hysteresis only: the seeds' local labels on the faces, their sizes and the component holding each seed.
    """

    region: tuple[slice, ...]
    n: int
    stats: dict[str, np.ndarray]
    faces: dict[tuple[int, int], np.ndarray]
    core_faces: dict[tuple[int, int], np.ndarray] | None = None
    core_area: np.ndarray | None = None
    core_parent: np.ndarray | None = None


@dataclass(frozen=True)
class BlockMerge:
    """The result of :func:`merge_blocks`: the table of all objects and the renumbering of every block."""

    table: pd.DataFrame
    lookups: list[np.ndarray]

    def relabel(self, index: int, local_labels: np.ndarray) -> np.ndarray:
        """Block ``index``'s local labels as global object labels (int32, 0 = background or dropped)."""
        return self.lookups[index][local_labels]


def block_read_region(region: Sequence[slice], shape: Sequence[int], smooth: Sequence[float]) -> tuple[slice, ...]:
    """The region of probabilities :func:`block_objects` needs for ``region``: grown by the smoothing's reach."""
    halo = smoothing_halo(smooth)
    return tuple(slice(max(s.start - h, 0), min(s.stop + h, n)) for s, h, n in zip(region, halo, shape))


def _faces(labels: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    return {
        (k, side): np.take(labels, 0 if side == 0 else labels.shape[k] - 1, axis=k).copy()
        for k in range(labels.ndim)
        for side in (0, 1)
    }


def block_objects(
    probabilities: Any,
    params: ObjectParams,
    region: Sequence[slice],
    read_region: Sequence[slice],
    shape: Sequence[int],
    image: Any = None,
) -> tuple[np.ndarray, BlockSummary]:
    """Connected components of one block and their summary.

    Parameters
    ----------
    probabilities : array-like
        float (*read_region_shape, n_classes) probabilities of ``read_region`` (from :func:`block_read_region`).
    params : ObjectParams
        From :func:`~ilastik_widget.core.objects.check_object_params` (``split`` must be off).
    region, read_region : tuple of slice
        The block, and the region the probabilities cover, in image coordinates.
    shape : sequence of int
        Spatial shape of the whole image.
    image : array-like, optional
        (*block_shape) or (*block_shape, channels) intensities of ``region``.

    Returns
    -------
    local_labels : np.ndarray
        int32 components of the block, numbered 1..n in raster order.
    summary : BlockSummary
    """
    if params.split is not None:
        raise ValueError("split=True needs the whole image (a distance transform has no bounded reach)")
    region, read_region = tuple(region), tuple(read_region)
    prob = np.asarray(probabilities)
    inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, read_region))
    p = smoothed_map(prob, params)[inner]
    seed_level = params.threshold
    labels, n = label_components(p >= (params.low if params.low is not None else seed_level))
    origin = tuple(s.start for s in region)
    img = None if image is None else np.asarray(image)
    stats = object_stats(labels, n, origin, shape, np.asarray(prob[inner + (params.label - 1,)]), img)
    summary = BlockSummary(region, n, stats, _faces(labels))
    if params.low is not None:
        cores, n_cores = label_components(p >= seed_level)
        core_area = np.bincount(cores.reshape(-1), minlength=n_cores + 1)
        parent = np.zeros(n_cores + 1, np.int64)
        parent[cores.reshape(-1)] = labels.reshape(-1)  # a seed lies inside one component
        parent[0] = 0
        summary = BlockSummary(region, n, stats, summary.faces, _faces(cores), core_area, parent)
    return labels, summary


def _touching_pairs(
    summaries: Sequence[BlockSummary], offsets: np.ndarray, faces_of: str
) -> tuple[np.ndarray, np.ndarray]:
    """Global node pairs of components that touch across a face between two blocks."""
    starts: dict[tuple[int, int], list[int]] = {}
    for j, s in enumerate(summaries):
        for k, sl in enumerate(s.region):
            starts.setdefault((k, sl.start), []).append(j)
    a_all, b_all = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i, s in enumerate(summaries):
        for k, sl in enumerate(s.region):
            for j in starts.get((k, sl.stop), []):
                t = summaries[j]
                others = [m for m in range(len(s.region)) if m != k]
                lo = [max(s.region[m].start, t.region[m].start) for m in others]
                hi = [min(s.region[m].stop, t.region[m].stop) for m in others]
                if any(h <= lo_ for lo_, h in zip(lo, hi)):
                    continue
                face_a = getattr(s, faces_of)[(k, 1)]
                face_b = getattr(t, faces_of)[(k, 0)]
                cut_a = tuple(
                    slice(lo_ - s.region[m].start, h - s.region[m].start) for m, lo_, h in zip(others, lo, hi)
                )
                cut_b = tuple(
                    slice(lo_ - t.region[m].start, h - t.region[m].start) for m, lo_, h in zip(others, lo, hi)
                )
                fa, fb = face_a[cut_a].reshape(-1), face_b[cut_b].reshape(-1)
                both = (fa > 0) & (fb > 0)
                a_all.append(fa[both].astype(np.int64) + offsets[i])
                b_all.append(fb[both].astype(np.int64) + offsets[j])
    return np.concatenate(a_all), np.concatenate(b_all)


def _components(n_nodes: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected component of every node of the graph with edges ``a[i]``-``b[i]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n_nodes == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _merge_stats(summaries: Sequence[BlockSummary], rows: np.ndarray, n_rows: int) -> dict[str, np.ndarray]:
    """Statistics summed (or min/max) into ``rows`` (one per component of all blocks; row 0 stays blank)."""
    merged: dict[str, np.ndarray] = {}
    for key, blank in summaries[0].stats.items():
        values = np.concatenate([s.stats[key][1:] for s in summaries])  # row 0 of each block is its background
        out = np.repeat(blank[:1], n_rows, axis=0)  # a background row is neutral: +max for minima, 0 for sums...
        if key in ("bbox_min", "first", "int_min"):
            np.minimum.at(out, rows, values)
        elif key in ("bbox_max", "int_max"):
            np.maximum.at(out, rows, values)
        else:
            np.add.at(out, rows, values)
        merged[key] = out
    return merged


def merge_blocks(
    summaries: Sequence[BlockSummary],
    params: ObjectParams,
    *,
    n_channels: int | None = None,
    multichannel: bool = False,
) -> BlockMerge:
    """Join components across block faces into objects; filter, number and tabulate them.

    Parameters
    ----------
    summaries : sequence of BlockSummary
        One per block of a tiling of the image (blocks must not overlap; neighbours share a face).
    params : ObjectParams
        The same parameters the blocks were computed with.
    n_channels, multichannel
        Intensity channels of the image given to the blocks (for the table's intensity columns).
    """
    summaries = list(summaries)
    counts = np.array([s.n for s in summaries], np.int64)
    offsets = np.r_[0, np.cumsum(counts)[:-1]] - 1  # local label l of block i is node offsets[i] + l
    # Row c + 1 of the merged statistics is component c; row 0 is a blank background row.
    comp = _components(int(counts.sum()), *_touching_pairs(summaries, offsets, "faces")) + 1
    n_rows = int(comp.max()) + 1 if len(comp) else 1
    stats = _merge_stats(summaries, comp, n_rows)
    keep = size_ok(stats["area"], params)
    keep[0] = False
    if params.low is not None:
        core_counts = np.array([len(s.core_area) - 1 for s in summaries], np.int64)  # type: ignore[arg-type]
        core_offsets = np.r_[0, np.cumsum(core_counts)[:-1]] - 1
        core_comp = _components(int(core_counts.sum()), *_touching_pairs(summaries, core_offsets, "core_faces"))
        core_area = np.zeros(int(core_comp.max()) + 1 if len(core_comp) else 0, np.int64)
        np.add.at(core_area, core_comp, np.concatenate([s.core_area[1:] for s in summaries]))  # type: ignore[index]
        parents = np.concatenate([s.core_parent[1:] + offsets[i] for i, s in enumerate(summaries)])  # type: ignore[index]
        seeded = np.zeros(n_rows, bool)
        seeded[comp[parents[size_ok(core_area, params)[core_comp]]]] = True
        keep &= seeded
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(stats["first"][kept], kind="stable")]
    final = np.zeros(n_rows, np.int32)
    final[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    lookups = []
    for i, s in enumerate(summaries):
        lookup = np.zeros(s.n + 1, np.int32)
        lookup[1:] = final[comp[offsets[i] + 1 : offsets[i] + 1 + s.n]]
        lookups.append(lookup)
    # Row 0 stands for the background, as in object_stats.
    table_stats = {k: np.concatenate([v[:1], v[order]]) for k, v in stats.items()}
    return BlockMerge(object_table(table_stats, params, n_channels, multichannel), lookups)


def objects_blockwise(
    probabilities: Any,
    label: int,
    threshold: float = 0.5,
    *,
    block_shape: Sequence[int],
    low: float | None = None,
    min_size: int = 10,
    max_size: int | None = None,
    smooth: float | Sequence[float] = 1.0,
    image: Any = None,
    voxel_size: Sequence[float] | None = None,
) -> Objects:
    """:func:`~ilastik_widget.core.objects.objects_from_probabilities` computed block by block (in memory).

    The reference use of :func:`block_objects` and :func:`merge_blocks` (a batch run does the same with blocks read
    from and written to files); the result equals the whole-image one.
    """
    prob = np.asarray(probabilities)
    shape = prob.shape[:-1]
    img = None if image is None else np.asarray(image)
    params = check_object_params(
        prob.shape[-1],
        len(shape),
        label,
        threshold,
        low=low,
        min_size=min_size,
        max_size=max_size,
        smooth=smooth,
        voxel_size=voxel_size,
    )
    regions = [
        tuple(slice(o, min(o + b, n)) for o, b, n in zip(origin, block_shape, shape))
        for origin in itertools.product(*(range(0, n, b) for n, b in zip(shape, block_shape)))
    ]
    local, summaries = [], []
    for region in regions:
        outer = block_read_region(region, shape, params.smooth)
        labels, summary = block_objects(prob[outer], params, region, outer, shape, None if img is None else img[region])
        local.append(labels)
        summaries.append(summary)
    n_ch = None if img is None else (1 if img.ndim == len(shape) else img.shape[-1])
    merge = merge_blocks(summaries, params, n_channels=n_ch, multichannel=img is not None and img.ndim > len(shape))
    out = np.zeros(shape, np.int32)
    for i, region in enumerate(regions):
        out[region] = merge.relabel(i, local[i])
    return Objects(out, merge.table, params, (0,) * len(shape))
