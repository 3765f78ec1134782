"""The feature settings of a session: which features (the selection and the 2D/3D choice), computed on which input
channels, with which voxel size. Every change makes new features, so the model must be trained again."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .feature_store import FeatureSpec
from .features import FeatureSelection, check_voxel_size

FEATURE_MODES = ("3d", "2d")


def as_selection(features: Any) -> FeatureSelection:
    """A FeatureSelection from a selection, its dict form, or None (the default)."""
    if features is None:
        return FeatureSelection.default()
    if isinstance(features, FeatureSelection):
        return features
    if isinstance(features, dict):
        return FeatureSelection.from_dict(features)
    raise ValueError(f"features must be a FeatureSelection, a dict or None, got {type(features).__name__}")


class FeatureSettings:
    """Feature settings of :class:`~ilastik_widget.core.session.Session` (a mixin: the session holds the state)."""

    # set by the session
    ndim: int
    n_input_channels: int
    _selection: FeatureSelection
    _feature_mode: str
    _voxel_size: tuple[float, ...] | None
    _channels: tuple[int, ...] | None
    _epoch: int
    _generation: int
    _lock: Any
    _store: Any

    def _invalidate_model(self, reason: str) -> None:
        raise NotImplementedError  # the session's

    def _bump_generation(self) -> int:
        raise NotImplementedError  # the session's

    def _notify(self, event: str, **info: Any) -> None:
        raise NotImplementedError  # the session's

    @property
    def feature_selection(self) -> FeatureSelection:
        """The features computed for every pixel. Setting it (a :class:`~ilastik_widget.core.features.FeatureSelection`,
        its dict form, or None for the default) changes the features."""
        return self._selection

    @feature_selection.setter
    def feature_selection(self, value: Any) -> None:
        selection = as_selection(value)
        selection.check_for(self.ndim)
        with self._lock:
            if selection == self._selection:
                return
            self._selection = selection
            self._features_changed()
        self._notify("features", selection=selection.to_dict(), generation=self._generation)

    @property
    def feature_mode(self) -> str:
        """``"3d"`` (each scale as the selection says) or ``"2d"`` (every scale slice-wise on a volume); setting it
        changes the features."""
        return self._feature_mode

    @feature_mode.setter
    def feature_mode(self, mode: str) -> None:
        if mode not in FEATURE_MODES:
            raise ValueError(f'feature_mode must be "2d" or "3d", got {mode!r}')
        with self._lock:
            if mode == self._feature_mode:
                return
            self._feature_mode = mode
            self._features_changed("the feature mode changed")
        self._notify("features", selection=self._selection.to_dict(), generation=self._generation)

    def _features_changed(self, reason: str = "the feature selection changed") -> None:
        self._epoch += 1
        self._store.features_changed()
        self._invalidate_model(reason)
        self._bump_generation()

    def _feature_spec(self) -> FeatureSpec:
        with self._lock:
            return FeatureSpec(self._epoch, self._selection, self._feature_mode, self._voxel_size, self._channels)

    @property
    def n_features(self) -> int:
        """Feature channels per pixel for the current selection."""
        return self._store.n_features(self._feature_spec())

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        """Physical size of a voxel per spatial axis (None: isotropic); setting it changes the features."""
        return self._voxel_size

    @voxel_size.setter
    def voxel_size(self, value: Sequence[float] | None) -> None:
        checked = check_voxel_size(value, self.ndim)
        with self._lock:
            if checked == self._voxel_size:
                return
            self._voxel_size = checked
            self._features_changed("the voxel size changed")
        self._notify("features", selection=self._selection.to_dict(), generation=self._generation)

    @property
    def cache_nbytes(self) -> int:
        """Bytes currently held by the feature cache."""
        return self._store.nbytes

    @property
    def channels(self) -> tuple[int, ...] | None:
        """The input channels whose features the classifier uses (None: all); setting it changes the features."""
        return self._channels

    @channels.setter
    def channels(self, value: Sequence[int] | None) -> None:
        checked = self._check_channels(value)
        with self._lock:
            if checked == self._channels:
                return
            self._channels = checked
            self._features_changed("the classifier's channels changed")
        self._notify("features", selection=self._selection.to_dict(), generation=self._generation)

    def _check_channels(self, value: Sequence[int] | None) -> tuple[int, ...] | None:
        """``value`` as a sorted tuple of input channel indices (None for all), or ValueError naming it."""
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"channels must be a list of input channel numbers, not {value!r}")
        n = self.n_input_channels
        if not value:
            raise ValueError("channels must name at least one input channel for the classifier")
        for c in value:
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= c < n:
                raise ValueError(f"channels {list(value)!r}: {c!r} is not a channel of this image (0 to {n - 1})")
        out = tuple(sorted({int(c) for c in value}))
        return None if out == tuple(range(n)) else out
