"""How batch prediction computes one block: the processing blocks of an image and the function a Dask task runs.

2D images: each block is computed from the block plus the feature halo (read by ``dask.array.map_overlap``, no
padding at the image border, where the filters mirror exactly as for the whole image).

Volumes: a block is a range of z planes (whole planes when streaming them fits :data:`VOLUME_BLOCK_BYTES`, else
tiles of them with an in-plane halo) read with the z halo, and its features are streamed plane after plane
(:func:`~ilastik_widget.core.stream.stream_features`): every plane of the range is filtered once, instead of once per
block whose halo reaches it, and the memory of a task depends on the size of a plane, not on the depth of the
volume or of the range. Each plane goes through the classifier as soon as its features are ready.

Either way the result equals ``Session.predict()`` on the whole image to float rounding, whatever the chunking.

Sources stored in files or on servers are read by the block tasks themselves (:class:`StoredBlockReader`): each task
reads its block and halo when it runs, so no worker holds input that waits for a block (a graph of separate read
tasks let Dask read ahead: a volume 8x deeper took ~1.7x the memory per worker).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ..core.model import TrainedModel

#: feature memory per block used to choose the default chunks
BLOCK_BYTES = 2**30
#: memory of a volume's streamed planes (:func:`~ilastik_widget.core.stream.stream_bytes`) that the default blocks
#: may take: whole 512 x 512 planes with all features need 1.7 GiB, and tiles of them cost an in-plane halo (tiles
#: of 128 with a halo of 53 compute 3.3x their own pixels); a ``block_bytes`` given by the caller is used instead
VOLUME_BLOCK_BYTES = 2**31
#: planes per block along z by default for volumes (the z halo is read, not computed, so few are needed)
Z_BLOCK = 64


class StoredBlockReader:
    """Reads a block with its halo from a source's stored array, as the classifier takes it: (*spatial, C).

    Picklable whenever the stored array is (zarr, tensorstore and TIFF arrays send how to open them, not their data),
    so a task on any worker reads its own block.

    Parameters
    ----------
    base : array-like
        The stored array (numpy-style slicing).
    select : tuple of (int, int)
        ``(axis of base, index)`` pairs fixed by the source (e.g. a time point).
    order : list of int
        Source axes in the classifier's order: spatial axes, then the channel axis if there is one.
    has_channels : bool
        Whether the source has a channel axis (else one is added).
    channels : list of int or None
        Channels the classifier reads (None: all).
    """

    def __init__(self, base, select: tuple, order: list, has_channels: bool, channels: list | None) -> None:
        self.base, self.select, self.order = base, tuple(select), list(order)
        self.has_channels, self.channels = has_channels, channels

    def __call__(self, region: tuple[slice, ...]) -> np.ndarray:
        """The block ``region`` (slices of the spatial axes, in z, y, x order)."""
        from .sources import with_fixed

        key: list = [slice(None)] * len(self.order)
        for pos, sl in zip(self.order, region):  # the spatial axes come first in ``order``
            key[pos] = sl
        block = np.asarray(self.base[with_fixed(tuple(key), self.select)])
        if self.order != list(range(block.ndim)):
            block = block.transpose(self.order)
        if not self.has_channels:
            return block[..., None]
        if self.channels is not None:
            block = block[..., self.channels]
        return block


def feature_groups(model: TrainedModel) -> tuple[list, int]:
    """Selected cells grouped by the halo they need, with their channel positions in the full feature vector.

    Small scales then read only a small halo around the block instead of the halo of the largest scale: the same
    values (each channel depends only on its own feature and scale), much less work and memory per block.
    """
    from ..core.features import FeatureSelection, halo

    sel = model.selection
    fdim = model.feature_ndim
    full = sel.channel_names(fdim, model.n_used_channels)
    pos = {n: i for i, n in enumerate(full)}
    by_halo: dict[int, set] = {}
    for cell in sel.selected:
        by_halo.setdefault(halo(FeatureSelection(frozenset([cell]))), set()).add(cell)
    groups = []
    for h in sorted(by_halo):
        sub = FeatureSelection(frozenset(by_halo[h]), sel.in_2d)
        idx = np.array([pos[n] for n in sub.channel_names(fdim, model.n_used_channels)], np.intp)
        groups.append((sub, idx))
    return groups, len(full)


_THREADS_LIMITED = False
_MALLOC_TUNED = False


def limit_threads_in_workers() -> None:
    """In a Dask worker process, blocks run in parallel already: one filter thread per task."""
    global _THREADS_LIMITED
    if _THREADS_LIMITED:
        return
    _THREADS_LIMITED = True
    try:
        from distributed import get_worker

        get_worker()
    except Exception:
        return  # local threaded scheduler: the filter bank's shared pool is fine
    try:
        from ..core import filters as _filters

        if hasattr(_filters, "N_THREADS"):
            _filters.N_THREADS = 1
        import cv2

        cv2.setNumThreads(1)
    except Exception:
        pass
    _tune_malloc()


def _release_free_memory() -> None:
    """In a worker process whose malloc keeps freed memory for reuse (:func:`_tune_malloc`): give it back between
    blocks, so that what one block left free does not add to the next block's peak (a few ms per block of seconds)."""
    if _MALLOC_TUNED:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except Exception:
            pass


def _tune_malloc() -> None:
    """Dask workers start with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc map every buffer over 128 KiB
    afresh: ~800k page faults and 2-3 s of system time per 64x128x128 block with all features (measured here).
    Working buffers up to 32 MiB then come from the heap again and stay there (up to 256 MiB kept untrimmed)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20)
        global _MALLOC_TUNED
        _MALLOC_TUNED = True
    except Exception:
        pass


def predict_block(block, *, model: TrainedModel, depth: tuple, chunks: tuple, block_id=None) -> np.ndarray:
    """Probabilities (*block, n_classes) of a block's own voxels from the overlapped ``block`` (channel last)."""
    limit_threads_in_workers()
    region = []
    for ax, (d, ch) in enumerate(zip(depth, chunks)):
        i = block_id[ax]
        start = sum(ch[:i])
        off = start - max(0, start - d)
        region.append(slice(off, off + ch[i]))
    if model.ndim == 3:
        try:
            return _predict_planes(block, model, tuple(region))
        finally:
            _release_free_memory()
    from ..core.features import features_for_region

    groups, n_feat = feature_groups(model)
    if len(groups) == 1:
        feats = features_for_region(
            block, tuple(region), model.selection, channel_axis=-1, mode=model.mode, voxel_size=model.voxel_size
        )
    else:
        feats = np.empty(tuple(r.stop - r.start for r in region) + (n_feat,), np.float32)
        for sub, idx in groups:
            feats[..., idx] = features_for_region(
                block, tuple(region), sub, channel_axis=-1, mode=model.mode, voxel_size=model.voxel_size
            )
    return _classify(model, feats.reshape(-1, n_feat)).reshape(*feats.shape[:-1], model.n_classes)


def _classify(model: TrainedModel, rows: np.ndarray, n_jobs: int = 1) -> np.ndarray:
    probs = model.classifier.predict_proba(rows, n_jobs=n_jobs)
    if probs.shape[1] < model.n_classes:  # classes added since training: zero columns, as Session.predict
        probs = np.concatenate([probs, np.zeros((len(probs), model.n_classes - probs.shape[1]), np.float32)], 1)
    return probs


def _predict_planes(block: np.ndarray, model: TrainedModel, region: tuple[slice, ...]) -> np.ndarray:
    """A volume block's probabilities plane by plane, from features streamed along z.

    Tiles of planes (the block does not span its planes) stream each halo group of features on its own in-plane
    window, in step, so that small scales do not compute the in-plane halo of the largest.
    """
    from ..core import filters as _filters
    from ..core.stream import stream_features

    size = tuple(r.stop - r.start for r in region)
    whole_planes = all(r.start == 0 and r.stop == n for r, n in zip(region[1:], block.shape[1:3]))
    groups, n_feat = feature_groups(model)
    if whole_planes or len(groups) == 1:
        groups = [(model.selection, None)]
    z = (region[0].start, region[0].stop)
    streams = [
        stream_features(
            block,
            sub,
            z=z,
            region=(region[1], region[2]),
            channel_axis=-1,
            mode=model.mode,
            voxel_size=model.voxel_size,
        )
        for sub, _ in groups
    ]
    out = np.empty((*size, model.n_classes), np.float32)
    rows = None if len(groups) == 1 else np.empty((size[1] * size[2], n_feat), np.float32)
    for planes in zip(*streams):
        index = planes[0][0]
        if rows is None:
            features = planes[0][1].reshape(-1, n_feat)
        else:
            for (_, idx), (_, part) in zip(groups, planes):
                rows[:, idx] = part.reshape(len(rows), -1)
            features = rows
        # a plane at a time: the filter threads would idle meanwhile (one in a worker process)
        probs = _classify(model, features, _filters.N_THREADS)
        out[index - z[0]] = probs.reshape(size[1], size[2], model.n_classes)
    return out


def halo_depth(model: TrainedModel) -> tuple[int, ...]:
    """Voxels per side that a block reads around itself, per spatial axis."""
    from ..core.features import halo

    # per axis: thinner along coarse axes of anisotropic voxels, 0 along z for scales in 2D
    depth = halo(model.selection, model.ndim, voxel_size=model.voxel_size, mode=model.mode)
    assert isinstance(depth, tuple)  # per axis when ndim is given
    return depth


def plan_chunks(model: TrainedModel, spatial_shape, input_chunks, chunks, block_bytes) -> tuple[tuple, tuple]:
    """Processing blocks (dask chunks per spatial axis) and the halo depth per axis of an image."""
    depth = halo_depth(model)
    if chunks is None and len(spatial_shape) == 3 == model.ndim:
        budget = VOLUME_BLOCK_BYTES if block_bytes == BLOCK_BYTES else block_bytes
        chunks = _volume_blocks(model, spatial_shape, input_chunks, depth, budget)
    return _choose_chunks(spatial_shape, input_chunks, depth, model.n_features, chunks, block_bytes)[1], depth


def _volume_blocks(model: TrainedModel, shape, input_chunks, depth, block_bytes) -> tuple[int, int, int]:
    """Default blocks of a volume: whole planes if streaming them fits ``block_bytes``, else the largest square
    tiles (whole input chunks) that fit; about :data:`Z_BLOCK` planes along z (whole input chunks, or parts that tile
    a deeper input chunk: the memory of a task does not follow the input's chunking either)."""
    from ..core.stream import stream_bytes

    def cost(side_y: int, side_x: int) -> int:
        window = (min(shape[1], side_y + 2 * depth[1]), min(shape[2], side_x + 2 * depth[2]))
        return stream_bytes(
            window, model.selection, n_channels=model.n_used_channels, mode=model.mode, voxel_size=model.voxel_size
        )

    ky, kx = (max(1, int(k or 1)) for k in input_chunks[1:])
    if cost(shape[1], shape[2]) <= block_bytes:
        side_y, side_x = shape[1], shape[2]
    else:
        side = 1 << max(5, int(math.log2(max(shape[1], shape[2]))))
        while side > 32 and cost(min(side, shape[1]), min(side, shape[2])) > block_bytes:
            side //= 2
        side_y, side_x = (min(n, max(k, side // k * k)) for n, k in zip(shape[1:], (ky, kx)))
    kz = max(1, int(input_chunks[0] or 1))
    side_z = max(Z_BLOCK, depth[0])
    if kz < side_z:  # whole input chunks
        side_z = -(-side_z // kz) * kz
    else:  # parts of an input chunk that tile it, so that deep input chunks do not make deep blocks
        side_z = min(k for k in range(side_z, kz + 1) if kz % k == 0)
    return min(shape[0], side_z), side_y, side_x


def _choose_chunks(spatial_shape, input_chunks, depth, n_features, chunks, block_bytes) -> tuple[tuple, tuple]:
    """Processing chunk shape per spatial axis -> (regular chunk shape, dask chunks tuple)."""
    nd = len(spatial_shape)
    if chunks is None:
        per_vox = max(1, n_features) * 4 * 2  # the block's features + working copies
        side = int((block_bytes / per_vox) ** (1.0 / nd))
        side = max(side, 32, max(depth) if depth else 0)
        side = 1 << int(math.log2(side)) if side >= 64 else side
        want = []
        for n, k in zip(spatial_shape, input_chunks):
            c = side
            if k and k < c:
                c = max(k, (c // k) * k)  # whole input chunks per block
            want.append(min(n, c))
    else:
        want = [int(chunks)] * nd if np.ndim(chunks) == 0 else [int(c) for c in chunks]
        if len(want) != nd:
            raise ValueError(f"chunks={chunks!r} must give {nd} spatial sizes")
        want = [min(n, max(1, c)) for n, c in zip(spatial_shape, want)]
    out = []
    for n, c, d in zip(spatial_shape, want, depth):
        if n > c and c < d:
            c = d  # dask needs neighbours at least as large as the overlap
        blocks = [c] * (n // c) + ([n % c] if n % c else [])
        if len(blocks) > 1 and blocks[-1] < d:
            last = blocks.pop()
            blocks[-1] += last  # merge a too-small last block (keeps zarr chunk alignment)
        out.append(tuple(blocks))
    return tuple(want), tuple(out)
