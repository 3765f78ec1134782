"""Tests of ilastik_widget.core.classifier: determinism, column alignment, presets, export without pickle."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from ilastik_widget.core.classifier import ACCURATE, INTERACTIVE, PixelClassifier


def _data(n=600, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 2, 1)
    return X, y


def test_fit_predict_learns_and_is_float32():
    X, y = _data()
    clf = PixelClassifier(n_estimators=20, seed=0).fit(X, y, 2)
    Xt, yt = _data(seed=1)
    p = clf.predict_proba(Xt)
    assert p.dtype == np.float32 and p.shape == (len(Xt), 2)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert ((p.argmax(1) + 1) == yt).mean() > 0.85


def test_deterministic_for_seed_and_independent_of_n_jobs():
    X, y = _data()
    p1 = PixelClassifier(n_estimators=15, seed=3, n_jobs=1).fit(X, y, 2).predict_proba(X[:100])
    p2 = PixelClassifier(n_estimators=15, seed=3, n_jobs=2).fit(X, y, 2).predict_proba(X[:100], n_jobs=2)
    p3 = PixelClassifier(n_estimators=15, seed=4).fit(X, y, 2).predict_proba(X[:100])
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_columns_aligned_to_classes_with_zeros_for_absent():
    X, y = _data()
    y = np.where(y == 2, 4, 2)  # only classes 2 and 4 of 5
    clf = PixelClassifier(n_estimators=10).fit(X, y, 5)
    p = clf.predict_proba(X)
    assert p.shape == (len(X), 5)
    assert np.all(p[:, [0, 2, 4]] == 0)
    assert ((p.argmax(1) + 1) == y).mean() > 0.95


def test_single_class_training_gives_certainty():
    X, _ = _data(50)
    p = PixelClassifier(n_estimators=3).fit(X, np.full(50, 2), 3).predict_proba(X)
    np.testing.assert_array_equal(p, np.tile([0, 1, 0], (50, 1)).astype(np.float32))


def test_fit_errors():
    X, y = _data(20)
    with pytest.raises(ValueError, match="labels must be in"):
        PixelClassifier().fit(X, y + 5, 2)
    with pytest.raises(ValueError, match="labels"):
        PixelClassifier().fit(X, y[:10], 2)
    with pytest.raises(ValueError, match="without labelled"):
        PixelClassifier().fit(X[:0], y[:0], 2)
    with pytest.raises(RuntimeError, match="not trained"):
        PixelClassifier().predict_proba(X)
    clf = PixelClassifier(n_estimators=2).fit(X, y, 2)
    with pytest.raises(ValueError, match="features"):
        clf.predict_proba(X[:, :3])
    with pytest.raises(ValueError):
        PixelClassifier(n_estimators=0)


def test_max_samples_per_class_caps_training_rows_deterministically():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4)).astype(np.float32)
    y = np.r_[np.full(4800, 1), np.full(200, 2)]
    clf = PixelClassifier(n_estimators=4, max_samples_per_class=300, seed=1).fit(X, y, 2)
    # The root of every tree saw the subsample size (300 + 200), not 5000.
    # (bootstrap weights at the root sum to the number of training rows).
    assert all(est.tree_.weighted_n_node_samples[0] == 500 for est in clf.forest.estimators_)
    again = PixelClassifier(n_estimators=4, max_samples_per_class=300, seed=1).fit(X, y, 2)
    np.testing.assert_array_equal(clf.predict_proba(X[:50]), again.predict_proba(X[:50]))


def test_presets_and_params_are_json():
    assert ACCURATE["n_estimators"] == 100 and ACCURATE["max_depth"] is None
    assert INTERACTIVE["n_estimators"] < ACCURATE["n_estimators"]
    clf = PixelClassifier(**INTERACTIVE, seed=7)
    d = json.loads(json.dumps(clf.params()))
    again = PixelClassifier.from_params(d)
    assert again.params() == clf.params() and again.seed == 7
    with pytest.raises(ValueError, match="unknown"):
        PixelClassifier.from_params({"n_trees": 3})


def test_export_to_arrays_round_trip_via_npz_without_pickle():
    X, y = _data()
    y[:30] = 3
    clf = PixelClassifier(n_estimators=7, seed=2).fit(X, y, 4)
    buf = io.BytesIO()
    np.savez(buf, **clf.to_arrays())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    back = PixelClassifier.from_arrays(arrays, clf.params())
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.n_classes == 4 and back.params() == clf.params()


def test_prediction_independent_of_threads_with_fractional_leaves():
    # Shallow trees give fractional leaf probabilities, where a summation order would show.
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 8)).astype(np.float32)
    y = np.where(X[:, 0] + rng.normal(scale=1.0, size=3000) > 0, 2, 1)
    clf = PixelClassifier(n_estimators=13, max_depth=4, seed=0, n_jobs=2).fit(X, y, 2)
    Xt = rng.normal(size=(20000, 8)).astype(np.float32)
    p1, p2, p3 = (clf.predict_proba(Xt, n_jobs=n) for n in (1, 2, 3))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, p3)
    ref = clf.forest.predict_proba(Xt).astype(np.float32)
    np.testing.assert_allclose(p1, ref, atol=1e-6)
    assert len(np.unique(p1[:, 0])) > 20  # really fractional


# ---------------------------------------------------------------------- forest arrays from an untrusted file
@pytest.fixture(scope="module")
def forest_arrays():
    X, y = _data(400, n_features=5)
    y[:20] = 3
    clf = PixelClassifier(n_estimators=3, max_depth=6, seed=1).fit(X, y, 3)
    return clf.to_arrays(), clf.params()


def _inner(a, i=0):
    """Index of an inner node of tree ``i`` (one with children)."""
    return int(np.flatnonzero(a[f"tree{i}/left_child"] != -1)[0])


def _inner_not_root(a):
    left = a["tree0/left_child"]
    return int(np.flatnonzero((left != -1) & (np.arange(len(left)) > 0))[0])


def _leaf(a, i=0):
    return int(np.flatnonzero(a[f"tree{i}/left_child"] == -1)[0])


def _set(key, index, value):
    def edit(a):
        arr = a[key].copy()
        arr[index(a) if callable(index) else index] = value
        a[key] = arr

    return edit


CRAFTED = {
    "child far out of range": (_set("tree0/left_child", _inner, 10**9), "children .* must be later nodes"),
    "child negative": (_set("tree0/right_child", _inner, -7), "children"),
    "child pointing back (cycle)": (_set("tree0/right_child", _inner_not_root, 0), "must be later nodes"),
    "child is the node itself": (_set("tree0/left_child", 0, 0), "must be later nodes"),
    "one child": (_set("tree0/right_child", _inner, -1), "has one child"),
    "feature out of range": (_set("tree0/feature", _inner, 5), r"feature 5, expected in 0\.\.4"),
    "feature huge": (_set("tree0/feature", _inner, 2**62), "splits on feature"),
    "feature negative": (_set("tree0/feature", _inner, -1), "splits on feature"),
    "leaf with a feature": (_set("tree0/feature", _leaf, 0), r"expected -2 \(a leaf\)"),
    "threshold NaN": (_set("tree0/threshold", _inner, np.nan), "threshold of node .* is not finite"),
    "threshold infinite": (_set("tree0/threshold", _inner, np.inf), "threshold"),
    "value NaN": (_set("tree0/values", (0, 0, 0), np.nan), "values must be finite"),
    "value negative": (_set("tree0/values", (0, 0, 0), -1.0), "not negative"),
    "missing_go_to_left not 0/1": (_set("tree0/missing_go_to_left", 0, 7), "missing_go_to_left"),
    "max_depth wrong": (_set("tree0/max_depth", 0, 10**6), "max_depth is 1000000 but the tree is"),
    "n_trees more than stored": (_set("meta", 2, 4), "'tree3/.*' is missing"),
    "n_features zero": (_set("meta", 1, 0), "n_features must be in"),
    "n_classes smaller than classes": (_set("meta", 0, 2), "classes must be increasing labels in 1..2"),
    "classes out of order": (_set("classes", 0, 3), "classes must be increasing"),
}


def _crafted_cases():
    def drop(key):
        return lambda a: a.pop(key)

    def retype(key, dtype):
        def edit(a):
            a[key] = a[key].astype(dtype)

        return edit

    def reshape_values(a):
        a["tree1/values"] = a["tree1/values"][:, :, :2].copy()

    def shared_child(a):
        # node 0's right child is also another node's child: a graph, not a tree
        left, right = a["tree0/left_child"].copy(), a["tree0/right_child"].copy()
        k = int(np.flatnonzero((left != -1) & (np.arange(len(left)) > 0))[0])
        right[0] = left[k]
        a["tree0/right_child"] = right

    def empty_tree(a):
        for name in list(a):
            if name.startswith("tree0/") and name not in ("tree0/max_depth",):
                a[name] = a[name][:0].copy()

    cases = dict(CRAFTED)
    cases.update(
        {
            "missing node array": (drop("tree2/threshold"), "'tree2/threshold' is missing"),
            "missing meta": (drop("meta"), "'meta' is missing"),
            "extra array": (lambda a: a.update({"tree9/values": np.zeros(3)}), "unexpected forest arrays"),
            "children int32": (retype("tree0/left_child", np.int32), "must be int64 1D, got int32"),
            "threshold float32": (retype("tree0/threshold", np.float32), "must be float64"),
            "values float32": (retype("tree1/values", np.float32), "values' must be float64 3D"),
            "values of the wrong shape": (reshape_values, r"values must have shape"),
            "two parents": (shared_child, "parents"),
            "no nodes": (empty_tree, "one equal length >= 1"),
        }
    )
    return cases


@pytest.mark.parametrize("case", sorted(_crafted_cases()))
def test_from_arrays_refuses_crafted_trees_before_scikit_learn_sees_them(forest_arrays, case):
    arrays, params = forest_arrays
    edit, match = _crafted_cases()[case]
    crafted = dict(arrays)
    edit(crafted)
    with pytest.raises(ValueError, match=match):
        PixelClassifier.from_arrays(crafted, params)
    # the untouched arrays still load and predict as before
    X, _ = _data(50, n_features=5)
    PixelClassifier.from_arrays(dict(arrays), params).predict_proba(X)


def test_parameters_are_checked_not_converted():
    for bad in (
        {"n_estimators": 2.5},
        {"n_estimators": "10"},
        {"n_estimators": True},
        {"n_estimators": 10**9},
        {"max_depth": 0},
        {"seed": -1},
        {"seed": 2**40},
        {"n_jobs": 0},
        {"n_jobs": 10**9},
        {"max_samples_per_class": 0.5},
        {"max_features": "all"},
        {"max_features": 1.5},
        {"max_features": 0},
        {"min_samples_leaf": 0},
        {"bootstrap": "yes"},
    ):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            PixelClassifier.from_params(bad)
    ok = PixelClassifier.from_params({"max_features": None, "n_jobs": -1, "max_depth": np.int64(5), "seed": 2**32 - 1})
    assert ok.max_depth == 5 and isinstance(ok.max_depth, int)
