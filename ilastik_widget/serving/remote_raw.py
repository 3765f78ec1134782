"""The raw layer loaded by the browser straight from the image's own URL, placed exactly where the kernel's ``mem://``
raw layer would be, with the kernel's layer as its fallback.

Neuroglancer 2.41 reads zarr v2 and v3 (sharded too) and OME-Zarr, Neuroglancer precomputed (sharded too), N5 and
Deep Zoom itself. The zarr and OME-Zarr transforms follow ``lib/datasource/zarr`` (OME scales and translations
undone); the others follow the source's :class:`~ilastik_widget.io.opener.StoredLayout`, which names the
dimensions as Neuroglancer does and says where it puts voxel 0 (a precomputed ``voxel_offset``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .chunk_store import ChunkStore
from .pyramid import AXIS_NAMES
from .raw_reader import NATIVE_DTYPES

log = logging.getLogger(__name__)

#: Where the browser reads the raw image of a source on a web server: from the URL with the kernel's copy as the
#: fallback, from the kernel always, or from the URL only.
RAW_FROM = ("auto", "kernel", "browser")
# OME-Zarr multiscale versions Neuroglancer 2.41 reads (lib/datasource/zarr/ome.js); 0.5 only from zarr v3.
_NEUROGLANCER_OME_VERSIONS = ("0.4", "0.5-dev", "0.5")
#: Stored formats whose dimensions the StoredLayout names as Neuroglancer does.
_LAYOUT_FORMATS = ("precomputed", "n5", "deepzoom")
#: Deep Zoom tiles Neuroglancer shows right: JPEG of three 8-bit channels. It asks its decoders for three 8-bit
#: channels (lib/datasource/deepzoom/backend.js), so grey, 16-bit and RGBA tiles fail chunk by chunk after the
#: metadata loaded (too late for the fallback); and it transposes decoded PNG tiles from interleaved to planar once
#: more than its PNG decoder already did, which scrambles their pixels.
_DEEPZOOM_TILES = ("jpg-rgb8", "jpeg-rgb8")
#: Precomputed image encodings the widget's bundle decodes (its build leaves out the JPEG-XL decoder).
_PRECOMPUTED_ENCODINGS = ("raw", "jpeg", "png")


def check_raw_from(value: str) -> str:
    """``value`` if it is one of :data:`RAW_FROM` (``"auto"``, ``"kernel"``, ``"browser"``), else ValueError."""
    if value not in RAW_FROM:
        raise ValueError(f"raw_from must be one of {', '.join(map(repr, RAW_FROM))}, not {value!r}")
    return value


def _ome_scale_translation(transforms, rank: int) -> tuple[list[float], list[float]]:
    """Diagonal scale and translation of a list of OME-Zarr coordinate transformations applied in order."""
    scale, shift = [1.0] * rank, [0.0] * rank
    for tr in transforms or []:
        kind = tr.get("type") if isinstance(tr, dict) else None
        if kind == "scale" and len(tr.get("scale") or ()) == rank:
            scale = [a * float(b) for a, b in zip(scale, tr["scale"])]
            shift = [a * float(b) for a, b in zip(shift, tr["scale"])]
        elif kind == "translation" and len(tr.get("translation") or ()) == rank:
            shift = [a + float(b) for a, b in zip(shift, tr["translation"])]
        elif kind != "identity":
            raise ValueError(f"OME-Zarr coordinate transformation {tr!r} is not one Neuroglancer reads")
    if not all(math.isfinite(v) and v > 0 for v in scale) or not all(math.isfinite(v) for v in shift):
        raise ValueError(f"OME-Zarr coordinate transformations {transforms!r} have a non-positive scale")
    return scale, shift


def raw_layer_spec(store: ChunkStore, kernel_spec: dict, raw_from: str) -> dict:
    """The raw layer as :attr:`raw_from` asks: loaded by the browser from the source's URL (with
    ``kernel_spec`` as its ``"fallback"`` in "auto" mode), or ``kernel_spec`` itself."""
    if raw_from == "kernel":
        return kernel_spec
    try:
        fields = browser_raw_source(store)
    except ValueError as exc:
        if raw_from == "browser":
            raise
        log.debug("chunk_server: the kernel serves the raw layer: %s", exc)
        return kernel_spec
    spec = {**kernel_spec, **fields}
    if raw_from == "auto":
        spec["fallback"] = kernel_spec
    return spec


def browser_raw_source(store: ChunkStore) -> dict:
    """Layer fields that make Neuroglancer load the raw image straight from the session source's http(s) URL
    (zarr v2 or v3, OME-Zarr, precomputed, N5 or Deep Zoom).

    Returns ``{"source": {"url": ..., "transform": ...}}``, plus ``"localPosition"`` when the source has axes the
    raw layer does not show. The transform puts the remote data exactly where the ``mem://`` raw layer is: the
    spatial axes become the global dimensions (``y``, ``x``, ``z``, with the relative voxel sizes of
    :meth:`display_scales`) with voxel ``i`` spanning ``[i, i + 1)`` whatever the OME-Zarr scale, units and
    translation or the precomputed voxel offset; an RGB(A) channel axis becomes the channel dimension ``c^``; any other channel axis becomes a
    local dimension ``c'`` held at the first channel, and the time axis of a time point (``at_time``) a local
    dimension ``t'`` held at that time point, as the kernel reads them; a dimension the kernel's array lacks (the
    z of a one-voxel-deep precomputed volume) a local dimension held at its one index.

    Raises
    ------
    ValueError
        Saying why, when the source is not on a web server, needs a token the browser does not have, is stored in
        a way Neuroglancer cannot decode, or the case cannot be expressed as a Neuroglancer source transform (the
        raw layer is then served by the kernel).
    """
    source = store.session.source
    url = getattr(source, "url", None)
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ValueError("the image has no http(s) URL")
    if "?" in url or "#" in url:  # Neuroglancer's sources take no query string
        raise ValueError(f"the URL {url!r} has a query or fragment")
    layout = getattr(source, "storage", None)
    if getattr(layout, "needs_token", False):
        raise ValueError("the image was opened with a token, which the browser does not have")
    if np.dtype(store.raw_reader.image.dtype) not in NATIVE_DTYPES:
        # the kernel converts it (to float32); Neuroglancer cannot show the original
        raise ValueError(f"Neuroglancer does not show {np.dtype(store.raw_reader.image.dtype)} images")
    fmt = getattr(source, "zarr_format", None)
    if fmt not in (2, 3):
        if getattr(source, "data_format", None) in _LAYOUT_FORMATS and layout is not None:
            return _layout_source(store, source, layout)
        raise ValueError("the image at the URL is not in a format Neuroglancer reads")
    roles = _source_axis_roles(store, source)
    names, scales, local = _raw_output_dimensions(store, source, roles)
    ome = getattr(source, "ome_multiscale", None)
    if ome is not None:
        inputs, shift = _ome_input_dimensions(ome, fmt, len(roles))
        # Input dimensions named as Neuroglancer names the OME axes, with the output's scales: the matrix maps
        # one model unit (one full-resolution voxel) to one output unit.
        factors = [1.0] * len(roles)
        transform: dict[str, Any] = {"inputDimensions": {n: [s, ""] for n, s in zip(inputs, scales)}}
    else:
        # A plain zarr array: Neuroglancer's model has unit scale and voxel i at [i, i + 1) already.
        _check_plain_zarr(source)
        shift = [0.0] * len(roles)
        factors = scales
        transform = {}
    rank = len(roles)
    transform["outputDimensions"] = {n: [s, ""] for n, s in zip(names, scales)}
    transform["matrix"] = [[factors[i] if j == i else 0.0 for j in range(rank)] + [shift[i]] for i in range(rank)]
    out: dict[str, Any] = {"source": {"url": f"{url.rstrip('/')}/|zarr{fmt}:", "transform": transform}}
    if local:
        out["localPosition"] = local
    return out


def _layout_source(store: ChunkStore, source: Any, layout: Any) -> dict:
    """:func:`browser_raw_source` of a precomputed, N5 or Deep Zoom image, from its stored layout: input dimensions
    named as Neuroglancer names them with the output's scales (one model unit, one voxel, is one output unit), the
    voxel offset undone."""
    _check_encodings(layout)
    roles = _layout_roles(store, source, layout)
    names, scales, local = _raw_output_dimensions(store, source, roles)
    rank = len(roles)
    shift = [0.0 - float(v) for v in layout.voxel_offset]
    transform = {
        "inputDimensions": {n: [s, ""] for n, s in zip(layout.dimensions, scales)},
        "outputDimensions": {n: [s, ""] for n, s in zip(names, scales)},
        "matrix": [[1.0 if j == i else 0.0 for j in range(rank)] + [shift[i]] for i in range(rank)],
    }
    out: dict[str, Any] = {"source": {"url": layout.source, "transform": transform}}
    if local:
        out["localPosition"] = local
    return out


def _check_encodings(layout: Any) -> None:
    if layout.format == "deepzoom" and not set(layout.encodings) <= set(_DEEPZOOM_TILES):
        raise ValueError(
            f"Neuroglancer shows Deep Zoom tiles of 8-bit RGB JPEG only, not {', '.join(layout.encodings)}"
        )
    if layout.format == "deepzoom" and layout.doubled_slashes is not True:
        # Neuroglancer asks for <name>_files/<level>//<col>_<row>.<format> (lib/datasource/deepzoom/backend.js) and
        # takes a missing tile for an empty one: no error, no fallback, a black image
        raise ValueError("the server does not answer tile paths with a doubled slash, as Neuroglancer asks for them")
    if layout.format == "precomputed" and not set(layout.encodings) <= set(_PRECOMPUTED_ENCODINGS):
        raise ValueError(f"the widget's Neuroglancer does not decode {', '.join(layout.encodings)} chunks")


def _layout_roles(store: ChunkStore, source: Any, layout: Any) -> list[tuple]:
    """What each stored dimension is to the kernel (as :func:`_source_axis_roles`), from the layout's axis letters,
    plus ``("fixed", index, name)`` for a dimension the kernel's array does not have."""
    axes = str(getattr(source, "axes", ""))
    if tuple(store.raw_reader.image.shape) != tuple(source.shape) or store.raw_reader.channel_axis != (
        axes.index("c") if "c" in axes else None
    ):
        raise ValueError("the session shows the image with other axes than its source's")
    spatial = [a for a in axes if a in "zyx"]
    fixed = dict(layout.fixed)
    roles: list[tuple] = []
    for d, letter in enumerate(layout.axes):
        if d in fixed:
            roles.append(("fixed", fixed[d], layout.dimensions[d].rstrip("^'") + "'"))
        elif letter in spatial:
            roles.append(("space", spatial.index(letter)))
        elif letter == "c" and "c" in axes:
            roles.append(("channel", axes.index("c")))
        elif letter == "t" and getattr(source, "time_index", None) is not None and "t" not in axes:
            roles.append(("time", int(source.time_index)))
        else:
            raise ValueError(f"the stored axes {layout.axes!r} do not match the image's axes {axes!r}")
    shown = [r for r in roles if r[0] in ("space", "channel")]
    if len(shown) != len(axes):
        raise ValueError(f"the stored axes {layout.axes!r} do not match the image's axes {axes!r}")
    return roles


def _source_axis_roles(store: ChunkStore, source: Any) -> list[tuple]:
    """What each axis of the zarr array at the URL is to the kernel: ``("space", k)`` for the k-th spatial axis,
    ``("channel", q)`` for the channel axis (axis q of the kernel's array) or ``("time", index)`` for the time axis
    a time point was taken from."""
    # at_time() drops the time axis from the kernel's array; _base_select says where it was in the stored one.
    removed = dict(getattr(source, "_base_select", ()) or ())
    if getattr(source, "time_index", None) is not None and not removed:
        raise ValueError("the time axis of the time point is not known")
    kernel_axes = iter(range(len(store.raw_reader.image.shape)))
    roles: list[tuple] = []
    k = 0
    for p in range(len(store.raw_reader.image.shape) + len(removed)):
        if p in removed:
            roles.append(("time", int(removed[p])))
            continue
        q = next(kernel_axes)
        if q == store.raw_reader.channel_axis:
            roles.append(("channel", q))
        else:
            roles.append(("space", k))
            k += 1
    return roles


def _raw_output_dimensions(
    store: ChunkStore, source: Any, roles: list[tuple]
) -> tuple[list[str], list[float], list[float]]:
    """Output dimension names and scales per source axis, and the local position (in the source's axis order)."""
    scales = store.display_scales()
    names: list[str] = []
    out_scales: list[float] = []
    local: list[float] = []
    for role in roles:
        if role[0] == "space":
            names.append(AXIS_NAMES[store.ndim][role[1]])
            out_scales.append(scales[role[1]])
            continue
        out_scales.append(1.0)
        if role[0] == "fixed":  # a dimension the kernel's array lacks (a flat z), held at its one index
            names.append(role[2])
            local.append(role[1] + 0.5)
        elif role[0] == "time":
            names.append("t'")
            local.append(role[1] + 0.5)  # the centre of that time point
        elif store.raw_reader.channels is not None:
            # Neuroglancer's channel dimension must lie whole in every chunk; channels stored one per chunk
            # (common in OME-Zarr) cannot be shown together, so then the kernel serves the raw layer.
            if any(len(level.chunks[role[1]]) != 1 for level in getattr(source, "levels", None) or []):
                raise ValueError("the channels are not stored in one chunk")
            names.append("c^")
        else:
            names.append("c'")
            local.append(0.5)  # the first channel, as the kernel shows
    return names, out_scales, local


def _ome_input_dimensions(ome: dict, fmt: int, rank: int) -> tuple[list[str], list[float]]:
    """Neuroglancer's model dimension names of an OME-Zarr image and the translation (in full-resolution voxels)
    that puts its voxel i at [i, i + 1)."""
    version = ome.get("version")
    if version not in _NEUROGLANCER_OME_VERSIONS or (version == "0.5" and fmt != 3):
        raise ValueError(f"Neuroglancer does not read OME-Zarr {version} metadata from zarr v{fmt}")
    axes = ome.get("axes")
    if not isinstance(axes, list) or len(axes) != rank or not all(isinstance(a, dict) for a in axes):
        raise ValueError(f"OME-Zarr axes {axes!r} do not match the array")
    names = [str(a.get("name")) + ("'" if a.get("type") == "channel" else "") for a in axes]
    datasets = ome.get("datasets") or [{}]
    s_level, t_level = _ome_scale_translation(datasets[0].get("coordinateTransformations"), rank)
    s_all, t_all = _ome_scale_translation(ome.get("coordinateTransformations"), rank)
    # Neuroglancer's model: OME physical position (multiscale transform after the dataset's) in units of the
    # full-resolution voxel, the centre of voxel i at i + translation / scale, so voxel i spans
    # [i - 1/2 + translation / scale, ...): shift by 1/2 - translation / scale.
    shift = [0.5 - (sa * tl + ta) / (sa * sl) for sl, tl, sa, ta in zip(s_level, t_level, s_all, t_all)]
    return names, shift


def _check_plain_zarr(source: Any) -> None:
    base = getattr(source, "_base", None)
    if getattr(source, "source_kind", None) != "zarr" or base is None:
        raise ValueError("the image at the URL is neither an OME-Zarr image nor a zarr array")
    units = dict(getattr(base, "attrs", {}) or {}).get("dimension_units")
    if units and any(units):  # Neuroglancer would scale the model by them
        raise ValueError("the zarr array has dimension_units")
