"""Export to what Neuroglancer, siibra-explorer and other OME-Zarr readers open: OME-Zarr 0.4 (zarr v2), OME-Zarr 0.5
(zarr v3 with sharding) and Neuroglancer precomputed (sharded or not), with voxel sizes and an optional pyramid.

Both writers take a numpy or dask array (or an :class:`~ilastik_widget.io.sources.ImageSource`, whose axes, voxel
size and units are used) with its axes (letters from ``"tczyx"``), write it block by block with tensorstore (a dask
array is never loaded whole: each dask task writes whole chunks, or whole shards of a sharded store, so workers in
other processes can write at once), then build each coarser level from the one written before it.

>>> write_ome_zarr(probabilities, "out.ome.zarr", axes="zyxc", scale=(2.0, 0.5, 0.5), units="micrometer")  # doctest: +SKIP
>>> write_precomputed(segmentation, "out_precomputed", axes="zyx", scale=(40, 4, 4), units="nanometer")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from .metadata import nanometers_per

__all__ = ["write_ome_zarr", "write_precomputed"]

_OME_ORDER = "tczyx"
_PRECOMPUTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")


def _ts():
    from .tensorstore_source import _ts as ts

    return ts()


class _Target:
    """A tensorstore array to write into with ``target[region] = block`` (what ``dask.array.store`` does); pickled
    as its spec, so a worker in another process reopens the same array (never creating or deleting it)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self._store = None

    def _open(self):
        if self._store is None:
            self._store = _ts().open(self.spec, open=True, read=True, write=True).result()
        return self._store

    def __setitem__(self, key, value) -> None:
        self._open()[key].write(np.asarray(value)).result()

    def __reduce__(self):
        return (_Target, (self.spec,))


def _inputs(data, axes, scale, units) -> tuple[Any, str, tuple[float, ...], tuple[str | None, ...]]:
    """(dask array, axes, voxel size per spatial axis, unit per spatial axis) from the arguments."""
    import dask.array as da

    from .sources import ImageSource, _check_axes

    if isinstance(data, ImageSource):
        axes = axes or data.axes
        scale = data.scale if scale is None else scale
        units = data.units if units is None else units
        data = data.array
    arr = (
        data if isinstance(data, da.Array) else da.from_array(np.asarray(data) if not hasattr(data, "shape") else data)
    )
    if axes is None:
        axes = {2: "yx", 3: "zyx"}.get(arr.ndim)
        if axes is None:
            raise ValueError(f"pass axes=... for a {arr.ndim}D array (letters from 'tczyx', e.g. 'zyxc')")
    axes = _check_axes(axes, arr.ndim)
    n_sp = sum(a in "zyx" for a in axes)
    given = scale if scale is not None else (1.0,) * n_sp
    try:
        scale = tuple(float(s) for s in given)
    except (TypeError, ValueError, OverflowError):  # not numbers, or an int beyond float range
        scale = ()
    if len(scale) != n_sp or not all(math.isfinite(s) and s > 0 for s in scale):
        raise ValueError(f"scale must be {n_sp} positive voxel sizes (one per spatial axis of {axes!r}), not {given!r}")
    if units is None or isinstance(units, str):
        units = (units,) * n_sp
    units = tuple(units)
    if len(units) != n_sp:
        raise ValueError(f"units must be one name or {n_sp} names, not {units}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"cannot write {arr.dtype} data: expected integers or floats")
    if any(n == 0 for n in arr.shape):
        raise ValueError(f"cannot write an empty array (shape {arr.shape})")
    return arr, axes, scale, units


def _prepare(path, overwrite: bool) -> str:
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists: pass overwrite=True to replace it")
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    return path


def _factors(shape_sp, scale_sp) -> tuple[int, ...]:
    """2 along each spatial axis still longer than 1 whose voxel size is less than twice the finest (Neuroglancer's
    rule: a very anisotropic axis is not halved until the others catch up)."""
    finest = min(s for s, n in zip(scale_sp, shape_sp) if n > 1) if any(n > 1 for n in shape_sp) else 1.0
    return tuple(2 if n > 1 and s < 2 * finest * (1 + 1e-9) else 1 for n, s in zip(shape_sp, scale_sp))


def _downsample(arr, axes: str, factors: dict[int, int], how: str):
    """One level coarser: ``factors`` per axis index; ``"mean"`` averages each block (padded at the edge by
    repeating the last voxel), ``"nearest"`` takes its first voxel (for labels)."""
    import dask.array as da

    if how == "nearest":
        return arr[tuple(slice(None, None, factors.get(i, 1)) for i in range(arr.ndim))]
    pad = [(0, (-n) % factors.get(i, 1)) for i, n in enumerate(arr.shape)]
    if any(p for _, p in pad):
        arr = da.pad(arr, pad, mode="edge")
    out = da.coarsen(np.mean, arr.astype(np.float32), {i: f for i, f in factors.items() if f > 1})
    if np.dtype(arr.dtype).kind in "iu":
        info = np.iinfo(arr.dtype)
        out = da.clip(da.round(out), info.min, info.max)
    return out.astype(arr.dtype)


def _store(arr, target: _Target, write_chunks: Sequence[int]) -> None:
    """Write ``arr`` with each dask task covering whole write chunks (shards), so no two tasks share one."""
    import dask.array as da

    blocks = tuple(max(1, int(c)) for c in write_chunks)
    # "tasks": a written chunk is cut from the blocks it overlaps, which are dropped once written (dask's shuffle on a
    # cluster would hold them in the workers' memory)
    arr = arr.rechunk(tuple(min(b, n) for b, n in zip(blocks, arr.shape)), method="tasks")
    da.store(arr, cast(Any, target), lock=False)  # any object with __setitem__ is a target


# ---------------------------------------------------------------------- OME-Zarr
def write_ome_zarr(
    data,
    path,
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    version: str = "0.5",
    chunks: Sequence[int] | None = None,
    shard: Sequence[int] | None = None,
    levels: int = 1,
    downsample: str = "mean",
    name: str | None = None,
    channel_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Write an OME-Zarr image: 0.4 (zarr v2, ``/``-separated chunk keys) or 0.5 (zarr v3, sharded).

    Parameters
    ----------
    data : numpy array, dask array or ImageSource
        The image; axes are reordered to OME-Zarr's ``t, c, z, y, x`` order if needed.
    path : str or path
        The folder to write (``.ome.zarr`` by convention).
    axes : str, optional
        One letter per axis of ``data`` from ``"tczyx"`` (default ``"yx"``/``"zyx"``, or the source's).
    scale, units : optional
        Voxel size and unit (e.g. ``"micrometer"``) of each spatial axis, in the order of ``axes``.
    version : {"0.5", "0.4"}
    chunks : sequence of int, optional
        Chunk shape per axis of ``data`` (default 64 per spatial axis in 3D, 256 in 2D, 1 per channel/time).
    shard : sequence of int, optional
        For 0.5: shard shape per axis, a multiple of ``chunks`` (default 4 chunks per spatial axis in 3D, 8 in 2D).
    levels : int
        Pyramid levels to write (each halves y, x and, unless much coarser already, z).
    downsample : {"mean", "nearest"}
        How coarser levels are made: averages (images, probabilities) or the first voxel (labels).
    name, channel_names : optional
        The multiscale's ``name`` and the ``omero`` channel labels.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    str
        The absolute path written.
    """
    if version not in ("0.4", "0.5"):
        raise ValueError(f"version must be '0.4' (zarr v2) or '0.5' (zarr v3), not {version!r}")
    if downsample not in ("mean", "nearest"):
        raise ValueError(f"downsample must be 'mean' or 'nearest', not {downsample!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 32:
        raise ValueError(f"levels must be an integer from 1 to 32, not {levels!r}")
    arr, axes, scale, units = _inputs(data, axes, scale, units)
    if chunks is not None and len(chunks) != arr.ndim:
        raise ValueError(f"chunks must have {arr.ndim} entries, one per axis of {axes!r}")
    if shard is not None and len(shard) != arr.ndim:
        raise ValueError(f"shard must have {arr.ndim} entries, one per axis of {axes!r}")
    # OME-Zarr wants t, c, z, y, x; scale and units follow the spatial axes
    given: str = axes
    order = sorted(range(len(given)), key=lambda i: _OME_ORDER.index(given[i]))
    spatial = [i for i, a in enumerate(axes) if a in "zyx"]
    scale = tuple(scale[spatial.index(i)] for i in order if i in spatial)
    units = tuple(units[spatial.index(i)] for i in order if i in spatial)
    arr = arr.transpose(order)
    chunks = tuple(chunks[i] for i in order) if chunks is not None else None
    shard = tuple(shard[i] for i in order) if shard is not None else None
    axes = "".join(axes[i] for i in order)
    path = _prepare(path, overwrite)
    os.makedirs(path)
    n_sp = len(scale)
    base_chunk = 64 if n_sp == 3 else 256
    datasets, level, level_scale, shift = [], arr, scale, (0.0,) * n_sp
    for i in range(levels):
        shape = level.shape
        ch = tuple(min(int(c), n) for c, n in zip(chunks or [base_chunk if a in "zyx" else 1 for a in axes], shape))
        if any(c < 1 for c in ch):
            raise ValueError(f"chunks must be positive, not {chunks}")
        sub = os.path.join(path, str(i))
        if version == "0.4":
            write_shape = ch
            spec = _zarr2_spec(sub, shape, ch, level.dtype)
        else:
            per = shard or [c * (4 if n_sp == 3 else 8) if a in "zyx" else c for c, a in zip(ch, axes)]
            write_shape = tuple(min(-(-int(s) // c) * c, -(-n // c) * c) for s, c, n in zip(per, ch, shape))
            if any(int(s) % c for s, c in zip(per, ch)):
                raise ValueError(f"shard {list(per)} must be a multiple of chunks {list(ch)}")
            spec = _zarr3_spec(sub, shape, ch, write_shape, level.dtype, axes)
        _ts().open(spec, create=True).result()
        _store(level, _Target(spec), write_shape)
        full = iter(level_scale)
        shifts = iter(shift)
        tr: list[dict] = [{"type": "scale", "scale": [next(full) if a in "zyx" else 1.0 for a in axes]}]
        if any(shift):
            tr.append({"type": "translation", "translation": [next(shifts) if a in "zyx" else 0.0 for a in axes]})
        datasets.append({"path": str(i), "coordinateTransformations": tr})
        if i + 1 < levels:
            f = _factors([level.shape[j] for j, a in enumerate(axes) if a in "zyx"], level_scale)
            if all(x == 1 for x in f):
                break
            factors = dict(zip([j for j, a in enumerate(axes) if a in "zyx"], f))
            written = _reader(spec)
            level = _downsample(written, axes, factors, downsample)
            if downsample == "mean":  # a coarse voxel's centre is the centre of the fine voxels it averages
                shift = tuple(t + (k - 1) * s / 2 for t, k, s in zip(shift, f, level_scale))
            level_scale = tuple(s * k for s, k in zip(level_scale, f))
    _write_ome_group(path, version, axes, units, datasets, name, channel_names)
    return path


def _zarr2_spec(path, shape, chunks, dtype) -> dict:
    return {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": path + "/"},
        "metadata": {
            "shape": list(shape),
            "chunks": list(chunks),
            "dtype": np.dtype(dtype).str,
            "compressor": {"id": "zstd", "level": 3},
            "dimension_separator": "/",
            "fill_value": 0,
        },
    }


def _zarr3_spec(path, shape, chunks, shard, dtype, axes) -> dict:
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 3}}]
    sharded = tuple(shard) != tuple(chunks)
    codecs = (
        [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunks),
                    "codecs": inner,
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                    "index_location": "end",
                },
            }
        ]
        if sharded
        else inner
    )
    return {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": path + "/"},
        "metadata": {
            "shape": list(shape),
            "data_type": np.dtype(dtype).name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shard)}},
            "chunk_key_encoding": {"name": "default"},
            "codecs": codecs,
            "fill_value": 0,
            "dimension_names": list(axes),
        },
    }


def _reader(spec: dict):
    """The array just written, as a dask array read back from disk (so a pyramid level never recomputes the one
    before it)."""
    import dask.array as da

    from .tensorstore_source import TensorStoreArray, make_context

    store = _ts().open(spec, open=True, read=True, context=make_context()).result()
    arr = TensorStoreArray(store, where=spec["kvstore"]["path"])
    chunks = []
    for c, n in zip(arr.chunks, arr.shape):
        chunks.append(min(n, max(c, 2 * c if n > 2 * c else n)))
    return da.from_array(arr, chunks=tuple(chunks), meta=np.empty((0,) * arr.ndim, arr.dtype), lock=False)


def _write_ome_group(path, version, axes, units, datasets, name, channel_names) -> None:
    types = {"t": "time", "c": "channel"}
    units_it = iter(units)
    axes_doc = []
    for a in axes:
        entry: dict[str, Any] = {"name": a, "type": types.get(a, "space")}
        if a in "zyx":
            u = next(units_it)
            if u:
                entry["unit"] = u
        axes_doc.append(entry)
    ms: dict[str, Any] = {"axes": axes_doc, "datasets": datasets}
    if name:
        ms["name"] = str(name)
    omero = {"channels": [{"label": str(c)} for c in channel_names]} if channel_names else None
    if version == "0.4":
        attrs: dict[str, Any] = {"multiscales": [{**ms, "version": "0.4"}]}
        if omero:
            attrs["omero"] = omero
        _write_json(os.path.join(path, ".zgroup"), {"zarr_format": 2})
        _write_json(os.path.join(path, ".zattrs"), attrs)
    else:
        ome: dict[str, Any] = {"version": "0.5", "multiscales": [ms]}
        if omero:
            ome["omero"] = omero
        _write_json(
            os.path.join(path, "zarr.json"), {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}
        )


def _write_json(path: str, doc: dict) -> None:
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=2)


# ---------------------------------------------------------------------- Neuroglancer precomputed
def write_precomputed(
    data,
    path,
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str | None] | None = None,
    chunks: Sequence[int] | None = None,
    sharded: bool = False,
    levels: int = 1,
    downsample: str = "mean",
    encoding: str = "raw",
    volume_type: str = "image",
    overwrite: bool = False,
) -> str:
    """Write a Neuroglancer precomputed volume (``info`` plus one folder per scale), sharded or not.

    Parameters
    ----------
    data : numpy array, dask array or ImageSource
        2D (``yx``) or 3D (``zyx``) with an optional channel axis (``c``); no time axis.
    scale, units : optional
        Voxel size and unit of each spatial axis (order of ``axes``); converted to nanometres. Without units the
        voxel size is taken as nanometres.
    chunks : sequence of 3 int, optional
        Chunk size in x, y, z (default 64, 64, 64; 256, 256, 1 for 2D).
    sharded : bool
        Write ``neuroglancer_uint64_sharded_v1`` shards (identity hash: each shard a brick of chunks) instead of
        one file per chunk.
    levels, downsample
        As for :func:`write_ome_zarr` (``"nearest"`` for segmentations).
    encoding : {"raw", "jpeg", "png", "compressed_segmentation"}
    volume_type : {"image", "segmentation"}
    overwrite : bool
        Replace an existing ``path``.
    """
    if volume_type not in ("image", "segmentation"):
        raise ValueError(f"volume_type must be 'image' or 'segmentation', not {volume_type!r}")
    if encoding not in ("raw", "jpeg", "png", "compressed_segmentation"):
        raise ValueError(f"encoding must be 'raw', 'jpeg', 'png' or 'compressed_segmentation', not {encoding!r}")
    if downsample not in ("mean", "nearest"):
        raise ValueError(f"downsample must be 'mean' or 'nearest', not {downsample!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 32:
        raise ValueError(f"levels must be an integer from 1 to 32, not {levels!r}")
    arr, axes, scale, units = _inputs(data, axes, scale, units)
    if "t" in axes:
        raise ValueError("precomputed volumes have no time axis: write one time point at a time")
    if arr.dtype.name not in _PRECOMPUTED_DTYPES:
        raise ValueError(
            f"precomputed has no {arr.dtype} data type: convert to one of {', '.join(_PRECOMPUTED_DTYPES)}"
        )
    nm = []
    for u, s in zip(units, scale):
        per = nanometers_per(u) if u else 1.0
        if per is None:
            raise ValueError(f"unknown unit {u!r}: give nanometer, micrometer, millimeter...")
        nm.append(s * per)
    # to x, y, z, c (z of length 1 for 2D, c of length 1 without channels)
    import dask.array as da

    xyz = [axes.index(a) if a in axes else None for a in "xyz"]
    spatial = [i for i, a in enumerate(axes) if a in "zyx"]
    res = [nm[spatial.index(i)] if i is not None else 1.0 for i in xyz]

    order = [i for i in xyz if i is not None] + ([axes.index("c")] if "c" in axes else [])
    arr = arr.transpose(order)
    if xyz[2] is None:
        arr = arr[:, :, None]
    if "c" not in axes:
        arr = arr[..., None]
    arr = da.asarray(arr)
    flat = arr.shape[2] == 1
    ch = tuple(int(c) for c in (chunks or ((256, 256, 1) if flat else (64, 64, 64))))
    if len(ch) != 3 or any(c < 1 for c in ch):
        raise ValueError(f"chunks must be 3 positive sizes (x, y, z), not {chunks}")
    path = _prepare(path, overwrite)
    level, level_res = arr, list(res)
    for i in range(levels):
        size = level.shape[:3]
        chunk = tuple(min(c, n) for c, n in zip(ch, size))
        scale_meta: dict[str, Any] = {
            "key": "_".join(f"{r:g}" for r in level_res),
            "size": list(size),
            "resolution": list(level_res),
            "chunk_size": list(chunk),
            "encoding": encoding,
            "voxel_offset": [0, 0, 0],
        }
        write_shape: tuple[int, ...] = (*chunk, arr.shape[3])
        if sharded:
            scale_meta["sharding"], brick = _sharding(size, chunk)
            write_shape = (*brick, arr.shape[3])
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": path + "/"},
            "multiscale_metadata": {"type": volume_type, "data_type": arr.dtype.name, "num_channels": arr.shape[3]},
            "scale_metadata": scale_meta,
        }
        _ts().open(spec, create=True, open=True).result()
        target_spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": spec["kvstore"],
            "scale_metadata": {"key": scale_meta["key"]},
        }
        _store(level, _Target(target_spec), write_shape)
        if i + 1 < levels:
            f = _factors(size, level_res)
            if all(x == 1 for x in f):
                break
            level = _downsample(_reader(target_spec), "xyzc", dict(enumerate(f)), downsample)
            level_res = [r * k for r, k in zip(level_res, f)]
    return path


def _sharding(size, chunk) -> tuple[dict, tuple[int, ...]]:
    """Sharding parameters with the identity hash, and the brick of voxels each shard holds (whole shards are
    written by one task each). Shards of up to 2**9 chunks; minishards of up to 2**3."""
    grid = [-(-n // c) for n, c in zip(size, chunk)]
    bits = [max(0, math.ceil(math.log2(g))) if g > 1 else 0 for g in grid]
    total = sum(bits)
    per_shard = min(9, total)
    # compressed Morton code: chunk-id bits are taken round-robin from the axes that still have bits
    taken = [0, 0, 0]
    n = 0
    for level in range(max(bits, default=0)):
        for d in range(3):
            if n < per_shard and level < bits[d]:
                taken[d] += 1
                n += 1
    minishard = min(3, per_shard)
    sharding = {
        "@type": "neuroglancer_uint64_sharded_v1",
        "preshift_bits": per_shard - minishard,
        "hash": "identity",
        "minishard_bits": minishard,
        "shard_bits": total - per_shard,
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip",
    }
    brick = tuple(c * 2**t for c, t in zip(chunk, taken))
    return sharding, brick
