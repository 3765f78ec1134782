"""The raw layer's automatic contrast: ordinary images get their 0.5-99.5 percentiles; a small far brighter
population (debris) does not swallow the range."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ilastik_widget.core.session import Session
from ilastik_widget.datasets import synthetic_cells
from ilastik_widget.serving.chunk_server import ChunkServer
from ilastik_widget.serving.contrast import auto_range


def _nuclei16(seed=0):
    image, truth = synthetic_cells((512, 512), seed=seed)
    return (np.clip(image, 0, None) / image.max() * 3000 + 100).astype(np.uint16), truth


def test_ordinary_images_get_their_percentiles():
    rng = np.random.default_rng(0)
    for values in (_nuclei16()[0], rng.normal(100, 10, 20000), rng.exponential(100, 20000)):
        lo, hi = auto_range(values)
        assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [0.5, 99.5])))


def test_bright_debris_on_3_percent_of_the_pixels_leaves_the_nuclei_their_range():
    image, truth = _nuclei16()
    rng = np.random.default_rng(1)
    debris = ndi.binary_dilation(rng.random(image.shape) < 0.0025, iterations=2)
    assert 0.02 < debris.mean() < 0.05
    image[debris] = 60000 + rng.integers(0, 5000, int(debris.sum()))
    lo, hi = auto_range(image, integer=True)
    clean = image[~debris]
    assert np.percentile(clean, 99) <= hi <= clean.max() and lo <= np.percentile(clean, 1)  # the nuclei's range
    assert np.percentile(image, 99.5) > 50000  # what the plain percentiles would have shown


@pytest.mark.parametrize("values", [np.full(50, 7.0), np.array([np.nan, np.inf]), np.zeros(0)])
def test_degenerate_samples_give_a_valid_range(values):
    lo, hi = auto_range(values)
    assert np.isfinite([lo, hi]).all() and lo < hi


def test_a_multichannel_image_is_shown_as_a_composite_with_a_window_per_channel():
    image, _ = synthetic_cells((96, 128), seed=3)
    two = np.stack([image, np.where(np.indices(image.shape).sum(0) % 16 < 8, 5.0, 0.0)], axis=0).astype(np.float32)
    server = ChunkServer(Session(two, channel_axis=0), "wid")
    (raw,) = [s for s in server.layer_specs() if s["name"] == "raw"]
    controls = raw["shaderControls"]
    assert [controls[f"contrast{i}"]["channel"] for i in (0, 1)] == [[0], [1]]
    assert controls["contrast1"]["range"] == pytest.approx([0.0, 5.0])
    assert controls["color0"] != controls["color1"] and controls["visible1"] is True
    assert "if (visible1) rgb += color1 * contrast1();" in raw["shader"]
    # the kernel serves both channels (channels last), so the pattern of channel 1 reaches the browser
    chunk = np.frombuffer(server.read(["raw/0/0.0.0"])[0], np.float32).reshape(256, 256, 2)
    np.testing.assert_array_equal(chunk[:96, :128, 1], two[1])
