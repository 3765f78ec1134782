"""The zarr key space of one widget: answers the viewer's reads of the raw image, the labels and the predictions.

Keys are parsed by :mod:`~ilastik_widget.serving.chunk_keys` (the layout of the three arrays is described there).
Every array is a multiscale pyramid (:class:`~ilastik_widget.serving.pyramid.Pyramid`): an OME-Zarr group of a 2D
image, a Neuroglancer precomputed volume with plane-shaped chunks of a 3D one (:attr:`ChunkStore.format`).

``raw``
    coarser levels are strided subsamples read per chunk when asked for (:class:`RawReader`), so a zoomed-out view of
    a huge image reads only the pixels it shows.
``labels``
    ``uint8`` labels (0 = unlabelled) rendered per chunk from the sparse annotations; coarse levels show any labelled
    pixel of a cell, so thin strokes stay visible zoomed out. A chunk with no label is missing (its fill value, 0).
``predictions/<layout>``
    ``uint8`` probabilities scaled to 0..255, classes as a trailing channel axis; the probabilities, segmentation and
    uncertainty layers compute what they show from it in their shaders, so they share one chunk cache. Chunks are
    predicted on demand (``session.predict``), or assembled from the finer level's cached chunks (the same numbers).
    The pyramid stops at the coarsest level whose chunks cover at most ``max_predict_pixels`` full-resolution pixels:
    zoomed out further the viewer shows that level and asks only for the chunks in view, so predictions fill in chunk
    by chunk instead of one chunk costing the whole image.
``objects/<version>``
    the label image of the widget's last objects, when there is one (:class:`ObjectsArray`).

:meth:`ChunkStore.read` never raises: a malformed, unknown or out-of-range key gives None and a log line.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..core.cache import ByteLRU
from .chunk_keys import BoxKey, ChunkKey, MetadataKey, array_path, parse_key
from .objects_layer import ObjectsArray
from .pyramid import Pyramid, pad_to, pyramid_factors
from .raw_reader import RawReader

log = logging.getLogger(__name__)


class ReadStopped(Exception):
    """A read was stopped before its last key (see :meth:`ChunkStore.read`)."""


class ChunkStore:
    """Bytes of every zarr key of one widget's raw, labels and predictions arrays.

    Parameters
    ----------
    session : Session
        The session whose image, annotations and predictions are served.
    chunk_shape : sequence of int, optional
        Chunk shape of every array in 2D (default 256 x 256); in 3D the in-plane size of the plane-shaped chunks
        (default 256 along every axis).
    max_predict_pixels : int
        The most full-resolution pixels one prediction chunk may cover (see the module docstring).
    max_dense_label_pixels : int
        The largest coarse labels level made as one dense image.
    coarsest_size : int, optional
        The pyramid stops when a level's largest side is at most this (default 1024 in 2D, the chunk size in 3D).
    cache_bytes : int
        Bound of the cache of encoded chunks.
    plane_chunks : bool
        Serve a volume in the precomputed format with plane-shaped chunks (else as zarr with cubic chunks).
    """

    def __init__(
        self,
        session: Any,
        *,
        chunk_shape: Sequence[int] | None = None,
        max_predict_pixels: int = 1024 * 1024,
        max_dense_label_pixels: int = 4096 * 4096,
        coarsest_size: int | None = None,
        cache_bytes: int = 256 * 2**20,
        plane_chunks: bool = False,
    ):
        self.session = session
        shape = tuple(int(s) for s in session.spatial_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"the viewer shows 2D or 3D images, not spatial shape {shape}")
        self.ndim = len(shape)
        self.spatial_shape = shape
        #: "zarr" (zarr v2 / OME-Zarr groups), or "precomputed" (plane-shaped chunks) for volumes.
        self.format = "precomputed" if plane_chunks and self.ndim == 3 else "zarr"
        default = (64,) * 3 if self.ndim == 3 and self.format == "zarr" else (256,) * self.ndim
        chunk = tuple(int(c) for c in (chunk_shape or default))
        if len(chunk) != self.ndim or any(c < 1 for c in chunk):
            raise ValueError(f"chunk_shape must be {self.ndim} positive sizes, not {chunk_shape!r}")
        self.chunk_shape = chunk
        self.max_predict_pixels = int(max_predict_pixels)
        self.max_dense_label_pixels = int(max_dense_label_pixels)
        self.raw_reader = RawReader(session)
        # Neuroglancer draws every level from the coarsest up to the one a view needs, each under the next: a level
        # that fits in about one panel (1024 px) is as coarse as a view needs, and coarser ones only cost drawing
        # (software WebGL: a 1024x1024 view drew in half the time without its two extra levels).
        # Cubic chunks of a volume are read whole for every plane they cross, so there each level still halves
        # what a zoomed-out plane reads.
        if coarsest_size is None:
            coarsest_size = min(chunk) if self.ndim == 3 and self.format == "zarr" else 1024
        factors = pyramid_factors(shape, chunk, min_size=int(coarsest_size))
        self.raw = Pyramid(shape, chunk, factors, self.raw_reader.dtype, self.raw_reader.channels)
        self.labels = Pyramid(shape, chunk, factors, np.dtype(np.uint8), None)
        self._cache: ByteLRU[bytes] = ByteLRU(cache_bytes)
        self._coarse_labels: dict[tuple[int, int], np.ndarray] = {}
        self._lock = threading.Lock()
        self._layout = 0
        self._layout_classes = self.n_classes
        #: The label image of the last objects (see :class:`~ilastik_widget.serving.objects_layer.ObjectsArray`).
        self.objects = ObjectsArray(self)

    # ------------------------------------------------------------------ the arrays
    @property
    def n_classes(self) -> int:
        """Number of classes (at least 1): the channels of the predictions array."""
        return max(1, len(self.session.classes))

    @property
    def layout(self) -> int:
        """Number of the predictions array's layout: it changes when the number of classes (its channels) does."""
        with self._lock:
            n = self.n_classes
            if n != self._layout_classes:
                self._layout += 1
                self._layout_classes = n
            return self._layout

    def predictions(self) -> Pyramid:
        """The predictions pyramid: the raw levels whose chunks need at most ``max_predict_pixels`` full-resolution
        pixels predicted (a plane-shaped chunk of a volume is predicted on its sample plane only)."""
        chunks = [self.chunk_shape] if self.format == "zarr" else self.raw.flat_chunks()

        def cost(factors: tuple[int, ...]) -> int:
            return max(math.prod(c * f for c, f in zip(chunk, factors) if c > 1) for chunk in chunks)

        affordable = tuple(f for f in self.raw.factors if cost(f) <= self.max_predict_pixels)
        return Pyramid(
            self.spatial_shape, self.chunk_shape, affordable or self.raw.factors[:1], np.dtype(np.uint8), self.n_classes
        )

    def pyramids(self) -> dict[str, Pyramid]:
        """The arrays by their path below the widget's root (``raw``, ``labels``, ``predictions/<layout>``, and
        ``objects/<version>`` when there are objects)."""
        out = {"raw": self.raw, "labels": self.labels, array_path("predictions", self.layout): self.predictions()}
        if self.objects.present:
            out[array_path("objects", self.objects.version)] = self.objects.pyramid()
        return out

    def pyramid(self, array: str) -> Pyramid:
        """The pyramid of ``array``: ``"raw"``, ``"labels"``, ``"objects"``, else the predictions."""
        if array == "objects":
            return self.objects.pyramid()
        return self.raw if array == "raw" else self.labels if array == "labels" else self.predictions()

    def metadata(self) -> dict[str, str | None]:
        """Every metadata key the viewer reads before the first chunk, with its text (None where it is missing): the
        widget sends these with the layer specs, so the viewer needs no round trip before asking for chunks."""
        out: dict[str, str | None] = {}
        for path, pyramid in self.pyramids().items():
            if self.format == "precomputed":
                out[f"{path}/info"] = json.dumps(self._precomputed_info(path.split("/")[0], pyramid))
                continue
            keys = [f"{path}/.zarray", f"{path}/.zattrs"]
            keys += [f"{path}/{level}/{name}" for level in range(pyramid.n_levels) for name in (".zarray", ".zattrs")]
            for key in keys:
                data = self.read_one(key)
                out[key] = None if data is None else data.decode()
        return out

    # ------------------------------------------------------------------ reading
    def read(self, keys: Iterable[str], after_each: Callable[[str], bool] | None = None) -> list[bytes | None]:
        """Bytes of each key, None where the key is missing, malformed or out of range. Finest levels are read first:
        coarse prediction chunks are then assembled from the finer ones.

        ``after_each(key)`` is called after each key; when it returns False the remaining keys are not read and
        :class:`ReadStopped` is raised.
        """
        keys = list(keys)
        out: list[bytes | None] = [None] * len(keys)
        parsed = [parse_key(k) for k in keys]

        def order(i: int) -> int:
            key = parsed[i]
            return key.level if isinstance(key, (ChunkKey, BoxKey)) and key.array == "predictions" else -1

        for i in sorted(range(len(keys)), key=order):
            try:
                out[i] = self._read(parsed[i], keys[i])
            except Exception:  # never let one bad key (or a failing prediction) break the batch
                log.exception("chunk_store: failed to read key %r", keys[i])
            if after_each is not None and not after_each(keys[i]):
                raise ReadStopped(f"stopped after {keys[i]!r}")
        return out

    def read_one(self, key: str) -> bytes | None:
        """Bytes of one key (raises what computing it raises; :meth:`read` never does)."""
        return self._read(parse_key(key), key)

    def _read(self, key: ChunkKey | BoxKey | MetadataKey | None, text: str) -> bytes | None:
        if (
            key is None
            or isinstance(key, BoxKey) != (self.format == "precomputed")
            and not isinstance(key, MetadataKey)
        ):
            log.warning("chunk_store: malformed key %r", text)
            return None
        if key.array == "objects" and not self.objects.present:
            return None
        if key.layout is not None and key.layout != (self.objects.version if key.array == "objects" else self.layout):
            log.debug("chunk_store: key of an earlier predictions layout or objects version %r", text)
            return None
        if isinstance(key, MetadataKey):
            return self._metadata(key)
        pyramid = self.pyramid(key.array)
        region = self.chunk_region(pyramid, key)
        if region is None:
            log.warning("chunk_store: chunk out of range %r", text)
            return None
        if key.array == "raw":
            return self._cache.get_or_compute(("raw", key.level, _where(key)), lambda: self._raw_chunk(region))
        if key.array == "labels":
            return self._labels_chunk(key, region)
        if key.array == "objects":
            block = self.objects.block(region)
            return None if block is None else self.encode(block, pyramid)
        return self._prediction_chunk(pyramid, key, region)

    def chunk_region(self, pyramid: Pyramid, key: ChunkKey | BoxKey) -> tuple[slice, ...] | None:
        """The full-resolution region (with the level's steps) a chunk key covers; None if it is not a chunk."""
        if isinstance(key, BoxKey):
            return pyramid.box_region(key.level, key.box)
        return pyramid.chunk_region(key.level, key.index)

    def encode(self, block: np.ndarray, pyramid: Pyramid) -> bytes:
        """A chunk's bytes: zarr pads edge chunks to the chunk shape (C order, channels last); precomputed's raw
        encoding is the chunk as it is, channels first and x fastest."""
        if self.format == "zarr":
            return pad_to(block, pyramid.chunk_shape).tobytes()
        if pyramid.channels is not None:
            block = np.moveaxis(block, -1, 0)
        return np.ascontiguousarray(block).tobytes()

    def _metadata(self, key: MetadataKey) -> bytes | None:
        pyramid = self.pyramid(key.array)
        if (key.name == "info") != (self.format == "precomputed"):
            return None
        if key.name == "info":
            return json.dumps(self._precomputed_info(key.array, pyramid)).encode()
        if key.level is None:
            if key.name == ".zgroup":
                return json.dumps({"zarr_format": 2}).encode()
            if key.name == ".zattrs":
                return json.dumps(pyramid.zattrs(key.array, self.display_scales())).encode()
            return None  # the array's root is a group
        if key.level >= pyramid.n_levels:
            return None
        if key.name == ".zarray":
            return json.dumps(pyramid.zarray(key.level)).encode()
        return b"{}" if key.name == ".zattrs" else None

    def _precomputed_info(self, array: str, pyramid: Pyramid) -> dict:
        info = pyramid.precomputed_info(self.display_scales())
        if array == "objects":
            info["type"] = "segmentation"  # Neuroglancer shows its values as object ids in random colours
        return info

    def _raw_chunk(self, region: tuple[slice, ...]) -> bytes:
        return self.encode(self.raw_reader.read(region), self.raw)

    # ------------------------------------------------------------------ labels
    def _labels_chunk(self, key: ChunkKey | BoxKey, region: tuple[slice, ...]) -> bytes | None:
        version = int(self.session.annotations.version)
        cache_key = ("labels", version, key.level, _where(key))
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        block = self._labels_block(key.level, region)
        if not block.any():
            return None  # nothing painted here: a missing chunk is the fill value 0 (transparent)
        data = self.encode(block.astype(np.uint8, copy=False), self.labels)
        self._cache.put(cache_key, data)
        return data

    def _labels_block(self, level: int, region: tuple[slice, ...]) -> np.ndarray:
        annotations = self.session.annotations
        full = tuple(slice(s.start, s.stop) for s in region)
        if level == 0:
            return np.asarray(annotations.labels(full), dtype=np.uint8)
        coarse = self._coarse_level(level)
        if coarse is not None:
            factors = self.labels.factors[level]
            return coarse[tuple(slice(s.start // f, -(-s.stop // f)) for s, f in zip(region, factors))]
        if math.prod(s.stop - s.start for s in full) <= self.max_dense_label_pixels:
            return np.asarray(annotations.labels(full), dtype=np.uint8)[
                tuple(slice(None, None, s.step) for s in region)
            ]
        return np.zeros(tuple(len(range(s.start, s.stop, s.step)) for s in region), dtype=np.uint8)

    def _coarse_level(self, level: int) -> np.ndarray | None:
        """A coarse labels level as one image where any labelled pixel of a cell shows (None if too large)."""
        annotations = self.session.annotations
        version = int(annotations.version)
        with self._lock:
            cached = self._coarse_labels.get((version, level))
            if cached is not None:
                return cached
        shape = self.labels.level_shape(level)
        if math.prod(shape) > self.max_dense_label_pixels:
            return None
        coords, values = annotations.labelled(None)
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, self.ndim)
        image = np.zeros(shape, dtype=np.uint8)
        if len(coords):
            factors = np.asarray(self.labels.factors[level], dtype=np.int64)
            image[tuple((coords // factors).T)] = np.asarray(values, dtype=np.uint8).reshape(-1)
        with self._lock:
            for k in [k for k in self._coarse_labels if k[0] != version]:
                del self._coarse_labels[k]
            self._coarse_labels[(version, level)] = image
        return image

    def chunk_exists(self, key: ChunkKey | BoxKey) -> bool:
        """Whether ``key`` is a chunk of the labels or the current predictions array, with data or not: the browser
        holds it either way (a missing chunk is shown as its fill value)."""
        if key.array == "predictions" and key.layout != self.layout:
            return False
        return key.array in ("labels", "predictions") and self.chunk_region(self.pyramid(key.array), key) is not None

    # ------------------------------------------------------------------ predictions
    @staticmethod
    def prediction_region(region: tuple[slice, ...]) -> tuple[slice, ...]:
        """The full-resolution region predicted for a chunk's (strided) region: along an axis where the chunk is one
        voxel thick only its sample plane, so a plane-shaped chunk costs one plane at any level."""
        return tuple(
            slice(s.start, s.start + 1) if len(range(s.start, s.stop, s.step)) == 1 else slice(s.start, s.stop)
            for s in region
        )

    def _prediction_chunk(self, pyramid: Pyramid, key: ChunkKey | BoxKey, region: tuple[slice, ...]) -> bytes | None:
        if not self.session.is_trained:
            return None
        generation = int(self.session.generation)
        cache_key = ("predictions", generation, pyramid.channels, key.level, _where(key))
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        assembled = None
        if isinstance(key, ChunkKey):
            assembled = self._assemble_from_finer(pyramid, generation, key.level, key.index)
        if assembled is not None:
            data = assembled.tobytes()
        else:
            probabilities = np.asarray(self.session.predict(self.prediction_region(region)))
            steps = tuple(s.step if len(range(s.start, s.stop, s.step)) > 1 else 1 for s in region)
            if any(st != 1 for st in steps):
                probabilities = probabilities[tuple(slice(None, None, st) for st in steps)]
            n = int(pyramid.channels or 1)
            if probabilities.shape[-1] != n:  # classes added since the training: their columns are 0
                fixed = np.zeros(probabilities.shape[:-1] + (n,), dtype=np.float32)
                k = min(n, probabilities.shape[-1])
                fixed[..., :k] = probabilities[..., :k]
                probabilities = fixed
            scaled = np.clip(np.rint(probabilities * 255.0), 0, 255).astype(np.uint8)
            data = self.encode(scaled, pyramid)
        self._cache.put(cache_key, data)
        return data

    def _assemble_from_finer(
        self, pyramid: Pyramid, generation: int, level: int, index: tuple[int, ...]
    ) -> np.ndarray | None:
        """Chunk ``index`` of ``level`` made from the cached chunks of ``level - 1`` (every level is a strided
        subsample of the full resolution, so this equals predicting the region); None unless all of them are cached."""
        if level == 0:
            return None
        spatial = index[: self.ndim]
        finer, coarser = pyramid.factors[level - 1], pyramid.factors[level]
        ratios = [f // g for f, g in zip(coarser, finer)]
        if any(f != r * g for f, g, r in zip(coarser, finer, ratios)) or any(
            c % r for c, r in zip(pyramid.chunk, ratios)
        ):
            return None
        finer_shape = pyramid.level_shape(level - 1)
        out = np.zeros(pyramid.chunk_shape, np.uint8)
        for child in itertools.product(*(range(i * r, (i + 1) * r) for i, r in zip(spatial, ratios))):
            if any(ci * c >= n for ci, c, n in zip(child, pyramid.chunk, finer_shape)):
                continue  # beyond the image
            data = self._cache.get(
                ("predictions", generation, pyramid.channels, level - 1, ".".join(map(str, (*child, 0))))
            )
            if data is None:
                return None
            block = np.frombuffer(data, np.uint8).reshape(out.shape)[tuple(slice(None, None, r) for r in ratios)]
            at = tuple(
                slice((ci - i * r) * (c // r), (ci - i * r + 1) * (c // r))
                for ci, i, r, c in zip(child, spatial, ratios, pyramid.chunk)
            )
            out[at] = block
        return out

    def prediction_keys(self, max_pixels: int | None = None) -> list[ChunkKey]:
        """Every prediction chunk of the current layout, finest level first; empty when the image has more than
        ``max_pixels`` (default ``max_predict_pixels``) pixels, where only what a view asks for is worth computing."""
        limit = self.max_predict_pixels if max_pixels is None else int(max_pixels)
        if self.format != "zarr" or math.prod(self.spatial_shape) > limit or not self.session.is_trained:
            return []  # a volume's views ask for planes: which ones is not known ahead
        pyramid, layout = self.predictions(), self.layout
        return [
            ChunkKey("predictions", level, index, layout)
            for level in range(pyramid.n_levels)
            for index in pyramid.chunk_indices(level)
        ]

    # ------------------------------------------------------------------ display
    def display_scales(self) -> tuple[float, ...]:
        """Relative voxel size per spatial axis (smallest = 1) from the session's source (e.g. OME-Zarr scale); all
        ones when unknown. Anisotropic volumes are shown in their true proportions with these."""
        scale = getattr(self.session.source, "scale", None)
        try:
            values = [float(v) for v in scale] if scale is not None else []
        except (TypeError, ValueError):
            values = []
        if len(values) != self.ndim or not all(math.isfinite(v) and v > 0 for v in values):
            return tuple(1.0 for _ in range(self.ndim))
        smallest = min(values)
        return tuple(v / smallest for v in values)

    def invalidate(self, arrays: Iterable[str] = ("labels", "predictions")) -> None:
        """Drop cached chunks of the given arrays (labels and predictions are cached per version anyway)."""
        arrays = set(arrays)
        self._cache.discard(lambda key: key[0] in arrays)  # type: ignore[index]
        if "raw" in arrays:
            self.raw_reader.forget()
        if "labels" in arrays:
            with self._lock:
                self._coarse_labels.clear()


def _where(key: ChunkKey | BoxKey) -> str:
    """A chunk's place within its level, as a cache key: its grid index or its box."""
    return key.address.split("/", 1)[1]
