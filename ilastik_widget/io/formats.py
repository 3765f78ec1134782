"""Opening a location as an image: find out the format from its metadata and build the :class:`ImageSource`.

Formats, detected from the documents found at the location (or named by the user, see
:func:`~ilastik_widget.io.location.parse_location`):

================  =====================================  ==========================================================
format            metadata looked for                    levels / voxel size / axes
================  =====================================  ==========================================================
zarr v3           ``zarr.json``                          OME-Zarr 0.5 ``multiscales``, ``coordinateTransformations``
zarr v2           ``.zarray``, ``.zattrs``, ``.zgroup``  OME-Zarr 0.1-0.4 likewise
N5                ``attributes.json``                    ``s0, s1...`` with ``scales`` or ``downsamplingFactors``,
                                                         ``resolution``/``units`` or ``pixelResolution``, ``axes``
precomputed       ``info``                               ``scales`` (``resolution`` in nm), channels
Deep Zoom         a ``.dzi`` descriptor                  the pyramid's levels, RGB(A) or grey
================  =====================================  ==========================================================

N5 and precomputed store axes x first; the source shows them in the usual order (``zyx``, channels first).
Precomputed volumes one voxel deep become 2D images. Every array is read with tensorstore
(:mod:`~ilastik_widget.io.tensorstore_source`), except Deep Zoom tiles (:mod:`~ilastik_widget.io.dzi`) and zarr
arrays whose codecs tensorstore does not know, which zarr-python reads.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import metadata as md
from .errors import HttpStatusError, SourceError, SourceNotFoundError
from .location import Location
from .remote import MAX_METADATA_BYTES, HttpClient, RemoteOptions
from .tensorstore_source import DEFAULT_CACHE_BYTES, kvstore_spec, make_context, open_array

__all__ = ["StoredLayout", "open_location"]

#: Most dask chunks an array is split into (beyond it, chunks grow past 16 MiB).
MAX_DASK_CHUNKS = 2**18


@dataclass(frozen=True)
class StoredLayout:
    """How the stored data behind a source is laid out, for a viewer that loads it straight from its URL.

    Attributes
    ----------
    source : str
        Neuroglancer's data source string, e.g. ``"https://host/vol|neuroglancer-precomputed:"``.
    format : str
        ``"zarr2"``, ``"zarr3"``, ``"n5"``, ``"precomputed"`` or ``"deepzoom"``.
    dimensions : tuple[str, ...]
        Neuroglancer's name of each stored dimension, in stored order (``("x", "y", "z", "c^")`` for precomputed).
    axes : str
        The source's axis letter (``tczyx``) of each stored dimension, in stored order.
    fixed : tuple[tuple[int, int], ...]
        ``(stored dimension, index)`` of the dimensions the source's array does not have (the one channel of a
        precomputed volume, the z of a one-voxel-deep volume): the source shows that index.
    voxel_offset : tuple[float, ...]
        Where Neuroglancer puts the lower corner of voxel 0, per stored dimension, in voxels (precomputed
        ``voxel_offset``; 0 elsewhere): voxel ``i`` of the source is stored voxel ``i`` spanning
        ``[voxel_offset + i, voxel_offset + i + 1)`` in Neuroglancer's model space.
    resolution, units : tuple
        The stored voxel size and unit of each stored dimension (``None`` where not given).
    needs_token : bool
        The source was opened with a bearer token: a browser without it cannot load the URL.
    """

    source: str
    format: str
    dimensions: tuple[str, ...]
    axes: str
    fixed: tuple[tuple[int, int], ...]
    voxel_offset: tuple[float, ...]
    resolution: tuple[float | None, ...]
    units: tuple[str | None, ...]
    needs_token: bool


_NG_SUFFIX = {"zarr2": "zarr2", "zarr3": "zarr3", "n5": "n5", "precomputed": "neuroglancer-precomputed"}


def _check_not_empty(arr, where: str) -> None:
    if any(int(n) == 0 for n in arr.shape):
        raise SourceError(f"{where}: the image is empty (shape {list(arr.shape)})")


def _dask(arr, name: str, axes: str):
    """``arr`` as a dask array of whole stored chunks, grouped along the spatial axes only (channel and time axes
    keep the stored chunking, which the viewer's raw layer checks)."""
    import dask.array as da

    _check_not_empty(arr, getattr(arr, "where", name))

    spatial = [a in "zyx" for a in axes]
    return da.from_array(
        arr,
        chunks=dask_chunks(arr.shape, arr.chunks, arr.dtype.itemsize, grow=spatial),
        name=f"{name}-{uuid.uuid4().hex}",
        meta=np.empty((0,) * arr.ndim, arr.dtype),
        lock=False,
        fancy=False,
    )


def dask_chunks(shape, chunks, itemsize: int, target: int = 16 * 2**20, grow=None) -> tuple[int, ...]:
    """Dask chunks of whole stored chunks, grown (doubling the axis split most, among the axes ``grow`` allows) up
    to about ``target`` bytes."""
    out = [max(1, min(int(c), int(n))) for c, n in zip(chunks, shape)]
    allowed = [True] * len(out) if grow is None else list(grow)
    while True:
        grow_axes = [i for i, (c, n) in enumerate(zip(out, shape)) if c < n and allowed[i]]
        n_chunks = math.prod(-(-int(n) // c) for n, c in zip(shape, out))
        # past the byte target only while there would be too many tasks for dask's graph (a huge, sparse array)
        if not grow_axes or (np.prod(out, dtype=np.float64) * itemsize * 2 > target and n_chunks <= MAX_DASK_CHUNKS):
            return tuple(out)
        i = max(grow_axes, key=lambda j: shape[j] / out[j])
        out[i] = min(out[i] * 2, int(shape[i]))


class _Opener:
    """State of one :func:`open_location` call: location, user options, tensorstore context, and how the server is
    reached (directly, at another base URL it redirects to, or object by object through redirects)."""

    def __init__(self, loc: Location, *, options: RemoteOptions, cache_bytes: int, channel_axis, axes):
        self.loc = loc
        self.options = options
        self.with_token = bool(loc.remote and options.token)
        self.cache_bytes = int(cache_bytes)
        self.channel_axis = channel_axis
        self.axes = axes
        self._context = None
        self.forbidden: HttpStatusError | None = None  # a 403 met while probing for metadata
        self.redirects: dict[str, str] = {}  # metadata URL asked -> URL that answered after redirects
        self.rebased: tuple[str, str] | None = None  # (user's root, root the server redirected to)
        self.objects: Any = None  # StagedObjects when every object is behind its own redirect
        self.clients: list[HttpClient] = []

    @property
    def context(self):
        if self._context is None:
            self._context = make_context(self.cache_bytes, self.options.retries)
        return self._context

    def read_json(self, loc: Location, key: str, *, probe: bool = False) -> Any:
        """A metadata document, ``None`` if missing (or, while probing, forbidden: S3 says 403 for missing keys)."""
        try:
            if loc.remote and loc.client is not None:
                resp = loc.client.get(loc.key_url(key), missing_ok=True, max_bytes=MAX_METADATA_BYTES, what="metadata")
                if resp is not None and resp.redirected:
                    self.redirects[loc.key_url(key)] = resp.url
                data = None if resp is None else resp.data
            else:
                data = loc.read(key, missing_ok=True, max_bytes=MAX_METADATA_BYTES, what="metadata")
        except HttpStatusError as exc:
            if probe and exc.status == 403:
                self.forbidden = exc
                return None
            raise
        return None if data is None else md.load_json(data, loc.key_where(key))

    def follow_redirect(self, loc: Location, key: str) -> Location:
        """After metadata at ``loc/key`` came through a redirect: read from the redirect's base URL when the server
        moved the whole tree there, else fetch objects one by one through their redirects."""
        from urllib.parse import urlsplit, urlunsplit

        from .staged import StagedObjects

        parts = urlsplit(self.redirects[loc.key_url(key)])
        suffix = "/" + key
        if parts.path.endswith(suffix) and parts.query == loc.query:
            root = urlunsplit((parts.scheme, parts.netloc, parts.path[: -len(suffix)], "", ""))
            same = urlsplit(root)[:2] == urlsplit(loc.root)[:2]
            self.options = self.options if same else replace(self.options, token=None)  # never to another host
            client = HttpClient(self.options)
            self.clients.append(client)
            self.rebased = (loc.root, root)
            return replace(loc, root=root, client=client)
        self.objects = StagedObjects(loc, self.context, self.cache_bytes)
        return loc

    def kv(self, loc: Location) -> dict:
        return kvstore_spec(loc.url or loc.root, loc.remote, self.options)

    def open_ts(self, loc: Location, spec: dict, *, where: str, attrs=None, view=None, staging=None):
        """Open one tensorstore array at ``loc``; ``staging`` (``meta_keys, to_stored, key_of``) says how to read it
        object by object when the server redirects each object."""
        if self.objects is None:
            return open_array({**spec, "kvstore": self.kv(loc)}, where=where, context=self.context,
                              options=self.options, attrs=attrs, view=view)  # fmt: skip
        from .staged import open_staged

        if staging is None:
            raise SourceError(
                f"{where}: a sharded precomputed volume cannot be read from a server that redirects every object to "
                f"a URL of its own (tensorstore does not follow redirects; the shard names need the chunk hashes)"
            )
        meta_keys, to_stored, key_of = staging
        root = self.objects.loc.root
        rel = loc.root[len(root) :].strip("/") if loc.root.startswith(root) else ""
        self.objects.put_documents([f"{rel}/{k}" if rel else k for k in meta_keys])
        return open_staged(
            self.objects,
            {**spec, "kvstore": self.objects.kvstore_spec(rel)},
            where=where,
            options=self.options,
            attrs=attrs,
            view=view,
            to_stored=to_stored,
            key_of=lambda idx, grid, origin, hi: (f"{rel}/" if rel else "") + key_of(idx, grid, origin, hi),
            max_object_bytes=max(self.cache_bytes, 64 * 2**20),
        )

    def source_meta(self, loc: Location, kind: str, fmt: str) -> dict:
        root = loc.root
        if self.rebased is not None and root.startswith(self.rebased[1]):  # the user's URL, not the redirect's
            root = self.rebased[0] + root[len(self.rebased[1]) :]
        url = replace(loc, root=root).url
        return dict(url=url, path=url if loc.remote else root, name=_stem(loc.name), source_kind=kind, data_format=fmt)

    def layout(self, loc: Location, fmt: str, dims, axes, fixed=(), offset=None, resolution=None, units=None):
        n = len(dims)
        base = self.source_meta(loc, "", fmt)["path"]
        source = f"{base}|{_NG_SUFFIX[fmt]}:" if fmt in _NG_SUFFIX else f"deepzoom://{base}"
        return StoredLayout(
            source,
            fmt,
            tuple(dims),
            axes,
            tuple(fixed),
            tuple(float(v) for v in (offset or (0,) * n)),
            tuple(resolution or (None,) * n),
            tuple(units or (None,) * n),
            self.with_token,
        )


def _stem(name: str) -> str:
    for suf in (".ome.zarr", ".zarr", ".n5", ".dzi", ".json", ".xml"):
        if name.lower().endswith(suf):
            return name[: -len(suf)] or "image"
    return name or "image"


def open_location(
    loc: Location,
    *,
    options: RemoteOptions,
    channel_axis=None,
    axes: str | None = None,
    subpath: str | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
):
    """Open the image at ``loc`` (see the module docstring); ``subpath`` names an array inside a group."""
    client = HttpClient(options) if loc.remote else None
    if client is not None:
        loc = replace(loc, client=client)
    op = None
    keep_clients = False
    try:
        if subpath:
            loc = loc.child(md._relative_path(subpath, loc.where, "path"))
        op = _Opener(loc, options=options, cache_bytes=cache_bytes, channel_axis=channel_axis, axes=axes)
        src = _detect_and_open(op, loc)
        # Deep Zoom tiles and objects behind redirects are read with these clients later
        keep_clients = src.source_kind == "deepzoom" or op.objects is not None
        return src
    finally:
        if not keep_clients:  # tensorstore has its own connections; nothing half-open stays behind
            for c in [client, *(op.clients if op is not None else [])]:
                if c is not None:
                    c.close()


def _detect_and_open(op: _Opener, loc: Location):
    fmt = loc.format
    low = loc.root.lower()
    if fmt == "deepzoom" or low.endswith((".dzi", ".dzi.json")) or (fmt is None and low.endswith(".xml")):
        return _open_dzi(op, loc)
    if not loc.remote and not os.path.exists(loc.root):
        raise SourceNotFoundError(f"no such file or directory: {loc.root!r}")
    if not loc.remote and os.path.isfile(loc.root):
        raise SourceError(f"{loc.root!r} is a file, not a zarr, N5 or precomputed directory nor a .dzi descriptor")
    probes = {
        None: ("zarr.json", ".zarray", ".zattrs", ".zgroup", "attributes.json", "info"),
        "zarr": ("zarr.json", ".zarray", ".zattrs", ".zgroup"),
        "zarr2": (".zarray", ".zattrs", ".zgroup"),
        "zarr3": ("zarr.json",),
        "n5": ("attributes.json",),
        "precomputed": ("info",),
    }[fmt]
    if loc.remote and len(probes) > 1:  # one round trip for all the candidates instead of one each
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(probes), thread_name_prefix="ilastik-probe") as pool:
            futures = [pool.submit(op.read_json, loc, key, probe=True) for key in probes]
        found = [f.result() for f in futures]  # the first failure in probing order is raised
    else:
        found = [op.read_json(loc, key, probe=True) for key in probes]
    for key, doc in zip(probes, found):
        if doc is None:
            continue
        if loc.key_url(key) in op.redirects and op.rebased is None and op.objects is None:
            loc = op.follow_redirect(loc, key)
        if key == "zarr.json":
            return _open_zarr_node(op, loc, 3, doc)
        if key == ".zarray":
            return _open_zarr_node(op, loc, 2, doc)
        if key in (".zattrs", ".zgroup"):
            attrs = doc if key == ".zattrs" else (op.read_json(loc, ".zattrs") or {})
            return _open_zarr_node(op, loc, 2, {"node_type": "group", "attributes": attrs})
        if key == "attributes.json":
            return _open_n5(op, loc, doc)
        return _open_precomputed(op, loc, doc)
    if op.forbidden is not None:
        raise op.forbidden
    looked = ", ".join(probes)
    what = {None: "zarr, N5, precomputed or Deep Zoom", "zarr": "zarr", "zarr2": "zarr v2", "zarr3": "zarr v3"}
    raise SourceNotFoundError(f"no {what.get(fmt, fmt)} image at {loc.where} (looked for {looked})")


# ---------------------------------------------------------------------- zarr
def _open_zarr_node(op: _Opener, loc: Location, zarr_format: int, doc: Any):
    from .sources import _axes_for, _build, _check_axes

    if isinstance(doc, dict) and doc.get("node_type") == "group":
        return _open_zarr_group(op, loc, zarr_format, md._dict(doc.get("attributes", {}), loc.where, "attributes"))
    attrs = op.read_json(loc, ".zattrs") if zarr_format == 2 else None
    where = loc.key_where("zarr.json" if zarr_format == 3 else ".zarray")
    meta = md.parse_zarr_array(doc, where, attrs)
    arr = _zarr_array(op, loc, meta)
    ax = _check_axes(op.axes, arr.ndim) if op.axes else _axes_for(arr.ndim, op.channel_axis, _named_axes(meta))
    fmt = f"zarr{zarr_format}"
    names = meta.dimension_names or tuple(f"d{i}" for i in range(arr.ndim))
    layout = op.layout(loc, fmt, [n or f"d{i}" for i, n in enumerate(names)], ax)
    return _build(
        _dask(arr, "zarr", ax),
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


def _zarr_array(op: _Opener, loc: Location, meta: md.ZarrArray):
    """The array at ``loc`` through tensorstore, or zarr-python for codecs tensorstore does not read."""
    driver = "zarr3" if meta.zarr_format == 3 else "zarr"
    try:
        staging = (
            ["zarr.json"] if meta.zarr_format == 3 else [".zarray", ".zattrs"],
            lambda box: box,
            lambda idx, *_: meta.key_prefix + meta.key_separator.join(map(str, idx)),
        )
        return op.open_ts(loc, {"driver": driver}, where=loc.where, attrs=meta.attributes, staging=staging)
    except SourceError as exc:
        text = str(exc).lower()
        if not any(w in text for w in ("codec", "compressor", "filter", "not supported", "unsupported")):
            raise
        return _zarr_python_array(op, loc, exc)


def _zarr_python_array(op: _Opener, loc: Location, why: Exception):
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


def _open_zarr_group(op: _Opener, loc: Location, zarr_format: int, attrs: dict):
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
        return _detect_and_open(op, loc.child(arrays[0]))
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


def _open_ome(op: _Opener, loc: Location, zarr_format: int, ome: md.OmeImage):
    from .sources import _apply_channel_axis, _build, _check_axes

    arrays = []
    for p in ome.paths:
        sub = loc.child(p)
        key = "zarr.json" if zarr_format == 3 else ".zarray"
        doc = op.read_json(sub, key)
        if doc is None:
            raise SourceError(f"OME-Zarr image {loc.where}: dataset {p!r} is missing ({sub.key_where(key)})")
        attrs = op.read_json(sub, ".zattrs") if zarr_format == 2 else None
        arrays.append(_zarr_array(op, sub, md.parse_zarr_array(doc, sub.key_where(key), attrs)))
    ndim = arrays[0].ndim
    meta_axes = ome.axes if ome.axes is not None else "tczyx"[5 - ndim :] if ndim <= 5 else None
    where = loc.key_where("zarr.json" if zarr_format == 3 else ".zattrs")
    if meta_axes is None or len(meta_axes) != ndim:
        raise SourceError(f"{where}: the axes {meta_axes!r} do not match the {ndim} dimensions of {ome.paths[0]!r}")
    _check_levels(where, ome.paths, [a.shape for a in arrays], meta_axes)
    for s in ome.level_scales:
        if s is not None and len(s) != ndim:
            raise SourceError(f"{where}: the scales have {len(s)} entries but the arrays have {ndim} dimensions")
    ax = _check_axes(op.axes, ndim) if op.axes else _apply_channel_axis(_check_axes(meta_axes, ndim), op.channel_axis)
    level_scales = [tuple(v for a, v in zip(ax, s or (1.0,) * ndim) if a in "zyx") for s in ome.level_scales]
    units_all = ome.units or (None,) * ndim
    units = tuple(u for a, u in zip(ax, units_all) if a in "zyx")
    fmt = f"zarr{zarr_format}"
    layout = op.layout(loc, fmt, list(meta_axes), ax, units=units_all)
    return _build(
        _dask(arrays[0], "ome", ax),
        ax,
        base=arrays[0],
        levels=[_dask(a, "ome", ax) for a in arrays],
        scale=level_scales[0],
        units=units,
        level_scales=level_scales,
        zarr_format=zarr_format,
        channel_names=list(ome.channel_names) if ome.channel_names else None,
        ome_multiscale=ome.multiscale,
        storage=layout,
        **{**op.source_meta(loc, "ome-zarr", fmt), "name": ome.name or _stem(loc.name)},
    )


def _check_levels(where: str, paths, shapes, axes: str) -> None:
    """Every level has the first level's rank and non-spatial sizes, and is no larger along the spatial axes."""
    first = shapes[0]
    for p, s in zip(paths[1:], shapes[1:]):
        if len(s) != len(first):
            raise SourceError(f"{where}: level {p!r} has {len(s)} dimensions, the first level {len(first)}")
        for a, n, n0 in zip(axes, s, first):
            if (a in "zyx" and n > n0) or (a not in "zyx" and n != n0):
                raise SourceError(
                    f"{where}: level {p!r} has shape {list(s)}, which does not fit the first {list(first)}"
                )


# ---------------------------------------------------------------------- N5
def _open_n5(op: _Opener, loc: Location, attrs: Any):
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
        arrays.append(op.open_ts(sub, {"driver": "n5"}, where=sub.where, attrs=a, view=lambda s: s.T, staging=staging))
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
    _check_levels(where, paths, [a.shape for a in arrays], ax)
    res = ms.resolution or (1.0,) * n
    level_scales = [tuple(r * f for r, f in zip(res[::-1], fs[::-1])) for fs in factors]
    level_scales = [tuple(v for a, v in zip(ax, s) if a in "zyx") for s in level_scales]
    units = tuple(u for a, u in zip(ax, (ms.units or (None,) * n)[::-1]) if a in "zyx")
    layout = op.layout(
        loc, "n5", file_axes or [f"d{i}" for i in range(n)], ax[::-1], resolution=ms.resolution, units=ms.units
    )
    return _build(
        _dask(arrays[0], "n5", ax),
        ax,
        base=arrays[0],
        levels=[_dask(a, "n5", ax) for a in arrays],
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


def _letters(names) -> str | None:
    letters = "".join(n if n in md.AXIS_LETTERS else "?" for n in names)
    return None if "?" in letters or len(set(letters)) != len(letters) else letters


def _default_n5_axes(n: int) -> str | None:
    return {2: "yx", 3: "zyx"}.get(n)


# ---------------------------------------------------------------------- Neuroglancer precomputed
def _open_precomputed(op: _Opener, loc: Location, doc: Any):
    from .sources import _apply_channel_axis, _build, _check_axes

    where = loc.key_where("info")
    info = md.parse_precomputed(doc, where)
    ts = __import__("tensorstore")
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
    fixed = ([(3, 0)] if single else []) + ([(2, 0)] if flat else [])
    layout = op.layout(
        loc,
        "precomputed",
        ("x", "y", "z", "c^"),
        "xyzc",
        fixed=fixed,
        offset=(*info.scales[0].voxel_offset, 0),
        resolution=(*info.scales[0].resolution, None),
        units=("nanometer",) * 3 + (None,),
    )
    return _build(
        _dask(arrays[0], "precomputed", ax),
        ax,
        base=arrays[0],
        levels=[_dask(a, "precomputed", ax) for a in arrays],
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


# ---------------------------------------------------------------------- Deep Zoom
def _open_dzi(op: _Opener, loc: Location):
    from .dzi import dzi_levels
    from .sources import _axes_for, _build, _check_axes

    if not loc.remote and not os.path.isfile(loc.root):
        raise SourceNotFoundError(f"no such file: {loc.root!r}")
    data = loc.read("", missing_ok=False, max_bytes=MAX_METADATA_BYTES, what="Deep Zoom descriptor")
    info = md.parse_dzi(data, loc.where)
    head, _, _ = loc.root.rpartition("/") if loc.remote else loc.root.rpartition(os.sep)
    stem = loc.name
    for suf in (".dzi.json", ".dzi", ".json", ".xml"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    files = replace(loc, root=f"{head}/{stem}_files" if loc.remote else os.path.join(head, f"{stem}_files"))
    levels = dzi_levels(files, info)
    n = levels[0].ndim
    ax = _check_axes(op.axes, n) if op.axes else _axes_for(n, op.channel_axis, "yxc"[:n])
    factors = [2 ** (info.max_level - lv.level) for lv in levels]
    layout = op.layout(loc, "deepzoom", ("x", "y", "c^")[: n if n == 3 else 2], "xyc"[:n])
    return _build(
        _dask(levels[0], "dzi", ax),
        ax,
        base=levels[0],
        levels=[_dask(lv, "dzi", ax) for lv in levels],
        level_scales=[(float(f), float(f)) for f in factors],
        storage=layout,
        **{**op.source_meta(loc, "deepzoom", "deepzoom"), "name": stem or "image"},
    )
