"""Adam and convergence monitoring for the VI engines.

Adam (Kingma & Ba, 2015) keeps first and second moment estimates m, v of the gradient g. With ĝ = scale·g + offset
(the engines fold constant gradients, such as the entropy's ∂H/∂log s = 1, into the update this way) and step t:

    m ← β₁ m + (1 − β₁) ĝ,     v ← β₂ v + (1 − β₂) ĝ²,
    p ← p ± lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)

(+ to maximise, − to minimise), the same arithmetic as PyTorch's ``torch.optim.Adam``. The update is one fused pass
(Cython, OpenMP over elements) when the compiled kernels are built, else NumPy. :meth:`Adam.step_rows` is *lazy*
Adam for per-observation parameters under minibatching: only the rows in the batch move, each with its own step
count, so a row's update does not depend on how often other rows were visited.

:class:`ConvergenceMonitor` records the per-iteration ELBO estimates, measures their trend
(:meth:`~ConvergenceMonitor.trend`: the least-squares slope of ten block means over the last half of the record,
with a standard error from the scatter of those block means, so Monte-Carlo noise and short-range correlation are
counted) and declares convergence when the relative change between the running means of the last two windows of
``window`` iterations falls below ``tol`` *and* the trend is not significant: a noisy estimate that still climbs
slowly does not pass the window test by chance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import _config
from ._validate import _describe, as_float_array, check_allocation, check_int, check_scalar


class DivergenceWarning(RuntimeWarning):
    """A fit ran away (a non-finite value, an ELBO far below its best, a collapsing or exploding scale) and was
    stopped; the best state seen was kept."""


class ConvergenceWarning(UserWarning):
    """A fit ended while its ELBO still moved by more than its Monte-Carlo noise: it did not converge."""


#: A trend is significant when |slope| exceeds this many standard errors (two-sided, 8 degrees of freedom).
TREND_T = 4.0
#: A change of the ELBO over the trend's span below this many nats (or 1e-7·|ELBO|) is never significant: a fit
#: that still gains less than a tenth of a nat over the last half of its iterations has nothing useful left to gain.
TREND_FLOOR = 0.1
#: Blocks of the trend test.
TREND_BLOCKS = 10
#: The trend test needs at least this many values per block (so 2 · 10 · 5 = 100 recorded values).
TREND_MIN_PER_BLOCK = 5


@dataclass(frozen=True)
class Trend:
    """The least-squares trend of recorded ELBO estimates over the last half of the record.

    Attributes
    ----------
    slope : float
        Change of the ELBO per iteration (nats).
    se : float
        Standard error of ``slope``, from the scatter of the block means about the fitted line.
    span : int
        Number of iterations the line covers.
    level : float
        Mean of the values in the span.
    """

    slope: float
    se: float
    span: int
    level: float

    @property
    def t(self) -> float:
        """slope / se."""
        return self.slope / self.se

    @property
    def significant(self) -> bool:
        """True when the ELBO still moves: |t| > :data:`TREND_T`, and the change over the span exceeds
        :data:`TREND_FLOOR` nats and 1e-7·|level| (practical floors: below them a change is not progress)."""
        return abs(self.t) > TREND_T and abs(self.slope) * self.span > max(TREND_FLOOR, 1e-7 * abs(self.level))


def all_finite(*arrays: np.ndarray) -> bool:
    """True if every entry of every array is finite (a NaN or ±inf anywhere makes the sum non-finite).

    One reduction per array, no boolean temporaries. Finite values so large that their sum overflows also count
    as non-finite; for optimisation that is divergence too.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return all(math.isfinite(float(np.sum(a))) for a in arrays)


def _compiled():
    try:
        from ._cy import load

        return load("optim")
    except ImportError:
        return None


def _check_shape(shape: object) -> tuple[int, ...]:
    """The optimizer's shape: an int or a tuple of non-negative ints whose arrays fit in memory."""
    dims = (shape,) if not isinstance(shape, tuple) else shape
    dims = tuple(check_int(n, "shape", minimum=0) for n in dims)
    check_allocation(16 * math.prod(dims), "shape", f"{dims} (two float64 moment arrays)")
    return dims


def _check_out(out: object, shape: tuple[int, ...], name: str = "out") -> None:
    """An array the kernel writes into: float64, writeable, C-contiguous, of the optimizer's shape."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float64:
        raise TypeError(f"{name} must be a float64 numpy.ndarray (it is written in place); got {_describe(out)}.")
    if out.shape != shape:
        raise ValueError(f"{name} must have the optimizer's shape {shape}; got {out.shape}.")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"{name} must be a writeable C-contiguous array (it is written in place); got a "
                         f"{'read-only' if not out.flags.writeable else 'non-contiguous'} one.")


def _check_rows(rows: object, n_rows: int) -> np.ndarray:
    """Distinct int64 row indices in [0, n_rows)."""
    raw = np.asarray(rows)
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.integer):
        raise TypeError(f"rows must be an array of integer indices; got {_describe(raw)}.")
    if raw.ndim != 1:
        raise ValueError(f"rows must be 1-dimensional; got shape {raw.shape}.")
    idx = np.ascontiguousarray(raw, dtype=np.int64)
    if idx.size:
        srt = np.sort(idx)
        if srt[0] < 0 or srt[-1] >= n_rows:
            bad = int(srt[0] if srt[0] < 0 else srt[-1])
            raise ValueError(f"rows must lie in [0, {n_rows}) (the optimizer's n_rows); got {bad}.")
        if idx.size > 1 and not (srt[1:] != srt[:-1]).all():
            dup = int(srt[1:][srt[1:] == srt[:-1]][0])
            raise ValueError(f"rows must be distinct; got {dup} more than once.")
    return idx


class Adam:
    """Adam state for one parameter array (any shape), updated by fused passes.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the parameter array.
    lr : float
        Learning rate (> 0).
    beta1, beta2 : float
        Moment decay rates in [0, 1).
    eps : float
        Denominator offset (> 0).
    maximize : bool
        Ascend (True) or descend (False) the objective whose gradient is passed.

    Attributes
    ----------
    t : int
        Number of dense steps taken.
    counts : ndarray of int64 or None
        Per-row step counts of :meth:`step_rows` (allocated on first use).
    finite : bool
        Whether every gradient entry of the last step was finite (checked in the same pass as the update; when it
        is False the step's output is meaningless and the caller should discard it).

    Examples
    --------
    Minimise (p − 3)²:

    >>> import numpy as np
    >>> from avicore.optim import Adam
    >>> p, opt = np.zeros(1), Adam(1, lr=0.1)
    >>> for _ in range(500):
    ...     p = opt.step(p, 2.0 * (p - 3.0))
    >>> round(float(p[0]), 3)
    3.0
    """

    def __init__(self, shape: int | tuple[int, ...], *, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, maximize: bool = False) -> None:
        self.lr = check_scalar(lr, "lr", positive=True)
        self.beta1 = check_scalar(beta1, "beta1", non_negative=True)
        self.beta2 = check_scalar(beta2, "beta2", non_negative=True)
        for name, b in (("beta1", self.beta1), ("beta2", self.beta2)):
            if b >= 1.0:
                raise ValueError(f"{name} must be < 1; got {b}.")
        self.eps = check_scalar(eps, "eps", positive=True)
        self.sign = 1.0 if maximize else -1.0
        self.shape = _check_shape(shape)
        self.m = np.zeros(self.shape)
        self.v = np.zeros(self.shape)
        self.t = 0
        self.counts: np.ndarray | None = None
        self.finite = True
        self._cy = _compiled()

    @staticmethod
    def _operand(x: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """``x`` as a C-contiguous float64 array of ``shape`` (no copy when it already is one)."""
        if type(x) is np.ndarray and x.dtype == np.float64 and x.flags.c_contiguous:
            arr = x
        else:
            arr = as_float_array(x, name, finite=False)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {shape}; got {arr.shape}.")
        return arr

    def step(self, params: np.ndarray, grad: np.ndarray, *, out: np.ndarray | None = None, scale: float = 1.0,
             offset: float = 0.0) -> np.ndarray:
        """One dense step; returns the new parameters (written to ``out``, which may be ``params``).

        Parameters
        ----------
        params, grad : array-like of the optimizer's shape
            Current parameters and the gradient (of ``scale``·objective + ``offset``·Σ params); real numbers
            (converted to C-contiguous float64 when they are not already).
        out : ndarray, optional
            Where to write the new parameters (default: a new array): a writeable C-contiguous float64 array of
            the optimizer's shape. ``params`` is left unchanged unless ``out`` is ``params``.
        scale, offset : float
            The gradient used is ``scale * grad + offset``.

        Raises
        ------
        TypeError
            If an array is not real-valued numeric, or ``out`` is not a float64 ndarray.
        ValueError
            If a shape differs from the optimizer's, or ``out`` is not writeable and C-contiguous.
        """
        params = self._operand(params, "params", self.shape)
        grad = self._operand(grad, "grad", self.shape)
        scale = check_scalar(scale, "scale")
        offset = check_scalar(offset, "offset")
        if out is None:
            out = np.empty_like(params)
        else:
            _check_out(out, self.shape)
        self.t += 1
        step = self.sign * self.lr / (1.0 - self.beta1 ** self.t)
        sqrt_bc2 = math.sqrt(1.0 - self.beta2 ** self.t)
        if self._cy is not None:
            bad = self._cy.cy_adam_dense(params.reshape(-1), grad.reshape(-1), self.m.reshape(-1),
                                         self.v.reshape(-1), out.reshape(-1), step, self.beta1, self.beta2, sqrt_bc2,
                                         self.eps, scale, offset, _config.threads_for(params.size, 16384))
            self.finite = bad == 0
            return out
        with np.errstate(over="ignore", invalid="ignore"):  # non-finite input is reported by ``finite``
            g = scale * grad + offset
            self.finite = all_finite(g)
            self.m *= self.beta1
            self.m += (1.0 - self.beta1) * g
            self.v *= self.beta2
            self.v += (1.0 - self.beta2) * g * g
            np.add(params, step * self.m / (np.sqrt(self.v) / sqrt_bc2 + self.eps), out=out)
        return out

    def step_rows(self, params: np.ndarray, grad: np.ndarray, rows: np.ndarray, *, scale: float = 1.0,
                  offset: float = 0.0) -> None:
        """Lazy step of the rows ``rows`` of a 2-D ``params``, in place.

        Parameters
        ----------
        params : ndarray of shape (n_rows, k)
            All rows (updated in place where listed).
        grad : ndarray of shape (len(rows), k)
            The gradient of each listed row.
        rows : array-like of int
            Distinct row indices in ``[0, n_rows)``.
        scale, offset : float
            The gradient used is ``scale * grad + offset``.

        Raises
        ------
        TypeError
            If ``params`` is not a float64 ndarray, ``grad`` is not real-valued or ``rows`` is not integer.
        ValueError
            If the optimizer is not 2-D, a shape does not match, ``params`` is not writeable and C-contiguous, or
            ``rows`` holds an index out of range or a repeated one.
        """
        if len(self.shape) != 2:
            raise ValueError(f"step_rows needs a 2-D optimizer (n_rows, k); this one has shape {self.shape}.")
        _check_out(params, self.shape, "params")
        rows = _check_rows(rows, self.shape[0])
        grad = self._operand(grad, "grad", (rows.shape[0], self.shape[1]))
        scale = check_scalar(scale, "scale")
        offset = check_scalar(offset, "offset")
        if self.counts is None:
            self.counts = np.zeros(self.shape[0], dtype=np.int64)
        self.counts[rows] += 1
        if self._cy is not None:
            bad = self._cy.cy_adam_rows(params, grad, self.m, self.v, rows, self.counts, self.sign * self.lr,
                                        self.beta1, self.beta2, self.eps, scale, offset,
                                        _config.threads_for(grad.size, 16384))
            self.finite = bad == 0
            return
        t = self.counts[rows].astype(np.float64)[:, None]
        step = self.sign * self.lr / (1.0 - self.beta1 ** t)
        sqrt_bc2 = np.sqrt(1.0 - self.beta2 ** t)
        with np.errstate(over="ignore", invalid="ignore"):
            g = scale * grad + offset
            self.finite = all_finite(g)
            m = self.beta1 * self.m[rows] + (1.0 - self.beta1) * g
            v = self.beta2 * self.v[rows] + (1.0 - self.beta2) * g * g
            self.m[rows] = m
            self.v[rows] = v
            params[rows] += step * m / (np.sqrt(v) / sqrt_bc2 + self.eps)

    def advance(self) -> tuple[float, float]:
        """Count one dense step taken by a fused kernel elsewhere (e.g. the F-VI pass that updates the locals in
        the same sweep, :class:`avicore.kernels.elbo.FusedLocalAdam`); return that step's (signed step size
        ±lr / (1 − β₁ᵗ), √(1 − β₂ᵗ)), the same numbers :meth:`step` uses."""
        self.t += 1
        return self.sign * self.lr / (1.0 - self.beta1 ** self.t), math.sqrt(1.0 - self.beta2 ** self.t)


def exponential_decay(start: float, stop: float, n_steps: int) -> Callable[[int], float]:
    """A learning-rate schedule falling geometrically from ``start`` (step 0) to ``stop`` (step n_steps − 1).

    Pass it as ``lr=`` to :meth:`avicore.FVI.fit` / :meth:`avicore.AVI.fit`. A constant learning rate leaves
    Monte-Carlo jitter of order lr in the parameters; decaying it lets the iterates settle at the optimum.

    Parameters
    ----------
    start, stop : float
        First and last learning rates (> 0).
    n_steps : int
        Number of steps of the decay (>= 1): step 0 runs at ``start``, step n_steps − 1 and every later step at
        ``stop`` (so with ``n_steps=1`` every step runs at ``stop``).

    Returns
    -------
    callable
        ``schedule(step) -> float`` for integer ``step >= 0``.

    Raises
    ------
    ValueError
        If a rate is not > 0, ``stop > start`` (a rising schedule is not a decay), ``n_steps < 1``, or the schedule
        is called with a negative step.

    Examples
    --------
    >>> from avicore.optim import exponential_decay
    >>> lr = exponential_decay(0.1, 0.001, 3)
    >>> [round(lr(t), 6) for t in range(4)]
    [0.1, 0.01, 0.001, 0.001]
    """
    start = check_scalar(start, "start", positive=True)
    stop = check_scalar(stop, "stop", positive=True)
    if stop > start:
        raise ValueError(f"stop must be <= start={start} (a decay falls); got {stop}.")
    n_steps = check_int(n_steps, "n_steps", minimum=1)
    rate = math.log(stop / start) / max(1, n_steps - 1)
    last = n_steps - 1

    def schedule(step: int) -> float:
        step = check_int(step, "step", minimum=0)
        return stop if step >= last else start * math.exp(rate * step)

    return schedule


class ConvergenceMonitor:
    """Records per-iteration ELBO estimates and tests relative convergence of their running mean.

    Parameters
    ----------
    n_iter : int
        Maximum number of values recorded.
    tol : float or None
        Converged when |mean(last window) − mean(previous window)| ≤ tol · |mean(last window)| and the
        :meth:`trend` of the record is not significant. ``None``: :meth:`record` never reports convergence (the
        engines test :meth:`trend` at the end of the fit instead).
    window : int
        Iterations per running-mean window (1 <= window <= n_iter). The test needs 2·window recorded values.

    Examples
    --------
    >>> from avicore.optim import ConvergenceMonitor
    >>> mon = ConvergenceMonitor(1000, tol=1e-3, window=10)
    >>> [mon.record(-100.0) for _ in range(20)][-1]
    True
    """

    def __init__(self, n_iter: int, tol: float | None = None, window: int = 100) -> None:
        self.n_iter = check_int(n_iter, "n_iter", minimum=1)
        self.tol = None if tol is None else check_scalar(tol, "tol", positive=True)
        self.window = check_int(window, "window", minimum=1, maximum=self.n_iter)
        self._values = np.empty(self.n_iter)
        self._csum = np.zeros(self.n_iter + 1)
        self.count = 0

    def record(self, value: float) -> bool:
        """Append one value; True when the convergence test passes.

        Raises
        ------
        ValueError
            If ``n_iter`` values were recorded already (the record is full).
        """
        i = self.count
        if i == self.n_iter:
            raise ValueError(f"record: the monitor holds n_iter={self.n_iter} values already; create it with a "
                             "larger n_iter.")
        self._values[i] = value
        self._csum[i + 1] = self._csum[i] + value
        self.count = i + 1
        if self.tol is None or self.count < 2 * self.window:
            return False
        last = self.running_mean()
        prev = (self._csum[self.count - self.window] - self._csum[self.count - 2 * self.window]) / self.window
        if not abs(last - prev) <= self.tol * abs(last):
            return False
        trend = self.trend()
        return trend is None or not trend.significant

    def trend(self) -> Trend | None:
        """The ELBO's trend over the last half of the record; None with fewer than 100 recorded values.

        The last half is cut into :data:`TREND_BLOCKS` equal blocks (a remainder of the oldest values is left
        out); the slope is the least-squares line through the block means against the blocks' centres and its
        standard error comes from the residual scatter of the block means, so noise that is correlated over
        less than a block is counted. Cost O(TREND_BLOCKS), from the running sums.
        """
        per = (self.count // 2) // TREND_BLOCKS
        if per < TREND_MIN_PER_BLOCK:
            return None
        span = per * TREND_BLOCKS
        edges = self._csum[self.count - span:self.count + 1:per]
        means = np.diff(edges) / per
        dc = (np.arange(TREND_BLOCKS) - 0.5 * (TREND_BLOCKS - 1)) * per
        sxx = float(np.dot(dc, dc))
        level = float(means.mean())
        slope = float(np.dot(dc, means - level)) / sxx
        resid = means - level - slope * dc
        se = math.sqrt(float(np.dot(resid, resid)) / (TREND_BLOCKS - 2) / sxx)
        se = max(se, 1e-15 * max(1.0, abs(level)) / span)  # an exact plateau: its scatter is rounding
        return Trend(slope=slope, se=se, span=span, level=level)

    def running_mean(self) -> float:
        """Mean of the last ``window`` values (of all values when fewer were recorded); NaN before any."""
        if self.count == 0:
            return math.nan
        w = min(self.window, self.count)
        return float((self._csum[self.count] - self._csum[self.count - w]) / w)

    @property
    def trace(self) -> np.ndarray:
        """The recorded values, a copy of length ``count``."""
        return self._values[:self.count].copy()
