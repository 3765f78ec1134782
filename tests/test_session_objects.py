"""Objects and class insight of a trained Session, against synthetic images with known cells; tables on disk.

The sessions are trained on labels taken from the truth (2% of the pixels, imported as a label image, as a user
importing an earlier annotation would), so the classifier learns the cells' edges and the objects can be compared
with the truth's connected components: the same count, each cell's area within 12% (median within 5%) and its
centroid within 3 pixels (median within 0.6; the worst is an elongated cell whose thin end is lost).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from ilastik_widget.core.insight import FRACTION_BATCH
from ilastik_widget.core.object_blocks import objects_blockwise
from ilastik_widget.core.objects import smoothing_halo
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import synthetic_cells
from ilastik_widget.io.sources import open_source
from ilastik_widget.io.tables import objects_metadata, read_table, sidecar_path, table_metadata, write_table
from ilastik_widget.io.writers import write_ome_zarr

AREA_TOLERANCE, MEDIAN_AREA_TOLERANCE, CENTROID_TOLERANCE, MEDIAN_CENTROID_TOLERANCE = 0.12, 0.05, 3.0, 0.6


def _train_from_truth(session: Session, truth: np.ndarray, fraction: float = 0.02) -> Session:
    sparse = np.where(np.random.default_rng(0).random(truth.shape) < fraction, truth, 0).astype(np.uint8)
    session.import_labels(sparse, source="2% of the truth")
    return session.train()


@pytest.fixture(scope="module")
def cells_2d():
    image, truth = synthetic_cells((256, 256), seed=2, fill=0.15)
    session = _train_from_truth(Session(image, block_shape=(48, 48)), truth)
    yield session, image, truth
    session.close()


@pytest.fixture(scope="module")
def cells_3d(tmp_path_factory):
    """A volume stored as OME-Zarr with anisotropic voxel sizes in micrometers, opened as a source."""
    image, truth = synthetic_cells((40, 80, 80), seed=1, fill=0.1)
    path = tmp_path_factory.mktemp("zarr") / "cells.ome.zarr"
    write_ome_zarr(image, path, axes="zyx", scale=(2.0, 0.5, 0.5), units="micrometer")
    session = _train_from_truth(Session(open_source(str(path))), truth)
    yield session, image, truth
    session.close()


def _assert_matches_truth(objects, truth):
    truth_labels, n_truth = ndi.label(truth == 2)
    assert len(objects) == n_truth
    truth_area = np.bincount(truth_labels.ravel())[1:]
    truth_centroid = np.array(ndi.center_of_mass(truth == 2, truth_labels, range(1, n_truth + 1)))
    matched, errors, shifts = [], [], []
    for row in objects.table.itertuples():
        ids, counts = np.unique(truth_labels[objects.labels == row.label], return_counts=True)
        best = int(ids[np.argmax(counts)])
        assert best > 0, f"object {row.label} lies mostly on background"
        matched.append(best)
        errors.append(abs(row.area / truth_area[best - 1] - 1))
        centroid = [getattr(objects.table, f"centroid-{k}")[row.Index] for k in range(truth.ndim)]
        shifts.append(np.linalg.norm(np.subtract(centroid, truth_centroid[best - 1])))
    assert sorted(matched) == list(range(1, n_truth + 1))  # one object per cell
    assert max(errors) < AREA_TOLERANCE and np.median(errors) < MEDIAN_AREA_TOLERANCE, errors
    assert max(shifts) < CENTROID_TOLERANCE and np.median(shifts) < MEDIAN_CENTROID_TOLERANCE, shifts


def test_objects_of_a_trained_session_match_the_truth_2d(cells_2d):
    session, image, truth = cells_2d
    objects = session.objects(2)
    _assert_matches_truth(objects, truth)
    t = objects.table
    assert objects.offset == (0, 0) and objects.labels.shape == truth.shape and not t["clipped"].any()
    for row in t.itertuples():  # intensities are the image's, per object
        values = image[objects.labels == row.label]
        assert row.intensity_mean == pytest.approx(values.mean(), rel=1e-6)
        assert (row.intensity_min, row.intensity_max) == (values.min(), values.max())
    assert "area_physical" not in t and objects.units is None  # an array: no voxel sizes
    assert objects.params.to_dict()["smooth"] == [1.0, 1.0]


def test_objects_of_a_volume_match_the_truth_with_physical_units(cells_3d, tmp_path):
    session, image, truth = cells_3d
    assert session.voxel_size == (2.0, 0.5, 0.5)
    objects = session.objects(2)
    _assert_matches_truth(objects, truth)
    t = objects.table
    np.testing.assert_allclose(t["area_physical"], t["area"] * 0.5)
    np.testing.assert_allclose(t["centroid_physical-0"], t["centroid-0"] * 2.0)
    assert objects.units == ("micrometer",) * 3
    path = write_table(objects, tmp_path / "cells.parquet", metadata={"image": "cells.ome.zarr"})
    table, meta = read_table(path)
    pd.testing.assert_frame_equal(table, t)
    assert meta["voxel_size"] == [2.0, 0.5, 0.5] and meta["units"] == ["micrometer"] * 3
    assert meta["columns"]["area_physical"]["unit"] == "micrometer^3"
    assert meta["columns"]["area"]["unit"] == "voxel" and meta["image"] == "cells.ome.zarr"


# ---------------------------------------------------------------------- a region is the whole image cropped
def _assert_region_is_the_whole_cropped(whole, part, region, shape, exact_mask):
    """Objects inside the region that touch none of its sides within the image are the whole image's objects (same
    voxels, same row but the label); the others are marked clipped; with no filters the masks are equal."""
    crop = whole.labels[region]
    lo = np.array([r.start for r in region])
    hi = np.array([r.stop for r in region])
    assert part.offset == tuple(lo) and part.labels.shape == crop.shape
    ndim = len(shape)
    interior_lo, interior_hi = lo > 0, hi < np.array(shape)
    w = whole.table
    starts = w[[f"bbox-{k}" for k in range(ndim)]].to_numpy()
    stops = w[[f"bbox-{ndim + k}" for k in range(ndim)]].to_numpy()
    within = np.all(starts >= lo, axis=1) & np.all(stops <= hi, axis=1)
    touches = np.any((starts == lo) & interior_lo, axis=1) | np.any((stops == hi) & interior_hi, axis=1)
    inside = np.flatnonzero(within & ~touches)
    columns = [c for c in w.columns if c != "label"]
    for i in inside:
        label = int(w["label"].iloc[i])
        first = np.argwhere(crop == label)[0]
        own = int(part.labels[tuple(first)])
        assert own > 0
        np.testing.assert_array_equal(part.labels == own, crop == label)
        row_part = part.table[part.table["label"] == own][columns].reset_index(drop=True)
        row_whole = w.iloc[[i]][columns].reset_index(drop=True)
        pd.testing.assert_frame_equal(row_part, row_whole, check_exact=False, rtol=1e-12)
    assert (~part.table["clipped"]).sum() == len(inside)
    p_starts = part.table[[f"bbox-{k}" for k in range(ndim)]].to_numpy()
    p_stops = part.table[[f"bbox-{ndim + k}" for k in range(ndim)]].to_numpy()
    p_touch = np.any((p_starts == lo) & interior_lo, axis=1) | np.any((p_stops == hi) & interior_hi, axis=1)
    np.testing.assert_array_equal(part.table["clipped"].to_numpy(), p_touch)
    if exact_mask:
        np.testing.assert_array_equal(part.labels > 0, crop > 0)
    return len(inside)


REGIONS_2D = [
    (slice(40, 140), slice(60, 200)),
    (slice(0, 100), slice(150, 256)),  # at two sides of the image
    (slice(100, 256), slice(0, 256)),
]
PARAMS = [
    dict(),
    dict(smooth=0, min_size=0),
    dict(threshold=0.7, low=0.4, min_size=30),
    dict(split=True),
    dict(smooth=(2.0, 0.5), max_size=700),
]


@pytest.mark.parametrize("kwargs", PARAMS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_a_region_is_the_whole_image_cropped_2d(cells_2d, monkeypatch, kwargs):
    session, _, truth = cells_2d
    whole = session.objects(2, **kwargs)
    asked = []
    predict = session.predict

    def recording_predict(region=None):
        asked.append(region)
        return predict(region)

    monkeypatch.setattr(session, "predict", recording_predict)
    exact_mask = kwargs == dict(smooth=0, min_size=0)
    n_inside = 0
    for region in REGIONS_2D:
        part = session.objects(2, region=region, **kwargs)
        n_inside += _assert_region_is_the_whole_cropped(whole, part, region, truth.shape, exact_mask)
        # Only the region and the smoothing's reach were predicted.
        halo = smoothing_halo(part.params.smooth)
        assert asked[-1] == tuple(
            slice(max(r.start - h, 0), min(r.stop + h, n)) for r, h, n in zip(region, halo, truth.shape)
        )
    assert n_inside >= 5  # the comparison covers whole objects


def test_a_region_of_a_volume_is_the_whole_volume_cropped(cells_3d):
    session, _, truth = cells_3d
    region = (slice(4, 40), slice(10, 80), slice(0, 60))  # three sides inside the image
    for kwargs in (dict(), dict(split=True, min_size=20)):
        whole = session.objects(2, **kwargs)
        part = session.objects(2, region=region, **kwargs)
        assert _assert_region_is_the_whole_cropped(whole, part, region, truth.shape, False) >= 2


def test_intensities_of_every_channel_of_a_region_with_the_channel_axis_first():
    image, truth = synthetic_cells((128, 128), seed=0, fill=0.15)
    stack = np.stack([image, 2 * image + 1, truth.astype(np.float32)])  # (channel, y, x)
    session = _train_from_truth(Session(stack, channel_axis=0), truth, fraction=0.05)
    region = (slice(8, 128), slice(0, 120))
    objects = session.objects(2, region=region)
    assert len(objects) >= 3
    for i, label in enumerate(objects.table["label"]):
        inside = objects.labels == label
        for c in range(3):
            values = stack[c][region][inside]
            row = objects.table.iloc[i]
            assert row[f"intensity_mean-{c}"] == pytest.approx(values.mean(), rel=1e-6)
            assert (row[f"intensity_min-{c}"], row[f"intensity_max-{c}"]) == (values.min(), values.max())
    assert (objects.table["intensity_mean-2"] > 1.8).all()  # the truth channel: the objects are cells
    session.close()


# ---------------------------------------------------------------------- bad input
@pytest.fixture()
def small_session():
    image, truth = synthetic_cells((64, 64), seed=3, fill=0.3)
    session = _train_from_truth(Session(image), truth, fraction=0.05)
    yield session
    session.close()


def _state(session):
    labels = session.labels().tobytes()
    return session.generation, session.annotations.version, len(session.strokes), session.n_classes, labels


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(label=3), ValueError, r"label must be a class 1\.\.2"),
        (dict(label=0), ValueError, "label must be a class"),
        (dict(threshold=1.2), ValueError, r"threshold must be in \[0, 1\]"),
        (dict(threshold=-0.5), ValueError, r"threshold must be in \[0, 1\]"),
        (dict(low=-0.1), ValueError, r"low must be in \[0, 1\]"),
        (dict(threshold=0.4, low=0.6), ValueError, r"low \(0\.6\) must not be above threshold \(0\.4\)"),
        (dict(min_size=100, max_size=50), ValueError, r"min_size \(100\) is larger than max_size \(50\)"),
        (dict(smooth=(1, 1, 1)), ValueError, "smooth"),
        (dict(region=(slice(0, 100),)), ValueError, "region"),
    ],
)
def test_bad_parameters_name_the_problem_and_change_nothing(small_session, kwargs, error, match):
    before = _state(small_session)
    kwargs = dict(kwargs)
    label = kwargs.pop("label", 2)
    with pytest.raises(error, match=match):
        small_session.objects(label, **kwargs)
    assert _state(small_session) == before


def test_a_class_without_prediction_and_an_untrained_session_are_refused(small_session):
    small_session.add_class("Mitochondria")  # after the training: no labels, no prediction
    before = _state(small_session)
    with pytest.raises(ValueError, match=r"class 3 \('Mitochondria'\) has no prediction yet: .*train again"):
        small_session.objects(3)
    assert _state(small_session) == before
    untrained = Session(np.zeros((32, 32), np.float32))
    before = _state(untrained)
    with pytest.raises(RuntimeError, match=r"class 2 has no prediction yet: the session is not trained.*train\(\)"):
        untrained.objects(2)
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.class_fractions()
    assert _state(untrained) == before
    untrained.close()


# ---------------------------------------------------------------------- class insight
def test_labelled_voxels_per_class_name_every_class(small_session):
    table = small_session.labelled_per_class()
    dense = np.bincount(small_session.labels().ravel(), minlength=3)
    assert table["label"].tolist() == [1, 2] and table["name"].tolist() == ["Background", "Foreground"]
    assert table["labelled"].tolist() == dense[1:].tolist() and dense[1:].min() > 0
    assert table["fraction"].sum() == pytest.approx(1.0)
    small_session.add_class("Nuclei", "#ff00ff")
    table = small_session.labelled_per_class()
    assert table.iloc[2].to_dict() == {"label": 3, "name": "Nuclei", "color": "#ff00ff", "labelled": 0, "fraction": 0}


def test_class_fractions_of_a_region_in_batches_of_blocks(cells_2d):
    session, _, truth = cells_2d
    assert len(session.blocks_for(None)) > FRACTION_BATCH  # several batches
    whole = session.class_fractions()
    p = session.predict()
    counts = np.bincount(np.argmax(p, axis=-1).ravel(), minlength=2)
    assert whole["voxels"].tolist() == counts.tolist()
    np.testing.assert_allclose(whole["fraction"], counts / counts.sum())
    assert whole["fraction"].iloc[1] == pytest.approx((truth == 2).mean(), abs=0.02)  # the cells' share
    view = (slice(30, 190), slice(17, 250))
    in_view = session.class_fractions(view)
    counts = np.bincount(np.argmax(p[view], axis=-1).ravel(), minlength=2)
    assert in_view["voxels"].tolist() == counts.tolist() and in_view["name"].tolist() == ["Background", "Foreground"]
    soft = session.class_fractions(view, method="mean")
    np.testing.assert_allclose(soft["fraction"], p[view].reshape(-1, 2).mean(axis=0), rtol=1e-5)
    with pytest.raises(ValueError, match="method must be one of 'argmax', 'mean'"):
        session.class_fractions(view, method="median")


# ---------------------------------------------------------------------- tables on disk
def test_tables_round_trip_as_csv_and_parquet_with_their_metadata(cells_2d, tmp_path):
    session, _, _ = cells_2d
    objects = session.objects(2, threshold=0.6, low=0.4, split=True, region=(slice(0, 128), slice(0, 256)))
    import pyarrow.parquet as pq

    for name in ("out/cells.csv", "out/cells.parquet"):
        path = write_table(objects, tmp_path / name, metadata={"class_name": "Foreground"})
        table, meta = read_table(path)
        pd.testing.assert_frame_equal(table, objects.table)
        assert meta["params"] == {
            "label": 2, "threshold": 0.6, "low": 0.4, "min_size": 10, "max_size": None,
            "smooth": [1.0, 1.0], "split": 2.0, "voxel_size": None,
        }  # fmt: skip
        assert meta["offset"] == [0, 0] and meta["shape"] == [128, 256] and meta["n_objects"] == len(objects)
        assert meta["columns"]["centroid-1"]["unit"] == "pixel" and meta["class_name"] == "Foreground"
        assert meta["columns"]["clipped"]["description"].startswith("touches a side")
    side = json.loads(sidecar_path(tmp_path / "out/cells.csv").read_text())
    assert side["format"] == "ilastik_widget.objects_table"
    schema = pq.read_schema(tmp_path / "out/cells.parquet")
    assert json.loads(schema.metadata[b"ilastik_widget"])["n_objects"] == len(objects)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cells.csv", "cells.csv.json", "cells.parquet"]


def test_tables_refuse_unknown_formats_and_metadata_that_is_not_json(tmp_path):
    frame = pd.DataFrame({"label": [1, 2], "area": [10, 20]})
    with pytest.raises(ValueError, match=r"must end in \.csv, \.parquet, \.pq"):
        write_table(frame, tmp_path / "cells.xlsx")
    with pytest.raises(ValueError, match="JSON-able"):
        write_table(frame, tmp_path / "cells.csv", metadata={"when": object()})
    with pytest.raises(ValueError, match="must be an Objects or a pandas DataFrame"):
        write_table({"label": [1]}, tmp_path / "cells.csv")
    assert list(tmp_path.iterdir()) == []
    write_table(frame, tmp_path / "plain.pq")
    table, meta = read_table(tmp_path / "plain.pq")
    pd.testing.assert_frame_equal(table, frame)
    assert meta == {"dtypes": {"label": "int64", "area": "int64"}}


def test_a_table_made_block_by_block_carries_the_same_metadata(cells_2d, tmp_path):
    session, image, _ = cells_2d
    whole = session.objects(2, split=True)
    blocks = objects_blockwise(session.predict(), 2, block_shape=(40, 70), split=True, image=image)
    meta = table_metadata(blocks.table, blocks.params, shape=image.shape, batch="block by block")
    write_table(blocks.table, tmp_path / "cells.parquet", metadata=meta)
    table, read_meta = read_table(tmp_path / "cells.parquet")
    pd.testing.assert_frame_equal(table, whole.table, check_exact=False, rtol=1e-12)
    expected = objects_metadata(whole)
    for key in ("params", "columns", "shape", "n_objects", "voxel_size", "units"):
        assert read_meta[key] == expected[key], key
    assert read_meta["offset"] is None and read_meta["batch"] == "block by block"
