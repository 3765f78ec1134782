"""Which labels and prediction chunks the browser holds, and the push that brings them up to date after a change.

The *working set* of an array is the chunks the browser read since the last push (:meth:`WorkingSet.note`, fed by
every read the store answered and by the browser's ``seen`` reports of chunks it took from a push). After a stroke or a
new model, :meth:`WorkingSet.take_push` computes those chunks, names the ones that are now empty, and starts a new
working set: pushed chunks join it again only when the browser reports it still shows them, so chunks of a view the
user has left drop out.

A volume's chunks are planes (see :mod:`~ilastik_widget.serving.pyramid`): scrolling through a volume reads a plane
per slice passed, and every one of them would be predicted again after the next stroke. A push of a volume therefore
holds the newest plane of each chunk layout and level only (what axis-aligned panels show) when the working set has
more chunks than the browser updates in place (:data:`MAX_HELD_PER_SHOWN`): the browser then reloads what it shows,
its reads answered from the push, instead of the kernel predicting planes the user has left.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .chunk_keys import BoxKey, ChunkKey, parse_key
from .chunk_store import ChunkStore
from .pyramid import Pyramid

log = logging.getLogger(__name__)

#: Chunks predicted together ahead of a push: enough for every worker thread, few enough to stop soon when the
#: predictions are superseded.
PREDICT_AHEAD_BATCH = 8
#: The most chunks remembered per array (the oldest are forgotten).
MAX_WORKING_CHUNKS = 4096
PUSHED_ARRAYS = ("labels", "predictions")
#: The browser updates its chunks of an array in place only while it holds at most this many per chunk in view, plus
#: the slack; else it reloads them (js/src/data/chunk_update.ts, the same numbers).
MAX_HELD_PER_SHOWN = 2
MAX_HELD_SLACK = 8


class ChunkPush(NamedTuple):
    """Chunks sent with a refresh: ``keys[i]`` holds ``data[i]``; the ``missing`` keys have no data (fill value 0)."""

    keys: list[str]
    data: list[bytes]
    missing: list[str]

    def then(self, other: ChunkPush) -> ChunkPush:
        """This push followed by ``other`` in one refresh."""
        return ChunkPush(self.keys + other.keys, self.data + other.data, self.missing + other.missing)


class WorkingSet:
    """The labels and prediction chunks the browser holds, per array, as chunk addresses (``"<level>/<index>"``)."""

    def __init__(self, store: ChunkStore):
        self.store = store
        self._chunks: dict[str, OrderedDict[str, ChunkKey | BoxKey]] = {a: OrderedDict() for a in PUSHED_ARRAYS}
        self._lock = threading.Lock()

    def note(self, keys: Iterable[str]) -> None:
        """Add the labels and prediction chunk keys among ``keys`` (others are ignored)."""
        with self._lock:
            for text in keys:
                key = parse_key(text)
                if not isinstance(key, (ChunkKey, BoxKey)) or key.array not in self._chunks:
                    continue
                chunks = self._chunks[key.array]
                chunks.pop(key.address, None)
                chunks[key.address] = key
                while len(chunks) > MAX_WORKING_CHUNKS:
                    chunks.popitem(last=False)

    def note_read(self, keys: list[str], data: list[bytes | None]) -> None:
        """Note what a read answered: found chunks, and chunks that are empty but on screen (a stroke there, or the
        first predictions, are pushed like any other)."""
        on_screen = []
        for text, found in zip(keys, data):
            key = parse_key(text)
            if found is not None or (isinstance(key, (ChunkKey, BoxKey)) and self.store.chunk_exists(key)):
                on_screen.append(text)
        self.note(on_screen)

    def pending(self, array: str) -> int:
        """Number of chunks of ``array`` in the working set."""
        with self._lock:
            return len(self._chunks[array])

    def take_push(
        self,
        array: str,
        max_bytes: int = 16 * 2**20,
        cancelled: Callable[[], bool] = lambda: False,
        after_each: Callable[[str], object] | None = None,
    ) -> ChunkPush:
        """The current chunks of ``array`` in its working set, finest level first and newest first within a level,
        up to ``max_bytes``, and the working-set keys that are now missing; the working set starts anew.

        Predictions are computed here (the slow part), nothing when the session is not trained. ``cancelled()`` is
        checked between chunks: then nothing is returned and the working set is kept for the next push.
        ``after_each(key)`` is called after each chunk is computed (for progress).
        """
        nothing = ChunkPush([], [], [])
        with self._lock:
            wanted = list(reversed(self._chunks[array].values()))
            self._chunks[array] = OrderedDict()
        if array == "predictions":
            if not self.store.session.is_trained:
                return nothing
            layout = self.store.layout
            wanted = [dataclasses.replace(k, layout=layout) for k in wanted]
        wanted = self._newest_planes(array, wanted)
        # coarse chunks are assembled from the finer ones (a stable sort keeps the newest first within a level)
        wanted.sort(key=lambda k: k.level)
        if array == "predictions":
            self._predict_ahead(wanted, max_bytes, cancelled)
        push = ChunkPush([], [], [])
        total = 0
        for key in wanted:
            if cancelled():
                self.note(str(k) for k in reversed(wanted))  # still on screen: the next push wants them
                return nothing
            try:
                chunk = self.store.read_one(str(key))
            except Exception:
                log.exception("working_set: failed to compute %s for a push", key)
                continue
            finally:
                if after_each is not None:
                    after_each(str(key))
            if chunk is None:
                push.missing.append(str(key))
                continue
            if total + len(chunk) > max_bytes:
                break
            push.keys.append(str(key))
            push.data.append(chunk)
            total += len(chunk)
        return push

    def _newest_planes(self, array: str, wanted: list[ChunkKey | BoxKey]) -> list[ChunkKey | BoxKey]:
        """``wanted`` (newest first), or only its chunks in the newest plane of each chunk layout and level when it
        holds more than the browser would update in place with those in view (see the module docstring)."""
        if self.store.format != "precomputed":
            return wanted
        pyramid = self.store.pyramid(array)
        newest: dict[tuple[int, int], int] = {}
        shown = []
        for key in wanted:
            plane = _plane(pyramid, key)
            if plane is not None and newest.setdefault(plane[0], plane[1]) == plane[1]:
                shown.append(key)
        if len(wanted) <= MAX_HELD_PER_SHOWN * len(shown) + MAX_HELD_SLACK:
            return wanted
        return shown

    def _predict_ahead(self, wanted: list[ChunkKey | BoxKey], max_bytes: int, cancelled: Callable[[], bool]) -> None:
        """Predict the full-resolution chunks of a push that fit in its budget in parallel, a batch at a time, so that
        take_push reads them from the session's cache: one chunk after another, each predicted with the forest's
        threads splitting its rows, is slower. What fails here is predicted and reported by take_push itself."""
        pyramid = self.store.predictions()
        regions = []
        for key in wanted[: max(1, max_bytes // max(1, pyramid.chunk_nbytes))]:
            if key.level != 0:
                break  # finest level first: the coarse chunks are assembled from these
            region = self.store.chunk_region(pyramid, key)
            if region is not None:
                regions.append(self.store.prediction_region(region))
        for i in range(0, len(regions), PREDICT_AHEAD_BATCH):
            if cancelled():
                return
            try:
                self.store.session.precompute(regions[i : i + PREDICT_AHEAD_BATCH])
            except Exception:
                log.debug("working_set: predicting ahead failed", exc_info=True)
                return


def _plane(pyramid: Pyramid, key: ChunkKey | BoxKey) -> tuple[tuple[int, int], int] | None:
    """((level, flat axis), plane index) of a plane-shaped chunk of ``pyramid``; None for any other key."""
    if not isinstance(key, BoxKey) or not 0 <= key.level < pyramid.n_levels or len(key.box) != pyramid.ndim:
        return None
    shape = pyramid.level_shape(key.level)
    for axis, chunk in enumerate(pyramid.flat_chunks()):
        if all(a % c == 0 and b == min(a + c, n) and a < n for (a, b), c, n in zip(key.box, chunk, shape)):
            return (key.level, axis), key.box[axis][0]
    return None
