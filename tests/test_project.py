"""ilastik_widget.io.project: round trips, damaged and crafted files (autosave: test_autosave.py)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.project import (
    FORMAT_VERSION,
    ProjectError,
    load_model,
    load_session,
    read_project,
    save_session,
)
from ilastik_widget.io.sources import open_source

REPO = Path(__file__).resolve().parents[1]
SEL = (
    FeatureSelection.none()
    .with_feature("gaussian_smoothing", 1.0, True)
    .with_feature("gaussian_gradient_magnitude", 1.6, True)
    .with_feature("hessian_of_gaussian_eigenvalues", 3.5, True)
)


def _session(img, truth, **kw):
    s = Session(img, features=SEL, seed=5, classifier={"n_estimators": 15, "max_depth": 12}, **kw)
    for st in simulated_strokes(truth, n_per_class=3, radius=2, seed=1):
        s.add_stroke(**st)
    return s


def _strokes(s):
    return [(t.id, t.label, t.points.tolist(), t.radius, tuple(t.axes), t.erase) for t in s.strokes]


@pytest.fixture
def trained(tmp_path):
    img, truth = synthetic_cells((96, 120), seed=3)
    s = _session(img, truth)
    s.add_class("Debris", "#123456")
    s.recolor_class(1, "#abcdef")
    s.add_stroke(3, [[10.0, 10.0], [12.5, 30.25]], radius=1.5)
    s.add_stroke(1, [[50, 50], [60, 70]], radius=4, erase=True)
    s.remove_stroke(s.strokes[0].id)  # ids need not be contiguous
    s.train()
    return img, s


def test_round_trip_same_predictions(tmp_path, trained):
    img, s = trained
    p = s.predict()
    path = save_session(s, tmp_path / "a.ilastikw")
    # plain JSON + npy, no pickle anywhere
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        doc = json.loads(zf.read("project.json"))
    assert {"project.json", "arrays/stroke_points.npy", "arrays/stroke_offsets.npy", "arrays/image.npy"} <= names
    assert all(n == "project.json" or (n.startswith("arrays/") and n.endswith(".npy")) for n in names)
    assert "arrays/model/tree0/values.npy" in names and doc["model"]["n_classes"] == 3
    assert doc["format_version"] == FORMAT_VERSION and doc["image"]["embedded"] is True
    s2 = load_session(path)
    assert _strokes(s2) == _strokes(s)
    assert [(c.name, c.color) for c in s2.classes] == [(c.name, c.color) for c in s.classes]
    assert s2.feature_selection == s.feature_selection and s2.feature_mode == s.feature_mode
    assert s2.classifier.params() == s.classifier.params() and s2.seed == s.seed
    np.testing.assert_array_equal(s2.labels(), s.labels())
    assert s2.is_trained
    np.testing.assert_array_equal(s2.predict(), p)
    # new strokes after loading get fresh ids
    new = s2.add_stroke(1, [[5, 5]], radius=1)
    assert new > max(t.id for t in s.strokes)
    # the caller's image wins; a mismatching one is refused
    s3 = load_session(path, image=img)
    np.testing.assert_array_equal(s3.predict(), p)
    with pytest.raises(ValueError, match="shape"):
        load_session(path, image=img[:50])


def test_load_model_without_the_training_image(tmp_path, trained):
    from ilastik_widget.io.batch import predict_dask

    img, s = trained
    path = save_session(s, tmp_path / "m.ilastikw", embed_image=False)
    model = load_model(path)  # the stored forest: no image, no training
    assert model.n_classes == 3 and model.class_names[2] == "Debris" and model.ndim == 2
    np.testing.assert_array_equal(predict_dask(model, img)["probabilities"].compute(), s.predict())
    with pytest.raises(FileNotFoundError, match="image="):
        load_session(path)
    # untrained projects carry no model
    s.add_stroke(1, [[2, 2]])
    path2 = save_session(s, tmp_path / "stale.ilastikw")
    assert "model" not in read_project(path2)[0]


def test_untrained_and_3d_2d_mode(tmp_path):
    img, truth = synthetic_cells((12, 40, 44), seed=4)
    s = _session(img, truth, feature_mode="2d")
    save_session(s, tmp_path / "v.ilastikw")
    s2 = load_session(tmp_path / "v.ilastikw")
    assert not s2.is_trained and s2.feature_mode == "2d" and _strokes(s2) == _strokes(s)
    s.train()
    s2.train()
    np.testing.assert_array_equal(s2.predict(), s.predict())


def test_image_referenced_by_path(tmp_path):
    img, truth = synthetic_cells((80, 90), seed=6)
    data = tmp_path / "data"
    data.mkdir()
    z = zarr.open_array(str(data / "img.zarr"), mode="w", shape=img.shape, dtype=img.dtype, chunks=(32, 32))
    z[...] = img
    s = _session(open_source(str(data / "img.zarr")), truth)
    s.train()
    p = s.predict()
    save_session(s, data / "p.ilastikw")
    doc, arrays = read_project(data / "p.ilastikw")
    assert doc["image"]["embedded"] is False and "image" not in arrays
    assert doc["image"]["path"] == str(data / "img.zarr") and doc["image"]["relpath"] == "img.zarr"
    np.testing.assert_array_equal(load_session(data / "p.ilastikw").predict(), p)
    # project and data moved together: found through the relative path
    moved = tmp_path / "moved"
    data.rename(moved)
    s2 = load_session(moved / "p.ilastikw")
    assert s2.source is not None and s2.source.path == str(moved / "img.zarr")
    np.testing.assert_array_equal(s2.predict(), p)
    # image gone: a clear error saying what to do
    (moved / "p.ilastikw").rename(tmp_path / "p.ilastikw")
    import shutil

    shutil.rmtree(moved)
    with pytest.raises(FileNotFoundError, match="image=") as e:
        load_session(tmp_path / "p.ilastikw")
    assert "img.zarr" in str(e.value)
    np.testing.assert_array_equal(load_session(tmp_path / "p.ilastikw", image=img).predict(), p)


def _rewrite(src: Path, dst: Path, edit=None, drop=(), extra=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for n in zin.namelist():
            if n in drop:
                continue
            data = zin.read(n)
            if n == "project.json" and edit is not None:
                doc = json.loads(data)
                edit(doc)
                data = json.dumps(doc).encode()
            zout.writestr(n, data)
        for n, data in (extra or {}).items():
            zout.writestr(n, data)


def test_damaged_and_foreign_files(tmp_path, trained):
    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    raw = good.read_bytes()

    def expect(name, match, exc=ProjectError):
        with pytest.raises(exc, match=match):
            load_session(tmp_path / name)

    (tmp_path / "trunc.ilastikw").write_bytes(raw[: len(raw) // 2])
    expect("trunc.ilastikw", "not a zip archive, or truncated")
    (tmp_path / "garbage.ilastikw").write_bytes(os.urandom(5000))
    expect("garbage.ilastikw", "not an ilastik-widget project")
    (tmp_path / "empty.ilastikw").write_bytes(b"")
    expect("empty.ilastikw", "not an ilastik-widget project")
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as zf:
        zf.writestr("hello.txt", "a zip, but not ours")
    expect("foreign.zip", "without project.json")
    _rewrite(good, tmp_path / "otherformat.ilastikw", edit=lambda d: d.update(format="something-else"))
    expect("otherformat.ilastikw", "format 'something-else'")
    _rewrite(good, tmp_path / "newer.ilastikw", edit=lambda d: d.update(format_version=FORMAT_VERSION + 1))
    expect("newer.ilastikw", "newer ilastik-widget")
    _rewrite(good, tmp_path / "badversion.ilastikw", edit=lambda d: d.update(format_version="one"))
    expect("badversion.ilastikw", "invalid format_version")
    _rewrite(good, tmp_path / "nokeys.ilastikw", edit=lambda d: (d.pop("strokes"), d.pop("classes")))
    expect("nokeys.ilastikw", r"missing key\(s\) \['classes', 'strokes'\]")
    _rewrite(good, tmp_path / "noarray.ilastikw", drop=("arrays/stroke_points.npy",))
    expect("noarray.ilastikw", "missing arrays/stroke_points.npy")
    _rewrite(good, tmp_path / "badjson.ilastikw", drop=("project.json",), extra={"project.json": b"{not json"})
    expect("badjson.ilastikw", "not valid JSON")
    _rewrite(good, tmp_path / "mismatch.ilastikw", edit=lambda d: d["strokes"].pop())
    expect("mismatch.ilastikw", "stroke points do not match")
    # an object array would need pickle: refused, never unpickled
    buf = io.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    _rewrite(
        good,
        tmp_path / "pickled.ilastikw",
        drop=("arrays/stroke_offsets.npy",),
        extra={"arrays/stroke_offsets.npy": buf.getvalue()},
    )
    expect("pickled.ilastikw", "cannot read arrays/stroke_offsets.npy")
    # a flipped byte inside a member: CRC error named
    data = bytearray(raw)
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("arrays/stroke_points.npy")
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size // 2 + 64
    data[pos] ^= 0xFF
    (tmp_path / "flipped.ilastikw").write_bytes(bytes(data))
    expect("flipped.ilastikw", "damaged")
    with pytest.raises(FileNotFoundError):
        load_session(tmp_path / "does-not-exist.ilastikw")
    # the good file is still fine
    assert _strokes(load_session(good)) == _strokes(s)


@pytest.mark.parametrize(
    "field, edit",
    [
        ("strokes[0].radius", lambda d: d["strokes"][0].update(radius=10**400)),
        ("voxel_size[0]", lambda d: d.update(voxel_size=[10**400, 1.0])),
        ("image.scale[0]", lambda d: d["image"].update(scale=[-(10**400), 1.0])),
    ],
)
def test_integers_beyond_float_range_are_named(tmp_path, trained, field, edit):
    """JSON integers have no bounds and Python reads them whole: 1e400 written out as digits is a number no float
    holds, named like any other bad number (it was an OverflowError from math.isfinite)."""
    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    _rewrite(good, tmp_path / "huge.ilastikw", edit=edit)
    with pytest.raises(ProjectError, match=rf"is damaged: {re.escape(field)} must be a positive finite number"):
        load_session(tmp_path / "huge.ilastikw")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, trained, monkeypatch):
    _, s = trained
    path = save_session(s, tmp_path / "a.ilastikw")
    before = path.read_bytes()
    import ilastik_widget.io.project as project

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(project.np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        save_session(s, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ilastikw"]  # no temp files left


# ---------------------------------------------------------------------- crafted files: every field, every array
def _edit_array(src: Path, dst: Path, member: str, edit) -> None:
    """Copy a project, replacing one .npy member by ``edit(array)``."""
    with zipfile.ZipFile(src) as zin:
        arr = np.load(io.BytesIO(zin.read(member)), allow_pickle=False)
    buf = io.BytesIO()
    np.save(buf, edit(arr.copy()), allow_pickle=False)
    _rewrite(src, dst, drop=(member,), extra={member: buf.getvalue()})


def test_crafted_tree_gives_project_error_and_never_crashes_the_process(tmp_path, trained):
    """A child index far out of range used to reach scikit-learn's compiled tree: SIGSEGV. Run where a crash would
    show as a signal, not as a failed assertion in this process."""
    img, s = trained
    good = save_session(s, tmp_path / "good.ilastikw", embed_image=False)
    np.save(tmp_path / "input.npy", img)
    crafted = {
        "left_child": lambda a: np.where(a != -1, a + 10**9, a),
        "feature": lambda a: np.where(a >= 0, 2**40, a),
    }
    for name, edit in crafted.items():
        bad = tmp_path / f"bad_{name}.ilastikw"
        _edit_array(good, bad, f"arrays/model/tree0/{name}.npy", edit)
        with pytest.raises(ProjectError, match="stored classifier is not valid.*tree 0: node 0"):
            load_model(bad)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "ilastik_widget.cli",
                "predict",
                str(bad),
                str(tmp_path / "input.npy"),
                "-o",
                str(tmp_path / "out"),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 1, (r.returncode, r.stderr)  # not -11 (SIGSEGV)
        assert "tree 0: node 0" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


def _set(path):
    """An edit of the document setting the field at ``path`` ("a.b[0].c") to a value."""

    def edit_with(value):
        def edit(doc):
            obj = doc
            keys = [int(k) if k.isdigit() else k for k in path.replace("[", ".").replace("]", "").split(".")]
            for k in keys[:-1]:
                obj = obj[k]
            obj[keys[-1]] = value

        return edit

    return edit_with


WRONG_TYPES = [
    ("arrays", {"stroke_points": 1}),
    ("arrays", "stroke_points"),
    ("arrays", ["../../etc/passwd"]),
    ("strokes", {"0": {}}),
    ("strokes", "many"),
    ("strokes[0]", [1, 2]),
    ("strokes[0].id", "7"),
    ("strokes[0].id", -1),
    ("strokes[0].label", 1.5),
    ("strokes[0].label", 99),
    ("strokes[0].radius", "big"),
    ("strokes[0].radius", 0),
    ("strokes[0].axes", [0]),
    ("strokes[0].axes", ["x", "y"]),
    ("strokes[0].erase", "no"),
    ("seed", "five"),
    ("seed", 2**64),
    ("seed", 1.5),
    ("classifier", ["n_estimators", 5]),
    ("classifier", "accurate"),
    ("block_shape", 64),
    ("block_shape", [64]),
    ("block_shape", [0, 64]),
    ("next_stroke_id", "12"),
    ("next_stroke_id", -3),
    ("model", "abc"),
    ("model", {"params": [], "n_classes": 3, "n_features": 5}),
    ("model.n_classes", "3"),
    ("image", "elsewhere"),
    ("image.spatial_shape", [96]),
    ("image.spatial_shape", "96x120"),
    ("image.shape", [96, -120]),
    ("image.dtype", "object"),
    ("image.dtype", "no-such-type"),
    ("image.channel_axis", 7),
    ("image.embedded", "yes"),
    ("image.url", 5),
    ("image.scale", [0.5, -1]),
    ("image.time_index", "0"),
    ("classes", {"Background": "#ffd400"}),
    ("classes", []),
    ("classes[0]", "Background"),
    ("classes[0].name", 7),
    ("classes[0].color", "red"),
    ("features", ["gaussian_smoothing"]),
    ("feature_mode", "4d"),
    ("trained", "yes"),
    ("created_by", 5),
    ("autosave", {"id": "zz", "journal_seq": 0}),
    ("autosave", {"id": "abcdef0123", "journal_seq": -1}),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=[f"{f}={v!r}"[:40] for f, v in WRONG_TYPES])
def test_a_field_of_the_wrong_type_is_a_project_error_naming_it(tmp_path, trained, field, value):
    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    bad = tmp_path / "bad.ilastikw"
    _rewrite(good, bad, edit=_set(field)(value))
    name = field.split("[")[0].split(".")[0]
    for load in (load_session, load_model):
        with pytest.raises(ProjectError, match=rf"(?s)damaged.*{name}") as e:
            load(bad)
        assert type(e.value) is ProjectError


def test_the_core_checks_name_the_field_or_stroke(tmp_path, trained):
    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    cases = {
        "features": (_set("features")({"features": {"no_such_filter": [1.0]}}), "field features.*no_such_filter"),
        "classifier": (_set("classifier")({"n_estimators": 0}), "field classifier.*n_estimators"),
        "class name": (_set("classes[1].name")("   "), r"field classes.*name"),
        "stroke outside": (_set("strokes[1].axes")([0, 0]), r"strokes\[1\] \(id \d+\).*axes"),
    }
    for what, (edit, match) in cases.items():
        bad = tmp_path / f"{what}.ilastikw"
        _rewrite(good, bad, edit=edit)
        with pytest.raises(ProjectError, match=match):
            load_session(bad)
    # stroke points outside the image: the stroke is named
    bad = tmp_path / "points.ilastikw"
    _edit_array(good, bad, "arrays/stroke_points.npy", lambda a: a + 10_000)
    with pytest.raises(ProjectError, match=r"strokes\[0\] \(id \d+\).*outside the image"):
        load_session(bad)


def test_two_strokes_with_the_same_id_are_refused(tmp_path, trained):
    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    bad = tmp_path / "dup.ilastikw"
    _rewrite(good, bad, edit=lambda d: d["strokes"][2].update(id=d["strokes"][0]["id"]))
    with pytest.raises(ProjectError, match=r"strokes\[0\] and strokes\[2\] have the same id"):
        load_session(bad)


def _npy_header(shape, dtype="<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_huge_declared_shapes_and_inflating_members_are_refused_before_allocating(tmp_path, trained):
    import tracemalloc

    _, s = trained
    good = save_session(s, tmp_path / "good.ilastikw")
    cases = {
        # a header declaring 8 TB followed by a few bytes
        "huge.ilastikw": _npy_header((10**12,)) + b"\0" * 64,
        # a header whose shape does not match the data that follows
        "short.ilastikw": _npy_header((1000, 2)) + b"\0" * 800,
        "object.ilastikw": _npy_header((3,), "|O") + b"\0" * 24,
    }
    for name, member in cases.items():
        _rewrite(good, tmp_path / name, drop=("arrays/stroke_points.npy",), extra={"arrays/stroke_points.npy": member})
    # 300 MB of zeros deflate to ~300 kB: the member would inflate 1000-fold
    bomb = tmp_path / "bomb.ilastikw"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zout:
        for n in zin.namelist():
            if n != "arrays/image.npy":
                zout.writestr(n, zin.read(n))
        with zout.open("arrays/image.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (75 * 2**20,)})
            zeros = bytes(2**20)
            for _ in range(300):
                fh.write(zeros)
    assert bomb.stat().st_size < 2 * 2**20
    expect = {
        "huge.ilastikw": "header declares shape",
        "short.ilastikw": "header declares shape",
        "object.ilastikw": "not a plain numeric type",
        "bomb.ilastikw": "would inflate",
    }
    for name, match in expect.items():
        tracemalloc.start()
        try:
            with pytest.raises(ProjectError, match=match):
                load_session(tmp_path / name)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 * 2**20, (name, peak)


def test_imported_labels_are_saved_and_loaded(tmp_path, trained):
    img, s = trained
    mask = np.zeros(img.shape, np.uint8)
    mask[5:25, 40:70] = 2
    mask[60:64, 3:9] = 1
    s.annotations.import_labels(mask, source="mask.tif")
    s.add_stroke(1, [[20, 50]], radius=2)  # painted over the import: later entries win
    path = save_session(s, tmp_path / "imp.ilastikw")
    with zipfile.ZipFile(path) as zf:
        assert any(n.startswith("arrays/import") for n in zf.namelist())
    s2 = load_session(path, train=False)
    np.testing.assert_array_equal(s2.labels(), s.labels())
    assert [type(e).__name__ for e in s2.strokes] == [type(e).__name__ for e in s.strokes]


def test_loading_a_project_does_not_import_the_batch_code(tmp_path, trained):
    _, s = trained
    path = save_session(s, tmp_path / "m.ilastikw")
    code = (
        "import sys; from ilastik_widget.io.project import load_model, load_session; "
        f"m = load_model({str(path)!r}); load_session({str(path)!r}); "
        "print(type(m).__module__, 'ilastik_widget.io.batch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.stdout.split() == ["ilastik_widget.core.model", "False"], r.stderr


def test_voxel_size_and_classifier_channels_are_saved_and_the_model_carries_them(tmp_path):
    from ilastik_widget.core.model import TrainedModel
    from ilastik_widget.io.project import load_model

    image, truth = synthetic_cells((40, 48), seed=7)
    two = np.stack([image, np.random.default_rng(0).random(image.shape)], axis=-1).astype(np.float32)
    s = Session(two, channel_axis=-1, voxel_size=(2.0, 1.0), channels=[0], classifier={"n_estimators": 5})
    s.add_stroke(1, [[5, 5]], radius=2)
    s.add_stroke(2, [[30, 30]], radius=2)
    s.train()
    path = save_session(s, tmp_path / "v.ilastikw", embed_image=True)
    again = load_session(path)
    assert again.voxel_size == (2.0, 1.0) and again.channels == (0,)
    np.testing.assert_array_equal(again.segmentation(), s.segmentation())
    model = load_model(path)
    assert (model.voxel_size, model.channels) == ((2.0, 1.0), (0,))
    assert TrainedModel.from_session(s).channels == (0,)
    assert model.n_features == s.n_features
