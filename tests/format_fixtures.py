"""Writers of test data in every format, independent of the package: tensorstore for zarr v3 (sharded), N5 and
precomputed (sharded too), Pillow for Deep Zoom. Arrays are given in z, y, x order (channels last for RGB)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import tensorstore as ts


def pyramid(a: np.ndarray, n_levels: int, spatial=(0, 1, 2)) -> list[np.ndarray]:
    """Levels by striding (2x along the spatial axes), full resolution first."""
    out = [a]
    for _ in range(n_levels - 1):
        sl = tuple(slice(None, None, 2) if i in spatial else slice(None) for i in range(a.ndim))
        out.append(out[-1][sl])
    return out


def write_precomputed(path, a: np.ndarray, resolution=(4.0, 4.0, 40.0), chunk=(16, 16, 8), n_levels=2,
                      sharded=False, offset=(0, 0, 0), encoding="raw", channels_last=False):  # fmt: skip
    """A precomputed volume of ``a`` (z, y, x, or z, y, x, c with ``channels_last``); resolution in x, y, z nm."""
    levels = pyramid(a, n_levels, spatial=(1, 2))  # x, y halved; z kept
    for i, lv in enumerate(levels):
        xyzc = np.moveaxis(lv, -1, 0).T if channels_last else lv.T[..., None]
        res = [resolution[0] * 2**i, resolution[1] * 2**i, resolution[2]]
        scale = {
            "size": list(xyzc.shape[:3]),
            "resolution": res,
            "chunk_size": list(chunk),
            "encoding": encoding,
            "voxel_offset": [o // 2**i if d < 2 else o for d, o in enumerate(offset)],
        }
        if sharded:
            scale["sharding"] = {
                "@type": "neuroglancer_uint64_sharded_v1",
                "preshift_bits": 1,
                "hash": "identity",
                "minishard_bits": 2,
                "shard_bits": 2,
                "minishard_index_encoding": "gzip",
                "data_encoding": "gzip",
            }
        spec = {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": os.fspath(path) + "/"},
            "multiscale_metadata": {"type": "image", "data_type": a.dtype.name, "num_channels": xyzc.shape[3]},
            "scale_metadata": scale,
        }
        t = ts.open(spec, create=True, open=True).result()
        t[ts.d[:].translate_to[0]].write(xyzc).result()
    return path


def write_n5(path, a: np.ndarray, resolution=(0.5, 0.5, 2.0), n_levels=2, block=(16, 16, 8), style="scales"):
    """An N5 multiscale group ``s0, s1, ...`` of ``a`` (z, y, x); resolution in x, y, z order (micrometres).

    ``style``: ``"scales"`` (group ``scales`` + ``resolution``/``units`` + ``axes``) or ``"pixelResolution"``
    (per-dataset ``downsamplingFactors`` + group ``pixelResolution``, the n5-viewer way).
    """
    os.makedirs(path, exist_ok=True)
    levels = pyramid(a, n_levels, spatial=(1, 2))
    factors = [[2**i, 2**i, 1] for i in range(n_levels)]
    for i, lv in enumerate(levels):
        t = ts.open(
            {
                "driver": "n5",
                "kvstore": {"driver": "file", "path": os.path.join(os.fspath(path), f"s{i}") + "/"},
                "metadata": {
                    "dimensions": list(lv.T.shape),
                    "blockSize": list(block),
                    "dataType": a.dtype.name,
                    "compression": {"type": "gzip"},
                },
            },
            create=True,
            delete_existing=True,
        ).result()
        t.write(lv.T).result()
        if style == "pixelResolution":
            attrs_path = os.path.join(path, f"s{i}", "attributes.json")
            with open(attrs_path) as fh:
                attrs = json.load(fh)
            attrs["downsamplingFactors"] = factors[i]
            with open(attrs_path, "w") as fh:
                json.dump(attrs, fh)
    group: dict[str, object] = {"n5": "2.5.1"}
    if style == "scales":
        group.update(scales=factors, resolution=list(resolution), units=["um", "um", "um"], axes=["x", "y", "z"])
    else:
        group.update(pixelResolution={"dimensions": list(resolution), "unit": "um"})
    with open(os.path.join(path, "attributes.json"), "w") as fh:
        json.dump(group, fh)
    return path


def write_zarr3_sharded(path, a: np.ndarray, shard, inner, dimension_names=None):
    """A zarr v3 array of ``a`` with the sharding codec (shards of ``shard``, inner chunks of ``inner``)."""
    meta = {
        "shape": list(a.shape),
        "data_type": a.dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shard)}},
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(inner),
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                },
            }
        ],
    }
    if dimension_names:
        meta["dimension_names"] = list(dimension_names)
    t = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": os.fspath(path) + "/"}, "metadata": meta},
        create=True,
        delete_existing=True,
    ).result()
    t.write(a).result()
    return path


def write_ome_zarr3_sharded(path, a: np.ndarray, axes: str, scale, n_levels=2, shard=None, inner=None):
    """OME-Zarr 0.5 (zarr v3, sharded) of ``a``, levels halved along y and x."""
    os.makedirs(path, exist_ok=True)
    spatial = tuple(i for i, ax in enumerate(axes) if ax in "yx")
    datasets = []
    for i, lv in enumerate(pyramid(a, n_levels, spatial=spatial)):
        sh = shard or tuple(min(n, 32) for n in lv.shape)
        inn = inner or tuple(max(1, s // 2) if ax in "zyx" else s for s, ax in zip(sh, axes))
        sh = tuple(math.ceil(s / k) * k for s, k in zip(sh, inn))
        write_zarr3_sharded(os.path.join(path, str(i)), lv, sh, inn, dimension_names=list(axes))
        s = [sc * (2**i if ax in "yx" else 1) for sc, ax in zip(scale, axes)]
        datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": s}]})
    types = {"t": "time", "c": "channel"}
    ms = {
        "axes": [
            {"name": ax, "type": types.get(ax, "space"), **({"unit": "micrometer"} if ax in "zyx" else {})}
            for ax in axes
        ],  # fmt: skip
        "datasets": datasets,
        "name": "sharded",
    }
    with open(os.path.join(path, "zarr.json"), "w") as fh:
        json.dump(
            {"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", "multiscales": [ms]}}}, fh
        )
    return path


def write_dzi(directory, name: str, image: np.ndarray, tile=64, overlap=1, fmt="png", jpeg_options=None):
    """A Deep Zoom pyramid ``<name>.dzi`` + ``<name>_files/`` of ``image`` (h, w) or (h, w, 3|4), every level down
    to 1 x 1 (each level the previous one resized with Pillow's default filter); JPEG tiles of quality 95, or as
    ``jpeg_options`` (Pillow's save options, e.g. ``subsampling=0`` for full-resolution colour) say."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    h, w = image.shape[:2]
    max_level = max(0, math.ceil(math.log2(max(h, w))))
    full = Image.fromarray(image)
    levels = {}
    for level in range(max_level, -1, -1):
        f = 2 ** (max_level - level)
        lw, lh = -(-w // f), -(-h // f)
        im = full if f == 1 else full.resize((lw, lh))
        levels[level] = np.asarray(im)
        d = os.path.join(directory, f"{name}_files", str(level))
        os.makedirs(d, exist_ok=True)
        for row in range(-(-lh // tile)):
            for col in range(-(-lw // tile)):
                x0, y0 = col * tile - (overlap if col else 0), row * tile - (overlap if row else 0)
                x1, y1 = min((col + 1) * tile + overlap, lw), min((row + 1) * tile + overlap, lh)
                tile_im = im.crop((x0, y0, x1, y1))
                if fmt in ("jpg", "jpeg") and tile_im.mode == "RGBA":
                    tile_im = tile_im.convert("RGB")
                if fmt in ("jpg", "jpeg"):
                    tile_im.save(os.path.join(d, f"{col}_{row}.{fmt}"), **(jpeg_options or {"quality": 95}))
                else:
                    tile_im.save(os.path.join(d, f"{col}_{row}.{fmt}"))
    with open(os.path.join(directory, f"{name}.dzi"), "w") as fh:
        fh.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{fmt}" Overlap="{overlap}" '
            f'TileSize="{tile}"><Size Height="{h}" Width="{w}"/></Image>\n'
        )
    return levels
