"""Objects tables on disk: CSV (with a JSON sidecar) and Parquet, carrying units and the parameters that made them.

>>> write_table(objects, "cells.parquet")          # doctest: +SKIP
>>> write_table(objects, "cells.csv")              # doctest: +SKIP   (also writes cells.csv.json)
>>> table, meta = read_table("cells.parquet")      # doctest: +SKIP
>>> meta["voxel_size"], meta["columns"]["area_physical"]["unit"]   # doctest: +SKIP
([0.5, 0.25, 0.25], 'micrometer^3')

The metadata (:func:`objects_metadata`) is one JSON object: ``format``/``format_version``, the extraction
parameters (``params``: class, thresholds, sizes, smoothing, split), ``voxel_size`` and ``units`` per axis (array
order), the computed region (``offset``, ``shape``), and ``columns``: every column's unit (``"voxel"``,
``"voxel^3"``, ``"micrometer"``... or None) and description. Parquet keeps it in the schema metadata under the key
``ilastik_widget`` (and each column's unit in its field metadata under ``unit``); CSV in ``<file>.json`` beside
the table, with the column types so that :func:`read_table` restores them. Files are written to a temporary name
first and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.objects import ObjectParams, Objects

__all__ = ["write_table", "read_table", "objects_metadata", "table_metadata", "sidecar_path", "TABLE_FORMATS"]

#: File suffixes and the format they select.
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
METADATA_KEY = "ilastik_widget"
_FORMAT = "ilastik_widget.objects_table"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a CSV table: ``cells.csv`` -> ``cells.csv.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _table_format(path: Path) -> str:
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the table format of {str(path)!r}: its name must end in {', '.join(TABLE_FORMATS)}"
        )
    return fmt


def _physical_unit(units: list | None, axes: list[int]) -> str | None:
    """``micrometer^3`` for a volume in micrometers, ``nanometer*micrometer`` for mixed units, None when unknown."""
    if not units or any(not units[k] for k in axes):
        return None
    names = [str(units[k]) for k in axes]
    if len(set(names)) == 1:
        return names[0] if len(names) == 1 else f"{names[0]}^{len(names)}"
    return "*".join(names)


def _column_info(columns: list[str], ndim: int, units: list | None) -> dict[str, dict[str, Any]]:
    """Unit and description of every column of an objects table."""
    info: dict[str, dict[str, Any]] = {}
    px = "pixel" if ndim == 2 else "voxel"
    for name in columns:
        base, _, suffix = name.partition("-")
        axis = int(suffix) if suffix.isdigit() else None
        if name in ("label", "class"):
            unit, text = None, "object number in the label image" if name == "label" else "class (1..n_classes)"
        elif name == "area":
            unit, text = px, f"size in {px}s"
        elif name == "area_physical":
            unit, text = _physical_unit(units, list(range(ndim))), "size in physical units"
        elif base == "centroid" and axis is not None:
            unit, text = px, f"centroid along array axis {axis}, image coordinates"
        elif base == "centroid_physical" and axis is not None:
            unit, text = _physical_unit(units, [axis]), f"centroid along array axis {axis}, physical"
        elif base == "bbox" and axis is not None:
            side = "start (inclusive)" if axis < ndim else "stop (exclusive)"
            unit, text = px, f"bounding box {side} along array axis {axis % ndim}"
        elif name == "clipped":
            unit, text = None, "touches a side of the computed region inside the image (measured in part)"
        elif name == "probability_mean":
            unit, text = None, "mean probability of the class (before smoothing)"
        elif base.startswith("intensity_"):
            unit, text = "image", f"{base.split('_')[1]} image intensity" + (f" of channel {axis}" if suffix else "")
        else:
            unit, text = None, ""
        info[name] = {"unit": unit, "description": text}
    return info


def objects_metadata(objects: Objects, **extra: Any) -> dict[str, Any]:
    """The metadata written with an :class:`~ilastik_widget.core.objects.Objects` table (see the module doc);
    ``extra`` entries (e.g. ``image="cells.tif"``, ``class_name="Nuclei"``) are added as they are (JSON-able)."""
    return table_metadata(
        objects.table, objects.params, offset=objects.offset, shape=objects.labels.shape, units=objects.units, **extra
    )


def table_metadata(
    table: pd.DataFrame,
    params: ObjectParams,
    *,
    offset: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    units: Sequence[str | None] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """:func:`objects_metadata` of a table made without an ``Objects`` (e.g. block by block: ``BlockMerge.table``
    and its ``params``); ``offset``/``shape`` of the region computed (None: not recorded)."""
    p = params.to_dict()
    unit_list = list(units) if units is not None else None
    ndim = len(p["smooth"])
    meta = {
        "format": _FORMAT,
        "format_version": 1,
        "params": p,
        "voxel_size": p["voxel_size"],
        "units": unit_list,
        "offset": None if offset is None else [int(o) for o in offset],
        "shape": None if shape is None else [int(n) for n in shape],
        "n_objects": len(table),
        "columns": _column_info([str(c) for c in table.columns], ndim, unit_list),
    }
    meta.update(extra)
    return meta


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp_path)`` then rename onto ``path`` (the temporary file is removed on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name of our own rather than mkstemp's: the file gets the usual permissions (mkstemp's are owner-only).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(
    table: Objects | pd.DataFrame, path: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write an objects table as CSV (``.csv``, with ``<file>.json``) or Parquet (``.parquet``/``.pq``).

    Parameters
    ----------
    table : Objects or pandas.DataFrame
        An :class:`~ilastik_widget.core.objects.Objects` (its table, with :func:`objects_metadata`) or any table.
    path : str or path-like
        Where to write; the suffix selects the format. Folders are created.
    metadata : mapping, optional
        JSON-able entries added to (or, for a DataFrame, forming) the metadata.

    Returns
    -------
    Path
        The table's path.

    Raises
    ------
    ValueError
        An unknown suffix, metadata that is not JSON-able, or a table that is not a DataFrame.
    """
    path = Path(path)
    fmt = _table_format(path)
    if isinstance(table, Objects):
        meta: dict[str, Any] = objects_metadata(table, **dict(metadata or {}))
        frame = table.table
    elif isinstance(table, pd.DataFrame):
        meta, frame = dict(metadata or {}), table
    else:
        raise ValueError(f"table must be an Objects or a pandas DataFrame, got {type(table).__name__}")
    meta["dtypes"] = {str(c): str(t) for c, t in frame.dtypes.items()}
    try:
        text = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"table metadata must be JSON-able: {exc}") from None
    if fmt == "csv":
        _atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
        _atomic_write(sidecar_path(path), lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    else:
        _atomic_write(path, lambda tmp: _write_parquet(frame, tmp, text, meta.get("columns", {})))
    return path


def _write_parquet(frame: pd.DataFrame, path: str, text: str, columns: Mapping[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for f in arrow.schema:
        unit = (columns.get(f.name) or {}).get("unit")
        fields.append(f.with_metadata({"unit": unit}) if unit else f)
    schema = pa.schema(fields, metadata={**(arrow.schema.metadata or {}), METADATA_KEY.encode(): text.encode()})
    pq.write_table(arrow.cast(schema), path)


def read_table(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table written by :func:`write_table`: (table, metadata); metadata is ``{}`` when the file has none.

    Raises
    ------
    ValueError
        An unknown suffix or a damaged sidecar.
    FileNotFoundError
        No such file.
    """
    path = Path(path)
    fmt = _table_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        arrow = pq.read_table(path)
        raw = (arrow.schema.metadata or {}).get(METADATA_KEY.encode())
        return arrow.to_pandas(), json.loads(raw) if raw else {}
    side = sidecar_path(path)
    meta: dict[str, Any] = {}
    if side.exists():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{str(side)!r} is not valid JSON: {exc}") from None
    dtypes = meta.get("dtypes") if isinstance(meta.get("dtypes"), dict) else None
    return pd.read_csv(path, dtype=dtypes), meta
