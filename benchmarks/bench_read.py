"""Reading a 256^3 volume over loopback http: ``open_source`` against tensorstore's own read of the same URL.

Run: ``python benchmarks/bench_read.py`` (about a minute on 2 cores; ``--reps N`` for more repetitions, ``--size N``
for an N^3 volume).

For each format (Neuroglancer precomputed with 64^3 chunks, sharded zarr v3 with 128^3 shards of 64^3 chunks, N5
with 64^3 blocks) the volume is served by a threaded http server on 127.0.0.1 and read whole, from a cold cache
each time (a fresh open), by:

* the baseline: ``tensorstore.open({"driver": ..., "kvstore": {"driver": "http", ...}}).read()`` in a new context
  with the same cache pool size as ``open_source`` uses (without one, tensorstore reads a shard's index again for
  every chunk in it);
* ``open_source(url)[...]`` (the source's direct read, which batch prediction's block tasks use too) and
  ``open_source(url).array.compute()`` (through the source's Dask array, as a user's own Dask code reads it).

Prints the median time and throughput of each, the ratio to the baseline (target >= 0.8x for open_source's reads;
the Dask reads for the record) and the number of http
requests one read made (metadata included), alternating the readers repetition by repetition so that both see the
same machine load.

The server runs in its own process, as a real server does (``--server-in-process`` runs it on a thread of the
benchmark's process instead: then every request it answers also holds the readers' interpreter lock, which charges
format detection's parallel metadata probes, about 1 ms each, to the reader).
"""

from __future__ import annotations

import argparse
import multiprocessing
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
from ilastik_widget.io.tensorstore_source import DEFAULT_CACHE_BYTES

SHAPE = (256, 256, 256)


def _serve(root: str, conn) -> None:
    """Child process: serve ``root`` until told to stop; answer "clear" and "count" for the request log."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from loopback_http import LoopbackServer

    with LoopbackServer(root) as srv:
        conn.send(srv.url)
        while True:
            command = conn.recv()
            if command == "clear":
                srv.clear()
                conn.send(None)
            elif command == "count":
                with srv.lock:
                    conn.send(len(srv.requests))
            else:
                return


class ServerProcess:
    """:class:`LoopbackServer` in a process of its own, with the same ``url``, ``clear()`` and request count."""

    def __init__(self, root: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(str(root), child), daemon=True)
        self._proc.start()
        self.url = self._conn.recv()

    def clear(self) -> None:
        self._conn.send("clear")
        self._conn.recv()

    @property
    def n_requests(self) -> int:
        self._conn.send("count")
        return int(self._conn.recv())

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)


class ServerThread(LoopbackServer):
    """:class:`LoopbackServer` on a thread of this process, with the request count of :class:`ServerProcess`."""

    @property
    def n_requests(self) -> int:
        with self.lock:
            return len(self.requests)

    def __enter__(self) -> ServerThread:
        return self


def baseline_spec(fmt: str, url: str) -> dict:
    """tensorstore's spec for the URL, with the caching open_source configures (cached data assumed unchanged
    while the store is open, instead of revalidated with the server on every access)."""
    kv = {"driver": "http", "base_url": url + ("/s0" if fmt == "n5" else "")}  # the N5 group's full resolution
    spec = {"kvstore": kv, "recheck_cached_data": "open", "recheck_cached_metadata": "open"}
    if fmt == "precomputed":
        return {**spec, "driver": "neuroglancer_precomputed", "scale_index": 0}
    return {**spec, "driver": fmt}


def _readers(fmt: str, url: str) -> dict:
    """(open, read) per reader; each read returns the volume in z, y, x order."""

    def ts_open():
        context = ts.Context({"cache_pool": {"total_bytes_limit": DEFAULT_CACHE_BYTES}})
        return ts.open(baseline_spec(fmt, url), read=True, context=context).result()

    def ts_read(store):
        out = store.read().result()
        # tensorstore shows the stored order: x first for precomputed (with a channel axis) and N5
        return out[..., 0].T if fmt == "precomputed" else out.T if fmt == "n5" else out

    return {
        "tensorstore.open(url).read()": (ts_open, ts_read),
        "open_source(url)[...]": (lambda: open_source(url), lambda src: src[...]),
        "open_source(url).array.compute()": (lambda: open_source(url), lambda src: src.array.compute()),
        # the format named, as Neuroglancer spells it: no detection requests
        f"open_source('{fmt}://' + url)[...]": (lambda: open_source(f"{fmt}://{url}"), lambda src: src[...]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--server-in-process", action="store_true", help="serve from a thread of this process")
    parser.add_argument("--size", type=int, default=SHAPE[0], help="side of the cubic volume (default 256)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shape = (args.size,) * 3
    volume = rng.integers(0, 255, shape, dtype=np.uint8)
    mib = volume.nbytes / 2**20
    print(f"volume {shape} uint8 ({mib:.0f} MiB), {args.reps} cold reads each, medians")
    print("open + read: a new open each time (metadata requests and format detection included); read: the read alone")
    where = "a thread of this process" if args.server_in_process else "a process of its own"
    print("(ratio: the baseline's time over the reader's; requests: http requests of one open + read)")
    print(f"the http server runs in {where}\n")
    # the target is for open_source's reads; reads through the source's Dask array are printed for the record (dask's
    # own scheduling adds about 3 ms per compute, a fifth of a 16 MiB read here)
    worst = {"open + read": 1e9, "read": 1e9}
    worst_dask = {"open + read": 1e9, "read": 1e9}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_precomputed(root / "precomputed", volume, chunk=(64, 64, 64), n_levels=1)
        write_zarr3_sharded(root / "zarr3", volume, (128, 128, 128), (64, 64, 64))
        write_n5(root / "n5", volume, n_levels=1, block=(64, 64, 64))
        header = (
            f"{'format':<12} {'reader':<38} {'open+read (s)':>14} {'MiB/s':>7} {'ratio':>6}"
            f" {'read (s)':>9} {'MiB/s':>7} {'ratio':>6} {'requests':>9}"
        )
        print(header)
        print("-" * len(header))
        server: ServerThread | ServerProcess = ServerThread(root) if args.server_in_process else ServerProcess(root)
        with server as srv:
            for fmt in ("precomputed", "zarr3", "n5"):
                readers = _readers(fmt, f"{srv.url}/{fmt}")
                names = list(readers)
                total: dict[str, list[float]] = {n: [] for n in names}
                read: dict[str, list[float]] = {n: [] for n in names}
                requests: dict[str, int] = {}
                for rep in range(args.reps):
                    for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each first in turn
                        open_, read_ = readers[name]
                        srv.clear()
                        t0 = time.perf_counter()
                        opened = open_()
                        t1 = time.perf_counter()
                        got = read_(opened)
                        t2 = time.perf_counter()
                        requests[name] = srv.n_requests
                        assert np.array_equal(got, volume)
                        total[name].append(t2 - t0)
                        read[name].append(t2 - t1)
                base_total, base_read = statistics.median(total[names[0]]), statistics.median(read[names[0]])
                for name in names:
                    tt, tr = statistics.median(total[name]), statistics.median(read[name])
                    print(
                        f"{fmt:<12} {name:<38} {tt:14.3f} {mib / tt:7.0f} {base_total / tt:5.2f}x"
                        f" {tr:9.3f} {mib / tr:7.0f} {base_read / tr:5.2f}x {requests[name]:9d}"
                    )
                    if name != names[0]:
                        w = worst_dask if ".array.compute()" in name else worst
                        w["open + read"] = min(w["open + read"], base_total / tt)
                        w["read"] = min(w["read"], base_read / tr)
                print()
    for k, v in worst.items():
        print(f"open_source's reads, lowest ratio to tensorstore's own {k}: {v:.2f}x (target >= 0.8x)")
    for k, v in worst_dask.items():
        print(f"through the source's Dask array, lowest ratio to tensorstore's own {k}: {v:.2f}x (for the record)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
