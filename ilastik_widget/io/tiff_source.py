"""TIFF files, read lazily page by page or tile by tile through tifffile (pyramidal TIFF levels included)."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from .errors import SourceError
from .sources import ImageSource, _apply_channel_axis, _build, _check_axes, _stem

__all__ = ["open_tiff"]

_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


def open_tiff(p: str, *, channel_axis, axes, series) -> ImageSource:
    """Open series ``series`` of the TIFF file ``p``, read lazily.

    Returns an :class:`~ilastik_widget.io.sources.ImageSource` with one level per resolution of a pyramidal TIFF. The
    axes are ``axes`` when given, else read from the TIFF metadata with ``channel_axis`` applied. Raises
    FileNotFoundError when the file does not exist, and SourceError (a ValueError) naming the file when it is not a
    readable TIFF, is damaged, or has no such series."""
    import dask.array as da
    import tifffile
    import zarr

    if not os.path.exists(p):
        raise FileNotFoundError(f"no such file: {p!r}")
    try:
        with tifffile.TiffFile(p) as tf:
            if not 0 <= series < len(tf.series):
                raise SourceError(f"{p!r} has {len(tf.series)} series; series={series} does not exist")
            s = tf.series[series]
            tiff_axes = s.axes
            shape = s.shape
            scale_map = _tiff_scale(tf)
        node = zarr.open(tifffile.imread(p, aszarr=True, series=series), mode="r")
        keys: list[str | None] = [None]
        zlevels: list = [node]
        if isinstance(node, zarr.Group):  # pyramidal TIFF: levels "0", "1", ...
            names = sorted(node.array_keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            keys, zlevels = list(names), [node[k] for k in names]
        if any(0 in z.shape or 0 in z.chunks for z in zlevels):
            sizes = ", ".join(f"shape {z.shape} in tiles of {z.chunks}" for z in zlevels)
            raise SourceError(f"{p!r} is damaged: an image without pixels ({sizes})")
    except SourceError:
        raise
    except Exception as exc:  # tifffile raises what the damage leads its parser to (IndexError, ZeroDivisionError...)
        raise SourceError(f"{p!r} is not a readable TIFF file: {_describe(exc)}") from exc
    ndim = len(shape)
    if axes:
        ax = _check_axes(axes, ndim)
    else:
        try:
            ax = _check_axes(_tiff_guess_axes([_TIFF_AXES.get(a, "?") for a in tiff_axes], shape), ndim)
        except ValueError as exc:  # what the file says does not make an image
            raise SourceError(f"{p!r}: {exc}") from None
        ax = _apply_channel_axis(ax, channel_axis)
    readers = [TiffLevel(p, series, key, z.shape, z.dtype, z) for key, z in zip(keys, zlevels)]
    levels = [da.from_array(r, chunks=z.chunks, asarray=False, fancy=False) for r, z in zip(readers, zlevels)]
    sp = [a for a in ax if a in "zyx"]
    scale0 = tuple(scale_map.get(a, 1.0) for a in sp)
    level_scales = [
        tuple(s0 * shape[ax.index(a)] / lv.shape[ax.index(a)] for s0, a in zip(scale0, sp)) for lv in levels
    ]
    return _build(
        levels[0],
        ax,
        base=readers[0],  # direct reads (and batch tasks, in any process) go through the picklable level
        levels=levels,
        scale=scale0,
        level_scales=level_scales,
        path=os.path.abspath(p),
        name=_stem(p),
        source_kind="tiff",
    )


class TiffLevel:
    """One level of a TIFF series as Dask reads it: the path and where the level is, the file opened on first read
    in each process other than the one that opened it (``array``, the level already open there). Dask sends the
    graph to worker processes, and an open tifffile store (a file handle and its lock) cannot travel there."""

    def __init__(
        self, path: str, series: int, key: str | None, shape: tuple[int, ...], dtype, array: Any = None
    ) -> None:
        self.path, self.series, self.key = path, series, key
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._array = array
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"path": self.path, "series": self.series, "key": self.key, "shape": self.shape, "dtype": self.dtype}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __getitem__(self, index):
        if self._array is None:
            with self._lock:
                if self._array is None:
                    import tifffile
                    import zarr

                    node = zarr.open(tifffile.imread(self.path, aszarr=True, series=self.series), mode="r")
                    self._array = node if self.key is None else node[self.key]
        try:
            return self._array[index]
        except MemoryError:  # a region too large for memory, not a damaged file
            raise
        except Exception as exc:  # a damaged tile or strip in whatever way tifffile notices it, or a missing codec
            raise SourceError(f"the pixels of {self.path!r} cannot be read: {_describe(exc)}") from exc


def _describe(exc: Exception) -> str:
    """tifffile's words for a problem, with the exception's name when they are few (``KeyError: '1.0.0'``)."""
    text = str(exc)
    return text if isinstance(exc, ValueError) and len(text) > 20 else f"{type(exc).__name__}: {text}"


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
