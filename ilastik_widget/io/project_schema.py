"""The fields of a project document (``project.json``) and their checks.

:func:`check_document` checks every field a project file may hold for its JSON type and range, and the arrays for the
dtype and shape the document implies, before anything is built from them. A file that fails gets a
:class:`~ilastik_widget.io.archive.ProjectError` that names the field, what was expected and what was found. What
only the core can judge (stroke points inside the image, feature names, classifier parameters) is checked by the
core's own constructors, whose errors the loader turns into ProjectError naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..core.json_numbers import is_finite_number
from ..core.limits import MAX_CLASSES
from .archive import ProjectError

__all__ = ["check_document", "check_stroke_arrays", "MAX_ID"]

#: Largest stroke id (JavaScript's largest safe integer: ids travel to the browser).
MAX_ID = 2**53 - 1
_MAX_SIDE = 2**40
_MAX_ARRAYS = 200_000
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+){0,3}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_AUTOSAVE_ID = re.compile(r"^[0-9a-f]{8,64}$")


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class _Fields:
    """Checks of one file's fields, each failure a ProjectError naming the file and the field."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def fail(self, field: str, expected: str, value: Any) -> ProjectError:
        return ProjectError(f"{self.path} is damaged: {field} must be {expected}, got {_show(value)}")

    def integer(self, field: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(field, f"an integer in {lo}..{hi}", value)
        return value

    def number(self, field: str, value: Any, positive: bool = False) -> float:
        if not is_finite_number(value) or (positive and value <= 0):
            raise self.fail(field, "a positive finite number" if positive else "a finite number", value)
        return float(value)

    def string(self, field: str, value: Any, optional: bool = False, max_len: int = 4096) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > max_len:
            raise self.fail(field, f"{'null or ' if optional else ''}a string of at most {max_len} characters", value)
        return value

    def flag(self, field: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(field, "true or false", value)
        return value

    def items(self, field: str, value: Any, lo: int = 0, hi: int = 2**31) -> list:
        if not isinstance(value, list) or not lo <= len(value) <= hi:
            raise self.fail(field, f"a list of {lo}..{hi} entries", value)
        return value

    def obj(self, field: str, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self.fail(field, "an object", value)
        return value

    def sizes(self, field: str, value: Any, lo: int, hi: int) -> list[int]:
        self.items(field, value, lo, hi)
        return [self.integer(f"{field}[{i}]", n, 1, _MAX_SIDE) for i, n in enumerate(value)]


def _check_image(f: _Fields, ref: Any) -> None:
    f.obj("image", ref)
    spatial = f.sizes("image.spatial_shape", ref.get("spatial_shape"), 2, 3)
    shape = f.sizes("image.shape", ref.get("shape"), 2, 5)
    dtype = f.string("image.dtype", ref.get("dtype"), max_len=16)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise f.fail("image.dtype", "a numpy dtype such as '<f4'", dtype) from None
    if dt.kind not in "biuf" or dt.fields is not None or dt.subdtype is not None:
        raise f.fail("image.dtype", "a numeric dtype", dtype)
    axis = ref.get("channel_axis")
    if axis is not None:
        f.integer("image.channel_axis", axis, 0, len(shape) - 1)
    want = [n for i, n in enumerate(shape) if i != axis]
    if spatial != want:
        raise ProjectError(
            f"{f.path} is damaged: image.spatial_shape {spatial} does not match image.shape {shape} "
            f"with channel_axis {axis}"
        )
    n_ch = ref.get("n_channels")
    if n_ch is not None and f.integer("image.n_channels", n_ch, 1, _MAX_SIDE) != (1 if axis is None else shape[axis]):
        raise ProjectError(f"{f.path} is damaged: image.n_channels {n_ch} does not match image.shape {shape}")
    for key in ("path", "relpath", "url", "name", "kind"):
        f.string(f"image.{key}", ref.get(key), optional=True)
    axes = f.string("image.axes", ref.get("axes"), optional=True, max_len=8)
    if axes is not None and (not set(axes) <= set("tczyx") or len(set(axes)) != len(axes)):
        raise f.fail("image.axes", "distinct letters of 'tczyx'", axes)
    if ref.get("time_index") is not None:
        f.integer("image.time_index", ref["time_index"], 0, _MAX_SIDE)
    scale = ref.get("scale")
    if scale is not None:
        for i, s in enumerate(f.items("image.scale", scale, 0, 8)):
            f.number(f"image.scale[{i}]", s, positive=True)
    f.flag("image.embedded", ref.get("embedded", False))


def _check_import(f: _Fields, where: str, s: dict, arrays: list) -> None:
    """An imported-labels entry: its runs as lists of integers or as arrays the document lists (the runs' values are
    checked when the entry is rebuilt)."""
    f.string(f"{where}.source", s.get("source", ""), max_len=4096)
    for name in ("starts", "lengths", "values"):
        value = s.get(name)
        if isinstance(value, dict):
            if value.get("array") not in arrays:
                raise f.fail(f"{where}.{name}", "an array the document lists", value)
        elif not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise f.fail(f"{where}.{name}", "a list of integers or {'array': name}", value)


def _check_strokes(f: _Fields, strokes: Any, n_classes: int, ndim: int, arrays: list) -> None:
    f.items("strokes", strokes)
    seen: dict[int, int] = {}
    for i, s in enumerate(strokes):
        where = f"strokes[{i}]"
        f.obj(where, s)
        sid = f.integer(f"{where}.id", s.get("id"), 0, MAX_ID)
        if sid in seen:
            raise ProjectError(f"{f.path} is damaged: strokes[{seen[sid]}] and {where} have the same id {sid}")
        seen[sid] = i
        if s.get("kind", "stroke") == "import":
            _check_import(f, where, s, arrays)
            continue
        if s.get("kind", "stroke") != "stroke":
            raise f.fail(f"{where}.kind", "'stroke' or 'import'", s.get("kind"))
        f.integer(f"{where}.label", s.get("label"), 0, n_classes)
        f.number(f"{where}.radius", s.get("radius"), positive=True)
        axes = s.get("axes")
        if axes is not None:
            f.items(f"{where}.axes", axes, 2, 2)
            for j, a in enumerate(axes):
                f.integer(f"{where}.axes[{j}]", a, 0, ndim - 1)
        f.flag(f"{where}.erase", s.get("erase", False))


def check_stroke_arrays(path: Any, n_strokes: int, ndim: int, points: Any, offsets: Any) -> None:
    """``stroke_points`` (float64, (N, ndim)) and ``stroke_offsets`` (int64, n_strokes + 1 increasing offsets from
    0 to N) fit the stroke records."""
    for name, arr, dtype, nd in (("stroke_points", points, np.float64, 2), ("stroke_offsets", offsets, np.int64, 1)):
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != nd:
            got = f"{arr.dtype} {arr.ndim}D" if isinstance(arr, np.ndarray) else "nothing"
            raise ProjectError(f"{path} is damaged: array {name} must be {np.dtype(dtype)} {nd}D, got {got}")
    if (
        points.shape[1] != ndim
        or len(offsets) != n_strokes + 1
        or offsets[0] != 0
        or offsets[-1] != len(points)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ProjectError(f"{path} is damaged: stroke points do not match the {n_strokes} stroke records")


def check_document(path: Any, doc: Mapping[str, Any]) -> None:
    """Check every field of a project document (format and version are checked when it is read).

    Raises
    ------
    ProjectError
        Naming the first field with a wrong type or value.
    """
    f = _Fields(path)
    f.string("created_by", doc.get("created_by"), optional=True)
    f.string("saved_at", doc.get("saved_at"), optional=True)
    _check_image(f, doc["image"])
    ndim = len(doc["image"]["spatial_shape"])
    classes = f.items("classes", doc["classes"], 1, MAX_CLASSES)
    for i, c in enumerate(classes):
        f.obj(f"classes[{i}]", c)
        f.string(f"classes[{i}].name", c.get("name"), max_len=1000)
        color = c.get("color")
        if not isinstance(color, str) or not _COLOR.match(color):
            raise f.fail(f"classes[{i}].color", "a colour '#rrggbb'", color)
    names = f.items("arrays", doc.get("arrays", []), 0, _MAX_ARRAYS)
    for i, name in enumerate(names):
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise f.fail(f"arrays[{i}]", "an array name like 'model/tree0/values'", name)
    if len(set(names)) != len(names):
        raise ProjectError(f"{path} is damaged: arrays lists a name twice")
    _check_strokes(f, doc["strokes"], len(classes), ndim, names)
    if doc.get("next_stroke_id") is not None:
        f.integer("next_stroke_id", doc["next_stroke_id"], 0, MAX_ID)
    f.obj("features", doc["features"])
    if doc["feature_mode"] not in ("2d", "3d"):
        raise f.fail("feature_mode", "'2d' or '3d'", doc["feature_mode"])
    f.obj("classifier", doc["classifier"])
    f.integer("seed", doc["seed"], 0, 2**32 - 1)
    if doc.get("block_shape") is not None:
        f.sizes("block_shape", doc["block_shape"], ndim, ndim)
    if doc.get("voxel_size") is not None:
        sizes = f.items("voxel_size", doc["voxel_size"], ndim, ndim)
        for i, v in enumerate(sizes):
            if not (is_finite_number(v) and v > 0):
                raise f.fail(f"voxel_size[{i}]", "a positive finite number", v)
    if doc.get("channels") is not None:
        n_in = int(doc["image"].get("n_channels") or 1)
        channels = f.items("channels", doc["channels"], 1, n_in)
        for i, c in enumerate(channels):
            f.integer(f"channels[{i}]", c, 0, n_in - 1)
    f.flag("trained", doc["trained"])
    if "model" in doc:
        model = f.obj("model", doc["model"])
        f.obj("model.params", model.get("params"))
        f.integer("model.n_classes", model.get("n_classes"), 1, len(classes))
        f.integer("model.n_features", model.get("n_features"), 1, 2**31)
    if doc.get("autosave") is not None:
        auto = f.obj("autosave", doc["autosave"])
        if not isinstance(auto.get("id"), str) or not _AUTOSAVE_ID.match(auto["id"]):
            raise f.fail("autosave.id", "a hexadecimal id", auto.get("id"))
        f.integer("autosave.journal_seq", auto.get("journal_seq"), 0, 2**62)
