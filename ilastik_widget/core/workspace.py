"""Work and result buffers of the filter bank, kept between calls and dropped when idle.

Fresh multi-megabyte arrays come from mmap and cost a page fault per page on first touch (and glibc returns
them on free); a filter bank call needs dozens of them, so :mod:`ilastik_widget.core.filters` and
:mod:`ilastik_widget.core.planes` take them from here. Both budgets are bounded (environment variables
``ILASTIK_WIDGET_FEATURE_WORKSPACE_MB`` and ``ILASTIK_WIDGET_FEATURE_RESULTS_MB``, default min(2 GiB, RAM / 8)
each) and everything is dropped after :data:`IDLE_TRIM_SECONDS` without a call, or by :func:`clear_workspace`.

Large buffers are mapped with :func:`empty` on small pages: numpy advises the kernel to back arrays of 4 MiB and more
with transparent huge pages, and on the virtual machines measured here the first touch of huge pages cost 7x as much
in a kernel process holding caches (64 MiB: 0.18 s of system time against 0.025 s with small pages).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

try:  # installed with scikit-learn
    import threadpoolctl
except ImportError:  # pragma: no cover
    threadpoolctl = None

#: arrays of at least this many bytes are mapped by :func:`empty` on small pages
SMALL_PAGES_FROM = 4 << 20


def empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised C-contiguous float32 array; from :data:`SMALL_PAGES_FROM` bytes on, an anonymous mapping of
    its own on small pages (unmapped when the array and its views are gone)."""
    n = 1
    for s in shape:
        n *= int(s)
    if 4 * n < SMALL_PAGES_FROM:
        return np.empty(shape, dtype=np.float32)
    flat = np.frombuffer(mmap.mmap(-1, 4 * n), dtype=np.float32)
    # a 1-D request gets the mapped array itself: views of it then reference it (OutputRecycler counts them)
    return flat if len(shape) == 1 else flat.reshape(shape)


def _whole(a: np.ndarray) -> bool:
    """Whether ``a`` is a whole C-contiguous float32 buffer (from numpy or :func:`empty`), not a view of another."""
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        return False
    base = a.base
    if base is None:
        return True
    if isinstance(base, np.ndarray):  # the reshape of a mapping from empty()
        return base.base is not None and _whole_mapping(base) and base.nbytes == a.nbytes
    return _whole_mapping(a)


def _whole_mapping(a: np.ndarray) -> bool:
    base = a.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap) and base.nbytes == a.nbytes


class Arena:
    """Free-list of whole-array work buffers, kept between calls.

    Fresh multi-megabyte arrays come from mmap and cost a page fault per page on first touch (and glibc
    returns them on free); a filter bank call needs dozens of them, so reusing them saves ~10-20% of a
    call. At most ``max_bytes`` are kept (env ``ILASTIK_WIDGET_FEATURE_WORKSPACE_MB``; default
    min(2 GiB, RAM / 8)): a buffer given back beyond that pushes out the ones kept longest, so that buffers
    of shapes no longer asked for (another image, a slab cut by the volume's border) do not fill the
    arena and leave every later call with fresh memory. Everything is dropped after
    :data:`IDLE_TRIM_SECONDS` without a call, or by :func:`clear_workspace`.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._kept: OrderedDict[int, np.ndarray] = OrderedDict()  # id -> buffer, the longest kept first
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 work buffer of ``shape``: a kept one if there is one, else a new one (uninitialised)."""
        with self._lock:
            stack = self._free.get(shape)
            if stack:
                a = stack.pop()
                del self._kept[id(a)]
                self._bytes -= a.nbytes
                return a
        return empty(shape)

    def put(self, a: np.ndarray | None) -> None:
        """Keep ``a`` for reuse, dropping the buffers kept longest beyond ``max_bytes`` (views and arrays not
        made by :func:`empty` are not kept)."""
        if a is None or a.nbytes > self.max_bytes or not _whole(a):
            return
        with self._lock:
            while self._kept and self._bytes + a.nbytes > self.max_bytes:
                _, old = self._kept.popitem(last=False)
                stack = self._free[old.shape]
                del stack[next(i for i, x in enumerate(stack) if x is old)]
                self._bytes -= old.nbytes
            self._free.setdefault(a.shape, []).append(a)
            self._kept[id(a)] = a
            self._bytes += a.nbytes

    def clear(self) -> None:
        """Drop every kept buffer."""
        with self._lock:
            self._free.clear()
            self._kept.clear()
            self._bytes = 0


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _budget(env: str, cap: int, fraction: int) -> int:
    """Bytes from env var ``env`` (in MB) or ``min(cap, physical memory / fraction)``."""
    if os.environ.get(env):
        return int(float(os.environ[env]) * (1 << 20))
    return min(cap, _physical_memory() // fraction)


ARENA = Arena(_budget("ILASTIK_WIDGET_FEATURE_WORKSPACE_MB", 2 << 30, 8))


class OutputRecycler:
    """Hands out result arrays as views of kept buffers, and reuses a buffer once no view of it is alive.

    A result of 49 channels is 200 MB per megapixel; faulting in that much fresh memory on every call
    costs as much as a third of the filtering on this kind of machine. Whether the caller still holds
    a result is read from the buffer's reference count (every numpy view references its base), so a
    live result is never reused. At most ``max_bytes`` of buffers are kept (env
    ``ILASTIK_WIDGET_FEATURE_RESULTS_MB``; default min(2 GiB, RAM / 8)), dropped like the work buffers.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._owners: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...]) -> np.ndarray:
        """An uninitialised float32 array of ``shape``: a view of a kept buffer that no live
        result uses, or a new array."""
        n = int(np.prod(shape))
        if n * 4 > self.max_bytes or n == 0:
            return empty(shape)
        with self._lock:
            best = None
            for owner in self._owners:
                # free = referenced only by the list, the loop variable and getrefcount's argument
                free = sys.getrefcount(owner) <= 3
                if free and n <= owner.size <= 2 * n and (best is None or owner.size < best.size):
                    best = owner
            owner = None  # drop the loop's reference before anything else counts references
            if best is None:
                # make room: drop free buffers until the new one fits
                total = sum(o.nbytes for o in self._owners)
                i = 0
                while i < len(self._owners) and total + n * 4 > self.max_bytes:
                    if sys.getrefcount(self._owners[i]) <= 2:  # the list and the argument
                        total -= self._owners.pop(i).nbytes
                    else:
                        i += 1
                if total + n * 4 > self.max_bytes:
                    return empty(shape)
                best = empty((n,))
                self._owners.append(best)
            return best[:n].reshape(shape)

    def clear(self) -> None:
        """Drop every kept buffer (results still in use keep theirs)."""
        with self._lock:
            self._owners.clear()


RESULTS = OutputRecycler(_budget("ILASTIK_WIDGET_FEATURE_RESULTS_MB", 2 << 30, 8))


def new_output(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 result array, recycled from results nobody references any more."""
    return RESULTS.empty(shape)


def clear_workspace() -> None:
    """Drop the work and result buffers kept between calls."""
    ARENA.clear()
    RESULTS.clear()


#: buffers kept for reuse are dropped after this many seconds without a filter bank call
IDLE_TRIM_SECONDS = 20.0
_last_use = 0.0
_active = 0  # calls in progress: never trim under a running call
_trim_timer: threading.Timer | None = None
_trim_lock = threading.Lock()


def touch(delta: int) -> None:
    """Note a call starting (+1) or ending (-1); keep an idle trim scheduled (daemon timer)."""
    global _last_use, _trim_timer, _active
    with _trim_lock:
        _active += delta
        _last_use = time.monotonic()
        if _trim_timer is None:
            _trim_timer = threading.Timer(IDLE_TRIM_SECONDS, _trim_if_idle)
            _trim_timer.daemon = True
            _trim_timer.start()


def _trim_if_idle() -> None:
    global _trim_timer
    with _trim_lock:
        idle = time.monotonic() - _last_use
        if _active:
            idle = 0.0
        if idle >= IDLE_TRIM_SECONDS:
            _trim_timer = None
            clear_workspace()
            return
        _trim_timer = threading.Timer(IDLE_TRIM_SECONDS - idle + 0.1, _trim_if_idle)
        _trim_timer.daemon = True
        _trim_timer.start()


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limiter: Any = None
_blas_controller: Any = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while planes are computed: the matrix products run on the pool's threads
    already, and BLAS threads spinning beside them cost ~30% on two cores. Counted, so that concurrent
    calls restore the original setting only when the last one ends.
    """
    global _blas_users, _blas_limiter, _blas_controller
    with _blas_lock:
        if _blas_users == 0 and threadpoolctl is not None:
            if _blas_controller is None:
                _blas_controller = threadpoolctl.ThreadpoolController()
            _release_openblas()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _release_openblas()
                _blas_limiter.restore_original_limits()
                _blas_limiter = None
                _release_openblas()


def _release_openblas() -> None:
    """Let this thread set OpenBLAS's thread count: threadpoolctl (>= 3.6) lets only the first thread that set it
    change it again, silently, until released, so limits taken in the widget's or Dask's threads (or in the
    background training) did nothing and OpenBLAS's threads spun beside the filter threads."""
    controller = getattr(threadpoolctl, "OpenBLASController", None)
    if controller is not None and hasattr(controller, "clear_controlling_thread"):
        controller.clear_controlling_thread(force=True)
