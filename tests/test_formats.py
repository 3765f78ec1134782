"""Every stored format through open_source, from disk and from a loopback http server, value for value; the
exporters round-tripped; malformed metadata of each format refused with a message naming the place and field."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import dask
import numpy as np
import pytest
from format_fixtures import (
    write_dzi,
    write_n5,
    write_ome_zarr3_sharded,
    write_precomputed,
    write_zarr3_sharded,
)
from loopback_http import LoopbackServer

from ilastik_widget.io.errors import SourceError, SourceNotFoundError
from ilastik_widget.io.sources import open_source
from ilastik_widget.io.writers import write_ome_zarr
from ilastik_widget.io.writers import write_precomputed as export_precomputed

RNG = np.random.default_rng(7)
VOLUME = RNG.integers(0, 250, (12, 50, 40), dtype=np.uint8)
SLIDE = RNG.integers(0, 255, (300, 200, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    write_precomputed(root / "pc", VOLUME, offset=(3, 5, 7))
    write_precomputed(root / "pc_sharded", VOLUME, sharded=True)
    write_n5(root / "n5_scales", VOLUME)
    write_n5(root / "n5_pixelres", VOLUME, style="pixelResolution")
    write_zarr3_sharded(root / "z3_sharded", VOLUME, (8, 32, 32), (4, 16, 16))
    write_ome_zarr3_sharded(root / "ome05", VOLUME, "zyx", (2.0, 0.5, 0.5))
    levels = write_dzi(root, "slide", SLIDE, tile=64, overlap=2, fmt="png")
    return root, levels


@pytest.fixture(scope="module", params=["disk", "http", "http-no-cors"])
def where(request, data_dir):
    root, _ = data_dir
    if request.param == "disk":
        yield str(root)
        return
    with LoopbackServer(root, cors=request.param == "http") as srv:
        yield srv.url


EXPECTED = {
    # name: (axes, scale, units, level shapes)
    "pc": ("zyx", (40.0, 4.0, 4.0), ("nanometer",) * 3, [(12, 50, 40), (12, 25, 20)]),
    "pc_sharded": ("zyx", (40.0, 4.0, 4.0), ("nanometer",) * 3, [(12, 50, 40), (12, 25, 20)]),
    "n5_scales": ("zyx", (2.0, 0.5, 0.5), ("micrometer",) * 3, [(12, 50, 40), (12, 25, 20)]),
    "n5_pixelres": ("zyx", (2.0, 0.5, 0.5), ("micrometer",) * 3, [(12, 50, 40), (12, 25, 20)]),
    "z3_sharded": ("zyx", (1.0, 1.0, 1.0), (None,) * 3, [(12, 50, 40)]),
    "ome05": ("zyx", (2.0, 0.5, 0.5), ("micrometer",) * 3, [(12, 50, 40), (12, 25, 20)]),
}
FORMAT = {"pc": "precomputed", "pc_sharded": "precomputed", "n5_scales": "n5", "n5_pixelres": "n5"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_volume_formats_value_for_value(where, name):
    src = open_source(f"{where}/{name}")
    axes, scale, units, shapes = EXPECTED[name]
    assert (src.axes, src.scale, src.units) == (axes, scale, units)
    assert [lv.shape for lv in src.levels] == shapes and src.levels[0] is src.array  # as ImageSource documents
    assert src.data_format == FORMAT.get(name, "zarr3")
    np.testing.assert_array_equal(src[...], VOLUME)
    np.testing.assert_array_equal(src.array.compute(), VOLUME)
    np.testing.assert_array_equal(src[3, 10:40:7, ::-2], VOLUME[3, 10:40:7, ::-2])
    np.testing.assert_array_equal(src[-1, [1, 5, 2], 4], VOLUME[-1, [1, 5, 2], 4])
    if len(shapes) > 1:
        np.testing.assert_array_equal(src.levels[1].compute(), VOLUME[:, ::2, ::2])
        assert src.level_scales[1] == (scale[0], scale[1] * 2, scale[2] * 2)
    if where.startswith("http"):
        assert src.url == f"{where}/{name}" and src.neuroglancer_source.endswith(f"://{where}/{name}")
    else:
        assert src.url is None and src.path == f"{where}/{name}"


def test_deep_zoom_levels_value_for_value(where, data_dir):
    _, levels = data_dir
    src = open_source(f"{where}/slide.dzi")
    assert src.axes == "yxc" and src.shape == (300, 200, 3) and src.data_format == "deepzoom"
    assert src.levels[0] is src.array
    np.testing.assert_array_equal(src[...], SLIDE)
    np.testing.assert_array_equal(src.array.compute(), SLIDE)
    np.testing.assert_array_equal(src[10:200:3, 5:150, 1], SLIDE[10:200:3, 5:150, 1])
    np.testing.assert_array_equal(src[64, 63:66], SLIDE[64, 63:66])  # across tile borders (overlap cut away)
    # every level down to the first that fits one tile (64 px): 300, 150, 75, 38 rows
    assert [lv.shape[:2] for lv in src.levels] == [(300, 200), (150, 100), (75, 50), (38, 25)]
    for i, lv in enumerate(src.levels):
        np.testing.assert_array_equal(lv.compute(), levels[9 - i])
    assert src.level_scales[2] == (4.0, 4.0)


@pytest.mark.parametrize(
    "spelling, fmt",
    [
        ("precomputed://{w}/pc", "precomputed"),
        ("{w}/pc|neuroglancer-precomputed:", "precomputed"),
        ("n5://{w}/n5_scales", "n5"),
        ("{w}/n5_scales|n5:", "n5"),
        ("zarr3://{w}/z3_sharded", "zarr3"),
        ("zarr://{w}/ome05", "zarr3"),
        ("{w}/ome05|zarr3:", "zarr3"),
        ("deepzoom://{w}/slide.dzi", "deepzoom"),
    ],
)
def test_neuroglancer_spellings(where, spelling, fmt):
    src = open_source(spelling.format(w=where))
    assert src.data_format == fmt


def test_json_deep_zoom_descriptor(data_dir, tmp_path):
    root, _ = data_dir
    shutil.copytree(root / "slide_files", tmp_path / "slide_files")
    image = {"TileSize": "64", "Overlap": "2", "Format": "png", "Size": {"Width": "200", "Height": "300"}}
    (tmp_path / "slide.dzi.json").write_text(json.dumps({"Image": image}))
    np.testing.assert_array_equal(open_source(str(tmp_path / "slide.dzi.json"))[...], SLIDE)


def test_zarr_codecs_tensorstore_lacks_are_read_by_zarr_python(tmp_path):
    import importlib

    import zarr

    numcodecs = importlib.import_module("numcodecs")  # (no type information)

    a = np.arange(400, dtype="u2").reshape(20, 20)
    z = zarr.open_array(str(tmp_path / "delta.zarr"), mode="w", shape=a.shape, chunks=(10, 10), dtype="u2",
                        zarr_format=2, filters=[numcodecs.Delta(dtype="u2")])  # fmt: skip
    z[...] = a
    src = open_source(str(tmp_path / "delta.zarr"))
    assert isinstance(src._base, zarr.Array)  # tensorstore: "filters are not supported"
    np.testing.assert_array_equal(src[...], a)


def test_file_urls_and_format_mismatch(data_dir):
    root, _ = data_dir
    assert open_source(f"file://{root}/pc").data_format == "precomputed"
    with pytest.raises(SourceNotFoundError, match="no n5 image at .*pc .*attributes.json"):
        open_source(f"n5://{root}/pc")
    with pytest.raises(SourceError, match="is precomputed but format='n5'"):
        open_source(f"precomputed://{root}/pc", format="n5")
    with pytest.raises(SourceError, match="unknown data format"):
        open_source(f"{root}/pc|tiff:")
    (root / "empty").mkdir(exist_ok=True)
    with pytest.raises(SourceNotFoundError, match=r"no zarr, N5, precomputed or Deep Zoom image .*empty"):
        open_source(f"{root}/empty")


def test_only_needed_chunks_are_fetched(data_dir):
    root, _ = data_dir
    with LoopbackServer(root) as srv:
        src = open_source(f"{srv.url}/pc")
        srv.clear()
        np.testing.assert_array_equal(src[4, 10:20, 10:20], VOLUME[4, 10:20, 10:20])
        # chunks of 16 x 16 x 8 voxels (x, y, z) start at the voxel offset: y and x 10:20 cross one chunk border each
        assert len(srv.chunk_requests()) == 4, srv.requests
        srv.clear()
        src[4, 10:20, 10:20]
        assert srv.chunk_requests() == []  # the second read comes from the cache pool


def test_stored_layout_for_the_viewer(data_dir, tmp_path):
    """The layout names the dimensions exactly as Neuroglancer 2.41 does (lib/datasource/*/frontend.js): a
    precomputed volume of one channel has no channel dimension there, Deep Zoom always three colour channels, an N5
    dataset without ``axes`` x, y, z, t, c."""
    root, _ = data_dir
    with LoopbackServer(root) as srv:
        pc = open_source(f"{srv.url}/pc").storage
        assert pc.source == f"{srv.url}/pc|neuroglancer-precomputed:"
        assert (pc.dimensions, pc.axes, pc.fixed) == (("x", "y", "z"), "xyz", ())
        assert pc.voxel_offset == (3.0, 5.0, 7.0) and pc.resolution == (4.0, 4.0, 40.0)
        assert pc.encodings == ("raw", "raw") and not pc.needs_token
        n5 = open_source(f"{srv.url}/n5_scales").storage
        assert (n5.source, n5.dimensions, n5.axes) == (f"{srv.url}/n5_scales|n5:", ("x", "y", "z"), "xyz")
        assert n5.resolution == (0.5, 0.5, 2.0) and n5.voxel_offset == (0.0, 0.0, 0.0)
        dzi = open_source(f"{srv.url}/slide.dzi").storage
        assert (dzi.source, dzi.dimensions, dzi.axes) == (f"{srv.url}/slide.dzi|deepzoom:", ("x", "y", "c^"), "xyc")
        assert (dzi.fixed, dzi.encodings, dzi.needs_token) == ((), ("png-rgb8",), False)
        assert dzi.doubled_slashes is True  # the server collapses slashes: a tile at <level>//<tile> is found
        assert "/slide_files/0//0_0.png" in srv.chunk_requests()  # the 1 x 1 tile, asked for so
        srv.object_store = True  # keys, not file paths
        assert open_source(f"{srv.url}/slide.dzi").storage.doubled_slashes is False
    assert open_source(f"{root}/slide.dzi").storage.doubled_slashes is None  # on disk: not asked
    # N5 without axes: Neuroglancer's default names; with axes: as written (not lowercased)
    vol = VOLUME[:, :8, :8]
    write_n5(tmp_path / "plain.n5", vol)
    attrs = json.loads((tmp_path / "plain.n5" / "attributes.json").read_text())
    del attrs["axes"]
    (tmp_path / "plain.n5" / "attributes.json").write_text(json.dumps(attrs))
    assert open_source(str(tmp_path / "plain.n5")).storage.dimensions == ("x", "y", "z")
    attrs["axes"] = ["X", "Y", "Z"]
    (tmp_path / "plain.n5" / "attributes.json").write_text(json.dumps(attrs))
    assert open_source(str(tmp_path / "plain.n5")).storage.dimensions == ("X", "Y", "Z")
    # tiles that are not 8-bit RGB are named: Neuroglancer decodes only those
    grey = RNG.integers(0, 255, (70, 90), dtype=np.uint8)
    write_dzi(tmp_path, "grey", grey, tile=64, fmt="png")
    g = open_source(str(tmp_path / "grey.dzi")).storage
    assert (g.axes, g.fixed, g.encodings) == ("xyc", ((2, 0),), ("png-grey8",))
    write_dzi(tmp_path, "rgba", np.dstack([SLIDE[:70, :90], grey]), tile=64, fmt="png")
    assert open_source(str(tmp_path / "rgba.dzi")).storage.encodings == ("png-rgba8",)
    write_dzi(tmp_path, "jpeg", SLIDE[:70, :90], tile=64, fmt="jpg")
    assert open_source(str(tmp_path / "jpeg.dzi")).storage.encodings == ("jpg-rgb8",)


def test_precomputed_channels_and_flat_volumes(tmp_path):
    two = RNG.integers(0, 200, (6, 30, 20, 2), dtype=np.uint16)
    write_precomputed(tmp_path / "two", two, channels_last=True, n_levels=1)
    src = open_source(str(tmp_path / "two"))
    assert src.axes == "czyx" and src.channel_axis == 0
    np.testing.assert_array_equal(src[...], np.moveaxis(two, -1, 0))
    flat = RNG.integers(0, 200, (1, 64, 48), dtype=np.uint8)
    write_precomputed(tmp_path / "flat", flat, n_levels=2)
    src = open_source(str(tmp_path / "flat"))
    assert src.axes == "yx" and src.shape == (64, 48) and src.scale == (4.0, 4.0)
    np.testing.assert_array_equal(src[...], flat[0])
    assert (src.storage.dimensions, src.storage.axes, src.storage.fixed) == (("x", "y", "z"), "xyz", ((2, 0),))
    two_layout = open_source(str(tmp_path / "two")).storage
    assert (two_layout.dimensions, two_layout.axes) == (("x", "y", "z", "c^"), "xyzc")


def test_sources_pickle_for_worker_processes(data_dir):
    root, _ = data_dir
    for name in ("pc_sharded", "n5_scales", "z3_sharded"):
        arr = open_source(f"{root}/{name}").array
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(arr)).compute(), VOLUME)
    dzi = open_source(f"{root}/slide.dzi").array
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(dzi)).compute(), SLIDE)


def test_a_stored_array_is_reopened_once_per_process(data_dir):
    """A Dask worker unpickles the stored array once per task; it is opened once there (a store and a cache per task
    added up over the blocks), while another array, or the same one with another cache size, opens its own."""
    root, _ = data_dir
    base = open_source(f"{root}/z3_sharded")._base
    first, again = (pickle.loads(pickle.dumps(base)) for _ in range(2))
    assert first is again and first is not base
    np.testing.assert_array_equal(first[...], VOLUME)
    assert pickle.loads(pickle.dumps(open_source(f"{root}/z3_sharded")._base)) is not first
    small = base.with_cache_bytes(1 << 20)
    assert small is not base and small._cache_bytes == 1 << 20 and pickle.loads(pickle.dumps(small)) is not first
    assert base.with_cache_bytes(1 << 20) is small  # the time points of a series share it (and its cache)
    np.testing.assert_array_equal(small[2:5], VOLUME[2:5])


def test_session_and_predict_batch_on_precomputed_and_deep_zoom(data_dir, tmp_path):
    from ilastik_widget.core.features import FeatureSelection
    from ilastik_widget.core.session import Session
    from ilastik_widget.io.batch import predict_batch

    root, _ = data_dir
    feats = FeatureSelection.from_dict({"features": {"gaussian_smoothing": [1.0]}})
    for name, strokes in (
        ("pc_sharded", [(1, [[2, 5, 5], [2, 5, 30]]), (2, [[6, 40, 5], [6, 40, 30]])]),
        ("slide.dzi", [(1, [[10, 10], [10, 100]]), (2, [[200, 10], [200, 100]])]),
    ):
        src = open_source(f"{root}/{name}")
        # isotropic filters: batch predictions do not take the source's voxel size into account (yet)
        s = Session(src, features=feats, voxel_size=(1.0,) * len(src.spatial_shape))
        for label, points in strokes:
            s.add_stroke(label, points, radius=2)
        s.train()
        region = tuple(slice(0, n) for n in src.spatial_shape)
        expected = s.predict(region)
        with dask.config.set(scheduler="threads"):
            out = predict_batch(s, src, str(tmp_path / f"{name}.zarr"), outputs=("probabilities",), progress=False)
        got = open_source(out["probabilities"])
        np.testing.assert_allclose(got[...], np.moveaxis(expected, -1, got.axes.index("c")), atol=1e-5)


# ---------------------------------------------------------------------- exporters
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_write_ome_zarr_round_trip(tmp_path, version):
    import dask.array as da

    probs = RNG.random((20, 70, 90, 2), dtype=np.float32)
    path = write_ome_zarr(
        da.from_array(probs, chunks=(7, 30, 30, 2)),
        tmp_path / "p.ome.zarr",
        axes="zyxc",
        scale=(2.0, 0.5, 0.5),
        units="micrometer",
        version=version,
        levels=3,
        chunks=(8, 32, 32, 2),
        name="probabilities",
        channel_names=["a", "b"],
    )
    src = open_source(path)
    assert (src.axes, src.scale, src.units) == ("czyx", (2.0, 0.5, 0.5), ("micrometer",) * 3)
    assert src.zarr_format == (2 if version == "0.4" else 3) and src.channel_names == ["a", "b"]
    assert [lv.shape for lv in src.levels] == [(2, 20, 70, 90), (2, 20, 35, 45), (2, 10, 18, 23)]
    assert src.level_scales == [(2.0, 0.5, 0.5), (2.0, 1.0, 1.0), (4.0, 2.0, 2.0)]
    np.testing.assert_array_equal(src[...], np.moveaxis(probs, -1, 0))
    mean = np.moveaxis(probs, -1, 0).reshape(2, 20, 35, 2, 45, 2).mean((3, 5))
    np.testing.assert_allclose(src.levels[1].compute(), mean, atol=1e-6)
    # a coarse voxel's centre is the centre of the fine voxels it averages
    assert src.ome_multiscale["datasets"][1]["coordinateTransformations"][1]["translation"] == [0, 0, 0.25, 0.25]
    if version == "0.5":
        meta = json.loads((tmp_path / "p.ome.zarr" / "0" / "zarr.json").read_text())
        assert meta["codecs"][0]["name"] == "sharding_indexed" and meta["dimension_names"] == list("czyx")
    else:
        assert json.loads((tmp_path / "p.ome.zarr" / "0" / ".zarray").read_text())["dimension_separator"] == "/"


@pytest.mark.parametrize("sharded", [False, True])
def test_write_precomputed_round_trip(tmp_path, sharded):
    import dask.array as da

    seg = RNG.integers(0, 4, (40, 140, 180), dtype=np.uint8)
    path = export_precomputed(
        da.from_array(seg, chunks=(9, 33, 40)),
        tmp_path / "seg",
        axes="zyx",
        scale=(2.0, 0.5, 0.5),
        units="micrometer",
        chunks=(16, 16, 8),
        sharded=sharded,
        levels=2,
        downsample="nearest",
        volume_type="segmentation",
    )
    info = json.loads((tmp_path / "seg" / "info").read_text())
    assert info["scales"][0]["resolution"] == [500.0, 500.0, 2000.0] and info["type"] == "segmentation"
    if sharded:  # several shards, each written whole by one task
        assert info["scales"][0]["sharding"]["shard_bits"] > 0
        assert len(os.listdir(tmp_path / "seg" / info["scales"][0]["key"])) > 1
    src = open_source(path)
    assert src.scale == (2000.0, 500.0, 500.0) and src.units == ("nanometer",) * 3
    np.testing.assert_array_equal(src[...], seg)
    np.testing.assert_array_equal(src.levels[1].compute(), seg[:, ::2, ::2])


def test_writers_refuse_bad_arguments(tmp_path):
    a = np.zeros((4, 5), np.float64)
    with pytest.raises(ValueError, match="precomputed has no float64"):
        export_precomputed(a, tmp_path / "x")
    with pytest.raises(ValueError, match="scale must be 2 positive"):
        write_ome_zarr(a, tmp_path / "y", scale=(1.0, 0.0))
    for scale in ((1.0, 10**400), (1.0, "a"), (1.0, None)):  # beyond float range; not numbers
        with pytest.raises(ValueError, match="scale must be 2 positive"):
            write_ome_zarr(a, tmp_path / "y", scale=scale)
    with pytest.raises(ValueError, match="unknown unit"):
        export_precomputed(a.astype(np.float32), tmp_path / "z", units="parsec")
    write_ome_zarr(a, tmp_path / "w")
    with pytest.raises(FileExistsError):
        write_ome_zarr(a, tmp_path / "w")


# ---------------------------------------------------------------------- malformed metadata (issue 11 item 9 and kin)
def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _copy(data_dir, name, tmp_path):
    root, _ = data_dir
    dst = tmp_path / name
    shutil.copytree(root / name, dst)
    return dst


def test_zarr_chunks_of_zero(tmp_path):
    import zarr

    zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=(8, 8), chunks=(4, 4), dtype="u1", zarr_format=2)
    _edit_json(tmp_path / "a.zarr" / ".zarray", lambda d: d.update(chunks=[0, 0]))
    with pytest.raises(SourceError, match=r"a\.zarr/\.zarray: chunks\[0\] must be from 1"):
        open_source(str(tmp_path / "a.zarr"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["ome"].update(multiscales={"datasets": []}), "OME 'multiscales' must be a non-empty list"),
        (lambda a: a["ome"]["multiscales"][0]["datasets"][0].pop("path"), r"datasets\[0\] has no 'path'"),
        (
            lambda a: a["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0].update(scale=[0, 1, 1]),
            r"scale\[0\] must be positive \(a voxel size\)",
        ),
        (
            lambda a: a["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0].update(
                scale=[1, -0.5, 1]
            ),
            r"scale\[1\] must be positive",
        ),
        (lambda a: a["ome"]["multiscales"][0]["datasets"][1].update(path="../pc"), "not a relative path inside"),
        (lambda a: a["ome"]["multiscales"][0]["datasets"][1].update(path="7"), "dataset '7' is missing"),
    ],
)
def test_malformed_ome_zarr(data_dir, tmp_path, edit, message):
    dst = _copy(data_dir, "ome05", tmp_path)
    _edit_json(dst / "zarr.json", lambda d: edit(d["attributes"]))
    with pytest.raises(SourceError, match=message) as err:
        open_source(str(dst))
    assert "ome05" in str(err.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda i: i["scales"][0].update(encoding="webp2"), r"scales\[0\]\.encoding 'webp2' is not one of"),
        (lambda i: i["scales"][0].update(resolution=[4, 0, 40]), r"scales\[0\]\.resolution\[1\] must be positive"),
        (lambda i: i["scales"][0].update(chunk_sizes=[[16, 0, 8]]), r"chunk_sizes\[0\]\[1\] must be from 1"),
        (lambda i: i["scales"][1].update(size=[40, 50, 12]), "does not cover the finest scale"),
        (lambda i: i.update(data_type="complex64"), "data_type 'complex64' is not one of"),
        (lambda i: i.update(num_channels=0), "num_channels must be from 1"),
        (lambda i: i["scales"][0].update(key="/etc"), "not a relative path inside"),
    ],
)
def test_malformed_precomputed(data_dir, tmp_path, edit, message):
    dst = _copy(data_dir, "pc", tmp_path)
    _edit_json(dst / "info", edit)
    with pytest.raises(SourceError, match=message) as err:
        open_source(str(dst))
    assert str(dst / "info") in str(err.value)


@pytest.mark.parametrize(
    "where, edit, message",
    [
        ("s0", lambda a: a.update(blockSize=[16, 0, 8]), r"blockSize\[1\] must be from 1"),
        ("s0", lambda a: a.update(dataType="float128"), "dataType 'float128' is not a supported"),
        ("s0", lambda a: a.update(compression={"type": "lzma9"}), "compression type 'lzma9' is not one of"),
        ("", lambda a: a.update(resolution=[0.5, -1, 2]), r"resolution\[1\] must be positive"),
        ("", lambda a: a.update(axes=["x", "y"]), "'axes' names 2 axes but the data has 3"),
        ("s1", lambda a: a.update(dimensions=[40, 60, 12]), "does not fit the first"),
    ],
)
def test_malformed_n5(data_dir, tmp_path, where, edit, message):
    dst = _copy(data_dir, "n5_scales", tmp_path)
    _edit_json(dst / where / "attributes.json" if where else dst / "attributes.json", edit)
    with pytest.raises(SourceError, match=message) as err:
        open_source(str(dst))
    assert "n5_scales" in str(err.value)


def test_malformed_deep_zoom(data_dir, tmp_path):
    root, _ = data_dir
    dst = tmp_path / "dz"
    shutil.copytree(root / "slide_files", dst / "slide_files")
    descriptor = (root / "slide.dzi").read_text()
    (dst / "slide.dzi").write_text(descriptor.replace('Overlap="2"', 'Overlap="64"'))
    with pytest.raises(SourceError, match="Overlap 64 must be smaller than TileSize 64"):
        open_source(str(dst / "slide.dzi"))
    (dst / "slide.dzi").write_text(descriptor.replace('Format="png"', 'Format="bmp"'))
    with pytest.raises(SourceError, match="tile Format 'bmp' is not one of"):
        open_source(str(dst / "slide.dzi"))
    (dst / "slide.dzi").write_text('<!DOCTYPE x [<!ENTITY a "b">]>' + descriptor)
    with pytest.raises(SourceError, match="DOCTYPE"):
        open_source(str(dst / "slide.dzi"))
    (dst / "slide.dzi").write_text(descriptor)
    (dst / "slide_files" / "9" / "1_2.png").unlink()
    src = open_source(str(dst / "slide.dzi"))
    np.testing.assert_array_equal(src[0:64, 0:64], SLIDE[0:64, 0:64])  # tiles that are there read fine
    with pytest.raises(SourceError, match=r"the Deep Zoom tile .*slide_files/9/1_2\.png is missing"):
        src[130:140, 70:80]
    (dst / "slide_files" / "9" / "0_0.png").write_bytes((dst / "slide_files" / "7" / "0_0.png").read_bytes())
    with pytest.raises(SourceError, match=r"9/0_0\.png is 50x66 pixels, expected 66x66"):
        open_source(str(dst / "slide.dzi"))[0:10, 0:10]
    (dst / "slide_files" / "9" / "0_0.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SourceError, match=r"9/0_0\.png cannot be decoded"):
        open_source(str(dst / "slide.dzi"))[0:10, 0:10]


# ---------------------------------------------------------------------- property tests of the metadata readers
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ilastik_widget.io import metadata as md  # noqa: E402

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400)])  # JSON integers beyond float range
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
_VALID = {
    "zarr2": {
        "zarr_format": 2,
        "shape": [10, 20],
        "chunks": [5, 5],
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
    },  # fmt: skip
    "zarr3": {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [10, 20],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [10, 10]}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0,
        "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [5, 5], "codecs": []}}],
        "dimension_names": ["y", "x"],
    },  # fmt: skip
    "ome": {
        "multiscales": [
            {
                "version": "0.4",
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
            }
        ]
    },  # fmt: skip
    "n5": {"dimensions": [20, 10], "blockSize": [5, 5], "dataType": "uint8", "compression": {"type": "gzip"}},
    "n5group": {"scales": [[1, 1], [2, 2]], "resolution": [1.0, 2.0], "units": ["um", "um"], "axes": ["x", "y"]},
    "precomputed": {
        "@type": "neuroglancer_multiscale_volume",
        "type": "image",
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [
            {
                "key": "a",
                "size": [20, 10, 1],
                "resolution": [4, 4, 40],
                "chunk_sizes": [[8, 8, 1]],
                "encoding": "raw",
                "voxel_offset": [0, 0, 0],
            }
        ],
    },  # fmt: skip
    "dzi": {"Image": {"TileSize": "254", "Overlap": "1", "Format": "jpg", "Size": {"Width": "1000", "Height": "800"}}},
}


def _parse(kind: str, doc):
    if kind in ("zarr2", "zarr3"):
        return md.parse_zarr_array(doc, "here", {} if kind == "zarr2" else None)
    if kind == "ome":
        return md.parse_ome(doc, "here")
    if kind == "n5":
        return md.parse_n5_array(doc, "here")
    if kind == "n5group":
        return md.parse_n5_multiscale(doc, "here", ["s0", "s1"], [{}, {}])
    if kind == "precomputed":
        return md.parse_precomputed(doc, "here")
    return md.parse_dzi(json.dumps(doc), "here")


@st.composite
def _mutated(draw):
    """A valid document with one value somewhere replaced by random JSON (or a key removed)."""
    kind = draw(st.sampled_from(sorted(_VALID)))
    doc = json.loads(json.dumps(_VALID[kind]))
    node = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        k = draw(st.sampled_from(keys))
        child = node[k]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[k]
        else:
            node[k] = draw(_JSON)
        break
    return kind, doc


_BOUNDED = settings(max_examples=300, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow])


@_BOUNDED
@given(st.sampled_from(sorted(_VALID)), _JSON)
def test_random_metadata_is_a_source_error_or_accepted(kind, doc):
    try:
        _parse(kind, doc)
    except SourceError:
        pass


@_BOUNDED
@given(_mutated())
def test_mutated_metadata_is_a_source_error_or_accepted(case):
    kind, doc = case
    try:
        _parse(kind, doc)
    except SourceError as exc:
        assert str(exc).startswith("here: ")


@_BOUNDED
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_deep_zoom_descriptors(text):
    for candidate in (text, f'<Image TileSize="{text}" Overlap="0" Format="png"><Size Width="3" Height="4"/></Image>'):
        try:
            md.parse_dzi(candidate, "here")
        except SourceError:
            pass


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_mutated())
def test_mutated_metadata_on_disk_opens_or_is_a_source_error(tmp_path, case):
    """End to end: the damaged document written where it belongs, opened with open_source."""
    kind, doc = case
    if kind in ("n5group", "dzi", "ome"):
        return
    d = tmp_path / f"case-{os.urandom(4).hex()}"
    d.mkdir()
    name = {"zarr2": ".zarray", "zarr3": "zarr.json", "n5": "attributes.json", "precomputed": "info"}[kind]
    (d / name).write_text(json.dumps(doc))
    try:
        src = open_source(str(d))
        src[tuple(slice(0, 2) for _ in src.shape)]  # missing chunks read as the fill value
    except SourceError:
        pass
