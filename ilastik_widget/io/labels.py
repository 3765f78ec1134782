"""Reading label images (an earlier annotation, an ilastik label export, masks) from TIFF or zarr files.

:func:`read_labels` returns the stored integer array, fitted to the shape it is meant for (singleton axes such as a
channel or time axis of length 1 are dropped); :meth:`ilastik_widget.core.annotations.Annotations.import_labels`
turns it into labels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["read_labels", "fit_label_shape"]


def read_labels(
    path: str | os.PathLike,
    *,
    shape: Sequence[int] | None = None,
    masks: bool = False,
    path_in_file: str | None = None,
    series: int = 0,
) -> np.ndarray:
    """Read a label image or a stack of masks from a TIFF file or a local zarr array / group (OME-Zarr included).

    Parameters
    ----------
    path : str or path-like
        A ``.tif``/``.tiff`` file or a zarr directory.
    shape : sequence of int, optional
        The spatial shape the labels are for (the image, or the region they go to). The stored array may differ
        only by axes of length 1, which are dropped; with ``masks``, a leading mask axis comes first.
    masks : bool
        The file holds one mask per class along its first axis (not of length 1).
    path_in_file : str, optional
        Array or group inside a zarr group (e.g. ``"labels/nuclei"``).
    series : int
        TIFF series.

    Returns
    -------
    np.ndarray
        The labels as stored (dtype unchanged), of ``shape`` (or ``(n_masks, *shape)``) when given.

    Raises
    ------
    FileNotFoundError
        No file or zarr node at ``path``.
    ValueError
        A file that is not a label image of the expected shape.
    """
    from .sources import open_source

    source = open_source(os.fspath(path), path=path_in_file, series=series)
    array = np.asarray(source.array)
    if shape is None:
        return array
    return fit_label_shape(array, shape, masks=masks, what=f"the labels in {os.fspath(path)!r}")


def fit_label_shape(array: Any, shape: Sequence[int], *, masks: bool = False, what: str = "the labels") -> np.ndarray:
    """``array`` reshaped to ``shape`` (or ``(n, *shape)`` for masks) by dropping axes of length 1.

    Raises ValueError naming both shapes when the axes longer than 1 differ.
    """
    array = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if masks:
        if array.ndim < 2:
            raise ValueError(f"{what} hold no stack of masks (shape {tuple(array.shape)})")
        _check_fits(array.shape[1:], shape, what)
        return array.reshape((array.shape[0], *shape))
    _check_fits(array.shape, shape, what)
    return array.reshape(shape)


def _check_fits(got: Sequence[int], want: tuple[int, ...], what: str) -> None:
    if tuple(n for n in got if n != 1) != tuple(n for n in want if n != 1):
        raise ValueError(f"{what} have shape {tuple(got)}, which does not fit the image's shape {want}")
