"""Objects of a 2048 x 2048 probability map against scikit-image's label + regionprops_table on the same mask.

Run: ``python benchmarks/bench_objects.py`` (about 30 s on 2 cores; ``--quick`` for fewer repeats).

Prints, as medians over the repeats of one run:

1. ``objects_from_probabilities`` with the same mask as the baseline (no smoothing, no size filter; the table with
   area, centroid, bbox, probability and intensity columns) against ``skimage.measure.label`` (4-connected, the
   same components) + ``regionprops_table`` (area, centroid, bbox, intensity mean/min/max) of ``p >= 0.5``; both
   find the same objects with the same areas (checked);
2. the same with ilastik's defaults (Gaussian sigma 1, min_size 10), with hysteresis, with ``split=True``, and
   block by block (512 x 512 blocks merged; with ``split=True`` too, objects cut by blocks split once merged), each
   beside the baseline's time; the block results are checked equal to the whole-image ones.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilastik_widget.core.object_blocks import objects_blockwise
from ilastik_widget.core.objects import objects_from_probabilities


def probability_map(size: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-class probabilities of nuclei-like discs (radius 5-12, some touching) with soft edges and noise, and an
    intensity image."""
    rng = np.random.default_rng(seed)
    n = size * size // 700
    centres = rng.uniform(0, size, (n, 2))
    radii = rng.uniform(5, 12, n)
    dist = np.full((size, size), np.inf, np.float32)
    for (cy, cx), r in zip(centres, radii):
        y0, y1 = int(max(cy - r - 3, 0)), int(min(cy + r + 4, size))
        x0, x1 = int(max(cx - r - 3, 0)), int(min(cx + r + 4, size))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy - cy, xx - cx).astype(np.float32) - r
        np.minimum(dist[y0:y1, x0:x1], d, out=dist[y0:y1, x0:x1])
    fg = 1.0 / (1.0 + np.exp(np.clip(dist, -20, 20) / 1.5))
    fg = np.clip(fg + ndi.gaussian_filter(rng.normal(0, 0.15, (size, size)), 1.0), 0, 1).astype(np.float32)
    image = (1000 * fg + rng.normal(100, 20, (size, size))).astype(np.uint16)
    return np.stack([1 - fg, fg], axis=-1), image


def interleaved(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Median time of each function, the functions run in turn in every repeat (so load changes hit all alike)."""
    times: dict = {name: [] for name in fns}
    results: dict = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    from skimage.measure import label, regionprops_table

    prob, image = probability_map()
    print(f"probability map {prob.shape[:2]}, float32, 2 classes; median of {repeats} interleaved runs")

    def baseline():
        labels = label(prob[..., 1] >= 0.5, connectivity=1)
        props = ("label", "area", "centroid", "bbox", "intensity_mean", "intensity_min", "intensity_max")
        return regionprops_table(labels, image, properties=props)

    def ours(**kwargs):
        return lambda: objects_from_probabilities(prob, 2, image=image, **kwargs)

    same_mask = dict(threshold=0.5, smooth=0, min_size=0)
    fns = {
        "skimage label + regionprops_table": baseline,
        "objects_from_probabilities, same mask": ours(**same_mask),
        "ilastik defaults (sigma 1, min_size 10)": ours(),
        "hysteresis 0.7 / 0.4": ours(threshold=0.7, low=0.4),
        "split=True (same mask)": ours(**same_mask, split=True),
        "block by block (512 x 512), same mask": lambda: objects_blockwise(
            prob, 2, block_shape=(512, 512), smooth=0, min_size=0, image=image
        ),
        "split=True block by block (512 x 512)": lambda: objects_blockwise(
            prob, 2, block_shape=(512, 512), smooth=0, min_size=0, image=image, split=True
        ),
    }
    times, results = interleaved(fns, repeats)
    base, same = results["skimage label + regionprops_table"], results["objects_from_probabilities, same mask"]
    assert len(same.table) == len(base["label"]) and sorted(same.table["area"]) == sorted(base["area"])
    assert np.array_equal(results["block by block (512 x 512), same mask"].labels, same.labels)
    assert np.array_equal(
        results["split=True block by block (512 x 512)"].labels, results["split=True (same mask)"].labels
    )
    t_base = times["skimage label + regionprops_table"]
    for name, t in times.items():
        table = base if name.startswith("skimage") else results[name].table
        line = f"{name:42s} {t:7.3f} s"
        if not name.startswith("skimage"):
            line += f"   {t / t_base:5.2f} x the baseline"
        print(f"{line}   ({len(table['label'])} objects)")


if __name__ == "__main__":
    main()
