"""Objects and class insight in the widget, through its real message handler (``handle_message``, as the comm calls
it) and its Python API: the objects layer's chunks are the label image, an object's row is its table row, bad input
changes nothing, and the class insight trait equals the session's own numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.widget import insight
from ilastik_widget.widget.widget import IlastikWidget

SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 1.0, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 1.6, True)
)


class Recorder:
    def __init__(self):
        self.sent: list[tuple[dict, list[bytes]]] = []

    def __call__(self, content, buffers=None):
        json.dumps(content)  # every message must be JSON-able
        self.sent.append((content, [bytes(b) for b in (buffers or [])]))

    def reply(self, id):
        found = [(c, b) for c, b in self.sent if c.get("id") == id and c.get("type") != "refresh"]
        assert len(found) == 1, f"expected one reply to {id}, got {found}"
        return found[0]


def _session(shape, seed=1, **options):
    image, truth = synthetic_cells(shape=shape, seed=seed)
    s = Session(image, features=SEL, classifier={"n_estimators": 12}, **options)
    for st in simulated_strokes(truth, n_per_class=3, radius=2, seed=seed):
        s.add_stroke(**st)
    return s


@pytest.fixture
def widget():
    """A trained widget on a 2D image of several chunks (300 x 520 in 256-pixel chunks)."""
    s = _session((300, 520))
    s.train()
    w = IlastikWidget(s)
    rec = Recorder()
    w.send = rec
    w.wait(60)
    yield w, rec
    w.close()


def _read(w, rec, keys, id):
    w.handle_message({"type": "chunks", "id": id, "keys": keys})
    w.wait(30)
    content, buffers = rec.reply(id)
    assert content["type"] == "chunks-reply"
    return content["found"], buffers


def _served_image(w, rec, level=0, id=100):
    """The objects array of a level as the viewer reads it: metadata from source_info, chunks by message."""
    url = w.source_info["sources"]["objects"]
    path = url.split("/", 3)[3].split("/|")[0]  # mem://<widget>/objects/<version>/|zarr2:
    zarray = json.loads(w.source_info["metadata"][f"{path}/{level}/.zarray"])
    assert zarray["dtype"] == "<u4" and zarray["fill_value"] == 0
    shape, chunks = zarray["shape"], zarray["chunks"]
    grid = [range(-(-n // c)) for n, c in zip(shape, chunks)]
    indices = [(i, j) for i in grid[0] for j in grid[1]]
    found, buffers = _read(w, rec, [f"{path}/{level}/{i}.{j}" for i, j in indices], id)
    out = np.zeros([len(g) * c for g, c in zip(grid, chunks)], np.uint32)
    data = iter(buffers)
    for (i, j), ok in zip(indices, found):
        if ok:
            out[i * chunks[0] : (i + 1) * chunks[0], j * chunks[1] : (j + 1) * chunks[1]] = np.frombuffer(
                next(data), np.uint32
            ).reshape(chunks)
    return out[: shape[0], : shape[1]]


# --------------------------------------------------------------------------------------------- objects layer


def test_objects_layer_chunks_are_the_label_image(widget):
    w, rec = widget
    objects = w.objects(2, 0.5, min_size=5)
    assert len(objects) > 10 and w.last_objects is objects and w.objects_table is objects.table
    info = w.objects_info
    assert info["count"] == len(objects) and info["label"] == 2 and info["class_name"] == "Foreground"
    assert info["params"]["threshold"] == 0.5 and info["params"]["min_size"] == 5
    assert info["region"] == [[0, 300], [0, 520]] and info["stale"] is False
    assert info["total_area"] == int(objects.table["area"].sum())
    json.dumps(w.objects_info, allow_nan=False)  # traits travel to the browser as JSON
    json.dumps(w.class_insight, allow_nan=False)
    spec = [s for s in w.source_info["layer_specs"] if s["name"] == "objects"]
    assert len(spec) == 1 and spec[0]["type"] == "segmentation"
    assert spec[0]["source"] == w.source_info["sources"]["objects"] == f"mem://{w.widget_id}/objects/1/|zarr2:"
    np.testing.assert_array_equal(_served_image(w, rec), objects.labels)
    # a chunk without objects is missing (Neuroglancer's fill value 0), not zeros
    w.objects(2, 0.5, region=(slice(0, 100), slice(0, 100)))
    found, _ = _read(w, rec, ["objects/2/0/1.1", "objects/2/0/0.0", "objects/1/0/0.0"], 7)
    assert found == [False, True, False]  # the first result's URL is gone with it


def test_objects_of_a_region_are_served_where_they_are(widget):
    w, rec = widget
    region = (slice(40, 210), slice(230, 470))  # across chunk borders at 256
    objects = w.objects(2, 0.45, region=region, smooth=0.5)
    assert objects.offset == (40, 230) and w.objects_info["region"] == [[40, 210], [230, 470]]
    served = _served_image(w, rec)
    np.testing.assert_array_equal(served[region], objects.labels)
    outside = np.ones(served.shape, bool)
    outside[region] = False
    assert not served[outside].any()


def test_coarse_levels_of_the_objects_are_strided_labels():
    s = _session((200, 260))
    s.train()
    from ilastik_widget.serving.chunk_server import ChunkServer

    server = ChunkServer(s, "w1", chunk_shape=(64, 64), coarsest_size=64)
    objects = s.objects(2, 0.5)
    version = server.objects.show(objects.labels, objects.offset)
    pyramid = server.store.pyramid("objects")
    assert pyramid.n_levels >= 3
    for level in range(pyramid.n_levels):
        f = pyramid.factors[level]
        expected = objects.labels[:: f[0], :: f[1]]
        chunk = pyramid.chunk
        for i, j in pyramid.chunk_indices(level):
            data = server.read([f"objects/{version}/{level}/{i}.{j}"])[0]
            want = expected[i * chunk[0] : (i + 1) * chunk[0], j * chunk[1] : (j + 1) * chunk[1]]
            if data is None:
                assert not want.any()
                continue
            got = np.frombuffer(data, np.uint32).reshape(chunk)[: want.shape[0], : want.shape[1]]
            np.testing.assert_array_equal(got, want)
    s.close()


def test_objects_of_a_volume_are_served_in_plane_chunks():
    s = _session((24, 70, 80), seed=3)
    s.train()
    w = IlastikWidget(s)
    rec = Recorder()
    w.send = rec
    try:
        objects = w.objects(2, 0.5, min_size=20)
        assert len(objects) > 0
        path = f"objects/{w.objects_info['version']}"
        info = json.loads(w.source_info["metadata"][f"{path}/info"])
        assert info["type"] == "segmentation" and info["scales"][0]["size"] == [80, 70, 24]
        # every xy plane of level 0, as the xy panel reads them (x fastest)
        found, buffers = _read(w, rec, [f"{path}/0/0-80_0-70_{z}-{z + 1}" for z in range(24)], 9)
        out = np.zeros((24, 70, 80), np.uint32)
        data = iter(buffers)
        for z, ok in enumerate(found):
            if ok:
                out[z] = np.frombuffer(next(data), np.uint32).reshape(70, 80)
        np.testing.assert_array_equal(out, objects.labels)
    finally:
        w.close()


def test_objects_of_a_volume_in_precomputed_plane_chunks():
    s = _session((20, 70, 80), seed=3)
    s.train()
    from ilastik_widget.serving.chunk_server import ChunkServer

    server = ChunkServer(s, "w3", plane_chunks=True)
    objects = s.objects(2, 0.5, min_size=20)
    version = server.objects.show(objects.labels, objects.offset)
    info = json.loads(server.read([f"objects/{version}/info"])[0])
    assert info["type"] == "segmentation" and info["data_type"] == "uint32" and info["num_channels"] == 1
    assert json.loads(server.metadata()[f"objects/{version}/info"]) == info
    spec = [x for x in server.layer_specs() if x["name"] == "objects"][0]
    assert spec["type"] == "segmentation" and spec["source"]["url"].endswith(
        f"/objects/{version}/|neuroglancer-precomputed:"
    )
    z = int(np.argmax((objects.labels > 0).sum(axis=(1, 2))))
    data = server.read([f"objects/{version}/0/0-80_0-70_{z}-{z + 1}"])[0]  # one xy plane, x fastest
    np.testing.assert_array_equal(np.frombuffer(data, np.uint32).reshape(70, 80), objects.labels[z])
    s.close()


def test_the_objects_array_refuses_what_is_no_label_image_of_the_image():
    s = Session(np.zeros((50, 60), np.float32))
    from ilastik_widget.serving.chunk_server import ChunkServer

    array = ChunkServer(s, "w4").objects
    with pytest.raises(ValueError, match="2D integer label image"):
        array.show(np.zeros((50, 60), np.float32))
    with pytest.raises(ValueError, match="do not fit in the image of shape \\(50, 60\\)"):
        array.show(np.ones((20, 20), np.int32), offset=(40, 0))
    with pytest.raises(ValueError, match=">= 0"):
        array.show(-np.ones((5, 5), np.int32))
    assert array.version == 0 and not array.present
    s.close()


def test_objects_in_view(widget):
    w, _ = widget
    w.viewer_state = {**w.viewer_state, "view_region": [[20, 180], [100, 400]]}
    objects = w.objects(2, 0.5, region="view")
    assert objects.offset == (20, 100) and objects.labels.shape == (160, 300)
    np.testing.assert_array_equal(
        objects.labels, w.session.objects(2, 0.5, region=(slice(20, 180), slice(100, 400))).labels
    )


# --------------------------------------------------------------------------------------------- rows


def test_object_row_reply_is_the_table_row(widget):
    w, rec = widget
    objects = w.objects(2, 0.5)
    table = objects.table
    k = len(objects) // 2 + 1
    voxel = np.argwhere(objects.labels == k)[0]
    w.handle_message({"type": "object-row", "id": 21, "position": [float(voxel[0]) + 0.5, float(voxel[1]) + 0.3]})
    content, _ = rec.reply(21)
    assert content["type"] == "object-row-reply" and content["object"] == k
    row = table.iloc[k - 1]
    assert set(content["row"]) == set(table.columns)
    for name, value in content["row"].items():
        assert value == pytest.approx(row[name]), name
    assert content["row"]["label"] == k and content["row"]["area"] == int((objects.labels == k).sum())
    # by number, from Python, the same row
    w.handle_message({"type": "object-row", "id": 22, "object": k})
    assert rec.reply(22)[0]["row"] == content["row"] == w.object_row(object=k)
    # the background, and a number beyond the objects: none
    empty = np.argwhere(objects.labels == 0)[0]
    w.handle_message({"type": "object-row", "id": 23, "position": [int(empty[0]), int(empty[1])]})
    assert rec.reply(23)[0] == {"type": "object-row-reply", "id": 23, "object": 0, "row": None}
    assert w.object_row(object=len(objects) + 1) is None


def test_objects_request_from_the_browser(widget):
    w, rec = widget
    w.handle_message({"type": "objects", "id": 31, "label": 2, "threshold": 0.6, "min_size": 8, "split": True})
    w._results.wait()
    content, _ = rec.reply(31)
    expected = w.session.objects(2, 0.6, min_size=8, split=True)
    assert content == {"type": "objects-reply", "id": 31, "count": len(expected), "version": 1}
    np.testing.assert_array_equal(w.last_objects.labels, expected.labels)
    assert w.objects_info["count"] == len(expected) and w.objects_info["params"]["split"] is not None


# --------------------------------------------------------------------------------------------- bad input


def test_bad_objects_input_is_named_and_changes_nothing(widget):
    w, rec = widget
    good = w.objects(2, 0.5)
    before = (dict(w.objects_info), json.dumps(w.source_info, sort_keys=True), w.chunk_server.objects.version)
    with pytest.raises(ValueError, match="threshold must be in"):
        w.objects(2, 1.5)
    with pytest.raises(ValueError, match="low"):
        w.objects(2, 0.4, low=0.6)
    with pytest.raises(ValueError, match="min_size .* larger than max_size"):
        w.objects(2, 0.5, min_size=50, max_size=10)
    with pytest.raises(ValueError, match="label must be a class 1..2"):
        w.objects(3, 0.5)
    # the browser's bad requests: the protocol names the field, the session the rule
    w.handle_message({"type": "objects", "id": 41, "label": 2, "threshold": 1.5})
    content, _ = rec.reply(41)
    assert content["type"] == "error" and "'threshold' must be between 0 and 1" in content["message"]
    w.handle_message({"type": "objects", "id": 42, "label": 2, "threshold": 0.3, "low": 0.6})
    w._results.wait()
    content, _ = rec.reply(42)
    assert content["type"] == "error" and "low (0.6) must not be above threshold (0.3)" in content["message"]
    w.handle_message({"type": "objects", "id": 43, "label": 2, "threshold": 0.5, "region": [[0, 10]]})
    assert "'region' must be one [start, stop] per spatial axis" in rec.reply(43)[0]["message"]
    w.handle_message({"type": "object-row", "id": 44})
    assert "needs a 'position' or an 'object'" in rec.reply(44)[0]["message"]
    after = (dict(w.objects_info), json.dumps(w.source_info, sort_keys=True), w.chunk_server.objects.version)
    assert after == before and w.last_objects is good


def test_objects_before_training_say_so_and_change_nothing():
    s = _session((120, 140))
    w = IlastikWidget(s, live=False)
    rec = Recorder()
    w.send = rec
    try:
        with pytest.raises(RuntimeError, match="not trained"):
            w.objects(2, 0.5)
        w.handle_message({"type": "objects", "id": 51, "label": 2, "threshold": 0.5})
        w._results.wait()
        content, _ = rec.reply(51)
        assert content["type"] == "error" and "not trained" in content["message"]
        assert "Objects not computed" in w.error and "not trained" in w.error  # the panel's error line says why
        w.handle_message({"type": "object-row", "id": 52, "object": 1})
        assert "no objects yet" in rec.reply(52)[0]["message"]
        assert w.objects_info == {} and w.last_objects is None and "objects" not in w.source_info["sources"]
    finally:
        w.close()


def test_the_browser_cannot_set_the_results_traits(widget):
    w, _ = widget
    w.objects(2, 0.5)
    info = dict(w.objects_info)
    w.set_state({"objects_info": {"count": 999}, "class_insight": {}})
    assert w.objects_info == info and w.class_insight != {}
    assert "set by the kernel only" in w.error


def test_clear_objects_removes_the_layer_and_stale_marks_old_results(widget):
    w, rec = widget
    w.objects(2, 0.5)
    w.add_stroke(2, [[150, 300]], radius=2)
    w.update_now()
    w.wait(60)
    assert w.objects_info["stale"] is True  # the predictions changed since
    w.clear_objects()
    assert w.objects_info == {} and w.last_objects is None
    assert "objects" not in w.source_info["sources"] and not [
        s for s in w.source_info["layer_specs"] if s["name"] == "objects"
    ]
    found, _ = _read(w, rec, ["objects/1/0/0.0", "objects/2/0/0.0"], 61)
    assert found == [False, False]


# --------------------------------------------------------------------------------------------- class insight


def _by_label(value, key):
    return [c[key] for c in value["classes"]]


def test_class_insight_counts_labels_and_predicted_fractions(widget):
    w, _ = widget
    w._results.wait()
    value = w.class_insight
    counts = w.session.annotations.count_per_class()
    assert _by_label(value, "labelled") == counts.tolist() and value["labelled_total"] == int(counts.sum())
    assert _by_label(value, "name") == ["Background", "Foreground"]
    whole = w.session.class_fractions()
    assert _by_label(value, "predicted_fraction") == pytest.approx(whole["fraction"].tolist())
    assert value["in_view"] is False and value["region"] == [[0, 300], [0, 520]]
    assert value["measured_voxels"] == value["region_voxels"] == 300 * 520
    assert value["generation"] == w.session.generation
    # a stroke: the labelled counts follow at once
    w.live = False
    w.add_stroke(1, [[5, 5], [5, 60]], radius=2)
    assert _by_label(w.class_insight, "labelled") == w.session.annotations.count_per_class().tolist()
    assert w.labelled_per_class()["labelled"].tolist() == _by_label(w.class_insight, "labelled")


def test_class_insight_of_the_region_in_view(widget):
    w, _ = widget
    w.viewer_state = {**w.viewer_state, "position": [100.0, 100.0], "view_region": [[10.5, 130], [-20, 200.2]]}
    w._results.wait()
    region = (slice(10, 130), slice(0, 201))
    expected = w.session.class_fractions(region)
    value = w.class_insight
    assert value["in_view"] is True and value["region"] == [[10, 130], [0, 201]]
    assert _by_label(value, "predicted_fraction") == pytest.approx(expected["fraction"].tolist())
    assert w.class_fractions("view")["fraction"].tolist() == pytest.approx(expected["fraction"].tolist())
    # a malformed region in view: the whole image
    w.viewer_state = {**w.viewer_state, "view_region": [[5, 1], [0, 10]]}
    w._results.wait()
    assert w.class_insight["in_view"] is False and w.class_insight["region"] == [[0, 300], [0, 520]]


def test_class_insight_of_a_large_region_is_sampled(widget, monkeypatch):
    w, _ = widget
    monkeypatch.setattr(insight, "MAX_BLOCKS", 2)
    w.viewer_state = {**w.viewer_state, "view_region": [[0, 300], [0, 520]]}  # 2 x 3 blocks of 256
    w._results.wait()
    value = w.class_insight
    assert value["in_view"] is True and value["region_voxels"] == 300 * 520
    assert 0 < value["measured_voxels"] < value["region_voxels"]
    assert sum(_by_label(value, "predicted_fraction")) == pytest.approx(1.0)


def test_class_insight_of_a_large_image_waits_for_the_region_in_view(widget, monkeypatch):
    w, _ = widget
    monkeypatch.setattr(insight, "MAX_BLOCKS", 2)  # the image has 6 blocks
    w.add_stroke(2, [[150, 300]], radius=2)  # a new training: a new measurement
    w.wait(60)
    w._results.wait()
    value = w.class_insight
    assert _by_label(value, "predicted_fraction") == [None, None] and value["region"] is None
    assert _by_label(value, "labelled") == w.session.annotations.count_per_class().tolist()


def test_class_insight_before_training_has_labels_only():
    s = _session((100, 120))
    w = IlastikWidget(s, live=False)
    try:
        value = w.class_insight
        assert _by_label(value, "labelled") == s.annotations.count_per_class().tolist()
        assert _by_label(value, "predicted_fraction") == [None, None] and value["generation"] is None
    finally:
        w.close()
