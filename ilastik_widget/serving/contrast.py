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


#: Bins of a channel's histogram for the panel's contrast sliders.
HISTOGRAM_BINS = 128


def histogram(
    values: np.ndarray, window: tuple[float, float], integer: bool = False, bins: int = HISTOGRAM_BINS
) -> dict:
    """Histogram of a sample of one channel's values over the span a contrast slider offers.

    The span reaches from the window one window-width further on each side, but not beyond the sample's own
    extremes (nor inside the window): debris 20 times brighter than the nuclei does not squash their part of the
    histogram into one bin, and the values beyond the span are counted in ``below`` and ``above``.

    Parameters
    ----------
    values : numpy.ndarray
        The sample the automatic window was computed from (NaN and infinities ignored).
    window : (float, float)
        The automatic display window (low < high).
    integer : bool
        Whole-number bin edges (integer images), so no bin holds more distinct values than its neighbours.
    bins : int
        At most this many bins.

    Returns
    -------
    dict
        ``{"range": [start, stop], "counts": [...], "below": int, "above": int, "min": float, "max": float}``
        (``min`` and ``max`` of the sample; 0 and 1 for a sample without finite values).
    """
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    lo, hi = float(window[0]), float(window[1])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    width = hi - lo
    start, stop = min(lo, max(vmin, lo - width)), max(hi, min(vmax, hi + width))
    n = max(1, int(bins))
    if integer:
        start, stop = math.floor(start), math.ceil(stop)
        step = max(1, math.ceil((stop - start + 1) / n))
        n = max(1, math.ceil((stop - start + 1) / step))
        stop = start + n * step  # bins of whole numbers [start + i * step, start + (i + 1) * step)
    elif stop <= start:
        stop = start + 1.0
    # integer bins are centred on whole numbers: the values start .. stop - 1 fall inside, none on an edge
    edges = np.linspace(start, stop, n + 1) - (0.5 if integer else 0.0)
    counts = np.histogram(finite, bins=edges)[0]
    return {
        "range": [float(start), float(stop)],
        "counts": [int(c) for c in counts],
        "below": int((finite < edges[0]).sum()),
        "above": int((finite > edges[-1]).sum()),
        "min": vmin,
        "max": vmax,
    }
