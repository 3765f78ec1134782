"""Objects from probabilities against synthetic images with known objects; block merging; class fractions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from ilastik_widget.core.class_fractions import block_class_totals, class_fractions, predicted_class_counts
from ilastik_widget.core.object_blocks import (
    block_objects,
    block_read_region,
    merge_blocks,
    objects_blockwise,
    split_merged,
)
from ilastik_widget.core.objects import (
    _distance_to_background,
    check_object_params,
    object_box,
    objects_from_probabilities,
    split_object,
)


def _distance_to_nearest(shape, centres):
    grid = np.indices(shape).astype(float)
    d = np.full(shape, np.inf)
    for c in centres:
        d = np.minimum(d, np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c))))
    return d


def _probabilities(shape, centres, radius, edge=1.0):
    """Two-class probabilities: class 2 is 0.5 exactly at ``radius`` from the nearest centre, soft over ``edge``."""
    d = _distance_to_nearest(shape, centres)
    fg = 1.0 / (1.0 + np.exp((d - radius) / edge))
    return np.stack([1 - fg, fg], axis=-1).astype(np.float32)


def _ball_voxels(radius, ndim):
    """Voxels within ``radius`` of a voxel centre (the exact area of a disc or ball on the grid)."""
    r = int(np.ceil(radius))
    grid = np.indices((2 * r + 1,) * ndim) - r
    return int(((grid**2).sum(axis=0) <= radius * radius).sum())


SINGLES_2D = [(30, 30), (30, 130), (100, 60), (170, 30), (170, 200), (100, 230)]
PAIRS_2D = [((40, 200), (40, 218)), ((110, 140), (128, 140)), ((230, 80), (243, 93)), ((235, 200), (235, 218))]


@pytest.fixture(scope="module")
def discs():
    centres = SINGLES_2D + [c for pair in PAIRS_2D for c in pair]
    return _probabilities((270, 260), centres, radius=10)


def test_separate_discs_are_counted_and_measured_exactly():
    prob = _probabilities((200, 260), SINGLES_2D, radius=10)
    objects = objects_from_probabilities(prob, 2, smooth=0)
    assert len(objects) == len(SINGLES_2D)
    assert objects.labels.dtype == np.int32 and objects.labels.max() == len(SINGLES_2D)
    t = objects.table
    assert (t["area"] == _ball_voxels(10, 2)).all()  # 317 pixels: p >= 0.5 exactly where d <= 10
    centroids = sorted(zip(t["centroid-0"], t["centroid-1"]))
    np.testing.assert_allclose(centroids, sorted(SINGLES_2D), atol=1e-9)
    assert (t["bbox-2"] - t["bbox-0"] == 21).all() and (t["bbox-3"] - t["bbox-1"] == 21).all()
    assert (t["class"] == 2).all() and t["label"].tolist() == list(range(1, 7))


def test_smoothing_as_ilastik_keeps_counts_and_areas_within_five_percent():
    prob = _probabilities((200, 260), SINGLES_2D, radius=10)
    objects = objects_from_probabilities(prob, 2)  # sigma 1.0, ilastik's default
    assert len(objects) == len(SINGLES_2D)
    # Smoothing moves the 0.5 level of a curved edge inwards by a fraction of a pixel: 305 of 317 pixels here.
    np.testing.assert_allclose(objects.table["area"], _ball_voxels(10, 2), rtol=0.05)


def test_touching_pairs_merge_and_split_separates_them(discs):
    whole = objects_from_probabilities(discs, 2, smooth=0)
    assert len(whole) == len(SINGLES_2D) + len(PAIRS_2D)
    split = objects_from_probabilities(discs, 2, smooth=0, split=True)
    assert len(split) == len(SINGLES_2D) + 2 * len(PAIRS_2D)
    t = split.table
    # Each disc is found once, near its centre, with about its own area (the neck goes to one side or the other).
    for c in SINGLES_2D + [c for pair in PAIRS_2D for c in pair]:
        near = np.hypot(t["centroid-0"] - c[0], t["centroid-1"] - c[1])
        assert near.min() < 2.0, c
    singles = t[np.isin(t["area"], [_ball_voxels(10, 2)])]
    assert len(singles) >= len(SINGLES_2D)  # single discs are not cut
    np.testing.assert_allclose(t["area"], _ball_voxels(10, 2), rtol=0.12)
    assert t["area"].sum() == whole.table["area"].sum()  # splitting loses no pixel


def test_split_does_not_cut_single_objects_with_noisy_outlines():
    rng = np.random.default_rng(5)
    centres = [(y, x) for y in range(30, 250, 45) for x in range(30, 250, 45)]
    fg = np.zeros((260, 260))
    for c, r in zip(centres, rng.uniform(6, 14, len(centres))):
        fg = np.maximum(fg, _probabilities(fg.shape, [c], r)[..., 1])
    noisy = np.clip(fg + ndi.gaussian_filter(rng.normal(0, 0.3, fg.shape), 1), 0, 1).astype(np.float32)
    prob = np.stack([1 - noisy, noisy], -1)
    assert len(objects_from_probabilities(prob, 2)) == len(centres)
    assert len(objects_from_probabilities(prob, 2, split=True)) == len(centres)


def test_spheres_in_3d_counted_measured_and_split():
    centres = [(10, 12, 12), (10, 12, 40), (24, 30, 20), (10, 36, 50), (10, 36, 61)]  # the last two touch
    prob = _probabilities((34, 50, 76), centres, radius=6)
    objects = objects_from_probabilities(prob, 2, smooth=0, voxel_size=(2.0, 0.5, 0.5))
    assert len(objects) == 4
    t = objects.table.sort_values("area")
    assert (t["area"].iloc[:3] == _ball_voxels(6, 3)).all()
    np.testing.assert_allclose(t["area_physical"], t["area"] * 0.5)
    np.testing.assert_allclose(t["centroid_physical-0"], t["centroid-0"] * 2.0)
    split = objects_from_probabilities(prob, 2, smooth=0, split=True)
    assert len(split) == 5
    np.testing.assert_allclose(split.table["area"], _ball_voxels(6, 3), rtol=0.12)


def test_hysteresis_keeps_objects_with_a_strong_seed_whole():
    shape = (60, 120)
    p = np.zeros(shape, np.float32)
    p[10:30, 10:50] = 0.6  # grows from the seed below
    p[15:20, 15:20] = 0.9  # seed: 25 voxels
    p[40:55, 70:100] = 0.7  # never reaches the high threshold
    p[10:30, 70:100] = 0.6
    p[12:14, 80:83] = 0.95  # a seed of 6 voxels, below min_size: ilastik drops its object
    prob = np.stack([1 - p, p], -1)
    simple = objects_from_probabilities(prob, 2, 0.5, smooth=0)
    assert len(simple) == 3
    hyst = objects_from_probabilities(prob, 2, 0.8, low=0.5, smooth=0, min_size=10)
    assert len(hyst) == 1
    assert hyst.table["area"].tolist() == [20 * 40]  # the whole region above low, not only the seed
    assert (hyst.labels[10:30, 10:50] == 1).all() and hyst.labels.sum() == 800
    # low == threshold is the simple threshold.
    same = objects_from_probabilities(prob, 2, 0.5, low=0.5, smooth=0)
    np.testing.assert_array_equal(same.labels, simple.labels)


def test_size_filter_bounds_are_inclusive():
    centres = [(20, 20), (20, 60), (20, 100)]
    radii_prob = [_probabilities((40, 130), [c], r) for c, r in zip(centres, (1.5, 4, 8))]
    prob = np.maximum.reduce(radii_prob)
    prob[..., 0] = 1 - prob[..., 1]
    areas = [_ball_voxels(r, 2) for r in (1.5, 4, 8)]
    objects = objects_from_probabilities(prob, 2, smooth=0, min_size=areas[1], max_size=areas[1])
    assert objects.table["area"].tolist() == [areas[1]]
    assert len(objects_from_probabilities(prob, 2, smooth=0, min_size=0)) == 3
    assert len(objects_from_probabilities(prob, 2, smooth=0, min_size=areas[0] + 1)) == 2


def test_table_uses_image_coordinates_intensities_and_probabilities():
    prob = _probabilities((50, 60), [(20, 30)], radius=5)
    yy, xx = np.indices((50, 60))
    image = np.stack([yy, xx * 2], axis=-1).astype(np.uint16)
    objects = objects_from_probabilities(prob, 2, smooth=0, image=image, offset=(100, 7))
    row = objects.table.iloc[0]
    assert (row["centroid-0"], row["centroid-1"]) == (120.0, 37.0)
    assert (row["bbox-0"], row["bbox-1"], row["bbox-2"], row["bbox-3"]) == (115, 32, 126, 43)
    assert row["intensity_mean-0"] == 20.0 and row["intensity_min-0"] == 15 and row["intensity_max-0"] == 25
    assert row["intensity_mean-1"] == 60.0 and row["intensity_max-1"] == 70
    inside = objects.labels == 1
    assert row["probability_mean"] == pytest.approx(float(prob[..., 1][inside].mean()), rel=1e-6)
    one_channel = objects_from_probabilities(prob, 2, smooth=0, image=image[..., 0])
    assert "intensity_mean" in one_channel.table and "intensity_mean-0" not in one_channel.table
    assert "area_physical" not in objects.table


def test_numbering_is_the_raster_order_of_first_voxels(discs):
    objects = objects_from_probabilities(discs, 2, smooth=0, min_size=0)
    reference, n = ndi.label(discs[..., 1] >= 0.5)
    np.testing.assert_array_equal(objects.labels, reference)
    assert len(objects) == n


def test_no_objects_gives_an_empty_table_with_its_columns():
    prob = np.zeros((20, 30, 2), np.float32)
    prob[..., 0] = 1
    objects = objects_from_probabilities(prob, 2, image=np.zeros((20, 30)))
    assert len(objects) == 0 and objects.labels.max() == 0
    assert {"label", "area", "centroid-1", "bbox-3", "intensity_max"} <= set(objects.table.columns)
    assert len(objects_blockwise(prob, 2, block_shape=(8, 8))) == 0


# ---------------------------------------------------------------------- block by block = whole image
BLOCK_CASES = [
    ((270, 260), (32, 45), dict(smooth=0, min_size=0)),
    ((270, 260), (64, 50), dict()),
    ((270, 260), (37, 41), dict(threshold=0.7, low=0.3, smooth=1.5, min_size=50)),
    ((270, 260), (100, 20), dict(max_size=400, smooth=(2.0, 0.5))),
]


@pytest.mark.parametrize("shape,block_shape,kwargs", BLOCK_CASES)
def test_blockwise_objects_equal_the_whole_image_2d(discs, shape, block_shape, kwargs):
    image = np.random.default_rng(0).random(discs.shape[:-1] + (2,)).astype(np.float32)
    whole = objects_from_probabilities(discs, 2, image=image, voxel_size=(0.3, 0.3), **kwargs)
    blocks = objects_blockwise(discs, 2, block_shape=block_shape, image=image, voxel_size=(0.3, 0.3), **kwargs)
    assert len(whole) > 5
    np.testing.assert_array_equal(blocks.labels, whole.labels)
    pd.testing.assert_frame_equal(blocks.table, whole.table, check_exact=False, rtol=1e-12)


def test_blockwise_objects_equal_the_whole_image_3d():
    rng = np.random.default_rng(3)
    centres = [tuple(rng.integers(3, n - 3) for n in (30, 44, 52)) for _ in range(25)]
    prob = _probabilities((30, 44, 52), centres, radius=4.5)
    image = rng.integers(0, 4000, (30, 44, 52), dtype=np.uint16)
    for kwargs in (dict(smooth=1.0), dict(threshold=0.8, low=0.4, smooth=(0.0, 1.0, 1.0), min_size=20)):
        whole = objects_from_probabilities(prob, 2, image=image, **kwargs)
        blocks = objects_blockwise(prob, 2, block_shape=(8, 16, 13), image=image, **kwargs)
        assert len(whole) > 5
        np.testing.assert_array_equal(blocks.labels, whole.labels)
        pd.testing.assert_frame_equal(blocks.table, whole.table, check_exact=False, rtol=1e-12)


def test_an_object_spanning_many_blocks_is_one_object_with_exact_statistics():
    p = np.zeros((64, 64), np.float32)
    p[5:60, 30:34] = 1  # a bar through every block row
    p[30:34, 2:62] = 1  # crossing bar
    prob = np.stack([1 - p, p], -1)
    blocks = objects_blockwise(prob, 2, block_shape=(7, 9), smooth=0)
    assert len(blocks) == 1
    row = blocks.table.iloc[0]
    assert row["area"] == int(p.sum())
    assert (row["bbox-0"], row["bbox-1"], row["bbox-2"], row["bbox-3"]) == (5, 2, 60, 62)
    ys, xs = np.nonzero(p)
    assert (row["centroid-0"], row["centroid-1"]) == (ys.mean(), xs.mean())


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(threshold=1.5), "threshold must be in"),
        (dict(threshold=-0.1), "threshold must be in"),
        (dict(threshold="high"), "threshold must be a number"),
        (dict(threshold=0.5, low=0.7), "low .* must not be above threshold"),
        (dict(low=1.2), "low must be in"),
        (dict(min_size=50, max_size=10), "min_size .* larger than max_size"),
        (dict(min_size=-1), "min_size"),
        (dict(min_size=2.5), "min_size"),
        (dict(label=3), "label must be a class 1..2"),
        (dict(label=0), "label must be a class"),
        (dict(label=True), "label must be a class"),
        (dict(smooth=-1), "smooth"),
        (dict(smooth=(1, 1, 1)), "smooth"),
        (dict(split=-2.0), "split"),
        (dict(voxel_size=(1, 0)), "voxel_size"),
        (dict(voxel_size=(1,)), "voxel_size"),
        (dict(image=np.zeros((10, 11))), "image has shape"),
        (dict(offset=(-1, 0)), "offset"),
    ],
)
def test_bad_parameters_name_the_problem(kwargs, match):
    prob = np.full((10, 12, 2), 0.5, np.float32)
    kwargs = dict(kwargs)
    label = kwargs.pop("label", 2)
    with pytest.raises(ValueError, match=match):
        objects_from_probabilities(prob, label, **kwargs)


def test_bad_probability_arrays_are_refused():
    with pytest.raises(ValueError, match="float array"):
        objects_from_probabilities(np.zeros((10, 12, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="float array"):
        objects_from_probabilities(np.zeros((10, 12), np.float32), 1)
    with pytest.raises(ValueError, match="image_shape must be 2 sizes holding"):
        objects_from_probabilities(np.zeros((10, 12, 2), np.float32), 1, offset=(5, 0), image_shape=(12, 12))


# ---------------------------------------------------------------------- split: exact and the same everywhere
def test_distances_are_exact_and_the_same_on_every_call(discs):
    """OpenCV's transform of an object's box varies in its last bits (from call to call, with the memory's
    alignment); the split's maxima must not: the distances are scipy's exact ones on every call."""
    rng = np.random.default_rng(5)
    noisy = np.clip(discs[..., 1] + ndi.gaussian_filter(rng.normal(0, 0.3, discs.shape[:2]), 1), 0, 1)
    n_boxes = 0
    for mask in (discs[..., 1] >= 0.5, noisy >= 0.5, rng.random((300, 310)) < 0.9):
        labels, _ = ndi.label(mask)
        for i, box in enumerate(ndi.find_objects(labels), start=1):
            inside = labels[object_box(box, labels.shape)] == i
            exact = ndi.distance_transform_edt(inside).astype(np.float32)
            for _ in range(3):
                np.testing.assert_array_equal(_distance_to_background(inside, None), exact)
            n_boxes += 1
    assert n_boxes > 20


def test_an_object_splits_the_same_alone_as_among_others(discs):
    whole = objects_from_probabilities(discs, 2, smooth=0)
    split = objects_from_probabilities(discs, 2, smooth=0, split=True)
    for i, box in enumerate(ndi.find_objects(whole.labels), start=1):
        box = object_box(box, whole.labels.shape)
        inside = whole.labels[box] == i
        pieces, k = split_object(inside, 2.0, None)
        assert len(np.unique(split.labels[box][inside])) == k
        # the same partition of the object's voxels
        pairs = np.unique(np.stack([pieces[inside], split.labels[box][inside]]), axis=1)
        assert pairs.shape[1] == k


SPLIT_CASES = [
    ((32, 45), dict(smooth=0, min_size=0)),
    ((64, 50), dict()),
    ((37, 41), dict(threshold=0.7, low=0.3, smooth=1.5, min_size=50)),
    ((100, 20), dict(min_size=200, max_size=700, smooth=(2.0, 0.5))),
    ((11, 13), dict(split=3.0)),
    ((270, 260), dict()),  # one block: every object is split inside its block
]


@pytest.mark.parametrize("block_shape,kwargs", SPLIT_CASES)
def test_blockwise_split_equals_the_whole_image_2d(discs, block_shape, kwargs):
    kwargs = {"split": True, **kwargs}
    image = np.random.default_rng(0).random(discs.shape[:-1] + (2,)).astype(np.float32)
    whole = objects_from_probabilities(discs, 2, image=image, voxel_size=(0.3, 0.3), **kwargs)
    blocks = objects_blockwise(discs, 2, block_shape=block_shape, image=image, voxel_size=(0.3, 0.3), **kwargs)
    assert len(whole) > len(objects_from_probabilities(discs, 2, **{**kwargs, "split": False}))  # pairs were cut
    np.testing.assert_array_equal(blocks.labels, whole.labels)
    pd.testing.assert_frame_equal(blocks.table, whole.table, check_exact=False, rtol=1e-12)


def test_blockwise_split_equals_the_whole_image_3d():
    rng = np.random.default_rng(3)
    centres = [tuple(rng.integers(3, n - 3) for n in (30, 44, 52)) for _ in range(40)]  # many touch
    prob = _probabilities((30, 44, 52), centres, radius=4.5)
    image = rng.integers(0, 4000, (30, 44, 52), dtype=np.uint16)
    for voxel_size, kwargs in (
        (None, dict(smooth=1.0)),
        ((2.0, 1.0, 1.0), dict(threshold=0.8, low=0.4, smooth=(0.0, 1.0, 1.0), min_size=20)),
    ):
        whole = objects_from_probabilities(prob, 2, image=image, split=True, voxel_size=voxel_size, **kwargs)
        assert len(whole) > len(objects_from_probabilities(prob, 2, voxel_size=voxel_size, **kwargs)) + 5
        for block_shape in ((8, 16, 13), (7, 7, 7)):
            blocks = objects_blockwise(
                prob, 2, block_shape=block_shape, image=image, split=True, voxel_size=voxel_size, **kwargs
            )
            np.testing.assert_array_equal(blocks.labels, whole.labels)
            pd.testing.assert_frame_equal(blocks.table, whole.table, check_exact=False, rtol=1e-12)


def test_split_merged_reads_only_the_boxes_of_objects_cut_by_blocks(discs, tmp_path):
    """As a batch run would: block labels written to a zarr array on disk, objects cut by blocks split from it."""
    import zarr

    shape, block_shape = discs.shape[:-1], (64, 64)
    params = check_object_params(2, 2, 2, smooth=0, split=True)
    regions = [(slice(y, min(y + 64, shape[0])), slice(x, min(x + 64, shape[1]))) for y in range(0, shape[0], 64)
               for x in range(0, shape[1], 64)]  # fmt: skip
    local, summaries = [], []
    for region in regions:
        outer = block_read_region(region, shape, params.smooth)
        labels, summary = block_objects(discs[outer], params, region, outer, shape)
        local.append(labels)
        summaries.append(summary)
    merge = merge_blocks(summaries, params)
    store = zarr.open_array(tmp_path / "labels.zarr", mode="w", shape=shape, chunks=block_shape, dtype="int32")
    for i, region in enumerate(regions):
        store[region] = merge.relabel(i, local[i])
    boxes = []

    def read(box):
        boxes.append(box)
        return store[box], discs[box + (1,)], None

    final = split_merged(merge, shape, read)
    out = np.zeros(shape, np.int32)
    for i, region in enumerate(regions):
        out[region] = final.relabel(i, local[i])
    whole = objects_from_probabilities(discs, 2, smooth=0, split=True)
    np.testing.assert_array_equal(out, whole.labels)
    pd.testing.assert_frame_equal(final.table, whole.table, check_exact=False, rtol=1e-12)
    # One read per object cut by a block face, of its bounding box grown by one voxel; the others split in blocks.
    t = merge.table.set_index("label")
    expected = [object_box([slice(t.at[k, "bbox-0"], t.at[k, "bbox-2"]), slice(t.at[k, "bbox-1"], t.at[k, "bbox-3"])],
                           shape) for k in merge.to_split]  # fmt: skip
    assert boxes == expected and 0 < len(boxes) < len(merge.table)


def test_regions_mark_the_objects_they_clip(discs):
    part = discs[25:235, 20:225]  # cuts discs on every side
    offset, image_shape = (40, 30), (400, 400)
    objects = objects_from_probabilities(part, 2, smooth=0, offset=offset, image_shape=image_shape)
    t = objects.table
    lo, hi = np.array(offset), np.array(offset) + part.shape[:2]
    starts = (t["bbox-0"] == lo[0]) | (t["bbox-1"] == lo[1])
    touch = starts | (t["bbox-2"] == hi[0]) | (t["bbox-3"] == hi[1])
    assert starts.sum() >= 2 and touch.sum() > starts.sum() and (t["clipped"] == touch).all()
    at_image_end = objects_from_probabilities(part, 2, smooth=0, offset=offset)  # the region ends with the image
    assert (at_image_end.table["clipped"] == starts).all()
    assert not objects_from_probabilities(discs, 2, smooth=0).table["clipped"].any()
    assert json.loads(json.dumps(objects.params.to_dict()))["smooth"] == [0.0, 0.0]


# ---------------------------------------------------------------------- class fractions
def test_predicted_fractions_and_counts_add_over_blocks():
    rng = np.random.default_rng(1)
    winner = rng.choice(3, size=(40, 50), p=[0.5, 0.3, 0.2])
    prob = np.full((40, 50, 3), 0.1, np.float32)
    np.put_along_axis(prob, winner[..., None], 0.8, axis=-1)
    counts = predicted_class_counts(prob)
    assert counts.tolist() == [int((winner == k).sum()) for k in range(3)]
    np.testing.assert_allclose(class_fractions(prob), counts / counts.sum())
    parts = predicted_class_counts(prob[:17]) + predicted_class_counts(prob[17:])
    assert parts.tolist() == counts.tolist()
    mean = class_fractions(prob, method="mean")
    np.testing.assert_allclose(mean, prob.reshape(-1, 3).astype(np.float64).mean(axis=0), rtol=1e-6)  # rows sum to 1
    assert mean.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="method"):
        class_fractions(prob, method="median")
    with pytest.raises(ValueError, match="float array"):
        class_fractions(winner)
    sums = block_class_totals(prob[:17], "mean") + block_class_totals(prob[17:], "mean")
    np.testing.assert_allclose(sums / sums.sum(), mean)
