"""Geometry of one multiscale array the viewer reads: levels, chunk grid, and its metadata as a zarr v2 / OME-Zarr 0.4
group (2D images) or as Neuroglancer precomputed (volumes).

A volume is served in the precomputed format because it lets every level offer several chunk layouts: chunks flat
along z, along y and along x, each one voxel thick. Neuroglancer's slice views pick, per panel, the layout whose chunks
cover the most of the panel's plane, so each panel reads (and the kernel computes) the plane it shows, not the cubes
around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x")}


@dataclass(frozen=True)
class Pyramid:
    """Levels of one array: every level is a strided subsample of the full resolution by integer ``factors``.

    Parameters
    ----------
    spatial_shape : tuple of int
        Full-resolution shape in array order ((y, x) or (z, y, x)).
    chunk : tuple of int
        Chunk shape of every level (spatial axes).
    factors : tuple of tuple of int
        Per level, the downsampling factor of each spatial axis (level 0: all ones).
    dtype : numpy.dtype
    channels : int or None
        Length of a trailing channel axis stored whole in every chunk; None = no channel axis.
    """

    spatial_shape: tuple[int, ...]
    chunk: tuple[int, ...]
    factors: tuple[tuple[int, ...], ...]
    dtype: np.dtype
    channels: int | None

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.spatial_shape)

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.factors)

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """Shape of one stored chunk, channel axis included."""
        return self.chunk + ((self.channels,) if self.channels is not None else ())

    @property
    def chunk_nbytes(self) -> int:
        """Size of one stored chunk in bytes."""
        return int(np.prod(self.chunk_shape)) * self.dtype.itemsize

    def level_shape(self, level: int) -> tuple[int, ...]:
        """Spatial shape of ``level`` (the full shape divided by its factors, rounded up)."""
        return tuple(-(-s // f) for s, f in zip(self.spatial_shape, self.factors[level]))

    def grid_shape(self, level: int) -> tuple[int, ...]:
        """Number of chunks along each spatial axis of ``level``."""
        return tuple(-(-s // c) for s, c in zip(self.level_shape(level), self.chunk))

    def zarray(self, level: int) -> dict:
        """The ``.zarray`` of one level (uncompressed, C order, fill value 0)."""
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
        """The group's OME-Zarr 0.4 ``multiscales``; ``voxel_scale`` is the relative voxel size per spatial axis."""
        ndim = self.ndim
        voxel_scale = list(voxel_scale) if voxel_scale is not None else [1.0] * ndim
        axes = [{"name": n, "type": "space"} for n in AXIS_NAMES[ndim]]
        if self.channels is not None:
            axes.append({"name": "c", "type": "channel"})
        datasets = []
        for level, factors in enumerate(self.factors):
            spatial = [float(f) * v for f, v in zip(factors, voxel_scale)]
            channel = [1.0] if self.channels is not None else []
            # OME-Zarr puts the centre of voxel i at i * scale, and Neuroglancer then lets voxel i span
            # [i - 1/2, i + 1/2). The viewer works in Neuroglancer's own convention, voxel i on [i, i + 1) with its
            # centre at i + 1/2, so every level is shifted by half its voxel size: without it a cross-section at a
            # voxel centre lies on the border between two voxels of the data (a volume's xy panel showed the labels
            # of plane i + 1 while strokes landed on plane i).
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
        """Full-resolution region (with the level's step) of chunk ``index`` of ``level``; None if it is not a chunk
        of this array (wrong length, a channel index other than 0, outside the grid)."""
        if not 0 <= level < self.n_levels:
            return None
        ndim = self.ndim
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
            region.append(slice(i * c * f, min(s, (i + 1) * c * f), f))
        return tuple(region)

    # ------------------------------------------------------------------ precomputed (volumes)
    def flat_chunks(self) -> list[tuple[int, ...]]:
        """The chunk shapes of a volume's levels in array order: flat along z, along y, along x (one voxel thick)."""
        return [tuple(1 if a == flat else c for a, c in enumerate(self.chunk)) for flat in range(self.ndim)]

    def precomputed_info(self, voxel_scale: Sequence[float] | None = None) -> dict:
        """The ``info`` of the array as a Neuroglancer precomputed multiscale volume (x, y, z order, raw encoding).

        Voxel i of a level spans [i, i + 1) of that level's voxels, as the viewer's other layers place voxels.
        """
        voxel_scale = list(voxel_scale) if voxel_scale is not None else [1.0] * self.ndim
        scales = []
        for level, factors in enumerate(self.factors):
            scales.append(
                {
                    "key": str(level),
                    "size": list(reversed(self.level_shape(level))),
                    "resolution": [float(f) * v for f, v in zip(reversed(factors), reversed(voxel_scale))],
                    "voxel_offset": [0, 0, 0],
                    "chunk_sizes": [list(reversed(c)) for c in self.flat_chunks()],
                    "encoding": "raw",
                }
            )
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": "image",
            "data_type": self.dtype.name,
            "num_channels": self.channels or 1,
            "scales": scales,
        }

    def box_region(self, level: int, box: Sequence[tuple[int, int]]) -> tuple[slice, ...] | None:
        """Full-resolution region (with the level's step) of the precomputed chunk ``box`` ((start, stop) per axis,
        array order, level voxels); None unless it is exactly a chunk of one of the flat layouts."""
        if not 0 <= level < self.n_levels or len(box) != self.ndim:
            return None
        shape = self.level_shape(level)
        for chunk in self.flat_chunks():
            if all(a % c == 0 and b == min(a + c, n) and a < n for (a, b), c, n in zip(box, chunk, shape)):
                break
        else:
            return None
        return tuple(
            slice(a * f, min(s, b * f), f) for (a, b), f, s in zip(box, self.factors[level], self.spatial_shape)
        )

    def chunk_indices(self, level: int) -> list[tuple[int, ...]]:
        """Every chunk index of a level, C order (with the channel index 0 when there is a channel axis)."""
        import itertools

        tail = (0,) if self.channels is not None else ()
        return [idx + tail for idx in itertools.product(*(range(n) for n in self.grid_shape(level)))]


def pyramid_factors(spatial_shape: Sequence[int], chunk: Sequence[int], min_size: int) -> tuple[tuple[int, ...], ...]:
    """Factors per level: halve every axis still larger than a chunk until the whole image fits about one chunk or its
    largest side is at most ``min_size``."""
    factors = [tuple(1 for _ in spatial_shape)]
    while len(factors) <= 24:
        prev = factors[-1]
        shape = [-(-s // f) for s, f in zip(spatial_shape, prev)]
        if all(s <= c for s, c in zip(shape, chunk)) or max(shape) <= min_size:
            break
        nxt = tuple(f * 2 if s > c else f for s, c, f in zip(shape, chunk, prev))
        if nxt == prev:
            break
        factors.append(nxt)
    return tuple(factors)


def pad_to(block: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``block`` zero-padded at the end of each axis to ``shape`` (edge chunks are stored whole)."""
    if tuple(block.shape) == tuple(shape):
        return np.ascontiguousarray(block)
    out = np.zeros(shape, dtype=block.dtype)
    out[tuple(slice(0, s) for s in block.shape)] = block
    return out
