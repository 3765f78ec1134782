"""Kernel-side tests of the widget: message handlers, trait validation and live retraining, without a browser.

The widget's ``send`` is replaced by a recorder; messages are fed to ``handle_message`` as the comm would.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import traitlets

from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.widget import protocol as m
from ilastik_widget.widget.widget import IlastikWidget


class Recorder:
    def __init__(self):
        self.sent: list[tuple[dict, list[bytes]]] = []

    def __call__(self, content, buffers=None):
        json.dumps(content)  # every message must be JSON-able
        self.sent.append((content, [bytes(b) for b in (buffers or [])]))

    def of_type(self, kind):
        return [(c, b) for c, b in self.sent if c.get("type") == kind]

    def reply(self, id):
        found = [(c, b) for c, b in self.sent if c.get("id") == id and c.get("type") != "refresh"]
        assert len(found) == 1, f"expected one reply to {id}, got {found}"
        return found[0]


@pytest.fixture(scope="module")
def data():
    image, truth = synthetic_cells(shape=(160, 192), seed=1)
    strokes = simulated_strokes(truth, n_per_class=2, radius=2, seed=1)
    return image, truth, strokes


def make_widget(image, **kwargs):
    w = IlastikWidget(image, **kwargs)
    rec = Recorder()
    w.send = rec
    return w, rec


def stroke_msg(id, s, **over):
    msg = {
        "type": "stroke",
        "id": id,
        "label": int(s["label"]),
        "radius": float(s["radius"]),
        "erase": False,
        "points": np.asarray(s["points"], dtype=float).tolist(),
    }
    if s.get("axes") is not None:
        msg["axes"] = [int(a) for a in s["axes"]]
    msg.update(over)
    return msg


# --------------------------------------------------------------------------------------------- chunks


def test_chunk_request_replies_with_one_buffer_per_found_key(data):
    image, _, _ = data
    w, rec = make_widget(image)
    keys = ["raw/.zattrs", "raw/0/.zarray", "raw/0/0.0", "labels/0/0.0", "raw/9/0.0", "nonsense"]
    w.handle_message({"type": "chunks", "id": 7, "keys": keys})
    w.wait(30)
    content, buffers = rec.reply(7)
    assert content["type"] == "chunks-reply"
    expected = w.chunk_server.read(keys)
    assert content["found"] == [e is not None for e in expected]
    # labels/0/0.0 has no strokes: missing, which Neuroglancer reads as the fill value 0
    assert content["found"] == [True, True, True, False, False, False]
    assert buffers == [e for e in expected if e is not None]
    zarray = json.loads(buffers[1])
    chunk = zarray["chunks"]
    assert len(buffers[2]) == np.prod(chunk) * np.dtype(zarray["dtype"]).itemsize
    # the raw chunk holds the image's pixels
    raw = np.frombuffer(buffers[2], dtype=np.dtype(zarray["dtype"])).reshape(chunk)
    h, wd = min(chunk[0], image.shape[0]), min(chunk[1], image.shape[1])
    np.testing.assert_array_equal(raw[:h, :wd], image[:h, :wd].astype(raw.dtype))
    w.close()


def test_cancelled_chunk_request_is_skipped(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.handle_message({"type": "cancel", "id": 1, "ids": [5]})
    w.handle_message({"type": "chunks", "id": 5, "keys": ["raw/0/0.0"]})
    w.handle_message({"type": "chunks", "id": 6, "keys": ["raw/0/0.0"]})
    w.wait(30)
    assert [c["id"] for c, _ in rec.of_type("chunks-reply")] == [6]
    assert not rec.of_type("error")
    w.close()


def test_prediction_chunks_before_training_are_missing_not_errors(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.handle_message({"type": "chunks", "id": 3, "keys": ["predictions/0/0/0.0.0"]})
    w.wait(30)
    content, buffers = rec.reply(3)
    assert content == {"type": "chunks-reply", "id": 3, "found": [False]} and buffers == []
    w.close()


# --------------------------------------------------------------------------------------------- strokes


def test_stroke_reaches_the_session(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    s = strokes[0]
    w.handle_message(stroke_msg(11, s))
    content, _ = rec.reply(11)
    assert content["type"] == "stroke-reply"
    sid = content["stroke_id"]
    assert [st.id for st in w.session.strokes] == [sid]
    labels = w.session.labels()
    p = np.rint(np.asarray(s["points"])[0]).astype(int)
    assert labels[tuple(p)] == s["label"]
    assert set(np.unique(labels)) == {0, s["label"]}
    # the summary trait and a labels refresh follow
    assert [x["id"] for x in w.strokes] == [sid]
    assert w.strokes[0]["label"] == s["label"] and w.strokes[0]["n_points"] == len(s["points"])
    assert any(c["layers"] == ["labels"] for c, _ in rec.of_type("refresh"))
    w.close()


def test_erase_stroke_removes_labels(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    s = strokes[0]
    w.handle_message(stroke_msg(1, s))
    before = (w.session.labels() > 0).sum()
    w.handle_message(stroke_msg(2, s, erase=True, radius=float(s["radius"]) + 1))
    assert rec.reply(2)[0]["type"] == "stroke-reply"
    assert before > 0 and (w.session.labels() > 0).sum() == 0
    w.close()


def test_undo_redo_and_remove_stroke(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    w.handle_message(stroke_msg(1, strokes[0]))
    w.handle_message(stroke_msg(2, strokes[-1]))
    full = w.session.labels().copy()
    sid2 = rec.reply(2)[0]["stroke_id"]
    w.handle_message({"type": "undo", "id": 3})
    assert rec.reply(3)[0] == {"type": "undo-reply", "id": 3, "changed": True}
    assert len(w.strokes) == 1 and not np.array_equal(w.session.labels(), full)
    w.handle_message({"type": "redo", "id": 4})
    assert rec.reply(4)[0]["changed"] is True
    np.testing.assert_array_equal(w.session.labels(), full)
    w.handle_message({"type": "remove-stroke", "id": 5, "stroke_id": sid2})
    assert rec.reply(5)[0]["type"] == "remove-stroke-reply"
    assert [s["id"] for s in w.strokes] == [rec.reply(1)[0]["stroke_id"]]
    w.handle_message({"type": "remove-stroke", "id": 6, "stroke_id": 999})
    assert rec.reply(6)[0]["type"] == "error" and "999" in rec.reply(6)[0]["message"]
    # nothing left to redo after a new change; undo from Python mirrors the message
    w.handle_message({"type": "redo", "id": 7})
    assert rec.reply(7)[0]["changed"] is False
    assert w.undo() is True and len(w.strokes) == 2
    w.close()


# --------------------------------------------------------------------------------------------- malformed input

BAD_MESSAGES = [
    ("not a dict", None),
    ({"id": 1}, 1),  # no type
    ({"type": "stroke"}, None),  # no id
    ({"type": "stroke", "id": "x"}, None),
    ({"type": "stroke", "id": -1}, None),
    ({"type": "stroke", "id": 2**60}, None),
    ({"type": "what", "id": 20}, 20),
    ({"type": "chunks", "id": 21}, 21),
    ({"type": "chunks", "id": 22, "keys": "raw/0/0.0"}, 22),
    ({"type": "chunks", "id": 24, "keys": ["raw/0/0.0"] * 100_000}, 24),
    ({"type": "cancel", "id": 26, "ids": "all"}, 26),
    ({"type": "stroke", "id": 30, "label": 1, "radius": 2}, 30),  # no points
    ({"type": "stroke", "id": 31, "label": 1, "radius": 2, "points": []}, 31),
    ({"type": "stroke", "id": 32, "label": 0, "radius": 2, "points": [[1, 1]]}, 32),
    ({"type": "stroke", "id": 33, "label": 3, "radius": 2, "points": [[1, 1]]}, 33),  # no class 3
    ({"type": "stroke", "id": 34, "label": 1, "radius": 1e9, "points": [[1, 1]]}, 34),
    ({"type": "stroke", "id": 35, "label": 1, "radius": -1, "points": [[1, 1]]}, 35),
    ({"type": "stroke", "id": 36, "label": 1, "radius": 2, "points": [[1, 1, 1]]}, 36),  # 3D point on 2D image
    ({"type": "stroke", "id": 37, "label": 1, "radius": 2, "points": [[1e300, 1]]}, 37),
    ({"type": "stroke", "id": 38, "label": 1, "radius": 2, "points": [["a", 1]]}, 38),
    ({"type": "stroke", "id": 39, "label": 1, "radius": 2, "points": [[1, 1]] * 200_000}, 39),
    ({"type": "stroke", "id": 40, "label": 1, "radius": 2, "points": [[5000, 5000]]}, 40),  # outside the image
    ({"type": "stroke", "id": 41, "label": True, "radius": 2, "points": [[1, 1]]}, 41),
    ({"type": "stroke", "id": 42, "label": 1, "radius": 2, "points": [[1, 1]], "axes": [0, 0]}, 42),
    ({"type": "stroke", "id": 43, "label": 1, "radius": 2, "points": [[1, 1]], "erase": "yes"}, 43),
    ({"type": "stroke", "id": 44, "label": 1, "radius": float("nan"), "points": [[1, 1]]}, 44),
    ({"type": "remove-stroke", "id": 50}, 50),
    ({"type": "remove-stroke", "id": 51, "stroke_id": "1"}, 51),
    ({"type": "rename-class", "id": 52, "label": 1, "name": ""}, 52),
    ({"type": "rename-class", "id": 53, "label": 1, "name": "x" * 1000}, 53),
    ({"type": "recolor-class", "id": 54, "label": 1, "color": "red"}, 54),
    ({"type": "remove-class", "id": 55, "label": 7}, 55),
]


def test_malformed_keys_of_a_chunk_request_are_answered_as_not_found(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.handle_message({"type": "chunks", "id": 23, "keys": [1, "raw/0/0.0", "", "x" * 600, None]})
    w.wait(30)
    content, buffers = rec.reply(23)
    assert content == {"type": "chunks-reply", "id": 23, "found": [False, True, False, False, False]}
    assert buffers == w.chunk_server.read(["raw/0/0.0"])
    w.close()


def test_malformed_messages_get_error_replies_and_keep_labels(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    w.handle_message(stroke_msg(1, strokes[0]))
    labels = w.session.labels().copy()
    classes = list(w.classes)
    for msg, id in BAD_MESSAGES:
        rec.sent.clear()
        w.handle_message(msg)  # must not raise
        errors = rec.of_type("error")
        assert len(errors) == 1, f"{msg!r:.80} -> {rec.sent}"
        content, buffers = errors[0]
        assert content["id"] == id and buffers == []
        assert isinstance(content["message"], str) and content["message"], msg
        assert w.error == content["message"] or content["message"] in w.error
        assert not rec.of_type("stroke-reply") and not rec.of_type("chunks-reply")
    w.wait(30)
    np.testing.assert_array_equal(w.session.labels(), labels)
    assert len(w.session.strokes) == 1 and w.classes == classes
    # the widget still works after all that
    w.handle_message(stroke_msg(99, strokes[-1]))
    assert rec.reply(99)[0]["type"] == "stroke-reply" and len(w.session.strokes) == 2
    assert w.error == "" and not w.status.startswith("Error")  # a successful stroke clears the old error
    w.close()


def test_error_messages_are_in_words(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.handle_message({"type": "stroke", "id": 5, "label": 9, "radius": 2, "points": [[1, 1]]})
    assert "label" in rec.reply(5)[0]["message"] and "between 1 and 2" in rec.reply(5)[0]["message"]
    w.handle_message({"type": "stroke", "id": 6, "label": 1, "radius": 2, "points": [[5000, 5000]]})
    assert rec.reply(6)[0]["message"].startswith("Stroke not added")
    assert w.status.startswith("Error: ")
    w.close()


def test_parse_message_types():
    req = m.parse_message(
        {"type": "stroke", "id": 1, "label": 2, "radius": 3, "points": [[1, 2], [3.5, 4]], "axes": [0, 1]},
        ndim=2,
        n_classes=2,
    )
    assert isinstance(req, m.StrokeRequest) and req.axes == (0, 1) and req.points.shape == (2, 2)
    assert m.parse_message({"type": "chunks", "id": 2, "keys": ["a/b"]}) == m.ChunksRequest(2, ("a/b",))
    assert m.parse_message({"type": "add-class", "id": 3}) == m.AddClassRequest(3, None, None)
    assert m.parse_message({"type": "recolor-class", "id": 4, "label": 1, "color": "#AABBCC"}).color == "#aabbcc"
    with pytest.raises(m.MessageError) as info:
        m.parse_message({"type": "stroke", "id": 9, "label": 1, "radius": 2, "points": [[1, 2, 3]]}, ndim=2)
    assert info.value.id == 9 and "2 coordinates" in info.value.message


# --------------------------------------------------------------------------------------------- traits


def test_trait_validation_from_python(data):
    image, _, _ = data
    w, _ = make_widget(image)
    for name, value in [
        ("brush_size", 0),
        ("brush_size", 62),
        ("brush_size", True),
        ("mode", "draw"),
        ("active_class", 3),
        ("active_class", 0),
        ("layers", {"bogus": {"visible": True}}),
        ("layers", {"raw": {"opacity": 2}}),
        ("layers", {"raw": {"visible": "yes"}}),
        ("feature_selection", {"features": {"gaussian_smoothing": [0.31]}}),
        ("feature_selection", {"x": 1}),
        ("classes", []),
        ("classes", [{"name": "a", "color": "blue"}]),
        ("viewer_state", {"position": "here"}),
        ("viewer_state", {"crossSectionScale": -1}),
        ("viewer_state", {"position": [1.0, 10**400]}),  # JSON allows it; no float (nor JavaScript) holds it
        ("viewer_state", {"projectionScale": 10**400}),
        ("height", 50),
        ("height", 10_000),
    ]:
        before = getattr(w, name)
        with pytest.raises(traitlets.TraitError):
            setattr(w, name, value)
        assert getattr(w, name) == before, name
    w.brush_size = 61
    w.height = 900
    w.mode = "navigate"
    w.active_class = 2
    w.set_layer("uncertainty", visible=True, opacity=0.25)
    assert (w.brush_size, w.mode, w.active_class, w.height) == (61, "navigate", 2, 900)
    assert w.layers["uncertainty"] == {"visible": True, "opacity": 0.25}
    assert w.layers["raw"]["visible"] is True  # other layers keep their settings
    w.close()


def test_bad_trait_values_from_the_browser_are_rejected(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.set_state({"brush_size": 500})
    assert w.brush_size == 5 and "brush_size" in w.error
    w.set_state({"mode": 3, "brush_size": 9})  # the good value of the same update is kept
    assert w.mode == "paint" and w.brush_size == 9 and "mode" in w.error
    classes = list(w.classes)
    w.set_state({"classes": [{"name": "Mine", "color": "#000000"}], "strokes": [{"id": 1}]})
    assert w.classes == classes and w.strokes == [] and "kernel" in w.error
    assert [c.name for c in w.session.classes] == [c["name"] for c in classes]
    w.set_state({"viewer_state": {"position": [1, 2], "blob": "x" * 100_000}})
    assert w.viewer_state == {} and "too large" in w.error
    w.set_state({"viewer_state": {"position": [10.5, 20.25], "crossSectionScale": 0.5, "layout": "xy"}})
    assert w.viewer_state["position"] == [10.5, 20.25]
    w.close()


def test_classes_from_messages_and_python(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    w.handle_message({"type": "add-class", "id": 1, "name": "Membrane", "color": "#00ff00"})
    assert rec.reply(1)[0] == {"type": "add-class-reply", "id": 1, "label": 3}
    assert w.classes[2] == {"name": "Membrane", "color": "#00ff00"}
    w.handle_message({"type": "rename-class", "id": 2, "label": 1, "name": "Outside"})
    w.handle_message({"type": "recolor-class", "id": 3, "label": 1, "color": "#123456"})
    assert w.classes[0] == {"name": "Outside", "color": "#123456"}
    assert w.session.classes[0].name == "Outside"
    # a class from Python shows in the trait; removing renumbers strokes and moves the active class
    assert w.add_class("Debris") == 4 and len(w.classes) == 4
    w.active_class = 4
    w.handle_message(stroke_msg(5, strokes[0], label=3))
    w.handle_message({"type": "remove-class", "id": 6, "label": 1})
    assert [c["name"] for c in w.classes] == ["Foreground", "Membrane", "Debris"]
    assert w.active_class == 3
    assert [s["label"] for s in w.strokes] == [2]
    # setting the trait (from Python or the browser) applies renames and additions to the session
    w.classes = [*w.classes[:2], {"name": "Junk", "color": "#abcdef"}, {"name": "Extra", "color": "#fedcba"}]
    assert [c.name for c in w.session.classes] == ["Foreground", "Membrane", "Junk", "Extra"]
    w.close()


def test_feature_selection_trait_reaches_session(data):
    from ilastik_widget.core.features import FeatureSelection

    image, _, _ = data
    w, _ = make_widget(image)
    sel = (
        FeatureSelection.none()
        .with_feature("gaussian_smoothing", 1.0, True)
        .with_feature("hessian_of_gaussian_eigenvalues", 3.5, True)
    )
    w.set_state({"feature_selection": sel.to_dict()})
    assert w.session.feature_selection == sel
    w.select_features("all")
    assert w.session.feature_selection == FeatureSelection.all()
    w.session.feature_selection = sel  # and back: session -> trait
    assert FeatureSelection.from_dict(w.feature_selection) == sel
    w.close()


def test_source_info_carries_the_feature_table_and_every_cell_round_trips(data):
    """The panel builds its feature matrix from source_info alone: every cell it shows must be one the kernel
    accepts as the browser sends it (JSON, where 1.0 arrives as 1), and All must be the full set."""
    from ilastik_widget.core.features import FEATURES, FeatureSelection, feature_table
    from ilastik_widget.widget.protocol import BRUSH_SIZE_MAX as MAX_BRUSH
    from ilastik_widget.widget.protocol import BRUSH_SIZE_MIN as MIN_BRUSH

    image, _, _ = data
    w, _ = make_widget(image)
    info = json.loads(json.dumps(w.source_info))
    table = info["feature_table"]
    assert table == json.loads(json.dumps(feature_table()))
    assert [f["name"] for f in table["features"]] == list(FEATURES) and len(table["scales"]) == 7
    assert info["brush_size"] == {"min": MIN_BRUSH, "max": MAX_BRUSH}
    cells = []
    for f in table["features"]:
        name = f["name"]
        assert f["title"] and f["description"] and set(f["scales"]) <= set(table["scales"])
        for s in table["scales"]:
            from_js = int(s) if s == int(s) else s  # JSON.stringify(1.0) == "1"
            one = {"features": {name: [from_js]}}
            if s not in f["scales"]:
                with pytest.raises(ValueError):
                    FeatureSelection.from_dict(one)
                continue
            cells.append((name, s))
            sel = FeatureSelection.from_dict(one)
            assert sel == FeatureSelection.none().with_feature(name, s, True)
            assert sel.to_dict()["features"][name] == [s]
            assert FeatureSelection.from_dict(json.loads(json.dumps(sel.to_dict()))) == sel
            assert sel.with_feature(name, s, False).is_empty
            w.set_state({"feature_selection": one})  # a click on this cell after "None"
            assert w.session.feature_selection == sel and not w.error, (name, s, w.error)
    assert len(cells) == 37 and FeatureSelection(frozenset(cells)) == FeatureSelection.all()
    w.set_state({"feature_selection": {"features": {f["name"]: f["scales"] for f in table["features"]}}})  # "All"
    assert w.session.feature_selection == FeatureSelection.all()
    w.add_class("Third")  # source_info is rebuilt when the classes change: the table stays
    assert w.source_info["feature_table"] == table
    w.close()


def test_go_to_stroke_moves_the_view(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    w.viewer_state = {"position": [0, 0], "crossSectionScale": 1.0, "layout": "xy"}
    sid = w.add_stroke(1, strokes[0]["points"], radius=2)
    w.go_to_stroke(sid)
    np.testing.assert_allclose(w.viewer_state["position"], np.mean(strokes[0]["points"], axis=0), atol=0.01)
    assert w.viewer_state["crossSectionScale"] == 1.0
    with pytest.raises(KeyError):
        w.go_to_stroke(12345)
    w.close()


# --------------------------------------------------------------------------------------------- live training


def test_live_update_retrains_and_refreshes_the_predictions(data):
    image, truth, strokes = data
    w, rec = make_widget(image)
    assert w.live
    for i, s in enumerate(strokes):
        w.handle_message(stroke_msg(i + 1, s))
    w.wait(120)
    refreshes = [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    assert refreshes, rec.sent
    g1 = w.session.generation
    assert g1 > 0 and w.status == "Ready" and not w.busy and w.error == ""
    assert w.session.is_trained
    # predictions served to the browser follow the ground truth where it is clear
    seg = w.segmentation()
    assert (seg == truth).mean() > 0.8
    # one more stroke: a new training, new predictions, one more refresh
    n = len(refreshes)
    w.handle_message(stroke_msg(100, strokes[0]))
    w.wait(120)
    refreshes = [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    assert w.session.generation > g1 and len(refreshes) > n
    w.close()


def test_live_off_waits_for_update_now(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.set_state({"live": False})
    for i, s in enumerate(strokes):
        w.handle_message(stroke_msg(i + 1, s))
    w.wait(60)
    assert not w.session.is_trained and "Update now" in w.status
    assert not [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    w.handle_message({"type": "update-now", "id": 50})
    assert rec.reply(50)[0]["type"] == "update-now-reply"
    w.wait(120)
    assert w.session.is_trained and w.session.generation > 0
    assert [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    w.close()


def test_one_class_only_says_what_to_do(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.handle_message(stroke_msg(1, [s for s in strokes if s["label"] == 1][0]))
    w.wait(30)
    assert not w.session.is_trained and "two classes" in w.status and w.error == ""
    w.close()


def test_two_widgets_are_independent(data):
    image, _, strokes = data
    a, rec_a = make_widget(image)
    b, rec_b = make_widget(image)
    a.live = b.live = False
    assert a.widget_id != b.widget_id
    assert a.source_info["sources"]["raw"] != b.source_info["sources"]["raw"]
    a.handle_message(stroke_msg(1, strokes[0]))
    assert len(a.session.strokes) == 1 and len(b.session.strokes) == 0 and b.strokes == []
    assert not rec_b.sent
    a.close()
    b.close()


def test_widget_on_existing_session_and_source_info(data):
    from ilastik_widget.core.session import Session

    image, _, _ = data
    session = Session(image, classes=("a", "b", "c"))
    w = IlastikWidget(session)
    assert w.session is session and [c["name"] for c in w.classes] == ["a", "b", "c"]
    info = w.source_info
    assert info["shape"] == list(image.shape) and info["ndim"] == 2 and info["channels"] == 1
    assert [s["name"] for s in info["layer_specs"]] and set(info["sources"]) >= {"raw", "labels", "probabilities"}
    with pytest.raises(ValueError):
        IlastikWidget(session, classes=["x"])
    w.close()


def test_messages_through_the_comm_path(data):
    """The way ipywidgets delivers a custom message from the browser (Widget._handle_msg)."""
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    msg = {"content": {"data": {"method": "custom", "content": stroke_msg(8, strokes[0])}}, "buffers": []}
    w._handle_msg(msg)
    assert rec.reply(8)[0]["type"] == "stroke-reply" and len(w.session.strokes) == 1
    w._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "undo", "id": 9}}}, "buffers": []})
    assert rec.reply(9)[0]["changed"] is True and len(w.session.strokes) == 0
    # browser trait updates arrive as "update" messages
    w._handle_msg(
        {"content": {"data": {"method": "update", "state": {"brush_size": 17}, "buffer_paths": []}}, "buffers": []}
    )
    assert w.brush_size == 17
    w._handle_msg(
        {"content": {"data": {"method": "update", "state": {"brush_size": 99}, "buffer_paths": []}}, "buffers": []}
    )
    assert w.brush_size == 17 and "brush_size" in w.error
    w.close()


def test_training_outside_the_widget_refreshes_the_browser(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    for i, s in enumerate(strokes):
        w.handle_message(stroke_msg(i + 1, s))
    assert not [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    w.session.train()  # in a notebook cell, not through the widget
    w.wait()  # the refresh goes out with the visible prediction chunks, computed in a worker thread
    refreshes = [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    assert len(refreshes) == 1
    assert w.status == "Ready"
    # the widget's own training publishes one refresh per new model, not two
    rec.sent.clear()
    w.handle_message(stroke_msg(50, strokes[0]))
    w.update_now()
    w.wait(60)
    refreshes = [c for c, _ in rec.of_type("refresh") if "probabilities" in c["layers"]]
    assert len(refreshes) == 1
    w.close()


# --------------------------------------------------------------------------------------------- autosave


def test_autosave_keeps_every_browser_stroke_and_from_project_restores_them(data, tmp_path):
    from ilastik_widget.io.project import load_session

    image, _, strokes = data
    path = tmp_path / "auto.ilastikw"
    w, rec = make_widget(image, autosave=path)
    assert w.autosave_path == path and path.is_file()
    for i, s in enumerate(strokes, start=1):
        w.handle_message(stroke_msg(i, s))
        assert rec.reply(i)[0]["type"] == "stroke-reply"
    w.handle_message({"type": "undo", "id": 100})
    w.wait(60)
    expected = [(s.label, s.points.tolist()) for s in w.session.strokes]
    assert len(expected) == len(strokes) - 1
    # the file on disk already holds the newest labels, without any explicit save
    saved = load_session(path, image=image, train=False)
    assert [(s.label, s.points.tolist()) for s in saved.strokes] == expected
    w.close()

    w2 = IlastikWidget.from_project(path, image=image)
    w2.send = Recorder()
    assert [(s.label, s.points.tolist()) for s in w2.session.strokes] == expected
    assert np.array_equal(w2.session.labels(), w.session.labels())
    w2.wait(60)
    assert w2.session.is_trained  # reopening retrains (live update)
    w2.add_stroke(1, [[5, 5], [5, 20]], radius=1)
    assert len(load_session(path, image=image, train=False).strokes) == len(expected) + 1
    w2.close()


def test_autosave_failure_is_shown_in_words_and_keeps_the_labels(data, tmp_path):
    from ilastik_widget.io.project import load_session

    image, _, strokes = data
    path = tmp_path / "auto.ilastikw"
    w, rec = make_widget(image, autosave=path)
    path.unlink()
    path.mkdir()  # a directory in the file's place: the next save fails (for root too, unlike permissions)
    try:
        w.handle_message(stroke_msg(1, strokes[0]))
        assert rec.reply(1)[0]["type"] == "stroke-reply"
        assert len(w.session.strokes) == 1
        assert "Autosave" in w.error and str(path) in w.error
        path.rmdir()  # the disk is writable again: the next change saves, and the error goes away
        w.handle_message(stroke_msg(2, strokes[1]))
        assert rec.reply(2)[0]["type"] == "stroke-reply"
        assert w.error == ""
        assert len(load_session(path, image=image, train=False).strokes) == 2
    finally:
        w.close()


# --------------------------------------------------------------------------------------------- pushed refreshes


def _pushed(rec, layer):
    """(keys, buffers) of the refresh messages naming ``layer``, in order."""
    return [(c["keys"], b) for c, b in rec.of_type("refresh") if layer in c["layers"]]


def test_refresh_carries_the_chunks_the_browser_shows(data):
    image, _, strokes = data
    w, rec = make_widget(image)  # 256 x 256 chunks: the 160 x 192 image is one chunk
    for s in strokes[:-1]:
        w.session.add_stroke(**s)
    w.wait(120)
    assert w.session.is_trained
    rec.sent.clear()
    # the browser shows the labels and the predictions: it asked for the labels chunk and served the predictions
    # chunk from an earlier push
    w.handle_message({"type": "chunks", "id": 1, "keys": ["labels/0/0.0", "raw/0/0.0"]})
    w.wait(30)
    w.handle_message({"type": "seen", "id": 2, "keys": ["predictions/0/0/0.0.0"]})
    w.handle_message(stroke_msg(10, strokes[-1]))
    w.wait(120)
    # one refresh brings the new labels and predictions together (labels wait for the retrained predictions)
    refreshes = rec.of_type("refresh")
    assert len(refreshes) == 1, [c for c, _ in refreshes]
    content, buffers = refreshes[0]
    layout = w.chunk_server.store.layout
    assert content["layers"][0] == "labels" and "probabilities" in content["layers"]
    assert content["keys"] == ["labels/0/0.0", f"predictions/{layout}/0/0.0.0"]
    # each pushed buffer is exactly what the browser would get by asking for that key now
    assert buffers == w.chunk_server.read(content["keys"])
    labels = np.frombuffer(buffers[0], np.uint8).reshape(256, 256)
    y, x = np.rint(np.asarray(strokes[-1]["points"])).astype(int).T
    assert (labels[y, x] == strokes[-1]["label"]).all()  # the new stroke is in the pushed labels
    w.close()


def test_labels_refresh_goes_alone_when_no_training_follows_and_names_chunks_now_empty(data):
    image, _, strokes = data
    w, rec = make_widget(image)
    w.live = False
    w.handle_message({"type": "chunks", "id": 1, "keys": ["labels/0/0.0"]})
    w.wait(30)
    w.handle_message(stroke_msg(2, strokes[0]))
    ((content, buffers),) = [(c, b) for c, b in rec.of_type("refresh") if "labels" in c["layers"]]
    assert content["keys"] == ["labels/0/0.0"] and buffers == w.chunk_server.read(content["keys"])
    assert content["missing"] == []
    assert not _pushed(rec, "probabilities")
    # the browser reports it shows the chunk (updated in place); then the only stroke goes: the chunk is empty
    w.handle_message({"type": "seen", "id": 3, "keys": ["labels/0/0.0"]})
    rec.sent.clear()
    w.undo()
    ((content, buffers),) = [(c, b) for c, b in rec.of_type("refresh") if "labels" in c["layers"]]
    assert content["keys"] == [] and buffers in ([], None)
    assert content["missing"] == ["labels/0/0.0"]
    assert w.chunk_server.read(["labels/0/0.0"]) == [None]
    w.close()


def test_held_labels_refresh_goes_out_if_training_does_not_finish(data, monkeypatch):
    from concurrent.futures import Future

    import ilastik_widget.widget.live as live_module

    image, _, strokes = data
    w, rec = make_widget(image)
    for i, s in enumerate(strokes[:2]):
        w.handle_message(stroke_msg(i + 1, s))
    w.wait(120)
    rec.sent.clear()
    monkeypatch.setattr(live_module, "LABELS_WAIT_FOR_PREDICTIONS", 0.05)
    never = Future()  # a training that is still running
    monkeypatch.setattr(w.session, "train_async", lambda *a, **k: never)
    w.handle_message(stroke_msg(20, strokes[2]))
    assert not _pushed(rec, "labels")  # held for the predictions...
    import time

    deadline = time.monotonic() + 10
    while not _pushed(rec, "labels") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _pushed(rec, "labels"), "the held labels refresh never went out"  # ...but not longer than the wait
    assert not _pushed(rec, "probabilities")
    never.cancel()
    w.close()


def test_malformed_seen_messages_get_error_replies(data):
    image, _, _ = data
    w, rec = make_widget(image)
    for i, bad in enumerate([{"keys": "labels/0/0.0"}, {"keys": [1, 2]}, {"keys": ["x"] * 5000}, {}]):
        w.handle_message({"type": "seen", "id": 100 + i, **bad})
        assert rec.reply(100 + i)[0]["type"] == "error"
    assert w.chunk_server.pending_push("labels") == 0
    w.close()


@pytest.mark.parametrize("bad", [{"raw_from": "nope"}, {"classes": ()}, {"height": 10}, {"mode": "draw"}])
def test_a_widget_that_fails_to_start_says_why_and_leaves_nothing_behind(data, bad):
    import gc
    import sys

    image, _, _ = data
    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        with pytest.raises((ValueError, traitlets.TraitError)):
            IlastikWidget(image, **bad)
        gc.collect()  # __del__ -> close() of the half-made widget
    finally:
        sys.unraisablehook = hook
    assert unraisable == []


def test_traits_as_constructor_arguments(data):
    image, _, _ = data
    w = IlastikWidget(
        image, height=800, live=False, brush_size=9, mode="navigate", classes=("a", "b", "c"), active_class=3
    )
    assert (w.height, w.live, w.brush_size, w.mode, w.active_class) == (800, False, 9, "navigate", 3)
    assert [c["name"] for c in w.classes] == ["a", "b", "c"]
    w.close()


def test_source_info_sends_the_metadata_the_viewer_reads_first(data):
    image, _, _ = data
    w, _ = make_widget(image)
    metadata = w.source_info["metadata"]
    url = w.source_info["sources"]["probabilities"]  # mem://<id>/predictions/<layout>/|zarr2:
    prediction_prefix = url.split("/", 3)[3].rsplit("/|", 1)[0]
    for prefix in ("raw", "labels", prediction_prefix):
        assert f"{prefix}/.zattrs" in metadata and f"{prefix}/0/.zarray" in metadata
    for key, text in metadata.items():
        served = w.chunk_server.read([key])[0]
        assert text == (None if served is None else served.decode()), key
    assert metadata["raw/.zarray"] is None  # a group, not an array
    # a new class changes the predictions' channels: the metadata sent changes with the layer specs
    w.add_class("third")
    new_prefix = w.source_info["sources"]["probabilities"].split("/", 3)[3].rsplit("/|", 1)[0]
    assert new_prefix != prediction_prefix  # a new layout: a new URL, so the viewer reads the new metadata
    assert w.chunk_server.read([f"{prediction_prefix}/0/.zarray"]) == [None]  # the old layout is gone
    assert json.loads(w.source_info["metadata"][f"{new_prefix}/0/.zarray"])["shape"][-1] == 3
    w.close()


def test_two_threads_painting_leave_the_widget_tracking_the_newest_training(data):
    import threading
    import time

    image, _, strokes = data
    w, rec = make_widget(image)
    for s in (strokes[0], strokes[-1]):  # one of each class
        w.session.add_stroke(**s)
    w.wait(120)
    assert w.session.is_trained
    original = w.session.train_async
    loop = w.session._train_loop
    started: list = []
    first = threading.Event()

    def slow_second_training(job):
        if len(started) > 1:
            time.sleep(1.0)  # the second painter's training is still running when the first one looks again
        return loop(job)

    w.session._train_loop = slow_second_training

    def slow_to_return(*args, **kwargs):
        future = original(*args, **kwargs)
        started.append(future)
        if len(started) == 1:
            first.set()
            time.sleep(0.3)  # the first painter is preempted between starting its training and recording it
        return future

    w.session.train_async = slow_to_return
    a = threading.Thread(target=lambda: w.add_stroke(1, [[5, 5]], radius=1))
    a.start()
    assert first.wait(10)
    b = threading.Thread(target=lambda: w.add_stroke(2, [[150, 180]], radius=1))
    b.start()
    a.join()
    b.join()
    w.wait(120)
    assert started[-1].done() and started[-1].result() is True  # the newest training ran to its end...
    assert w.session.is_trained and not w.session.needs_training  # ...on the newest labels
    assert w.status == "Ready" and not w.busy
    w.close()


def test_imported_labels_train_the_widget_and_are_listed_and_undone_like_strokes(data):
    image, truth, _ = data
    w, rec = make_widget(image)
    labels = np.zeros(truth.shape, np.uint8)
    labels[::7, ::7] = truth[::7, ::7]  # a sparse earlier annotation of both classes
    eid = w.session.import_labels(labels, source="earlier.tif")
    w.wait(120)
    (entry,) = w.strokes
    assert entry["id"] == eid and entry["kind"] == "import" and entry["source"] == "earlier.tif"
    assert entry["n_voxels"] == int((labels > 0).sum()) and "radius" not in entry
    assert w.session.is_trained and w.status == "Ready"
    assert (w.segmentation() == truth).mean() > 0.8
    w.handle_message({"type": "undo", "id": 7})
    assert rec.reply(7)[0] == {"type": "undo-reply", "id": 7, "changed": True}
    assert w.strokes == [] and not w.session.labels().any()
    w.close()


# --------------------------------------------------------------------------------------------- progress and stop


@pytest.fixture(scope="module")
def large():
    """An image of 3 x 3 prediction chunks (256 x 256 each)."""
    image, truth = synthetic_cells(shape=(768, 768), seed=4)
    return image, truth, simulated_strokes(truth, n_per_class=2, radius=2, seed=4)


def _slow_predictions(w, seconds):
    import time

    predict = w.session.predict

    def slow(region=None):
        time.sleep(seconds)
        return predict(region)

    w.session.predict = slow


def _trained_widget_with_slow_chunks(large, seconds):
    """A trained widget on the large image that predicts only the chunks asked for, each taking ``seconds`` more,
    and the keys of nine full-resolution prediction chunks."""
    image, _, strokes = large
    w, rec = make_widget(image, max_predict_pixels=256 * 256)  # too large to predict ahead: chunks when asked
    w.live = False
    for s in (strokes[0], strokes[-1]):
        w.session.add_stroke(**s)
    w.session.train()
    w.wait(60)
    _slow_predictions(w, seconds)
    layout = w.chunk_server.store.layout
    return w, rec, [f"predictions/{layout}/0/{i}.{j}.0" for i in range(3) for j in range(3)]


def test_progress_counts_prediction_chunks_and_the_status_says_how_many_are_left(large):
    import time

    w, rec, keys = _trained_widget_with_slow_chunks(large, 0.15)
    seen = []
    w.observe(lambda change: seen.append(dict(change["new"])), names="progress")
    w.handle_message({"type": "chunks", "id": 5, "keys": keys})
    time.sleep(0.5)
    assert w.busy and w.status.startswith("Predicting ") and " of 9 chunks" in w.status
    w.wait(60)
    assert rec.reply(5)[0]["type"] == "chunks-reply"
    assert seen[0]["total"] == 9 and seen[0]["done"] < 9 and seen[-1] == {}
    assert any(0 < p.get("done", 0) < 9 and p["seconds_left"] is not None for p in seen)
    assert w.progress == {} and not w.busy and w.status == "Ready"
    w.close()


def test_stop_ends_a_long_prediction_and_a_training(large):
    import time

    w, rec, keys = _trained_widget_with_slow_chunks(large, 0.3)  # 9 x 0.3 s if not stopped
    started = time.monotonic()
    w.handle_message({"type": "chunks", "id": 5, "keys": keys})
    time.sleep(0.4)
    w.handle_message({"type": "stop", "id": 6})
    assert rec.reply(6)[0] == {"type": "stop-reply", "id": 6}
    w.wait(60)
    assert time.monotonic() - started < 2.0  # stopped after the chunk under way, not after all nine
    reply = rec.reply(5)[0]
    assert reply["type"] == "error" and "Stopped" in reply["message"]
    assert not w.busy and w.status.startswith("Stopped") and w.progress == {}
    # the widget keeps working: a new request is answered
    w.session.predict = type(w.session).predict.__get__(w.session)
    w.handle_message({"type": "chunks", "id": 7, "keys": keys[:1]})
    w.wait(60)
    assert rec.reply(7)[0]["found"] == [True]
    # a training under way is stopped too: its model is not installed
    w.session.add_stroke(**large[2][1])
    gen = w.session.generation
    w.update_now()
    w.stop()
    w.wait(60)
    assert w.session.generation == gen and w.session.needs_training
    w.close()


def test_a_request_cancelled_while_it_runs_computes_no_further_chunk(large):
    import time

    w, rec, keys = _trained_widget_with_slow_chunks(large, 0.3)  # 9 x 0.3 s if not cancelled
    started = time.monotonic()
    w.handle_message({"type": "chunks", "id": 5, "keys": keys})
    time.sleep(0.4)
    w.handle_message({"type": "cancel", "id": 6, "ids": [5]})  # the browser left the view of these chunks
    w.wait(60)
    assert time.monotonic() - started < 2.0  # stopped after the chunk under way, not after all nine
    assert not w.busy and w.progress == {} and w.status == "Ready"
    w.handle_message({"type": "chunks", "id": 7, "keys": keys[:1]})  # other requests are answered
    w.wait(60)
    assert rec.reply(7)[0]["found"] == [True]
    w.close()


def test_a_chunk_read_that_returns_nonsense_is_answered_with_an_error_not_silence(data):
    image, _, _ = data
    w, rec = make_widget(image)
    w.chunk_server.read = lambda keys, after_each=None: True  # a broken reader (not a list of bytes)
    w.handle_message({"type": "chunks", "id": 9, "keys": ["raw/0/0.0"]})
    w.wait(30)
    content, _ = rec.reply(9)
    assert content["type"] == "error" and "Could not read chunks" in content["message"]
    w.close()
