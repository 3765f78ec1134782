"""Images on a web server in the formats Neuroglancer reads itself, other than OME-Zarr 0.4 (tests/e2e/test_remote.py):
a sharded precomputed volume, an N5 multiscale group, a sharded OME-Zarr 0.5 (zarr v3) and a Deep Zoom slide. The
browser reads the raw image straight from the URL (Neuroglancer's own sources), the kernel the same data for
features; a server without CORS headers falls back to the kernel's copy.

Two loopback servers (tests/loopback_http.py, threads of the test process) serve the same files, one with
``Access-Control-Allow-Origin: *``, one without; each lists the requests that came with an ``Origin`` header (the
browser's; the kernel's readers send none). The notebook wraps ``w.chunk_server.read`` to record the keys the kernel
serves: with the browser reading the URL, no ``raw/`` key may be among them.

The volumes are anisotropic (z voxels 3x as deep as wide); the precomputed one has a voxel offset, which Neuroglancer
keeps and the kernel removes. The slide is RGB, JPEG tiles of 32 pixels overlapping by one. Each channel is a random
pattern of dark and bright voxels (independent per channel): screen pixels at voxel centres and 0.3 voxel to each
side must follow the pattern of that voxel and channel, and not the image shifted by a voxel or by the voxel offset,
flipped, the next plane or another channel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_remote import check_a_stroke_lands_on_the_shown_plane, widget_cell
from widget_driver import WidgetDriver

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the format writers, the loopback server
from format_fixtures import write_dzi, write_n5, write_ome_zarr3_sharded, write_precomputed
from loopback_http import LoopbackServer

SHAPE = (5, 36, 48)  # z, y, x
OFFSET = (3, 5, 2)  # x, y, z: where the stored volume starts in Neuroglancer's model
RESOLUTION = (4.0, 4.0, 12.0)  # nm, x, y, z: z voxels 3x as deep as wide
SLIDE_SHAPE = (72, 96)  # y, x


def pattern(shape, seed: int) -> np.ndarray:
    return (30 + 200 * np.random.default_rng(seed).integers(0, 2, shape)).astype(np.uint8)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return pattern(SHAPE, 0)


@pytest.fixture(scope="module")
def slide() -> np.ndarray:
    return np.stack([pattern(SLIDE_SHAPE, seed) for seed in (1, 2, 3)], -1)  # y, x, rgb


@pytest.fixture(scope="module")
def servers(tmp_path_factory, volume, slide):
    root = tmp_path_factory.mktemp("remote_formats")
    write_precomputed(root / "vol", volume, resolution=RESOLUTION, chunk=(16, 16, 4), sharded=True, offset=OFFSET)
    write_n5(root / "vol.n5", volume, resolution=(1.0, 1.0, 3.0))
    write_ome_zarr3_sharded(root / "vol.ome.zarr", volume, "zyx", (3.0, 1.0, 1.0), shard=(4, 32, 32), inner=(2, 16, 16))
    # JPEG with full-resolution colour: Neuroglancer 2.41 scrambles PNG tiles (see serving/remote_raw.py)
    write_dzi(root, "slide", slide, tile=32, overlap=1, fmt="jpg", jpeg_options={"quality": 95, "subsampling": 0})
    cors, plain = LoopbackServer(root, cors=True), LoopbackServer(root, cors=False)
    yield cors, plain
    cors.close()
    plain.close()


def inner_points(position, shape) -> np.ndarray:
    """Voxels of the shown plane (array order) away from the border and from the axis lines of a volume's view."""
    spatial = shape[-2:]
    cy, cx = (int(round(v)) for v in position[-2:])
    yy, xx = np.mgrid[1 : spatial[0] - 1, 1 : spatial[1] - 1]
    keep = (abs(yy - cy) > 1) & (abs(xx - cx) > 1) if len(shape) == 3 else np.ones(yy.shape, bool)
    pts = np.stack([yy[keep], xx[keep]], 1)
    if len(shape) == 3:
        pts = np.concatenate([np.full((len(pts), 1), int(round(position[0]))), pts], 1)
    return pts


def correlation(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])


def check_drawn_in_place(d: WidgetDriver, planes: np.ndarray, wrong: dict) -> None:
    """Screen pixels at voxel centres (and 0.3 voxel beside them) of the shown plane follow ``planes`` (one image
    (y, x) per screen colour channel, or one (y, x) for grey); the first channel (or grey) follows no image of
    ``wrong`` (name -> (y, x) image), and no colour channel another channel's image."""
    position = d.k("{w}.viewer_state['position']")
    shape = d.k("list({w}.session.image.shape)")
    pts = inner_points(position, shape[:3] if len(shape) == 3 and shape[-1] != 3 else shape[:2])
    yx = (pts[:, -2], pts[:, -1])
    shot = d.lab.screenshot_array()
    colour = planes.ndim == 3

    def seen(rgb, c):
        return rgb[:, c] if colour else rgb.mean(axis=1)

    images = list(planes) if colour else [planes]
    for offset in [(0, 0), (-0.3, -0.3), (-0.3, 0.3), (0.3, -0.3), (0.3, 0.3)]:
        rgb = d.sample(pts + np.asarray((0,) * (pts.shape[1] - 2) + offset), shot)
        for c, image in enumerate(images):
            r = correlation(seen(rgb, c), image[yx])
            assert r > 0.9, f"screen channel {c} at voxel centres + {offset} does not follow the image ({r:.2f})"
    rgb = d.sample(pts, shot)
    for what, image in wrong.items():
        r = correlation(seen(rgb, 0), image[yx])
        assert r < 0.3, f"the screen matches the image shifted by {what} ({r:.2f})"
    for c in range(len(images)):
        for other in set(range(len(images))) - {c}:
            r = correlation(seen(rgb, c), images[other][yx])
            assert r < 0.3, f"screen channel {c} shows channel {other} of the image ({r:.2f})"


def volume_wrong(volume: np.ndarray, z: int) -> dict:
    plane = volume[z]
    return {
        "one voxel along y": np.roll(plane, 1, 0),
        "one voxel along x": np.roll(plane, -1, 1),
        "the voxel offset": np.roll(plane, (OFFSET[1], OFFSET[0]), (0, 1)),
        "the next plane": volume[(z + 1) % SHAPE[0]],
        "flipped": plane[::-1],
    }


def slide_wrong(slide: np.ndarray) -> dict:
    return {
        "one voxel along y": np.roll(slide[..., 0], 1, 0),
        "one voxel along x": np.roll(slide[..., 0], -1, 1),
        "flipped": slide[::-1, :, 0],
    }


def raw_shown(d: WidgetDriver) -> str:
    return d.js("h.viewer.layerManager.getLayerByName('raw').layer.dataSources[0].spec.url")


def browser_data_reads(srv: LoopbackServer, prefix: str, metadata: tuple) -> list[str]:
    with srv.lock:
        return [p for p in srv.from_browser if p.startswith(prefix) and not p.endswith(metadata)]


# ------------------------------------------------------------------------------------------------- direct
#: Widget variable -> (path on the server, Neuroglancer's source suffix, a data key the browser must have read)
VOLUMES = {
    "w": ("vol", "|neuroglancer-precomputed:", ".shard"),  # shards, read by byte ranges
    "wn": ("vol.n5", "|n5:", "/0/0/0"),  # N5 blocks (x, y, z)
    "wz": ("vol.ome.zarr/", "|zarr3:", "/c/0/0/0"),  # zarr v3 shards
}
METADATA = ("/info", "attributes.json", "zarr.json")


@pytest.fixture(scope="module")
def direct(open_notebook_module, servers):
    cors, _ = servers
    cells = [widget_cell(var, repr(f"{cors.url}/{path.rstrip('/')}")) for var, (path, _, _) in VOLUMES.items()]
    cells += [widget_cell("wd", repr(f"{cors.url}/slide.dzi")), "_E2E_DONE = True"]
    lab = open_notebook_module("remote_formats.ipynb", cells)
    d = WidgetDriver(lab, "w")
    d.settle()
    return d


@pytest.mark.parametrize("var", list(VOLUMES))
def test_browser_reads_a_volume(direct, servers, volume, var):
    """A sharded precomputed volume with a voxel offset, an N5 multiscale group, a sharded OME-Zarr 0.5."""
    cors, _ = servers
    path, suffix, data_key = VOLUMES[var]
    d = WidgetDriver(direct.lab, var)
    d.settle()
    url = f"{cors.url}/{path}{suffix}"
    assert d.k("{w}.source_info['layer_specs'][0]['source']['url']") == url
    assert raw_shown(d) == url
    # the browser read the data itself, the kernel served no raw data
    reads = browser_data_reads(cors, f"/{path.rstrip('/')}/", METADATA)
    assert any(p.endswith(data_key) for p in reads), f"browser requests: {cors.from_browser}"
    served = d.k("{w}_served")
    assert served and not [k for k in served if k.startswith("raw/")], f"kernel served raw keys: {served}"
    assert d.k("{w}.raw_fallback") is None
    z = int(round(d.k("{w}.viewer_state['position']")[0]))
    check_drawn_in_place(d, volume[z], volume_wrong(volume, z))


def test_a_stroke_on_the_precomputed_volume_lands_on_its_voxels(direct):
    d = WidgetDriver(direct.lab, "w")
    d.scroll_into_view()
    check_a_stroke_lands_on_the_shown_plane(d)


def test_browser_reads_a_deep_zoom_slide(direct, servers, slide):
    cors, _ = servers
    d = WidgetDriver(direct.lab, "wd")
    d.settle()
    url = f"{cors.url}/slide.dzi|deepzoom:"
    assert d.k("wd.source_info['layer_specs'][0]['source']['url']") == url
    assert raw_shown(d) == url
    reads = browser_data_reads(cors, "/slide_files/", ())
    assert any(p.startswith("/slide_files/7/") for p in reads), f"browser requests: {cors.from_browser}"
    assert not [k for k in d.k("{w}_served") if k.startswith("raw/")]
    assert d.k("wd.raw_fallback") is None
    check_drawn_in_place(d, np.moveaxis(slide, -1, 0), slide_wrong(slide))


def test_a_stroke_on_the_deep_zoom_slide_lands_on_its_pixels(direct):
    d = WidgetDriver(direct.lab, "wd")
    d.scroll_into_view()
    position = d.k("{w}.viewer_state['position']")
    y = int(round(position[0])) - 8
    d.press("2")
    d.lab.wait_for(lambda: d.k("wd.active_class") == 2, 20, "class 2")
    d.drag([[y, 10], [y, 60]])
    d.lab.wait_for(lambda: d.k("len(wd.session.annotations.strokes)") == 1, 30, "the stroke in the kernel")
    labels = np.asarray(d.k("wd.session.labels().tolist()"))
    assert (labels[y, 12:59] == 2).all(), f"row {y}: {labels[y, 8:63]}"
    rows = np.unique(np.nonzero(labels)[0])
    assert abs(rows.mean() - y) < 0.5, f"the stroke covers rows {rows.tolist()}, drawn along row {y}"
    d.settle()
    assert not [k for k in d.k("{w}_served") if k.startswith("raw/")]


# ------------------------------------------------------------------------------------------------- fallback
def test_without_cors_the_kernel_serves_both(open_notebook, servers, volume, slide):
    _, plain = servers
    cells = [
        widget_cell("w", repr(f"{plain.url}/vol")),
        widget_cell("wd", repr(f"{plain.url}/slide.dzi")),
        "_E2E_DONE = True",
    ]
    lab = open_notebook("remote_formats_no_cors.ipynb", cells)
    for var, name in (("w", "vol"), ("wd", "slide.dzi")):
        d = WidgetDriver(lab, var)
        lab.wait_for(lambda d=d: d.k("{w}.raw_fallback") is not None, 60, f"the fallback report of {var}")
        d.settle()
        assert f"{plain.url}/{name}" in d.k("{w}.raw_fallback")
        assert [k for k in d.k("{w}_served") if k.startswith("raw/")], "the kernel served no raw chunks"
        assert raw_shown(d).startswith("mem://"), f"the raw layer shows {raw_shown(d)}"
        if var == "w":
            z = int(round(d.k("w.viewer_state['position']")[0]))
            check_drawn_in_place(d, volume[z], volume_wrong(volume, z))
        else:
            check_drawn_in_place(d, np.moveaxis(slide, -1, 0), slide_wrong(slide))
    # the browser tried the server itself (it answers, without the header the browser needs)
    assert plain.from_browser, f"requests: {plain.requests}"
