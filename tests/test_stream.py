"""Tests of ilastik_widget.core.stream: planes streamed along z == the whole volume's features at those planes.

The reference is ``compute_features`` on the whole volume (itself tested against float64 references in
test_features.py). Tolerance per channel as in test_planes.py: max error <= 1e-5 (1e-4 for eigenvalues) of that
channel's largest magnitude + 4e-6 of the data's largest magnitude (float32 sums taken in another order).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilastik_widget.core import filters, workspace
from ilastik_widget.core.features import FEATURES, SCALES, FeatureSelection, compute_features, halo, is_valid
from ilastik_widget.core.stream import stream_bytes, stream_features


def assert_close(got: np.ndarray, ref: np.ndarray, names: list[str], data_max: float) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    axes = tuple(range(ref.ndim - 1))
    scale = np.abs(ref).max(axis=axes) if ref.size else np.zeros(ref.shape[-1])
    err = np.abs(got - ref).max(axis=axes) if ref.size else np.zeros(ref.shape[-1])
    for i, name in enumerate(names):
        tol = (1e-4 if "eigenvalues" in name else 1e-5) * scale[i] + 4e-6 * data_max
        assert err[i] <= tol, f"{name}: max error {err[i]:.3g} > {tol:.3g}"


def streamed(image, sel, **kw) -> tuple[list[int], np.ndarray]:
    items = list(stream_features(image, sel, **kw))
    return [z for z, _ in items], np.stack([f for _, f in items])


def structured_volume(rng, shape):
    """Noise plus a bright box and a sloped background with an offset: edges, blobs and a mean to leak."""
    z, y, x = np.indices(shape, dtype=np.float64)
    vol = 200.0 + 3.0 * z - 0.5 * y + rng.random(shape) * 40.0
    vol[shape[0] // 3 : 2 * shape[0] // 3, 5:15, 8:25] += 150.0
    return vol.astype(np.float32)


class CountingArray:
    """A lazily read array that records the z planes every read touches (what zarr or dask would fetch)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.planes: list[int] = []

    def __getitem__(self, index):
        self.planes.extend(range(*index[0].indices(self.shape[0])))
        return self.array[index]


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def volume_and_features(rng):
    vol = structured_volume(rng, (23, 30, 35))  # shorter than the structure tensor's reach at scale 10: mirrors
    sel = FeatureSelection.all()
    return vol, sel, compute_features(vol, sel)


@pytest.mark.parametrize("step", [1, 3, 8])
def test_stream_equals_whole_volume_all_features(volume_and_features, step):
    vol, sel, whole = volume_and_features
    zs, got = streamed(vol, sel, step=step)
    assert zs == list(range(vol.shape[0]))
    assert_close(got, whole, sel.channel_names(3), float(np.abs(vol).max()))


@pytest.mark.parametrize("z", [(0, 1), (5, 12), (22, 23), slice(7, None), (4, 4)])
def test_z_ranges_and_regions(volume_and_features, z):
    vol, sel, whole = volume_and_features
    names, data_max = sel.channel_names(3), float(np.abs(vol).max())
    start, stop = z.indices(vol.shape[0])[:2] if isinstance(z, slice) else z
    for region in [None, (slice(0, 7), slice(20, 35)), (slice(10, 11), slice(3, 4))]:
        items = list(stream_features(vol, sel, z=z, region=region, step=4))
        assert [i for i, _ in items] == list(range(start, stop))
        if items:
            crop = (slice(None), slice(None)) if region is None else region
            assert_close(
                np.stack([f for _, f in items]), whole[start:stop][(slice(None),) + tuple(crop)], names, data_max
            )


def test_integer_volume_and_anisotropic_voxels(rng):
    vol = (rng.random((17, 26, 29)) * 60000).astype(np.uint16)
    sel = FeatureSelection.all()
    for voxel_size in (None, (3.5, 1.0, 1.25), (0.5, 2.0, 1.0)):
        whole = compute_features(vol, sel, voxel_size=voxel_size)
        _, got = streamed(vol, sel, voxel_size=voxel_size, step=5)
        assert_close(got, whole, sel.channel_names(3), 60000.0)


def test_scales_in_2d_and_mode_2d(rng):
    vol = structured_volume(rng, (14, 28, 31))
    sel = FeatureSelection.all().with_2d(1.0, True).with_2d(5.0, True)
    whole = compute_features(vol, sel)
    _, got = streamed(vol, sel, step=3)
    assert_close(got, whole, sel.channel_names(3), float(np.abs(vol).max()))
    flat = compute_features(vol, sel, mode="2d")
    _, got = streamed(vol, sel, mode="2d", z=(2, 9))
    assert_close(got, flat[2:9], FeatureSelection(sel.selected).channel_names(2), float(np.abs(vol).max()))


def test_multichannel(rng):
    vol = np.stack([structured_volume(rng, (12, 26, 30)), rng.random((12, 26, 30)).astype(np.float32)], axis=1)
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 1.6, True).with_feature(f, 3.5, True)
    names, data_max = sel.channel_names(3, 2), float(np.abs(vol).max())
    whole = compute_features(vol, sel, channel_axis=1)  # (z, c, y, x)
    _, got = streamed(vol, sel, channel_axis=1, step=4)
    assert got.shape[-1] == 2 * sel.n_channels(3)
    assert_close(got, whole, names, data_max)
    last = np.ascontiguousarray(np.moveaxis(vol, 1, -1))
    _, got = streamed(last, sel, channel_axis=-1, z=(3, 10), region=(slice(4, 20), slice(0, 9)))
    assert_close(got, whole[3:10, 4:20, 0:9], names, data_max)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12)),
    cells=st.sets(
        st.sampled_from([(f, s) for f in FEATURES for s in SCALES if is_valid(f, s)]), min_size=1, max_size=5
    ),
    in_2d=st.sets(st.sampled_from(SCALES), max_size=2),
    voxel=st.one_of(st.none(), st.tuples(*[st.sampled_from([0.5, 1.0, 2.0, 4.0])] * 3)),
    step=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_random_small_volumes(shape, cells, in_2d, voxel, step, seed, data):
    vol = (np.random.default_rng(seed).random(shape) * 10.0).astype(np.float32)
    sel = FeatureSelection(frozenset(cells), frozenset(in_2d))
    start = data.draw(st.integers(0, shape[0] - 1))
    stop = data.draw(st.integers(start + 1, shape[0]))
    whole = compute_features(vol, sel, voxel_size=voxel)
    _, got = streamed(vol, sel, z=(start, stop), voxel_size=voxel, step=step)
    assert_close(got, whole[start:stop], sel.channel_names(3), 10.0)


def test_reads_each_plane_once_within_the_halo(rng):
    vol = structured_volume(rng, (60, 20, 22))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.6, True)
    sel = sel.with_feature("gaussian_smoothing", 0.7, True)
    h = halo(sel, 3)[0]
    arr = CountingArray(vol)
    zs, got = streamed(arr, sel, z=(20, 35), step=4)
    assert zs == list(range(20, 35))
    assert sorted(arr.planes) == list(range(20 - h, 35 + h))  # each plane of the range plus its halo, once
    assert_close(got, compute_features(vol, sel)[20:35], sel.channel_names(3), float(vol.max()))


def test_memory_does_not_grow_with_depth(rng, monkeypatch):
    """The buffers a stream holds at once are the same for a volume twice as deep (rings, not the volume)."""
    monkeypatch.setattr(filters, "N_THREADS", 1)  # tasks one after the other: the same peak on every run
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 3.5, True)
    peaks = []
    for depth in (60, 120):  # both deeper than a step plus the halo on both sides (the rings at full size)
        vol = structured_volume(rng, (depth, 24, 26))
        live = {"now": 0, "peak": 0}
        get, put = workspace.ARENA.get, workspace.ARENA.put

        def counting_get(shape, get=get, live=live):
            a = get(shape)
            live["now"] += a.nbytes
            live["peak"] = max(live["peak"], live["now"])
            return a

        def counting_put(a, put=put, live=live):
            if a is not None:
                live["now"] -= a.nbytes
            put(a)

        monkeypatch.setattr(workspace.ARENA, "get", counting_get)
        monkeypatch.setattr(workspace.ARENA, "put", counting_put)
        for _ in stream_features(vol, sel, step=4):
            pass
        monkeypatch.setattr(workspace.ARENA, "get", get)
        monkeypatch.setattr(workspace.ARENA, "put", put)
        assert live["now"] == 0  # everything given back
        peaks.append(live["peak"])
    assert peaks[0] == peaks[1] > 0
    assert peaks[0] <= stream_bytes((24, 26), sel, step=4)


def test_bad_input(rng):
    vol = structured_volume(rng, (6, 10, 11))
    sel = FeatureSelection.default()
    with pytest.raises(ValueError, match="volume"):
        next(stream_features(vol[0], sel))
    for z in [(0, 7), (3, 2), (-1, 2), "a", (1, 2, 3), slice(0, 4, 2)]:
        with pytest.raises(ValueError, match="z"):
            next(stream_features(vol, sel, z=z))
    for step in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="step"):
            next(stream_features(vol, sel, step=step))
    with pytest.raises(ValueError, match="region"):
        next(stream_features(vol, sel, region=(slice(0, 4, 2), slice(None))))
    bad = vol.copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        list(stream_features(bad, sel))


def test_blas_on_one_thread_from_any_thread(rng, monkeypatch):
    """The matrix products run on the filter threads with BLAS held at one thread (OpenBLAS's own threads would
    spin beside them), also when streams run in threads other than the main one (threadpoolctl lets only the thread
    that last set OpenBLAS's count set it again, and silently ignores the others)."""
    from concurrent.futures import ThreadPoolExecutor

    threadpoolctl = pytest.importorskip("threadpoolctl")
    from ilastik_widget.core import stream as stream_module

    def blas_threads() -> int:
        return max((i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"), default=0)

    before = blas_threads()
    if before < 2:
        pytest.skip("BLAS runs on one thread here anyway")
    seen = []
    sums = stream_module.Ring.sums

    def recording_sums(self, *args, **kwargs):
        seen.append(blas_threads())
        return sums(self, *args, **kwargs)

    monkeypatch.setattr(stream_module.Ring, "sums", recording_sums)
    vol = structured_volume(rng, (12, 20, 22))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.0, True)
    list(stream_features(vol, sel))  # the main thread first, as a session's first training would
    with ThreadPoolExecutor(1) as other:
        other.submit(lambda: list(stream_features(vol, sel))).result()
    assert seen and set(seen) == {1}
    assert blas_threads() == before  # given back afterwards
