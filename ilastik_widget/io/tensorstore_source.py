"""Arrays read with tensorstore: zarr v2 and v3 (sharded too), N5 and Neuroglancer precomputed (sharded too), from a
local directory or an http(s) server.

:func:`open_array` opens one array (one pyramid level) and returns a :class:`TensorStoreArray`: shape, dtype, chunks
and numpy indexing (integers, slices with any step, ``...``), which is what dask, the session and the viewer's chunk
server read through. Each image gets its own tensorstore context, whose cache pool is bounded in bytes
(``cache_bytes``); reads over http retry transient failures with backoff; tensorstore's own error messages are
rewritten to name the place and never show request headers (the bearer token).

Timeouts of tensorstore's http requests are process-wide: the first use sets libcurl's connect timeout and its
"no byte for this many seconds" limit to :data:`~ilastik_widget.io.remote.DEFAULT_TIMEOUT` unless the environment
already sets ``TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS`` / ``TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS``.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections import OrderedDict
from typing import Any

import numpy as np

from . import remote
from .errors import SourceError, redact

__all__ = ["DEFAULT_CACHE_BYTES", "TensorStoreArray", "kvstore_spec", "make_context", "open_array"]

#: Bound of the decoded-chunk cache of one image (all its levels).
DEFAULT_CACHE_BYTES = 256 * 2**20


def _set_http_timeouts() -> None:
    seconds = str(max(1, math.ceil(remote.DEFAULT_TIMEOUT)))
    os.environ.setdefault("TENSORSTORE_CURL_CONNECT_TIMEOUT_SECONDS", seconds)
    os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS", seconds)
    os.environ.setdefault("TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES", "1")


def _ts():
    _set_http_timeouts()  # before tensorstore makes its first http request (it reads these once)
    import tensorstore

    return tensorstore


def make_context(cache_bytes: int = DEFAULT_CACHE_BYTES, retries: int = remote.DEFAULT_RETRIES):
    """A tensorstore context: a cache pool of ``cache_bytes``, ``retries`` further attempts for failed requests."""
    ts = _ts()
    return ts.Context(
        {
            "cache_pool": {"total_bytes_limit": int(cache_bytes)},
            "http_request_retries": {"max_retries": int(retries) + 1, "initial_delay": "100ms", "max_delay": "4s"},
        }
    )


def kvstore_spec(root: str, remote_url: bool, options: remote.RemoteOptions | None = None) -> dict:
    """tensorstore key-value store of a local directory or an http(s) URL (with the bearer token's header)."""
    if not remote_url:
        return {"driver": "file", "path": root.rstrip("/") + "/"}
    spec: dict[str, Any] = {"driver": "http", "base_url": root}
    headers = (options or remote.remote_options()).headers_for(root)
    if headers:
        spec["headers"] = [f"{k}: {v}" for k, v in headers.items()]
    return spec


def open_array(
    spec: dict,
    *,
    where: str,
    context,
    options: remote.RemoteOptions | None = None,
    attrs: dict | None = None,
    view=None,
    metadata: dict | None = None,
) -> TensorStoreArray:
    """Open the tensorstore ``spec`` read-only; ``view`` (a function of the store) can transpose, translate or index.

    ``metadata``, the array's metadata document already read and checked, saves tensorstore reading it again (a
    round trip per array over http).

    Raises
    ------
    SourceError
        Naming ``where`` and tensorstore's reason (without headers), or that nothing answered within the timeout.
    """
    ts = _ts()
    token = options.token if options is not None else None
    spec = {**spec, "recheck_cached_data": "open", "recheck_cached_metadata": "open"}
    if metadata is not None:
        spec["metadata"] = metadata
    limit = 30.0 if options is None else sum(options.timeout) * (options.retries + 1)
    future = None
    try:  # (a spec tensorstore cannot parse raises at once, before any future)
        future = ts.open(spec, context=context, read=True, write=False, assume_metadata=metadata is not None)
        store = future.result(timeout=limit)
    except TimeoutError:
        if future is not None:
            future.cancel()
        raise SourceError(f"{where}: no answer within {limit:g} s while opening it") from None
    except Exception as exc:  # tensorstore raises ValueError for every kind of failure
        raise SourceError(f"{where}: {_reason(exc, token)}") from None
    if view is not None:
        try:
            store = view(store)
        except Exception as exc:
            raise SourceError(f"{where}: {_reason(exc, token)}") from None
    return TensorStoreArray(store, where=where, token=token, attrs=attrs, cache_bytes=_cache_bytes(context))


def _cache_bytes(context) -> int:
    try:
        return int(context["cache_pool"].to_json()["total_bytes_limit"])
    except Exception:
        return DEFAULT_CACHE_BYTES


def _reason(exc: Exception, token: str | None) -> str:
    text = redact(str(exc), token)
    for code in ("FAILED_PRECONDITION: ", "INVALID_ARGUMENT: ", "NOT_FOUND: ", "OUT_OF_RANGE: ", "ABORTED: "):
        text = text.replace(code, "")
    return text.strip()[:600] or type(exc).__name__


class TensorStoreArray:
    """A read-only tensorstore array with numpy indexing, for dask (``da.from_array``) and direct reads.

    Attributes
    ----------
    shape, dtype, ndim
        As numpy's.
    chunks : tuple[int, ...]
        The shape read at once (the inner chunk of a sharded array).
    attrs : dict
        The array's user attributes (zarr), for readers that look at them.
    where : str
        The array's path or URL (no query string), for messages.
    """

    def __init__(
        self, store, *, where: str, token: str | None = None, attrs: dict | None = None, cache_bytes=None, ident=None
    ):
        self._store = store
        self._ident = ident or uuid.uuid4().hex  # the same in every process this array is sent to
        self._with_cache: dict[int, TensorStoreArray] = {}
        self._token = token
        self.where = where
        self.attrs = dict(attrs or {})
        self._cache_bytes = DEFAULT_CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        self.shape = tuple(int(n) for n in store.shape)
        self.dtype = np.dtype(store.dtype.numpy_dtype)
        self.ndim = len(self.shape)
        try:
            read = store.chunk_layout.read_chunk.shape
            chunks = tuple(int(c) if c else n for c, n in zip(read, self.shape))
        except Exception:
            chunks = self.shape
        self.chunks = tuple(max(1, min(c, n)) if n else 1 for c, n in zip(chunks, self.shape))

    def __repr__(self) -> str:  # never the spec: it holds the request headers
        return f"TensorStoreArray(shape={self.shape}, dtype={self.dtype}, chunks={self.chunks}, where={self.where!r})"

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the whole array in bytes (nothing is read to know it)."""
        return self.size * self.dtype.itemsize

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        index, post = _split_key(key, self.shape)
        try:
            out = self._store[index].read().result()
        except Exception as exc:
            raise SourceError(f"{self.where}: reading {_key_text(index)} failed: {_reason(exc, self._token)}") from None
        out = np.asarray(out)
        return out[post] if post else out

    def with_cache_bytes(self, cache_bytes: int) -> TensorStoreArray:
        """The same array opened again with a decoded-chunk cache of ``cache_bytes`` (e.g. small, for a pass that
        reads every chunk once)."""
        if int(cache_bytes) == self._cache_bytes:
            return self
        # one per size: the time points of a series (and every block of a run) share it and its cache
        other = self._with_cache.get(int(cache_bytes))
        if other is None:
            spec = self._store.spec(retain_context=False).to_json()
            other = _reopen(spec, self.where, self._token, self.attrs, int(cache_bytes), uuid.uuid4().hex)
            self._with_cache[int(cache_bytes)] = other
        return other

    # Pickled for Dask workers in other processes: the store is reopened there with a context like this one.
    def __reduce__(self):
        spec = self._store.spec(retain_context=False).to_json()
        return (_reopen, (spec, self.where, self._token, self.attrs, self._cache_bytes, self._ident))


#: arrays reopened in this process, by the identity of the array they were sent as (least recently used first): a
#: Dask worker unpickles an array once per task, and a store (and cache) opened anew for each task added up
_REOPENED: OrderedDict[str, TensorStoreArray] = OrderedDict()
_REOPENED_LOCK = threading.Lock()
_REOPENED_MAX = 8


def _reopen(spec, where, token, attrs, cache_bytes, ident=None) -> TensorStoreArray:
    with _REOPENED_LOCK:
        hit = _REOPENED.get(ident) if ident else None
        if hit is not None:
            _REOPENED.move_to_end(ident)
            return hit
    ts = _ts()
    try:
        store = ts.open(spec, context=make_context(cache_bytes), read=True, write=False).result()
    except Exception as exc:
        raise SourceError(f"{where}: {_reason(exc, token)}") from None
    arr = TensorStoreArray(store, where=where, token=token, attrs=attrs, cache_bytes=cache_bytes, ident=ident)
    if ident:
        with _REOPENED_LOCK:
            _REOPENED[ident] = arr
            while len(_REOPENED) > _REOPENED_MAX:
                _REOPENED.popitem(last=False)
    return arr


def _key_text(index: tuple) -> str:
    parts = []
    for k in index:
        if isinstance(k, slice):
            parts.append(f"{k.start}:{k.stop}" + (f":{k.step}" if k.step not in (None, 1) else ""))
        else:
            parts.append(str(k))
    return "[" + ", ".join(parts) + "]"


def _split_key(key, shape: tuple[int, ...]) -> tuple[tuple, tuple]:
    """Split a numpy index into what tensorstore reads (integers, slices with positive steps, bounds checked) and
    what numpy applies to the result afterwards (reversals, integer arrays, masks, new axes)."""
    if not isinstance(key, tuple):
        key = (key,)
    n_ell = sum(k is Ellipsis for k in key)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    n_real = sum(k is not None and k is not Ellipsis for k in key)
    if n_real > len(shape):
        raise IndexError(f"too many indices ({n_real}) for an array of {len(shape)} dimensions")
    if n_ell:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - n_real) + key[i + 1 :]
    else:
        key = key + (slice(None),) * (len(shape) - n_real)
    index: list[int | slice] = []
    post: list[Any] = []
    dim, fancy = 0, False
    for k in key:
        if k is None:
            post.append(None)
            continue
        n = shape[dim]
        dim += 1
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {dim - 1} with size {n}")
            index.append(i % n)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            r = range(start, stop, step)
            if step > 0:
                index.append(slice(r.start, r.start if not r else r[-1] + 1, step))
                post.append(slice(None))
            else:
                lo = r[-1] if r else 0
                index.append(slice(lo, (r[0] + 1) if r else 0, -step))
                post.append(slice(None, None, -1))
        else:  # integer arrays, lists, masks: read the axis whole, let numpy pick
            index.append(slice(0, n))
            post.append(k)
            fancy = True
    if not fancy and all(p == slice(None) for p in post if p is not None) and None not in post:
        return tuple(index), ()
    return tuple(index), tuple(post)
