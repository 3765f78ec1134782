"""Export of a session's results for its own image (``export_session``, ``IlastikWidget.export`` with progress and
Stop, the panel's ``export`` message) and ilastik projects of a session (``export_ilp`` / ``load_ilp``, round trips
and the layout ilastik reads)."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

import ilastik_widget
from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.export import ExportStopped, export_ilp, export_session, load_ilp
from ilastik_widget.io.ilp import IlpError, import_ilp
from ilastik_widget.io.sources import open_source
from ilastik_widget.io.tables import read_table
from ilastik_widget.widget.widget import IlastikWidget

SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 1.0, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 1.6, True)
    .with_feature("difference_of_gaussians", 3.5, True)
)
OBJECTS = {"label": 2, "threshold": 0.5, "min_size": 8, "split": True}


def _session(image, truth, **options):
    s = Session(image, features=SEL, classifier={"n_estimators": 12}, **options)
    for st in simulated_strokes(truth, n_per_class=3, radius=2, seed=3):
        s.add_stroke(**st)
    return s


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A trained session on a TIFF (260 x 300) in blocks of 96, so objects cross block borders."""
    d = tmp_path_factory.mktemp("export")
    image, truth = synthetic_cells((260, 300), seed=7)
    tifffile.imwrite(d / "cells.tif", image)
    s = _session(open_source(str(d / "cells.tif")), truth, block_shape=(96, 96))
    return d, s.train()


def _same_table(path, expected):
    table, meta = read_table(path)
    pd.testing.assert_frame_equal(table, expected.table, check_exact=False, rtol=1e-6, atol=1e-9)
    assert meta["n_objects"] == len(expected)


# --------------------------------------------------------------------------------------------- export_session


def test_export_to_ome_zarr_equals_the_session(trained, tmp_path):
    _, s = trained
    steps = []
    outputs = ("probabilities", "segmentation", "uncertainty", "objects")
    out = tmp_path / "cells_results.ome.zarr"
    result = export_session(s, out, outputs, objects=OBJECTS, progress=lambda done, total: steps.append((done, total)))
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(root["probabilities/0"][...], np.moveaxis(s.predict(), -1, 0))
    np.testing.assert_array_equal(root["segmentation/0"][...], s.segmentation())
    np.testing.assert_allclose(root["uncertainty/0"][...], s.uncertainty(), atol=1e-6)
    expected = s.objects(**OBJECTS)
    np.testing.assert_array_equal(root["objects/0"][...], expected.labels)
    assert root["objects/0"].dtype == np.int32 and "image-label" in root["objects"].attrs
    for path in result["objects_table"]:
        _same_table(path, expected)
    assert result == {
        "input": "cells",
        **{o: str(out / o) for o in outputs},
        "objects_table": [str(out / "objects.csv"), str(out / "objects.parquet")],
        "n_objects": len(expected),
    }
    info = root.attrs["ilastik_widget"]
    assert info["complete"] is True and info["outputs"] == list(outputs)
    assert root["probabilities"].attrs["multiscales"][0]["axes"][0] == {"name": "c", "type": "channel"}
    # progress: every block predicted, then every block of objects found and relabelled, in order, to the end
    n_blocks = len(s.blocks_for(None))
    assert steps == [(i, 3 * n_blocks) for i in range(1, 3 * n_blocks + 1)]
    assert sorted(os.listdir(tmp_path)) == ["cells_results.ome.zarr"]  # nothing temporary left
    assert "scratch-probability" not in os.listdir(out)


def test_export_objects_without_probabilities_and_as_tiff(trained, tmp_path):
    _, s = trained
    expected = s.objects(**OBJECTS)
    result = export_session(s, tmp_path / "tif", ("segmentation", "objects"), objects=OBJECTS, format="tiff")
    assert result["segmentation"] == str(tmp_path / "tif" / "cells_segmentation.tif")
    np.testing.assert_array_equal(tifffile.imread(result["segmentation"]), s.segmentation())
    np.testing.assert_array_equal(tifffile.imread(result["objects"]), expected.labels)
    for path in result["objects_table"]:
        _same_table(path, expected)
    assert sorted(os.listdir(tmp_path / "tif")) == sorted(
        [
            "cells_segmentation.tif",
            "cells_objects.tif",
            "cells_objects.csv",
            "cells_objects.csv.json",
            "cells_objects.parquet",
        ]
    )
    probabilities = export_session(s, tmp_path / "p", ("probabilities",), format="tiff")["probabilities"]
    with tifffile.TiffFile(probabilities) as tif:
        assert tif.is_imagej and tif.series[0].axes == "CYX"
        np.testing.assert_array_equal(tif.asarray(), np.moveaxis(s.predict(), -1, 0))


def test_a_stopped_export_leaves_nothing(trained, tmp_path):
    _, s = trained
    seen = []

    def cancelled():
        seen.append(1)
        return len(seen) > 3

    with pytest.raises(ExportStopped, match="stopped"):
        export_session(s, tmp_path / "out.ome.zarr", objects=OBJECTS, cancelled=cancelled)
    assert os.listdir(tmp_path) == []


def test_bad_export_input_is_named_before_anything_is_written(trained, tmp_path):
    d, s = trained
    with pytest.raises(ValueError, match="unknown outputs \\['labels'\\]"):
        export_session(s, tmp_path / "a.zarr", ("segmentation", "labels"))
    with pytest.raises(ValueError, match="needs objects="):
        export_session(s, tmp_path / "a.zarr", ("objects",))
    with pytest.raises(ValueError, match="threshold must be in"):
        export_session(s, tmp_path / "a.zarr", ("objects",), objects={"label": 2, "threshold": -0.1})
    with pytest.raises(ValueError, match="format must be"):
        export_session(s, tmp_path / "a.zarr", format="png")
    untrained = Session(np.zeros((40, 50), np.float32))
    with pytest.raises(RuntimeError, match="not trained"):
        export_session(untrained, tmp_path / "a.zarr", ("segmentation",))
    assert os.listdir(tmp_path) == []
    (tmp_path / "a.zarr").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_session(s, tmp_path / "a.zarr", ("segmentation",))
    export_session(s, tmp_path / "a.zarr", ("segmentation",), overwrite=True)
    assert zarr.open_group(str(tmp_path / "a.zarr")).attrs["ilastik_widget"]["complete"] is True


# --------------------------------------------------------------------------------------------- the widget's export


class Recorder:
    def __init__(self):
        self.sent = []

    def __call__(self, content, buffers=None):
        json.dumps(content)
        self.sent.append(content)

    def reply(self, id):
        (found,) = [c for c in self.sent if c.get("id") == id and c.get("type") != "refresh"]
        return found


@pytest.fixture
def widget(trained):
    _, s = trained
    w = IlastikWidget(s)
    rec = Recorder()
    w.send = rec
    w.wait(60)
    yield w, rec
    w.close()


def test_widget_export_reports_progress(widget, tmp_path):
    w, _ = widget
    seen = []
    w.observe(lambda change: seen.append(dict(change["new"])), names="progress")
    w.objects(**OBJECTS)
    result = w.export(tmp_path / "w.ome.zarr", outputs=("segmentation", "objects"))
    expected = w.last_objects
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "w.ome.zarr"))["objects/0"][...], expected.labels)
    _same_table(result["objects_table"][1], expected)
    exporting = [p for p in seen if p]
    assert exporting and all(p["task"] == "exporting" for p in exporting)
    assert exporting[-1]["done"] == exporting[-1]["total"] and seen[-1] == {} and w.progress == {}
    assert w.status == f"Exported to {tmp_path / 'w.ome.zarr'}." and not w.busy


def test_widget_stop_ends_the_export_and_removes_it(widget, tmp_path, monkeypatch):
    w, _ = widget
    monkeypatch.setattr("ilastik_widget.widget.export_task.UPDATE_SECONDS", 0.0)  # every step shows
    w.observe(lambda change: change["new"].get("done") == 2 and w.stop(), names="progress")
    with pytest.raises(ExportStopped):
        w.export(tmp_path / "stopped.ome.zarr", outputs=("segmentation",))
    assert os.listdir(tmp_path) == [] and w.progress == {}
    assert "Export stopped" in w.status and not w.busy


def test_export_message_from_the_browser(widget, tmp_path):
    w, rec = widget
    w.handle_message({"type": "export", "id": 5, "path": str(tmp_path / "b.ome.zarr"), "outputs": ["objects"]})
    assert "find objects first" in rec.reply(5)["message"]  # no objects yet: their parameters are unknown
    w.objects(**OBJECTS)
    path = str(tmp_path / "b.ome.zarr")
    w.handle_message({"type": "export", "id": 6, "path": path, "outputs": ["segmentation", "objects"]})
    w._results.wait()
    reply = rec.reply(6)
    assert reply["type"] == "export-reply"
    assert reply["written"] == [
        f"{path}/segmentation",
        f"{path}/objects",
        f"{path}/objects.csv",
        f"{path}/objects.parquet",
    ]
    w.handle_message({"type": "export", "id": 7, "path": path, "outputs": ["segmentation"]})
    w._results.wait()
    assert rec.reply(7)["type"] == "error" and "already exists" in rec.reply(7)["message"]
    w.handle_message({"type": "export", "id": 8, "path": path, "outputs": ["pixels"]})
    assert rec.reply(8)["type"] == "error" and "unknown outputs ['pixels']" in rec.reply(8)["message"]


# --------------------------------------------------------------------------------------------- ilastik projects


def _same_session(a, b):
    np.testing.assert_array_equal(a.labels(), b.labels())
    assert [(c.name, c.color) for c in a.classes] == [(c.name, c.color) for c in b.classes]
    assert a.feature_selection == b.feature_selection and a.feature_mode == b.feature_mode


def test_ilp_round_trip_with_the_image_file(trained, tmp_path):
    d, s = trained
    s.rename_class(2, "Nuclei")
    s.recolor_class(2, "#12ab9f")
    path = ilastik_widget.export_ilp(s, d / "cells.ilp")
    with h5py.File(path, "r") as f:  # what ilastik's Pixel Classification workflow reads
        assert f["workflowName"][()] == b"Pixel Classification"
        raw = f["Input Data/infos/lane0000/Raw Data"]
        assert raw["__class__"][()] == b"RelativeFilesystemDatasetInfo" and raw["filePath"][()] == b"cells.tif"
        assert f["FeatureSelections/SelectionMatrix"].dtype == bool
        assert list(f["PixelClassification/LabelNames"][()]) == [b"Background", b"Nuclei"]
        blocks = f["PixelClassification/LabelSets/labels000"]
        assert len(blocks) > 0 and all("blockSlice" in b.attrs for b in blocks.values())
    back = ilastik_widget.load_ilp(path, classifier={"n_estimators": 12}, block_shape=(96, 96))
    _same_session(back, s)
    assert back.source is not None and back.source.path == str(d / "cells.tif")
    np.testing.assert_array_equal(np.asarray(back.image), np.asarray(s.image))
    # the imported labels are one entry, undone like a stroke
    assert [e.kind for e in back.strokes] == ["import"]
    assert back.undo() and not back.labels().any()
    # trains as the original does (the same labels, features, classifier settings and seed)
    back.redo()
    np.testing.assert_array_equal(back.train().predict(), s.predict())


def test_ilp_round_trip_with_an_embedded_volume(tmp_path):
    image, truth = synthetic_cells((12, 60, 70), seed=8)
    s = _session(image, truth, feature_mode="2d", classes=("Background", "Cells", "Edges"))
    s.add_stroke(3, [[5, 10, 10], [5, 30, 30]], radius=1, axes=(1, 2))
    path = export_ilp(s, tmp_path / "vol.ilp")
    project = import_ilp(path)
    assert project.image.kind == "internal" and project.feature_mode == "2d"
    back = load_ilp(path)
    _same_session(back, s)
    np.testing.assert_array_equal(np.asarray(back.image), image)


def test_load_ilp_needs_the_image_and_refuses_other_projects(trained, tmp_path):
    d, s = trained
    tifffile.imwrite(tmp_path / "moved.tif", np.asarray(s.image))
    moving = Session(open_source(str(tmp_path / "moved.tif")), features=SEL)
    moving.annotations = s.annotations
    path = export_ilp(moving, tmp_path / "p.ilp")
    (tmp_path / "moved.tif").unlink()
    with pytest.raises(FileNotFoundError, match="moved.tif.*pass image="):
        load_ilp(path)
    _same_session(load_ilp(path, image=np.asarray(s.image)), moving)
    with h5py.File(tmp_path / "other.ilp", "w") as f:
        f.create_dataset("workflowName", data=b"ObjectClassificationWorkflowPrediction")
    with pytest.raises(IlpError, match="not Pixel Classification"):
        load_ilp(tmp_path / "other.ilp")
    with pytest.raises(ValueError, match="embed=True"):
        export_ilp(Session(np.asarray(s.image)), tmp_path / "q.ilp", embed=False)


def test_widget_writes_an_ilp(widget, tmp_path):
    w, _ = widget
    path = w.export_ilp(tmp_path / "w.ilp", embed=True)
    _same_session(load_ilp(path), w.session)


def test_export_of_a_volume(tmp_path):
    image, truth = synthetic_cells((20, 60, 70), seed=10)
    s = _session(image, truth, block_shape=(8, 32, 32)).train()
    params = {"label": 2, "threshold": 0.5, "min_size": 15, "split": True}
    result = export_session(s, tmp_path / "vol.ome.zarr", ("uncertainty", "objects"), objects=params)
    root = zarr.open_group(str(tmp_path / "vol.ome.zarr"), mode="r")
    expected = s.objects(**params)
    np.testing.assert_array_equal(root["objects/0"][...], expected.labels)
    np.testing.assert_allclose(root["uncertainty/0"][...], s.uncertainty(), atol=1e-6)
    assert [a["name"] for a in root["objects"].attrs["multiscales"][0]["axes"]] == ["z", "y", "x"]
    _same_table(result["objects_table"][0], expected)
