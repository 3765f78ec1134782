"""Writes ``js/src/protocol.ts`` from :mod:`ilastik_widget.widget.protocol`: the TypeScript types of every message
and the constants the browser shares with the kernel. ``tests/test_protocol.py`` fails when the committed file and
this output differ::

    python -m ilastik_widget.widget.protocol_typescript > js/src/protocol.ts
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from typing import Any

from ..core.limits import MAX_CLASSES, MAX_NAME_LENGTH
from ..serving.chunk_keys import MAX_KEY_LENGTH
from ..serving.layer_specs import DEFAULT_LAYER_SETTINGS, LAYER_NAMES
from . import protocol
from .protocol import (
    BRUSH_SIZE_MAX,
    BRUSH_SIZE_MIN,
    MAX_CANCEL_IDS,
    MAX_KEYS,
    MAX_STROKE_POINTS,
    MODES,
    REQUESTS,
    AddClassReply,
    ChangedReply,
    ChunksReply,
    ErrorReply,
    ExportReply,
    ObjectRowReply,
    ObjectsReply,
    Refresh,
    Reply,
    StrokeReply,
)

_TS_TYPES = {int: "number", float: "number", bool: "boolean", str: "string"}


def _ts_type(annotation: Any) -> str:
    """TypeScript type of a kernel message field's annotation."""
    hint = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation in _TS_TYPES:
        return _TS_TYPES[annotation]
    if hint is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"{_ts_type(args[0])}[]"
    if hint is dict:  # a table row: column -> value
        return "Record<string, number | string | boolean | null>"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " | ".join([*(_ts_type(a) for a in rest), "null"])
    raise TypeError(f"no TypeScript type for {annotation!r}")


def _ts_interface(name: str, type_literal: str, fields: list[tuple[str, str, bool]], doc: str | None) -> list[str]:
    lines = [f"/** {' '.join(doc.split())} */"] if doc else []
    lines.append(f"export interface {name} {{")
    lines.append(f"  type: {type_literal};")
    lines += [f"  {n}{'?' if optional else ''}: {t};" for n, t, optional in fields]
    lines.append("}")
    return lines


def _doc(cls: type) -> str | None:
    own = cls.__dict__.get("__doc__")
    return own if own and not own.startswith(cls.__name__ + "(") else None


def typescript() -> str:
    """The TypeScript module ``js/src/protocol.ts``: constants, request and kernel message types."""
    constants: list[tuple[str, Any, str]] = [
        ("MAX_CLASSES", MAX_CLASSES, "Most label classes of a session."),
        ("MAX_NAME_LENGTH", MAX_NAME_LENGTH, "Most characters of a class name."),
        ("MAX_KEYS", MAX_KEYS, "Chunk keys in one chunks or seen request."),
        ("MAX_KEY_LENGTH", MAX_KEY_LENGTH, "Characters of one chunk key."),
        ("MAX_CANCEL_IDS", MAX_CANCEL_IDS, "Request ids in one cancel request."),
        ("MAX_STROKE_POINTS", MAX_STROKE_POINTS, "Points in one stroke (longer strokes are thinned)."),
        ("BRUSH_SIZE_MIN", BRUSH_SIZE_MIN, "Smallest brush size (diameter in pixels)."),
        (
            "BRUSH_SIZE_MAX",
            BRUSH_SIZE_MAX,
            "Largest brush size (diameter in pixels); a stroke's radius is (size - 1) / 2.",
        ),
        ("MODES", list(MODES), "What the mouse does: paint, erase, or pan and zoom."),
        ("LAYER_NAMES", list(LAYER_NAMES), "The viewer's layers, in the order the panel lists them."),
        ("DEFAULT_LAYER_SETTINGS", DEFAULT_LAYER_SETTINGS, "Visibility and opacity of each layer in a new widget."),
    ]
    out = [
        "// Generated from ilastik_widget/widget/protocol.py by `python -m ilastik_widget.widget.protocol_typescript`: do not edit.",
        "// The browser <-> kernel messages and the constants the browser shares with the kernel.",
        "",
    ]
    for name, value, doc in constants:
        text = json.dumps(value, indent=2) if isinstance(value, dict) else json.dumps(value)
        suffix = " as const" if isinstance(value, (list, dict)) else ""
        out += [f"/** {doc} */", f"export const {name} = {text}{suffix};"]
    out += [
        "",
        "export type Mode = (typeof MODES)[number];",
        "export type LayerName = (typeof LAYER_NAMES)[number];",
        "",
    ]
    out.append("// ---- browser -> kernel")
    names = []
    for request in REQUESTS:
        name = request.__name__
        names.append(name)
        fields = [(f.name, f.metadata["check"].ts, f.metadata["check"].optional) for f in dataclasses.fields(request)]
        doc = _doc(request)
        if not request.REPLIED:
            doc = (doc + " " if doc else "") + "No reply."
        out += _ts_interface(name, json.dumps(request.TYPE), fields, doc)
        out.append("")
    out.append(f"export type Request = {' | '.join(names)};")
    silent = [json.dumps(r.TYPE) for r in REQUESTS if not r.REPLIED]
    out.append("/** The requests the kernel does not answer. */")
    out.append(f"export const NO_REPLY_TYPES = [{', '.join(silent)}] as const;")
    out.append("/** A request as the browser code writes it: the transport adds the id. */")
    out.append(
        'export type RequestBody = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;'
    )
    out.append("")
    out.append("// ---- kernel -> browser")
    hints_module = vars(protocol)
    specific = [
        (ChunksReply, '"chunks-reply"'),
        (StrokeReply, '"stroke-reply"'),
        (ChangedReply, '"undo-reply" | "redo-reply"'),
        (AddClassReply, '"add-class-reply"'),
        (ObjectsReply, '"objects-reply"'),
        (ObjectRowReply, '"object-row-reply"'),
        (ExportReply, '"export-reply"'),
    ]
    # every other request that is answered gets the plain Reply
    named = {part.strip() for _, literal in specific for part in literal.split("|")}
    plain = [
        json.dumps(f"{r.TYPE}-reply") for r in REQUESTS if r.REPLIED and json.dumps(f"{r.TYPE}-reply") not in named
    ]
    kernel_types = [*specific, (Reply, " | ".join(plain)), (ErrorReply, '"error"'), (Refresh, '"refresh"')]
    kernel_names = []
    for cls, literal in kernel_types:
        hints = typing.get_type_hints(cls, hints_module)
        fields = [
            (f.name, f.metadata.get("ts_type") or _ts_type(hints[f.name]), False)
            for f in dataclasses.fields(cls)
            if f.metadata.get("ts", True)
        ]
        out += _ts_interface(cls.__name__, literal, fields, _doc(cls))
        out.append("")
        kernel_names.append(cls.__name__)
    out.append(f"export type KernelMessage = {' | '.join(kernel_names)};")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(typescript())
