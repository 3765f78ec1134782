"""Tests of ilastik_widget.core.session.Session: laziness, caches, training, threads, errors, accuracy."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ilastik_widget.core.classifier import PixelClassifier
from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells

SMALL = FeatureSelection.none()
for _f in ("gaussian_smoothing", "gaussian_gradient_magnitude", "hessian_of_gaussian_eigenvalues"):
    for _s in (1.0, 1.6):
        SMALL = SMALL.with_feature(_f, _s, True)
SMALL_HALO = 6  # pixels of context SMALL needs (checked below against features.halo)
FAST = {"n_estimators": 8, "n_jobs": 1}


class CountingArray:
    """A lazily read array that records every read (what zarr or dask would fetch)."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.reads = []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]

    def read_box(self):
        """(lo, hi) bounding all reads so far."""
        lo = np.min([[s.start for s in r] for r in self.reads], axis=0)
        hi = np.max([[s.stop for s in r] for r in self.reads], axis=0)
        return lo.tolist(), hi.tolist()


@pytest.fixture(scope="module")
def cells():
    return synthetic_cells((256, 256), seed=1)


def _session(image, **kw):
    kw.setdefault("features", SMALL)
    kw.setdefault("classifier", FAST)
    return Session(image, **kw)


def _paint(session, truth, n_per_class=4, radius=2, seed=0):
    for s in simulated_strokes(truth, n_per_class=n_per_class, radius=radius, seed=seed):
        session.add_stroke(**s)


def test_small_selection_halo():
    from ilastik_widget.core.features import halo

    assert halo(SMALL) == SMALL_HALO


# ---------------------------------------------------------------------------------------------- API basics


def test_issue_api_end_to_end(cells):
    image, truth = cells
    s = _session(image)
    sid = s.add_stroke(1, [[10, 10], [10, 30]], radius=2)
    s.add_stroke(2, [[100, 100]], radius=3)
    assert [st.id for st in s.strokes] == [sid, sid + 1]
    assert s.labels().shape == (256, 256) and s.labels()[10, 20] == 1
    s.remove_stroke(sid)
    assert s.labels()[10, 20] == 0
    assert s.undo() and s.labels()[10, 20] == 1
    assert s.redo() and s.labels()[10, 20] == 0
    s.undo()
    s.train()
    p = s.predict()
    assert p.dtype == np.float32 and p.shape == (256, 256, 2)
    np.testing.assert_allclose(p.sum(-1), 1, atol=1e-5)
    seg = s.segmentation()
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {1, 2}
    np.testing.assert_array_equal(seg, p.argmax(-1) + 1)
    u = s.uncertainty((slice(0, 50), slice(0, 60)))
    assert u.dtype == np.float32 and u.shape == (50, 60)
    ps = np.sort(p[:50, :60], axis=-1)
    np.testing.assert_allclose(u, 1 - (ps[..., -1] - ps[..., -2]), atol=1e-6)
    assert u.min() >= 0 and u.max() <= 1
    assert s.spatial_shape == (256, 256) and s.ndim == 2 and s.n_classes == 2 and s.is_trained


def test_learnable_task_reaches_good_iou(cells):
    image, truth = cells
    s = Session(image, seed=0)  # default: all features, interactive classifier
    _paint(s, truth, n_per_class=6, radius=2)
    s.train()
    seg = s.segmentation()
    fg, true_fg = seg == 2, truth == 2
    iou = (fg & true_fg).sum() / (fg | true_fg).sum()
    assert iou > 0.7, iou


# ---------------------------------------------------------------------------------------------- laziness


def test_only_labelled_blocks_are_read_for_training_and_asked_blocks_for_prediction():
    image, truth = synthetic_cells((512, 512), seed=2)
    arr = CountingArray(image)
    s = _session(arr, block_shape=(64, 64))
    s.add_stroke(1, [[20, 10], [20, 40]], radius=2)  # block (0, 0)
    s.add_stroke(2, [[30, 70], [30, 100]], radius=2)  # block (0, 1)
    assert arr.reads == []  # nothing read before it is needed
    s.train()
    assert len(arr.reads) == 2
    lo, hi = arr.read_box()
    assert lo == [0, 0] and hi == [64 + SMALL_HALO, 128 + SMALL_HALO]
    arr.reads.clear()
    p = s.predict((slice(300, 310), slice(290, 318)))
    assert p.shape == (10, 28, 2)
    assert len(arr.reads) == 1
    assert arr.read_box() == ([256 - SMALL_HALO, 256 - SMALL_HALO], [320 + SMALL_HALO, 320 + SMALL_HALO])
    # A new stroke in an already labelled block: the cached features serve, nothing is read.
    arr.reads.clear()
    s.add_stroke(2, [[40, 20]], radius=2)
    s.train()
    assert arr.reads == []


def test_precompute_predicts_the_blocks_of_regions_ahead_so_predict_reads_nothing():
    image, _ = synthetic_cells((512, 512), seed=2)
    arr = CountingArray(image)
    s = _session(arr, block_shape=(64, 64))
    regions = [(slice(300, 310), slice(290, 318)), (slice(0, 64), slice(64, 128))]
    with pytest.raises(RuntimeError, match="not trained"):
        s.precompute(regions)
    s.add_stroke(1, [[20, 10], [20, 40]], radius=2)
    s.add_stroke(2, [[30, 70], [30, 100]], radius=2)
    s.train()
    arr.reads.clear()
    s.precompute(regions)
    assert len(arr.reads) == 1  # block (4, 4) only: block (0, 1)'s features are cached from training
    arr.reads.clear()
    ahead = [s.predict(r) for r in regions]
    assert arr.reads == []
    fresh = _session(image, block_shape=(64, 64))
    fresh.add_stroke(1, [[20, 10], [20, 40]], radius=2)
    fresh.add_stroke(2, [[30, 70], [30, 100]], radius=2)
    fresh.train()
    for r, p in zip(regions, ahead):
        np.testing.assert_array_equal(p, fresh.predict(r))
    with pytest.raises(ValueError):
        s.precompute([(slice(500, 600), slice(0, 10))])


def test_label_change_regathers_rows_only_for_changed_blocks(cells):
    image, _ = cells
    s = _session(image, block_shape=(64, 64))
    s.add_stroke(1, [[10, 10]], radius=2)  # block (0, 0)
    s.add_stroke(2, [[200, 200]], radius=2)  # block (3, 3)
    s.train()
    asked = []
    original = s._store.block_features

    def spy(block_index, spec=None):
        asked.append(block_index)
        return original(block_index, spec)

    s._store.block_features = spy
    s.add_stroke(2, [[100, 150]], radius=2)  # block (1, 2)
    s.train()
    assert asked == [(1, 2)]
    asked.clear()
    s.undo()  # back to the old labels: rows of the other blocks are reused
    s.train()
    assert asked == []


def test_feature_cache_is_bounded_in_bytes(cells):
    image, truth = cells
    block_bytes = 64 * 64 * SMALL.n_channels(2) * 4
    bound = int(3.5 * block_bytes)
    s = _session(image, block_shape=(64, 64), cache_bytes=bound)
    big = _session(image, block_shape=(64, 64))
    for sess in (s, big):
        _paint(sess, truth)
        sess.train()
    p = s.predict()
    assert 0 < s.cache_nbytes <= bound
    assert len(s._store._features.keys()) == 3
    np.testing.assert_array_equal(p, big.predict())
    assert big.cache_nbytes == 16 * block_bytes


def test_works_on_dask_and_zarr_without_loading_whole(cells):
    da = pytest.importorskip("dask.array")
    zarr = pytest.importorskip("zarr")
    image, truth = cells
    ref = _session(image)
    _paint(ref, truth)
    ref.train()
    expected = ref.predict()
    for arr in (da.from_array(image, chunks=(64, 64)), zarr.array(image, chunks=(64, 64))):
        s = _session(arr)
        _paint(s, truth)
        s.train()
        np.testing.assert_array_equal(s.predict(), expected)


def test_image_source_is_accepted(cells):
    sources = pytest.importorskip("ilastik_widget.io.sources")
    image, truth = cells
    s = _session(sources.open_source(np.stack([image, image * 2], axis=0), channel_axis=0))
    assert s.spatial_shape == (256, 256) and s.n_input_channels == 2
    _paint(s, truth)
    s.train()
    assert s.predict((slice(0, 8), slice(0, 8))).shape == (8, 8, 2)


# ---------------------------------------------------------------------------------------------- results


def test_region_predictions_equal_whole_prediction_cropped(cells):
    image, truth = cells
    s = _session(image, block_shape=(48, 80))
    _paint(s, truth)
    s.train()
    whole = s.predict()
    rng = np.random.default_rng(0)
    for _ in range(12):
        lo = rng.integers(0, 255, size=2)
        hi = lo + rng.integers(1, 120, size=2)
        region = tuple(slice(int(a), int(min(b, 256))) for a, b in zip(lo, hi))
        np.testing.assert_array_equal(s.predict(region), whole[region])
    np.testing.assert_array_equal(s.predict_block((2, 1)), whole[96:144, 80:160])
    assert s.blocks_for((slice(40, 50), slice(70, 90))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # Freshly computed (no caches) equals cached.
    fresh = _session(image, block_shape=(48, 80))
    _paint(fresh, truth)
    fresh.train()
    np.testing.assert_array_equal(fresh.predict((slice(100, 200), slice(30, 230))), whole[100:200, 30:230])


def test_deterministic_given_seed(cells):
    image, truth = cells
    preds = []
    for seed in (5, 5, 6):
        s = _session(image, seed=seed)
        _paint(s, truth)
        s.train()
        preds.append(s.predict())
    np.testing.assert_array_equal(preds[0], preds[1])
    assert not np.array_equal(preds[0], preds[2])


def test_volume_3d_and_2d_mode():
    vol, truth = synthetic_cells((24, 48, 48), seed=3, cell_radius=6)
    s = _session(vol, block_shape=(16, 32, 32))
    _paint(s, truth, n_per_class=3)
    s.add_stroke(1, [[2, 5, 40], [20, 5, 40]], radius=1.5, axes=(0, 1))  # painted in a zy plane
    s.train()
    whole = s.predict()
    assert whole.shape == (24, 48, 48, 2)
    region = (slice(10, 20), slice(20, 40), slice(5, 45))
    np.testing.assert_array_equal(s.predict(region), whole[region])
    n3 = s.n_features
    s.feature_mode = "2d"
    assert s.n_features < n3
    s.train()
    assert s.predict(region).shape == (10, 20, 40, 2)


# ---------------------------------------------------------------------------------------------- invalidation


def test_generation_changes_with_everything_that_alters_predictions(cells):
    image, truth = cells
    s = _session(image)
    events = []
    s.add_listener(lambda event, **info: events.append(event))
    g0 = s.generation
    _paint(s, truth)
    assert s.generation == g0  # labels alone do not change the predictions until retrained
    assert s.needs_training
    s.train()
    g1 = s.generation
    assert g1 != g0 and not s.needs_training
    s.train()  # nothing changed: no refit, same generation
    assert s.generation == g1
    s.add_stroke(1, [[5, 5]], radius=1)
    s.train()
    g2 = s.generation
    assert g2 != g1
    s.rename_class(1, "bg")
    assert s.generation == g2
    s.add_class("third")
    g3 = s.generation
    assert g3 != g2
    p = s.predict()
    assert p.shape[-1] == 3 and np.all(p[..., 2] == 0)
    s.feature_selection = FeatureSelection.all()
    assert s.generation != g3
    assert {"labels", "trained", "classes", "features"} <= set(events)


def test_selection_change_invalidates_features_and_model(cells):
    image, truth = cells
    arr = CountingArray(image)
    s = _session(arr, block_shape=(128, 128))
    _paint(s, truth)
    s.train()
    s.predict()
    arr.reads.clear()
    s.feature_selection = SMALL  # same selection: nothing happens
    s.predict()
    assert arr.reads == [] and s.is_trained
    s.feature_selection = SMALL.with_feature("laplacian_of_gaussian", 3.5, True)
    assert not s.is_trained and s.cache_nbytes == 0
    with pytest.raises(RuntimeError, match="feature selection"):
        s.predict()
    s.train()
    assert len(arr.reads) > 0 and s.predict().shape == (256, 256, 2)
    assert s.model.n_features == SMALL.n_channels(2) + 1


def test_remove_class_invalidates_model(cells):
    image, truth = cells
    s = _session(image, classes=("a", "b", "c"))
    _paint(s, truth)
    s.add_stroke(3, [[5, 5]], radius=2)
    s.train()
    assert s.predict().shape[-1] == 3
    s.remove_class(1)
    assert not s.is_trained and s.n_classes == 2
    with pytest.raises(RuntimeError, match="class was removed"):
        s.predict()
    s.train()
    assert s.predict().shape[-1] == 2


# ---------------------------------------------------------------------------------------------- threads


class _GatedClassifier(PixelClassifier):
    """Fits only when the gate opens, so the test decides what happens during a fit."""

    gate = threading.Event()
    started = threading.Event()
    fitted_sizes: list[int] = []

    def fit(self, X, y, n_classes):
        type(self).fitted_sizes.append(len(y))
        type(self).started.set()
        assert type(self).gate.wait(30)
        return super().fit(X, y, n_classes)


@pytest.fixture
def gated():
    _GatedClassifier.gate = threading.Event()
    _GatedClassifier.started = threading.Event()
    _GatedClassifier.fitted_sizes = []
    yield _GatedClassifier
    _GatedClassifier.gate.set()


def _reference_prediction(image, strokes, **kw):
    """Predictions of a fresh session trained synchronously on ``strokes``."""
    kw.setdefault("classifier", PixelClassifier(n_estimators=5, n_jobs=1))
    ref = _session(image, **kw)
    for st in strokes:
        ref.add_stroke(st.label, st.points, st.radius, st.axes, st.erase)
    ref.train()
    return ref.predict()


def test_stroke_during_background_training_ends_with_model_of_newest_labels(cells, gated):
    image, truth = cells
    s = _session(image, classifier=gated(n_estimators=5, n_jobs=1))
    _paint(s, truth)
    future = s.train_async()
    assert gated.started.wait(30)
    s.add_stroke(2, [[128, 128], [140, 150]], radius=3)  # new labels while the fit runs
    gated.gate.set()
    assert future.result(timeout=60) is True
    assert len(gated.fitted_sizes) == 2 and gated.fitted_sizes[1] > gated.fitted_sizes[0]
    assert not s.needs_training
    np.testing.assert_array_equal(s.predict(), _reference_prediction(image, s.strokes))


def test_newer_train_async_supersedes_and_cancel_discards(cells, gated):
    image, truth = cells
    s = _session(image, classifier=gated(n_estimators=5, n_jobs=1))
    _paint(s, truth)
    first = s.train_async()
    assert gated.started.wait(30)
    s.add_stroke(1, [[3, 3]], radius=2)
    second = s.train_async()
    gated.gate.set()
    assert first.result(timeout=60) is False
    assert second.result(timeout=60) is True
    np.testing.assert_array_equal(s.predict(), _reference_prediction(image, s.strokes))
    g = s.generation

    gated.gate.clear()
    gated.started.clear()
    s.add_stroke(1, [[250, 250]], radius=2)
    third = s.train_async()
    assert gated.started.wait(30)
    s.cancel_training()
    gated.gate.set()
    assert third.result(timeout=60) is False
    assert s.generation == g and s.needs_training  # the cancelled fit was not installed


def test_background_training_reports_errors(cells):
    image, _ = cells
    s = _session(image)
    errors = []
    s.add_listener(lambda event, **info: errors.append(info.get("message")) if event == "error" else None)
    s.add_stroke(1, [[5, 5]], radius=2)
    done = []
    future = s.train_async(callback=done.append)
    with pytest.raises(ValueError, match="at least two classes"):
        future.result(timeout=60)
    assert errors and "two classes" in errors[0]
    assert done == [future]


def test_concurrent_predictions_of_different_blocks(cells):
    image, truth = cells
    s = _session(image, block_shape=(64, 64))
    _paint(s, truth)
    s.train()
    blocks = [(i, j) for i in range(4) for j in range(4)]
    results = {}

    def worker(chunk):
        for b in chunk:
            results[b] = s.predict_block(b)

    threads = [threading.Thread(target=worker, args=(blocks[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    serial = _session(image, block_shape=(64, 64))
    _paint(serial, truth)
    serial.train()
    whole = serial.predict()
    for (i, j), p in results.items():
        np.testing.assert_array_equal(p, whole[i * 64 : (i + 1) * 64, j * 64 : (j + 1) * 64])
    assert len(results) == 16


# ---------------------------------------------------------------------------------------------- errors


def test_errors_have_clear_messages(cells):
    image, truth = cells
    s = _session(image)
    with pytest.raises(RuntimeError, match="not trained"):
        s.predict()
    with pytest.raises(ValueError, match="at least two classes: nothing is labelled"):
        s.train()
    s.add_stroke(1, [[5, 5]], radius=2)
    with pytest.raises(ValueError, match="only 'Background' has labels"):
        s.train()
    with pytest.raises(ValueError, match="outside the image"):
        s.add_stroke(2, [[300, 5]], radius=2)
    with pytest.raises(ValueError, match="unknown class 3"):
        s.add_stroke(3, [[5, 5]], radius=2)
    s.add_stroke(2, [[100, 100]], radius=2)
    s.train()
    with pytest.raises(ValueError, match="outside the image"):
        s.predict((slice(0, 257), slice(0, 10)))
    with pytest.raises(ValueError, match="step 1"):
        s.predict((slice(0, 10, 2), slice(0, 10)))
    with pytest.raises(ValueError, match="block index"):
        s.predict_block((9, 0))


@pytest.mark.parametrize(
    "image,kwargs,match",
    [
        (np.zeros(10, np.float32), {}, "2 or 3 spatial axes"),
        (np.zeros((2, 3, 4, 5), np.float32), {}, "channel_axis"),
        (np.zeros((4, 5), bool), {}, "boolean"),
        (np.zeros((4, 5), complex), {}, "dtype"),
        (np.array([["a"]]), {}, "dtype"),
        (np.zeros((4, 5), np.float32), {"channel_axis": 3}, "channel_axis"),
        (np.zeros((4, 5), np.float32), {"feature_mode": "4d"}, "feature_mode"),
        (np.zeros((4, 5), np.float32), {"block_shape": (4,)}, "block_shape"),
    ],
)
def test_constructor_errors(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Session(image, **kwargs)


def test_nan_found_when_features_are_computed(cells):
    image, _ = cells
    bad = image.copy()
    bad[200, 200] = np.nan
    s = _session(bad, block_shape=(64, 64))  # construction does not scan the image
    s.add_stroke(1, [[10, 10]], radius=2)
    s.add_stroke(2, [[20, 20]], radius=2)
    s.train()  # the NaN is far from the labelled block
    with pytest.raises(ValueError, match=r"NaN.*region \[192:256, 192:256\]"):
        s.predict((slice(190, 210), slice(190, 210)))
    s.add_stroke(2, [[199, 199]], radius=2)
    with pytest.raises(ValueError, match="NaN"):
        s.train()
    assert s.predict((slice(0, 20), slice(0, 20))).shape == (20, 20, 2)


def test_replacing_annotations_is_a_label_change(cells):
    from ilastik_widget.core.annotations import Annotations

    image, truth = cells
    s = _session(image)
    _paint(s, truth)
    s.train()
    saved = s.annotations.to_dict()
    s.add_stroke(1, [[128, 128]], radius=4)
    s.train()
    after_stroke = s.predict()
    s.annotations = Annotations.from_dict(saved, s.spatial_shape)  # what project loading does
    assert s.needs_training and s.is_trained
    s.train()
    other = _session(image)
    _paint(other, truth)
    other.train()
    np.testing.assert_array_equal(s.predict(), other.predict())
    assert not np.array_equal(s.predict(), after_stroke)
    with pytest.raises(ValueError, match="shape"):
        s.annotations = Annotations((10, 10))


def test_concurrent_painting_training_and_prediction_settle_on_newest_labels(cells):
    image, truth = cells
    s = _session(image, block_shape=(64, 64))
    strokes = simulated_strokes(truth, n_per_class=8, radius=2, seed=4)
    s.add_stroke(**strokes[0])
    s.add_stroke(**strokes[-1])  # both classes from the start
    errors = []
    stop = threading.Event()
    futures = []

    def painter():
        try:
            for st in strokes[1:-1]:
                s.add_stroke(**st)
                futures.append(s.train_async())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def predictor(seed):
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            lo = rng.integers(0, 200, size=2)
            region = tuple(slice(int(a), int(a) + 50) for a in lo)
            try:
                p = s.predict(region)
                assert p.shape == (50, 50, 2)
            except RuntimeError:
                pass  # not trained yet
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=predictor, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    painter()
    results = [f.result(timeout=120) for f in futures]
    stop.set()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results[-1] is True and not s.needs_training
    expected = _reference_prediction(image, s.strokes, classifier=FAST, block_shape=(64, 64))
    np.testing.assert_array_equal(s.predict(), expected)


# ---------------------------------------------------------------------------------------------- datasets


@pytest.mark.parametrize("shape", [(200, 300), (24, 64, 80)])
def test_synthetic_cells_and_strokes_inside_their_class(shape):
    from ilastik_widget.core.annotations import Annotations

    image, truth = synthetic_cells(shape, seed=3)
    again, _ = synthetic_cells(shape, seed=3)
    assert image.dtype == np.float32 and image.shape == shape and truth.dtype == np.uint8
    np.testing.assert_array_equal(image, again)
    assert set(np.unique(truth)) == {1, 2} and 0.1 < (truth == 2).mean() < 0.5
    # Cells are brighter on average, but single pixels overlap (features have to do the work).
    assert image[truth == 2].mean() > image[truth == 1].mean() + 0.1
    assert np.percentile(image[truth == 2], 10) < np.percentile(image[truth == 1], 90)
    strokes = simulated_strokes(truth, n_per_class=4, radius=2, seed=1)
    assert {s["label"] for s in strokes} == {1, 2} and len(strokes) == 8
    ann = Annotations(shape)
    for s in strokes:
        assert len(s["points"]) >= 2 and s["axes"] == [len(shape) - 2, len(shape) - 1]
        ann.add_stroke(**s)
    coords, labels = ann.labelled()
    np.testing.assert_array_equal(truth[tuple(coords.T)], labels)  # every painted pixel is in its class


def test_prediction_started_before_a_selection_change_uses_its_models_features(cells):
    image, truth = cells

    class GatedArray(CountingArray):
        armed = False
        reading = threading.Event()
        gate = threading.Event()

        def __getitem__(self, index):
            if self.armed:
                self.reading.set()
                assert self.gate.wait(30)
            return super().__getitem__(index)

    arr = GatedArray(image)
    s = _session(arr, block_shape=(128, 128), n_threads=1)  # blocks one after the other
    _paint(s, truth)
    s.train()
    region = (slice(0, 128), slice(0, 256))  # two blocks
    expected = s.predict(region)
    s._store._features.clear()
    s._store._probabilities.clear()  # force feature reads inside the next prediction
    arr.armed = True
    result = {}

    def run():
        try:
            result["p"] = s.predict(region)
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert arr.reading.wait(30)
    s.feature_selection = FeatureSelection.all()  # changes between the two blocks' reads
    arr.gate.set()
    t.join(60)
    assert "error" not in result, result.get("error")
    np.testing.assert_array_equal(result["p"], expected)
    assert not s.is_trained


def test_time_series_source_asks_for_one_time_point():
    from ilastik_widget.io.sources import open_source

    src = open_source(np.random.default_rng(0).random((3, 32, 40), dtype=np.float32), axes="tyx")
    with pytest.raises(ValueError, match="time series of 3 time points"):
        Session(src)
    s = Session(src.at_time(1))
    assert s.spatial_shape == (32, 40)
    assert np.array_equal(np.asarray(s.image), np.asarray(src.array[1]))


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"channel_axis": 1.5}, "channel_axis"),
        ({"channel_axis": "2"}, "channel_axis"),
        ({"channel_axis": True}, "channel_axis"),
        ({"classes": []}, "classes"),
        ({"classes": "Background"}, "classes"),
        ({"n_threads": -1}, "n_threads"),
        ({"n_threads": 0}, "n_threads"),
        ({"seed": 1.5}, "seed"),
        ({"feature_mode": "4d"}, "feature_mode"),
        ({"block_shape": (0, 64)}, "block_shape"),
    ],
)
def test_bad_session_arguments_are_named(kwargs, words):
    image = np.zeros((3, 32, 32), np.float32)
    if "channel_axis" not in kwargs:
        image = image[0]
    with pytest.raises(ValueError, match=words):
        Session(image, **kwargs)


def test_a_dask_array_of_unknown_shape_says_what_to_do():
    da = pytest.importorskip("dask.array")
    x = da.ones((64, 64), chunks=32)
    unknown = x[x[:, 0] > 0]  # boolean indexing: the number of rows is unknown
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        Session(unknown)


@pytest.mark.parametrize("image", [np.full((32, 32), 2**64 - 1, np.uint64), np.full((32, 32), 1e39)])
def test_values_too_large_for_float32_are_named_before_the_classifier_sees_them(image):
    image = image.copy()
    image[:16] = 0  # an edge: the structure tensor squares its gradient
    s = Session(image)
    s.add_stroke(1, [[4, 4]], radius=2)
    s.add_stroke(2, [[28, 28]], radius=2)
    with pytest.raises(ValueError, match="too large for 32-bit"):
        s.train()


def test_the_classifier_uses_the_channels_chosen_and_the_choice_is_checked():
    image, truth = synthetic_cells((96, 96), seed=5)
    noise = np.random.default_rng(0).random(image.shape).astype(np.float32)
    two = np.stack([image, noise], axis=-1)
    s = _session(two, channel_axis=-1)
    one = _session(image)
    _paint(s, truth)
    _paint(one, truth)
    assert s.n_features == 2 * one.n_features
    s.channels = [0]  # the noise channel no longer feeds the classifier
    assert s.channels == (0,) and s.n_features == one.n_features and not s.is_trained
    np.testing.assert_allclose(s.train().predict(), one.train().predict(), atol=1e-6)
    s.channels = [0, 1]
    assert s.channels is None  # all channels
    for bad in ([], [2], [-1], [0.5], "0", [True]):
        with pytest.raises(ValueError, match="channel"):
            s.channels = bad
    assert s.channels is None
