"""Class insight while painting: labelled voxels per class and the predicted share of each class in view, kept in the
widget's ``class_insight`` trait (kernel-only) for the panel.

The trait is::

    {
      "classes": [{"label", "name", "color", "labelled", "labelled_fraction", "predicted_fraction"}, ...],
      "labelled_total": int,            # labelled voxels of all classes
      "region": [[start, stop], ...],   # where the predicted fractions were measured (array order), or None
      "in_view": bool,                  # whether that region came from the viewer (else: the whole image)
      "method": "argmax",               # share of voxels whose most probable class it is
      "measured_voxels": int,           # voxels predicted for the fractions; fewer than region_voxels when sampled
      "region_voxels": int,
      "generation": int | None,         # the predictions measured (None: not trained, predicted_fraction null)
    }

The labelled counts change with every stroke (cheap: counted from the sparse labels). The predicted fractions are
measured after every training and when the view changes, in a worker thread, a moment later (so a pan or a
stroke burst costs one measurement), from the session's cached block probabilities, which the viewer's chunks
have mostly computed already. A region of more than :data:`MAX_BLOCKS` blocks is measured on that many blocks spread
evenly over it (an estimate; ``measured_voxels`` says how much was predicted).

The region in view is ``viewer_state["view_region"]``: ``[[start, stop], ...]`` voxels per spatial axis in array
order (half-open), the box the browser's panels show (for a volume, the plane of its first cross-section panel, one
voxel thick along the axis it cuts). The browser adds it to ``viewer_state`` when the view changes. Without it (or
when it is not a valid box) the whole image is measured when it has at most :data:`MAX_BLOCKS` blocks, and nothing
otherwise (``predicted_fraction`` null): predicting a large image only for this would not be cheap.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.class_fractions import block_class_totals
from ..core.json_numbers import is_finite_number
from .debounce import Debounced

if TYPE_CHECKING:
    from .widget import IlastikWidget

log = logging.getLogger("ilastik_widget")

#: Seconds between a change and the measurement (later changes within it restart the wait).
DELAY = 0.3
#: The most session blocks predicted for one measurement.
MAX_BLOCKS = 16
VIEW_REGION = "view_region"


def view_region(viewer_state: Any, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The region in view from ``viewer_state["view_region"]``, clipped to the image; None when absent or invalid."""
    value = viewer_state.get(VIEW_REGION) if isinstance(viewer_state, dict) else None
    if not isinstance(value, list) or len(value) != len(shape):
        return None
    out = []
    for span, n in zip(value, shape):
        if not isinstance(span, list) or len(span) != 2 or not all(is_finite_number(v) for v in span):
            return None
        start, stop = max(0, int(math.floor(span[0]))), min(int(n), int(math.ceil(span[1])))
        if stop <= start:
            return None
        out.append(slice(start, stop))
    return tuple(out)


def sampled_parts(session: Any, region: tuple[slice, ...], max_blocks: int | None = None) -> list[tuple[slice, ...]]:
    """The parts of ``region`` in each session block, at most ``max_blocks`` (default :data:`MAX_BLOCKS`) of them
    spread evenly over it."""
    max_blocks = MAX_BLOCKS if max_blocks is None else max_blocks
    blocks = session.blocks_for(region)
    if len(blocks) > max_blocks:
        picks = np.unique(np.linspace(0, len(blocks) - 1, max_blocks).round().astype(int))
        blocks = [blocks[i] for i in picks]
    parts = []
    for b in blocks:
        box = session.block_region(b)
        parts.append(tuple(slice(max(r.start, s.start), min(r.stop, s.stop)) for r, s in zip(region, box)))
    return parts


def predicted_totals(session: Any, region: tuple[slice, ...], method: str = "argmax") -> tuple[np.ndarray, int]:
    """Per class totals of :func:`~ilastik_widget.core.class_fractions.block_class_totals` over the sampled parts
    of ``region``, and the voxels measured."""
    parts = sampled_parts(session, region)
    session.precompute(parts)
    totals = np.zeros(session.n_classes)
    for part in parts:
        t = block_class_totals(session.predict(part), method)
        totals[: len(t)] += t
    return totals, sum(math.prod(s.stop - s.start for s in p) for p in parts)


def insight_value(session: Any, labelled: np.ndarray, predicted: dict[str, Any] | None) -> dict[str, Any]:
    """The ``class_insight`` trait from the labelled counts and a measurement (None before the first)."""
    total = int(labelled.sum())
    fractions = predicted.get("fractions") if predicted else None
    classes = []
    for i, c in enumerate(session.classes):
        count = int(labelled[i]) if i < len(labelled) else 0
        frac = None if fractions is None or i >= len(fractions) else float(fractions[i])
        classes.append(
            {
                "label": i + 1,
                "name": str(c.name),
                "color": str(c.color),
                "labelled": count,
                "labelled_fraction": count / total if total else 0.0,
                "predicted_fraction": frac,
            }
        )
    out: dict[str, Any] = {"classes": classes, "labelled_total": total, "method": "argmax"}
    keys = ("region", "in_view", "measured_voxels", "region_voxels", "generation")
    out.update({k: (predicted or {}).get(k) for k in keys})
    return out


class InsightUpdater:
    """Keeps a widget's ``class_insight`` trait up to date (see the module docstring)."""

    def __init__(self, widget: IlastikWidget, delay: float = DELAY):
        self.widget = widget
        self._lock = threading.Lock()
        self._labelled = np.zeros(0, np.int64)
        self._predicted: dict[str, Any] | None = None
        self._later = Debounced(self.measure, delay, "ilastik-insight", "measuring the class shares in view")
        self._last_request: tuple | None = None

    def view_region(self) -> tuple[slice, ...] | None:
        """The region the viewer shows (``viewer_state["view_region"]``) as slices, or None
        when there is no valid one."""
        return view_region(self.widget.viewer_state, tuple(self.widget.session.spatial_shape))

    def labels_changed(self) -> None:
        """Count the labelled voxels again and show them (in the caller's thread: it is cheap)."""
        session = self.widget.session
        with self._lock:
            self._labelled = np.asarray(session.annotations.count_per_class(), np.int64)
            if self._predicted is not None and len(self._predicted["fractions"]) != session.n_classes:
                self._predicted = None  # a class was added or removed: the old shares no longer line up
        self._publish()

    def predictions_changed(self) -> None:
        """Measure the predicted fractions again, a moment later in a worker thread."""
        self._later.schedule()

    def view_changed(self) -> None:
        """The view changed: measure the predicted fractions in it a moment later (once trained)."""
        if self.widget.session.is_trained:
            self._later.schedule()

    def _publish(self) -> None:
        with self._lock:
            labelled, predicted = self._labelled, self._predicted
        value = insight_value(self.widget.session, labelled, predicted)
        if self.widget._closed and not hasattr(self.widget, "_browser"):
            self.widget.class_insight = value  # the widget is being made: its trait updates are not open yet
        else:
            self.widget._set_traits(class_insight=value)

    def measure(self) -> dict[str, Any] | None:
        """Measure the predicted fractions of the region in view now and publish them (None when untrained)."""
        session = self.widget.session
        if not session.is_trained:
            return None
        region = self.view_region()
        in_view = region is not None
        if region is None:
            if len(session.blocks_for(None)) > MAX_BLOCKS:
                with self._lock:  # what is in view is not known: no fractions rather than a costly guess
                    self._predicted, self._last_request = None, None
                self._publish()
                return None
            region = tuple(slice(0, int(n)) for n in session.spatial_shape)
        generation = int(session.generation)
        request = (generation, region)
        if request == self._last_request:
            return self._predicted  # the same predictions of the same region
        try:
            totals, measured = predicted_totals(session, region)
        except RuntimeError:  # the model went away meanwhile (classes or features changed)
            return None
        except Exception:  # the panel's numbers must not break the widget: say it in the log
            log.exception("ilastik_widget: could not measure the class fractions of %s", region)
            return None
        if int(session.generation) != generation:
            return None  # newer predictions: their own measurement follows
        total = float(totals.sum())
        predicted = {
            "fractions": (totals / total if total > 0 else np.zeros(len(totals))).tolist(),
            "region": [[s.start, s.stop] for s in region],
            "in_view": in_view,
            "measured_voxels": int(measured),
            "region_voxels": int(math.prod(s.stop - s.start for s in region)),
            "generation": generation,
        }
        with self._lock:
            self._predicted = predicted
            self._last_request = request
        self._publish()
        return predicted

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until a scheduled measurement is done (for tests)."""
        self._later.wait(timeout)

    def close(self) -> None:
        """Cancel the measurement not yet started and stop the worker thread."""
        self._later.close()
