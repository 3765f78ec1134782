"""The features of a volume's planes in view, computed while the user paints the first class."""

from __future__ import annotations

import numpy as np
import pytest

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.datasets import synthetic_cells
from ilastik_widget.widget.debounce import Debounced
from ilastik_widget.widget.features_ahead import panels_of, planes_in_view
from ilastik_widget.widget.widget import IlastikWidget

SHAPE = (30, 64, 80)
# the small scales only: quick, and every filter still runs
SEL = FeatureSelection(frozenset((f, s) for f, s in FeatureSelection.all().selected if s in (0.7, 1.6)))


def plane(axis: int, index: int, shape=SHAPE) -> tuple[slice, ...]:
    return tuple(slice(index, index + 1) if a == axis else slice(0, n) for a, n in enumerate(shape))


@pytest.mark.parametrize(
    "layout, panels",
    [
        ("4panel", ["xy", "xz", "yz"]),
        ("4panel-alt", ["xy", "xz", "yz"]),
        ("xy", ["xy"]),
        ("xz-3d", ["xz"]),
        ("yz", ["yz"]),
        ("3d", []),
        ("something new", ["xy", "xz", "yz"]),
        (None, ["xy", "xz", "yz"]),
    ],
)
def test_panels_of_a_layout(layout, panels):
    assert panels_of(layout) == panels


def test_planes_in_view_go_through_the_voxel_at_the_position():
    # voxel i is centred on coordinate i: 9.6 is in voxel 10, 40.4 in 40, -3 is clipped to the first voxel
    state = {"position": [9.6, 40.4, -3.0], "layout": "4panel", "crossSectionOrientation": [0, 0, 0, 1]}
    assert planes_in_view(state, SHAPE) == [plane(0, 10), plane(1, 40), plane(2, 0)]
    assert planes_in_view({**state, "layout": "xz"}, SHAPE) == [plane(1, 40)]
    assert planes_in_view({"position": [100, 100, 100]}, SHAPE) == [plane(0, 29), plane(1, 63), plane(2, 79)]


def test_planes_in_view_of_a_large_volume_are_the_tiles_under_the_position():
    shape = (10, 1300, 700)
    regions = planes_in_view({"position": [4, 1100, 600], "layout": "xy"}, shape)
    assert regions == [(slice(4, 5), slice(1024, 1300), slice(512, 700))]


@pytest.mark.parametrize(
    "state, shape",
    [
        ({}, SHAPE),
        ("not a dict", SHAPE),
        ({"position": [1, 2]}, SHAPE),
        ({"position": [1, 2, float("nan")]}, SHAPE),
        ({"position": [1, 2, 10**400]}, SHAPE),  # an int beyond float range, as JSON can give
        ({"position": [1, True, 2]}, SHAPE),
        ({"position": "1,2,3"}, SHAPE),
        ({"position": [1, 2, 3], "crossSectionOrientation": [0.38, 0, 0, 0.92]}, SHAPE),  # rotated: no plane
        ({"position": [1, 2, 3], "crossSectionOrientation": "flat"}, SHAPE),
        ({"position": [1, 2]}, (64, 80)),  # 2D images compute their features at the first stroke
        ({"position": [1, 2, 3], "layout": "3d"}, SHAPE),
    ],
)
def test_no_planes_in_view(state, shape):
    assert planes_in_view(state, shape) == []


@pytest.fixture
def volume():
    image, truth = synthetic_cells(SHAPE, seed=3)
    return image, truth


def make_widget(image, **kwargs):
    w = IlastikWidget(image, features=SEL, classifier={"n_estimators": 10, "n_jobs": 1}, **kwargs)
    w.send = lambda content, buffers=None: None
    return w


def paint(w, truth, label: int, z: int) -> None:
    """A stroke of class ``label`` inside that class on the xy plane ``z``."""
    u, v = np.nonzero(truth[z] == label)
    w.add_stroke(label, np.stack([np.full(3, z), u[:3], v[:3]], 1), radius=1, axes=(1, 2))


def test_features_in_view_are_computed_once_the_user_paints(volume):
    image, truth = volume
    w = make_widget(image)
    try:
        shown = [plane(0, 12), plane(1, 30), plane(2, 41)]
        w.viewer_state = {"position": [12.0, 30.0, 41.0], "layout": "4panel"}
        w.wait()
        assert not any(w.session.has_features(r) for r in shown)  # only looking: nothing is computed
        paint(w, truth, 1, 12)  # the first class: the second one will train
        w.wait()
        assert all(w.session.has_features(r) for r in shown)
        # the next slice after scrolling, once the view is still again
        w.viewer_state = {**w.viewer_state, "position": [13.0, 30.0, 41.0]}
        w.wait()
        assert w.session.has_features(plane(0, 13))
        # a new feature selection: the planes in view again, with the new features
        w.select_features({"features": {"gaussian_smoothing": [0.7]}})
        assert not w.session.has_features(plane(0, 13))
        w.wait()
        assert w.session.has_features(plane(0, 13)) and w.session.n_features == 1
    finally:
        w.close()


def test_a_position_given_to_the_constructor_counts(volume):
    image, truth = volume
    w = make_widget(image, viewer_state={"position": [3, 4, 5], "layout": "xy"})
    try:
        paint(w, truth, 2, 3)
        w.wait()
        assert w.session.has_features(plane(0, 3)) and not w.session.has_features(plane(1, 4))
    finally:
        w.close()


def test_nothing_is_computed_ahead_once_trained_or_without_features(volume):
    image, truth = volume
    w = make_widget(image, live=False)
    try:
        for label in (1, 2):
            paint(w, truth, label, 12)
        w.update_now().result(60)
        w.viewer_state = {"position": [20.0, 10.0, 10.0], "layout": "4panel"}
        w.wait()
        assert not w.session.has_features(plane(0, 20))  # the panels' predictions compute what they need

        other = make_widget(image)
        try:
            paint(other, truth, 1, 20)
            other.select_features("none")
            other.viewer_state = {"position": [20.0, 10.0, 10.0], "layout": "4panel"}
            other.wait()
            assert other.error == "" and not other.session.has_features(plane(0, 20))
        finally:
            other.close()
    finally:
        w.close()


def test_a_2d_image_computes_nothing_ahead():
    image, truth = synthetic_cells((64, 80), seed=3)
    w = make_widget(image)
    try:
        u, v = np.nonzero(truth == 1)
        w.add_stroke(1, np.stack([u[:3], v[:3]], 1), radius=1)
        w.viewer_state = {"position": [10.0, 10.0], "layout": "xy"}
        w.wait()
        assert not w.session.has_features(None)
    finally:
        w.close()


def test_debounced_work_runs_once_after_a_burst_and_survives_its_errors():
    runs = []

    def work():
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("the first run fails")
        return len(runs)

    later = Debounced(work, 0.05, "test-debounce", "test work")
    try:
        for _ in range(20):
            later.schedule()
        assert later.wait(10) is None and runs == [0]  # one run for the burst; its error is logged, not raised
        later.schedule()
        assert later.wait(10) == 2
    finally:
        later.close()
    later.schedule()  # closed: nothing runs
    assert runs == [0, 1]
