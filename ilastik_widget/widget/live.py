"""The live update cycle of a widget: after every change, train in the background, push the new labels and
predictions to the browser, and say in the status line what is happening.

After a stroke with live update on, the labels refresh is held for :data:`LABELS_WAIT_FOR_PREDICTIONS` seconds so
that it travels with the retrained predictions in one ``refresh`` (the browser has drawn the stroke meanwhile); when
the training takes longer the labels go on their own. A new model (from this cycle or from ``session.train()`` in a
cell) makes one refresh with every prediction chunk the browser holds (see
:mod:`~ilastik_widget.serving.working_set`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from ..serving.chunk_server import ChunkPush, ChunkServer
from ..serving.layer_specs import PREDICTION_LAYERS
from .progress import PredictionProgress
from .protocol import KernelMessage, Refresh, describe_exception

log = logging.getLogger("ilastik_widget")

#: Chunks sent along with one refresh message (kernel->browser messages of 8 MB take ~0.13 s on loopback).
PUSH_BYTES = 16 * 2**20
#: Seconds the labels of a stroke wait for the retrained predictions, to reach the browser in one refresh.
LABELS_WAIT_FOR_PREDICTIONS = 0.4
PAINT_HINT = "Paint at least one stroke in each of two classes to see predictions."
LIVE_OFF_HINT = "Live update is off: press “Update now” to train on the new labels."
STOPPED = "Stopped. Paint, or press “Update now”, to train and predict again."


class StatusLine(Protocol):
    """Where the updater says what happens (the widget's ``status``, ``busy`` and ``error`` traits)."""

    def show(self, text: str, busy: bool | None = None) -> None:
        """Show ``text``; ``busy`` says whether the kernel is busy (None: unchanged)."""

    def error(self, text: str) -> None:
        """Show an error; it stays until :meth:`clear_error`."""

    def clear_error(self) -> None:
        """Remove the error shown, unless it still holds."""

    def progress(self, values: dict) -> None:
        """Show the progress of the work under way (``{"task", "done", "total", "seconds_left"}``;
        ``{}`` for none)."""


class LiveUpdater:
    """Train -> push -> status for one widget.

    Parameters
    ----------
    session : Session
    server : ChunkServer
        Computes the chunks pushed to the browser.
    send : callable
        ``send(message, buffers)`` sends a kernel message to the browser.
    status : StatusLine
    """

    def __init__(
        self, session: Any, server: ChunkServer, send: Callable[[KernelMessage, list], None], status: StatusLine
    ):
        self.session = session
        self.server = server
        self._send = send
        self.status = status
        #: Whether a change of the labels, classes or features trains at once (the widget's ``live`` trait).
        self.live = True
        self._lock = threading.RLock()
        self._training: Future | None = None
        self._trained_version: Any = None
        self._pushes: set[Future] = set()
        self.progress = PredictionProgress()  # prediction chunks asked for and done (pushes and browser requests)
        self._stops = 0  # bumped by stop(): pushes started before it give up
        self._stopped = False  # the status says so until the next training
        self._published = int(session.generation)
        self._held_labels: threading.Timer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.closed = False
        if session.is_trained:
            self._trained_version = self._labels_version()

    # ------------------------------------------------------------------ events of the session
    def labels_changed(self) -> None:
        """The labels changed: with live update on, train and hold the labels refresh for
        the new predictions; else push the labels now."""
        if self.live and self.train() is not None:
            self._hold_labels()
        else:
            self._send_labels_refresh()

    def classes_or_features_changed(self) -> None:
        """The classes or features changed: train again when live update is on."""
        if self.live:
            self.train()

    def trained(self) -> None:
        """A model was installed (by this updater's training or by a call in a cell): publish its predictions."""
        self._stopped = False
        self.publish_predictions()
        if not self.training:
            self.update_status()

    # ------------------------------------------------------------------ training
    @property
    def training(self) -> bool:
        """True while a training started here is pending or running."""
        with self._lock:
            return self._training is not None and not self._training.done()

    def _labels_version(self) -> tuple[int, int]:
        return (int(self.session.annotations.version), int(self.session.generation))

    @property
    def needs_training(self) -> bool:
        """True when the session's model was not trained on the current labels and features."""
        return bool(self.session.needs_training)

    def labelled_classes(self) -> tuple[int, int]:
        """(number of labelled pixels, number of distinct classes labelled)."""
        counts = np.asarray(self.session.annotations.count_per_class())
        return int(counts.sum()), int(np.count_nonzero(counts))

    def train(self, force: bool = False) -> Future | None:
        """Start a background training on the current labels (when live update is on, or ``force``); None when
        there is nothing to train on (the status line says why)."""
        if self.closed:
            return None
        if not (self.live or force):
            self.status.show(LIVE_OFF_HINT)
            return None
        n_pixels, n_classes = self.labelled_classes()
        if n_classes < 2:
            self.status.show(PAINT_HINT, busy=False)
            return None
        if self.session.feature_selection.is_empty:
            self.status.show("No features are selected: pick at least one in the feature matrix.", busy=False)
            return None
        self._stopped = False
        self.status.show(f"Training on {n_pixels:,} labelled pixels…", busy=True)
        with self._lock:  # the newest training is the one tracked, whichever thread asked first
            try:
                future = self.session.train_async()
            except Exception as exc:
                self.status.error(f"Training failed: {describe_exception(exc)}")
                return None
            self._training = future
            version = self._labels_version()
        future.add_done_callback(lambda f: self._training_done(f, version))
        return future

    def _training_done(self, future: Future, version: Any) -> None:
        with self._lock:
            if future is not self._training or self.closed:
                return  # superseded by a newer training
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            if type(exc).__name__ in ("CancelledError", "TrainingCancelled"):
                return
            self.status.error(f"Training failed: {describe_exception(exc)}")
            self.status.show(self.idle_text(), busy=False)
            return
        if future.result() is False:
            # our newest training was cancelled (session.cancel_training(), or a training started elsewhere)
            self.status.show("Training was cancelled." if not self.session.is_trained else "Ready", busy=False)
            return
        self._trained_version = version
        self.publish_predictions()
        self.status.clear_error()
        self.update_status()

    # ------------------------------------------------------------------ pushes
    def _executor_(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ilastik-push")
            return self._executor

    def publish_predictions(self) -> None:
        """New predictions: compute the prediction chunks the browser shows (in a worker thread) and send them with
        one refresh, so the view changes without a request round trip."""
        generation = int(self.session.generation)
        with self._lock:
            if generation == self._published or self.closed:
                return
            self._published = generation
            n = self.server.pending_push("predictions")
            self.progress.add(n)
            future = self._executor_().submit(self._push_predictions, generation, n, self._stops)
            self._pushes.add(future)
        future.add_done_callback(self._push_done)

    def _push_done(self, future: Future) -> None:
        with self._lock:
            self._pushes.discard(future)

    def _push_predictions(self, generation: int, n: int, stops: int) -> None:
        done = 0

        def superseded() -> bool:
            return self.closed or int(self.session.generation) != generation or self._stops != stops

        def after_each(_key: str) -> bool:
            nonlocal done
            if done < n:
                done += 1
                self.progress.finish()
                self.update_status()
            return True

        try:
            push = self.server.take_push("predictions", PUSH_BYTES, cancelled=superseded, after_each=after_each)
            if superseded():
                return  # the newer predictions send their own refresh (or the user stopped the work)
            layers = list(PREDICTION_LAYERS)
            if self._take_held_labels():
                push = self.server.take_push("labels", PUSH_BYTES).then(push)
                layers.insert(0, "labels")
            self._send_refresh(layers, push)
        finally:
            self.progress.finish(n - done)
            self.update_status(force=True)
        # A small image: compute the rest of its prediction chunks now, so panning finds them ready.
        self.server.warm_predictions()

    def _send_refresh(self, layers: list[str], push: ChunkPush) -> None:
        self._send(Refresh(tuple(layers), tuple(push.keys), tuple(push.missing)), push.data)

    def _hold_labels(self) -> None:
        """Send the labels refresh with the next predictions, or on its own after LABELS_WAIT_FOR_PREDICTIONS."""
        timer = threading.Timer(LABELS_WAIT_FOR_PREDICTIONS, self._send_held_labels)
        timer.daemon = True
        with self._lock:
            if self._held_labels is not None:
                self._held_labels.cancel()
            self._held_labels = timer
        timer.start()

    def _take_held_labels(self) -> bool:
        """True if a labels refresh was waiting (it is now the caller's to send)."""
        with self._lock:
            timer, self._held_labels = self._held_labels, None
        if timer is not None:
            timer.cancel()
        return timer is not None

    def _send_held_labels(self) -> None:
        if self._take_held_labels():
            self._send_refresh(["labels"], self.server.take_push("labels", PUSH_BYTES))

    def _send_labels_refresh(self) -> None:
        self._take_held_labels()  # this refresh has the newest labels: a held one has nothing more to send
        self._send_refresh(["labels"], self.server.take_push("labels", PUSH_BYTES))

    # ------------------------------------------------------------------ status
    def predictions_asked(self, n: int) -> None:
        """The browser asked for ``n`` prediction chunks."""
        self.progress.add(n)
        self.update_status(force=True)

    def prediction_done(self, n: int = 1) -> None:
        """``n`` prediction chunks are answered (or abandoned)."""
        self.progress.finish(n)
        self.update_status()

    def idle_text(self) -> str:
        """The status line when no work is under way: stopped, ready, or the hint to paint."""
        if self._stopped:
            return STOPPED
        return "Ready" if self.session.is_trained else PAINT_HINT

    def update_status(self, force: bool = False) -> None:
        """Say what the kernel does: training, predicting (done of total chunks, time left) or ready. While chunks
        are predicted the line changes at most twice a second: every change is a message to the browser."""
        if self.training:
            return
        now = self.progress.snapshot()
        if now.pending > 0:
            if force or self.progress.due():
                self.status.progress(now.to_json())
                self.status.show(now.text(), busy=True)
        else:
            self.status.progress({})
            self.status.show(self.idle_text(), busy=False)

    def stop(self) -> None:
        """Stop the work under way: the training (its model is not installed) and the pushes of predictions; the
        browser's chunk requests are stopped by the widget's request lanes."""
        self._stops += 1
        self.session.cancel_training()
        self.progress.reset()
        self.status.progress({})
        self._stopped = True
        self.status.show(STOPPED, busy=False)

    # ------------------------------------------------------------------ life cycle
    def futures(self) -> list[Future]:
        """The futures of the pushes and of the training under way."""
        with self._lock:
            return [*self._pushes, *([self._training] if self._training is not None else [])]

    def wait(self, timeout: float | None = 60.0, others: Callable[[], list[Future]] = list) -> None:
        """Block until the training, the pushes and ``others()`` are done (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = [f for f in [*self.futures(), *others()] if not f.done()]
            if not pending:
                time.sleep(0.01)  # the done-callback of a training may still be starting a push
                if not [f for f in [*self.futures(), *others()] if not f.done()]:
                    return
                continue
            for f in pending:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    f.result(timeout=remaining)
                except Exception:
                    pass
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the widget is still busy")

    def close(self) -> None:
        """Stop for good: drop the held labels refresh, cancel the training, stop the worker thread."""
        self.closed = True
        self._take_held_labels()
        with self._lock:
            training, executor = self._training, self._executor
        if training is not None and not training.done():
            self.session.cancel_training()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
