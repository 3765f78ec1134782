"""Seeing the data right, read from the screen: the automatic contrast of a 16-bit image with bright debris, the
window set from Python and dragged in the panel, a two-channel composite (channel 1's pattern shown by default,
hidden and recoloured per channel, channels chosen for the classifier), the cursor readout, wheel zoom steps without
Neuroglancer's pop-ups or layout buttons, the fit key and button, and on a volume the panel titles, the slice keys
and the feature matrix's in-2D row.

One notebook for the module (four widgets: the last an RGB slide shown in its colours); the tests run in file
order.
"""

from __future__ import annotations

import numpy as np
import pytest
from widget_driver import WidgetDriver, dist

SIZE = 256

NOTEBOOK = [
    f"""\
import numpy as np
from scipy import ndimage as ndi
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells

# 16-bit nuclei (100..3100) with bright debris (60000) on about 3% of the pixels
cells, _ = synthetic_cells(({SIZE}, {SIZE}), seed=0)
image = (np.clip(cells, 0, None) / cells.max() * 3000 + 100).astype(np.uint16)
debris = ndi.binary_dilation(np.random.default_rng(1).random(image.shape) < 0.0025, iterations=2)
image[debris] = 60000
w = IlastikWidget(image, height=420)
w""",
    """\
# channel 0: a disc; channel 1: a checkerboard of 16-pixel squares that channel 0 lacks
yy, xx = np.mgrid[:192, :192]
disc = (np.hypot(yy - 96, xx - 96) < 60).astype(np.float32) * 100
board = (((yy // 16) + (xx // 16)) % 2).astype(np.float32) * 50
w2 = IlastikWidget(np.stack([disc, board]), channel_axis=0, height=380)
w2""",
    """\
volume, _ = synthetic_cells((24, 96, 96), seed=0)
w3 = IlastikWidget(volume, height=420)
w3""",
    """\
# RGB histology (scikit-image's immunohistochemistry crop): brown DAB and blue haematoxylin on white
from skimage import data
rgb = data.immunohistochemistry()[:192, :192]
w4 = IlastikWidget(rgb, channel_axis=-1, height=380)
w4""",
    "_E2E_DONE = True",
]


@pytest.fixture(scope="module")
def lab(open_notebook_module):
    return open_notebook_module("display.ipynb", NOTEBOOK)


@pytest.fixture(scope="module")
def wd(lab) -> WidgetDriver:
    d = WidgetDriver(lab, "w")
    d.settle()
    return d


def _clean_points(d: WidgetDriver, step: int = 6) -> np.ndarray:
    """Voxels on a grid at least 3 pixels away from debris."""
    near = np.asarray(d.k("ndi.binary_dilation(debris, iterations=3).tolist()"), bool)
    yy, xx = np.mgrid[step // 2 : SIZE : step, step // 2 : SIZE : step]
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    return pts[~near[tuple(pts.T)]]


def sample(d: WidgetDriver, pts, plane: str = "xy") -> np.ndarray:
    """RGB (N, 3) of the screen pixels that hold the given voxels' centres (pixel i covers [i, i + 1))."""
    xy = np.floor(d.to_screen(pts, plane)).astype(int)
    shot = d.lab.screenshot_array()
    return shot[xy[:, 1], xy[:, 0]].astype(float)


def _grey(d: WidgetDriver, pts: np.ndarray) -> np.ndarray:
    d.page.mouse.move(2, 2)  # no readout or brush outline over the image
    d.settle()
    return sample(d, pts).mean(axis=1)


def test_the_debris_image_shows_its_nuclei_under_the_default_contrast(wd):
    d = wd
    pts = _clean_points(d)
    data = np.asarray(d.k("image.tolist()"), float)[tuple(pts.T)]
    grey = _grey(d, pts)
    r = np.corrcoef(grey, data)[0, 1]
    spread = np.percentile(grey, 95) - np.percentile(grey, 5)
    # stretched to the whole range the debris would leave the nuclei within a few grey levels of black
    assert r > 0.9 and spread > 120, f"screen vs data away from debris: r = {r:.3f}, 5-95% spread {spread:.0f} levels"
    lo, hi = d.k("w.contrast_limits[0]")
    assert hi < 20000, f"the automatic window {lo}..{hi} reaches into the debris"


def test_contrast_limits_set_in_python_are_the_screens_window(wd):
    d = wd
    pts = _clean_points(d)
    data = np.asarray(d.k("image.tolist()"), float)[tuple(pts.T)]
    before = _grey(d, pts)
    lo, hi = d.k("w.contrast_limits[0]")
    window = [lo, lo + (hi - lo) / 2]
    d.kexec(f"w.contrast_limits = [{window}]")
    after = _grey(d, pts)
    expected = np.clip((data - window[0]) / (window[1] - window[0]), 0, 1) * 255
    assert after.mean() > before.mean() + 30, "a narrower window did not brighten the image"
    assert np.median(np.abs(after - expected)) < 12, "the screen does not map the window to black..white"
    d.kexec("w.reset_contrast()")
    assert np.median(np.abs(_grey(d, pts) - before)) < 4, "reset_contrast() did not bring the automatic window back"


def _drag_handle(d: WidgetDriver, testid: str, to_fraction: float) -> None:
    """Drag a range input's thumb (10 px wide, its centre travelling from 5 px to width - 5 px) to a fraction."""
    handle = d.testid(testid)
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    lo, hi, value = (float(v) for v in handle.evaluate("(e) => [e.min, e.max, e.value]"))
    travel = box["width"] - 10
    x0 = box["x"] + 5 + (value - lo) / (hi - lo) * travel
    y = box["y"] + box["height"] / 2
    m = d.page.mouse
    m.move(x0, y)
    m.down()
    m.move(box["x"] + 5 + to_fraction * travel, y, steps=8)
    m.up()


def test_moving_the_high_handle_changes_the_screen_and_the_trait(wd):
    d = wd
    pts = _clean_points(d)
    auto = d.k("w.contrast_limits[0]")
    before = _grey(d, pts)
    _drag_handle(d, "contrast-high-0", 0.2)
    d.lab.wait_for(lambda: d.k("w.contrast_limits[0][1]") < auto[1] * 0.8, 20, "the kernel to hear of the handle")
    high = d.k("w.contrast_limits[0][1]")
    assert d.k("w.contrast_limits[0][0]") == auto[0], "the low end moved with the high one"
    assert float(d.testid("contrast-high-value-0").input_value()) == high
    after = _grey(d, pts)
    assert after.mean() > before.mean() + 30, "dragging the high end down did not brighten the image"
    d.testid("contrast-reset").click()
    d.lab.wait_for(lambda: d.k("w.contrast_limits[0]") == auto, 20, "Auto contrast to restore the window")


def test_the_readout_shows_the_value_of_a_known_pixel(wd):
    d = wd
    y, x = (int(v) for v in _clean_points(d, 10)[40])
    value = d.k(f"int(image[{y}, {x}])")
    # mouse events carry whole pixels: the one nearest the voxel's centre lies inside the voxel
    d.page.mouse.move(*np.rint(d.to_screen([[y, x]])[0]))
    readout = d.testid("readout")
    d.lab.wait_for(lambda: readout.inner_text() == f"y {y}, x {x}: {value}", 20, f"the readout of y {y}, x {x}")


def _corners_inside(d: WidgetDriver) -> bool:
    rect = d.panel_rect()
    corners = d.to_screen([[-0.5, -0.5], [-0.5, SIZE - 0.5], [SIZE - 0.5, -0.5], [SIZE - 0.5, SIZE - 0.5]])
    return bool(
        (corners[:, 0] >= rect["x"] - 1).all()
        and (corners[:, 0] <= rect["x"] + rect["width"] + 1).all()
        and (corners[:, 1] >= rect["y"] - 1).all()
        and (corners[:, 1] <= rect["y"] + rect["height"] + 1).all()
    )


def _visible(d: WidgetDriver, selector: str) -> int:
    return d.root.locator(selector).evaluate_all(
        "(els) => els.filter((e) => e.offsetParent !== null && getComputedStyle(e).display !== 'none').length"
    )


def test_the_wheel_zooms_in_small_steps_without_pop_ups_and_fit_brings_the_image_back(wd):
    d = wd
    assert _corners_inside(d), "the first view does not show the whole image"
    assert _visible(d, ".neuroglancer-data-panel-layout-controls") == 0, "layout buttons on a 2D image"
    rect = d.panel_rect()
    d.page.mouse.move(rect["x"] + rect["width"] * 0.3, rect["y"] + rect["height"] * 0.4)
    scale0 = d.js("h.viewer.crossSectionScale.value")
    d.page.mouse.wheel(0, -100)  # one notch, towards the screen: zoom in
    d.lab.pause(0.2)
    step = scale0 / d.js("h.viewer.crossSectionScale.value")
    assert 1.1 <= step <= 1.25, f"one wheel notch zoomed by {step:.2f}x"
    popups = 0
    for _ in range(8):
        d.page.mouse.wheel(0, -100)
        d.lab.pause(0.05)
        popups = max(popups, _visible(d, ".neuroglancer-display-dimensions-widget"))
    assert popups == 0, "Neuroglancer's dimension pop-up showed while zooming"
    # pan away (navigate mode: a left drag) and check the image is no longer whole
    d.press("n")
    d.lab.wait_for(lambda: d.k("w.mode") == "navigate", 20, "navigate mode")
    d.drag([[SIZE / 2, SIZE / 2], [SIZE / 2 - 30, SIZE / 2 + 50]])
    d.lab.wait_for(lambda: not _corners_inside(d), 20, "the zoomed, panned view")
    d.press("f")
    d.lab.wait_for(lambda: _corners_inside(d), 20, "the fit key to show the whole image")
    state = d.js("h.getState()")
    assert state["view_region"] == [[0, SIZE], [0, SIZE]]
    assert dist(state["position"], [(SIZE - 1) / 2] * 2) < 0.6, f"not centred: {state['position']}"
    # the image fills the panel in one direction (a fit, not just any zoom-out)
    corners = d.to_screen([[-0.5, -0.5], [SIZE - 0.5, SIZE - 0.5]])
    rect = d.panel_rect()
    fill = max((corners[1, 0] - corners[0, 0]) / rect["width"], (corners[1, 1] - corners[0, 1]) / rect["height"])
    assert 0.9 < fill <= 1.0, f"after fit the image spans {fill:.2f} of the panel"
    # the button on the viewer does the same
    d.kexec("w.viewer_state = {'position': [20, 30], 'crossSectionScale': 0.1}")
    d.lab.wait_for(lambda: not _corners_inside(d), 20, "the view moved away")
    d.testid("fit-view-overlay").click()
    d.lab.wait_for(lambda: _corners_inside(d), 20, "the fit button to show the whole image")
    d.press("b")


# ------------------------------------------------------------------------------------------ two channels


@pytest.fixture(scope="module")
def wd2(lab) -> WidgetDriver:
    d = WidgetDriver(lab, "w2")
    d.settle()
    return d


def _board_points() -> tuple[np.ndarray, np.ndarray]:
    """Centres of the checkerboard's on and off squares outside the disc."""
    on: list[tuple[int, int]] = []
    off: list[tuple[int, int]] = []
    for i in range(12):
        for j in range(12):
            y, x = 16 * i + 8, 16 * j + 8
            if np.hypot(y - 96, x - 96) < 75:
                continue
            (on if (i + j) % 2 else off).append((y, x))
    return np.array(on), np.array(off)


def test_channel_1s_pattern_shows_by_default_and_hiding_the_channel_removes_it(wd2):
    d = wd2
    on, off = _board_points()
    d.page.mouse.move(2, 2)
    d.settle()
    shown_on, shown_off = sample(d, on), sample(d, off)
    assert dist(shown_on, shown_off).min() > 150, "channel 1's squares do not show"
    assert dist(shown_on, [0, 255, 0]).max() < 60, "channel 1 is not in its colour (green)"
    disc = sample(d, [[96, 96]])[0]
    d.testid("channel-visible-1").uncheck()
    d.lab.wait_for(lambda: d.k("w2.channel_visible") == [True, False], 20, "channel 1 hidden in the kernel")
    d.settle()
    assert dist(sample(d, on), sample(d, off)).max() < 20, "channel 1's squares still show"
    assert dist(sample(d, [[96, 96]])[0], disc) < 150, "hiding channel 1 hid channel 0 too"
    d.kexec("w2.channel_visible = [True, True]; w2.channel_colors = ['#ff00ff', '#0000ff']")
    d.settle()
    assert dist(sample(d, on), [0, 0, 255]).max() < 60, "the colour set from Python does not show"
    assert d.testid("channel-color-1").input_value() == "#0000ff"


def test_the_panel_chooses_the_channels_that_feed_the_classifier(wd2):
    d = wd2
    assert d.testid("channel-train-0").is_checked() and d.testid("channel-train-1").is_checked()
    d.testid("channel-train-0").uncheck()
    d.lab.wait_for(lambda: d.k("w2.classifier_channels") == [1], 20, "channel 0 off in the kernel")
    assert d.k("w2.session.channels") == [1] or d.k("list(w2.session.channels)") == [1]
    assert d.testid("channel-train-1").is_disabled(), "the last channel could be switched off"
    d.kexec("w2.classifier_channels = [0, 1]")
    d.lab.wait_for(lambda: d.testid("channel-train-0").is_checked(), 20, "the panel to follow Python")


# ------------------------------------------------------------------------------------------ a volume


@pytest.fixture(scope="module")
def wd3(lab) -> WidgetDriver:
    d = WidgetDriver(lab, "w3")
    d.settle()
    return d


def _titles(d: WidgetDriver) -> list[str]:
    return sorted(t.inner_text() for t in d.root.locator(".ilastik-panel-title").all())


def test_volume_panels_are_titled_and_the_slice_keys_step_through_them(wd3):
    d = wd3
    z, y, x = (int(round(v)) for v in d.k("w3.viewer_state['position']"))
    assert _titles(d) == [f"xy · z {z}", f"xz · y {y}", f"yz · x {x}"]
    d.testid("status").click()  # the keyboard focus into this widget (it was in the one above)
    rect = d.panel_rect("xy")
    d.page.mouse.move(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
    d.page.keyboard.press(".")
    d.lab.wait_for(lambda: f"xy · z {z + 1}" in _titles(d), 20, "'.' to show the next slice")
    d.lab.wait_for(lambda: round(d.k("w3.viewer_state['position'][0]")) == z + 1, 20, "the kernel to hear of it")
    rect = d.panel_rect("xz")
    d.page.mouse.move(rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2)
    d.page.keyboard.press("<")
    d.lab.wait_for(lambda: f"xz · y {y - 10}" in _titles(d), 20, "'<' to step the xz panel 10 slices back")
    # the readout names the voxel under the pointer in array order
    point = [z + 1, 30, 40]
    d.page.mouse.move(*np.rint(d.to_screen([point], plane="xy")[0]))
    value = d.k(f"float(volume[{z + 1}, 30, 40])")
    d.lab.wait_for(lambda: d.testid("readout").inner_text().startswith(f"z {z + 1}, y 30, x 40: "), 20, "the readout")
    shown = float(d.testid("readout").inner_text().split(": ")[1])
    assert shown == pytest.approx(value, rel=1e-3, abs=1e-4)
    d.hover()
    d.press("?")
    help_text = d.testid("help-overlay").inner_text()
    assert "next slice" in help_text and "fit" in help_text
    d.press("Escape")


def test_the_in_2d_row_of_a_volume_survives_edits_of_the_matrix(wd3, wd):
    d = wd3
    d.root.locator(".ilastik-section summary", has_text="Features").click()
    box = d.testid("feature-2d-3.5")
    box.check()
    d.lab.wait_for(lambda: d.k("w3.feature_selection['in_2d']") == [3.5], 30, "σ 3.5 in 2D in the kernel")
    d.testid("feature-cell-gaussian_smoothing-1.0").uncheck()
    d.lab.wait_for(lambda: 1.0 not in d.k("w3.feature_selection['features']['gaussian_smoothing']"), 30, "the cell off")
    assert d.k("w3.feature_selection['in_2d']") == [3.5], "editing a cell dropped the in-2D choice"
    d.testid("features-all").click()
    d.lab.wait_for(
        lambda: 1.0 in d.k("w3.feature_selection['features']['gaussian_smoothing']"), 30, "All to select every cell"
    )
    assert d.k("w3.feature_selection['in_2d']") == [3.5], "'All' dropped the in-2D choice"
    assert d.k("w3.session.feature_selection.is_2d(3.5)")
    assert wd.root.locator("[data-testid^='feature-2d-']").count() == 0, "a 2D image has an in-2D row"


@pytest.fixture(scope="module")
def wd4(lab) -> WidgetDriver:
    d = WidgetDriver(lab, "w4")
    d.settle()
    return d


def test_an_rgb_slide_is_shown_in_its_colours(wd4):
    """Each screen channel follows the slide's own channel, and the stains keep their hues: brown DAB redder than
    blue haematoxylin on screen as in the data (a grey or single-channel display fails both)."""
    d = wd4
    d.page.mouse.move(2, 2)
    d.settle()
    rgb = np.asarray(d.k("rgb.tolist()"), float)
    yy, xx = np.mgrid[3:192:6, 3:192:6]
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    data = rgb[tuple(pts.T)]
    shown = sample(d, pts)
    for c in range(3):
        r = np.corrcoef(shown[:, c], data[:, c])[0, 1]
        assert r > 0.9, f"screen channel {c} follows the data's with r = {r:.2f}"
    data_warmth, shown_warmth = data[:, 0] - data[:, 2], shown[:, 0] - shown[:, 2]
    r = np.corrcoef(shown_warmth, data_warmth)[0, 1]
    assert r > 0.8, f"red minus blue on screen follows the data's with r = {r:.2f} (colour lost)"
