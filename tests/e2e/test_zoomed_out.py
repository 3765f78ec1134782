"""Zoomed far out, the predictions still show: the viewer draws the coarsest prediction level the kernel offers and
asks only for the chunks in view.

The kernel offers prediction levels only while one chunk covers at most ``max_predict_pixels`` full-resolution
pixels. Here that is set to one 256 x 256 chunk, so only level 0 exists, and the 2048 x 2048 image is zoomed out to
4 image pixels per screen pixel, where the raw image is drawn from its level 1. Before, the prediction pyramid had
the raw image's levels and answered the coarse ones with nothing, so this view showed no predictions at all.
"""

from __future__ import annotations

import numpy as np
from widget_driver import WidgetDriver, classify

SIZE = 2048

NOTEBOOK = [
    f"""\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells(({SIZE}, {SIZE}), seed=2)
w = IlastikWidget(image, max_predict_pixels=256 * 256)
for s in simulated_strokes(truth, n_per_class=4, radius=3, seed=2):
    w.add_stroke(**s)
w.wait(120)
w.set_layer("raw", visible=False)
w.set_layer("labels", visible=False)
w.set_layer("probabilities", visible=True, opacity=1.0)
w.viewer_state = {{"position": [{SIZE // 2}, {SIZE // 2}], "crossSectionScale": 4.0}}
w""",
    "_E2E_DONE = True",
]


def test_zoomed_out_view_shows_the_predictions(open_notebook):
    lab = open_notebook("zoomed_out.ipynb", NOTEBOOK)
    d = WidgetDriver(lab, "w")
    lab.wait_for(lambda: abs(d.k("w.viewer_state.get('crossSectionScale', 0)") - 4.0) < 0.01, 60, "the zoomed-out view")
    d.settle()
    assert d.k("w.session.is_trained")
    assert d.k("w.chunk_server.store.predictions().n_levels") == 1
    # the whole image is in view, a quarter of its size on screen
    rect = d.panel_rect()
    corners = d.to_screen([[0, 0], [SIZE - 1, SIZE - 1]])
    assert (corners[:, 0] > rect["x"]).all() and (corners[:, 0] < rect["x"] + rect["width"]).all()
    assert (corners[:, 1] > rect["y"]).all() and (corners[:, 1] < rect["y"] + rect["height"]).all()
    assert SIZE / 4 - 40 < corners[1, 0] - corners[0, 0] < SIZE / 4 + 40
    assert d.k("len(w.chunk_server.raw.factors)") == 2

    # points well inside a cell or the background, where the 4x4 image pixels under a screen pixel are one class
    d.kexec(
        """
from scipy import ndimage as _ndi
_seg = w.session.segmentation()
_core = _ndi.binary_erosion(truth == 1, iterations=8) | _ndi.binary_erosion(truth == 2, iterations=8)
_flat = _ndi.maximum_filter(_seg, 9) == _ndi.minimum_filter(_seg, 9)
_yy, _xx = np.mgrid[8:%d:16, 8:%d:16]
_keep = (_core & _flat)[_yy, _xx]
_pts = np.stack([_yy[_keep], _xx[_keep]], 1)
"""
        % (SIZE, SIZE)
    )
    pts = np.asarray(d.k("_pts.tolist()"), int)
    truth_at = np.asarray(d.k("truth[tuple(_pts.T)].tolist()"), int)
    seg_at = np.asarray(d.k("_seg[tuple(_pts.T)].tolist()"), int)
    assert len(pts) > 300 and (truth_at == 2).sum() > 30
    assert (seg_at == truth_at).mean() > 0.9  # the classifier itself is good here
    screen = classify(d.sample(pts), d.class_colors())
    agree = (screen == seg_at).mean()
    assert agree > 0.9, f"the zoomed-out screen shows the kernel's predictions at only {agree:.2f} of the points"
    # only level-0 prediction chunks exist, and the view asked for them (not for the raw image's coarse levels)
    assert d.k("w.chunk_server.pending_push('predictions')") >= 64
