"""ilastik_widget.io.project: round trips, damaged files, autosave surviving a killed kernel."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
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
    enable_autosave,
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
    s2 = Session.load(path)
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
    from ilastik_widget.io.project import load_model

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
    s.save(tmp_path / "v.ilastikw")
    s2 = Session.load(tmp_path / "v.ilastikw")
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


def test_autosave_listener(tmp_path):
    img, truth = synthetic_cells((64, 64), seed=8)
    s = Session(img, features=SEL)
    saver = enable_autosave(s, tmp_path / "auto.ilastikw")
    s.add_stroke(1, [[3, 3], [3, 20]])
    s.add_stroke(2, [[40, 40]], radius=3)
    s.rename_class(2, "Nuclei")
    assert _strokes(load_session(tmp_path / "auto.ilastikw")) == _strokes(s)
    assert load_session(tmp_path / "auto.ilastikw").classes[1].name == "Nuclei"
    s.undo()
    assert len(load_session(tmp_path / "auto.ilastikw").strokes) == 1
    saver.close()
    s.add_stroke(2, [[50, 50]])
    assert len(load_session(tmp_path / "auto.ilastikw").strokes) == 1


KERNEL = textwrap.dedent("""
    import sys, time
    import numpy as np
    from ilastik_widget.core.session import Session
    from ilastik_widget.io.project import enable_autosave
    from ilastik_widget.core.features import FeatureSelection
    rng = np.random.default_rng(0)
    img = rng.normal(size=(200, 220)).astype(np.float32)
    s = Session(img, features=FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True))
    enable_autosave(s, sys.argv[1])
    n = int(sys.argv[2])
    i = 0
    while n < 0 or i < n:
        pts = rng.uniform(0, 199, size=(int(rng.integers(1, 20)), 2))
        s.add_stroke(int(i % 2) + 1, pts, radius=float(rng.uniform(1, 5)), erase=bool(i % 7 == 6))
        print("stroke", i, flush=True)
        i += 1
    print("done", flush=True)
    time.sleep(600)
""")


def _kernel(tmp_path, n):
    script = tmp_path / "kernel.py"
    script.write_text(KERNEL)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "auto.ilastikw"), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_autosave_survives_killed_kernel(tmp_path):
    proc = _kernel(tmp_path, 25)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("done"):
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and lines[-1] == "done"
    s = load_session(tmp_path / "auto.ilastikw")
    assert len(s.strokes) == 25
    # the same strokes as the killed kernel painted (same seeded random sequence)
    rng = np.random.default_rng(0)
    rng.normal(size=(200, 220))
    for i, st in enumerate(s.strokes):
        pts = rng.uniform(0, 199, size=(int(rng.integers(1, 20)), 2))
        radius = float(rng.uniform(1, 5))
        assert st.label == i % 2 + 1 and st.erase == (i % 7 == 6) and st.radius == radius
        np.testing.assert_array_equal(st.points, pts)


def test_autosave_killed_mid_stream_is_always_loadable(tmp_path):
    proc = _kernel(tmp_path, -1)  # paints until killed
    seen = -1
    try:
        t0 = time.monotonic()
        for line in proc.stdout:
            seen = int(line.split()[1])
            if seen >= 40 or time.monotonic() - t0 > 60:
                break
        proc.send_signal(signal.SIGKILL)  # somewhere inside the next stroke's autosave, or not
    finally:
        proc.kill()
        proc.wait()
    s = load_session(tmp_path / "auto.ilastikw")
    # every stroke reported before the kill is in the file (it was saved before being reported)
    assert len(s.strokes) >= seen + 1
    # at most a hidden temporary file is left next to it, never a second "project"
    others = {p.name for p in tmp_path.iterdir()} - {"kernel.py", "auto.ilastikw"}
    assert all(n.startswith(".auto.ilastikw.") and n.endswith(".tmp") for n in others), others
