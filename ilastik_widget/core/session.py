"""The interactive pixel classification session: labels + lazy block-wise features + a Random Forest.

>>> from ilastik_widget.datasets import synthetic_cells
>>> image, truth = synthetic_cells((256, 256))
>>> s = Session(image)
>>> s.add_stroke(1, [[10, 10], [10, 60]], radius=3)   # class 1 ("Background"), (y, x) points
1
>>> s.add_stroke(2, [[128, 128]], radius=3)
2
>>> s.train().predict((slice(0, 64), slice(0, 64))).shape
(64, 64, 2)

The image is divided into a grid of blocks.  Features are computed per block with
:func:`ilastik_widget.core.features.features_for_region` only for blocks that hold labels (training) or
that are asked for (prediction), and kept in an LRU cache bounded in bytes.  The training set is
kept per block, so a new stroke re-gathers feature rows only for the blocks whose labels changed.

Thread-safety
-------------
State lives behind one re-entrant lock (``_lock``) that is only held for short bookkeeping, never
while features are computed, a forest is fitted, a block is predicted or a cache entry is awaited.
The caches' own locks are leaves (nothing else is acquired while holding one), and the order is
always session lock -> annotations lock -> cache lock, so the locks cannot deadlock.  Work items
on the worker pool never wait on the pool.  Background
training runs on one worker thread; every training checks, before installing its model, that the
labels, classes and features it used are still the current ones, and starts over on the newest
labels when they are not (a newer ``train_async`` call or ``cancel_training`` stops it instead).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .annotations import Annotations, LabelClass, Stroke, normalize_region
from .classifier import ACCURATE, INTERACTIVE, PixelClassifier

__all__ = ["Session", "TrainingCancelled"]

log = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised inside a background training that was cancelled or superseded (never escapes)."""


class _LRUCache:
    """A thread-safe LRU mapping bounded in bytes, computing each missing key once.

    Values larger than the bound are returned but not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._data: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._inflight: dict[Any, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def get_or_compute(self, key: Any, compute: Callable[[], np.ndarray]) -> np.ndarray:
        while True:
            with self._lock:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                    return value
                event = self._inflight.get(key)
                owner = event is None
                if owner:
                    event = self._inflight[key] = threading.Event()
            if not owner:
                # Another thread computes this key: wait, then look again (it may have failed or
                # been too large to keep, in which case this thread computes it).
                event.wait()
                continue
            try:
                value = compute()
                self._put(key, value)
                return value
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
                event.set()

    def _put(self, key: Any, value: np.ndarray) -> None:
        size = int(value.nbytes)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= int(old.nbytes)
            self._data[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._data.popitem(last=False)
                self.nbytes -= int(dropped.nbytes)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def keys(self) -> list:
        with self._lock:
            return list(self._data)


class _Job:
    """Handle of one background training; ``cancelled`` is set by a newer request or cancel_training."""

    def __init__(self) -> None:
        self.cancelled = False


def _check_image_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        raise ValueError("boolean images are not supported: convert to an integer or float type first")
    if dt.kind not in "iuf":
        raise ValueError(f"unsupported image dtype {dt}: the image must hold integers or floats")
    return dt


class Session:
    """Interactive pixel classification of one image.

    Parameters
    ----------
    image : array-like or ImageSource
        2D (y, x) or 3D (z, y, x) image, optionally with a channel axis; numpy, zarr, dask or anything
        with ``shape``, ``dtype`` and slicing (read block by block, never whole).  An
        :class:`~ilastik_widget.io.sources.ImageSource` is accepted too (its ``array`` and channel axis are used).
    channel_axis : int, optional
        Axis of ``image`` holding channels (may be negative).
    classes : sequence of str
        Initial class names.
    features : FeatureSelection or dict, optional
        Feature selection; default all features at all scales.
    seed : int
        Random seed of the classifier: the same labels and seed give the same predictions.
    feature_mode : {"3d", "2d"}
        On volumes, 3D filters or slice-wise 2D filters.
    classifier : PixelClassifier or dict or {"interactive", "accurate"}, optional
        Classifier parameters (a template; the session fits its own copies).  Default
        :data:`~ilastik_widget.core.classifier.INTERACTIVE`; a dict without ``"seed"`` and the preset names
        take ``seed``, a PixelClassifier keeps its own.
    block_shape : sequence of int, optional
        Block grid for features and predictions; default (256, 256) in 2D and (64, 64, 64) in 3D (the
        chunk sizes of the viewer).  Each block is computed with the selection's halo (53 pixels per
        side for all features), so larger 3D blocks such as (64, 128, 128) cost less per voxel (measured
        ~1.7x) at about twice the peak memory (~3 GB per block and thread for all 61 3D features).
    cache_bytes : int
        Bound of the feature cache in bytes (block predictions get a further quarter of it).
    n_threads : int, optional
        Threads that predict blocks in parallel (default: the number of cores, at most 4).
    """

    def __init__(
        self,
        image: Any,
        channel_axis: int | None = None,
        classes: Iterable[Any] = ("Background", "Foreground"),
        features: Any = None,
        seed: int = 0,
        feature_mode: str = "3d",
        classifier: PixelClassifier | dict | None = None,
        block_shape: Sequence[int] | None = None,
        cache_bytes: int = 2**30,
        n_threads: int | None = None,
    ) -> None:
        from .features import FeatureSelection  # noqa: F401  (fail early if the filter bank is missing)

        self.source = None
        if hasattr(image, "array") and hasattr(image, "spatial_shape") and hasattr(image, "axes"):
            if getattr(image, "time_axis", None) is not None:
                raise ValueError(
                    f"the image is a time series of {image.n_times} time points: train on one, e.g. "
                    f"open_source(..., t=0) or source.at_time(0), and predict the others in batch"
                )
            self.source = image
            if channel_axis is None:
                channel_axis = getattr(image, "channel_axis", None)
            image = image.array
        if not (hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__")):
            image = np.asarray(image)
        self.image = image
        shape = tuple(int(n) for n in image.shape)
        _check_image_dtype(image.dtype)
        if channel_axis is not None:
            if isinstance(channel_axis, bool) or not -len(shape) <= int(channel_axis) < len(shape):
                raise ValueError(f"channel_axis {channel_axis!r} is out of range for an image of shape {shape}")
            channel_axis = int(channel_axis) % len(shape)
        self.channel_axis: int | None = channel_axis
        spatial = tuple(n for i, n in enumerate(shape) if i != channel_axis)
        if len(spatial) not in (2, 3):
            hint = " (pass channel_axis for a multi-channel image)" if channel_axis is None and len(shape) == 4 else ""
            raise ValueError(
                f"unsupported dimensionality: the image needs 2 or 3 spatial axes, got shape {shape} "
                f"with channel_axis={channel_axis}{hint}"
            )
        if any(n == 0 for n in spatial):
            raise ValueError(f"the image is empty (shape {shape})")
        self.spatial_shape: tuple[int, ...] = spatial
        self.ndim: int = len(spatial)
        self.n_input_channels: int = shape[channel_axis] if channel_axis is not None else 1
        if feature_mode not in ("2d", "3d"):
            raise ValueError(f'feature_mode must be "2d" or "3d", got {feature_mode!r}')
        self._feature_mode = feature_mode
        self.seed = int(seed)

        self._annotations = Annotations(spatial, classes)
        self._annotations_epoch = 0  # bumps when the annotations object is replaced
        self._selection = self._as_selection(features)
        if classifier is None or (isinstance(classifier, str) and classifier.lower() == "interactive"):
            classifier = PixelClassifier(**{**INTERACTIVE, "seed": self.seed})
        elif isinstance(classifier, str) and classifier.lower() == "accurate":
            classifier = PixelClassifier(**{**ACCURATE, "seed": self.seed})
        elif isinstance(classifier, dict):
            classifier = PixelClassifier.from_params({"seed": self.seed, **classifier})
        elif not isinstance(classifier, PixelClassifier):
            raise ValueError(
                f"classifier must be a PixelClassifier, a dict of its parameters, 'interactive', "
                f"'accurate' or None, got {classifier!r}"
            )
        self._template = classifier.clone()

        if block_shape is None:
            block_shape = (256, 256) if self.ndim == 2 else (64, 64, 64)
        block_shape = tuple(int(b) for b in block_shape)
        if len(block_shape) != self.ndim or any(b < 1 for b in block_shape):
            raise ValueError(f"block_shape must have {self.ndim} positive sizes, got {block_shape}")
        self.block_shape: tuple[int, ...] = tuple(min(b, n) for b, n in zip(block_shape, spatial))
        self.grid_shape: tuple[int, ...] = tuple(math.ceil(n / b) for n, b in zip(spatial, self.block_shape))

        self._lock = threading.RLock()
        self._features = _LRUCache(cache_bytes)
        self._predictions = _LRUCache(max(int(cache_bytes) // 4, 1))
        self._epoch = 0  # bumps when the features change (selection, mode)
        self._classes_epoch = 0  # bumps when class numbering changes (removal)
        self._classifier_epoch = 0  # bumps when the classifier settings change
        self._generation = 0  # bumps whenever predictions may change
        self._rows: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # block id -> (epoch, local idx, X rows)
        self._model: PixelClassifier | None = None
        self._model_key: tuple | None = None
        self._model_invalid_reason = ""
        self._job: _Job | None = None
        self._listeners: list[Callable[..., None]] = []
        self._n_threads = int(n_threads or min(4, os.cpu_count() or 1))
        self._train_pool: ThreadPoolExecutor | None = None
        self._predict_pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ small helpers
    @staticmethod
    def _as_selection(features: Any):
        from .features import FeatureSelection

        if features is None:
            return FeatureSelection.default()
        if isinstance(features, FeatureSelection):
            return features
        if isinstance(features, dict):
            return FeatureSelection.from_dict(features)
        raise ValueError(f"features must be a FeatureSelection, a dict or None, got {type(features).__name__}")

    def _notify(self, event: str, **info: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, **info)
            except Exception:  # a broken listener must not break the session
                log.exception("ilastik_widget: session listener failed on %r", event)

    def add_listener(self, fn: Callable[..., None]) -> None:
        """Call ``fn(event, **info)`` on "labels", "classes", "features", "trained" and "error"."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[..., None]) -> None:
        """Stop calling ``fn``."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _bump_generation(self) -> int:
        with self._lock:
            self._generation += 1
            self._predictions.clear()
            return self._generation

    # ------------------------------------------------------------------ properties
    @property
    def annotations(self) -> Annotations:
        """Classes and strokes (assigning a new :class:`Annotations` of the same shape replaces them)."""
        return self._annotations

    @annotations.setter
    def annotations(self, value: Annotations) -> None:
        if not isinstance(value, Annotations) or tuple(value.shape) != self.spatial_shape:
            raise ValueError(f"annotations must be an Annotations object of shape {self.spatial_shape}")
        with self._lock:
            # The installed model stays usable (until retrained) only when the classes are the same.
            same_classes = [c.name for c in value.classes] == [c.name for c in self._annotations.classes]
            self._annotations = value
            self._annotations_epoch += 1
            self._rows.clear()
            if not same_classes:
                self._invalidate_model("the classes were replaced")
        self._bump_generation()
        self._notify("classes", classes=self._class_dicts(), generation=self._generation)
        self._notify("labels", version=value.version)

    @property
    def generation(self) -> int:
        """Changes with every change that alters predictions (new model, features, classes)."""
        return self._generation

    @property
    def classes(self) -> list[LabelClass]:
        return self.annotations.classes

    @property
    def n_classes(self) -> int:
        return self.annotations.n_classes

    @property
    def strokes(self) -> list[Stroke]:
        """The stroke records (id, label, points, radius, axes, erase), oldest first."""
        return list(self.annotations.strokes)

    @property
    def classifier(self) -> PixelClassifier:
        """The classifier template (its parameters; unfitted)."""
        return self._template

    @classifier.setter
    def classifier(self, value: PixelClassifier | dict) -> None:
        template = PixelClassifier.from_params(value) if isinstance(value, dict) else value.clone()
        with self._lock:
            self._template = template
            self._classifier_epoch += 1
            self._invalidate_model("the classifier settings changed")
        self._bump_generation()

    @property
    def model(self) -> PixelClassifier | None:
        """The fitted classifier that predictions use (None before training)."""
        return self._model

    @property
    def is_trained(self) -> bool:
        """True when a model is installed (it may predate the newest labels: see ``needs_training``)."""
        return self._model is not None

    @property
    def needs_training(self) -> bool:
        """True when the installed model (if any) was not trained on the current labels and features."""
        with self._lock:
            return self._model is None or self._model_key != self._state_key()

    @property
    def feature_selection(self):
        return self._selection

    @feature_selection.setter
    def feature_selection(self, value: Any) -> None:
        selection = self._as_selection(value)
        with self._lock:
            if selection == self._selection:
                return
            self._selection = selection
            self._features_changed()
        self._notify("features", selection=selection.to_dict(), generation=self._generation)

    @property
    def feature_mode(self) -> str:
        return self._feature_mode

    @feature_mode.setter
    def feature_mode(self, mode: str) -> None:
        if mode not in ("2d", "3d"):
            raise ValueError(f'feature_mode must be "2d" or "3d", got {mode!r}')
        with self._lock:
            if mode == self._feature_mode:
                return
            self._feature_mode = mode
            self._features_changed()
        self._notify("features", selection=self._selection.to_dict(), generation=self._generation)

    def _features_changed(self) -> None:
        self._epoch += 1
        self._features.clear()
        self._rows.clear()
        self._invalidate_model("the feature selection changed")
        self._bump_generation()

    def _invalidate_model(self, reason: str) -> None:
        self._model = None
        self._model_key = None
        self._model_invalid_reason = reason

    @property
    def n_features(self) -> int:
        """Feature channels per pixel for the current selection."""
        fdim = 2 if (self.ndim == 2 or self._feature_mode == "2d") else 3
        return self._selection.n_channels(fdim, self.n_input_channels)

    @property
    def cache_nbytes(self) -> int:
        """Bytes currently held by the feature cache."""
        return self._features.nbytes

    # ------------------------------------------------------------------ labels
    def add_stroke(
        self, label: int, points: Any, radius: float = 2, axes: Sequence[int] | None = None, erase: bool = False
    ) -> int:
        """Paint (or erase) a stroke; returns its id.  See :meth:`Annotations.add_stroke`."""
        sid = self.annotations.add_stroke(label, points, radius, axes, erase)
        self._notify("labels", version=self.annotations.version, stroke_id=sid)
        return sid

    def remove_stroke(self, stroke_id: int) -> None:
        """Remove a stroke by id (undoable)."""
        self.annotations.remove_stroke(stroke_id)
        self._notify("labels", version=self.annotations.version, stroke_id=stroke_id)

    def undo(self) -> bool:
        """Undo the last stroke addition or removal."""
        done = self.annotations.undo()
        if done:
            self._notify("labels", version=self.annotations.version)
        return done

    def redo(self) -> bool:
        """Redo the last undone stroke action."""
        done = self.annotations.redo()
        if done:
            self._notify("labels", version=self.annotations.version)
        return done

    def labels(self, region: Any = None) -> np.ndarray:
        """Dense uint8 labels of a region (0 = unlabelled)."""
        return self.annotations.labels(region)

    def labelled(self, region: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Sparse labels: (coords (M, ndim) int64, labels (M,) uint8)."""
        return self.annotations.labelled(region)

    # ------------------------------------------------------------------ classes
    def add_class(self, name: str, color: str | None = None) -> int:
        """Add a class (its probability column is 0 until the next training)."""
        label = self.annotations.add_class(name, color)
        self._bump_generation()  # predictions gain a column
        self._notify("classes", classes=self._class_dicts(), generation=self._generation)
        return label

    def rename_class(self, label: int, name: str) -> None:
        self.annotations.rename_class(label, name)
        self._notify("classes", classes=self._class_dicts(), generation=self._generation)

    def recolor_class(self, label: int, color: str) -> None:
        self.annotations.recolor_class(label, color)
        self._notify("classes", classes=self._class_dicts(), generation=self._generation)

    def remove_class(self, label: int) -> None:
        """Remove a class and its strokes; later classes are renumbered; the model must be retrained."""
        with self._lock:
            self.annotations.remove_class(label)
            self._classes_epoch += 1
            self._invalidate_model("a class was removed")
        self._bump_generation()
        self._notify("classes", classes=self._class_dicts(), generation=self._generation)
        self._notify("labels", version=self.annotations.version)

    def _class_dicts(self) -> list[dict[str, str]]:
        return [{"name": c.name, "color": c.color} for c in self.classes]

    # ------------------------------------------------------------------ blocks
    @property
    def n_blocks(self) -> int:
        return math.prod(self.grid_shape)

    def block_region(self, block_index: Sequence[int]) -> tuple[slice, ...]:
        """The region (slices, clipped to the image) of a block given by its grid index."""
        idx = tuple(int(i) for i in block_index)
        if len(idx) != self.ndim or any(not 0 <= i < g for i, g in zip(idx, self.grid_shape)):
            raise ValueError(f"block index {idx} is outside the block grid {self.grid_shape}")
        return tuple(slice(i * b, min((i + 1) * b, n)) for i, b, n in zip(idx, self.block_shape, self.spatial_shape))

    def blocks_for(self, region: Any = None) -> list[tuple[int, ...]]:
        """Grid indices of the blocks a region touches, in C order."""
        region = normalize_region(region, self.spatial_shape)
        ranges = [range(s.start // b, (s.stop - 1) // b + 1) for s, b in zip(region, self.block_shape)]
        return list(itertools.product(*ranges))

    def _feature_spec(self) -> tuple:
        """(epoch, selection, mode) of the current features, read together."""
        with self._lock:
            return self._epoch, self._selection, self._feature_mode

    def _block_features(self, block_index: tuple[int, ...], spec: tuple | None = None) -> np.ndarray:
        """Features of a whole block, float32 (*block, C), from the cache or computed now.

        ``spec`` is a :meth:`_feature_spec` snapshot: a training or prediction that started before a
        selection change keeps computing the features its model was made for.
        """
        from .features import features_for_region

        epoch, selection, mode = self._feature_spec() if spec is None else spec
        if selection.is_empty:
            raise ValueError("no features are selected: select at least one feature")
        region = self.block_region(block_index)

        def compute() -> np.ndarray:
            try:
                feats = features_for_region(self.image, region, selection, channel_axis=self.channel_axis, mode=mode)
            except ValueError as exc:
                where = ", ".join(f"{s.start}:{s.stop}" for s in region)
                raise ValueError(f"{exc} (found while computing features of the region [{where}])") from exc
            feats = np.ascontiguousarray(feats, dtype=np.float32)
            feats.setflags(write=False)
            return feats

        return self._features.get_or_compute((epoch, block_index), compute)

    # ------------------------------------------------------------------ training
    def _state_key(self) -> tuple:
        # What a model depends on: labels, class numbering, features, classifier settings.
        return (
            self._annotations_epoch,
            self.annotations.labels_version,
            self._classes_epoch,
            self._epoch,
            self._classifier_epoch,
            self.n_classes,
        )

    def _training_set(
        self, flat: np.ndarray, lab: np.ndarray, spec: tuple, job: _Job | None, key: tuple
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Feature rows (N, C) float32 and labels (N,) of all labelled voxels, block by block.

        Rows of a block are reused when its labelled voxels did not move (relabelling the same
        voxels only changes ``y``).  Returns None when the labels changed meanwhile.
        """
        epoch = spec[0]
        coords = np.stack(np.unravel_index(flat, self.spatial_shape), axis=1)
        bid = np.ravel_multi_index(tuple((coords // np.array(self.block_shape)).T), self.grid_shape)
        order = np.argsort(bid, kind="stable")  # blocks ascending, voxels in C order within: deterministic
        bid, coords, lab = bid[order], coords[order], lab[order]
        starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]]) if len(bid) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(bid)].astype(np.int64)
        groups = []  # (block id, block index, local flat indices, cached rows or None)
        for s, e in zip(starts, ends):
            b = int(bid[s])
            block_index = tuple(int(i) for i in np.unravel_index(b, self.grid_shape))
            region = self.block_region(block_index)
            origin = np.array([r.start for r in region])
            lidx = np.ravel_multi_index(tuple((coords[s:e] - origin).T), tuple(r.stop - r.start for r in region))
            with self._lock:
                cached = self._rows.get(b)
            rows = cached[2] if cached is not None and cached[0] == epoch and np.array_equal(cached[1], lidx) else None
            groups.append((b, block_index, lidx, rows))
        # Features of the blocks whose rows are missing, computed in parallel.
        missing = [g[1] for g in groups if g[3] is None]
        if len(missing) > 1:
            self._map(lambda bi: self._block_features(bi, spec), missing)
        xs = []
        for b, block_index, lidx, rows in groups:
            with self._lock:
                # Stop early when superseded or when the labels moved on (the caller starts over).
                if job is not None and job.cancelled:
                    raise TrainingCancelled()
                if self._state_key() != key:
                    return None
            if rows is None:
                feats = self._block_features(block_index, spec)
                rows = feats.reshape(-1, feats.shape[-1])[lidx]
                with self._lock:
                    if epoch == self._epoch:
                        self._rows[b] = (epoch, lidx, rows)
            xs.append(rows)
        with self._lock:
            used = {g[0] for g in groups}
            for b in [b for b in self._rows if b not in used]:
                del self._rows[b]
        X = np.concatenate(xs) if xs else np.zeros((0, self.n_features), np.float32)
        return X, lab.astype(np.int64)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` on the worker threads (items never wait on the pool: no deadlock)."""
        if len(items) <= 1 or self._n_threads == 1:
            return [fn(i) for i in items]
        with self._lock:
            if self._predict_pool is None:
                self._predict_pool = ThreadPoolExecutor(self._n_threads, thread_name_prefix="ilastik-worker")
            pool = self._predict_pool
        return [f.result() for f in [pool.submit(fn, i) for i in items]]

    def _train_once(self, job: _Job | None) -> bool | None:
        """One training pass.  True: installed; None: labels changed meanwhile (start over)."""
        with self._lock:
            if job is not None and job.cancelled:
                raise TrainingCancelled()
            key = self._state_key()
            if self._model is not None and self._model_key == key:
                return True  # already trained on exactly these labels: nothing to do
            flat, lab, _ = self.annotations.labelled_flat()
            spec, template, n_classes = self._feature_spec(), self._template, self.n_classes
            if self._selection.is_empty:
                raise ValueError("no features are selected: select at least one feature before training")
        present = np.unique(lab)
        if len(present) < 2:
            names = [self.classes[i - 1].name for i in present if 1 <= i <= n_classes]
            have = f"only {names[0]!r} has labels" if names else "nothing is labelled yet"
            raise ValueError(f"training needs labels of at least two classes: {have}")
        gathered = self._training_set(flat, lab, spec, job, key)
        if gathered is None:
            return None
        X, y = gathered
        model = template.clone().fit(X, y, n_classes)
        with self._lock:
            if job is not None and job.cancelled:
                raise TrainingCancelled()
            if self._state_key() != key:
                return None  # fitted on stale labels: never installed
            if self._model_key == key:
                return True  # a concurrent training installed the same (deterministic) model
            self._model = model
            self._model_key = key
            generation = self._bump_generation()
        self._notify("trained", generation=generation, n_samples=int(len(y)))
        return True

    def _train_loop(self, job: _Job | None) -> bool:
        # Newest labels win: a pass that finished on stale labels is thrown away and repeated.
        while True:
            if self._train_once(job):
                return True

    def train(self) -> Session:
        """Train on the current labels, blocking until the model is installed.

        Raises
        ------
        ValueError
            Fewer than two classes labelled, no features selected, or bad image data (NaN/inf).
        """
        self._train_loop(None)
        return self

    def train_async(self, callback: Callable[[Future], Any] | None = None) -> Future:
        """Train in a background thread; returns a Future.

        The future's result is True when a model trained on the newest labels was installed, and False
        when this training was cancelled or superseded by a newer ``train_async``.  Labels changed
        while it runs make it start over with the newest labels.  ``callback(future)`` is called when
        it is done.  Errors are reported as the future's exception and an "error" event.
        """
        with self._lock:
            if self._job is not None:
                self._job.cancelled = True
            job = self._job = _Job()
            if self._train_pool is None:
                self._train_pool = ThreadPoolExecutor(1, thread_name_prefix="ilastik-train")
            pool = self._train_pool

        def run() -> bool:
            try:
                return self._train_loop(job)
            except TrainingCancelled:
                return False
            except Exception as exc:
                if not job.cancelled:
                    self._notify("error", message=str(exc), exception=exc)
                raise

        future = pool.submit(run)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def cancel_training(self) -> None:
        """Cancel the pending or running background training (its model is not installed)."""
        with self._lock:
            if self._job is not None:
                self._job.cancelled = True
                self._job = None

    def set_model(self, model: PixelClassifier) -> None:
        """Install an already fitted classifier as trained on the current labels (project loading)."""
        if not model.is_fitted:
            raise ValueError("set_model needs a fitted PixelClassifier")
        if model.n_features != self.n_features:
            raise ValueError(
                f"the model was trained on {model.n_features} features, the selection gives {self.n_features}"
            )
        if model.n_classes > self.n_classes:
            raise ValueError(f"the model predicts {model.n_classes} classes, the session has {self.n_classes}")
        with self._lock:
            self._model = model
            self._model_key = self._state_key()
            generation = self._bump_generation()
        self._notify("trained", generation=generation)

    # ------------------------------------------------------------------ prediction
    def _current_model(self) -> tuple:
        """(model, generation, n_classes, feature spec), read together."""
        with self._lock:
            if self._model is None:
                why = f" ({self._model_invalid_reason})" if self._model_invalid_reason else ""
                raise RuntimeError(f"the session is not trained{why}: label at least two classes and call train()")
            return self._model, self._generation, self.n_classes, self._feature_spec()

    def _predict_block(self, block_index: tuple[int, ...], snapshot: tuple, n_jobs: int | None = 1) -> np.ndarray:
        model, generation, n_classes, spec = snapshot

        def compute() -> np.ndarray:
            feats = self._block_features(block_index, spec)
            p = model.predict_proba(feats.reshape(-1, feats.shape[-1]), n_jobs=n_jobs)
            if p.shape[1] < n_classes:  # classes added since training: zero columns
                p = np.concatenate([p, np.zeros((len(p), n_classes - p.shape[1]), np.float32)], axis=1)
            p = p.reshape(feats.shape[:-1] + (n_classes,))
            p.setflags(write=False)
            return p

        return self._predictions.get_or_compute((generation, n_classes, block_index), compute)

    def predict_block(self, block_index: Sequence[int]) -> np.ndarray:
        """Probabilities of one block, float32 (*block_region_shape, n_classes) (read-only, cached)."""
        block_index = tuple(int(i) for i in block_index)
        self.block_region(block_index)  # validates
        return self._predict_block(block_index, self._current_model(), n_jobs=None)

    def predict(self, region: Any = None) -> np.ndarray:
        """Class probabilities of a region, float32 (*region_shape, n_classes).

        Only the blocks the region touches are computed (in parallel threads) and read.

        Raises
        ------
        RuntimeError
            Before the first training.
        ValueError
            For a region outside the image.
        """
        region = normalize_region(region, self.spatial_shape)
        snapshot = self._current_model()
        n_classes = snapshot[2]
        blocks = self.blocks_for(region)
        out = np.empty(tuple(s.stop - s.start for s in region) + (n_classes,), np.float32)

        def work(block_index: tuple[int, ...]) -> None:
            breg = self.block_region(block_index)
            p = self._predict_block(block_index, snapshot, n_jobs=1 if len(blocks) > 1 else None)
            lo = [max(r.start, b.start) for r, b in zip(region, breg)]
            hi = [min(r.stop, b.stop) for r, b in zip(region, breg)]
            src = tuple(slice(a - b.start, z - b.start) for a, z, b in zip(lo, hi, breg))
            dst = tuple(slice(a - r.start, z - r.start) for a, z, r in zip(lo, hi, region))
            out[dst] = p[src]

        self._map(work, blocks)
        return out

    def precompute(self, regions: Iterable[Any]) -> None:
        """Compute and cache the probabilities of every block the regions touch, all in parallel threads, so that
        :meth:`predict` of each region afterwards reads them from the cache. Raises as :meth:`predict` does."""
        blocks = list(dict.fromkeys(b for region in regions for b in self.blocks_for(region)))
        snapshot = self._current_model()
        n_jobs = 1 if len(blocks) > 1 else None
        self._map(lambda block: self._predict_block(block, snapshot, n_jobs=n_jobs), blocks)

    def segmentation(self, region: Any = None) -> np.ndarray:
        """Most probable class per pixel, uint8 1..n_classes."""
        p = self.predict(region)
        return (np.argmax(p, axis=-1) + 1).astype(np.uint8)

    def uncertainty(self, region: Any = None) -> np.ndarray:
        """ilastik's uncertainty, float32 in [0, 1]: 1 - (p_max - p_second)."""
        p = self.predict(region)
        if p.shape[-1] < 2:
            return (1.0 - p[..., 0]).astype(np.float32)
        top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
        return np.clip(1.0 - (top2[..., 1] - top2[..., 0]), 0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ persistence and life cycle
    def save(self, path: Any) -> Any:
        """Save labels, classes, features and classifier settings (see :mod:`ilastik_widget.io.project`)."""
        from ..io.project import save_session

        return save_session(self, path)

    @classmethod
    def load(cls, path: Any, image: Any = None) -> Session:
        """Load a session saved with :meth:`save` (see :mod:`ilastik_widget.io.project`)."""
        from ..io.project import load_session

        return load_session(path, image=image)

    def close(self) -> None:
        """Cancel background training and stop the worker threads."""
        self.cancel_training()
        for pool in (self._train_pool, self._predict_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._train_pool = self._predict_pool = None

    def __repr__(self) -> str:
        return (
            f"Session(shape={self.spatial_shape}, channels={self.n_input_channels}, classes="
            f"{[c.name for c in self.classes]}, strokes={len(self.annotations.strokes)}, "
            f"trained={self.is_trained}, generation={self.generation})"
        )
