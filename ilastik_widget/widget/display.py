"""How the widget shows the image: each channel's display window (contrast), colour and visibility, and which input
channels feed the classifier. Traits shared with the browser's panel, checked like every other trait."""

from __future__ import annotations

from typing import Any

import traitlets as t

from ..core.colors import COLOR_RE
from ..core.json_numbers import is_finite_number
from ..serving.layer_specs import CHANNEL_COLORS

#: The display traits, checked by :func:`check`.
DISPLAY_TRAITS = ("contrast_limits", "channel_colors", "channel_visible", "classifier_channels")


def _shown(widget: Any) -> int:
    """Channels the raw layer shows (1 for a grey image)."""
    return widget._server.store.raw_reader.channels or 1


def _composite(widget: Any) -> int:
    """Channels of a composite (each with a colour and a visibility); 0 for grey and RGB images."""
    reader = widget._server.store.raw_reader
    return 0 if reader.channels is None or reader.rgb else reader.channels


def check(name: str, value: Any, widget: Any) -> Any:
    """The checked value of display trait ``name``, or TraitError naming what is wrong."""
    if not isinstance(value, list):
        raise t.TraitError(f"{name} must be a list, not {value!r}")
    if name == "contrast_limits":
        n = _shown(widget)
        if len(value) != n:
            raise t.TraitError(f"contrast_limits needs one [low, high] per channel shown ({n}), not {value!r}")
        out = []
        for i, pair in enumerate(value):
            ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(is_finite_number(v) for v in pair)
            if not ok or not pair[0] < pair[1]:
                raise t.TraitError(f"contrast_limits[{i}] must be two finite numbers with low < high, not {pair!r}")
            out.append([float(pair[0]), float(pair[1])])
        return out
    if name in ("channel_colors", "channel_visible"):
        n = _composite(widget)
        if len(value) != n:
            raise t.TraitError(f"{name} needs one entry per channel of the composite ({n}), not {value!r}")
        if name == "channel_colors" and not all(isinstance(c, str) and COLOR_RE.match(c) for c in value):
            raise t.TraitError(f"channel_colors must be colours like '#ff00ff', not {value!r}")
        if name == "channel_visible" and not all(isinstance(v, bool) for v in value):
            raise t.TraitError(f"channel_visible must be true or false per channel, not {value!r}")
        return [c.lower() for c in value] if name == "channel_colors" else list(value)
    n_in = widget.session.n_input_channels
    if not value or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n_in for c in value):
        raise t.TraitError(
            f"classifier_channels must name at least one of the input channels 0 to {n_in - 1}, not {value!r}"
        )
    return sorted(set(value))


class WidgetDisplay(t.HasTraits):
    """Display and channel traits of :class:`~ilastik_widget.widget.widget.IlastikWidget`.

    ``contrast_limits``: one ``[low, high]`` display window per channel shown (napari's name; the automatic range
    by default, see :meth:`reset_contrast`). ``channel_colors`` and ``channel_visible``: colour and visibility of each
    channel of a multichannel composite (empty for grey and RGB images). ``classifier_channels``: the input channels
    whose features the classifier uses (all by default).
    """

    contrast_limits: t.List[list[float]] = t.List().tag(sync=True)
    channel_colors = t.List(t.Unicode()).tag(sync=True)
    channel_visible = t.List(t.Bool()).tag(sync=True)
    classifier_channels = t.List(t.Int()).tag(sync=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the widget's own __init__ has made its session and chunk server by now
        n = _composite(self)
        with self.hold_trait_notifications():
            self.reset_contrast()
            self.channel_colors = [CHANNEL_COLORS[i % len(CHANNEL_COLORS)] for i in range(n)]
            self.channel_visible = [True] * n
            self._sync_classifier_channels()
        self.session.add_listener(self._display_event)

    def reset_contrast(self) -> None:
        """Set every channel's display window back to its automatic range."""
        self.contrast_limits = [list(r) for r in self._server.store.raw_reader.display_ranges()]

    @t.validate(*DISPLAY_TRAITS)
    def _check_display(self, proposal: dict) -> Any:
        return check(proposal["trait"].name, proposal["value"], self)

    @t.observe("classifier_channels")
    def _classifier_channels_changed(self, change: dict) -> None:
        n_in = self.session.n_input_channels
        wanted = None if change["new"] == list(range(n_in)) else change["new"]
        if self.session.channels != (None if wanted is None else tuple(wanted)):
            self.session.channels = wanted

    def _display_event(self, event: str, **_info: Any) -> None:
        if event == "features":
            self._sync_classifier_channels()

    def _sync_classifier_channels(self) -> None:
        channels = self.session.channels
        value = list(range(self.session.n_input_channels)) if channels is None else list(channels)
        if self.classifier_channels != value:
            self.classifier_channels = value

    session: Any  # the widget's
    _server: Any
