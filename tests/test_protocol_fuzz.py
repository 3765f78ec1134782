"""Property tests of the browser message parser and a soak test of a live widget under thousands of random messages.

Whatever a browser (or anything speaking to the comm) sends, the parser returns a typed request or raises
MessageError naming the problem; the widget answers every message that carries an id, never lets an exception out of
the comm handler, and keeps exactly the labels of the strokes it accepted.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilastik_widget.core.session import Session
from ilastik_widget.datasets import synthetic_cells
from ilastik_widget.widget import protocol as p
from ilastik_widget.widget.widget import IlastikWidget

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400)])  # JSON integers beyond float range
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = (
    "id",
    "keys",
    "ids",
    "label",
    "radius",
    "points",
    "erase",
    "axes",
    "stroke_id",
    "name",
    "color",
    "layer",
    "url",
    "message",
    "threshold",
    "position",
    "object",
    "path",
    "region",
)


@st.composite
def messages(draw):
    """Mostly well-formed-looking messages of every type, with random values in random fields."""
    kind = draw(st.sampled_from([*p.REQUEST_TYPES, "nonsense", 7, None]))
    out = {"type": kind} if kind is not None else {}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        out[name] = draw(JSON)
    if draw(st.booleans()):
        out["id"] = draw(st.integers(-5, 2**60))
    return out


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from([None, 2, 3]), st.sampled_from([None, 1, 2, 64]))
def test_the_parser_returns_a_request_or_a_message_error_and_nothing_else(content, ndim, n_classes):
    try:
        request = p.parse_message(content, ndim=ndim, n_classes=n_classes)
    except p.MessageError as exc:
        assert exc.message and isinstance(exc.message, str)
        assert exc.id is None or exc.id == content.get("id")
        return
    assert isinstance(request, p.Request) and content["type"] == request.TYPE


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=3), max_size=5))
def test_stroke_points_are_finite_and_sized_or_refused(points):
    content = {"type": "stroke", "id": 1, "label": 1, "radius": 2, "points": points}
    try:
        request = p.parse_message(content, ndim=2)
    except p.MessageError:
        return
    assert np.isfinite(request.points).all() and request.points.shape[1] == 2


class Recorder:
    def __init__(self):
        self.sent = []

    def __call__(self, content, buffers=None):
        json.dumps(content)  # every message the kernel sends is JSON
        self.sent.append(content)


def _random_message(rng, shape, n_strokes_seen, msg_id):
    """One message of the mix a confused or hostile page might send."""
    kind = rng.choice(
        [
            "stroke",
            "stroke",
            "stroke",
            "undo",
            "redo",
            "remove-stroke",
            "chunks",
            "seen",
            "cancel",
            "update-now",
            "rename-class",
            "recolor-class",
            "garbage",
            "stop",
        ]
    )
    if kind == "stroke":
        n = int(rng.integers(1, 6))
        bad = rng.random() < 0.2
        points = rng.uniform(-20, max(shape) + 20, (n, 2)) if bad else rng.uniform(0, min(shape) - 1, (n, 2))
        return {
            "type": "stroke",
            "id": msg_id,
            "label": int(rng.integers(0, 4)),
            "radius": float(rng.uniform(0, 8)),
            "erase": bool(rng.random() < 0.15),
            "points": points.tolist(),
        }
    if kind == "remove-stroke":
        return {"type": "remove-stroke", "id": msg_id, "stroke_id": int(rng.integers(0, n_strokes_seen + 3))}
    if kind == "chunks":
        keys = ["raw/0/0.0", "labels/0/0.0", "predictions/0/0/0.0.0", "raw/9/9.9", "../etc/passwd", "x" * 600]
        return {"type": "chunks", "id": msg_id, "keys": [keys[int(i)] for i in rng.integers(0, 6, rng.integers(0, 4))]}
    if kind == "seen":
        return {"type": "seen", "id": msg_id, "keys": ["labels/0/0.0", 3]}
    if kind == "cancel":
        return {"type": "cancel", "id": msg_id, "ids": [int(rng.integers(0, 10))]}
    if kind == "rename-class":
        return {"type": "rename-class", "id": msg_id, "label": int(rng.integers(0, 4)), "name": "  "}
    if kind == "recolor-class":
        return {"type": "recolor-class", "id": msg_id, "label": 1, "color": str(rng.choice(["#00ff00", "green"]))}
    if kind == "garbage":
        garbage = [None, [], "stroke", {"type": "stroke"}, {"id": msg_id}, {"type": "undo", "id": -1}]
        return garbage[int(rng.integers(len(garbage)))]
    return {"type": kind, "id": msg_id}


def test_a_live_widget_survives_two_thousand_random_messages_and_keeps_exactly_the_accepted_strokes():
    image, _ = synthetic_cells((96, 112), seed=11)
    w = IlastikWidget(
        image,
        features={"features": {"gaussian_smoothing": [1.0], "difference_of_gaussians": [1.6]}},
        classifier={"n_estimators": 5},
    )
    rec = Recorder()
    w.send = rec
    rng = np.random.default_rng(2026)
    expected = set()
    for i in range(2000):
        msg = _random_message(rng, image.shape, len(w.session.strokes), i)
        try:  # what the protocol says about this message: answered unless it is a valid request without reply
            request = p.parse_message(msg, ndim=2, n_classes=2)
            if request.REPLIED:
                expected.add(i)
        except p.MessageError as exc:
            if exc.id is not None:
                expected.add(exc.id)
        w.handle_message(msg)  # raises nothing, whatever it is
        if i % 400 == 399:
            w.wait(120)
    w.wait(120)
    # every answered message got exactly one answer (a reply or an error), and nothing else was answered
    answers = [m for m in rec.sent if m.get("type") != "refresh"]
    assert all(m["type"] == "error" or m["type"].endswith("-reply") for m in answers)
    ids = [m["id"] for m in answers if m.get("id") is not None]
    assert sorted(ids) == sorted(expected) and len(expected) > 1000
    # the labels are exactly those of the strokes the session holds, replayed on a fresh session
    fresh = Session(image)
    for s in w.session.strokes:
        fresh.add_stroke(s.label, s.points, radius=s.radius, axes=s.axes, erase=s.erase)
    np.testing.assert_array_equal(fresh.labels(), w.session.labels())
    assert not w.busy or w.status.startswith("Predicting")
    w.close()
