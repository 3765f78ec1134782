"""The viewer's layers as Neuroglancer layer JSON: sources, transforms and shaders, built from the chunk store and the
session's classes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.colors import rgb01
from .chunk_keys import array_path
from .chunk_store import ChunkStore
from .pyramid import AXIS_NAMES

#: The layer of the last objects (a Neuroglancer segmentation layer, present once objects were computed).
OBJECTS_LAYER = "objects"
#: The viewer's layers, in the order the panel lists them.
LAYER_NAMES = ("raw", "labels", "probabilities", "segmentation", "uncertainty", OBJECTS_LAYER)
#: The layers that show the predictions array.
PREDICTION_LAYERS = ("probabilities", "segmentation", "uncertainty")
#: Visibility and opacity of each layer in a new widget (the objects layer's opacity is its segments' alpha,
#: Neuroglancer's ``selectedAlpha``).
DEFAULT_LAYER_SETTINGS: dict[str, dict[str, Any]] = {
    "raw": {"visible": True, "opacity": 1.0},
    "labels": {"visible": True, "opacity": 0.8},
    "probabilities": {"visible": True, "opacity": 0.5},
    "segmentation": {"visible": False, "opacity": 0.5},
    "uncertainty": {"visible": False, "opacity": 0.7},
    OBJECTS_LAYER: {"visible": True, "opacity": 0.5},
}
OBJECTS_LAYER_SETTINGS = DEFAULT_LAYER_SETTINGS[OBJECTS_LAYER]


def _vec3(rgb: Sequence[float]) -> str:
    return "vec3(" + ", ".join(f"{v:.4f}" for v in rgb) + ")"


#: Colours of the channels of a multichannel image, in order (magenta and green for two, as fluorescence viewers do).
CHANNEL_COLORS = ("#ff00ff", "#00ff00", "#00ffff", "#ffff00", "#ff8000", "#0080ff", "#ff0080", "#80ff00")


def raw_shader(channels: int | None, rgb: bool = False) -> str:
    """The raw layer's shader: grey for one channel, RGB colour, or a composite where channel i adds ``color<i>``
    scaled by its window ``contrast<i>`` when ``visible<i>``. Windows, colours and visibility are shader controls,
    so the panel changes them without a new shader."""
    if channels is None:
        return "#uicontrol invlerp contrast0\nvoid main() { emitGrayscale(contrast0()); }\n"
    lines = [f"#uicontrol invlerp contrast{i}(channel=[{i}])" for i in range(channels)]
    if rgb:
        lines += ["void main() {", "  emitRGB(vec3(contrast0(), contrast1(), contrast2()));", "}"]
        return "\n".join(lines) + "\n"
    for i in range(channels):
        lines += [
            f'#uicontrol vec3 color{i} color(default="{CHANNEL_COLORS[i % len(CHANNEL_COLORS)]}")',
            f"#uicontrol bool visible{i} checkbox(default=true)",
        ]
    lines += ["void main() {", "  vec3 rgb = vec3(0.0);"]
    lines += [f"  if (visible{i}) rgb += color{i} * contrast{i}();" for i in range(channels)]
    lines += ["  emitRGB(min(rgb, vec3(1.0)));", "}"]
    return "\n".join(lines) + "\n"


def raw_controls(
    channels: int | None,
    ranges: Sequence[Sequence[float]],
    rgb: bool = False,
    colors: Sequence[str] | None = None,
    visible: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The raw shader's control values: each channel's window (``ranges``), and for a composite its colour and
    visibility."""
    out: dict[str, Any] = {}
    for i, (lo, hi) in enumerate(ranges):
        out[f"contrast{i}"] = {"range": [float(lo), float(hi)], **({} if channels is None else {"channel": [i]})}
        if channels is not None and not rgb:
            out[f"color{i}"] = (colors or CHANNEL_COLORS)[i % len(colors or CHANNEL_COLORS)]
            out[f"visible{i}"] = True if visible is None else bool(visible[i])
    return out


def labels_shader(colors: Sequence[Sequence[float]]) -> str:
    """The labels layer's shader: label i in ``colors[i - 1]`` (RGB from 0 to 1), unlabelled pixels
    transparent, a label without a colour white."""
    lines = ["void main() {", "  uint v = toRaw(getDataValue());", "  if (v == 0u) { emitTransparent(); return; }"]
    for i, rgb in enumerate(colors, start=1):
        lines.append(f"  if (v == {i}u) {{ emitRGBA(vec4({_vec3(rgb)}, 1.0)); return; }}")
    lines += ["  emitRGBA(vec4(1.0, 1.0, 1.0, 1.0));", "}"]
    return "\n".join(lines) + "\n"


def probabilities_shader(colors: Sequence[Sequence[float]], n: int) -> str:
    """The probabilities layer's shader for ``n`` classes in ``colors`` (RGB from 0 to 1): a blend of the classes'
    colours."""
    # Each class in its colour, weighted by its probability squared (a confident class shows its own colour rather than
    # a blend); opacity grows from 0 at chance level (1/n) to 1 at certainty.
    lines = ["void main() {", "  vec3 color = vec3(0.0);", "  float weight = 0.0;", "  float best = 0.0;"]
    for i in range(n):
        rgb = colors[i % len(colors)]
        lines += [
            f"  float p{i} = toNormalized(getDataValue({i}));",
            f"  color += p{i} * p{i} * {_vec3(rgb)};",
            f"  weight += p{i} * p{i};",
            f"  best = max(best, p{i});",
        ]
    chance = 1.0 / max(n, 1)
    lines += [
        "  if (weight <= 0.0) { emitTransparent(); return; }",
        f"  float alpha = clamp((best - {chance:.6f}) / {max(1e-6, 1.0 - chance):.6f}, 0.0, 1.0);",
        "  emitRGBA(vec4(color / weight, alpha));",
        "}",
    ]
    return "\n".join(lines) + "\n"


def segmentation_shader(colors: Sequence[Sequence[float]], n: int) -> str:
    """The segmentation layer's shader for ``n`` classes: every pixel in the colour of its most
    probable class (transparent before any prediction)."""
    lines = ["void main() {", "  float best = 0.0;", "  vec3 color = vec3(0.0);"]
    for i in range(n):
        rgb = colors[i % len(colors)]
        lines += [
            f"  float p{i} = toNormalized(getDataValue({i}));",
            f"  if (p{i} > best) {{ best = p{i}; color = {_vec3(rgb)}; }}",
        ]
    lines += ["  if (best <= 0.0) { emitTransparent(); return; }", "  emitRGBA(vec4(color, 1.0));", "}"]
    return "\n".join(lines) + "\n"


def uncertainty_shader(n: int) -> str:
    """The uncertainty layer's shader for ``n`` classes: one minus the margin between the two
    most probable classes, violet (some doubt) to white (a toss-up), transparent where the classifier is sure."""
    lines = ["void main() {", "  float first = 0.0;", "  float second = 0.0;"]
    for i in range(n):
        lines += [
            f"  float p{i} = toNormalized(getDataValue({i}));",
            f"  if (p{i} > first) {{ second = first; first = p{i}; }} else if (p{i} > second) {{ second = p{i}; }}",
        ]
    lines += [
        "  if (first <= 0.0) { emitTransparent(); return; }",
        "  float u = 1.0 - (first - second);",
        # violet (some doubt) to white (a toss-up), transparent where the classifier is sure
        "  emitRGBA(vec4(mix(vec3(0.55, 0.0, 1.0), vec3(1.0), u * u), u));",
        "}",
    ]
    return "\n".join(lines) + "\n"


def source_urls(widget_id: str, store: ChunkStore) -> dict[str, str]:
    """Neuroglancer source URL per layer name: the widget's ``mem://`` kvstore with the zarr v2 data source (2D) or
    the precomputed one (volumes); ``objects`` only when there are objects."""
    scheme = "zarr2" if store.format == "zarr" else "neuroglancer-precomputed"
    raw, labels, predictions = (
        f"mem://{widget_id}/{path}/|{scheme}:" for path in ("raw", "labels", array_path("predictions", store.layout))
    )
    urls = {"raw": raw, "labels": labels, **dict.fromkeys(PREDICTION_LAYERS, predictions)}
    if store.objects.present:
        urls[OBJECTS_LAYER] = f"mem://{widget_id}/{array_path('objects', store.objects.version)}/|{scheme}:"
    return urls


def _source(store: ChunkStore, url: str, channels: bool = False) -> str | dict:
    """The layer source: the URL plus a transform whose output dimensions are named by the array's axes with the
    relative voxel sizes as scales and no unit, as every layer of the viewer shares them; a zarr channel axis (OME's
    ``c``, Neuroglancer's local dimension ``c'``) becomes the channel dimension ``c^``, so shaders read every channel
    with ``getDataValue(i)`` (precomputed names its channel dimension ``c^`` already)."""
    scales = store.display_scales()
    if store.format == "precomputed":
        # Neuroglancer's precomputed model is x, y, z (then c^) in metres (the info's nanometres): input dimensions
        # in that order with the output's scales and no unit make one model unit (one full-resolution voxel) one
        # output unit, and the identity matrix keeps voxel i on [i, i + 1), as the zarr layers place it.
        names = tuple(reversed(AXIS_NAMES[store.ndim])) + (("c^",) if channels else ())
        values = tuple(reversed(scales)) + ((1.0,) if channels else ())
        dims = {name: [v, ""] for name, v in zip(names, values)}
        return {"url": url, "transform": {"inputDimensions": dims, "outputDimensions": dict(dims)}}
    if not channels and all(v == 1.0 for v in scales):
        return url
    out: dict[str, list] = {name: [v, ""] for name, v in zip(AXIS_NAMES[store.ndim], scales)}
    if channels:
        out["c^"] = [1, ""]
    return {"url": url, "transform": {"outputDimensions": out}}


def objects_layer_spec(url: str, store: ChunkStore) -> dict:
    """The objects layer: a Neuroglancer segmentation layer (every object in its own random colour, 0 transparent;
    with no segment selected, Neuroglancer shows them all at ``selectedAlpha``)."""
    return {
        "type": "segmentation",
        "name": OBJECTS_LAYER,
        "source": _source(store, url),
        "selectedAlpha": OBJECTS_LAYER_SETTINGS["opacity"],
        "notSelectedAlpha": 0.0,
        "hideSegmentZero": True,
        "segments": [],
    }


def layer_specs(widget_id: str, store: ChunkStore, raw_spec: Any = None) -> list[dict]:
    """Neuroglancer layer JSON for raw, probabilities, segmentation, uncertainty, objects (when there are any) and
    labels, in drawing order (layers are drawn in list order: raw, then predictions and objects, labels on top).

    ``raw_spec(kernel_spec)`` may replace the raw layer's spec (the browser loading an image from its URL).
    """
    urls = source_urls(widget_id, store)
    colors = [rgb01(c.color) for c in store.session.classes] or [(1.0, 1.0, 1.0)]
    n = store.n_classes
    reader = store.raw_reader
    raw = {
        "type": "image",
        "name": "raw",
        "source": _source(store, urls["raw"], channels=reader.channels is not None),
        "opacity": 1.0,
        "shader": raw_shader(reader.channels, reader.rgb),
        "shaderControls": raw_controls(reader.channels, reader.display_ranges(), reader.rgb),
    }
    if raw_spec is not None:
        raw = raw_spec(raw)
    shaders = {
        "probabilities": probabilities_shader(colors, n),
        "segmentation": segmentation_shader(colors, n),
        "uncertainty": uncertainty_shader(n),
    }
    predictions = [
        {
            "type": "image",
            "name": name,
            "source": _source(store, urls[name], channels=True),
            "opacity": DEFAULT_LAYER_SETTINGS[name]["opacity"],
            **({} if DEFAULT_LAYER_SETTINGS[name]["visible"] else {"visible": False}),
            "shader": shaders[name],
        }
        for name in PREDICTION_LAYERS
    ]
    labels = {
        "type": "image",
        "name": "labels",
        "source": _source(store, urls["labels"]),
        "opacity": DEFAULT_LAYER_SETTINGS["labels"]["opacity"],
        "shader": labels_shader(colors),
    }
    objects = [objects_layer_spec(urls[OBJECTS_LAYER], store)] if OBJECTS_LAYER in urls else []
    return [raw, *predictions, *objects, labels]
