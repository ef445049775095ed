"""Numbers every experiment reports: convergence speed against F-VI, and mean ± standard error over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def iterations_to_reach(trace: Sequence[float], target: float, *, rel: float = 0.01, smooth: int = 20) -> int | None:
    """First iteration (1-based) at which the running mean of ``trace`` is within ``rel`` of ``target``.

    "Within 1 % of F-VI's final ELBO" means ``elbo >= target - rel * |target|``. The ELBO trace is a noisy
    Monte-Carlo estimate, so a trailing running mean over ``smooth`` iterations is compared. Returns ``None`` if the
    trace never gets there.
    """
    values = np.asarray(trace, dtype=np.float64)
    if values.size == 0:
        return None
    finite = np.isfinite(values)
    window = max(1, int(smooth))
    idx = np.arange(values.size)
    lo = np.maximum(0, idx - window + 1)
    total = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    n_bad = np.concatenate([[0], np.cumsum(~finite)])
    running = (total[idx + 1] - total[lo]) / (idx + 1 - lo)
    running[(n_bad[idx + 1] - n_bad[lo]) > 0] = -np.inf  # a diverged iteration in the window never counts
    hit = np.nonzero(running >= target - rel * abs(target))[0]
    return int(hit[0]) + 1 if hit.size else None


def seconds_to_reach(trace: Sequence[float], seconds: float, target: float, *, rel: float = 0.01,
                     smooth: int = 20) -> float | None:
    """Wall time to :func:`iterations_to_reach`, assuming a constant cost per iteration (``seconds / len(trace)``)."""
    it = iterations_to_reach(trace, target, rel=rel, smooth=smooth)
    if it is None or len(trace) == 0:
        return None
    return seconds * it / len(trace)


def log_bin_means(trace: Sequence[float], max_points: int = 500) -> tuple[list[int], list[float]]:
    """A trace thinned for log-log plots: at most ``max_points`` bins with log-spaced ends, as (last iteration of
    each bin, 1-based; mean of the trace over the bin): every iteration when there are no more than ``max_points``.
    Early bins hold single iterations; averaging the late, wide ones tames their Monte-Carlo noise."""
    values = np.asarray(trace, dtype=np.float64)
    n = values.size
    if n == 0:
        return [], []
    if n <= max_points:
        ends = np.arange(1, n + 1)
    else:
        ends = np.unique(np.round(np.geomspace(1, n, max(2, max_points))).astype(np.int64))
    starts = np.concatenate([[0], ends[:-1]])
    return ends.tolist(), (np.add.reduceat(values, starts) / (ends - starts)).tolist()


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean over seeds (SE is NaN for a single value)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se


def fmt_mean_se(values: Sequence[float], digits: int = 2) -> str:
    m, se = mean_se(values)
    if math.isnan(m):
        return "-"
    return f"{m:.{digits}f}" if math.isnan(se) else f"{m:.{digits}f} ± {se:.{digits}f}"


def fmt_pair(pair: Sequence[float | None], digits: int = 2) -> str:
    """"m ± se" of a (mean, standard error) pair for tables: thousands separators, scientific notation for means
    too small for ``digits`` decimals, "-" for a missing mean, the mean alone when the SE is missing (one seed)."""
    m, se = (math.nan if v is None else float(v) for v in pair)
    if math.isnan(m):
        return "-"
    spec = f",.{digits}f" if m == 0 or abs(m) >= 10.0 ** -digits else ".2e"
    return f"{m:{spec}}" if math.isnan(se) else f"{m:{spec}} ± {se:{spec}}"


def save_figure(fig: object, path: object) -> str:
    """Write a matplotlib figure as PNG (120 dpi), close it, return the path."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
