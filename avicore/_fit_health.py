"""Is a fit healthy? A host-side watcher fed one ELBO estimate at a time: best value, runaway, final verdict.

The engines (and any executor that syncs its ELBO values to the host, one at a time or k at a time) feed every
per-iteration estimate to :class:`FitHealth`. It answers three questions:

* **Is this the best state so far?** (:attr:`FitHealth.is_best` after :meth:`~FitHealth.record`) — the engine then
  keeps a copy of the state, so that a fit that runs away returns the best state it saw.
* **Is the fit running away while still finite?** (:meth:`~FitHealth.runaway`, :meth:`~FitHealth.scales`). The
  criterion, documented in :class:`avicore.FVI`:

  - the running level of the ELBO — the median of the last :data:`LEVEL_WINDOW` estimates, so one outlier does not
    move it — falls below its best level by more than ``max(NOISE_Z · σ, REL_DROP · max(|best level|, 1))``, where
    σ is the per-iteration Monte-Carlo noise measured (robustly, from successive differences) over the
    :data:`NOISE_WINDOW` estimates before the best level. With ``REL_DROP = 1`` the ELBO must fall to twice its best
    magnitude: Adam's ordinary wobble, minibatch noise and the early transients of the package's experiments stay
    far inside that, while a learning rate that is too large drives the ELBO down by orders of magnitude;
  - or a scale parameter leaves what float64 can use: a global sd below float64's resolution of its mean
    (σ < ε·max(|μ|, 1), so μ + σ·η == μ), a local sd below ε, or any sd above 1e150 (its square overflows soon).
* **Did it converge?** (:meth:`~FitHealth.verdict`). With ``tol`` the running-mean test of
  :class:`~avicore.optim.ConvergenceMonitor` (which also needs the trend to be insignificant); without it, the
  trend of the last half of the record (:meth:`avicore.optim.ConvergenceMonitor.trend`) must not be significant.
  A fit whose ELBO still moves by more than its noise when it ends is not converged and gets a
  :class:`~avicore.optim.ConvergenceWarning` naming the change per iteration.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .optim import TREND_T, ConvergenceMonitor

#: Estimates in the running median that is compared with its best.
LEVEL_WINDOW = 9
#: The drop test starts once this many estimates are recorded (a median of 3 ignores one outlier).
MIN_LEVEL = 3
#: Estimates before the best level from which the per-iteration noise σ is measured.
NOISE_WINDOW = 64
#: A drop must exceed this many σ ...
NOISE_Z = 20.0
#: ... and this fraction of the best level's magnitude (1: the ELBO fell to twice its best magnitude).
REL_DROP = 1.0
#: Largest usable standard deviation (its square stays far from float64's overflow).
MAX_SD = 1e150
_EPS = float(np.finfo(np.float64).eps)
_LOG_MAX_SD = math.log(MAX_SD)
_LOG_EPS = math.log(_EPS)


def lr_text(lr: object, lr_now: float) -> str:
    """How to name the learning rate in a message: ``lr=0.05``, or the schedule's value now."""
    return f"lr={lr_now:.3g}" if not callable(lr) else f"the lr schedule's value {lr_now:.3g}"


class FitHealth:
    """Watches one fit: the best estimate and its iteration, runaway tests, and the convergence verdict.

    Parameters
    ----------
    n_iter, tol, window :
        As :class:`~avicore.optim.ConvergenceMonitor` (which it owns as :attr:`monitor`).
    method : str
        Label used in messages ("F-VI", "A-VI").

    Attributes
    ----------
    monitor : ConvergenceMonitor
        The record of the estimates.
    best_value : float
        The highest estimate recorded (−inf before any).
    best_index : int
        Its position in the record (= the number of updates of the state it estimates); −1 before any.
    is_best : bool
        Whether the last recorded value is a new best.
    """

    def __init__(self, n_iter: int, tol: float | None, window: int, method: str) -> None:
        # a window longer than the fit would never fill: the same test, clamped (running means are unchanged)
        self.monitor = ConvergenceMonitor(n_iter, tol, min(window, n_iter))
        self.method = method
        self.best_value = -math.inf
        self.best_index = -1
        self.is_best = False
        self._recent: deque[float] = deque(maxlen=LEVEL_WINDOW)
        self._best_level = -math.inf
        self._best_level_index = -1
        self._level = -math.inf

    def record(self, value: float) -> bool:
        """Record one finite estimate; True when the ``tol`` test passes."""
        self.is_best = value > self.best_value
        if self.is_best:
            self.best_value, self.best_index = value, self.monitor.count
        self._recent.append(value)
        self._level = level = _median(self._recent)
        if level > self._best_level:
            self._best_level, self._best_level_index = level, self.monitor.count
        return self.monitor.record(value)

    def noise(self) -> float:
        """Robust per-iteration noise σ of the estimates before the best level (0 with fewer than 4)."""
        b = self._best_level_index
        values = self.monitor._values[max(0, b - NOISE_WINDOW):b + 1]
        if values.size < 4:
            return 0.0
        d = np.diff(values)
        return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))

    def runaway(self) -> str | None:
        """A message when the running level fell far below its best (see the module's criterion), else None."""
        if len(self._recent) < MIN_LEVEL:
            return None
        level = self._level
        drop = self._best_level - level
        if not drop > REL_DROP * max(abs(self._best_level), 1.0):  # cheap test first; σ only when needed
            return None
        sigma = self.noise()
        if not drop > NOISE_Z * sigma:
            return None
        return (f"the running ELBO (median of the last {len(self._recent)} estimates) fell to {level:.6g}, "
                f"{drop:.4g} nats below its best {self._best_level:.6g} (iteration {self._best_level_index}) "
                + (f"far beyond its Monte-Carlo noise ({sigma:.3g} a step)" if sigma > 0 else
                   "(too few estimates yet to measure their noise)"))

    def scales(self, global_mean: np.ndarray, global_log_sd: np.ndarray, local_log_sd_min: float,
               local_log_sd_max: float) -> str | None:
        """A message when a scale parameter left what float64 can use, else None (point masses, log sd = −inf
        for the global, are skipped)."""
        if global_log_sd.size:
            g_lo, g_hi = float(global_log_sd.min()), float(global_log_sd.max())
            usable = g_lo >= _LOG_EPS + math.log(max(1.0, float(np.abs(global_mean).max()))) and g_hi <= _LOG_MAX_SD
            if usable or g_hi == -math.inf:  # the fast path: every sd usable, or all point masses
                global_log_sd = global_log_sd[:0]
        spread = global_log_sd != -np.inf
        if spread.any():
            ls, mu = global_log_sd[spread], global_mean[spread]
            floor = _LOG_EPS + np.log(np.maximum(np.abs(mu), 1.0))
            low = ls < floor
            if low.any() or (ls > _LOG_MAX_SD).any():
                j = int(np.flatnonzero(low)[0] if low.any() else np.flatnonzero(ls > _LOG_MAX_SD)[0])
                what = "collapsed below float64's resolution of its mean" if low.any() else f"exploded past {MAX_SD:g}"
                return f"the sd of q(θ) coordinate {j} {what} (sd {math.exp(ls[j]):.3g}, mean {mu[j]:.3g})"
        if local_log_sd_min < _LOG_EPS or local_log_sd_max > _LOG_MAX_SD:
            low = local_log_sd_min < _LOG_EPS
            value = math.exp(local_log_sd_min if low else local_log_sd_max)
            what = f"collapsed below {_EPS:.3g}" if low else f"exploded past {MAX_SD:g}"
            return f"a local sd of q(zₙ) {what} (sd {value:.3g})"
        return None

    #: The cause named for a non-finite ELBO estimate, gradient or parameter.
    NONFINITE = "the ELBO estimate, its gradient or a parameter is not finite"

    def diverged_message(self, cause: str, lr: str, current: float | None = None) -> str:
        """The full :class:`~avicore.optim.DivergenceWarning` text for a fit stopped at the current iteration:
        the cause, the ELBO drop (``current``: the estimate of the state that was refused, when finite), the likely
        culprit (the learning rate ``lr``, as :func:`lr_text` names it) and what is kept."""
        done = self.monitor.count
        if current is not None and math.isfinite(current) and self.best_index >= 0:
            cause += (f"; its ELBO estimate {current:.6g} is {self.best_value - current:.4g} nats below the best, "
                      f"{self.best_value:.6g}")
        if self.best_index < 0:
            kept = "returning the initial state"
        else:
            kept = (f"returning the best state seen, after {self.best_index} iteration(s) (its ELBO estimate "
                    f"{self.best_value:.6g})")
        return (f"{self.method} fit diverged at iteration {done + 1}: {cause}. Likely cause: the learning rate ({lr}) "
                f"is too large for this model; try a smaller lr or a decaying schedule. {kept[0].upper()}{kept[1:]}, "
                f"converged=False.")

    def verdict(self, stop_reason: str) -> tuple[bool, str | None]:
        """(converged, warning text or None) for a fit that ended with ``stop_reason``.

        ``"tol"`` and ``"stationary"`` (a model's own solver at its fixed point): converged. ``"diverged"``: not.
        Otherwise, with ``tol``: not converged (its test did not hold);
        without: converged when the trend is measurable (>= 100 estimates) and not significant. Either way a
        significant trend gives a warning text naming the change per iteration.
        """
        if stop_reason in ("tol", "stationary"):
            return True, None
        if stop_reason == "diverged":
            return False, None
        trend = self.monitor.trend()
        if trend is None:
            return False, None
        converged = self.monitor.tol is None and not trend.significant
        if not trend.significant:
            return converged, None
        direction = "rising" if trend.slope > 0 else "falling"
        advice = ("run more iterations (or keep the learning rate higher for longer)" if trend.slope > 0 else
                  "lower the learning rate")
        return False, (f"{self.method} fit ended ({stop_reason!r}) while its ELBO was still {direction} by "
                       f"{abs(trend.slope):.3g} nats per iteration over its last {trend.span} iterations "
                       f"({abs(trend.t):.1f} standard errors; noise explains at most {TREND_T:g}); "
                       f"converged=False: {advice}.")


def _median(values: deque[float]) -> float:
    s = sorted(values)
    k = len(s)
    return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])
