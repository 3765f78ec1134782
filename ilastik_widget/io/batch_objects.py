"""Objects of whole images block by block, written as a label image and a table: the ``"objects"`` output of
:func:`~ilastik_widget.io.batch.predict_batch` and of :func:`~ilastik_widget.io.export.export_session`.

The steps are those of :mod:`ilastik_widget.core.object_blocks`, with the label image on disk:

1. every processing block finds its connected components from the probabilities of the block and the smoothing's
   reach around it (:func:`find_in_block`), writes them (local numbers) into the label array and returns a small
   summary;
2. the summaries are merged where components touch across block faces (one object, one global label, numbered in
   raster order of first voxels); with ``split``, objects cut by block faces are split once whole, reading only their
   bounding box (:func:`merge_and_split`);
3. every block's local labels are rewritten with the global labels (:func:`relabel_block`).

The label image and the table equal those of :meth:`~ilastik_widget.core.session.Session.objects` on the whole image
(same labels, same numbering, the table up to float rounding of sums over blocks), whatever the blocks.

Blocks run as Dask tasks with :class:`ObjectsStage` (any scheduler: the label array is a zarr array every worker
writes its own chunks of), or in this process (:func:`objects_in_blocks`). Time series are not supported.

Parameters of the objects are a dict (``objects={"label": 2, "threshold": 0.5, "min_size": 20, "split": True}``),
with the keys of :data:`OBJECT_KEYS` (see :meth:`Session.objects <ilastik_widget.core.session.Session.objects>`).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.features import check_voxel_size
from ..core.object_blocks import BlockMerge, BlockSummary, block_objects, block_read_region, merge_blocks, split_merged
from ..core.objects import ObjectParams, check_object_params

if TYPE_CHECKING:
    from ..core.model import TrainedModel
    from .sources import ImageSource

__all__ = [
    "OBJECT_KEYS",
    "ObjectsStage",
    "objects_params",
    "chunk_regions",
    "find_in_block",
    "merge_and_split",
    "relabel_block",
    "objects_in_blocks",
    "write_objects_table",
    "label_image_metadata",
]

#: The keys of an ``objects`` parameter dict.
OBJECT_KEYS = ("label", "threshold", "low", "min_size", "max_size", "smooth", "split")
#: Suffixes of the table files written per input (the same table twice).
TABLE_SUFFIXES = (".csv", ".parquet")
OBJECTS = "objects"


def objects_params(objects: Any, n_classes: int, ndim: int, voxel_size: Sequence[float] | None = None) -> ObjectParams:
    """Checked parameters from an ``objects`` dict; ValueError naming what is wrong."""
    if not isinstance(objects, Mapping) or "label" not in objects:
        raise ValueError(
            f"the objects output needs objects={{'label': <class>, 'threshold': ...}} (keys {', '.join(OBJECT_KEYS)}), "
            f"got {objects!r}"
        )
    unknown = sorted(set(objects) - set(OBJECT_KEYS))
    if unknown:
        raise ValueError(f"unknown objects parameters {unknown}; the parameters are {', '.join(OBJECT_KEYS)}")
    return check_object_params(n_classes, ndim, **dict(objects), voxel_size=voxel_size)


def params_dict(params: ObjectParams) -> dict[str, Any]:
    """The ``objects`` dict that gives ``params`` again (without the voxel sizes, which come from each image)."""
    return {
        "label": params.label,
        "threshold": params.threshold,
        "low": params.low,
        "min_size": params.min_size,
        "max_size": params.max_size,
        "smooth": list(params.smooth),
        "split": False if params.split is None else params.split,
    }


def chunk_regions(chunks: Sequence[Sequence[int]]) -> list[tuple[slice, ...]]:
    """The blocks of a chunk grid (dask's ``chunks`` of the spatial axes), in C order."""
    bounds = [np.r_[0, np.cumsum(c)].astype(int) for c in chunks]
    return [
        tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, index))
        for index in itertools.product(*(range(len(c)) for c in chunks))
    ]


def label_image_metadata(params: ObjectParams, class_name: str | None = None, zarr_format: int = 2) -> dict[str, Any]:
    """Attributes of an objects label image: OME-Zarr's ``image-label`` and the parameters that made it."""
    return {
        "image-label": {"version": "0.4" if zarr_format == 2 else "0.5"},
        "ilastik_widget": {"objects": params.to_dict(), "class_name": class_name},
    }


# ---------------------------------------------------------------------- the three steps
def find_in_block(
    probabilities: Any,
    image: Any,
    params: ObjectParams,
    region: tuple[slice, ...],
    read_region: tuple[slice, ...],
    shape: tuple[int, ...],
    labels_out: Any,
    probability_out: Any = None,
) -> BlockSummary:
    """Step 1 for one block: components of ``region`` from the probabilities of ``read_region`` (from
    :func:`~ilastik_widget.core.object_blocks.block_read_region`), written as local labels into ``labels_out[region]``
    (and, for a later split, the class's probability into ``probability_out[region]``)."""
    prob = np.asarray(probabilities)
    local, summary = block_objects(prob, params, region, read_region, shape, None if image is None else image)
    labels_out[region] = local.astype(np.int32, copy=False)
    if probability_out is not None:
        inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, read_region))
        probability_out[region] = prob[inner + (params.label - 1,)].astype(np.float32, copy=False)
    return summary


def _merged_labels(merge: BlockMerge, labels: Any, box: tuple[slice, ...]) -> np.ndarray:
    """The global labels of ``box`` before any split: each block's local labels there through its lookup."""
    out = np.zeros(tuple(b.stop - b.start for b in box), np.int32)
    for lookup, region in zip(merge.lookups, merge.regions):
        lo = [max(b.start, r.start) for b, r in zip(box, region)]
        hi = [min(b.stop, r.stop) for b, r in zip(box, region)]
        if any(h <= lo_ for lo_, h in zip(lo, hi)):
            continue
        local = np.asarray(labels[tuple(slice(a, b) for a, b in zip(lo, hi))])
        out[tuple(slice(a - b.start, c - b.start) for a, c, b in zip(lo, hi, box))] = lookup[local]
    return out


def merge_and_split(
    summaries: Sequence[BlockSummary],
    params: ObjectParams,
    shape: tuple[int, ...],
    labels: Any,
    read_probability: Callable[[tuple[slice, ...]], np.ndarray],
    read_image: Callable[[tuple[slice, ...]], np.ndarray | None],
    n_channels: int | None,
    multichannel: bool,
) -> BlockMerge:
    """Step 2: merge the blocks' summaries and, with ``split``, split the objects cut by block faces.

    ``labels`` is the label array step 1 wrote (read here only in the bounding boxes of objects to split),
    ``read_probability(box)`` the class's probability (before smoothing) and ``read_image(box)`` the intensities
    of a box (None without an image).
    """
    merge = merge_blocks(summaries, params, n_channels=n_channels, multichannel=multichannel)
    if not len(merge.to_split):
        return merge
    return split_merged(
        merge, shape, lambda box: (_merged_labels(merge, labels, box), read_probability(box), read_image(box))
    )


def block_part(merge: BlockMerge, index: int) -> BlockMerge:
    """What :func:`relabel_block` needs of ``merge`` for block ``index`` (its lookup and the pieces over it), small
    enough to send to a worker."""
    region = merge.regions[index]
    pieces = [
        (box, piece)
        for box, piece in merge.pieces
        if all(max(b.start, r.start) < min(b.stop, r.stop) for b, r in zip(box, region))
    ]
    return dataclasses.replace(
        merge, table=merge.table.iloc[:0], lookups=[merge.lookups[index]], regions=[region], stats={}, pieces=pieces
    )


def relabel_block(part: BlockMerge, labels: Any) -> int:
    """Step 3 for one block: its local labels in ``labels`` rewritten as global labels (``part`` from
    :func:`block_part`); returns 1 (a count of blocks done)."""
    region = part.regions[0]
    labels[region] = part.relabel(0, np.asarray(labels[region])).astype(np.int32, copy=False)
    return 1


def objects_in_blocks(
    regions: Sequence[tuple[slice, ...]],
    shape: tuple[int, ...],
    params: ObjectParams,
    read_probability: Callable[[tuple[slice, ...]], np.ndarray],
    read_image: Callable[[tuple[slice, ...]], np.ndarray | None],
    labels: Any,
    *,
    n_channels: int | None,
    multichannel: bool,
    step: Callable[[], None] = lambda: None,
) -> BlockMerge:
    """The three steps in this process: ``read_probability(region)`` gives the probability of the objects' class in
    a region (before smoothing, (*region,)), ``read_image`` its intensities; ``labels`` (a zarr or numpy array of
    ``shape``) receives the label image. ``step()`` is called after every block of steps 1 and 3 (for progress; it
    may raise to stop)."""
    # The blocks see the class's channel alone, as class 1 of one; only the table's class column names the class.
    alone = dataclasses.replace(params, label=1)
    summaries = []
    for region in regions:
        read = block_read_region(region, shape, params.smooth)
        prob = np.asarray(read_probability(read))[..., None]
        summaries.append(find_in_block(prob, read_image(region), alone, region, read, shape, labels))
        step()
    merge = merge_and_split(summaries, params, shape, labels, read_probability, read_image, n_channels, multichannel)
    for i in range(len(regions)):
        relabel_block(block_part(merge, i), labels)
        step()
    return merge


# ---------------------------------------------------------------------- files
def write_objects_table(
    merge: BlockMerge,
    params: ObjectParams,
    base: Path,
    shape: Sequence[int],
    units: Sequence[str | None] | None,
    **extra: Any,
) -> list[Path]:
    """The table of a whole image of ``shape`` as ``<base>.csv`` (with its JSON sidecar) and ``<base>.parquet``,
    with its metadata."""
    from .tables import table_metadata, write_table

    meta = table_metadata(merge.table, params, offset=[0] * len(shape), shape=shape, units=units, **extra)
    return [write_table(merge.table, base.with_name(base.name + suffix), metadata=meta) for suffix in TABLE_SUFFIXES]


def source_voxel_size(src: ImageSource, ndim: int) -> tuple[tuple[float, ...] | None, tuple | None]:
    """(voxel sizes, units) of an input, as a session opened on it uses them (units None when unknown)."""
    try:
        voxel_size = check_voxel_size(tuple(src.scale), ndim) if len(src.scale or ()) == ndim else None
    except ValueError:
        voxel_size = None
    units = tuple(src.units or ())
    return voxel_size, units if voxel_size is not None and len(units) == ndim and any(units) else None


def _channel_last(block: np.ndarray) -> np.ndarray:
    return block[..., 0] if block.shape[-1] == 1 else block


def _find_task(probabilities, image, params, region, read_region, shape, labels_out, probability_out):
    return find_in_block(
        probabilities,
        None if image is None else _channel_last(np.asarray(image)),
        params,
        region,
        read_region,
        shape,
        labels_out,
        probability_out,
    )


class ObjectsStage:
    """The ``"objects"`` output of a batch run: one label image and one table per input, with Dask.

    Parameters
    ----------
    model : TrainedModel
    objects : dict
        The objects' parameters (see the module docstring).
    client : dask.distributed.Client, optional
        Run on this cluster (default: the local threaded scheduler).
    chunks, block_bytes
        The processing blocks, as :func:`~ilastik_widget.io.batch.predict_batch` chooses them.
    progress : bool
        Show progress bars.

    Raises
    ------
    ValueError
        Bad parameters (before anything is computed).
    """

    def __init__(
        self,
        model: TrainedModel,
        objects: Any,
        *,
        client: Any = None,
        chunks: Any = None,
        block_bytes: int = 2**30,
        progress: bool = True,
    ):
        self.model = model
        self.params = objects_params(objects, model.n_classes, model.ndim)
        self.client = client
        self.chunks = chunks
        self.block_bytes = block_bytes
        self.progress = progress

    @property
    def class_name(self) -> str:
        """Name of the class whose objects are found."""
        return self.model.class_names[self.params.label - 1]

    def check_source(self, src: ImageSource) -> None:
        """Refuse what the stage cannot do, before anything is computed."""
        if src.time_axis is not None:
            raise ValueError(f"{src.name!r} is a time series: the objects output is for single images and volumes")

    def tiff_paths(self, folder: Path, name: str) -> dict[str, Path]:
        """Where :meth:`write_tiff` writes an input's TIFF label image (``"objects"``) and tables."""
        base = folder / f"{name}_{OBJECTS}"
        return {OBJECTS: Path(f"{base}.tif"), **{f"objects{s}": Path(f"{base}{s}") for s in TABLE_SUFFIXES}}

    # ------------------------------------------------------------------ one input
    def _probabilities(self, src: ImageSource, ref: Any, written: Any) -> Any:
        """(*spatial, K) dask probabilities in processing blocks: read back from ``written`` (the probabilities
        output, OME order c + spatial) when there is one, else predicted."""
        import dask.array as da

        from .batch import _lazy_one, _plan

        proc, _ = _plan(src, self.model, self.chunks, self.block_bytes)
        if written is not None:
            return da.moveaxis(da.from_zarr(written), 0, -1).rechunk(tuple(proc) + (self.model.n_classes,))
        return _lazy_one(src, self.model, ref, self.chunks, self.block_bytes)

    def run(
        self,
        src: ImageSource,
        labels: Any,
        *,
        ref: Any = None,
        written_probabilities: Any = None,
        scratch: Any = None,
    ) -> tuple[BlockMerge, ObjectParams, tuple | None]:
        """Find the objects of one input; ``labels`` is the int32 zarr array (the input's spatial shape, chunked as
        the processing blocks) that receives the label image. ``scratch(name, dtype)`` makes a temporary zarr array
        of the same shape and chunks (the class's probability, kept for ``split``). Returns the merge (its
        ``table``), the parameters with the input's voxel sizes, and the units."""
        import dask

        from .batch import _classifier_ref, _progress_compute, _spatial_channel_last

        self.check_source(src)
        model = self.model
        voxel_size, units = source_voxel_size(src, model.ndim)
        params = dataclasses.replace(self.params, voxel_size=voxel_size)
        if ref is None:
            ref = _classifier_ref(model, self.client)
        probs = self._probabilities(src, ref, written_probabilities)
        shape = tuple(int(n) for n in probs.shape[:-1])
        image = _spatial_channel_last(src, model, probs.chunks[:-1])
        regions = chunk_regions(probs.chunks[:-1])
        need_probability = params.split is not None and written_probabilities is None
        probability = scratch("probability", np.float32) if need_probability else None
        find = dask.delayed(_find_task, pure=False)
        tasks = []
        for region in regions:
            read = block_read_region(region, shape, params.smooth)
            tasks.append(find(probs[read], image[region], params, region, read, shape, labels, probability))
        summaries = list(_progress_compute(tasks, self.client, self.progress))

        def class_probability(box: tuple[slice, ...]) -> np.ndarray:
            if written_probabilities is not None:
                return np.asarray(written_probabilities[(params.label - 1,) + tuple(box)])
            return np.asarray(probability[box])  # type: ignore[index]

        def read_image(box: tuple[slice, ...]) -> np.ndarray:
            return _channel_last(np.asarray(image[box].compute()))

        n_ch = model.n_input_channels
        merge = merge_and_split(summaries, params, shape, labels, class_probability, read_image, n_ch, n_ch > 1)
        relabel = dask.delayed(relabel_block, pure=False)
        _progress_compute([relabel(block_part(merge, i), labels) for i in range(len(regions))], self.client, False)
        return merge, params, units

    def add_zarr(self, results: list[dict], sources: list, partials: list, finals: list, zarr_format: int, ref: Any):
        """:meth:`write_zarr` for every input of a batch run, its entries added to the input's result."""
        import zarr

        for res, src, part, final in zip(results, sources, partials, finals):
            res.update(self.write_zarr(src, zarr.open_group(str(part), mode="r+"), part, final, zarr_format, ref=ref))

    def add_tiffs(self, results: list[dict], sources: list, targets: list, max_bytes: int, ref: Any, single: bool):
        """:meth:`write_tiff` for every input of a batch run; the result as ``predict_batch`` returns it."""
        for res, src, target in zip(results, sources, targets):
            res.update(self.write_tiff(src, target, max_bytes, ref=ref))
        return results[0] if single else results

    def write_zarr(
        self, src: ImageSource, root: Any, container: Path, final: Path, zarr_format: int, *, ref: Any = None
    ) -> dict[str, Any]:
        """The objects of one input into the batch container being written (``root``, a zarr group at ``container``,
        later renamed ``final``): an OME-Zarr label image ``objects`` and the table as ``objects.csv`` (with
        ``objects.csv.json``) and ``objects.parquet`` in the container. Returns the entries of the input's result."""
        from .batch import _ome_axes, _plan, _write_ome_group

        proc, _ = _plan(src, self.model, self.chunks, self.block_bytes)
        block = tuple(c[0] for c in proc)
        axes, scale = _ome_axes(src, False, False)
        meta = label_image_metadata(self.params, self.class_name, zarr_format)
        labels = _write_ome_group(root, OBJECTS, src.spatial_shape, np.int32, block, axes, scale, zarr_format, meta)
        written = root["probabilities/0"] if "probabilities" in root else None
        scratch_names: list[str] = []

        def scratch(name: str, dtype: Any) -> Any:
            scratch_names.append(f"scratch-{name}")
            return root.create_array(scratch_names[-1], shape=src.spatial_shape, dtype=dtype, chunks=block)

        try:
            merge, params, units = self.run(src, labels, ref=ref, written_probabilities=written, scratch=scratch)
        finally:
            for name in scratch_names:
                shutil.rmtree(container / name, ignore_errors=True)
        image = src.path or src.url or src.name
        tables = write_objects_table(
            merge, params, container / OBJECTS, src.spatial_shape, units, image=image, class_name=self.class_name
        )
        info = dict(root.attrs["ilastik_widget"])
        info["outputs"] = [*info.get("outputs", []), OBJECTS]
        info[OBJECTS] = {"params": params.to_dict(), "class_name": self.class_name, "n_objects": len(merge.table)}
        root.attrs["ilastik_widget"] = info
        written = [str(final / t.name) for t in tables]
        return {OBJECTS: str(final / OBJECTS), "objects_table": written, "n_objects": len(merge.table)}

    def write_tiff(self, src: ImageSource, paths: dict[str, Any], max_bytes: int, *, ref: Any = None) -> dict:
        """The objects of one input as a TIFF label image (int32) and the tables at ``paths`` (from
        :meth:`tiff_paths`), computed through a temporary zarr array beside them."""
        import tifffile
        import zarr

        from .batch import _plan

        target: Path = paths[OBJECTS]
        nbytes = int(np.prod(src.spatial_shape, dtype=np.int64)) * 4
        if nbytes > max_bytes:
            raise ValueError(
                f"{src.name!r}: the objects label image would be {nbytes / 2**30:.1f} GiB, too large for a TIFF "
                "written from memory; use format='zarr'"
            )
        proc, _ = _plan(src, self.model, self.chunks, self.block_bytes)
        block = tuple(c[0] for c in proc)
        tmp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}.zarr"
        try:
            root = zarr.open_group(str(tmp), mode="w")
            labels = root.create_array("labels", shape=src.spatial_shape, dtype=np.int32, chunks=block)

            def scratch(name: str, dtype: Any) -> Any:
                return root.create_array(name, shape=src.spatial_shape, dtype=dtype, chunks=block)

            merge, params, units = self.run(src, labels, ref=ref, scratch=scratch)
            axes = src.spatial_axes.upper()
            kw: dict[str, Any] = {}
            scale = dict(zip(src.spatial_axes, src.scale))
            if scale.get("x", 0) > 0 and scale.get("y", 0) > 0:
                kw["resolution"] = (1.0 / scale["x"], 1.0 / scale["y"])
            part = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
            try:
                tifffile.imwrite(part, np.asarray(labels[...]), photometric="minisblack", metadata={"axes": axes}, **kw)
                os.replace(part, target)
            finally:
                part.unlink(missing_ok=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        base = target.with_name(target.name[: -len(".tif")])
        image = src.path or src.url or src.name
        tables = write_objects_table(
            merge, params, base, src.spatial_shape, units, image=image, class_name=self.class_name
        )
        return {OBJECTS: str(target), "objects_table": [str(t) for t in tables], "n_objects": len(merge.table)}


class NoObjects:
    """The objects stage of a batch run without the ``"objects"`` output: it does nothing."""

    def check_source(self, src: ImageSource) -> None:
        pass

    def tiff_paths(self, folder: Path, name: str) -> dict[str, Path]:
        return {}

    def add_zarr(self, *args: Any) -> None:
        pass

    def add_tiffs(self, results: list[dict], sources: list, targets: list, max_bytes: int, ref: Any, single: bool):
        return results[0] if single else results


def objects_stage(
    model: TrainedModel,
    outputs: Sequence[str],
    objects: Any,
    client: Any = None,
    chunks: Any = None,
    block_bytes: int = 2**30,
    progress: bool = True,
) -> tuple[ObjectsStage | NoObjects, tuple[str, ...]]:
    """The stage a batch run with ``outputs`` needs, and its other outputs (the ones predicted per voxel)."""
    if OBJECTS not in outputs:
        if objects is not None:
            raise ValueError("objects= was given but 'objects' is not among the outputs")
        return NoObjects(), tuple(outputs)
    stage = ObjectsStage(model, objects, client=client, chunks=chunks, block_bytes=block_bytes, progress=progress)
    return stage, tuple(o for o in outputs if o != OBJECTS)
