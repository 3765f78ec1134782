"""Tests of ilastik_widget.core.planes: one plane of a volume == the whole volume's features at that plane.

The reference is ``compute_features`` on the whole volume (itself tested against float64 references in
test_features.py), taken at the plane. Tolerance, per channel: max error <= 1e-5 (1e-4 for eigenvalues) of
that channel's largest magnitude + 4e-6 of the data's largest magnitude: float32 rounding of sums taken in
another order (the plane engine sums planes with a matrix product, the volume path with OpenCV passes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilastik_widget.core import planes as planes_module
from ilastik_widget.core.features import FEATURES, SCALES, FeatureSelection, compute_features, halo, is_valid
from ilastik_widget.core.planes import GradientCache, SlabCache, plane_features, plane_slab, planes_features


def assert_plane_close(got: np.ndarray, ref: np.ndarray, names: list[str], data_max: float) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32
    axes = tuple(range(ref.ndim - 1))
    scale = np.abs(ref).max(axis=axes) if ref.size else np.zeros(ref.shape[-1])
    err = np.abs(got - ref).max(axis=axes) if ref.size else np.zeros(ref.shape[-1])
    for i, name in enumerate(names):
        tol = (1e-4 if "eigenvalues" in name else 1e-5) * scale[i] + 4e-6 * data_max
        assert err[i] <= tol, f"{name}: max error {err[i]:.3g} > {tol:.3g}"


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(2024)


def structured_volume(rng, shape):
    """Noise plus a bright box and a sloped background with an offset: edges, blobs and a mean to leak."""
    z, y, x = np.indices(shape, dtype=np.float64)
    vol = 200.0 + 3.0 * z - 0.5 * y + rng.random(shape) * 40.0
    vol[shape[0] // 3 : 2 * shape[0] // 3, 5:15, 8:25] += 150.0
    return vol.astype(np.float32)


def take(whole: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(whole, index, axis=axis)


# ---------------------------------------------------------------------------------------------
# plane == whole volume


@pytest.fixture(scope="module")
def volume_and_features(rng):
    vol = structured_volume(rng, (13, 36, 41))  # 13 planes: every scale above 1.6 mirrors repeatedly
    sel = FeatureSelection.all()
    return vol, sel, compute_features(vol, sel)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_planes_equal_whole_volume_all_features(volume_and_features, axis):
    vol, sel, whole = volume_and_features
    n = vol.shape[axis]
    names = sel.channel_names(3)
    for index in (0, 1, n // 2, n - 2, n - 1):
        got = plane_features(vol, axis, index, sel)
        assert_plane_close(got, take(whole, axis, index), names, float(np.abs(vol).max()))
    # negative indices count from the end
    np.testing.assert_array_equal(plane_features(vol, axis, -1, sel), plane_features(vol, axis, n - 1, sel))


def test_planes_of_integer_volume(rng):
    vol = (rng.random((9, 30, 33)) * 60000).astype(np.uint16)
    sel = FeatureSelection.all()
    whole = compute_features(vol, sel)
    for axis in range(3):
        got = plane_features(vol, axis, 4, sel)
        assert_plane_close(got, take(whole, axis, 4), sel.channel_names(3), 60000.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_sub_rectangles_equal_the_full_plane(volume_and_features, axis):
    vol, sel, _ = volume_and_features
    full = plane_features(vol, axis, 5, sel)
    (nu, nv) = full.shape[:2]
    for region in [
        (slice(0, 7), slice(0, 9)),  # corner: mirrored at two image borders
        (slice(nu - 6, nu), slice(3, nv - 2)),
        (slice(4, 9), slice(10, 30)),  # inside: the halo must be read
        (slice(2, 3), slice(5, 6)),  # one pixel
    ]:
        got = plane_features(vol, axis, 5, sel, region=region)
        assert_plane_close(got, full[region], sel.channel_names(3), float(np.abs(vol).max()))
    assert plane_features(vol, axis, 5, sel, region=(slice(3, 3), slice(0, 4))).shape == (0, 4, 61)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_anisotropic_planes_equal_whole_volume(rng, axis):
    vol = structured_volume(rng, (11, 30, 34))
    sel = FeatureSelection.all()
    voxel_size = (3.5, 1.0, 1.25)
    whole = compute_features(vol, sel, voxel_size=voxel_size)
    for index in (0, 3, vol.shape[axis] - 1):
        got = plane_features(vol, axis, index, sel, voxel_size=voxel_size)
        assert_plane_close(got, take(whole, axis, index), sel.channel_names(3), float(np.abs(vol).max()))


def test_multichannel_planes(rng):
    vol = np.stack([structured_volume(rng, (8, 26, 30)), rng.random((8, 26, 30)).astype(np.float32)], axis=1)
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 1.6, True).with_feature(f, 3.5, True)
    whole = compute_features(vol, sel, channel_axis=1)  # (z, c, y, x)
    names = sel.channel_names(3, 2)
    for axis in range(3):
        got = plane_features(vol, axis, 2, sel, channel_axis=1)
        assert got.shape[-1] == 2 * sel.n_channels(3)
        assert_plane_close(got, take(whole, axis, 2), names, float(np.abs(vol).max()))


def test_scales_in_2d_planes(rng):
    vol = structured_volume(rng, (10, 28, 31))
    sel = FeatureSelection.all().with_2d(1.0, True).with_2d(5.0, True)
    whole = compute_features(vol, sel)
    assert whole.shape[-1] == 61 - 2 - 2  # two eigenvalue features lose one channel at each 2D scale
    for axis in range(3):
        for index in (0, 4):
            got = plane_features(vol, axis, index, sel, voxel_size=None)
            assert_plane_close(got, take(whole, axis, index), sel.channel_names(3), float(np.abs(vol).max()))
    # mode="2d": every scale slice-wise, like the 2D filter bank on each z slice
    flat_sel = FeatureSelection(sel.selected)
    names = flat_sel.channel_names(2)
    data_max = float(np.abs(vol).max())
    assert_plane_close(plane_features(vol, 0, 3, sel, mode="2d"), compute_features(vol[3], flat_sel), names, data_max)
    side = plane_features(vol, 2, 7, sel, mode="2d")
    assert_plane_close(side, compute_features(vol, sel, mode="2d")[:, :, 7], names, data_max)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 14), st.integers(1, 14)),
    axis=st.integers(0, 2),
    cells=st.sets(
        st.sampled_from([(f, s) for f in FEATURES for s in SCALES if is_valid(f, s)]), min_size=1, max_size=5
    ),
    in_2d=st.sets(st.sampled_from(SCALES), max_size=2),
    voxel=st.one_of(st.none(), st.tuples(*[st.sampled_from([0.5, 1.0, 2.0, 4.0])] * 3)),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_random_small_volumes(shape, axis, cells, in_2d, voxel, seed, data):
    vol = (np.random.default_rng(seed).random(shape) * 10.0).astype(np.float32)
    sel = FeatureSelection(frozenset(cells), frozenset(in_2d))
    index = data.draw(st.integers(0, shape[axis] - 1))
    whole = compute_features(vol, sel, voxel_size=voxel)
    got = plane_features(vol, axis, index, sel, voxel_size=voxel)
    assert_plane_close(got, take(whole, axis, index), sel.channel_names(3), 10.0)


# ---------------------------------------------------------------------------------------------
# several planes at once; gradient planes kept between calls


def test_planes_features_equal_single_planes(volume_and_features, monkeypatch):
    vol, sel, whole = volume_and_features
    specs = [(0, 6), (1, 0, (slice(2, 9), slice(0, 41))), (2, 40), (0, -1, None)]
    refs = [
        take(whole, 0, 6),
        take(whole, 1, 0)[2:9],
        take(whole, 2, 40),
        take(whole, 0, 12),
    ]
    names = sel.channel_names(3)
    data_max = float(np.abs(vol).max())
    for got, ref in zip(planes_features(vol, specs, sel), refs):
        assert_plane_close(got, ref, names, data_max)
    # slabs held at once are bounded: one plane per batch gives the same results
    monkeypatch.setattr(planes_module, "SLAB_BYTES", 1)
    for got, ref in zip(planes_features(vol, specs, sel), refs):
        assert_plane_close(got, ref, names, data_max)
    assert planes_features(vol, [], sel) == []


@pytest.mark.parametrize("bad", [[(0,)], [(0, 1, None, 4)], [5], "01", 3, [(0, 99)]])
def test_planes_features_bad_specs(bad):
    with pytest.raises(ValueError, match="plane|planes"):
        planes_features(np.zeros((4, 5, 6), np.float32), bad)


def test_gradient_cache_while_scrolling(rng):
    vol = structured_volume(rng, (44, 30, 34))
    arr = CountingArray(vol)
    sel = FeatureSelection.all().with_2d(1.0, True)
    voxel_size = (2.0, 1.0, 1.0)
    whole = compute_features(vol, sel, voxel_size=voxel_size)
    names = sel.channel_names(3)
    cache = GradientCache(64 << 20)
    widths = []
    for z in (20, 21, 22, 21, 2, 3):  # on, back, and a jump
        arr.reads.clear()
        got = plane_features(arr, 0, z, sel, voxel_size=voxel_size, gradient_cache=cache)
        assert_plane_close(got, whole[z], names, float(np.abs(vol).max()))
        (idx,) = arr.reads
        widths.append(idx[0].stop - idx[0].start)
    assert 0 < cache.nbytes <= cache.max_bytes and len(cache) > 0
    # with the gradient planes known, the slab shrinks to what the sums at the plane itself need
    assert widths[3] < widths[0]
    # other axes, other windows and other scales in the same cache do not mix
    for axis, index, region in ((1, 10, None), (1, 10, (slice(3, 9), slice(4, 20))), (2, 5, None)):
        got = plane_features(arr, axis, index, sel, voxel_size=voxel_size, gradient_cache=cache, region=region)
        ref = take(whole, axis, index)
        assert_plane_close(got, ref if region is None else ref[region], names, float(np.abs(vol).max()))
    iso = compute_features(vol, sel)
    assert_plane_close(plane_features(vol, 0, 21, sel, gradient_cache=cache), iso[21], names, float(np.abs(vol).max()))


def test_gradient_cache_bound():
    vol = np.random.default_rng(0).random((10, 20, 24)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 3.5, True)
    tiny = GradientCache(1)  # keeps nothing, still correct
    assert_plane_close(
        plane_features(vol, 0, 4, sel, gradient_cache=tiny), compute_features(vol, sel)[4], sel.channel_names(3), 1.0
    )
    assert len(tiny) == 0 and tiny.nbytes == 0
    one_plane = 3 * 20 * 24 * 4
    small = GradientCache(5 * one_plane)
    plane_features(vol, 0, 4, sel, gradient_cache=small)
    assert len(small) == 5 and small.nbytes == 5 * one_plane
    small.clear()
    assert len(small) == 0 and small.nbytes == 0
    with pytest.raises(ValueError, match="gradient_cache must be a GradientCache"):
        plane_features(vol, 0, 4, sel, gradient_cache={})


def test_default_gradient_cache_holds_what_a_slice_needs():
    """Scrolling reuses gradient planes only if the cache holds what one slice asks for: all 61 features of a
    512 x 512 slice and of the two other planes through it (a cache that falls short drops, slice after slice,
    planes that the next slice asks for again)."""
    from ilastik_widget.core.features import check_request

    lay = check_request((120, 512, 512), np.uint16, FeatureSelection.all(), None, "3d", None)
    need = 0
    for axis, index in ((0, 60), (1, 256), (2, 256)):
        plane = planes_module._Plane(lay, (axis, index))
        n_pixels = plane.plane_shape[0] * plane.plane_shape[1]
        need += sum(len(job.positions) * len(job.scale.axes) * 4 * n_pixels for job in plane.jobs)
    assert 300 << 20 < need <= GradientCache().max_bytes


def test_cached_gradient_planes_are_recycled_only_when_unused(rng):
    """The cache's gradient planes live in recycled result buffers (no fresh memory per slice), which are never
    handed out again while a cached plane uses them."""
    from ilastik_widget.core import workspace

    vol = structured_volume(rng, (20, 24, 26))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.6, True)
    cache = GradientCache()
    plane_features(vol, 0, 8, sel, gradient_cache=cache)
    owners = {id(o) for o in workspace.RESULTS._owners}
    assert len(cache) and all(id(g.base) in owners for g in cache._data.values())
    kept = {k: g.copy() for k, g in cache._data.items()}
    for _ in range(3):  # results and other caches' planes are taken from the same buffers meanwhile
        compute_features(rng.random((9, 30, 31)).astype(np.float32), sel)
        plane_features(vol, 1, 5, sel, gradient_cache=GradientCache())
    for k, g in cache._data.items():
        np.testing.assert_array_equal(g, kept[k])
    whole = compute_features(vol, sel)
    assert_plane_close(plane_features(vol, 0, 9, sel, gradient_cache=cache), whole[9], sel.channel_names(3), 400.0)


def test_gradient_cache_keeps_the_windows_of_the_last_planes(rng):
    """Scrolling keeps only the gradient planes that the last ``planes_kept`` slices' tensors read, and the buffers of
    the planes it drops serve the next slices: after the first slices no fresh memory per slice."""
    from ilastik_widget.core import workspace

    vol = structured_volume(rng, (40, 24, 26))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.6, True)  # outer reach 3 planes
    whole = compute_features(vol, sel)
    cache = GradientCache(planes_kept=4)
    workspace.clear_workspace()
    owners = []
    for z in range(10, 30):
        got = plane_features(vol, 0, z, sel, gradient_cache=cache)
        assert_plane_close(got, whole[z], sel.channel_names(3), 400.0)
        kept = cache.keys()  # least recently used first
        assert sorted(key[-1] for key in kept) == list(range(max(10, z - 3) - 3, z + 4))
        owners.append(len(workspace.RESULTS._owners))
    assert owners[-1] == owners[8], owners  # the same buffers from the ninth slice on
    # another window (a region) is another group: its planes do not push out the first one's
    plane_features(vol, 0, 29, sel, gradient_cache=cache, region=(slice(0, 3), slice(0, 4)))
    kept = cache.keys()
    assert len({key[:-1] for key in kept}) == 2
    assert_plane_close(plane_features(vol, 0, 26, sel, gradient_cache=cache), whole[26], sel.channel_names(3), 400.0)
    cache.clear()
    assert len(cache) == 0 and not cache._recent


def test_gradient_cache_remembers_a_bounded_number_of_groups():
    """The last planes of each (channel, axis, window, scale) are remembered for the most recent groups only: a long
    session over many tiles does not grow that record without end. A forgotten group's planes stay until the byte
    bound drops them, and are still correct."""
    cache = GradientCache()
    cache.GROUPS_REMEMBERED = 2
    for g in range(5):
        cache.put(("group", g, 7), np.ones((3, 2, 2), np.float32))
        cache.used(("group", g), 7, [6, 7, 8])
    assert list(cache._recent) == [("group", 3), ("group", 4)]
    assert len(cache) == 5
    cache.used(("group", 4), 9, [8, 9, 10])  # a later plane of a remembered group: its window still holds 7
    assert ("group", 4, 7) in cache


def test_scrolling_to_the_border_keeps_few_work_buffer_shapes(rng):
    """Near the volume's border every slice's slab is a plane shorter than the last; the slabs share kept work
    buffers instead of leaving one shape each in the arena (which filled it, and every later call then worked in
    fresh memory at twice the time)."""
    from ilastik_widget.core import workspace

    vol = structured_volume(rng, (40, 24, 26))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 3.5, True)
    whole = compute_features(vol, sel)
    cache = GradientCache()
    workspace.clear_workspace()
    slab_heights = set()
    for z in range(12, 40):
        got = plane_features(vol, 0, z, sel, gradient_cache=cache)
        assert_plane_close(got, whole[z], sel.channel_names(3), 400.0)
        slab_heights |= {s[0] for s, kept in workspace.ARENA._free.items() if kept and s[1:] == (24, 26)}
    assert len(slab_heights) <= 8, sorted(slab_heights)  # one per slice (18 here) before


def test_structure_tensor_alone_with_every_gradient_plane_cached(rng):
    """A plane asked for again (or one whose mirrored neighbourhood is known) needs nothing from the slab."""
    vol = structured_volume(rng, (16, 20, 22))
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.6, True)
    cache = GradientCache()
    whole = compute_features(vol, sel)[:, 7]
    for _ in range(2):
        assert_plane_close(plane_features(vol, 1, 7, sel, gradient_cache=cache), whole, sel.channel_names(3), 400.0)


def test_work_buffers_beyond_the_bound_push_out_the_longest_kept():
    from ilastik_widget.core import workspace

    mib = 1 << 20
    arena = workspace.Arena(48 * mib)
    a, b, c = (workspace.empty((4, mib)) for _ in range(3))  # 16 MiB each
    for x in (a, b, c):
        arena.put(x)
    assert arena._bytes == 48 * mib
    d = workspace.empty((5, mib))  # 20 MiB: the two kept longest make room
    arena.put(d)
    assert arena._bytes == 36 * mib
    assert arena.get((4, mib)) is c
    assert arena.get((4, mib)) is not a and arena.get((5, mib)) is d and arena._bytes == 0
    arena.put(workspace.empty((13, mib)))  # larger than the whole bound: not kept
    assert arena._bytes == 0


def test_concurrent_calls_and_single_thread(volume_and_features, monkeypatch):
    """Sessions compute planes from several threads; batch workers run the filter bank on one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from ilastik_widget.core import filters

    vol, sel, whole = volume_and_features
    specs = [(0, 3), (1, 20), (2, 11), (0, 9), (1, 35), (2, 0)]
    cache = GradientCache()
    with ThreadPoolExecutor(3) as ex:
        got = list(ex.map(lambda s: plane_features(vol, *s, sel, gradient_cache=cache), specs))
    names = sel.channel_names(3)
    for (axis, index), g in zip(specs, got):
        assert_plane_close(g, take(whole, axis, index), names, float(np.abs(vol).max()))
    monkeypatch.setattr(filters, "N_THREADS", 1)
    assert_plane_close(plane_features(vol, 1, 20, sel), take(whole, 1, 20), names, float(np.abs(vol).max()))


# ---------------------------------------------------------------------------------------------
# reading only the slab


class CountingArray:
    """A real zarr array behind shape/dtype/__getitem__, recording every index read."""

    def __init__(self, a):
        self._a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.reads: list[tuple] = []

    def __getitem__(self, idx):
        self.reads.append(idx)
        return self._a[idx]


def test_slab_cache_while_scrolling_reads_only_the_planes_added(rng):
    vol = structured_volume(rng, (60, 30, 34))
    arr = CountingArray(vol)
    sel = FeatureSelection.none()
    for f in FEATURES:  # scales reaching 2 * 13 + 1 planes (with the structure tensor's: 2 * 20 + 1 at most)
        sel = sel.with_feature(f, 1.0, True).with_feature(f, 3.5, True)
    whole = compute_features(arr._a, sel)
    names, data_max = sel.channel_names(3), float(arr._a.max())
    cache = SlabCache(ahead=4)
    lo, hi = plane_slab(vol.shape, 0, 30, sel)

    def read_planes() -> list[tuple[int, int]]:
        out = [(i[0].start, i[0].stop) for i in arr.reads]
        arr.reads.clear()
        return out

    got = plane_features(arr, 0, 30, sel, slab_cache=cache)
    assert_plane_close(got, whole[30], names, data_max)
    assert read_planes() == [(lo, hi)]  # the first slab: exactly what the plane needs
    assert plane_features(arr, 0, 30, sel, slab_cache=cache).tobytes() == got.tobytes()
    assert read_planes() == []
    got = plane_features(arr, 0, 31, sel, slab_cache=cache)  # scrolling on: the added plane and 4 ahead
    assert_plane_close(got, whole[31], names, data_max)
    assert read_planes() == [(hi, hi + 5)]
    for z in (32, 33, 34, 35):  # inside what was read ahead
        assert_plane_close(plane_features(arr, 0, z, sel, slab_cache=cache), whole[z], names, data_max)
    assert read_planes() == []
    got = plane_features(arr, 0, 29, sel, slab_cache=cache)  # back beyond the kept planes: 4 more behind
    assert_plane_close(got, whole[29], names, data_max)
    assert read_planes() == [(lo - 5, lo)]
    for axis, index in ((1, 3), (2, 33), (0, 2)):  # other windows, the border, a jump
        assert_plane_close(
            plane_features(arr, axis, index, sel, slab_cache=cache), take(whole, axis, index), names, data_max
        )
    assert 0 < cache.nbytes <= cache.max_bytes and len(cache) == 3
    with pytest.raises(ValueError, match="slab_cache must be a SlabCache"):
        plane_features(arr, 0, 4, sel, slab_cache={})


def test_slab_cache_bound_channels_and_threads(rng):
    vol = np.stack([structured_volume(rng, (20, 24, 26)), rng.random((20, 24, 26)).astype(np.float32)], axis=1)
    sel = (
        FeatureSelection.none()
        .with_feature("structure_tensor_eigenvalues", 1.6, True)
        .with_feature("gaussian_smoothing", 3.5, True)
    )
    whole = compute_features(vol, sel, channel_axis=1)
    names = sel.channel_names(3, 2)
    tiny = SlabCache(1)  # keeps nothing, still correct
    for z in (9, 10):
        assert_plane_close(plane_features(vol, 0, z, sel, channel_axis=1, slab_cache=tiny), whole[z], names, 250.0)
    assert len(tiny) == 0 and tiny.nbytes == 0
    shared = SlabCache()
    one = plane_features(vol[:, :1], 0, 10, sel, channel_axis=1, slab_cache=shared)  # another channel count: re-read
    assert_plane_close(one, compute_features(vol[:, :1], sel, channel_axis=1)[10], sel.channel_names(3), 250.0)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:  # scrolling both ways at once, the cache shared
        got = list(ex.map(lambda z: plane_features(vol, 0, z, sel, channel_axis=1, slab_cache=shared), range(20)))
    for z in range(20):
        assert_plane_close(got[z], whole[z], names, 250.0)


def test_zarr_volume_is_read_slab_wise(rng, tmp_path):
    zarr = pytest.importorskip("zarr")
    vol = (rng.random((60, 70, 72)) * 4000).astype(np.uint16)
    z = zarr.create_array(tmp_path / "vol.zarr", shape=vol.shape, chunks=(8, 32, 32), dtype=vol.dtype)
    z[...] = vol
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 1.0, True).with_feature(f, 3.5, True)
    whole = compute_features(vol, sel)
    arr = CountingArray(zarr.open_array(tmp_path / "vol.zarr", mode="r"))
    h = halo(sel, 3)
    for axis, index in ((0, 30), (1, 0), (2, 71)):
        arr.reads.clear()
        got = plane_features(arr, axis, index, sel)
        assert_plane_close(got, take(whole, axis, index), sel.channel_names(3), 4000.0)
        (idx,) = arr.reads  # one read, of the slab only
        lo, hi = plane_slab(vol.shape, axis, index, sel)
        assert idx[axis] == slice(lo, hi) and hi - lo <= 2 * h[axis] + 1
        assert lo <= index < hi
        assert all(idx[a] == slice(0, vol.shape[a]) for a in range(3) if a != axis)
    # a sub-rectangle reads the region plus the in-plane halo, not the whole plane
    arr.reads.clear()
    got = plane_features(arr, 0, 30, sel, region=(slice(30, 40), slice(0, 10)))
    assert_plane_close(got, whole[30, 30:40, 0:10], sel.channel_names(3), 4000.0)
    (idx,) = arr.reads
    assert idx[1] == slice(30 - h[1], 40 + h[1]) and idx[2] == slice(0, 10 + h[2])


def test_dask_volume(rng):
    da = pytest.importorskip("dask.array")
    vol = rng.random((20, 24, 26)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 1.6, True)
    got = plane_features(da.from_array(vol, chunks=(5, 8, 8)), 1, 10, sel)
    assert_plane_close(got, compute_features(vol, sel)[:, 10], sel.channel_names(3), 1.0)


def test_blas_threads_are_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    plane_features(np.ones((5, 20, 20), np.float32), 0, 2, FeatureSelection.all())
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert before == after


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(axis=3, index=0), "axis must be a spatial axis"),
        (dict(axis=True, index=0), "axis must be a spatial axis"),
        (dict(axis=0, index=6), "plane index 6 is outside spatial axis 0 of length 6"),
        (dict(axis=2, index=-10), "plane index -10 is outside"),
        (dict(axis=1, index=1.5), "plane index 1.5"),
        (dict(axis=0, index=0, voxel_size=(1.0, 0.0, 1.0)), r"voxel_size \(1.0, 0.0, 1.0\)"),
        (dict(axis=0, index=0, voxel_size=(1.0, 1.0)), "has 2 value"),
        (dict(axis=0, index=0, region=(slice(0, 4, 2), slice(None))), "step 1"),
        (dict(axis=0, index=0, region=(slice(0, 4), slice(None), slice(None))), "region has 3 axes"),
        (dict(axis=0, index=0, mode="4d"), "mode"),
    ],
)
def test_bad_input(kwargs, match):
    vol = np.zeros((6, 8, 9), np.float32)
    with pytest.raises(ValueError, match=match):
        plane_features(vol, **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="planes are defined for volumes"):
        plane_features(np.zeros((8, 9), np.float32), 0, 0)
    vol = np.zeros((6, 8, 9), np.float32)
    vol[2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        plane_features(vol, 0, 2)
    with pytest.raises(ValueError, match="empty"):
        plane_features(vol, 0, 2, FeatureSelection.none())


@pytest.mark.parametrize("value", [1e30, 1e39])
def test_values_whose_features_overflow_float32_are_named(value):
    """Finite input too large for float32 features (the structure tensor squares gradients) is refused by name."""
    vol = np.zeros((6, 16, 16))
    vol[:, 8:] = value  # an edge
    for axis in (0, 1, 2):
        with pytest.raises(ValueError, match="too large for 32-bit"):
            plane_features(vol, axis, 3)


def test_compiled_tensor_sums_equal_numpy_passes(rng):
    """The compiled loop (3D gradients) and numpy's tiled passes (kept for 2-axis scales) give the same sums, and
    so do gradient planes given already multiplied by sqrt(weight) (``scaled``, the path without a cache) and planes
    given in two calls (the first writes the sums, the second adds to them)."""
    from ilastik_widget.core import slab
    from ilastik_widget.core.filters import Scale

    shape = (37, 45)
    job = slab.PlaneJob(Scale((2.0, 2.0, 2.0), (1.0, 1.0, 1.0)), [("structure_tensor_eigenvalues", 0)], 20, 41)
    assert len(job.pairs) == 6
    run = [(19 + k, float(w)) for k, w in enumerate(rng.random(5) + 0.1)]
    grads = [rng.normal(size=(3, *shape)).astype(np.float32) for _ in run]
    scaled_grads = [(g * np.float32(np.sqrt(w))).astype(np.float32) for (_, w), g in zip(run, grads)]
    accs = [slab.Accumulator(job, shape) for _ in range(5)]
    try:
        compiled, numpy_passes, compiled_scaled, numpy_scaled, compiled_twice = accs
        for acc in accs:
            acc.acc[0].fill(np.nan)  # work buffers come back from the arena holding anything
        compiled.add_many(run, grads)
        compiled_twice.add_many(run[:2], grads[:2])
        compiled_twice.add_many(run[2:], grads[2:])
        numpy_passes._add_tiles([w for _, w in run], grads)
        compiled_scaled.add_many(run, scaled_grads, scaled=True)
        numpy_scaled._add_tiles([1.0] * len(run), scaled_grads)
        ref = [sum(w * g[a].astype(np.float64) * g[b] for (_, w), g in zip(run, grads)) for a, b in job.pairs]
        for k, exp in enumerate(ref):
            for acc in accs:
                np.testing.assert_allclose(acc.acc[k], exp, rtol=1e-5, atol=1e-5)
    finally:
        for acc in accs:
            acc.free()


def test_kernels_warm_up_once_in_the_background():
    from ilastik_widget.core import kernels

    kernels.warm_up()  # compiles or loads every kernel: no error on tiny inputs
    timer = planes_module.compile_soon(0.0)
    assert timer is not None
    assert planes_module.compile_soon(0.0) is timer  # once per process
    timer.join(60)
    assert not timer.is_alive()


KERNELS_WAIT_FOR_THE_LOCK = """
import sys, threading, time
import numpy as np
from ilastik_widget.core import compiled, eigen, planes, slab
from ilastik_widget.core.filters import Scale

assert "numba" not in sys.modules, "numba was imported before the kernels were asked for"
x = np.ones(8, np.float32)
job = slab.PlaneJob(Scale((2.0, 2.0, 2.0), (1.0, 1.0, 1.0)), [("structure_tensor_eigenvalues", 0)], 20, 41)
acc = slab.Accumulator(job, (4, 5))
uses = [
    lambda: eigen.eigvals3(x, x, x, x, x, x, x.copy(), x.copy(), x.copy()),
    lambda: acc.add_many([(19, 0.5)], [np.ones((3, 4, 5), np.float32)]),
    planes._warm_up_kernels,
]
errors = []

def run(use):
    try:
        use()
    except BaseException as exc:
        errors.append(repr(exc))

compiled._lock.acquire()
threads = [threading.Thread(target=run, args=(use,)) for use in uses]
for t in threads:
    t.start()
time.sleep(0.5)
assert "numba" not in sys.modules, "a thread imported numba without waiting for the others"
assert all(t.is_alive() for t in threads)
compiled._lock.release()
for t in threads:
    t.join(120)
assert not errors, errors
assert float(acc.acc[0][0, 0]) == 0.5
print("ok")
"""


def test_kernels_are_imported_by_one_thread_at_a_time():
    """The first uses of the kernels come from several threads at once (the filter pool, the background warm-up), and
    numba cannot be imported by two threads at once (importlib's deadlock error, numba half imported afterwards):
    every use waits for the one lock of :mod:`ilastik_widget.core.compiled` before anything imports numba."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", KERNELS_WAIT_FOR_THE_LOCK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_kernels_compile_without_a_writable_cache(monkeypatch):
    """Where numba has nowhere to cache (it raises when asked to), the kernels are compiled in each process."""
    import importlib

    import numba

    from ilastik_widget.core import kernels

    real = numba.njit

    def njit(*args, **kwargs):
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", njit)
    try:
        fresh = importlib.reload(kernels)
        fresh.warm_up()
        x = np.full(3, 2.0, np.float32)
        out = [np.empty(3, np.float32) for _ in range(4)]
        fresh.eig3_invariants(x, x * 0, x * 0, x, x * 0, x, *out)  # 2 * identity: q = 2, p = 0
        assert np.all(out[0] == 2.0) and np.all(out[1] == 0.0)
    finally:
        monkeypatch.undo()
        importlib.reload(kernels)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 40), r=st.integers(0, 25), data=st.data())
def test_fold_is_the_mirrored_correlation_at_every_center(n, r, data):
    """The weights over planes of one normal pass, in the interior (returned as they are) and near the borders
    (folded back inside, repeatedly when the kernel is longer than the axis): scipy's ``mode="mirror"``."""
    from scipy.ndimage import correlate1d

    from ilastik_widget.core.slab import fold

    center = data.draw(st.integers(0, n - 1))
    weights = np.random.default_rng(n * 100 + r).standard_normal(2 * r + 1)
    values = np.random.default_rng(r).standard_normal(n)
    lo, w = fold(weights, center, n)
    assert w.dtype == np.float64 and lo >= 0 and lo + len(w) <= n
    expected = correlate1d(values, weights, mode="mirror")[center]
    assert np.isclose(float(w @ values[lo : lo + len(w)]), expected, rtol=1e-12, atol=1e-12)
