"""Two widgets on one page, on different images: each draws its own image, and painting, keys and settings on one
leave the other alone."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from widget_driver import WidgetDriver

NOTEBOOK = [
    """\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes
img1, truth1 = synthetic_cells((256, 256), seed=0)
img2, truth2 = synthetic_cells((192, 320), seed=1)
strokes2 = simulated_strokes(truth2, n_per_class=1, radius=3, seed=0)
w1 = IlastikWidget(img1)
w1""",
    """\
w2 = IlastikWidget(img2)
w2""",
    "_E2E_DONE = True",
]


def _correlation(d: WidgetDriver, image: np.ndarray) -> float:
    yy, xx = np.mgrid[4 : image.shape[0] : 8, 4 : image.shape[1] : 8]
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    grey = d.sample(pts).mean(axis=1)
    return float(np.corrcoef(grey, ndi.gaussian_filter(image, 1.0)[tuple(pts.T)])[0, 1])


def test_two_widgets_on_one_page_are_independent(open_notebook):
    lab = open_notebook("two.ipynb", NOTEBOOK)
    d1, d2 = WidgetDriver(lab, "w1"), WidgetDriver(lab, "w2")
    assert d1.id != d2.id
    img1 = np.asarray(lab.kernel_eval("img1.tolist()"), np.float32)
    img2 = np.asarray(lab.kernel_eval("img2.tolist()"), np.float32)

    for d, img in ((d1, img1), (d2, img2)):
        d.scroll_into_view()
        d.settle()
        r = _correlation(d, img)
        assert r > 0.6, f"{d.var} does not show its image (correlation {r:.2f})"

    # paint on the second widget with class 2, chosen by its own shortcut
    d2.scroll_into_view()
    d2.press("2")
    lab.wait_for(lambda: lab.kernel_eval("w2.active_class") == 2, 20, "w2 active class 2")
    stroke = [
        s
        for s in lab.kernel_eval("[dict(s, points=np.asarray(s['points']).tolist()) for s in strokes2]")
        if s["label"] == 2
    ][0]
    d2.drag(stroke["points"])
    lab.wait_for(lambda: lab.kernel_eval("len(w2.session.annotations.strokes)") == 1, 30, "the stroke on w2")
    assert lab.kernel_eval("w2.session.annotations.strokes[0].label") == 2
    assert lab.kernel_eval("len(w1.session.annotations.strokes)") == 0
    assert lab.kernel_eval("int((w1.session.labels() > 0).sum())") == 0
    assert lab.kernel_eval("w1.active_class") == 1

    # a kernel-side change to one reaches only that one
    lab.kernel_exec("w1.brush_size = 21")
    assert lab.kernel_eval("w2.brush_size") != 21
    d1.scroll_into_view()
    lab.wait_for(lambda: d1.testid("brush-size").input_value() == "21", 20, "w1's brush slider at 21")
    assert d2.testid("brush-size").input_value() != "21"
