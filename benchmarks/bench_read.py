"""Reading a 256^3 volume over loopback http: ``open_source`` against tensorstore's own read of the same URL.

Run: ``python benchmarks/bench_read.py`` (about a minute on 2 cores; ``--reps N`` for more repetitions).

For each format (Neuroglancer precomputed with 64^3 chunks, sharded zarr v3 with 128^3 shards of 64^3 chunks, N5
with 64^3 blocks) the volume is served by a threaded http server on 127.0.0.1 and read whole, from a cold cache
each time (a fresh open), by:

* the baseline: ``tensorstore.open({"driver": ..., "kvstore": {"driver": "http", ...}}).read()``;
* ``open_source(url)[...]`` (the source's direct read) and ``open_source(url).array.compute()`` (through dask, as
  batch prediction reads).

Prints the median time and throughput of each and the ratio to the baseline (target >= 0.8x), alternating the
readers repetition by repetition so that both see the same machine load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tensorstore as ts
from format_fixtures import write_n5, write_precomputed, write_zarr3_sharded
from loopback_http import LoopbackServer

from ilastik_widget.io.sources import open_source

SHAPE = (256, 256, 256)


def baseline_spec(fmt: str, url: str) -> dict:
    kv = {"driver": "http", "base_url": url + ("/s0" if fmt == "n5" else "")}  # the N5 group's full resolution
    if fmt == "precomputed":
        return {"driver": "neuroglancer_precomputed", "kvstore": kv, "scale_index": 0}
    return {"driver": {"zarr3": "zarr3", "n5": "n5"}[fmt], "kvstore": kv}


def read_baseline(fmt: str, url: str) -> np.ndarray:
    store = ts.open(baseline_spec(fmt, url), read=True).result()  # a new default context: cold cache
    return store.read().result()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, SHAPE, dtype=np.uint8)
    mib = volume.nbytes / 2**20
    print(f"volume {SHAPE} uint8 ({mib:.0f} MiB), {args.reps} cold reads each, medians\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_precomputed(root / "precomputed", volume, chunk=(64, 64, 64), n_levels=1)
        write_zarr3_sharded(root / "zarr3", volume, (128, 128, 128), (64, 64, 64))
        write_n5(root / "n5", volume, n_levels=1, block=(64, 64, 64))
        header = f"{'format':<12} {'reader':<34} {'time (s)':>9} {'MiB/s':>8} {'ratio':>7}"
        print(header)
        print("-" * len(header))
        worst = None
        with LoopbackServer(root) as srv:
            for fmt in ("precomputed", "zarr3", "n5"):
                url = f"{srv.url}/{fmt}"
                times: dict[str, list[float]] = {"tensorstore": [], "direct": [], "dask": []}
                for _ in range(args.reps):
                    t, out = timed(lambda f=fmt, u=url: read_baseline(f, u))
                    times["tensorstore"].append(t)
                    # tensorstore shows the stored order: x first for precomputed (with a channel axis) and N5
                    stored = out[..., 0].T if fmt == "precomputed" else out.T if fmt == "n5" else out
                    assert np.array_equal(stored, volume)
                    t, got = timed(lambda u=url: open_source(u)[...])
                    times["direct"].append(t)
                    assert np.array_equal(got, volume)
                    t, got = timed(lambda u=url: open_source(u).array.compute())
                    times["dask"].append(t)
                    assert np.array_equal(got, volume)
                base = statistics.median(times["tensorstore"])
                rows = [
                    ("tensorstore.open(url).read()", base),
                    ("open_source(url)[...]", statistics.median(times["direct"])),
                    ("open_source(url).array.compute()", statistics.median(times["dask"])),
                ]
                for label, t in rows:
                    ratio = base / t
                    print(f"{fmt:<12} {label:<34} {t:9.3f} {mib / t:8.1f} {ratio:6.2f}x")
                    if label != rows[0][0]:
                        worst = ratio if worst is None else min(worst, ratio)
                print()
        print(f"lowest ratio to tensorstore's own read: {worst:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
