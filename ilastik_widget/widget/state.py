"""The session's state as the widget's traits show it to the browser (pure functions of the session and the server)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.features import FeatureSelection, feature_table
from ..serving.chunk_server import ChunkServer
from .protocol import BRUSH_SIZE_MAX, BRUSH_SIZE_MIN


def class_list(session: Any) -> list[dict[str, str]]:
    """The ``classes`` trait: ``[{"name", "color"}, ...]`` in label order."""
    return [{"name": str(c.name), "color": str(c.color).lower()} for c in session.classes]


def apply_feature_selection(session: Any, new: dict) -> None:
    """Make the session's feature selection ``new`` (a ``feature_selection`` trait value)."""
    session.feature_selection = FeatureSelection.from_dict(new)


def apply_class_list(session: Any, new: list[dict[str, str]]) -> None:
    """Make the session's classes ``new`` (a ``classes`` trait value): renames and recolours by position, then adds or
    removes classes at the end."""
    current = class_list(session)
    for label, (cur, want) in enumerate(zip(current, new), start=1):
        if cur["name"] != want["name"]:
            session.rename_class(label, want["name"])
        if cur["color"] != want["color"]:
            session.recolor_class(label, want["color"])
    for want in new[len(current) :]:
        session.add_class(want["name"], want["color"])
    for label in range(len(current), len(new), -1):
        session.remove_class(label)


def footprint_size(point: Any, radius: float, axes: Any) -> int:
    """Voxels across the footprint of one point of a stroke, the diameter it paints: the kernel paints the voxels of
    the stroke's plane (``axes``) whose centres (whole array coordinates) lie within ``radius`` of the point. The
    widest row or column of that disc. The browser's brush of odd size ``s`` (radius ``(s - 1) / 2``, its points on
    voxel centres) paints ``s``; a Python stroke of radius 2.5 through whole coordinates paints 5 across, not 6."""
    eps = 1e-6  # the rasteriser's tolerance of rounding
    p, q = (float(point[a]) for a in axes)
    widest = 0
    for centre, other in ((p, q), (q, p)):
        for row in range(math.ceil(centre - radius - eps), math.floor(centre + radius + eps) + 1):
            half = math.sqrt(max(0.0, radius * radius - (row - centre) ** 2))
            widest = max(widest, math.floor(other + half + eps) - math.ceil(other - half - eps) + 1)
    return max(1, widest)


def stroke_summaries(session: Any) -> list[dict[str, Any]]:
    """The ``strokes`` trait: per label entry its id, kind ("stroke" or "import"), class (0 when an import holds
    several), centre and bounds (array order); strokes also their brush radius and size (the diameter painted, see
    :func:`footprint_size`), imports their source and voxel count."""
    annotations = session.annotations
    out = []
    for s in annotations.strokes:
        bounds = [[int(b.start), int(b.stop)] for b in annotations.stroke_bounds(s.id)]
        summary: dict[str, Any] = {
            "id": int(s.id),
            "kind": s.kind,
            "label": int(s.label),
            "erase": bool(s.erase),
            "bounds": bounds,
            "center": [round((lo + hi - 1) / 2, 2) for lo, hi in bounds],
        }
        if s.kind == "import":
            summary.update(source=str(s.source), n_voxels=int(s.n_voxels))
        else:
            ndim = len(session.spatial_shape)
            points = np.asarray(s.points, dtype=np.float64).reshape(-1, ndim)
            axes = tuple(s.axes) if s.axes else tuple(range(ndim))[-2:]
            summary.update(
                radius=float(s.radius),
                size=footprint_size(points[0], float(s.radius), axes),
                n_points=len(points),
                center=[round(float(c), 2) for c in points.mean(axis=0)],
                axes=[int(a) for a in (s.axes or ())],
            )
        out.append(summary)
    return out


def source_info(session: Any, server: ChunkServer) -> dict[str, Any]:
    """The ``source_info`` trait: what the viewer needs to open the image (shape, layer specs, the zarr metadata it
    reads first, so no round trip precedes the first chunks) and what the panel builds its inputs from."""
    image = session.image
    shape = [int(s) for s in session.spatial_shape]
    return {
        "shape": shape,
        "dtype": str(np.dtype(image.dtype)),
        "ndim": len(shape),
        "channels": int(session.n_input_channels),
        "axes": ["z", "y", "x"][-len(shape) :],
        "sources": server.sources(),
        "layer_specs": server.layer_specs(),
        "chunk_shape": list(server.chunk_shape),
        "metadata": server.metadata(),
        "feature_table": feature_table(),
        "brush_size": {"min": BRUSH_SIZE_MIN, "max": BRUSH_SIZE_MAX},
        "display": display_info(server),
    }


def display_info(server: ChunkServer) -> dict[str, Any]:
    """What the panel's contrast and channel controls are built from: the raw layer's data type, how it shows the
    channels (``"grey"``, ``"rgb"`` or ``"composite"``), how many it shows, each one's automatic window (``auto``,
    what ``reset_contrast()`` restores) and histogram (:func:`~ilastik_widget.serving.contrast.histogram`, from the
    sample of the automatic window)."""
    reader = server.store.raw_reader
    mode = "grey" if reader.channels is None else "rgb" if reader.rgb else "composite"
    return {
        "dtype": str(reader.dtype),
        "mode": mode,
        "channels": reader.channels or 1,
        "auto": [[float(lo), float(hi)] for lo, hi in reader.display_ranges()],
        "histograms": reader.histograms(),
    }
