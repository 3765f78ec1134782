"""Readers of the metadata of each format: JSON (or XML) in, checked plain values out.

Each ``parse_*`` function takes the decoded document and ``where`` (the file or URL it came from) and returns a small
frozen dataclass, or raises :class:`~ilastik_widget.io.errors.SourceError` naming ``where``, the field and what was
expected, for anything malformed or self-contradictory: never another exception. The arrays themselves are read by
tensorstore (or the Deep Zoom reader); these checks are what lets every mistake in a file be reported in words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from .errors import SourceError

__all__ = [
    "DziInfo",
    "N5Array",
    "N5Multiscale",
    "OmeImage",
    "PrecomputedInfo",
    "PrecomputedScale",
    "ZarrArray",
    "load_json",
    "parse_dzi",
    "parse_n5_array",
    "parse_n5_multiscale",
    "parse_ome",
    "parse_precomputed",
    "parse_zarr_array",
]

AXIS_LETTERS = "tczyx"
MAX_RANK = 32
_MAX_EXTENT = 2**62
_UNIT_TO_NM = {
    "nanometer": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "micron": 1e3,
    "um": 1e3,
    "µm": 1e3,
    "millimeter": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "meter": 1e9,
    "m": 1e9,
    "angstrom": 0.1,
    "picometer": 1e-3,
}
_UNIT_NAMES = {"nm": "nanometer", "um": "micrometer", "µm": "micrometer", "mm": "millimeter", "m": "meter"}


def nanometers_per(unit: str | None) -> float | None:
    """Nanometres per ``unit`` (``None`` for unknown units)."""
    return _UNIT_TO_NM.get(str(unit).lower()) if unit else None


def _fail(where: str, text: str) -> NoReturn:
    raise SourceError(f"{where}: {text}")


def load_json(data: bytes | str, where: str) -> Any:
    """Decode a JSON document; :class:`SourceError` naming ``where`` when it is not valid JSON."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SourceError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]})") from None


# ---------------------------------------------------------------------- value checks
def _dict(v: Any, where: str, name: str) -> dict:
    if not isinstance(v, dict):
        _fail(where, f"{name} must be a JSON object, not {type(v).__name__}")
    return v


def _int(v: Any, where: str, name: str, lo: int = 0, hi: int = _MAX_EXTENT) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        _fail(where, f"{name} must be an integer, not {v!r:.80}")
    if not lo <= v <= hi:
        _fail(where, f"{name} must be from {lo} to {hi}, not {v!r:.80}")
    return int(v)


def _ints(v: Any, where: str, name: str, n: int | None = None, lo: int = 0) -> tuple[int, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_RANK:
        _fail(where, f"{name} must be a list of 1 to {MAX_RANK} integers, not {v!r:.80}")
    if n is not None and len(v) != n:
        _fail(where, f"{name} has {len(v)} entries but the data has {n} dimensions")
    return tuple(_int(x, where, f"{name}[{i}]", lo) for i, x in enumerate(v))


def _number(v: Any, where: str, name: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(where, f"{name} must be a number, not {v!r:.80}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        _fail(where, f"{name} must be finite, not {v!r:.80}")
    if positive and f <= 0:
        _fail(where, f"{name} must be positive (a voxel size), not {v!r:.80}")
    return f


def _numbers(v: Any, where: str, name: str, n: int | None = None, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_RANK:
        _fail(where, f"{name} must be a list of numbers, not {v!r:.80}")
    if n is not None and len(v) != n:
        _fail(where, f"{name} has {len(v)} entries but the data has {n} dimensions")
    return tuple(_number(x, where, f"{name}[{i}]", positive) for i, x in enumerate(v))


def _str(v: Any, where: str, name: str, choices: tuple | None = None) -> str:
    if not isinstance(v, str):
        _fail(where, f"{name} must be a string, not {v!r:.80}")
    if choices is not None and v not in choices:
        _fail(where, f"{name} {v!r:.80} is not one of {', '.join(map(repr, choices))}")
    return v


def _relative_path(v: Any, where: str, name: str) -> str:
    """A path inside the container: no absolute paths, no '..', no URLs (a crafted file must not read elsewhere)."""
    p = _str(v, where, name).rstrip("/")
    parts = p.split("/")
    if not p or any(s in ("", ".", "..") for s in parts) or "\\" in p or ":" in p or len(p) > 1024:
        _fail(where, f"{name} {v!r:.80} is not a relative path inside the image")
    return p


_INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_DTYPES = ("bool", *_INT_DTYPES, "float16", "float32", "float64")


def _dtype(name: str, where: str, field_name: str) -> np.dtype:
    if name not in _DTYPES:
        _fail(where, f"{field_name} {name!r:.80} is not a supported data type ({', '.join(_DTYPES)})")
    return np.dtype(name)


# ---------------------------------------------------------------------- zarr v2 / v3 arrays
@dataclass(frozen=True)
class ZarrArray:
    """A zarr array's metadata: ``chunks`` is the unit read (the inner chunk of a sharded array)."""

    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    shard_shape: tuple[int, ...] | None = None
    dimension_names: tuple[str | None, ...] | None = None
    attributes: dict = field(default_factory=dict, compare=False)
    key_prefix: str = ""  # stored objects are named key_prefix + key_separator.join(chunk index)
    key_separator: str = "."


def parse_zarr_array(meta: Any, where: str, attributes: Any = None) -> ZarrArray:
    """Check a ``.zarray`` (v2, with its ``.zattrs`` as ``attributes``) or an array's ``zarr.json`` (v3)."""
    meta = _dict(meta, where, "the array metadata")
    fmt = meta.get("zarr_format")
    if fmt == 2:
        return _zarr_v2(meta, where, attributes)
    if fmt == 3:
        return _zarr_v3(meta, where)
    _fail(where, f"zarr_format must be 2 or 3, not {fmt!r:.80}")


def _zarr_v2(meta: dict, where: str, attributes: Any) -> ZarrArray:
    shape = _ints(meta.get("shape"), where, "shape")
    chunks = _ints(meta.get("chunks"), where, "chunks", len(shape), lo=1)
    raw = meta.get("dtype")
    if not isinstance(raw, str):
        _fail(where, f"dtype must be a string such as '<u2' (structured dtypes are not supported), not {raw!r:.80}")
    try:
        dtype = np.dtype(raw)
    except (TypeError, ValueError):
        _fail(where, f"dtype {raw!r:.80} is not a numpy data type")
    if dtype.kind not in "biuf" or dtype.name not in _DTYPES:
        _fail(where, f"dtype {raw!r:.80} is not an integer, float or bool type")
    _str(meta.get("order", "C"), where, "order", ("C", "F"))
    comp = meta.get("compressor")
    if comp is not None and not isinstance(_dict(comp, where, "compressor").get("id"), str):
        _fail(where, "compressor must be null or an object with an 'id'")
    filters = meta.get("filters")
    if filters is not None and not (
        isinstance(filters, list) and all(isinstance(f, dict) and isinstance(f.get("id"), str) for f in filters)
    ):
        _fail(where, "filters must be null or a list of objects with an 'id'")
    sep = _str(meta.get("dimension_separator", "."), where, "dimension_separator", (".", "/"))
    attrs = _dict(attributes, where, ".zattrs") if attributes is not None else {}
    return ZarrArray(2, shape, chunks, dtype, None, None, attrs, "", sep)


def _zarr_v3(meta: dict, where: str) -> ZarrArray:
    if meta.get("node_type") != "array":
        _fail(where, f"node_type must be 'array', not {meta.get('node_type')!r:.80}")
    shape = _ints(meta.get("shape"), where, "shape")
    n = len(shape)
    dt = meta.get("data_type")
    if not isinstance(dt, str):
        _fail(where, f"data_type {dt!r:.80} is not a supported data type ({', '.join(_DTYPES)})")
    dtype = _dtype(dt, where, "data_type")
    grid = _dict(meta.get("chunk_grid"), where, "chunk_grid")
    if grid.get("name") != "regular":
        _fail(where, f"chunk_grid {grid.get('name')!r:.80} is not supported (only 'regular')")
    outer = _ints(_dict(grid.get("configuration"), where, "chunk_grid.configuration").get("chunk_shape"), where,
                  "chunk_grid.configuration.chunk_shape", n, lo=1)  # fmt: skip
    enc = _dict(meta.get("chunk_key_encoding", {"name": "default"}), where, "chunk_key_encoding")
    enc_name = _str(enc.get("name"), where, "chunk_key_encoding.name", ("default", "v2"))
    conf = _dict(enc.get("configuration", {}), where, "chunk_key_encoding.configuration")
    sep = _str(conf.get("separator", "/" if enc_name == "default" else "."), where, "chunk_key_encoding separator",
               ("/", "."))  # fmt: skip
    codecs = meta.get("codecs")
    if not isinstance(codecs, list) or not codecs:
        _fail(where, "codecs must be a non-empty list")
    inner, shard = outer, None
    for i, c in enumerate(codecs):
        name = _str(_dict(c, where, f"codecs[{i}]").get("name"), where, f"codecs[{i}].name")
        if name == "sharding_indexed":
            cfg = _dict(c.get("configuration"), where, "sharding_indexed configuration")
            inner = _ints(cfg.get("chunk_shape"), where, "sharding_indexed chunk_shape", n, lo=1)
            if any(o % s for o, s in zip(outer, inner)):
                _fail(where, f"the shard shape {list(outer)} is not a multiple of the inner chunk shape {list(inner)}")
            shard = outer
    names = meta.get("dimension_names")
    if names is not None:
        if not isinstance(names, list) or len(names) != n or not all(x is None or isinstance(x, str) for x in names):
            _fail(where, f"dimension_names must be a list of {n} strings or nulls")
        names = tuple(names)
    attrs = _dict(meta.get("attributes", {}), where, "attributes")
    return ZarrArray(3, shape, inner, dtype, shard, names, attrs, "c" + sep if enc_name == "default" else "", sep)


# ---------------------------------------------------------------------- OME-Zarr
@dataclass(frozen=True)
class OmeImage:
    """The first multiscale image of OME-Zarr metadata (0.1 to 0.5).

    ``axes`` has one letter per array axis (``None`` in OME-Zarr before 0.3, when the arrays are 5D ``tczyx``);
    ``level_scales`` and ``level_translations`` are per level and per axis, the multiscale-wide transformations
    applied after each dataset's.
    """

    version: str | None
    paths: tuple[str, ...]
    axes: str | None
    units: tuple[str | None, ...] | None
    level_scales: tuple[tuple[float, ...] | None, ...]
    level_translations: tuple[tuple[float, ...] | None, ...]
    name: str | None
    channel_names: tuple[str, ...] | None
    multiscale: dict = field(compare=False, repr=False)


def ome_multiscales(attrs: Any) -> tuple[Any, Any, Any] | None:
    """``(multiscales, omero, version)`` when ``attrs`` (a group's attributes) are OME-Zarr, else ``None``."""
    if not isinstance(attrs, dict):
        return None
    if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"]:
        ome = attrs["ome"]
        return ome["multiscales"], ome.get("omero"), ome.get("version", "0.5")
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        version = ms[0].get("version") if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None
        return ms, attrs.get("omero"), version
    return None


def parse_ome(attrs: Any, where: str) -> OmeImage | None:
    """The OME-Zarr image described by a group's attributes, ``None`` if they are not OME-Zarr."""
    found = ome_multiscales(attrs)
    if found is None:
        return None
    multiscales, omero, version = found
    if not isinstance(multiscales, list) or not multiscales:
        _fail(where, f"OME 'multiscales' must be a non-empty list, not {type(multiscales).__name__}")
    ms = _dict(multiscales[0], where, "multiscales[0]")
    if version is not None and not isinstance(version, str):
        _fail(where, f"OME version must be a string, not {version!r:.40}")
    axes, units = _ome_axes(ms.get("axes"), where)
    rank = len(axes) if axes is not None else None
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        _fail(where, "multiscales[0].datasets must be a non-empty list")
    glob_s, glob_t = _transforms(ms.get("coordinateTransformations"), where, "multiscales[0]", rank)
    paths, scales, shifts = [], [], []
    for i, d in enumerate(datasets):
        name = f"multiscales[0].datasets[{i}]"
        d = _dict(d, where, name)
        if "path" not in d:
            _fail(where, f"{name} has no 'path'")
        paths.append(_relative_path(d["path"], where, f"{name}.path"))
        s, t = _transforms(d.get("coordinateTransformations"), where, name, rank)
        if s is not None and glob_s is not None and len(s) != len(glob_s):
            _fail(where, f"{name} and the multiscale transformations have different lengths")
        if s is not None and glob_s is not None:
            t = tuple(a * gs + gt for a, gs, gt in zip(t, glob_s, glob_t))
            s = tuple(a * b for a, b in zip(s, glob_s))
        scales.append(s)
        shifts.append(t)
    if len(set(paths)) != len(paths):
        _fail(where, f"multiscales[0].datasets name a path twice: {paths}")
    lengths = {len(s) for s in scales if s is not None}
    if len(lengths) > 1:
        _fail(where, "the datasets' scales have different lengths")
    channel_names = None
    if isinstance(omero, dict) and isinstance(omero.get("channels"), list):
        channel_names = tuple(
            str(c.get("label", i))[:200] if isinstance(c, dict) else str(i) for i, c in enumerate(omero["channels"])
        )
    title = ms.get("name")
    return OmeImage(
        version,
        tuple(paths),
        axes,
        units,
        tuple(scales),
        tuple(shifts),
        title[:200] if isinstance(title, str) and title else None,
        channel_names,
        {**ms, "version": version},
    )


def _ome_axes(raw: Any, where: str) -> tuple[str | None, tuple | None]:
    if raw is None:  # OME-Zarr 0.1/0.2: 5D tczyx
        return None, None
    if not isinstance(raw, list) or not 2 <= len(raw) <= 5:
        _fail(where, f"multiscales[0].axes must be a list of 2 to 5 axes, not {raw!r:.80}")
    letters, units = [], []
    for i, a in enumerate(raw):
        if isinstance(a, str):
            nm, typ, unit = a.lower(), None, None
        elif isinstance(a, dict):
            nm = _str(a.get("name"), where, f"axes[{i}].name").lower()
            typ = a.get("type")
            unit = a.get("unit")
            if typ is not None and not isinstance(typ, str):
                _fail(where, f"axes[{i}].type must be a string")
            if unit is not None and not isinstance(unit, str):
                _fail(where, f"axes[{i}].unit must be a string")
        else:
            _fail(where, f"axes[{i}] must be a name or an object, not {a!r:.80}")
        letters.append(nm if nm in AXIS_LETTERS else {"time": "t", "channel": "c"}.get(typ or "", "?"))
        units.append(unit)
    if "?" in letters:  # spatial axes with other names: z, y, x in order
        free = [c for c in "zyx" if c not in letters]
        if letters.count("?") > len(free):
            _fail(where, f"cannot tell which of the axes {raw!r:.120} are z, y and x")
        it = iter(free[len(free) - letters.count("?") :])
        letters = [next(it) if a == "?" else a for a in letters]
    if len(set(letters)) != len(letters):
        _fail(where, f"the axes {raw!r:.120} name an axis twice")
    return "".join(letters), tuple(units)


def _transforms(raw: Any, where: str, name: str, rank: int | None) -> tuple:
    """(scale, translation) of a list of coordinate transformations, ``(None, None)`` when absent."""
    if raw is None:
        return None, None
    if not isinstance(raw, list):
        _fail(where, f"{name}.coordinateTransformations must be a list")
    scale = translation = None
    for i, tr in enumerate(raw):
        tr = _dict(tr, where, f"{name}.coordinateTransformations[{i}]")
        kind = tr.get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            _fail(where, f"{name}: coordinate transformation {kind!r:.40} is not supported (scale, translation)")
        if kind not in tr:
            _fail(where, f"{name}: a {kind} transformation without inline values ('path' is not supported)")
        values = _numbers(tr[kind], where, f"{name} {kind}", rank, positive=kind == "scale")
        if kind == "scale":
            scale = values if scale is None else tuple(a * b for a, b in zip(scale, values))
            translation = None if translation is None else tuple(a * b for a, b in zip(translation, values))
        else:
            translation = values if translation is None else tuple(a + b for a, b in zip(translation, values))
    if scale is None and translation is None:
        return None, None
    n = len(scale) if scale is not None else len(translation or ())
    if scale is not None and translation is not None and len(scale) != len(translation):
        _fail(where, f"{name}: scale and translation have different lengths")
    return (scale or (1.0,) * n), (translation or (0.0,) * n)


# ---------------------------------------------------------------------- N5
@dataclass(frozen=True)
class N5Array:
    """An N5 dataset, axes in the file's order (x first for most writers)."""

    shape: tuple[int, ...]
    block_size: tuple[int, ...]
    dtype: np.dtype
    compression: str
    attributes: dict = field(default_factory=dict, compare=False)


_N5_COMPRESSIONS = ("raw", "gzip", "bzip2", "xz", "blosc", "zstd")


def parse_n5_array(attrs: Any, where: str) -> N5Array:
    """Check the ``attributes.json`` of an N5 dataset."""
    attrs = _dict(attrs, where, "attributes.json")
    shape = _ints(attrs.get("dimensions"), where, "dimensions")
    block = _ints(attrs.get("blockSize"), where, "blockSize", len(shape), lo=1)
    dtype = _dtype(_str(attrs.get("dataType"), where, "dataType"), where, "dataType")
    if dtype == np.bool_ or dtype == np.float16:
        _fail(where, f"dataType {dtype.name} is not an N5 data type")
    comp = attrs.get("compression", attrs.get("compressionType", "raw"))
    kind = comp.get("type") if isinstance(comp, dict) else comp
    kind = _str(kind, where, "compression type", _N5_COMPRESSIONS)
    return N5Array(shape, block, dtype, kind, attrs)


@dataclass(frozen=True)
class N5Multiscale:
    """An N5 multiscale group: dataset paths (finest first), downsampling factors, resolution, units and axis names,
    all in the file's axis order; ``None`` where the metadata does not say."""

    paths: tuple[str, ...]
    factors: tuple[tuple[float, ...], ...] | None
    resolution: tuple[float, ...] | None
    units: tuple[str, ...] | None
    axes: tuple[str, ...] | None


def parse_n5_multiscale(attrs: Any, where: str, paths: list[str], level_attrs: list[dict]) -> N5Multiscale:
    """Combine a group's attributes with its datasets' (``level_attrs``, one per path in ``paths``)."""
    attrs = _dict(attrs, where, "attributes.json")
    factors = None
    if "scales" in attrs:
        raw = attrs["scales"]
        if not isinstance(raw, list) or len(raw) < len(paths):
            _fail(where, f"'scales' must list the downsampling factors of the {len(paths)} datasets")
        factors = tuple(_numbers(f, where, f"scales[{i}]", positive=True) for i, f in enumerate(raw[: len(paths)]))
    elif all("downsamplingFactors" in a for a in level_attrs):
        factors = tuple(
            _numbers(a["downsamplingFactors"], f"{where}/{p}", "downsamplingFactors", positive=True)
            for p, a in zip(paths, level_attrs)
        )
    resolution, units = _n5_resolution(attrs, where)
    if resolution is None and level_attrs:
        resolution, units = _n5_resolution(level_attrs[0], f"{where}/{paths[0]}")
    axes = attrs.get("axes")
    if axes is not None:
        if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
            _fail(where, "'axes' must be a list of names")
        axes = tuple(a.lower() for a in axes)
    return N5Multiscale(tuple(paths), factors, resolution, units, axes)


def _n5_resolution(attrs: dict, where: str) -> tuple:
    res = units = None
    pr = attrs.get("pixelResolution")
    if isinstance(pr, dict):
        res = _numbers(pr.get("dimensions"), where, "pixelResolution.dimensions", positive=True)
        unit = pr.get("unit")
        units = (_str(unit, where, "pixelResolution.unit"),) * len(res) if unit is not None else None
    elif pr is not None:
        res = _numbers(pr, where, "pixelResolution", positive=True)
    if "resolution" in attrs:
        res = _numbers(attrs["resolution"], where, "resolution", positive=True)
    if "units" in attrs:
        raw = attrs["units"]
        if not isinstance(raw, list) or not all(isinstance(u, str) for u in raw):
            _fail(where, "'units' must be a list of unit names")
        units = tuple(raw)
    if res is not None and units is not None and len(units) != len(res):
        _fail(where, f"{len(units)} units for {len(res)} resolution values")
    return res, (tuple(_UNIT_NAMES.get(u, u) for u in units) if units else None)


# ---------------------------------------------------------------------- Neuroglancer precomputed
@dataclass(frozen=True)
class PrecomputedScale:
    """One scale of a precomputed volume; sizes and offsets in x, y, z order, resolution in nanometres."""

    key: str
    size: tuple[int, int, int]
    resolution: tuple[float, float, float]
    chunk_size: tuple[int, int, int]
    encoding: str
    voxel_offset: tuple[int, int, int]
    sharded: bool


@dataclass(frozen=True)
class PrecomputedInfo:
    """A precomputed volume's ``info``: scales finest first."""

    volume_type: str
    dtype: np.dtype
    num_channels: int
    scales: tuple[PrecomputedScale, ...]


_PC_ENCODINGS = ("raw", "jpeg", "png", "compressed_segmentation", "compresso", "jxl")
_PC_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")


def parse_precomputed(info: Any, where: str) -> PrecomputedInfo:
    """Check a precomputed ``info`` file (volumes only: meshes and skeletons are not images)."""
    info = _dict(info, where, "info")
    at = info.get("@type", "neuroglancer_multiscale_volume")
    if at != "neuroglancer_multiscale_volume":
        _fail(where, f"@type {at!r:.80} is not a Neuroglancer multiscale volume")
    vtype = _str(info.get("type"), where, "type", ("image", "segmentation"))
    dtype = np.dtype(_str(info.get("data_type"), where, "data_type", _PC_TYPES))
    channels = _int(info.get("num_channels"), where, "num_channels", lo=1, hi=4096)
    raw_scales = info.get("scales")
    if not isinstance(raw_scales, list) or not raw_scales or len(raw_scales) > 64:
        _fail(where, "scales must be a list of 1 to 64 scales")
    scales = []
    for i, s in enumerate(raw_scales):
        n = f"scales[{i}]"
        s = _dict(s, where, n)
        key = _relative_path(s.get("key"), where, f"{n}.key")
        size = _ints(s.get("size"), where, f"{n}.size", 3, lo=1)
        res = _numbers(s.get("resolution"), where, f"{n}.resolution", 3, positive=True)
        cs = s.get("chunk_sizes")
        if not isinstance(cs, list) or not cs:
            _fail(where, f"{n}.chunk_sizes must be a non-empty list of [x, y, z] sizes")
        chunk = _ints(cs[0], where, f"{n}.chunk_sizes[0]", 3, lo=1)
        enc = _str(s.get("encoding"), where, f"{n}.encoding", _PC_ENCODINGS)
        if enc == "compressed_segmentation" and dtype.name not in ("uint32", "uint64"):
            _fail(where, f"{n}: compressed_segmentation needs uint32 or uint64 data, not {dtype.name}")
        if enc in ("jpeg", "png", "jxl") and dtype.name not in ("uint8", "uint16"):
            _fail(where, f"{n}: {enc} encoding needs uint8 data, not {dtype.name}")
        offset = _ints(s.get("voxel_offset", [0, 0, 0]), where, f"{n}.voxel_offset", 3, lo=-_MAX_EXTENT)
        sharding = s.get("sharding")
        if sharding is not None:
            _check_sharding(sharding, where, f"{n}.sharding")
        scales.append(PrecomputedScale(key, size, res, chunk, enc, offset, sharding is not None))  # type: ignore[arg-type]
    scales.sort(key=lambda sc: math.prod(sc.resolution))
    if len({sc.key for sc in scales}) != len(scales):
        _fail(where, "two scales have the same key")
    base = scales[0]
    for sc in scales[1:]:
        for d in range(3):
            f = sc.resolution[d] / base.resolution[d]
            if f < 1 - 1e-6 or abs(sc.size[d] * f - base.size[d]) > f + 1e-6:
                _fail(
                    where,
                    f"scale {sc.key!r} has size {list(sc.size)} at resolution {list(sc.resolution)}, which does not "
                    f"cover the finest scale's {list(base.size)} at {list(base.resolution)}",
                )
    return PrecomputedInfo(vtype, dtype, channels, tuple(scales))


def _check_sharding(s: Any, where: str, name: str) -> None:
    s = _dict(s, where, name)
    _str(s.get("@type"), where, f"{name}.@type", ("neuroglancer_uint64_sharded_v1",))
    for k in ("preshift_bits", "minishard_bits", "shard_bits"):
        _int(s.get(k), where, f"{name}.{k}", hi=64)
    _str(s.get("hash"), where, f"{name}.hash", ("identity", "murmurhash3_x86_128"))
    for k in ("minishard_index_encoding", "data_encoding"):
        _str(s.get(k, "raw"), where, f"{name}.{k}", ("raw", "gzip"))


# ---------------------------------------------------------------------- Deep Zoom
@dataclass(frozen=True)
class DziInfo:
    """A Deep Zoom image: full size, tile size, overlap and tile format (``jpg``, ``png``...)."""

    width: int
    height: int
    tile_size: int
    overlap: int
    format: str

    @property
    def max_level(self) -> int:
        """Level of the full resolution (level 0 is 1 x 1 pixel)."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def level_shape(self, level: int) -> tuple[int, int]:
        """(height, width) of a level."""
        f = 2 ** (self.max_level - level)
        return -(-self.height // f), -(-self.width // f)


_DZI_FORMATS = ("jpg", "jpeg", "png", "webp")


def parse_dzi(data: bytes | str, where: str) -> DziInfo:
    """Parse a ``.dzi`` descriptor (XML, or the JSON form OpenSeadragon also reads)."""
    text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("{"):
        doc = _dict(load_json(stripped, where), where, "the descriptor")
        img = _dict(doc.get("Image"), where, "Image")
        size = _dict(img.get("Size"), where, "Image.Size")
        fields = {
            "TileSize": img.get("TileSize"),
            "Overlap": img.get("Overlap"),
            "Format": img.get("Format"),
            "Width": size.get("Width"),
            "Height": size.get("Height"),
        }
    else:
        fields = _dzi_xml(stripped, where)
    tile = _int(_intlike(fields["TileSize"]), where, "TileSize", lo=1, hi=65536)
    overlap = _int(_intlike(fields["Overlap"]), where, "Overlap", lo=0, hi=65536)
    if overlap >= tile:
        _fail(where, f"Overlap {overlap} must be smaller than TileSize {tile}")
    fmt = _str(fields["Format"], where, "Format").lower()
    if fmt not in _DZI_FORMATS:
        _fail(where, f"tile Format {fmt!r:.40} is not one of {', '.join(_DZI_FORMATS)}")
    width = _int(_intlike(fields["Width"]), where, "Size.Width", lo=1, hi=2**31)
    height = _int(_intlike(fields["Height"]), where, "Size.Height", lo=1, hi=2**31)
    return DziInfo(width, height, tile, overlap, fmt)


def _intlike(v: Any) -> Any:
    if isinstance(v, str) and re.fullmatch(r"\s*\d{1,12}\s*", v):
        return int(v)
    return v


def _dzi_xml(text: str, where: str) -> dict:
    import xml.etree.ElementTree as ET

    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        _fail(where, "the descriptor declares a DOCTYPE or entities, which a Deep Zoom descriptor never needs")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SourceError(f"{where}: not a Deep Zoom descriptor (XML error: {exc})") from None
    if root.tag.rsplit("}", 1)[-1] != "Image":
        _fail(where, f"the descriptor's root element is <{root.tag.rsplit('}', 1)[-1][:40]}>, not <Image>")
    size = next((c for c in root if c.tag.rsplit("}", 1)[-1] == "Size"), None)
    if size is None:
        _fail(where, "the descriptor has no <Size> element")
    return {
        "TileSize": root.get("TileSize"),
        "Overlap": root.get("Overlap"),
        "Format": root.get("Format"),
        "Width": size.get("Width"),
        "Height": size.get("Height"),
    }
