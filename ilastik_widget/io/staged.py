"""Reading through servers that redirect each object to its own signed URL (object stores behind a data proxy).

tensorstore's http driver does not follow redirects. For such a server the objects a read needs (chunk files, or
whole shard files of sharded zarr) are fetched with :class:`~ilastik_widget.io.remote.HttpClient`, which follows
redirects (dropping the token when one leads to another host), into a tensorstore in-memory key-value store that
tensorstore then decodes from. Fetched objects are kept up to a bound in bytes (least recently used dropped) and
missing ones remembered, so a region read twice is fetched once.

Sharded Neuroglancer precomputed volumes (whose shard names come from hashed chunk ids) are not supported this way.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from .errors import SourceError
from .location import Location
from .remote import MAX_METADATA_BYTES
from .tensorstore_source import TensorStoreArray, _reason, _split_key, _ts

__all__ = ["StagedObjects", "StagedArray"]


class StagedObjects:
    """Objects under ``loc`` copied on demand into a tensorstore memory key-value store (one per image)."""

    def __init__(self, loc: Location, context, max_bytes: int):
        if loc.client is None:
            raise RuntimeError("staged reading needs an http client")
        ts = _ts()
        self.loc = loc
        self.client = loc.client
        self.context = context
        self.prefix = f"staged-{uuid.uuid4().hex}/"
        self.kv = ts.KvStore.open({"driver": "memory", "path": self.prefix}, context=context).result()
        self.max_bytes = max(int(max_bytes), 64 * 2**20)
        self._held: OrderedDict[str, int] = OrderedDict()
        self._missing: set[str] = set()
        self._bytes = 0
        self._lock = threading.Lock()

    def kvstore_spec(self, sub: str = "") -> dict:
        """The tensorstore spec of the memory key-value store of the objects under ``sub`` (a relative path)."""
        return {"driver": "memory", "path": self.prefix + (sub.strip("/") + "/" if sub.strip("/") else "")}

    def put_documents(self, keys: list[str]) -> None:
        """Copy metadata documents (not evicted)."""
        for key in keys:
            data = self.loc.read(key, missing_ok=True, max_bytes=MAX_METADATA_BYTES, what="metadata")
            if data is not None:
                self.kv.write(key, data).result()

    def ensure(self, keys: list[str], max_object_bytes: int) -> None:
        """Fetch the objects among ``keys`` not held yet (in parallel), then drop the oldest beyond the bound."""
        with self._lock:
            todo = [k for k in dict.fromkeys(keys) if k not in self._held and k not in self._missing]
            for k in keys:
                if k in self._held:
                    self._held.move_to_end(k)
        if not todo:
            return
        urls = [self.loc.key_url(k) for k in todo]
        responses = self.client.get_many(urls, missing_ok=True, max_bytes=max_object_bytes, what="chunk")
        for key, resp in zip(todo, responses):
            if resp is None:
                with self._lock:
                    self._missing.add(key)
                continue
            self.kv.write(key, resp.data).result()
            with self._lock:
                self._held[key] = len(resp.data)
                self._bytes += len(resp.data)
        self._evict(protect=set(keys))

    def _evict(self, protect: set[str]) -> None:
        ts = _ts()
        while True:
            with self._lock:
                if self._bytes <= self.max_bytes:
                    return
                victim = next((k for k in self._held if k not in protect), None)
                if victim is None:
                    return
                self._bytes -= self._held.pop(victim)
            self.kv.delete_range(ts.KvStore.KeyRange(victim, victim + "\0")).result()


class StagedArray(TensorStoreArray):
    """A :class:`TensorStoreArray` over :class:`StagedObjects`: each read first fetches the objects it touches.

    ``to_stored`` maps a box of this array (``[(lo, hi), ...]`` per axis) to the box of the stored array;
    ``object_keys`` lists the object keys covering a stored box.
    """

    def __init__(self, store, objects: StagedObjects, to_stored: Callable, object_keys: Callable, max_object_bytes,
                 **kwargs):  # fmt: skip
        super().__init__(store, **kwargs)
        self._objects = objects
        self._to_stored = to_stored
        self._object_keys = object_keys
        self._max_object_bytes = int(max_object_bytes)

    def __getitem__(self, key) -> np.ndarray:
        index, _ = _split_key(key, self.shape)
        box = []
        for k in index:
            if isinstance(k, slice):
                box.append((k.start, max(k.start, k.stop)))
            else:
                box.append((k, k + 1))
        if all(hi > lo for lo, hi in box):
            keys = self._object_keys(self._to_stored(box))
            self._objects.ensure(keys, self._max_object_bytes)
        return super().__getitem__(key)

    def __reduce__(self):
        raise TypeError(f"{self.where} is read through redirects in this process only; it cannot be sent to workers")


def chunk_keys(stored_box, grid: tuple[int, ...], origin: tuple[int, ...], key_of: Callable) -> list[str]:
    """Keys of the chunks (of shape ``grid`` from ``origin``) that a stored box touches."""
    ranges = []
    for (lo, hi), c, o in zip(stored_box, grid, origin):
        ranges.append(range((lo - o) // c, (hi - 1 - o) // c + 1))
    n = math.prod(len(r) for r in ranges)
    if n > 1_000_000:
        raise SourceError(f"a read of {n} chunks through redirects is too large; read a smaller region")
    out: list[str] = []

    def rec(prefix: tuple[int, ...], d: int) -> None:
        if d == len(ranges):
            out.append(key_of(prefix))
            return
        for i in ranges[d]:
            rec((*prefix, i), d + 1)

    rec((), 0)
    return out


def open_staged(objects: StagedObjects, spec: dict, *, where: str, options, attrs, view, to_stored, key_of,
                max_object_bytes) -> StagedArray:  # fmt: skip
    """Open ``spec`` (its kvstore the staged objects) and wrap it as a :class:`StagedArray`.

    ``key_of(chunk index, chunk shape, grid origin, upper bounds)`` names the stored object of a chunk of the
    stored array (a whole shard for sharded zarr).
    """
    ts = _ts()
    token = options.token if options is not None else None
    try:
        base = ts.open(
            {**spec, "recheck_cached_data": "open", "recheck_cached_metadata": "open"},
            context=objects.context,
            read=True,
            write=False,
        ).result(timeout=60)
        layout = base.chunk_layout
        grid = tuple(int(c) for c in layout.write_chunk.shape)
        origin = tuple(int(o) for o in layout.grid_origin)
        hi = tuple(int(h) for h in base.domain.exclusive_max)
        store = view(base) if view is not None else base
    except Exception as exc:
        raise SourceError(f"{where}: {_reason(exc, token)}") from None
    return StagedArray(
        store,
        objects,
        to_stored,
        lambda box: chunk_keys(box, grid, origin, lambda idx: key_of(idx, grid, origin, hi)),
        max_object_bytes,
        where=where,
        token=token,
        attrs=attrs,
    )
