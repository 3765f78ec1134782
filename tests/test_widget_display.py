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


def _debris_image():
    image, truth = synthetic_cells((256, 256), seed=0)
    image = (np.clip(image, 0, None) / image.max() * 3000 + 100).astype(np.uint16)
    rng = np.random.default_rng(1)
    debris = rng.random(image.shape) < 0.01
    image[debris] = 60000
    return image, debris


def test_the_panel_gets_each_channels_histogram_around_its_window():
    image, debris = _debris_image()
    w = IlastikWidget(image)
    display = w.source_info["display"]
    assert display["dtype"] == "uint16" and display["mode"] == "grey" and display["channels"] == 1
    assert display["auto"] == w.contrast_limits
    (hist,) = display["histograms"]
    lo, hi = w.contrast_limits[0]
    start, stop = hist["range"]
    # the span reaches past the window, not up to the debris: the nuclei's values fill most of the bins
    assert start <= lo < hi <= stop < 20000
    counts = np.asarray(hist["counts"])
    assert len(counts) <= 128 and (counts > 0).mean() > 0.5
    assert hist["max"] == 60000 and hist["above"] > 0
    # the counts are those of the sample the window came from: every sampled pixel counted once
    assert counts.sum() + hist["above"] + hist["below"] == image.size
    clean = image[~debris]
    width = (stop - start) / len(counts)
    inside = (clean >= start - 0.5) & (clean < stop - 0.5)
    assert counts.sum() == pytest.approx(inside.sum(), abs=width)  # whole-number bins centred on integers
    w.close()


def test_a_composite_and_an_rgb_image_say_how_the_channels_are_shown(two_channels):
    image, _ = two_channels
    w = IlastikWidget(image, channel_axis=0)
    display = w.source_info["display"]
    assert display["mode"] == "composite" and display["channels"] == 2 and len(display["histograms"]) == 2
    w.close()
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 200
    w = IlastikWidget(rgb, channel_axis=2)
    display = w.source_info["display"]
    assert display["mode"] == "rgb" and display["channels"] == 3 and len(w.contrast_limits) == 3
    assert w.channel_colors == [] and w.channel_visible == []
    w.close()


def test_the_objects_layer_has_settings_like_every_other_layer():
    image, _ = synthetic_cells((64, 64), seed=1)
    w = IlastikWidget(image)
    assert w.layers["objects"] == {"visible": True, "opacity": 0.5}
    w.set_layer("objects", visible=False, opacity=0.3)
    assert w.layers["objects"] == {"visible": False, "opacity": 0.3}
    with pytest.raises(traitlets.TraitError, match="unknown layer 'object'"):
        w.set_layer("object", opacity=0.3)
    w.close()


def test_a_strokes_listed_size_is_the_diameter_it_painted():
    w = IlastikWidget(np.zeros((64, 64), np.float32))
    rng = np.random.default_rng(0)
    cases = [([[20, 20]], 2.5, 5), ([[20, 20]], 2.0, 5), ([[20.5, 20]], 2.5, 6), ([[20.3, 20.4]], 2.0, 4)]
    cases += [
        ([list(rng.uniform(15, 45, 2).round(2))], float(rng.choice([0.5, 1.5, 3, 4.5, 10])), None) for _ in range(60)
    ]
    for points, radius, expected in cases:
        w.add_stroke(1, points, radius=radius)
        ys, xs = np.nonzero(w.session.labels())
        painted = max(np.ptp(ys) + 1, np.ptp(xs) + 1)
        assert w.strokes[-1]["size"] == painted, (points, radius)
        assert expected is None or painted == expected
        assert w.strokes[-1]["radius"] == radius
        w.undo()
    # the browser's brush: odd sizes on voxel centres, (size - 1) / 2 as the radius (half a voxel for size 1)
    for size in (1, 3, 5, 9, 61):
        w.add_stroke(1, [[32, 32]], radius=max(0.5, (size - 1) / 2))
        assert w.strokes[-1]["size"] == size
        w.undo()
    w.close()
