"""ilastik's pixel feature filter bank (DESIGN.md section 5).

Six features at seven scales, for 2D images and 3D volumes, single- or multi-channel:

========================================  ==============================================  =========
feature                                   definition on image I                           ch 2D/3D
========================================  ==============================================  =========
``gaussian_smoothing``                    G_s * I                                         1 / 1
``laplacian_of_gaussian``                 sum of second derivatives of G_s * I            1 / 1
``gaussian_gradient_magnitude``           norm of the gradient of G_s * I                 1 / 1
``difference_of_gaussians``               G_s * I - G_(0.66 s) * I                        1 / 1
``structure_tensor_eigenvalues``          eigenvalues of G_(s/2) * (grad_s I grad_s I^T)  2 / 3
``hessian_of_gaussian_eigenvalues``       eigenvalues of the Hessian of G_s * I           2 / 3
========================================  ==============================================  =========

Scale 0.3 exists for Gaussian smoothing only.  Eigenvalues come largest first.  Borders are mirrored
(scipy ``mode="mirror"``).  Output channels: per input channel, then feature (in :data:`FEATURES`
order), then scale.  The full set is 49 channels in 2D and 61 in 3D.

Kernels are sampled Gaussians (derivatives) of radius ceil(3.5 s): smoothing kernels sum to one,
first-derivative kernels are exactly antisymmetric with unit response to a ramp, second-derivative
kernels sum to exactly zero with unit response to x^2/2 (no leak of the mean brightness).

Block-wise computation with :func:`features_for_region` reads the region plus :func:`halo` pixels
(clipped to the image) and equals :func:`compute_features` on the whole image cropped to the region.

Implementation (:mod:`ilastik_widget.core.filters`): OpenCV 1D passes (column passes in cache-sized
bands), shared passes per scale, per-chunk algebra with closed-form float32 eigenvalues, output
written once in the ``(*spatial, C)`` layout, a thread pool of ``min(4, cpu_count)`` threads. Work
and result buffers are reused between calls (bounded by ``ILASTIK_WIDGET_FEATURE_WORKSPACE_MB`` and
``ILASTIK_WIDGET_FEATURE_RESULTS_MB``, default min(2 GiB, RAM / 8) each) and dropped after 20 s
without a call, or by ``ilastik_widget.core.filters.clear_workspace()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import filters as _filters

__all__ = [
    "FEATURES",
    "FEATURE_DESCRIPTIONS",
    "FEATURE_TITLES",
    "SCALES",
    "FeatureSelection",
    "compute_features",
    "feature_table",
    "features_for_region",
    "halo",
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

#: inner scale of the difference of Gaussians, as a fraction of the outer one
DOG_RATIO = _filters.DOG_RATIO

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

_EIGEN = ("structure_tensor_eigenvalues", "hessian_of_gaussian_eigenvalues")


def is_valid(feature: str, scale: float) -> bool:
    """Whether ``(feature, scale)`` is a cell of ilastik's matrix (scale 0.3 is smoothing only)."""
    s = _canonical_scale(scale)
    if feature not in FEATURES or s is None:
        return False
    return s != 0.3 or feature == "gaussian_smoothing"


def _canonical_scale(scale: Any) -> float | None:
    """The member of :data:`SCALES` equal to ``scale`` (tolerating float noise), else None."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        return None
    for c in SCALES:
        if math.isclose(s, c, rel_tol=1e-9, abs_tol=1e-12):
            return c
    return None


def _n_outputs(feature: str, ndim: int) -> int:
    return ndim if feature in _EIGEN else 1


def feature_table() -> dict[str, Any]:
    """The feature matrix as plain JSON data, for user interfaces that must not repeat it.

    Returns
    -------
    dict
        ``{"scales": [...all scales...], "features": [{"name", "title", "description", "scales",
        "channels": {"2d", "3d"}}, ...]}``, features in :data:`FEATURES` order; a feature's ``scales`` are the
        members of ``scales`` that :func:`is_valid` accepts for it, and ``channels`` its output channels per
        input channel. Every (name, scale) pair is a valid cell of :class:`FeatureSelection`.
    """
    return {
        "scales": list(SCALES),
        "features": [
            {
                "name": f,
                "title": FEATURE_TITLES[f],
                "description": FEATURE_DESCRIPTIONS[f],
                "scales": [s for s in SCALES if is_valid(f, s)],
                "channels": {"2d": _n_outputs(f, 2), "3d": _n_outputs(f, 3)},
            }
            for f in FEATURES
        ],
    }


@dataclass(frozen=True)
class FeatureSelection:
    """A set of (feature, scale) cells of the 6 x 7 feature matrix.

    Parameters
    ----------
    selected : frozenset of (str, float)
        The enabled cells. Scales are snapped to the members of :data:`SCALES`.

    Examples
    --------
    >>> sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    >>> sel.n_channels(2)
    1
    """

    selected: frozenset[tuple[str, float]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        norm = set()
        for item in self.selected:
            try:
                feature, scale = item
            except (TypeError, ValueError):
                raise ValueError(f"a selection entry must be a (feature, scale) pair, got {item!r}") from None
            norm.add(_check_cell(feature, scale))
        object.__setattr__(self, "selected", frozenset(norm))

    # ---- constructors
    @classmethod
    def all(cls) -> FeatureSelection:
        """Every valid cell: 49 channels in 2D, 61 in 3D."""
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
        return FeatureSelection(frozenset(sel))

    def enabled(self, feature: str, scale: float) -> bool:
        """Whether the cell ``(feature, scale)`` is selected."""
        s = _canonical_scale(scale)
        return s is not None and (feature, s) in self.selected

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

    def n_channels(self, ndim: int, n_input_channels: int = 1) -> int:
        """Number of output channels for ``ndim`` spatial filter dimensions (2 also for ``mode="2d"``)."""
        _check_filter_ndim(ndim)
        return n_input_channels * sum(_n_outputs(f, ndim) for f, _ in self.cells())

    def channel_names(self, ndim: int, n_input_channels: int = 1) -> list[str]:
        """Names of the output channels, e.g. ``"hessian_of_gaussian_eigenvalues_1_ev0"``.

        With several input channels each name is prefixed by ``"c<i>:"``.
        """
        _check_filter_ndim(ndim)
        names = []
        for c in range(n_input_channels):
            prefix = f"c{c}:" if n_input_channels > 1 else ""
            for f, s in self.cells():
                base = f"{prefix}{f}_{s:g}"
                if f in _EIGEN:
                    names.extend(f"{base}_ev{i}" for i in range(ndim))
                else:
                    names.append(base)
        return names

    # ---- serialisation
    def to_dict(self) -> dict:
        """JSON-able form ``{"features": {feature: [scales...], ...}}`` (every feature key present)."""
        return {"features": {f: [s for s in SCALES if (f, s) in self.selected] for f in FEATURES}}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSelection:
        """Inverse of :meth:`to_dict`; unknown features or invalid scales raise ValueError."""
        if not isinstance(d, Mapping) or not isinstance(d.get("features"), Mapping):
            raise ValueError('a feature selection dict must look like {"features": {name: [scales, ...]}}')
        cells = []
        for f, scales in d["features"].items():
            if isinstance(scales, (str, bytes)) or not isinstance(scales, Iterable):
                raise ValueError(f"scales of feature {f!r} must be a list of numbers, got {scales!r}")
            cells.extend((f, s) for s in scales)
        return cls(frozenset(cells))

    def __repr__(self) -> str:
        return f"FeatureSelection({len(self.selected)} cells: {self.to_dict()['features']})"


def _check_cell(feature: Any, scale: Any) -> tuple[str, float]:
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; known features: {', '.join(FEATURES)}")
    s = _canonical_scale(scale)
    if s is None:
        raise ValueError(f"unknown scale {scale!r} for {feature!r}; scales are {SCALES}")
    if not is_valid(feature, s):
        raise ValueError(f"scale {s} is only available for gaussian_smoothing, not {feature!r}")
    return feature, s


def _check_filter_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise ValueError(f"features are defined for 2 or 3 spatial dimensions, got {ndim}")


def _as_selection(selection: FeatureSelection | Mapping | None) -> FeatureSelection:
    if selection is None:
        selection = FeatureSelection.default()
    elif isinstance(selection, Mapping):
        selection = FeatureSelection.from_dict(selection)
    elif not isinstance(selection, FeatureSelection):
        raise ValueError(f"selection must be a FeatureSelection, a dict or None, got {type(selection).__name__}")
    if selection.is_empty:
        raise ValueError("the feature selection is empty: select at least one feature")
    return selection


# ------------------------------------------------------------------------------------------------
# halo


def _support(feature: str, scale: float) -> int:
    """Pixels each side that one output pixel of ``(feature, scale)`` depends on."""
    r = _filters.kernel_radius(scale)
    if feature == "structure_tensor_eigenvalues":
        # chained: gradient at s, then the tensor smoothed at s/2: the radii add up
        return r + _filters.kernel_radius(scale / 2)
    if feature == "difference_of_gaussians":
        return max(r, _filters.kernel_radius(DOG_RATIO * scale))
    return r


def halo(selection: FeatureSelection | None = None) -> int:
    """Pixels per side to read around a block for exact block-wise features.

    Parameters
    ----------
    selection : FeatureSelection, optional
        Defaults to :meth:`FeatureSelection.default`.

    Returns
    -------
    int
        The largest total kernel support of the selected features (0 for an empty selection).
    """
    if selection is None:
        selection = FeatureSelection.default()
    return max((_support(f, s) for f, s in selection.selected), default=0)


# ------------------------------------------------------------------------------------------------
# validation


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        raise ValueError("boolean images are not supported: convert to an integer or float type first")
    if dt.kind == "c":
        raise ValueError(f"complex images are not supported (dtype {dt})")
    if dt.kind not in "iuf":
        raise ValueError(f"image dtype must be numeric (integer or float), got {dt}")
    return dt


def _normalize_channel_axis(ndim: int, channel_axis: int | None) -> int | None:
    if channel_axis is None:
        return None
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise ValueError(f"channel_axis must be an int or None, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for an image with {ndim} axes")
    return int(channel_axis) % ndim


def _check_layout(shape: tuple[int, ...], channel_axis: int | None, mode: str) -> tuple[int | None, int]:
    """Validate and return (normalised channel axis, number of spatial axes)."""
    if mode not in ("2d", "3d"):
        raise ValueError(f'mode must be "2d" or "3d", got {mode!r}')
    ndim = len(shape)
    ca = _normalize_channel_axis(ndim, channel_axis)
    n_spatial = ndim - (ca is not None)
    if n_spatial not in (2, 3):
        hint = "" if ca is not None or ndim != 4 else " (pass channel_axis for a multi-channel volume)"
        raise ValueError(
            f"image must have 2 or 3 spatial axes, got {n_spatial} (shape {tuple(shape)}, channel_axis="
            f"{channel_axis}){hint}"
        )
    return ca, n_spatial


def _check_finite(a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError("image contains NaN or infinite values; features need finite input")


# ------------------------------------------------------------------------------------------------
# computation


def compute_features(
    image: Any,
    selection: FeatureSelection | Mapping | None = None,
    *,
    channel_axis: int | None = None,
    mode: str = "3d",
) -> np.ndarray:
    """Compute the selected features of a whole image.

    Parameters
    ----------
    image : array-like
        2D (y, x) or 3D (z, y, x) image, numeric dtype, finite values; optionally with a channel axis.
    selection : FeatureSelection or dict, optional
        Defaults to all features at all scales.
    channel_axis : int, optional
        Axis of ``image`` holding channels (may be negative). Features are computed per channel.
    mode : {"3d", "2d"}
        On volumes, ``"2d"`` filters each z slice independently (2D channel counts).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(*spatial, C)`` with ``C = selection.n_channels(ndim, n_input_channels)``.

    Raises
    ------
    ValueError
        For NaN/inf, bad dimensionality, non-numeric dtype, an empty selection or a bad channel_axis.
    """
    sel = _as_selection(selection)
    arr = np.asarray(image)
    _check_dtype(arr.dtype)
    ca, n_spatial = _check_layout(arr.shape, channel_axis, mode)
    _check_finite(arr)
    if ca is None:
        arr = arr[..., None]
    elif ca != arr.ndim - 1:
        arr = np.moveaxis(arr, ca, -1)
    return _compute(arr, sel, mode if n_spatial == 3 else "3d")


def _compute(arr: np.ndarray, sel: FeatureSelection, mode: str) -> np.ndarray:
    """Features of a channel-last array (*spatial, n_in) that passed validation."""
    spatial = arr.shape[:-1]
    n_in = arr.shape[-1]
    fdim = 2 if mode == "2d" else len(spatial)
    out = _filters.new_output((*spatial, n_in * sel.n_channels(fdim)))
    images = [np.ascontiguousarray(arr[..., c], dtype=np.float32) for c in range(n_in)]
    cells = sel.cells()

    def n_out(feature: str) -> int:
        return _n_outputs(feature, fdim)

    if mode == "2d" and len(spatial) == 3:
        for z in range(spatial[0]):
            _filters.filter_bank([im[z] for im in images], cells, n_out, out[z])
    else:
        _filters.filter_bank(images, cells, n_out, out)
    return out


# ------------------------------------------------------------------------------------------------
# block-wise


def _normalize_region(region: Any, spatial: tuple[int, ...]) -> tuple[slice, ...]:
    if region is None:
        return tuple(slice(0, n) for n in spatial)
    if isinstance(region, slice):
        region = (region,)
    region = tuple(region)
    if len(region) > len(spatial):
        raise ValueError(f"region has {len(region)} axes but the image has {len(spatial)} spatial axes")
    region = region + (slice(None),) * (len(spatial) - len(region))
    out = []
    for sl, n in zip(region, spatial):
        if not isinstance(sl, slice):
            raise ValueError(f"region must be a tuple of slices, got {sl!r}")
        start, stop, step = sl.indices(n)
        if step != 1:
            raise ValueError("region slices must have step 1")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


def features_for_region(
    image: Any,
    region: tuple[slice, ...] | None,
    selection: FeatureSelection | Mapping | None = None,
    *,
    channel_axis: int | None = None,
    mode: str = "3d",
) -> np.ndarray:
    """Features of one region, reading only the region plus :func:`halo` (clipped to the image).

    Parameters
    ----------
    image : array-like
        Anything with ``shape``, ``dtype`` and numpy-style slicing (numpy, zarr, dask, ...). Only the
        region plus halo is read.
    region : tuple of slice or None
        Region over the spatial axes (step 1); ``None`` means the whole image.
    selection, channel_axis, mode
        As for :func:`compute_features`.

    Returns
    -------
    numpy.ndarray
        float32 ``(*region_shape, C)``, equal to ``compute_features(image, ...)[region]`` up to float32
        rounding: the read is clipped to the image, so the mirror happens at the true image border.
    """
    sel = _as_selection(selection)
    shape = tuple(int(n) for n in image.shape)
    _check_dtype(image.dtype)
    ca, n_spatial = _check_layout(shape, channel_axis, mode)
    spatial = tuple(n for i, n in enumerate(shape) if i != ca)
    reg = _normalize_region(region, spatial)
    h = halo(sel)
    read, crop = [], []
    for axis, (sl, n) in enumerate(zip(reg, spatial)):
        # slice-wise 2D filters never look along z
        hh = 0 if (mode == "2d" and n_spatial == 3 and axis == 0) else h
        lo, hi = max(0, sl.start - hh), min(n, sl.stop + hh)
        read.append(slice(lo, hi))
        crop.append(slice(sl.start - lo, sl.stop - lo))
    index = list(read)
    if ca is not None:
        index.insert(ca, slice(None))
    n_in = shape[ca] if ca is not None else 1
    fdim = 2 if (mode == "2d" or n_spatial == 2) else 3
    if any(sl.stop <= sl.start for sl in reg):
        return np.zeros((*(sl.stop - sl.start for sl in reg), sel.n_channels(fdim, n_in)), np.float32)
    block = np.asarray(image[tuple(index)])
    _check_finite(block)
    if ca is None:
        block = block[..., None]
    elif ca != block.ndim - 1:
        block = np.moveaxis(block, ca, -1)
    feats = _compute(block, sel, mode if n_spatial == 3 else "3d")
    return np.ascontiguousarray(feats[tuple(crop)])
