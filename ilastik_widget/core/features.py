"""ilastik's pixel feature filter bank.

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

Volumes: 3D or 2D per scale
    :class:`FeatureSelection` holds ilastik's "in 2D" column: the scales whose filters run slice-wise
    on volumes (2D filters in each z slice, nothing along z, two eigenvalues). ``mode="2d"`` means every
    scale in 2D. The 2D choice is an error on 2D images (:meth:`FeatureSelection.check_for`).

Anisotropic voxels (``voxel_size=``, one size per spatial axis, any unit)
    Scales are lengths in units of the *smallest* voxel size: along axis ``a`` the Gaussian's sigma in
    voxels is ``s * min(voxel_size) / voxel_size[a]``, and derivatives are taken per that same unit of
    length (a derivative along ``a`` is divided by ``voxel_size[a] / min(voxel_size)`` per order). A
    filter is then isotropic in space, gradients and Hessians have consistent units across axes, and
    their eigenvalues mix axes correctly. On isotropic data (or ``voxel_size=None``) nothing changes. A
    sigma far below one voxel (e.g. s = 0.3 on an axis 5x coarser) becomes the identity for smoothing
    and central differences for derivatives (the limits of the normalised kernels); 2D cells use the
    in-plane voxel sizes with the same unit. ilastik, the reference point, takes every sigma in voxels
    on every axis and ignores the voxel size (requests to use it have been open there since 2012/2014);
    its answer to anisotropy is the "in 2D" column, which we have too. So with ``voxel_size`` given we
    deliberately differ from ilastik; without it we compute what ilastik's definitions say.

Block-wise computation with :func:`features_for_region` reads the region plus :func:`halo` voxels per axis
(clipped to the image) and equals :func:`compute_features` on the whole image cropped to the region;
:mod:`ilastik_widget.core.planes` computes single planes of a volume the same way, without blocks.

Implementation (:mod:`ilastik_widget.core.filters`): OpenCV 1D passes (column passes in cache-sized
bands), shared passes per scale, per-chunk algebra with closed-form float32 eigenvalues, output
written once in the ``(*spatial, C)`` layout, a thread pool of ``min(4, cpu_count)`` threads. Work
and result buffers are reused between calls (:mod:`ilastik_widget.core.workspace`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from . import filters as _filters
from .filters import DOG_RATIO, PlanItem, Scale
from .selection import (
    EIGEN,
    FEATURE_DESCRIPTIONS,
    FEATURE_TITLES,
    FEATURES,
    SCALES,
    FeatureSelection,
    feature_table,
    is_valid,
    n_outputs,
)

__all__ = [
    "DOG_RATIO",
    "EIGEN",
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
# voxel sizes and the per-scale filter plan


def check_voxel_size(voxel_size: Any, n_spatial: int) -> tuple[float, ...] | None:
    """Validate ``voxel_size`` (None, or one positive finite number per spatial axis) and return it as floats."""
    if voxel_size is None:
        return None
    if isinstance(voxel_size, (str, bytes, Mapping)) or not isinstance(voxel_size, Iterable):
        raise ValueError(f"voxel_size must be one positive number per spatial axis, got {voxel_size!r}")
    values = list(voxel_size)
    if len(values) != n_spatial:
        raise ValueError(
            f"voxel_size {voxel_size!r} has {len(values)} value(s) but the image has {n_spatial} spatial axes"
        )
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise ValueError(f"voxel_size {voxel_size!r}: {v!r} is not a number")
        try:
            f = float(v)
        except OverflowError:  # an int beyond float range
            f = math.inf
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"voxel_size {voxel_size!r}: every voxel size must be positive and finite, got {v!r}")
        out.append(f)
    return tuple(out)


def _steps(voxel_size: tuple[float, ...] | None, n_spatial: int) -> tuple[float, ...]:
    """Voxel size per axis in units of the smallest one (1.0 everywhere when isotropic or unknown)."""
    if voxel_size is None:
        return (1.0,) * n_spatial
    m = min(voxel_size)
    return tuple(v / m for v in voxel_size)


def axis_scale(sel: FeatureSelection, scale: float, steps: tuple[float, ...]) -> Scale:
    """How the filters of ``scale`` run along each axis (see the module docstring for the rule)."""
    n = len(steps)
    slice_wise = n == 3 and sel.is_2d(scale)
    return Scale(tuple(None if (slice_wise and a == 0) else scale / steps[a] for a in range(n)), steps)


def filter_plan(sel: FeatureSelection, n_in: int, steps: tuple[float, ...]) -> tuple[list[PlanItem], int]:
    """The (input channel, scale) items of a filter bank call and the total number of output channels."""
    n_spatial = len(steps)
    per_image = sel.n_channels(n_spatial)
    items: list[PlanItem] = []
    for i in range(n_in):
        by_scale: dict[float, list[tuple[str, int]]] = {}
        c = i * per_image
        for f, s in sel.cells():
            by_scale.setdefault(s, []).append((f, c))
            c += n_outputs(f, sel.filter_ndim(s, n_spatial))
        items.extend((i, axis_scale(sel, s, steps), outs) for s, outs in sorted(by_scale.items()))
    return items, n_in * per_image


def _support(feature: str, scale: Scale, axis: int) -> int:
    """Voxels each side along ``axis`` that one output voxel of ``feature`` at ``scale`` depends on."""
    r = scale.radius(axis)
    if feature == "structure_tensor_eigenvalues":
        # chained: gradient at s, then the tensor smoothed at s/2: the radii add up
        return r + scale.scaled(0.5).radius(axis)
    if feature == "difference_of_gaussians":
        return max(r, scale.scaled(DOG_RATIO).radius(axis))
    return r


def axis_halo(sel: FeatureSelection, steps: tuple[float, ...]) -> tuple[int, ...]:
    """Voxels per side along each axis that exact features of a block need around it."""
    return tuple(
        max((_support(f, axis_scale(sel, s, steps), a) for f, s in sel.selected), default=0) for a in range(len(steps))
    )


@overload
def halo(selection: FeatureSelection | None = None) -> int: ...
@overload
def halo(
    selection: FeatureSelection | None, ndim: int | None = None, *, voxel_size: Any = None, mode: str = "3d"
) -> int | tuple[int, ...]: ...


def halo(
    selection: FeatureSelection | None = None, ndim: int | None = None, *, voxel_size: Any = None, mode: str = "3d"
) -> int | tuple[int, ...]:
    """Voxels per side to read around a block for exact block-wise features.

    Parameters
    ----------
    selection : FeatureSelection, optional
        Defaults to :meth:`FeatureSelection.default`.
    ndim : int, optional
        Number of spatial axes. With ``ndim`` or ``voxel_size`` the halo is returned per axis.
    voxel_size : sequence of float, optional
        One size per spatial axis (see the module docstring).
    mode : {"3d", "2d"}
        ``"2d"``: every scale slice-wise on volumes.

    Returns
    -------
    int or tuple of int
        Without ``ndim`` and ``voxel_size``: the largest total kernel support of the selected features on an
        isotropic grid, one number for every axis (0 for an empty selection). Otherwise one number per axis:
        0 along z for scales computed in 2D, smaller along coarse axes of anisotropic data.
    """
    if selection is None:
        selection = FeatureSelection.default()
    if ndim is None and voxel_size is None:
        return max(axis_halo(selection, (1.0, 1.0)))
    if ndim is None:
        try:
            ndim = len(voxel_size)
        except TypeError:
            raise ValueError(f"voxel_size must be one positive number per spatial axis, got {voxel_size!r}") from None
    if ndim not in (2, 3):
        raise ValueError(f"features are defined for 2 or 3 spatial dimensions, got {ndim}")
    if mode not in ("2d", "3d"):
        raise ValueError(f'mode must be "2d" or "3d", got {mode!r}')
    if mode == "2d" and ndim == 3:
        selection = selection.all_in_2d()
    selection.check_for(ndim)
    return axis_halo(selection, _steps(check_voxel_size(voxel_size, ndim), ndim))


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


def all_finite(a: np.ndarray) -> bool:
    """Whether the float array ``a`` holds no NaN or infinity (non-float arrays always do).

    Checked in pieces through one small mask: ``np.isfinite(a).all()`` makes a mask as large as ``a`` (16 MiB of
    fresh pages for one plane of features).
    """
    if a.dtype.kind != "f":
        return True
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ravel(a)
    piece = 1 << 18
    mask = np.empty(min(piece, flat.size), bool)
    for i in range(0, flat.size, piece):
        part = flat[i : i + piece]
        m = mask[: part.size]
        np.isfinite(part, out=m)
        if not m.all():
            return False
    return True


def too_large_for_float32(where: str = "") -> ValueError:
    """The error for finite input whose features overflow float32 (e.g. uint64 near 2**64, or 1e39); ``where`` names
    the region in the message."""
    at = f" in the region [{where}]" if where else ""
    return ValueError(
        f"the image holds values too large for 32-bit floating point{at}: rescale it (e.g. divide by its maximum) "
        "before computing features"
    )


def check_finite(a: np.ndarray) -> None:
    """Raise ValueError if the float array ``a`` holds NaN or infinity."""
    if not all_finite(a):
        raise ValueError("image contains NaN or infinite values; features need finite input")


@dataclass(frozen=True)
class Layout:
    """A validated request: where the channels are, the spatial shape, the effective selection, voxel steps."""

    channel_axis: int | None
    spatial: tuple[int, ...]
    n_in: int
    selection: FeatureSelection
    steps: tuple[float, ...]

    def plan(self) -> tuple[list[PlanItem], int]:
        return filter_plan(self.selection, self.n_in, self.steps)

    @property
    def n_channels(self) -> int:
        return self.selection.n_channels(len(self.spatial), self.n_in)


def check_request(
    shape: tuple[int, ...], dtype: Any, selection: Any, channel_axis: Any, mode: str, voxel_size: Any
) -> Layout:
    """Validate everything about a feature request except the pixel values; ValueError names what is wrong."""
    sel = _as_selection(selection)
    _check_dtype(dtype)
    if mode not in ("2d", "3d"):
        raise ValueError(f'mode must be "2d" or "3d", got {mode!r}')
    shape = tuple(int(n) for n in shape)
    ca = _normalize_channel_axis(len(shape), channel_axis)
    n_spatial = len(shape) - (ca is not None)
    if n_spatial not in (2, 3):
        hint = "" if ca is not None or len(shape) != 4 else " (pass channel_axis for a multi-channel volume)"
        raise ValueError(
            f"image must have 2 or 3 spatial axes, got {n_spatial} (shape {shape}, channel_axis={channel_axis}){hint}"
        )
    if mode == "2d" and n_spatial == 3:
        sel = sel.all_in_2d()
    sel.check_for(n_spatial)
    vs = check_voxel_size(voxel_size, n_spatial)
    spatial = tuple(n for i, n in enumerate(shape) if i != ca)
    return Layout(ca, spatial, shape[ca] if ca is not None else 1, sel, _steps(vs, n_spatial))


def channels_last(block: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """``block`` with its channel axis last (a new axis of length 1 without channels); a view."""
    if channel_axis is None:
        return block[..., None]
    if channel_axis != block.ndim - 1:
        return np.moveaxis(block, channel_axis, -1)
    return block


# ------------------------------------------------------------------------------------------------
# computation


def compute_features(
    image: Any,
    selection: FeatureSelection | Mapping | None = None,
    *,
    channel_axis: int | None = None,
    mode: str = "3d",
    voxel_size: Any = None,
) -> np.ndarray:
    """Compute the selected features of a whole image.

    Parameters
    ----------
    image : array-like
        2D (y, x) or 3D (z, y, x) image, numeric dtype, finite values; optionally with a channel axis.
    selection : FeatureSelection or dict, optional
        Defaults to all features at all scales, in 3D on volumes.
    channel_axis : int, optional
        Axis of ``image`` holding channels (may be negative). Features are computed per channel.
    mode : {"3d", "2d"}
        On volumes, ``"2d"`` filters every scale slice-wise (as if every scale were in
        ``selection.in_2d``).
    voxel_size : sequence of float, optional
        Voxel size per spatial axis; scales are then in units of the smallest one (module docstring).

    Returns
    -------
    numpy.ndarray
        float32, shape ``(*spatial, C)`` with ``C = selection.n_channels(ndim, n_input_channels)``.

    Raises
    ------
    ValueError
        For NaN/inf, bad dimensionality, non-numeric dtype, an empty selection, a bad channel_axis, a bad
        voxel size, or scales in 2D on a 2D image.
    """
    arr = np.asarray(image)
    lay = check_request(arr.shape, arr.dtype, selection, channel_axis, mode, voxel_size)
    check_finite(arr)
    return _compute(channels_last(arr, lay.channel_axis), lay)


def _compute(arr: np.ndarray, lay: Layout) -> np.ndarray:
    """Features of a channel-last array (*spatial, n_in) that passed validation."""
    spatial = arr.shape[:-1]
    plan, n_total = lay.plan()
    out = _filters.new_output((*spatial, n_total))
    images = [np.ascontiguousarray(arr[..., c], dtype=np.float32) for c in range(arr.shape[-1])]
    _filters.filter_bank(images, plan, out)
    return out


# ------------------------------------------------------------------------------------------------
# block-wise


def normalize_region(region: Any, spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """``region`` (None, a slice or a tuple of slices with step 1) as one clipped slice per axis."""
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
    voxel_size: Any = None,
) -> np.ndarray:
    """Features of one region, reading only the region plus :func:`halo` per axis (clipped to the image).

    Parameters
    ----------
    image : array-like
        Anything with ``shape``, ``dtype`` and numpy-style slicing (numpy, zarr, dask, ...). Only the
        region plus halo is read.
    region : tuple of slice or None
        Region over the spatial axes (step 1); ``None`` means the whole image.
    selection, channel_axis, mode, voxel_size
        As for :func:`compute_features`.

    Returns
    -------
    numpy.ndarray
        float32 ``(*region_shape, C)``, equal to ``compute_features(image, ...)[region]`` up to float32
        rounding: the read is clipped to the image, so the mirror happens at the true image border.
    """
    lay = check_request(image.shape, image.dtype, selection, channel_axis, mode, voxel_size)
    reg = normalize_region(region, lay.spatial)
    h = axis_halo(lay.selection, lay.steps)
    read, crop = [], []
    for sl, n, hh in zip(reg, lay.spatial, h):
        lo, hi = max(0, sl.start - hh), min(n, sl.stop + hh)
        read.append(slice(lo, hi))
        crop.append(slice(sl.start - lo, sl.stop - lo))
    if any(sl.stop <= sl.start for sl in reg):
        return np.zeros((*(sl.stop - sl.start for sl in reg), lay.n_channels), np.float32)
    index = list(read)
    if lay.channel_axis is not None:
        index.insert(lay.channel_axis, slice(None))
    block = np.asarray(image[tuple(index)])
    check_finite(block)
    feats = _compute(channels_last(block, lay.channel_axis), lay)
    return np.ascontiguousarray(feats[tuple(crop)])
