"""The controls a user reaches for besides painting, each checked in the kernel (and on screen where it shows):
navigate mode (drag pans, wheel zooms, nothing is painted), the brush-size keys, the help overlay, live update off
with "Update now", the class list (add, rename, recolour, pick, delete), a click on a stroke row moving the view, and
the layer checkboxes, opacity sliders and s/u keys.

One notebook for the module; the tests run in file order.
"""

from __future__ import annotations

import numpy as np
import pytest
from widget_driver import WidgetDriver, dist, hex_rgb

SIZE = 384

NOTEBOOK = [
    f"""\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells(({SIZE}, {SIZE}), seed=5)
strokes = simulated_strokes(truth, n_per_class=2, radius=3, seed=5)
w = IlastikWidget(image)
w""",
    "_E2E_DONE = True",
]


@pytest.fixture(scope="module")
def wd(open_notebook_module) -> WidgetDriver:
    d = WidgetDriver(open_notebook_module("controls.ipynb", NOTEBOOK), "w")
    d.settle()
    d.kexec("_first_view = dict(w.viewer_state)")  # the whole image, to come back to
    return d


def _position(d: WidgetDriver) -> np.ndarray:
    return np.asarray(d.k("w.viewer_state['position']"), float)


def test_navigate_mode_pans_and_zooms_and_paints_nothing(wd):
    d = wd
    d.hover()
    d.press("n")
    d.lab.wait_for(lambda: d.k("w.mode") == "navigate", 20, "navigate mode in the kernel")
    assert "active" in (d.testid("mode-navigate").get_attribute("class") or "")
    p0, scale0 = _position(d), d.k("w.viewer_state['crossSectionScale']")
    # drag the image 60 voxels to the right: the view centre moves 60 voxels to the left
    d.drag([[SIZE / 2, SIZE / 2], [SIZE / 2, SIZE / 2 + 60]])
    d.lab.wait_for(lambda: abs(_position(d)[1] - (p0[1] - 60)) < 3, 20, "the view to pan")
    assert abs(_position(d)[0] - p0[0]) < 3
    assert d.k("len(w.session.annotations.strokes)") == 0, "navigate mode painted a stroke"
    d.hover()
    d.page.mouse.wheel(0, 300)
    d.lab.wait_for(lambda: d.k("w.viewer_state['crossSectionScale']") > scale0 * 1.05, 20, "the wheel to zoom out")
    d.press("b")
    d.lab.wait_for(lambda: d.k("w.mode") == "paint", 20, "brush mode in the kernel")


def test_bracket_keys_change_the_brush_size(wd):
    d = wd
    size0 = d.k("w.brush_size")
    d.hover()
    d.press("]")
    d.lab.wait_for(lambda: d.k("w.brush_size") > size0, 20, "']' to grow the brush")
    size1 = d.k("w.brush_size")
    assert d.testid("brush-size").input_value() == str(size1)
    d.press("[")
    d.press("[")
    d.lab.wait_for(lambda: d.k("w.brush_size") < size1, 20, "'[' to shrink the brush")


def test_question_mark_shows_the_help_and_escape_hides_it(wd):
    d = wd
    overlay = d.testid("help-overlay")
    assert overlay.count() == 0 or not overlay.is_visible()
    d.hover()
    d.press("?")
    overlay.wait_for(state="visible")
    text = overlay.inner_text()
    for key in ("Ctrl+Z", "[", "]"):
        assert key in text, f"the help does not list {key}"
    d.press("Escape")
    overlay.wait_for(state="hidden")


def test_live_update_off_then_update_now_trains(wd):
    d = wd
    d.hover()
    d.press("l")
    d.lab.wait_for(lambda: d.k("w.live") is False, 20, "'l' to turn live update off")
    assert not d.testid("live-toggle").is_checked()
    strokes = d.k("[dict(label=s['label'], points=np.asarray(s['points']).tolist()) for s in strokes]")
    for label in (1, 2):
        d.press(str(label))
        d.lab.wait_for(lambda: d.k("w.active_class") == label, 20, f"class {label}")
        for s in strokes:
            if s["label"] == label:
                d.drag(s["points"])
    d.lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == len(strokes), 30, "the strokes in the kernel")
    d.settle()
    assert not d.k("w.session.is_trained"), "live update is off: painting must not train"
    assert "Update now" in d.testid("status").inner_text()
    d.testid("update-now").click()
    d.lab.wait_for(lambda: d.k("w.session.is_trained"), 120, "'Update now' to train")
    d.settle()
    d.hover()
    d.press("l")
    d.lab.wait_for(lambda: d.k("w.live") is True, 20, "'l' to turn live update on again")


def test_the_class_list_adds_renames_recolours_picks_and_deletes(wd):
    d = wd
    d.testid("add-class").click()
    d.lab.wait_for(lambda: len(d.k("w.classes")) == 3, 20, "a third class in the kernel")
    name = d.testid("class-name-3")
    name.fill("Membrane")
    name.press("Enter")
    d.lab.wait_for(lambda: d.k("w.session.classes[2].name") == "Membrane", 20, "the new name in the kernel")
    d.testid("class-color-3").fill("#00ccff")
    d.lab.wait_for(lambda: d.k("w.classes[2]['color']").lower() == "#00ccff", 20, "the new colour in the kernel")
    swatch = d.testid("class-pick-3")
    rgb = swatch.evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert rgb.replace(" ", "") == "rgb(0,204,255)", f"the swatch shows {rgb}"
    d.testid("class-row-3").click()
    d.lab.wait_for(lambda: d.k("w.active_class") == 3, 20, "a click on the row to pick the class")
    d.testid("class-delete-3").click()  # no strokes: deleted at once
    d.lab.wait_for(lambda: len(d.k("w.classes")) == 2, 20, "the class deleted in the kernel")
    assert d.testid("class-row-3").count() == 0
    assert d.k("w.active_class") in (1, 2)


def test_a_click_on_a_stroke_row_moves_the_view_there(wd):
    d = wd
    stroke = d.k("w.strokes[0]")
    centre = np.asarray(stroke["center"], float)
    d.kexec(f"w.viewer_state = {{'position': [{SIZE - 20}, {SIZE - 20}], 'crossSectionScale': 0.5}}")
    d.lab.wait_for(lambda: dist(_position(d), [SIZE - 20, SIZE - 20]) < 1, 20, "the view moved away")
    d.testid(f"stroke-row-{stroke['id']}").click()
    d.lab.wait_for(lambda: dist(_position(d), centre) < 1.5, 20, "the view at the stroke")
    d.settle()
    # the stroke's centre is now under the panel's centre, drawn in its class colour
    rect = d.panel_rect()
    xy = d.to_screen([centre])[0]
    assert abs(xy[0] - (rect["x"] + rect["width"] / 2)) < 8 and abs(xy[1] - (rect["y"] + rect["height"] / 2)) < 8
    color = hex_rgb(d.k("w.classes")[stroke["label"] - 1]["color"])
    assert dist(d.sample([centre])[0], color) < 120


def test_layer_checkboxes_sliders_and_keys_show_the_prediction_layers(wd):
    d = wd
    assert d.k("w.session.is_trained")
    seg = np.asarray(d.k("w.session.segmentation().tolist()"), np.uint8)
    yy, xx = np.mgrid[6 : SIZE - 6 : 12, 6 : SIZE - 6 : 12]
    flat = np.array(
        [
            seg[y - 4 : y + 5, x - 4 : x + 5].min() == seg[y - 4 : y + 5, x - 4 : x + 5].max()
            for y, x in zip(yy.ravel(), xx.ravel())
        ]
    )
    pts = np.stack([yy.ravel()[flat], xx.ravel()[flat]], 1)
    labelled = np.asarray(d.k("(w.session.labels() > 0).tolist()"), bool)
    pts = pts[~labelled[tuple(pts.T)]]
    colors = np.stack([hex_rgb(c["color"]) for c in d.k("w.classes")])
    d.kexec(
        "w.set_layer('probabilities', visible=False); "
        "w.viewer_state = {k: _first_view[k] for k in ('position', 'crossSectionScale')}"
    )
    d.settle()
    raw = d.sample(pts)

    # the segmentation checkbox: each pixel in its class colour (opacity 1 from the slider)
    d.testid("layer-visible-segmentation").check()
    d.lab.wait_for(lambda: d.k("w.layers['segmentation']['visible']") is True, 20, "segmentation shown in the kernel")
    slider = d.testid("layer-opacity-segmentation")
    slider.fill("1")
    d.lab.wait_for(
        lambda: d.k("w.layers['segmentation']['opacity']") == 1.0, 20, "segmentation opacity 1 in the kernel"
    )
    d.settle()
    shown = d.sample(pts)
    nearest = np.argmin(np.stack([dist(shown, c) for c in colors], 1), 1) + 1
    agree = (nearest == seg[tuple(pts.T)]).mean()
    assert agree > 0.95, f"the segmentation layer shows {agree:.3f} of the kernel's segmentation"

    # 's' hides it again, 'u' shows the uncertainty (somewhere on the image it is not the raw image)
    d.hover()
    d.press("s")
    d.lab.wait_for(lambda: d.k("w.layers['segmentation']['visible']") is False, 20, "'s' to hide the segmentation")
    assert not d.testid("layer-visible-segmentation").is_checked()
    d.settle()
    assert (dist(d.sample(pts), raw) < 30).mean() > 0.95, "the segmentation is still drawn"
    d.press("u")
    d.lab.wait_for(lambda: d.k("w.layers['uncertainty']['visible']") is True, 20, "'u' to show the uncertainty")
    assert d.testid("layer-visible-uncertainty").is_checked()
    d.press("u")
    d.lab.wait_for(lambda: d.k("w.layers['uncertainty']['visible']") is False, 20, "'u' to hide the uncertainty")


def _unlabelled_spot(d: WidgetDriver) -> tuple[int, int]:
    labels = np.asarray(d.k("(w.session.labels() > 0).tolist()"), bool)
    for y in range(40, SIZE - 40, 16):
        for x in range(40, SIZE - 40, 16):
            if not labels[y - 8 : y + 9, x - 8 : x + 9].any():
                return y, x
    raise AssertionError("no unlabelled spot")


def test_the_brush_size_is_the_diameter_painted_and_listed(wd):
    d = wd
    d.kexec("w.viewer_state = {k: _first_view[k] for k in ('position', 'crossSectionScale')}")
    d.settle(pixels=False)
    for size in (5, 1):
        d.kexec(f"w.brush_size = {size}")
        d.lab.wait_for(lambda: d.js("h.getBrush().size") == size, 20, f"brush size {size} in the browser")
        y, x = _unlabelled_spot(d)
        n = d.k("len(w.strokes)")
        # a click off the voxel's centre (a whole pixel: press and release at one place), the brush paints from the
        # voxel's centre, `size` voxels across
        at = np.floor(d.to_screen([[y + 0.3, x - 0.35]])[0])
        d.page.mouse.move(*at)
        d.page.mouse.down()
        d.page.mouse.up()
        d.lab.wait_for(lambda: d.k("len(w.strokes)") == n + 1, 30, "the dot in the kernel")
        stroke = d.k("w.strokes[-1]")
        box = np.asarray(d.k(f"w.session.labels()[{y - 8}:{y + 9}, {x - 8}:{x + 9}].tolist()")) > 0
        ys, xs = np.nonzero(box)
        assert (np.ptp(ys) + 1, np.ptp(xs) + 1) == (size, size), f"a size-{size} brush painted {box.astype(int)}"
        assert stroke["size"] == size
        cy, cx = y - 8 + round(ys.mean()), x - 8 + round(xs.mean())  # the voxel the dot is centred on
        assert abs(cy - y) <= 1 and abs(cx - x) <= 1
        row = d.testid(f"stroke-row-{stroke['id']}").inner_text()
        assert f"⌀ {size} px · at y {cy}, x {cx}" in row, row
        d.kexec("w.undo()")
    d.kexec("w.brush_size = 5")
