"""Volume benchmark (kernel, no browser): the interactive path through ``Session``, against the 2D filter bank.

Run: ``python benchmarks/bench_volume.py [--repeats N] [--shape Z Y X] [--rss-depths Z1 Z2 ...] [--cache-dir D]``
(``--per-feature``: instead, one plane's time for each feature and scale alone, to see where it goes; ``--rss-only``: only
the peak RSS rows)

On a synthetic uint16 volume (default 120x512x512, ``ilastik_widget.datasets.synthetic_cells``) with all 61
features and the default classifier, as the widget uses a session: strokes painted on the xy plane through the
centre, ``train()``, then ``predict`` of the xy, xz and yz planes through the centre (what the three panels show).
Each row prints a figure beside its baseline measured in the same run (median of N repeats, the two timed
alternately so that load on this shared machine hits both alike; process CPU time beside wall time, and the ratio ours
would have with every core busy from start to end, its CPU time divided by the cores: a floor for the same work):

* ``stroke, cold``: a fresh session (made untimed), 8 strokes on the xy plane, train, predict the three planes, vs the
  project's 2D filter bank (``compute_features``) on the same three 2D images. Target <= 6x.
* ``stroke, features ahead`` (for the record): the cold row's first training as the widget serves it: the session
  computed the three planes' features ahead (``Session.prepare_features``, untimed, as the widget does while the
  first class is painted), then the strokes, train and predict are timed.
* ``stroke, warm``: one more stroke on the same plane of that session (its plane features are cached), train,
  predict the three planes; same baseline. Target <= 6x.
* ``next slice``: ``predict`` of the next xy slice of that session (as when scrolling), vs the 2D filter bank on
  one xy image. Target <= 4x.
* ``next slice, caches full`` (for the record): the same after :data:`SCROLL_TO_FULL` more slices, once the
  session's caches are at their steady size; over the first slices each slice also faults in the memory of the
  features it keeps (the printed system CPU time).
* ``next slice, zarr`` (for the record): the same in a session on the volume stored as zarr with 64^3 chunks.
* ``engine, three planes`` and ``engine, next slice uncached`` (for the record): ``planes_features`` alone.
* ``old blocks`` (for the record, an estimate): ``features_for_region`` of one interior 64^3 block timed once,
  times the number of distinct 64^3 blocks the three planes touch (what the block path computed; features
  only, an upper bound since border blocks read less halo).
* ``peak RSS``: the high-water mark of a fresh process (imports included) that opens the volume from an
  OME-Zarr-like zarr array on disk and runs cold stroke, warm stroke and :data:`RSS_SLICES` next slices; once per depth of
  ``--rss-depths`` (the volume repeated along z), to show that it does not grow with the volume. Target <= 3 GiB.

Rows are functions in :data:`ROWS` taking the shared :class:`Context` and returning a :class:`Row`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ilastik_widget.core.features import FeatureSelection, compute_features, features_for_region
from ilastik_widget.core.planes import plane_features, planes_features

BLOCK = 64
#: strokes per class painted for the cold row (two classes: 8 strokes, as in the issue's measurement)
STROKES_PER_CLASS = 4
#: slices scrolled before the "caches full" row: a session keeps the features of the last 4 planes of each axis
#: (``PLANES_KEPT_PER_AXIS``, 64 MiB per 512 x 512 slice) and the gradient planes the last 4 slices read, so its caches
#: are at their steady size after a few slices (24, as in earlier runs of this row, is well past that)
SCROLL_TO_FULL = 24
#: next slices scrolled by the peak RSS rows (the caches at their steady size)
RSS_SLICES = SCROLL_TO_FULL + 4
#: cores this process may run on (what the header prints and the all-cores-busy ratios divide by)
CORES = len(os.sched_getaffinity(0))


@dataclass
class Context:
    """What every row shares: the volume, its ground truth, the selection, the point the planes go through."""

    volume: np.ndarray
    truth: np.ndarray
    selection: FeatureSelection
    point: tuple[int, int, int]
    repeats: int
    cache: dict = field(default_factory=dict)

    def planes(self) -> list[np.ndarray]:
        """The three 2D images through ``point`` (xy, xz, yz), as the 2D baseline sees them."""
        z, y, x = self.point
        return [self.volume[z], self.volume[:, y], self.volume[:, :, x]]

    def regions(self) -> list[tuple[slice, ...]]:
        """The three planes through ``point`` as regions of the volume (what the panels ask ``predict`` for)."""
        z, y, x = self.point
        full = slice(None)
        return [(slice(z, z + 1), full, full), (full, slice(y, y + 1), full), (full, full, slice(x, x + 1))]


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
    ours_system: float | None = None  # of ours_cpu, the time in the system (page faults of new memory)

    def print(self) -> bool:
        ratio = self.ours / self.baseline
        ok = self.target is None or ratio <= self.target
        cpu = ""
        if self.ours_cpu is not None and self.baseline_cpu:
            system = "" if self.ours_system is None else f" (system {self.ours_system:.3f} s)"
            # the wall time ours would take with every core busy from start to end: a floor that more overlap of the
            # same work cannot go below (only less work can)
            floor = self.ours_cpu / CORES
            cpu = (
                f" | cpu {self.ours_cpu:.3f} s{system} vs {self.baseline_cpu:.3f} s "
                f"({self.ours_cpu / self.baseline_cpu:.2f}x); all {CORES} cores busy throughout: {floor:.3f} s, "
                f"ratio {floor / self.baseline:.2f}x"
            )
        target = "" if self.target is None else f" (target <= {self.target:g}x) {'OK' if ok else 'MISSED'}"
        print(
            f"{self.name}: {self.what} {self.ours:.3f} s | baseline {self.baseline_what} {self.baseline:.3f} s | "
            f"ratio {ratio:.2f}x{target}{cpu}",
            flush=True,
        )
        return ok


def timed(fn: Callable[[], object]) -> tuple[float, float, float]:
    """Wall time, process CPU time and its part spent in the system (``os.times``) of one call of ``fn``."""
    c0, s0, t0 = time.process_time(), os.times().system, time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0, os.times().system - s0


def alternate(
    ours: Callable[[], object],
    baseline: Callable[[], object],
    repeats: int,
    warm_up: bool = True,
    setup: Callable[[], object] = lambda: None,
) -> tuple[float, ...]:
    """Medians (wall ours, wall baseline, cpu ours, cpu baseline, system cpu ours) of ``repeats`` alternating runs;
    ``setup()`` runs, untimed, before each run of ``ours``."""
    if warm_up:
        setup(), ours(), baseline()
    runs = []
    for _ in range(repeats):
        b = timed(baseline)
        setup()
        o = timed(ours)
        runs.append((o[0], b[0], o[1], b[1], o[2]))
    return tuple(statistics.median(r[i] for r in runs) for i in range(5))


def bank_2d(ctx: Context, images: list[np.ndarray]) -> None:
    for im in images:
        compute_features(im, ctx.selection)


# ------------------------------------------------------------------------------------------------
# the session path


def plane_strokes(truth: np.ndarray, z: int, n_per_class: int, seed: int) -> list[dict]:
    """Simulated strokes inside each class of the xy plane ``z`` of ``truth``, as ``add_stroke`` keywords."""
    from ilastik_widget.datasets import simulated_strokes

    out = []
    for st in simulated_strokes(truth[z], n_per_class=n_per_class, radius=2, seed=seed):
        out.append({**st, "points": [[z, *p] for p in st["points"]], "axes": [1, 2]})
    return out


def new_session(volume, selection: FeatureSelection):
    from ilastik_widget.core.session import Session

    return Session(volume, features=selection, seed=0)


def stroke_cycle(session, strokes: list[dict], regions: Sequence[tuple[slice, ...]]) -> dict[str, float]:
    """Paint ``strokes``, train, predict every region (as the panels ask); the wall time of each step."""
    t0 = time.perf_counter()
    for st in strokes:
        session.add_stroke(**st)
    session.train()
    steps = {"train": time.perf_counter() - t0}
    for name, region in zip(("xy", "xz", "yz"), regions):
        t1 = time.perf_counter()
        session.predict(region)
        steps[name] = time.perf_counter() - t1
    return steps


def _steps(parts: list[dict[str, float]]) -> str:
    return ", ".join(f"{k} {statistics.median(p[k] for p in parts):.3f}" for k in parts[0])


def first_strokes(ctx: Context, prepared: bool) -> tuple[tuple[float, ...], str, Any]:
    """A first stroke cycle on a fresh session per run, against the 2D bank on the three images: the medians of
    :func:`alternate`, the steps, and the last session (trained). ``prepared``: the session computed the three planes'
    features before the strokes, untimed (as the widget does while the first class is painted)."""
    z = ctx.point[0]
    strokes = plane_strokes(ctx.truth, z, STROKES_PER_CLASS, seed=0)
    parts: list[dict[str, float]] = []
    sessions: list = []

    def setup() -> None:
        if sessions:
            sessions.pop().close()
        s = new_session(ctx.volume, ctx.selection)
        if prepared:
            s.prepare_features(ctx.regions())
        sessions.append(s)

    def ours() -> None:
        parts.append(stroke_cycle(sessions[-1], strokes, ctx.regions()))

    medians = alternate(ours, lambda: bank_2d(ctx, ctx.planes()), ctx.repeats, setup=setup)
    return medians, f"{len(strokes)} strokes on xy, train, predict xy+xz+yz ({_steps(parts[1:])} s)", sessions.pop()


def row_cold(ctx: Context) -> Row:
    (o, b, oc, bc, osys), steps, session = first_strokes(ctx, prepared=False)
    ctx.cache["session"] = session  # trained on the strokes: the warm and next-slice rows go on with it
    return Row("stroke, cold", o, b, f"fresh Session, {steps}", "2D bank on the same 3 images", 6.0, oc, bc, osys)


def row_settled(ctx: Context) -> Row:
    """A first stroke as the widget serves it: the session computed the features of the three planes while the view
    was still (the widget's features ahead of the first training), then the strokes come."""
    (o, b, oc, bc, osys), steps, session = first_strokes(ctx, prepared=True)
    session.close()
    what = f"fresh Session, the 3 planes' features computed ahead; {steps}"
    return Row("stroke, features ahead", o, b, what, "2D bank on the same 3 images", None, oc, bc, osys)


def row_warm(ctx: Context) -> Row:
    z = ctx.point[0]
    session = ctx.cache["session"]
    extra = iter(plane_strokes(ctx.truth, z, 4 * (ctx.repeats + 1), seed=1))
    parts: list[dict[str, float]] = []

    def ours() -> None:  # one more stroke each repeat: a new model each time
        parts.append(stroke_cycle(session, [next(extra)], ctx.regions()))

    o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, ctx.planes()), ctx.repeats)
    what = f"1 more stroke on the same xy plane, train, predict xy+xz+yz ({_steps(parts[1:])} s)"
    return Row("stroke, warm", o, b, what, "2D bank on the same 3 images", 6.0, oc, bc, osys)


def scroller(session, start: int, depth: int) -> Callable[[], None]:
    """A call that predicts the xy slice after the one it predicted before (first ``start + 1``, wrapping at
    ``depth``), as when scrolling."""
    slices = itertools.count(start + 1)

    def next_slice() -> None:
        k = next(slices) % depth
        session.predict((slice(k, k + 1), slice(None), slice(None)))

    return next_slice


def row_next_slice(ctx: Context) -> Row:
    z, nz = ctx.point[0], ctx.volume.shape[0]
    ours = scroller(ctx.cache["session"], z, nz)
    o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, [ctx.volume[z]]), ctx.repeats)
    return Row("next slice", o, b, "Session.predict of the next xy slice", "2D bank on one xy image", 4.0, oc, bc, osys)


def row_next_slice_full(ctx: Context) -> Row:
    """The next-slice row once the session's caches are at their bounds (for the record): until then each slice also
    faults in the new memory its cached features and gradient planes take."""
    z, nz = ctx.point[0], ctx.volume.shape[0]
    ours = scroller(ctx.cache["session"], z + ctx.repeats + 2, nz)  # after the slices of the next-slice row
    for _ in range(SCROLL_TO_FULL):
        ours()
    o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, [ctx.volume[z]]), ctx.repeats)
    what = f"the same after {SCROLL_TO_FULL} more slices (the session's caches full)"
    return Row("next slice, caches full", o, b, what, "2D bank on one xy image", None, oc, bc, osys)


def row_next_slice_zarr(ctx: Context) -> Row:
    """The next-slice row on the volume stored as zarr with 64^3 chunks (how volumes usually come), for the record."""
    import zarr

    if "session" in ctx.cache:  # the rows before are done with it: one session's caches at a time
        ctx.cache.pop("session").close()
    z = ctx.point[0]
    with tempfile.TemporaryDirectory(prefix="bench_volume_") as tmp:
        arr = zarr.create_array(
            store=str(Path(tmp) / "vol.zarr"), shape=ctx.volume.shape, dtype=ctx.volume.dtype, chunks=(64, 64, 64)
        )
        arr[...] = ctx.volume
        session = new_session(zarr.open_array(str(Path(tmp) / "vol.zarr"), mode="r"), ctx.selection)
        try:
            for st in plane_strokes(ctx.truth, z, STROKES_PER_CLASS, seed=0):
                session.add_stroke(**st)
            session.train()
            session.predict((slice(z, z + 1), slice(None), slice(None)))
            ours = scroller(session, z, ctx.volume.shape[0])
            o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, [ctx.volume[z]]), ctx.repeats)
        finally:
            session.close()
    return Row(
        "next slice, zarr", o, b, "the same on a zarr copy (64^3 chunks)", "2D bank on one xy image", None, oc, bc, osys
    )


# ------------------------------------------------------------------------------------------------
# the engine alone and the old block path, for the record


def row_engine_three(ctx: Context) -> Row:
    z, y, x = ctx.point

    def ours() -> None:
        planes_features(ctx.volume, [(0, z), (1, y), (2, x)], ctx.selection)

    o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, ctx.planes()), ctx.repeats)
    ctx.cache["three_planes"] = o
    shape = "x".join(map(str, ctx.volume.shape))
    return Row(
        "engine, three planes",
        o,
        b,
        f"planes_features xy+xz+yz of {shape}",
        "2D bank on the 3 images",
        None,
        oc,
        bc,
        osys,
    )


def row_engine_next_uncached(ctx: Context) -> Row:
    z, nz = ctx.point[0], ctx.volume.shape[0]
    step = iter(range(1, 10**9))

    def ours() -> None:
        plane_features(ctx.volume, 0, (z - next(step)) % nz, ctx.selection)

    o, b, oc, bc, osys = alternate(ours, lambda: bank_2d(ctx, [ctx.volume[z]]), ctx.repeats)
    return Row("engine, one xy plane", o, b, "plane_features, no cache", "2D bank on one xy image", None, oc, bc, osys)


def blocks_touched(shape: tuple[int, ...], point: tuple[int, int, int]) -> int:
    """Distinct BLOCK^3 blocks that the three planes through ``point`` intersect."""
    n = [math.ceil(s / BLOCK) for s in shape]
    total = n[0] * n[1] * n[2]
    # blocks off all three planes: every index differs from the point's on each axis
    return total - (n[0] - 1) * (n[1] - 1) * (n[2] - 1)


def row_old_blocks(ctx: Context) -> Row:
    z, y, x = ctx.point
    starts = [max(0, min(c - c % BLOCK, s - BLOCK)) for c, s in zip(ctx.point, ctx.volume.shape)]
    region = tuple(slice(a, a + BLOCK) for a in starts)
    t, c, _ = timed(lambda: features_for_region(ctx.volume, region, ctx.selection))
    n = blocks_touched(ctx.volume.shape, ctx.point)
    ours = ctx.cache.get("three_planes")
    if ours is None:
        ours = timed(lambda: planes_features(ctx.volume, [(0, z), (1, y), (2, x)], ctx.selection))[0]
    return Row(
        "old blocks (estimate)",
        n * t,
        ours,
        f"features_for_region of one 64^3 block ({t:.2f} s, cpu {c:.2f} s) x {n} blocks the planes touch",
        "planes_features of the three planes",
    )


#: the rows, in order; each takes the shared context and returns a Row
ROWS: list[Callable[[Context], Row]] = [
    row_cold,
    row_settled,
    row_warm,
    row_next_slice,
    row_next_slice_full,
    row_next_slice_zarr,
    row_engine_three,
    row_engine_next_uncached,
    row_old_blocks,
]


# ------------------------------------------------------------------------------------------------
# memory: a fresh process per volume depth


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_child(path: str, strokes_file: str) -> None:
    """In a fresh process: the session flow on the zarr volume at ``path``; prints a JSON line of peaks."""
    import zarr

    volume = zarr.open_array(path, mode="r")
    with open(strokes_file) as f:
        info = json.load(f)
    z, y, x = info["point"]
    full = slice(None)
    regions = [(slice(z, z + 1), full, full), (full, slice(y, y + 1), full), (full, full, slice(x, x + 1))]
    session = new_session(volume, FeatureSelection.all())
    t0 = time.perf_counter()
    stroke_cycle(session, info["cold"], regions)
    stroke_cycle(session, info["warm"], regions)
    for k in range(1, RSS_SLICES + 1):
        session.predict((slice(z + k, z + k + 1), full, full))
    print(json.dumps({"peak": peak_rss_bytes(), "seconds": time.perf_counter() - t0, "shape": list(volume.shape)}))


def rss_rows(ctx: Context, depths: list[int]) -> None:
    """Peak RSS of a fresh process running the session flow, per volume depth (the volume repeated along z)."""
    import zarr

    z = ctx.point[0]
    info = {
        "point": list(ctx.point),
        "cold": plane_strokes(ctx.truth, z, STROKES_PER_CLASS, seed=0),
        "warm": plane_strokes(ctx.truth, z, 1, seed=1)[:1],
    }
    with tempfile.TemporaryDirectory(prefix="bench_volume_") as tmp:
        strokes_file = str(Path(tmp) / "strokes.json")
        with open(strokes_file, "w") as f:
            json.dump(info, f)
        peaks = []
        for depth in depths:
            reps = -(-depth // ctx.volume.shape[0])
            # mirrored copies along z: no seams, the same content near the planes
            stack = np.concatenate([ctx.volume if k % 2 == 0 else ctx.volume[::-1] for k in range(reps)])[:depth]
            path = str(Path(tmp) / f"vol{depth}.zarr")
            arr = zarr.create_array(
                store=path, shape=stack.shape, dtype=stack.dtype, chunks=(64, 64, 64), overwrite=True
            )
            arr[...] = stack
            del stack
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--rss-child", path, strokes_file],
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(out.stdout.strip().splitlines()[-1])
            peaks.append(res["peak"])
            shape = "x".join(map(str, res["shape"]))
            base = f" | ratio to the first {res['peak'] / peaks[0]:.2f} (target ~1)" if len(peaks) > 1 else ""
            ok = "OK" if res["peak"] <= 3 << 30 else "MISSED"
            print(
                f"peak RSS, zarr volume {shape} ({np.prod(res['shape']) * 2 / 2**20:.0f} MiB on disk uncompressed): "
                f"{res['peak'] / 2**30:.2f} GiB for a fresh process (imports included) running cold stroke, warm "
                f"stroke, {RSS_SLICES} next slices ({res['seconds']:.1f} s) (target <= 3 GiB) {ok}{base}",
                flush=True,
            )


def make_volume(shape: tuple[int, int, int], cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic volume and its ground truth (kept in ``cache_dir`` if given: making them takes ~30 s)."""
    from ilastik_widget.datasets import synthetic_cells

    name = "x".join(map(str, shape))
    if cache_dir is not None and os.path.exists(os.path.join(cache_dir, f"volume_{name}.npy")):
        return np.load(os.path.join(cache_dir, f"volume_{name}.npy")), np.load(
            os.path.join(cache_dir, f"truth_{name}.npy")
        )
    img, truth = synthetic_cells(shape, seed=3)
    vol = (np.clip(img, 0, None) * 4000 + 100).astype(np.uint16)
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
        np.save(os.path.join(cache_dir, f"volume_{name}.npy"), vol)
        np.save(os.path.join(cache_dir, f"truth_{name}.npy"), truth)
    return vol, truth


def per_feature_rows(ctx: Context) -> None:
    """Where a plane's time goes: ``plane_features`` of one xy plane (no cache) for each selected (feature, scale)
    alone, against the 2D filter bank of that cell on the same image; the whole selection first."""
    z = ctx.point[0]

    def row(sel: FeatureSelection, name: str) -> None:
        o, b, oc, bc, osys = alternate(
            lambda: plane_features(ctx.volume, 0, z, sel), lambda: bank_2d_of(ctx, sel), ctx.repeats
        )
        Row(name, o, b, "plane_features, one xy plane", "2D bank on that image", None, oc, bc, osys).print()

    row(ctx.selection, "all features")
    for feature, scale in sorted(ctx.selection.selected):
        row(FeatureSelection(frozenset([(feature, scale)])), f"{feature} {scale:g}")


def bank_2d_of(ctx: Context, sel: FeatureSelection) -> None:
    compute_features(ctx.volume[ctx.point[0]], sel)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (median)")
    p.add_argument("--shape", type=int, nargs=3, default=(120, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--rss-depths", type=int, nargs="*", default=None, help="volume depths of the RSS rows")
    p.add_argument("--rss-only", action="store_true", help="only the peak RSS rows")
    p.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help="keep the synthetic volume in this directory between runs")
    p.add_argument(
        "--per-feature", action="store_true", help="only: one xy plane per (feature, scale) vs the 2D bank of that cell"
    )
    args = p.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return 0
    import cv2

    t0 = time.perf_counter()
    vol, truth = make_volume(tuple(args.shape), args.cache_dir)
    print(
        f"cores: {CORES}, OpenCV {cv2.__version__}, volume {vol.shape} {vol.dtype} made in "
        f"{time.perf_counter() - t0:.0f} s, repeats {args.repeats}, load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    ctx = Context(vol, truth, FeatureSelection.all(), tuple(s // 2 for s in vol.shape), args.repeats)
    if args.per_feature:
        per_feature_rows(ctx)
        return 0
    ok = True
    for row in [] if args.rss_only else ROWS:
        ok &= row(ctx).print()
    depths = args.rss_depths if args.rss_depths is not None else [vol.shape[0], 2 * vol.shape[0]]
    rss_rows(ctx, depths)
    print(f"load avg {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
