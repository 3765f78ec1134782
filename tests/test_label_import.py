"""Importing label images and masks as annotation entries: round trips, editing, saving, files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from ilastik_widget.core.annotations import Annotations, LabelImport
from ilastik_widget.io.labels import fit_label_shape, read_labels


def _discs(shape, centres, radius, labels):
    """A label image with one disc (2D) or ball (3D) per centre."""
    grid = np.indices(shape)
    out = np.zeros(shape, np.uint8)
    for c, lab in zip(centres, labels):
        d2 = sum((g - ci) ** 2 for g, ci in zip(grid, c))
        out[d2 <= radius * radius] = lab
    return out


@pytest.fixture
def label_image():
    return _discs((60, 80), [(15, 20), (40, 60), (45, 15)], 9, [1, 2, 3])


def test_dense_label_image_round_trips_with_its_class_numbering(label_image):
    a = Annotations(label_image.shape, classes=["bg", "cells", "debris"])
    sid = a.import_labels(label_image, source="earlier.tif")
    np.testing.assert_array_equal(a.labels(), label_image)
    assert a.count_per_class().tolist() == [int((label_image == k).sum()) for k in (1, 2, 3)]
    entry = a.get_stroke(sid)
    assert isinstance(entry, LabelImport) and entry.source == "earlier.tif" and entry.label == 0
    assert entry.n_voxels == int((label_image > 0).sum())
    # Stored as runs along rows: far fewer numbers than voxels.
    assert len(entry.starts) < entry.n_voxels / 5


def test_import_into_a_region_lands_there_and_nowhere_else(label_image):
    a = Annotations((100, 120))
    box = (label_image[:30, :40] > 0).astype(np.uint8) * 2
    region = (slice(50, 80), slice(70, 110))
    a.import_labels(box, region=region)
    whole = a.labels()
    np.testing.assert_array_equal(whole[region], box)
    assert whole.sum() == box.sum()
    np.testing.assert_array_equal(a.labels((slice(55, 75), slice(60, 100))), whole[55:75, 60:100])


def test_masks_one_per_class_as_a_list_or_a_boolean_stack(label_image):
    masks = [label_image == k for k in (1, 2, 3)]
    for given in (masks, np.stack(masks)):
        a = Annotations(label_image.shape, classes=["a", "b", "c"])
        a.import_labels(given)
        np.testing.assert_array_equal(a.labels(), label_image)
    # 0/1 integer masks (as a TIFF stores them) need masks=True.
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(np.stack(masks).astype(np.uint8), masks=True)
    np.testing.assert_array_equal(a.labels(), label_image)


def test_one_mask_with_a_class(label_image):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(label_image > 0, label=3)
    np.testing.assert_array_equal(a.labels(), np.where(label_image > 0, 3, 0))


def test_volume_import_round_trips():
    vol = _discs((12, 30, 34), [(6, 10, 10), (5, 20, 24)], 5, [2, 1])
    a = Annotations(vol.shape)
    a.import_labels(vol)
    np.testing.assert_array_equal(a.labels(), vol)
    coords, labels = a.labelled((slice(0, 6),))
    assert np.all(coords[:, 0] < 6) and len(labels) == int((vol[:6] > 0).sum())


def test_label_boxes_are_one_entry_equal_to_the_dense_import(label_image):
    boxes = [
        ((slice(0, 30), slice(0, 40)), label_image[:30, :40]),
        ((slice(30, 60), slice(40, 80)), label_image[30:, 40:]),
    ]
    dense = label_image.copy()
    dense[:30, 40:] = 0
    dense[30:, :40] = 0
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    sid = a.import_label_boxes(boxes, source="blocks.ilp")
    assert [s.id for s in a.strokes] == [sid] and a.get_stroke(sid).source == "blocks.ilp"
    np.testing.assert_array_equal(a.labels(), dense)
    b = Annotations(label_image.shape, classes=["a", "b", "c"])
    b.import_labels(dense)
    assert a.count_per_class().tolist() == b.count_per_class().tolist()
    assert a.undo() and not a.labels().any()


def test_label_boxes_far_apart_in_a_large_image_cost_their_own_memory():
    """Two 3x3 boxes at opposite corners of a 4x200000x200000 volume: the bounding box would be 149 GiB."""
    a = Annotations((4, 200_000, 200_000))
    corner = np.full((1, 3, 3), 2, np.uint8)
    a.import_label_boxes([((slice(0, 1), slice(0, 3), slice(0, 3)), corner * 0 + 1),
                          ((slice(3, 4), slice(199_997, 200_000), slice(199_997, 200_000)), corner)])  # fmt: skip
    coords, labels = a.labelled()
    assert len(labels) == 18 and labels.tolist() == [1] * 9 + [2] * 9
    assert coords[-1].tolist() == [3, 199_999, 199_999]


def test_overlapping_or_empty_label_boxes_are_refused_and_change_nothing(label_image):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    one = np.ones((5, 5), np.uint8)
    with pytest.raises(ValueError, match=r"the label boxes overlap: voxel \(2, 2\) is labelled by two of them"):
        a.import_label_boxes([((slice(0, 5), slice(0, 5)), one), ((slice(2, 7), slice(2, 7)), one * 2)])
    with pytest.raises(ValueError, match="nothing to import"):
        a.import_label_boxes([((slice(0, 5), slice(0, 5)), one * 0)])
    with pytest.raises(ValueError, match="classes up to 4"):
        a.import_label_boxes([((slice(0, 5), slice(0, 5)), one * 4)])
    assert a.strokes == [] and not a.can_undo
    # boxes that overlap only where one of them is unlabelled are fine
    half = np.zeros((5, 5), np.uint8)
    half[:, :2] = 3
    a.import_label_boxes([((slice(0, 5), slice(0, 5)), half), ((slice(0, 5), slice(2, 7)), one)])
    assert a.count_per_class().tolist() == [25, 0, 10]


def test_imported_labels_are_erased_painted_over_undone_and_removed_like_strokes(label_image):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.add_stroke(1, [[5, 5], [5, 70]], radius=2)  # before the import: the import wins where they overlap
    before = a.labels().copy()
    sid = a.import_labels(label_image)
    expected = np.where(label_image > 0, label_image, before)
    np.testing.assert_array_equal(a.labels(), expected)
    a.add_stroke(0, [[40, 60]], radius=4, erase=True)
    lab = a.labels()
    assert lab[40, 60] == 0 and lab[40, 66] == 2
    a.add_stroke(1, [[15, 20]], radius=3)
    assert a.labels()[15, 20] == 1 and a.labels()[45, 15] == 3
    assert a.undo() and a.undo()  # the stroke and the eraser
    np.testing.assert_array_equal(a.labels(), expected)
    a.remove_stroke(sid)
    np.testing.assert_array_equal(a.labels(), before)
    assert a.undo()
    np.testing.assert_array_equal(a.labels(), expected)
    assert a.undo()  # the import itself
    np.testing.assert_array_equal(a.labels(), before)
    assert a.redo()
    np.testing.assert_array_equal(a.labels(), expected)
    assert a.count_per_class().tolist() == [int((expected == k).sum()) for k in (1, 2, 3)]


def test_removing_a_class_drops_and_renumbers_imported_voxels(label_image):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(label_image)
    a.remove_class(2)
    np.testing.assert_array_equal(a.labels(), np.select([label_image == 1, label_image == 3], [1, 2], 0))
    a.remove_class(1)
    a.remove_class(1)
    assert a.strokes == [] and a.labels().sum() == 0


def test_round_trip_through_json_and_through_npy_files(tmp_path, label_image):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.add_stroke(1, [[30, 5], [30, 75]], radius=1.5)
    a.import_labels(label_image, source="x.tif")
    a.add_stroke(0, [[15, 20]], radius=3, erase=True)
    # Lists inside JSON.
    b = Annotations.from_dict(json.loads(json.dumps(a.to_dict())))
    np.testing.assert_array_equal(b.labels(), a.labels())
    assert [type(s) for s in b.strokes] == [type(s) for s in a.strokes] and b.strokes[1].source == "x.tif"
    # Named arrays beside the JSON (as a project file stores them), read back without pickle.
    arrays: dict = {}
    doc = json.dumps(a.to_dict(arrays))
    assert "import2_starts" in doc and len(doc) < 2000
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr, allow_pickle=False)
    loaded = {p.stem: np.load(p, allow_pickle=False) for p in tmp_path.glob("*.npy")}
    c = Annotations.from_dict(json.loads(doc), arrays=loaded)
    np.testing.assert_array_equal(c.labels(), a.labels())
    assert c.count_per_class().tolist() == a.count_per_class().tolist()
    assert c.add_stroke(1, [[1, 1]]) == 4  # ids go on after the saved ones


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda r: r.update(starts=[5, 3], lengths=[2, 2], values=[1, 1]), "ascending, disjoint"),
        (lambda r: r.update(starts=[0, 1], lengths=[2, 2], values=[1, 1]), "ascending, disjoint"),
        (lambda r: r.update(starts=[4799], lengths=[2], values=[1]), "inside the image"),
        (lambda r: r.update(starts=[0], lengths=[0], values=[1]), "ascending, disjoint"),
        (lambda r: r.update(values=[9] * len(r["values"])), "classes must be 1..3"),
        (lambda r: r.update(starts=[0.5] * len(r["starts"])), "whole numbers"),
        (lambda r: r.update(lengths=r["lengths"][:-1]), "equal, non-zero length"),
        (lambda r: r.update(starts={"array": "nope"}), "missing"),
    ],
)
def test_crafted_import_records_are_refused(label_image, change, match):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(label_image)
    d = a.to_dict()
    change(d["strokes"][0])
    with pytest.raises(ValueError, match=match):
        Annotations.from_dict(d)


@pytest.mark.parametrize(
    "labels,kwargs,match",
    [
        (np.zeros((60, 81), np.uint8), {}, "shape"),
        (np.zeros((60, 80, 1), np.uint8), {}, "shape"),
        (np.full((60, 80), 4, np.uint8), {}, "up to 4 but there are 3 classes"),
        (np.full((60, 80), -1, np.int16), {}, "negative"),
        (np.ones((60, 80), np.float32), {}, "integer or boolean dtype"),
        (np.full((60, 80), np.nan), {}, "NaN"),
        (np.zeros((60, 80), np.uint8), {}, "nothing to import"),
        ([np.ones((60, 80), bool)] * 4, {}, "4 masks"),
        ([np.ones((60, 80), bool), np.ones((60, 80), bool)], {}, "overlaps"),
        (np.ones((60, 80), bool), {"label": 4}, "unknown class"),
        (np.ones((60, 80), bool), {"region": (slice(0, 10),)}, "shape"),
        (np.ones((10, 80), bool), {"region": (slice(55, 65),)}, "outside the image"),
    ],
)
def test_bad_imports_name_the_problem_and_change_nothing(label_image, labels, kwargs, match):
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.add_stroke(1, [[5, 5]], radius=2)
    before, version = a.labels().copy(), a.version
    if "label" not in kwargs and isinstance(labels, np.ndarray) and labels.dtype == bool and labels.ndim == 2:
        kwargs = dict(kwargs, label=1)
    with pytest.raises(ValueError, match=match):
        a.import_labels(labels, **kwargs)
    assert a.version == version and len(a.strokes) == 1
    np.testing.assert_array_equal(a.labels(), before)


# ---------------------------------------------------------------------- files
def test_read_labels_from_tiff_with_singleton_axes(tmp_path, label_image):
    path = tmp_path / "labels.tif"
    tifffile.imwrite(path, label_image[None, :, :, None])  # (1, H, W, 1) as some exporters write
    got = read_labels(path, shape=label_image.shape)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, label_image)
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(got, source=str(path))
    np.testing.assert_array_equal(a.labels(), label_image)
    with pytest.raises(ValueError, match=r"does not fit the image's shape \(60, 81\)"):
        read_labels(path, shape=(60, 81))


def test_read_labels_from_zarr_array_and_group(tmp_path, label_image):
    zarr.save_array(str(tmp_path / "labels.zarr"), label_image.astype(np.uint16))
    got = read_labels(tmp_path / "labels.zarr", shape=label_image.shape)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, label_image)
    group = zarr.open_group(str(tmp_path / "annotations.zarr"), mode="w")
    group.create_array("nuclei", data=(label_image == 2).astype(np.uint8))
    group.create_array("other", data=label_image)
    nuclei = read_labels(tmp_path / "annotations.zarr", path_in_file="nuclei", shape=label_image.shape)
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(nuclei, label=2)
    np.testing.assert_array_equal(a.labels(), np.where(label_image == 2, 2, 0))
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.zarr")


def test_read_masks_stack_from_tiff(tmp_path, label_image):
    stack = np.stack([(label_image == k).astype(np.uint8) for k in (1, 2, 3)])
    tifffile.imwrite(tmp_path / "masks.tif", stack, photometric="minisblack")
    got = read_labels(tmp_path / "masks.tif", shape=label_image.shape, masks=True)
    a = Annotations(label_image.shape, classes=["a", "b", "c"])
    a.import_labels(got, masks=True)
    np.testing.assert_array_equal(a.labels(), label_image)


def test_fit_label_shape_drops_only_axes_of_length_one():
    assert fit_label_shape(np.zeros((1, 5, 1, 6)), (5, 6)).shape == (5, 6)
    assert fit_label_shape(np.zeros((5, 6)), (1, 5, 6)).shape == (1, 5, 6)
    assert fit_label_shape(np.zeros((3, 1, 5, 6)), (5, 6), masks=True).shape == (3, 5, 6)
    with pytest.raises(ValueError, match="does not fit"):
        fit_label_shape(np.zeros((2, 5, 6)), (5, 6))
    with pytest.raises(ValueError, match="no stack of masks"):
        fit_label_shape(np.zeros(5), (5,), masks=True)
