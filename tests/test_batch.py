"""ilastik_widget.io.batch: parity with in-memory prediction, outputs, several inputs, a real LocalCluster."""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from ilastik_widget.core.features import FeatureSelection, compute_features, halo
from ilastik_widget.core.model import TrainedModel
from ilastik_widget.core.session import Session
from ilastik_widget.core.stream import stream_bytes
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.batch import predict_batch, predict_dask, read_output
from ilastik_widget.io.sources import open_source

REPO = Path(__file__).resolve().parents[1]

# small but with a real halo (sigma 3.5 -> a halo of about 14-20 pixels), so block borders matter
SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 0.7, True)
    .with_feature("gaussian_gradient_magnitude", 1.6, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 3.5, True)
    .with_feature("structure_tensor_eigenvalues", 1.0, True)
    .with_feature("difference_of_gaussians", 3.5, True)
)


def _trained(img, truth, channel_axis=None, mode="3d", n_classes=2, seed=0):
    classes = ["Background", "Foreground", "Third"][:n_classes]
    s = Session(
        img,
        channel_axis=channel_axis,
        features=SEL,
        feature_mode=mode,
        seed=seed,
        classes=classes,
        classifier={"n_estimators": 20},
    )
    for st in simulated_strokes(truth, n_per_class=4, radius=2, seed=seed):
        s.add_stroke(**st)
    s.train()
    return s


@pytest.fixture(scope="module")
def s2d():
    img, truth = synthetic_cells((150, 170), seed=1)
    return img, _trained(img, truth)


@pytest.fixture(scope="module")
def s3d():
    img, truth = synthetic_cells((40, 56, 64), seed=2)
    return img, _trained(img, truth)


def assert_same_prediction(got, expected, n_trees=20, votes=1, err_msg=""):
    """Batch probabilities (or uncertainty: ``votes=2``) equal the session's: the features agree to float32 rounding
    (the streamed planes sum in another order), so a tree's vote may flip where a feature lies within that rounding
    of a split threshold; that is allowed at a handful of values (at most 1e-4 of them), by one vote."""
    diff = np.abs(np.asarray(got) - np.asarray(expected))
    off = diff > 1e-5
    assert off.mean() <= 1e-4, f"{err_msg}: {int(off.sum())} values differ"
    assert diff.max() <= votes / n_trees + 1e-5, f"{err_msg}: max difference {diff.max()}"


def _whole_image_reference(session, img, channel_axis=None):
    """The straightforward way: features of the whole image, then the classifier on every pixel."""
    f = compute_features(img, session.feature_selection, channel_axis=channel_axis, mode=session.feature_mode)
    p = session.model.predict_proba(f.reshape(-1, f.shape[-1]))
    return p.reshape(*f.shape[:-1], -1)


def test_parity_2d_random_chunkings(s2d):
    img, s = s2d
    expected = s.predict()
    np.testing.assert_allclose(_whole_image_reference(s, img), expected, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        chunks = tuple(int(c) for c in rng.integers(20, 120, size=2))
        # the input itself is chunked irregularly as well
        ichunks = tuple(tuple(np.diff(np.unique(np.r_[0, rng.integers(1, n, 3), n])).tolist()) for n in img.shape)
        out = predict_dask(s, da.from_array(img, chunks=ichunks), chunks=chunks)
        p = out["probabilities"].compute()
        assert p.shape == expected.shape and p.dtype == np.float32
        np.testing.assert_allclose(p, expected, atol=1e-5, err_msg=f"chunks={chunks}")
        np.testing.assert_array_equal(out["segmentation"].compute(), s.segmentation())
        np.testing.assert_allclose(out["uncertainty"].compute(), s.uncertainty(), atol=1e-5)


def test_parity_3d_random_chunkings(s3d):
    img, s = s3d
    expected = s.predict()
    rng = np.random.default_rng(1)
    for _ in range(3):
        chunks = tuple(int(c) for c in rng.integers(12, 50, size=3))
        p = predict_dask(s, img, chunks=chunks)["probabilities"].compute()
        assert_same_prediction(p, expected, err_msg=f"chunks={chunks}")
    # default chunking (one block here) too
    assert_same_prediction(predict_dask(s, img)["probabilities"].compute(), expected)


def test_stored_volumes_are_read_by_the_block_tasks(tmp_path, s3d):
    """A volume in a file is read by each block task itself (block and halo), not by read and halo tasks that Dask
    could run ahead of the blocks, holding input in memory (a volume 8x deeper took 1.7x the memory per worker);
    the results equal the session's for any chunking."""
    from ilastik_widget.io import batch

    img, s = s3d
    path = str(tmp_path / "vol.ome.zarr")
    write_ome(path, img, "zyx", [1.0, 1.0, 1.0])
    expected = s.predict()
    rng = np.random.default_rng(3)
    for chunks in [tuple(int(c) for c in rng.integers(12, 50, size=3)) for _ in range(2)] + [None]:
        probs = predict_dask(s, path, chunks=chunks)["probabilities"]
        n_blocks = int(np.prod([len(c) for c in probs.chunks[:-1]]))
        assert len(dict(probs.__dask_graph__())) <= n_blocks + 1, chunks  # the blocks and the model only
        assert_same_prediction(probs.compute(), expected, err_msg=f"chunks={chunks}")
    reader = batch._stored_reader(open_source(path), TrainedModel.from_session(s))
    assert reader is not None and reader.base._cache_bytes == batch.BATCH_READ_CACHE_BYTES
    assert batch._stored_reader(open_source(img), TrainedModel.from_session(s)) is None  # in memory: in the graph


def test_stored_multichannel_volume_with_a_channel_subset(tmp_path):
    img, truth = synthetic_cells((24, 40, 44), seed=6)
    two = np.stack([img[:, ::-1], img], axis=0)  # czyx, as OME-Zarr stores channels
    s = Session(two, channel_axis=0, features=SEL, seed=0, classifier={"n_estimators": 10})
    s.channels = [1]
    for st in simulated_strokes(truth, n_per_class=4, radius=2, seed=0):
        s.add_stroke(**st)
    s.train()
    path = str(tmp_path / "two.ome.zarr")
    write_ome(path, two, "czyx", [1.0, 1.0, 1.0, 1.0])
    p = predict_dask(s, path, chunks=(10, 40, 20))["probabilities"].compute()
    np.testing.assert_allclose(p, s.predict(), atol=1e-5)


def test_volumes_stream_whole_planes_by_default(s3d, monkeypatch):
    """Default blocks of a volume are ranges of whole planes (features streamed along z, each plane once); a task's
    blocks do not grow with the depth of the volume; planes too large to stream at once are tiled."""
    from ilastik_widget.io import batch_blocks

    img, s = s3d
    model = TrainedModel.from_session(s)
    monkeypatch.setattr(batch_blocks, "Z_BLOCK", 12)  # several z ranges in this small volume
    proc, depth = batch_blocks.plan_chunks(model, img.shape, (8, 8, 8), None, batch_blocks.BLOCK_BYTES)
    assert proc[1:] == ((img.shape[1],), (img.shape[2],)) and len(proc[0]) > 1
    assert depth[0] == halo(SEL, 3)[0]
    deep, _ = batch_blocks.plan_chunks(model, (4 * img.shape[0], *img.shape[1:]), (8, 8, 8), None, 2**30)
    assert deep[0][0] == proc[0][0] and max(deep[0]) < 2 * proc[0][0] and deep[1:] == proc[1:]
    # input chunks deeper than a block are tiled by blocks, not read whole
    whole_chunk, _ = batch_blocks.plan_chunks(model, (160, *img.shape[1:]), (160, 56, 64), None, 2**30)
    assert whole_chunk[0][0] == 16 and 160 % whole_chunk[0][0] == 0  # the first divisor of 160 from 12 and the halo
    p = predict_dask(s, da.from_array(img, chunks=(8, 8, 8)))["probabilities"].compute()
    np.testing.assert_allclose(p, s.predict(), atol=1e-5)
    # a plane whose stream does not fit the budget is cut into tiles (whole input chunks), still exact
    budget = stream_bytes((40, 40), SEL)
    tiled, _ = batch_blocks.plan_chunks(model, img.shape, (8, 8, 8), None, budget)
    assert len(tiled[1]) > 1 or len(tiled[2]) > 1
    assert all(c % 8 == 0 for axis in tiled[1:] for c in axis[:-1])
    p = predict_dask(s, da.from_array(img, chunks=(8, 8, 8)), block_bytes=budget)["probabilities"].compute()
    np.testing.assert_allclose(p, s.predict(), atol=1e-5)


def test_parity_multichannel_and_2d_mode():
    img, truth = synthetic_cells((24, 48, 52), seed=3)
    s = _trained(img, truth, mode="2d")
    p = predict_dask(s, img, chunks=(7, 30, 25))["probabilities"].compute()
    np.testing.assert_allclose(p, s.predict(), atol=1e-5)
    img2, truth2 = synthetic_cells((90, 100), seed=4)
    rgb = np.stack([img2, img2[::-1], img2 * 0.5], axis=0)  # channel first
    s = _trained(rgb, truth2, channel_axis=0)
    p = predict_dask(s, rgb, channel_axis=0, chunks=40)["probabilities"].compute()
    np.testing.assert_allclose(p, s.predict(), atol=1e-5)
    with pytest.raises(ValueError, match="channel"):
        predict_dask(s, img2)


def write_ome(path, data, axes, scale, fmt=2):
    g = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    g.create_array("0", shape=data.shape, dtype=data.dtype, chunks=tuple(min(n, 32) for n in data.shape))[...] = data
    ms = {
        "axes": [
            {"name": a, "type": "space", "unit": "micrometer"}
            if a in "zyx"
            else {"name": a, "type": {"t": "time", "c": "channel"}[a]}
            for a in axes
        ],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }
    if fmt == 2:
        g.attrs["multiscales"] = [{**ms, "version": "0.4"}]
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}


@pytest.mark.parametrize("zfmt", [2, 3])
def test_predict_batch_ome_zarr_output(tmp_path, s3d, zfmt):
    img, s = s3d
    write_ome(tmp_path / "in.ome.zarr", img, "zyx", [2.0, 0.3, 0.3])
    out = tmp_path / "out.ome.zarr"
    res = predict_batch(s, str(tmp_path / "in.ome.zarr"), out, chunks=(20, 28, 30), progress=False, zarr_format=zfmt)
    assert res["probabilities"] == str(out / "probabilities")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ome.zarr", "out.ome.zarr"]  # no partial left
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["ilastik_widget"]["complete"] is True
    probs = open_source(str(out / "probabilities"))
    assert probs.axes == "czyx" and probs.scale == (2.0, 0.3, 0.3) and probs.units == ("micrometer",) * 3
    assert probs.zarr_format == zfmt
    assert_same_prediction(np.moveaxis(probs[...], 0, -1), s.predict())
    seg = read_output(out, "segmentation")
    assert seg.axes == "zyx" and seg.dtype == np.uint8 and seg.scale == (2.0, 0.3, 0.3)
    np.testing.assert_array_equal(seg[...], s.segmentation())
    unc = read_output(out, "uncertainty")
    assert_same_prediction(unc[...], s.uncertainty(), votes=2)
    # an existing output is refused before any work, and replaced on request
    with pytest.raises(FileExistsError):
        predict_batch(s, img, out, progress=False)
    predict_batch(s, img, out, outputs=("segmentation",), progress=False, overwrite=True)
    assert sorted(zarr.open_group(str(out), mode="r").group_keys()) == ["segmentation"]


def test_several_inputs_tiff_and_time_series(tmp_path, s2d):
    img, s = s2d
    img_b, _ = synthetic_cells((120, 90), seed=7)
    tifffile.imwrite(tmp_path / "b.tif", img_b)
    series = np.stack([img, img[::-1], img[:, ::-1]])
    res = predict_batch(
        s,
        [img, str(tmp_path / "b.tif"), open_source(series, axes="tyx")],
        tmp_path / "out",
        outputs=("segmentation", "probabilities"),
        progress=False,
        chunks=64,
    )
    assert [r["input"] for r in res] == ["image", "b", "image_1"]
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out/image.ome.zarr/segmentation/0"))[...], s.segmentation()
    )
    sb = Session(img_b, features=SEL)
    sb.set_model(s.model)
    np.testing.assert_array_equal(read_output(tmp_path / "out/b.ome.zarr", "segmentation")[...], sb.segmentation())
    ts = read_output(tmp_path / "out/image_1.ome.zarr", "probabilities")
    assert ts.axes == "tcyx" and ts.n_times == 3
    st = Session(series[2], features=SEL)
    st.set_model(s.model)
    np.testing.assert_allclose(np.moveaxis(ts.at_time(2)[...], 0, -1), st.predict(), atol=1e-5)
    # TIFF outputs, ImageJ hyperstack order
    res = predict_batch(s, str(tmp_path / "b.tif"), tmp_path / "tifs", format="tiff", progress=False)
    seg = tifffile.imread(res["segmentation"])
    np.testing.assert_array_equal(seg, sb.segmentation())
    prob = open_source(res["probabilities"])
    assert prob.axes == "cyx"
    np.testing.assert_allclose(np.moveaxis(prob[...], 0, -1), sb.predict(), atol=1e-5)
    assert not [p for p in (tmp_path / "tifs").iterdir() if "partial" in p.name]


def test_tiff_inputs_of_the_same_name_in_different_folders_get_their_own_files(tmp_path, s2d):
    img, s = s2d
    other, _ = synthetic_cells((150, 170), seed=9)
    for folder, image in (("day1", img), ("day2", other)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "cells.tif", image)
    inputs = [str(tmp_path / "day1/cells.tif"), str(tmp_path / "day2/cells.tif")]
    res = predict_batch(s, inputs, tmp_path / "out", format="tiff", outputs=("segmentation",), progress=False)
    assert [r["input"] for r in res] == ["cells", "cells_1"]
    paths = [r["segmentation"] for r in res]
    assert paths[0] != paths[1] and all(os.path.isfile(p) for p in paths)
    so = Session(other, features=SEL)
    so.set_model(s.model)
    # each result names the file holding its own input's prediction
    np.testing.assert_array_equal(tifffile.imread(paths[0]), s.segmentation())
    np.testing.assert_array_equal(tifffile.imread(paths[1]), so.segmentation())


def test_trained_model_fields_fit_together(s2d):
    from ilastik_widget.core.model import TrainedModel

    _, s = s2d
    model = TrainedModel.from_session(s)
    assert (
        model.n_classes == 2 and model.n_features == s.n_features and model.class_names == ("Background", "Foreground")
    )
    with pytest.raises(ValueError, match="feature channels"):
        TrainedModel(s.model, FeatureSelection.all(), "3d", 2, 1, ("a", "b"), ("#000000", "#ffffff"))
    with pytest.raises(ValueError, match="only 1 are named"):
        TrainedModel(s.model, SEL, "3d", 2, 1, ("a",), ("#000000",))
    with pytest.raises(ValueError, match="one colour per class"):
        TrainedModel(s.model, SEL, "3d", 2, 1, ("a", "b"), ("#000000",))
    with pytest.raises(ValueError, match="fitted"):
        TrainedModel(Session(np.zeros((8, 8), np.float32)).classifier, SEL, "3d", 2, 1, ("a",), ("#000000",))


def test_interrupted_run_leaves_nothing_presented_as_complete(tmp_path, s2d):
    img, s = s2d

    class Failing:
        shape, dtype, ndim = img.shape, img.dtype, img.ndim

        def __getitem__(self, key):
            if key[0].start and key[0].start >= 60:
                raise KeyboardInterrupt  # like Ctrl-C in the middle of the run
            return img[key]

    src = open_source(da.from_array(Failing(), chunks=(30, 170)))
    with pytest.raises(KeyboardInterrupt):
        predict_batch(s, src, tmp_path / "out.ome.zarr", chunks=(30, 170), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_errors(tmp_path, s2d):
    img, s = s2d
    fresh = Session(img, features=SEL)
    with pytest.raises(RuntimeError, match="not trained"):
        predict_batch(fresh, img, tmp_path / "x.ome.zarr")
    with pytest.raises(ValueError, match="unknown outputs"):
        predict_batch(s, img, tmp_path / "x.ome.zarr", outputs=("nope",))
    with pytest.raises(ValueError, match="2D"):
        predict_dask(s, np.zeros((5, 20, 20), np.float32))
    # an incompatible input among several is refused before anything is written
    with pytest.raises(ValueError, match="3D"):
        predict_batch(s, [img, np.zeros((5, 20, 20), np.float32)], tmp_path / "many", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_local_cluster_two_worker_processes(tmp_path, s3d):
    distributed = pytest.importorskip("distributed")
    img, s = s3d
    write_ome(tmp_path / "vol.ome.zarr", img, "zyx", [1.0, 0.5, 0.5])
    tifffile.imwrite(tmp_path / "vol.tif", img, tile=(32, 32))  # an open file handle must not travel to workers
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        res = predict_batch(
            s,
            [str(tmp_path / "vol.ome.zarr"), img[:20], str(tmp_path / "vol.tif")],
            tmp_path / "out",
            client=client,
            chunks=(20, 28, 32),
            progress=False,
        )
        workers = client.run(os.getpid)
        assert len(set(workers.values())) == 2 and os.getpid() not in workers.values()
        # both workers did part of the work
        tasks = client.run(lambda dask_worker: len(dask_worker.state.log))
        assert all(n > 0 for n in tasks.values())
    for r in (res[0], res[2]):
        p = open_source(r["probabilities"])
        assert_same_prediction(np.moveaxis(p[...], 0, -1), s.predict())
    s20 = Session(img[:20], features=SEL)
    s20.set_model(s.model)
    np.testing.assert_array_equal(open_source(res[1]["segmentation"])[...], s20.segmentation())


@pytest.mark.parametrize("name", ["02_volume_3d.ipynb", "03_batch.ipynb"])
def test_notebook_runs_top_to_bottom(name, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    )
    client.execute()  # raises CellExecutionError on any failing cell
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if name == "03_batch.ipynb":
        import re

        diff = float(re.search(r"largest difference: (\S+)", text).group(1))
        assert diff < 1e-4
        assert "exit code 0" in text and "complete': True" in text
    else:
        assert "same segmentation after loading: True" in text


@pytest.mark.parametrize("chunks", [None, (9, 30, 33)])
def test_batch_uses_the_voxel_size_channels_and_2d_scales_the_session_trained_with(chunks):
    """A session trained with anisotropic voxels, a subset of its input channels and a scale in 2D predicts in batch
    what it predicts itself (batch once filtered with isotropic voxels of every channel: other features, or an error
    about their number)."""
    img, truth = synthetic_cells((30, 64, 70), seed=5)
    two = np.stack([img, img[:, ::-1]], axis=-1)
    sel = SEL.with_2d(3.5, True)
    s = Session(two, channel_axis=-1, features=sel, voxel_size=(3.0, 1.0, 1.0), seed=0, classifier={"n_estimators": 20})
    s.channels = [1]
    for st in simulated_strokes(truth[:, ::-1], n_per_class=4, radius=2, seed=0):
        s.add_stroke(**st)
    s.train()
    expected = s.predict()
    p = predict_dask(s, two, channel_axis=-1, chunks=chunks)["probabilities"].compute()
    np.testing.assert_allclose(p, expected, atol=1e-5)
    model = TrainedModel.from_session(s)
    assert model.voxel_size == (3.0, 1.0, 1.0) and model.channels == (1,)
    from ilastik_widget.io import batch_blocks

    _, depth = batch_blocks.plan_chunks(model, img.shape, (8, 8, 8), chunks, batch_blocks.BLOCK_BYTES)
    assert depth == halo(sel, 3, voxel_size=(3.0, 1.0, 1.0))  # a thinner halo along the coarse axis
