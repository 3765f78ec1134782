"""Neuroglancer precomputed volumes (sharded too), read with tensorstore: x, y, z, channel shown as ``[c] z y x``
from 0 (the voxel offset removed), a single channel and a one-voxel-deep z dropped; scales become the levels."""

from __future__ import annotations

from typing import Any

from . import metadata as md
from .location import Location
from .opener import Opener, as_dask
from .tensorstore_source import _ts

__all__ = ["open_precomputed"]


def open_precomputed(op: Opener, loc: Location, doc: Any):
    """Open the Neuroglancer precomputed volume at ``loc`` (``doc``: its ``info``, already read).

    Returns an :class:`~ilastik_widget.io.sources.ImageSource` of axes ``[c] z y x`` (``[c] y x`` for a volume one voxel
    deep) with one level per scale. Raises :class:`~ilastik_widget.io.errors.SourceError` when the ``info`` is not
    valid."""
    from .sources import _apply_channel_axis, _build, _check_axes

    where = loc.key_where("info")
    info = md.parse_precomputed(doc, where)
    ts = _ts()  # with the http timeouts set
    flat = info.scales[0].size[2] == 1  # one voxel deep: a 2D image
    single = info.num_channels == 1

    def view(store):  # x, y, z, c -> c, z, y, x from 0; single channel and flat z dropped
        v = store.T[ts.d[:].translate_to[0]]
        if single:
            v = v[0]
        if flat:
            v = v[0] if single else v[:, 0]
        return v

    meta_axes = ("" if single else "c") + ("yx" if flat else "zyx")
    arrays = []
    for sc in info.scales:
        spec = {"driver": "neuroglancer_precomputed", "scale_metadata": {"key": sc.key}}
        staging = None if sc.sharded else (["info"], _precomputed_to_stored(meta_axes, sc), _precomputed_key(sc.key))
        arrays.append(op.open_ts(loc, spec, where=f"{loc.where} (scale {sc.key})", view=view, staging=staging))
    n = len(meta_axes)
    ax = _check_axes(op.axes, n) if op.axes else _apply_channel_axis(_check_axes(meta_axes, n), op.channel_axis)
    sp = [i for i, a in enumerate(meta_axes) if a != "c"]

    def spatial(res):  # x, y, z -> the source's spatial axes
        zyx = res[::-1][1:] if flat else res[::-1]
        vals = [None] * n
        for i, v in zip(sp, zyx):
            vals[i] = v
        return tuple(v for a, v in zip(ax, vals) if a in "zyx")

    level_scales = [spatial(sc.resolution) for sc in info.scales]
    # Neuroglancer's model: x, y, z and a channel dimension only with more than one channel; the view's letter of
    # each (a flat z, which the view drops, stays z)
    letters = "xyz" if single else "xyzc"
    layout = op.layout(
        loc,
        "precomputed",
        ("x", "y", "z") if single else ("x", "y", "z", "c^"),
        "".join(ax[meta_axes.index(a)] if a in meta_axes else a for a in letters),
        fixed=[(2, 0)] if flat else [],
        offset=info.scales[0].voxel_offset + ((0,) if not single else ()),
        resolution=info.scales[0].resolution + ((None,) if not single else ()),
        units=("nanometer",) * 3 + ((None,) if not single else ()),
        encodings=[sc.encoding for sc in info.scales],
    )
    dask_levels = [as_dask(a, "precomputed", ax) for a in arrays]  # levels[0] is the array itself
    return _build(
        dask_levels[0],
        ax,
        base=arrays[0],
        levels=dask_levels,
        scale=level_scales[0],
        units=("nanometer",) * sum(a in "zyx" for a in ax),
        level_scales=level_scales,
        storage=layout,
        **op.source_meta(loc, "precomputed", "precomputed"),
    )


def _precomputed_to_stored(view_axes: str, sc: md.PrecomputedScale):
    """Box of the source's view (``[c] [z] y x`` from 0) -> box of the stored x, y, z, channel array."""

    def to_stored(box):
        out = []
        for d, letter in enumerate("xyzc"):
            off = sc.voxel_offset[d] if d < 3 else 0
            if letter in view_axes:
                lo, hi = box[view_axes.index(letter)]
                out.append((lo + off, hi + off))
            else:
                out.append((off, off + 1))
        return out

    return to_stored


def _precomputed_key(scale_key: str):
    def key_of(idx, grid, origin, hi):
        parts = [f"{o + i * c}-{min(o + (i + 1) * c, h)}" for i, c, o, h in zip(idx[:3], grid[:3], origin[:3], hi[:3])]
        return f"{scale_key}/" + "_".join(parts)

    return key_of
