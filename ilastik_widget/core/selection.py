"""ilastik's feature matrix: six features x seven scales, and which scales are computed slice-wise.

:class:`FeatureSelection` is the user's choice of cells of the matrix plus ilastik's "in 2D" column: the
scales whose filters run slice-wise (2D filters per z slice) on volumes. :func:`feature_table` is the matrix
as JSON data for user interfaces. The filters themselves are in :mod:`ilastik_widget.core.features`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .filters import DOG_RATIO

__all__ = [
    "FEATURES",
    "FEATURE_DESCRIPTIONS",
    "FEATURE_TITLES",
    "SCALES",
    "FeatureSelection",
    "feature_table",
    "is_valid",
]

FEATURES: tuple[str, ...] = (
    "gaussian_smoothing",
    "laplacian_of_gaussian",
    "gaussian_gradient_magnitude",
    "difference_of_gaussians",
    "structure_tensor_eigenvalues",
    "hessian_of_gaussian_eigenvalues",
)

FEATURE_TITLES: dict[str, str] = {
    "gaussian_smoothing": "Gaussian Smoothing",
    "laplacian_of_gaussian": "Laplacian of Gaussian",
    "gaussian_gradient_magnitude": "Gaussian Gradient Magnitude",
    "difference_of_gaussians": "Difference of Gaussians",
    "structure_tensor_eigenvalues": "Structure Tensor Eigenvalues",
    "hessian_of_gaussian_eigenvalues": "Hessian of Gaussian Eigenvalues",
}

SCALES: tuple[float, ...] = (0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0)

#: what each feature responds to, in words (tooltips of the widget's feature matrix)
FEATURE_DESCRIPTIONS: dict[str, str] = {
    "gaussian_smoothing": "the image smoothed with a Gaussian of width σ: brightness averaged over a neighbourhood",
    "laplacian_of_gaussian": "sum of the second derivatives of the smoothed image: bright or dark blobs of size ~σ",
    "gaussian_gradient_magnitude": "norm of the gradient of the smoothed image: edges",
    "difference_of_gaussians": f"the image smoothed at σ minus the image smoothed at {DOG_RATIO:g}σ: a band-pass "
    "filter for blobs of size ~σ",
    "structure_tensor_eigenvalues": "eigenvalues of the structure tensor (gradient at σ, smoothed at σ/2): how "
    "strongly the edges around a pixel are oriented; texture and corners",
    "hessian_of_gaussian_eigenvalues": "eigenvalues of the Hessian of the smoothed image: lines, tubes, sheets "
    "and blobs",
}

EIGEN = ("structure_tensor_eigenvalues", "hessian_of_gaussian_eigenvalues")


def is_valid(feature: str, scale: float) -> bool:
    """Whether ``(feature, scale)`` is a cell of ilastik's matrix (scale 0.3 is smoothing only)."""
    s = canonical_scale(scale)
    if feature not in FEATURES or s is None:
        return False
    return s != 0.3 or feature == "gaussian_smoothing"


def canonical_scale(scale: Any) -> float | None:
    """The member of :data:`SCALES` equal to ``scale`` (tolerating float noise), else None."""
    if isinstance(scale, bool):
        return None
    try:
        s = float(scale)
    except (TypeError, ValueError):
        return None
    for c in SCALES:
        if math.isclose(s, c, rel_tol=1e-9, abs_tol=1e-12):
            return c
    return None


def n_outputs(feature: str, filter_ndim: int) -> int:
    """Output channels of ``feature`` per input channel for filters over ``filter_ndim`` axes."""
    return filter_ndim if feature in EIGEN else 1


def feature_table() -> dict[str, Any]:
    """The feature matrix as plain JSON data, for user interfaces that must not repeat it.

    Returns
    -------
    dict
        ``{"scales": [...all scales...], "scales_2d": [...], "features": [{"name", "title", "description",
        "scales", "channels": {"2d", "3d"}}, ...]}``, features in :data:`FEATURES` order; a feature's ``scales``
        are the members of ``scales`` that :func:`is_valid` accepts for it, and ``channels`` its output
        channels per input channel. ``scales_2d`` are the scales that may be computed "in 2D" (slice-wise)
        on volumes (:meth:`FeatureSelection.with_2d`; an error on 2D images). Every (name, scale) pair is a
        valid cell of :class:`FeatureSelection`.
    """
    return {
        "scales": list(SCALES),
        "scales_2d": list(SCALES),
        "features": [
            {
                "name": f,
                "title": FEATURE_TITLES[f],
                "description": FEATURE_DESCRIPTIONS[f],
                "scales": [s for s in SCALES if is_valid(f, s)],
                "channels": {"2d": n_outputs(f, 2), "3d": n_outputs(f, 3)},
            }
            for f in FEATURES
        ],
    }


@dataclass(frozen=True)
class FeatureSelection:
    """A set of (feature, scale) cells of the 6 x 7 feature matrix, and the scales computed in 2D.

    Parameters
    ----------
    selected : frozenset of (str, float)
        The enabled cells. Scales are snapped to the members of :data:`SCALES`.
    in_2d : frozenset of float
        Scales whose filters run slice-wise on volumes (2D filters per z slice, nothing along z; 2
        eigenvalues instead of 3): ilastik's "in 2D" column. Only meaningful on volumes
        (:meth:`check_for`).

    Examples
    --------
    >>> sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    >>> sel.n_channels(2)
    1
    >>> sel.with_feature("hessian_of_gaussian_eigenvalues", 3.5, True).with_2d(3.5, True).n_channels(3)
    3
    """

    selected: frozenset[tuple[str, float]] = field(default_factory=frozenset)
    in_2d: frozenset[float] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        norm = set()
        for item in self.selected:
            try:
                feature, scale = item
            except (TypeError, ValueError):
                raise ValueError(f"a selection entry must be a (feature, scale) pair, got {item!r}") from None
            norm.add(_check_cell(feature, scale))
        object.__setattr__(self, "selected", frozenset(norm))
        if isinstance(self.in_2d, (str, bytes)) or not isinstance(self.in_2d, Iterable):
            raise ValueError(f"in_2d must be a set of scales, got {self.in_2d!r}")
        object.__setattr__(self, "in_2d", frozenset(_check_scale(s) for s in self.in_2d))

    # ---- constructors
    @classmethod
    def all(cls) -> FeatureSelection:
        """Every valid cell, all in 3D: 49 channels in 2D, 61 in 3D."""
        return cls(frozenset((f, s) for f in FEATURES for s in SCALES if is_valid(f, s)))

    @classmethod
    def none(cls) -> FeatureSelection:
        """No cell selected (not computable; a starting point for :meth:`with_feature`)."""
        return cls(frozenset())

    @classmethod
    def default(cls) -> FeatureSelection:
        """The default selection, which is :meth:`all`."""
        return cls.all()

    # ---- queries and updates
    def with_feature(self, feature: str, scale: float, on: bool) -> FeatureSelection:
        """A copy with the cell ``(feature, scale)`` switched on or off."""
        cell = _check_cell(feature, scale)
        sel = set(self.selected)
        if on:
            sel.add(cell)
        else:
            sel.discard(cell)
        return FeatureSelection(frozenset(sel), self.in_2d)

    def with_2d(self, scale: float, on: bool) -> FeatureSelection:
        """A copy with the filters at ``scale`` computed slice-wise on volumes (``on``) or in 3D."""
        s = _check_scale(scale)
        return FeatureSelection(self.selected, self.in_2d | {s} if on else self.in_2d - {s})

    def all_in_2d(self) -> FeatureSelection:
        """A copy with every scale computed slice-wise (what ``mode="2d"`` means)."""
        return FeatureSelection(self.selected, frozenset(SCALES))

    def enabled(self, feature: str, scale: float) -> bool:
        """Whether the cell ``(feature, scale)`` is selected."""
        s = canonical_scale(scale)
        return s is not None and (feature, s) in self.selected

    def is_2d(self, scale: float) -> bool:
        """Whether the filters at ``scale`` are computed slice-wise on volumes."""
        return canonical_scale(scale) in self.in_2d

    @property
    def is_empty(self) -> bool:
        """True when no cell is selected."""
        return not self.selected

    def cells(self) -> list[tuple[str, float]]:
        """Selected cells in output order (feature in :data:`FEATURES` order, then scale)."""
        return [(f, s) for f in FEATURES for s in SCALES if (f, s) in self.selected]

    def scales(self) -> list[float]:
        """Scales used by at least one selected feature, ascending."""
        return sorted({s for _, s in self.selected})

    def filter_ndim(self, scale: float, ndim: int) -> int:
        """Axes the filters of ``scale`` run over on an image of ``ndim`` spatial axes (2 or 3)."""
        _check_filter_ndim(ndim)
        return 2 if ndim == 2 or self.is_2d(scale) else 3

    def check_for(self, ndim: int) -> None:
        """Raise ValueError if this selection cannot be computed on images of ``ndim`` spatial axes.

        Computing "in 2D" is a choice for volumes; on a 2D image it is an error rather than silently
        meaningless, so that a selection made for a volume is not taken for something it is not.
        """
        _check_filter_ndim(ndim)
        if ndim == 2 and self.in_2d:
            scales = ", ".join(f"{s:g}" for s in sorted(self.in_2d))
            raise ValueError(
                f"scales {scales} are set to be computed in 2D, which applies to volumes only; this image is 2D "
                "(clear in_2d, e.g. with_2d(scale, False))"
            )

    def n_channels(self, ndim: int, n_input_channels: int = 1) -> int:
        """Number of output channels for ``ndim`` spatial axes (2 also for ``mode="2d"``)."""
        _check_filter_ndim(ndim)
        return n_input_channels * sum(n_outputs(f, self.filter_ndim(s, ndim)) for f, s in self.cells())

    def channel_names(self, ndim: int, n_input_channels: int = 1) -> list[str]:
        """Names of the output channels, e.g. ``"hessian_of_gaussian_eigenvalues_1_ev0"``.

        With several input channels each name is prefixed by ``"c<i>:"``. On volumes (``ndim=3``) a cell
        computed in 2D is marked ``"_2d"`` after its scale, e.g. ``"gaussian_smoothing_3.5_2d"``.
        """
        _check_filter_ndim(ndim)
        names = []
        for c in range(n_input_channels):
            prefix = f"c{c}:" if n_input_channels > 1 else ""
            for f, s in self.cells():
                fd = self.filter_ndim(s, ndim)
                base = f"{prefix}{f}_{s:g}" + ("_2d" if ndim == 3 and fd == 2 else "")
                if f in EIGEN:
                    names.extend(f"{base}_ev{i}" for i in range(fd))
                else:
                    names.append(base)
        return names

    # ---- serialisation
    def to_dict(self) -> dict:
        """JSON-able form ``{"features": {feature: [scales...], ...}, "in_2d": [scales...]}``.

        Every feature key is present; ``in_2d`` lists the scales computed slice-wise on volumes.
        """
        return {
            "features": {f: [s for s in SCALES if (f, s) in self.selected] for f in FEATURES},
            "in_2d": [s for s in SCALES if s in self.in_2d],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSelection:
        """Inverse of :meth:`to_dict`; unknown features or invalid scales raise ValueError.

        A dict without ``"in_2d"`` (written before the 2D column existed) means every scale in 3D.
        """
        if not isinstance(d, Mapping) or not isinstance(d.get("features"), Mapping):
            raise ValueError('a feature selection dict must look like {"features": {name: [scales, ...]}}')
        cells = []
        for f, scales in d["features"].items():
            if isinstance(scales, (str, bytes)) or not isinstance(scales, Iterable):
                raise ValueError(f"scales of feature {f!r} must be a list of numbers, got {scales!r}")
            cells.extend((f, s) for s in scales)
        in_2d = d.get("in_2d", [])
        if isinstance(in_2d, (str, bytes, Mapping)) or not isinstance(in_2d, Iterable):
            raise ValueError(f'"in_2d" must be a list of scales, got {in_2d!r}')
        return cls(frozenset(cells), frozenset(in_2d))

    def __repr__(self) -> str:
        in_2d = f", in 2D: {sorted(self.in_2d)}" if self.in_2d else ""
        return f"FeatureSelection({len(self.selected)} cells: {self.to_dict()['features']}{in_2d})"


def _check_scale(scale: Any) -> float:
    s = canonical_scale(scale)
    if s is None:
        raise ValueError(f"unknown scale {scale!r}; scales are {SCALES}")
    return s


def _check_cell(feature: Any, scale: Any) -> tuple[str, float]:
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; known features: {', '.join(FEATURES)}")
    s = canonical_scale(scale)
    if s is None:
        raise ValueError(f"unknown scale {scale!r} for {feature!r}; scales are {SCALES}")
    if not is_valid(feature, s):
        raise ValueError(f"scale {s} is only available for gaussian_smoothing, not {feature!r}")
    return feature, s


def _check_filter_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise ValueError(f"features are defined for 2 or 3 spatial dimensions, got {ndim}")
