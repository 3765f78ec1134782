"""ilastik project files (.ilp): export a session's labels, features and image reference; import them back.

An ``.ilp`` is an HDF5 file written by ilastik's applet serializers. The layout written and read here follows
ilastik 1.4's public source: ``ilastik/shell/projectManager.py`` (``ilastikVersion``, ``workflowName``, ``time``),
``ilastik/applets/dataSelection/dataSelectionSerializer.py`` and ``opDataSelection.py`` (``Input Data``: ``Role
Names``, ``infos/lane0000/Raw Data`` with ``__class__``, ``filePath``, ``axistags``, ``shape``...; embedded images
under ``Input Data/local_data``), ``ilastik/applets/featureSelection/featureSelectionSerializer.py``
(``FeatureSelections``: ``FeatureIds``, ``Scales``, ``SelectionMatrix``, ``ComputeIn2d``) and
``ilastik/applets/pixelClassification/pixelClassificationSerializer.py`` with ``appletSerializer.py``
(``PixelClassification``: ``LabelNames``, ``LabelColors``, ``PmapColors``, ``LabelSets/labels000/block0000``... with
``blockSlice`` and ``axistags`` attributes). ilastik's webilastik (``webilastik/classic_ilastik/ilp``) writes the same.

Nothing is unpickled: the classifier, its factory and the bookmarks (pickles in ilastik's files) are neither read nor
written; ilastik then uses its default Random Forest and retrains from the labels (``--retrain`` in headless mode).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.annotations import Annotations, LabelClass
from ..core.features import FEATURES, SCALES, FeatureSelection, is_valid
from ..core.label_entries import check_class_name, next_color
from ..core.limits import MAX_CLASSES

__all__ = ["IlpError", "IlpImage", "IlpProject", "FEATURE_IDS", "export_ilp", "import_ilp", "annotations_from_ilp"]

#: ilastik's FeatureIds of our features, in ilastik's default order (``opFeatureSelection.getFeatureIdOrder``).
FEATURE_IDS: dict[str, str] = {
    "gaussian_smoothing": "GaussianSmoothing",
    "laplacian_of_gaussian": "LaplacianOfGaussian",
    "gaussian_gradient_magnitude": "GaussianGradientMagnitude",
    "difference_of_gaussians": "DifferenceOfGaussians",
    "structure_tensor_eigenvalues": "StructureTensorEigenvalues",
    "hessian_of_gaussian_eigenvalues": "HessianOfGaussianEigenvalues",
}
_FEATURE_OF_ID = {v: k for k, v in FEATURE_IDS.items()}
WORKFLOW_NAME = "Pixel Classification"
_WORKFLOW_NAMES = (WORKFLOW_NAME, "PixelClassificationWorkflow")  # ilastik accepts its display or class name
ROLE_NAMES = ("Raw Data", "Prediction Mask")
_TYPE_FLAGS = {"c": 1, "x": 2, "y": 2, "z": 2, "t": 8}  # vigra AxisType: Channels, Space, Time
_SLICE_RE = re.compile(r"^\[(\d+:\d+)(,\d+:\d+)*\]$")
_FILE_EXTENSIONS = (".tif", ".tiff", ".h5", ".hdf5", ".npy")


class IlpError(ValueError):
    """An .ilp file that cannot be read: damaged, not HDF5, or not a Pixel Classification project."""


@dataclass(frozen=True)
class IlpImage:
    """The raw data an ilastik project refers to (lane 0).

    Attributes
    ----------
    kind : {"file", "internal", "url"}
        A file (``location`` is its absolute path, HDF5 internal path appended), an image embedded in the project
        (``location`` is its path inside the .ilp) or a URL.
    location : str
    axes : str
        ilastik's axis keys of the stored image, e.g. ``"yxc"`` or ``"zyx"``.
    shape : tuple of int
        Stored shape (one entry per axis key).
    nickname : str
    """

    kind: str
    location: str
    axes: str
    shape: tuple[int, ...]
    nickname: str = ""

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes in (z,) y, x order; z only when longer than 1."""
        sizes = dict(zip(self.axes, self.shape))
        return tuple(sizes[k] for k in "zyx" if k in sizes and (k != "z" or sizes[k] > 1))


@dataclass(frozen=True)
class IlpProject:
    """What :func:`import_ilp` reads from a Pixel Classification project.

    Attributes
    ----------
    classes : list of LabelClass
        Label names and colours, in ilastik's order (label value k is class k).
    selection : FeatureSelection or None
        The feature matrix (None when the project has none yet).
    compute_in_2d : dict
        Scale -> whether ilastik computes it slice-wise (volumes only).
    image : IlpImage or None
        Lane 0's raw data.
    spatial_shape : tuple of int or None
        The labels' spatial shape, (z,) y, x.
    label_blocks : list of (tuple of slice, np.ndarray)
        uint8 label blocks of lane 0 in (z,) y, x order, image coordinates.
    dropped_features : list of (str, float)
        Selected cells ilastik allows but this package does not (e.g. a scale outside its matrix).
    ilastik_version : str or None
    """

    path: Path
    classes: list[LabelClass]
    selection: FeatureSelection | None
    compute_in_2d: dict[float, bool]
    image: IlpImage | None
    spatial_shape: tuple[int, ...] | None
    label_blocks: list[tuple[tuple[slice, ...], np.ndarray]] = field(repr=False)
    dropped_features: list[tuple[str, float]] = field(default_factory=list)
    ilastik_version: str | None = None

    @property
    def feature_mode(self) -> str | None:
        """``"2d"`` when every selected scale is computed slice-wise, ``"3d"`` when none is, None when mixed."""
        if self.selection is None:
            return None
        flags = {self.compute_in_2d.get(s, False) for s in self.selection.scales()}
        return None if len(flags) > 1 else ("2d" if flags == {True} else "3d")

    def label_region(self) -> tuple[slice, ...] | None:
        """Bounding box of all label blocks (None without labels)."""
        if not self.label_blocks:
            return None
        lo = np.min([[s.start for s in r] for r, _ in self.label_blocks], axis=0)
        hi = np.max([[s.stop for s in r] for r, _ in self.label_blocks], axis=0)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def labels(self, region: Sequence[slice] | None = None) -> np.ndarray:
        """Dense uint8 labels of ``region`` (default: :meth:`label_region`; empty without labels)."""
        region = tuple(region) if region is not None else self.label_region()
        if region is None:
            return np.zeros((0,) * len(self.spatial_shape or (0, 0)), np.uint8)
        out = np.zeros(tuple(s.stop - s.start for s in region), np.uint8)
        for block_region, block in self.label_blocks:
            lo = [max(b.start, r.start) for b, r in zip(block_region, region)]
            hi = [min(b.stop, r.stop) for b, r in zip(block_region, region)]
            if any(h <= lo_ for lo_, h in zip(lo, hi)):
                continue
            src = tuple(slice(a - b.start, c - b.start) for a, c, b in zip(lo, hi, block_region))
            dst = tuple(slice(a - r.start, c - r.start) for a, c, r in zip(lo, hi, region))
            part = block[src]
            out[dst] = np.where(part != 0, part, out[dst])
        return out


# ---------------------------------------------------------------------- export
def _axistags_json(keys: str) -> str:
    """vigra AxisTags JSON as ilastik stores it (``AxisTags.toJSON``)."""
    return json.dumps(
        {"axes": [{"key": k, "typeFlags": _TYPE_FLAGS[k], "resolution": 0, "description": ""} for k in keys]},
        indent=2,
    )


def _image_axes(ndim_image: int, n_spatial: int, channel_axis: int | None) -> str:
    spatial = "zyx"[3 - n_spatial :]
    if channel_axis is None:
        if ndim_image != n_spatial:
            raise ValueError(
                f"the image has {ndim_image} axes but the labels {n_spatial}: pass channel_axis= for its channel axis"
            )
        return spatial
    if ndim_image != n_spatial + 1 or not -ndim_image <= channel_axis < ndim_image:
        raise ValueError(f"channel_axis={channel_axis} does not fit an image of {ndim_image} axes")
    c = channel_axis % ndim_image
    return spatial[:c] + "c" + spatial[c:]


def _stored_shape(path: str) -> tuple[int, ...]:
    """Shape ilastik's reader sees for a TIFF (first series), HDF5 dataset (``file.h5/inner/path``) or .npy file."""
    lower = path.lower()
    if lower.endswith((".tif", ".tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if len(tif.series) != 1:
                raise ValueError(f"{path} holds {len(tif.series)} image series; ilastik reads files with one")
            return tuple(int(n) for n in tif.series[0].shape)
    if lower.endswith(".npy"):
        return tuple(int(n) for n in np.load(path, mmap_mode="r", allow_pickle=False).shape)
    match = re.match(r"^(.*\.(?:h5|hdf5))(/.+)$", path, re.IGNORECASE)
    if match:
        import h5py

        with h5py.File(match.group(1), "r") as f:
            if match.group(2) not in f or not isinstance(f[match.group(2)], h5py.Dataset):
                raise ValueError(f"{match.group(1)} has no dataset {match.group(2)!r}")
            return tuple(int(n) for n in f[match.group(2)].shape)
    raise ValueError(
        f"ilastik cannot be pointed at {path!r}: give a {', '.join(_FILE_EXTENSIONS)} file (HDF5 as "
        "'file.h5/dataset'), or the image array to embed it in the project"
    )


def _raw_data_info(
    f: Any, image: str | np.ndarray, shape: tuple[int, ...], axes: str, ilp_path: Path, nickname: str | None
) -> dict[str, Any]:
    """The ``Raw Data`` entries of lane 0 (ilastik's ``DatasetInfo.to_json_data``); embeds an array."""
    dataset_id = str(uuid.uuid1())
    info: dict[str, Any] = {
        "allowLabels": True,
        "axistags": _axistags_json(axes).encode("utf-8"),
        "datasetId": dataset_id.encode("utf-8"),
        "display_mode": b"default",
        "normalizeDisplay": False,
        "shape": np.asarray(shape, np.int64),
    }
    if isinstance(image, str):
        external = Path(re.sub(r"(?i)(\.(?:h5|hdf5))/.*$", r"\1", image))
        folder = ilp_path.parent.resolve()
        # ilastik's convention: relative to the project when the file is in its folder, else absolute.
        under = external.resolve().is_relative_to(folder)
        info.update(
            {
                "__class__": b"RelativeFilesystemDatasetInfo" if under else b"FilesystemDatasetInfo",
                "location": b"FileSystem",
                "filePath": (os.path.relpath(image, folder) if under else image).encode("utf-8"),
                "nickname": (nickname or external.stem).encode("utf-8"),
            }
        )
    else:
        inner = f"/Input Data/local_data/{dataset_id}"
        dset = f.create_dataset(inner, data=image, compression="gzip", compression_opts=4)
        dset.attrs["axistags"] = _axistags_json(axes)
        info.update(
            {
                "__class__": b"ProjectInternalDatasetInfo",
                "location": b"ProjectInternal",
                "filePath": inner.encode("utf-8"),
                "inner_path": inner.encode("utf-8"),
                "fromstack": True,
                "nickname": (nickname or "image").encode("utf-8"),
            }
        )
    return info


def _write_labels(group: Any, annotations: Annotations, block_shape: Sequence[int]) -> int:
    """Non-empty label blocks, each shrunk to its bounding box (ilastik's ``shrink_to_bb``); returns their number."""
    coords, labels = annotations.labelled()
    keys = "zyx"[3 - annotations.ndim :] + "c"
    tags = _axistags_json(keys)
    lane = group.create_group("labels000")  # present even without labels, as ilastik writes it
    if not len(labels):
        return 0
    block_of = coords // np.asarray(block_shape)
    order = np.lexsort(block_of.T[::-1])
    coords, labels, block_of = coords[order], labels[order], block_of[order]
    cuts = np.flatnonzero(np.any(np.diff(block_of, axis=0) != 0, axis=1)) + 1
    for i, (c, v) in enumerate(zip(np.split(coords, cuts), np.split(labels, cuts))):
        lo, hi = c.min(axis=0), c.max(axis=0) + 1
        block = np.zeros(tuple(hi - lo) + (1,), np.uint8)
        block[tuple((c - lo).T) + (0,)] = v
        dset = lane.create_dataset(f"block{i:04d}", data=block)
        dset.attrs["blockSlice"] = "[" + ",".join(f"{a}:{b}" for a, b in zip(lo, hi)) + ",0:1]"
        dset.attrs["axistags"] = tags
    return len(cuts) + 1


def export_ilp(
    path: str | os.PathLike,
    annotations: Annotations,
    selection: FeatureSelection,
    image: Any,
    *,
    channel_axis: int | None = None,
    feature_mode: str = "3d",
    nickname: str | None = None,
    ilastik_version: str = "1.4.0",
    block_shape: Sequence[int] | None = None,
) -> Path:
    """Write an ilastik Pixel Classification project with these labels, features and image.

    Parameters
    ----------
    path : str or path-like
        The ``.ilp`` to write (replaced atomically if it exists).
    annotations : Annotations
        Classes (names, colours) and labels; label value k is class k in ilastik too.
    selection : FeatureSelection
        The feature matrix.
    image : path or array-like
        The raw data: a TIFF, ``.npy`` or HDF5 file ilastik can read (HDF5 as ``"file.h5/dataset"``; written as a
        path relative to the project when the file lies in the project's folder, else absolute), or an array that
        is embedded in the project (as ilastik's "copy into project").
    channel_axis : int, optional
        The image's channel axis (None: no channel axis).
    feature_mode : {"3d", "2d"}
        For volumes: features computed in 3D or slice by slice (ilastik's "in 2D").
    nickname : str, optional
        The name ilastik shows for the image (default: the file name).
    ilastik_version : str
        Written as the project's ``ilastikVersion`` (ilastik 1.4 reads labels stored in its axis order from 1.4.0b8).
    block_shape : sequence of int, optional
        Grid of the label blocks (default 256 in 2D, 64 in 3D; each block is shrunk to its labels).

    Raises
    ------
    ValueError
        An image ilastik cannot read, or whose shape differs from the labels'.
    """
    import h5py

    path = Path(os.fspath(path))
    if feature_mode not in ("2d", "3d"):
        raise ValueError(f'feature_mode must be "2d" or "3d", got {feature_mode!r}')
    if selection.is_empty:
        raise ValueError("the feature selection is empty: ilastik needs at least one feature")
    n_spatial = annotations.ndim
    if isinstance(image, (str, os.PathLike)):
        image = os.path.abspath(os.fspath(image))
        shape = _stored_shape(image)
    else:
        image = np.ascontiguousarray(np.asarray(image))
        shape = tuple(int(n) for n in image.shape)
    axes = _image_axes(len(shape), n_spatial, channel_axis)
    spatial = tuple(n for k, n in zip(axes, shape) if k != "c")
    if spatial != tuple(annotations.shape):
        raise ValueError(f"the image's spatial shape {spatial} differs from the labels' {annotations.shape}")
    block_shape = tuple(block_shape or (256 if n_spatial == 2 else 64,) * n_spatial)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("ilastikVersion", data=ilastik_version.encode("utf-8"))
            f.create_dataset("workflowName", data=WORKFLOW_NAME.encode("utf-8"))
            f.create_dataset("time", data=time.ctime().encode("utf-8"))
            f.create_dataset("currentApplet", data=np.int64(0))
            data = f.create_group("Input Data")
            data.create_dataset("Role Names", data=[r.encode("utf-8") for r in ROLE_NAMES])
            data.create_dataset("StorageVersion", data="0.2")
            data.create_group("local_data")
            lane = data.create_group("infos").create_group("lane0000")
            info = _raw_data_info(f, image, shape, axes, path, nickname)
            raw = lane.create_group(ROLE_NAMES[0])
            for key, value in info.items():
                raw.create_dataset(key, data=value)
            lane.create_group(ROLE_NAMES[1])  # no prediction mask: an empty group, as ilastik writes it

            feats = f.create_group("FeatureSelections")
            feats.create_dataset("FeatureIds", data=[FEATURE_IDS[name].encode("utf-8") for name in FEATURES])
            feats.create_dataset("Scales", data=np.asarray(SCALES, np.float64))
            matrix = np.array([[selection.enabled(name, s) for s in SCALES] for name in FEATURES], bool)
            feats.create_dataset("SelectionMatrix", data=matrix)
            in_2d = n_spatial == 2 or feature_mode == "2d"
            feats.create_dataset("ComputeIn2d", data=np.full(len(SCALES), in_2d, bool))
            feats.create_dataset("StorageVersion", data="0.1")

            pc = f.create_group("PixelClassification")
            colors = np.array([[int(c.color[i : i + 2], 16) for i in (1, 3, 5)] for c in annotations.classes], np.int64)
            for name, value in (
                ("LabelNames", [c.name.encode("utf-8") for c in annotations.classes]),
                ("LabelColors", colors),
                ("PmapColors", colors),
            ):
                pc.create_dataset(name, data=value).attrs["isEmpty"] = False
            _write_labels(pc.create_group("LabelSets"), annotations, block_shape)
            pc.create_dataset("StorageVersion", data="0.1")

            export = f.create_group("Prediction Export")
            export.create_dataset("OutputFilenameFormat", data="{dataset_dir}/{nickname}_{result_type}")
            export.create_dataset("OutputFormat", data="hdf5")
            export.create_dataset("OutputInternalPath", data="exported_data")
            export.create_dataset("StorageVersion", data="0.1")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------- import
def _text(value: Any, where: str) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise IlpError(f"{where} is not UTF-8 text") from None
    if isinstance(value, str):
        return value
    raise IlpError(f"{where} must be text, found {type(value).__name__}")


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if not isinstance(value, bool | np.bool_ | int | np.integer):
        raise IlpError(f"{where} must be true or false, found {value!r:.60}")
    return bool(value)


def _whole_numbers(value: Any, where: str) -> tuple[int, ...]:
    values = np.atleast_1d(value)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (values < 0).any():
        raise IlpError(f"{where} must be a list of whole numbers, found {value!r:.60}")
    return tuple(int(n) for n in values)


def _numbers(value: Any, where: str) -> np.ndarray:
    values = np.asarray(value).reshape(-1)
    if values.dtype == np.bool_ or not (
        np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    ):
        raise IlpError(f"{where} must be numbers, found {value!r:.60}")
    return values.astype(np.float64)


def _dataset(group: Any, key: str, where: str) -> Any:
    import h5py

    node = group.get(key)
    if not isinstance(node, h5py.Dataset):
        raise IlpError(f"{where}: '{group.name.rstrip('/')}/{key}' is missing or not a dataset")
    return node


def _read_classes(pc: Any, where: str) -> list[LabelClass]:
    if "LabelNames" not in pc or _flag(pc["LabelNames"].attrs.get("isEmpty", False), f"{where}: LabelNames isEmpty"):
        return []
    names = _dataset(pc, "LabelNames", where)[()]
    if np.ndim(names) != 1 or len(names) > MAX_CLASSES:
        raise IlpError(f"{where}: LabelNames must list at most {MAX_CLASSES} names, found shape {np.shape(names)}")
    try:
        texts = [check_class_name(_text(n, f"{where}: a label name")) for n in names]
    except ValueError as exc:
        raise IlpError(f"{where}: {exc}") from None
    colors = pc["LabelColors"][()] if "LabelColors" in pc else None
    classes: list[LabelClass] = []
    for i, name in enumerate(texts):
        if colors is not None and np.shape(colors) == (len(texts), 3) and np.issubdtype(colors.dtype, np.integer):
            r, g, b = (int(np.clip(v, 0, 255)) for v in colors[i])
            color = f"#{r:02x}{g:02x}{b:02x}"
        else:
            color = next_color({c.color for c in classes}, len(classes))
        classes.append(LabelClass(name, color))
    return classes


def _read_features(f: Any, where: str) -> tuple[FeatureSelection | None, dict[float, bool], list[tuple[str, float]]]:
    group = f.get("FeatureSelections")
    if group is None or "FeatureIds" not in group or "SelectionMatrix" not in group:
        return None, {}, []
    ids = [_text(v, f"{where}: a FeatureId") for v in np.atleast_1d(_dataset(group, "FeatureIds", where)[()])]
    scales = _numbers(_dataset(group, "Scales", where)[()], f"{where}: FeatureSelections/Scales")
    matrix = np.asarray(_dataset(group, "SelectionMatrix", where)[()])
    if matrix.shape != (len(ids), len(scales)) or matrix.dtype != np.bool_:
        raise IlpError(
            f"{where}: SelectionMatrix {matrix.shape} does not match {len(ids)} features x {len(scales)} scales"
        )
    in_2d = np.zeros(len(scales), bool)
    if "ComputeIn2d" in group:
        flags = np.asarray(group["ComputeIn2d"][()]).reshape(-1)
        if not (flags.dtype == np.bool_ or np.issubdtype(flags.dtype, np.integer)):
            raise IlpError(
                f"{where}: FeatureSelections/ComputeIn2d must be true or false per scale, found {flags.dtype}"
            )
        flags = flags.astype(bool)
        in_2d[: min(len(flags), len(scales))] = flags[: len(scales)]
    cells, dropped = [], []
    compute_in_2d: dict[float, bool] = {}
    for i, j in zip(*np.nonzero(matrix)):
        if ids[i] not in _FEATURE_OF_ID:
            raise IlpError(f"{where}: unknown feature {ids[i]!r} (known: {', '.join(FEATURE_IDS.values())})")
        name = _FEATURE_OF_ID[ids[i]]
        match = [s for s in SCALES if abs(s - scales[j]) < 1e-6]
        if not match or not is_valid(name, match[0]):
            dropped.append((name, float(scales[j])))
            continue
        cells.append((name, match[0]))
        compute_in_2d[match[0]] = bool(in_2d[j])
    return FeatureSelection(frozenset(cells)), compute_in_2d, dropped


def _read_image(f: Any, ilp: Path, where: str) -> IlpImage | None:
    infos = f.get("Input Data/infos")
    if infos is None or not len(infos):
        return None
    lane = infos[sorted(infos.keys())[0]]
    raw = lane.get(ROLE_NAMES[0], lane) if "location" not in lane else lane  # old projects: one role per lane
    if not len(raw):
        return None
    if "axistags" in raw:
        try:
            axes = "".join(a["key"] for a in json.loads(_text(raw["axistags"][()], f"{where}: axistags"))["axes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IlpError(f"{where}: the raw data's axistags cannot be read ({exc})") from None
    elif "axisorder" in raw:
        axes = _text(raw["axisorder"][()], f"{where}: axisorder")
    else:
        raise IlpError(f"{where}: the raw data has no axistags")
    shape = _whole_numbers(raw["shape"][()], f"{where}: the raw data's shape") if "shape" in raw else ()
    if shape and len(shape) != len(axes) or not set(axes) <= set("tczyx") or not {"y", "x"} <= set(axes):
        raise IlpError(f"{where}: the raw data's axes {axes!r} do not fit its shape {shape}")
    cls = _text(raw["__class__"][()], where) if "__class__" in raw else _text(raw["location"][()], where)
    location = _text(raw["filePath"][()], f"{where}: filePath") if "filePath" in raw else ""
    if cls in ("ProjectInternalDatasetInfo", "ProjectInternal"):
        kind = "internal"
        location = _text(raw["inner_path"][()], where) if "inner_path" in raw else location
    elif re.match(r"^[a-z][a-z0-9+.-]*://", location):
        kind = "url"
    else:
        kind = "file"
        if not os.path.isabs(location):
            location = os.path.normpath(os.path.join(ilp.parent.resolve(), location))
    nickname = _text(raw["nickname"][()], where) if "nickname" in raw else ""
    return IlpImage(kind, location, axes, shape, nickname)


def _parse_block_slice(value: Any, where: str) -> list[tuple[int, int]]:
    text = _text(value, f"{where}: blockSlice").replace(" ", "")
    if not _SLICE_RE.match(text):
        raise IlpError(f"{where}: blockSlice {text!r} is not of the form '[a:b,c:d,...]'")
    spans = [tuple(int(v) for v in part.split(":")) for part in text[1:-1].split(",")]
    return [(a, b) for a, b in spans]


def _block_axes(node: Any, image: IlpImage | None, bw: str) -> tuple[str, list[tuple[int, int]]]:
    """Axis keys and spans of a label block, checked against its shape."""
    if "axistags" in node.attrs:
        try:
            keys = "".join(a["key"] for a in json.loads(_text(node.attrs["axistags"], bw))["axes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IlpError(f"{bw}: axistags cannot be read ({exc})") from None
    elif image is not None and len(image.axes) == node.ndim:
        keys = image.axes  # older projects: the blocks have the raw data's axes
    else:
        raise IlpError(f"{bw} has no axistags and its {node.ndim} axes do not match the raw data's")
    spans = _parse_block_slice(node.attrs.get("blockSlice", b""), bw)
    if len(spans) != node.ndim or len(keys) != node.ndim or not set(keys) <= set("tczyx") or "y" not in keys:
        raise IlpError(f"{bw}: blockSlice, axes {keys!r} and shape {node.shape} disagree")
    if tuple(b - a for a, b in spans) != node.shape:
        raise IlpError(f"{bw}: shape {node.shape} does not match its blockSlice")
    if not np.issubdtype(node.dtype, np.integer):
        raise IlpError(f"{bw} has dtype {node.dtype}; labels are whole numbers")
    span = dict(zip(keys, spans))
    if "c" in span and span["c"][1] - span["c"][0] != 1:
        raise IlpError(f"{bw} has {span['c'][1] - span['c'][0]} channels; labels have one")
    return keys, spans


def _read_labels(
    f: Any, image: IlpImage | None, n_classes: int, where: str
) -> tuple[list[tuple[tuple[slice, ...], np.ndarray]], tuple[int, ...] | None]:
    """Lane 0's label blocks (first time point) in (z,) y, x order, and the labels' spatial shape."""
    import h5py

    lane = f.get("PixelClassification/LabelSets/labels000")
    spatial_shape = image.spatial_shape if image is not None and image.shape else None
    limit = math.prod(image.shape) if image is not None and image.shape else 2**31
    found = []
    for name in sorted(lane.keys()) if lane is not None else []:
        node = lane[name]
        bw = f"{where}: label block {node.name}"
        if not isinstance(node, h5py.Dataset):
            raise IlpError(f"{bw} is not a dataset (masked label blocks are not supported)")
        if node.size > limit:
            raise IlpError(f"{bw} has {node.size} voxels, more than the image")
        keys, spans = _block_axes(node, image, bw)
        if "t" not in keys or spans[keys.index("t")][0] == 0:  # later time points are not read
            found.append((node, keys, dict(zip(keys, spans)), bw))
    # z is spatial when the image has depth; without the image's shape, when some block lies beyond z = 0.
    if spatial_shape is not None:
        use_z = len(spatial_shape) == 3
    else:
        use_z = any("z" in span and span["z"] != (0, 1) for _, _, span, _ in found)
    blocks: list[tuple[tuple[slice, ...], np.ndarray]] = []
    for node, keys, span, bw in found:
        data = node[()]
        if data.size and (data.min() < 0 or data.max() > n_classes):
            raise IlpError(f"{bw} holds label {data.max()} but the project has {n_classes} classes")
        wanted = [k for k in "zyx" if k in span and (k != "z" or use_z)]
        data = data[tuple(slice(None) if k in wanted else 0 for k in keys)]  # the first t, c and flat z
        data = np.transpose(data, [[k for k in keys if k in wanted].index(k) for k in wanted])
        blocks.append((tuple(slice(*span[k]) for k in wanted), data.astype(np.uint8)))
    if spatial_shape is None and blocks:
        spatial_shape = tuple(int(n) for n in np.max([[s.stop for s in r] for r, _ in blocks], axis=0))
    for region, _ in blocks:
        if spatial_shape is not None and (
            len(region) != len(spatial_shape) or any(s.stop > n for s, n in zip(region, spatial_shape))
        ):
            raise IlpError(f"{where}: a label block {region} lies outside the image of shape {spatial_shape}")
    return blocks, spatial_shape


def import_ilp(path: str | os.PathLike) -> IlpProject:
    """Read the classes, labels, feature selection and image reference of an ilastik Pixel Classification project.

    Labels are those of the first image (lane 0) and, for time series, of the first time point. Nothing is
    unpickled; the trained classifier is not read (retrain from the labels).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    IlpError
        Not an HDF5 file, not a Pixel Classification project, or damaged (names the dataset).
    """
    import h5py

    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"no ilastik project at {path}")
    where = str(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise IlpError(f"{path} is not an ilastik project (not a readable HDF5 file: {exc})") from None
    with f:
        try:
            if "workflowName" not in f:
                raise IlpError(f"{path} has no workflowName: not an ilastik project")
            workflow = _text(f["workflowName"][()], f"{where}: workflowName")
            if workflow not in _WORKFLOW_NAMES:
                raise IlpError(f"{path} is an ilastik {workflow!r} project, not {WORKFLOW_NAME}")
            version = _text(f["ilastikVersion"][()], where) if "ilastikVersion" in f else None
            pc = f.get("PixelClassification")
            if pc is None:
                raise IlpError(f"{where}: the PixelClassification group is missing")
            classes = _read_classes(pc, where)
            selection, compute_in_2d, dropped = _read_features(f, where)
            image = _read_image(f, path, where)
            blocks, spatial_shape = _read_labels(f, image, len(classes) or MAX_CLASSES, where)
            if not classes and blocks:  # old projects without names: ilastik names them "Label k"
                top = max(int(b.max()) for _, b in blocks)
                for k in range(1, top + 1):
                    classes.append(LabelClass(f"Label {k}", next_color({c.color for c in classes}, k - 1)))
        except (KeyError, TypeError, OSError, RuntimeError) as exc:  # h5py's errors on damaged files
            raise IlpError(f"{where} is damaged: {exc}") from None
    return IlpProject(path, classes, selection, compute_in_2d, image, spatial_shape, blocks, dropped, version)


def annotations_from_ilp(project: IlpProject, shape: Sequence[int] | None = None) -> Annotations:
    """Annotations with the project's classes and its labels as one imported entry.

    ``shape`` is the image's spatial shape (default the project's); the labels must fit it.
    """
    shape = tuple(shape) if shape is not None else project.spatial_shape
    if shape is None:
        raise IlpError(f"{project.path}: the project gives no image shape; pass shape=")
    ann = Annotations(shape, classes=project.classes or ("Label 1", "Label 2"))
    blocks = [(region, block) for region, block in project.label_blocks if block.any()]
    if blocks:  # block by block: labels far apart in a large image never become one dense box
        try:
            ann.import_label_boxes(blocks, source=project.path.name)
        except ValueError as exc:
            raise IlpError(f"{project.path}: {exc}") from None
    return ann
