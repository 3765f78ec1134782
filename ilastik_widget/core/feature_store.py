"""Features of one image computed only where they are needed, kept within a byte bound, and what they give: the
rows a classifier trains on and the class probabilities of any region.

The image is divided into a grid of blocks. Features are computed per block with
:func:`~ilastik_widget.core.features.features_for_region` (the region plus the selection's halo) for the blocks that
hold labels (training) or that a prediction asks for, and kept in a least-recently-used cache bounded in bytes. The
training rows are kept per block, so a new stroke gathers feature rows again only for the blocks whose labels
changed. Block probabilities are cached per model.

Every method takes a :class:`FeatureSpec` snapshot: a training or prediction that started before the selection
changed keeps computing the features its model was made for.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache import ByteLRU
from .features import FeatureSelection, features_for_region


@dataclass(frozen=True)
class FeatureSpec:
    """What the features of a session are at one moment: ``epoch`` changes with every change of the other two."""

    epoch: int
    selection: FeatureSelection
    mode: str


class StopGathering(Exception):
    """Raised by a ``should_stop`` callback to abandon gathering training rows."""


class FeatureStore:
    """Block-wise features of ``image`` with caches of features, training rows and block probabilities.

    Parameters
    ----------
    image : array-like
        Anything with ``shape``, ``dtype`` and numpy slicing; read a block (plus halo) at a time.
    channel_axis : int or None
    spatial_shape : tuple of int
    block_shape : tuple of int
        Clipped to the image.
    cache_bytes : int
        Bound of the feature cache; block probabilities get a further quarter of it.
    n_threads : int
        Threads that compute blocks in parallel.
    """

    def __init__(
        self,
        image: Any,
        channel_axis: int | None,
        spatial_shape: tuple[int, ...],
        block_shape: tuple[int, ...],
        cache_bytes: int,
        n_threads: int,
    ):
        self.image = image
        self.channel_axis = channel_axis
        self.spatial_shape = spatial_shape
        self.ndim = len(spatial_shape)
        self.block_shape = tuple(min(b, n) for b, n in zip(block_shape, spatial_shape))
        self.grid_shape = tuple(math.ceil(n / b) for n, b in zip(spatial_shape, self.block_shape))
        self.n_threads = int(n_threads)
        self._features: ByteLRU[np.ndarray] = ByteLRU(cache_bytes)
        self._probabilities: ByteLRU[np.ndarray] = ByteLRU(max(int(cache_bytes) // 4, 1))
        self._rows: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # block id -> (epoch, local indices, rows)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the feature cache."""
        return self._features.nbytes

    # ------------------------------------------------------------------ blocks
    def block_region(self, block_index: Sequence[int]) -> tuple[slice, ...]:
        """The region (slices, clipped to the image) of a block given by its grid index."""
        idx = tuple(int(i) for i in block_index)
        if len(idx) != self.ndim or any(not 0 <= i < g for i, g in zip(idx, self.grid_shape)):
            raise ValueError(f"block index {idx} is outside the block grid {self.grid_shape}")
        return tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(idx, self.block_shape, self.spatial_shape))

    def blocks_for(self, region: tuple[slice, ...]) -> list[tuple[int, ...]]:
        """Grid indices of the blocks a (normalised) region touches, in C order."""
        ranges = [range(s.start // b, (s.stop - 1) // b + 1) for s, b in zip(region, self.block_shape)]
        return list(itertools.product(*ranges))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` on the worker threads (items never wait on the pool, so this cannot deadlock)."""
        if len(items) <= 1 or self.n_threads == 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="ilastik-worker")
            pool = self._pool
        return [f.result() for f in [pool.submit(fn, i) for i in items]]

    def block_features(self, block_index: tuple[int, ...], spec: FeatureSpec) -> np.ndarray:
        """Features of a whole block, float32 (*block, C), read-only, from the cache or computed now."""
        if spec.selection.is_empty:
            raise ValueError("no features are selected: select at least one feature")
        region = self.block_region(block_index)

        def compute() -> np.ndarray:
            where = ", ".join(f"{s.start}:{s.stop}" for s in region)
            try:
                feats = features_for_region(
                    self.image, region, spec.selection, channel_axis=self.channel_axis, mode=spec.mode
                )
            except ValueError as exc:
                raise ValueError(f"{exc} (found while computing features of the region [{where}])") from exc
            feats = np.ascontiguousarray(feats, dtype=np.float32)
            if not np.isfinite(feats).all():
                # finite input whose values do not fit 32-bit floats (e.g. uint64 near 2**64, or 1e39)
                raise ValueError(
                    f"the image holds values too large for 32-bit floating point in the region "
                    f"[{where}]: rescale it (e.g. divide by its maximum) before classifying"
                )
            feats.setflags(write=False)
            return feats

        return self._features.get_or_compute((spec.epoch, block_index), compute)

    # ------------------------------------------------------------------ training rows
    def training_rows(
        self, flat: np.ndarray, labels: np.ndarray, spec: FeatureSpec, should_stop: Callable[[], bool]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Feature rows (N, C) float32 and labels (N,) int64 of the labelled voxels ``flat`` (flat indices).

        Rows of a block are reused when its labelled voxels did not move (relabelling the same voxels only changes
        the labels). ``should_stop()`` is asked between blocks: when it says True, None is returned (it may also
        raise to abandon the gathering).
        """
        coords = np.stack(np.unravel_index(flat, self.spatial_shape), axis=1)
        bid = np.ravel_multi_index(tuple((coords // np.array(self.block_shape)).T), self.grid_shape)
        order = np.argsort(bid, kind="stable")  # blocks ascending, voxels in C order within: deterministic
        bid, coords, labels = bid[order], coords[order], labels[order]
        starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]]) if len(bid) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(bid)].astype(np.int64)
        groups = []  # (block id, block index, local flat indices, cached rows or None)
        for s, e in zip(starts, ends):
            b = int(bid[s])
            block_index = tuple(int(i) for i in np.unravel_index(b, self.grid_shape))
            region = self.block_region(block_index)
            origin = np.array([r.start for r in region])
            local = np.ravel_multi_index(tuple((coords[s:e] - origin).T), tuple(r.stop - r.start for r in region))
            with self._lock:
                cached = self._rows.get(b)
            same = cached is not None and cached[0] == spec.epoch and np.array_equal(cached[1], local)
            groups.append((b, block_index, local, cached[2] if same and cached is not None else None))
        missing = [g[1] for g in groups if g[3] is None]
        if len(missing) > 1:  # features of the blocks whose rows are missing, in parallel
            self.map(lambda bi: self.block_features(bi, spec), missing)
        xs = []
        for b, block_index, local, rows in groups:
            if should_stop():
                return None
            if rows is None:
                feats = self.block_features(block_index, spec)
                rows = feats.reshape(-1, feats.shape[-1])[local]
                with self._lock:
                    self._rows[b] = (spec.epoch, local, rows)
            xs.append(rows)
        with self._lock:
            used = {g[0] for g in groups}
            for b in [b for b in self._rows if b not in used]:
                del self._rows[b]
        n_features = spec.selection.n_channels(2 if self.ndim == 2 or spec.mode == "2d" else 3, self.n_input_channels)
        x = np.concatenate(xs) if xs else np.zeros((0, n_features), np.float32)
        return x, labels.astype(np.int64)

    @property
    def n_input_channels(self) -> int:
        return 1 if self.channel_axis is None else int(self.image.shape[self.channel_axis])

    # ------------------------------------------------------------------ prediction
    def block_probabilities(
        self,
        block_index: tuple[int, ...],
        model: Any,
        key: Any,
        n_classes: int,
        spec: FeatureSpec,
        n_jobs: int | None = 1,
    ) -> np.ndarray:
        """Probabilities of one block, float32 (*block, n_classes), read-only, cached under ``key`` (the model's
        identity): classes added after the training get zero columns."""

        def compute() -> np.ndarray:
            feats = self.block_features(block_index, spec)
            p = model.predict_proba(feats.reshape(-1, feats.shape[-1]), n_jobs=n_jobs)
            if p.shape[1] < n_classes:
                p = np.concatenate([p, np.zeros((len(p), n_classes - p.shape[1]), np.float32)], axis=1)
            p = p.reshape(feats.shape[:-1] + (n_classes,))
            p.setflags(write=False)
            return p

        return self._probabilities.get_or_compute((key, n_classes, block_index), compute)

    def probabilities(
        self, region: tuple[slice, ...], model: Any, key: Any, n_classes: int, spec: FeatureSpec
    ) -> np.ndarray:
        """Probabilities of a (normalised) region, float32 (*region, n_classes): the blocks it touches in parallel."""
        blocks = self.blocks_for(region)
        out = np.empty(tuple(s.stop - s.start for s in region) + (n_classes,), np.float32)
        n_jobs = 1 if len(blocks) > 1 else None

        def work(block_index: tuple[int, ...]) -> None:
            breg = self.block_region(block_index)
            p = self.block_probabilities(block_index, model, key, n_classes, spec, n_jobs)
            lo = [max(r.start, b.start) for r, b in zip(region, breg)]
            hi = [min(r.stop, b.stop) for r, b in zip(region, breg)]
            out[tuple(slice(a - r.start, z - r.start) for a, z, r in zip(lo, hi, region))] = p[
                tuple(slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, breg))
            ]

        self.map(work, blocks)
        return out

    def precompute(
        self, regions: Iterable[tuple[slice, ...]], model: Any, key: Any, n_classes: int, spec: FeatureSpec
    ) -> None:
        """Compute and cache the probabilities of every block the regions touch, all in parallel."""
        blocks = list(dict.fromkeys(b for region in regions for b in self.blocks_for(region)))
        n_jobs = 1 if len(blocks) > 1 else None
        self.map(lambda block: self.block_probabilities(block, model, key, n_classes, spec, n_jobs), blocks)

    # ------------------------------------------------------------------ cache control
    def features_changed(self) -> None:
        """Drop the cached features and rows (the selection or mode changed)."""
        self._features.clear()
        with self._lock:
            self._rows.clear()

    def labels_replaced(self) -> None:
        with self._lock:
            self._rows.clear()

    def model_changed(self) -> None:
        self._probabilities.clear()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
