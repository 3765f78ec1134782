"""The interactive pixel classification session: labels, lazily computed features and a Random Forest.

>>> from ilastik_widget.datasets import synthetic_cells
>>> image, truth = synthetic_cells((256, 256))
>>> s = Session(image)
>>> s.add_stroke(1, [[10, 10], [10, 60]], radius=3)   # class 1 ("Background"), (y, x) points
1
>>> s.add_stroke(2, [[128, 128]], radius=3)
2
>>> s.train().predict((slice(0, 64), slice(0, 64))).shape
(64, 64, 2)

Features are computed only for what training and prediction need, and cached within a byte bound
(:class:`~ilastik_widget.core.feature_store.FeatureStore`).

Thread-safety
-------------
State lives behind one re-entrant lock (``_lock``) held only for short bookkeeping, never while features are computed,
a forest is fitted, a block is predicted or a cache entry is awaited. The caches' own locks are leaves (nothing else is
acquired while holding one), and the order is always session lock -> annotations lock -> cache lock, so the locks
cannot deadlock. Background training runs on one worker thread (:mod:`~ilastik_widget.core.training`); every
training checks, before installing its model, that the labels, classes and features it used are still the current
ones, and starts over on the newest labels when they are not (a newer ``train_async`` or ``cancel_training`` stops it
instead).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from .annotated_image import AnnotatedImage
from .annotations import normalize_region
from .classifier import ACCURATE, INTERACTIVE, PixelClassifier
from .feature_settings import FEATURE_MODES, FeatureSettings, as_selection
from .feature_store import FeatureSpec, FeatureStore
from .features import check_voxel_size
from .insight import SessionInsight
from .training import BackgroundTrainer, TrainingCancelled, TrainingJob

__all__ = ["Session", "TrainingCancelled"]

log = logging.getLogger(__name__)


def _classifier_template(classifier: Any, seed: int) -> PixelClassifier:
    if classifier is None or (isinstance(classifier, str) and classifier.lower() == "interactive"):
        return PixelClassifier(**{**INTERACTIVE, "seed": seed})
    if isinstance(classifier, str) and classifier.lower() == "accurate":
        return PixelClassifier(**{**ACCURATE, "seed": seed})
    if isinstance(classifier, dict):
        return PixelClassifier.from_params({"seed": seed, **classifier})
    if isinstance(classifier, PixelClassifier):
        return classifier.clone()
    raise ValueError(
        f"classifier must be a PixelClassifier, a dict of its parameters, 'interactive', 'accurate' or "
        f"None, got {classifier!r}"
    )


class Session(AnnotatedImage, FeatureSettings, SessionInsight):
    """Interactive pixel classification of one image.

    Parameters
    ----------
    image : array-like or ImageSource
        2D (y, x) or 3D (z, y, x) image, optionally with a channel axis; numpy, zarr, dask or anything with ``shape``,
        ``dtype`` and slicing (read block by block, never whole). An :class:`~ilastik_widget.io.sources.ImageSource`
        is accepted too (its ``array`` and channel axis are used).
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
        Classifier parameters (a template; the session fits its own copies). Default
        :data:`~ilastik_widget.core.classifier.INTERACTIVE`; a dict without ``"seed"`` and the preset names take
        ``seed``, a PixelClassifier keeps its own.
    block_shape : sequence of int, optional
        Block grid for features and predictions; default (256, 256) in 2D and (64, 64, 64) in 3D.
    cache_bytes : int
        Bound of the feature cache in bytes (block predictions get a further quarter of it).
    n_threads : int, optional
        Threads that compute blocks in parallel (default: the number of cores, at most 4).
    voxel_size : sequence of float, optional
        Physical size of a voxel along each spatial axis; default the source's (e.g. OME-Zarr scale), else
        isotropic. Filter scales are in units of the smallest voxel size, so filters are isotropic in space (see
        :mod:`~ilastik_widget.core.features`).
    channels : sequence of int, optional
        The input channels whose features the classifier uses (default: all).
    """

    def __init__(
        self,
        image: Any,
        channel_axis: int | None = None,
        classes: Iterable[Any] = ("Background", "Foreground"),
        features: Any = None,
        seed: int = 0,
        feature_mode: str = "3d",
        classifier: PixelClassifier | dict | str | None = None,
        block_shape: Sequence[int] | None = None,
        cache_bytes: int = 2**30,
        n_threads: int | None = None,
        voxel_size: Sequence[float] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        AnnotatedImage.__init__(self, image, channel_axis, classes)
        if feature_mode not in FEATURE_MODES:
            raise ValueError(f'feature_mode must be "2d" or "3d", got {feature_mode!r}')
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be a whole number, not {seed!r}")
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1
        ):
            raise ValueError(f"n_threads must be a positive whole number or None, not {n_threads!r}")
        block_shape = tuple(int(b) for b in (block_shape or ((256, 256) if self.ndim == 2 else (64, 64, 64))))
        if len(block_shape) != self.ndim or any(b < 1 for b in block_shape):
            raise ValueError(f"block_shape must have {self.ndim} positive sizes, got {block_shape}")
        if voxel_size is None and self.source is not None and len(self.source.scale or ()) == self.ndim:
            try:
                voxel_size = check_voxel_size(self.source.scale, self.ndim)
            except ValueError:
                voxel_size = None  # metadata without usable voxel sizes: isotropic
        self._voxel_size = check_voxel_size(voxel_size, self.ndim)
        self._channels = self._check_channels(channels)
        self._feature_mode = feature_mode
        self.seed = int(seed)
        self._selection = as_selection(features)
        self._selection.check_for(self.ndim)
        self._template = _classifier_template(classifier, self.seed)
        self._store = FeatureStore(
            self.image,
            self.channel_axis,
            self.spatial_shape,
            block_shape,
            cache_bytes,
            int(n_threads or min(4, os.cpu_count() or 1)),
        )
        self._epoch = 0  # bumps when the features change (selection, mode)
        self._classifier_epoch = 0  # bumps when the classifier settings change
        self._generation = 0  # bumps whenever predictions may change
        self._model: PixelClassifier | None = None
        self._model_key: tuple | None = None
        self._model_invalid_reason = ""
        self._trainer = BackgroundTrainer()

    # ------------------------------------------------------------------ events
    def _notify(self, event: str, **info: Any) -> None:
        if event == "classes":
            info.setdefault("generation", self._generation)
        super()._notify(event, **info)

    def _classes_changed(self, renumbered: str | None) -> None:
        with self._lock:
            if renumbered is not None:
                self._store.labels_replaced()
                self._invalidate_model(renumbered)
        self._bump_generation()  # predictions gain or lose a column

    def _bump_generation(self) -> int:
        with self._lock:
            self._generation += 1
            self._store.model_changed()
            return self._generation

    # ------------------------------------------------------------------ properties
    @property
    def generation(self) -> int:
        """Changes with every change that alters predictions (new model, features, classes)."""
        return self._generation

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

    def _invalidate_model(self, reason: str) -> None:
        self._model = None
        self._model_key = None
        self._model_invalid_reason = reason

    # ------------------------------------------------------------------ blocks
    @property
    def block_shape(self) -> tuple[int, ...]:
        """Shape of the blocks features and predictions are computed in (clipped to the image)."""
        return self._store.block_shape

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of blocks along each spatial axis."""
        return self._store.grid_shape

    @property
    def n_blocks(self) -> int:
        """Number of blocks of the image."""
        return math.prod(self.grid_shape)

    def block_region(self, block_index: Sequence[int]) -> tuple[slice, ...]:
        """The region (slices, clipped to the image) of a block given by its grid index."""
        return self._store.block_region(block_index)

    def blocks_for(self, region: Any = None) -> list[tuple[int, ...]]:
        """Grid indices of the blocks a region touches, in C order."""
        return self._store.blocks_for(normalize_region(region, self.spatial_shape))

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

    def _train_once(self, job: TrainingJob | None) -> bool:
        """One training pass: True when a model trained on the current labels is installed, False when the labels
        changed meanwhile (the caller starts over)."""
        with self._lock:
            if job is not None:
                job.check()
            key = self._state_key()
            if self._model is not None and self._model_key == key:
                return True  # already trained on exactly these labels
            flat, lab, _ = self.annotations.labelled_flat()
            spec, template, n_classes = self._feature_spec(), self._template, self.n_classes
        if spec.selection.is_empty:
            raise ValueError("no features are selected: select at least one feature before training")
        present = np.unique(lab)
        if len(present) < 2:
            names = [self.classes[i - 1].name for i in present if 1 <= i <= n_classes]
            have = f"only {names[0]!r} has labels" if names else "nothing is labelled yet"
            raise ValueError(f"training needs labels of at least two classes: {have}")

        def stale() -> bool:  # stop early when superseded or when the labels moved on
            with self._lock:
                if job is not None:
                    job.check()
                return self._state_key() != key

        gathered = self._store.training_rows(flat, lab, spec, stale)
        if gathered is None:
            return False
        features, labels = gathered
        model = template.clone().fit(features, labels, n_classes)
        with self._lock:
            if stale():
                return False  # fitted on stale labels: never installed
            if self._model_key == key:
                return True  # a concurrent training installed the same (deterministic) model
            self._model, self._model_key = model, key
            generation = self._bump_generation()
        self._notify("trained", generation=generation, n_samples=len(gathered[1]))
        return True

    def _train_loop(self, job: TrainingJob | None) -> bool:
        while not self._train_once(job):  # newest labels win: a pass on stale labels is repeated
            pass
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

        The future's result is True when a model trained on the newest labels was installed, and False when this
        training was cancelled or superseded by a newer ``train_async``. Labels changed while it runs make it start
        over with the newest labels. ``callback(future)`` is called when it is done. Errors are the future's exception
        and an "error" event.
        """
        future = self._trainer.start(
            self._train_loop, lambda exc: self._notify("error", message=str(exc), exception=exc)
        )
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def cancel_training(self) -> None:
        """Cancel the pending or running background training (its model is not installed)."""
        self._trainer.cancel()

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
    def _current_model(self) -> tuple[PixelClassifier, int, int, FeatureSpec]:
        """(model, generation, n_classes, feature spec), read together."""
        with self._lock:
            if self._model is None:
                why = f" ({self._model_invalid_reason})" if self._model_invalid_reason else ""
                raise RuntimeError(f"the session is not trained{why}: label at least two classes and call train()")
            return self._model, self._generation, self.n_classes, self._feature_spec()

    def predict_block(self, block_index: Sequence[int]) -> np.ndarray:
        """Probabilities of one block, float32 (*block_region_shape, n_classes) (read-only, cached)."""
        index = tuple(int(i) for i in block_index)
        self.block_region(index)  # checks it
        model, generation, n_classes, spec = self._current_model()
        return self._store.unit_probabilities(("block", index), model, generation, n_classes, spec, n_jobs=None)

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
        model, generation, n_classes, spec = self._current_model()
        return self._store.probabilities(region, model, generation, n_classes, spec)

    def precompute(self, regions: Iterable[Any]) -> None:
        """Compute and cache the probabilities of every block the regions touch, all in parallel, so that
        :meth:`predict` of each region afterwards reads them from the cache. Raises as :meth:`predict` does."""
        regions = [normalize_region(r, self.spatial_shape) for r in regions]
        model, generation, n_classes, spec = self._current_model()
        self._store.precompute(regions, model, generation, n_classes, spec)

    def prepare_features(self, regions: Iterable[Any]) -> None:
        """Compute the features of every block or plane tile the regions touch and keep them (within the feature
        cache's bound), so that a training or prediction there later does not wait for them. No model is needed: the
        widget does this with the planes a volume's panels show while the user paints the first class.

        Raises
        ------
        ValueError
            For a region outside the image, or when no features are selected.
        """
        regions = [normalize_region(r, self.spatial_shape) for r in regions]
        self._store.unit_features(self._store.units_of(regions), self._feature_spec())

    def has_features(self, region: Any = None) -> bool:
        """Whether the features of every block or plane tile ``region`` touches are computed and kept now (a
        training or prediction there will not compute them)."""
        region = normalize_region(region, self.spatial_shape)
        return self._store.has_features(self._store.units_for(region), self._feature_spec())

    def segmentation(self, region: Any = None) -> np.ndarray:
        """Most probable class per pixel, uint8 1..n_classes."""
        return (np.argmax(self.predict(region), axis=-1) + 1).astype(np.uint8)

    def uncertainty(self, region: Any = None) -> np.ndarray:
        """ilastik's uncertainty, float32 in [0, 1]: 1 - (p_max - p_second)."""
        p = self.predict(region)
        if p.shape[-1] < 2:
            return (1.0 - p[..., 0]).astype(np.float32)
        top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
        return np.clip(1.0 - (top2[..., 1] - top2[..., 0]), 0.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Cancel background training and stop the worker threads."""
        self._trainer.close()
        self._store.close()

    def __repr__(self) -> str:
        return (
            f"Session(shape={self.spatial_shape}, channels={self.n_input_channels}, classes="
            f"{[c.name for c in self.classes]}, strokes={len(self.annotations.strokes)}, "
            f"trained={self.is_trained}, generation={self.generation})"
        )
