"""The widget in a real JupyterLab, driven with the mouse and keyboard, checked in the kernel and on screen.

One notebook for the whole module (starting the viewer is the slow part); the tests run in file order and build on
each other: the image is drawn, two classes are painted, predictions appear, then eraser, undo/redo, deleting a
stroke from the list, keyboard shortcuts and a feature-matrix change each change the kernel's state and the pixels.

Screen checks read pixels at voxel positions through ``voxelToScreen``: a labelled pixel is one that moved towards
its class colour from the raw-only screenshot taken before painting.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from widget_driver import WidgetDriver, classify, dist, grid

SHAPE = (256, 256)

NOTEBOOK = [
    """\
import json
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells(%r, seed=0)
strokes = simulated_strokes(truth, n_per_class=2, radius=3, seed=0)
w = IlastikWidget(image)
w.brush_size = 7
w.set_layer("probabilities", visible=False)   # the label checks read the labels layer over the raw image
w"""
    % (SHAPE,),
    "_E2E_DONE = True",
]

state: dict = {}


@pytest.fixture(scope="module")
def wd(open_notebook_module) -> WidgetDriver:
    lab = open_notebook_module("widget.ipynb", NOTEBOOK)
    d = WidgetDriver(lab, "w")
    d.settle()
    state["image"] = np.asarray(d.k("image.tolist()"), np.float32)
    state["truth"] = np.asarray(d.k("truth.tolist()"), np.uint8)
    state["strokes"] = d.k("[{'label': s['label'], 'points': np.asarray(s['points']).tolist()} for s in strokes]")
    return d


def tinted(before: np.ndarray, after: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Per point: did the pixel move most of the way from the raw image towards ``color``?"""
    return dist(after, color) < 0.6 * dist(before, color)


def like_raw(raw: np.ndarray, now: np.ndarray) -> np.ndarray:
    return dist(now, raw) < 30


def stroke_points(label: int) -> np.ndarray:
    return np.concatenate([np.asarray(s["points"]) for s in state["strokes"] if s["label"] == label])


def kernel_labels_at(wd: WidgetDriver, points) -> np.ndarray:
    pts = np.rint(np.asarray(points)).astype(int).tolist()
    return np.asarray(wd.k(f"[int(v) for v in w.session.labels()[tuple(np.array({pts}).T)]]"))


# -------------------------------------------------------------------------------------------------------------
def test_notebook_runs_and_viewer_draws_the_image(wd):
    image = state["image"]
    pts = grid(8)
    shot = wd.lab.screenshot_array()
    state["raw_shot"] = shot
    grey = wd.sample(pts, shot).mean(axis=1)
    ref = ndi.gaussian_filter(image, 1.0)[tuple(pts.T)]
    assert grey.std() > 5, "the panel is uniform: the image is not drawn"
    r = np.corrcoef(grey, ref)[0, 1]
    assert r > 0.6, f"screen pixels do not follow the image (correlation {r:.2f})"
    # and the cells are brighter than the background, where the ground truth says
    truth = state["truth"][tuple(pts.T)]
    assert grey[truth == 2].mean() > grey[truth == 1].mean() + 5


def test_mouse_paints_strokes_of_two_classes(wd):
    raw = state["raw_shot"]
    for label in (1, 2):
        wd.press(str(label))
        wd.lab.wait_for(lambda: wd.k("w.active_class") == label, 20, f"active class {label} in the kernel")
        for s in state["strokes"]:
            if s["label"] == label:
                wd.drag(s["points"])
    n = len(state["strokes"])
    wd.lab.wait_for(lambda: wd.k("len(w.session.annotations.strokes)") == n, 30, f"{n} strokes in the kernel")
    assert sorted(wd.k("[s.label for s in w.session.annotations.strokes]")) == sorted(
        s["label"] for s in state["strokes"]
    )
    assert wd.k("len(w.strokes)") == n
    wd.settle()
    colors = wd.class_colors()
    shot = wd.lab.screenshot_array()
    for label in (1, 2):
        pts = stroke_points(label)
        got = kernel_labels_at(wd, pts)
        assert (got == label).mean() > 0.95, f"kernel labels at class-{label} stroke points: {got}"
        ok = tinted(wd.sample(pts, raw), wd.sample(pts, shot), colors[label - 1])
        assert ok.mean() > 0.9, f"class-{label} strokes not drawn in their colour on screen ({ok.mean():.2f})"
    # unpainted pixels stay as they were
    far = grid(16)
    lab_far = kernel_labels_at(wd, far)
    assert like_raw(wd.sample(far[lab_far == 0], raw), wd.sample(far[lab_far == 0], shot)).mean() > 0.95


def _prediction_view(wd) -> None:
    wd.kexec("w.set_layer('raw', visible=False); w.set_layer('probabilities', visible=True, opacity=1.0)")
    wd.settle()


def _raw_view(wd) -> None:
    wd.kexec("w.set_layer('raw', visible=True); w.set_layer('probabilities', visible=False, opacity=0.5)")
    wd.settle()


def _prediction_points(wd, seg: np.ndarray) -> np.ndarray:
    """Grid points away from ground-truth edges, prediction edges and the painted strokes."""
    truth = state["truth"]
    core = ndi.binary_erosion(truth == 1, iterations=3) | ndi.binary_erosion(truth == 2, iterations=3)
    flat = ndi.maximum_filter(seg, 5) == ndi.minimum_filter(seg, 5)
    labelled = np.asarray(wd.k("(w.session.labels() > 0).astype(int).tolist()"), bool)
    away = ~ndi.binary_dilation(labelled, iterations=4)
    pts = grid(4)
    keep = (core & flat & away)[tuple(pts.T)]
    return pts[keep]


def test_predictions_appear_with_the_ground_truth_colours(wd):
    assert wd.k("w.session.is_trained"), "the session did not train after two classes were painted"
    _prediction_view(wd)
    seg = np.asarray(wd.k("w.session.segmentation().tolist()"), np.uint8)
    pts = _prediction_points(wd, seg)
    assert len(pts) > 500
    screen = classify(wd.sample(pts), wd.class_colors())
    truth = state["truth"][tuple(pts.T)]
    kernel = seg[tuple(pts.T)]
    assert (truth == 2).sum() > 50 and (truth == 1).sum() > 50
    agree_kernel = (screen == kernel).mean()
    agree_truth = (screen == truth).mean()
    assert agree_kernel > 0.95, f"screen shows {agree_kernel:.3f} of the kernel's predictions"
    assert agree_truth > 0.85, f"screen agrees with the ground truth at {agree_truth:.3f} of unpainted points"
    state["pred_screen"] = (pts, screen)
    wd.lab.save_screenshot("widget-predictions.png", wd.panel_rect())
    _raw_view(wd)


def test_eraser_removes_labels(wd):
    raw = state["raw_shot"]
    # erase at one end of the longest class-2 stroke; its far end keeps its label
    pts = max((np.asarray(s["points"]) for s in state["strokes"] if s["label"] == 2), key=lambda p: dist(p[0], p).max())
    erase_at, keep_at = pts[:1], pts[np.argmax(dist(pts[0], pts))][None]
    assert dist(erase_at, keep_at)[0] > 9  # brush and eraser radius 3.5
    n0 = wd.k("len(w.session.annotations.strokes)")
    wd.press("e")
    wd.lab.wait_for(lambda: wd.k("w.mode") == "erase", 20, "eraser mode in the kernel")
    wd.drag([erase_at[0], erase_at[0] + [0, 1]])
    wd.lab.wait_for(lambda: wd.k("len(w.session.annotations.strokes)") == n0 + 1, 30, "the erase stroke")
    assert wd.k("w.session.annotations.strokes[-1].erase") is True
    assert kernel_labels_at(wd, erase_at)[0] == 0
    assert kernel_labels_at(wd, keep_at)[0] == 2
    wd.settle()
    color2 = wd.class_colors()[1]
    shot = wd.lab.screenshot_array()
    assert like_raw(wd.sample(erase_at, raw), wd.sample(erase_at, shot)).all(), "erased pixel still coloured"
    assert tinted(wd.sample(keep_at, raw), wd.sample(keep_at, shot), color2).all()
    wd.press("b")
    wd.lab.wait_for(lambda: wd.k("w.mode") == "paint", 20, "brush mode in the kernel")
    state["erased_at"] = erase_at


def test_undo_and_redo(wd):
    raw = state["raw_shot"]
    erase_at = state["erased_at"]
    color2 = wd.class_colors()[1]
    n0 = wd.k("len(w.session.annotations.strokes)")
    wd.press("Control+z")
    wd.lab.wait_for(lambda: wd.k("len(w.session.annotations.strokes)") == n0 - 1, 30, "undo in the kernel")
    assert kernel_labels_at(wd, erase_at)[0] == 2
    wd.settle()
    assert tinted(wd.sample(erase_at, raw), wd.sample(erase_at), color2).all(), "undo did not repaint on screen"
    wd.press("Control+Shift+z")
    wd.lab.wait_for(lambda: wd.k("len(w.session.annotations.strokes)") == n0, 30, "redo in the kernel")
    assert kernel_labels_at(wd, erase_at)[0] == 0
    wd.settle()
    assert like_raw(wd.sample(erase_at, raw), wd.sample(erase_at)).all(), "redo did not erase on screen"
    wd.press("Control+z")
    wd.lab.wait_for(lambda: wd.k("len(w.session.annotations.strokes)") == n0 - 1, 30, "undo again")


def test_delete_stroke_from_the_list(wd):
    raw = state["raw_shot"]
    summaries = wd.k("w.strokes")
    target = [s for s in summaries if s["label"] == 1][-1]
    sid = target["id"]
    pts = np.asarray(wd.k(f"[s.points.tolist() for s in w.session.annotations.strokes if s.id == {sid}][0]"))
    assert (kernel_labels_at(wd, pts) == 1).all()
    wd.testid(f"stroke-row-{sid}").wait_for(state="attached")
    wd.testid(f"stroke-delete-{sid}").click()
    wd.lab.wait_for(lambda: sid not in [s["id"] for s in wd.k("w.strokes")], 30, f"stroke {sid} gone in the kernel")
    assert sid not in wd.k("[s.id for s in w.session.annotations.strokes]")
    assert (kernel_labels_at(wd, pts) == 0).all()
    assert wd.testid(f"stroke-row-{sid}").count() == 0
    wd.settle()
    assert like_raw(wd.sample(pts, raw), wd.sample(pts)).mean() > 0.9, "deleted stroke still drawn"
    # repaint it so the session keeps two classes for the tests below
    wd.press("1")
    wd.lab.wait_for(lambda: wd.k("w.active_class") == 1, 20, "class 1")
    wd.drag(pts)
    wd.lab.wait_for(lambda: (kernel_labels_at(wd, pts) == 1).mean() > 0.95, 30, "the stroke painted again")


def _cell_types(wd) -> list[str]:
    return wd.page.evaluate(
        """(path) => window.__findPanel(path).content.widgets.map((c) => c.model.type)""", wd.lab.path
    )


def test_keyboard_shortcuts_act_on_the_widget_only(wd):
    # Put the notebook in command mode with the first cell active: there JupyterLab's own '2' would turn the
    # cell into a Markdown heading, so a leaked key shows.
    wd.page.locator(".jp-Cell .jp-InputPrompt").first.click()
    wd.page.keyboard.press("Escape")
    types = _cell_types(wd)
    wd.press("2")
    wd.lab.wait_for(lambda: wd.k("w.active_class") == 2, 20, "'2' to select class 2")
    wd.press("1")
    wd.lab.wait_for(lambda: wd.k("w.active_class") == 1, 20, "'1' to select class 1")
    assert _cell_types(wd) == types, "a shortcut leaked to JupyterLab"

    # 'p' shows and hides the probabilities, in the kernel and on screen
    raw = state["raw_shot"]
    pts = grid(16)
    pts = pts[kernel_labels_at(wd, pts) == 0]
    assert wd.k("w.layers['probabilities']['visible']") is False
    wd.press("p")
    wd.lab.wait_for(lambda: wd.k("w.layers['probabilities']['visible']") is True, 20, "'p' to show probabilities")
    wd.settle()
    shown = wd.sample(pts)
    assert (~like_raw(wd.sample(pts, raw), shown)).mean() > 0.5, "probabilities not drawn after 'p'"
    assert wd.testid("layer-visible-probabilities").is_checked()
    wd.press("p")
    wd.lab.wait_for(lambda: wd.k("w.layers['probabilities']['visible']") is False, 20, "'p' to hide probabilities")
    wd.settle()
    assert like_raw(wd.sample(pts, raw), wd.sample(pts)).mean() > 0.95, "probabilities still drawn after 'p'"
    assert not wd.testid("layer-visible-probabilities").is_checked()
    assert _cell_types(wd) == types, "a shortcut leaked to JupyterLab"


def test_feature_matrix_change(wd):
    cell = wd.testid("feature-cell-gaussian_smoothing-3.5")
    if not cell.is_visible():
        wd.root.get_by_text("Features", exact=True).first.click()
    cell.wait_for(state="visible")
    _prediction_view(wd)
    seg_all = np.asarray(wd.k("w.session.segmentation().tolist()"), np.uint8)
    pts = _prediction_points(wd, seg_all)
    colors = wd.class_colors()
    before = classify(wd.sample(pts), colors)
    gen0 = wd.k("w.session.generation")

    wd.testid("features-none").click()
    cell.click()
    only = "sorted(map(list, FeatureSelection.from_dict(w.feature_selection).selected))"
    wd.kexec("from ilastik_widget.core.features import FeatureSelection")
    wd.lab.wait_for(lambda: wd.k(only) == [["gaussian_smoothing", 3.5]], 30, "the new feature selection in w")
    assert wd.k("sorted(map(list, w.session.feature_selection.selected))") == [["gaussian_smoothing", 3.5]]
    wd.lab.wait_for(lambda: wd.k("w.session.generation") != gen0, 30, "a new generation")
    wd.settle()
    seg_one = np.asarray(wd.k("w.session.segmentation().tolist()"), np.uint8)
    assert (seg_one != seg_all).mean() > 0.01, "one smoothing feature predicts the same as all"
    flat = ndi.maximum_filter(seg_one, 3) == ndi.minimum_filter(seg_one, 3)
    check = grid(4)
    check = check[flat[tuple(check.T)]]
    assert len(check) > 500
    assert (classify(wd.sample(check), colors) == seg_one[tuple(check.T)]).mean() > 0.95, (
        "screen does not show the new predictions"
    )
    after = classify(wd.sample(pts), colors)
    assert (after != before).mean() > 0.01, "the screen did not change"

    wd.testid("features-all").click()
    wd.lab.wait_for(
        lambda: wd.k(f"{only} == sorted(map(list, FeatureSelection.all().selected))"), 30, "all features selected again"
    )
    wd.settle()
    after_all = classify(wd.sample(pts), colors)
    assert (after_all == seg_all[tuple(pts.T)]).mean() > 0.95
    _raw_view(wd)


def test_feature_matrix_comes_from_the_kernel(wd):
    """The matrix, its tooltips and All/None follow source_info's feature table; without one (an older kernel) the
    panel says so instead of guessing."""
    cell = wd.testid("feature-cell-hessian_of_gaussian_eigenvalues-1.0")
    if not cell.is_visible():
        wd.root.get_by_text("Features", exact=True).first.click()
    cell.wait_for(state="visible")
    assert "eigenvalues of the Hessian" in cell.get_attribute("title")
    assert wd.root.locator("[data-testid^='feature-cell-']").count() == 37
    assert wd.testid("feature-cell-laplacian_of_gaussian-0.3").count() == 0

    wd.kexec("w.source_info = {k: v for k, v in w.source_info.items() if k != 'feature_table'}")
    wd.testid("features-unavailable").wait_for(state="visible", timeout=20_000)
    assert wd.root.locator("[data-testid^='feature-cell-']").count() == 0
    assert wd.testid("features-all").is_disabled() and wd.testid("features-none").is_disabled()

    wd.kexec(
        "from ilastik_widget.widget import state as _state; w.source_info = _state.source_info(w.session, w.chunk_server)"
    )
    cell.wait_for(state="visible", timeout=20_000)
    assert wd.testid("features-unavailable").count() == 0 and not wd.testid("features-all").is_disabled()
    assert cell.is_checked() == wd.k("w.session.feature_selection.enabled('hessian_of_gaussian_eigenvalues', 1.0)")
