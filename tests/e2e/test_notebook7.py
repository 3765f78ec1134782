"""The widget in Notebook 7 (not only JupyterLab): it draws the image, the mouse paints two classes, and the
predictions the kernel makes show on screen."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from widget_driver import WidgetDriver, classify, grid

NOTEBOOK = [
    """\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes
image, truth = synthetic_cells((256, 256), seed=2)
strokes = [dict(s, points=np.asarray(s["points"]).tolist()) for s in simulated_strokes(truth, n_per_class=2, radius=3)]
w = IlastikWidget(image)
w""",
    "_E2E_DONE = True",
]


def test_widget_works_in_notebook7(lab_server, browser):
    lab_server.write_notebook("nb7.ipynb", NOTEBOOK)
    lab = browser.open_notebook(lab_server, "nb7.ipynb", frontend="notebook")
    try:
        assert lab.page.evaluate("() => window.jupyterapp.name") == "Jupyter Notebook"
        lab.run_all()
        d = WidgetDriver(lab, "w")
        d.settle()
        image = np.asarray(lab.kernel_eval("image.tolist()"), np.float32)
        pts = grid(8)
        grey = d.sample(pts).mean(axis=1)
        r = np.corrcoef(grey, ndi.gaussian_filter(image, 1.0)[tuple(pts.T)])[0, 1]
        assert r > 0.6, f"the image is not drawn (correlation {r:.2f})"

        for label in (1, 2):
            d.press(str(label))
            lab.wait_for(lambda: d.k("w.active_class") == label, 20, f"class {label}")
            for s in lab.kernel_eval("strokes"):
                if s["label"] == label:
                    d.drag(s["points"])
        lab.wait_for(
            lambda: d.k("sorted({s.label for s in w.session.annotations.strokes})") == [1, 2],
            30,
            "strokes of both classes in the kernel",
        )
        d.kexec(
            "w.set_layer('raw', visible=False); w.set_layer('labels', visible=False); "
            "w.set_layer('probabilities', visible=True, opacity=1.0)"
        )
        d.settle()
        assert d.k("w.session.is_trained")
        seg = np.asarray(d.k("w.segmentation().tolist()"), np.uint8)
        pts = grid(4)
        pts = pts[(ndi.maximum_filter(seg, 5) == ndi.minimum_filter(seg, 5))[tuple(pts.T)]]
        agree = (classify(d.sample(pts), d.class_colors()) == seg[tuple(pts.T)]).mean()
        assert agree > 0.95, f"screen shows the kernel's predictions at only {agree:.3f} of the points"
    finally:
        lab.close()
