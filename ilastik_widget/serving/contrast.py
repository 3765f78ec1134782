"""A display range that shows the data: robust automatic contrast of one channel from a sample of its values.

The range is the 0.5 and 99.5 percentiles, except where a small population of values lies far beyond the rest (bright
debris, saturated pixels, dead pixels far below the rest): then the range stops at the edge of the main population, which is
what a person wants to see. Such a population shows as a jump in the quantile function: going up from the 90th
percentile (a population of up to 10% of the values), a step between two neighbouring quantiles (0.1% apart) larger
than half the whole rise from the median to that point; likewise going down from the 10th percentile.
"""

from __future__ import annotations

import math

import numpy as np

LOW, HIGH = 0.5, 99.5  # percentiles of an ordinary image
#: Quantiles examined for a jump at the top (and mirrored at the bottom), in percent.
_TAIL = np.arange(90.0, 99.95, 0.1)


def _edge(quantiles: np.ndarray, median: float) -> int | None:
    """Index of the last quantile before the first jump larger than half the rise from the median to it."""
    rise = np.abs(quantiles - median)
    steps = np.abs(np.diff(quantiles))
    jumps = np.flatnonzero((steps > 0.5 * rise[:-1]) & (rise[:-1] > 0))
    return int(jumps[0]) if len(jumps) else None


def auto_range(values: np.ndarray, integer: bool = False) -> tuple[float, float]:
    """Display range (low, high) of a sample of one channel's values (NaN and infinities ignored).

    Parameters
    ----------
    values : numpy.ndarray
        A sample of the channel (a strided subsample or a coarse level; never needs the whole image).
    integer : bool
        Round outwards to whole numbers (integer images).

    Returns
    -------
    (float, float)
        low < high; (0, 1) for a sample without finite values.
    """
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    median = float(np.median(finite))
    lo, hi = (float(v) for v in np.percentile(finite, [LOW, HIGH]))
    upper = np.percentile(finite, _TAIL)
    i = _edge(upper, median)
    if i is not None and _TAIL[i] < HIGH:
        hi = float(upper[i])
    lower = np.percentile(finite, 100.0 - _TAIL)
    i = _edge(lower, median)
    if i is not None and 100.0 - _TAIL[i] > LOW:
        lo = float(lower[i])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    if integer:
        lo, hi = math.floor(lo), math.ceil(hi)
        if hi <= lo:
            hi = lo + 1
    return lo, hi
