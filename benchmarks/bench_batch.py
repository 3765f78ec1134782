"""Batch prediction on Dask: throughput, scaling with workers, peak memory against volume size.

Run: ``python benchmarks/bench_batch.py`` (about 5 minutes on 2 cores; ``--quick`` for a smaller run).

Prints every figure beside its baseline from the same run:

1. throughput (voxels/s) of ``predict_batch`` (local threads, OME-Zarr in and out, default blocks: ranges of whole
   planes whose features are streamed along z) against the straightforward way (features of the whole volume in
   memory, then the classifier on every voxel), and the largest difference between their probabilities; target
   >= 0.9x;
2. time on a ``LocalCluster`` with 2 worker processes against 1 (one thread each); target >= 1.7x;
3. peak resident memory (VmHWM of the worker processes, reset before the run) predicting a volume 8x larger than
   another: with the same blocks (64^3, features up to scale 1.6), shown with the filter bank's buffer pool switched
   off (the batch machinery alone) and with its default (a cache of reusable buffers, bounded by a fixed cap, which
   fills up over more blocks of more distinct shapes); and with the default blocks (ranges of 64 whole planes) and all
   features for two blocks against a volume 8x deeper (the streamed planes are the same size). Target: about the
   same.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ilastik_widget.core.features import FeatureSelection, compute_features, halo
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.batch import predict_batch

REPO = Path(__file__).resolve().parents[1]


def write_ome(path: Path, data: np.ndarray, chunks=(64, 64, 64)) -> str:
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    a = g.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks)
    a[...] = data
    g.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]}],
        }
    ]
    return str(path)


def tiled_volume(shape, seed=0) -> np.ndarray:
    """A big synthetic volume made of tiles of one synthetic volume (cheap to make, realistic content)."""
    tile, _ = synthetic_cells((64, 128, 128), seed=seed)
    reps = [int(np.ceil(s / t)) for s, t in zip(shape, tile.shape)]
    flips = np.tile(tile, reps)
    return np.ascontiguousarray(flips[tuple(slice(0, s) for s in shape)])


def _cluster(n_workers: int, **extra_env):
    from distributed import Client, LocalCluster

    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra_env}
    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0", env=env, memory_limit="8GiB"
    )
    return cluster, Client(cluster)


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM (peak RSS) to the current RSS


def _read_mem():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller volumes")
    ap.add_argument("--parts", default="1234", help="which parts to run, e.g. 2 or 13 (default 1234)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        run(tmp, args.quick, args.parts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _workers_cpu(client) -> float:
    return sum(client.run(_cpu).values())


def run(tmp: Path, quick: bool, parts: str = "1234") -> None:
    sel = FeatureSelection.default()
    print(
        f"features: all {sel.n_channels(3)} channels (3D), halo {halo(sel)} px; cores: {os.cpu_count()}; "
        f"load average at start (1/5/15 min): {_load()}"
    )
    print("wall times depend on what else runs on the machine; CPU seconds (user+sys) are given beside them")

    # ---- train a session on a small volume with simulated strokes
    train_img, truth = synthetic_cells((64, 128, 128), seed=0)
    session = Session(train_img, features=sel, seed=0)
    for st in simulated_strokes(truth, n_per_class=6, radius=2, seed=0):
        session.add_stroke(**st)
    session.train()
    model = session.model
    print(f"classifier: {model!r}")

    # ---- 1. throughput against whole-volume features then predict
    if "1" in parts:
        _part1(tmp, quick, sel, session, model)
    if "2" in parts:
        _part2(tmp, quick, session)
    if "3" in parts:
        _part3(tmp, quick, sel, train_img, truth)
    if "4" in parts:
        _part4(tmp, quick, sel, session)
    print(f"\nload average at the end: {_load()}")


def _part1(tmp, quick, sel, session, model, repeats=3):
    shape = (64, 128, 256) if quick else (64, 256, 256)
    vol = tiled_volume(shape, seed=1)
    nvox = int(np.prod(shape))
    src = write_ome(tmp / "vol.ome.zarr", vol)
    feat_bytes = nvox * sel.n_channels(3) * 4
    out: dict = {}

    def baseline():
        f = compute_features(vol, sel)
        out["ref"] = model.predict_proba(f.reshape(-1, f.shape[-1])).reshape(*shape, -1)

    def batch():
        predict_batch(session, src, tmp / "out1.ome.zarr", outputs=("probabilities",), progress=False, overwrite=True)

    runs = []
    baseline(), batch()  # warm-up: imports, thread pools, kept buffers
    for _ in range(repeats):  # alternately, so that load from elsewhere hits both alike
        t0, c0 = time.perf_counter(), _cpu()
        baseline()
        t1, c1 = time.perf_counter(), _cpu()
        batch()
        runs.append((t1 - t0, c1 - c0, time.perf_counter() - t1, _cpu() - c1))
    t_base, c_base, t_batch, c_batch = (float(np.median([r[i] for r in runs])) for i in range(4))
    p_batch = np.moveaxis(zarr.open_array(str(tmp / "out1.ome.zarr/probabilities/0"))[...], 0, -1)
    diff = float(np.abs(p_batch - out["ref"]).max())
    print(
        f"\n[1] throughput, volume {shape} = {nvox / 1e6:.1f} Mvoxels, medians of {repeats} alternating runs after a warm-up"
    )
    print(
        f"    baseline (whole-volume features, then predict; {feat_bytes / 2**30:.2f} GiB of features): "
        f"{t_base:.1f} s = {nvox / t_base / 1e6:.3f} Mvoxels/s, CPU {c_base:.1f} s"
    )
    print(
        f"    predict_batch (local threads, OME-Zarr in/out, blocks {_blocks(session, src)}): "
        f"{t_batch:.1f} s = {nvox / t_batch / 1e6:.3f} Mvoxels/s, CPU {c_batch:.1f} s  "
        f"-> {t_base / t_batch:.2f}x the baseline's throughput (CPU {c_base / c_batch:.2f}x)"
    )
    print(f"    max |p_batch - p_baseline| = {diff:.2e}; target >= 0.9x the baseline's throughput")


def _blocks(session, path) -> str:
    """The processing blocks predict_batch chooses for the input at ``path`` (default chunks)."""
    from ilastik_widget.core.model import TrainedModel
    from ilastik_widget.io.batch import _plan
    from ilastik_widget.io.sources import open_source

    proc, _ = _plan(open_source(path), TrainedModel.from_session(session), None, 2**30)
    return " x ".join(str(c[0]) + (f" ({len(c)})" if len(c) > 1 else "") for c in proc)


def _part2(tmp, quick, session):
    # ---- 2. 1 vs 2 worker processes
    scale_shape = (64, 128, 512) if quick else (64, 256, 512)
    chunks = (64, 128, 128)
    svol = tiled_volume(scale_shape, seed=2)
    ssrc = write_ome(tmp / "svol.ome.zarr", svol)
    res = {}
    for n in (1, 2):
        cluster, client = _cluster(n)
        try:
            predict_batch(session, svol[:, :128, :128], tmp / f"warm{n}.ome.zarr", client=client, progress=False)
            best = None
            for _ in range(2):  # best of two: other processes on the machine add noise to wall times
                c0 = client.run(_cpu)
                t0 = time.perf_counter()
                predict_batch(
                    session,
                    ssrc,
                    tmp / f"scale{n}.ome.zarr",
                    client=client,
                    chunks=chunks,
                    progress=False,
                    overwrite=True,
                )
                dt = time.perf_counter() - t0
                per_worker = [v - c0[k] for k, v in client.run(_cpu).items()]
                if best is None or dt < best[0]:
                    best = (dt, sum(per_worker), per_worker)
            res[n] = best
        finally:
            client.close()
            cluster.close()
    svox = int(np.prod(scale_shape))
    (t1, c1, _), (t2, c2, per2) = res[1], res[2]
    print(
        f"\n[2] LocalCluster scaling, volume {scale_shape} ({svox / 1e6:.1f} Mvoxels), blocks {chunks}, "
        f"1 thread per worker, best of 2 runs; load average now {_load()}"
    )
    print(f"    1 worker : {t1:.1f} s = {svox / t1 / 1e6:.3f} Mvoxels/s, worker CPU {c1:.1f} s  (baseline)")
    print(
        f"    2 workers: {t2:.1f} s = {svox / t2 / 1e6:.3f} Mvoxels/s, worker CPU {c2:.1f} s  "
        f"(per worker {', '.join(f'{c:.1f}' for c in per2)} s) -> speedup {t1 / t2:.2f}x (target >= 1.7x); "
        f"CPU per voxel 2 vs 1 workers: {c2 / c1:.2f}"
    )


def _part3(tmp, quick, sel, train_img, truth):
    # ---- 3. peak memory: a volume 8x larger, same blocks
    # (features up to scale 1.6 here, halo ~10, so that 64^3 blocks are efficient and this part stays short)
    msel = FeatureSelection.none()
    for feat in (
        "gaussian_smoothing",
        "laplacian_of_gaussian",
        "gaussian_gradient_magnitude",
        "difference_of_gaussians",
        "structure_tensor_eigenvalues",
        "hessian_of_gaussian_eigenvalues",
    ):
        for sc in (0.7, 1.0, 1.6):
            msel = msel.with_feature(feat, sc, True)
    msession = Session(train_img, features=msel, seed=0)
    for st in simulated_strokes(truth, n_per_class=6, radius=2, seed=0):
        msession.add_stroke(**st)
    msession.train()
    small = (64, 128, 128) if quick else (64, 256, 256)
    large = tuple(2 * s for s in small)
    chunks = (64, 64, 64)
    paths = {}
    for name, shp in (("small", small), ("large", large)):
        paths[name] = write_ome(tmp / f"mem_{name}.ome.zarr", tiled_volume(shp, seed=3))
    peaks = {}
    settings = [
        ("filter workspace off", {"ILASTIK_WIDGET_FEATURE_WORKSPACE_MB": "0"}),
        ("default filter workspace (reused buffers, work and result buffers capped at min(2 GiB, RAM/8) each)", {}),
    ]
    for label, env in settings:
        for name, shp in (("small", small), ("large", large)):
            mem, dt = _peak_run(msession, paths[name], tmp / f"mem_{name}_out.ome.zarr", env, chunks)
            peaks[label, name] = (mem, dt, int(np.prod(shp)))
    print(
        f"\n[3] peak RSS per worker process (2 workers x 1 thread, {msel.n_channels(3)} feature channels up to "
        f"scale 1.6, blocks {chunks}, VmHWM reset before the run)"
    )
    for label, _ in settings:
        (ps, ts, vs), (pl, tl, vl) = peaks[label, "small"], peaks[label, "large"]
        print(f"    {label}:")
        print(
            f"      small volume {small} ({vs / 1e6:.1f} Mvoxels): peak {ps / 2**20:.0f} MiB in {ts:.1f} s  (baseline)"
        )
        print(
            f"      large volume {large} ({vl / 1e6:.1f} Mvoxels = 8x): peak {pl / 2**20:.0f} MiB in {tl:.1f} s  "
            f"-> ratio {pl / ps:.2f} (target ~1)"
        )
    print(
        f"    whole-volume features of the large volume alone would need "
        f"{vl * msel.n_channels(3) * 4 / 2**30:.1f} GiB ({vl * sel.n_channels(3) * 4 / 2**30:.1f} GiB with all "
        f"61 channels)"
    )


def _peak_run(session, path: str, out: Path, env: dict, chunks=None) -> tuple[int, float]:
    """Peak RSS of the busiest of 2 fresh worker processes (``env`` set) and the wall time of ``predict_batch`` of
    ``path``: after a small warm-up run, with VmHWM reset before the timed one."""
    cluster, client = _cluster(2, **env)
    try:
        warm = out.with_name("warm_" + out.name)
        predict_batch(session, np.zeros((16, 32, 32), np.float32), warm, client=client, progress=False, overwrite=True)
        client.run(_reset_peak)
        t0 = time.perf_counter()
        predict_batch(session, path, out, client=client, chunks=chunks, progress=False, overwrite=True)
        dt = time.perf_counter() - t0
        return max(m["VmHWM"] for m in client.run(_read_mem).values()), dt
    finally:
        client.close()
        cluster.close()


def _part4(tmp, quick, sel, session):
    # ---- 4. peak memory with the default blocks (whole planes streamed along z), all features: a volume 8x deeper
    # two blocks of whole planes (one per worker) against sixteen: the same blocks, 8x the volume
    small = (128, 128, 128) if quick else (128, 256, 256)
    deep = (8 * small[0], *small[1:])
    paths = {
        name: write_ome(tmp / f"mem4_{name}.ome.zarr", tiled_volume(shp, seed=4))
        for name, shp in (("small", small), ("deep", deep))
    }
    settings = [
        ("filter workspace off", {"ILASTIK_WIDGET_FEATURE_WORKSPACE_MB": "0"}),
        ("default filter workspace", {}),
    ]
    peaks = {}
    for label, env in settings:
        for name, shp in (("small", small), ("deep", deep)):
            mem, dt = _peak_run(session, paths[name], tmp / f"mem4_{name}_out.ome.zarr", env)
            peaks[label, name] = (mem, dt, int(np.prod(shp)), _blocks(session, paths[name]))
    print(
        f"\n[4] peak RSS per worker process, default blocks (whole planes, features streamed along z), all "
        f"{sel.n_channels(3)} features, 2 workers x 1 thread, VmHWM reset before the run"
    )
    for label, _ in settings:
        (ps, ts, vs, bs), (pd, td, vd, bd) = peaks[label, "small"], peaks[label, "deep"]
        print(f"    {label}:")
        print(
            f"      volume {small} ({vs / 1e6:.1f} Mvoxels, blocks {bs}): peak {ps / 2**20:.0f} MiB in {ts:.1f} s  (baseline)"
        )
        print(
            f"      volume {deep} ({vd / 1e6:.1f} Mvoxels = 8x, blocks {bd}): peak {pd / 2**20:.0f} MiB in {td:.1f} s "
            f"-> ratio {pd / ps:.2f} (target ~1)"
        )
    print(f"    whole-volume features of the deep volume alone would need {vd * sel.n_channels(3) * 4 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
