"""Reads the image for the viewer's raw layer: strided regions for coarse levels, from the source's own pyramid when
it has one, the channels the layer shows, dtypes Neuroglancer renders, and each channel's automatic display range."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .contrast import auto_range, histogram
from .pyramid import pad_to

log = logging.getLogger(__name__)

#: dtypes Neuroglancer reads from zarr and renders; anything else is shown as float32.
NATIVE_DTYPES = frozenset(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32"))
#: The most channels the raw layer shows (each in its own colour); further channels are used by the classifier only.
MAX_SHOWN_CHANNELS = 8


class RawReader:
    """The session's image as the raw layer shows it.

    A single-channel image is shown in grey. Of a multichannel image the layer gets every channel (up to
    :data:`MAX_SHOWN_CHANNELS`) as a trailing channel axis: an 8-bit image of 3 or 4 channels is shown as RGB colour
    (:attr:`rgb`), any other as a composite, each channel in its own colour.

    Parameters
    ----------
    session : Session
        Its ``image``, ``channel_axis``, ``spatial_shape`` and ``source`` (an ImageSource or None) are read.
    """

    def __init__(self, session: Any):
        self.session = session
        image = session.image
        self.image = image
        self.spatial_shape: tuple[int, ...] = tuple(int(s) for s in session.spatial_shape)
        self.ndim = len(self.spatial_shape)
        ca = session.channel_axis
        self.channel_axis: int | None = ca
        self.n_input_channels: int | None = None if ca is None else int(image.shape[ca])
        source_dtype = np.dtype(image.dtype)
        n = self.n_input_channels
        #: Whether the image is shown as RGB colour: 8-bit, 3 or 4 channels (an alpha channel is not shown).
        self.rgb = n in (3, 4) and source_dtype == np.uint8
        #: Channels the layer shows (None for a single-channel image).
        self.channels: int | None = None if n is None or n == 1 else 3 if self.rgb else min(n, MAX_SHOWN_CHANNELS)
        if source_dtype == np.bool_:
            self.dtype = np.dtype(np.uint8)
        elif source_dtype in NATIVE_DTYPES:
            self.dtype = source_dtype
        else:
            self.dtype = np.dtype(np.float32)
        self._levels: list[tuple[tuple[int, ...], Any]] | None = None
        self._display_ranges: list[tuple[float, float]] | None = None
        self._histograms: list[dict] | None = None

    def source_levels(self) -> list[tuple[tuple[int, ...], Any]]:
        """(spatial factors, array) of the source's own pyramid levels (OME-Zarr), full resolution first."""
        if self._levels is None:
            levels: list[tuple[tuple[int, ...], Any]] = [(tuple(1 for _ in self.spatial_shape), self.image)]
            ca = self.channel_axis
            for level in list(getattr(self.session.source, "levels", None) or [])[1:]:
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
                    log.debug("raw_reader: ignoring a source pyramid level", exc_info=True)
                    break
            self._levels = levels
        return self._levels

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        """A (possibly strided) spatial region, channels last when shown in colour, in :attr:`dtype`.

        A strided region is read from the coarsest level of the source's own pyramid whose factors divide the
        steps, so a zoomed-out view of a large OME-Zarr touches only its small levels.
        """
        steps = tuple(sl.step or 1 for sl in region)
        array, index = self.image, list(region)
        if any(st > 1 for st in steps):
            for factors, level in reversed(self.source_levels()):
                if all(st % f == 0 for st, f in zip(steps, factors)):
                    if any(f > 1 for f in factors):
                        array = level
                        index = [
                            slice(sl.start // f, -(-sl.stop // f), st // f) for sl, st, f in zip(region, steps, factors)
                        ]
                    break
        expected = tuple(len(range(sl.start, sl.stop, st)) for sl, st in zip(region, steps))
        ca = self.channel_axis
        if ca is None:
            block = np.asarray(array[tuple(index)])
        else:
            index.insert(ca, slice(None))
            block = np.moveaxis(np.asarray(array[tuple(index)]), ca, -1)
            block = block[..., : self.channels] if self.channels is not None else block[..., 0]
        if block.shape[: self.ndim] != expected:  # a pyramid level rounded its shape the other way
            block = pad_to(block[tuple(slice(0, n) for n in expected)], expected + block.shape[self.ndim :])
        return block.astype(self.dtype, copy=False)

    def display_ranges(self) -> list[tuple[float, float]]:
        """Automatic display range of each channel shown (see :mod:`~ilastik_widget.serving.contrast`), from a
        strided sample of about 256 pixels per axis (never the whole image)."""
        if self._display_ranges is None:
            steps = tuple(max(1, s // 256) for s in self.spatial_shape)
            sample = np.asarray(self.read(tuple(slice(0, s, st) for s, st in zip(self.spatial_shape, steps))))
            planes = [sample] if self.channels is None else [sample[..., c] for c in range(self.channels)]
            integer = self.dtype.kind in "iu"
            self._display_ranges = [auto_range(plane, integer) for plane in planes]
            # the panel's contrast sliders draw them: from the same sample, read once
            self._histograms = [histogram(p, r, integer) for p, r in zip(planes, self._display_ranges)]
        return self._display_ranges

    def histograms(self) -> list[dict]:
        """Histogram of each channel shown, from the sample of :meth:`display_ranges` (see
        :func:`~ilastik_widget.serving.contrast.histogram`)."""
        self.display_ranges()
        return self._histograms or []

    def display_range(self) -> tuple[float, float]:
        """The display range of the first channel shown."""
        return self.display_ranges()[0]

    def forget(self) -> None:
        """Drop the cached display ranges (the image changed)."""
        self._display_ranges = None
        self._histograms = None
