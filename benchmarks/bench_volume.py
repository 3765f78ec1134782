"""Volume benchmark (kernel, no browser): features of the planes a viewer shows, against the 2D filter bank.

Run: ``python benchmarks/bench_volume.py [--repeats N] [--shape Z Y X]``

On a synthetic uint16 volume (default 120x512x512, ``ilastik_widget.datasets.synthetic_cells``) with all 61
features, each row prints a figure beside its baseline measured in the same run (median of N repeats, the two
timed alternately so that load on this shared machine hits both alike; process CPU time beside wall time):

* ``three planes``: ``planes_features`` of the xy, xz and yz planes through the centre (one call, as after a
  stroke) vs the project's 2D filter bank (``compute_features`` on the same three 2D images). Target <= 4x.
* ``next slice``: the xy plane one slice further, with a ``GradientCache`` kept from the slices before (as
  when scrolling), vs the 2D filter bank on one xy image. Target <= 4x. ``next slice, no cache``: the same
  without the cache, for the record.
* ``old blocks`` (for the record, timed once): ``features_for_region`` of one interior 64^3 block, times the
  number of distinct 64^3 blocks the three planes touch (an upper bound: border blocks read less halo).
* ``peak RSS`` of the three-planes row above the process's RSS before it (volume loaded).

Rows are functions in :data:`ROWS` taking the shared :class:`Context` and returning a :class:`Row`; add a row by
appending a function (e.g. session prediction of the three planes against the same baseline).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ilastik_widget.core.features import FeatureSelection, compute_features, features_for_region
from ilastik_widget.core.planes import GradientCache, plane_features, planes_features

BLOCK = 64


@dataclass
class Context:
    """What every row shares: the volume, the selection, the point the planes go through, repeats."""

    volume: np.ndarray
    selection: FeatureSelection
    point: tuple[int, int, int]
    repeats: int
    cache: dict = field(default_factory=dict)

    def planes(self) -> list[np.ndarray]:
        """The three 2D images through ``point`` (xy, xz, yz), as the 2D baseline sees them."""
        z, y, x = self.point
        return [self.volume[z], self.volume[:, y], self.volume[:, :, x]]


@dataclass
class Row:
    name: str
    ours: float  # seconds (wall)
    baseline: float
    what: str
    baseline_what: str
    target: float | None = None
    ours_cpu: float | None = None
    baseline_cpu: float | None = None

    def print(self) -> bool:
        ratio = self.ours / self.baseline
        ok = self.target is None or ratio <= self.target
        cpu = ""
        if self.ours_cpu is not None and self.baseline_cpu:
            cpu = (
                f" | cpu {self.ours_cpu:.3f} s vs {self.baseline_cpu:.3f} s ({self.ours_cpu / self.baseline_cpu:.2f}x)"
            )
        target = "" if self.target is None else f" (target <= {self.target:g}x) {'OK' if ok else 'MISSED'}"
        print(
            f"{self.name}: {self.what} {self.ours:.3f} s | baseline {self.baseline_what} {self.baseline:.3f} s | "
            f"ratio {ratio:.2f}x{target}{cpu}",
            flush=True,
        )
        return ok


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def alternate(ours: Callable[[], object], baseline: Callable[[], object], repeats: int) -> tuple[float, ...]:
    """Medians (wall ours, wall baseline, cpu ours, cpu baseline) of ``repeats`` alternating runs after a warm-up."""
    ours(), baseline()
    runs = []
    for _ in range(repeats):
        b = timed(baseline)
        o = timed(ours)
        runs.append((o[0], b[0], o[1], b[1]))
    return tuple(statistics.median(r[i] for r in runs) for i in range(4))


def bank_2d(ctx: Context, images: list[np.ndarray]) -> None:
    for im in images:
        compute_features(im, ctx.selection)


def row_three_planes(ctx: Context) -> Row:
    z, y, x = ctx.point

    def ours() -> None:
        planes_features(ctx.volume, [(0, z), (1, y), (2, x)], ctx.selection)

    o, b, oc, bc = alternate(ours, lambda: bank_2d(ctx, ctx.planes()), ctx.repeats)
    from ilastik_widget.core.filters import clear_workspace

    clear_workspace()  # from no kept buffers: the peak is everything one call needs
    rss0 = rss_bytes()
    reset_peak_rss()
    ours()
    ctx.cache["peak_rss"] = (peak_rss_bytes() - rss0, rss0)
    ctx.cache["three_planes"] = o
    shape = "x".join(map(str, ctx.volume.shape))
    return Row(
        "three planes", o, b, f"planes_features xy+xz+yz of {shape}", "2D bank on the same 3 images", 4.0, oc, bc
    )


def _next_slice(ctx: Context, cache: GradientCache | None) -> tuple[float, ...]:
    z, _, _ = ctx.point
    nz = ctx.volume.shape[0]
    step = iter(range(1, 10**9))
    if cache is not None:  # the slices before, as after scrolling there
        for k in range(-3, 1):
            plane_features(ctx.volume, 0, (z + k) % nz, ctx.selection, gradient_cache=cache)

    def ours() -> None:  # each repeat a slice not computed before, one further
        plane_features(ctx.volume, 0, (z + next(step)) % nz, ctx.selection, gradient_cache=cache)

    return alternate(ours, lambda: bank_2d(ctx, [ctx.volume[z]]), ctx.repeats)


def row_next_slice(ctx: Context) -> Row:
    cache = GradientCache(512 << 20)
    o, b, oc, bc = _next_slice(ctx, cache)
    what = f"plane_features of the next xy slice, GradientCache ({cache.nbytes / 2**20:.0f} MiB)"
    return Row("next slice", o, b, what, "2D bank on one xy image", 4.0, oc, bc)


def row_next_slice_uncached(ctx: Context) -> Row:
    o, b, oc, bc = _next_slice(ctx, None)
    return Row(
        "next slice, no cache", o, b, "plane_features of the next xy slice", "2D bank on one xy image", None, oc, bc
    )


def blocks_touched(shape: tuple[int, ...], point: tuple[int, int, int]) -> int:
    """Distinct BLOCK^3 blocks that the three planes through ``point`` intersect."""
    n = [math.ceil(s / BLOCK) for s in shape]
    p = [c // BLOCK for c in point]
    blocks = set()
    for axis in range(3):
        for i in range(n[0]):
            for j in range(n[1]):
                for k in range(n[2]):
                    if (i, j, k)[axis] == p[axis]:
                        blocks.add((i, j, k))
    return len(blocks)


def row_old_blocks(ctx: Context) -> Row:
    z, y, x = ctx.point
    starts = [max(0, min(c - c % BLOCK, s - BLOCK)) for c, s in zip(ctx.point, ctx.volume.shape)]
    region = tuple(slice(a, a + BLOCK) for a in starts)
    t, c = timed(lambda: features_for_region(ctx.volume, region, ctx.selection))
    n = blocks_touched(ctx.volume.shape, ctx.point)
    ours = ctx.cache.get("three_planes")
    if ours is None:
        ours = timed(lambda: planes_features(ctx.volume, [(0, z), (1, y), (2, x)], ctx.selection))[0]
    return Row(
        "old blocks",
        n * t,
        ours,
        f"features_for_region of one 64^3 block ({t:.2f} s, cpu {c:.2f} s) x {n} blocks the planes touch",
        "planes_features of the three planes",
    )


#: the rows, in order; each takes the shared context and returns a Row
ROWS: list[Callable[[Context], Row]] = [row_three_planes, row_next_slice, row_next_slice_uncached, row_old_blocks]


# ------------------------------------------------------------------------------------------------
# memory


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Reset the kernel's high-water mark of this process's RSS (Linux >= 4.0), so that it measures from now."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_volume(shape: tuple[int, int, int]) -> np.ndarray:
    from ilastik_widget.datasets import synthetic_cells

    img, _ = synthetic_cells(shape, seed=3)
    return (np.clip(img, 0, None) * 4000 + 100).astype(np.uint16)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (median)")
    p.add_argument("--shape", type=int, nargs=3, default=(120, 512, 512), metavar=("Z", "Y", "X"))
    args = p.parse_args(argv)
    import cv2

    t0 = time.perf_counter()
    vol = make_volume(tuple(args.shape))
    print(
        f"cores: {os.cpu_count()}, OpenCV {cv2.__version__}, volume {vol.shape} {vol.dtype} made in "
        f"{time.perf_counter() - t0:.0f} s, repeats {args.repeats}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    ctx = Context(vol, FeatureSelection.all(), tuple(s // 2 for s in vol.shape), args.repeats)
    ok = True
    for row in ROWS:
        ok &= row(ctx).print()
        if "peak_rss" in ctx.cache:
            peak, before = ctx.cache.pop("peak_rss")
            print(
                f"peak RSS: +{peak / 2**20:.0f} MiB during the three planes (process before: {before / 2**20:.0f} MiB)"
            )
    print(f"load avg {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
