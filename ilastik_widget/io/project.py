"""Project files: save a session to one file and load it back (never pickle).

A project is a zip archive (suggested suffix ``.ilastikw``) holding

- ``project.json``: format name and version, classes (names, colours), stroke records (id, class, radius, plane
  axes, erase flag), the feature selection and mode, the classifier settings and seed, whether the session was
  trained, and a reference to the image (path or URL, shape, dtype, axes, channel axis);
- ``arrays/*.npy``: the stroke points (one concatenated float64 array plus offsets), for in-memory images without a
  file behind them (and not larger than ``EMBED_LIMIT``) the image itself, and optionally the fitted classifier's
  trees as plain arrays.

Loading rebuilds the session with exactly these strokes and, if it was trained, retrains it: training is
deterministic for a seed, so predictions are the same as before saving.

A project file may come from someone else, so loading trusts nothing in it: the archive is read under size limits
(:mod:`ilastik_widget.io.archive`), every field is checked (:mod:`ilastik_widget.io.project_schema`), the stroke
records go through the annotations' own checks, and the stored trees through the classifier's
(:func:`~ilastik_widget.core.classifier.check_forest_arrays`) before scikit-learn's compiled code sees them. A file
that fails gets :class:`ProjectError` naming what is wrong. Arrays are plain numbers; nothing is unpickled or executed.
A project can refer to an image by path or URL: loading opens that path or URL (nothing else).

Autosave (:mod:`ilastik_widget.io.autosave`): ``enable_autosave(session, path)`` keeps ``path`` up to date after
every change of labels, classes or features, appending each change to a journal next to the file and folding it into
the file in a background thread; ``load_session(path)`` reads both.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .archive import ArchiveReader, ProjectError, commit, remove_stale_temporaries, stage_archive
from .journal import apply_records, journal_path, read_journal
from .project_schema import check_document, check_stroke_arrays

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ProjectError",
    "save_session",
    "load_session",
    "load_model",
    "read_project",
]

FORMAT = "ilastik-widget-project"
FORMAT_VERSION = 1
SUFFIX = ".ilastikw"
EMBED_LIMIT = 256 * 2**20
_JSON = "project.json"
_REQUIRED = (
    "format",
    "format_version",
    "image",
    "classes",
    "strokes",
    "features",
    "feature_mode",
    "classifier",
    "seed",
    "trained",
)
# The small state an autosave journal record carries in full.
STATE_KEYS = (
    "classes",
    "next_stroke_id",
    "features",
    "feature_mode",
    "classifier",
    "seed",
    "block_shape",
    "trained",
    "voxel_size",
    "channels",
)


def __getattr__(name: str) -> Any:
    # The autosaver builds on this module; it is reachable from here for the code that imported it from here.
    if name in ("autosave", "enable_autosave", "AutoSaver"):
        from . import autosave as _autosave

        return getattr(_autosave, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- image reference
def _image_reference(session, project_dir: Path, embed_image: Any) -> tuple[dict, np.ndarray | None]:
    src = getattr(session, "source", None)
    image = session.image
    ref: dict[str, Any] = {
        "spatial_shape": [int(n) for n in session.spatial_shape],
        "shape": [int(n) for n in image.shape],
        "dtype": np.dtype(image.dtype).str,
        "channel_axis": session.channel_axis,
        "n_channels": int(session.n_input_channels),
        "path": None,
        "relpath": None,
        "url": None,
        "axes": None,
        "time_index": None,
        "embedded": False,
    }
    location = None
    if src is not None:
        r = src.reference()
        ref.update(
            url=r.get("url"),
            axes=r.get("axes"),
            time_index=r.get("time_index"),
            name=r.get("name"),
            scale=r.get("scale"),
        )
        location = r.get("path") if not r.get("url") else None
    elif _zarr_local_path(image) is not None:
        location = _zarr_local_path(image)
    if location is not None:
        ref["path"] = os.path.abspath(location)
        try:
            ref["relpath"] = os.path.relpath(os.path.abspath(location), project_dir)
        except ValueError:  # other drive on Windows
            ref["relpath"] = None
    has_ref = bool(ref["path"] or ref["url"])
    nbytes = int(np.prod(image.shape, dtype=np.int64)) * np.dtype(image.dtype).itemsize
    if embed_image == "auto":
        embed = not has_ref and nbytes <= EMBED_LIMIT
    else:
        embed = bool(embed_image)
    data = None
    if embed:
        data = np.ascontiguousarray(np.asarray(image[...] if not isinstance(image, np.ndarray) else image))
        ref["embedded"] = True
    return ref, data


def _zarr_local_path(image) -> str | None:
    try:
        import zarr

        if isinstance(image, zarr.Array):
            root = getattr(image.store, "root", None)
            if root is not None:
                return os.path.join(str(root), image.path) if image.path else str(root)
    except Exception:
        pass
    return None


# ---------------------------------------------------------------------- what is saved
@dataclass(frozen=True)
class Snapshot:
    """A session's saved state at one moment: its strokes (immutable objects) and the small state (JSON-able)."""

    strokes: tuple
    state: dict


def take_snapshot(session) -> Snapshot:
    """The strokes and small state of ``session``, consistent with each other (taken under its locks)."""
    ann = session.annotations
    with getattr(session, "_lock", _nullcontext()), getattr(ann, "_lock", _nullcontext()):
        strokes = tuple(ann.strokes)
        state = {
            "classes": [{"name": c.name, "color": c.color} for c in ann.classes],
            "next_stroke_id": int(getattr(ann, "_next_id", 0) or 0),
            "features": session.feature_selection.to_dict(),
            "feature_mode": session.feature_mode,
            "classifier": session.classifier.params(),
            "seed": int(session.seed),
            "block_shape": [int(b) for b in session.block_shape],
            "trained": bool(session.is_trained),
            "voxel_size": None if session.voxel_size is None else [float(v) for v in session.voxel_size],
            "channels": None if session.channels is None else [int(c) for c in session.channels],
        }
    return Snapshot(strokes, state)


def _is_import(entry: Any) -> bool:
    return getattr(entry, "kind", "stroke") == "import"


def project_document(snap: Snapshot, ref: dict, ndim: int) -> tuple[dict, dict]:
    """The project document and its arrays for a snapshot (the caller adds image, model and ``arrays``).

    Stroke points go into one concatenated array with offsets per entry (none for imported labels, whose runs are
    arrays of their own named in their record).
    """
    arrays: dict[str, np.ndarray] = {}
    records, points = [], []
    for s in snap.strokes:
        if _is_import(s):
            records.append(s.to_dict(arrays))
            points.append(np.zeros((0, ndim), np.float64))
            continue
        records.append(
            {
                "id": int(s.id),
                "label": int(s.label),
                "radius": float(s.radius),
                "axes": [int(a) for a in s.axes],
                "erase": bool(s.erase),
            }
        )
        points.append(np.asarray(s.points, np.float64).reshape(-1, ndim))
    offsets = np.zeros(len(points) + 1, np.int64)
    if points:
        offsets[1:] = np.cumsum([len(p) for p in points])
    all_points = np.concatenate(points) if points else np.zeros((0, ndim), np.float64)
    from .. import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"ilastik_widget {__version__}",
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "image": ref,
        **snap.state,
        "strokes": records,
    }
    return doc, {"stroke_points": all_points, "stroke_offsets": offsets, **arrays}


def stage_project(
    session,
    path: Path,
    snap: Snapshot,
    *,
    embed_image: Any = "auto",
    include_model: bool = True,
    autosave: dict | None = None,
) -> Path:
    """Write the project of ``snap`` to a temporary file next to ``path`` (see archive.commit); returns its path."""
    ref, data = _image_reference(session, path.resolve().parent, embed_image)
    doc, arrays = project_document(snap, ref, len(session.spatial_shape))
    model = getattr(session, "model", None)
    if include_model and model is not None and not getattr(session, "needs_training", True):
        for k, v in model.to_arrays().items():
            arrays[f"model/{k}"] = v
        doc["model"] = {
            "params": model.params(),
            "n_classes": int(model.n_classes),
            "n_features": int(model.n_features),
        }
    if data is not None:
        arrays["image"] = data
    if autosave is not None:
        doc["autosave"] = autosave
    doc["arrays"] = list(arrays)
    return stage_archive(path, doc, _JSON, {f"arrays/{k}.npy": v for k, v in arrays.items()})


def save_session(session, path, *, embed_image: Any = "auto", include_model: bool = True) -> Path:
    """Save ``session`` to one project file (written atomically); returns the path.

    Parameters
    ----------
    embed_image : "auto", bool
        Store the image in the project. "auto": only for images without a file or URL behind them and at most
        ``EMBED_LIMIT`` bytes (others are referenced by path/URL; pass ``image=`` to :func:`load_session` if they
        move).
    include_model : bool
        Also store the fitted classifier (its trees as plain arrays) when the session is trained on its current
        labels: batch prediction (``load_model``, the command line) then needs neither the training image nor a
        retraining. Loading a session still retrains (the same predictions, as training is deterministic).
    """
    path = Path(os.fspath(path))
    with getattr(session, "_lock", _nullcontext()):
        snap = take_snapshot(session)
        tmp = stage_project(session, path, snap, embed_image=embed_image, include_model=include_model)
    commit(tmp, path)
    return path


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------------- load
def _check_header(path: Path, doc: Any) -> None:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ProjectError(f"{path} is not an ilastik-widget project (format {got!r}, expected {FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProjectError(f"{path} is damaged: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ProjectError(
            f"{path} was written by a newer ilastik-widget (project format version {version}; "
            f"this version reads up to {FORMAT_VERSION}): please upgrade ilastik-widget"
        )
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ProjectError(f"{path} is damaged: missing key(s) {missing} in {_JSON}")


def _with_journal(path: Path, doc: dict, arrays: dict) -> tuple[dict, dict]:
    """Apply the autosave journal next to the file, if it belongs to this file and has newer changes."""
    auto = doc.get("autosave")
    if not auto:
        return doc, arrays
    try:
        records = read_journal(path, auto["id"], auto["journal_seq"])
        if not records:
            return doc, arrays
        ndim = len(doc["image"]["spatial_shape"])
        strokes = _with_points(doc, arrays)
        state = {k: doc[k] for k in STATE_KEYS if k in doc}
        strokes, state = apply_records(path, strokes, state, records)
        none = np.zeros((0, ndim), np.float64)
        per_entry = [s.get("points", none) for s in strokes]
        bad = [s["id"] for s, p in zip(strokes, per_entry) if p.ndim != 2 or p.shape[1] != ndim]
        if bad:
            raise ProjectError(f"{path}: the points of journal stroke {bad[0]} are not {ndim}D coordinates")
    except ProjectError as exc:
        raise ProjectError(f"{exc} (remove {journal_path(path)} to open the project without those changes)") from exc
    doc = {**doc, **state, "strokes": [{k: v for k, v in s.items() if k != "points"} for s in strokes]}
    doc["autosave"] = {**auto, "journal_seq": records[-1]["seq"]}
    offsets = np.zeros(len(strokes) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in per_entry])
    points = np.concatenate(per_entry) if per_entry else np.zeros((0, ndim), np.float64)
    check_document(path, doc)
    _check_core_fields(path, doc)
    return doc, {**arrays, "stroke_points": points, "stroke_offsets": offsets}


def _check_core_fields(path: Path, doc: dict) -> None:
    """The fields only the core can judge, through its own constructors; their errors name the field."""
    from ..core.annotations import Annotations
    from ..core.classifier import PixelClassifier
    from ..core.features import FeatureSelection

    checks = {
        "features": lambda: FeatureSelection.from_dict(doc["features"]),
        "classifier": lambda: PixelClassifier.from_params({"seed": doc["seed"], **doc["classifier"]}),
        "classes": lambda: Annotations(doc["image"]["spatial_shape"], classes=doc["classes"]),
    }
    if "model" in doc:
        checks["model.params"] = lambda: PixelClassifier.from_params(doc["model"]["params"])
    for field, check in checks.items():
        try:
            check()
        except (ValueError, TypeError, KeyError) as exc:
            raise ProjectError(f"{path} is damaged: field {field}: {exc}") from exc


def _with_points(doc: dict, arrays: dict) -> list[dict]:
    """The entry records with their stroke points (imported labels have none)."""
    pts, off = arrays["stroke_points"], arrays["stroke_offsets"]
    return [
        s if s.get("kind") == "import" else {**s, "points": pts[off[i] : off[i + 1]]}
        for i, s in enumerate(doc["strokes"])
    ]


def read_project(path) -> tuple[dict, dict]:
    """Read and check a project file (with the changes of its autosave journal): returns (document, arrays).

    Raises
    ------
    ProjectError
        Damaged, foreign or newer-version files, naming what is wrong.
    FileNotFoundError
        No file at ``path``.
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"project file not found: {path}")
    if path.is_dir():
        raise ProjectError(f"{path} is a directory, not an ilastik-widget project file")
    with ArchiveReader(path) as zf:
        if _JSON not in zf.names:
            raise ProjectError(f"{path} is not an ilastik-widget project (a zip archive without {_JSON})")
        doc = zf.read_json(_JSON)
        _check_header(path, doc)
        check_document(path, doc)
        _check_core_fields(path, doc)
        arrays = {name: zf.read_array(f"arrays/{name}.npy") for name in doc.get("arrays", [])}
    ndim = len(doc["image"]["spatial_shape"])
    check_stroke_arrays(path, len(doc["strokes"]), ndim, arrays.get("stroke_points"), arrays.get("stroke_offsets"))
    ref = doc["image"]
    if ref.get("embedded"):
        img = arrays.get("image")
        if img is None:
            raise ProjectError(f"{path} is damaged: the embedded image is missing")
        if list(img.shape) != ref["shape"] or img.dtype != np.dtype(ref["dtype"]):
            raise ProjectError(
                f"{path} is damaged: the embedded image is {img.dtype} {list(img.shape)}, "
                f"the document says {ref['dtype']} {ref['shape']}"
            )
    return _with_journal(path, doc, arrays)


def load_model(path):
    """The trained model of a project (:class:`~ilastik_widget.core.model.TrainedModel`), for batch prediction.

    Uses the stored classifier when the project has one (no image needed); otherwise loads the session, which
    needs the training image, and trains it.

    Raises
    ------
    ProjectError
        Damaged files (including a stored classifier that is not a valid forest), and untrained projects.
    """
    from ..core.classifier import PixelClassifier
    from ..core.features import FeatureSelection
    from ..core.model import TrainedModel

    path = Path(os.fspath(path))
    doc, arrays = read_project(path)
    if "model" in doc:
        stored = doc["model"]
        forest = {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}
        try:
            clf = PixelClassifier.from_arrays(forest, stored["params"])
        except (ValueError, TypeError) as exc:
            raise ProjectError(f"{path} is damaged: the stored classifier is not valid ({exc})") from exc
        if (clf.n_classes, clf.n_features) != (stored["n_classes"], stored["n_features"]):
            raise ProjectError(
                f"{path} is damaged: the stored classifier has {clf.n_classes} classes and {clf.n_features} "
                f"features, the document says {stored['n_classes']} and {stored['n_features']}"
            )
        try:
            selection = FeatureSelection.from_dict(doc["features"])
        except (ValueError, TypeError) as exc:
            raise ProjectError(f"{path} is damaged: field features is not a feature selection ({exc})") from exc
        ref = doc["image"]
        try:
            return TrainedModel(
                classifier=clf,
                selection=selection,
                mode=doc["feature_mode"],
                ndim=len(ref["spatial_shape"]),
                n_input_channels=int(ref.get("n_channels") or 1),
                class_names=tuple(c["name"] for c in doc["classes"]),
                class_colors=tuple(c["color"] for c in doc["classes"]),
                voxel_size=None if doc.get("voxel_size") is None else tuple(doc["voxel_size"]),
                channels=None if doc.get("channels") is None else tuple(doc["channels"]),
            )
        except ValueError as exc:
            raise ProjectError(f"{path} is damaged: {exc}") from exc
    if not doc["trained"]:
        raise ProjectError(f"{path} holds an untrained session: train it (session.train()) and save it again")
    return TrainedModel.from_session(load_session(path, train=True))


def _open_image(doc: dict, arrays: dict, project_path: Path, image: Any, *, token=None, timeout=None):
    ref = doc["image"]
    if image is not None:
        return image, None
    if ref.get("embedded"):
        return arrays["image"], None
    from .sources import open_source

    tried = []
    candidates = []
    if ref.get("relpath"):
        candidates.append(str(project_path.resolve().parent / ref["relpath"]))
    if ref.get("path"):
        candidates.append(ref["path"])
    if ref.get("url"):
        candidates.append(ref["url"])
    for c in candidates:
        tried.append(c)
        if not (c.startswith(("http://", "https://")) or os.path.exists(c)):
            continue
        t = ref.get("time_index")
        src = open_source(c, axes=ref.get("axes") if t is None else None, t=t, token=token, timeout=timeout)
        return src, src
    where = " or ".join(tried) if tried else "nowhere (the image was in memory and not embedded)"
    raise FileNotFoundError(
        f"the project's image was not found ({where}); pass image=... to load_session or Session.load"
    )


def _annotations(path: Path, doc: dict, arrays: dict, shape: tuple):
    """The project's classes and strokes through the annotations' own checks; a stroke they refuse is named."""
    from ..core.annotations import Annotations

    strokes = _with_points(doc, arrays)
    ann = {"shape": list(shape), "classes": doc["classes"], "strokes": strokes}
    next_id = doc.get("next_stroke_id")
    ann["next_id"] = 1 if next_id is None else next_id
    try:
        return Annotations.from_dict(ann, shape, arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        error = exc
    # Name the culprit: the classes alone, then each entry alone.
    for i, s in enumerate([None, *strokes]):
        try:
            Annotations.from_dict({**ann, "strokes": [] if s is None else [s]}, shape, arrays)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            what = "the classes" if s is None else f"strokes[{i - 1}] (id {s['id']})"
            raise ProjectError(f"{path} is damaged: {what}: {exc}") from exc
    raise ProjectError(f"{path} is damaged: the strokes cannot be rebuilt ({error})") from error


def load_session(
    path, image: Any = None, *, train: bool | None = None, token: str | None = None, timeout: Any = None,
    **session_kwargs,
):  # fmt: skip
    """Load a project file into a new :class:`~ilastik_widget.Session`.

    Temporary files that interrupted saves of this project left behind (a killed kernel) are removed.

    Parameters
    ----------
    image : array-like or ImageSource, optional
        The image to use; default: the embedded image, or the file/URL the project refers to.
    train : bool, optional
        Retrain after loading (default: if the session was trained when saved).
    token, timeout : optional
        For an image the project refers to by URL: the bearer token and timeout to open it with, as
        :func:`~ilastik_widget.open_source` takes them. A project file never holds a token.
    session_kwargs
        Passed to ``Session`` (e.g. ``cache_bytes``, ``n_threads``).

    Raises
    ------
    ProjectError
        Damaged, foreign or newer-version files.
    FileNotFoundError
        The project or its image cannot be found.
    ValueError
        ``image`` does not match the project (shape, channels).
    """
    from ..core.session import Session

    path = Path(os.fspath(path))
    doc, arrays = read_project(path)
    remove_stale_temporaries(path)
    ref = doc["image"]
    img, src = _open_image(doc, arrays, path, image, token=token, timeout=timeout)
    channel_axis = ref.get("channel_axis")
    if image is not None:
        channel_axis = session_kwargs.pop("channel_axis", channel_axis)
    target = src if src is not None else img
    if src is not None and src.channel_axis != channel_axis:
        target = src.array
    try:
        session = Session(
            target,
            channel_axis=channel_axis,
            classes=[c["name"] for c in doc["classes"]],
            features=doc["features"],
            seed=doc["seed"],
            feature_mode=doc["feature_mode"],
            classifier=dict(doc["classifier"]),
            block_shape=session_kwargs.pop("block_shape", doc.get("block_shape")),
            voxel_size=session_kwargs.pop("voxel_size", doc.get("voxel_size")),
            channels=session_kwargs.pop("channels", doc.get("channels")),
            **session_kwargs,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if image is not None:
            raise
        raise ProjectError(f"{path}: cannot make a session from the project's settings ({exc})") from exc
    want = tuple(ref["spatial_shape"])
    if tuple(session.spatial_shape) != want:
        raise ValueError(
            f"the image has spatial shape {tuple(session.spatial_shape)} but the project was made for {want}"
        )
    n_ch = ref.get("n_channels")
    if n_ch is not None and session.n_input_channels != n_ch:
        raise ValueError(f"the image has {session.n_input_channels} channel(s) but the project was made for {n_ch}")
    session.annotations = _annotations(path, doc, arrays, session.spatial_shape)
    if train is None:
        train = doc["trained"]
    if train:
        try:
            session.train()
        except ValueError as exc:
            raise ProjectError(f"{path}: the saved session cannot be retrained ({exc})") from exc
    return session
