"""Objects of a large image block by block: per-block components merged across block faces into one labelling.

A batch run cannot hold a whole volume; objects are found in steps that give exactly what
:func:`~ilastik_widget.core.objects.objects_from_probabilities` gives on the whole image (same labels, same numbering,
same table up to float rounding of sums over blocks):

1. :func:`block_objects` on every block (in any order, in parallel): the probabilities of the block and a halo of
   :func:`block_read_region` (the smoothing kernel's reach) give the block's connected components (local numbers),
   their additive statistics and the labels on the block's faces (a :class:`BlockSummary`, small);
2. :func:`merge_blocks` on all summaries: components that touch across a face become one object, statistics add
   up, the size filter and the hysteresis rule apply to whole objects, objects are numbered in the raster order of
   their first voxel; it returns the table and one lookup per block (local number -> global number, 0 = dropped);
3. each block's local labels are rewritten through its lookup (:meth:`BlockMerge.relabel`).

With ``split``, an object is cut by :func:`~ilastik_widget.core.objects.split_object`, whose result depends on the
object's voxels only (not on what lies around it). So step 1 splits the objects that lie inside their block without
touching a face shared with another block (their size, seeds and voxels are all known there), and the objects that
touch such a face are split once all their blocks are known, by :func:`split_merged`, which reads only each such
object's bounding box (grown by one voxel) of the labels of step 3, and of the class's probability and the image for
the pieces' statistics. Pieces are then filtered by size and everything is numbered again in raster order; the
result equals the whole image's. The memory of that step is bounded by the largest such object's box.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from .objects import (
    ObjectParams,
    Objects,
    check_object_params,
    grown_region,
    keep_components,
    label_components,
    object_box,
    object_stats,
    object_table,
    raster_lookup,
    size_ok,
    smoothed_map,
    smoothing_halo,
    split_object,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BlockSummary",
    "BlockMerge",
    "block_read_region",
    "block_objects",
    "merge_blocks",
    "split_merged",
    "objects_blockwise",
]

#: ``read(box) -> (labels, probability, image)`` for :func:`split_merged`: the object labels of a box (after
#: :meth:`BlockMerge.relabel`), the class's probability there (before smoothing) and the image (or None).
BoxReader = Callable[[tuple[slice, ...]], tuple[np.ndarray, np.ndarray, "np.ndarray | None"]]


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
        Hysteresis only: the seeds' local labels on the faces, their sizes and the component holding each seed
        (0 for seeds in a piece dropped by a split).
    cut : np.ndarray
        bool (n+1,): the component touches a face shared with another block (it may go on there).
    final : np.ndarray, optional
        ``split`` only, bool (n+1,): pieces of objects split in this block, kept as they are.
    """

    region: tuple[slice, ...]
    n: int
    stats: dict[str, np.ndarray]
    faces: dict[tuple[int, int], np.ndarray]
    core_faces: dict[tuple[int, int], np.ndarray] | None = None
    core_area: np.ndarray | None = None
    core_parent: np.ndarray | None = None
    cut: np.ndarray | None = None
    final: np.ndarray | None = None


@dataclass(frozen=True)
class BlockMerge:
    """The result of :func:`merge_blocks` (or :func:`split_merged`): the table of all objects and how every block's
    local labels become object labels.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per object (see :class:`~ilastik_widget.core.objects.Objects`).
    lookups : list of np.ndarray
        Per block, local label -> object label (int32, 0 = background or dropped).
    regions : list of tuple of slice
        The blocks, in the order of the summaries.
    stats : dict
        The table's additive statistics (row 0 = background, row k = object k).
    to_split : np.ndarray
        Objects (labels) that :func:`split_merged` must still examine (``split`` only; empty otherwise or after it).
    pieces : list of (tuple of slice, np.ndarray)
        After :func:`split_merged`: boxes and their labels (0 = not a piece) painted over the looked-up labels
        (every block checks every box: cheap next to the blocks' own work for thousands of split objects).
    params, n_channels, multichannel
        What :func:`split_merged` needs to tabulate the pieces.
    """

    table: pd.DataFrame
    lookups: list[np.ndarray]
    regions: list[tuple[slice, ...]] = field(default_factory=list)
    stats: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    to_split: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    pieces: list[tuple[tuple[slice, ...], np.ndarray]] = field(default_factory=list, repr=False)
    params: ObjectParams | None = None
    n_channels: int | None = None
    multichannel: bool = False

    def relabel(self, index: int, local_labels: np.ndarray) -> np.ndarray:
        """Block ``index``'s local labels as object labels (int32, 0 = background or dropped)."""
        out = self.lookups[index][local_labels]
        region = self.regions[index] if self.regions else ()
        for box, piece in self.pieces:
            lo = [max(b.start, r.start) for b, r in zip(box, region)]
            hi = [min(b.stop, r.stop) for b, r in zip(box, region)]
            if any(h <= lo_ for lo_, h in zip(lo, hi)):
                continue
            src = piece[tuple(slice(lo_ - b.start, h - b.start) for lo_, h, b in zip(lo, hi, box))]
            dst = out[tuple(slice(lo_ - r.start, h - r.start) for lo_, h, r in zip(lo, hi, region))]
            np.copyto(dst, src, where=src > 0)
        return out


def block_read_region(region: Sequence[slice], shape: Sequence[int], smooth: Sequence[float]) -> tuple[slice, ...]:
    """The region of probabilities :func:`block_objects` needs for ``region``: grown by the smoothing's reach."""
    return grown_region(region, smoothing_halo(smooth), shape)


def _faces(labels: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    return {
        (k, side): np.take(labels, 0 if side == 0 else labels.shape[k] - 1, axis=k).copy()
        for k in range(labels.ndim)
        for side in (0, 1)
    }


def _cut(labels: np.ndarray, n: int, region: Sequence[slice], shape: Sequence[int]) -> np.ndarray:
    """bool (n+1,): labels on the block's faces that are not sides of the image (faces shared with other blocks)."""
    cut = np.zeros(n + 1, bool)
    for k, (sl, size) in enumerate(zip(region, shape)):
        if sl.start > 0:
            cut[np.take(labels, 0, axis=k)] = True
        if sl.stop < size:
            cut[np.take(labels, labels.shape[k] - 1, axis=k)] = True
    cut[0] = False
    return cut


def _split_inside(
    labels: np.ndarray, n: int, p: np.ndarray, params: ObjectParams, cut: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split the kept components that touch no shared face, as the whole image would; (labels, final) with the
    pieces (size-filtered) as new components flagged ``final``, renumbered 1..n."""
    assert params.split is not None
    keep = keep_components(labels, n, p, params) & ~cut
    boxes = ndi.find_objects(labels)
    out, next_label = labels, n + 1
    for i in np.flatnonzero(keep):
        box = object_box(boxes[i - 1], labels.shape)
        inside = labels[box] == i
        pieces, k = split_object(inside, params.split, params.voxel_size)
        if k < 2:
            continue
        ok = size_ok(np.bincount(pieces.reshape(-1), minlength=k + 1), params)
        ok[0] = False
        new = np.zeros(k + 1, np.int32)
        new[ok] = np.arange(next_label, next_label + int(ok.sum()), dtype=np.int32)
        if out is labels:
            out = labels.copy()
        out[box][inside] = new[pieces[inside]]
        next_label += int(ok.sum())
    if out is labels:
        return labels, np.zeros(n + 1, bool)
    lookup = raster_lookup(out, np.ones(next_label, bool))  # split objects are gone: renumber 1..n without gaps
    final = np.zeros(int(lookup.max()) + 1, bool)
    final[lookup[n + 1 :]] = True
    return lookup[out], final


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
        From :func:`~ilastik_widget.core.objects.check_object_params`.
    region, read_region : tuple of slice
        The block, and the region the probabilities cover, in image coordinates.
    shape : sequence of int
        Spatial shape of the whole image.
    image : array-like, optional
        (*block_shape) or (*block_shape, channels) intensities of ``region``.

    Returns
    -------
    local_labels : np.ndarray
        int32 components of the block, numbered 1..n (raster order without ``split``); with ``split``, objects that
        touch no shared face are already split into pieces.
    summary : BlockSummary
    """
    region, read_region = tuple(region), tuple(read_region)
    prob = np.asarray(probabilities)
    inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, read_region))
    p = smoothed_map(prob, params)[inner]
    seed_level = params.threshold
    labels, n = label_components(p >= (params.low if params.low is not None else seed_level))
    final = None
    if params.split is not None:
        labels, final = _split_inside(labels, n, p, params, _cut(labels, n, region, shape))
        n = len(final) - 1
    origin = tuple(s.start for s in region)
    img = None if image is None else np.asarray(image)
    stats = object_stats(labels, n, origin, shape, np.asarray(prob[inner + (params.label - 1,)]), img)
    cut = _cut(labels, n, region, shape)
    summary = BlockSummary(region, n, stats, _faces(labels), cut=cut, final=final)
    if params.low is not None:
        cores, n_cores = label_components(p >= seed_level)
        core_area = np.bincount(cores.reshape(-1), minlength=n_cores + 1)
        parent = np.zeros(n_cores + 1, np.int64)
        parent[cores.reshape(-1)] = labels.reshape(-1)  # a seed lies inside one component (or in pieces of one)
        parent[0] = 0
        summary = BlockSummary(region, n, stats, summary.faces, _faces(cores), core_area, parent, cut, final)
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


def _row_flags(summaries: Sequence[BlockSummary], name: str, comp: np.ndarray, n_rows: int) -> np.ndarray:
    """bool (n_rows,): objects with at least one component whose summary flag ``name`` is set."""
    flags = [getattr(s, name) for s in summaries]
    out = np.zeros(n_rows, bool)
    if all(f is not None for f in flags) and len(comp):
        out[comp[np.concatenate([f[1:] for f in flags])]] = True
    return out


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

    Returns
    -------
    BlockMerge
        With ``split``, objects touching a face shared by two blocks are not split yet: they are listed in
        ``to_split`` for :func:`split_merged`.
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
        local_parent = np.concatenate([s.core_parent[1:] for s in summaries])  # type: ignore[index]
        parents = local_parent + np.repeat(offsets, core_counts)
        good = size_ok(core_area, params)[core_comp] & (local_parent > 0)  # 0: a seed in a dropped piece
        seeded = np.zeros(n_rows, bool)
        seeded[comp[parents[good]]] = True
        keep &= seeded
    final_rows = _row_flags(summaries, "final", comp, n_rows)
    keep |= final_rows  # pieces of objects split in their block: already filtered
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(stats["first"][kept], kind="stable")]
    number = np.zeros(n_rows, np.int32)
    number[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    lookups = []
    for i, s in enumerate(summaries):
        lookup = np.zeros(s.n + 1, np.int32)
        lookup[1:] = number[comp[offsets[i] + 1 : offsets[i] + 1 + s.n]]
        lookups.append(lookup)
    to_split = np.zeros(0, np.int32)
    if params.split is not None:
        to_split = np.sort(number[keep & _row_flags(summaries, "cut", comp, n_rows) & ~final_rows])
    # Row 0 stands for the background, as in object_stats.
    table_stats = {k: np.concatenate([v[:1], v[order]]) for k, v in stats.items()}
    return BlockMerge(
        object_table(table_stats, params, n_channels, multichannel),
        lookups,
        [s.region for s in summaries],
        table_stats,
        to_split,
        [],
        params,
        n_channels,
        multichannel,
    )


def split_merged(merge: BlockMerge, shape: Sequence[int], read: BoxReader) -> BlockMerge:
    """Split the objects :func:`merge_blocks` left in ``to_split``, filter the pieces by size, number all objects
    again in raster order and tabulate them.

    Parameters
    ----------
    merge : BlockMerge
        From :func:`merge_blocks` with ``split``.
    shape : sequence of int
        Spatial shape of the image.
    read : callable
        ``read(box) -> (labels, probability, image)`` of a box: the labels of :meth:`BlockMerge.relabel` of
        ``merge`` (int), the class's probability before smoothing and the intensities (or None without an image).
        It is called once per object of ``to_split``, with its bounding box grown by one voxel.

    Returns
    -------
    BlockMerge
        Whose :meth:`~BlockMerge.relabel` gives the final labels of every block.
    """
    params = merge.params
    if not len(merge.to_split) or params is None or params.split is None:
        return merge
    stats = merge.stats
    keep = np.ones(len(stats["area"]), bool)
    keep[0] = False
    added: list[dict[str, np.ndarray]] = []
    boxes: list[tuple[tuple[slice, ...], np.ndarray]] = []
    for label in merge.to_split:
        box = object_box(
            [slice(int(a), int(b) + 1) for a, b in zip(stats["bbox_min"][label], stats["bbox_max"][label])], shape
        )
        labels, prob, image = read(box)
        inside = np.asarray(labels) == label
        pieces, k = split_object(inside, params.split, params.voxel_size)
        if k < 2:
            continue
        ok = size_ok(np.bincount(pieces.reshape(-1), minlength=k + 1), params)
        ok[0] = False
        pieces = raster_lookup(pieces, ok)[pieces]
        n = int(pieces.max())
        origin = tuple(b.start for b in box)
        added.append(object_stats(pieces, n, origin, shape, np.asarray(prob), None if image is None else image))
        boxes.append((box, pieces))
        keep[label] = False
    if not boxes:
        return replace(merge, to_split=np.zeros(0, np.int32))
    rows = {k: np.concatenate([v[keep]] + [a[k][1:] for a in added]) for k, v in stats.items()}
    order = np.argsort(rows["first"], kind="stable")
    number = np.empty(len(order), np.int32)
    number[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    n_old = int(keep.sum())
    old = np.zeros(len(keep), np.int32)
    old[keep] = number[:n_old]
    pieces_out, start = [], n_old
    for box, pieces in boxes:
        n = int(pieces.max())
        pieces_out.append((box, np.r_[0, number[start : start + n]].astype(np.int32)[pieces]))
        start += n
    table_stats = {k: np.concatenate([v[:1], rows[k][order]]) for k, v in stats.items()}
    return BlockMerge(
        object_table(table_stats, params, merge.n_channels, merge.multichannel),
        [old[lookup] for lookup in merge.lookups],
        merge.regions,
        table_stats,
        np.zeros(0, np.int32),
        pieces_out,
        params,
        merge.n_channels,
        merge.multichannel,
    )


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
    split: bool | float = False,
    image: Any = None,
    voxel_size: Sequence[float] | None = None,
) -> Objects:
    """:func:`~ilastik_widget.core.objects.objects_from_probabilities` computed block by block (in memory).

    The reference use of :func:`block_objects`, :func:`merge_blocks` and :func:`split_merged` (a batch run does the
    same with blocks read from and written to files); the result equals the whole-image one.
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
        split=split,
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
    if len(merge.to_split):
        for i, region in enumerate(regions):
            out[region] = merge.relabel(i, local[i])
        class_prob = prob[..., params.label - 1]
        merge = split_merged(merge, shape, lambda box: (out[box], class_prob[box], None if img is None else img[box]))
    for i, region in enumerate(regions):
        out[region] = merge.relabel(i, local[i])
    return Objects(out, merge.table, params, (0,) * len(shape))
