"""Sessions on volumes: planes of the viewer and strokes in planes cost plane features, and equal the block path."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_widget.core.feature_store import PLANE_TILE, plane_cover
from ilastik_widget.core.features import FeatureSelection, compute_features
from ilastik_widget.core.planes import SlabCache, plane_slab
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import synthetic_cells

# every feature at the scales whose halos fit a small volume, so the test is quick but covers each filter
SEL = FeatureSelection(frozenset((f, s) for f, s in FeatureSelection.all().selected if s in (0.7, 1.6, 3.5)))
FAST = {"n_estimators": 10, "n_jobs": 1}


class CountingArray:
    """A lazily read array that adds up the voxels every read touches (what zarr or dask would fetch)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.voxels = 0

    def __getitem__(self, index):
        out = self.array[index]
        self.voxels += out.size
        return out


@pytest.fixture(scope="module")
def volume():
    return synthetic_cells((40, 96, 112), seed=2)


def _strokes_on_planes(session, truth):
    """A stroke of each class on the xy plane z=20, and one of class 2 on the xz plane y=40 (axes of that plane)."""
    for label, (axes, fixed) in [(1, ((1, 2), (0, 20))), (2, ((1, 2), (0, 20))), (2, ((0, 2), (1, 40)))]:
        axis, index = fixed
        plane = np.take(truth, index, axis=axis)
        u, v = np.nonzero(plane == label)
        pick = np.linspace(0, len(u) - 1, 6).astype(int)
        points = np.insert(np.stack([u[pick], v[pick]], 1).astype(float), axis, index, axis=1)
        session.add_stroke(label, points, radius=1.5, axes=axes)


def test_plane_cover_covers_strokes_with_their_planes():
    xy = np.array([[5, y, x] for y in range(3) for x in range(4)])
    xz = np.array([[z, 9, x] for z in range(7) for x in range(2)])
    coords = np.concatenate([xy, xz])
    axis, index = plane_cover(coords)
    assert set(zip(axis.tolist(), index.tolist())) == {(0, 5), (1, 9)}  # two planes, one per stroke
    assert (coords[np.arange(len(coords)), axis] == index).all()  # every voxel lies in its plane


@pytest.mark.parametrize(
    "region",
    [
        (slice(20, 21), slice(0, 96), slice(0, 112)),  # an xy plane in the middle
        (slice(0, 1), slice(10, 60), slice(30, 112)),  # part of the first xy plane
        (slice(0, 40), slice(95, 96), slice(0, 112)),  # the last xz plane
        (slice(0, 40), slice(0, 96), slice(55, 56)),  # a yz plane
    ],
)
def test_plane_predictions_equal_the_block_path(volume, region):
    image, truth = volume
    plane = Session(image, features=SEL, classifier=FAST)
    _strokes_on_planes(plane, truth)
    plane.train()
    # the same session state, predicted through blocks: a region two voxels thick along the plane's normal
    thick = tuple(
        slice(s.start, s.start + 2)
        if s.stop - s.start == 1 and s.start + 2 <= n
        else slice(s.start - 1, s.stop)
        if s.stop - s.start == 1
        else s
        for s, n in zip(region, image.shape)
    )
    axis = next(a for a, s in enumerate(region) if s.stop - s.start == 1)
    at = region[axis].start - thick[axis].start
    by_blocks = np.take(plane.predict(thick), [at], axis=axis)
    np.testing.assert_allclose(plane.predict(region), by_blocks, atol=1e-6)


def test_training_rows_of_planes_equal_whole_volume_features(volume):
    image, truth = volume
    s = Session(image, features=SEL, classifier=FAST)
    _strokes_on_planes(s, truth)
    flat, labels, _ = s.annotations.labelled_flat()
    x, y = s._store.training_rows(flat, labels, s._feature_spec(), lambda: False)
    whole = compute_features(image, SEL).reshape(-1, s.n_features)
    order = np.argsort(flat, kind="stable")
    # rows come grouped by plane; compare as a set of (voxel, row) pairs
    coords = np.stack(np.unravel_index(flat, image.shape), 1)
    units, unit_of = s._store._training_units(coords)
    assert {u[1:3] for u in units} == {(0, 20), (1, 40)}
    by_voxel = {}
    sorted_flat = flat[np.argsort(unit_of, kind="stable")]
    for f, row in zip(sorted_flat, x):
        by_voxel[int(f)] = row
    got = np.array([by_voxel[int(f)] for f in flat[order]])
    np.testing.assert_allclose(got, whole[flat[order]], rtol=1e-4, atol=1e-4 * np.abs(whole).max())
    assert len(y) == len(flat)


def test_a_plane_reads_a_slab_not_blocks(volume):
    image, truth = volume
    counted = CountingArray(image)
    s = Session(counted, features=SEL, classifier=FAST)
    _strokes_on_planes(s, truth)
    s.train()
    counted.voxels = 0
    s.predict((slice(0, 40), slice(0, 96), slice(10, 11)))  # a yz plane: training read xy and xz planes only
    # the slab the filters reach (plane_slab: 2 * 20 + 1 planes at most, cut by the border), never 64^3 blocks
    lo, hi = plane_slab(image.shape, 2, 10, SEL)
    assert counted.voxels == (hi - lo) * 40 * 96 and hi - lo <= 41
    assert PLANE_TILE >= 112
    # the next slice reads the plane it adds and some ahead (SlabCache), not its whole slab again
    counted.voxels = 0
    s.predict((slice(0, 40), slice(0, 96), slice(11, 12)))
    assert 0 < counted.voxels <= (1 + SlabCache().ahead) * 40 * 96 < (hi - lo) * 40 * 96
    for x in range(12, 12 + SlabCache().ahead):
        s.predict((slice(0, 40), slice(0, 96), slice(x, x + 1)))
    assert counted.voxels <= (1 + SlabCache().ahead) * 40 * 96


def test_voxel_size_from_the_source_and_bad_voxel_sizes_change_nothing(volume):
    image, _ = volume
    s = Session(image, features=SEL, voxel_size=(2.0, 1.0, 1.0))
    assert s.voxel_size == (2.0, 1.0, 1.0)
    n = s.n_features
    for bad in [(0, 1, 1), (-1, 1, 1), (float("nan"), 1, 1), (1, 1)]:
        with pytest.raises(ValueError, match="voxel_size"):
            s.voxel_size = bad
        assert s.voxel_size == (2.0, 1.0, 1.0) and s.n_features == n


def test_a_2d_choice_on_a_2d_image_is_refused_and_changes_nothing():
    image, _ = synthetic_cells((64, 64), seed=0)
    s = Session(image, features=SEL)
    with pytest.raises(ValueError, match="2D"):
        s.feature_selection = SEL.with_2d(1.6, True)
    assert s.feature_selection == SEL


def test_volume_values_too_large_for_float32_are_named_with_the_plane():
    vol = np.zeros((6, 32, 32))
    vol[:, 16:] = 1e39
    s = Session(vol, features=SEL, classifier=FAST)
    s.add_stroke(1, [[2, 4, 4]], radius=2, axes=[1, 2])
    s.add_stroke(2, [[2, 28, 28]], radius=2, axes=[1, 2])
    with pytest.raises(ValueError, match=r"too large for 32-bit.*plane region \[2:3, 0:32, 0:32\]"):
        s.train()
    counts = s.annotations.count_per_class()
    assert counts[0] > 0 and counts[1] > 0  # the strokes are kept
    assert not s.is_trained


def test_features_prepared_ahead_are_what_training_and_prediction_use(volume, monkeypatch):
    image, truth = volume
    planes = [(slice(20, 21), slice(None), slice(None)), (slice(None), slice(40, 41), slice(None))]
    s = Session(image, features=SEL, classifier=FAST)
    assert not any(s.has_features(r) for r in planes)
    s.prepare_features(planes)
    assert all(s.has_features(r) for r in planes)
    assert not s.has_features((slice(21, 22), slice(None), slice(None)))

    import ilastik_widget.core.feature_store as store_module

    def no_more(*args, **kwargs):
        raise AssertionError("features computed again")

    monkeypatch.setattr(store_module, "planes_features", no_more)
    _strokes_on_planes(s, truth)  # on exactly the two prepared planes
    s.train()
    p = s.predict(planes[0])
    monkeypatch.undo()
    fresh = Session(image, features=SEL, classifier=FAST)
    _strokes_on_planes(fresh, truth)
    fresh.train()
    np.testing.assert_array_equal(p, fresh.predict(planes[0]))


def test_prepare_features_refuses_bad_regions_and_an_empty_selection(volume):
    image, _ = volume
    s = Session(image, features=SEL)
    with pytest.raises(ValueError, match="outside"):
        s.prepare_features([(slice(40, 41), slice(None), slice(None))])
    s.feature_selection = FeatureSelection.none()
    with pytest.raises(ValueError, match="no features are selected"):
        s.prepare_features([(slice(2, 3), slice(None), slice(None))])


def test_a_plane_asked_for_by_two_threads_at_once_is_computed_once(volume, monkeypatch):
    import threading

    import ilastik_widget.core.feature_store as store_module

    image, _ = volume
    s = Session(image, features=SEL)
    plane = (slice(20, 21), slice(None), slice(None))
    calls = []
    started, go_on = threading.Event(), threading.Event()
    real = store_module.planes_features

    def slow(*args, **kwargs):
        calls.append(threading.current_thread().name)
        started.set()
        assert go_on.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "planes_features", slow)
    ahead = threading.Thread(target=s.prepare_features, args=([plane],), name="ahead")
    ahead.start()
    assert started.wait(30)
    results = []
    second = threading.Thread(target=lambda: results.append(s.prepare_features([plane])), name="second")
    second.start()
    second.join(0.5)
    assert second.is_alive()  # waits for the first computation instead of starting its own
    go_on.set()
    ahead.join(30), second.join(30)
    assert calls == ["ahead"] and results == [None] and s.has_features(plane)


def test_a_plane_whose_first_computation_failed_is_computed_by_the_caller_that_waited(volume, monkeypatch):
    import threading

    import ilastik_widget.core.feature_store as store_module

    image, _ = volume
    s = Session(image, features=SEL)
    plane = (slice(20, 21), slice(None), slice(None))
    started, go_on = threading.Event(), threading.Event()
    real = store_module.planes_features
    calls = []

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            started.set()
            assert go_on.wait(30)
            raise MemoryError("the first computation ran out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "planes_features", fails_first)
    errors = []

    def first():
        try:
            s.prepare_features([plane])
        except MemoryError as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    assert started.wait(30)
    b = threading.Thread(target=s.prepare_features, args=([plane],))
    b.start()
    b.join(0.5)
    assert b.is_alive()  # waits for the first computation
    go_on.set()
    a.join(30), b.join(30)
    assert len(errors) == 1 and len(calls) == 2 and s.has_features(plane)


def test_features_of_planes_scrolled_past_are_dropped_per_axis(volume):
    from ilastik_widget.core.feature_store import PLANES_KEPT_PER_AXIS

    image, truth = volume
    s = Session(image, features=SEL, classifier=FAST)
    _strokes_on_planes(s, truth)
    s.train()
    xz = (slice(None), slice(40, 41), slice(None))
    s.predict(xz)
    for z in range(8):  # scrolling through xy slices
        s.predict((slice(z, z + 1), slice(None), slice(None)))
    kept = [z for z in range(image.shape[0]) if s.has_features((slice(z, z + 1), slice(None), slice(None)))]
    assert kept == list(range(8 - PLANES_KEPT_PER_AXIS, 8))
    assert s.has_features(xz)  # the xz panel's plane is kept while the xy panel scrolls


def test_training_on_strokes_in_many_planes_computes_each_plane_once(volume, monkeypatch):
    import ilastik_widget.core.feature_store as store_module

    image, truth = volume
    s = Session(image, features=SEL, classifier=FAST)
    zs = [3, 9, 15, 21, 27, 33]  # more planes of one axis than are kept after scrolling
    for z in zs:
        for label in (1, 2):
            u, v = np.nonzero(truth[z] == label)
            pick = np.linspace(0, len(u) - 1, 4).astype(int)
            s.add_stroke(label, np.stack([np.full(4, z), u[pick], v[pick]], 1).astype(float), radius=1, axes=(1, 2))
    requests = []
    real = store_module.planes_features

    def counting(image, planes, *args, **kwargs):
        requests.extend((axis, index) for axis, index, _ in planes)
        return real(image, planes, *args, **kwargs)

    monkeypatch.setattr(store_module, "planes_features", counting)
    s.train()
    assert sorted(requests) == [(0, z) for z in zs]
