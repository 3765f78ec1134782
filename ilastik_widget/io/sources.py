"""Image sources: one lazy view over numpy, dask, zarr (v2/v3), OME-Zarr (local or http(s)) and TIFF.

``open_source(obj)`` returns an :class:`ImageSource` whose ``array`` is a dask array (nothing is read until a
region is asked for), with the axes it carries (a string over ``"tczyx"``), the voxel size of the spatial axes, the
pyramid levels of an OME-Zarr image and, for data on a web server, the URL a browser can load directly.

>>> src = open_source("https://example.org/image.ome.zarr")          # doctest: +SKIP
>>> src.axes, src.spatial_shape, src.scale, src.channel_axis           # doctest: +SKIP
('czyx', (236, 275, 271), (0.5, 0.36, 0.36), 0)
>>> block = src[:, 10:20, 0:64, 0:64]       # numpy, reads only the chunks it needs  # doctest: +SKIP

Time series are handled one time point at a time: ``open_source(path, t=3)`` or ``src.at_time(3)``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

__all__ = ["ImageSource", "open_source", "is_url"]

AXIS_LETTERS = "tczyx"
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(s: Any) -> bool:
    """True for strings such as ``https://...``, ``http://...``, ``s3://...`` (not for local paths)."""
    return isinstance(s, str) and bool(_URL_RE.match(s)) and not s.startswith("file://")


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
        For sources on a web server: the URL of the zarr group/array, which the browser can load directly.
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
    # The directly indexable object behind ``array`` (numpy or zarr array) and the index applied to it
    # (an integer time point or None); reading through it avoids dask overhead for small regions.
    _base: Any = field(default=None, repr=False, compare=False)
    _base_axes: str = field(default="", repr=False, compare=False)
    _base_select: tuple = field(default=(), repr=False, compare=False)  # ((axis position in base, index), ...)

    # ------------------------------------------------------------------ derived properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.axes)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the full-resolution data (first chunk along each axis)."""
        return tuple(int(c[0]) for c in self.array.chunks)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def spatial_axes(self) -> str:
        return "".join(a for a in self.axes if a in "zyx")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(s for a, s in zip(self.axes, self.shape) if a in "zyx")

    @property
    def channel_axis(self) -> int | None:
        """Position of the channel axis in ``array`` (``None`` without channels)."""
        return self.axes.index("c") if "c" in self.axes else None

    @property
    def time_axis(self) -> int | None:
        return self.axes.index("t") if "t" in self.axes else None

    @property
    def n_channels(self) -> int:
        c = self.channel_axis
        return 1 if c is None else self.shape[c]

    @property
    def n_times(self) -> int:
        t = self.time_axis
        return 1 if t is None else self.shape[t]

    @property
    def neuroglancer_source(self) -> str | None:
        """Neuroglancer data source string for remote zarr data (``zarr://https://...``), else None."""
        if self.url is None or self.zarr_format is None:
            return None
        return ("zarr3://" if self.zarr_format == 3 else "zarr2://") + self.url

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
            full = [slice(None)] * (self.ndim + len(self._base_select))
            sel = dict(self._base_select)
            it = iter(key)
            for i in range(len(full)):
                full[i] = sel[i] if i in sel else next(it)
            return np.asarray(self._base[tuple(full)])
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
    for suf in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif") + _TIFF_SUFFIXES:
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
    storage_options: dict | None = None,
) -> ImageSource:
    """Open anything image-like lazily.

    Parameters
    ----------
    obj : numpy array, dask array, zarr array or group, ImageSource, path or URL
        Paths/URLs: a zarr (v2 or v3) array or group, an OME-Zarr image (local directory or ``http(s)://`` URL),
        or a TIFF file (``.tif``/``.tiff``, read lazily page by page or tile by tile through ``tifffile``).
    channel_axis : int, optional
        Which axis holds channels. Default: the ``c`` axis of the metadata (OME-Zarr, TIFF), else none.
    axes : str, optional
        Override the axes, e.g. ``"tzyx"`` or ``"zcyx"`` (letters from ``"tczyx"``).
    t : int, optional
        Select one time point of a time series (the same as ``.at_time(t)``). A time axis of length 1 is always
        dropped.
    path : str, optional
        Array or group inside a zarr group (e.g. ``"raw"``).
    series : int
        TIFF series to read.
    storage_options : dict, optional
        Passed to fsspec for remote zarr (e.g. credentials, headers).
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
        src = _open_path(
            os.fspath(obj),
            channel_axis=channel_axis,
            axes=axes,
            path=path,
            series=series,
            storage_options=storage_options,
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


def _meta_of(src: ImageSource) -> dict:
    return dict(
        url=src.url,
        path=src.path,
        name=src.name,
        zarr_format=src.zarr_format,
        channel_names=src.channel_names,
        source_kind=src.source_kind,
    )


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

    try:
        import zarr
    except ImportError:  # pragma: no cover
        zarr = None
    if zarr is not None and isinstance(obj, zarr.Group):
        return _open_zarr_node(
            obj, channel_axis=channel_axis, axes=axes, subpath=path, url=None, path_str=None, name="image"
        )
    if zarr is not None and isinstance(obj, zarr.Array):
        fmt = obj.metadata.zarr_format
        ax = _check_axes(axes, obj.ndim) if axes else _axes_for(obj.ndim, channel_axis, None)
        return _build(
            da.from_zarr(obj),
            ax,
            base=obj,
            zarr_format=fmt,
            source_kind="zarr",
            name=_stem(obj.path) if obj.path else "image",
        )
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
def _open_path(p: str, *, channel_axis, axes, path, series, storage_options) -> ImageSource:
    remote = is_url(p)
    if p.startswith("file://"):
        p = p[len("file://") :]
    low = p.lower().rstrip("/")
    if low.endswith(_TIFF_SUFFIXES):
        if remote:
            raise ValueError(f"remote TIFF files are not supported ({p}); download it or convert it to OME-Zarr")
        return _open_tiff(p, channel_axis=channel_axis, axes=axes, series=series)
    if not remote:
        if not os.path.exists(p):
            raise FileNotFoundError(f"no such file or directory: {p!r}")
        if os.path.isfile(p):
            with open(p, "rb") as fh:
                magic = fh.read(4)
            if magic[:2] in (b"II", b"MM"):
                return _open_tiff(p, channel_axis=channel_axis, axes=axes, series=series)
            if p.lower().endswith(".npy"):
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
                ax = _check_axes(axes, arr.ndim) if axes else _axes_for(arr.ndim, channel_axis, None)
                return _build(
                    arr, ax, base=arr, path=os.path.abspath(p), name=_stem(p)[:-4] or "image", source_kind="npy"
                )
            raise ValueError(f"{p!r} is not a zarr directory, a TIFF file or a .npy file")
    return _open_zarr_path(
        p, channel_axis=channel_axis, axes=axes, subpath=path, remote=remote, storage_options=storage_options
    )


def _open_zarr_path(p: str, *, channel_axis, axes, subpath, remote, storage_options) -> ImageSource:
    import zarr

    url = p.rstrip("/") if remote else None
    try:
        if remote:
            from zarr.storage import FsspecStore

            store = FsspecStore.from_url(url, read_only=True, storage_options=storage_options or {})
            node = zarr.open(store=store, mode="r")
        else:
            node = zarr.open(p, mode="r")
    except (FileNotFoundError, KeyError) as exc:
        raise FileNotFoundError(f"no zarr array or group at {p!r} ({exc})") from exc
    except Exception as exc:
        if type(exc).__name__ in ("NodeNotFoundError", "GroupNotFoundError", "ArrayNotFoundError"):
            raise FileNotFoundError(f"no zarr array or group at {p!r}") from exc
        raise
    path_str = url if remote else os.path.abspath(p)
    return _open_zarr_node(
        node, channel_axis=channel_axis, axes=axes, subpath=subpath, url=url, path_str=path_str, name=_stem(p)
    )


def _ome_multiscales(attrs: dict):
    if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"]:
        return attrs["ome"]["multiscales"], attrs["ome"].get("omero"), attrs["ome"].get("version", "0.5")
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        return ms, attrs.get("omero"), (ms[0].get("version") if ms else None)
    return None, None, None


def _open_zarr_node(node, *, channel_axis, axes, subpath, url, path_str, name) -> ImageSource:
    import dask.array as da
    import zarr

    if subpath:
        node = node[subpath]
        if url:
            url = url + "/" + subpath.strip("/")
        if path_str:
            path_str = path_str + "/" + subpath.strip("/")
        name = _stem(subpath)
    fmt = node.metadata.zarr_format
    if isinstance(node, zarr.Array):
        ax = _check_axes(axes, node.ndim) if axes else _axes_for(node.ndim, channel_axis, None)
        return _build(
            da.from_zarr(node), ax, base=node, url=url, path=path_str, name=name, zarr_format=fmt, source_kind="zarr"
        )
    attrs = dict(node.attrs)
    multiscales, omero, version = _ome_multiscales(attrs)
    if multiscales:
        return _open_ome(
            node,
            multiscales[0],
            omero,
            channel_axis=channel_axis,
            axes=axes,
            url=url,
            path_str=path_str,
            name=name,
            fmt=fmt,
            version=version,
        )
    arrays = sorted(node.array_keys())
    if len(arrays) == 1:
        return _open_zarr_node(
            node, channel_axis=channel_axis, axes=axes, subpath=arrays[0], url=url, path_str=path_str, name=name
        )
    if not arrays:
        groups = sorted(node.group_keys())
        raise ValueError(
            f"zarr group {path_str or ''!r} holds no arrays and no OME-Zarr multiscales metadata"
            + (f"; its groups are {groups}: pass path=..." if groups else "")
        )
    raise ValueError(
        f"zarr group {path_str or ''!r} holds several arrays {arrays} and no OME-Zarr metadata: pass path=<one of them>"
    )


def _ome_axes(ms: dict, ndim: int) -> tuple[str, list]:
    raw = ms.get("axes")
    if raw is None:  # OME-Zarr 0.1/0.2: always 5D tczyx
        return "tczyx"[5 - ndim :], [None] * ndim
    letters, units = [], []
    for a in raw:
        if isinstance(a, str):
            nm, typ, unit = a.lower(), None, None
        else:
            nm, typ, unit = str(a.get("name", "")).lower(), a.get("type"), a.get("unit")
        if nm in AXIS_LETTERS:
            letters.append(nm)
        elif typ == "time":
            letters.append("t")
        elif typ == "channel":
            letters.append("c")
        else:
            letters.append("?")
        units.append(unit)
    if "?" in letters:  # spatial axes with other names: give them z, y, x in order
        free = [c for c in "zyx" if c not in letters]
        n_q = letters.count("?")
        free = free[len(free) - n_q :] if n_q <= len(free) else None
        if free is None:
            raise ValueError(f"cannot interpret OME-Zarr axes {raw}")
        it = iter(free)
        letters = [next(it) if a == "?" else a for a in letters]
    return "".join(letters), units


def _scale_of(transforms, ndim: int) -> list[float]:
    s = [1.0] * ndim
    for tr in transforms or []:
        if tr.get("type") == "scale" and "scale" in tr:
            s = [a * float(b) for a, b in zip(s, tr["scale"])]
    return s


def _open_ome(group, ms: dict, omero, *, channel_axis, axes, url, path_str, name, fmt, version=None) -> ImageSource:
    import dask.array as da

    datasets = ms.get("datasets") or []
    if not datasets:
        raise ValueError(f"OME-Zarr image {path_str!r} lists no datasets")
    arrays = []
    for d in datasets:
        try:
            arrays.append(group[d["path"]])
        except KeyError as exc:
            raise ValueError(f"OME-Zarr image {path_str!r}: dataset {d['path']!r} is missing") from exc
    ndim = arrays[0].ndim
    meta_axes, units_all = _ome_axes(ms, ndim)
    if axes:
        ax = _check_axes(axes, ndim)
    else:
        ax = _apply_channel_axis(_check_axes(meta_axes, ndim), channel_axis)
    glob = _scale_of(ms.get("coordinateTransformations"), ndim)
    level_scales = []
    for d in datasets:
        s = _scale_of(d.get("coordinateTransformations"), ndim)
        s = [a * b for a, b in zip(s, glob)]
        level_scales.append(tuple(v for a, v in zip(ax, s) if a in "zyx"))
    units = tuple(u for a, u in zip(ax, units_all) if a in "zyx")
    levels = [da.from_zarr(a) for a in arrays]
    channel_names = None
    if omero and isinstance(omero.get("channels"), list):
        channel_names = [str(c.get("label", i)) for i, c in enumerate(omero["channels"])]
    return _build(
        levels[0],
        ax,
        base=arrays[0],
        levels=levels,
        scale=level_scales[0],
        units=units,
        level_scales=level_scales,
        url=url,
        path=path_str,
        name=ms.get("name") or name,
        zarr_format=fmt,
        channel_names=channel_names,
        source_kind="ome-zarr",
        ome_multiscale={**ms, "version": version},
    )


# ---------------------------------------------------------------------- TIFF
_TIFF_AXES = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}


def _open_tiff(p: str, *, channel_axis, axes, series) -> ImageSource:
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
