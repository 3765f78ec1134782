"""A trained model: what applying a classifier to new images needs, in one immutable value.

A :class:`TrainedModel` holds the fitted :class:`~ilastik_widget.core.classifier.PixelClassifier`, the feature
selection and feature mode it was trained with, the voxel size its filters were scaled for and the input channels
that fed it, the dimensionality and channel count of the images it applies to, and the classes (names and colours). A session makes one (:meth:`TrainedModel.from_session`), a project file stores
one (``ilastik_widget.io.project.load_model``), and batch prediction applies one (``ilastik_widget.io.batch``).

Its fields are checked against each other when it is made: the classifier must be fitted on exactly the number of
feature channels the selection gives for these images, and cannot predict more classes than there are names.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from .classifier import PixelClassifier
from .features import FeatureSelection, check_voxel_size

__all__ = ["TrainedModel"]


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pixel classifier with the settings needed to apply it to new images.

    Parameters
    ----------
    classifier : PixelClassifier
        The fitted classifier (its columns are classes 1..``classifier.n_classes``).
    selection : FeatureSelection
        The features it was trained on.
    mode : {"3d", "2d"}
        Feature mode: ``"2d"`` filters 3D volumes plane by plane.
    ndim : int
        Spatial dimensions of the images (2 or 3).
    n_input_channels : int
        Channels of the images (features are computed per channel).
    class_names, class_colors : tuple of str
        One entry per class. There may be more classes than the classifier predicts (classes added after training);
        their probabilities are zero.
    voxel_size : tuple of float, optional
        The voxel size the filters were scaled for (None: isotropic); images it applies to are filtered the same way.
    channels : tuple of int, optional
        The input channels whose features fed the classifier (None: all).

    Raises
    ------
    ValueError
        When the fields do not fit together (see the module docstring).
    """

    classifier: PixelClassifier
    selection: FeatureSelection
    mode: str
    ndim: int
    n_input_channels: int
    class_names: tuple[str, ...]
    class_colors: tuple[str, ...]
    voxel_size: tuple[float, ...] | None = None
    channels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "class_colors", tuple(self.class_colors))
        if not isinstance(self.classifier, PixelClassifier) or not self.classifier.is_fitted:
            raise ValueError(f"a trained model needs a fitted PixelClassifier, got {self.classifier!r}")
        if not isinstance(self.selection, FeatureSelection) or self.selection.is_empty:
            raise ValueError(f"a trained model needs a non-empty FeatureSelection, got {self.selection!r}")
        if self.mode not in ("2d", "3d"):
            raise ValueError(f'feature mode must be "2d" or "3d", got {self.mode!r}')
        if self.ndim not in (2, 3):
            raise ValueError(f"images must have 2 or 3 spatial dimensions, got ndim={self.ndim!r}")
        if isinstance(self.n_input_channels, bool) or not isinstance(self.n_input_channels, int):
            raise ValueError(f"n_input_channels must be an integer, got {self.n_input_channels!r}")
        if self.n_input_channels < 1:
            raise ValueError(f"n_input_channels must be at least 1, got {self.n_input_channels}")
        object.__setattr__(self, "voxel_size", check_voxel_size(self.voxel_size, self.ndim))
        if self.channels is not None:
            channels = tuple(self.channels)
            if not channels or any(
                isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.n_input_channels for c in channels
            ):
                raise ValueError(f"channels {self.channels!r} are not input channels of {self.n_input_channels}")
            object.__setattr__(self, "channels", tuple(sorted(set(channels))))
        if not self.class_names or len(self.class_names) != len(self.class_colors):
            raise ValueError(
                f"one colour per class is needed: {len(self.class_names)} names, {len(self.class_colors)} colours"
            )
        want = self.n_features
        if self.classifier.n_features != want:
            raise ValueError(
                f"the classifier was fitted on {self.classifier.n_features} feature channels, but the feature "
                f"selection gives {want} for {self.ndim}D images with {self.n_used_channels} channel(s) "
                f"in mode {self.mode!r}"
            )
        if (self.classifier.n_classes or 0) > self.n_classes:
            raise ValueError(
                f"the classifier predicts {self.classifier.n_classes} classes but only {self.n_classes} are named"
            )

    @property
    def n_classes(self) -> int:
        """Number of classes (probability channels of a prediction)."""
        return len(self.class_names)

    @property
    def feature_ndim(self) -> int:
        """Spatial dimensions of the filters: 2 for 2D images and for mode ``"2d"``, else 3."""
        return 2 if (self.mode == "2d" or self.ndim == 2) else 3

    @property
    def n_used_channels(self) -> int:
        """Input channels whose features feed the classifier."""
        return self.n_input_channels if self.channels is None else len(self.channels)

    @property
    def n_features(self) -> int:
        """Feature channels per pixel."""
        selection = self.selection.all_in_2d() if self.mode == "2d" and self.ndim == 3 else self.selection
        return selection.n_channels(self.ndim, self.n_used_channels)

    @classmethod
    def from_session(cls, session: Any) -> TrainedModel:
        """The model of a trained :class:`~ilastik_widget.core.session.Session`.

        Warns when the session's labels or settings changed since its last training (the last trained classifier
        is used).

        Raises
        ------
        RuntimeError
            When the session has never been trained.
        """
        clf = getattr(session, "model", None)
        if clf is None or not getattr(session, "is_trained", False):
            raise RuntimeError(
                "the session is not trained: paint labels of at least two classes and call session.train() first"
            )
        if getattr(session, "needs_training", False):
            warnings.warn(
                "the session's labels or settings changed since its last training; batch prediction uses "
                "the last trained classifier (call session.train() to include the newest labels)",
                stacklevel=3,
            )
        classes = list(session.classes)
        return cls(
            classifier=clf,
            selection=session.feature_selection,
            mode=session.feature_mode,
            ndim=int(session.ndim),
            n_input_channels=int(session.n_input_channels),
            class_names=tuple(c.name for c in classes),
            class_colors=tuple(c.color for c in classes),
            voxel_size=session.voxel_size,
            channels=session.channels,
        )
