"""A session's results for its own image, written to files; and a session as an ilastik project and back.

:func:`export_session` is what the widget's Export does (``IlastikWidget.export``): the probabilities, segmentation,
uncertainty and objects of the whole image, block by block (never the whole image in memory), into one OME-Zarr
container laid out as :func:`~ilastik_widget.io.batch.predict_batch` writes its outputs (``<path>/probabilities``,
``<path>/segmentation``, ``<path>/uncertainty``, ``<path>/objects`` and the objects table as ``objects.csv`` with
``objects.csv.json`` and ``objects.parquet``), or as TIFF files in a folder. The container is written under a
temporary name and renamed when complete; a stopped or failed export leaves nothing behind.

:func:`export_ilp` writes the session as an ilastik Pixel Classification project (labels, classes, feature
selection, the image as a file reference or embedded); :func:`load_ilp` makes a session from one (ilastik's own
projects included), so a user can go to ilastik desktop and back. The trained classifier is not exchanged: both
sides retrain from the labels.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXPORT_OUTPUTS", "ExportStopped", "export_session", "export_ilp", "load_ilp"]

#: What :func:`export_session` can write.
EXPORT_OUTPUTS = ("probabilities", "segmentation", "uncertainty", "objects")
DEFAULT_OUTPUTS = ("probabilities", "segmentation", "objects")
#: Blocks predicted together (in parallel) by the export.
BATCH = 8
#: The largest image :func:`export_ilp` embeds in a project by default.
EMBED_LIMIT = 2**31
_ILASTIK_FILES = (".tif", ".tiff", ".npy", ".h5", ".hdf5")


class ExportStopped(RuntimeError):
    """The export was stopped before it was complete (nothing of it is left on disk)."""


# ---------------------------------------------------------------------- results of the session's image
def _check_outputs(outputs: Any) -> tuple[str, ...]:
    if isinstance(outputs, str):
        outputs = (outputs,)
    outputs = tuple(outputs)
    bad = [o for o in outputs if o not in EXPORT_OUTPUTS]
    if bad or not outputs:
        raise ValueError(f"unknown outputs {bad or list(outputs)}; choose one or more of {', '.join(EXPORT_OUTPUTS)}")
    return tuple(dict.fromkeys(outputs))


def _ome_axes(session: Any, with_channel: bool) -> tuple[list, list]:
    names = "zyx"[3 - session.ndim :]
    units = tuple(getattr(session.source, "units", None) or ()) if session.source is not None else ()
    scale = session.voxel_size or (1.0,) * session.ndim
    axes: list[dict] = [{"name": "c", "type": "channel"}] if with_channel else []
    for i, name in enumerate(names):
        axis = {"name": name, "type": "space"}
        if i < len(units) and units[i]:
            axis["unit"] = units[i]
        axes.append(axis)
    return axes, ([1.0] if with_channel else []) + [float(s) for s in scale]


def _uncertainty(p: np.ndarray) -> np.ndarray:
    if p.shape[-1] < 2:
        return (1.0 - p[..., 0]).astype(np.float32)
    top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
    return np.clip(1.0 - (top2[..., 1] - top2[..., 0]), 0.0, 1.0).astype(np.float32)


class _Progress:
    """Counts steps done of a total; ``tick()`` reports and checks whether to stop."""

    def __init__(self, total: int, report: Callable[[int, int], Any] | None, cancelled: Callable[[], bool] | None):
        self.total, self.done = total, 0
        self._report, self._cancelled = report, cancelled

    def tick(self, n: int = 1) -> None:
        self.done += n
        if self._report is not None:
            self._report(self.done, self.total)
        self.check()

    def check(self) -> None:
        if self._cancelled is not None and self._cancelled():
            raise ExportStopped("the export was stopped; nothing was written")


def _objects_params(session: Any, objects: Any) -> Any:
    from ..core.insight import _check_predicted, session_voxel_size
    from .batch_objects import objects_params

    voxel_size, _ = session_voxel_size(session)
    params = objects_params(objects, session.n_classes, session.ndim, voxel_size)
    _check_predicted(session, params.label)
    return params


def export_session(
    session: Any,
    path: str | os.PathLike,
    outputs: Sequence[str] = DEFAULT_OUTPUTS,
    *,
    objects: dict | None = None,
    format: str = "zarr",
    overwrite: bool = False,
    zarr_format: int = 2,
    progress: Callable[[int, int], Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
    max_tiff_bytes: int = 2**31,
) -> dict[str, Any]:
    """Write a trained session's results for its own image.

    Parameters
    ----------
    session : Session
        A trained session.
    path : str or path-like
        ``format="zarr"``: the container to write (e.g. ``"cells_results.ome.zarr"``). ``format="tiff"``: a folder
        that receives ``<name>_<output>.tif`` (``name`` is the image's, or ``"image"``) and ``<name>_objects.csv`` /
        ``.parquet``.
    outputs : sequence of str
        Any of ``"probabilities"`` (float32, channels first), ``"segmentation"`` (uint8, classes 1..n),
        ``"uncertainty"`` (float32) and ``"objects"`` (int32 label image and the objects table).
    objects : dict, optional
        The objects' parameters (``{"label": 2, "threshold": 0.5, ...}``, as :meth:`Session.objects
        <ilastik_widget.core.session.Session.objects>` takes them); needed for ``"objects"``.
    format : {"zarr", "tiff"}
    overwrite : bool
        Replace what exists at ``path`` (else an existing output is an error, before anything is computed).
    zarr_format : {2, 3}
    progress : callable, optional
        ``progress(done, total)`` after every step (a block predicted, a block of objects found or relabelled).
    cancelled : callable, optional
        Checked between steps: when it returns True the export stops (:class:`ExportStopped`) and removes what it
        wrote.
    max_tiff_bytes : int
        The largest TIFF file written (TIFFs are written from memory).

    Returns
    -------
    dict
        ``{"input": name, "<output>": path, ..., "objects_table": [csv, parquet], "n_objects": n}``.

    Raises
    ------
    RuntimeError
        The session is not trained.
    ValueError
        Unknown outputs or format, bad objects parameters, a TIFF too large.
    FileExistsError
        An output exists and ``overwrite`` is False.
    ExportStopped
        ``cancelled()`` returned True.
    """
    import zarr

    from .batch import _write_ome_group

    outputs = _check_outputs(outputs)
    fmt = {"tif": "tiff"}.get(str(format).lower(), str(format).lower())
    if fmt not in ("zarr", "tiff"):
        raise ValueError(f"format must be 'zarr' or 'tiff', got {format!r}")
    if zarr_format not in (2, 3):
        raise ValueError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if not session.is_trained:
        raise RuntimeError("the session is not trained: label at least two classes and train it before exporting")
    params = _objects_params(session, objects) if "objects" in outputs else None
    name = str(getattr(session.source, "name", None) or "image")
    out = Path(os.fspath(path))
    if fmt == "zarr":
        finals: list[Path] = [out]
    else:
        finals = [out / f"{name}_{o}.tif" for o in outputs]
        if params is not None:
            finals += [out / f"{name}_objects{s}" for s in (".csv", ".parquet")]
    existing = [str(p) for p in finals if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output already exists: {', '.join(existing)} (pass overwrite=True to replace)")
    folder = out.parent if fmt == "zarr" else out
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{out.name if fmt == 'zarr' else name}.partial-{uuid.uuid4().hex[:8]}"
    shape = tuple(int(n) for n in session.spatial_shape)
    block = tuple(int(b) for b in session.block_shape)
    regions = [session.block_region(b) for b in session.blocks_for(None)]
    pixel = [o for o in outputs if o != "objects"]
    steps = _Progress(len(regions) * (1 + 2 * (params is not None)), progress, cancelled)
    try:
        root = zarr.open_group(str(part), mode="w", zarr_format=2 if zarr_format == 2 else 3)
        root.attrs["ilastik_widget"] = {"complete": False, "input": name}
        arrays: dict[str, Any] = {}
        for o in pixel:
            channels = (session.n_classes,) if o == "probabilities" else ()
            axes, scale = _ome_axes(session, o == "probabilities")
            dtype = np.uint8 if o == "segmentation" else np.float32
            arrays[o] = _write_ome_group(
                root, o, channels + shape, dtype, channels + block, axes, scale, zarr_format, {}
            )
        if params is not None and "probabilities" not in arrays:
            arrays["class"] = root.create_array("scratch-probability", shape=shape, dtype=np.float32, chunks=block)
        for i in range(0, len(regions), BATCH):
            steps.check()
            batch = regions[i : i + BATCH]
            session.precompute(batch)
            for region in batch:
                _write_block(session, region, arrays, params)
                steps.tick()
        result: dict[str, Any] = {"input": name, **{o: o for o in pixel}}
        if params is not None:
            result.update(_export_objects(session, root, part, params, shape, block, zarr_format, arrays, steps))
        if "class" in arrays:
            shutil.rmtree(part / "scratch-probability", ignore_errors=True)
        root.attrs["ilastik_widget"] = {
            "complete": True,
            "input": name,
            "outputs": list(outputs),
            "classes": [{"name": c.name, "color": c.color} for c in session.classes],
        }
        if fmt == "tiff":
            return _to_tiffs(root, part, out, name, outputs, result, session, max_tiff_bytes)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.rename(part, out)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    written: dict[str, Any] = {"input": name, **{o: str(out / result[o]) for o in outputs}}
    if "objects_table" in result:
        written.update(objects_table=[str(out / t) for t in result["objects_table"]], n_objects=result["n_objects"])
    return written


def _write_block(session: Any, region: tuple[slice, ...], arrays: dict[str, Any], params: Any) -> None:
    p = np.asarray(session.predict(region))
    if "probabilities" in arrays:
        arrays["probabilities"][(slice(None),) + tuple(region)] = np.moveaxis(p, -1, 0)
    if "segmentation" in arrays:
        arrays["segmentation"][region] = (np.argmax(p, axis=-1) + 1).astype(np.uint8)
    if "uncertainty" in arrays:
        arrays["uncertainty"][region] = _uncertainty(p)
    if "class" in arrays:
        arrays["class"][region] = p[..., params.label - 1]


def _export_objects(
    session: Any, root: Any, part: Path, params: Any, shape: tuple, block: tuple, zarr_format: int, arrays: dict, steps
) -> dict[str, Any]:
    from ..core.insight import session_image, session_voxel_size
    from .batch import _write_ome_group
    from .batch_objects import label_image_metadata, objects_in_blocks, write_objects_table

    label = params.label
    class_name = session.classes[label - 1].name
    axes, scale = _ome_axes(session, False)
    meta = label_image_metadata(params, class_name, zarr_format)
    labels = _write_ome_group(root, "objects", shape, np.int32, block, axes, scale, zarr_format, meta)
    if "probabilities" in arrays:
        probabilities = arrays["probabilities"]

        def read_probability(box: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(probabilities[(label - 1,) + tuple(box)])
    else:

        def read_probability(box: tuple[slice, ...]) -> np.ndarray:
            return np.asarray(arrays["class"][box])

    regions = [session.block_region(b) for b in session.blocks_for(None)]
    n_ch = int(session.n_input_channels)
    merge = objects_in_blocks(
        regions,
        shape,
        params,
        read_probability,
        lambda box: session_image(session, box),
        labels,
        n_channels=n_ch,
        multichannel=n_ch > 1,
        step=steps.tick,
    )
    _, units = session_voxel_size(session)
    image = str(getattr(session.source, "path", None) or getattr(session.source, "url", None) or "")
    tables = write_objects_table(merge, params, part / "objects", shape, units, image=image, class_name=class_name)
    return {"objects": "objects", "objects_table": [t.name for t in tables], "n_objects": len(merge.table)}


def _to_tiffs(
    root: Any, part: Path, folder: Path, name: str, outputs: tuple, result: dict, session: Any, max_bytes: int
) -> dict[str, Any]:
    """The outputs of the finished container ``part`` as TIFF files in ``folder`` (and the tables moved there)."""
    import tifffile

    spatial = "ZYX"[3 - session.ndim :]
    scale = dict(zip("zyx"[3 - session.ndim :], session.voxel_size or (1.0,) * session.ndim))
    kw: dict[str, Any] = {"resolution": (1.0 / scale["x"], 1.0 / scale["y"])}
    out: dict[str, Any] = {"input": name}
    for o in outputs:
        array = root[f"{o}/0"]
        nbytes = int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize
        if nbytes > max_bytes:
            raise ValueError(
                f"{o} would be {nbytes / 2**30:.1f} GiB, too large for a TIFF written from memory; use format='zarr'"
            )
        data = np.asarray(array[...])
        target = folder / f"{name}_{o}.tif"
        tmp = folder / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            if o == "objects":  # ImageJ files hold no 32-bit integers
                tifffile.imwrite(tmp, data, photometric="minisblack", metadata={"axes": spatial}, **kw)
            else:
                axes = ("C" + spatial if session.ndim == 2 else "ZCYX") if o == "probabilities" else spatial
                if o == "probabilities" and session.ndim == 3:
                    data = np.moveaxis(data, 0, 1)  # ImageJ's hyperstack order: Z C Y X
                meta = {"axes": axes, **({"spacing": scale["z"]} if "z" in scale else {})}
                tifffile.imwrite(tmp, data, imagej=True, metadata=meta, **kw)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        out[o] = str(target)
    if "objects_table" in result:
        tables = []
        for table in result["objects_table"]:
            target = folder / f"{name}_{table}"
            os.replace(part / table, target)
            if table.endswith(".csv"):
                os.replace(part / f"{table}.json", folder / f"{name}_{table}.json")
            tables.append(str(target))
        out["objects_table"] = tables
        out["n_objects"] = result["n_objects"]
    return out


# ---------------------------------------------------------------------- ilastik projects
def _ilastik_image(session: Any, image: Any, embed: bool | None) -> tuple[Any, int | None]:
    """(image for :func:`~ilastik_widget.io.ilp.export_ilp`, its channel axis): the file the session's image came
    from when ilastik can read it, else the array to embed."""
    src = session.source
    if image is not None:
        return image, session.channel_axis if not isinstance(image, (str, os.PathLike)) else None
    path = getattr(src, "path", None)
    if (
        not embed
        and path
        and str(path).lower().endswith(_ILASTIK_FILES)
        and os.path.isfile(path)
        and src.time_index is None
        and len(src.axes) == np.ndim(session.image)
    ):
        return str(path), (src.axes.index("c") if "c" in src.axes else None)
    if embed is False:
        raise ValueError(
            "the session's image has no file ilastik can read (TIFF, HDF5 or .npy): pass embed=True to copy it into "
            "the project, or image= a file of it"
        )
    nbytes = int(np.prod(session.image.shape, dtype=np.int64)) * np.dtype(session.image.dtype).itemsize
    if embed is None and nbytes > EMBED_LIMIT:
        raise ValueError(
            f"the image ({nbytes / 2**30:.1f} GiB) has no file ilastik can read and is too large to embed by default: "
            "save it as TIFF or HDF5 and pass image=<that file>, or pass embed=True"
        )
    return np.asarray(session.image), session.channel_axis


def export_ilp(
    session: Any,
    path: str | os.PathLike,
    *,
    image: Any = None,
    embed: bool | None = None,
    nickname: str | None = None,
) -> Path:
    """Write a session as an ilastik Pixel Classification project (``.ilp``) that ilastik 1.4 opens and retrains.

    Parameters
    ----------
    session : Session
    path : str or path-like
        The ``.ilp`` file to write (replaced if it exists).
    image : path or array-like, optional
        The raw data the project refers to: default the file the session's image was opened from when ilastik
        reads it (TIFF, HDF5 as ``"file.h5/dataset"``, ``.npy``), else the image itself, embedded in the project.
    embed : bool, optional
        True: always embed the image; False: never (an error when there is no such file). Default: embed when there
        is no file, up to :data:`EMBED_LIMIT` bytes.
    nickname : str, optional
        The name ilastik shows for the image.

    Returns
    -------
    Path

    Notes
    -----
    The labels (strokes and imported labels as they are now), the classes (names and colours), the feature selection
    and feature mode are written; the trained classifier is not (ilastik retrains from the labels).
    """
    from .ilp import export_ilp as write_ilp

    raw, channel_axis = _ilastik_image(session, image, embed)
    return write_ilp(
        path,
        session.annotations,
        session.feature_selection,
        raw,
        channel_axis=channel_axis,
        feature_mode=session.feature_mode,
        nickname=nickname or getattr(session.source, "name", None),
    )


def _ilp_image(project: Any) -> tuple[Any, int | None]:
    """(image, channel axis) of an ilastik project's raw data: a file it refers to or the image embedded in it."""
    import h5py

    info = project.image
    if info is None:
        raise ValueError(f"{project.path} refers to no image: pass image=")
    if info.kind == "url":
        from .sources import open_source

        return open_source(info.location), None
    if info.kind == "internal":
        file, inner = str(project.path), info.location
    else:
        hdf5 = re.match(r"^(.*\.(?:h5|hdf5))(/.+)$", info.location, re.IGNORECASE)
        file, inner = (hdf5.group(1), hdf5.group(2)) if hdf5 else (info.location, "")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"the image of {project.path} is not found at {file}: pass image=")
        if not inner:
            from .sources import open_source

            src = open_source(file)
            return src, None
    with h5py.File(file, "r") as f:
        if inner not in f:
            raise ValueError(f"{file} has no dataset {inner!r}: pass image=")
        data = f[inner][()]
    axes = info.axes if len(info.axes) == data.ndim else "zyxc"[4 - data.ndim :]
    index = tuple(0 if a == "t" or (a == "z" and data.shape[i] == 1) else slice(None) for i, a in enumerate(axes))
    data, axes = data[index], "".join(a for a, i in zip(axes, index) if isinstance(i, slice))
    order = [axes.index(a) for a in "zyx" if a in axes] + ([axes.index("c")] if "c" in axes else [])
    data = np.transpose(data, order)
    if "c" in axes and data.shape[-1] == 1:
        return data[..., 0], None
    return data, (data.ndim - 1 if "c" in axes else None)


def load_ilp(path: str | os.PathLike, image: Any = None, *, train: bool = False, **session_options: Any) -> Any:
    """A session from an ilastik Pixel Classification project: its image, classes, labels and feature selection.

    Parameters
    ----------
    path : str or path-like
        The ``.ilp`` file (written by ilastik or by :func:`export_ilp`).
    image : array-like or ImageSource or path, optional
        The image, when the project's reference is not found here (default: the file the project names, or the
        image embedded in it).
    train : bool
        Train the session at once (needs labels of two classes).
    **session_options
        Passed to :class:`~ilastik_widget.core.session.Session` (``seed``, ``classifier``...).

    Raises
    ------
    IlpError
        The file is not a Pixel Classification project, or it is damaged.
    ValueError, FileNotFoundError
        The image cannot be found or does not fit the labels.
    """
    from ..core.session import Session
    from .ilp import annotations_from_ilp, import_ilp

    project = import_ilp(path)
    channel_axis = session_options.pop("channel_axis", None)
    if image is None:
        image, channel_axis = _ilp_image(project)
    if isinstance(image, (str, os.PathLike)):
        from .sources import open_source

        image = open_source(image, channel_axis=channel_axis)
        channel_axis = None
    if project.dropped_features:
        cells = ", ".join(f"{f} at {s:g}" for f, s in project.dropped_features)
        warnings.warn(f"{project.path}: features this package does not compute are left out: {cells}", stacklevel=2)
    options = dict(session_options)
    if project.selection is not None and not project.selection.is_empty:
        options.setdefault("features", project.selection)
    if project.feature_mode == "2d" and project.spatial_shape is not None and len(project.spatial_shape) == 3:
        options.setdefault("feature_mode", "2d")
    session = Session(image, channel_axis=channel_axis, **options)
    session.annotations = annotations_from_ilp(project, session.spatial_shape)
    if train:
        session.train()
    return session
