"""A 3D volume: the four-panel layout, and a stroke on the xy panel lands on the voxels of the shown plane only."""

from __future__ import annotations

import numpy as np

from widget_driver import WidgetDriver, dist

NOTEBOOK = [
    """\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells
image, truth = synthetic_cells((24, 96, 96), seed=0)
w = IlastikWidget(image)
w""",
    "_E2E_DONE = True",
]


def test_volume_strokes_land_on_the_shown_plane(open_notebook):
    lab = open_notebook("volume.ipynb", NOTEBOOK)
    d = WidgetDriver(lab, "w")
    d.settle()
    state = d.k("w.viewer_state")
    assert state["layout"] == "4panel"
    z = int(round(state["position"][0]))
    stroke = [[z, 40, 30], [z, 40, 60]]
    line = np.array([[z, 40, x] for x in range(32, 59, 4)])

    before = d.sample(line)
    d.press("2")
    lab.wait_for(lambda: d.k("w.active_class") == 2, 20, "class 2")
    d.drag(stroke)
    lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == 1, 30, "the stroke in the kernel")
    assert d.k("list(w.session.annotations.strokes[0].axes)") == [1, 2]
    planes = d.k("np.unique(np.nonzero(w.session.labels())[0]).tolist()")
    assert planes == [z], f"labels on planes {planes}, painted on plane {z}"
    labels = np.asarray(d.k(f"w.session.labels()[{z}].tolist()"))
    assert (labels[tuple(line[:, 1:].T)] == 2).all()

    color = d.class_colors()[1]
    d.settle()
    on_plane = dist(d.sample(line), color)
    assert (on_plane < 0.6 * dist(before, color)).all(), \
        f"the stroke is not drawn in its class colour on its own plane (distances {on_plane.round()})"
    d.kexec(f"w.go_to([{(z + 7) % 24}, 48, 48])")
    lab.wait_for(lambda: round(d.k("w.viewer_state['position'][0]")) == (z + 7) % 24, 20, "the view on another plane")
    d.settle()
    other = np.array([[(z + 7) % 24, y, x] for _, y, x in line])
    off_plane = dist(d.sample(other), color)
    assert (on_plane < 0.5 * off_plane).all(), "the stroke shows on a plane it was not painted on"
