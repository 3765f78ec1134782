"""The widget's display traits: contrast windows, channel colours and visibility, the classifier's channels."""

from __future__ import annotations

import numpy as np
import pytest
import traitlets

from ilastik_widget.datasets import synthetic_cells
from ilastik_widget.widget.widget import IlastikWidget


@pytest.fixture(scope="module")
def two_channels():
    image, truth = synthetic_cells((96, 128), seed=3)
    stripes = (np.indices(image.shape).sum(0) % 16 < 8).astype(np.float32) * 5
    return np.stack([image, stripes], axis=0).astype(np.float32), truth


def test_a_two_channel_image_gets_a_window_colour_and_visibility_per_channel(two_channels):
    image, _ = two_channels
    w = IlastikWidget(image, channel_axis=0)
    assert len(w.contrast_limits) == 2 and w.contrast_limits[1] == pytest.approx([0.0, 5.0])
    assert w.channel_colors == ["#ff00ff", "#00ff00"] and w.channel_visible == [True, True]
    assert w.classifier_channels == [0, 1] and w.session.channels is None
    # the raw layer's controls start from the same values the traits hold
    (raw,) = [s for s in w.source_info["layer_specs"] if s["name"] == "raw"]
    assert raw["shaderControls"]["contrast1"]["range"] == w.contrast_limits[1]
    w.contrast_limits = [[0.2, 0.8], [1, 4]]
    w.channel_visible = [True, False]
    assert w.contrast_limits == [[0.2, 0.8], [1.0, 4.0]]
    w.reset_contrast()
    assert w.contrast_limits[1] == pytest.approx([0.0, 5.0])
    w.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("contrast_limits", [[1, 0], [0, 1]]),  # low >= high
        ("contrast_limits", [[0, float("nan")], [0, 1]]),
        ("contrast_limits", [[0, 1]]),  # one window for two channels
        ("channel_colors", ["red", "#00ff00"]),
        ("channel_visible", [True]),
        ("classifier_channels", []),
        ("classifier_channels", [2]),
    ],
)
def test_bad_display_values_are_named_and_change_nothing(two_channels, name, value):
    image, _ = two_channels
    w = IlastikWidget(image, channel_axis=0)
    before = getattr(w, name)
    with pytest.raises(traitlets.TraitError, match=name):
        setattr(w, name, value)
    assert getattr(w, name) == before
    w.set_state({name: value})  # from the browser: rejected with the reason, reverted
    assert getattr(w, name) == before and name in w.error
    w.close()


def test_the_classifier_channels_trait_and_the_session_follow_each_other(two_channels):
    image, truth = two_channels
    w = IlastikWidget(image, channel_axis=0)
    n = w.session.n_features
    w.classifier_channels = [0]
    assert w.session.channels == (0,) and w.session.n_features == n // 2
    w.session.channels = None  # from Python on the session: the trait follows
    assert w.classifier_channels == [0, 1]
    w.close()


def test_a_grey_image_has_one_window_and_no_composite():
    image, _ = synthetic_cells((64, 64), seed=1)
    w = IlastikWidget(image)
    assert len(w.contrast_limits) == 1 and w.channel_colors == [] and w.channel_visible == []
    w.close()
