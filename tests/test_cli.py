"""The ilastik-widget command line, end to end in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from ilastik_widget import cli
from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.project import load_session, save_session  # noqa: F401
from ilastik_widget.io.sources import open_source

REPO = Path(__file__).resolve().parents[1]
SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 1.0, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 3.5, True)
    .with_feature("gaussian_gradient_magnitude", 1.6, True)
)


def run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "ilastik_widget.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    img, truth = synthetic_cells((100, 110), seed=11)
    tifffile.imwrite(d / "train.tif", img)
    s = Session(open_source(str(d / "train.tif")), features=SEL, classifier={"n_estimators": 12})
    for st in simulated_strokes(truth, n_per_class=3, seed=2):
        s.add_stroke(**st)
    s.train()
    save_session(s, d / "proj.ilastikw")
    other, _ = synthetic_cells((90, 130), seed=12)
    z = zarr.open_group(str(d / "other.ome.zarr"), mode="w", zarr_format=2)
    z.create_array("0", shape=other.shape, dtype=other.dtype, chunks=(32, 32))[...] = other
    z.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.7, 0.7]}]}],
        }
    ]
    so = Session(other, features=SEL)
    so.set_model(s.model)
    return d, s, so


def test_predict_end_to_end(project, tmp_path):
    d, s, so = project
    r = run(
        "predict",
        d / "proj.ilastikw",
        d / "train.tif",
        d / "other.ome.zarr",
        "--output",
        tmp_path / "out",
        "--chunks",
        "48,40",
    )
    assert r.returncode == 0, r.stderr
    assert "train: probabilities:" in r.stdout and "other: " in r.stdout
    assert "100%" in r.stderr  # the progress bar
    p = open_source(str(tmp_path / "out/train.ome.zarr/probabilities"))
    np.testing.assert_allclose(np.moveaxis(p[...], 0, -1), s.predict(), atol=1e-5)
    seg = open_source(str(tmp_path / "out/other.ome.zarr/segmentation"))
    assert seg.scale == (0.7, 0.7)
    np.testing.assert_array_equal(seg[...], so.segmentation())
    # a second run refuses to overwrite, then overwrites on request
    r = run("predict", d / "proj.ilastikw", d / "train.tif", "-o", tmp_path / "out")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run(
        "predict",
        d / "proj.ilastikw",
        d / "train.tif",
        "-o",
        tmp_path / "out",
        "--overwrite",
        "--no-progress",
        "--outputs",
        "segmentation",
    )
    assert r.returncode == 0, r.stderr and "%" not in r.stderr


def test_predict_tiff_without_training_image(project, tmp_path):
    d, s, so = project
    # the project stores its trained classifier: the training image is not needed for batch prediction
    proj = tmp_path / "moved.ilastikw"
    proj.write_bytes((d / "proj.ilastikw").read_bytes())
    tifffile.imwrite(tmp_path / "x.tif", tifffile.imread(d / "train.tif"))
    os.rename(d / "train.tif", d / "train.tif.away")
    try:
        r = run(
            "predict",
            proj,
            tmp_path / "x.tif",
            "-o",
            tmp_path / "tifs",
            "--format",
            "tiff",
            "--outputs",
            "segmentation",
            "uncertainty",
            "--no-progress",
        )
    finally:
        os.rename(d / "train.tif.away", d / "train.tif")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "tifs/x_segmentation.tif"), s.segmentation())
    np.testing.assert_allclose(tifffile.imread(tmp_path / "tifs/x_uncertainty.tif"), s.uncertainty(), atol=1e-5)


def test_predict_on_a_dask_scheduler(project, tmp_path):
    distributed = pytest.importorskip("distributed")
    d, s, so = project
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
    ) as cluster:
        r = run(
            "predict",
            d / "proj.ilastikw",
            d / "other.ome.zarr",
            "-o",
            tmp_path / "out",
            "--scheduler",
            cluster.scheduler_address,
            "--chunks",
            "32",
            "--no-progress",
        )
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(
        open_source(str(tmp_path / "out/other.ome.zarr/segmentation"))[...], so.segmentation()
    )


def test_errors_and_exit_codes(project, tmp_path):
    d, s, _ = project
    r = run("predict", tmp_path / "nope.ilastikw", d / "train.tif", "-o", tmp_path / "o")
    assert r.returncode == 1 and "project file not found" in r.stderr
    (tmp_path / "garbage.ilastikw").write_bytes(b"\x00garbage" * 100)
    r = run("predict", tmp_path / "garbage.ilastikw", d / "train.tif", "-o", tmp_path / "o")
    assert r.returncode == 1 and "not an ilastik-widget project" in r.stderr and "Traceback" not in r.stderr
    r = run("predict", d / "proj.ilastikw", tmp_path / "missing.tif", "-o", tmp_path / "o")
    assert r.returncode == 1 and "input not found" in r.stderr
    r = run("predict", d / "proj.ilastikw", d / "train.tif")  # no --output
    assert r.returncode == 2 and "--output" in r.stderr
    r = run("predict", d / "proj.ilastikw", d / "train.tif", "-o", tmp_path / "o", "--outputs", "bogus")
    assert r.returncode == 2
    vol = np.zeros((4, 30, 30), np.float32)
    tifffile.imwrite(tmp_path / "vol.tif", vol, photometric="minisblack")
    r = run("predict", d / "proj.ilastikw", tmp_path / "vol.tif", "-o", tmp_path / "o", "--no-progress")
    assert r.returncode == 1 and "3D" in r.stderr and "2D" in r.stderr
    untrained = Session(np.zeros((20, 20), np.float32))
    save_session(untrained, tmp_path / "untrained.ilastikw")
    r = run("predict", tmp_path / "untrained.ilastikw", d / "train.tif", "-o", tmp_path / "o")
    assert r.returncode == 1 and "untrained" in r.stderr
    r = run(
        "predict",
        d / "proj.ilastikw",
        d / "train.tif",
        "-o",
        tmp_path / "o",
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--no-progress",
    )
    assert r.returncode == 1 and "scheduler" in r.stderr
    r = run()
    assert r.returncode == 2 and "predict" in r.stderr
    r = run("--version")
    assert r.returncode == 0 and "ilastik-widget" in r.stdout


def test_demo_dispatch(monkeypatch):
    seen = {}
    fake = types.ModuleType("ilastik_widget.demo")
    fake.main = lambda args: seen.update(no_browser=args.no_browser, port=args.port) or 0
    monkeypatch.setitem(sys.modules, "ilastik_widget.demo", fake)
    assert cli.main(["demo", "--no-browser", "--port", "8899"]) == 0
    assert seen == {"no_browser": True, "port": 8899}
    assert cli.main(["demo"]) == 0 and seen == {"no_browser": False, "port": None}


def _one_line_error(r, *words):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


def test_expected_failures_are_one_line_without_traceback(project, tmp_path):
    import json
    import socket
    import zipfile

    d, s, _ = project
    out = tmp_path / "o"
    # a refused connection to an input URL
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/img.ome.zarr"
    _one_line_error(run("predict", d / "proj.ilastikw", url, "-o", out, "--no-progress"), "cannot open input", url)
    # a damaged project: "model" of the wrong type, and a project that is a directory
    bad = tmp_path / "bad.ilastikw"
    with zipfile.ZipFile(d / "proj.ilastikw") as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = zin.read(n)
            if n == "project.json":
                doc = json.loads(data)
                doc["model"] = "abc"
                data = json.dumps(doc)
            zout.writestr(n, data)
    _one_line_error(run("predict", bad, d / "train.tif", "-o", out), "cannot use project", "model must be an object")
    _one_line_error(run("predict", tmp_path, d / "train.tif", "-o", out), "is a directory")
    # missing files, bad arguments
    _one_line_error(run("predict", tmp_path / "nope.ilastikw", d / "train.tif", "-o", out), "not found")
    _one_line_error(run("predict", d / "proj.ilastikw", tmp_path / "nope.tif", "-o", out), "input not found")
    r = run("predict", d / "proj.ilastikw", d / "train.tif")
    _one_line_error(r, "--output")
    assert r.returncode == 2
    r = run("predict", d / "proj.ilastikw", d / "train.tif", "-o", out, "--chunks", "0")
    _one_line_error(r, "chunks must be positive")
    assert r.returncode == 2
    _one_line_error(run("bogus"), "invalid choice")


def test_an_unexpected_error_is_one_line_unless_debugging(project, tmp_path, monkeypatch, capsys):
    import ilastik_widget.io.project as project_module

    d, _, _ = project

    def broken(path):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(project_module, "load_model", broken)
    args = ["predict", str(d / "proj.ilastikw"), str(d / "train.tif"), "-o", str(tmp_path / "o")]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "unexpected ZeroDivisionError: a bug" in err and "--debug" in err and len(err.splitlines()) == 1
    with pytest.raises(ZeroDivisionError):
        cli.main([*args, "--debug"])


def test_inputs_of_the_same_name_are_reported_with_their_own_files(project, tmp_path):
    d, s, _ = project
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "img.tif", tifffile.imread(d / "train.tif"))
    r = run(
        "predict", d / "proj.ilastikw", tmp_path / "a/img.tif", tmp_path / "b/img.tif", "-o", tmp_path / "out",
        "--format", "tiff", "--outputs", "segmentation", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines == [
        f"img: segmentation: {tmp_path / 'out/img_segmentation.tif'}",
        f"img_1: segmentation: {tmp_path / 'out/img_1_segmentation.tif'}",
    ]
