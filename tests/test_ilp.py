"""ilastik project files: export and import round trips, the layout ilastik 1.4 reads, foreign and damaged files.

The expected group, dataset and attribute names are those of ilastik's serializers (projectManager,
DataSelectionSerializer, FeatureSelectionSerializer, PixelClassificationSerializer with SerialBlockSlot).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from ilastik_widget.core.annotations import Annotations
from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.io.ilp import IlpError, annotations_from_ilp, export_ilp, import_ilp

ILASTIK_FEATURE_IDS = [
    b"GaussianSmoothing",
    b"LaplacianOfGaussian",
    b"GaussianGradientMagnitude",
    b"DifferenceOfGaussians",
    b"StructureTensorEigenvalues",
    b"HessianOfGaussianEigenvalues",
]
ILASTIK_SCALES = [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0]


def _string_to_slicing(text):
    """ilastik's stringToSlicing: '[0:1,2:3]' -> slices."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return tuple(slice(int(a), int(b)) for a, b in (s.split(":") for s in text[1:-1].split(",")))


def _annotations_2d():
    a = Annotations((120, 300), classes=["Background", "Nuclei", "Débris"])
    a.recolor_class(3, "#12ab9f")
    a.add_stroke(1, [[10, 10], [10, 290], [100, 290]], radius=3)
    a.add_stroke(2, [[60, 20], [60, 270]], radius=5)
    a.add_stroke(3, [[110, 5]], radius=2)
    a.add_stroke(0, [[60, 150]], radius=6, erase=True)
    return a


def _selection():
    sel = FeatureSelection.none()
    for f, s in [("gaussian_smoothing", 0.3), ("gaussian_smoothing", 1.0), ("hessian_of_gaussian_eigenvalues", 3.5)]:
        sel = sel.with_feature(f, s, True)
    return sel.with_feature("difference_of_gaussians", 10.0, True)


@pytest.fixture
def tiff_outside(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "cells.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (120, 300), dtype=np.uint8))
    return path


def test_export_then_import_gives_the_same_labels_classes_and_features(tmp_path, tiff_outside):
    a = _annotations_2d()
    (tmp_path / "proj").mkdir()
    ilp = export_ilp(tmp_path / "proj" / "p.ilp", a, _selection(), tiff_outside)
    project = import_ilp(ilp)
    assert [(c.name, c.color) for c in project.classes] == [(c.name, c.color) for c in a.classes]
    assert project.selection == _selection() and project.dropped_features == []
    assert project.spatial_shape == (120, 300)
    np.testing.assert_array_equal(project.labels((slice(0, 120), slice(0, 300))), a.labels())
    b = annotations_from_ilp(project)
    np.testing.assert_array_equal(b.labels(), a.labels())
    assert b.count_per_class().tolist() == a.count_per_class().tolist()
    # The image lies outside the project's folder: an absolute path, as ilastik stores it.
    assert project.image is not None and project.image.kind == "file"
    assert project.image.location == str(tiff_outside) and project.image.axes == "yx"
    assert project.image.shape == (120, 300) and project.image.nickname == "cells"
    assert not [p for p in (tmp_path / "proj").iterdir() if p.name != "p.ilp"]  # no temporary file left


def test_the_file_has_the_layout_ilastik_reads(tmp_path, tiff_outside):
    a = _annotations_2d()
    (tmp_path / "proj").mkdir()
    ilp = export_ilp(tmp_path / "proj" / "p.ilp", a, _selection(), tiff_outside)
    with h5py.File(ilp, "r") as f:
        # projectManager: version, workflow, time at the root
        assert f["workflowName"][()] == b"Pixel Classification"
        assert f["ilastikVersion"][()] == b"1.4.0"
        assert isinstance(f["time"][()], bytes)
        # DataSelectionSerializer (StorageVersion 0.2, one lane with the workflow's two roles)
        data = f["Input Data"]
        assert data["Role Names"][()].tolist() == [b"Raw Data", b"Prediction Mask"]
        assert data["StorageVersion"][()] == b"0.2"
        assert "local_data" in data and list(data["infos"]) == ["lane0000"]
        lane = data["infos/lane0000"]
        assert len(lane["Prediction Mask"]) == 0
        raw = lane["Raw Data"]
        assert raw["__class__"][()] == b"FilesystemDatasetInfo" and raw["location"][()] == b"FileSystem"
        assert raw["filePath"][()].decode() == str(tiff_outside)
        assert raw["shape"][()].tolist() == [120, 300] and raw["allowLabels"][()] is np.True_
        tags = json.loads(raw["axistags"][()])
        assert [(t["key"], t["typeFlags"]) for t in tags["axes"]] == [("y", 2), ("x", 2)]
        for key in ("nickname", "datasetId", "display_mode", "normalizeDisplay"):
            assert key in raw
        # FeatureSelectionSerializer: feature x scale matrix in ilastik's order
        feats = f["FeatureSelections"]
        assert feats["FeatureIds"][()].tolist() == ILASTIK_FEATURE_IDS
        assert feats["Scales"][()].tolist() == ILASTIK_SCALES
        matrix = feats["SelectionMatrix"][()]
        assert matrix.dtype == bool and matrix.shape == (6, 7)
        assert np.argwhere(matrix).tolist() == [[0, 0], [0, 2], [3, 6], [5, 4]]
        assert feats["ComputeIn2d"][()].tolist() == [True] * 7
        assert feats["StorageVersion"][()] == b"0.1"
        # PixelClassificationSerializer: names, colours, label blocks (SerialBlockSlot)
        pc = f["PixelClassification"]
        assert pc["LabelNames"][()].tolist() == [b"Background", b"Nuclei", "Débris".encode()]
        assert pc["LabelColors"].dtype == np.int64 and pc["LabelColors"][()].tolist()[2] == [0x12, 0xAB, 0x9F]
        assert pc["PmapColors"][()].tolist() == pc["LabelColors"][()].tolist()
        assert pc["LabelNames"].attrs["isEmpty"] == np.False_
        assert pc["StorageVersion"][()] == b"0.1"
        blocks = pc["LabelSets/labels000"]
        assert list(blocks) == [f"block{i:04d}" for i in range(len(blocks))] and len(blocks) == 2  # 256-px grid
        rebuilt = np.zeros((120, 300), np.uint8)
        for block in blocks.values():
            assert block.dtype == np.uint8 and block.ndim == 3 and block.shape[2] == 1
            slicing = _string_to_slicing(block.attrs["blockSlice"])
            assert [s.stop - s.start for s in slicing] == list(block.shape) and slicing[2] == slice(0, 1)
            assert [t["key"] for t in json.loads(block.attrs["axistags"])["axes"]] == ["y", "x", "c"]
            rebuilt[slicing[:2]] = np.where(block[..., 0] > 0, block[..., 0], rebuilt[slicing[:2]])
        np.testing.assert_array_equal(rebuilt, a.labels())
        # Nothing pickled: the classifier, its factory and the bookmarks are left to ilastik's defaults.
        for key in ("Bookmarks", "ClassifierFactory", "ClassifierForests"):
            assert key not in pc
        assert "Prediction Export" in f


def test_image_in_the_project_folder_is_referenced_relatively(tmp_path):
    image = np.zeros((2, 40, 50), np.uint16)  # channel first
    tifffile.imwrite(tmp_path / "img.tif", image, photometric="minisblack")
    a = Annotations((40, 50))
    a.add_stroke(2, [[20, 25]], radius=4)
    ilp = export_ilp(tmp_path / "p.ilp", a, _selection(), tmp_path / "img.tif", channel_axis=0)
    with h5py.File(ilp, "r") as f:
        raw = f["Input Data/infos/lane0000/Raw Data"]
        assert raw["__class__"][()] == b"RelativeFilesystemDatasetInfo"
        assert raw["filePath"][()] == b"img.tif"
        assert [t["key"] for t in json.loads(raw["axistags"][()])["axes"]] == ["c", "y", "x"]
    project = import_ilp(ilp)
    assert project.image.location == str(tmp_path / "img.tif") and project.image.axes == "cyx"
    assert project.spatial_shape == (40, 50)


def test_in_memory_image_is_embedded_like_ilastiks_copy_into_project(tmp_path):
    image = np.random.default_rng(2).random((40, 50, 3)).astype(np.float32)
    a = Annotations((40, 50))
    a.add_stroke(1, [[5, 5], [30, 40]], radius=2)
    ilp = export_ilp(tmp_path / "p.ilp", a, _selection(), image, channel_axis=-1, nickname="my image")
    with h5py.File(ilp, "r") as f:
        raw = f["Input Data/infos/lane0000/Raw Data"]
        assert raw["__class__"][()] == b"ProjectInternalDatasetInfo" and raw["location"][()] == b"ProjectInternal"
        inner = raw["inner_path"][()].decode()
        assert inner.startswith("/Input Data/local_data/") and raw["filePath"][()].decode() == inner
        np.testing.assert_array_equal(f[inner][()], image)
        assert [t["key"] for t in json.loads(f[inner].attrs["axistags"])["axes"]] == ["y", "x", "c"]
    project = import_ilp(ilp)
    assert project.image.kind == "internal" and project.image.nickname == "my image"
    np.testing.assert_array_equal(annotations_from_ilp(project).labels(), a.labels())


def test_volume_with_slice_wise_features_round_trips(tmp_path):
    vol = np.zeros((20, 30, 40), np.uint8)
    np.save(tmp_path / "vol.npy", vol)
    a = Annotations(vol.shape)
    a.add_stroke(1, [[3, 5, 5], [3, 25, 35]], radius=2)
    a.add_stroke(2, [[5, 15, 10], [15, 15, 10]], radius=1.5, axes=(0, 1))
    ilp = export_ilp(
        tmp_path / "v.ilp", a, _selection(), tmp_path / "vol.npy", feature_mode="2d", block_shape=(8, 8, 8)
    )
    with h5py.File(ilp, "r") as f:
        assert f["FeatureSelections/ComputeIn2d"][()].tolist() == [True] * 7
        block = f["PixelClassification/LabelSets/labels000/block0000"]
        assert [t["key"] for t in json.loads(block.attrs["axistags"])["axes"]] == ["z", "y", "x", "c"]
        assert len(f["PixelClassification/LabelSets/labels000"]) > 5
    project = import_ilp(ilp)
    assert project.feature_mode == "2d" and project.spatial_shape == (20, 30, 40)
    np.testing.assert_array_equal(annotations_from_ilp(project).labels(), a.labels())
    ilp3 = export_ilp(tmp_path / "v3.ilp", a, _selection(), tmp_path / "vol.npy")
    assert import_ilp(ilp3).feature_mode == "3d"


def _write_ilastik_style(path, *, workflow=b"Pixel Classification", legacy=False):
    """A project as ilastik 1.4 writes it (see an .ilp saved by ilastik), including its pickled entries."""
    with h5py.File(path, "w") as f:
        f["ilastikVersion"] = b"1.4.0.post1"
        f["workflowName"] = workflow
        f["time"] = b"Mon Jan 25 19:23:55 2021"
        data = f.create_group("Input Data")
        data["Role Names"] = np.array([b"Raw Data", b"Prediction Mask"], dtype="S15")
        data["StorageVersion"] = "0.2"
        raw = data.create_group("infos/lane0000/Raw Data")
        data.create_group("infos/lane0000/Prediction Mask")
        raw["__class__"] = b"FilesystemDatasetInfo"
        raw["location"] = b"FileSystem"
        raw["filePath"] = b"../images/stack.h5/data" if not legacy else b"stack.h5/data"
        keys = "txyzc" if legacy else "zyxc"
        raw["axistags"] = json.dumps({"axes": [{"key": k, "typeFlags": 2, "resolution": 0} for k in keys]}).encode()
        raw["shape"] = np.array([1, 60, 50, 1, 1] if legacy else [4, 50, 60, 1], np.int64)
        raw["nickname"] = b"stack"
        raw["allowLabels"] = True
        feats = f.create_group("FeatureSelections")
        feats["FeatureIds"] = np.array(ILASTIK_FEATURE_IDS, dtype="S28")
        feats["Scales"] = np.array(ILASTIK_SCALES + [2.0])
        matrix = np.zeros((6, 8), bool)
        matrix[0, :3] = True
        matrix[2, 3] = True
        matrix[1, 0] = True  # LoG at 0.3: not a cell of our matrix
        matrix[4, 7] = True  # scale 2.0: not one of ours
        feats["SelectionMatrix"] = matrix
        feats["ComputeIn2d"] = np.zeros(8, bool)
        feats["StorageVersion"] = "0.1"
        pc = f.create_group("PixelClassification")
        pc["LabelNames"] = np.array([b"Label 1", b"Label 2"], dtype="S7")
        pc["LabelNames"].attrs["isEmpty"] = False
        pc["LabelColors"] = np.array([[255, 225, 25], [0, 130, 200]], np.int64)
        pc["PmapColors"] = pc["LabelColors"][()]
        pc["ClassifierFactory"] = b"ccopy_reg\n_reconstructor\np0\n(cos\nsystem\np1\n."  # never unpickled
        bookmark = pc.create_group("Bookmarks").create_dataset("0000", data=np.void(b"(lp0\n."))
        bookmark.attrs["version"] = 1
        lane = pc.create_group("LabelSets/labels000")
        if legacy:  # ilastik 1.2: 5D txyzc blocks without axistags; a block at t=2 is not read
            b0 = np.zeros((1, 7, 13, 1, 1), np.uint8)
            b0[0, 2:5, 3:9] = 2
            lane["block0000"] = b0
            lane["block0000"].attrs["blockSlice"] = "[0:1,42:49,30:43,0:1,0:1]"
            lane["block0001"] = np.ones((1, 5, 5, 1, 1), np.uint8)
            lane["block0001"].attrs["blockSlice"] = "[2:3,0:5,0:5,0:1,0:1]"
        else:
            tags = json.dumps({"axes": [{"key": k, "typeFlags": 2, "resolution": 0} for k in "zyxc"]})
            b0 = np.zeros((2, 10, 12, 1), np.uint8)
            b0[0, 1:4, 2:6] = 1
            b0[1, 5:9, 1:11] = 2
            lane["block0000"] = b0
            lane["block0000"].attrs["blockSlice"] = "[1:3,20:30,40:52,0:1]"
            lane["block0000"].attrs["axistags"] = tags
            lane["block0001"] = np.full((1, 3, 3, 1), 1, np.uint8)
            lane["block0001"].attrs["blockSlice"] = b"[3:4,0:3,57:60,0:1]"
            lane["block0001"].attrs["axistags"] = tags
        pc["StorageVersion"] = "0.1"


def test_import_a_project_laid_out_as_ilastik_writes_it(tmp_path):
    (tmp_path / "proj").mkdir()
    path = tmp_path / "proj" / "ilastik.ilp"
    _write_ilastik_style(path)
    project = import_ilp(path)
    assert [(c.name, c.color) for c in project.classes] == [("Label 1", "#ffe119"), ("Label 2", "#0082c8")]
    assert project.ilastik_version == "1.4.0.post1"
    expected = {("gaussian_smoothing", s) for s in (0.3, 0.7, 1.0)} | {("gaussian_gradient_magnitude", 1.6)}
    assert project.selection.selected == expected and project.feature_mode == "3d"
    assert sorted(project.dropped_features) == [("laplacian_of_gaussian", 0.3), ("structure_tensor_eigenvalues", 2.0)]
    assert project.image.location == str(tmp_path / "images" / "stack.h5" / "data")
    assert project.spatial_shape == (4, 50, 60)
    labels = annotations_from_ilp(project).labels()
    expected_labels = np.zeros((4, 50, 60), np.uint8)
    expected_labels[1, 21:24, 42:46] = 1
    expected_labels[2, 25:29, 41:51] = 2
    expected_labels[3, 0:3, 57:60] = 1
    np.testing.assert_array_equal(labels, expected_labels)


def test_import_an_old_5d_project_reads_the_first_time_point(tmp_path):
    _write_ilastik_style(tmp_path / "old.ilp", legacy=True)
    project = import_ilp(tmp_path / "old.ilp")
    assert project.spatial_shape == (50, 60) and len(project.label_blocks) == 1  # (y, x) of a txyzc image
    labels = annotations_from_ilp(project).labels()
    assert labels.shape == (50, 60) and int((labels == 2).sum()) == 18
    assert (labels[33:39, 44:47] == 2).all()  # stored x before y: x 42+2:42+5, y 30+3:30+9


def test_labels_far_apart_in_a_large_image_are_imported_block_by_block(tmp_path):
    """A 4x200000x200000 image labelled in two corners: the labels' bounding box would be 112 GiB of uint8."""
    path = tmp_path / "large.ilp"
    _write_ilastik_style(path)
    with h5py.File(path, "r+") as f:
        _replace(f, "Input Data/infos/lane0000/Raw Data/shape", np.array([4, 200_000, 200_000, 1], np.int64))
        _attr(f, "block0001", "blockSlice", "[3:4,199990:199993,199990:199993,0:1]")
    ann = annotations_from_ilp(import_ilp(path))
    assert ann.shape == (4, 200_000, 200_000) and len(ann.strokes) == 1
    coords, labels = ann.labelled((slice(3, 4), slice(199_990, 199_993), slice(199_990, 199_993)))
    assert len(labels) == 9 and set(labels.tolist()) == {1}
    assert ann.count_per_class().tolist() == [12 + 9, 40]


def test_overlapping_label_blocks_are_named(tmp_path):
    path = tmp_path / "overlap.ilp"
    _write_ilastik_style(path)
    with h5py.File(path, "r+") as f:
        _block(f, np.ones((2, 10, 12, 1), np.uint8))
        _attr(f, "block0001", "blockSlice", "[2:3,20:23,40:43,0:1]")
    with pytest.raises(IlpError, match=r"overlap.ilp: the label boxes overlap: voxel \(2, 20, 40\)"):
        annotations_from_ilp(import_ilp(path))


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda f: f.__delitem__("workflowName"), "no workflowName"),
        (
            lambda f: f.__setitem__("workflowName_", 1) or _replace(f, "workflowName", b"Object Classification"),
            "'Object Classification' project",
        ),
        (lambda f: f.__delitem__("PixelClassification"), "PixelClassification group is missing"),
        (lambda f: _attr(f, "block0000", "blockSlice", "[1:3,20:30,40:52]"), "disagree"),
        (lambda f: _attr(f, "block0000", "blockSlice", "[1:3,20:31,40:52,0:1]"), "does not match its blockSlice"),
        (lambda f: _attr(f, "block0000", "blockSlice", "1:3;20:30"), "not of the form"),
        (lambda f: _attr(f, "block0000", "axistags", "{not json"), "axistags cannot be read"),
        (lambda f: _block(f, np.full((2, 10, 12, 1), 7, np.uint8)), "holds label 7 but the project has 2 classes"),
        (lambda f: _block(f, np.zeros((2, 10, 12, 1), np.float32)), "whole numbers"),
        (lambda f: _replace(f, "FeatureSelections/SelectionMatrix", np.zeros((6, 3), bool)), "SelectionMatrix"),
        (lambda f: _replace(f, "FeatureSelections/FeatureIds", np.array([b"Sobel"] * 6)), "unknown feature 'Sobel'"),
        (lambda f: _replace(f, "PixelClassification/LabelNames", np.array([b"   ", b"x"])), "class name"),
        (lambda f: _replace(f, "Input Data/infos/lane0000/Raw Data/shape", np.array([5], np.int64)), "do not fit"),
    ],
)
def test_foreign_or_damaged_projects_get_a_clear_error(tmp_path, damage, match):
    path = tmp_path / "p.ilp"
    _write_ilastik_style(path)
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(IlpError, match=match):
        import_ilp(path)


def _replace(f, key, value):
    attrs = dict(f[key].attrs)
    del f[key]
    f[key] = value
    f[key].attrs.update(attrs)


def _attr(f, block, name, value):
    f[f"PixelClassification/LabelSets/labels000/{block}"].attrs[name] = value


def _block(f, data):
    _replace(f, "PixelClassification/LabelSets/labels000/block0000", data)


def test_files_that_are_not_projects(tmp_path):
    (tmp_path / "notes.ilp").write_text("not an HDF5 file")
    with pytest.raises(IlpError, match="not a readable HDF5 file"):
        import_ilp(tmp_path / "notes.ilp")
    _write_ilastik_style(tmp_path / "p.ilp")
    data = (tmp_path / "p.ilp").read_bytes()
    (tmp_path / "cut.ilp").write_bytes(data[: len(data) // 3])  # an interrupted copy
    with pytest.raises(IlpError):
        import_ilp(tmp_path / "cut.ilp")
    with pytest.raises(FileNotFoundError):
        import_ilp(tmp_path / "missing.ilp")


def test_export_refuses_what_ilastik_could_not_open_and_writes_nothing(tmp_path, tiff_outside):
    a = _annotations_2d()
    target = tmp_path / "out" / "p.ilp"
    target.parent.mkdir()
    cases = [
        (dict(image=np.zeros((120, 301))), "spatial shape"),
        (dict(image=np.zeros((3, 120, 300))), "channel_axis"),
        (dict(image=np.zeros((3, 120, 300)), channel_axis=5), "channel_axis=5"),
        (dict(image=tmp_path / "cells.png"), "ilastik cannot be pointed at"),
        (dict(image=tiff_outside, feature_mode="4d"), "feature_mode"),
        (dict(image=tiff_outside, selection=FeatureSelection.none()), "empty"),
        (dict(image=f"{tmp_path}/x.h5/data"), "x.h5"),
    ]
    for kwargs, match in cases:
        kwargs = dict(kwargs)
        selection = kwargs.pop("selection", _selection())
        with pytest.raises((ValueError, OSError), match=match):
            export_ilp(target, a, selection, **kwargs)
    assert os.listdir(target.parent) == []


# ---------------------------------------------------------------------- crafted projects: any value anywhere
_LANE = "Input Data/infos/lane0000/Raw Data"
_BLOCKS = "PixelClassification/LabelSets/labels000"
ILP_DATASETS = [
    "workflowName", "ilastikVersion", f"{_LANE}/axistags", f"{_LANE}/shape", f"{_LANE}/filePath", f"{_LANE}/__class__",
    f"{_LANE}/nickname", "FeatureSelections/FeatureIds", "FeatureSelections/Scales", "FeatureSelections/SelectionMatrix",
    "FeatureSelections/ComputeIn2d", "PixelClassification/LabelNames", "PixelClassification/LabelColors",
    f"{_BLOCKS}/block0000", f"{_BLOCKS}/block0001",
]  # fmt: skip
ILP_ATTRIBUTES = [
    (f"{_BLOCKS}/block0000", "blockSlice"), (f"{_BLOCKS}/block0001", "blockSlice"),
    (f"{_BLOCKS}/block0000", "axistags"), ("PixelClassification/LabelNames", "isEmpty"),
]  # fmt: skip
_ARRAY_DTYPES = st.sampled_from(["u1", "i8", "u8", "f8", "f4", "?", "S8"])
h5_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.binary(max_size=24),
    st.text(max_size=24).filter(lambda s: "\x00" not in s),
    st.sampled_from([b"[0:2,0:10,0:12,0:1]", b"[1:3,20:30,40:52,0:1]", b"[0:1,9999999:10000002,0:3,0:1]"]),
    st.tuples(_ARRAY_DTYPES, st.lists(st.integers(0, 6), min_size=0, max_size=4), st.integers(0, 2**32)).map(
        lambda t: (np.random.default_rng(t[2]).integers(0, 256, t[1]) % 4).astype(t[0])
    ),
)
blockslice_texts = st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 12)), min_size=1, max_size=5).map(
    lambda spans: "[" + ",".join(f"{a}:{a + n}" for a, n in spans) + "]"
)


def _as_h5(value):
    """Bytes as a fixed-length string: h5py's variable-length strings cannot hold NUL."""
    return np.bytes_(value) if isinstance(value, bytes) else value


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(
    datasets=st.lists(st.tuples(st.sampled_from(ILP_DATASETS), h5_values | st.none()), max_size=3),
    attributes=st.lists(
        st.tuples(st.sampled_from(ILP_ATTRIBUTES), h5_values | blockslice_texts | st.none()), max_size=2
    ),
)
def test_crafted_projects_import_or_raise_ilp_error(tmp_path_factory, datasets, attributes):
    """Any value (or none) in the datasets and attributes the importer reads: a project and its annotations come out,
    or IlpError naming the problem; nothing else."""
    path = tmp_path_factory.mktemp("crafted") / "p.ilp"
    _write_ilastik_style(path)
    with h5py.File(path, "r+") as f:
        for key, value in datasets:
            if key in f:
                del f[key]
            if value is not None:
                f[key] = _as_h5(value)
        for (key, name), value in attributes:
            if key in f:
                if value is None:
                    f[key].attrs.pop(name, None)
                else:
                    f[key].attrs[name] = _as_h5(value)
    try:
        project = import_ilp(path)
        ann = annotations_from_ilp(project, shape=project.spatial_shape or (64, 64))
    except IlpError:
        return
    # every labelled voxel of the blocks, once
    assert ann.count_per_class().sum() == sum(int((block > 0).sum()) for _, block in project.label_blocks)
