"""An OME-Zarr on a web server: the browser reads the raw image straight from the URL, the kernel the same data for
features; a server the browser may not read (no CORS headers) falls back to the kernel's copy.

Two loopback HTTP servers (threads of the test process) serve the same OME-Zarr, one with ``Access-Control-Allow-
Origin: *``, one without; both record every request with its ``Origin`` header (the browser's cross-origin fetches
carry one, the kernel's fsspec reads do not). The notebook wraps ``w.chunk_server.read`` to record the keys the
kernel serves.

The volume has two channels (stored in one chunk, so that Neuroglancer shows both as the kernel's composite does)
and is anisotropic, with a translation in its OME metadata; each channel is an independent random pattern of dark
and bright voxels. The screen colour at voxel centres, and 0.3 voxel to each side of them, must be a function of the
two channels' values at that voxel (a linear fit of the colour on the two patterns explains it): a half-voxel or
one-voxel shift, a wrong plane, a transposed or flipped image would not. A time series of such volumes (other
patterns per time point) checks that the time point the kernel reads is the one shown.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading

import numpy as np
import pytest
import zarr
from widget_driver import WidgetDriver

SHAPE = (5, 36, 48)  # z, y, x
SCALE = (1.5, 0.5, 0.5)  # micrometer: z voxels 3x as deep as wide
TRANSLATION = (3.0, 1.0, -0.5)  # micrometer: 2, 2 and -1 voxels
CHUNK_KEY = re.compile(r"/v\.ome\.zarr/\d+/\d+\.\d+\.\d+\.\d+$")
TIME_POINT = 1  # of 3


def make_volume(seed: int = 0) -> np.ndarray:
    patterns = np.random.default_rng(seed).integers(0, 2, (2, *SHAPE))
    return (30 + 200 * patterns).astype(np.uint8)  # c, z, y, x


def write_ome_zarr(path, data: np.ndarray) -> None:
    """OME-Zarr 0.4 (zarr v2) of (t,) c, z, y, x data: two levels, every channel in each chunk (and one time point
    per chunk), written here independently of the package."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    lead = data.ndim - 3  # c, or t and c
    datasets, level = [], data
    for i in range(2):
        chunks = (1,) * (lead - 1) + (2, 5, 16, 16)
        a = g.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=chunks)
        a[...] = level
        scale = [1.0] * lead + [SCALE[0], SCALE[1] * 2**i, SCALE[2] * 2**i]
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": [0.0] * lead + [*TRANSLATION]},
                ],
            }
        )
        level = level[..., ::2, ::2]
    axes = [{"name": "t", "type": "time"}] * (lead - 1) + [{"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    g.attrs["multiscales"] = [{"version": "0.4", "name": "pattern", "axes": axes, "datasets": datasets}]


class DataServer:
    """A threaded static file server on 127.0.0.1 that records (path, Origin header) of every request."""

    def __init__(self, directory, cors: bool):
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def end_headers(self):
                if cors:
                    self.send_header("Access-Control-Allow-Origin", "*")
                super().end_headers()

            def send_head(self):
                outer.requests.append((self.path, self.headers.get("Origin")))
                return super().send_head()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def browser_chunk_reads(self) -> list[str]:
        return [p for p, origin in self.requests if origin is not None and CHUNK_KEY.search(p)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return make_volume()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, volume):
    root = tmp_path_factory.mktemp("remote")
    write_ome_zarr(root / "v.ome.zarr", volume)
    write_ome_zarr(root / "t.ome.zarr", np.stack([make_volume(seed) for seed in (1, 2, 3)]))
    cors, plain = DataServer(root, cors=True), DataServer(root, cors=False)
    yield cors, plain
    cors.stop()
    plain.stop()


def widget_cell(var: str, image: str) -> str:
    """Creates widget ``var`` on ``image`` (code) and records in ``{var}_served`` every key its chunk server reads
    (``read`` keeps its signature: the chunk requests pass a callback after the keys)."""
    return f"""\
from ilastik_widget import IlastikWidget, open_source
{var} = IlastikWidget({image})
{var}_served = []
def _recording_read(keys, *args, read={var}.chunk_server.read, served={var}_served):
    keys = list(keys)
    served.extend(keys)
    return read(keys, *args)
{var}.chunk_server.read = _recording_read
{var}"""


def plane_points(z: int, position) -> np.ndarray:
    """Every voxel (z, y, x) of plane z away from the axis lines drawn through the view centre."""
    cy, cx = (int(round(v)) for v in position[1:])
    yy, xx = np.mgrid[1 : SHAPE[1] - 1, 1 : SHAPE[2] - 1]
    keep = (abs(yy - cy) > 1) & (abs(xx - cx) > 1)
    return np.stack([np.full(keep.sum(), z), yy[keep], xx[keep]], 1)


def explained(colors: np.ndarray, channels: list[np.ndarray]) -> float:
    """Share of the screen colours' variance (N, 3) a linear function of the channels' values (each (N,)) explains."""
    x = np.column_stack([np.ones(len(colors)), *[c.astype(float) for c in channels]])
    coef, *_ = np.linalg.lstsq(x, colors, rcond=None)
    residual = ((colors - x @ coef) ** 2).sum()
    return float(1 - residual / ((colors - colors.mean(0)) ** 2).sum())


def check_drawn_in_place(d: WidgetDriver, volume: np.ndarray, **wrong_images: np.ndarray) -> None:
    """The screen colours at and around voxel centres of the shown plane are explained by both channels of ``volume``
    (c, z, y, x) there, and not by the image shifted, flipped or another plane (or another of ``wrong_images``,
    each c, z, y, x)."""
    position = d.k("{w}.viewer_state['position']")
    z = int(round(position[0]))
    pts = plane_points(z, position)
    y, x = pts[:, 1], pts[:, 2]
    truth = [volume[c][z][y, x] for c in range(2)]
    shot = d.lab.screenshot_array()
    for offset in [(0, 0, 0), (0, -0.3, -0.3), (0, -0.3, 0.3), (0, 0.3, -0.3), (0, 0.3, 0.3)]:
        r2 = explained(d.sample(pts + np.asarray(offset), shot), truth)
        assert r2 > 0.9, f"the screen at voxel centres + {offset[1:]} does not follow the image (R² {r2:.2f})"
    colors = d.sample(pts, shot)
    wrong = {
        "one voxel along y": [volume[c][z][y + 1, x] for c in range(2)],
        "one voxel along x": [volume[c][z][y, x - 1] for c in range(2)],
        "the next plane": [volume[c][(z + 1) % SHAPE[0]][y, x] for c in range(2)],
        "flipped": [volume[c][z][SHAPE[1] - 1 - y, x] for c in range(2)],
        **{name: [image[c][z][y, x] for c in range(2)] for name, image in wrong_images.items()},
    }
    for what, values in wrong.items():
        r2 = explained(colors, values)
        assert r2 < 0.3, f"the screen follows the image shifted by {what} (R² {r2:.2f})"


# ------------------------------------------------------------------------------------------------- direct
@pytest.fixture(scope="module")
def direct(open_notebook_module, servers):
    cors, _ = servers
    cells = [
        widget_cell("w", repr(f"{cors.url}/v.ome.zarr")),
        widget_cell("wt", f"open_source({cors.url + '/t.ome.zarr'!r}, t={TIME_POINT})"),
        "_E2E_DONE = True",
    ]
    lab = open_notebook_module("remote.ipynb", cells)
    d = WidgetDriver(lab, "w")
    d.settle()
    return d


def test_browser_reads_the_raw_image_from_the_url(direct, servers, volume):
    cors, _ = servers
    d = direct
    assert d.k("w.source_info['layer_specs'][0]['source']['url']") == f"{cors.url}/v.ome.zarr/|zarr2:"
    shown = d.js("h.viewer.layerManager.getLayerByName('raw').layer.dataSources[0].spec.url")
    assert shown == f"{cors.url}/v.ome.zarr/|zarr2:", f"the raw layer shows {shown}"
    # (a) the browser fetched chunks from the web server itself
    assert len(cors.browser_chunk_reads()) >= 2, f"browser requests: {cors.requests}"
    # (b) the kernel served no raw data, only labels (and predictions, once trained)
    served = d.k("{w}_served")
    assert served and not [k for k in served if k.startswith("raw/")], f"kernel served raw keys: {served}"
    assert d.k("w.raw_fallback") is None
    # (c) the image is where the kernel's voxels are
    check_drawn_in_place(d, volume)


def test_a_stroke_lands_on_the_voxels_under_it(direct):
    check_a_stroke_lands_on_the_shown_plane(direct)


def check_a_stroke_lands_on_the_shown_plane(d: WidgetDriver) -> None:
    """A class-2 stroke along a row of the shown xy plane labels that row of that plane only, with the raw layer
    read by the browser (no ``raw/`` key asked of the kernel)."""
    position = d.k("{w}.viewer_state['position']")
    z = int(round(position[0]))
    y = int(round(position[1])) - 8
    d.press("2")
    d.lab.wait_for(lambda: d.k("w.active_class") == 2, 20, "class 2")
    d.drag([[z, y, 10], [z, y, 38]])
    d.lab.wait_for(lambda: d.k("len(w.session.annotations.strokes)") == 1, 30, "the stroke in the kernel")
    labels = np.asarray(d.k("w.session.labels().tolist()"))
    assert np.unique(np.nonzero(labels)[0]).tolist() == [z], "the stroke is not on the shown plane"
    assert (labels[z, y, 12:37] == 2).all(), f"row {y} of plane {z}: {labels[z, y, 8:41]}"
    rows = np.unique(np.nonzero(labels[z])[0])
    assert abs(rows.mean() - y) < 0.5, f"the stroke covers rows {rows.tolist()}, drawn along row {y}"
    d.settle()
    assert not [k for k in d.k("{w}_served") if k.startswith("raw/")]


def test_a_time_point_of_a_time_series(direct):
    d = WidgetDriver(direct.lab, "wt")
    d.settle()
    raw = d.k("wt.source_info['layer_specs'][0]")
    assert raw["localPosition"] == [TIME_POINT + 0.5]  # t'; the channels are c^, shown together
    assert not [k for k in d.k("{w}_served") if k.startswith("raw/")]
    series = [make_volume(seed) for seed in (1, 2, 3)]
    others = {f"time point {t}": series[t] for t in range(3) if t != TIME_POINT}
    check_drawn_in_place(d, series[TIME_POINT], **others)


# ------------------------------------------------------------------------------------------------- fallback
def test_without_cors_the_kernel_serves_the_raw_image(open_notebook, servers, volume):
    _, plain = servers
    lab = open_notebook("remote_no_cors.ipynb", [widget_cell("w", repr(f"{plain.url}/v.ome.zarr")), "_E2E_DONE = True"])
    d = WidgetDriver(lab, "w")
    lab.wait_for(lambda: d.k("w.raw_fallback") is not None, 60, "the browser's fallback report in the kernel")
    d.settle()
    assert f"{plain.url}/v.ome.zarr" in d.k("w.raw_fallback")
    # the browser tried the server itself, then read the kernel's copy
    assert any(origin is not None for _, origin in plain.requests), f"requests: {plain.requests}"
    assert [k for k in d.k("{w}_served") if k.startswith("raw/0/")], "the kernel served no raw chunks"
    shown = d.js("h.viewer.layerManager.getLayerByName('raw').layer.dataSources[0].spec.url")
    assert shown.startswith("mem://"), f"the raw layer shows {shown}"
    assert any("could not load the raw layer" in line for line in lab.console)
    check_drawn_in_place(d, volume)
