"""What opening one image needs, whatever its format: the user's options, the tensorstore context, how the server is
reached (directly, at the base URL it redirects to, or object by object through redirects), and the pieces every
format builds its :class:`~ilastik_widget.io.sources.ImageSource` from (dask arrays of whole stored chunks, the
:class:`StoredLayout` a viewer loads the data with)."""

from __future__ import annotations

import contextlib
import math
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from . import metadata as md
from .errors import HttpStatusError, SourceError
from .location import Location
from .remote import MAX_METADATA_BYTES, HttpClient, RemoteOptions
from .tensorstore_source import kvstore_spec, make_context, open_array

__all__ = ["MAX_DASK_CHUNKS", "Opener", "StoredLayout", "dask_chunks"]

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
        The name Neuroglancer gives each dimension of the stored data, in stored order: ``("x", "y", "z")`` for a
        precomputed volume of one channel, ``("x", "y", "z", "c^")`` with more; ``("x", "y", "c^")`` for Deep Zoom
        (always three colour channels there); an N5 dataset's ``axes`` as written (``x, y, z, t, c, d6...`` without).
    axes : str
        The source's axis letter (``tczyx``) of each stored dimension, in stored order.
    fixed : tuple[tuple[int, int], ...]
        ``(stored dimension, index)`` of the dimensions the source's array does not have (the z of a one-voxel-deep
        precomputed volume, the colour channel of a grey Deep Zoom image): the source shows that index.
    voxel_offset : tuple[float, ...]
        Where Neuroglancer puts the lower corner of voxel 0, per stored dimension, in voxels (precomputed
        ``voxel_offset``; 0 elsewhere): voxel ``i`` of the source is stored voxel ``i`` spanning
        ``[voxel_offset + i, voxel_offset + i + 1)`` in Neuroglancer's model space.
    resolution, units : tuple
        The stored voxel size and unit of each stored dimension (``None`` where not given).
    needs_token : bool
        The source was opened with a bearer token: a browser without it cannot load the URL.
    encodings : tuple[str, ...]
        How the chunks or tiles are encoded where a viewer's decoders may not cover every case: the precomputed
        ``encoding`` of each scale; for Deep Zoom ``"<format>-<pixels>"`` of the tile read to learn the pixel type,
        ``pixels`` one of ``rgb8``, ``rgba8``, ``grey8``, ``grey16``, ``palette8``, ``other`` (e.g. ``"png-rgb8"``).
        Empty for zarr and N5 (a codec a viewer lacks shows in their metadata).
    doubled_slashes : bool or None
        For Deep Zoom on a server (opened without a token): whether the server answers a tile's path with its
        level's slash doubled (``<name>_files/<level>//<col>_<row>.<format>``) as the plain path; file servers do,
        object stores do not. ``None`` where not asked.
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
    encodings: tuple[str, ...] = ()
    doubled_slashes: bool | None = None


_NG_SUFFIX = {
    "zarr2": "zarr2",
    "zarr3": "zarr3",
    "n5": "n5",
    "precomputed": "neuroglancer-precomputed",
    "deepzoom": "deepzoom",
}


def check_not_empty(arr, where: str) -> None:
    if any(int(n) == 0 for n in arr.shape):
        raise SourceError(f"{where}: the image is empty (shape {list(arr.shape)})")


def as_dask(arr, name: str, axes: str):
    """``arr`` as a dask array of whole stored chunks, grouped along the spatial axes only (channel and time axes
    keep the stored chunking, which the viewer's raw layer checks)."""
    import dask.array as da

    check_not_empty(arr, getattr(arr, "where", name))

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


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
#: Threads that fetch metadata documents in parallel (kept: starting threads for every open costs more than the
#: requests on a near server).
METADATA_THREADS = 16


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(METADATA_THREADS, thread_name_prefix="ilastik-metadata")
        return _POOL


class Opener:
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

    @property
    def context(self):
        """The tensorstore context of this image's arrays (made on first use with the cache bound and retries)."""
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

    def read_all(self, where: list[tuple[Location, str]], *, probe: bool = False) -> list[Any]:
        """:meth:`read_json` of each ``(location, key)``; over http all at once (one round trip, not one each).
        The first failure, in the order given, is raised."""
        return list(self.iter_json(where, probe=probe))

    def iter_json(self, where: list[tuple[Location, str]], *, probe: bool = False, first_alone: float = 0.0):
        """:meth:`read_json` of each ``(location, key)`` in order, requested at once over http: the caller can stop at
        the first it needs without waiting for the others.

        ``first_alone``: seconds to wait for the first document before asking for the others, which are not asked for
        at all when it exists and the caller stops there (a near server answers the likeliest probe within a
        millisecond or two; a far one costs the others that much more).
        """
        if len(where) < 2 or not any(loc.remote for loc, _ in where):
            for loc, key in where:
                yield self.read_json(loc, key, probe=probe)
            return
        first = _pool().submit(self.read_json, *where[0], probe=probe)
        done = False
        if first_alone > 0:
            with contextlib.suppress(FutureTimeout):
                done = first.result(timeout=first_alone) is not None
        if done:
            yield first.result()  # found: the caller takes it; the others are asked for only if it goes on
        rest = [_pool().submit(self.read_json, loc, key, probe=probe) for loc, key in where[1:]]
        for f in rest if done else [first, *rest]:
            yield f.result()

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
            self.rebased = (loc.root, root)
            return replace(loc, root=root, client=client)
        self.objects = StagedObjects(loc, self.context, self.cache_bytes)
        return loc

    def kv(self, loc: Location) -> dict:
        """The tensorstore key-value store spec of ``loc`` (a local directory, or http(s) with the user's token)."""
        return kvstore_spec(loc.url or loc.root, loc.remote, self.options)

    def open_ts(self, loc: Location, spec: dict, *, where: str, attrs=None, view=None, staging=None, metadata=None):
        """Open one tensorstore array at ``loc`` (``metadata``: its document, already read); ``staging``
        (``meta_keys, to_stored, key_of``) says how to read it object by object when the server redirects each
        object."""
        if self.objects is None:
            return open_array({**spec, "kvstore": self.kv(loc)}, where=where, context=self.context,
                              options=self.options, attrs=attrs, view=view, metadata=metadata)  # fmt: skip
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
        """The :class:`~ilastik_widget.io.sources.ImageSource` fields that say where the image came from (``url``,
        ``path``, ``name``, ``source_kind``, ``data_format``), with the user's URL rather than the one a server
        redirected to."""
        root = loc.root
        if self.rebased is not None and root.startswith(self.rebased[1]):  # the user's URL, not the redirect's
            root = self.rebased[0] + root[len(self.rebased[1]) :]
        url = replace(loc, root=root).url
        return dict(url=url, path=url if loc.remote else root, name=stem(loc.name), source_kind=kind, data_format=fmt)

    def layout(
        self,
        loc: Location,
        fmt: str,
        dims,
        axes,
        fixed=(),
        offset=None,
        resolution=None,
        units=None,
        encodings=(),
        doubled_slashes=None,
    ):
        """The :class:`StoredLayout` of the data at ``loc`` in format ``fmt``; the other arguments are
        its fields (``dims`` its ``dimensions``, ``offset`` its ``voxel_offset``)."""
        n = len(dims)
        base = self.source_meta(loc, "", fmt)["path"]
        source = f"{base}|{_NG_SUFFIX[fmt]}:"
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
            tuple(encodings),
            doubled_slashes,
        )


def stem(name: str) -> str:
    for suf in (".ome.zarr", ".zarr", ".n5", ".dzi", ".json", ".xml"):
        if name.lower().endswith(suf):
            return name[: -len(suf)] or "image"
    return name or "image"


def check_levels(where: str, paths, shapes, axes: str) -> None:
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
