"""Tests of ilastik_widget.serving.chunk_server against a small fake session (the attributes ChunkServer reads)."""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass

import numpy as np
import pytest

from ilastik_widget.serving.chunk_server import ChunkServer


@dataclass
class _Class:
    name: str
    color: str


class _Annotations:
    def __init__(self, shape):
        self.dense = np.zeros(shape, np.uint8)
        self.version = 0

    def labels(self, region=None):
        return self.dense[region] if region is not None else self.dense.copy()

    def labelled(self, region=None):
        idx = np.nonzero(self.dense)
        return np.stack(idx, 1).astype(np.int64), self.dense[idx]

    def paint(self, region, label):
        self.dense[region] = label
        self.version += 1


class _Session:
    def __init__(self, image, channel_axis=None, n_classes=2):
        self.image = image
        self.channel_axis = channel_axis
        shape = list(image.shape)
        if channel_axis is not None:
            shape.pop(channel_axis % image.ndim)
        self.spatial_shape = tuple(shape)
        self.annotations = _Annotations(self.spatial_shape)
        self.classes = [_Class(f"c{i}", c) for i, c in zip(range(n_classes), ["#ff0000", "#00ff00", "#0000ff"])]
        self.generation = 0
        self.is_trained = False
        self.source = None
        self.predict_calls = []

    def precompute(self, regions):
        for region in regions:
            self.predict(region)

    def predict(self, region=None):
        self.predict_calls.append(region)
        img = np.asarray(self.image, np.float32)[region]
        p = img / max(float(self.image.max()), 1.0)
        out = np.stack([1 - p, p] + [np.zeros_like(p)] * (len(self.classes) - 2), -1)
        return out.astype(np.float32)


def _server(session, widget_id, **options) -> ChunkServer:
    """A ChunkServer whose pyramids go down to one chunk, so small test images have coarse levels."""
    options.setdefault("coarsest_size", 1)
    return ChunkServer(session, widget_id, **options)


def _image2d(shape=(300, 520), seed=0):
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _json(server, key):
    data = server.read([key])[0]
    assert data is not None, key
    return json.loads(data)


def _chunk(server, key, zarray):
    data = server.read([key])[0]
    assert data is not None, key
    dtype = np.dtype(zarray["dtype"])
    return np.frombuffer(data, dtype=dtype).reshape(zarray["chunks"])


def test_raw_metadata_is_an_ome_zarr_multiscale():
    server = _server(_Session(_image2d((1000, 700))), "wid", chunk_shape=(256, 256))
    attrs = _json(server, "raw/.zattrs")
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["y", "x"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales[0] == [1.0, 1.0] and scales[1] == [2.0, 2.0]
    # halve until the image fits one chunk: 1000 -> 500 -> 250
    assert len(scales) == 3
    z0 = _json(server, "raw/0/.zarray")
    assert z0["shape"] == [1000, 700] and z0["chunks"] == [256, 256]
    assert z0["dtype"] == "|u1" and z0["compressor"] is None and z0["dimension_separator"] == "."
    z2 = _json(server, "raw/2/.zarray")
    assert z2["shape"] == [250, 175]
    assert _json(server, "raw/.zgroup") == {"zarr_format": 2}
    assert server.read(["raw/.zarray"]) == [None]  # the root is a group


def test_raw_chunks_match_the_image_padded_and_strided():
    image = _image2d((300, 520))
    server = _server(_Session(image), "wid", chunk_shape=(128, 128))
    z0 = _json(server, "raw/0/.zarray")
    c = _chunk(server, "raw/0/2.4", z0)  # edge chunk: rows 256..300, cols 512..520
    np.testing.assert_array_equal(c[:44, :8], image[256:300, 512:520])
    assert not c[44:].any() and not c[:, 8:].any()
    z1 = _json(server, "raw/1/.zarray")
    assert z1["shape"] == [150, 260]
    c1 = _chunk(server, "raw/1/0.1", z1)
    np.testing.assert_array_equal(c1[:128, :128], image[0:256:2, 256:512:2])


def test_zarr_library_reads_the_served_keys():
    zarr = pytest.importorskip("zarr")
    image = _image2d((200, 330), seed=3)
    server = _server(_Session(image), "wid", chunk_shape=(64, 64))
    store = {}
    for level in range(len(server.raw.factors)):
        for key in (f"raw/{level}/.zarray",):
            store[key] = server.read([key])[0]
        shape = server.raw.level_shape(level)
        for idx in itertools.product(*(range(-(-s // 64)) for s in shape)):
            key = f"raw/{level}/" + ".".join(map(str, idx))
            store[key] = server.read([key])[0]
    store["raw/.zattrs"] = server.read(["raw/.zattrs"])[0]
    store["raw/.zgroup"] = server.read(["raw/.zgroup"])[0]
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    import asyncio

    from zarr.core.buffer import default_buffer_prototype

    async def fill():
        for k, v in store.items():
            await mem.set(k, default_buffer_prototype().buffer.from_bytes(v))

    asyncio.run(fill())
    group = zarr.open_group(mem, mode="r", path="raw", zarr_format=2)
    np.testing.assert_array_equal(group["0"][:], image)
    np.testing.assert_array_equal(group["1"][:], image[::2, ::2])


@pytest.mark.parametrize(
    "key",
    [
        "",
        "raw",
        "raw/",
        "raw/9/0.0",
        "raw/0/99.0",
        "raw/0/-1.0",
        "raw/0/a.b",
        "raw/0/0.0.0",
        "raw/0/0",
        "foo/0/0.0",
        "predictions/x/0/0.0.0",
        "predictions/0",
        "../../etc/passwd",
        "raw/0/0.0/extra",
        "labels/0/1e3.0",
        None,
        5,
        "x" * 2000,
    ],
)
def test_malformed_or_out_of_range_keys_give_none_and_log(key, caplog):
    server = _server(_Session(_image2d((100, 100))), "wid", chunk_shape=(64, 64))
    with caplog.at_level(logging.WARNING, logger="ilastik_widget.serving.chunk_server"):
        assert server.read([key]) == [None]
    assert caplog.records, "a bad key should leave a log line"


def test_one_bad_key_does_not_spoil_the_batch():
    server = _server(_Session(_image2d((100, 100))), "wid", chunk_shape=(64, 64))
    out = server.read(["raw/0/0.0", "nonsense", "raw/.zattrs"])
    assert out[0] is not None and out[1] is None and out[2] is not None


def test_labels_follow_the_annotations_version():
    session = _Session(_image2d((200, 200)))
    server = _server(session, "wid", chunk_shape=(64, 64))
    z = _json(server, "labels/0/.zarray")
    assert server.read(["labels/0/1.1"]) == [None]  # nothing painted: missing, i.e. the fill value 0, no bytes
    session.annotations.paint((slice(70, 80), slice(65, 70)), 2)
    c = _chunk(server, "labels/0/1.1", z)
    assert (c[6:16, 1:6] == 2).all() and c.sum() == 2 * 50
    # coarse level keeps a thin stroke visible
    z1 = _json(server, "labels/1/.zarray")
    session.annotations.paint((slice(101, 102), slice(0, 200)), 1)
    c1 = _chunk(server, "labels/1/0.0", z1)
    assert (c1[50, :64] == 1).all()


def test_predictions_are_computed_only_for_requested_chunks_and_scaled():
    image = _image2d((300, 300))
    session = _Session(image)
    server = _server(session, "wid", chunk_shape=(128, 128))
    assert server.read(["predictions/0/0/1.1.0"]) == [None]  # not trained yet: missing (transparent)
    session.is_trained = True
    session.generation = 3
    z = _json(server, "predictions/0/0/.zarray")
    assert z["shape"] == [300, 300, 2] and z["chunks"] == [128, 128, 2] and z["dtype"] == "|u1"
    c = _chunk(server, "predictions/0/0/1.2.0", z)
    assert session.predict_calls == [(slice(128, 256), slice(256, 300))]
    expected = np.rint(image[128:256, 256:300] / image.max() * 255)
    np.testing.assert_allclose(c[:, :44, 1], expected, atol=1)
    assert not c[:, 44:].any()
    assert server.read(["predictions/0/0/0.0.1"]) == [None]  # channel chunk index must be 0
    attrs = _json(server, "predictions/0/.zattrs")
    assert attrs["multiscales"][0]["axes"][-1] == {"name": "c", "type": "channel"}


def test_coarse_predictions_are_missing_when_too_large():
    session = _Session(_image2d((512, 512)))
    session.is_trained = True
    server = _server(session, "wid", chunk_shape=(64, 64), max_predict_pixels=128 * 128)
    assert server.read(["predictions/0/1/0.0.0"])[0] is not None  # 128x128 at level 0: allowed
    assert server.read(["predictions/0/2/0.0.0"]) == [None]  # 256x256 at level 0: too large


def test_rgb_image_served_with_a_channel_axis():
    rgb = np.random.default_rng(1).integers(0, 255, (3, 90, 100), dtype=np.uint8)
    server = _server(_Session(rgb, channel_axis=0), "wid", chunk_shape=(64, 64))
    z = _json(server, "raw/0/.zarray")
    assert z["shape"] == [90, 100, 3] and z["chunks"] == [64, 64, 3]
    assert server.read(["raw/0/1.0"]) == [None]  # the channel axis needs its own chunk index
    c = _chunk(server, "raw/0/1.0.0", z)
    np.testing.assert_array_equal(c[:26, :64], np.moveaxis(rgb, 0, -1)[64:90, 0:64])
    raw_spec = server.layer_specs()[0]
    assert "contrast2()" in raw_spec["shader"]


def test_volume_and_float_image_in_plane_shaped_chunks():
    vol = np.random.default_rng(2).random((40, 70, 90))  # float64 -> served as float32
    server = _server(_Session(vol), "wid", chunk_shape=(64, 64, 64), plane_chunks=True)
    assert server.store.format == "precomputed" and server.read(["raw/0/.zarray"]) == [None]
    info = _json(server, "raw/info")
    assert info["data_type"] == "float32" and info["num_channels"] == 1
    assert info["scales"][0]["size"] == [90, 70, 40]  # x, y, z
    assert info["scales"][0]["chunk_sizes"] == [[64, 64, 1], [64, 1, 64], [1, 64, 64]]  # flat along z, y, x
    # an xy chunk of the plane z = 7, an xz chunk of the plane y = 69 (clipped at the volume's edges)
    xy = np.frombuffer(server.read(["raw/0/64-90_0-64_7-8"])[0], np.float32).reshape(1, 64, 26)
    np.testing.assert_array_equal(xy, vol[7:8, 0:64, 64:90].astype(np.float32))
    xz = np.frombuffer(server.read(["raw/0/0-64_69-70_0-40"])[0], np.float32).reshape(40, 1, 64)
    np.testing.assert_array_equal(xz, vol[0:40, 69:70, 0:64].astype(np.float32))
    # cubes and boxes that are no chunk of any layout are not chunks
    assert server.read(["raw/0/0-64_0-64_0-64", "raw/0/0-64_0-64_7-9", "raw/0/1.0.0"]) == [None, None, None]


def test_plane_chunks_of_predictions_predict_one_plane_at_every_level_with_channels_first():
    vol = np.random.default_rng(3).integers(0, 200, (12, 300, 260)).astype(np.uint8)
    session = _Session(vol, n_classes=3)
    session.is_trained = True
    server = _server(session, "wid", chunk_shape=(128, 128, 128), plane_chunks=True)
    info = _json(server, "predictions/0/info")
    assert info["num_channels"] == 3 and len(info["scales"]) == server.store.predictions().n_levels == 3
    data = server.read(["predictions/0/1/0-128_0-128_5-6"])[0]  # level 1: every second pixel of plane z = 5
    assert session.predict_calls == [(slice(5, 6), slice(0, 256), slice(0, 256))]  # one plane, not 2 or 12
    p = np.frombuffer(data, np.uint8).reshape(3, 1, 128, 128)  # channels first, x fastest
    expected = session.predict((slice(5, 6), slice(0, 256, 2), slice(0, 256, 2)))
    np.testing.assert_array_equal(p, np.clip(np.rint(np.moveaxis(expected, -1, 0) * 255), 0, 255).astype(np.uint8))


def test_sources_and_layer_specs():
    session = _Session(_image2d((64, 64)), n_classes=3)
    session.generation = 5
    server = _server(session, "abc123")
    src = server.sources()
    assert src["raw"] == "mem://abc123/raw/|zarr2:"
    assert src["labels"] == "mem://abc123/labels/|zarr2:"
    assert src["probabilities"] == src["segmentation"] == src["uncertainty"] == "mem://abc123/predictions/0/|zarr2:"
    specs = {s["name"]: s for s in server.layer_specs()}
    assert specs["raw"]["source"] == src["raw"] and specs["raw"]["opacity"] == 1.0
    # prediction layers read the classes through Neuroglancer's channel dimension c^
    assert specs["probabilities"]["source"] == {
        "url": src["probabilities"],
        "transform": {"outputDimensions": {"y": [1.0, ""], "x": [1.0, ""], "c^": [1, ""]}},
    }
    assert set(specs) == {"raw", "labels", "probabilities", "segmentation", "uncertainty"}
    assert all(s["type"] == "image" for s in specs.values())
    # class colours in the shaders: red, green, blue
    for name in ("labels", "probabilities", "segmentation"):
        shader = specs[name]["shader"]
        assert "vec3(1.0000, 0.0000, 0.0000)" in shader and "vec3(0.0000, 0.0000, 1.0000)" in shader
    assert "getDataValue(2)" in specs["probabilities"]["shader"]
    lo, hi = specs["raw"]["shaderControls"]["contrast0"]["range"]
    assert 0 <= lo < hi <= 255


class _Recording:
    """Array wrapper that records the index of every read."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def test_coarse_raw_levels_read_from_the_source_pyramid():
    base = _image2d((1000, 600), seed=4)
    levels = [_Recording(base), _Recording(base[::2, ::2].copy()), _Recording(base[::4, ::4].copy())]
    session = _Session(levels[0])
    session.source = type("Src", (), {"levels": levels})()
    server = _server(session, "wid", chunk_shape=(128, 128))
    z2 = _json(server, "raw/2/.zarray")
    assert z2["shape"] == [250, 150]
    c = _chunk(server, "raw/2/1.0", z2)
    np.testing.assert_array_equal(c[:122, :128], base[512:1000:4, 0:512:4])
    assert levels[2].reads and not levels[0].reads and not levels[1].reads
    z3 = _json(server, "raw/3/.zarray")  # finer steps than the source has: read its coarsest level strided
    c3 = _chunk(server, "raw/3/0.0", z3)
    np.testing.assert_array_equal(c3[:125, :75], base[::8, ::8])
    assert not levels[0].reads


def test_anisotropic_volume_gets_relative_voxel_sizes():
    session = _Session(np.zeros((20, 64, 64), np.uint8))
    server = _server(session, "wid", plane_chunks=True)
    assert server.display_scales() == (1.0, 1.0, 1.0)
    assert server.layer_specs()[0]["source"]["url"] == "mem://wid/raw/|neuroglancer-precomputed:"
    session.source = type("Src", (), {"scale": (2.0, 0.5, 0.5)})()
    specs = {s["name"]: s for s in server.layer_specs()}
    assert server.display_scales() == (4.0, 1.0, 1.0)
    dims = {"z": [4.0, ""], "y": [1.0, ""], "x": [1.0, ""]}
    assert specs["raw"]["source"]["transform"]["outputDimensions"] == dims
    assert specs["labels"]["source"]["transform"]["outputDimensions"] == dims
    assert specs["probabilities"]["source"]["transform"]["outputDimensions"] == {**dims, "c^": [1, ""]}
    # Neuroglancer's precomputed model (x, y, z, then c^, in metres) renamed in its own order with the output's scales
    # and no unit: the identity matrix maps input i to output i, so both are listed x first
    for name, order in (("raw", ["x", "y", "z"]), ("probabilities", ["x", "y", "z", "c^"])):
        transform = specs[name]["source"]["transform"]
        assert list(transform["inputDimensions"]) == list(transform["outputDimensions"]) == order
        assert transform["inputDimensions"] == transform["outputDimensions"] and "matrix" not in transform
    assert _json(server, "raw/info")["scales"][0]["resolution"] == [1.0, 1.0, 4.0]  # x, y, z


def test_precomputed_levels_place_voxel_i_of_every_level_at_i_times_its_factors():
    session = _Session(np.zeros((20, 200, 300), np.uint8))
    session.source = type("Src", (), {"scale": (2.0, 1.0, 1.0)})()
    server = _server(session, "wid", chunk_shape=(64, 64, 64), plane_chunks=True)
    scales = _json(server, "labels/info")["scales"]
    assert len(scales) == len(server.labels.factors) > 1
    for level, scale in enumerate(scales):
        factors = server.labels.factors[level]
        assert scale["voxel_offset"] == [0, 0, 0]  # precomputed: voxel i spans [i, i + 1) of its level
        assert scale["resolution"] == [float(f) * v for f, v in zip(factors[::-1], (1.0, 1.0, 2.0))]
        assert scale["size"] == list(server.labels.level_shape(level))[::-1]


@pytest.mark.parametrize("name", ["raw", "labels", "predictions/0"])
def test_levels_are_shifted_by_half_a_voxel_for_neuroglancer(name):
    """Neuroglancer lets OME-Zarr voxel i span [(i - 1/2) * scale + t, (i + 1/2) * scale + t); the viewer works with
    voxel i spanning [i, i + 1) (in full-resolution voxels), so every level needs t = scale / 2 on the spatial axes
    (without it a cross-section at a voxel centre lay on the border between two voxels)."""
    session = _Session(np.zeros((200, 300), np.uint8))
    session.source = type("Src", (), {"scale": (2.0, 1.0)})()
    server = _server(session, "wid", chunk_shape=(64, 64))
    (ms,) = _json(server, f"{name}/.zattrs")["multiscales"]
    channels = 1 if name.startswith("predictions") else 0
    # the predictions pyramid stops where a chunk would cover more than max_predict_pixels (here at level 1)
    levels = server.store.predictions().n_levels if channels else len(server.raw.factors)
    assert len(ms["datasets"]) == levels > 1
    for level, dataset in enumerate(ms["datasets"]):
        scale_t, translation_t = dataset["coordinateTransformations"]
        assert scale_t["type"] == "scale" and translation_t["type"] == "translation"
        scale, translation = np.array(scale_t["scale"]), np.array(translation_t["translation"])
        np.testing.assert_allclose(scale[:2], np.array(server.raw.factors[level]) * (2.0, 1.0))
        np.testing.assert_allclose(translation[:2], scale[:2] / 2)
        assert list(translation[2:]) == [0.0] * channels  # the channel axis stays where Neuroglancer expects it
        # Neuroglancer's placement: the first voxel of the level starts at 0 and voxel i at i * scale.
        lower = translation[:2] - 0.5 * scale[:2]
        np.testing.assert_allclose(lower, 0.0)


def test_warm_predictions_caches_every_chunk_of_a_small_image_only():
    image = _image2d((300, 300))
    session = _Session(image)
    server = _server(session, "wid", chunk_shape=(128, 128))
    assert server.prediction_keys() == [] and server.warm_predictions() == 0  # not trained: nothing to compute
    session.is_trained = True
    session.generation = 5
    keys = server.prediction_keys()
    levels = server.store.predictions().n_levels
    assert levels == 3 and keys[-1] == "predictions/0/2/0.0.0"  # finest level first
    assert keys[:9] == [f"predictions/0/0/{i}.{j}.0" for i in range(3) for j in range(3)]
    assert server.warm_predictions() == len(keys)
    # the image is predicted once, chunk by chunk at level 0; the coarse levels are made from those chunks
    assert len(session.predict_calls) == 9
    fresh = _server(session, "other", chunk_shape=(128, 128))
    assert server.read(keys) == fresh.read(keys)  # the cached chunks are the ones a read computes
    assert len(session.predict_calls) == 18  # ... and `server` answered from its cache
    assert _server(session, "big", chunk_shape=(128, 128), max_predict_pixels=100 * 100).prediction_keys() == []


def test_coarse_prediction_chunks_from_finer_chunks_equal_the_strided_prediction():
    image = _image2d((300, 430), seed=3)
    session = _Session(image)
    session.is_trained = True
    keys = [f"predictions/0/1/{i}.{j}.0" for i in range(2) for j in range(2)] + ["predictions/0/2/0.0.0"]
    direct = _server(session, "a", chunk_shape=(128, 128), max_predict_pixels=2**20)
    expected = [direct.read([k])[0] for k in keys]  # one at a time: each predicted from its own region
    assert session.predict_calls[0] == (slice(0, 256), slice(0, 256))
    session.predict_calls.clear()
    assembled = _server(session, "b", chunk_shape=(128, 128), max_predict_pixels=2**20)
    finest = [f"predictions/0/0/{i}.{j}.0" for i in range(3) for j in range(4)]
    assert assembled.read(keys + finest)[: len(keys)] == expected
    assert sorted(session.predict_calls) == sorted(
        (slice(128 * i, min(300, 128 * i + 128)), slice(128 * j, min(430, 128 * j + 128)))
        for i in range(3)
        for j in range(4)
    )  # only the level-0 chunks were predicted


def test_prediction_pyramid_stops_where_chunks_get_too_costly():
    session = _Session(_image2d((2000, 3000)))
    session.is_trained = True
    server = ChunkServer(session, "wid", chunk_shape=(256, 256), max_predict_pixels=1024 * 1024)
    # the raw pyramid goes down to a level that fits a panel (3000 -> 1500 -> 750 px) or to one chunk
    assert server.raw.factors == ((1, 1), (2, 2), (4, 4))
    assert ChunkServer(_Session(_image2d((1024, 1024))), "small").raw.factors == ((1, 1),)
    # a volume's cubic chunks: down to one chunk; its plane chunks: down to a level that fits a panel
    assert ChunkServer(_Session(np.zeros((64, 300, 300), np.uint8)), "vol").raw.factors[-1] == (1, 8, 8)
    flat = ChunkServer(_Session(np.zeros((64, 300, 300), np.uint8)), "vol", plane_chunks=True)
    assert flat.raw.factors == ((1, 1, 1),)
    (ms,) = _json(server, "predictions/0/.zattrs")["multiscales"]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]  # a level-2 chunk covers 1024 x 1024
    assert server.read(["predictions/0/3/0.0.0"]) == [None]
    assert server.read(["predictions/0/2/1.2.0"])[0] is not None
    assert session.predict_calls == [(slice(1024, 2000), slice(2048, 3000))]


def test_push_sends_the_current_chunks_the_browser_read_and_starts_a_new_working_set():
    image = _image2d((300, 300))
    session = _Session(image)
    server = _server(session, "wid", chunk_shape=(128, 128))
    session.is_trained, session.generation = True, 4
    server.read(
        [
            "labels/0/.zarray",
            "labels/0/0.0",
            "labels/0/1.2",
            "raw/0/0.0",
            "predictions/0/0/1.1.0",
            "predictions/0/.zattrs",
            "labels/9/0.0",
            "nonsense/0/0.0",
        ]
    )
    server.note_keys(["labels/0/2.2", "predictions/x/0/0.0.0", "labels/../0.0", 7])  # a browser `seen` report
    assert server.pending_push("labels") == 3 and server.pending_push("predictions") == 1
    session.annotations.paint((slice(130, 140), slice(260, 270)), 2)
    keys, data, missing = server.take_push("labels")
    assert keys == ["labels/0/1.2"]  # empty chunks are not sent (the browser reads them as missing)...
    assert missing == ["labels/0/2.2", "labels/0/0.0"]  # ...but named, so the browser needs not ask
    assert server.pending_push("labels") == 0  # only what the browser reads (or reports) again is pushed next
    assert data == server.read(keys)  # the data after the change
    assert np.frombuffer(data[0], np.uint8).reshape(128, 128)[2:12, 4:14].min() == 2
    # an empty chunk the browser shows is in the working set, so a stroke there is pushed
    server.read(["labels/0/0.0", "labels/0/.zarray", "labels/0/9.9"])
    assert server.pending_push("labels") == 2  # with labels/0/1.2, read just above
    session.annotations.paint((slice(0, 5), slice(0, 5)), 1)
    assert server.take_push("labels").keys == ["labels/0/0.0", "labels/0/1.2"]
    # predictions are pushed under the current layout of the predictions array
    session.generation = 5
    keys, data, missing = server.take_push("predictions")
    assert server.take_push("predictions") == ([], [], []) and missing == []
    assert keys == ["predictions/0/0/1.1.0"] and data == server.read(keys)


def test_push_predicts_its_full_resolution_chunks_ahead_in_batches_within_its_budget():
    session = _Session(_image2d((512, 512)))
    session.is_trained = True
    batches = []
    session.precompute = lambda regions: batches.append(list(regions))
    server = _server(session, "wid", chunk_shape=(64, 64))
    keys = [f"predictions/0/0/{i}.{j}.0" for i in range(4) for j in range(5)]
    server.read(keys + ["predictions/0/1/0.0.0"])
    session.predict_calls.clear()
    push = server.take_push("predictions")
    assert len(push.keys) == 21
    assert [len(b) for b in batches] == [8, 8, 4]  # level 0 only: the coarse chunk is assembled from them
    store = server.store
    assert sorted(r for b in batches for r in b) == sorted(
        store.prediction_region(store.predictions().chunk_region(0, (i, j, 0))) for i in range(4) for j in range(5)
    )
    # only the chunks that fit in the budget
    batches.clear()
    server.read(keys)
    server.take_push("predictions", max_bytes=5 * 64 * 64 * 2)
    assert sum(len(b) for b in batches) == 5
    # superseded: no further batch
    batches.clear()
    server.read(keys)
    calls = iter(range(100))
    assert server.take_push("predictions", cancelled=lambda: next(calls) >= 1) == ([], [], [])
    assert len(batches) == 1


def test_push_respects_its_byte_budget_and_keeps_the_working_set_when_cancelled():
    session = _Session(_image2d((512, 512)))
    session.is_trained = True
    server = _server(session, "wid", chunk_shape=(64, 64))
    keys = [f"predictions/0/0/{i}.{j}.0" for i in range(8) for j in range(8)]
    server.read(keys)
    assert server.take_push("predictions", cancelled=lambda: True) == ([], [], [])
    assert server.pending_push("predictions") == 64
    pushed, data, missing = server.take_push("predictions", max_bytes=10 * 64 * 64 * 2)
    assert len(pushed) == 10 and pushed == keys[::-1][:10] and all(len(d) == 64 * 64 * 2 for d in data)
    # untrained: predictions are missing, nothing to push
    server.read(keys[:3])
    session.is_trained = False
    assert server.take_push("predictions") == ([], [], [])


def test_a_volume_push_after_scrolling_holds_the_planes_in_view_only():
    vol = np.random.default_rng(4).integers(0, 200, (30, 100, 100)).astype(np.uint8)
    session = _Session(vol)
    session.is_trained = True
    session.precompute = lambda regions: None
    server = _server(session, "wid", chunk_shape=(64, 64, 64), plane_chunks=True, coarsest_size=1000)

    def xy(z):  # the four chunks of an xy plane
        return [f"predictions/0/0/{x}_{y}_{z}-{z + 1}" for y in ("0-64", "64-100") for x in ("0-64", "64-100")]

    xz, yz = (
        ["predictions/0/0/0-64_50-51_0-30", "predictions/0/0/64-100_50-51_0-30"],
        ["predictions/0/0/50-51_0-64_0-30"],
    )
    # the three panels at z = 10, then one slice down: both xy planes are pushed (the browser updates them in place)
    server.read(xz + yz + xy(10))
    server.read(xy(11))
    assert sorted(server.take_push("predictions").keys) == sorted(xz + yz + xy(10) + xy(11))
    # scrolled through 10 slices: the xy plane shown last, and the xz and yz planes
    server.read(xz + yz)
    for z in range(12, 22):
        server.read(xy(z))
    session.predict_calls.clear()
    session.generation += 1  # a new model: every chunk pushed is predicted again
    push = server.take_push("predictions")
    assert sorted(push.keys) == sorted(xz + yz + xy(21))
    assert len(session.predict_calls) == 7, "no plane the user has left is predicted"
    assert server.pending_push("predictions") == 0
    # labels alike; the 2D zarr chunks of an image are all pushed (an image has no planes to leave)
    server.read([k.replace("predictions/0", "labels") for z in range(5) for k in xy(z)])
    session.annotations.paint((slice(0, 5), slice(0, 100), slice(0, 100)), 1)
    assert sorted(server.take_push("labels").keys) == sorted(k.replace("predictions/0", "labels") for k in xy(4))
