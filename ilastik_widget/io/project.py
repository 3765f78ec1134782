"""Project files: save a session to one file and load it back (never pickle).

A project is a zip archive (suggested suffix ``.ilastikw``) holding

- ``project.json``: format name and version, classes (names, colours), stroke records (id, class, radius, plane
  axes, erase flag), the feature selection and mode, the classifier settings and seed, whether the session was
  trained, and a reference to the image (path or URL, shape, dtype, axes, channel axis);
- ``arrays/*.npy``: the stroke points (one concatenated float64 array plus offsets) and, for in-memory images
  without a file behind them (and not larger than ``embed_limit``), the image itself.

Loading rebuilds the session with exactly these strokes and, if it was trained, retrains it: training is
deterministic for a seed, so predictions are the same as before saving. Arrays are read with
``allow_pickle=False``; damaged, foreign or newer files raise :class:`ProjectError` naming the problem.

Autosave for the widget: ``autosave(session, path)`` writes atomically (temporary file, fsync, ``os.replace``), so
a crash at any moment leaves either the previous or the new complete file. ``enable_autosave(session, path)`` calls
it after every change of labels, classes or features; ``load_session(path)`` reopens it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ProjectError",
    "save_session",
    "load_session",
    "load_model",
    "read_project",
    "autosave",
    "enable_autosave",
    "AutoSaver",
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


class ProjectError(ValueError):
    """A project file that cannot be read: damaged, not a project, or made by a newer version."""


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


# ---------------------------------------------------------------------- save
def _document(session, ref: dict, embedded: bool) -> tuple[dict, dict]:
    strokes = list(session.annotations.strokes)
    points = [np.asarray(s.points, np.float64).reshape(-1, session.ndim) for s in strokes]
    offsets = np.zeros(len(points) + 1, np.int64)
    if points:
        offsets[1:] = np.cumsum([len(p) for p in points])
    all_points = np.concatenate(points) if points else np.zeros((0, session.ndim), np.float64)
    from .. import __version__

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"ilastik_widget {__version__}",
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "image": ref,
        "classes": [{"name": c.name, "color": c.color} for c in session.classes],
        "strokes": [
            {
                "id": int(s.id),
                "label": int(s.label),
                "radius": float(s.radius),
                "axes": [int(a) for a in s.axes],
                "erase": bool(s.erase),
            }
            for s in strokes
        ],
        "next_stroke_id": int(getattr(session.annotations, "_next_id", 0) or 0),
        "features": session.feature_selection.to_dict(),
        "feature_mode": session.feature_mode,
        "classifier": session.classifier.params(),
        "seed": int(session.seed),
        "block_shape": [int(b) for b in session.block_shape],
        "trained": bool(session.is_trained),
    }
    return doc, {"stroke_points": all_points, "stroke_offsets": offsets}


def _write_atomic(path: Path, doc: dict, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                zf.writestr(_JSON, json.dumps(doc, indent=1, allow_nan=False), compress_type=zipfile.ZIP_DEFLATED)
                for name, arr in arrays.items():
                    with zf.open(f"arrays/{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


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
    with session._lock if hasattr(session, "_lock") else _nullcontext():
        ref, data = _image_reference(session, path.resolve().parent, embed_image)
        doc, arrays = _document(session, ref, data is not None)
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
    doc["arrays"] = list(arrays)
    _write_atomic(path, doc, arrays)
    return path


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------------- load
def read_project(path) -> tuple[dict, dict]:
    """Read and validate a project file: returns (document, arrays). Raises ProjectError."""
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"project file not found: {path}")
    if path.is_dir():
        raise ProjectError(f"{path} is a directory, not an ilastik-widget project file")
    try:
        zf = zipfile.ZipFile(path, "r")
    except zipfile.BadZipFile as exc:
        raise ProjectError(
            f"{path} is not an ilastik-widget project (not a zip archive, or truncated/damaged: {exc})"
        ) from exc
    with zf:
        names = set(zf.namelist())
        if _JSON not in names:
            raise ProjectError(f"{path} is not an ilastik-widget project (a zip archive without {_JSON})")
        try:
            raw = zf.read(_JSON)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ProjectError(f"{path} is damaged: cannot read {_JSON} ({exc})") from exc
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProjectError(f"{path} is damaged: {_JSON} is not valid JSON ({exc})") from exc
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
        arrays = {}
        for name in doc.get("arrays", []):
            member = f"arrays/{name}.npy"
            if member not in names:
                raise ProjectError(f"{path} is damaged: missing {member}")
            try:
                with zf.open(member) as fh:
                    arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise ProjectError(f"{path} is damaged: cannot read {member} ({exc})") from exc
    for name in ("stroke_points", "stroke_offsets"):
        if name not in arrays:
            raise ProjectError(f"{path} is damaged: missing array {name!r}")
    pts, off = arrays["stroke_points"], arrays["stroke_offsets"]
    n = len(doc["strokes"])
    if (
        off.ndim != 1
        or len(off) != n + 1
        or pts.ndim != 2
        or (n and (off[0] != 0 or off[-1] != len(pts)))
        or np.any(np.diff(off) < 0)
    ):
        raise ProjectError(f"{path} is damaged: stroke points do not match the {n} stroke records")
    return doc, arrays


def load_model(path):
    """What batch prediction needs from a project (:class:`~ilastik_widget.io.batch.BatchModel`).

    Uses the stored classifier when the project has one (no image needed); otherwise loads the session, which
    needs the training image, and trains it.
    """
    from ..core.classifier import PixelClassifier
    from ..core.features import FeatureSelection
    from .batch import BatchModel, model_from_session

    path = Path(os.fspath(path))
    doc, arrays = read_project(path)
    if "model" in doc:
        try:
            clf = PixelClassifier.from_arrays(
                {k[len("model/") :]: v for k, v in arrays.items() if k.startswith("model/")}, doc["model"].get("params")
            )
            ref = doc["image"]
            return BatchModel(
                classifier=clf,
                selection=FeatureSelection.from_dict(doc["features"]),
                mode=doc["feature_mode"],
                ndim=len(ref["spatial_shape"]),
                n_input_channels=int(ref.get("n_channels") or 1),
                n_classes=len(doc["classes"]),
                class_names=[c["name"] for c in doc["classes"]],
                class_colors=[c["color"] for c in doc["classes"]],
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ProjectError(f"{path} is damaged: the stored classifier cannot be read ({exc})") from exc
    if not doc.get("trained"):
        raise ProjectError(f"{path} holds an untrained session: train it (session.train()) and save it again")
    return model_from_session(load_session(path, train=True))


def _open_image(doc: dict, arrays: dict, project_path: Path, image: Any):
    ref = doc["image"]
    if not isinstance(ref, dict):
        raise ProjectError(f"{project_path} is damaged: invalid image reference")
    if image is not None:
        return image, None
    if ref.get("embedded"):
        if "image" not in arrays:
            raise ProjectError(f"{project_path} is damaged: the embedded image is missing")
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
        src = open_source(c, axes=ref.get("axes") if t is None else None, t=t)
        return src, src
    where = " or ".join(tried) if tried else "nowhere (the image was in memory and not embedded)"
    raise FileNotFoundError(
        f"the project's image was not found ({where}); pass image=... to load_session or Session.load"
    )


def load_session(path, image: Any = None, *, train: bool | None = None, **session_kwargs):
    """Load a project file into a new :class:`~ilastik_widget.Session`.

    Parameters
    ----------
    image : array-like or ImageSource, optional
        The image to use; default: the embedded image, or the file/URL the project refers to.
    train : bool, optional
        Retrain after loading (default: if the session was trained when saved).
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
    from ..core.annotations import Annotations
    from ..core.session import Session

    path = Path(os.fspath(path))
    doc, arrays = read_project(path)
    ref = doc["image"]
    img, src = _open_image(doc, arrays, path, image)
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
            seed=int(doc["seed"]),
            feature_mode=doc["feature_mode"],
            classifier=dict(doc["classifier"]),
            block_shape=session_kwargs.pop("block_shape", doc.get("block_shape")),
            **session_kwargs,
        )
    except (KeyError, TypeError) as exc:
        raise ProjectError(f"{path} is damaged: {exc}") from exc
    want = tuple(int(n) for n in ref.get("spatial_shape", session.spatial_shape))
    if tuple(session.spatial_shape) != want:
        raise ValueError(
            f"the image has spatial shape {tuple(session.spatial_shape)} but the project was made for {want}"
        )
    n_ch = ref.get("n_channels")
    if n_ch is not None and session.n_input_channels != int(n_ch):
        raise ValueError(f"the image has {session.n_input_channels} channel(s) but the project was made for {n_ch}")
    pts, off = arrays["stroke_points"], arrays["stroke_offsets"]
    strokes = []
    for i, s in enumerate(doc["strokes"]):
        try:
            strokes.append(
                {
                    "id": int(s["id"]),
                    "label": int(s["label"]),
                    "points": pts[off[i] : off[i + 1]],
                    "radius": float(s["radius"]),
                    "axes": s.get("axes"),
                    "erase": bool(s.get("erase")),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectError(f"{path} is damaged: stroke record {i} is invalid ({exc})") from exc
    ann_doc = {
        "shape": list(session.spatial_shape),
        "classes": doc["classes"],
        "strokes": strokes,
        "next_id": int(doc.get("next_stroke_id", 1) or 1),
    }
    try:
        session.annotations = Annotations.from_dict(ann_doc, session.spatial_shape)
    except (KeyError, TypeError) as exc:
        raise ProjectError(f"{path} is damaged: {exc}") from exc
    if train is None:
        train = bool(doc.get("trained"))
    if train:
        session.train()
    session.project_path = path
    return session


# ---------------------------------------------------------------------- autosave
def autosave(session, path, **kw) -> Path:
    """Save now, atomically (the previous file stays intact until the new one is complete)."""
    return save_session(session, path, **kw)


class AutoSaver:
    """Saves a session to ``path`` after every change of labels, classes or features (see enable_autosave)."""

    EVENTS = ("labels", "classes", "features")

    def __init__(self, session, path, **save_kwargs) -> None:
        self.session = session
        self.path = Path(os.fspath(path))
        save_kwargs.setdefault("include_model", False)  # keep saves after every stroke small and fast
        self.save_kwargs = save_kwargs
        self.n_saves = 0
        self.last_error: Exception | None = None
        self._lock = threading.Lock()
        session.add_listener(self._on_event)
        self.save()

    def _on_event(self, event: str, **info: Any) -> None:
        if event in self.EVENTS:
            self.save()

    def save(self) -> None:
        with self._lock:
            try:
                autosave(self.session, self.path, **self.save_kwargs)
                self.n_saves += 1
                self.last_error = None
            except Exception as exc:  # reported, never raised into the session's change
                self.last_error = exc
                raise

    def close(self) -> None:
        self.session.remove_listener(self._on_event)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False


def enable_autosave(session, path, **save_kwargs) -> AutoSaver:
    """Save ``session`` to ``path`` now and after every change; returns the AutoSaver (``.close()`` stops it)."""
    return AutoSaver(session, path, **save_kwargs)
