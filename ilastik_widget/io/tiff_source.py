"""TIFF files, read lazily page by page or tile by tile through tifffile (pyramidal TIFF levels included)."""

from __future__ import annotations

import os

from .sources import ImageSource, _apply_channel_axis, _build, _check_axes, _stem

__all__ = ["open_tiff"]

_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


def open_tiff(p: str, *, channel_axis, axes, series) -> ImageSource:
    import dask.array as da
    import tifffile
    import zarr

    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file: {p!r}")
    try:
        with tifffile.TiffFile(p) as tf:
            if not 0 <= series < len(tf.series):
                raise ValueError(f"{p!r} has {len(tf.series)} series; series={series} does not exist")
            s = tf.series[series]
            tiff_axes = s.axes
            shape = s.shape
            scale_map = _tiff_scale(tf)
    except tifffile.TiffFileError as exc:
        raise ValueError(f"{p!r} is not a readable TIFF file: {exc}") from exc
    store = tifffile.imread(p, aszarr=True, series=series)
    node = zarr.open(store, mode="r")
    if isinstance(node, zarr.Group):  # pyramidal TIFF: levels "0", "1", ...
        keys = sorted(node.array_keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
        zlevels = [node[k] for k in keys]
    else:
        zlevels = [node]
    # squeeze leading singleton axes the metadata does not name as one of ours
    meta = []
    for a in tiff_axes:
        meta.append(_TIFF_AXES.get(a, "?"))
    ndim = len(shape)
    if axes:
        ax = _check_axes(axes, ndim)
    else:
        ax = _tiff_guess_axes(meta, shape)
        ax = _apply_channel_axis(_check_axes(ax, ndim), channel_axis)
    levels = [da.from_zarr(z) for z in zlevels]
    sp = [a for a in ax if a in "zyx"]
    scale0 = tuple(scale_map.get(a, 1.0) for a in sp)
    level_scales = [
        tuple(s0 * shape[ax.index(a)] / lv.shape[ax.index(a)] for s0, a in zip(scale0, sp)) for lv in levels
    ]
    return _build(
        levels[0],
        ax,
        base=zlevels[0],
        levels=levels,
        scale=scale0,
        level_scales=level_scales,
        path=os.path.abspath(p),
        name=_stem(p),
        source_kind="tiff",
    )


def _tiff_guess_axes(meta: list[str], shape) -> str:
    """Map tifffile axis codes to ours; unknown codes ('I', 'Q', ...) become z, or t when z is taken."""
    letters = list(meta)
    if letters.count("c") > 1:  # C and S both present: keep S (samples) only if C is 1 long
        raise ValueError(f"TIFF with two channel-like axes {meta}: pass axes=... (letters from 'tczyx')")
    for i, a in enumerate(letters):
        if a == "?":
            if "z" not in letters:
                letters[i] = "z"
            elif "t" not in letters:
                letters[i] = "t"
            else:
                raise ValueError(f"cannot interpret TIFF axes {meta}: pass axes=...")
    return "".join(letters)


def _tiff_scale(tf) -> dict:
    out = {}
    try:
        page = tf.pages[0]
        for tag, ax in (("XResolution", "x"), ("YResolution", "y")):
            t = page.tags.get(tag)
            if t is not None:
                num, den = t.value
                if num and den and not (num == 1 and den == 1):
                    out[ax] = den / num
        ij = tf.imagej_metadata or {}
        if "spacing" in ij:
            out["z"] = float(ij["spacing"])
    except Exception:  # metadata is best effort
        pass
    return out
