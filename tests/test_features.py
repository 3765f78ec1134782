"""Tests of ilastik_widget.core.features against independent float64 references and analytic cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from ilastik_widget.core.features import (
    FEATURE_TITLES,
    FEATURES,
    SCALES,
    FeatureSelection,
    compute_features,
    feature_table,
    features_for_region,
    halo,
    is_valid,
)

# ---------------------------------------------------------------------------------------------
# independent float64 reference: kernels written from the definitions in core/features.py, scipy correlate1d with
# mode="mirror", numpy eigvalsh. Nothing is shared with the implementation.


def ref_kernel(sigma: float, order: int) -> np.ndarray:
    r = math.ceil(3.5 * sigma)
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    if order == 0:
        return g
    if order == 1:
        k = x * g
        return k / np.dot(x, k)  # derivative of a unit ramp is exactly 1
    k = (x**2 / sigma**4 - 1 / sigma**2) * g
    k = k - k.sum() * g  # zero response to constants
    return k / (0.5 * np.dot(x**2, k))  # second derivative of x^2/2 is exactly 1


def ref_filter(img: np.ndarray, sigma: float, orders: tuple[int, ...], steps=None, axes=None) -> np.ndarray:
    """Gaussian derivative ``orders``; with ``steps`` (voxel size in units of the smallest) sigma is
    ``sigma / steps[a]`` voxels along axis a and derivatives are per unit length; axes outside ``axes``
    are not filtered (2D filters on a volume)."""
    steps = steps or (1.0,) * img.ndim
    axes = range(img.ndim) if axes is None else axes
    out = img.astype(np.float64)
    for axis, o in enumerate(orders):
        if axis in axes:
            k = ref_kernel(sigma / steps[axis], o) / steps[axis] ** o
            out = ndi.correlate1d(out, k, axis=axis, mode="mirror")
        else:
            assert o == 0
    return out


def ref_eig(comps: dict[tuple[int, int], np.ndarray], nd: int) -> list[np.ndarray]:
    m = np.empty(comps[(0, 0)].shape + (nd, nd))
    for (a, b), v in comps.items():
        m[..., a, b] = v
        m[..., b, a] = v
    ev = np.linalg.eigvalsh(m)[..., ::-1]
    return [ev[..., i] for i in range(nd)]


def unit(nd, *axes):
    o = [0] * nd
    for a in axes:
        o[a] += 1
    return tuple(o)


def ref_feature(img: np.ndarray, feature: str, s: float, steps=None, axes=None) -> list[np.ndarray]:
    nd = img.ndim
    axes = list(range(nd)) if axes is None else list(axes)
    n = len(axes)

    def f(sigma, orders):
        return ref_filter(img, sigma, orders, steps, axes)

    if feature == "gaussian_smoothing":
        return [f(s, (0,) * nd)]
    if feature == "laplacian_of_gaussian":
        return [sum(f(s, unit(nd, a, a)) for a in axes)]
    if feature == "gaussian_gradient_magnitude":
        return [np.sqrt(sum(f(s, unit(nd, a)) ** 2 for a in axes))]
    if feature == "difference_of_gaussians":
        return [f(s, (0,) * nd) - f(0.66 * s, (0,) * nd)]
    if feature == "structure_tensor_eigenvalues":
        g = [f(s, unit(nd, a)) for a in axes]
        comps = {}
        for i in range(n):
            for j in range(i, n):
                comps[(i, j)] = ref_filter(g[i] * g[j], s / 2, (0,) * nd, steps, axes)
        return ref_eig(comps, n)
    if feature == "hessian_of_gaussian_eigenvalues":
        comps = {(i, j): f(s, unit(nd, axes[i], axes[j])) for i in range(n) for j in range(i, n)}
        return ref_eig(comps, n)
    raise AssertionError(feature)


def ref_all(img: np.ndarray, sel: FeatureSelection, voxel_size=None) -> np.ndarray:
    steps = None if voxel_size is None else tuple(v / min(voxel_size) for v in voxel_size)
    chans = []
    for f in FEATURES:
        for s in SCALES:
            if sel.enabled(f, s):
                axes = [1, 2] if img.ndim == 3 and sel.is_2d(s) else None
                chans.extend(ref_feature(img, f, s, steps, axes))
    return np.stack(chans, axis=-1)


def assert_close_channels(
    got: np.ndarray, ref: np.ndarray, names: list[str], rel: float, data_max: float = 1.0
) -> None:
    """Per channel: max error <= rel * (largest magnitude of that reference channel) + 4e-6 * data_max.

    float32 filtering accumulates ~1e-6 relative error per pass *of the data's magnitude* (data_max),
    which differences such as DoG keep while their own magnitude shrinks, hence the additive term.
    The smaller eigenvalues come from a closed form with cancellation against the largest one, so
    their float32 error is relative to the largest eigenvalue, hence rel = 1e-4 for eigenvalue channels.
    """
    assert got.shape == ref.shape
    for i, name in enumerate(names):
        scale = np.abs(ref[..., i]).max() + 1e-12
        err = np.abs(got[..., i] - ref[..., i]).max()
        tol = (1e-4 if "eigenvalues" in name else rel) * scale + 4e-6 * data_max
        assert err <= tol, f"{name}: max error {err:.3g} > {tol:.3g}"


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1234)


def structured_2d(shape=(96, 110)):
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    img = np.sin(x / 5.0) * np.cos(y / 7.0) + ((x - 40) ** 2 + (y - 50) ** 2 < 200) * 2.0
    img[20:30, 60:90] += 3.0  # sharp edges
    return img


# ---------------------------------------------------------------------------------------------
# correctness against the reference


@pytest.mark.parametrize("kind", ["random", "structured"])
def test_2d_all_features_match_reference(rng, kind):
    img = rng.random((96, 110)) if kind == "random" else structured_2d()
    sel = FeatureSelection.all()
    got = compute_features(img.astype(np.float32), sel)
    ref = ref_all(img.astype(np.float32).astype(np.float64), sel)
    assert got.dtype == np.float32 and got.shape == (96, 110, 49)
    assert_close_channels(got, ref, sel.channel_names(2), 1e-5, np.abs(img).max())


def test_3d_all_features_match_reference(rng):
    img = rng.random((24, 30, 34)).astype(np.float32)
    img[5:15, 10:20, 8:25] += 2.0
    sel = FeatureSelection.all()
    got = compute_features(img, sel)
    ref = ref_all(img.astype(np.float64), sel)
    assert got.shape == (24, 30, 34, 61)
    assert_close_channels(got, ref, sel.channel_names(3), 1e-5, np.abs(img).max())


def test_3d_with_offset_has_no_mean_leak(rng):
    # truncated 2nd-derivative kernels leak the mean brightness; ours must not
    img = (rng.random((20, 24, 28)) + 1000.0).astype(np.float32)
    sel = FeatureSelection.none().with_feature("laplacian_of_gaussian", 10.0, True)
    sel = sel.with_feature("hessian_of_gaussian_eigenvalues", 10.0, True)
    got = compute_features(img, sel)
    ref = ref_all(img.astype(np.float64), sel)
    # float32 input at 1000 has 6e-5 absolute resolution; the features' own spread is ~1e-4
    assert np.abs(got - ref).max() < 2e-5 * 1000


def test_against_scipy_builtin_filters():
    """Cross-check kernel conventions (sign, scale, axis order) with scipy's own Gaussian filters.

    scipy with truncate=6 is close to the continuous definition. Our kernels stop at 3.5 sigma (the
    filter bank's rule) and are moment-normalised, which moves smoothing by <0.1%, the gradient by <1% and the
    Laplacian by <3.5% of each channel's range (the 2nd-derivative kernel has the most weight in its
    tails); a wrong sign, factor or axis would be off by 100%.
    """
    img = structured_2d((128, 128))
    img = img - img.mean()
    got = compute_features(img.astype(np.float32))
    names = FeatureSelection.all().channel_names(2)
    tol = {"gaussian_smoothing": 1e-3, "gaussian_gradient_magnitude": 1e-2, "laplacian_of_gaussian": 3.5e-2}
    for s in (1.0, 1.6, 3.5, 5.0, 10.0):
        checks = {
            "gaussian_smoothing": ndi.gaussian_filter(img, s, mode="mirror", truncate=6),
            "gaussian_gradient_magnitude": ndi.gaussian_gradient_magnitude(img, s, mode="mirror", truncate=6),
            "laplacian_of_gaussian": ndi.gaussian_laplace(img, s, mode="mirror", truncate=6),
        }
        for f, ref in checks.items():
            g = got[..., names.index(f"{f}_{s:g}")]
            assert np.abs(g - ref).max() <= tol[f] * np.abs(ref).max(), (f, s)


def test_multichannel_order_and_channel_axis(rng):
    img = rng.random((3, 40, 50)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    sel = sel.with_feature("hessian_of_gaussian_eigenvalues", 0.7, True)
    got = compute_features(img, sel, channel_axis=0)
    assert got.shape == (40, 50, 3 * 3)
    for c in range(3):
        single = compute_features(img[c], sel)
        np.testing.assert_array_equal(got[..., 3 * c : 3 * c + 3], single)
    last = compute_features(np.moveaxis(img, 0, -1), sel, channel_axis=-1)
    np.testing.assert_array_equal(last, got)
    assert sel.channel_names(2, 3)[3].startswith("c1:")


def test_single_cell_selection_matches_full_set_channel(rng):
    img = rng.random((60, 64)).astype(np.float32)
    full = compute_features(img)
    names = FeatureSelection.all().channel_names(2)
    for f in FEATURES:
        s = 1.6
        sel = FeatureSelection.none().with_feature(f, s, True)
        one = compute_features(img, sel)
        idx = [i for i, n in enumerate(names) if n.startswith(f"{f}_{s:g}")]
        np.testing.assert_allclose(one, full[..., idx], rtol=1e-6, atol=1e-7)


def test_mode_2d_is_slicewise(rng):
    vol = rng.random((5, 40, 44)).astype(np.float32)
    got = compute_features(vol, mode="2d")
    assert got.shape == (5, 40, 44, 49)
    for z in range(5):
        np.testing.assert_array_equal(got[z], compute_features(vol[z]))


@pytest.mark.parametrize("shape", [(5, 7), (1, 9), (2, 2), (3, 4, 5), (1, 1, 6)])
def test_tiny_images_mirror_repeatedly(rng, shape):
    img = rng.random(shape).astype(np.float32)
    sel = FeatureSelection.all()
    got = compute_features(img, sel)
    ref = ref_all(img.astype(np.float64), sel)
    assert_close_channels(got, ref, sel.channel_names(len(shape)), 1e-5)


def test_integer_input_is_accepted(rng):
    img = (rng.random((30, 40)) * 1000).astype(np.uint16)
    np.testing.assert_allclose(compute_features(img), compute_features(img.astype(np.float32)), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# analytic cases


@pytest.mark.parametrize("shape", [(50, 60), (20, 24, 26)])
def test_constant_image(shape):
    img = np.full(shape, 7.25, dtype=np.float32)
    got = compute_features(img)
    names = FeatureSelection.all().channel_names(len(shape))
    for i, n in enumerate(names):
        if n.startswith("gaussian_smoothing"):
            np.testing.assert_allclose(got[..., i], 7.25, rtol=2e-6)
        else:
            assert np.abs(got[..., i]).max() < 2e-5, n


def test_linear_ramp():
    y, x = np.mgrid[:120, :130].astype(np.float64)
    img = (3.0 * x - 2.0 * y + 5.0).astype(np.float32)
    got = compute_features(img)
    names = FeatureSelection.all().channel_names(2)
    for s in SCALES[1:]:
        m = math.ceil(3.5 * s) + 1  # away from the mirrored border
        inner = (slice(m, -m), slice(m, -m))
        ggm = got[..., names.index(f"gaussian_gradient_magnitude_{s:g}")][inner]
        np.testing.assert_allclose(ggm, math.sqrt(13.0), rtol=2e-4)
        log = got[..., names.index(f"laplacian_of_gaussian_{s:g}")][inner]
        assert np.abs(log).max() < 1e-3
        smooth = got[..., names.index(f"gaussian_smoothing_{s:g}")][inner]
        np.testing.assert_allclose(smooth, img[inner], atol=2e-3)
        st0 = got[..., names.index(f"structure_tensor_eigenvalues_{s:g}_ev0")][inner]
        st1 = got[..., names.index(f"structure_tensor_eigenvalues_{s:g}_ev1")][inner]
        m2 = math.ceil(3.5 * s / 2)
        np.testing.assert_allclose(st0[m2:-m2, m2:-m2], 13.0, rtol=1e-3)
        assert np.abs(st1[m2:-m2, m2:-m2]).max() < 1e-2


@pytest.mark.parametrize("nd", [2, 3])
def test_gaussian_blob(nd):
    n = 41 if nd == 2 else 31
    grid = np.indices((n,) * nd).astype(np.float64) - n // 2
    img = np.exp(-(grid**2).sum(0) / (2 * 3.0**2)).astype(np.float32)
    got = compute_features(img)
    names = FeatureSelection.all().channel_names(nd)
    c = (n // 2,) * nd
    for s in (0.7, 1.0, 1.6, 3.5):
        ev = [got[c + (names.index(f"hessian_of_gaussian_eigenvalues_{s:g}_ev{i}"),)] for i in range(nd)]
        assert all(e < 0 for e in ev), (s, ev)
        # isotropic blob: equal eigenvalues at the centre, each = LoG / nd
        log = got[c + (names.index(f"laplacian_of_gaussian_{s:g}"),)]
        assert log < 0
        np.testing.assert_allclose(ev, log / nd, rtol=1e-3)
        # smoothing lowers a bright peak: DoG = G_s - G_0.66s < 0 at the centre
        assert got[c + (names.index(f"difference_of_gaussians_{s:g}"),)] < 0
        # gradient vanishes at the centre
        assert abs(got[c + (names.index(f"gaussian_gradient_magnitude_{s:g}"),)]) < 1e-5
    # eigenvalues are sorted, largest first, everywhere
    for f in ("hessian_of_gaussian_eigenvalues", "structure_tensor_eigenvalues"):
        for s in SCALES[1:]:
            idx = [names.index(f"{f}_{s:g}_ev{i}") for i in range(nd)]
            assert np.all(np.diff(got[..., idx], axis=-1) <= 0)


# ---------------------------------------------------------------------------------------------
# block-wise == whole image


class RecordingArray:
    """Array-like with shape/dtype/__getitem__ only; records what was read."""

    def __init__(self, a):
        self._a = a
        self.shape = a.shape
        self.dtype = a.dtype
        self.reads = []

    def __getitem__(self, idx):
        self.reads.append(idx)
        return self._a[idx].copy()


def random_region(rng, spatial, sizes):
    region = []
    for n, m in zip(spatial, sizes):
        m = min(m, n)
        start = int(rng.choice([0, n - m, rng.integers(0, n - m + 1)]))  # borders included often
        region.append(slice(start, start + m))
    return tuple(region)


def check_blocks(rng, img, sel, sizes, n_blocks=8, **kw):
    whole = compute_features(img, sel, **kw)
    arr = RecordingArray(img)
    ca = kw.get("channel_axis")
    spatial = tuple(n for i, n in enumerate(img.shape) if ca is None or i != ca % img.ndim)
    scale = np.abs(whole).max(axis=tuple(range(whole.ndim - 1))) + 1e-12
    for _ in range(n_blocks):
        region = random_region(rng, spatial, sizes)
        block = features_for_region(arr, region, sel, **kw)
        ref = whole[region]
        assert block.shape == ref.shape and block.dtype == np.float32
        err = (np.abs(block - ref) / scale).max()
        assert err < 1e-5, (region, err)
    # only region + halo was read, never the whole image (these images are larger than that)
    assert all(isinstance(s, slice) for idx in arr.reads for s in idx)
    assert not any(all((s.stop - s.start) == n for s, n in zip(idx, img.shape)) for idx in arr.reads)


def test_blocks_2d_full_selection(rng):
    img = rng.random((260, 300)).astype(np.float32)
    img[100:140, 50:200] += 2
    check_blocks(rng, img, FeatureSelection.all(), (40, 57))


def test_blocks_2d_halo_is_needed(rng):
    """With a halo smaller than ours the blocks would differ: the test has teeth."""
    img = rng.random((200, 200)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("structure_tensor_eigenvalues", 3.5, True)
    h = halo(sel)
    whole = compute_features(img, sel)
    region = (slice(80, 120), slice(80, 120))
    m = math.ceil(3.5 * 3.5)  # only the gradient's radius, forgetting the tensor smoothing
    assert h > m
    short = (slice(80 - m, 120 + m),) * 2
    wrong = compute_features(img[short], sel)[m : m + 40, m : m + 40]
    ref = whole[region]
    assert np.abs(wrong - ref).max() > 1e-3 * np.abs(ref).max()
    got = features_for_region(img, region, sel)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_blocks_3d(rng):
    img = rng.random((40, 48, 52)).astype(np.float32)
    sel = FeatureSelection.all()
    for s in (3.5, 5.0, 10.0):
        for f in FEATURES:
            sel = sel.with_feature(f, s, False)
    assert halo(sel) < 20
    check_blocks(rng, img, sel, (12, 15, 17))


def test_blocks_multichannel_and_mode_2d(rng):
    img = rng.random((30, 70, 2, 80)).astype(np.float32)  # z, y, c, x
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 1.0, True)
    sel = sel.with_feature("gaussian_smoothing", 0.3, True)
    check_blocks(rng, img, sel, (7, 20, 23), channel_axis=2)
    check_blocks(rng, img, sel, (7, 20, 23), channel_axis=-2, mode="2d")


def test_region_none_and_dask(rng):
    da = pytest.importorskip("dask.array")
    img = rng.random((64, 70)).astype(np.float32)
    sel = FeatureSelection.none().with_feature("gaussian_gradient_magnitude", 1.6, True)
    whole = compute_features(img, sel)
    np.testing.assert_array_equal(features_for_region(img, None, sel), whole)
    lazy = da.from_array(img, chunks=(16, 16))
    got = features_for_region(lazy, (slice(0, 20), slice(50, 70)), sel)
    np.testing.assert_allclose(got, whole[:20, 50:], rtol=1e-5, atol=1e-6 * np.abs(whole).max())


# ---------------------------------------------------------------------------------------------
# FeatureSelection


def test_channel_counts():
    sel = FeatureSelection.all()
    assert sel == FeatureSelection.default()
    assert sel.n_channels(2) == 49 and sel.n_channels(3) == 61
    assert sel.n_channels(2, 3) == 147
    assert len(sel.channel_names(3)) == 61 and len(set(sel.channel_names(3))) == 61
    assert compute_features(np.zeros((12, 13), np.float32)).shape[-1] == 49
    assert compute_features(np.zeros((6, 12, 13), np.float32)).shape[-1] == 61


def test_selection_api():
    assert FeatureSelection.none().is_empty and not FeatureSelection.all().is_empty
    assert not is_valid("laplacian_of_gaussian", 0.3) and is_valid("gaussian_smoothing", 0.3)
    assert set(FEATURE_TITLES) == set(FEATURES)
    sel = FeatureSelection.none().with_feature("difference_of_gaussians", 5, True)
    assert sel.enabled("difference_of_gaussians", 5.0) and not sel.enabled("difference_of_gaussians", 3.5)
    assert sel.with_feature("difference_of_gaussians", 5.0, False).is_empty
    assert sel.channel_names(2) == ["difference_of_gaussians_5"]
    assert halo(FeatureSelection.none()) == 0
    assert halo(sel) >= math.ceil(3.5 * 5)
    assert halo(FeatureSelection.all()) >= math.ceil(3.5 * 10) + math.ceil(3.5 * 5)


def test_selection_dict_round_trip():
    rng = np.random.default_rng(0)
    cells = [(f, s) for f in FEATURES for s in SCALES if is_valid(f, s)]
    for _ in range(5):
        sel = FeatureSelection(frozenset(c for c in cells if rng.random() < 0.5))
        d = json.loads(json.dumps(sel.to_dict()))
        assert FeatureSelection.from_dict(d) == sel
    assert FeatureSelection.from_dict(FeatureSelection.all().to_dict()) == FeatureSelection.all()
    assert FeatureSelection.from_dict({"features": {}}).is_empty
    assert set(FeatureSelection.none().to_dict()["features"]) == set(FEATURES)


def test_feature_table_is_the_matrix_as_json():
    """What the widget's panel shows: plain JSON, the definitions' order, valid cells only, the full channel count."""
    table = json.loads(json.dumps(feature_table()))
    assert table["scales"] == list(SCALES)
    assert [f["name"] for f in table["features"]] == list(FEATURES)
    assert [f["title"] for f in table["features"]] == [FEATURE_TITLES[f] for f in FEATURES]
    for f in table["features"]:
        assert f["description"]
        assert f["scales"] == [s for s in SCALES if is_valid(f["name"], s)]
    assert table["features"][0]["scales"][0] == 0.3 and all(0.3 not in f["scales"] for f in table["features"][1:])
    for nd in (2, 3):
        assert sum(
            f["channels"][f"{nd}d"] * len(f["scales"]) for f in table["features"]
        ) == FeatureSelection.all().n_channels(nd)


@pytest.mark.parametrize(
    "bad",
    [
        {"features": {"sobel": [1.0]}},
        {"features": {"laplacian_of_gaussian": [0.3]}},
        {"features": {"gaussian_smoothing": [2.0]}},
        {"features": {"gaussian_smoothing": "1.0"}},
        {"feature": {}},
        [],
    ],
)
def test_selection_dict_errors(bad):
    with pytest.raises(ValueError):
        FeatureSelection.from_dict(bad)


def test_selection_cell_errors():
    with pytest.raises(ValueError, match="unknown feature"):
        FeatureSelection.none().with_feature("sobel", 1.0, True)
    with pytest.raises(ValueError, match="only available"):
        FeatureSelection.none().with_feature("hessian_of_gaussian_eigenvalues", 0.3, True)
    with pytest.raises(ValueError, match="unknown scale"):
        FeatureSelection(frozenset({("gaussian_smoothing", 0.5)}))


# ---------------------------------------------------------------------------------------------
# input errors


@pytest.mark.parametrize(
    "img, kw, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), {}, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), {}, "NaN or infinite"),
        (np.zeros(10), {}, "2 or 3 spatial"),
        (np.zeros((2, 3, 4, 5)), {}, "2 or 3 spatial"),
        (np.zeros((4, 5, 2)), {"channel_axis": 3}, "out of range"),
        (np.zeros((4, 5, 2)), {"channel_axis": -4}, "out of range"),
        (np.zeros((4, 5)), {"channel_axis": 0}, "2 or 3 spatial"),
        (np.zeros((4, 5, 2)), {"channel_axis": 1.5}, "channel_axis"),
        (np.zeros((4, 5), bool), {}, "boolean"),
        (np.zeros((4, 5), complex), {}, "complex"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "numeric"),
        (np.zeros((4, 5), object), {}, "numeric"),
        (np.zeros((4, 5)), {"mode": "4d"}, "mode"),
    ],
)
def test_input_errors(img, kw, match):
    with pytest.raises(ValueError, match=match):
        compute_features(img, **kw)


def test_empty_selection_and_region_errors():
    img = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match="empty"):
        compute_features(img, FeatureSelection.none())
    with pytest.raises(ValueError, match="empty"):
        features_for_region(img, None, FeatureSelection.none())
    with pytest.raises(ValueError, match="step"):
        features_for_region(img, (slice(0, 10, 2), slice(None)))
    with pytest.raises(ValueError, match="NaN"):
        bad = img.copy()
        bad[0, 0] = np.nan
        features_for_region(bad, (slice(0, 2), slice(0, 2)))


# ---------------------------------------------------------------------------------------------
# closed-form eigenvalues (private helpers, the part most prone to float32 trouble)


@pytest.mark.parametrize("scale", [1.0, 1e-15, 1e12])
def test_eigvals3_closed_form_accuracy(scale):
    """Random rotations of chosen spectra incl. nearly equal pairs and near-isotropic matrices.

    Weyl's bound makes eigenvalues as accurate as the float32 matrix entries (~1e-7 of the largest);
    we allow 1e-6 of the largest eigenvalue magnitude (3e-7 measured; a float32 trigonometric formula
    without float64 invariants fails this by ~300x on the nearly degenerate cases).
    """
    from ilastik_widget.core import filters as _filters

    rng = np.random.default_rng(7)
    n = 30000
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    lam = rng.normal(size=(n, 3))
    kind = rng.integers(0, 4, n)
    lam[kind == 1, 1] = lam[kind == 1, 0] + 1e-4 * rng.normal(size=(kind == 1).sum())
    lam[kind == 2, 2] = lam[kind == 2, 1] + 1e-6 * rng.normal(size=(kind == 2).sum())
    lam[kind == 3] = 5 + 1e-3 * lam[kind == 3]
    lam[:5] = 0.0  # zero matrices
    lam[5:10] = 2.0  # multiples of the identity
    a = (np.einsum("nij,nj,nkj->nik", q, lam, q) * scale).astype(np.float32)
    ref = np.linalg.eigvalsh(a.astype(np.float64))[:, ::-1]
    comps = [np.ascontiguousarray(a[:, i, j]) for i, j in [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]]
    outs = [np.empty(n, np.float32) for _ in range(3)]
    _filters.eigvals3(*comps, *outs)
    got = np.stack(outs, axis=1)
    assert np.all(np.isfinite(got))
    assert np.all(np.diff(got, axis=1) <= 0)
    err = np.abs(got - ref).max(axis=1) / (np.abs(ref).max(axis=1) + 1e-300 * scale)
    assert err[10:].max() < 1e-6
    np.testing.assert_allclose(got[:10], ref[:10], atol=1e-6 * scale)
    # 2x2
    b = a[:, :2, :2]
    outs2 = [np.empty(n, np.float32) for _ in range(2)]
    _filters.eigvals2(*(np.ascontiguousarray(b[:, i, j]) for i, j in [(0, 0), (0, 1), (1, 1)]), *outs2)
    ref2 = np.linalg.eigvalsh(b.astype(np.float64))[:, ::-1]
    err2 = np.abs(np.stack(outs2, 1) - ref2).max(axis=1) / (np.abs(ref2).max(axis=1) + 1e-300)
    assert err2[10:].max() < 1e-6 * 3


def test_results_are_never_shared_while_alive(rng):
    """Result buffers are recycled only after every view of them is gone."""
    sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    a, b = rng.random((2, 64, 64)).astype(np.float32)
    ra = compute_features(a, sel)
    keep = ra.copy()
    view = ra[10:20]
    del ra
    rb = compute_features(b, sel)
    assert not np.shares_memory(rb, view)
    np.testing.assert_array_equal(view, keep[10:20])
    del view
    rc = compute_features(a, sel)  # may reuse the freed buffer: must hold the right values
    np.testing.assert_array_equal(rc, keep)
    assert not np.shares_memory(rc, rb)


def test_concurrent_calls_match_sequential(rng):
    """Sessions predict blocks from several threads at once; the shared pool and buffers must cope."""
    from concurrent.futures import ThreadPoolExecutor

    imgs = [rng.random((70, 90)).astype(np.float32) for _ in range(6)]
    vol = rng.random((12, 30, 40)).astype(np.float32)
    expected = [compute_features(im) for im in imgs] + [compute_features(vol)]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(compute_features, imgs + [vol]))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_kept_buffers_are_dropped_when_idle(monkeypatch):
    import time

    from ilastik_widget.core import workspace

    workspace.clear_workspace()
    with workspace._trim_lock:  # a timer armed by earlier tests would fire only after 20 s
        if workspace._trim_timer is not None:
            workspace._trim_timer.cancel()
        workspace._trim_timer = None
    monkeypatch.setattr(workspace, "IDLE_TRIM_SECONDS", 0.3)
    r = compute_features(np.ones((40, 40), np.float32))
    del r
    assert workspace.ARENA._bytes > 0
    deadline = time.monotonic() + 10
    while workspace.ARENA._bytes and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workspace.ARENA._bytes == 0 and not workspace.RESULTS._owners


def _thp_eligible(a: np.ndarray) -> bool:
    """Whether the kernel may back the memory of ``a`` with transparent huge pages (its mapping in smaps)."""
    address = a.ctypes.data + a.nbytes // 2  # mid-array: an advice may start at an aligned boundary
    eligible = None
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "THPeligible:":
                eligible = line.split()[1] == "1"
    assert eligible is not None, "the array's mapping is not in smaps"
    return eligible


def test_large_buffers_on_small_pages():
    """Work and result buffers are mapped on small pages (first touch of huge pages cost 7x more on the VMs here),
    and the buffer pools still recognise and recycle them."""
    import os
    import sys

    from ilastik_widget.core import workspace

    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        pytest.skip("no transparent huge pages here")
    if "[madvise]" not in mode or not os.path.exists("/proc/self/smaps"):
        pytest.skip(f"transparent huge pages are not in madvise mode here ({mode.strip()})")
    big = (3, 1024, 1024)  # 12 MiB: numpy advises huge pages from 4 MiB on
    if np.lib.NumpyVersion(np.__version__) >= "1.22.0":
        assert _thp_eligible(np.empty(big, np.float32))  # what the workspace avoids
    work = workspace.empty(big)
    assert work.shape == big and work.dtype == np.float32 and work.flags.c_contiguous
    assert not _thp_eligible(work)
    assert workspace.empty((10, 10)).base is None  # small arrays from numpy as before
    workspace.clear_workspace()
    a = workspace.ARENA.get(big)
    assert not _thp_eligible(a)
    workspace.ARENA.put(a)
    assert workspace.ARENA.get(big) is a  # kept and handed out again
    workspace.ARENA.put(a[:1])  # a view is never kept
    assert workspace.ARENA._bytes == 0
    out = workspace.new_output((512, 512, 10))
    assert not _thp_eligible(out)
    out[...] = 1.0
    owner = id(workspace.RESULTS._owners[-1])
    assert sys.getrefcount(workspace.RESULTS._owners[-1]) > 3  # the live result references its buffer
    assert id(workspace.new_output((512, 512, 10)).base) != owner  # so it is never handed out again
    del out
    assert id(workspace.new_output((512, 512, 10)).base) == owner  # free again: recycled
    workspace.clear_workspace()


# ---------------------------------------------------------------------------------------------
# anisotropic voxels


@pytest.mark.parametrize("voxel_size", [(3.0, 1.0, 1.0), (2.5, 1.25, 1.0)])
def test_anisotropic_3d_matches_reference(rng, voxel_size):
    """sigma along axis a = s * min(voxel_size) / voxel_size[a] voxels, derivatives per unit of min(voxel_size)."""
    img = rng.random((14, 26, 30)).astype(np.float32)
    img[4:9, 8:18, 6:22] += 2.0
    sel = FeatureSelection.all()
    got = compute_features(img, sel, voxel_size=voxel_size)
    ref = ref_all(img.astype(np.float64), sel, voxel_size)
    assert_close_channels(got, ref, sel.channel_names(3), 1e-5, np.abs(img).max())
    # the unit is irrelevant: only ratios count
    scaled = compute_features(img, sel, voxel_size=tuple(0.37 * v for v in voxel_size))
    np.testing.assert_allclose(scaled, got, rtol=1e-5, atol=1e-5)


def test_anisotropic_smoothing_is_scipys_per_axis_gaussian(rng):
    """An independent check of the sigma rule: scipy's Gaussian filter with per-axis sigmas."""
    img = rng.random((20, 30, 34)).astype(np.float64)
    sel = FeatureSelection.none().with_feature("gaussian_smoothing", 3.5, True)
    got = compute_features(img.astype(np.float32), sel, voxel_size=(2.0, 0.5, 0.5))[..., 0]
    ref = img
    for axis, sigma in enumerate((3.5 / 4, 3.5, 3.5)):
        radius = math.ceil(3.5 * sigma)  # ours; scipy's would be one tap shorter
        ref = ndi.gaussian_filter1d(ref, sigma, axis=axis, mode="mirror", truncate=radius / sigma)
    assert np.abs(got - ref).max() < 2e-6


def test_anisotropic_derivatives_are_physical():
    """A ramp in physical coordinates has the same gradient and structure tensor at any voxel size."""
    vs = (4.0, 1.0, 1.5)
    z, y, x = np.indices((30, 60, 50), dtype=np.float64)
    img = (2.0 * z * vs[0] - 1.0 * y * vs[1] + 0.5 * x * vs[2]).astype(np.float32)  # unit = smallest voxel size
    got = compute_features(img, voxel_size=vs)
    names = FeatureSelection.all().channel_names(3)
    inner = (slice(10, 20), slice(25, 35), slice(20, 30))  # away from the mirrored borders at sigma 1.6
    for s in (0.7, 1.0, 1.6):
        ggm = got[inner + (names.index(f"gaussian_gradient_magnitude_{s:g}"),)]
        np.testing.assert_allclose(ggm, math.sqrt(4 + 1 + 0.25), rtol=1e-3)
        st0 = got[inner + (names.index(f"structure_tensor_eigenvalues_{s:g}_ev0"),)]
        np.testing.assert_allclose(st0, 5.25, rtol=2e-3)
        assert np.abs(got[inner + (names.index(f"laplacian_of_gaussian_{s:g}"),)]).max() < 1e-3


def test_anisotropic_blob_is_isotropic_in_space():
    """A round blob sampled on an anisotropic grid: equal Hessian eigenvalues at its centre, as on a fine grid."""
    vs = (2.0, 1.0, 1.0)
    n = (21, 41, 41)
    grid = [(np.arange(m) - m // 2) * v for m, v in zip(n, vs)]
    zz, yy, xx = np.meshgrid(*grid, indexing="ij")
    img = np.exp(-(zz**2 + yy**2 + xx**2) / (2 * 4.0**2)).astype(np.float32)
    got = compute_features(img, voxel_size=vs)
    names = FeatureSelection.all().channel_names(3)
    c = tuple(m // 2 for m in n)
    for s in (1.6, 3.5):
        ev = np.array([got[c + (names.index(f"hessian_of_gaussian_eigenvalues_{s:g}_ev{i}"),)] for i in range(3)])
        assert np.all(ev < 0)
        # on this grid the z samples are 2 apart; the eigenvalues agree to the sampling error
        assert (ev.max() - ev.min()) < 0.05 * abs(ev).max(), (s, ev)
    iso = compute_features(img, voxel_size=None)
    ev_iso = [iso[c + (names.index(f"hessian_of_gaussian_eigenvalues_1.6_ev{i}"),)] for i in range(3)]
    assert (max(ev_iso) - min(ev_iso)) > 0.3 * abs(min(ev_iso))  # ignoring the voxel size would be wrong


def test_tiny_sigmas_become_finite_differences():
    from ilastik_widget.core.filters import kernel

    np.testing.assert_array_equal(kernel(0.01, 0), [0, 1, 0])
    np.testing.assert_array_equal(kernel(0.01, 1), [-0.5, 0, 0.5])
    np.testing.assert_array_equal(kernel(0.01, 2), [1, -2, 1])
    for s in (0.05, 0.1, 0.2, 0.7):
        k2 = kernel(s, 2).astype(np.float64)
        x = np.arange(len(k2)) - len(k2) // 2
        assert abs(k2.sum()) < 1e-6 and abs(0.5 * np.dot(x * x, k2) - 1) < 1e-6, s
    img = np.random.default_rng(0).random((4, 30, 30)).astype(np.float32)
    got = compute_features(img, voxel_size=(100.0, 1.0, 1.0))  # sigma along z: 0.003..0.1 voxels
    assert np.isfinite(got).all()


def test_isotropic_voxel_size_changes_nothing(rng):
    img = rng.random((10, 20, 22)).astype(np.float32)
    np.testing.assert_array_equal(compute_features(img, voxel_size=(0.4, 0.4, 0.4)), compute_features(img))
    img2 = rng.random((20, 22)).astype(np.float32)
    np.testing.assert_array_equal(compute_features(img2, voxel_size=[2, 2]), compute_features(img2))


@pytest.mark.parametrize(
    "voxel_size, match",
    [
        ((1.0, 0.0, 1.0), r"positive and finite, got 0.0"),
        ((1.0, -2.0, 1.0), r"got -2.0"),
        ((1.0, float("nan"), 1.0), r"got nan"),
        ((1.0, float("inf"), 1.0), r"got inf"),
        ((1.0, 1.0), r"\(1.0, 1.0\) has 2 value\(s\) but the image has 3 spatial axes"),
        ((1.0, 1.0, 1.0, 1.0), "has 4 value"),
        (1.0, "one positive number per spatial axis"),
        ("111", "one positive number per spatial axis"),
        ((1.0, "a", 1.0), "'a' is not a number"),
        ((1.0, True, 1.0), "True is not a number"),
        ((1.0, 10**400, 1.0), r"positive and finite, got 1000000"),  # beyond float range
    ],
)
def test_voxel_size_errors(voxel_size, match):
    img = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match=match):
        compute_features(img, voxel_size=voxel_size)
    with pytest.raises(ValueError, match=match):
        features_for_region(img, None, voxel_size=voxel_size)
    with pytest.raises(ValueError, match=match):
        halo(FeatureSelection.all(), 3, voxel_size=voxel_size)


def test_halo_per_axis():
    sel = FeatureSelection.all()
    h = halo(sel)
    assert isinstance(h, int) and h == math.ceil(35.0) + math.ceil(17.5)
    assert halo(sel, 3) == (h, h, h) and halo(sel, 2) == (h, h)
    hz = halo(sel, voxel_size=(4.0, 1.0, 1.0))
    assert hz[1:] == (h, h) and hz[0] == math.ceil(3.5 * 2.5) + math.ceil(3.5 * 1.25)
    assert halo(sel, 3, mode="2d") == (0, h, h)
    small = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    assert halo(small.with_feature("gaussian_smoothing", 5.0, True).with_2d(5.0, True), 3) == (4, 18, 18)


def test_blocks_anisotropic_and_2d_scales(rng):
    img = rng.random((24, 40, 44)).astype(np.float32)
    sel = FeatureSelection.none()
    for f in FEATURES:
        sel = sel.with_feature(f, 1.0, True).with_feature(f, 3.5, True)
    check_blocks(rng, img, sel, (6, 15, 17), voxel_size=(3.0, 1.0, 1.0))
    check_blocks(rng, img, sel.with_2d(3.5, True), (6, 15, 17))
    arr = RecordingArray(img)
    features_for_region(arr, (slice(10, 12), slice(0, 5), slice(0, 5)), sel.with_2d(1.0, True).with_2d(3.5, True))
    assert arr.reads[0][0] == slice(10, 12)  # nothing read along z when every scale is 2D


# ---------------------------------------------------------------------------------------------
# scales computed in 2D on volumes


def test_scales_in_2d_match_reference(rng):
    img = rng.random((8, 26, 30)).astype(np.float32)
    img[2:6, 5:15, 8:20] += 2.0
    sel = FeatureSelection.all().with_2d(1.0, True).with_2d(10.0, True)
    got = compute_features(img, sel)
    assert got.shape[-1] == sel.n_channels(3) == 61 - 4
    ref = ref_all(img.astype(np.float64), sel)
    assert_close_channels(got, ref, sel.channel_names(3), 1e-5, np.abs(img).max())
    aniso = compute_features(img, sel, voxel_size=(5.0, 1.0, 2.0))
    assert_close_channels(aniso, ref_all(img.astype(np.float64), sel, (5.0, 1.0, 2.0)), sel.channel_names(3), 1e-5, 3)


def test_scales_in_2d_are_the_slicewise_channels(rng):
    vol = rng.random((5, 30, 33)).astype(np.float32)
    sel = FeatureSelection.all().with_2d(1.6, True)
    got = compute_features(vol, sel)
    names = sel.channel_names(3)
    flat = FeatureSelection.all()
    flat_names = flat.channel_names(2)
    full3d = compute_features(vol, flat)
    names3d = flat.channel_names(3)
    for z in range(5):
        per_slice = compute_features(vol[z], flat)
        for i, n in enumerate(names):
            if "_1.6_2d" in n:
                np.testing.assert_array_equal(got[z, ..., i], per_slice[..., flat_names.index(n.replace("_2d", ""))])
            else:
                np.testing.assert_array_equal(got[z, ..., i], full3d[z, ..., names3d.index(n)])
    # mode="2d" is every scale in 2D
    np.testing.assert_array_equal(compute_features(vol, mode="2d"), compute_features(vol, flat.all_in_2d()))


def test_selection_in_2d_api_and_dicts():
    sel = FeatureSelection.all().with_2d(3.5, True).with_2d(0.7, True)
    assert sel.is_2d(3.5) and sel.is_2d(0.7) and not sel.is_2d(1.0)
    assert sel.with_2d(3.5, False).in_2d == {0.7}
    assert sel.with_feature("gaussian_smoothing", 1.0, False).in_2d == sel.in_2d
    assert sel != FeatureSelection.all() and sel.n_channels(3) == 61 - 4 and sel.n_channels(2) == 49
    assert sel.filter_ndim(3.5, 3) == 2 and sel.filter_ndim(1.0, 3) == 3 and sel.filter_ndim(1.0, 2) == 2
    names = sel.channel_names(3)
    assert len(set(names)) == len(names) == 57
    assert "hessian_of_gaussian_eigenvalues_3.5_2d_ev1" in names and "gaussian_smoothing_1_2d" not in names
    d = json.loads(json.dumps(sel.to_dict()))
    assert d["in_2d"] == [0.7, 3.5]
    assert FeatureSelection.from_dict(d) == sel
    old = {"features": FeatureSelection.all().to_dict()["features"]}  # saved before the 2D column existed
    assert FeatureSelection.from_dict(old) == FeatureSelection.all()
    assert FeatureSelection.all().to_dict()["in_2d"] == []
    assert "in 2D" in repr(sel)
    sel.check_for(3)
    FeatureSelection.all().check_for(2)
    with pytest.raises(ValueError, match=r"scales 0.7, 3.5 are set to be computed in 2D.*this image is 2D"):
        sel.check_for(2)
    for bad in ({"features": {}, "in_2d": [2.0]}, {"features": {}, "in_2d": "1.0"}, {"features": {}, "in_2d": [True]}):
        with pytest.raises(ValueError, match="scale|in_2d"):
            FeatureSelection.from_dict(bad)
    with pytest.raises(ValueError, match="unknown scale 4"):
        FeatureSelection.all().with_2d(4, True)
    with pytest.raises(ValueError, match="in_2d must be a set of scales"):
        FeatureSelection(frozenset(), 1.0)


def test_scales_in_2d_on_a_2d_image_are_an_error():
    img = np.zeros((20, 20), np.float32)
    sel = FeatureSelection.all().with_2d(1.0, True)
    for call in (
        lambda: compute_features(img, sel),
        lambda: features_for_region(img, None, sel),
        lambda: halo(sel, 2),
    ):
        with pytest.raises(ValueError, match="applies to volumes only"):
            call()
    assert compute_features(img, mode="2d").shape == (20, 20, 49)  # mode="2d" on a 2D image: as before


def test_feature_table_lists_the_2d_scales():
    table = feature_table()
    assert table["scales_2d"] == list(SCALES)
    sel = FeatureSelection.all()
    for s in table["scales_2d"]:
        sel = sel.with_2d(s, True)
    assert sel.n_channels(3) == sel.n_channels(2) == 49


def test_all_finite_checks_every_piece_of_a_large_array():
    from ilastik_widget.core.features import all_finite

    a = np.zeros((3, 200_000), np.float32)  # more than one piece of the check
    assert all_finite(a) and all_finite(a[:, ::3]) and all_finite(np.arange(5))
    for bad in (np.nan, np.inf, -np.inf):
        a[2, -1] = bad
        assert not all_finite(a) and not all_finite(a[:, 1::3])  # the last element, contiguous or not
        a[2, -1] = 0
