"""The kernel's zarr key parser reads the keys of ``tests/chunk_key_cases.json`` as the cases say; the browser's parser
(``js/src/data/chunk_keys.ts``) is tested on the same file by ``js/test/chunk_keys.test.ts``, so the two agree."""

from __future__ import annotations

import json
import pathlib

import pytest

from ilastik_widget.serving.chunk_keys import BoxKey, ChunkKey, MetadataKey, array_path, parse_key

CASES = json.loads((pathlib.Path(__file__).parent / "chunk_key_cases.json").read_text(encoding="utf-8"))["cases"]
#: Keys the Python parser reads differently from the cases (and from the browser's parser), with the reason.
#: Keys the two parsers read differently, with the reason (none today: add one only with a strict xfail).
KNOWN_DIFFERENCES: dict[str, str] = {}


def as_json(parsed: ChunkKey | BoxKey | MetadataKey | None) -> dict | None:
    if parsed is None:
        return None
    if isinstance(parsed, ChunkKey):
        return {
            "type": "chunk",
            "array": parsed.array,
            "level": parsed.level,
            "index": list(parsed.index),
            "layout": parsed.layout,
        }
    if isinstance(parsed, BoxKey):
        box = [list(r) for r in parsed.box]
        return {"type": "box", "array": parsed.array, "level": parsed.level, "box": box, "layout": parsed.layout}
    return {
        "type": "metadata",
        "array": parsed.array,
        "name": parsed.name,
        "level": parsed.level,
        "layout": parsed.layout,
    }


def _case_param(case: dict):
    key = case["key"]
    marks: tuple = ()
    if isinstance(key, str) and key in KNOWN_DIFFERENCES:
        marks = (pytest.mark.xfail(reason=KNOWN_DIFFERENCES[key], strict=True),)
    return pytest.param(key, case["parsed"], id=repr(key)[:60], marks=marks)


def test_the_cases_cover_every_array_and_kind_and_malformed_keys():
    parsed = [c["parsed"] for c in CASES]
    assert {(p["type"], p["array"]) for p in parsed if p} == {
        (kind, array) for kind in ("chunk", "box", "metadata") for array in ("raw", "labels", "predictions", "objects")
    }
    assert sum(p is None for p in parsed) >= 30


@pytest.mark.parametrize(("key", "expected"), [_case_param(c) for c in CASES])
def test_parse_key_reads_each_case_as_expected(key, expected):
    parsed = parse_key(key)
    assert as_json(parsed) == expected
    if parsed is not None:
        assert str(parsed) == key  # written back, a parsed key is the key


@pytest.mark.parametrize(
    ("array", "layout"), [("predictions", None), ("objects", None), ("labels", 1), ("image", None)]
)
def test_array_path_refuses_what_names_no_array(array, layout):
    with pytest.raises(ValueError):
        array_path(array, layout)
