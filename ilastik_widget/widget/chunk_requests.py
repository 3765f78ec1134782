"""Answers the browser's ``chunks`` requests in worker threads, so the comm stays responsive while chunks are made.

Two lanes: image and label chunks are quick and must not wait behind prediction chunks being computed. A request the
browser cancelled before it started is skipped, one cancelled while it runs stops after its current chunk.
:meth:`ChunkRequests.stop` (the user's Stop) answers every request not yet finished with an error: its remaining
chunks are not computed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..serving.chunk_keys import BoxKey, ChunkKey, parse_key
from ..serving.chunk_server import ChunkServer, ReadStopped
from .protocol import CancelRequest, ChunksReply, ChunksRequest, ErrorReply, KernelMessage, describe_exception

log = logging.getLogger("ilastik_widget")

#: Ids of cancelled requests remembered (those of requests already served are forgotten first).
MAX_CANCELLED = 10_000
STOPPED = "Stopped by the user: these chunks were not computed."


def _is_prediction_chunk(key: str) -> bool:
    parsed = parse_key(key)
    return isinstance(parsed, (ChunkKey, BoxKey)) and parsed.array == "predictions"


class ChunkRequests:
    """Serves ``chunks`` requests on two thread pools.

    Parameters
    ----------
    server : ChunkServer
    send : callable
        ``send(message, buffers)`` sends the reply.
    predictions_asked, prediction_done : callable
        Told ``n`` when a request with n prediction chunks arrives, and as its chunks are done (for progress).
    name : str
        Prefix of the worker threads' names.
    """

    def __init__(
        self,
        server: ChunkServer,
        send: Callable[[KernelMessage, list], None],
        predictions_asked: Callable[[int], None],
        prediction_done: Callable[[int], None],
        name: str = "ilastik",
    ):
        self.server = server
        self._send = send
        self._asked = predictions_asked
        self._done = prediction_done
        self._name = name
        self._lock = threading.Lock()
        self._predictions: ThreadPoolExecutor | None = None
        self._data: ThreadPoolExecutor | None = None
        self._futures: set[Future] = set()
        self._cancelled: set[int] = set()
        self._stops = 0

    def _lanes(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._lock:
            if self._predictions is None or self._data is None:
                self._predictions = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{self._name}-p")
                self._data = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{self._name}-r")
            return self._predictions, self._data

    def submit(self, request: ChunksRequest) -> Future:
        """Serve ``request`` in a worker thread (prediction chunks in a lane of their own); returns its future."""
        n_predictions = sum(1 for key in request.keys if _is_prediction_chunk(key))
        predictions, data = self._lanes()
        if n_predictions:
            self._asked(n_predictions)
        future = (predictions if n_predictions else data).submit(self._serve, request, n_predictions, self._stops)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def cancel(self, request: CancelRequest) -> None:
        """The browser cancelled these requests: those not started are skipped, those running stop
        after their current chunk."""
        with self._lock:
            self._cancelled.update(request.ids)
            if len(self._cancelled) > MAX_CANCELLED:
                self._cancelled = set(sorted(self._cancelled)[-MAX_CANCELLED // 2 :])

    def stop(self) -> None:
        """Answer every request not finished yet with an error, computing none of its remaining chunks."""
        with self._lock:
            self._stops += 1

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._futures.discard(future)

    def futures(self) -> list[Future]:
        """The futures of the requests not yet answered."""
        with self._lock:
            return list(self._futures)

    def _serve(self, request: ChunksRequest, n_predictions: int, stops: int) -> None:
        done = 0

        def after_each(key: str) -> bool:
            nonlocal done
            if n_predictions and _is_prediction_chunk(key):
                done += 1
                self._done(1)
            with self._lock:  # a request the browser cancelled meanwhile computes no further chunk
                return self._stops == stops and request.id not in self._cancelled

        try:
            with self._lock:
                cancelled = request.id in self._cancelled
                self._cancelled.discard(request.id)
            if cancelled:
                return
            if self._stops != stops:
                self._send(ErrorReply(request.id, STOPPED), [])
                return
            try:
                data = self.server.read(list(request.keys), after_each)
                reply = ChunksReply(request.id, tuple(d is not None for d in data))
                buffers = [bytes(d) for d in data if d is not None]
            except ReadStopped:
                self._send(ErrorReply(request.id, STOPPED), [])
                return
            except Exception as exc:  # whatever fails, the browser gets an answer instead of waiting for ever
                log.exception("ilastik_widget: chunk request %s failed", request.id)
                self._send(ErrorReply(request.id, f"Could not read chunks: {describe_exception(exc)}"), [])
                return
            self._send(reply, buffers)
        except Exception:  # the comm is gone, or sending failed: nothing more can be told to the browser
            log.exception("ilastik_widget: could not answer chunk request %s", request.id)
        finally:
            if n_predictions > done:
                self._done(n_predictions - done)

    def close(self) -> None:
        """Stop the worker threads; requests not yet started are dropped."""
        with self._lock:
            lanes = [self._predictions, self._data]
        for executor in lanes:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
