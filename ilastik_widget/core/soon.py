"""Work started once per process in a background thread, a little later: imports and compilations that the first
real use would otherwise wait for, delayed so that the viewer's first requests get the kernel first."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["once_soon"]

_timers: dict[str, threading.Timer] = {}
_lock = threading.Lock()


def once_soon(name: str, work: Callable[[], object], delay: float = 2.0) -> threading.Timer:
    """Run ``work`` in a daemon thread after ``delay`` seconds, the first time ``name`` is asked for in this process;
    returns the timer of that run (the same one on every later call)."""
    with _lock:
        timer = _timers.get(name)
        if timer is None:
            timer = threading.Timer(delay, work)
            timer.daemon = True
            timer.start()
            _timers[name] = timer
        return timer
