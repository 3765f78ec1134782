"""The raw layer of an image on a web server, read by the browser straight from its URL (ChunkServer.layer_specs).

The spec's source transform is checked by placing voxels the way Neuroglancer 2.41 does (re-stated here from
lib/datasource/zarr/ome.js, precomputed/frontend.js, n5/frontend.js, deepzoom/frontend.js and
lib/coordinate_transform.js): an OME-Zarr's model coordinate of voxel index ``v`` is ``v - 1/2 + translation /
scale`` (in full-resolution voxels, the multiscale transform applied after the dataset's), a plain zarr array's is
``v``; a precomputed volume's voxel ``v`` spans ``[voxel_offset + v, voxel_offset + v + 1)`` of its model dimensions
x, y, z (and c^ with more than one channel), an N5 dataset's and a Deep Zoom image's ``[v, v + 1)`` (N5 dimensions
named by its ``axes``, else x, y, z, t, c; Deep Zoom x, y, c^); an output coordinate is ``matrix @ (model * input
scale / output scale) + offset``. The mem:// raw layer puts voxel i at [i, i + 1) of the global dimension named
after its axis; so must the URL's.
"""

from __future__ import annotations

import functools
import http.server
import threading
from dataclasses import replace

import numpy as np
import pytest
import zarr
from format_fixtures import write_dzi, write_n5, write_precomputed, write_zarr3_sharded
from loopback_http import LoopbackServer

from ilastik_widget.core.session import Session
from ilastik_widget.io.sources import open_source
from ilastik_widget.serving.chunk_server import ChunkServer
from ilastik_widget.widget.widget import IlastikWidget

URL = "https://data.example.org/images/cells.ome.zarr"


def write_ome(path, data, axes, scale, translation=None, zarr_format=2, chunks=None, n_levels=2):
    """An OME-Zarr (0.4 on zarr v2, 0.5 on v3) with an optional translation of the full-resolution level."""
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    datasets, level = [], data
    for i in range(n_levels):
        a = g.create_array(str(i), shape=level.shape, dtype=level.dtype, chunks=chunks or level.shape)
        a[...] = level
        f = [2**i if ax in "yx" else 1 for ax in axes]
        transforms = [{"type": "scale", "scale": [s * k for s, k in zip(scale, f)]}]
        if translation is not None:
            transforms.append({"type": "translation", "translation": list(translation)})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
        level = level[tuple(slice(None, None, 2) if ax in "yx" else slice(None) for ax in axes)]
    types = {"t": "time", "c": "channel"}
    ms = {
        "axes": [
            {"name": ax, "type": types.get(ax, "space"), **({"unit": "micrometer"} if ax in "zyx" else {})}
            for ax in axes
        ],
        "datasets": datasets,
    }
    if zarr_format == 2:
        g.attrs["multiscales"] = [{**ms, "version": "0.4"}]
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}


def remote(path, url=URL, **kwargs):
    """The source at ``path`` as if it came from ``url`` (what the layer spec depends on; no network)."""
    src = open_source(str(path), **kwargs)
    return replace(src, url=url)


def specs(source, raw_from="auto", **session_kwargs):
    server = ChunkServer(Session(source, **session_kwargs), "wid")
    server.raw_from = raw_from
    return server, {s["name"]: s for s in server.layer_specs()}


def global_position(spec, source, voxel):
    """Where Neuroglancer puts the centre of ``voxel`` (index per axis of the stored array), by output dimension."""
    transform = spec["source"]["transform"]
    ome = source.ome_multiscale
    rank = len(voxel)
    centre = np.asarray(voxel, float) + 0.5  # in the stored array, voxel i spans [i, i + 1)
    if ome is not None:
        names = [a["name"] + ("'" if a.get("type") == "channel" else "") for a in ome["axes"]]
        scale, shift = np.ones(rank), np.zeros(rank)
        for tr in ome["datasets"][0]["coordinateTransformations"]:
            if tr["type"] == "scale":
                scale, shift = scale * tr["scale"], shift * tr["scale"]
            else:
                shift = shift + tr["translation"]
        model = centre - 0.5 + shift / scale
        given = transform.get("inputDimensions", {})
        in_scale = np.array([given[n][0] if n in given else s for n, s in zip(names, scale)])
    else:
        model = centre
        in_scale = np.ones(rank)
    out_names = list(transform["outputDimensions"])
    out_scale = np.array([transform["outputDimensions"][n][0] for n in out_names])
    m = np.asarray(transform["matrix"], float)
    out = m[:, :rank] @ (model * in_scale) / out_scale + m[:, rank]
    return dict(zip(out_names, out))


def test_2d_ome_zarr_lands_on_the_mem_raw_layer(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (40, 60), dtype=np.uint8)
    write_ome(tmp_path / "a.ome.zarr", image, "yx", (0.5, 0.5))
    source = remote(tmp_path / "a.ome.zarr")
    server, s = specs(source)
    raw = s["raw"]
    assert raw["source"]["url"] == URL + "/|zarr2:"
    assert raw["source"]["transform"]["outputDimensions"] == {"y": [1.0, ""], "x": [1.0, ""]}
    assert "localPosition" not in raw
    for voxel in [(0, 0), (39, 59), (7, 31)]:
        assert global_position(raw, source, voxel) == pytest.approx({"y": voxel[0] + 0.5, "x": voxel[1] + 0.5})
    # the kernel's copy comes along, for a browser that cannot reach the URL; labels stay kernel-served
    assert raw["fallback"] == specs(source, raw_from="kernel")[1]["raw"]
    assert raw["fallback"]["source"] == "mem://wid/raw/|zarr2:"
    assert raw["shader"] == raw["fallback"]["shader"] and raw["shaderControls"] == raw["fallback"]["shaderControls"]
    assert s["labels"]["source"] == "mem://wid/labels/|zarr2:"
    assert server.sources()["raw"] == "mem://wid/raw/|zarr2:"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_3d_anisotropic_ome_zarr_with_a_translation(tmp_path, zarr_format):
    vol = np.random.default_rng(1).integers(0, 4000, (6, 20, 30), dtype=np.uint16)
    write_ome(
        tmp_path / "v.ome.zarr", vol, "zyx", (2.0, 0.5, 0.5), translation=(10.0, 1.5, -0.5), zarr_format=zarr_format
    )
    source = remote(tmp_path / "v.ome.zarr")
    _, s = specs(source)
    raw = s["raw"]
    assert raw["source"]["url"] == f"{URL}/|zarr{zarr_format}:"
    dims = {"z": [4.0, ""], "y": [1.0, ""], "x": [1.0, ""]}
    assert raw["source"]["transform"]["outputDimensions"] == dims
    assert raw["fallback"]["source"]["transform"]["outputDimensions"] == dims  # the viewer's global dimensions
    # the OME translation (5, 3, -1 voxels) is undone: voxel i of the kernel is voxel i on screen
    for voxel in [(0, 0, 0), (5, 19, 29), (2, 11, 4)]:
        got = global_position(raw, source, voxel)
        assert got == pytest.approx({"z": voxel[0] + 0.5, "y": voxel[1] + 0.5, "x": voxel[2] + 0.5})


def test_axes_other_than_zyx_order_map_by_position(tmp_path):
    """An OME 'xy' image: the kernel calls array axis 0 'y' (the mem:// layers do); so must the URL's layer."""
    image = np.zeros((30, 20), np.uint8)
    write_ome(tmp_path / "xy.ome.zarr", image, "xy", (1.0, 3.0))
    source = remote(tmp_path / "xy.ome.zarr")
    raw = specs(source)[1]["raw"]
    assert raw["source"]["transform"]["inputDimensions"] == {"x": [1.0, ""], "y": [3.0, ""]}
    assert raw["source"]["transform"]["outputDimensions"] == {"y": [1.0, ""], "x": [3.0, ""]}
    assert global_position(raw, source, (4, 9)) == pytest.approx({"y": 4.5, "x": 9.5})


def test_rgb_channels_become_the_channel_dimension(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    write_ome(tmp_path / "rgb.ome.zarr", rgb, "cyx", (1.0, 0.5, 0.5))
    source = remote(tmp_path / "rgb.ome.zarr")
    _, s = specs(source)
    raw = s["raw"]
    transform = raw["source"]["transform"]
    assert list(transform["outputDimensions"]) == ["c^", "y", "x"]
    assert list(transform["inputDimensions"]) == ["c'", "y", "x"]
    assert "localPosition" not in raw and "contrast2()" in raw["shader"]
    got = global_position(raw, source, (2, 10, 20))
    assert got == pytest.approx({"c^": 2.5, "y": 10.5, "x": 20.5})  # channel 2 spans [2, 3), as the mem:// layer's


def test_rgb_stored_one_channel_per_chunk_is_served_by_the_kernel(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (3, 40, 50), dtype=np.uint8)
    write_ome(tmp_path / "rgb.ome.zarr", rgb, "cyx", (1.0, 0.5, 0.5), chunks=(1, 40, 50))
    _, s = specs(remote(tmp_path / "rgb.ome.zarr"))
    assert s["raw"]["source"] == {
        "url": "mem://wid/raw/|zarr2:",
        "transform": {"outputDimensions": {"y": [1.0, ""], "x": [1.0, ""], "c^": [1, ""]}},
    }


def test_channels_stored_one_per_chunk_are_served_by_the_kernel(tmp_path):
    """The composite of all channels needs Neuroglancer's channel dimension, which must lie whole in each chunk."""
    data = np.random.default_rng(3).integers(0, 255, (2, 5, 20, 30), dtype=np.uint8)
    write_ome(tmp_path / "c.ome.zarr", data, "czyx", (1.0, 1.0, 1.0, 1.0), chunks=(1, 5, 20, 30))
    source = remote(tmp_path / "c.ome.zarr")
    raw = specs(source)[1]["raw"]
    assert raw["source"]["url"] == "mem://wid/raw/|zarr2:" and "contrast1()" in raw["shader"]


def test_channels_in_one_chunk_become_the_channel_dimension(tmp_path):
    data = np.random.default_rng(3).integers(0, 255, (2, 5, 20, 30), dtype=np.uint8)
    write_ome(tmp_path / "c.ome.zarr", data, "czyx", (1.0, 1.0, 1.0, 1.0), chunks=(2, 5, 20, 30))
    source = remote(tmp_path / "c.ome.zarr")
    raw = specs(source)[1]["raw"]
    assert list(raw["source"]["transform"]["outputDimensions"]) == ["c^", "z", "y", "x"]
    assert "localPosition" not in raw
    assert global_position(raw, source, (1, 1, 2, 3)) == pytest.approx({"c^": 1.5, "z": 1.5, "y": 2.5, "x": 3.5})


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_time_point_is_a_local_position(tmp_path, zarr_format):
    data = np.random.default_rng(4).integers(0, 255, (4, 2, 20, 30), dtype=np.uint8)
    write_ome(tmp_path / "t.ome.zarr", data, "tcyx", (1.0, 1.0, 0.5, 0.5), zarr_format=zarr_format)
    source = remote(tmp_path / "t.ome.zarr", t=2)
    server, s = specs(source)
    raw = s["raw"]
    assert list(raw["source"]["transform"]["outputDimensions"]) == ["t'", "c^", "y", "x"]
    assert raw["localPosition"] == [2.5]  # time point 2
    assert global_position(raw, source, (2, 1, 3, 4)) == pytest.approx({"t'": 2.5, "c^": 1.5, "y": 3.5, "x": 4.5})
    # the kernel reads the same time point, every channel
    read = server.store.raw_reader.read((slice(0, 20), slice(0, 30)))
    np.testing.assert_array_equal(read, np.moveaxis(data[2], 0, -1))


def test_plain_zarr_array(tmp_path):
    image = np.random.default_rng(5).integers(0, 255, (30, 40), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "plain.zarr"), data=image, chunks=(16, 16), zarr_format=3)
    source = remote(tmp_path / "plain.zarr", url="http://127.0.0.1:8000/plain.zarr")
    raw = specs(source)[1]["raw"]
    assert raw["source"]["url"] == "http://127.0.0.1:8000/plain.zarr/|zarr3:"
    assert "inputDimensions" not in raw["source"]["transform"]
    assert global_position(raw, source, (3, 7)) == pytest.approx({"y": 3.5, "x": 7.5})
    # units would scale Neuroglancer's model: not expressible with a unit-less global dimension here
    arr = zarr.open_array(str(tmp_path / "plain.zarr"), mode="r+")
    arr.attrs["dimension_units"] = ["nm", "nm"]
    assert specs(remote(tmp_path / "plain.zarr"))[1]["raw"]["source"] == "mem://wid/raw/|zarr2:"


@pytest.mark.parametrize(
    "case", ["no-url", "local", "float64", "ome-0.5-on-v2", "old-ome", "odd-transform", "query", "kernel"]
)
def test_cases_the_browser_cannot_load_are_served_by_the_kernel(tmp_path, case):
    image = np.random.default_rng(6).integers(0, 255, (20, 30), dtype=np.uint8)
    write_ome(tmp_path / "a.ome.zarr", image if case != "float64" else image.astype(np.float64), "yx", (1.0, 1.0))
    source = remote(tmp_path / "a.ome.zarr")
    raw_from = "auto"
    if case == "no-url":
        source = open_source(image)
    elif case == "local":
        source = open_source(str(tmp_path / "a.ome.zarr"))
    elif case == "ome-0.5-on-v2":
        source = replace(source, ome_multiscale={**source.ome_multiscale, "version": "0.5"})
    elif case == "old-ome":
        source = replace(source, ome_multiscale={**source.ome_multiscale, "version": "0.3"})
    elif case == "odd-transform":
        ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "path": "scale.json"}]}]
        source = replace(source, ome_multiscale={**source.ome_multiscale, "datasets": ds})
    elif case == "query":
        source = replace(source, url=URL + "?token=1")
    elif case == "kernel":
        raw_from = "kernel"
    server, s = specs(source, raw_from=raw_from)
    assert s["raw"]["source"] == "mem://wid/raw/|zarr2:" and "fallback" not in s["raw"]
    if case != "kernel":
        server.raw_from = "browser"
        with pytest.raises(ValueError):
            server.layer_specs()


def test_widget_options_and_the_browsers_fallback_report(tmp_path):
    image = np.random.default_rng(7).integers(0, 255, (30, 40), dtype=np.uint8)
    write_ome(tmp_path / "a.ome.zarr", image, "yx", (1.0, 1.0))
    source = remote(tmp_path / "a.ome.zarr")
    w = IlastikWidget(source)
    raw = w.source_info["layer_specs"][0]
    assert raw["source"]["url"] == URL + "/|zarr2:" and raw["fallback"]["source"] == w.chunk_server.sources()["raw"]
    assert IlastikWidget(source, raw_from="kernel").source_info["layer_specs"][0]["source"].startswith("mem://")
    assert "fallback" not in IlastikWidget(source, raw_from="browser").source_info["layer_specs"][0]
    with pytest.raises(ValueError, match="raw_from='browser'.*no http"):
        IlastikWidget(image, raw_from="browser")
    with pytest.raises(ValueError, match="raw_from must be one of"):
        IlastikWidget(image, raw_from="server")

    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    assert w.raw_fallback is None
    w.handle_message({"type": "source-fallback", "id": 3, "layer": "raw", "url": URL, "message": "No zarr metadata"})
    assert "could not load the raw layer from " + URL in w.raw_fallback and "No zarr metadata" in w.raw_fallback
    assert w.status == w.raw_fallback and not w.error and sent == []  # no reply, no error
    w.handle_message({"type": "source-fallback", "id": 4, "layer": "raw", "url": 5, "message": "x"})
    assert sent and sent[-1]["type"] == "error"
    w.close()


@pytest.fixture
def http_root(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def test_widget_opens_a_url_string_over_http(http_root):
    root, base = http_root
    vol = np.random.default_rng(8).integers(0, 255, (4, 24, 32), dtype=np.uint8)
    write_ome(root / "v.ome.zarr", vol, "zyx", (1.0, 0.25, 0.25), zarr_format=3)
    w = IlastikWidget(f"{base}/v.ome.zarr")
    raw = w.source_info["layer_specs"][0]
    assert raw["source"]["url"] == f"{base}/v.ome.zarr/|zarr3:"
    assert raw["source"]["transform"]["outputDimensions"]["z"] == [4.0, ""]
    np.testing.assert_array_equal(w.session.image[1].compute(), vol[1])
    w.close()


# ------------------------------------------------------------------------------------ precomputed, N5, Deep Zoom
VOLUME = np.random.default_rng(9).integers(0, 250, (6, 20, 30), dtype=np.uint8)  # z, y, x
SLIDE = np.random.default_rng(10).integers(0, 255, (70, 90, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every format on a real loopback http server."""
    root = tmp_path_factory.mktemp("served")
    write_precomputed(root / "pc", VOLUME, offset=(3, 5, 7))
    write_precomputed(root / "pc_sharded", VOLUME, sharded=True, offset=(3, 5, 7))
    write_precomputed(root / "flat", VOLUME[:1], offset=(3, 5, 7))
    write_precomputed(root / "two", np.stack([VOLUME, 255 - VOLUME], -1), channels_last=True)
    write_precomputed(root / "rgb", np.stack([VOLUME, VOLUME // 2, 255 - VOLUME], -1), channels_last=True)
    write_n5(root / "n5", VOLUME)
    write_zarr3_sharded(root / "z3", VOLUME, (4, 16, 16), (2, 8, 8))
    write_dzi(root, "slide", SLIDE, tile=32, overlap=1, fmt="jpg")
    write_dzi(root, "png", SLIDE, tile=32, overlap=1)
    write_dzi(root, "grey", SLIDE[..., 0], tile=32)
    write_dzi(root, "rgba", np.dstack([SLIDE, SLIDE[..., :1]]), tile=32)
    with LoopbackServer(root) as srv:
        yield root, srv.url


@pytest.fixture(scope="module")
def object_store(served):
    """The same files from a server that looks paths up as keys (a doubled slash is not collapsed)."""
    with LoopbackServer(served[0]) as srv:
        srv.object_store = True
        yield srv.url


def source_url(spec) -> str:
    return spec["source"] if isinstance(spec["source"], str) else spec["source"]["url"]


def placed(spec, model_voxel) -> dict:
    """Where Neuroglancer puts the centre of the voxel at ``model_voxel`` (its lower corner in the source's model
    coordinates, one entry per input dimension), by output dimension."""
    transform = spec["source"]["transform"]
    in_scale = np.array([v[0] for v in transform["inputDimensions"].values()])
    out_names = list(transform["outputDimensions"])
    out_scale = np.array([transform["outputDimensions"][n][0] for n in out_names])
    m = np.asarray(transform["matrix"], float)
    rank = len(in_scale)
    out = m[:, :rank] @ ((np.asarray(model_voxel, float) + 0.5) * in_scale) / out_scale + m[:, rank]
    return dict(zip(out_names, out))


@pytest.mark.parametrize("name", ["pc", "pc_sharded"])
def test_precomputed_voxel_offset_is_undone(served, name):
    _, base = served
    source = open_source(f"{base}/{name}")
    server, s = specs(source)
    raw = s["raw"]
    assert raw["source"]["url"] == f"{base}/{name}|neuroglancer-precomputed:"
    transform = raw["source"]["transform"]
    assert list(transform["inputDimensions"]) == ["x", "y", "z"]  # one channel: no channel dimension
    # 4 x 4 x 40 nm: z voxels ten times as deep, as the kernel's layers say
    assert {n: v[0] for n, v in transform["outputDimensions"].items()} == {"x": 1.0, "y": 1.0, "z": 10.0}
    assert transform["outputDimensions"]["z"] == raw["fallback"]["source"]["transform"]["outputDimensions"]["z"]
    for z, y, x in [(0, 0, 0), (5, 19, 29), (2, 11, 4)]:
        # the kernel's voxel (z, y, x) is the stored voxel (x + 3, y + 5, z + 7) of the model
        assert placed(raw, (x + 3, y + 5, z + 7)) == pytest.approx({"x": x + 0.5, "y": y + 0.5, "z": z + 0.5})
    # the kernel's copy comes along for a browser that cannot reach the URL; labels stay kernel-served
    assert raw["fallback"] == specs(source, raw_from="kernel")[1]["raw"]
    assert source_url(raw["fallback"]) == server.sources()["raw"] and source_url(s["labels"]).startswith("mem://")


def test_a_one_voxel_deep_precomputed_volume(served):
    _, base = served
    source = open_source(f"{base}/flat")
    assert source.axes == "yx"
    raw = specs(source)[1]["raw"]
    transform = raw["source"]["transform"]
    assert list(transform["inputDimensions"]) == ["x", "y", "z"]
    assert list(transform["outputDimensions"]) == ["x", "y", "z'"]  # the flat z held in a local dimension
    assert raw["localPosition"] == [0.5]
    assert placed(raw, (3 + 9, 5 + 4, 7)) == pytest.approx({"x": 9.5, "y": 4.5, "z'": 0.5})


def test_precomputed_channels(served):
    _, base = served
    two = specs(open_source(f"{base}/two"))[1]["raw"]
    transform = two["source"]["transform"]
    assert list(transform["inputDimensions"]) == ["x", "y", "z", "c^"]
    assert list(transform["outputDimensions"]) == ["x", "y", "z", "c^"] and "localPosition" not in two
    assert placed(two, (4, 3, 2, 1)) == pytest.approx({"x": 4.5, "y": 3.5, "z": 2.5, "c^": 1.5})
    rgb = specs(open_source(f"{base}/rgb"))[1]["raw"]
    assert list(rgb["source"]["transform"]["outputDimensions"]) == ["x", "y", "z", "c^"]
    assert "localPosition" not in rgb and "contrast2()" in rgb["shader"]
    assert placed(rgb, (4, 3, 2, 2)) == pytest.approx({"x": 4.5, "y": 3.5, "z": 2.5, "c^": 2.5})


def test_n5_dimensions_by_their_names(served, tmp_path):
    _, base = served
    raw = specs(open_source(f"{base}/n5"))[1]["raw"]
    assert raw["source"]["url"] == f"{base}/n5|n5:"
    transform = raw["source"]["transform"]
    assert list(transform["inputDimensions"]) == ["x", "y", "z"]  # the group's axes
    assert {n: v[0] for n, v in transform["outputDimensions"].items()} == {"x": 1.0, "y": 1.0, "z": 4.0}
    for z, y, x in [(0, 0, 0), (5, 19, 29), (3, 7, 21)]:
        assert placed(raw, (x, y, z)) == pytest.approx({"x": x + 0.5, "y": y + 0.5, "z": z + 0.5})


def test_an_n5_time_point(tmp_path):
    import tensorstore as ts

    data = np.random.default_rng(11).integers(0, 255, (3, 4, 10, 12), dtype=np.uint8)  # t, z, y, x
    spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "t.n5") + "/"}}
    meta = {"dimensions": list(data.T.shape), "blockSize": [8, 8, 4, 1], "dataType": "uint8",
            "compression": {"type": "raw"}}  # fmt: skip
    ts.open({**spec, "metadata": meta}, create=True).result().write(data.T).result()
    attrs = tmp_path / "t.n5" / "attributes.json"
    attrs.write_text(attrs.read_text()[:-1] + ', "axes": ["x", "y", "z", "t"]}')
    with LoopbackServer(tmp_path) as srv:
        source = open_source(f"{srv.url}/t.n5", t=2)
        raw = specs(source)[1]["raw"]
    assert list(raw["source"]["transform"]["inputDimensions"]) == ["x", "y", "z", "t"]
    assert list(raw["source"]["transform"]["outputDimensions"]) == ["x", "y", "z", "t'"]
    assert raw["localPosition"] == [2.5]  # inside time point 2, as the kernel reads
    assert placed(raw, (5, 6, 1, 2)) == pytest.approx({"x": 5.5, "y": 6.5, "z": 1.5, "t'": 2.5})


def test_deep_zoom_rgb_jpeg(served):
    _, base = served
    source = open_source(f"{base}/slide.dzi")
    raw = specs(source)[1]["raw"]
    assert raw["source"]["url"] == f"{base}/slide.dzi|deepzoom:"
    transform = raw["source"]["transform"]
    assert list(transform["inputDimensions"]) == ["x", "y", "c^"]
    assert list(transform["outputDimensions"]) == ["x", "y", "c^"] and "contrast2()" in raw["shader"]
    for y, x in [(0, 0), (69, 89), (31, 32)]:  # across a tile border too
        assert placed(raw, (x, y, 1)) == pytest.approx({"x": x + 0.5, "y": y + 0.5, "c^": 1.5})


def test_sharded_zarr3_array(served):
    _, base = served
    raw = specs(open_source(f"{base}/z3"))[1]["raw"]
    assert raw["source"]["url"] == f"{base}/z3/|zarr3:"
    assert global_position(raw, open_source(f"{base}/z3"), (2, 3, 4)) == pytest.approx({"z": 2.5, "y": 3.5, "x": 4.5})


@pytest.mark.parametrize(
    "case", ["png-tiles", "grey-tiles", "rgba-tiles", "object-store", "jxl", "token", "token-zarr", "other-axes"]
)
def test_what_neuroglancer_cannot_decode_is_served_by_the_kernel(served, object_store, case):
    _, base = served
    name = {"png-tiles": "png.dzi", "grey-tiles": "grey.dzi", "rgba-tiles": "rgba.dzi", "token-zarr": "z3"}.get(
        case, "pc"
    )
    source = open_source(f"{base}/{name}")
    if case == "jxl":
        source = replace(source, storage=replace(source.storage, encodings=("jxl", "raw")))
    elif case == "object-store":  # tile paths with a doubled slash, as Neuroglancer asks, are not found
        source = open_source(f"{object_store}/slide.dzi")
    elif case.startswith("token"):  # opened with a token (only sent over https): the browser has none
        source = replace(source, storage=replace(source.storage, needs_token=True))
    elif case == "other-axes":  # the stored axes no longer match the image's
        source = replace(source, storage=replace(source.storage, axes="xyc"))
    server, s = specs(source)
    assert source_url(s["raw"]).startswith("mem://wid/raw/") and "fallback" not in s["raw"]
    server.raw_from = "browser"
    tiles = "8-bit RGB JPEG only, not png"
    why = {
        "object-store": "doubled slash",
        "png-tiles": tiles,
        "grey-tiles": tiles,
        "rgba-tiles": tiles,
        "jxl": "jxl",
        "token": "token",
        "token-zarr": "token",
    }
    with pytest.raises(ValueError, match=why.get(case, "axes")):
        server.layer_specs()
