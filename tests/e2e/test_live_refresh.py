"""A live update changes the viewer's chunks in place, and what the page then holds and shows is the kernel's data.

A refresh that carries every chunk the page holds is applied to Neuroglancer's chunks directly
(js/src/data/chunk_update.ts), without the worker reloading them. This checks that path on a 512 x 512 image in 256 x 256
chunks: a stroke painted with the mouse in a chunk that had no labels (a missing chunk gets data), then the same
stroke deleted (the chunk is missing again). After each, every labels and predictions chunk the page holds must
equal the kernel's bytes, the screen must show the labels as they now are, and the refresh must have been applied
in place rather than by a reload. Two cases must reload once, then update in place again: after panning over many
chunks (the page holds chunks of earlier views), and after a new class (the prediction chunks change shape). A volume
in the four-panel layout is updated in place too.
"""

from __future__ import annotations

import numpy as np
import pytest
from widget_driver import WidgetDriver, classify, dist

SIZE = 512

NOTEBOOK = [
    f"""\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells(({SIZE}, {SIZE}), seed=3)
candidates = simulated_strokes(truth, n_per_class=40, radius=3, seed=3)
def inside(s, lo, hi):
    p = np.asarray(s["points"])
    return bool(((p >= lo) & (p < hi)).all())
# labels only in the top half (chunks 0.0 and 0.1); the mouse paints in chunk 1.1, empty until then
initial = [s for s in candidates if inside(s, [8, 8], [248, {SIZE} - 8])]
initial = [s for s in initial if s["label"] == 1][:3] + [s for s in initial if s["label"] == 2][:3]
painted = next(s for s in candidates if s["label"] == 2 and inside(s, [300, 300], [480, 480]))
w = IlastikWidget(image)
w.brush_size = 7
for s in initial:
    w.add_stroke(**s)
w.wait(120)
# shown, so the page holds prediction chunks, but see-through: the screen checks below read the labels over the image
w.set_layer("probabilities", visible=True, opacity=0.0)
w""",
    "_E2E_DONE = True",
]

# Per chunk the page holds: its key and [sum, index-weighted sum] of its bytes, or None for a missing chunk. Sums of
# the whole chunk, exact in doubles for 256 x 256 x 2 bytes. A zarr chunk (2D) is named by its grid index (the
# reverse of Neuroglancer's grid position), a precomputed one (volumes) by its box in the level's voxels, x first:
# the grid position times the chunk size, clipped to the level's size.
PAGE_CHUNKS = """(() => {
  const out = {};
  for (const source of h.viewer.chunkManager.memoize.map.values()) {
    const url = source.parameters && source.parameters.url;
    if (typeof url !== "string" || !url.startsWith(`mem://${h.widgetId}/`) || !(source.chunks instanceof Map)) continue;
    const m = /^mem:\\/\\/[^/]+\\/(labels|predictions\\/\\d+)\\/(\\d+)\\/?$/.exec(url);
    if (m === null) continue;
    const precomputed = source.RPC_TYPE_ID === "precomputed/VolumeChunkSource";
    const { chunkDataSize, upperVoxelBound } = source.spec;
    for (const [key, chunk] of source.chunks) {
      const grid = key.split(",").map(Number);
      const index = precomputed
        ? [0, 1, 2].map((i) => `${grid[i] * chunkDataSize[i]}-${Math.min(upperVoxelBound[i], (grid[i] + 1) * chunkDataSize[i])}`).join("_")
        : key.split(",").reverse().join(".");
      let sum = 0, weighted = 0;
      if (chunk.data !== null) chunk.data.forEach((v, i) => { sum += v; weighted += i * v; });
      out[`${m[1]}/${m[2]}/${index}`] = chunk.data === null ? null : [sum, weighted];
    }
  }
  return out;
})()"""

KERNEL_CHUNKS = """\
def _sums(keys):
    layout = w.chunk_server.store.layout
    out = {}
    for key in keys:
        current = key if key.startswith("labels/") else "predictions/%d/%s" % (layout, key.split("/", 2)[2])
        data = w.chunk_server.read([current])[0]
        if data is None:
            out[key] = None
        else:
            v = np.frombuffer(data, np.uint8).astype(np.int64)
            out[key] = [int(v.sum()), int((np.arange(v.size) * v).sum())]
    return out
"""


@pytest.fixture(scope="module")
def wd(open_notebook_module) -> WidgetDriver:
    lab = open_notebook_module("live_refresh.ipynb", NOTEBOOK)
    d = WidgetDriver(lab, "w")
    d.settle()
    d.kexec(KERNEL_CHUNKS)
    return d


def page_matches_kernel(d: WidgetDriver) -> dict:
    page = d.js(PAGE_CHUNKS)
    assert any(k.startswith("labels/") for k in page) and any(k.startswith("predictions/") for k in page)
    kernel = d.k(f"_sums({sorted(page)!r})")
    wrong = sorted(k for k in page if page[k] != kernel[k])
    assert not wrong, f"chunks the page holds differ from the kernel's: {wrong}"
    return page


def stroke_updates_in_place(d: WidgetDriver, code: str) -> None:
    """Run ``code`` (a change of the labels) and check that its refresh was applied in place and is right."""
    in_place, reloaded = refresh_counts(d)
    d.kexec(code)
    d.settle()
    in_place_after, reloaded_after = refresh_counts(d)
    assert reloaded_after == reloaded, d.js("h.stats().lastReloadReason")
    assert in_place_after > in_place
    page_matches_kernel(d)


def flat_points(seg: np.ndarray, step: int = 8) -> np.ndarray:
    """Grid points (y, x) whose 7 x 7 neighbourhood is one class in ``seg``: one colour on screen at any rounding."""
    size = seg.shape[0]
    yy, xx = np.mgrid[4 : size - 3 : step, 4 : size - 3 : step]
    flat = np.array(
        [
            seg[y - 3 : y + 4, x - 3 : x + 4].min() == seg[y - 3 : y + 4, x - 3 : x + 4].max()
            for y, x in zip(yy.ravel(), xx.ravel())
        ]
    )
    return np.stack([yy.ravel()[flat], xx.ravel()[flat]], 1)


def refresh_counts(d: WidgetDriver) -> tuple[int, int]:
    stats = d.js("h.stats()")
    return stats["updatedInPlace"], stats["reloaded"]


def test_a_stroke_in_an_empty_chunk_and_its_removal_update_the_chunks_in_place(wd):
    d = wd
    assert d.k("w.session.is_trained")
    assert d.k("list(w.chunk_server.chunk_shape)") == [256, 256]
    page_matches_kernel(d)
    stroke = d.k("dict(label=painted['label'], points=np.asarray(painted['points']).tolist())")
    pts = np.asarray(stroke["points"])
    key = "labels/0/1.1"
    assert d.js(PAGE_CHUNKS)[key] is None, "the painted chunk should have no labels yet"
    shot_before = d.lab.screenshot_array()
    in_place0, reloaded0 = refresh_counts(d)
    generation0 = d.k("w.session.generation")

    # paint: the missing labels chunk gets data, every prediction chunk changes
    d.press("2")
    d.lab.wait_for(lambda: d.k("w.active_class") == 2, 20, "class 2")
    d.drag(pts)
    d.page.mouse.move(2, 2)  # the brush outline follows the pointer: keep it off the stroke
    d.lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == 7, 30, "the stroke in the kernel")
    d.lab.wait_for(lambda: d.k("w.session.generation") > generation0, 60, "new predictions")
    d.settle()
    page = page_matches_kernel(d)
    assert page[key] is not None
    in_place1, reloaded1 = refresh_counts(d)
    assert reloaded1 == reloaded0, d.js("h.stats().lastReloadReason")
    assert in_place1 >= in_place0 + 2, "labels and predictions should have been updated in place"
    color2 = d.class_colors()[1]
    shot = d.lab.screenshot_array()
    before, after = d.sample(pts, shot_before), d.sample(pts, shot)
    assert (dist(after, color2) < dist(before, color2)).mean() > 0.9, "the stroke is not drawn on screen"

    # delete it: the labels chunk is missing again
    sid = d.k("w.session.annotations.strokes[-1].id")
    d.kexec(f"w.remove_stroke({sid})")
    d.lab.wait_for(
        lambda: d.k("int(w.session.labels()[tuple(np.rint(painted['points']).astype(int).T)].max())") == 0,
        30,
        "the stroke removed in the kernel",
    )
    d.settle()
    page = page_matches_kernel(d)
    assert page[key] is None, "the labels chunk should be missing again"
    in_place2, reloaded2 = refresh_counts(d)
    assert reloaded2 == reloaded1, d.js("h.stats().lastReloadReason")
    assert in_place2 > in_place1
    again = d.sample(pts)
    assert (dist(again, before) < 30).mean() > 0.9, "the deleted stroke is still drawn"

    # the predictions on screen are the kernel's
    d.kexec(
        "w.set_layer('raw', visible=False); w.set_layer('labels', visible=False); "
        "w.set_layer('probabilities', visible=True, opacity=1.0)"
    )
    d.settle()
    seg = np.asarray(d.k("w.session.segmentation().tolist()"), np.uint8)
    pts = flat_points(seg)
    screen = classify(d.sample(pts), d.class_colors())
    agree = (screen == seg[tuple(pts.T)]).mean()
    assert agree > 0.95, f"the screen shows {agree:.3f} of the kernel's segmentation"


def trained_widget_notebook(shape: tuple[int, ...], seed: int, n_strokes: int, then: str = "") -> list[str]:
    """A widget on a synthetic image, trained on its first ``n_strokes`` simulated strokes (``strokes`` holds the
    rest for the test), then the code ``then``."""
    return [
        f"""\
import numpy as np
from ilastik_widget import IlastikWidget
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells({shape!r}, seed={seed})
strokes = simulated_strokes(truth, n_per_class=4, radius=3, seed={seed})
w = IlastikWidget(image)
for s in strokes[:{n_strokes}]:
    w.add_stroke(**s)
w.wait(120)
{then}
w""",
        "_E2E_DONE = True",
    ]


def open_widget(open_notebook, name: str, notebook: list[str]) -> WidgetDriver:
    d = WidgetDriver(open_notebook(name, notebook), "w", timeout=300)
    d.settle(timeout=300)
    d.kexec(KERNEL_CHUNKS)
    return d


PAN_SIZE = 1024
# zoomed in: a 256 x 256 chunk is wider than the view, so one chunk is in view at a chunk's centre
PAN_NOTEBOOK = trained_widget_notebook(
    (PAN_SIZE, PAN_SIZE), 4, 6, 'w.viewer_state = {"position": [128, 128], "crossSectionScale": 0.2}'
)


def test_after_panning_over_many_chunks_one_reload_drops_them_then_updates_are_in_place_again(open_notebook):
    d = open_widget(open_notebook, "live_refresh_pan.ipynb", PAN_NOTEBOOK)
    # visit every chunk: Neuroglancer keeps them all in memory
    for y in range(128, PAN_SIZE, 256):
        for x in range(128, PAN_SIZE, 256):
            d.kexec(f"w.viewer_state = {{'position': [{y}, {x}]}}")
            d.lab.wait_for(lambda: d.k("w.viewer_state['position'][:2]") == [y, x], 30, f"the view at {y}, {x}")
            d.settle()
    held = d.js(PAGE_CHUNKS)
    assert sum(k.startswith("predictions/") for k in held) >= 16
    reloaded0 = refresh_counts(d)[1]

    d.kexec("w.add_stroke(**strokes[6])")
    d.settle()
    assert refresh_counts(d)[1] > reloaded0, "an update with 16 chunks held and 1 in view should reload"
    assert "in view" in d.js("h.stats().lastReloadReason")
    page = page_matches_kernel(d)
    assert sum(k.startswith("predictions/") for k in page) < 16, "the reload should have dropped the other chunks"

    stroke_updates_in_place(d, "w.add_stroke(**strokes[7])")


CLASS_NOTEBOOK = trained_widget_notebook((512, 512), 0, 6)


def test_a_new_class_reloads_the_predictions_once_then_updates_are_in_place_again(open_notebook):
    d = open_widget(open_notebook, "live_refresh_class.ipynb", CLASS_NOTEBOOK)
    d.kexec("w.add_stroke(**strokes[6])")
    d.settle()
    reloaded0 = refresh_counts(d)[1]
    # a third class: the prediction chunks get a third channel and no longer fit the ones the page holds
    d.kexec("w.add_class('Membrane', '#ff00ff')")
    d.kexec("_s = dict(strokes[7], label=3); w.add_stroke(**_s)")
    d.lab.wait_for(lambda: d.k("int(w.session.segmentation().max())") == 3, 60, "predictions of three classes")
    d.settle()
    assert refresh_counts(d)[1] > reloaded0
    page_matches_kernel(d)
    stroke_updates_in_place(d, "w.add_stroke(**strokes[5])")
    # on screen: each class in its colour where the kernel's segmentation is flat
    d.kexec(
        "w.set_layer('raw', visible=False); w.set_layer('labels', visible=False); "
        "w.set_layer('probabilities', visible=True, opacity=1.0)"
    )
    d.settle()
    seg = np.asarray(d.k("w.session.segmentation().tolist()"), np.uint8)
    pts = flat_points(seg)
    kernel = seg[tuple(pts.T)]
    assert (kernel == 3).sum() > 20, "the third class should cover some of the image"
    screen = classify(d.sample(pts), d.class_colors())
    agree = (screen == kernel).mean()
    assert agree > 0.95, f"the screen shows {agree:.3f} of the kernel's three-class segmentation"


VOLUME_NOTEBOOK = trained_widget_notebook((48, 128, 128), 6, 6)


def test_a_volume_is_updated_in_place_too(open_notebook):
    d = open_widget(open_notebook, "live_refresh_volume.ipynb", VOLUME_NOTEBOOK)
    assert d.k("w.viewer_state['layout']") == "4panel" and d.k("w.session.is_trained")
    d.kexec("w.add_stroke(**strokes[6])")  # the first update may reload (chunks Neuroglancer prefetched)
    d.settle()
    page = page_matches_kernel(d)
    # plane-shaped chunks: each panel holds chunks one voxel thick along its normal, named by their box
    boxes = [[int(v) for v in key.rsplit("/", 1)[1].replace("_", "-").split("-")] for key in page]
    thickness = sorted({min(b - a for a, b in zip(box[::2], box[1::2])) for box in boxes})
    assert thickness == [1], f"chunks {sorted(page)} are not planes"
    stroke_updates_in_place(d, "w.add_stroke(**strokes[7])")
    stroke_updates_in_place(d, "w.remove_stroke(w.session.annotations.strokes[-1].id)")
