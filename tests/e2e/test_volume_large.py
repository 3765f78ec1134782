"""A realistic volume in the browser: 120 x 512 x 512 voxels of uint16, shown in the four-panel layout with chunks one
voxel thick, so that each panel reads (and the kernel predicts) only the plane it shows.

While the first class is painted, the kernel computes the features of the three planes in view.
Strokes painted with the mouse on the xy panel and on the xz panel train the classifier; the predictions then drawn
on all three panels are the kernel's at the voxel centres; a slice scrolled to with the mouse wheel shows its own
prediction; a long prediction (a tilted view crossing every plane of the volume) ends when the user stops it, and the
widget goes on working afterwards.

The volume is 2 x 2 tiles of a 120 x 256 x 256 ``synthetic_cells`` volume: making the whole volume at once takes
about 30 s on two cores, a quarter of this test's time.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from widget_driver import WidgetDriver, classify

SHAPE = (120, 512, 512)
Z, Y, X = 60, 256, 256  # where the view opens: the centre voxel

NOTEBOOK = [
    """\
import time
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

tile, tile_truth = synthetic_cells((120, 256, 256), seed=5)
image = (np.clip(np.tile(tile, (1, 2, 2)), 0, 1) * 4000).astype(np.uint16)
truth = np.tile(tile_truth, (1, 2, 2))


def strokes_in_plane(axis, index, seed):
    # two strokes per class inside the class regions of one plane, as painted on the panel showing it
    region = [slice(None)] * 3
    region[axis] = slice(index, index + 1)
    plane_axes = [a for a in range(3) if a != axis]
    out = simulated_strokes(truth[tuple(region)], n_per_class=2, radius=3, seed=seed, axes=plane_axes)
    for s in out:
        s["points"] = [[index if a == axis else p[a] for a in range(3)] for p in s["points"]]
    return out


XY_STROKES = strokes_in_plane(0, 60, seed=1)
XZ_STROKES = strokes_in_plane(1, 256, seed=2)

# every prediction chunk the browser asks for and every one the kernel pushes, by key
PREDICTION_KEYS = []


def watch(w):
    server = w.chunk_server
    read = server.read

    def logged_read(keys, after_each=None, _read=read):
        PREDICTION_KEYS.extend(k for k in keys if k.startswith("predictions/") and not k.endswith("info"))
        return _read(keys, after_each)

    server.read = logged_read
    send = w.send

    def logged_send(content, buffers=None, _send=send):
        if content.get("type") == "refresh":
            PREDICTION_KEYS.extend(k for k in content.get("keys", []) if k.startswith("predictions/"))
        _send(content, buffers)

    w.send = logged_send


def kernel_plane(axis, index):
    # the kernel's segmentation (classes 1..K) of one plane, as a 2D array
    region = [slice(None)] * 3
    region[axis] = slice(index, index + 1)
    return (np.argmax(w.session.predict(tuple(region)), -1) + 1).squeeze(axis).astype(int).tolist()


w = IlastikWidget(image, height=800)
w.brush_size = 7
watch(w)
w""",
    "_E2E_DONE = True",
]

PLANES = {"xy": 0, "xz": 1, "yz": 2}


@pytest.fixture(scope="module")
def vd(open_notebook_module) -> WidgetDriver:
    lab = open_notebook_module("volume_large.ipynb", NOTEBOOK)
    d = WidgetDriver(lab, "w", timeout=300)
    d.settle(timeout=300)
    return d


def paint(d: WidgetDriver, stroke: dict, plane: str) -> None:
    n = d.k("len(w.session.annotations.strokes)")
    label = stroke["label"]
    if d.k("w.active_class") != label:
        d.press(str(label))
        d.lab.wait_for(lambda: d.k("w.active_class") == label, 20, f"class {label}")
    d.drag(stroke["points"], plane=plane)
    d.lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == n + 1, 60, "the stroke in the kernel")


def flat_points(seg: np.ndarray, step: int = 12, r: int = 2) -> np.ndarray:
    """In-plane points on a grid whose (2r+1)^2 neighbourhood is one class: one colour on screen at any rounding."""
    pts = [
        (a, b)
        for a in range(r + 2, seg.shape[0] - r - 2, step)
        for b in range(r + 2, seg.shape[1] - r - 2, step)
        if seg[a - r : a + r + 1, b - r : b + r + 1].min() == seg[a - r : a + r + 1, b - r : b + r + 1].max()
    ]
    return np.asarray(pts, int)


def show_segmentation(d: WidgetDriver) -> None:
    d.kexec(
        "w.set_layer('raw', visible=False); w.set_layer('labels', visible=False); "
        "w.set_layer('probabilities', visible=False); w.set_layer('segmentation', visible=True, opacity=1.0)"
    )


def panel_agrees_with_kernel(d: WidgetDriver, plane: str, index: int) -> float:
    """Share of flat points of ``plane`` at ``index`` where the screen shows the kernel's class."""
    axis = PLANES[plane]
    seg = np.asarray(d.k(f"kernel_plane({axis}, {index})"), int)
    pts2 = flat_points(seg)
    assert len(pts2) > 50, f"too few flat points on the {plane} panel"
    pts = np.insert(pts2, axis, index, axis=1)
    screen = classify(d.sample(pts, plane=plane), d.class_colors())
    return float((screen == seg[tuple(pts2.T)]).mean())


def plane_chunks(keys: list[str]) -> set[tuple[str, int]]:
    """The planes ("xy", z), ("xz", y), ("yz", x) of plane-shaped prediction chunk keys (level 0)."""
    out = set()
    for key in keys:
        level, box = key.split("/")[-2:]
        assert level == "0", key
        (x0, x1), (y0, y1), (z0, z1) = [tuple(int(v) for v in r.split("-")) for r in box.split("_")]
        thin = [name for name, (a, b) in (("yz", (x0, x1)), ("xz", (y0, y1)), ("xy", (z0, z1))) if b - a == 1]
        assert len(thin) == 1, f"{key} is not one plane thick"
        out.add((thin[0], {"yz": x0, "xz": y0, "xy": z0}[thin[0]]))
    return out


def test_strokes_on_the_xy_and_xz_panels_and_predictions_on_all_three(vd):
    d = vd
    assert d.k("w.chunk_server.store.format") == "precomputed"
    assert d.k("list(w.session.spatial_shape)") == list(SHAPE) and d.k("str(image.dtype)") == "uint16"
    state = d.k("w.viewer_state")
    assert state["layout"] == "4panel" and [round(v) for v in state["position"]] == [Z, Y, X]
    shown = f"[w.session.has_features(r) for r in [np.s_[{Z}:{Z + 1}, :, :], np.s_[:, {Y}:{Y + 1}, :], np.s_[:, :, {X}:{X + 1}]]]"
    assert d.k(shown) == [False] * 3  # only looked at: nothing computed
    xy_strokes = d.k("XY_STROKES")
    paint(d, xy_strokes[0], "xy")
    # one class painted, the view still: the kernel computes the features of the three planes in view meanwhile
    d.lab.wait_for(lambda: d.k(shown) == [True] * 3, 120, "the features of the planes in view")
    assert not d.k("w.session.is_trained") and not d.k(f"w.session.has_features(np.s_[{Z + 1}:{Z + 2}, :, :])")
    for stroke in xy_strokes[1:]:
        paint(d, stroke, "xy")
    for stroke in d.k("XZ_STROKES"):
        paint(d, stroke, "xz")
    d.page.mouse.move(2, 2)  # the brush outline follows the pointer
    assert d.k("[list(s.axes) for s in w.session.annotations.strokes]") == [[1, 2]] * 4 + [[0, 2]] * 4
    # each stroke labels voxels of the plane its panel shows
    on_xy, on_xz, elsewhere = d.k(
        f"(lambda v: (int((v[:, 0] == {Z}).sum()), int((v[:, 1] == {Y}).sum()),"
        f" int(((v[:, 0] != {Z}) & (v[:, 1] != {Y})).sum())))(np.argwhere(w.session.labels()))"
    )
    assert on_xy > 200 and on_xz > 200 and elsewhere == 0, (on_xy, on_xz, elsewhere)
    d.settle()
    assert d.k("w.session.is_trained") and d.k("w.status") == "Ready"
    # the browser asked for, and the kernel pushed, the predictions of the three planes in view only
    assert plane_chunks(d.k("PREDICTION_KEYS")) == {("xy", Z), ("xz", Y), ("yz", X)}

    show_segmentation(d)
    d.settle()
    for plane, index in (("xy", Z), ("xz", Y), ("yz", X)):
        agree = panel_agrees_with_kernel(d, plane, index)
        assert agree > 0.95, f"the {plane} panel shows {agree:.3f} of the kernel's segmentation of its plane"


@pytest.fixture
def trained(vd) -> WidgetDriver:
    """The widget trained (on the painted strokes, or on the same strokes added from Python), showing the
    segmentation of the three planes through the centre."""
    d = vd
    if not d.k("w.session.is_trained"):
        d.kexec("for s in XY_STROKES + XZ_STROKES:\n    w.add_stroke(**s)")
    d.kexec(f"w.viewer_state = {{'position': [{Z}, {Y}, {X}], 'crossSectionOrientation': [0, 0, 0, 1]}}")
    show_segmentation(d)
    d.settle()
    return d


def test_a_slice_scrolled_to_with_the_wheel_shows_its_prediction(trained):
    d = trained
    rect = d.panel_rect("xy")
    d.page.mouse.move(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
    for _ in range(12):
        d.page.mouse.wheel(0, 100)
        d.lab.pause(0.12)
    d.page.mouse.move(2, 2)
    z = round(d.js("h.getState().position")[0])
    assert abs(z - Z) >= 8, f"the wheel moved the xy panel from z {Z} to {z} only"
    d.settle()
    assert round(d.k("w.viewer_state['position'][0]")) == z
    agree = panel_agrees_with_kernel(d, "xy", z)
    assert agree > 0.95, f"the xy panel at z {z} shows {agree:.3f} of the kernel's segmentation of that plane"


def test_stop_ends_a_long_prediction_and_the_widget_goes_on(trained):
    d = trained
    d.kexec("PREDICTION_KEYS.clear()")
    # every panel tilted by 45 degrees about x: each crosses all 120 planes, hundreds of plane chunks to predict
    s, c = math.sin(math.radians(22.5)), math.cos(math.radians(22.5))
    d.kexec(f"w.viewer_state = {{'crossSectionOrientation': [{s}, 0, 0, {c}]}}")
    d.lab.wait_for(lambda: d.k("w.progress.get('done', 0)") >= 2, 120, "the long prediction under way")
    assert d.k("w.busy") and d.k("w.status").startswith("Predicting")
    stop = d.testid("stop")
    if stop.count() and stop.is_visible():
        stop.click()
    else:
        d.kexec("w.stop()")
    t_stop = time.monotonic()
    d.lab.wait_for(lambda: not d.k("w.busy"), 30, "the kernel to stop")
    assert time.monotonic() - t_stop < 15
    assert d.k("w.progress") == {} and d.k("w.status").startswith("Stopped")
    d.kexec("w.wait(30)")
    computed = d.k("len(PREDICTION_KEYS)")
    held = d.js("h.stats().waiting")
    assert held > computed, f"{computed} chunks were asked of the kernel, {held} left for after the Stop: not long"
    d.lab.pause(2.0)
    assert d.k("len(PREDICTION_KEYS)") == computed, "prediction chunks were still asked for after the Stop"
    assert not d.k("w.busy")

    # back to the axis-aligned view: the widget predicts again, and a stroke still trains
    d.kexec(f"w.viewer_state = {{'crossSectionOrientation': [0, 0, 0, 1], 'position': [{Z}, {Y}, {X}]}}")
    generation = d.k("w.session.generation")
    d.kexec("w.add_stroke(**XY_STROKES[0])")
    d.lab.wait_for(lambda: d.k("w.session.generation") > generation, 120, "a new model")
    d.settle()
    agree = panel_agrees_with_kernel(d, "xy", Z)
    assert agree > 0.95, f"after the Stop the xy panel shows {agree:.3f} of the kernel's segmentation"
