"""Progress of the prediction work the kernel does for the browser: chunks asked for and done, and the time left.

One busy period runs from the first chunk asked for to the moment none is left; within it, ``done`` of ``total``
chunks are finished and the time left is estimated from the pace so far.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

#: The status line changes at most this often while chunks are predicted (each change is a message to the browser).
UPDATE_SECONDS = 0.5


@dataclass(frozen=True)
class Snapshot:
    """Progress at one moment: ``done`` of ``total`` chunks, ``seconds_left`` estimated (None until known)."""

    done: int
    total: int
    seconds_left: float | None

    @property
    def pending(self) -> int:
        """Chunks asked for and not yet done."""
        return self.total - self.done

    def to_json(self) -> dict:
        """The ``progress`` trait: empty when nothing is pending."""
        if self.pending <= 0:
            return {}
        left = None if self.seconds_left is None else round(self.seconds_left, 1)
        return {"task": "predicting", "done": self.done, "total": self.total, "seconds_left": left}

    def text(self) -> str:
        """The status line: "Predicting 3 of 12 chunks… about 4 s left"."""
        if self.pending <= 0:
            return ""
        text = f"Predicting {self.done} of {self.total} chunk{'s' if self.total != 1 else ''}…"
        if self.seconds_left is not None and self.seconds_left >= 1:
            text += f" about {_duration(self.seconds_left)} left"
        return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{round(seconds)} s"
    return f"{round(seconds / 60)} min"


class PredictionProgress:
    """Counts prediction chunks in one busy period (thread-safe)."""

    def __init__(self, clock: object = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._total = self._done = 0
        self._started = 0.0
        self._shown = -1.0

    def add(self, n: int) -> None:
        """``n`` more chunks are asked for."""
        with self._lock:
            if self._total == self._done:
                self._total = self._done = 0
                self._started = self._clock()  # type: ignore[operator]
            self._total += n

    def finish(self, n: int = 1) -> None:
        """``n`` chunks are done (computed, stopped or failed: they are no longer pending)."""
        with self._lock:
            self._done = min(self._total, self._done + n)

    def reset(self) -> None:
        """Nothing is pending any more (the work was stopped)."""
        with self._lock:
            self._total = self._done = 0

    def snapshot(self) -> Snapshot:
        """The progress now, with the time left estimated from the pace so far."""
        with self._lock:
            done, total = self._done, self._total
            elapsed = self._clock() - self._started  # type: ignore[operator]
        left = elapsed / done * (total - done) if done > 0 else None
        return Snapshot(done, total, left)

    def due(self) -> bool:
        """Whether the status line may change now (at most every :data:`UPDATE_SECONDS`)."""
        now = self._clock()  # type: ignore[operator]
        with self._lock:
            if now - self._shown < UPDATE_SECONDS:
                return False
            self._shown = now
            return True
