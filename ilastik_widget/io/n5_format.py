"""N5 datasets and multiscale groups (``s0, s1...``), read with tensorstore; axes shown in reverse of the file's
order (x first there, ``zyx`` here)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import metadata as md
from .errors import SourceError
from .location import Location
from .opener import Opener, as_dask, check_levels

__all__ = ["open_n5"]


def open_n5(op: Opener, loc: Location, attrs: Any):
    """Open the N5 dataset, or the multiscale group of datasets ``s0, s1, ...``, at ``loc``
    (``attrs``: its ``attributes.json``, already read).

    Returns an :class:`~ilastik_widget.io.sources.ImageSource` with one level per dataset. Raises
    :class:`~ilastik_widget.io.errors.SourceError` when the metadata are not valid or the datasets do not agree."""
    from .sources import _axes_for, _build, _check_axes

    where = loc.key_where("attributes.json")
    attrs = md._dict(attrs, where, "attributes.json")
    if "dimensions" in attrs:
        paths, level_attrs = [""], [attrs]
        ms = md.parse_n5_multiscale({}, where, paths, level_attrs)
        ms = replace(ms, axes=ms.axes or _n5_axes(attrs, where))
    else:
        paths, level_attrs = [], []
        n_expected = len(attrs["scales"]) if isinstance(attrs.get("scales"), list) else 32
        for i in range(min(n_expected, 32)):
            sub = op.read_json(loc.child(f"s{i}"), "attributes.json")
            if sub is None:
                if i < n_expected and n_expected != 32:
                    raise SourceError(f"{where}: 'scales' lists {n_expected} levels but s{i} is missing")
                break
            paths.append(f"s{i}")
            level_attrs.append(md._dict(sub, loc.key_where(f"s{i}/attributes.json"), "attributes.json"))
        if not paths:
            raise SourceError(f"{where}: an N5 group without datasets s0, s1, ...: pass path=<dataset inside it>")
        ms = md.parse_n5_multiscale(attrs, where, paths, level_attrs)
    arrays, metas = [], []
    for p, a in zip(paths, level_attrs):
        sub = loc.child(p)
        meta = md.parse_n5_array(a, sub.key_where("attributes.json"))
        metas.append(meta)
        staging = (["attributes.json"], lambda box: box[::-1], lambda idx, *_: "/".join(map(str, idx)))
        arrays.append(
            op.open_ts(sub, {"driver": "n5"}, where=sub.where, attrs=a, view=lambda s: s.T, staging=staging, metadata=a)
        )
    n = len(metas[0].shape)
    if any(len(m.shape) != n for m in metas):
        raise SourceError(f"{where}: the datasets {list(paths)} have different numbers of dimensions")
    file_axes = ms.axes
    if file_axes is not None and len(file_axes) != n:
        raise SourceError(f"{where}: 'axes' names {len(file_axes)} axes but the data has {n} dimensions")
    for name, vals in (("resolution", ms.resolution), ("units", ms.units)):
        if vals is not None and len(vals) != n:
            raise SourceError(f"{where}: '{name}' has {len(vals)} entries but the data has {n} dimensions")
    letters = _letters(file_axes[::-1]) if file_axes else None
    ax = _check_axes(op.axes, n) if op.axes else _axes_for(n, op.channel_axis, letters or _default_n5_axes(n))
    factors = ms.factors or tuple(tuple(s0 / s for s0, s in zip(metas[0].shape, m.shape)) for m in metas)
    if any(len(f) != n for f in factors):
        raise SourceError(f"{where}: the downsampling factors do not have {n} entries")
    check_levels(where, paths, [a.shape for a in arrays], ax)
    res = ms.resolution or (1.0,) * n
    level_scales = [tuple(r * f for r, f in zip(res[::-1], fs[::-1])) for fs in factors]
    level_scales = [tuple(v for a, v in zip(ax, s) if a in "zyx") for s in level_scales]
    units = tuple(u for a, u in zip(ax, (ms.units or (None,) * n)[::-1]) if a in "zyx")
    names = _neuroglancer_names(attrs.get("axes"), n)
    layout = op.layout(loc, "n5", names, ax[::-1], resolution=ms.resolution, units=ms.units)
    dask_levels = [as_dask(a, "n5", ax) for a in arrays]  # levels[0] is the array itself
    return _build(
        dask_levels[0],
        ax,
        base=arrays[0],
        levels=dask_levels,
        scale=level_scales[0],
        units=units,
        level_scales=level_scales,
        storage=layout,
        **op.source_meta(loc, "n5", "n5"),
    )


def _n5_axes(attrs: dict, where: str) -> tuple[str, ...] | None:
    axes = attrs.get("axes")
    if axes is None:
        return None
    if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
        raise SourceError(f"{where}: 'axes' must be a list of names")
    return tuple(a.lower() for a in axes)


def _neuroglancer_names(axes: Any, n: int) -> tuple[str, ...]:
    """The dimension names Neuroglancer gives an N5 dataset: its ``axes`` as written, else x, y, z, t, c, d6..."""
    if isinstance(axes, list) and len(axes) == n and all(isinstance(a, str) for a in axes):
        return tuple(axes)
    return tuple(["x", "y", "z", "t", "c"][:n] + [f"d{i + 1}" for i in range(5, n)])


def _letters(names) -> str | None:
    letters = "".join(n if n in md.AXIS_LETTERS else "?" for n in names)
    return None if "?" in letters or len(set(letters)) != len(letters) else letters


def _default_n5_axes(n: int) -> str | None:
    return {2: "yx", 3: "zyx"}.get(n)
