"""A 3D volume: the four-panel layout, and a stroke lands on the voxels of the plane its panel shows, on the xy panel,
the xz panel, and an oblique panel."""

from __future__ import annotations

import numpy as np
from widget_driver import WidgetDriver, dist


def volume_notebook(shape: tuple[int, int, int], seed: int, then: str = "") -> list[str]:
    return [
        f"""\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells
image, truth = synthetic_cells({shape!r}, seed={seed})
w = IlastikWidget(image)
{then}
w""",
        "_E2E_DONE = True",
    ]


NOTEBOOK = volume_notebook((24, 96, 96), 0)


def open_volume(open_notebook, name: str, notebook: list[str]):
    lab = open_notebook(name, notebook)
    d = WidgetDriver(lab, "w")
    d.settle()
    return lab, d


def test_volume_strokes_land_on_the_shown_plane(open_notebook):
    lab, d = open_volume(open_notebook, "volume.ipynb", NOTEBOOK)
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
    assert (on_plane < 0.6 * dist(before, color)).all(), (
        f"the stroke is not drawn in its class colour on its own plane (distances {on_plane.round()})"
    )
    d.kexec(f"w.go_to([{(z + 7) % 24}, 48, 48])")
    lab.wait_for(lambda: round(d.k("w.viewer_state['position'][0]")) == (z + 7) % 24, 20, "the view on another plane")
    d.settle()
    other = np.array([[(z + 7) % 24, y, x] for _, y, x in line])
    off_plane = dist(d.sample(other), color)
    assert (on_plane < 0.5 * off_plane).all(), "the stroke shows on a plane it was not painted on"


# the xy panel tilted by 30 degrees about the x axis (Neuroglancer quaternion [x, y, z, w])
OBLIQUE_NOTEBOOK = volume_notebook(
    (48, 96, 96),
    1,
    """w.brush_size = 5
w.viewer_state = {"position": [24, 48, 48], "crossSectionOrientation": [0.25881905, 0.0, 0.0, 0.96592583]}""",
)


def test_a_stroke_on_an_oblique_panel_lands_on_the_voxels_of_that_plane(open_notebook):
    lab, d = open_volume(open_notebook, "oblique.ipynb", OBLIQUE_NOTEBOOK)
    state = d.k("w.viewer_state")
    assert np.allclose(state["crossSectionOrientation"], [0.25881905, 0.0, 0.0, 0.96592583], atol=1e-4)
    centre = np.asarray(state["position"], float)
    theta = np.radians(30)
    # the panel's vertical direction and its normal, in array order (z, y, x): the y axis tilted towards z
    up = np.array([np.sin(theta), np.cos(theta), 0.0])
    normal = np.array([np.cos(theta), -np.sin(theta), 0.0])
    on_plane = np.array([centre + s * up for s in np.linspace(-24, 24, 13)])
    before = d.sample(on_plane)

    d.press("2")
    lab.wait_for(lambda: d.k("w.active_class") == 2, 20, "class 2")
    d.drag(on_plane)
    lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == 1, 30, "the stroke in the kernel")
    assert d.k("list(w.session.annotations.strokes[0].axes)") == [1, 2], "nearest axis-aligned plane: xy"
    voxels = np.asarray(d.k("np.argwhere(w.session.labels() == 2).tolist()"), float)
    assert len(voxels) > 100
    off = np.abs((voxels - centre) @ normal)
    assert off.max() <= 2 + 1.0, f"labels up to {off.max():.1f} voxels off the panel's plane (brush radius 2)"
    planes = np.unique(voxels[:, 0])
    assert len(planes) >= 20, f"the stroke crosses 24 z planes but labels only {planes.tolist()}"
    # every dragged point is labelled
    labels = np.asarray(d.k("w.session.labels().tolist()"))
    assert (labels[tuple(np.rint(on_plane).astype(int).T)] == 2).all()

    color = d.class_colors()[1]
    d.page.mouse.move(2, 2)  # the brush outline follows the pointer
    d.settle()
    after = d.sample(on_plane)
    assert (dist(after, color) < 0.6 * dist(before, color)).mean() > 0.9, "the stroke is not drawn on the panel"


def test_a_stroke_on_the_xz_panel_lands_on_the_shown_y_plane(open_notebook):
    lab, d = open_volume(open_notebook, "volume_xz.ipynb", NOTEBOOK)
    y = int(round(d.k("w.viewer_state")["position"][1]))
    # along z and x on the xz panel, through the y plane it shows
    stroke = [[4, y, 30], [20, y, 60]]
    line = np.array([[round(4 + 16 * t), y, round(30 + 30 * t)] for t in np.linspace(0.1, 0.9, 7)])
    before = d.sample(line, plane="xz")
    d.press("2")
    lab.wait_for(lambda: d.k("w.active_class") == 2, 20, "class 2")
    d.drag(stroke, plane="xz")
    lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == 1, 30, "the stroke in the kernel")
    assert d.k("list(w.session.annotations.strokes[0].axes)") == [0, 2], "an xz stroke paints in the z and x axes"
    voxels = np.asarray(d.k("np.argwhere(w.session.labels() == 2).tolist()"))
    assert np.unique(voxels[:, 1]).tolist() == [y], "labels off the y plane the panel shows"
    assert len(np.unique(voxels[:, 0])) >= 14, "the stroke spans z 4..20"
    labels = np.asarray(d.k("w.session.labels().tolist()"))
    assert (labels[tuple(line.T)] == 2).all()

    color = d.class_colors()[1]
    d.page.mouse.move(2, 2)
    d.settle()
    assert (dist(d.sample(line, plane="xz"), color) < 0.6 * dist(before, color)).all(), (
        "the stroke is not drawn on the xz panel"
    )
