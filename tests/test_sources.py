"""ilastik_widget.io.sources: every source type, from files written here."""

from __future__ import annotations

import functools
import http.server
import threading

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from ilastik_widget.io.errors import SourceError
from ilastik_widget.io.sources import ImageSource, open_source


def _img(shape, seed=0, dtype=np.uint16):
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)


def write_ome_zarr(path, data, axes, scale, zarr_format=2, n_levels=3, chunks=None, omero=None):
    """A minimal OME-Zarr writer (0.4 for zarr v2, 0.5 for v3), written independently of the package."""
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    datasets = []
    lvl = data
    for i in range(n_levels):
        a = g.create_array(
            str(i), shape=lvl.shape, dtype=lvl.dtype, chunks=chunks or tuple(min(s, 16) for s in lvl.shape)
        )
        a[...] = lvl
        s = [sc * (2**i if ax in "yx" else 1) for sc, ax in zip(scale, axes)]
        datasets.append({"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": s}]})
        sl = tuple(slice(None, None, 2) if ax in "yx" else slice(None) for ax in axes)
        lvl = lvl[sl]
    types = {"t": "time", "c": "channel"}
    ms = {
        "axes": [
            {"name": a, "type": types.get(a, "space"), **({"unit": "micrometer"} if a in "zyx" else {})} for a in axes
        ],
        "datasets": datasets,
        "name": "cells",
    }
    if zarr_format == 2:
        ms["version"] = "0.4"
        g.attrs["multiscales"] = [ms]
        if omero:
            g.attrs["omero"] = omero
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms], **({"omero": omero} if omero else {})}
    return g


def test_numpy_2d_and_3d_and_channels():
    a = _img((20, 30))
    s = open_source(a)
    assert s.axes == "yx" and s.spatial_shape == (20, 30) and s.channel_axis is None
    assert isinstance(s.array, da.Array) and s.url is None and s.path is None
    np.testing.assert_array_equal(s[3:5, 4:9], a[3:5, 4:9])
    v = _img((5, 20, 30))
    assert open_source(v).axes == "zyx"
    c = _img((20, 30, 3))
    s = open_source(c, channel_axis=-1)
    assert s.axes == "yxc" and s.channel_axis == 2 and s.n_channels == 3 and s.spatial_shape == (20, 30)
    s = open_source(_img((2, 5, 20, 30)), channel_axis=0)
    assert s.axes == "czyx" and s.spatial_shape == (5, 20, 30)
    with pytest.raises(ValueError, match="axes"):
        open_source(_img((2, 5, 20, 30)))
    with pytest.raises(ValueError, match="channel_axis"):
        open_source(a, channel_axis=5)
    with pytest.raises(TypeError):
        open_source(object())


def test_dask_array_time_series():
    a = _img((4, 6, 16, 18))
    d = da.from_array(a, chunks=(1, 3, 8, 8))
    s = open_source(d, axes="tzyx")
    assert s.n_times == 4 and s.spatial_shape == (6, 16, 18) and s.time_axis == 0
    s2 = s.at_time(2)
    assert s2.axes == "zyx" and s2.time_index == 2
    np.testing.assert_array_equal(s2[1:3, :, 5], a[2, 1:3, :, 5])
    s3 = open_source(d, axes="tzyx", t=-1)
    np.testing.assert_array_equal(np.asarray(s3), a[3])
    with pytest.raises(IndexError):
        s.at_time(4)
    # a time axis of length 1 is dropped automatically
    assert open_source(a[:1], axes="tzyx").axes == "zyx"


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_array_path_and_object(tmp_path, fmt):
    a = _img((7, 20, 21), seed=fmt)
    z = zarr.open_array(
        str(tmp_path / "a.zarr"), mode="w", shape=a.shape, dtype=a.dtype, chunks=(2, 8, 8), zarr_format=fmt
    )
    z[...] = a
    s = open_source(str(tmp_path / "a.zarr"))
    assert s.zarr_format == fmt and s.axes == "zyx" and s.name == "a" and s.source_kind == "zarr"
    # dask chunks are whole stored chunks (small ones grouped, so a huge array does not make millions of tasks)
    assert all(c % k == 0 or c == n for c, k, n in zip(s.chunks, (2, 8, 8), a.shape))
    np.testing.assert_array_equal(s[2:5, 3:9, 0], a[2:5, 3:9, 0])
    s = open_source(zarr.open_array(str(tmp_path / "a.zarr"), mode="r"))
    np.testing.assert_array_equal(s.array.compute(), a)


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_group(tmp_path, fmt):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=fmt)
    a = _img((10, 12))
    g.create_array("raw", shape=a.shape, dtype=a.dtype, chunks=(5, 5))[...] = a
    s = open_source(str(tmp_path / "g.zarr"))  # one array: taken
    np.testing.assert_array_equal(s[...], a)
    g.create_array("other", shape=(3, 3), dtype="f4", chunks=(3, 3))
    with pytest.raises(ValueError, match="several arrays"):
        open_source(str(tmp_path / "g.zarr"))
    s = open_source(str(tmp_path / "g.zarr"), path="raw")
    np.testing.assert_array_equal(s[2:4], a[2:4])
    s = open_source(zarr.open_group(str(tmp_path / "g.zarr"), mode="r"), path="raw")
    np.testing.assert_array_equal(s[...], a)


@pytest.mark.parametrize("fmt", [2, 3])
def test_ome_zarr_pyramid_scale_channels(tmp_path, fmt):
    a = _img((2, 6, 32, 40), seed=3)
    write_ome_zarr(
        tmp_path / "img.ome.zarr",
        a,
        "czyx",
        [1.0, 2.0, 0.5, 0.25],
        zarr_format=fmt,
        omero={"channels": [{"label": "dna"}, {"label": "membrane"}]},
    )
    s = open_source(str(tmp_path / "img.ome.zarr"))
    assert s.source_kind == "ome-zarr" and s.zarr_format == fmt
    assert s.axes == "czyx" and s.channel_axis == 0 and s.n_channels == 2
    assert s.spatial_shape == (6, 32, 40)
    assert s.scale == (2.0, 0.5, 0.25) and s.units == ("micrometer",) * 3
    assert len(s.levels) == 3 and s.levels[1].shape == (2, 6, 16, 20) and s.levels[2].shape == (2, 6, 8, 10)
    assert s.level_scales[1] == (2.0, 1.0, 0.5)
    assert s.channel_names == ["dna", "membrane"] and s.name == "cells"
    np.testing.assert_array_equal(s[1, 2:4, 5:9, 7], a[1, 2:4, 5:9, 7])
    np.testing.assert_array_equal(s.levels[1].compute(), a[:, :, ::2, ::2])
    # the user's channel axis wins over the metadata
    s2 = open_source(str(tmp_path / "img.ome.zarr"), channel_axis=1)
    assert s2.axes == "zcyx" and s2.channel_axis == 1


def test_ome_zarr_time_series(tmp_path):
    a = _img((3, 5, 16, 16), seed=4)
    write_ome_zarr(tmp_path / "t.ome.zarr", a, "tzyx", [1.0, 3.0, 1.0, 1.0], n_levels=2)
    s = open_source(str(tmp_path / "t.ome.zarr"))
    assert s.axes == "tzyx" and s.n_times == 3 and s.spatial_shape == (5, 16, 16)
    s1 = open_source(str(tmp_path / "t.ome.zarr"), t=1)
    assert s1.axes == "zyx" and s1.scale == (3.0, 1.0, 1.0) and s1.levels[1].shape == (5, 8, 8)
    np.testing.assert_array_equal(s1[...], a[1])
    np.testing.assert_array_equal(s.at_time(2)[0:2, 3, :], a[2, 0:2, 3, :])


def test_tiff_lazy_zyx_and_channels(tmp_path):
    a = _img((6, 40, 50), seed=5)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": "ZYX", "spacing": 2.5}, resolution=(1 / 0.5, 1 / 0.5))
    s = open_source(str(p))
    assert s.axes == "zyx" and s.source_kind == "tiff" and s.name == "stack"
    assert s.scale == pytest.approx((2.5, 0.5, 0.5))
    # lazy: one chunk per page
    assert s.array.numblocks[0] == 6
    np.testing.assert_array_equal(s[2:4, 10:20, 5], a[2:4, 10:20, 5])
    np.testing.assert_array_equal(s.array[5].compute(), a[5])
    # tiled 2D RGB (samples axis = channels)
    rgb = _img((64, 48, 3), seed=6, dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb", tile=(16, 16))
    s = open_source(str(tmp_path / "rgb.tiff"))
    assert s.axes == "yxc" and s.channel_axis == 2 and s.spatial_shape == (64, 48)
    assert s.array.chunks[0][0] == 16  # tiles, not the whole image
    np.testing.assert_array_equal(s[10:30, 20:40], rgb[10:30, 20:40])
    # channel-first ImageJ hyperstack
    czyx = _img((4, 2, 20, 22), seed=7)
    tifffile.imwrite(tmp_path / "hyper.tif", czyx, imagej=True, metadata={"axes": "ZCYX"})
    s = open_source(str(tmp_path / "hyper.tif"))
    assert s.axes == "zcyx" and s.channel_axis == 1 and s.spatial_shape == (4, 20, 22)
    np.testing.assert_array_equal(s[...], czyx)


def test_tiff_pyramid_levels_and_a_graph_that_travels_to_other_processes(tmp_path):
    import pickle

    a = _img((128, 96), seed=8)
    p = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(p) as tw:
        tw.write(a, tile=(32, 32), subifds=1)
        tw.write(a[::2, ::2], tile=(32, 32), subfiletype=1)
    s = open_source(str(p))
    assert [lv.shape for lv in s.levels] == [(128, 96), (64, 48)]
    np.testing.assert_array_equal(s.levels[1][...], a[::2, ::2])
    # what Dask sends to worker processes: the graph pickled (an open file handle and its lock cannot be)
    for level, expected in zip(s.levels, (a, a[::2, ::2])):
        copy = pickle.loads(pickle.dumps(level))  # a dask array
        np.testing.assert_array_equal(copy.compute(), expected)


def test_missing_and_foreign_paths(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "nope.zarr"))
    with pytest.raises(FileNotFoundError):
        open_source(str(tmp_path / "nope.tif"))
    (tmp_path / "junk.bin").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not a zarr"):
        open_source(str(tmp_path / "junk.bin"))
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ValueError, match="TIFF"):
        open_source(str(tmp_path / "bad.tif"))


@pytest.fixture(scope="module")
def tiffs(tmp_path_factory):
    """The bytes of a tiled volume and of a striped RGB image."""
    d = tmp_path_factory.mktemp("tiffs")
    tifffile.imwrite(
        d / "tiled.tif", _img((3, 64, 64), seed=9, dtype=np.uint8), tile=(32, 32), metadata={"axes": "ZYX"}
    )
    tifffile.imwrite(d / "rgb.tif", _img((40, 30, 3), seed=10, dtype=np.uint8), photometric="rgb")
    return [(d / name).read_bytes() for name in ("tiled.tif", "rgb.tif")]


def test_a_tiff_cut_short_opens_and_names_the_file_when_a_missing_tile_is_read(tmp_path):
    a = _img((3, 64, 64), seed=11)
    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, a, tile=(32, 32), metadata={"axes": "ZYX"})
    p.write_bytes(p.read_bytes()[: p.stat().st_size * 6 // 10])  # the last plane's tiles are gone
    src = open_source(str(p))
    np.testing.assert_array_equal(src[0], a[0])
    with pytest.raises(SourceError, match=r"the pixels of '.*cut\.tif' cannot be read: corrupted tile"):
        src[2]


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    which=st.integers(0, 1),
    cut=st.integers(0, 2**16),
    changes=st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_damaged_tiffs_open_or_name_the_file(tmp_path_factory, tiffs, which, cut, changes):
    """Bytes of the header and first directory changed, the file cut short: the image opens and reads, or a
    SourceError names the file; never tifffile's own IndexError, ZeroDivisionError or KeyError."""
    data = bytearray(tiffs[which][: max(cut, 8)] if cut < len(tiffs[which]) else tiffs[which])
    for pos, value in changes:
        data[pos % len(data)] = value
    path = tmp_path_factory.mktemp("damaged") / "x.tif"
    path.write_bytes(bytes(data))
    try:
        src = open_source(str(path))
        if src.array.size < 10**7:
            np.asarray(src[...])
    except SourceError as exc:
        assert str(path) in str(exc), exc


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    handler = functools.partial(_CountingHandler, directory=str(tmp_path))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    _CountingHandler.requests = []
    yield tmp_path, f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("fmt", [2, 3])
def test_http_ome_zarr_reads_only_needed_chunks(http_root, fmt):
    root, base = http_root
    a = _img((4, 64, 64), seed=8)
    write_ome_zarr(root / "remote.ome.zarr", a, "zyx", [1.5, 0.5, 0.5], zarr_format=fmt, chunks=(1, 16, 16))
    url = f"{base}/remote.ome.zarr"
    s = open_source(url)
    assert s.url == url and s.zarr_format == fmt and s.path == url
    assert s.neuroglancer_source == ("zarr2://" if fmt == 2 else "zarr3://") + url
    assert s.scale == (1.5, 0.5, 0.5) and len(s.levels) == 3
    _CountingHandler.requests.clear()
    block = s[1, 0:16, 16:32]
    np.testing.assert_array_equal(block, a[1, 0:16, 16:32])
    chunk_gets = [
        r for r in _CountingHandler.requests if not r.endswith((".zarray", ".zattrs", ".zgroup", "zarr.json"))
    ]
    assert len(chunk_gets) == 1, _CountingHandler.requests  # one chunk of 64 read, not the whole array
    np.testing.assert_array_equal(s.levels[2].compute(), a[:, ::4, ::4])


def test_http_plain_zarr_array(http_root):
    root, base = http_root
    a = _img((30, 31), seed=9)
    z = zarr.open_array(
        str(root / "plain.zarr"), mode="w", shape=a.shape, dtype=a.dtype, chunks=(10, 10), zarr_format=2
    )
    z[...] = a
    s = open_source(f"{base}/plain.zarr")
    assert s.axes == "yx" and s.url == f"{base}/plain.zarr"
    np.testing.assert_array_equal(s[...], a)
    with pytest.raises(FileNotFoundError):
        open_source(f"{base}/missing.zarr")


def test_imagesource_passthrough_and_reference():
    a = _img((3, 10, 10))
    s = open_source(a)
    assert open_source(s) is s
    s2 = open_source(s, channel_axis=0)
    assert s2.axes == "cyx" and s2.n_channels == 3
    ref = s.reference()
    assert ref["shape"] == [3, 10, 10] and ref["axes"] == "zyx" and ref["dtype"] == np.dtype(np.uint16).str
    assert isinstance(s, ImageSource) and "ImageSource" in repr(s)
