"""Property tests of the project loader: damaged and crafted files load or raise ProjectError, nothing else.

Hypothesis makes the files: fields of random JSON types and values, truncated and bit-flipped archives, ``.npy``
members declaring random (huge) shapes and dtypes, crafted forest arrays, random journal lines. Each example is a
small real file on disk, loaded with ``load_session`` and ``load_model``. Crafted trees never reach scikit-learn's
compiled code unchecked: before predicting with a forest the loader accepted, an independent check of the tree
invariants runs here, so a gap in the validation fails an assertion instead of crashing the process.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilastik_widget.core.features import FeatureSelection
from ilastik_widget.core.session import Session
from ilastik_widget.datasets import simulated_strokes, synthetic_cells
from ilastik_widget.io.autosave import enable_autosave
from ilastik_widget.io.journal import journal_path
from ilastik_widget.io.project import ProjectError, load_model, load_session, save_session

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None, derandomize=True
)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small trained project (embedded image, stored forest): its document and members."""
    d = tmp_path_factory.mktemp("fuzz")
    img, truth = synthetic_cells((28, 32), seed=2)
    sel = FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    s = Session(img, features=sel, classifier={"n_estimators": 2, "max_depth": 4}, block_shape=(16, 16))
    for stroke in simulated_strokes(truth, n_per_class=2, radius=1, seed=1):
        s.add_stroke(**stroke)
    s.train()
    path = save_session(s, d / "base.ilastikw")
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    return d, json.loads(members["project.json"]), members, path.read_bytes()


def _write(path: Path, doc, members: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, json.dumps(doc) if name == "project.json" else data)


def _load_all(path: Path) -> None:
    """Load the file every way; only ProjectError (or the image not found) may come out."""
    for load in (lambda p: load_session(p, train=False), load_model):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(path)
        except ProjectError:
            pass
        except FileNotFoundError as exc:
            assert "image was not found" in str(exc), exc


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([10**400, -(10**400)])  # JSON integers beyond float range
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

FIELDS = [
    "format_version", "created_by", "image", "classes", "strokes", "features", "feature_mode", "classifier", "seed",
    "trained", "arrays", "block_shape", "next_stroke_id", "model", "autosave", "voxel_size",
    "image.spatial_shape", "image.shape", "image.dtype", "image.channel_axis", "image.n_channels", "image.embedded",
    "image.scale", "image.axes", "image.time_index", "image.path", "image.url",
    "classes.0", "classes.0.name", "classes.1.color",
    "strokes.0", "strokes.0.id", "strokes.1.label", "strokes.0.radius", "strokes.1.axes", "strokes.0.erase",
    "strokes.0.kind", "features.features", "features.features.gaussian_smoothing", "classifier.n_estimators",
    "classifier.max_features", "classifier.n_jobs", "model.params", "model.n_classes", "model.n_features",
    "model.params.n_jobs", "arrays.0", "block_shape.0",
]  # fmt: skip


def _set(doc, path: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    obj = doc
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value


@FAST
@given(edits=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), min_size=1, max_size=3))
def test_fields_of_any_type_and_value(base, edits):
    d, doc, members, _ = base
    doc = json.loads(json.dumps(doc))
    for field, value in edits:
        try:
            _set(doc, field, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit replaced the container
    path = d / "fields.ilastikw"
    _write(path, doc, members)
    _load_all(path)


@FAST
@given(
    cut=st.integers(min_value=0, max_value=2**20),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=1, max_value=255)), max_size=6),
)
def test_truncated_and_bit_flipped_archives(base, cut, flips):
    d, _, _, raw = base
    data = bytearray(raw[: max(cut, len(raw) // 2)] if cut < len(raw) else raw)
    for pos, bits in flips:
        data[pos % len(data)] ^= bits
    path = d / "flipped.ilastikw"
    path.write_bytes(bytes(data))
    _load_all(path)


dtypes = st.sampled_from(["<f8", "<i8", "|u1", "<f4", ">f8", "|b1", "<c16", "|O", "<U4", "|V8", "<M8[s]"])
shapes = st.lists(st.integers(min_value=0, max_value=2**62), max_size=4).map(tuple)


@FAST
@given(
    member=st.sampled_from(["stroke_points", "stroke_offsets", "image", "model/classes", "model/tree0/left_child"]),
    descr=dtypes,
    shape=shapes,
    fortran=st.booleans(),
    n_bytes=st.integers(min_value=0, max_value=4096),
)
def test_npy_members_declaring_any_shape_and_dtype(base, member, descr, shape, fortran, n_bytes):
    d, doc, members, _ = base
    buf = io.BytesIO()
    np.lib.format.write_array_header_2_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    path = d / "npy.ilastikw"
    _write(path, doc, {**members, f"arrays/{member}.npy": buf.getvalue() + bytes(n_bytes)})
    _load_all(path)


def _check_tree_invariants(clf) -> None:
    """Independent of the loader's own checks: what scikit-learn's compiled tree walk relies on."""
    for est in clf.forest.estimators_:
        t = est.tree_
        n = t.node_count
        for k in range(n):
            left, right = int(t.children_left[k]), int(t.children_right[k])
            if left == -1:
                assert right == -1
                continue
            assert k < left < n and k < right < n, (k, left, right, n)
            assert 0 <= int(t.feature[k]) < clf.n_features
        assert t.value.shape[0] == n and np.isfinite(t.value).all()


tree_edits = st.lists(
    st.tuples(
        st.sampled_from(
            ["left_child", "right_child", "feature", "threshold", "values", "max_depth", "missing_go_to_left"]
        ),
        st.integers(min_value=0, max_value=1),  # which tree
        st.integers(min_value=0),  # which entry
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.sampled_from([-2, -1, 0, 1, 2, 3, 4, 5, 10**9]),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
    ),
    min_size=1,
    max_size=4,
)


@FAST
@given(edits=tree_edits, meta=st.none() | st.lists(st.integers(min_value=-5, max_value=10**6), min_size=3, max_size=3))
def test_crafted_trees_are_refused_before_scikit_learn_walks_them(base, edits, meta):
    d, doc, members, _ = base
    arrays = {}
    for name, data in members.items():
        if name.startswith("arrays/model/"):
            arrays[name] = np.load(io.BytesIO(data), allow_pickle=False)
    for field, tree, index, value in edits:
        key = f"arrays/model/tree{tree}/{field}.npy"
        arr = arrays[key].copy()
        flat = arr.reshape(-1)
        try:
            flat[index % flat.size] = value
        except (OverflowError, ValueError, TypeError):
            continue  # not representable in the array's dtype
        arrays[key] = arr
    if meta is not None:
        arrays["arrays/model/meta.npy"] = np.array(meta, np.int64)
    crafted = dict(members)
    for key, arr in arrays.items():
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        crafted[key] = buf.getvalue()
    path = d / "trees.ilastikw"
    _write(path, doc, crafted)
    try:
        model = load_model(path)
    except ProjectError:
        return
    _check_tree_invariants(model.classifier)
    X = np.random.default_rng(0).normal(size=(64, model.classifier.n_features)).astype(np.float32)
    p = model.classifier.predict_proba(X)
    assert p.shape == (64, model.n_classes)


@pytest.fixture(scope="module")
def autosaved(base):
    d = base[0]
    s = Session(
        np.zeros((20, 24), np.float32), features=FeatureSelection.none().with_feature("gaussian_smoothing", 1.0, True)
    )
    path = d / "auto" / "a.ilastikw"
    saver = enable_autosave(s, path, idle_seconds=3600)
    for i in range(3):
        s.add_stroke(1 + i % 2, [[2 + 5 * i, 2], [2 + 5 * i, 20]])
    project, journal = path.read_bytes(), journal_path(path).read_bytes()
    saver.close()
    return d, project, journal


def _line(obj) -> bytes:
    body = json.dumps(obj).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


@FAST
@given(
    records=st.lists(
        st.fixed_dictionaries(
            {
                "seq": st.integers(min_value=-1, max_value=6),
                "keep": json_values | st.integers(min_value=0, max_value=5),
                "then": json_values | st.lists(st.integers(min_value=0, max_value=5), max_size=5),
                "strokes": json_values,
                "state": json_values | st.just({}),
            }
        ),
        max_size=3,
    ),
    tail=st.binary(max_size=40),
)
def test_random_journal_records(autosaved, records, tail):
    d, project, journal = autosaved
    path = d / "j.ilastikw"
    path.write_bytes(project)
    journal_path(path).write_bytes(journal + b"".join(_line(r) for r in records) + tail)
    _load_all(path)
