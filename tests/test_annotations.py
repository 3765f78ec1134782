"""Tests of ilastik_widget.core.annotations: stroke geometry, erase, undo/redo, classes, serialisation."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilastik_widget.core.annotations import DEFAULT_COLORS, Annotations, normalize_region
from ilastik_widget.core.limits import MAX_CLASSES, MAX_NAME_LENGTH
from ilastik_widget.core.rasterize import SIMPLIFY_TOLERANCE as TOL


def _reference_distance(shape2d, points2d):
    """Distance of every pixel centre to a polyline, from densely sampled points (independent of the
    closed-form projection the module uses)."""
    pts = np.asarray(points2d, float)
    samples = [pts[:1]]
    for p, q in zip(pts[:-1], pts[1:]):
        t = np.linspace(0, 1, 2001)[:, None]
        samples.append(p + t * (q - p))
    samples = np.concatenate(samples)
    yy, xx = np.mgrid[: shape2d[0], : shape2d[1]]
    pix = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    d = np.full(len(pix), np.inf)
    for chunk in np.array_split(samples, max(1, len(samples) // 500)):
        d = np.minimum(d, np.sqrt(((pix[:, None, :] - chunk[None]) ** 2).sum(-1)).min(1))
    return d.reshape(shape2d)


@pytest.mark.parametrize("radius", [0.8, 1.5, 2.0, 3.7])
def test_polyline_covers_pixels_within_radius_of_segments(radius):
    shape = (40, 50)
    points = [[5.2, 4.0], [30.7, 12.3], [33.0, 45.1], [10.0, 40.0]]
    a = Annotations(shape)
    a.add_stroke(1, points, radius=radius)
    lab = a.labels()
    d = _reference_distance(shape, points)
    # The sampled reference is exact to ~0.02 px: pixels clearly inside must be painted, clearly outside not.
    assert np.all(lab[d <= radius - 0.03] == 1)
    assert np.all(lab[d > radius + 0.03] == 0)
    # Segments, not only the sample points: the middle of the long second segment is covered.
    assert lab[21, 28] == 1 or d[21, 28] > radius
    mid = np.round((np.array(points[1]) + np.array(points[2])) / 2).astype(int)
    assert lab[tuple(mid)] == 1


def test_segment_between_far_points_is_filled_not_dotted():
    a = Annotations((20, 100))
    a.add_stroke(2, [[10, 5], [10, 95]], radius=1)
    lab = a.labels()
    assert np.all(lab[10, 4:97] == 2)
    assert np.all(lab[9, 5:96] == 2) and np.all(lab[11, 5:96] == 2)
    assert lab[8].sum() == 0 and lab[12].sum() == 0


def test_thin_brush_still_paints_the_pixel_under_the_point():
    a = Annotations((10, 10))
    a.add_stroke(1, [[3.4, 6.4]], radius=0.2)
    coords, labels = a.labelled()
    assert coords.tolist() == [[3, 6]] and labels.tolist() == [1]


@pytest.mark.parametrize("axes,fixed_axis", [((1, 2), 0), ((0, 2), 1), ((0, 1), 2)])
def test_3d_stroke_stays_in_its_plane(axes, fixed_axis):
    shape = (20, 24, 28)
    a = Annotations(shape)
    p = np.array([[6.0, 7.0, 8.0], [12.0, 15.0, 18.0]])
    p[:, fixed_axis] = 9.4  # off-plane coordinate, rounded to 9
    a.add_stroke(1, p, radius=2, axes=axes)
    coords, _ = a.labelled()
    assert np.all(coords[:, fixed_axis] == 9)
    # In the plane, the covered set equals the distance-based 2D reference.
    plane = a.labels()[tuple(9 if i == fixed_axis else slice(None) for i in range(3))]
    shape2d = tuple(n for i, n in enumerate(shape) if i != fixed_axis)
    d = _reference_distance(shape2d, p[:, list(axes)])
    assert np.all(plane[d <= 1.97] == 1) and np.all(plane[d > 2.03] == 0)


def test_default_axes_are_last_two_and_off_plane_rounding():
    a = Annotations((10, 12, 14))
    a.add_stroke(1, [[4.6, 5, 5]], radius=1)
    coords, _ = a.labelled()
    assert set(coords[:, 0].tolist()) == {5}
    assert a.strokes[0].axes == (1, 2)


def test_segment_across_planes_is_drawn_in_both():
    a = Annotations((10, 20, 20))
    a.add_stroke(1, [[3, 5, 5], [4, 5, 15]], radius=1)
    lab = a.labels()
    assert np.all(lab[3, 5, 5:16] == 1) and np.all(lab[4, 5, 5:16] == 1)
    assert lab[2].sum() == 0 and lab[5].sum() == 0


def test_later_strokes_override_and_erase_removes_only_earlier():
    a = Annotations((30, 30))
    a.add_stroke(1, [[10, 2], [10, 27]], radius=2)
    a.add_stroke(2, [[2, 10], [27, 10]], radius=2)
    lab = a.labels()
    assert lab[10, 10] == 2 and lab[10, 20] == 1 and lab[20, 10] == 2
    a.add_stroke(0, [[10, 20]], radius=3, erase=True)
    lab = a.labels()
    assert lab[10, 20] == 0 and lab[10, 17] == 0 and lab[10, 25] == 1
    assert lab[10, 10] == 2  # outside the eraser
    # A stroke after the eraser paints again.
    a.add_stroke(2, [[10, 20]], radius=1)
    lab = a.labels()
    assert lab[10, 20] == 2 and lab[10, 18] == 0
    # An erase stroke given a class still erases every class.
    a.add_stroke(1, [[10, 10]], radius=1, erase=True)
    assert a.labels()[10, 10] == 0


def test_undo_redo_of_add_and_remove_keeps_order():
    a = Annotations((20, 20))
    s1 = a.add_stroke(1, [[10, 5], [10, 15]], radius=2)
    s2 = a.add_stroke(2, [[10, 10]], radius=2)
    both = a.labels().copy()
    assert both[10, 10] == 2
    a.remove_stroke(s1)
    assert a.labels()[10, 5] == 0
    assert a.undo()  # s1 comes back *before* s2: the overlap stays class 2
    assert [s.id for s in a.strokes] == [s1, s2]
    np.testing.assert_array_equal(a.labels(), both)
    assert a.undo()  # undo the addition of s2
    assert a.labels()[10, 10] == 1
    assert a.redo()
    np.testing.assert_array_equal(a.labels(), both)
    assert a.redo()  # redo the removal of s1
    assert [s.id for s in a.strokes] == [s2]
    assert not a.redo()
    # A new action clears the redo stack.
    a.undo()
    a.add_stroke(1, [[1, 1]], radius=1)
    assert not a.redo()
    assert a.undo() and a.undo() and a.undo()
    assert not a.undo()
    assert a.labels().sum() == 0
    with pytest.raises(KeyError):
        a.remove_stroke(999)


def test_version_bumps_on_every_change():
    a = Annotations((10, 10))
    versions = [a.version]
    sid = a.add_stroke(1, [[5, 5]], radius=1)
    versions.append(a.version)
    a.rename_class(1, "bg")
    versions.append(a.version)
    a.recolor_class(1, "#123456")
    versions.append(a.version)
    a.remove_stroke(sid)
    versions.append(a.version)
    a.undo()
    versions.append(a.version)
    assert all(b > c for b, c in zip(versions[1:], versions[:-1]))


def test_classes_add_rename_recolor_and_distinct_colors():
    a = Annotations((10, 10))
    assert [c.name for c in a.classes] == ["Background", "Foreground"]
    for i in range(20):
        a.add_class(f"c{i}")
    colors = [c.color for c in a.classes]
    assert len(set(colors)) == len(colors)
    assert colors[:2] == DEFAULT_COLORS[:2]
    a.rename_class(2, "Cells")
    a.recolor_class(2, "#00FF00")
    assert a.classes[1].name == "Cells" and a.classes[1].color == "#00ff00"
    with pytest.raises(ValueError):
        a.recolor_class(2, "green")
    with pytest.raises(ValueError):
        a.rename_class(99, "x")


def test_remove_class_removes_its_strokes_and_renumbers():
    a = Annotations((30, 30), classes=("a", "b", "c"))
    a.add_stroke(1, [[5, 5]], radius=1)
    a.add_stroke(2, [[15, 15]], radius=1)
    s3 = a.add_stroke(3, [[25, 25]], radius=1)
    a.add_stroke(3, [[25, 25]], radius=1, erase=True)
    a.add_stroke(3, [[25, 5]], radius=1)
    a.remove_class(2)
    assert [c.name for c in a.classes] == ["a", "c"]
    lab = a.labels()
    assert lab[5, 5] == 1 and lab[15, 15] == 0 and lab[25, 5] == 2 and lab[25, 25] == 0
    assert [s.label for s in a.strokes if not s.erase] == [1, 2, 2]
    assert a.get_stroke(s3).label == 2
    assert not a.can_undo  # the history referred to the old numbering
    assert a.count_per_class().tolist() == [5, 5]


def test_serialisation_round_trip_through_json():
    a = Annotations((16, 20, 24), classes=("x", "y", "z"))
    a.recolor_class(3, "#abcdef")
    a.add_stroke(1, [[3, 4.5, 6.25], [3, 10, 12]], radius=2.5, axes=(1, 2))
    a.add_stroke(2, [[2, 8, 9], [12, 8, 19]], radius=1, axes=(0, 2))
    sid = a.add_stroke(3, [[5, 5, 5]], radius=3)
    a.remove_stroke(sid)
    a.add_stroke(0, [[3, 6, 8]], radius=1, erase=True)
    text = json.dumps(a.to_dict())
    b = Annotations.from_dict(json.loads(text), (16, 20, 24))
    assert [(c.name, c.color) for c in b.classes] == [(c.name, c.color) for c in a.classes]
    assert [s.to_dict() for s in b.strokes] == [s.to_dict() for s in a.strokes]
    np.testing.assert_array_equal(b.labels(), a.labels())
    # Ids are not reused after loading.
    assert b.add_stroke(1, [[1, 1, 1]]) > max(s.id for s in a.strokes) and b.strokes[-1].id != sid
    with pytest.raises(ValueError):
        Annotations.from_dict(a.to_dict(), (16, 20, 25))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(label=1, points=[[10, 3]]), "outside"),
        (dict(label=1, points=[[-1, 3]]), "outside"),
        (dict(label=3, points=[[1, 3]]), "unknown class"),
        (dict(label=0, points=[[1, 3]]), "unknown class"),
        (dict(label=1, points=[[1, 3]], radius=0), "radius"),
        (dict(label=1, points=[[1, 3]], radius=-2), "radius"),
        (dict(label=1, points=[[1, 3]], radius=float("nan")), "radius"),
        (dict(label=1, points=[[1, 3]], axes=(0, 0)), "axes"),
        (dict(label=1, points=[[1, 3]], axes=(0, 5)), "axes"),
        (dict(label=1, points=[[1, 3]], axes=(0,)), "axes"),
        (dict(label=1, points=[[1, 3, 4]]), "shape"),
        (dict(label=1, points=[[1, np.nan]]), "finite"),
        (dict(label=1, points=[]), "shape"),
    ],
)
def test_stroke_errors(kwargs, match):
    a = Annotations((10, 10))
    with pytest.raises(ValueError, match=match):
        a.add_stroke(**kwargs)
    assert a.strokes == [] and a.version == 0


def test_edge_points_accepted_and_footprint_clipped():
    a = Annotations((10, 10))
    a.add_stroke(1, [[9.4, 0], [9.4, 9.4]], radius=3)
    coords, _ = a.labelled()
    assert coords.min() >= 0 and coords[:, 0].max() == 9 and coords[:, 1].max() == 9
    assert a.stroke_bounds(a.strokes[0].id) == (slice(7, 10), slice(0, 10))  # 9.4 - 3 = 6.4


def test_large_image_never_allocates_dense_volume():
    shape = (20000, 20000)  # a dense uint8 label image would be 400 MB
    a = Annotations(shape)
    tracemalloc.start()
    try:
        a.add_stroke(1, [[100, 100], [150, 19000]], radius=3)
        a.add_stroke(2, [[19990, 5], [19000, 19990]], radius=2)
        coords, labels = a.labelled()
        region = (slice(19000, 19100), slice(19900, 20000))
        dense = a.labels(region)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert dense.shape == (100, 100) and dense.max() == 2
    assert set(np.unique(labels).tolist()) == {1, 2} and len(labels) > 100000


def test_labelled_region_filters_and_dense_region_matches_whole():
    a = Annotations((40, 40))
    a.add_stroke(1, [[5, 5], [35, 35]], radius=2)
    a.add_stroke(2, [[5, 35], [35, 5]], radius=2)
    whole = a.labels()
    region = (slice(10, 30), slice(3, 17))
    np.testing.assert_array_equal(a.labels(region), whole[region])
    coords, labels = a.labelled(region)
    assert np.all((coords >= [10, 3]) & (coords < [30, 17]))
    assert len(labels) == np.count_nonzero(whole[region])


def test_normalize_region_errors():
    assert normalize_region(None, (4, 5)) == (slice(0, 4), slice(0, 5))
    assert normalize_region((slice(1, None),), (4, 5)) == (slice(1, 4), slice(0, 5))
    for bad in [
        (slice(0, 5), slice(0, 5)),
        (slice(-1, 2),),
        (slice(2, 2),),
        (slice(0, 4, 2),),
        (slice(0, 1), slice(0, 1), slice(0, 1)),
        (1, 2),
    ]:
        with pytest.raises(ValueError):
            normalize_region(bad, (4, 5))


# ---------------------------------------------------------------------- rasterising at the cost of the painted area
def _brute_force_stroke(points, radius, shape):
    """Voxels within ``radius`` of a 2D polyline, from the closed-form distance of every pixel to every segment."""
    pts = np.asarray(points, float)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    d2 = np.full(shape, np.inf)
    for p, q in zip(pts[:-1], pts[1:]) if len(pts) > 1 else [(pts[0], pts[0])]:
        d = q - p
        dd = float(d @ d)
        t = np.zeros(shape) if dd == 0 else np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / dd, 0, 1)
        d2 = np.minimum(d2, (yy - p[0] - t * d[0]) ** 2 + (xx - p[1] - t * d[1]) ** 2)
    return d2


def _check_against_reference(lab, d2, radius, points, tol):
    """Painted where the distance is at most ``radius - tol``, unpainted beyond ``radius + tol`` (except under the
    points themselves)."""
    assert np.all(lab[d2 <= (radius - tol) ** 2] == 1)
    outside = (d2 > (radius + tol) ** 2) & ~_under_points(points, lab.shape)
    assert np.all(lab[outside] == 0)


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(st.tuples(st.floats(-0.49, 29.49), st.floats(-0.49, 33.49)).map(list), min_size=1, max_size=6),
    radius=st.floats(0.1, 9.0),
)
def test_stroke_covers_exactly_the_pixels_within_its_radius(points, radius):
    shape = (30, 34)
    a = Annotations(shape)
    a.add_stroke(1, points, radius=radius)
    # Exact up to the simplification of nearly collinear points (at most SIMPLIFY_TOLERANCE px) and float rounding.
    _check_against_reference(a.labels(), _brute_force_stroke(points, radius, shape), radius, points, 1e-6 + TOL)


def _under_points(points, shape):
    mask = np.zeros(shape, bool)
    idx = np.floor(np.asarray(points, float) + 0.5).astype(int)
    mask[idx[:, 0], idx[:, 1]] = True
    return mask


def test_stroke_painting_over_itself_many_times_is_exact():
    # A long scribble in a small place: built in a mask of its bounding box where covered segments are skipped.
    rng = np.random.default_rng(4)
    points = np.clip(np.cumsum(rng.normal(0, 1.5, (6000, 2)), axis=0) + 40, 0, 79)
    a = Annotations((80, 80))
    a.add_stroke(1, points, radius=5)
    _check_against_reference(a.labels(), _brute_force_stroke(points, 5, (80, 80)), 5, points, 1e-6 + TOL)


def test_densely_sampled_stroke_is_simplified_within_the_tolerance():
    # 100,000 points on a circle (what a browser may send): the painted ring is the set within r of the circle.
    t = np.linspace(0, 2 * np.pi, 100_000)
    points = np.stack([100 + 70 * np.sin(t), 100 + 70 * np.cos(t)], axis=1)
    a = Annotations((200, 200))
    a.add_stroke(1, points, radius=6.5)
    yy, xx = np.indices((200, 200))
    ring = np.abs(np.hypot(yy - 100, xx - 100) - 70)
    lab = a.labels()
    assert np.all(lab[ring <= 6.5 - TOL - 1e-6] == 1) and np.all(lab[ring > 6.5 + TOL + 1e-6] == 0)


@pytest.mark.parametrize(
    "kind,radius", [("curve", 30), ("curve", 61), ("scribble", 30), ("zigzag", 30), ("spiral", 30)]
)
def test_long_strokes_cost_memory_of_the_painted_area(kind, radius):
    # Up to 50,000 points, as the browser may send for a long gesture; the rasteriser used to cost points x brush
    # area (1,500 points at radius 61: +393 MB).
    n = 1500 if kind == "curve" else 50_000
    t = np.linspace(0, 1, n)
    if kind == "curve":
        points = np.stack([1000 + 600 * np.sin(6 * t), 1000 + 800 * np.cos(4 * t)], axis=1)
    elif kind == "scribble":
        points = np.clip(np.cumsum(np.random.default_rng(0).normal(0, 1, (n, 2)), axis=0) + 1024, 0, 2047)
    elif kind == "zigzag":
        points = np.stack([1000 + (np.arange(n) % 2) * 3.0, 2000 * t], axis=1)
    else:
        turn = 60 * np.pi * t
        points = np.stack([1024 + 900 * t * np.sin(turn), 1024 + 900 * t * np.cos(turn)], axis=1)
    a = Annotations((2048, 2048))
    sid = a.add_stroke(1, points, radius=radius)
    tracemalloc.start()
    try:
        voxels = a.stroke_voxels(sid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    painted_bytes = voxels.nbytes
    assert len(voxels) > 50_000
    assert peak < 12 * painted_bytes + 8e6, f"peak {peak / 1e6:.1f} MB for {painted_bytes / 1e6:.1f} MB painted"


# ---------------------------------------------------------------------- class limits
def test_class_limit_is_enforced_and_labels_stay_uint8():
    a = Annotations((8, 8), classes=[f"c{i}" for i in range(MAX_CLASSES)])
    assert a.n_classes == MAX_CLASSES == 64
    a.add_stroke(MAX_CLASSES, [[4, 4]], radius=1)
    assert a.labels().dtype == np.uint8 and a.labels()[4, 4] == MAX_CLASSES
    version = a.version
    with pytest.raises(ValueError, match="at most 64 classes"):
        a.add_class("one too many")
    assert a.n_classes == MAX_CLASSES and a.version == version
    with pytest.raises(ValueError, match="at most 64 classes"):
        Annotations((8, 8), classes=[f"c{i}" for i in range(MAX_CLASSES + 1)])
    with pytest.raises(ValueError, match="at most 64 classes"):
        Annotations.from_dict({"shape": [8, 8], "classes": [{"name": f"c{i}", "color": "#000000"} for i in range(65)]})


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "x" * (MAX_NAME_LENGTH + 1), None, 3])
def test_blank_long_or_non_text_class_names_are_refused(bad):
    a = Annotations((8, 8))
    with pytest.raises(ValueError, match="class name"):
        a.add_class(bad)
    with pytest.raises(ValueError, match="class name"):
        a.rename_class(1, bad)
    assert [c.name for c in a.classes] == ["Background", "Foreground"] and a.version == 0
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="class name"):
            Annotations((8, 8), classes=["ok", bad])


def test_class_names_are_stripped_and_the_longest_allowed_name_is_kept():
    a = Annotations((8, 8), classes=["  Nuclei  ", "x" * MAX_NAME_LENGTH])
    assert a.classes[0].name == "Nuclei" and len(a.classes[1].name) == MAX_NAME_LENGTH
    a.rename_class(1, " Cells\n")
    assert a.classes[0].name == "Cells"


def test_duplicate_entry_ids_in_saved_data_are_refused():
    a = Annotations((10, 10))
    a.add_stroke(1, [[2, 2]])
    d = a.to_dict()
    d["strokes"].append(dict(d["strokes"][0], label=2))
    with pytest.raises(ValueError, match="two entries have id 1"):
        Annotations.from_dict(d)


# The Okabe-Ito colours (Okabe and Ito, "Color Universal Design"), told apart with the common colour-vision deficiencies.
OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}


def test_the_first_class_colours_are_colour_blind_safe_and_away_from_stain_hues():
    """The first classes' default colours are Okabe-Ito colours whose hues stay at least 40 degrees from those of
    haematoxylin, eosin and DAB (each stain's colour at one unit of optical density, from scikit-image's stain
    matrix): a stroke is not lost on a stained slide."""
    import colorsys

    from skimage.color import rgb_from_hed

    def hue(rgb) -> float:
        return colorsys.rgb_to_hsv(*rgb)[0] * 360

    stains = {name: hue(np.exp(-od)) for name, od in zip(("haematoxylin", "eosin", "DAB"), rgb_from_hed)}
    for color in DEFAULT_COLORS[:2]:
        assert color in OKABE_ITO, color
        h = hue([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
        for name, stain in stains.items():
            gap = min(abs(h - stain), 360 - abs(h - stain))
            assert gap >= 40, f"{color} (hue {h:.0f}) is {gap:.0f} degrees from {name} (hue {stain:.0f})"
    assert len(set(DEFAULT_COLORS[:7])) == 7 and set(DEFAULT_COLORS[:7]) <= OKABE_ITO
