"""Image sources: one lazy view over numpy, dask, zarr (v2/v3, sharded), OME-Zarr, N5, Neuroglancer precomputed
(sharded too), Deep Zoom and TIFF, local or over http(s).

``open_source(obj)`` returns an :class:`ImageSource` whose ``array`` is a dask array (nothing is read until a
region is asked for), with the axes it carries (a string over ``"tczyx"``), the voxel size of the spatial axes, the
pyramid levels of a multiscale image and, for data on a web server, the URL a browser can load directly.

>>> src = open_source("https://example.org/image.ome.zarr")          # doctest: +SKIP
>>> src.axes, src.spatial_shape, src.scale, src.channel_axis           # doctest: +SKIP
('czyx', (236, 275, 271), (0.5, 0.36, 0.36), 0)
>>> block = src[:, 10:20, 0:64, 0:64]       # numpy, reads only the chunks it needs  # doctest: +SKIP
>>> open_source("precomputed://https://example.org/bigbrain", token="...")  # doctest: +SKIP

The format is found from the metadata at the path or URL (:mod:`~ilastik_widget.io.formats`); zarr, N5 and
precomputed arrays are read with tensorstore, Deep Zoom tiles with Pillow, TIFF with tifffile. Remote access has
timeouts, retries and bearer tokens (:mod:`~ilastik_widget.io.remote`); every problem with a source is a
:class:`~ilastik_widget.io.errors.SourceError` (a ``ValueError``) naming the place.

Time series are handled one time point at a time: ``open_source(path, t=3)`` or ``src.at_time(3)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import SourceError, SourceNotFoundError

__all__ = ["ImageSource", "SourceError", "SourceNotFoundError", "is_url", "open_source"]

AXIS_LETTERS = "tczyx"
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(s: Any) -> bool:
    """True for strings such as ``https://...``, ``http://...``, ``s3://...`` (not for local paths)."""
    return isinstance(s, str) and bool(_URL_RE.match(s)) and not s.startswith("file://")


def with_fixed(key: tuple, select: tuple) -> tuple:
    """The index of a stored array from ``key`` (one entry per axis the source shows) and ``select`` (``(axis of the
    stored array, index)`` pairs the source fixes, e.g. its time point)."""
    fixed = dict(select)
    it = iter(key)
    return tuple(fixed[i] if i in fixed else next(it) for i in range(len(key) + len(fixed)))


@dataclass(frozen=True)
class ImageSource:
    """A lazily read image with its axes and metadata.

    Attributes
    ----------
    array : dask.array.Array
        The data at full resolution, axes as in ``axes`` (never loaded whole by this module).
    axes : str
        One letter per axis of ``array`` from ``"tczyx"`` (e.g. ``"yx"``, ``"zyx"``, ``"czyx"``, ``"tzyxc"``).
    scale : tuple[float, ...]
        Voxel size per spatial axis (the ``z``, ``y``, ``x`` axes present, in array order); 1.0 when unknown.
    units : tuple[str | None, ...]
        Unit per spatial axis when the metadata gives one (e.g. ``"micrometer"``).
    levels : list[dask.array.Array]
        Pyramid levels (``levels[0] is array``); a single level for sources without a pyramid.
    level_scales : list[tuple[float, ...]]
        Voxel size of the spatial axes for every level.
    url : str | None
        For sources on a web server: the http(s) URL of the image (zarr group or array, N5 container, precomputed
        volume, ``.dzi`` descriptor), which a browser may load directly. Never holds a token.
    path : str | None
        Local path (or the URL) the data came from; ``None`` for in-memory arrays.
    name : str
        A short name (file stem or ``"image"``), used for output file names.
    zarr_format : int | None
        2 or 3 for zarr sources.
    channel_names : list[str] | None
        From OME-Zarr ``omero`` metadata when present.
    time_index : int | None
        The time point selected from a time series (``at_time``), ``None`` otherwise.
    ome_multiscale : dict | None
        For OME-Zarr images: the multiscale entry read (``axes``, ``datasets``, ``coordinateTransformations``), with
        the metadata's ``"version"``; what a browser loading ``url`` directly bases its coordinates on.
    data_format : str | None
        The stored format of a path or URL: ``"zarr2"``, ``"zarr3"``, ``"n5"``, ``"precomputed"``, ``"deepzoom"``.
    storage : StoredLayout | None
        How the stored array maps onto ``array`` (axis order, dropped axes, voxel offset, native resolution) and
        Neuroglancer's source string for it: see :class:`~ilastik_widget.io.formats.StoredLayout`.
    """

    array: Any
    axes: str
    scale: tuple = ()
    units: tuple = ()
    levels: list = field(default_factory=list)
    level_scales: list = field(default_factory=list)
    url: str | None = None
    path: str | None = None
    name: str = "image"
    zarr_format: int | None = None
    channel_names: list | None = None
    time_index: int | None = None
    source_kind: str = "array"
    ome_multiscale: dict | None = field(default=None, repr=False, compare=False)
    data_format: str | None = None
    storage: Any = field(default=None, repr=False, compare=False)
    # The directly indexable object behind ``array`` (numpy, zarr or tensorstore array...) and the index applied to it
    # (an integer time point or None); reading through it avoids dask overhead for small regions.
    _base: Any = field(default=None, repr=False, compare=False)
    _base_axes: str = field(default="", repr=False, compare=False)
    _base_select: tuple = field(default=(), repr=False, compare=False)  # ((axis position in base, index), ...)

    # ------------------------------------------------------------------ derived properties
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``array`` (every axis)."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the values."""
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes of ``array`` (channel and time axes included)."""
        return len(self.axes)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the full-resolution data (first chunk along each axis)."""
        return tuple(int(c[0]) for c in self.array.chunks)

    @property
    def nbytes(self) -> int:
        """Size of the full-resolution data in bytes (nothing is read to know it)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def spatial_axes(self) -> str:
        """The spatial axes in array order: ``"yx"`` or ``"zyx"``."""
        return "".join(a for a in self.axes if a in "zyx")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes, in array order."""
        return tuple(s for a, s in zip(self.axes, self.shape) if a in "zyx")

    @property
    def channel_axis(self) -> int | None:
        """Position of the channel axis in ``array`` (``None`` without channels)."""
        return self.axes.index("c") if "c" in self.axes else None

    @property
    def time_axis(self) -> int | None:
        """Position of the time axis in ``array`` (``None`` without one)."""
        return self.axes.index("t") if "t" in self.axes else None

    @property
    def n_channels(self) -> int:
        """Number of channels (1 without a channel axis)."""
        c = self.channel_axis
        return 1 if c is None else self.shape[c]

    @property
    def n_times(self) -> int:
        """Number of time points (1 without a time axis)."""
        t = self.time_axis
        return 1 if t is None else self.shape[t]

    @property
    def neuroglancer_source(self) -> str | None:
        """Neuroglancer data source string for data on a web server (``zarr3://https://...``,
        ``precomputed://https://...``, ``n5://``, ``deepzoom://``), else None."""
        if self.url is None:
            return None
        if self.zarr_format is not None:
            return ("zarr3://" if self.zarr_format == 3 else "zarr2://") + self.url
        if self.data_format in ("n5", "precomputed", "deepzoom"):
            return f"{self.data_format}://{self.url}"
        return None

    # ------------------------------------------------------------------ access
    def at_time(self, t: int) -> ImageSource:
        """The same source at one time point (the ``t`` axis removed)."""
        ta = self.time_axis
        if ta is None:
            if t in (0, None):
                return self
            raise ValueError(f"{self.name!r} has no time axis (axes {self.axes!r}); cannot select t={t}")
        n = self.shape[ta]
        if not isinstance(t, (int, np.integer)) or not -n <= int(t) < n:
            raise IndexError(f"time point {t!r} out of range for {n} time points")
        t = int(t) % n
        key = (slice(None),) * ta + (t,)
        levels = [lv[key] for lv in self.levels]
        base_sel = self._base_select
        if self._base is not None:
            # position of this axis in the base array: count axes already removed before it
            removed = sorted(p for p, _ in base_sel)
            pos = ta
            for p in removed:
                if p <= pos:
                    pos += 1
            base_sel = tuple(base_sel) + ((pos, t),)
        return replace(
            self, array=levels[0], levels=levels, axes=self.axes.replace("t", ""), time_index=t, _base_select=base_sel
        )

    def __getitem__(self, key) -> np.ndarray:
        """Read a region as numpy (only the chunks it touches)."""
        key = _normalize_key(key, self.ndim)
        if self._base is not None:
            return np.asarray(self._base[with_fixed(key, self._base_select)])
        return np.asarray(self.array[key].compute())

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def reference(self) -> dict:
        """JSON-able description (where the data lives, shape, dtype, axes) for project files."""
        return {
            "path": self.path,
            "url": self.url,
            "name": self.name,
            "kind": self.source_kind,
            "shape": list(self.shape),
            "dtype": self.dtype.str,
            "axes": self.axes,
            "scale": list(self.scale),
            "time_index": self.time_index,
            "format": self.data_format,
        }

    def __repr__(self) -> str:  # short: the dask repr is long
        where = self.url or self.path or "memory"
        return (
            f"ImageSource(name={self.name!r}, axes={self.axes!r}, shape={self.shape}, dtype={self.dtype}, "
            f"scale={self.scale}, levels={len(self.levels)}, from={where!r})"
        )


def _normalize_key(key, ndim: int) -> tuple:
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        n_missing = ndim - (len(key) - 1)
        key = key[:i] + (slice(None),) * n_missing + key[i + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices ({len(key)}) for {ndim} axes")
    return tuple(key) + (slice(None),) * (ndim - len(key))


# ---------------------------------------------------------------------- axes helpers
def _check_axes(axes: str, ndim: int) -> str:
    axes = axes.lower()
    if len(axes) != ndim:
        raise ValueError(f"axes {axes!r} has {len(axes)} letters but the data has {ndim} dimensions")
    if any(a not in AXIS_LETTERS for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} must be distinct letters from {AXIS_LETTERS!r}")
    n_sp = sum(a in "zyx" for a in axes)
    if n_sp not in (2, 3):
        raise ValueError(f"axes {axes!r}: need 2 or 3 spatial axes (y, x and optionally z), got {n_sp}")
    return axes


def _default_axes(ndim: int, channel_axis: int | None) -> str:
    if channel_axis is not None:
        ca = _norm_axis(channel_axis, ndim)
        n_sp = ndim - 1
        if n_sp not in (2, 3):
            raise ValueError(
                f"a {ndim}D array with a channel axis has {n_sp} other axes; only 2D (y, x) and 3D "
                f"(z, y, x) images are supported (pass axes=... for time series, e.g. 'tzyx')"
            )
        sp = "yx" if n_sp == 2 else "zyx"
        return sp[:ca] + "c" + sp[ca:]
    if ndim == 2:
        return "yx"
    if ndim == 3:
        return "zyx"
    raise ValueError(
        f"cannot tell the axes of a {ndim}D array: pass channel_axis=... or axes=... "
        f"(letters from 'tczyx', e.g. axes='zyxc' or 'tzyx')"
    )


def _norm_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not -ndim <= int(axis) < ndim:
        raise ValueError(f"channel_axis={axis!r} is out of range for a {ndim}D array")
    return int(axis) % ndim


def _apply_channel_axis(axes: str, channel_axis: int | None) -> str:
    """Override the channel axis of metadata-derived axes with the user's choice."""
    if channel_axis is None:
        return axes
    ca = _norm_axis(channel_axis, len(axes))
    if axes[ca] == "c":
        return axes
    rest = [a for i, a in enumerate(axes) if i != ca and a != "c"]
    # the previous channel axis (if any) and the axis now taken by channels are re-labelled in zyx order
    spatial_needed = len(axes) - 1 - sum(a == "t" for a in rest)
    sp = "zyx"[3 - spatial_needed :] if spatial_needed in (2, 3) else None
    if sp is None:
        raise ValueError(f"channel_axis={channel_axis} leaves {spatial_needed} spatial axes in {axes!r}")
    out, it = [], iter(sp)
    for i, a in enumerate(axes):
        if i == ca:
            out.append("c")
        elif a == "t":
            out.append("t")
        else:
            out.append(next(it))
    return "".join(out)


def _stem(path: str) -> str:
    name = path.rstrip("/").split("/")[-1] or "image"
    for suf in (".ome.zarr", ".zarr", ".n5", ".dzi", ".ome.tiff", ".ome.tif") + _TIFF_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)] or "image"
    return name


# ---------------------------------------------------------------------- public entry point
def open_source(
    obj,
    channel_axis: int | None = None,
    *,
    axes: str | None = None,
    t: int | None = None,
    path: str | None = None,
    series: int = 0,
    name: str | None = None,
    format: str | None = None,
    token: str | None = None,
    timeout: float | tuple[float, float] | None = None,
    cache_bytes: int | None = None,
    storage_options: dict | None = None,
) -> ImageSource:
    """Open anything image-like lazily.

    Parameters
    ----------
    obj : numpy array, dask array, zarr array or group, ImageSource, path or URL
        Paths and http(s) URLs of: a zarr (v2 or v3, sharded too) array or group, an OME-Zarr image (0.1 to 0.5),
        an N5 dataset or multiscale group, a Neuroglancer precomputed volume (sharded too), a Deep Zoom ``.dzi``
        descriptor, or a TIFF file (``.tif``/``.tiff``, local only, read lazily page by page or tile by tile). The
        format is found from the metadata; Neuroglancer's spellings name it explicitly (``precomputed://URL``,
        ``n5://``, ``zarr://``, ``zarr2://``, ``zarr3://``, ``deepzoom://``, or ``URL|zarr3:``...).
    channel_axis : int, optional
        Which axis holds channels. Default: the ``c`` axis of the metadata (OME-Zarr, precomputed, TIFF, RGB Deep
        Zoom), else none.
    axes : str, optional
        Override the axes, e.g. ``"tzyx"`` or ``"zcyx"`` (letters from ``"tczyx"``).
    t : int, optional
        Select one time point of a time series (the same as ``.at_time(t)``). A time axis of length 1 is always
        dropped.
    path : str, optional
        Array or dataset inside a zarr group or N5 container (e.g. ``"raw"``).
    series : int
        TIFF series to read.
    format : str, optional
        ``"zarr"``, ``"zarr2"``, ``"zarr3"``, ``"n5"``, ``"precomputed"`` or ``"deepzoom"``: skip detection.
    token : str, optional
        Bearer token for servers that need one (e.g. an EBRAINS bucket); default ``$ILASTIK_WIDGET_TOKEN``;
        ``False`` for none. Sent over https only, never to another host after a redirect, never stored in the
        source, its ``repr`` or a project file.
    timeout : float or (float, float), optional
        Seconds to wait for a connection and for each answer (default
        :data:`ilastik_widget.io.remote.DEFAULT_TIMEOUT`, 30 s, or ``$ILASTIK_WIDGET_TIMEOUT``). It bounds opening
        the image and reading metadata and Deep Zoom tiles; tensorstore's chunk reads (zarr, N5, precomputed) wait
        for a silent server as long as the process-wide default says (tensorstore has no timeout per store).
    cache_bytes : int, optional
        Bound of the decoded-chunk cache of this image (default 256 MiB).
    storage_options : dict, optional
        Passed to fsspec for zarr at URLs other than http(s) (e.g. ``s3://`` with s3fs installed).

    Raises
    ------
    SourceError
        (a ``ValueError``) naming the path, URL or host and the problem: malformed metadata, an unknown format,
        HTTP 401/403, a refused token, a server that does not answer within ``timeout``...
    SourceNotFoundError
        (also a ``FileNotFoundError``) nothing at the path or URL.
    """
    if isinstance(obj, ImageSource):
        src = obj
        new_axes = _check_axes(axes, src.ndim) if axes else _apply_channel_axis(src.axes, channel_axis)
        if new_axes != src.axes:
            n_sp = sum(a in "zyx" for a in new_axes)
            keep = n_sp == len(src.scale)
            src = replace(
                src,
                axes=new_axes,
                scale=src.scale if keep else (1.0,) * n_sp,
                units=src.units if keep else (None,) * n_sp,
                level_scales=src.level_scales if keep else [(1.0,) * n_sp] * len(src.levels),
            )
    elif isinstance(obj, (str, os.PathLike)):
        from .remote import remote_options

        options = remote_options(timeout, token)
        src = _open_path(
            os.fspath(obj),
            channel_axis=channel_axis,
            axes=axes,
            path=path,
            series=series,
            storage_options=storage_options,
            format=format,
            options=options,
            cache_bytes=cache_bytes,
        )
    else:
        src = _open_object(obj, channel_axis=channel_axis, axes=axes, path=path)
    if name is not None:
        src = replace(src, name=name)
    if src.time_axis is not None:
        if t is not None:
            src = src.at_time(t)
        elif src.n_times == 1:
            src = src.at_time(0)
    elif t not in (None, 0):
        raise ValueError(f"t={t} given but {src.name!r} has no time axis (axes {src.axes!r})")
    return src


def _build(
    array, axes: str, *, base=None, levels=None, scale=None, units=None, level_scales=None, **meta
) -> ImageSource:
    import dask.array as da

    if not isinstance(array, da.Array):
        array = da.from_array(array, chunks=_auto_chunks(array))
    axes = _check_axes(axes, array.ndim)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"unsupported dtype {array.dtype}: expected integer, unsigned, float or bool data")
    n_sp = sum(a in "zyx" for a in axes)
    scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * n_sp
    units = tuple(units) if units is not None else (None,) * n_sp
    levels = list(levels) if levels is not None else [array]
    level_scales = list(level_scales) if level_scales is not None else [scale]
    return ImageSource(
        array=array,
        axes=axes,
        scale=scale,
        units=units,
        levels=levels,
        level_scales=level_scales,
        _base=base,
        _base_axes=axes if base is not None else "",
        **meta,
    )


def _auto_chunks(a) -> tuple:
    """Chunks for wrapping an in-memory array: ~16 MiB blocks, keeping whole short (channel-like) axes."""
    chunks = getattr(a, "chunks", None)
    if isinstance(chunks, tuple) and chunks and all(isinstance(c, (int, np.integer)) for c in chunks):
        return tuple(int(c) for c in chunks)
    shape = a.shape
    itemsize = np.dtype(a.dtype).itemsize
    target = 16 * 2**20 // itemsize
    out = list(shape)
    big = [i for i, s in enumerate(shape) if s > 16]
    while int(np.prod(out, dtype=np.int64)) > target and big:
        i = max(big, key=lambda j: out[j])
        out[i] = max(16, (out[i] + 1) // 2)
        if out[i] == 16:
            big.remove(i)
    return tuple(out)


def _open_object(obj, *, channel_axis, axes, path) -> ImageSource:
    import dask.array as da
    import zarr

    if isinstance(obj, zarr.Group):
        return _open_zarr_python(obj, channel_axis=channel_axis, axes=axes, subpath=path, url=None, where=None)
    if isinstance(obj, zarr.Array):
        return _open_zarr_python(obj, channel_axis=channel_axis, axes=axes, subpath=None, url=None, where=None)
    if isinstance(obj, da.Array):
        ax = _check_axes(axes, obj.ndim) if axes else _axes_for(obj.ndim, channel_axis, None)
        return _build(obj, ax, source_kind="dask")
    if isinstance(obj, np.ndarray) or (
        hasattr(obj, "__array__") and hasattr(obj, "shape") and not hasattr(obj, "__getitem__")
    ):
        arr = np.asarray(obj)
        ax = _check_axes(axes, arr.ndim) if axes else _axes_for(arr.ndim, channel_axis, None)
        return _build(arr, ax, base=arr, source_kind="numpy")
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "__getitem__"):
        # any other lazily sliceable array (h5py dataset, tensorstore, ...)
        ax = _check_axes(axes, len(obj.shape)) if axes else _axes_for(len(obj.shape), channel_axis, None)
        return _build(da.from_array(obj, chunks=_auto_chunks(obj)), ax, base=obj, source_kind="array")
    raise TypeError(
        f"cannot open {type(obj).__name__} as an image: expected a numpy/dask/zarr array, a zarr "
        f"group, an ImageSource, a path or a URL"
    )


def _axes_for(ndim: int, channel_axis, meta_axes: str | None) -> str:
    if meta_axes:
        return _apply_channel_axis(_check_axes(meta_axes, ndim), channel_axis)
    return _default_axes(ndim, channel_axis)


# ---------------------------------------------------------------------- paths and URLs
def _open_path(p: str, *, channel_axis, axes, path, series, storage_options, format, options, cache_bytes):
    from .formats import open_location
    from .location import parse_location
    from .tensorstore_source import DEFAULT_CACHE_BYTES

    loc = parse_location(p, format)
    if loc is None:  # s3://, gs://... : zarr through fsspec, as before
        return _open_fsspec_zarr(p, channel_axis=channel_axis, axes=axes, subpath=path, options=storage_options)
    if storage_options:
        raise ValueError(
            "storage_options apply to fsspec URLs (s3://, gs://...); for paths and http(s) URLs pass token=... "
            "(a bearer token) and timeout=..."
        )
    low = loc.root.lower()
    if loc.format is None and low.endswith(_TIFF_SUFFIXES):
        if loc.remote:
            raise SourceError(
                f"remote TIFF files are not supported ({loc.where}); download it or convert it to OME-Zarr"
            )
        from .tiff_source import open_tiff

        return open_tiff(loc.root, channel_axis=channel_axis, axes=axes, series=series)
    if not loc.remote:
        if not os.path.exists(loc.root):
            raise SourceNotFoundError(f"no such file or directory: {loc.root!r}")
        if os.path.isfile(loc.root) and loc.format is None and not low.endswith((".dzi", ".json", ".xml")):
            return _open_local_file(loc.root, channel_axis=channel_axis, axes=axes, series=series)
    if cache_bytes is None:
        cache_bytes = DEFAULT_CACHE_BYTES
    elif isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be a non-negative integer, not {cache_bytes!r}")
    return open_location(
        loc, options=options, channel_axis=channel_axis, axes=axes, subpath=path, cache_bytes=cache_bytes
    )


def _open_local_file(p: str, *, channel_axis, axes, series) -> ImageSource:
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] in (b"II", b"MM"):
        from .tiff_source import open_tiff

        return open_tiff(p, channel_axis=channel_axis, axes=axes, series=series)
    if p.lower().endswith(".npy"):
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
        ax = _check_axes(axes, arr.ndim) if axes else _axes_for(arr.ndim, channel_axis, None)
        return _build(arr, ax, base=arr, path=os.path.abspath(p), name=_stem(p)[:-4] or "image", source_kind="npy")
    raise SourceError(
        f"{p!r} is not a zarr, N5 or precomputed directory, a Deep Zoom descriptor, a TIFF file or a .npy file"
    )


def _open_fsspec_zarr(url: str, *, channel_axis, axes, subpath, options) -> ImageSource:
    import zarr
    from zarr.storage import FsspecStore

    try:
        store = FsspecStore.from_url(url.rstrip("/"), read_only=True, storage_options=options or {})
        node = zarr.open(store=store, mode="r")
    except (FileNotFoundError, KeyError) as exc:
        raise SourceNotFoundError(f"no zarr array or group at {url!r} ({exc})") from exc
    except Exception as exc:
        if type(exc).__name__ in ("NodeNotFoundError", "GroupNotFoundError", "ArrayNotFoundError"):
            raise SourceNotFoundError(f"no zarr array or group at {url!r}") from exc
        raise SourceError(f"cannot open {url!r} as zarr: {type(exc).__name__}: {exc}") from None
    return _open_zarr_python(node, channel_axis=channel_axis, axes=axes, subpath=subpath, url=None, where=url)


def _open_zarr_python(node, *, channel_axis, axes, subpath, url, where) -> ImageSource:
    """A zarr-python array or group (given as an object, or at a URL fsspec reads), OME-Zarr included."""
    import dask.array as da
    import zarr

    from . import metadata as md
    from .opener import check_levels

    name = _stem(where) if where else "image"
    if subpath:
        try:
            node = node[subpath]
        except KeyError:
            raise SourceNotFoundError(f"no array or group {subpath!r} in {where or 'the zarr group'}") from None
        where = f"{where}/{subpath.strip('/')}" if where else None
        name = _stem(subpath)
    fmt = node.metadata.zarr_format
    if isinstance(node, zarr.Array):
        ax = _check_axes(axes, node.ndim) if axes else _axes_for(node.ndim, channel_axis, None)
        label = _stem(node.path) if node.path else name
        return _build(da.from_zarr(node), ax, base=node, path=where, name=label, zarr_format=fmt, source_kind="zarr")
    ome = md.parse_ome(dict(node.attrs), where or "the zarr group")
    if ome is None:
        arrays = sorted(node.array_keys())
        if len(arrays) == 1:
            return _open_zarr_python(
                node, channel_axis=channel_axis, axes=axes, subpath=arrays[0], url=url, where=where
            )
        groups = sorted(node.group_keys())
        if not arrays:
            hint = f"; its groups are {groups}: pass path=..." if groups else ""
            raise SourceError(f"zarr group {where or ''!r} holds no arrays and no OME-Zarr multiscales metadata{hint}")
        raise SourceError(
            f"zarr group {where or ''!r} holds several arrays {arrays} and no OME-Zarr metadata: pass path=<one of them>"
        )
    arrays = []
    for p in ome.paths:
        try:
            arrays.append(node[p])
        except KeyError:
            raise SourceError(f"OME-Zarr image {where or ''!r}: dataset {p!r} is missing") from None
    ndim = arrays[0].ndim
    meta_axes = ome.axes if ome.axes is not None else ("tczyx"[5 - ndim :] if ndim <= 5 else "")
    if len(meta_axes) != ndim:
        raise SourceError(f"OME-Zarr image {where or ''!r}: the axes do not match the {ndim} dimensions")
    check_levels(where or "OME-Zarr image", ome.paths, [a.shape for a in arrays], meta_axes)
    ax = _check_axes(axes, ndim) if axes else _apply_channel_axis(_check_axes(meta_axes, ndim), channel_axis)
    level_scales = [tuple(v for a, v in zip(ax, s or (1.0,) * ndim) if a in "zyx") for s in ome.level_scales]
    units = tuple(u for a, u in zip(ax, ome.units or (None,) * ndim) if a in "zyx")
    return _build(
        da.from_zarr(arrays[0]),
        ax,
        base=arrays[0],
        levels=[da.from_zarr(a) for a in arrays],
        scale=level_scales[0],
        units=units,
        level_scales=level_scales,
        url=url,
        path=where,
        name=ome.name or name,
        zarr_format=fmt,
        channel_names=list(ome.channel_names) if ome.channel_names else None,
        source_kind="ome-zarr",
        ome_multiscale=ome.multiscale,
    )
