"""A thread-safe least-recently-used cache bounded in bytes, computing each missing key once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

V = TypeVar("V")
K = TypeVar("K", bound=Hashable)


def _nbytes(value: object) -> int:
    size = getattr(value, "nbytes", None)
    return int(size) if size is not None else len(value)  # type: ignore[arg-type]


class ByteLRU(Generic[V]):
    """Values (numpy arrays or bytes) by key, at most ``max_bytes`` in all; the least recently used go first.

    A value larger than the bound is returned but not kept. :meth:`get_or_compute` lets one thread compute a missing
    key while the others asking for it wait for that result.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def get(self, key: Hashable) -> V | None:
        """The value of ``key`` (now the most recently used), or None when it is not cached."""
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Hashable, value: V) -> None:
        """Keep ``value`` under ``key``, dropping the least recently used values beyond ``max_bytes``."""
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.nbytes -= _nbytes(old)
            self._data[key] = value
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, dropped = self._data.popitem(last=False)
                self.nbytes -= _nbytes(dropped)

    def get_or_compute(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()`` (once, even when several threads ask at the same time)."""
        while True:
            value = self.get(key)
            if value is not None:
                return value
            mine, theirs = self.claim([key])
            for _, done in theirs:
                # Another thread computes this key: wait, then look again (it may have failed or been too large to
                # keep, and then this thread computes it).
                done.wait()
            if not mine:
                continue
            try:
                value = compute()
                self.put(key, value)
                return value
            finally:
                self.release(mine)

    def claim(self, keys: Iterable[K]) -> tuple[list[K], list[tuple[K, threading.Event]]]:
        """Of ``keys`` not cached: those the caller is to compute, marked as being computed until it calls
        :meth:`release` with them, and those another caller is computing, each with the event set when it is done.
        Keys cached now are in neither list."""
        mine: list[K] = []
        theirs: list[tuple[K, threading.Event]] = []
        with self._lock:
            for key in dict.fromkeys(keys):
                if key in self._data:
                    continue
                done = self._inflight.get(key)
                if done is None:
                    self._inflight[key] = threading.Event()
                    mine.append(key)
                else:
                    theirs.append((key, done))
        return mine, theirs

    def release(self, keys: Iterable[Hashable]) -> None:
        """End the computation of ``keys`` claimed with :meth:`claim` (kept with :meth:`put` or failed): whoever
        waits for them looks again."""
        with self._lock:
            events = [self._inflight.pop(key, None) for key in keys]
        for done in events:
            if done is not None:
                done.set()

    def pop(self, key: Hashable) -> V | None:
        """Drop the value of ``key`` and return it (None when it is not cached)."""
        with self._lock:
            value = self._data.pop(key, None)
            if value is not None:
                self.nbytes -= _nbytes(value)
            return value

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        """Drop every key for which ``predicate(key)`` is true."""
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                self.nbytes -= _nbytes(self._data.pop(key))

    def clear(self) -> None:
        """Drop every value."""
        with self._lock:
            self._data.clear()
            self.nbytes = 0

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._data)
