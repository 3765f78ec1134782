"""The compiled kernels (:mod:`ilastik_widget.core.kernels`), imported on first use by one thread at a time.

Importing the kernels imports numba (about 0.2 s), so it waits until a volume needs them; by then the filter threads
and the background warm-up ask for them at the same moment. numba's package imports itself in cycles, and two threads
importing parts of it at once can fail with importlib's ``_DeadlockError``, leaving numba half imported for the rest
of the process. Every use of the kernels goes through :func:`kernels`, which imports them under one lock.
"""

from __future__ import annotations

import threading
from types import ModuleType

__all__ = ["kernels"]

_lock = threading.Lock()


def kernels() -> ModuleType:
    """:mod:`ilastik_widget.core.kernels`, imported under a process-wide lock (the first call imports numba)."""
    with _lock:
        from . import kernels as module
    return module
