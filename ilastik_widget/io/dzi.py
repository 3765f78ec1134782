"""Deep Zoom (DZI) pyramids: the ``.dzi`` descriptor and its ``<name>_files/<level>/<column>_<row>.<format>`` tiles,
from a local directory or an http(s) server.

:class:`DziLevel` is one level as an array ``(height, width[, channels])`` with numpy indexing: a read fetches and
decodes (with Pillow) only the tiles it touches, cuts away their overlap, and keeps decoded tiles in a cache bounded
in bytes. Every tile is checked against the size the descriptor implies; a missing or undecodable tile is a
:class:`~ilastik_widget.io.errors.SourceError` naming its path or URL.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import metadata as md
from .errors import SourceError, SourceNotFoundError
from .location import Location
from .metadata import DziInfo
from .remote import MAX_METADATA_BYTES

__all__ = ["DziLevel", "dzi_levels", "open_dzi"]

#: Bound of the decoded tiles kept per image (all levels).
DEFAULT_TILE_CACHE_BYTES = 128 * 2**20
_MODES = {"L": ("L", None), "I;16": ("I;16", None), "RGB": ("RGB", 3), "RGBA": ("RGBA", 4)}


class _TileCache:
    """Decoded tiles by (level, column, row), least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._tiles: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            t = self._tiles.get(key)
            if t is not None:
                self._tiles.move_to_end(key)
            return t

    def put(self, key, tile: np.ndarray) -> None:
        with self._lock:
            if key in self._tiles or tile.nbytes > self.max_bytes:
                return
            self._tiles[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes


class _Pyramid:
    """What all levels of one image share: where the tiles are, the descriptor, the pixel mode, the tile cache."""

    def __init__(self, files: Location, info: DziInfo, cache_bytes: int):
        self.files = files
        self.info = info
        self.mode = "RGB"
        self.pixels = "rgb8"  # how the tiles store their pixels (see tile_pixels)
        self.probe_digest = b""  # of the tile probe_mode read
        self.cache = _TileCache(cache_bytes)

    def __getstate__(self):
        return {
            "files": self.files,
            "info": self.info,
            "mode": self.mode,
            "pixels": self.pixels,
            "cache_bytes": self.cache.max_bytes,
        }

    def __setstate__(self, state):
        _Pyramid.__init__(self, state["files"], state["info"], state["cache_bytes"])
        self.mode = state["mode"]
        self.pixels = state.get("pixels", "other")

    def tile_key(self, level: int, col: int, row: int) -> str:
        return f"{level}/{col}_{row}.{self.info.format}"

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the pixels tile (col, row) holds, overlap included."""
        h, w = self.info.level_shape(level)
        ts, ov = self.info.tile_size, self.info.overlap
        x0, y0 = col * ts - (ov if col else 0), row * ts - (ov if row else 0)
        return y0, min((row + 1) * ts + ov, h), x0, min((col + 1) * ts + ov, w)

    def decode(self, data: bytes | None, level: int, col: int, row: int) -> np.ndarray:
        from PIL import Image

        where = self.files.key_where(self.tile_key(level, col, row))
        if data is None:
            raise SourceError(f"the Deep Zoom tile {where} is missing")
        y0, y1, x0, x1 = self.tile_box(level, col, row)
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.size != (x1 - x0, y1 - y0):  # checked before decoding: no decompression bombs
                    raise SourceError(
                        f"the Deep Zoom tile {where} is {im.size[0]}x{im.size[1]} pixels, expected "
                        f"{x1 - x0}x{y1 - y0} for tile size {self.info.tile_size} and overlap {self.info.overlap}"
                    )
                im.load()
                if im.mode != self.mode:
                    im = im.convert(self.mode)
                return np.asarray(im)
        except SourceError:
            raise
        except Exception as exc:  # Pillow raises many kinds for a damaged file
            raise SourceError(f"the Deep Zoom tile {where} cannot be decoded: {type(exc).__name__}: {exc}") from None

    def probe_level(self) -> int:
        """The coarsest level that fits in one tile (its tile is read to learn the pixel mode)."""
        return next(
            lv for lv in range(self.info.max_level + 1) if max(self.info.level_shape(lv)) <= self.info.tile_size
        )

    def serves_doubled_slashes(self) -> bool:
        """Whether the server answers ``<level>//<col>_<row>.<format>`` with the tile at the plain path (file
        servers collapse the slashes; object stores look up another key); asks for the probed tile so."""
        key = self.tile_key(self.probe_level(), 0, 0)
        try:
            doubled = self.files.read(key.replace("/", "//", 1), what="Deep Zoom tile", max_bytes=64 * 2**20)
        except SourceError:
            return False
        return doubled is not None and hashlib.sha256(doubled).digest() == self.probe_digest

    def probe_mode(self) -> None:
        """Decode the coarsest level that fits one tile to learn the pixel mode (grey, 16-bit, RGB or RGBA)."""
        from PIL import Image

        level = self.probe_level()
        key = self.tile_key(level, 0, 0)
        data = self.files.read(key, what="Deep Zoom tile")
        if data is None:
            raise SourceError(f"the Deep Zoom tile {self.files.key_where(key)} is missing")
        try:
            with Image.open(io.BytesIO(data)) as im:
                mode = im.mode
        except Exception as exc:
            raise SourceError(f"the Deep Zoom tile {self.files.key_where(key)} cannot be decoded: {exc}") from None
        if mode in ("I;16", "I;16B", "I;16L"):
            self.mode = "I;16"
        elif mode in ("L", "1"):
            self.mode = "L"
        elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in getattr(im, "info", {})):
            self.mode = "RGBA"
        else:
            self.mode = "RGB"
        self.pixels = tile_pixels(data, mode)
        self.probe_digest = hashlib.sha256(data).digest()
        self.decode(data, level, 0, 0)  # the tile itself must be right


def tile_pixels(data: bytes, mode: str) -> str:
    """How a tile stores its pixels: ``rgb8``, ``rgba8``, ``grey8``, ``grey16``, ``palette8`` or ``other``; from a
    PNG's header (Pillow reads 16-bit colour as 8-bit ``RGB``), else from Pillow's ``mode``."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26:
        depth, color = data[24], data[25]
        kinds = {(0, 8): "grey8", (0, 16): "grey16", (2, 8): "rgb8", (3, 8): "palette8", (6, 8): "rgba8"}
        return kinds.get((color, depth), "other")
    modes = {"RGB": "rgb8", "RGBA": "rgba8", "L": "grey8", "I;16": "grey16", "I;16B": "grey16", "P": "palette8"}
    return modes.get(mode, "other")


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ilastik-dzi")
        return _POOL


class DziLevel:
    """One level of a Deep Zoom pyramid as a read-only array ``(height, width)`` or ``(height, width, channels)``."""

    def __init__(self, pyramid: _Pyramid, level: int):
        self._p = pyramid
        self.level = int(level)
        h, w = pyramid.info.level_shape(level)
        _, channels = _MODES[pyramid.mode]
        self.shape = (h, w) if channels is None else (h, w, channels)
        self.dtype = np.dtype(np.uint16 if pyramid.mode == "I;16" else np.uint8)
        self.ndim = len(self.shape)
        ts = pyramid.info.tile_size
        self.chunks = (min(ts, h), min(ts, w)) + self.shape[2:]
        self.where = pyramid.files.where

    def __repr__(self) -> str:
        return f"DziLevel(level={self.level}, shape={self.shape}, where={self.where!r})"

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        from .tensorstore_source import _split_key

        index, post = _split_key(key, self.shape)
        box: list[tuple[int, int]] = []
        steps: list[slice | int] = []
        for k in index:
            if isinstance(k, slice):
                box.append((k.start, max(k.start, k.stop)))
                steps.append(slice(None, None, k.step or 1))
            else:
                box.append((k, k + 1))
                steps.append(0)
        (y0, y1), (x0, x1) = box[0], box[1]
        out = self._read_box(y0, y1, x0, x1)
        if self.ndim == 3:
            c0, c1 = box[2]
            out = out[:, :, c0:c1]
        sel = tuple(slice(None, None, s.step) if isinstance(s, slice) else 0 for s in steps)
        out = out[sel]
        return out[post] if post else out

    def _read_box(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        ts = self._p.info.tile_size
        out = np.zeros((y1 - y0, x1 - x0) + self.shape[2:], self.dtype)
        if y1 <= y0 or x1 <= x0:
            return out
        tiles = [(c, r) for r in range(y0 // ts, (y1 - 1) // ts + 1) for c in range(x0 // ts, (x1 - 1) // ts + 1)]
        decoded = {}
        todo = []
        for c, r in tiles:
            t = self._p.cache.get((self.level, c, r))
            if t is None:
                todo.append((c, r))
            else:
                decoded[(c, r)] = t
        if todo:
            keys = [self._p.tile_key(self.level, c, r) for c, r in todo]
            if len(todo) == 1:
                fetched = [self._fetch_decode(keys[0], *todo[0])]
            else:
                fetched = list(
                    _pool().map(lambda a: self._fetch_decode(*a), [(k, c, r) for k, (c, r) in zip(keys, todo)])
                )
            for (c, r), t in zip(todo, fetched):
                self._p.cache.put((self.level, c, r), t)
                decoded[(c, r)] = t
        for (c, r), t in decoded.items():
            ty0, _, tx0, _ = self._p.tile_box(self.level, c, r)
            # the tile's own part (without overlap) that falls inside the box
            oy0, oy1 = max(y0, r * ts), min(y1, (r + 1) * ts, self.shape[0])
            ox0, ox1 = max(x0, c * ts), min(x1, (c + 1) * ts, self.shape[1])
            if oy1 <= oy0 or ox1 <= ox0:
                continue
            out[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = t[oy0 - ty0 : oy1 - ty0, ox0 - tx0 : ox1 - tx0]
        return out

    def _fetch_decode(self, key: str, col: int, row: int) -> np.ndarray:
        data = self._p.files.read(key, what="Deep Zoom tile", max_bytes=64 * 2**20)
        return self._p.decode(data, self.level, col, row)


def dzi_levels(files: Location, info: DziInfo, cache_bytes: int = DEFAULT_TILE_CACHE_BYTES) -> list[DziLevel]:
    """The levels of a Deep Zoom image, full resolution first, down to the first that fits in one tile.

    ``files`` is the ``<name>_files`` location. One tile is read and decoded to learn the pixel mode.
    """
    pyramid = _Pyramid(files, info, cache_bytes)
    pyramid.probe_mode()
    out = []
    for level in range(info.max_level, -1, -1):
        out.append(DziLevel(pyramid, level))
        if max(info.level_shape(level)) <= info.tile_size:
            break
    return out


def level_factor(info: DziInfo, level: int) -> int:
    """Downsampling factor of ``level`` relative to the full resolution."""
    return int(math.pow(2, info.max_level - level))


def open_dzi(op, loc: Location):
    """Open the Deep Zoom image whose descriptor (``.dzi`` XML or its JSON form) is at ``loc``.

    Returns an :class:`~ilastik_widget.io.sources.ImageSource` (axes ``yx`` for grey, else ``yxc``, unless the
    options name them) whose levels go from the full resolution down to the first that fits in one tile. Raises
    :class:`~ilastik_widget.io.errors.SourceNotFoundError` when a local descriptor does not exist, and
    :class:`~ilastik_widget.io.errors.SourceError` when the descriptor or the tile read to learn the pixel type is not
    valid."""
    from dataclasses import replace

    from .opener import as_dask
    from .sources import _axes_for, _build, _check_axes

    if not loc.remote and not os.path.isfile(loc.root):
        raise SourceNotFoundError(f"no such file: {loc.root!r}")
    data = loc.read("", missing_ok=False, max_bytes=MAX_METADATA_BYTES, what="Deep Zoom descriptor")
    info = md.parse_dzi(data, loc.where)
    head, _, _ = loc.root.rpartition("/") if loc.remote else loc.root.rpartition(os.sep)
    stem = loc.name
    for suf in (".dzi.json", ".dzi", ".json", ".xml"):
        if stem.lower().endswith(suf):
            stem = stem[: -len(suf)]
            break
    files = replace(loc, root=f"{head}/{stem}_files" if loc.remote else os.path.join(head, f"{stem}_files"))
    levels = dzi_levels(files, info)
    n = levels[0].ndim
    ax = _check_axes(op.axes, n) if op.axes else _axes_for(n, op.channel_axis, "yxc"[:n])
    factors = [2 ** (info.max_level - lv.level) for lv in levels]
    # Neuroglancer's model is always x, y and three colour channels; a grey image has no channel axis here
    layout = op.layout(
        loc,
        "deepzoom",
        ("x", "y", "c^"),
        ax[1] + ax[0] + (ax[2] if n == 3 else "c"),
        fixed=[] if n == 3 else [(2, 0)],
        encodings=[f"{info.format}-{levels[0]._p.pixels}"],
        doubled_slashes=levels[0]._p.serves_doubled_slashes() if loc.remote and not op.with_token else None,
    )
    dask_levels = [as_dask(lv, "dzi", ax) for lv in levels]  # levels[0] is the array itself
    return _build(
        dask_levels[0],
        ax,
        base=levels[0],
        levels=dask_levels,
        level_scales=[(float(f), float(f)) for f in factors],
        storage=layout,
        **{**op.source_meta(loc, "deepzoom", "deepzoom"), "name": stem or "image"},
    )
