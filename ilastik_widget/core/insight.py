"""What a session tells about its image, behind ``Session``'s methods: the objects of a class (in a region), the
labelled voxels per class and the predicted share of each class.

The computations are the numpy functions of :mod:`~ilastik_widget.core.objects` and
:mod:`~ilastik_widget.core.class_fractions`; this module reads what they need from a session (probabilities of a
region with a margin, the image's intensities, voxel sizes, class names) and checks that the session can answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotations import normalize_region
from .class_fractions import FRACTION_METHODS, block_class_totals
from .features import channels_last

if TYPE_CHECKING:
    import pandas as pd

    from .objects import Objects
    from .session import Session

__all__ = ["SessionInsight", "session_objects", "labelled_per_class", "session_class_fractions", "session_voxel_size"]

#: Blocks predicted together (in parallel) by :func:`session_class_fractions`; bounds the memory it holds.
FRACTION_BATCH = 16


# ---------------------------------------------------------------------- objects
def session_voxel_size(session: Any) -> tuple[tuple[float, ...] | None, tuple | None]:
    """(voxel sizes, units) of a session's image: ``session.voxel_size`` (None when not known) and the units of the
    :class:`~ilastik_widget.io.sources.ImageSource` it was opened from, when it gives them (else None)."""
    vs = getattr(session, "voxel_size", None)
    if vs is None:
        return None, None
    units = tuple(getattr(getattr(session, "source", None), "units", None) or ())
    return tuple(float(v) for v in vs), units if len(units) == len(vs) and any(units) else None


def _check_predicted(session: Any, label: int) -> None:
    model = session.model
    if model is None:
        raise RuntimeError(
            f"class {label} has no prediction yet: the session is not trained; label at least two classes and "
            "call train() first"
        )
    fitted = getattr(getattr(model, "forest", None), "classes_", None)
    if fitted is not None and label not in {int(c) for c in fitted}:
        raise ValueError(
            f"class {label} ({session.classes[label - 1].name!r}) has no prediction yet: it had no labels when the "
            "model was trained; label it and train again"
        )


def session_image(session: Any, region: Sequence[slice]) -> np.ndarray:
    """The intensities of a region of a session's image: (*region) for one channel, else (*region, channels)."""
    index: list[Any] = list(region)
    if session.channel_axis is not None:
        index.insert(session.channel_axis, slice(None))
    block = channels_last(np.asarray(session.image[tuple(index)]), session.channel_axis)
    return block[..., 0] if block.shape[-1] == 1 else block


def session_objects(
    session: Session,
    label: int,
    threshold: float = 0.5,
    *,
    low: float | None = None,
    min_size: int = 10,
    max_size: int | None = None,
    smooth: float | Sequence[float] = 1.0,
    split: bool | float = False,
    region: Any = None,
) -> Objects:
    """Objects of one class of a trained session (``Session.objects``): label image and table.

    The class's probabilities are thresholded as ilastik's Thresholding applet does and connected components
    become objects (see :mod:`ilastik_widget.core.objects`); the table holds each object's area, centroid and
    bounding box in image coordinates (and in physical units when the image's voxel sizes are known:
    ``Session.voxel_size``), its mean probability and the mean, min and max intensity of every input channel.

    Parameters
    ----------
    label : int
        The class (1..n_classes) whose objects are wanted.
    threshold : float
        Probability (after smoothing) from which a voxel belongs to an object (the seeds with ``low``), in [0, 1].
    low : float, optional
        Hysteresis as ilastik's: objects grow from the seeds through voxels with probability ``>= low``.
    min_size, max_size : int, optional
        Objects (and seeds) of fewer or more voxels are dropped (ilastik's min_size default is 10).
    smooth : float or sequence of float
        Gaussian sigma in voxels (per axis or one for all) applied to the probabilities first; 0 for none.
    split : bool or float
        Separate touching objects (watershed of the distance transform; a number is the depth of the maxima
        that seed pieces, in voxels).
    region : tuple of slice, optional
        Compute only this region (e.g. the part in view); default the whole image.

    Returns
    -------
    Objects
        ``labels`` of the region, ``table``, ``params``, ``offset`` (the region's start), ``units``.

    Notes
    -----
    A region is computed from the probabilities of the region and a margin of the smoothing kernel's reach
    (clipped to the image), so its smoothed map and its mask equal the whole image's at every voxel of the region.
    Objects are those of that mask *inside the region*: every object that lies inside the region without touching
    one of its sides within the image is exactly the whole image's object (same voxels, same row but its
    ``label``), also with ``split`` and the size and hysteresis filters. An object touching such a side (column
    ``clipped``) is measured on its part inside the region; that part may be smaller than ``min_size``, or hold no
    seed, or its parts may be joined outside, so it may be dropped, kept or counted differently than in the whole
    image.

    Raises
    ------
    RuntimeError
        Before the session is trained.
    ValueError
        Bad parameters (thresholds outside [0, 1], low > threshold, min_size > max_size, a label beyond the
        classes), a class without prediction (it had no labels at the last training) or a region outside the image.
        Nothing in the session changes.
    """
    # Imported when first used: scipy.ndimage and pandas would slow every session's start.
    from .objects import check_object_params, extract_objects, grown_region, smoothed_map, smoothing_halo

    shape = session.spatial_shape
    region = normalize_region(region, shape)
    voxel_size, units = session_voxel_size(session)
    params = check_object_params(
        session.n_classes,
        session.ndim,
        label,
        threshold,
        low=low,
        min_size=min_size,
        max_size=max_size,
        smooth=smooth,
        split=split,
        voxel_size=voxel_size,
    )
    _check_predicted(session, params.label)
    read = grown_region(region, smoothing_halo(params.smooth), shape)
    inner = tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, read))
    prob = session.predict(read)
    p = smoothed_map(prob, params)[inner]
    origin = tuple(r.start for r in region)
    image = session_image(session, region)
    return extract_objects(p, prob[inner + (params.label - 1,)], params, image, origin, shape, units)


# ---------------------------------------------------------------------- classes
def _class_columns(session: Any, n: int) -> dict[str, Any]:
    classes = session.classes[:n]
    return {
        "label": np.arange(1, n + 1, dtype=np.int32),
        "name": [c.name for c in classes],
        "color": [c.color for c in classes],
    }


def labelled_per_class(session: Session) -> pd.DataFrame:
    """Labelled voxels of every class (``Session.labelled_per_class``): what the user painted or imported.

    Returns
    -------
    pandas.DataFrame
        One row per class: ``label`` (1..n_classes), ``name``, ``color``, ``labelled`` (voxels, int64) and
        ``fraction`` (of all labelled voxels; 0 when nothing is labelled).
    """
    counts = session.annotations.count_per_class()
    import pandas as pd

    table = pd.DataFrame(_class_columns(session, len(counts)))
    table["labelled"] = counts
    table["fraction"] = counts / max(int(counts.sum()), 1)
    return table


def session_class_fractions(session: Session, region: Any = None, method: str = "argmax") -> pd.DataFrame:
    """Predicted share of every class in a region (``Session.class_fractions``), e.g. the part in view.

    Parameters
    ----------
    region : tuple of slice, optional
        Default the whole image. It is predicted block by block, :data:`FRACTION_BATCH` blocks at a time (in
        parallel, cached as :meth:`Session.predict` caches them), so a large image is never held whole.
    method : {"argmax", "mean"}
        ``"argmax"``: the share of voxels whose most probable class it is (as the segmentation colours them);
        ``"mean"``: the mean probability (soft shares, which differ where the classifier hesitates).

    Returns
    -------
    pandas.DataFrame
        One row per class: ``label``, ``name``, ``color``, ``fraction`` (summing to 1) and ``voxels`` (voxels
        predicted as the class with ``"argmax"``, int64; the sum of its probabilities with ``"mean"``).

    Raises
    ------
    RuntimeError
        Before the session is trained.
    ValueError
        An unknown method or a region outside the image.
    """
    if method not in FRACTION_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, FRACTION_METHODS))}, got {method!r}")
    region = normalize_region(region, session.spatial_shape)
    blocks = session.blocks_for(region)
    totals: np.ndarray | None = None
    for i in range(0, len(blocks), FRACTION_BATCH):
        parts = []
        for b in blocks[i : i + FRACTION_BATCH]:
            box = session.block_region(b)
            parts.append(tuple(slice(max(r.start, s.start), min(r.stop, s.stop)) for r, s in zip(region, box)))
        session.precompute(parts)
        for part in parts:
            t = block_class_totals(session.predict(part), method)
            totals = t if totals is None else totals + t
    assert totals is not None  # a normalised region touches at least one block
    import pandas as pd

    table = pd.DataFrame(_class_columns(session, len(totals)))
    total = totals.sum()
    table["fraction"] = totals / total if total > 0 else np.zeros(len(totals))
    table["voxels"] = totals
    return table


class SessionInsight:
    """The methods :class:`~ilastik_widget.core.session.Session` gets from this module: ``objects``,
    ``labelled_per_class`` and ``class_fractions`` (the functions above, with their signatures and documentation)."""

    objects = session_objects
    labelled_per_class = labelled_per_class
    class_fractions = session_class_fractions
