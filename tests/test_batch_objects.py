"""The "objects" output of batch prediction and of the command line: label images and tables equal the in-memory
``Session.objects`` of the same image, across block boundaries (blocks much smaller than the objects), with
hysteresis and splitting, in 2D and 3D, as OME-Zarr and TIFF, on the local scheduler and on a real Dask
``LocalCluster``; bad parameters are refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.batch import predict_batch
from ilastik_widget.io.project import save_session
from ilastik_widget.io.sources import open_source
from ilastik_widget.io.tables import read_table

REPO = Path(__file__).resolve().parents[1]
SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 1.0, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 1.6, True)
    .with_feature("gaussian_gradient_magnitude", 0.7, True)
)


def _trained(path, truth, seed=0):
    s = Session(open_source(str(path)), features=SEL, classifier={"n_estimators": 12}, seed=seed)
    for st in simulated_strokes(truth, n_per_class=4, radius=2, seed=seed):
        s.add_stroke(**st)
    return s.train()


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """A trained session on a 2D TIFF of touching cells (290 x 330)."""
    d = tmp_path_factory.mktemp("objects2d")
    image, truth = synthetic_cells((290, 330), seed=4)
    tifffile.imwrite(d / "cells.tif", image)
    # the same image as a zarr array, for the cluster (a TIFF source's reader does not travel to worker processes)
    zarr.open_array(str(d / "cells.zarr"), mode="w", shape=image.shape, dtype=image.dtype, chunks=(64, 64))[...] = image
    return d, _trained(d / "cells.tif", truth)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    d = tmp_path_factory.mktemp("objects3d")
    image, truth = synthetic_cells((30, 72, 80), seed=5)
    tifffile.imwrite(d / "vol.tif", image, metadata={"axes": "ZYX"})
    return d, _trained(d / "vol.tif", truth)


def _check_table(path, expected):
    table, meta = read_table(path)
    pd.testing.assert_frame_equal(table, expected.table, check_exact=False, rtol=1e-6, atol=1e-9)
    assert meta["n_objects"] == len(expected) and meta["params"]["label"] == expected.params.label
    assert meta["params"]["threshold"] == expected.params.threshold
    return meta


@pytest.mark.parametrize(
    "params",
    [
        {"label": 2, "threshold": 0.5},
        {"label": 2, "threshold": 0.6, "low": 0.35, "min_size": 15, "split": True},
        {"label": 1, "threshold": 0.7, "smooth": 2.0, "max_size": 3000},
    ],
    ids=["simple", "hysteresis-split", "background-smooth"],
)
def test_batch_objects_equal_the_session_objects_across_blocks(cells, tmp_path, params):
    d, s = cells
    expected = s.objects(**params)
    assert len(expected) > 5
    result = predict_batch(
        s, str(d / "cells.tif"), tmp_path / "out.ome.zarr", outputs=("objects",), objects=params, chunks=48,
        progress=False,
    )  # fmt: skip
    root = zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r")
    labels = root["objects/0"]
    assert labels.dtype == np.int32 and labels.chunks == (48, 48)
    np.testing.assert_array_equal(labels[...], expected.labels)
    # objects cut by the 48-pixel blocks are one object with one label
    cut = [
        k for k in range(1, len(expected) + 1) if len(np.unique(np.argwhere(expected.labels == k) // 48, axis=0)) > 1
    ]
    assert len(cut) >= 3
    assert result["objects"] == str(tmp_path / "out.ome.zarr" / "objects") and result["n_objects"] == len(expected)
    for path in result["objects_table"]:
        meta = _check_table(path, expected)
    assert meta["shape"] == [290, 330] and meta["class_name"] == s.classes[params["label"] - 1].name
    info = root.attrs["ilastik_widget"]
    assert info["complete"] is True and info["outputs"] == ["objects"] and info["objects"]["n_objects"] == len(expected)
    assert "image-label" in root["objects"].attrs
    assert not [p for p in os.listdir(tmp_path / "out.ome.zarr") if p.startswith("scratch")]


def test_objects_with_other_outputs(cells, tmp_path):
    d, s = cells
    params = {"label": 2, "threshold": 0.5, "split": True}
    expected = s.objects(**params)
    for outputs in (("probabilities", "objects"), ("segmentation", "objects")):
        out = tmp_path / f"{outputs[0]}.ome.zarr"
        result = predict_batch(s, str(d / "cells.tif"), out, outputs=outputs, objects=params, chunks=64, progress=False)
        root = zarr.open_group(str(out), mode="r")
        np.testing.assert_array_equal(root["objects/0"][...], expected.labels)
        np.testing.assert_array_equal(root[f"{outputs[0]}/0"][...].shape[-2:], (290, 330))
        _check_table(result["objects_table"][1], expected)
        assert root.attrs["ilastik_widget"]["outputs"] == [outputs[0], "objects"]
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "segmentation.ome.zarr"))["segmentation/0"][...], s.segmentation()
    )


def test_objects_as_tiff(cells, tmp_path):
    d, s = cells
    params = {"label": 2, "threshold": 0.5, "min_size": 20}
    expected = s.objects(**params)
    result = predict_batch(
        s, [str(d / "cells.tif")], tmp_path / "tiffs", outputs=("segmentation", "objects"), objects=params,
        format="tiff", chunks=100, progress=False,
    )  # fmt: skip
    (r,) = result
    assert r["objects"] == str(tmp_path / "tiffs" / "cells_objects.tif")
    np.testing.assert_array_equal(tifffile.imread(r["objects"]), expected.labels)
    assert r["objects_table"] == [str(tmp_path / "tiffs" / f"cells_objects{x}") for x in (".csv", ".parquet")]
    for path in r["objects_table"]:
        _check_table(path, expected)
    assert sorted(os.listdir(tmp_path / "tiffs")) == sorted(
        [
            "cells_segmentation.tif",
            "cells_objects.tif",
            "cells_objects.csv",
            "cells_objects.csv.json",
            "cells_objects.parquet",
        ]
    )
    # written again only with overwrite
    with pytest.raises(FileExistsError, match="cells_objects.tif"):
        predict_batch(
            s, [str(d / "cells.tif")], tmp_path / "tiffs", outputs=("objects",), objects=params, format="tiff"
        )


def test_objects_of_a_volume_across_blocks(volume, tmp_path):
    d, s = volume
    params = {"label": 2, "threshold": 0.5, "min_size": 20, "split": True}
    expected = s.objects(**params)
    assert len(expected) > 3
    result = predict_batch(
        s, str(d / "vol.tif"), tmp_path / "vol.ome.zarr", outputs=("objects",), objects=params, chunks=(16, 32, 32),
        progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "vol.ome.zarr"))["objects/0"][...], expected.labels)
    _check_table(result["objects_table"][0], expected)


def test_objects_in_physical_units(tmp_path):
    image, truth = synthetic_cells((200, 220), seed=6)
    root = zarr.open_group(str(tmp_path / "cells.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=image.shape, dtype=image.dtype, chunks=(64, 64))[...] = image
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "yx"]
    scale = [{"type": "scale", "scale": [0.5, 0.5]}]
    root.attrs["multiscales"] = [
        {"version": "0.4", "axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
    ]
    s = _trained(tmp_path / "cells.ome.zarr", truth)
    expected = s.objects(2, 0.5)
    result = predict_batch(
        s, str(tmp_path / "cells.ome.zarr"), tmp_path / "out.ome.zarr", outputs=("objects",),
        objects={"label": 2}, chunks=50, progress=False,
    )  # fmt: skip
    meta = _check_table(result["objects_table"][1], expected)
    table = read_table(result["objects_table"][1])[0]
    np.testing.assert_allclose(table["area_physical"], table["area"] * 0.25)
    assert meta["units"] == ["micrometer", "micrometer"] and meta["columns"]["area_physical"]["unit"] == "micrometer^2"


def test_objects_on_a_local_cluster(cells, tmp_path):
    distributed = pytest.importorskip("distributed")
    d, s = cells
    params = {"label": 2, "threshold": 0.55, "low": 0.3, "split": True}
    expected = s.objects(**params)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        # predicted by the workers for the objects alone, and read back from the probabilities written
        for outputs in (("objects",), ("probabilities", "objects")):
            out = tmp_path / f"{len(outputs)}.ome.zarr"
            result = predict_batch(
                s, str(d / "cells.zarr"), out, outputs=outputs, objects=params, chunks=64, client=client, progress=False
            )
            np.testing.assert_array_equal(zarr.open_group(str(out))["objects/0"][...], expected.labels)
            _check_table(result["objects_table"][1], expected)


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        (None, "needs objects="),
        ({"threshold": 0.5}, "needs objects="),
        ({"label": 2, "threshold": 1.5}, "threshold must be in"),
        ({"label": 3}, "label must be a class 1..2"),
        ({"label": 2, "min_size": 30, "max_size": 5}, "min_size .* larger than max_size"),
        ({"label": 2, "thresh": 0.5}, "unknown objects parameters"),
    ],
)
def test_bad_objects_parameters_are_refused_before_anything_is_written(cells, tmp_path, objects, message):
    d, s = cells
    with pytest.raises(ValueError, match=message):
        predict_batch(
            s, str(d / "cells.tif"), tmp_path / "o.ome.zarr", outputs=("segmentation", "objects"), objects=objects
        )
    assert os.listdir(tmp_path) == []


def test_objects_parameters_without_the_objects_output_are_refused(cells, tmp_path):
    d, s = cells
    with pytest.raises(ValueError, match="'objects' is not among the outputs"):
        predict_batch(s, str(d / "cells.tif"), tmp_path / "o.ome.zarr", outputs=("segmentation",), objects={"label": 2})


def test_objects_of_a_time_series_are_refused(cells, tmp_path):
    _, s = cells
    series = np.stack([np.asarray(s.image)] * 2)
    tifffile.imwrite(tmp_path / "series.tif", series, imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(ValueError, match="time series"):
        predict_batch(
            s, str(tmp_path / "series.tif"), tmp_path / "o.ome.zarr", outputs=("objects",), objects={"label": 2}
        )
    assert sorted(os.listdir(tmp_path)) == ["series.tif"]


# --------------------------------------------------------------------------------------------- command line


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ilastik_widget.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_cli_writes_objects_and_their_tables(cells, tmp_path):
    d, s = cells
    save_session(s, tmp_path / "proj.ilastikw")
    r = _cli(
        "predict", tmp_path / "proj.ilastikw", d / "cells.tif", "-o", tmp_path / "out", "--outputs", "segmentation",
        "objects", "--objects-label", "2", "--threshold", "0.6", "--min-size", "12", "--split", "--chunks", "64",
        "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    expected = s.objects(2, 0.6, min_size=12, split=True)
    container = tmp_path / "out" / "cells.ome.zarr"
    np.testing.assert_array_equal(zarr.open_group(str(container))["objects/0"][...], expected.labels)
    _check_table(container / "objects.parquet", expected)
    _check_table(container / "objects.csv", expected)
    assert f"objects_table: {container / 'objects.csv'}, {container / 'objects.parquet'}" in r.stdout


def test_cli_objects_errors_are_one_line(cells, tmp_path):
    d, s = cells
    save_session(s, tmp_path / "proj.ilastikw")
    base = ("predict", tmp_path / "proj.ilastikw", d / "cells.tif", "-o", tmp_path / "out", "--outputs", "objects")
    r = _cli(*base)
    assert r.returncode == 1 and "--objects-label" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli(*base, "--objects-label", "2", "--threshold", "1.5")
    assert r.returncode == 1 and "bad objects options: threshold must be in [0, 1]" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    r = _cli(*base, "--objects-label", "5")
    assert r.returncode == 1 and "label must be a class 1..2" in r.stderr


def test_objects_of_a_multichannel_image(tmp_path):
    image, truth = synthetic_cells((150, 170), seed=9)
    rgb = np.stack([image, 1.0 - image, image * 0.5], axis=-1).astype(np.float32)
    zarr.open_array(str(tmp_path / "rgb.zarr"), mode="w", shape=rgb.shape, dtype=rgb.dtype, chunks=(64, 64, 3))[...] = (
        rgb
    )
    src = open_source(str(tmp_path / "rgb.zarr"), channel_axis=2)
    s = Session(src, features=SEL, classifier={"n_estimators": 12})
    s.channels = [0, 2]  # the classifier sees two channels; the table measures all three
    for st in simulated_strokes(truth, n_per_class=3, radius=2, seed=1):
        s.add_stroke(**st)
    s.train()
    expected = s.objects(2, 0.5)
    assert {"intensity_mean-0", "intensity_max-2"} <= set(expected.table.columns)
    result = predict_batch(
        s, str(tmp_path / "rgb.zarr"), tmp_path / "o.ome.zarr", outputs=("objects",), objects={"label": 2},
        channel_axis=2, chunks=40, progress=False,
    )  # fmt: skip
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "o.ome.zarr"))["objects/0"][...], expected.labels)
    _check_table(result["objects_table"][1], expected)
