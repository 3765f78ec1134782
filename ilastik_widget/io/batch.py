"""Batch prediction: apply a trained session to whole images and volumes with Dask.

Each block is read with the feature halo around it (``dask.array.map_overlap``, no padding at the image border, where
the filters mirror exactly as for the whole image); a volume's blocks are ranges of planes whose features are streamed
along z, each plane filtered once (:mod:`ilastik_widget.io.batch_blocks`). The result equals ``session.predict()``
to float rounding whatever the chunking. Only the block's own pixels go through the classifier; the trained
classifier is sent to the workers once.

Local (threads of this process)::

    from ilastik_widget import predict_batch
    predict_batch(session, "big_volume.ome.zarr", "big_volume_pred.ome.zarr")

Several images, outputs as TIFF (for results that fit in memory)::

    predict_batch(session, ["a.tif", "b.tif", "c.tif"], "results/", outputs=("segmentation",), format="tiff")

On any Dask cluster, e.g. a ``LocalCluster`` with worker processes::

    from dask.distributed import Client, LocalCluster
    client = Client(LocalCluster(n_workers=4, threads_per_worker=1))
    predict_batch(session, "big.ome.zarr", "big_pred.ome.zarr", client=client)

On a SLURM cluster through dask-jobqueue (inputs and outputs on a file system all nodes see)::

    from dask_jobqueue import SLURMCluster
    cluster = SLURMCluster(cores=8, processes=8, memory="32GB", walltime="02:00:00", queue="normal")
    cluster.scale(jobs=4)                                   # or cluster.adapt(maximum_jobs=20)
    client = Client(cluster)
    predict_batch(session, "/shared/big.ome.zarr", "/shared/big_pred.ome.zarr", client=client)

On a JupyterHub with dask-gateway (outputs on storage the workers can write, e.g. s3:// or a shared volume)::

    from dask_gateway import Gateway
    gateway = Gateway()
    cluster = gateway.new_cluster()
    cluster.scale(8)
    client = cluster.get_client()
    predict_batch(session, "https://data.example.org/big.ome.zarr", "/shared/big_pred.ome.zarr", client=client)

Outputs (OME-Zarr, default): one container per input, ``<output>/probabilities`` (axes c + spatial, one channel per
class, float32), ``<output>/segmentation`` (uint8, classes 1..n) and ``<output>/uncertainty`` (float32 in [0, 1]),
each an OME-Zarr image with the input's spatial axes, units and voxel size. The container is written under a
temporary name (``.<name>.partial-<id>``) and renamed when complete; its root attributes then carry
``{"ilastik_widget": {"complete": true, ...}}``. An interrupted run leaves at most a ``.partial`` directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.model import TrainedModel
from .batch_blocks import BLOCK_BYTES, StoredBlockReader, plan_chunks
from .batch_blocks import predict_block as _predict_block
from .batch_objects import objects_stage  # the "objects" output (a stage that does nothing without it)
from .sources import ImageSource, open_source
from .tensorstore_source import TensorStoreArray

#: decoded-chunk cache of the stored input while predicting (per process, or per task on a cluster)
BATCH_READ_CACHE_BYTES = 32 * 2**20

__all__ = ["predict_batch", "predict_dask", "OUTPUTS", "read_output"]

OUTPUTS = ("probabilities", "segmentation", "uncertainty")
_DEFAULT_BLOCK_BYTES = BLOCK_BYTES  # feature memory per block used to choose the default chunks


def _segmentation(p):
    return (np.argmax(p, axis=-1) + 1).astype(np.uint8)


def _uncertainty(p):
    if p.shape[-1] < 2:
        return (1.0 - p[..., 0]).astype(np.float32)
    top2 = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
    return np.clip(1.0 - (top2[..., 1] - top2[..., 0]), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------- lazy prediction
def _as_source(obj, channel_axis=None) -> ImageSource:
    if isinstance(obj, ImageSource) and channel_axis is None:
        return obj
    return open_source(obj, channel_axis=channel_axis)


def _check_compatible(src: ImageSource, model: TrainedModel) -> None:
    """Same spatial dimensionality and number of channels as the training image (time axis aside)."""
    n_sp = len(src.spatial_shape)
    if n_sp != model.ndim:
        raise ValueError(
            f"{src.name!r} is {n_sp}D (axes {src.axes!r}) but the classifier was trained on {model.ndim}D images"
        )
    if src.n_channels != model.n_input_channels:
        raise ValueError(
            f"{src.name!r} has {src.n_channels} channel(s) but the classifier was trained on images "
            f"with {model.n_input_channels}"
        )


def _spatial_channel_last(src: ImageSource, model: TrainedModel, proc_chunks, classifier_input: bool = False):
    """dask array (*spatial, C) with the processing chunks, for one time point; with ``classifier_input`` only the
    channels whose features feed the classifier (``model.channels``), else every channel (objects' intensities)."""

    _check_compatible(src, model)
    order, channels = _classifier_layout(src, model)
    arr = src.array
    arr = arr.transpose(order) if order != list(range(arr.ndim)) else arr
    if "c" not in src.axes:
        arr = arr[..., None]
    elif classifier_input and channels is not None:
        arr = arr[..., channels]
    # "tasks": each block gathers the stored chunks it covers, and is dropped as soon as it is predicted (on a
    # cluster dask would otherwise pick its all-to-all shuffle, which holds data in the workers' memory)
    return arr.rechunk(tuple(proc_chunks) + ((arr.shape[-1],),), method="tasks")


def _stored_reader(src: ImageSource, model: TrainedModel) -> StoredBlockReader | None:
    """The reader of ``src``'s blocks for the classifier, when its data is stored (file or server); ``None`` for
    in-memory arrays, which the graph carries in pieces."""
    _check_compatible(src, model)
    base = getattr(src, "_base", None)
    if base is None or isinstance(base, np.ndarray):
        return None
    order, channels = _classifier_layout(src, model)
    if isinstance(base, TensorStoreArray):
        # every chunk is read about once (halos twice): a small cache (shard indices) instead of the viewer's
        base = base.with_cache_bytes(BATCH_READ_CACHE_BYTES)
    return StoredBlockReader(base, src._base_select, order, "c" in src.axes, channels)


def _classifier_layout(src: ImageSource, model: TrainedModel) -> tuple[list[int], list[int] | None]:
    """The source's axes in the classifier's order (spatial, then the channel axis if any) and the channels whose
    features feed the classifier (None: all of them)."""
    axes = src.axes
    order = [axes.index(a) for a in axes if a in "zyx"] + ([axes.index("c")] if "c" in axes else [])
    channels = None
    if "c" in axes and model.channels is not None and len(model.channels) < src.n_channels:
        channels = list(model.channels)
    return order, channels


def _plan(src: ImageSource, model: TrainedModel, chunks, block_bytes) -> tuple:
    """Processing blocks (dask chunks per spatial axis) and the halo depth per axis for one source."""
    sp_axes = [src.axes.index(a) for a in src.axes if a in "zyx"]
    in_chunks = [src.array.chunks[i][0] for i in sp_axes]
    return plan_chunks(model, src.spatial_shape, in_chunks, chunks, block_bytes)


def _lazy_one(src: ImageSource, model: TrainedModel, classifier_ref, chunks, block_bytes, targets=None, t_index=None):
    """Probabilities (*spatial, K) as a dask array for a source without a time axis.

    With ``targets`` ({output name: zarr array}), every block task writes its own results straight into the zarr
    arrays and returns a 1-voxel placeholder: no result block waits in memory for a separate store task, so a
    worker's memory does not grow with the number of blocks.
    """
    import dask.array as da

    proc, depth = _plan(src, model, chunks, block_bytes)
    depth_eff = tuple(d if len(c) > 1 else 0 for d, c in zip(depth, proc))
    if targets is None:
        out_chunks = tuple(proc) + ((model.n_classes,),)
        dtype = np.float32
    else:
        out_chunks = tuple((1,) * len(c) for c in proc) + ((1,),)
        dtype = np.int64
    reader = _stored_reader(src, model)
    if reader is not None:  # every task reads its own block: nothing is read ahead of the blocks that need it
        return da.map_blocks(
            _read_block_entry,
            dtype=dtype,
            chunks=out_chunks,
            meta=np.empty((0,) * (model.ndim + 1), dtype),
            reader=reader,
            model=classifier_ref,
            block_depth=depth_eff,
            block_chunks=tuple(proc),
            targets=targets,
            t_index=t_index,
        )
    x = _spatial_channel_last(src, model, proc, classifier_input=True)
    depth_map = dict(enumerate(depth_eff))
    depth_map[len(depth_eff)] = 0
    return da.map_overlap(
        _block_entry,
        x,
        depth=depth_map,
        boundary="none",
        trim=False,
        dtype=dtype,
        chunks=out_chunks,
        meta=np.empty((0,) * (model.ndim + 1), dtype),
        model=classifier_ref,
        block_depth=depth_eff,
        block_chunks=tuple(proc),
        targets=targets,
        t_index=t_index,
    )


def _read_block_entry(*, reader: StoredBlockReader, block_depth: tuple, block_chunks: tuple, block_id=None, **kw):
    """:func:`_block_entry` for a task that reads its block and halo (clipped at the image border) itself."""
    region = []
    for i, d, ch in zip(block_id, block_depth, block_chunks):
        start = sum(ch[:i])
        region.append(slice(max(0, start - d), min(sum(ch), start + ch[i] + d)))
    return _block_entry(
        reader(tuple(region)), block_depth=block_depth, block_chunks=block_chunks, block_id=block_id, **kw
    )


def _block_entry(block, model=None, block_depth=None, block_chunks=None, targets=None, t_index=None, block_id=None):
    p = _predict_block(block, model=model, depth=block_depth, chunks=block_chunks, block_id=block_id)
    if targets is None:
        return p
    region = tuple(slice(sum(ch[:i]), sum(ch[:i]) + ch[i]) for i, ch in zip(block_id, block_chunks))
    pre = () if t_index is None else (t_index,)
    for name, arr in targets.items():
        if name == "probabilities":  # OME order: (t), c, z, y, x
            arr[pre + (slice(None),) + region] = np.moveaxis(p, -1, 0)
        elif name == "segmentation":
            arr[pre + region] = _segmentation(p)
        else:
            arr[pre + region] = _uncertainty(p)
    return np.ones((1,) * p.ndim, np.int64)


def predict_dask(
    session_or_model, source, *, chunks=None, channel_axis=None, client=None, block_bytes: int = _DEFAULT_BLOCK_BYTES
) -> dict:
    """Lazy predictions of one source: ``{"probabilities", "segmentation", "uncertainty"}`` as dask arrays.

    Probabilities are (*spatial, n_classes) float32 (with a leading time axis for time series). Nothing is computed
    until you call ``.compute()``, ``.store(...)`` or :func:`predict_batch`.
    """
    model = (
        session_or_model if isinstance(session_or_model, TrainedModel) else TrainedModel.from_session(session_or_model)
    )
    src = _as_source(source, channel_axis)
    return _predict_dask_with_ref(model, src, _classifier_ref(model, client), chunks, block_bytes)


def _classifier_ref(model: TrainedModel, client):
    """The model as one object in the graph: scattered to every worker once, or one delayed value locally."""
    import dask

    if client is not None:
        return client.scatter(model, broadcast=True, hash=False)
    return dask.delayed(model, traverse=False)


# ---------------------------------------------------------------------- writing
def _ome_axes(src: ImageSource, with_channel: bool, time: bool) -> tuple[list, list]:
    axes, scale = [], []
    if time:
        axes.append({"name": "t", "type": "time"})
        scale.append(1.0)
    if with_channel:
        axes.append({"name": "c", "type": "channel"})
        scale.append(1.0)
    for a, s, u in zip(src.spatial_axes, src.scale, src.units or (None,) * len(src.scale)):
        ax = {"name": a, "type": "space"}
        if u:
            ax["unit"] = u
        axes.append(ax)
        scale.append(float(s))
    return axes, scale


def _write_ome_group(root, name: str, shape, dtype, chunks, axes, scale, zarr_format: int, extra: dict):
    g = root.create_group(name)
    kw = {}
    if zarr_format == 2:
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    arr = g.create_array(
        "0", shape=tuple(int(s) for s in shape), dtype=dtype, chunks=tuple(int(c) for c in chunks), fill_value=0, **kw
    )
    ms = {
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        "name": name,
    }
    if zarr_format == 2:
        ms["version"] = "0.4"
        g.attrs.update({"multiscales": [ms], **extra})
    else:
        g.attrs.update({"ome": {"version": "0.5", "multiscales": [ms], **extra}})
    return arr


def _hex_to_rgb(color):
    try:
        c = color.lstrip("#")
        return [int(c[i : i + 2], 16) for i in (0, 2, 4)]
    except Exception:
        return [255, 255, 255]


def _partial_name(final: Path) -> Path:
    return final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"


def _progress_compute(tasks, client, progress: bool):
    """Compute a list of delayed/dask objects with a progress bar; cancel on interrupt."""
    import dask

    if client is not None:
        futures = client.compute(tasks)
        try:
            if progress:
                from distributed import progress as dprogress

                in_notebook = "ipykernel" in sys.modules and _in_notebook()
                dprogress(futures, notebook=in_notebook, multi=False)
            return client.gather(futures)
        except BaseException:
            client.cancel(futures)
            raise
    cb = contextlib.nullcontext()
    if progress:
        try:
            from tqdm.auto import tqdm
            from tqdm.dask import TqdmCallback

            cb = TqdmCallback(desc="predict", tqdm_class=tqdm)
        except ImportError:  # pragma: no cover
            from dask.diagnostics import ProgressBar

            cb = ProgressBar()
    with cb:
        return dask.compute(*tasks)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        ip = get_ipython()
        return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
    except Exception:
        return False


def _unique_names(sources: list[ImageSource]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in sources:
        base = s.name or "image"
        if s.time_index is not None:
            base = f"{base}_t{s.time_index}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.append(base if n == 0 else f"{base}_{n}")
    return out


def predict_batch(
    session,
    source_or_list,
    output,
    outputs: Sequence[str] = OUTPUTS,
    client=None,
    chunks=None,
    progress: bool = True,
    *,
    format: str | None = None,
    overwrite: bool = False,
    channel_axis: int | None = None,
    zarr_format: int = 2,
    max_tiff_bytes: int = 2**31,
    block_bytes: int = _DEFAULT_BLOCK_BYTES,
    objects: dict | None = None,
):
    """Predict whole images or volumes with a trained session and write the results.

    Parameters
    ----------
    session : Session or TrainedModel
        A trained session (its classifier, feature selection and feature mode are used), or the
        :class:`~ilastik_widget.core.model.TrainedModel` of a saved project (``ilastik_widget.io.project.load_model(path)``).
    source_or_list : image-like or list of them
        Anything :func:`~ilastik_widget.io.sources.open_source` opens: arrays, zarr/OME-Zarr paths or URLs, TIFF files.
        Time series are predicted time point by time point (the outputs keep the ``t`` axis).
    output : str or path
        For one input: the ``.zarr`` container to write (or a directory). For several inputs, or ``format="tiff"``:
        a directory; each input ``name`` gets ``<dir>/<name>.ome.zarr`` or ``<dir>/<name>_<output>.tif``.
    outputs : sequence of str
        Any of ``"probabilities"``, ``"segmentation"``, ``"uncertainty"``, ``"objects"`` (see ``io/batch_objects.py``).
    client : dask.distributed.Client, optional
        Run on this cluster; default: the local threaded scheduler.
    chunks : int or tuple, optional
        Spatial block shape for processing (and of the zarr output chunks). Default: chosen from the feature memory
        per block, in whole input chunks.
    progress : bool
        Show a progress bar (tqdm in terminals and notebooks, Dask's own with a client).
    format : "zarr" or "tiff", optional
        Default "zarr" (OME-Zarr, written block by block). "tiff" writes ImageJ-compatible TIFF files into the
        ``output`` directory; they are computed in memory (refused above ``max_tiff_bytes`` per file).
    overwrite : bool
        Replace existing outputs (otherwise an existing output is an error, raised before any computation).
    objects : dict, optional
        The parameters of the ``"objects"`` output (``{"label": 2, "threshold": 0.5, ...}``, as ``Session.objects``).

    Returns
    -------
    dict or list of dict
        Per input: ``{"input": name, "<output>": path, ...}`` (zarr: path of each OME-Zarr image inside the
        container; tiff: file path). A single dict when one input (not a list) was given.
    """

    single = not isinstance(source_or_list, (list, tuple))
    inputs = [source_or_list] if single else list(source_or_list)
    if not inputs:
        raise ValueError("no input images given")
    outputs = tuple(outputs)
    bad = [o for o in outputs if o not in (*OUTPUTS, "objects")]
    if bad or not outputs:
        raise ValueError(f"unknown outputs {bad}; choose from {(*OUTPUTS, 'objects')}")
    model = session if isinstance(session, TrainedModel) else TrainedModel.from_session(session)
    stage, outputs = objects_stage(model, outputs, objects, client, chunks, block_bytes, progress)
    sources = [_as_source(s, channel_axis) for s in inputs]
    for src in sources:  # before anything is written
        _check_compatible(src, model)
        stage.check_source(src)
    names = _unique_names(sources)
    out = Path(os.fspath(output))
    fmt = (format or "zarr").lower()
    if fmt in ("tif",):
        fmt = "tiff"
    if fmt not in ("zarr", "tiff"):
        raise ValueError(f"format must be 'zarr' or 'tiff', got {format!r}")
    if zarr_format not in (2, 3):
        raise ValueError("zarr_format must be 2 or 3")

    # where each result goes (checked before any computation)
    if fmt == "zarr":
        if single and out.suffix == ".zarr":
            targets = [out]
        else:
            targets = [out / f"{n}.ome.zarr" for n in names]
    else:
        targets = [{**{o: out / f"{n}_{o}.tif" for o in outputs}, **stage.tiff_paths(out, n)} for n in names]
    existing = [str(p) for t in targets for p in (t.values() if isinstance(t, dict) else [t]) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"output already exists: {', '.join(existing)} (pass overwrite=True to replace)")
    for t in targets:
        first = next(iter(t.values())) if isinstance(t, dict) else t
        first.parent.mkdir(parents=True, exist_ok=True)

    ref = _classifier_ref(model, client)
    if fmt == "tiff":
        lazy = [_predict_dask_with_ref(model, s, ref, chunks, block_bytes) for s in sources]
        found = _write_tiffs(sources, names, lazy, targets, outputs, model, client, progress, max_tiff_bytes, False)
        return stage.add_tiffs(found, sources, targets, max_tiff_bytes, ref, single)

    import zarr

    partials = [_partial_name(t) for t in targets]
    results = []
    try:
        counters, expected = [], 0
        for src, name, part, final in zip(sources, names, partials, targets):
            root = zarr.open_group(str(part), mode="w", zarr_format=zarr_format)
            root.attrs["ilastik_widget"] = {"complete": False, "input": src.path or src.url or name}
            time = src.time_axis is not None
            one = src.at_time(0) if time else src
            proc, _ = _plan(one, model, chunks, block_bytes)
            block = tuple(c[0] for c in proc)
            pre_shape, pre_chunks = ((src.n_times,), (1,)) if time else ((), ())
            res = {"input": name}
            zarrs = {}
            for o in outputs:
                if o == "probabilities":
                    shape = pre_shape + (model.n_classes,) + one.spatial_shape
                    zchunks = pre_chunks + (model.n_classes,) + block
                    dtype = np.float32
                else:
                    shape, zchunks = pre_shape + one.spatial_shape, pre_chunks + block
                    dtype = np.uint8 if o == "segmentation" else np.float32
                axes, scale = _ome_axes(src, o == "probabilities", time)
                extra = {}
                if o == "probabilities":
                    extra["omero"] = {
                        "channels": [
                            {
                                "label": n,
                                "color": (c or "#ffffff").lstrip("#"),
                                "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0},
                                "active": True,
                            }
                            for n, c in zip(model.class_names, model.class_colors)
                        ]
                    }
                elif o == "segmentation":
                    extra["image-label"] = {
                        "version": "0.4" if zarr_format == 2 else "0.5",
                        "colors": [
                            {"label-value": i + 1, "rgba": _hex_to_rgb(c) + [255]}
                            for i, c in enumerate(model.class_colors)
                        ],
                    }
                zarrs[o] = _write_ome_group(root, o, shape, dtype, zchunks, axes, scale, zarr_format, extra)
                res[o] = str(final / o)
            for t in (range(src.n_times) if time else [None]) if zarrs else ():  # nothing to predict for objects alone
                ph = _lazy_one(
                    src.at_time(t) if time else src, model, ref, chunks, block_bytes, targets=zarrs, t_index=t
                )
                counters.append(ph.sum())
                expected += int(np.prod(ph.shape))
            root.attrs["ilastik_widget"] = {
                "complete": False,
                "input": src.path or src.url or name,
                "outputs": list(outputs),
                "classes": [{"name": n, "color": c} for n, c in zip(model.class_names, model.class_colors)],
            }
            results.append(res)
        done = _progress_compute(counters, client, progress)
        if done is not None and sum(int(d) for d in done) != expected:
            raise RuntimeError(f"only {sum(int(d) for d in done)} of {expected} blocks were written")
        stage.add_zarr(results, sources, partials, targets, zarr_format, ref)
        for part, final in zip(partials, targets):
            root = zarr.open_group(str(part), mode="r+")
            info = dict(root.attrs["ilastik_widget"])
            info["complete"] = True
            root.attrs["ilastik_widget"] = info
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.rename(part, final)
    except BaseException:
        for part in partials:
            shutil.rmtree(part, ignore_errors=True)
        raise
    return results[0] if single else results


def _predict_dask_with_ref(model, src, ref, chunks, block_bytes):
    import dask.array as da

    if src.time_axis is not None:
        probs = da.stack([_lazy_one(src.at_time(t), model, ref, chunks, block_bytes) for t in range(src.n_times)])
    else:
        probs = _lazy_one(src, model, ref, chunks, block_bytes)
    seg = probs.map_blocks(_segmentation, dtype=np.uint8, drop_axis=probs.ndim - 1)
    unc = probs.map_blocks(_uncertainty, dtype=np.float32, drop_axis=probs.ndim - 1)
    return {"probabilities": probs, "segmentation": seg, "uncertainty": unc}


def da_moveaxis(arr, src, dst):
    import dask.array as da

    return da.moveaxis(arr, src, dst)


def _write_tiffs(sources, names, lazy, targets, outputs, model, client, progress, max_bytes, single):
    import tifffile

    arrays, keys = [], []
    for i, (src, lz, tg) in enumerate(zip(sources, lazy, targets)):
        for o in outputs:
            a = lz[o]
            nbytes = int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize
            if nbytes > max_bytes:
                raise ValueError(
                    f"{src.name!r}: {o} would be {nbytes / 2**30:.1f} GiB, too large for a TIFF "
                    f"written from memory; use format='zarr'"
                )
            arrays.append(a)
            keys.append((i, src, tg[o], o))
    values = _progress_compute(arrays, client, progress)
    # One result per input, by position: inputs of the same name (from different folders) have their own files.
    results = [{"input": name} for name in names]
    for (i, src, path, o), v in zip(keys, values):
        v = np.asarray(v)
        time = src.time_axis is not None
        sp = src.spatial_axes.upper()
        if o == "probabilities":
            # ImageJ hyperstack order: T Z C Y X
            v = np.moveaxis(v, -1, -3) if len(sp) == 3 else np.moveaxis(v, -1, -3)
            ax = ("T" if time else "") + (sp[0] + "C" + sp[1:] if len(sp) == 3 else "C" + sp)
        else:
            ax = ("T" if time else "") + sp
        meta = {"axes": ax}
        kw = {}
        scale = dict(zip(src.spatial_axes, src.scale))
        if "z" in scale:
            meta["spacing"] = scale["z"]
        if "x" in scale and "y" in scale and scale["x"] > 0 and scale["y"] > 0:
            kw["resolution"] = (1.0 / scale["x"], 1.0 / scale["y"])
        tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            tifffile.imwrite(tmp, v, imagej=True, metadata=meta, **kw)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        results[i][o] = str(path)
    return results[0] if single else results


def read_output(path, output: str = "segmentation"):
    """Open one output of a :func:`predict_batch` OME-Zarr container (checks it is complete) as an ImageSource."""
    import zarr

    root = zarr.open_group(os.fspath(path), mode="r")
    info = root.attrs.get("ilastik_widget")
    if not isinstance(info, dict) or not info.get("complete"):
        raise ValueError(f"{path} is not a complete ilastik-widget prediction output")
    return open_source(os.fspath(Path(path) / output))
