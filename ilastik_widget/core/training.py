"""Background training: one worker thread, the newest request wins.

A training runs ``run(job)`` on the worker thread. Starting another training marks the running one's job cancelled
(it stops at its next check and installs nothing); :meth:`BackgroundTrainer.cancel` does the same without starting a
new one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class TrainingCancelled(Exception):
    """Raised inside a background training that was cancelled or superseded (never escapes a future)."""


class TrainingJob:
    """Handle of one background training; ``cancelled`` is set by a newer training or by a cancel."""

    def __init__(self) -> None:
        self.cancelled = False

    def check(self) -> None:
        """Raise :class:`TrainingCancelled` if this training was cancelled."""
        if self.cancelled:
            raise TrainingCancelled()


class BackgroundTrainer:
    """Runs trainings one at a time on a worker thread; a new one cancels the previous."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: TrainingJob | None = None
        self._pool: ThreadPoolExecutor | None = None

    def start(self, run: Callable[[TrainingJob], bool], on_error: Callable[[Exception], None]) -> Future:
        """Run ``run(job)`` in the background; the future's result is ``run``'s, or False when it was cancelled.

        ``on_error(exc)`` is called for a failure of a training that was not cancelled (the future still raises it).
        """
        with self._lock:
            if self._job is not None:
                self._job.cancelled = True
            job = self._job = TrainingJob()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="ilastik-train")
            pool = self._pool

        def body() -> bool:
            try:
                return run(job)
            except TrainingCancelled:
                return False
            except Exception as exc:
                if not job.cancelled:
                    on_error(exc)
                raise

        return pool.submit(body)

    def cancel(self) -> None:
        """Cancel the pending or running training (its model is not installed)."""
        with self._lock:
            if self._job is not None:
                self._job.cancelled = True
                self._job = None

    def close(self) -> None:
        """Cancel the training and stop the worker thread."""
        self.cancel()
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
