"""The serving layer's one object: what the widget asks of it to feed the viewer.

:class:`ChunkServer` joins the chunk store (the zarr key space of the raw image, labels and predictions), the working
set (which chunks the browser holds, pushed after every change), the Neuroglancer layer specs and the raw layer
loaded by the browser from the image's own URL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .chunk_store import ChunkStore, ReadStopped
from .layer_specs import layer_specs, source_urls
from .objects_layer import ObjectsArray
from .pyramid import Pyramid
from .remote_raw import browser_raw_source, check_raw_from, raw_layer_spec
from .working_set import ChunkPush, WorkingSet

__all__ = ["ChunkPush", "ChunkServer", "ReadStopped"]


class ChunkServer:
    """Feeds one widget's viewer: zarr keys -> bytes, pushes after changes, layer specs.

    Parameters
    ----------
    session : Session
        The session whose image, labels and predictions are served.
    widget_id : str
        The widget's id: its ``mem://<widget_id>/`` URLs name these arrays.
    raw_from : {"auto", "kernel", "browser"}
        Where the browser reads the raw image of a source with an http(s) URL (see
        :func:`~ilastik_widget.serving.remote_raw.raw_layer_spec`).
    **store_options
        Passed to :class:`~ilastik_widget.serving.chunk_store.ChunkStore` (``chunk_shape``, ``max_predict_pixels``...).
    """

    def __init__(self, session: Any, widget_id: str, *, raw_from: str = "auto", **store_options: Any):
        self.session = session
        self.widget_id = str(widget_id)
        self.store = ChunkStore(session, **store_options)
        self.working_set = WorkingSet(self.store)
        self._raw_from = check_raw_from(raw_from)

    @property
    def raw_from(self) -> str:
        """Where the browser reads the raw image of a source with an http(s) URL: ``"auto"`` from the URL, with the
        kernel-served layer as the spec's ``"fallback"``; ``"browser"`` from the URL only; ``"kernel"`` always over the
        widget's comm."""
        return self._raw_from

    @raw_from.setter
    def raw_from(self, value: str) -> None:
        self._raw_from = check_raw_from(value)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """The chunk shape of the served arrays (see :class:`~ilastik_widget.serving.chunk_store.ChunkStore`)."""
        return self.store.chunk_shape

    @property
    def raw(self) -> Pyramid:
        """The raw image's pyramid: its levels and chunk grid."""
        return self.store.raw

    @property
    def labels(self) -> Pyramid:
        """The labels' pyramid: its levels and chunk grid."""
        return self.store.labels

    @property
    def objects(self) -> ObjectsArray:
        """The label image of the last objects, served as the ``objects`` layer (``objects.show(labels, offset)``)."""
        return self.store.objects

    # ------------------------------------------------------------------ reads and pushes
    def read(self, keys: Iterable[str], after_each: Callable[[str], bool] | None = None) -> list[bytes | None]:
        """Bytes of each key (None where missing); what was found joins the working set. See
        :meth:`~ilastik_widget.serving.chunk_store.ChunkStore.read` for ``after_each``."""
        keys = list(keys)
        data = self.store.read(keys, after_each)
        self.working_set.note_read(keys, data)
        return data

    def note_keys(self, keys: Iterable[str]) -> None:
        """The browser still shows these chunks (it took them from a push)."""
        self.working_set.note(keys)

    def pending_push(self, array: str) -> int:
        """Number of chunks of ``array`` in the working set, which the next push brings up to date."""
        return self.working_set.pending(array)

    def take_push(
        self,
        array: str,
        max_bytes: int = 16 * 2**20,
        cancelled: Callable[[], bool] = lambda: False,
        after_each: Callable[[str], object] | None = None,
    ) -> ChunkPush:
        """See :meth:`~ilastik_widget.serving.working_set.WorkingSet.take_push`."""
        return self.working_set.take_push(array, max_bytes, cancelled, after_each)

    def prediction_keys(self, max_pixels: int | None = None) -> list[str]:
        """Every prediction chunk's key, finest level first; empty for an image of more
        than ``max_pixels`` pixels (see :meth:`~ilastik_widget.serving.chunk_store.ChunkStore.prediction_keys`)."""
        return [str(k) for k in self.store.prediction_keys(max_pixels)]

    def warm_predictions(self, max_pixels: int | None = None) -> int:
        """Compute and cache every prediction chunk of a small image (see
        :meth:`~ilastik_widget.serving.chunk_store.ChunkStore.prediction_keys`) so that panning finds them ready;
        returns the number of chunks now cached. Stops when the predictions change meanwhile."""
        n = 0
        generation = int(self.session.generation)
        for key in self.prediction_keys(max_pixels):
            if int(self.session.generation) != generation:
                break  # newer predictions: this pass is for nothing
            n += self.store.read([key])[0] is not None
        return n

    # ------------------------------------------------------------------ what the viewer is told up front
    def sources(self) -> dict[str, str]:
        """Neuroglancer source URL per layer name."""
        return source_urls(self.widget_id, self.store)

    def metadata(self) -> dict[str, str | None]:
        """Every metadata key the viewer reads before the first chunk, with its text (None where missing)."""
        return self.store.metadata()

    def layer_specs(self) -> list[dict]:
        """Neuroglancer layer JSON of every layer, the raw layer as :attr:`raw_from` asks."""
        return layer_specs(self.widget_id, self.store, lambda spec: raw_layer_spec(self.store, spec, self.raw_from))

    def browser_raw_source(self) -> dict:
        """See :func:`~ilastik_widget.serving.remote_raw.browser_raw_source`."""
        return browser_raw_source(self.store)

    def display_scales(self) -> Sequence[float]:
        """Relative voxel size per spatial axis (smallest = 1) from the source's scale; all ones when unknown."""
        return self.store.display_scales()

    def raw_range(self) -> tuple[float, float]:
        """The automatic display range (low, high) of the first channel of the raw image shown."""
        return self.store.raw_reader.display_range()

    def invalidate(self, arrays: Iterable[str] = ("labels", "predictions")) -> None:
        """Drop the cached chunks of ``arrays``."""
        self.store.invalidate(arrays)
