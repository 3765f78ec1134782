"""zarr v2 and v3 arrays and groups, OME-Zarr 0.1 to 0.5 images among them, read with tensorstore (zarr-python for
codecs tensorstore does not know)."""

from __future__ import annotations

import os
from typing import Any

from . import metadata as md
from .errors import SourceError
from .location import Location
from .opener import MAX_METADATA_BYTES, Opener, as_dask, check_levels, stem

__all__ = ["open_zarr_node"]


def open_zarr_node(op: Opener, loc: Location, zarr_format: int, doc: Any):
    """Open the zarr array or group at ``loc`` (``doc``: its ``zarr.json``, or ``.zarray`` for
    zarr v2, already read).

    Returns an :class:`~ilastik_widget.io.sources.ImageSource`: an OME-Zarr group as its multiscale image, a plain local
    group as its only array. Raises :class:`~ilastik_widget.io.errors.SourceError` when the metadata are not valid or a
    group holds no array or several (then ``path=`` names one)."""
    from .sources import _axes_for, _build, _check_axes

    if isinstance(doc, dict) and doc.get("node_type") == "group":
        return _open_zarr_group(op, loc, zarr_format, md._dict(doc.get("attributes", {}), loc.where, "attributes"))
    attrs = op.read_json(loc, ".zattrs") if zarr_format == 2 else None
    where = loc.key_where("zarr.json" if zarr_format == 3 else ".zarray")
    meta = md.parse_zarr_array(doc, where, attrs)
    arr = _zarr_array(op, loc, meta, doc)
    ax = _check_axes(op.axes, arr.ndim) if op.axes else _axes_for(arr.ndim, op.channel_axis, _named_axes(meta))
    fmt = f"zarr{zarr_format}"
    names = meta.dimension_names or tuple(f"d{i}" for i in range(arr.ndim))
    layout = op.layout(loc, fmt, [n or f"d{i}" for i, n in enumerate(names)], ax)
    return _build(
        as_dask(arr, "zarr", ax),
        ax,
        base=arr,
        zarr_format=zarr_format,
        storage=layout,
        **op.source_meta(loc, "zarr", fmt),
    )


def _named_axes(meta: md.ZarrArray) -> str | None:
    names = meta.dimension_names
    if names and all(isinstance(n, str) and n.lower() in md.AXIS_LETTERS for n in names):
        letters = "".join(str(n).lower() for n in names)
        if len(set(letters)) == len(letters) and sum(a in "zyx" for a in letters) in (2, 3):
            return letters
    return None


def _zarr_array(op: Opener, loc: Location, meta: md.ZarrArray, doc: dict):
    """The array at ``loc`` through tensorstore, or zarr-python for codecs tensorstore does not read."""
    driver = "zarr3" if meta.zarr_format == 3 else "zarr"
    try:
        staging = (
            ["zarr.json"] if meta.zarr_format == 3 else [".zarray", ".zattrs"],
            lambda box: box,
            lambda idx, *_: meta.key_prefix + meta.key_separator.join(map(str, idx)),
        )
        return op.open_ts(
            loc, {"driver": driver}, where=loc.where, attrs=meta.attributes, staging=staging, metadata=doc
        )
    except SourceError as exc:
        text = str(exc).lower()
        if not any(w in text for w in ("codec", "compressor", "filter", "not supported", "unsupported")):
            raise
        return _zarr_python_array(op, loc, exc)


def _zarr_python_array(op: Opener, loc: Location, why: Exception):
    import zarr

    try:
        if loc.remote:
            import aiohttp
            from zarr.storage import FsspecStore

            opts = {
                "headers": op.options.headers_for(loc.root),
                "client_kwargs": {
                    "timeout": aiohttp.ClientTimeout(
                        sock_connect=op.options.timeout[0], sock_read=op.options.timeout[1]
                    )
                },
            }
            store = FsspecStore.from_url(loc.url or loc.root, read_only=True, storage_options=opts)
            node = zarr.open_array(store=store, mode="r")
        else:
            node = zarr.open_array(loc.root, mode="r")
    except Exception as exc:
        raise SourceError(f"{why} (zarr-python cannot read it either: {type(exc).__name__}: {exc})") from None
    return node


def _open_zarr_group(op: Opener, loc: Location, zarr_format: int, attrs: dict):
    ome = md.parse_ome(attrs, loc.key_where("zarr.json" if zarr_format == 3 else ".zattrs"))
    if ome is not None:
        return _open_ome(op, loc, zarr_format, ome)
    if loc.remote:
        raise SourceError(
            f"{loc.where} is a zarr group without OME-Zarr metadata; its arrays cannot be listed over http: "
            f"pass path=<array inside it>"
        )
    arrays, groups = [], []
    for entry in sorted(os.listdir(loc.root)):
        sub = os.path.join(loc.root, entry)
        if os.path.isfile(os.path.join(sub, ".zarray")) or _v3_node(sub) == "array":
            arrays.append(entry)
        elif os.path.isfile(os.path.join(sub, ".zgroup")) or _v3_node(sub) == "group":
            groups.append(entry)
    if len(arrays) == 1:
        from .formats import detect_and_open

        return detect_and_open(op, loc.child(arrays[0]))
    if not arrays:
        hint = f"; its groups are {groups}: pass path=..." if groups else ""
        raise SourceError(f"zarr group {loc.where!r} holds no arrays and no OME-Zarr multiscales metadata{hint}")
    raise SourceError(
        f"zarr group {loc.where!r} holds several arrays {arrays} and no OME-Zarr metadata: pass path=<one of them>"
    )


def _v3_node(path: str) -> str | None:
    p = os.path.join(path, "zarr.json")
    if not os.path.isfile(p) or os.path.getsize(p) > MAX_METADATA_BYTES:
        return None
    try:
        with open(p, "rb") as fh:
            doc = md.load_json(fh.read(), p)
    except (OSError, SourceError):
        return None
    return doc.get("node_type") if isinstance(doc, dict) else None


def _open_ome(op: Opener, loc: Location, zarr_format: int, ome: md.OmeImage):
    from .sources import _apply_channel_axis, _build, _check_axes

    key = "zarr.json" if zarr_format == 3 else ".zarray"
    docs = op.read_all(
        [(loc.child(p), k) for p in ome.paths for k in ([key] if zarr_format == 3 else [key, ".zattrs"])]
    )
    arrays = []
    for i, p in enumerate(ome.paths):
        sub = loc.child(p)
        doc, attrs = (docs[i], None) if zarr_format == 3 else (docs[2 * i], docs[2 * i + 1])
        if doc is None:
            raise SourceError(f"OME-Zarr image {loc.where}: dataset {p!r} is missing ({sub.key_where(key)})")
        arrays.append(_zarr_array(op, sub, md.parse_zarr_array(doc, sub.key_where(key), attrs), doc))
    ndim = arrays[0].ndim
    meta_axes = ome.axes if ome.axes is not None else "tczyx"[5 - ndim :] if ndim <= 5 else None
    where = loc.key_where("zarr.json" if zarr_format == 3 else ".zattrs")
    if meta_axes is None or len(meta_axes) != ndim:
        raise SourceError(f"{where}: the axes {meta_axes!r} do not match the {ndim} dimensions of {ome.paths[0]!r}")
    check_levels(where, ome.paths, [a.shape for a in arrays], meta_axes)
    for s in ome.level_scales:
        if s is not None and len(s) != ndim:
            raise SourceError(f"{where}: the scales have {len(s)} entries but the arrays have {ndim} dimensions")
    ax = _check_axes(op.axes, ndim) if op.axes else _apply_channel_axis(_check_axes(meta_axes, ndim), op.channel_axis)
    level_scales = [tuple(v for a, v in zip(ax, s or (1.0,) * ndim) if a in "zyx") for s in ome.level_scales]
    units_all = ome.units or (None,) * ndim
    units = tuple(u for a, u in zip(ax, units_all) if a in "zyx")
    fmt = f"zarr{zarr_format}"
    layout = op.layout(loc, fmt, list(meta_axes), ax, units=units_all)
    dask_levels = [as_dask(a, "ome", ax) for a in arrays]  # levels[0] is the array itself
    return _build(
        dask_levels[0],
        ax,
        base=arrays[0],
        levels=dask_levels,
        scale=level_scales[0],
        units=units,
        level_scales=level_scales,
        zarr_format=zarr_format,
        channel_names=list(ome.channel_names) if ome.channel_names else None,
        ome_multiscale=ome.multiscale,
        storage=layout,
        **{**op.source_meta(loc, "ome-zarr", fmt), "name": ome.name or stem(loc.name)},
    )
