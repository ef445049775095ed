"""Exact inference in discrete-state hidden Markov models over ragged batches of sequences.

Sequences follow hmmlearn's convention: ``log_lik`` (n_samples, n_states) holds every sequence's per-step emission
log-likelihoods ``log p(x_t | z_t = k)`` one after another along axis 0, and ``lengths`` says where each sequence
ends (default: one sequence). Build ``log_lik`` with :mod:`avicore.emissions`.

- :func:`forward_backward`: log-evidence of each sequence, posterior marginals, expected transition counts.
- :func:`viterbi`: the most probable state path of each sequence.
- :func:`sample_posterior`: exact joint samples of the state paths (forward filtering, backward sampling).

Algorithms, numerics and the exact tie and sampling rules are documented in :mod:`avicore.kernels.hmm`.

GPU arrays: when ``log_lik`` is a device array (``__cuda_array_interface__`` or CUDA DLPack: CuPy, PyTorch, JAX, Numba),
the work runs on the GPU with no host round trip and the array results are device arrays — CuPy arrays when CuPy is
importable, else Numba device arrays (:mod:`avicore._device`). ``log_lik`` is checked where it lives (float64,
C-contiguous; its values on the device); ``backend`` must then be ``"auto"`` or ``"cuda"``. The model arrays and
``lengths`` may live on either side (they are small and are checked on the host).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _device, _validate
from .backends import resolve
from .kernels import hmm as _kernels

__all__ = ["ForwardBackwardResult", "ImpossibleSequenceWarning", "ViterbiResult", "forward_backward",
           "sample_posterior", "viterbi"]


class ImpossibleSequenceWarning(RuntimeWarning):
    """Some sequences have no state path of positive probability under the model.

    Attributes
    ----------
    sequences : tuple of int
        Indices (into ``lengths``) of the impossible sequences.
    """

    def __init__(self, message: str, sequences: tuple[int, ...]) -> None:
        super().__init__(message)
        self.sequences = sequences


@dataclass(frozen=True)
class ForwardBackwardResult:
    """Exact posterior summaries of a batch of sequences.

    Attributes
    ----------
    log_likelihood : ndarray of shape (n_sequences,)
        ``log p(x)`` of each sequence (``-inf`` for an impossible sequence).
    posteriors : ndarray of shape (n_samples, n_states)
        ``p(z_t = k | x)``, rows of each sequence concatenated as in ``log_lik`` (zero rows for an impossible
        sequence).
    transition_counts : ndarray of shape (n_states, n_states)
        ``Σ`` over sequences and steps of ``p(z_t = i, z_{t+1} = j | x)``.
    initial_counts : ndarray of shape (n_states,)
        ``Σ`` over sequences of ``p(z_first = k | x)``.
    """

    log_likelihood: np.ndarray
    posteriors: np.ndarray
    transition_counts: np.ndarray
    initial_counts: np.ndarray

    @property
    def total_log_likelihood(self) -> float:
        """``Σ`` of ``log_likelihood`` over sequences: the log-evidence of the whole batch."""
        values = self.log_likelihood
        if _device.is_device_array(values):
            values = _device.to_host(values, "log_likelihood")
        return float(np.sum(values))


@dataclass(frozen=True)
class ViterbiResult:
    """Most probable state paths; unpacks as ``log_prob, states = viterbi(...)``.

    Attributes
    ----------
    log_prob : ndarray of shape (n_sequences,)
        ``max_z log p(x, z)`` of each sequence (``-inf`` for an impossible sequence).
    states : ndarray of shape (n_samples,), int64
        The maximising path of each sequence, concatenated.
    """

    log_prob: np.ndarray
    states: np.ndarray

    def __iter__(self):
        yield self.log_prob
        yield self.states


def _check_inputs(log_lik: Any, log_transmat: Any, log_startprob: Any,
                  lengths: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert; returns C-contiguous float64 arrays and ``offsets``."""
    ll = _validate.as_float_array(log_lik, "log_lik", ndim=2, allow_neg_inf=True)
    if ll.shape[1] < 1:
        raise ValueError(f"log_lik must have at least one state (column); got shape {ll.shape}.")
    n_states = ll.shape[1]
    lt = _validate.check_log_stochastic_matrix(log_transmat, "log_transmat", size=n_states)
    ls = _validate.check_log_prob_vector(log_startprob, "log_startprob", size=n_states)
    offsets = _validate.check_lengths(lengths, ll.shape[0])
    return ll, lt, ls, offsets


def _check_device_inputs(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any,
                         backend: str) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Device-array path: ``log_lik`` checked where it lives (shape/dtype on the host, values on the device), the
    small model arrays and ``lengths`` copied to the host and checked there."""
    _device.require_cuda(backend)
    ll = _validate.check_device_array(log_lik, "log_lik", ndims=(2,), allow_neg_inf=True,
                                      what="not contain NaN or +inf")
    if ll.shape[1] < 1:
        raise ValueError(f"log_lik must have at least one state (column); got shape {tuple(ll.shape)}.")
    n_states = ll.shape[1]
    lt = _validate.check_log_stochastic_matrix(_device.host_param(log_transmat, "log_transmat"), "log_transmat",
                                               size=n_states)
    ls = _validate.check_log_prob_vector(_device.host_param(log_startprob, "log_startprob"), "log_startprob",
                                         size=n_states)
    offsets = _validate.check_lengths(_device.host_param(lengths, "lengths"), ll.shape[0])
    return ll, lt, ls, offsets


def _warn_impossible(log_values: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(log_values == -np.inf)
    if bad.size == 0:
        return
    shown = ", ".join(str(int(i)) for i in bad[:10]) + (", ..." if bad.size > 10 else "")
    noun = "sequence" if bad.size == 1 else f"{bad.size} sequences"
    warnings.warn(ImpossibleSequenceWarning(
        f"{noun} ({shown}) {'has' if bad.size == 1 else 'have'} no state path of positive probability under the "
        f"model: log-likelihood -inf; {what}.", tuple(int(i) for i in bad)), stacklevel=3)


def forward_backward(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *,
                     backend: str = "auto") -> ForwardBackwardResult:
    """Forward-backward: log-evidence, posterior marginals and expected transition counts of each sequence.

    Parameters
    ----------
    log_lik : array-like of shape (n_samples, n_states)
        ``log p(x_t | z_t = k)``; ``-inf`` marks an impossible emission. Sequences are concatenated on axis 0.
    log_transmat : array-like of shape (n_states, n_states)
        ``log p(z_{t+1} = j | z_t = i)``; ``-inf`` for forbidden transitions. Rows of its ``exp`` must sum to 1
        within 1e-8.
    log_startprob : array-like of shape (n_states,)
        ``log p(z_first = k)``; its ``exp`` must sum to 1 within 1e-8.
    lengths : array-like of int, optional
        Length of each sequence (positive, summing to n_samples). Default: one sequence.
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Implementation; ``"auto"`` picks the GPU for large problems when one is present, else Cython.

    Returns
    -------
    ForwardBackwardResult
        ``log_likelihood`` (n_sequences,), ``posteriors`` (n_samples, n_states), ``transition_counts``
        (n_states, n_states), ``initial_counts`` (n_states,).

    Raises
    ------
    ValueError
        On wrong shapes, NaN or +inf values, probabilities that do not sum to 1, or bad ``lengths``.
    TypeError
        On non-numeric input.

    Warns
    -----
    ImpossibleSequenceWarning
        If a sequence has no path of positive probability; its ``log_likelihood`` is ``-inf`` and its posterior
        rows are 0.

    Notes
    -----
    Probability-space recursions with per-step normalisation; a sequence whose scaled values would underflow
    is recomputed in log space automatically, so valid input never yields NaN. Cost: O(n_samples · n_states²)
    time; the compiled backends use O(n_states²) memory per thread beyond the outputs.

    The compiled CPU backends run long batches as several kernel calls over consecutive whole sequences
    (bit-identical to one call), so ``KeyboardInterrupt`` stops them within a fraction of a second; a single
    sequence is not interruptible mid-way.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import forward_backward
    >>> log_lik = np.log([[0.9, 0.1], [0.2, 0.8], [0.9, 0.1]])
    >>> res = forward_backward(log_lik, np.log([[0.7, 0.3], [0.4, 0.6]]), np.log([0.5, 0.5]))
    >>> res.posteriors.sum(axis=1)
    array([1., 1., 1.])
    >>> round(float(res.transition_counts.sum()), 12)
    2.0
    """
    if _validate.is_dask_array(log_lik):  # chunks of whole sequences on a Dask cluster (avicore.distributed)
        from .distributed._hmm import forward_backward_dask

        return forward_backward_dask(log_lik, log_transmat, log_startprob, lengths, backend)
    if _device.is_device_array(log_lik):
        from .kernels._hmm_cuda import forward_backward_device

        (log_likelihood, posteriors, counts, initial), impossible = forward_backward_device(
            *_check_device_inputs(log_lik, log_transmat, log_startprob, lengths, backend))
        _warn_impossible(impossible, "its posteriors are 0")
        return ForwardBackwardResult(log_likelihood, posteriors, counts, initial)
    ll, lt, ls, offsets = _check_inputs(log_lik, log_transmat, log_startprob, lengths)
    name = resolve(backend, size=ll.size, supported=_kernels.SUPPORTED_BACKENDS)
    log_likelihood, posteriors, counts, initial = _kernels.FORWARD_BACKWARD[name](ll, lt, ls, offsets)
    _warn_impossible(log_likelihood, "its posteriors are 0")
    return ForwardBackwardResult(log_likelihood, posteriors, counts, initial)


def viterbi(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *,
            backend: str = "auto") -> ViterbiResult:
    """Most probable state path of each sequence (max-product in log space).

    Parameters
    ----------
    log_lik : array-like of shape (n_samples, n_states)
        Per-step emission log-likelihoods, sequences concatenated on axis 0.
    log_transmat : array-like of shape (n_states, n_states)
        Log transition matrix (``-inf`` allowed); rows of its ``exp`` sum to 1 within 1e-8.
    log_startprob : array-like of shape (n_states,)
        Log initial distribution; its ``exp`` sums to 1 within 1e-8.
    lengths : array-like of int, optional
        Length of each sequence. Default: one sequence.
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Implementation.

    Returns
    -------
    ViterbiResult
        ``log_prob`` (n_sequences,) = ``max_z log p(x, z)`` and ``states`` (n_samples,) int64; unpacks as a pair.

    Raises
    ------
    ValueError
        On invalid input (see :func:`forward_backward`).

    Warns
    -----
    ImpossibleSequenceWarning
        If a sequence has no path of positive probability (``log_prob = -inf``).

    Notes
    -----
    Ties go to the lowest state index, at every back-pointer and at the last step, identically on every
    backend. O(n_samples · n_states²) time, O(n_samples · n_states) memory for the back-pointers.

    Like :func:`forward_backward`, the compiled CPU backends are interruptible between sequences (a single
    sequence is not interruptible mid-way).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import viterbi
    >>> log_prob, states = viterbi(np.log([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]]),
    ...                            np.log([[0.7, 0.3], [0.4, 0.6]]), np.log([0.5, 0.5]))
    >>> states
    array([0, 1, 0])
    """
    if _validate.is_dask_array(log_lik):
        from .distributed._hmm import viterbi_dask

        return viterbi_dask(log_lik, log_transmat, log_startprob, lengths, backend)
    if _device.is_device_array(log_lik):
        from .kernels._hmm_cuda import viterbi_device

        ll, lt, ls, offsets = _check_device_inputs(log_lik, log_transmat, log_startprob, lengths, backend)
        log_prob, states = viterbi_device(ll, lt, ls, offsets)
        _warn_impossible(_device.to_host(log_prob, "log_prob"), "its Viterbi path is arbitrary")
        return ViterbiResult(log_prob, states)
    ll, lt, ls, offsets = _check_inputs(log_lik, log_transmat, log_startprob, lengths)
    name = resolve(backend, size=ll.size, supported=_kernels.SUPPORTED_BACKENDS)
    log_prob, states = _kernels.VITERBI[name](ll, lt, ls, offsets)
    _warn_impossible(log_prob, "its Viterbi path is arbitrary")
    return ViterbiResult(log_prob, states)


def sample_posterior(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any = None, *,
                     n_samples: int = 1, seed: int | np.random.Generator | None = None,
                     backend: str = "auto") -> np.ndarray:
    """Exact samples of the state paths from ``p(z | x)`` (forward filtering, backward sampling).

    Parameters
    ----------
    log_lik : array-like of shape (n_samples_total, n_states)
        Per-step emission log-likelihoods, sequences concatenated on axis 0.
    log_transmat : array-like of shape (n_states, n_states)
        Log transition matrix (``-inf`` allowed); rows of its ``exp`` sum to 1 within 1e-8.
    log_startprob : array-like of shape (n_states,)
        Log initial distribution; its ``exp`` sums to 1 within 1e-8.
    lengths : array-like of int, optional
        Length of each sequence. Default: one sequence.
    n_samples : int
        Number of joint samples of every sequence's path (>= 1).
    seed : int, numpy.random.Generator or None
        Seed of the counter-based generator: the same seed gives the same samples on every backend and for any
        thread count. ``None`` draws a fresh seed.
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Implementation.

    Returns
    -------
    ndarray of shape (n_samples, n_samples_total), int64
        Row ``s`` is one joint draw of all sequences' paths, concatenated like ``log_lik``; ``-1`` on the rows of
        an impossible sequence.

    Raises
    ------
    ValueError
        On invalid input, or ``n_samples < 1``.
    TypeError
        If ``n_samples`` is not an integer or ``seed`` is not an int, Generator or None.

    Warns
    -----
    ImpossibleSequenceWarning
        If a sequence has no path of positive probability (its samples are -1).

    Notes
    -----
    One forward filtering pass per sequence, then O(n_states) work per sample and step.

    Like :func:`forward_backward`, the compiled CPU backends are interruptible between sequences (slices of whole
    sequences, bit-identical to one call; a single sequence is not interruptible mid-way).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import sample_posterior
    >>> z = sample_posterior(np.log([[0.9, 0.1], [0.2, 0.8]]), np.log([[0.7, 0.3], [0.4, 0.6]]),
    ...                      np.log([0.5, 0.5]), n_samples=4, seed=0)
    >>> z.shape
    (4, 2)
    """
    if _device.is_device_array(log_lik):
        from .kernels._hmm_cuda import sample_posterior_device

        ll, lt, ls, offsets = _check_device_inputs(log_lik, log_transmat, log_startprob, lengths, backend)
        n = _validate.check_count(n_samples, "n_samples", 8 * ll.shape[0] * ll.shape[1], "paths")
        samples, impossible = sample_posterior_device(ll, lt, ls, offsets, n, _validate.check_seed_int(seed))
        _warn_impossible(impossible, "its sampled states are -1")
        return samples
    ll, lt, ls, offsets = _check_inputs(log_lik, log_transmat, log_startprob, lengths)
    n = _validate.check_count(n_samples, "n_samples", 8 * ll.size, f"paths of {ll.shape[0]} steps")
    seed_int = _validate.check_seed_int(seed)
    name = resolve(backend, size=ll.size * n, supported=_kernels.SUPPORTED_BACKENDS)
    samples = _kernels.SAMPLE_POSTERIOR[name](ll, lt, ls, offsets, n, seed_int)
    if np.any(samples[0] < 0):
        firsts = samples[0, offsets[:-1]]
        _warn_impossible(np.where(firsts < 0, -np.inf, 0.0), "its sampled states are -1")
    return samples


# --- hmmlearn-compatible estimators (avicore.hmm_estimators), loaded on first use: avicore.hmm.GaussianHMM etc. ---
_ESTIMATORS = frozenset({"GaussianHMM", "CategoricalHMM", "PoissonHMM", "GMMHMM", "VariationalCategoricalHMM",
                         "VariationalGaussianHMM", "ConvergenceMonitor"})


def __getattr__(name: str):
    if name in _ESTIMATORS:
        from . import hmm_estimators

        return getattr(hmm_estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
