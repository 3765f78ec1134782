"""Serves a session's image, labels and predictions to Neuroglancer as zarr v2 keys.

The browser's ``mem://`` kvstore turns Neuroglancer's reads into ``chunks`` messages; the widget answers them with
:meth:`ChunkServer.read`. Three zarr v2 groups exist per widget, each an OME-Zarr (0.4) multiscale pyramid:

``raw``
    the image (first channel, or the three channels of an RGB(A) image as a channel axis ``c``); coarser levels are
    strided subsamples of the full-resolution image, computed per chunk when asked for, so a zoomed-out view of a
    huge image reads only the pixels it shows. An image on a web server (zarr / OME-Zarr at an http(s) URL) is by
    default loaded by the browser straight from its URL instead (:meth:`ChunkServer.browser_raw_source`), with this
    array as the fallback for a browser that cannot reach the URL.
``labels``
    ``uint8`` label volume of the session's annotations (0 = unlabelled, 1..n = classes), rendered per chunk.
``predictions/<generation>``
    ``uint8`` probabilities scaled to 0..255 with the classes as a trailing channel axis ``c``; the segmentation and
    uncertainty layers are computed from it in their shaders, so the three prediction layers share one chunk cache.
    Chunks are computed on demand with ``session.predict(region)``, strided for the coarse levels, or assembled from
    the finer level's chunks when those are at hand (the same numbers, without predicting a region twice). The
    pyramid stops at the coarsest level whose chunks cover at most ``max_predict_pixels`` full-resolution pixels:
    zoomed out further, the viewer shows that level, and asks only for the chunks in view, so the predictions fill
    in chunk by chunk instead of one chunk costing the whole image. The generation in the key makes the layer URL
    change when the classes change; any generation is answered with the session's current predictions.

Keys are ``"<array>/<zarr key>"`` (``raw/0/3.4``, ``labels/.zattrs``, ``predictions/7/0/0.0.0``...). :meth:`read` never
raises: a malformed, unknown or out-of-range key gives ``None`` and a log line.

When labels or predictions change, the widget pushes the new chunks the browser is showing along with its refresh
message, so the view updates without a request round trip. The server keeps, per array, the *working set*: the chunk
keys the browser read since the last push (:meth:`note_keys`, fed by :meth:`read` and by the browser's ``seen``
reports of chunks it served from a push or updated in place); :meth:`take_push` computes those chunks and starts a new
working set. The push also names the working-set chunks that are now missing (an erased labels chunk), so the browser
can update every chunk it shows without asking.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}
_LEVEL_KEY = re.compile(r"^(\d+)/(\.zarray|\.zattrs|[0-9.]+)$")

# dtypes Neuroglancer reads from zarr and renders; anything else is converted to float32.
_NATIVE_DTYPES = {np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")}

# Where the browser reads the raw image of a source on a web server (ChunkServer.raw_from).
RAW_FROM = ("auto", "kernel", "browser")
# OME-Zarr multiscale versions Neuroglancer 2.41 reads (lib/datasource/zarr/ome.js); 0.5 only from zarr v3.
_NEUROGLANCER_OME_VERSIONS = ("0.4", "0.5-dev", "0.5")


def _ome_scale_translation(transforms, rank: int) -> tuple[list[float], list[float]]:
    """Diagonal scale and translation of a list of OME-Zarr coordinate transformations applied in order."""
    scale, shift = [1.0] * rank, [0.0] * rank
    for tr in transforms or []:
        kind = tr.get("type") if isinstance(tr, dict) else None
        if kind == "scale" and len(tr.get("scale") or ()) == rank:
            scale = [a * float(b) for a, b in zip(scale, tr["scale"])]
            shift = [a * float(b) for a, b in zip(shift, tr["scale"])]
        elif kind == "translation" and len(tr.get("translation") or ()) == rank:
            shift = [a + float(b) for a, b in zip(shift, tr["translation"])]
        elif kind != "identity":
            raise ValueError(f"OME-Zarr coordinate transformation {tr!r} is not one Neuroglancer reads")
    if not all(math.isfinite(v) and v > 0 for v in scale) or not all(math.isfinite(v) for v in shift):
        raise ValueError(f"OME-Zarr coordinate transformations {transforms!r} have a non-positive scale")
    return scale, shift


def _hex_to_rgb(color: str) -> tuple[float, float, float]:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    try:
        return tuple(int(c[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        return (1.0, 1.0, 1.0)


def _glsl_vec3(rgb: Sequence[float]) -> str:
    return "vec3(" + ", ".join(f"{v:.4f}" for v in rgb) + ")"


class _LRU:
    """Thread-safe byte-bounded cache of encoded chunks."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value: bytes) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._data[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes and self._data:
                _, dropped = self._data.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


class _Array:
    """Geometry of one multiscale zarr group: spatial shape per level, chunk shape, channels, dtype."""

    def __init__(self, spatial_shape, chunk, factors, dtype, channels: int | None):
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.chunk = tuple(int(c) for c in chunk)
        self.factors = factors  # per level: tuple of integer downsampling factors per spatial axis
        self.dtype = np.dtype(dtype)
        self.channels = channels  # None = no channel axis

    @property
    def n_levels(self) -> int:
        return len(self.factors)

    def level_shape(self, level: int) -> tuple[int, ...]:
        return tuple(-(-s // f) for s, f in zip(self.spatial_shape, self.factors[level]))

    def zarray(self, level: int) -> dict:
        shape = list(self.level_shape(level))
        chunks = list(self.chunk)
        if self.channels is not None:
            shape.append(self.channels)
            chunks.append(self.channels)
        return {
            "zarr_format": 2,
            "shape": shape,
            "chunks": chunks,
            "dtype": self.dtype.str if self.dtype.itemsize > 1 else "|" + self.dtype.str[1:],
            "compressor": None,
            "fill_value": 0,
            "order": "C",
            "filters": None,
            "dimension_separator": ".",
        }

    def zattrs(self, name: str, voxel_scale: Sequence[float] | None = None) -> dict:
        ndim = len(self.spatial_shape)
        voxel_scale = list(voxel_scale) if voxel_scale is not None else [1.0] * ndim
        axes = [{"name": n, "type": "space"} for n in AXIS_NAMES[ndim]]
        if self.channels is not None:
            axes.append({"name": "c", "type": "channel"})
        datasets = []
        for level, factors in enumerate(self.factors):
            spatial = [float(f) * v for f, v in zip(factors, voxel_scale)]
            channel = [1.0] if self.channels is not None else []
            # OME-Zarr puts the centre of voxel i at i * scale; Neuroglancer then lets voxel i span [i - 1/2, i + 1/2).
            # The viewer (viewer.ts, brush.ts) works in Neuroglancer's own convention, voxel i spans [i, i + 1) with
            # its centre at i + 1/2, so every level is shifted by half of its voxel size: without it a cross-section
            # at a voxel centre (i + 1/2) lies on the border between two voxels of the data, and in a volume the
            # xy panel showed the labels of plane i + 1 while strokes landed on plane i.
            translation = [0.5 * s for s in spatial] + [0.0] * len(channel)
            datasets.append(
                {
                    "path": str(level),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": spatial + channel},
                        {"type": "translation", "translation": translation},
                    ],
                }
            )
        return {"multiscales": [{"version": "0.4", "name": name, "axes": axes, "datasets": datasets}]}

    def chunk_region(self, level: int, index: Sequence[int]) -> tuple[slice, ...] | None:
        """Full-resolution region (with the level's step) covered by chunk ``index`` of ``level``; None if outside."""
        ndim = len(self.spatial_shape)
        if self.channels is not None:
            if len(index) != ndim + 1 or index[-1] != 0:
                return None
            index = index[:ndim]
        if len(index) != ndim:
            return None
        level_shape = self.level_shape(level)
        region = []
        for i, c, ls, f, s in zip(index, self.chunk, level_shape, self.factors[level], self.spatial_shape):
            if i < 0 or i * c >= ls:
                return None
            start = i * c * f
            stop = min(s, (i + 1) * c * f)
            region.append(slice(start, stop, f))
        return tuple(region)


def _pyramid_factors(spatial_shape: Sequence[int], chunk: Sequence[int], min_size: int) -> list[tuple[int, ...]]:
    """Factors per level: halve every axis still larger than a chunk until the whole image fits ~one chunk or its
    largest side is at most ``min_size``."""
    factors = [tuple(1 for _ in spatial_shape)]
    while True:
        prev = factors[-1]
        shape = [-(-s // f) for s, f in zip(spatial_shape, prev)]
        if all(s <= c for s, c in zip(shape, chunk)) or max(shape) <= min_size:
            break
        nxt = tuple(f * 2 if s > c else f for s, c, f in zip(shape, chunk, prev))
        if nxt == prev:
            break
        factors.append(nxt)
        if len(factors) > 24:
            break
    return factors


def _prediction_level(key: Any) -> int:
    """Pyramid level of a ``predictions/<gen>/<level>/...`` key; -1 for any other key."""
    parts = key.split("/") if isinstance(key, str) else []
    return int(parts[2]) if len(parts) > 3 and parts[0] == "predictions" and parts[2].isdigit() else -1


def _pad_to(block: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    if tuple(block.shape) == tuple(shape):
        return np.ascontiguousarray(block)
    out = np.zeros(shape, dtype=block.dtype)
    out[tuple(slice(0, s) for s in block.shape)] = block
    return out


def _chunk_address(rest: str) -> tuple[int, tuple[int, ...]] | None:
    """(level, chunk index) of ``"<level>/<i>.<j>..."``; None for anything else."""
    level, _, index = rest.partition("/")
    try:
        return int(level), tuple(int(i) for i in index.split("."))
    except ValueError:
        return None


#: Chunks predicted together ahead of a push: enough for every worker thread, few enough to stop soon when the
#: predictions are superseded.
PREDICT_AHEAD_BATCH = 8


class ChunkPush(NamedTuple):
    """Chunks of one array sent with a refresh: ``keys[i]`` holds ``data[i]``; the ``missing`` keys have no data
    (their fill value, 0)."""

    keys: list[str]
    data: list[bytes]
    missing: list[str]


class ChunkServer:
    """Answers zarr v2 key reads for one widget's raw / labels / predictions arrays.

    ``session`` needs: ``image``, ``channel_axis`` (optional), ``spatial_shape``, ``annotations`` (with
    ``labels(region)``, ``version``, optionally ``labelled(region)``), ``predict(region)``, ``generation``,
    ``classes`` (objects with ``name`` and ``color``), ``is_trained``.

    When ``session.source`` is a zarr / OME-Zarr on a web server, the raw layer's spec makes the browser load the
    image straight from its URL (see :attr:`raw_from` and :meth:`browser_raw_source`); labels and predictions are
    always served from here.
    """

    _raw_from: str = "auto"

    @property
    def raw_from(self) -> str:
        """Where the browser reads the raw image of a source with an http(s) URL: ``"auto"`` from the URL, with the
        kernel-served layer as the spec's ``"fallback"`` for when the browser cannot load it (another network, no
        CORS headers); ``"browser"`` from the URL only; ``"kernel"`` always over the widget's comm."""
        return self._raw_from

    @raw_from.setter
    def raw_from(self, value: str) -> None:
        if value not in RAW_FROM:
            raise ValueError(f"raw_from must be one of {', '.join(map(repr, RAW_FROM))}, not {value!r}")
        self._raw_from = value

    def __init__(
        self,
        session,
        widget_id: str,
        *,
        chunk_shape: Sequence[int] | None = None,
        max_predict_pixels: int = 1024 * 1024,
        max_dense_label_pixels: int = 4096 * 4096,
        coarsest_size: int | None = None,
        cache_bytes: int = 256 * 2**20,
    ):
        self.session = session
        self.widget_id = str(widget_id)
        shape = tuple(int(s) for s in session.spatial_shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"ChunkServer needs a 2D or 3D image, got spatial shape {shape}")
        self.ndim = len(shape)
        self.spatial_shape = shape
        if chunk_shape is None:
            chunk_shape = (256, 256) if self.ndim == 2 else (64, 64, 64)
        chunk_shape = tuple(int(c) for c in chunk_shape)
        if len(chunk_shape) != self.ndim:
            raise ValueError("chunk_shape must have one entry per spatial axis")
        self.chunk_shape = chunk_shape
        self.max_predict_pixels = int(max_predict_pixels)
        self.max_dense_label_pixels = int(max_dense_label_pixels)
        self._cache = _LRU(cache_bytes)
        # Chunk keys (without array name and generation) the browser read since the last push, oldest first.
        self._working: dict[str, OrderedDict[str, None]] = {"labels": OrderedDict(), "predictions": OrderedDict()}
        self._working_lock = threading.Lock()
        self._label_levels: dict[tuple[int, int], np.ndarray] = {}
        self._label_lock = threading.Lock()

        image = session.image
        channel_axis = getattr(session, "channel_axis", None)
        self._image = image
        self._channel_axis = None
        self._n_input_channels = None
        if channel_axis is not None:
            ca = int(channel_axis) % len(image.shape)
            self._channel_axis = ca
            self._n_input_channels = int(image.shape[ca])
        self.raw_channels = 3 if self._n_input_channels in (3, 4) else None
        src_dtype = np.dtype(image.dtype)
        if src_dtype == np.bool_:
            raw_dtype = np.dtype(np.uint8)
        elif src_dtype in _NATIVE_DTYPES:
            raw_dtype = src_dtype
        else:
            raw_dtype = np.dtype(np.float32)

        # Neuroglancer draws every level from the coarsest up to the one a view needs, each under the next: a 2D
        # level that fits in about one panel (1024 px) is as coarse as a view needs, and coarser ones only cost
        # drawing (software WebGL: a 1024x1024 view drew in half the time without its two extra levels). A volume's
        # chunks are 3D, so there each level still halves what a zoomed-out plane reads.
        if coarsest_size is None:
            coarsest_size = 1024 if self.ndim == 2 else min(chunk_shape)
        factors = _pyramid_factors(shape, chunk_shape, min_size=int(coarsest_size))
        self.raw = _Array(shape, chunk_shape, factors, raw_dtype, self.raw_channels)
        self.labels = _Array(shape, chunk_shape, factors, np.uint8, None)
        self._raw_range: tuple[float, float] | None = None
        self._source_levels: list[tuple[tuple[int, ...], Any]] | None = None

    # ------------------------------------------------------------------ public API
    def _n_classes(self) -> int:
        return max(1, len(self.session.classes))

    def _predictions_array(self) -> _Array:
        affordable = [
            f
            for f in self.raw.factors
            if math.prod(c * fi for c, fi in zip(self.chunk_shape, f)) <= self.max_predict_pixels
        ]
        return _Array(
            self.spatial_shape, self.chunk_shape, affordable or self.raw.factors[:1], np.uint8, self._n_classes()
        )

    def _groups(self) -> dict[str, _Array]:
        """The zarr groups the viewer reads, by path: raw, labels, and the predictions under the generation that
        names them in the layer specs."""
        return {
            "raw": self.raw,
            "labels": self.labels,
            f"predictions/{int(self.session.generation)}": self._predictions_array(),
        }

    def sources(self) -> dict[str, str]:
        """Neuroglancer source URL per layer name."""
        raw, labels, predictions = (f"mem://{self.widget_id}/{path}/|zarr2:" for path in self._groups())
        return {
            "raw": raw,
            "labels": labels,
            "probabilities": predictions,
            "segmentation": predictions,
            "uncertainty": predictions,
        }

    def metadata(self) -> dict[str, str | None]:
        """Every metadata key the viewer reads before the first chunk (``.zattrs`` and ``.zarray`` of each array
        and level) with its text, None where the key is missing. The widget sends these with the layer specs so the
        viewer needs no round trip before asking for chunks."""
        out: dict[str, str | None] = {}
        for prefix, array in self._groups().items():
            keys = [f"{prefix}/.zarray", f"{prefix}/.zattrs"]
            keys += [f"{prefix}/{level}/{name}" for level in range(array.n_levels) for name in (".zarray", ".zattrs")]
            for key in keys:
                data = self._read_one(key)
                out[key] = None if data is None else data.decode()
        return out

    def read(self, keys: Iterable[str]) -> list[bytes | None]:
        """Bytes of each zarr key, or None where the key is missing, malformed or out of range."""
        keys = list(keys)
        out: list[bytes | None] = [None] * len(keys)
        # finest level first: coarse prediction chunks are then assembled from the finer ones
        for i in sorted(range(len(keys)), key=lambda i: _prediction_level(keys[i])):
            try:
                out[i] = self._read_one(keys[i])
            except Exception:  # never let one bad key (or a failing prediction) break the batch
                log.exception("chunk_server: failed to read key %r", keys[i])
        # an empty labels chunk is missing too, but on screen: a stroke there is pushed like any other
        self.note_keys(key for key, data in zip(keys, out) if data is not None or self._labels_chunk_exists(key))
        return out

    def _labels_chunk_exists(self, key: str) -> bool:
        found = self._working_key(key)
        if found is None or found[0] != "labels":
            return False
        address = _chunk_address(found[1])
        return (
            address is not None and address[0] < self.labels.n_levels and self.labels.chunk_region(*address) is not None
        )

    # ------------------------------------------------------------------ pushing changed chunks
    @staticmethod
    def _working_key(key: str) -> tuple[str, str] | None:
        """(array, "<level>/<index>") of a labels or predictions chunk key; None for anything else."""
        if not isinstance(key, str) or len(key) > 512:
            return None
        parts = key.split("/")
        if parts[0] == "predictions" and len(parts) == 4 and parts[1].isdigit():
            level, index = parts[2], parts[3]
        elif parts[0] == "labels" and len(parts) == 3:
            level, index = parts[1], parts[2]
        else:
            return None
        if not _LEVEL_KEY.match(f"{level}/{index}") or index.startswith("."):
            return None
        return parts[0], f"{level}/{index}"

    def note_keys(self, keys: Iterable[str], limit: int = 4096) -> None:
        """Add labels and prediction chunk keys the browser holds to the working sets (other keys are ignored)."""
        with self._working_lock:
            for key in keys:
                found = self._working_key(key)
                if found is None:
                    continue
                working = self._working[found[0]]
                working.pop(found[1], None)
                working[found[1]] = None
                while len(working) > limit:
                    working.popitem(last=False)

    def pending_push(self, array: str) -> int:
        """Number of chunk keys in the working set of ``array``."""
        with self._working_lock:
            return len(self._working[array])

    def take_push(self, array: str, max_bytes: int = 16 * 2**20, cancelled=lambda: False) -> ChunkPush:
        """The current chunks of ``array`` ("labels" or "predictions") in its working set, finest level first and
        newest first within a level, up to ``max_bytes``, and the working-set keys that are now missing; the working
        set starts anew. Predictions are computed here (the slow part) unless the session is not trained.
        ``cancelled()`` is checked between chunks: then nothing is returned and the working set is kept."""
        nothing = ChunkPush([], [], [])
        with self._working_lock:
            wanted = list(reversed(self._working[array]))
            self._working[array] = OrderedDict()
        if array == "predictions":
            if not getattr(self.session, "is_trained", False):
                return nothing
            prefix = f"predictions/{int(self.session.generation)}/"
        else:
            prefix = "labels/"
        push = ChunkPush([], [], [])
        total = 0
        # coarse chunks are assembled from the finer ones (a stable sort keeps the newest first within a level)
        wanted.sort(key=lambda rest: int(rest.split("/", 1)[0]))
        if array == "predictions":
            self._predict_ahead(wanted, max_bytes, cancelled)
        for rest in wanted:
            if cancelled():
                self.note_keys(prefix + k for k in reversed(wanted))  # still on screen: the next push wants them
                return nothing
            key = prefix + rest
            try:
                chunk = self._read_one(key)
            except Exception:
                log.exception("chunk_server: failed to compute %r for a push", key)
                continue
            if chunk is None:
                push.missing.append(key)
                continue
            if total + len(chunk) > max_bytes:
                break
            push.keys.append(key)
            push.data.append(chunk)
            total += len(chunk)
        # Pushed keys join the next working set only when the browser reports it used them (a `seen` message):
        # chunks of a view the user has left drop out.
        return push

    def _predict_ahead(self, wanted: list[str], max_bytes: int, cancelled) -> None:
        """Predict the full-resolution chunks of a push that fit in its budget in parallel, a batch at a time, so
        that take_push then reads them from the session's cache: one chunk after another, each predicted on its own
        with the forest's threads splitting its rows, is slower. Anything that fails here is predicted and reported
        by take_push itself."""
        precompute = getattr(self.session, "precompute", None)
        if precompute is None:
            return
        array = self._predictions_array()
        regions = []
        for rest in wanted[: max(1, max_bytes // (math.prod(array.chunk) * array.channels))]:
            address = _chunk_address(rest)
            if address is None:
                continue
            if address[0] != 0:
                break  # finest level first: the coarse chunks are assembled from these
            region = array.chunk_region(*address)
            if region is not None:
                regions.append(region)
        for i in range(0, len(regions), PREDICT_AHEAD_BATCH):
            if cancelled():
                return
            try:
                precompute(regions[i : i + PREDICT_AHEAD_BATCH])
            except Exception:
                log.debug("chunk_server: predicting ahead failed", exc_info=True)
                return

    def prediction_keys(self, max_pixels: int | None = None) -> list[str]:
        """Keys of every prediction chunk of the current generation, finest level first; empty when the image has
        more than ``max_pixels`` (default ``max_predict_pixels``) pixels (then only what the view asks for is worth
        computing)."""
        limit = self.max_predict_pixels if max_pixels is None else int(max_pixels)
        if math.prod(self.spatial_shape) > limit or not getattr(self.session, "is_trained", False):
            return []
        array = self._predictions_array()
        gen = int(self.session.generation)
        keys = []
        for level in range(array.n_levels):
            grid = [range(-(-s // c)) for s, c in zip(array.level_shape(level), array.chunk)]
            for index in itertools.product(*grid):
                keys.append(f"predictions/{gen}/{level}/" + ".".join(str(i) for i in index) + ".0")
        return keys

    def warm_predictions(self, max_pixels: int | None = None) -> int:
        """Compute and cache every prediction chunk of the current generation (see :meth:`prediction_keys`) so
        that reads asked for afterwards are answered from the cache; returns the number of chunks now cached."""
        n = 0
        generation = int(self.session.generation)
        for key in self.prediction_keys(max_pixels):
            if int(self.session.generation) != generation:
                break  # newer predictions: this pass is for nothing
            try:
                n += self._read_one(key) is not None
            except Exception:
                log.exception("chunk_server: failed to compute %r", key)
                return n
        return n

    def raw_range(self) -> tuple[float, float]:
        """Display range for the raw layer (0.5 / 99.5 percentiles of a strided sample)."""
        if self._raw_range is None:
            steps = tuple(max(1, s // 256) for s in self.spatial_shape)
            sample = self._read_raw(tuple(slice(0, s, st) for s, st in zip(self.spatial_shape, steps)))
            sample = np.asarray(sample, dtype=np.float64)
            finite = sample[np.isfinite(sample)]
            if finite.size == 0:
                lo, hi = 0.0, 1.0
            else:
                lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
                if hi <= lo:
                    lo, hi = float(finite.min()), float(finite.max())
                if hi <= lo:
                    hi = lo + 1.0
            if self.raw.dtype.kind in "iu":
                lo, hi = math.floor(lo), math.ceil(hi)
            self._raw_range = (lo, hi)
        return self._raw_range

    def layer_specs(self) -> list[dict]:
        """Neuroglancer layer JSON (image layers with shaders) for raw, labels, probabilities, segmentation,
        uncertainty, in drawing order."""
        src = self.sources()
        classes = list(self.session.classes)
        colors = [_hex_to_rgb(getattr(c, "color", "#ffffff")) for c in classes] or [(1.0, 1.0, 1.0)]
        lo, hi = self.raw_range()
        if self.raw_channels == 3:
            raw_shader = (
                "#uicontrol invlerp normalized(range=[%s, %s])\n"
                "void main() {\n"
                "  emitRGB(vec3(normalized(getDataValue(0)), normalized(getDataValue(1)), normalized(getDataValue(2))));\n"
                "}\n" % (lo, hi)
            )
        else:
            raw_shader = (
                "#uicontrol invlerp normalized(range=[%s, %s])\nvoid main() { emitGrayscale(normalized()); }\n"
                % (lo, hi)
            )
        raw = {
            "type": "image",
            "name": "raw",
            "source": self._source(src["raw"]),
            "opacity": 1.0,
            "shader": raw_shader,
            "shaderControls": {"normalized": {"range": [lo, hi]}},
        }
        if self.raw_channels == 3:
            raw["source"] = self._channel_source(src["raw"])
        raw = self._raw_spec(raw)
        labels = {
            "type": "image",
            "name": "labels",
            "source": self._source(src["labels"]),
            "opacity": 0.8,
            "shader": self._labels_shader(colors),
        }
        n = self._n_classes()
        probabilities = {
            "type": "image",
            "name": "probabilities",
            "source": src["probabilities"],
            "opacity": 0.5,
            "shader": self._probabilities_shader(colors, n),
        }
        segmentation = {
            "type": "image",
            "name": "segmentation",
            "source": src["segmentation"],
            "opacity": 0.5,
            "visible": False,
            "shader": self._segmentation_shader(colors, n),
        }
        uncertainty = {
            "type": "image",
            "name": "uncertainty",
            "source": src["uncertainty"],
            "opacity": 0.7,
            "visible": False,
            "shader": self._uncertainty_shader(n),
        }
        for spec in (probabilities, segmentation, uncertainty):
            spec["source"] = self._channel_source(spec["source"])
        # Neuroglancer draws image layers in list order: raw, then predictions, labels on top.
        return [raw, probabilities, segmentation, uncertainty, labels]

    def display_scales(self) -> tuple[float, ...]:
        """Relative voxel size per spatial axis (smallest = 1), from the session's source (e.g. OME-Zarr scale);
        all ones when unknown. Anisotropic volumes are shown in their true proportions with these."""
        source = getattr(self.session, "source", None)
        scale = getattr(source, "scale", None)
        try:
            values = [float(v) for v in scale] if scale is not None else []
        except (TypeError, ValueError):
            values = []
        if len(values) != self.ndim or not all(math.isfinite(v) and v > 0 for v in values):
            return tuple(1.0 for _ in range(self.ndim))
        smallest = min(values)
        return tuple(v / smallest for v in values)

    def _source(self, url: str, channels: bool = False) -> str | dict:
        """The layer source: the URL, or URL plus a transform that renames the OME channel axis (Neuroglancer's local
        dimension ``c'``) to the channel dimension ``c^`` (so shaders read every channel with ``getDataValue(i)``).
        The spatial output dimensions repeat the relative voxel sizes the .zattrs give (an identity; the viewer
        reads the global dimensions from the raw layer's)."""
        scales = self.display_scales()
        if not channels and all(v == 1.0 for v in scales):
            return url
        out = {name: [v, ""] for name, v in zip(AXIS_NAMES[self.ndim], scales)}
        if channels:
            out["c^"] = [1, ""]
        return {"url": url, "transform": {"outputDimensions": out}}

    def _channel_source(self, url: str) -> str | dict:
        return self._source(url, channels=True)

    # ------------------------------------------------------------------ raw layer straight from the source's URL
    def _raw_spec(self, kernel_spec: dict) -> dict:
        """The raw layer as :attr:`raw_from` asks: loaded by the browser from the source's URL (with
        ``kernel_spec`` as its ``"fallback"`` in "auto" mode), or ``kernel_spec`` itself."""
        if self.raw_from == "kernel":
            return kernel_spec
        try:
            fields = self.browser_raw_source()
        except ValueError as exc:
            if self.raw_from == "browser":
                raise
            log.debug("chunk_server: the kernel serves the raw layer: %s", exc)
            return kernel_spec
        spec = {**kernel_spec, **fields}
        if self.raw_from == "auto":
            spec["fallback"] = kernel_spec
        return spec

    def browser_raw_source(self) -> dict:
        """Layer fields that make Neuroglancer load the raw image straight from the session source's http(s) URL.

        Returns ``{"source": {"url": ..., "transform": ...}}``, plus ``"localPosition"`` when the source has axes the
        raw layer does not show. The transform puts the remote data exactly where the ``mem://`` raw layer is: the
        spatial axes become the global dimensions (``y``, ``x``, ``z``, with the relative voxel sizes of
        :meth:`display_scales`) with voxel ``i`` spanning ``[i, i + 1)`` whatever the OME-Zarr scale, units and
        translation; an RGB(A) channel axis becomes the channel dimension ``c^``; any other channel axis becomes a
        local dimension ``c'`` held at the first channel, and the time axis of a time point (``at_time``) a local
        dimension ``t'`` held at that time point, as the kernel reads them.

        Raises
        ------
        ValueError
            Saying why, when the source is not on a web server or the case cannot be expressed as a Neuroglancer
            source transform (the raw layer is then served by the kernel).
        """
        source = getattr(self.session, "source", None)
        url = getattr(source, "url", None)
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ValueError("the image has no http(s) URL")
        if "?" in url or "#" in url:  # Neuroglancer's zarr source takes no query string
            raise ValueError(f"the URL {url!r} has a query or fragment")
        fmt = getattr(source, "zarr_format", None)
        if fmt not in (2, 3):
            raise ValueError("the image at the URL is not zarr")
        if np.dtype(self._image.dtype) not in _NATIVE_DTYPES:
            # the kernel converts it (to float32); Neuroglancer cannot show the original
            raise ValueError(f"Neuroglancer does not show {np.dtype(self._image.dtype)} images")
        roles = self._source_axis_roles(source)
        names, scales, local = self._raw_output_dimensions(source, roles)
        ome = getattr(source, "ome_multiscale", None)
        if ome is not None:
            inputs, shift = self._ome_input_dimensions(ome, fmt, len(roles))
            # Input dimensions named as Neuroglancer names the OME axes, with the output's scales: the matrix maps
            # one model unit (one full-resolution voxel) to one output unit.
            factors = [1.0] * len(roles)
            transform: dict[str, Any] = {"inputDimensions": {n: [s, ""] for n, s in zip(inputs, scales)}}
        else:
            # A plain zarr array: Neuroglancer's model has unit scale and voxel i at [i, i + 1) already.
            self._check_plain_zarr(source)
            shift = [0.0] * len(roles)
            factors = scales
            transform = {}
        rank = len(roles)
        transform["outputDimensions"] = {n: [s, ""] for n, s in zip(names, scales)}
        transform["matrix"] = [[factors[i] if j == i else 0.0 for j in range(rank)] + [shift[i]] for i in range(rank)]
        out: dict[str, Any] = {"source": {"url": f"{url.rstrip('/')}/|zarr{fmt}:", "transform": transform}}
        if local:
            out["localPosition"] = local
        return out

    def _source_axis_roles(self, source) -> list[tuple]:
        """What each axis of the zarr array at the URL is to the kernel: ``("space", k)`` for the k-th spatial axis,
        ``("channel", q)`` for the channel axis (axis q of the kernel's array) or ``("time", index)`` for the time axis
        a time point was taken from."""
        # at_time() drops the time axis from the kernel's array; _base_select says where it was in the stored one.
        removed = dict(getattr(source, "_base_select", ()) or ())
        if getattr(source, "time_index", None) is not None and not removed:
            raise ValueError("the time axis of the time point is not known")
        kernel_axes = iter(range(len(self._image.shape)))
        roles: list[tuple] = []
        k = 0
        for p in range(len(self._image.shape) + len(removed)):
            if p in removed:
                roles.append(("time", int(removed[p])))
                continue
            q = next(kernel_axes)
            if q == self._channel_axis:
                roles.append(("channel", q))
            else:
                roles.append(("space", k))
                k += 1
        return roles

    def _raw_output_dimensions(self, source, roles) -> tuple[list[str], list[float], list[float]]:
        """Output dimension names and scales per source axis, and the local position (in the source's axis order)."""
        scales = self.display_scales()
        names: list[str] = []
        out_scales: list[float] = []
        local: list[float] = []
        for role in roles:
            if role[0] == "space":
                names.append(AXIS_NAMES[self.ndim][role[1]])
                out_scales.append(scales[role[1]])
                continue
            out_scales.append(1.0)
            if role[0] == "time":
                names.append("t'")
                local.append(role[1] + 0.5)  # the centre of that time point
            elif self.raw_channels == 3:
                # Neuroglancer's channel dimension must lie whole in every chunk; channels stored one per chunk
                # (common in OME-Zarr) cannot be shown as RGB, so then the kernel serves the raw layer.
                if any(len(level.chunks[role[1]]) != 1 for level in getattr(source, "levels", None) or []):
                    raise ValueError("the RGB channels are not stored in one chunk")
                names.append("c^")
            else:
                names.append("c'")
                local.append(0.5)  # the first channel, as the kernel shows
        return names, out_scales, local

    @staticmethod
    def _ome_input_dimensions(ome: dict, fmt: int, rank: int) -> tuple[list[str], list[float]]:
        """Neuroglancer's model dimension names of an OME-Zarr image and the translation (in full-resolution voxels)
        that puts its voxel i at [i, i + 1)."""
        version = ome.get("version")
        if version not in _NEUROGLANCER_OME_VERSIONS or (version == "0.5" and fmt != 3):
            raise ValueError(f"Neuroglancer does not read OME-Zarr {version} metadata from zarr v{fmt}")
        axes = ome.get("axes")
        if not isinstance(axes, list) or len(axes) != rank or not all(isinstance(a, dict) for a in axes):
            raise ValueError(f"OME-Zarr axes {axes!r} do not match the array")
        names = [str(a.get("name")) + ("'" if a.get("type") == "channel" else "") for a in axes]
        datasets = ome.get("datasets") or [{}]
        s_level, t_level = _ome_scale_translation(datasets[0].get("coordinateTransformations"), rank)
        s_all, t_all = _ome_scale_translation(ome.get("coordinateTransformations"), rank)
        # Neuroglancer's model: OME physical position (multiscale transform after the dataset's) in units of the
        # full-resolution voxel, the centre of voxel i at i + translation / scale, so voxel i spans
        # [i - 1/2 + translation / scale, ...): shift by 1/2 - translation / scale.
        shift = [0.5 - (sa * tl + ta) / (sa * sl) for sl, tl, sa, ta in zip(s_level, t_level, s_all, t_all)]
        return names, shift

    @staticmethod
    def _check_plain_zarr(source) -> None:
        base = getattr(source, "_base", None)
        if getattr(source, "source_kind", None) != "zarr" or base is None:
            raise ValueError("the image at the URL is neither an OME-Zarr image nor a zarr array")
        units = dict(getattr(base, "attrs", {}) or {}).get("dimension_units")
        if units and any(units):  # Neuroglancer would scale the model by them
            raise ValueError("the zarr array has dimension_units")

    def invalidate(self, arrays: Iterable[str] = ("labels", "predictions")) -> None:
        """Drop cached chunks of the given arrays (labels and predictions are cached per version anyway)."""
        arrays = set(arrays)
        if "raw" in arrays:
            self._cache.clear()
            self._raw_range = None
        if "labels" in arrays:
            with self._label_lock:
                self._label_levels.clear()

    # ------------------------------------------------------------------ shaders
    @staticmethod
    def _labels_shader(colors) -> str:
        lines = ["void main() {", "  uint v = toRaw(getDataValue());", "  if (v == 0u) { emitTransparent(); return; }"]
        for i, rgb in enumerate(colors, start=1):
            lines.append(f"  if (v == {i}u) {{ emitRGBA(vec4({_glsl_vec3(rgb)}, 1.0)); return; }}")
        lines += ["  emitRGBA(vec4(1.0, 1.0, 1.0, 1.0));", "}"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _probabilities_shader(colors, n) -> str:
        # Each class in its colour, weighted by its probability (squared, so a confident class shows its own colour
        # rather than a blend); opacity grows from 0 at chance level (1/n) to 1 at certainty.
        lines = ["void main() {", "  vec3 color = vec3(0.0);", "  float weight = 0.0;", "  float best = 0.0;"]
        for i in range(n):
            rgb = colors[i % len(colors)]
            lines += [
                f"  float p{i} = toNormalized(getDataValue({i}));",
                f"  color += p{i} * p{i} * {_glsl_vec3(rgb)};",
                f"  weight += p{i} * p{i};",
                f"  best = max(best, p{i});",
            ]
        chance = 1.0 / max(n, 1)
        lines += [
            "  if (weight <= 0.0) { emitTransparent(); return; }",
            f"  float alpha = clamp((best - {chance:.6f}) / {max(1e-6, 1.0 - chance):.6f}, 0.0, 1.0);",
            "  emitRGBA(vec4(color / weight, alpha));",
            "}",
        ]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _segmentation_shader(colors, n) -> str:
        lines = ["void main() {", "  float best = 0.0;", "  vec3 color = vec3(0.0);"]
        for i in range(n):
            rgb = colors[i % len(colors)]
            lines += [
                f"  float p{i} = toNormalized(getDataValue({i}));",
                f"  if (p{i} > best) {{ best = p{i}; color = {_glsl_vec3(rgb)}; }}",
            ]
        lines += ["  if (best <= 0.0) { emitTransparent(); return; }", "  emitRGBA(vec4(color, 1.0));", "}"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _uncertainty_shader(n) -> str:
        lines = ["void main() {", "  float first = 0.0;", "  float second = 0.0;"]
        for i in range(n):
            lines += [
                f"  float p{i} = toNormalized(getDataValue({i}));",
                f"  if (p{i} > first) {{ second = first; first = p{i}; }} else if (p{i} > second) {{ second = p{i}; }}",
            ]
        lines += [
            "  if (first <= 0.0) { emitTransparent(); return; }",
            "  float u = 1.0 - (first - second);",
            # violet (some doubt) to white (a toss-up), transparent where the classifier is sure
            "  emitRGBA(vec4(mix(vec3(0.55, 0.0, 1.0), vec3(1.0), u * u), u));",
            "}",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ key dispatch
    def _read_one(self, key: str) -> bytes | None:
        if not isinstance(key, str) or len(key) > 512:
            log.warning("chunk_server: malformed key %r", key)
            return None
        parts = key.split("/", 1)
        if len(parts) != 2:
            log.warning("chunk_server: malformed key %r", key)
            return None
        name, rest = parts
        if name == "predictions":
            gen_rest = rest.split("/", 1)
            if len(gen_rest) != 2 or not gen_rest[0].isdigit():
                log.warning("chunk_server: malformed predictions key %r", key)
                return None
            return self._read_array("predictions", self._predictions_array(), gen_rest[1], key)
        if name == "raw":
            return self._read_array("raw", self.raw, rest, key)
        if name == "labels":
            return self._read_array("labels", self.labels, rest, key)
        log.warning("chunk_server: unknown array in key %r", key)
        return None

    def _read_array(self, name: str, array: _Array, rest: str, key: str) -> bytes | None:
        if rest == ".zgroup":
            return json.dumps({"zarr_format": 2}).encode()
        if rest == ".zattrs":
            return json.dumps(array.zattrs(name, self.display_scales())).encode()
        if rest == ".zarray":
            return None  # the array's root is a group
        m = _LEVEL_KEY.match(rest)
        if m is None:
            log.warning("chunk_server: malformed key %r", key)
            return None
        level = int(m.group(1))
        if level >= array.n_levels:
            log.warning("chunk_server: level out of range in key %r", key)
            return None
        what = m.group(2)
        if what == ".zarray":
            return json.dumps(array.zarray(level)).encode()
        if what == ".zattrs":
            return b"{}"
        try:
            index = tuple(int(p) for p in what.split("."))
        except ValueError:
            log.warning("chunk_server: malformed chunk index in key %r", key)
            return None
        region = array.chunk_region(level, index)
        if region is None:
            log.warning("chunk_server: chunk out of range in key %r", key)
            return None
        chunk_shape = array.chunk + ((array.channels,) if array.channels is not None else ())
        if name == "raw":
            cache_key = ("raw", level, index)
            cached = self._cache.get(cache_key)
            if cached is not None:
                return cached
            block = self._read_raw(region).astype(array.dtype, copy=False)
            data = _pad_to(block, chunk_shape).tobytes()
            self._cache.put(cache_key, data)
            return data
        if name == "labels":
            version = int(getattr(self.session.annotations, "version", 0))
            cache_key = ("labels", version, level, index)
            cached = self._cache.get(cache_key)
            if cached is not None:
                return cached
            block = self._labels_block(level, region)
            if not block.any():
                return None  # nothing painted here: a missing chunk is the fill value 0 (transparent), no bytes
            data = _pad_to(block.astype(np.uint8, copy=False), chunk_shape).tobytes()
            self._cache.put(cache_key, data)
            return data
        # predictions
        if not self.session.is_trained:
            return None
        generation = int(self.session.generation)
        cache_key = ("predictions", generation, array.channels, level, index)
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        assembled = self._assemble_from_finer(array, generation, level, index)
        if assembled is not None:
            data = assembled.tobytes()
            self._cache.put(cache_key, data)
            return data
        full = tuple(slice(s.start, s.stop) for s in region)
        probs = np.asarray(self.session.predict(full))
        steps = tuple(s.step for s in region)
        if any(st != 1 for st in steps):
            probs = probs[tuple(slice(None, None, st) for st in steps)]
        if probs.ndim != self.ndim + 1:
            log.warning("chunk_server: predict returned shape %s for %s", probs.shape, full)
            return None
        n = array.channels
        if probs.shape[-1] != n:
            fixed = np.zeros(probs.shape[:-1] + (n,), dtype=np.float32)
            k = min(n, probs.shape[-1])
            fixed[..., :k] = probs[..., :k]
            probs = fixed
        scaled = np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)
        data = _pad_to(scaled, chunk_shape).tobytes()
        self._cache.put(cache_key, data)
        return data

    def _assemble_from_finer(
        self, array: _Array, generation: int, level: int, index: tuple[int, ...]
    ) -> np.ndarray | None:
        """Prediction chunk ``index`` of ``level`` made from the cached chunks of ``level - 1`` (every level is a
        strided subsample of the full resolution, so this equals predicting the region); None unless all of them are
        cached."""
        if level == 0:
            return None
        spatial = index[: self.ndim]
        ratios = [f // g for f, g in zip(array.factors[level], array.factors[level - 1])]
        if any(f != r * g for f, g, r in zip(array.factors[level], array.factors[level - 1], ratios)) or any(
            c % r for c, r in zip(array.chunk, ratios)
        ):
            return None
        finer_shape = array.level_shape(level - 1)
        out = np.zeros(array.chunk + (array.channels,), np.uint8)
        for child in itertools.product(*(range(i * r, (i + 1) * r) for i, r in zip(spatial, ratios))):
            if any(ci * c >= n for ci, c, n in zip(child, array.chunk, finer_shape)):
                continue  # beyond the image
            data = self._cache.get(("predictions", generation, array.channels, level - 1, child + (0,)))
            if data is None:
                return None
            block = np.frombuffer(data, np.uint8).reshape(out.shape)
            block = block[tuple(slice(None, None, r) for r in ratios)]
            at = tuple(
                slice((ci - i * r) * (c // r), (ci - i * r + 1) * (c // r))
                for ci, i, r, c in zip(child, spatial, ratios, array.chunk)
            )
            out[at] = block
        return out

    # ------------------------------------------------------------------ data access
    def _pyramid(self) -> list[tuple[tuple[int, ...], Any]]:
        """(spatial factors, array) of the source's own pyramid levels (OME-Zarr), full resolution first."""
        if self._source_levels is None:
            levels: list[tuple[tuple[int, ...], Any]] = [(tuple(1 for _ in self.spatial_shape), self._image)]
            source = getattr(self.session, "source", None)
            ca = self._channel_axis
            for level in list(getattr(source, "levels", None) or [])[1:]:
                try:
                    shape = [int(n) for i, n in enumerate(level.shape) if i != ca]
                    if len(shape) != self.ndim or (ca is not None and len(level.shape) != self.ndim + 1):
                        break
                    factors = tuple(max(1, round(b / n)) for b, n in zip(self.spatial_shape, shape))
                    # accept the usual floor/ceil rounding of halved shapes only
                    if any(n not in (b // f, -(-b // f)) for b, n, f in zip(self.spatial_shape, shape, factors)):
                        break
                    levels.append((factors, level))
                except Exception:  # a level we cannot use: stay with the full resolution
                    log.debug("chunk_server: ignoring source pyramid level", exc_info=True)
                    break
            self._source_levels = levels
        return self._source_levels

    def _read_raw(self, region: tuple[slice, ...]) -> np.ndarray:
        """Read a (possibly strided) spatial region of the image, channels reduced to what the raw layer shows.

        A strided region is read from the coarsest level of the source's own pyramid whose factors divide the
        steps, so a zoomed-out view of a large OME-Zarr touches only its small levels.
        """
        steps = tuple(sl.step or 1 for sl in region)
        array, index = self._image, list(region)
        if any(st > 1 for st in steps):
            for factors, level in reversed(self._pyramid()):
                if all(st % f == 0 for st, f in zip(steps, factors)):
                    if any(f > 1 for f in factors):
                        array = level
                        index = [
                            slice(sl.start // f, -(-sl.stop // f), st // f) for sl, st, f in zip(region, steps, factors)
                        ]
                    break
        expected = tuple(len(range(sl.start, sl.stop, st)) for sl, st in zip(region, steps))
        ca = self._channel_axis
        if ca is None:
            block = np.asarray(array[tuple(index)])
        else:
            index.insert(ca, slice(None))
            block = np.moveaxis(np.asarray(array[tuple(index)]), ca, -1)
            block = block[..., :3] if self.raw_channels == 3 else block[..., 0]
        if block.shape[: self.ndim] != expected:  # a pyramid level rounded its shape the other way
            block = _pad_to(block[tuple(slice(0, n) for n in expected)], expected + block.shape[self.ndim :])
        if block.dtype == np.bool_:
            block = block.astype(np.uint8)
        if self.raw.dtype == np.float32 and block.dtype != np.float32:
            block = block.astype(np.float32)
        return block

    def _labels_block(self, level: int, region: tuple[slice, ...]) -> np.ndarray:
        annotations = self.session.annotations
        full = tuple(slice(s.start, s.stop) for s in region)
        if level == 0:
            return np.asarray(annotations.labels(full), dtype=np.uint8)
        # Coarse levels: a downsampled label image where any labelled pixel of a cell shows (thin strokes stay
        # visible when zoomed out), built from the sparse labels when the annotations offer them.
        level_img = self._coarse_labels(level)
        if level_img is not None:
            factors = self.labels.factors[level]
            idx = tuple(slice(s.start // f, -(-s.stop // f)) for s, f in zip(region, factors))
            return level_img[idx]
        n_pixels = math.prod(s.stop - s.start for s in full)
        if n_pixels <= self.max_dense_label_pixels:
            return np.asarray(annotations.labels(full), dtype=np.uint8)[
                tuple(slice(None, None, s.step) for s in region)
            ]
        return np.zeros(tuple(len(range(s.start, s.stop, s.step)) for s in region), dtype=np.uint8)

    def _coarse_labels(self, level: int) -> np.ndarray | None:
        annotations = self.session.annotations
        if not hasattr(annotations, "labelled"):
            return None
        version = int(getattr(annotations, "version", 0))
        with self._label_lock:
            cached = self._label_levels.get((version, level))
            if cached is not None:
                return cached
            shape = self.labels.level_shape(level)
            if math.prod(shape) > self.max_dense_label_pixels:
                return None
            coords, values = annotations.labelled(None)
            coords = np.asarray(coords, dtype=np.int64).reshape(-1, self.ndim)
            values = np.asarray(values, dtype=np.uint8).reshape(-1)
            img = np.zeros(shape, dtype=np.uint8)
            if len(values):
                factors = np.asarray(self.labels.factors[level], dtype=np.int64)
                img[tuple((coords // factors).T)] = values
            # keep only the current version's levels
            for k in [k for k in self._label_levels if k[0] != version]:
                del self._label_levels[k]
            self._label_levels[(version, level)] = img
            return img
