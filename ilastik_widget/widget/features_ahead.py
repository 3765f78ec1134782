"""The features of the planes a volume's panels show, computed while the user paints the first class.

The first training on a volume needs the exact 3D features of the planes its strokes lie in, and the predictions after
it those of the three planes the panels show: on a 120x512x512 volume about half a second of the kernel's time, which
would start only when the strokes of a second class arrive. Once the user has painted (any stroke) and the view is still
(:data:`DELAY` after the last change of ``viewer_state`` or of the labels), and while the session has no model, the
widget computes them ahead with :meth:`~ilastik_widget.core.session.Session.prepare_features`; a stroke made meanwhile
waits for that computation instead of starting its own. Nothing is computed for a view that is only browsed (a remote
volume would be read around every plane looked at), and with a model the panels' prediction requests compute the
features of what they show.

The planes are those through ``viewer_state["position"]`` (voxel ``floor(p + 0.5)`` per axis, array order) of the
cross-section panels of ``viewer_state["layout"]``: ``xy`` cuts axis 0, ``xz`` axis 1, ``yz`` axis 2. Of each plane only
the tile (:data:`~ilastik_widget.core.feature_store.PLANE_TILE` square, the unit the feature cache keeps) under the
position is computed: the whole plane of a volume up to 512 x 512 in the plane, and a bounded amount of work and
memory on larger ones. Rotated views (a ``crossSectionOrientation`` other than the identity) show no axis-aligned
plane, and 2D images compute their features fast enough at the first stroke: neither is computed ahead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..core.feature_store import PLANE_TILE
from ..core.json_numbers import is_finite_number
from .debounce import Debounced

if TYPE_CHECKING:
    from .widget import IlastikWidget

#: Seconds between the last change of the view and the computation.
DELAY = 0.3
#: The array axis each cross-section panel cuts.
PANEL_AXIS = {"xy": 0, "xz": 1, "yz": 2}
IDENTITY = (0.0, 0.0, 0.0, 1.0)


def panels_of(layout: Any) -> list[str]:
    """The cross-section panels (``xy``, ``xz``, ``yz``) a Neuroglancer layout name shows; all three for one not
    known (or not a name)."""
    if not isinstance(layout, str) or layout.startswith("4panel"):
        return list(PANEL_AXIS)
    shown = [p for p in layout.split("-") if p in PANEL_AXIS]
    return shown if shown or layout == "3d" else list(PANEL_AXIS)


def planes_in_view(viewer_state: Any, shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """For each cross-section panel of the view of a volume of ``shape``, the tile of its plane through the position
    (see the module docstring); none when the state has no valid position or the view is rotated."""
    if not isinstance(viewer_state, dict) or len(shape) != 3:
        return []
    position = viewer_state.get("position")
    if not isinstance(position, list) or len(position) != 3 or not all(is_finite_number(p) for p in position):
        return []
    orientation = viewer_state.get("crossSectionOrientation")
    if orientation is not None and (
        not isinstance(orientation, list)
        or len(orientation) != 4
        or any(not _near(a, b) for a, b in zip(orientation, IDENTITY))
    ):
        return []
    voxel = [min(max(int(math.floor(p + 0.5)), 0), n - 1) for p, n in zip(position, shape)]
    out = []
    for panel in panels_of(viewer_state.get("layout")):
        axis = PANEL_AXIS[panel]
        region = []
        for a, (v, n) in enumerate(zip(voxel, shape)):
            if a == axis:
                region.append(slice(v, v + 1))
            else:
                start = v // PLANE_TILE * PLANE_TILE
                region.append(slice(start, min(start + PLANE_TILE, n)))
        out.append(tuple(region))
    return out


def _near(a: Any, b: float) -> bool:
    return is_finite_number(a) and abs(float(a) - b) < 1e-6


class FeaturesAhead:
    """Computes the features of a widget's planes in view ahead of its first training (see the module docstring)."""

    def __init__(self, widget: IlastikWidget, delay: float = DELAY):
        self.widget = widget
        self._later = Debounced(self.compute, delay, "ilastik-features-ahead", "computing the features in view ahead")
        widget.observe(lambda _change: self.view_changed(), names="viewer_state")
        widget.session.add_listener(self._on_session_event)
        if widget.viewer_state:
            self.view_changed()  # a position given to the widget's constructor

    def _on_session_event(self, event: str, **_info: Any) -> None:
        if event in ("labels", "features"):  # the first strokes; the planes in view again, with the new features
            self.view_changed()

    def view_changed(self) -> None:
        """The view, the labels or the features changed: compute the features in view a moment later, if useful."""
        session = self.widget.session
        if len(session.spatial_shape) == 3 and not session.is_trained and session.annotations.strokes:
            self._later.schedule()

    def compute(self) -> list[tuple[slice, ...]]:
        """Compute the features of the planes in view now, unless the session has a model, no strokes or no
        features selected; returns the regions computed."""
        session = self.widget.session
        if session.is_trained or not session.annotations.strokes or session.feature_selection.is_empty:
            return []
        regions = planes_in_view(self.widget.viewer_state, tuple(session.spatial_shape))
        if regions:
            session.prepare_features(regions)
        return regions

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until a scheduled computation is done (for scripts and tests)."""
        self._later.wait(timeout)

    def close(self) -> None:
        """Stop listening, cancel the computation not yet started and stop the worker thread."""
        self.widget.session.remove_listener(self._on_session_event)
        self._later.close()
