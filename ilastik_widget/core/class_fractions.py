"""How much of an image each class takes: the predicted share of every class in a probability block.

Counts add up over blocks (a view made of tiles, a whole image computed block by block); fractions are counts over
their total. Labelled voxels per class (what the user painted) are
:meth:`ilastik_widget.core.annotations.Annotations.count_per_class`; a session's tables of both are in
:mod:`ilastik_widget.core.insight`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["predicted_class_counts", "block_class_totals", "class_fractions", "FRACTION_METHODS"]

#: The ways of measuring a class's share: voxels of the most probable class, or mean probability.
FRACTION_METHODS = ("argmax", "mean")


def _probabilities(probabilities: Any) -> np.ndarray:
    prob = np.asarray(probabilities)
    if prob.ndim < 2 or prob.shape[-1] < 1 or not np.issubdtype(prob.dtype, np.floating):
        raise ValueError(
            f"probabilities must be a float array (*spatial, n_classes), got shape {prob.shape} and dtype {prob.dtype}"
        )
    return prob


def predicted_class_counts(probabilities: Any) -> np.ndarray:
    """Voxels whose most probable class is each class: (n_classes,) int64, index 0 = class 1.

    Ties go to the lower class (as the segmentation shows them). Sum the counts of several blocks for their union.
    """
    prob = _probabilities(probabilities)
    n_classes = prob.shape[-1]
    winner = np.argmax(prob.reshape(-1, n_classes), axis=1)
    return np.bincount(winner, minlength=n_classes).astype(np.int64)


def block_class_totals(probabilities: Any, method: str = "argmax") -> np.ndarray:
    """What :func:`class_fractions` divides by its total, per class, for one block: voxels whose most probable
    class it is (int64, ``"argmax"``) or the sum of its probabilities (float64, ``"mean"``). Sums over blocks
    give the totals of their union."""
    prob = _probabilities(probabilities)
    if method == "argmax":
        return predicted_class_counts(prob)
    if method == "mean":
        return prob.reshape(-1, prob.shape[-1]).astype(np.float64).sum(axis=0)
    raise ValueError(f"method must be one of {', '.join(map(repr, FRACTION_METHODS))}, got {method!r}")


def class_fractions(probabilities: Any, *, method: str = "argmax") -> np.ndarray:
    """Predicted fraction of each class in a block: (n_classes,) float64 summing to 1 (index 0 = class 1).

    Parameters
    ----------
    probabilities : array-like
        float (*spatial, n_classes) class probabilities.
    method : {"argmax", "mean"}
        ``"argmax"``: the share of voxels assigned to each class (as the segmentation colours them);
        ``"mean"``: the mean probability of each class (soft shares; differs where the classifier hesitates).
    """
    totals = block_class_totals(probabilities, method)
    total = totals.sum()
    return totals / total if total > 0 else np.zeros(len(totals))
