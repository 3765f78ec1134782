"""Features of one image computed only where they are needed, kept within a byte bound, and what they give: the
rows a classifier trains on and the class probabilities of any region.

Features are computed per *unit* and cached (least recently used first out, bounded in bytes):

- a **block** of the block grid, with :func:`~ilastik_widget.core.features.features_for_region` (the block plus the
  selection's halo): 2D images, and regions of volumes that are more than one voxel thick;
- a **plane tile** of a volume, with :func:`~ilastik_widget.core.planes.planes_features`: an up to
  :data:`PLANE_TILE` x :data:`PLANE_TILE` piece of one axis-aligned plane, exactly the 3D features there, computed
  from the slab of planes the filters reach instead of whole blocks around it. A viewer's panel shows planes, and
  strokes lie in planes, so interactive work on volumes costs about what the same pixels cost in 2D.

Training rows are gathered per unit and kept, so a new stroke gathers rows again only for the units whose labels
changed; on volumes the labelled voxels are covered by as few planes as a greedy cover finds (strokes lie in the
plane of their panel; oblique ones in several planes of the nearest axis). Unit probabilities are cached per model.

Every method takes a :class:`FeatureSpec` snapshot: a training or prediction that started before the selection
changed keeps computing the features its model was made for.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache import ByteLRU
from .features import FeatureSelection, all_finite, check_request, features_for_region, too_large_for_float32
from .planes import GradientCache, SlabCache, compile_soon, planes_features

#: In-plane size of a plane tile (a 512 x 512 slice of a volume is one tile).
PLANE_TILE = 512
#: Plane tiles whose features are kept per axis and in-plane position: those of the planes used last there. Scrolling
#: predicts a new plane per slice, and a new model re-predicts only the planes in view, so the features of planes
#: scrolled past are seldom used again; kept until the byte bound, 16 slices of 512 x 512 (1 GiB) would each take
#: fresh memory. Planes computed together (a training on strokes in many planes) are all kept. The gradient planes of
#: the structure tensor follow the same count (``GradientCache(planes_kept=...)``).
PLANES_KEPT_PER_AXIS = 4

#: ("block", block index) or ("plane", axis, index, (tile row, tile column)).
Unit = tuple


@dataclass(frozen=True)
class FeatureSpec:
    """What the features of a session are at one moment: ``epoch`` changes with every change of the others."""

    epoch: int
    selection: FeatureSelection
    mode: str
    voxel_size: tuple[float, ...] | None = None
    #: the input channels features are computed on (None: all)
    channels: tuple[int, ...] | None = None


class ChannelSubset:
    """Some channels of an image, read lazily: what the filter bank sees when the classifier uses only those."""

    def __init__(self, image: Any, channel_axis: int, channels: tuple[int, ...]):
        self.image, self.channel_axis, self.channels = image, channel_axis, list(channels)
        shape = list(image.shape)
        shape[channel_axis] = len(channels)
        self.shape, self.dtype, self.ndim = tuple(shape), image.dtype, len(shape)

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index)
        block = np.asarray(self.image[index[: self.channel_axis] + (slice(None),) + index[self.channel_axis + 1 :]])
        return np.take(block, self.channels, axis=self.channel_axis)[
            (slice(None),) * self.channel_axis + (index[self.channel_axis],)
        ]


def plane_cover(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(axis, index) per voxel of a few axis-aligned planes covering every voxel of ``coords`` (M, 3).

    Greedy: the plane holding the most voxels not yet covered first (ties: the lowest axis, then index), so strokes
    painted on one panel's plane are covered by that plane.
    """
    m = len(coords)
    axis_of = np.zeros(m, np.int64)
    index_of = np.zeros(m, np.int64)
    remaining = np.ones(m, bool)
    while remaining.any():
        best = (-1, 0, 0)
        for axis in range(coords.shape[1]):
            counts = np.bincount(coords[remaining, axis])
            index = int(counts.argmax())
            if counts[index] > best[0]:
                best = (int(counts[index]), axis, index)
        _, axis, index = best
        hit = remaining & (coords[:, axis] == index)
        axis_of[hit], index_of[hit] = axis, index
        remaining &= ~hit
    return axis_of, index_of


class FeatureStore:
    """Block and plane-tile features of ``image`` with caches of features, training rows and probabilities.

    Parameters
    ----------
    image : array-like
        Anything with ``shape``, ``dtype`` and numpy slicing; read a unit (plus what its filters reach) at a time.
    channel_axis : int or None
    spatial_shape : tuple of int
    block_shape : tuple of int
        Clipped to the image.
    cache_bytes : int
        Bound of the feature cache; probabilities get a further quarter of it.
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
        self._rows: dict[Unit, tuple[int, np.ndarray, np.ndarray]] = {}  # unit -> (epoch, local indices, rows)
        self._recent: dict[tuple, OrderedDict[int, None]] = {}  # (axis, tile) -> plane indices, least recent first
        self._gradients = GradientCache(planes_kept=PLANES_KEPT_PER_AXIS)
        self._slabs = SlabCache()
        self._lock = threading.Lock()
        if self.ndim == 3:
            compile_soon()  # the plane engine's compiled loops, ready before the first plane of the volume
        self._pool: ThreadPoolExecutor | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held by the feature cache."""
        return self._features.nbytes

    def _input(self, spec: FeatureSpec) -> Any:
        """The image the features of ``spec`` are computed on."""
        if spec.channels is None or self.channel_axis is None:
            return self.image
        return ChannelSubset(self.image, self.channel_axis, spec.channels)

    def n_features(self, spec: FeatureSpec) -> int:
        """Feature channels per pixel of ``spec``."""
        image = self._input(spec)
        return check_request(
            image.shape, image.dtype, spec.selection, self.channel_axis, spec.mode, spec.voxel_size
        ).n_channels

    # ------------------------------------------------------------------ units
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

    def unit_region(self, unit: Unit) -> tuple[slice, ...]:
        """The region (slices, clipped to the image) of a unit: a block, or a tile of one plane."""
        if unit[0] == "block":
            return self.block_region(unit[1])
        _, axis, index, tile = unit
        inplane = [a for a in range(self.ndim) if a != axis]
        region = [slice(index, index + 1)] * self.ndim
        for a, t in zip(inplane, tile):
            region[a] = slice(t * PLANE_TILE, min((t + 1) * PLANE_TILE, self.spatial_shape[a]))
        return tuple(region)

    def units_for(self, region: tuple[slice, ...]) -> list[Unit]:
        """The units whose features cover a (normalised) region: plane tiles when it is one voxel thick along an axis
        of a volume, blocks otherwise."""
        thin = [a for a, s in enumerate(region) if s.stop - s.start == 1]
        if self.ndim != 3 or not thin:
            return [("block", b) for b in self.blocks_for(region)]
        axis = thin[0]
        ranges = [
            range(s.start // PLANE_TILE, (s.stop - 1) // PLANE_TILE + 1) for a, s in enumerate(region) if a != axis
        ]
        return [("plane", axis, region[axis].start, tile) for tile in itertools.product(*ranges)]

    def units_of(self, regions: Iterable[tuple[slice, ...]]) -> list[Unit]:
        """The units the (normalised) regions touch, each once, in the order the regions first touch them."""
        return list(dict.fromkeys(u for region in regions for u in self.units_for(region)))

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` on the worker threads (items never wait on the pool, so this cannot deadlock)."""
        if len(items) <= 1 or self.n_threads == 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.n_threads, thread_name_prefix="ilastik-worker")
            pool = self._pool
        return [f.result() for f in [pool.submit(fn, i) for i in items]]

    # ------------------------------------------------------------------ features
    def _checked(self, feats: np.ndarray, region: tuple[slice, ...], finite: bool = False) -> np.ndarray:
        """``feats`` as a read-only contiguous float32 array, checked for overflow unless ``finite`` says that its
        maker checked already (:func:`planes_features` does, on the pool)."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if not finite and not all_finite(feats):
            raise too_large_for_float32(_where(region))
        feats.setflags(write=False)
        return feats

    def block_features(self, block_index: tuple[int, ...], spec: FeatureSpec) -> np.ndarray:
        """Features of a whole block, float32 (*block, C), read-only, from the cache or computed now."""
        if spec.selection.is_empty:
            raise ValueError("no features are selected: select at least one feature")
        region = self.block_region(block_index)

        def compute() -> np.ndarray:
            try:
                feats = features_for_region(
                    self._input(spec),
                    region,
                    spec.selection,
                    channel_axis=self.channel_axis,
                    mode=spec.mode,
                    voxel_size=spec.voxel_size,
                )
            except ValueError as exc:
                raise ValueError(f"{exc} (found while computing features of the region [{_where(region)}])") from exc
            return self._checked(feats, region)

        return self._features.get_or_compute((spec.epoch, "block", block_index), compute)

    def unit_features(self, units: Sequence[Unit], spec: FeatureSpec) -> list[np.ndarray]:
        """Features of each unit, float32 (*unit region, C), read-only; the missing plane tiles computed together.

        A plane tile that another call is computing at the same time (a training while the features of the view are
        computed ahead, two panels asking for one plane) is waited for instead of computed twice.
        """
        if spec.selection.is_empty:
            raise ValueError("no features are selected: select at least one feature")
        out: dict[Unit, np.ndarray] = {}
        missing = []
        for unit in units:
            if unit[0] == "block":
                continue
            cached = self._features.get((spec.epoch, *unit))
            if cached is None:
                missing.append(unit)
            else:
                out[unit] = cached
        planes = [u for u in units if u[0] == "plane"]
        computed = bool(missing)
        while missing:
            unit_of = {(spec.epoch, *unit): unit for unit in missing}
            claimed, theirs = self._features.claim(unit_of)
            mine = [unit_of[key] for key in claimed]
            try:
                out.update(zip(mine, self._compute_planes(mine, spec)))
            finally:
                self._features.release(claimed)
            for _, done in theirs:  # computed by another call (a training, the features of the view computed ahead)
                done.wait()
            # what the others computed (one that failed or was not kept is computed by this call on the next round)
            missing = [u for u in missing if u not in out and not self._take_cached(u, spec, out)]
        if planes:
            self._used(spec.epoch, planes, computed)
        blocks = [u for u in units if u[0] == "block"]
        if len(blocks) > 1:
            self.map(lambda u: self.block_features(u[1], spec), blocks)
        for unit in blocks:
            out[unit] = self.block_features(unit[1], spec)
        return [out[u] for u in units]

    def _take_cached(self, unit: Unit, spec: FeatureSpec, out: dict[Unit, np.ndarray]) -> bool:
        cached = self._features.get((spec.epoch, *unit))
        if cached is not None:
            out[unit] = cached
        return cached is not None

    def _compute_planes(self, units: list[Unit], spec: FeatureSpec) -> list[np.ndarray]:
        """Features of plane tiles, computed together with :func:`planes_features` and cached."""
        if not units:
            return []
        requests: list[tuple[int, int, tuple[slice, slice] | None]] = []
        for unit in units:
            axis, index = unit[1], unit[2]
            rows, cols = (s for a, s in enumerate(self.unit_region(unit)) if a != axis)
            requests.append((axis, index, (rows, cols)))
        try:
            computed = planes_features(
                self._input(spec),
                requests,
                spec.selection,
                channel_axis=self.channel_axis,
                mode=spec.mode,
                voxel_size=spec.voxel_size,
                gradient_cache=self._gradients,
                slab_cache=self._slabs,
            )
        except ValueError as exc:
            where = _where(self.unit_region(units[0]))
            raise ValueError(f"{exc} (found while computing features of the plane region [{where}])") from exc
        out = []
        for unit, feats in zip(units, computed):
            feats = self._checked(np.expand_dims(feats, unit[1]), self.unit_region(unit), finite=True)
            self._features.put((spec.epoch, *unit), feats)
            out.append(feats)
        return out

    def _used(self, epoch: int, units: list[Unit], computed: bool) -> None:
        """Note that the plane tiles ``units`` of one call were used; when the call ``computed`` some, drop the
        features of the planes beyond :data:`PLANES_KEPT_PER_AXIS` used last at the same axis and in-plane position,
        never those of the call."""
        drop = []
        with self._lock:
            for _, axis, index, tile in units:
                recent = self._recent.setdefault((axis, tile), OrderedDict())
                recent.pop(index, None)
                recent[index] = None
            if computed:
                for axis, tile in dict.fromkeys((u[1], u[3]) for u in units):
                    recent = self._recent[(axis, tile)]
                    mine = {u[2] for u in units if u[1] == axis and u[3] == tile}
                    for old in [i for i in recent if i not in mine][: max(0, len(recent) - PLANES_KEPT_PER_AXIS)]:
                        del recent[old]
                        drop.append((epoch, "plane", axis, old, tile))
        for key in drop:
            self._features.pop(key)

    def has_features(self, units: Iterable[Unit], spec: FeatureSpec) -> bool:
        """Whether the features of every unit are cached now."""
        return all((spec.epoch, *unit) in self._features for unit in units)

    # ------------------------------------------------------------------ training rows
    def _training_units(self, coords: np.ndarray) -> tuple[list[Unit], np.ndarray]:
        """The units covering labelled voxels ``coords`` (M, ndim) and the unit number of each voxel."""
        if self.ndim == 3:
            axis_of, index_of = plane_cover(coords)
            inplane = np.array([[a for a in range(3) if a != axis] for axis in range(3)])[axis_of]
            tiles = np.take_along_axis(coords, inplane, axis=1) // PLANE_TILE
            keys = np.column_stack([axis_of, index_of, tiles])
            rows, inverse = np.unique(keys, axis=0, return_inverse=True)
            units: list[Unit] = [("plane", int(r[0]), int(r[1]), (int(r[2]), int(r[3]))) for r in rows]
        else:
            keys = coords // np.array(self.block_shape)
            rows, inverse = np.unique(keys, axis=0, return_inverse=True)
            units = [("block", tuple(int(i) for i in r)) for r in rows]
        return units, inverse.reshape(-1)

    def training_rows(
        self, flat: np.ndarray, labels: np.ndarray, spec: FeatureSpec, should_stop: Callable[[], bool]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Feature rows (N, C) float32 and labels (N,) int64 of the labelled voxels ``flat`` (flat indices).

        Rows of a unit are reused when its labelled voxels did not move (relabelling the same voxels only changes the
        labels). ``should_stop()`` is asked between units: when it says True, None is returned (it may also raise to
        abandon the gathering).
        """
        coords = np.stack(np.unravel_index(flat, self.spatial_shape), axis=1)
        units, unit_of = self._training_units(coords)
        order = np.argsort(unit_of, kind="stable")  # units ascending, voxels in C order within: deterministic
        unit_of, coords, labels = unit_of[order], coords[order], labels[order]
        bounds = np.searchsorted(unit_of, np.arange(len(units) + 1))
        groups = []  # (unit, local flat indices, cached rows or None)
        for u, unit in enumerate(units):
            region = self.unit_region(unit)
            origin = np.array([r.start for r in region])
            local = np.ravel_multi_index(
                tuple((coords[bounds[u] : bounds[u + 1]] - origin).T), tuple(r.stop - r.start for r in region)
            )
            with self._lock:
                cached = self._rows.get(unit)
            same = cached is not None and cached[0] == spec.epoch and np.array_equal(cached[1], local)
            groups.append((unit, local, cached[2] if same and cached is not None else None))
        missing = [g[0] for g in groups if g[2] is None]
        if len(missing) > 1:  # features of the units whose rows are missing, together
            self.unit_features(missing, spec)
        xs = []
        for unit, local, rows in groups:
            if should_stop():
                return None
            if rows is None:
                (feats,) = self.unit_features([unit], spec)
                rows = feats.reshape(-1, feats.shape[-1])[local]
                with self._lock:
                    self._rows[unit] = (spec.epoch, local, rows)
            xs.append(rows)
        with self._lock:
            for unit in [u for u in self._rows if u not in set(units)]:
                del self._rows[unit]
        x = np.concatenate(xs) if xs else np.zeros((0, self.n_features(spec)), np.float32)
        return x, labels.astype(np.int64)

    # ------------------------------------------------------------------ prediction
    def unit_probabilities(
        self, unit: Unit, model: Any, key: Any, n_classes: int, spec: FeatureSpec, n_jobs: int | None = 1
    ) -> np.ndarray:
        """Probabilities of one unit, float32 (*unit region, n_classes), read-only, cached under ``key`` (the model's
        identity): classes added after the training get zero columns."""

        def compute() -> np.ndarray:
            (feats,) = self.unit_features([unit], spec)
            p = model.predict_proba(feats.reshape(-1, feats.shape[-1]), n_jobs=n_jobs)
            if p.shape[1] < n_classes:
                p = np.concatenate([p, np.zeros((len(p), n_classes - p.shape[1]), np.float32)], axis=1)
            p = p.reshape(feats.shape[:-1] + (n_classes,))
            p.setflags(write=False)
            return p

        return self._probabilities.get_or_compute((key, n_classes, *unit), compute)

    def probabilities(
        self, region: tuple[slice, ...], model: Any, key: Any, n_classes: int, spec: FeatureSpec
    ) -> np.ndarray:
        """Probabilities of a (normalised) region, float32 (*region, n_classes), from the units it touches."""
        units = self.units_for(region)
        self._prepare(units, model, key, n_classes, spec)
        out = np.empty(tuple(s.stop - s.start for s in region) + (n_classes,), np.float32)
        n_jobs = 1 if len(units) > 1 else None

        def work(unit: Unit) -> None:
            ureg = self.unit_region(unit)
            p = self.unit_probabilities(unit, model, key, n_classes, spec, n_jobs)
            lo = [max(r.start, b.start) for r, b in zip(region, ureg)]
            hi = [min(r.stop, b.stop) for r, b in zip(region, ureg)]
            out[tuple(slice(a - r.start, z - r.start) for a, z, r in zip(lo, hi, region))] = p[
                tuple(slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, ureg))
            ]

        self.map(work, units)
        return out

    def _prepare(self, units: list[Unit], model: Any, key: Any, n_classes: int, spec: FeatureSpec) -> None:
        """Compute the features of the plane tiles among ``units`` whose probabilities are not cached, together."""
        planes = [u for u in units if u[0] == "plane" and self._probabilities.get((key, n_classes, *u)) is None]
        if len(planes) > 1:
            self.unit_features(planes, spec)

    def precompute(
        self, regions: Iterable[tuple[slice, ...]], model: Any, key: Any, n_classes: int, spec: FeatureSpec
    ) -> None:
        """Compute and cache the probabilities of every unit the regions touch, all in parallel."""
        units = self.units_of(regions)
        self._prepare(units, model, key, n_classes, spec)
        n_jobs = 1 if len(units) > 1 else None
        self.map(lambda unit: self.unit_probabilities(unit, model, key, n_classes, spec, n_jobs), units)

    # ------------------------------------------------------------------ cache control
    def features_changed(self) -> None:
        """Drop the cached features, rows, gradient planes and source slabs (the selection, mode, voxel size or
        channels changed: gradient planes and slabs are kept per input channel number, which changes with the
        channels)."""
        self._features.clear()
        self._gradients = GradientCache(planes_kept=PLANES_KEPT_PER_AXIS)
        self._slabs = SlabCache()
        with self._lock:
            self._recent.clear()
            self._rows.clear()

    def labels_replaced(self) -> None:
        """Drop the cached training rows (the labels were replaced)."""
        with self._lock:
            self._rows.clear()

    def model_changed(self) -> None:
        """Drop the cached probabilities (the predictions changed: a new model, or a class added or removed)."""
        self._probabilities.clear()

    def close(self) -> None:
        """Stop the worker threads; computations not yet started are cancelled."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _where(region: tuple[slice, ...]) -> str:
    return ", ".join(f"{s.start}:{s.stop}" for s in region)
