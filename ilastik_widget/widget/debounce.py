"""Work done once a burst of changes has settled, in a worker thread of its own.

A pan, a scroll through slices or a burst of strokes changes the widget's state many times a second; work that
follows the state (measuring the class shares in view, computing the features of the planes in view) should run once,
a moment after the last change, and never in the thread that receives the browser's messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger("ilastik_widget")


class Debounced:
    """Runs ``work`` in one worker thread ``delay`` seconds after the last :meth:`schedule` call.

    A call made while ``work`` runs schedules one more run after it. What ``work`` raises is logged (with
    ``what`` naming the work) and dropped: it must say its own errors where the user sees them.
    """

    def __init__(self, work: Callable[[], object], delay: float, name: str, what: str):
        self.work, self.delay, self.name, self.what = work, float(delay), name, what
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._future: Future | None = None
        self._closed = False

    def schedule(self) -> None:
        """Run the work ``delay`` seconds from now (a later call within them restarts the wait)."""
        timer = threading.Timer(self.delay, self._submit)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            if self._timer is not None:
                self._timer.cancel()
            self._timer = timer
        timer.start()

    def _submit(self) -> None:
        with self._lock:
            self._timer = None
            if self._closed:
                return
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
            self._future = self._executor.submit(self._run)

    def _run(self) -> object:
        try:
            return self.work()
        except Exception:
            log.exception("ilastik_widget: %s failed", self.what)
            return None

    def wait(self, timeout: float | None = 60.0) -> object:
        """Block until the scheduled run is done; returns what it returned (None if nothing ran)."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.join(timeout)
        with self._lock:
            future = self._future
        return None if future is None else future.result(timeout)

    def close(self) -> None:
        """Cancel the run not yet started and stop the worker thread."""
        with self._lock:
            self._closed = True
            timer, executor = self._timer, self._executor
        if timer is not None:
            timer.cancel()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
