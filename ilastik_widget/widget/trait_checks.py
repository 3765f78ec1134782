"""Checks of the widget's traits: each returns the value to store or raises ``TraitError`` saying what is wrong.

The same checks run for values set from Python and from the browser (a rejected browser value is reverted there and
named in the widget's ``error``).
"""

from __future__ import annotations

import json
from typing import Any

import traitlets as t

from ..core.features import FeatureSelection
from ..core.json_numbers import is_finite_number
from ..core.limits import MAX_CLASSES
from ..serving.layer_specs import DEFAULT_LAYER_SETTINGS, LAYER_NAMES
from .protocol import BRUSH_SIZE_MAX, BRUSH_SIZE_MIN, MODES, MessageError, check_color, check_float, check_name

MAX_VIEWER_STATE_BYTES = 64 * 1024
HEIGHT_MIN, HEIGHT_MAX = 200, 4000


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def height(value: Any) -> int:
    """The widget's height: a whole number of pixels from :data:`HEIGHT_MIN` to :data:`HEIGHT_MAX`."""
    if not _whole(value) or not HEIGHT_MIN <= value <= HEIGHT_MAX:
        raise t.TraitError(f"height must be a number of pixels from {HEIGHT_MIN} to {HEIGHT_MAX}, not {value!r}")
    return int(value)


def brush_size(value: Any) -> int:
    """The brush's diameter: a whole number of pixels from ``BRUSH_SIZE_MIN`` to ``BRUSH_SIZE_MAX``."""
    if not _whole(value) or not BRUSH_SIZE_MIN <= value <= BRUSH_SIZE_MAX:
        raise t.TraitError(
            f"brush_size (the brush's diameter in pixels) must be a whole number from {BRUSH_SIZE_MIN} to "
            f"{BRUSH_SIZE_MAX}, not {value!r}"
        )
    return int(value)


def active_class(value: Any, n_classes: int) -> int:
    """The class the brush paints: a class number from 1 to ``n_classes``."""
    if not _whole(value) or not 1 <= value <= max(1, n_classes):
        raise t.TraitError(f"active_class must be a class number from 1 to {n_classes}, not {value!r}")
    return int(value)


def mode(value: Any) -> str:
    """What the mouse does: one of ``MODES`` (``"paint"``, ``"erase"``, ``"navigate"``)."""
    if value not in MODES:
        raise t.TraitError(f"mode must be one of {', '.join(MODES)}, not {value!r}")
    return str(value)


def classes(value: Any) -> list[dict[str, str]]:
    """The classes as ``[{"name", "color"}, ...]``: at least one and at most ``MAX_CLASSES``, each name and
    colour checked."""
    if not isinstance(value, list) or not value:
        raise t.TraitError("there must be at least one class")
    if len(value) > MAX_CLASSES:
        raise t.TraitError(f"at most {MAX_CLASSES} classes")
    out = []
    for i, c in enumerate(value, start=1):
        if not isinstance(c, dict):
            raise t.TraitError(f"class {i} must be a dict with 'name' and 'color', not {c!r}")
        try:
            out.append(
                {
                    "name": check_name(c.get("name"), f"name of class {i}"),
                    "color": check_color(c.get("color"), f"color of class {i}"),
                }
            )
        except MessageError as exc:
            raise t.TraitError(exc.message) from None
    return out


def feature_selection(value: Any) -> dict:
    """A feature selection in its dict form, checked and normalised through
    :class:`~ilastik_widget.core.features.FeatureSelection`."""
    try:
        selection = FeatureSelection.from_dict(value)
    except Exception as exc:
        raise t.TraitError(f"feature_selection is not valid: {exc}") from None
    return selection.to_dict()


def layers(value: Any, current: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Layer settings: only the named layers and settings change, the others keep their values."""
    if not isinstance(value, dict):
        raise t.TraitError("layers must be a dict of layer name -> {visible, opacity}")
    out = {k: dict(v) for k, v in (current or DEFAULT_LAYER_SETTINGS).items()}
    for name, settings in value.items():
        if name not in LAYER_NAMES:
            raise t.TraitError(f"unknown layer {name!r}; layers are {', '.join(LAYER_NAMES)}")
        if not isinstance(settings, dict):
            raise t.TraitError(f"settings of layer {name!r} must be a dict with 'visible' and 'opacity'")
        unknown = set(settings) - {"visible", "opacity"}
        if unknown:
            raise t.TraitError(f"layer {name!r} has unknown settings {sorted(unknown)}")
        entry = out.setdefault(name, dict(DEFAULT_LAYER_SETTINGS[name]))
        if "visible" in settings:
            if not isinstance(settings["visible"], bool):
                raise t.TraitError(f"'visible' of layer {name!r} must be true or false")
            entry["visible"] = settings["visible"]
        if "opacity" in settings:
            try:
                entry["opacity"] = check_float(settings["opacity"], f"opacity of {name}", 0.0, 1.0)
            except MessageError as exc:
                raise t.TraitError(exc.message) from None
    return out


def viewer_state(value: Any, ndim: int) -> dict:
    """The viewer's state: plain JSON of at most :data:`MAX_VIEWER_STATE_BYTES` whose ``position``
    (at least ``ndim`` finite numbers), zoom scales (positive, finite) and ``layout``, where present, are valid."""
    if not isinstance(value, dict):
        raise t.TraitError("viewer_state must be a dict")
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise t.TraitError(f"viewer_state must be plain JSON data: {exc}") from None
    if len(text) > MAX_VIEWER_STATE_BYTES:
        raise t.TraitError(f"viewer_state is too large ({len(text)} bytes)")
    if "position" in value:
        pos = value["position"]
        if not isinstance(pos, list) or len(pos) < ndim or not all(is_finite_number(p) for p in pos):
            raise t.TraitError(f"viewer_state['position'] must be a list of {ndim} finite numbers, not {pos!r}")
    for key in ("crossSectionScale", "projectionScale"):
        if key in value:
            v = value[key]
            if not (is_finite_number(v) and v > 0):
                raise t.TraitError(f"viewer_state[{key!r}] must be a positive finite number, not {v!r}")
    if "layout" in value and not isinstance(value["layout"], (str, dict)):
        raise t.TraitError("viewer_state['layout'] must be a layout name such as 'xy' or '4panel'")
    return value


#: The traits checked here.
CHECKED = ("height", "brush_size", "active_class", "mode", "classes", "feature_selection", "layers", "viewer_state")


def check(name: str, value: Any, widget: Any) -> Any:
    """The checked value of trait ``name`` of ``widget`` (some checks depend on the widget's other traits)."""
    if name == "active_class":
        return active_class(value, len(widget.classes) or 1)
    if name == "layers":
        return layers(value, widget.layers)
    if name == "viewer_state":
        return viewer_state(value, len(widget.session.spatial_shape))
    return {
        "height": height,
        "brush_size": brush_size,
        "mode": mode,
        "classes": classes,
        "feature_selection": feature_selection,
    }[name](value)
