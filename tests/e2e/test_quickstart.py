"""The quickstart notebook as a user runs it (Run All), on its real histology image, and the README screenshot.

The screenshot of the widget with predictions is written to tests/e2e/artifacts/quickstart-widget.png on every run,
and to tests/e2e/screenshot.png (tracked, shown in the README) when ILASTIK_WIDGET_SCREENSHOT=1.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
from e2e_harness import ARTIFACTS, HERE, REPO
from scipy import ndimage as ndi
from widget_driver import WidgetDriver, classify

QUICKSTART = REPO / "notebooks" / "01_quickstart.ipynb"
README_SCREENSHOT = HERE / "screenshot.png"


def test_quickstart_notebook_runs_and_shows_predictions(lab_server, open_notebook):
    assert QUICKSTART.exists(), f"{QUICKSTART} is missing"
    lab_server.copy_in(QUICKSTART, "01_quickstart.ipynb")
    # the notebook's last cell defines `probabilities`
    lab = open_notebook("01_quickstart.ipynb", done_flag="probabilities")
    d = WidgetDriver(lab, "w")
    d.settle()
    assert d.k("w.session.is_trained")
    assert d.k("len(w.strokes)") >= 2
    shape = tuple(d.k("list(w.session.spatial_shape)"))
    assert d.k("list(probabilities.shape)") == [*shape, 2]

    # the screen shows the kernel's predictions (probabilities alone, at full opacity)
    d.kexec(
        "w.set_layer('raw', visible=False); w.set_layer('labels', visible=False); "
        "w.set_layer('probabilities', visible=True, opacity=1.0)"
    )
    d.settle()
    seg = np.asarray(d.k("w.segmentation().tolist()"), np.uint8)
    yy, xx = np.mgrid[2 : shape[0] : 6, 2 : shape[1] : 6]
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    flat = (ndi.maximum_filter(seg, 5) == ndi.minimum_filter(seg, 5))[tuple(pts.T)]
    pts = pts[flat]
    screen = classify(d.sample(pts), d.class_colors())
    kernel = seg[tuple(pts.T)]
    assert (kernel == 2).sum() > 50 and (kernel == 1).sum() > 50, "both classes should be predicted somewhere"
    agree = (screen == kernel).mean()
    assert agree > 0.95, f"screen shows the kernel's segmentation at only {agree:.3f} of the points"

    # README picture: default layers (image, labels, probabilities at half opacity), viewer and panel
    d.kexec(
        "w.set_layer('raw', visible=True); w.set_layer('labels', visible=True); "
        "w.set_layer('probabilities', visible=True, opacity=0.5)"
    )
    d.settle()
    d.root.scroll_into_view_if_needed()
    out = ARTIFACTS / "quickstart-widget.png"
    d.root.screenshot(path=str(out))
    if os.environ.get("ILASTIK_WIDGET_SCREENSHOT") == "1":
        shutil.copyfile(out, README_SCREENSHOT)
