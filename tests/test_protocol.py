"""The message protocol is defined once, in Python: the TypeScript types the browser code uses are generated from it,
and these tests fail when the committed ``js/src/protocol.ts`` drifts from the Python definitions."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys

import pytest

from ilastik_widget.widget import protocol as p
from ilastik_widget.widget.protocol_typescript import typescript

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_committed_typescript_is_what_the_python_protocol_generates():
    committed = (ROOT / "js" / "src" / "protocol.ts").read_text(encoding="utf-8")
    assert committed == typescript(), (
        "js/src/protocol.ts is out of date: run `python -m ilastik_widget.widget.protocol_typescript > "
        "js/src/protocol.ts`"
    )


def test_the_generator_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "ilastik_widget.widget.protocol_typescript"], capture_output=True, text=True, check=True
    )
    assert done.stdout == typescript()


def test_every_request_type_and_field_is_in_the_typescript():
    text = typescript()
    for request in p.REQUESTS:
        assert f'export interface {request.__name__} {{\n  type: "{request.TYPE}";' in text
        for f in dataclasses.fields(request):
            check = f.metadata["check"]
            assert f"  {f.name}{'?' if check.optional else ''}: {check.ts};" in text, (request.__name__, f.name)


def test_constants_shared_with_the_browser_come_from_their_one_definition():
    from ilastik_widget.core.limits import MAX_CLASSES, MAX_NAME_LENGTH
    from ilastik_widget.serving.layer_specs import LAYER_NAMES

    text = typescript()
    assert f"export const MAX_CLASSES = {MAX_CLASSES};" in text
    assert f"export const MAX_NAME_LENGTH = {MAX_NAME_LENGTH};" in text
    assert f"export const BRUSH_SIZE_MAX = {p.BRUSH_SIZE_MAX};" in text
    assert "export const LAYER_NAMES = " + str(list(LAYER_NAMES)).replace("'", '"') + " as const;" in text


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            p.Refresh(("labels",), ("labels/0/0.0",), ()),
            {"type": "refresh", "layers": ["labels"], "keys": ["labels/0/0.0"], "missing": []},
        ),
        (p.ChunksReply(3, (True, False)), {"type": "chunks-reply", "id": 3, "found": [True, False]}),
        (p.ChangedReply(4, False, "redo"), {"type": "redo-reply", "id": 4, "changed": False}),
        (p.Reply(5, "rename-class"), {"type": "rename-class-reply", "id": 5}),
        (p.ErrorReply(None, "bad"), {"type": "error", "id": None, "message": "bad"}),
    ],
)
def test_kernel_messages_as_json(message, expected):
    assert message.to_json() == expected


def test_a_coordinate_too_large_for_a_float_is_a_message_error_naming_the_field():
    with pytest.raises(p.MessageError) as info:
        p.parse_message({"type": "stroke", "id": 1, "label": 1, "radius": 2, "points": [[10**400, 1]]}, ndim=2)
    assert info.value.id == 1 and "point coordinates" in info.value.message
    with pytest.raises(p.MessageError) as info:
        p.parse_message({"type": "stroke", "id": 2, "label": 1, "radius": 10**400, "points": [[1, 1]]}, ndim=2)
    assert "'radius'" in info.value.message
