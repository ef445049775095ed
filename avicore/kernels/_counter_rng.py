"""Counter-based random numbers: a stateless 64-bit mixer (splitmix64's finaliser) turned into uniforms.

A counter-based generator maps a key (seed, iteration, item, ...) straight to random bits, so a draw depends only on
what it is for — not on the thread that computes it, the batch it sits in or the backend. Every avicore kernel that
needs randomness builds its keys from this mixer, written here once for NumPy and Numba (Cython and CUDA kernels
carry a copy of the same three lines, tested bit for bit against these).

Formula (all arithmetic modulo 2⁶⁴ on unsigned 64-bit integers)::

    mix64(z) = z₃,  z₁ = (z ⊕ (z >> 30)) · 0xBF58476D1CE4E5B9
                    z₂ = (z₁ ⊕ (z₁ >> 27)) · 0x94D049BB133111EB
                    z₃ = z₂ ⊕ (z₂ >> 31)

(the output function of Steele, Lea & Flood's SplitMix64; a bijection with full avalanche). Consecutive keys are
spread with the golden-ratio increment :data:`GAMMA`, as SplitMix64 does: the i-th output of a stream keyed ``k`` is
``mix64(k + (i + 1)·GAMMA)``. A hash becomes a uniform double from its top 53 bits::

    uniform(h)      = (h >> 11) · 2⁻⁵³            ∈ [0, 1)
    open_uniform(h) = ((h >> 11) + ½) · 2⁻⁵³      ∈ (0, 1)    (safe under log)

Both conversions are exact, so the uniforms are bit-identical on every backend.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Golden-ratio increment between consecutive counters (SplitMix64's gamma).
GAMMA = 0x9E3779B97F4A7C15
MIX_M1 = 0xBF58476D1CE4E5B9
MIX_M2 = 0x94D049BB133111EB

_M1 = np.uint64(MIX_M1)
_M2 = np.uint64(MIX_M2)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0


def mix64(z: np.ndarray) -> np.ndarray:
    """The 64-bit mixer applied elementwise to a uint64 array (wrap-around arithmetic).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.kernels._counter_rng import mix64
    >>> hex(int(mix64(np.array([1], dtype=np.uint64))[0]))
    '0x5692161d100b05e5'
    """
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def uniform(h: np.ndarray) -> np.ndarray:
    """(h >> 11)·2⁻⁵³ ∈ [0, 1) for a uint64 array of hashes."""
    return (np.asarray(h, dtype=np.uint64) >> _S11).astype(np.int64).astype(np.float64) * _TWO_M53


def open_uniform(h: np.ndarray) -> np.ndarray:
    """((h >> 11) + ½)·2⁻⁵³ ∈ (0, 1) for a uint64 array of hashes."""
    return ((np.asarray(h, dtype=np.uint64) >> _S11).astype(np.int64).astype(np.float64) + 0.5) * _TWO_M53


@njit(cache=True, inline="always")
def mix64_nb(z: np.uint64) -> np.uint64:
    """Numba twin of :func:`mix64` for one uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def uniform_nb(h: np.uint64) -> float:
    """Numba twin of :func:`uniform`."""
    return np.float64(np.int64(h >> _S11)) * _TWO_M53


@njit(cache=True, inline="always")
def open_uniform_nb(h: np.uint64) -> float:
    """Numba twin of :func:`open_uniform`."""
    return (np.float64(np.int64(h >> _S11)) + 0.5) * _TWO_M53


# ---------------------------------------------------------------------------------------------------------------
# HMM posterior sampling (avicore.hmm.sample_posterior): one uniform per (seed, sample, time step)
# ---------------------------------------------------------------------------------------------------------------
#
# Every backend of ``sample_posterior`` draws the state of sample ``s`` at row ``t`` of ``log_lik`` (the global row,
# 0 <= t < T, whatever sequence it belongs to) from the uniform
#
#     key = mix64(seed)                         seed: the 63-bit non-negative int from _validate.check_seed_int
#     row = mix64(key + (s + 1)·GAMMA)
#     h   = mix64(row + (t + 1)·GAMMA)
#     u   = uniform(h) = (h >> 11)·2⁻⁵³ ∈ [0, 1)
#
# and turns it into a state by inverse CDF over nonnegative weights w_0..w_{K-1} (summed in index order):
# the smallest k with u·Σw < w_0 + ... + w_k; if rounding leaves none, the largest k with w_k > 0.


def hmm_sample_uniforms(seed: int, n_samples: int, n_rows: int) -> np.ndarray:
    """The (n_samples, n_rows) uniforms of posterior sampling, ``u[s, t]`` as in the formula above.

    Examples
    --------
    >>> from avicore.kernels._counter_rng import hmm_sample_uniform_nb, hmm_sample_uniforms, hmm_seed_key
    >>> u = hmm_sample_uniforms(7, 2, 3)
    >>> bool(u[1, 2] == hmm_sample_uniform_nb(np.uint64(hmm_seed_key(7)), 1, 2))
    True
    """
    key = mix64(np.array([seed], dtype=np.uint64))[0]
    s1 = np.arange(1, n_samples + 1, dtype=np.uint64)
    t1 = np.arange(1, n_rows + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        rows = mix64(key + s1 * np.uint64(GAMMA))
        return uniform(mix64(rows[:, None] + t1[None, :] * np.uint64(GAMMA)))


def hmm_seed_key(seed: int) -> int:
    """``mix64(seed)`` as a Python int (pass it to :func:`hmm_sample_uniform_nb` as a uint64)."""
    return int(mix64(np.array([seed], dtype=np.uint64))[0])


@njit(cache=True, inline="always")
def hmm_sample_row_nb(key: np.uint64, sample: np.int64) -> np.uint64:
    """``mix64(key + (sample + 1)·GAMMA)``: the per-sample key, computed once per sample."""
    return mix64_nb(np.uint64(key) + np.uint64(sample + 1) * np.uint64(GAMMA))


@njit(cache=True, inline="always")
def hmm_sample_uniform_row_nb(row: np.uint64, t: np.int64) -> float:
    """``uniform(mix64(row + (t + 1)·GAMMA))`` for the per-sample key ``row``."""
    return uniform_nb(mix64_nb(np.uint64(row) + np.uint64(t + 1) * np.uint64(GAMMA)))


@njit(cache=True)
def hmm_sample_uniform_nb(key: np.uint64, sample: np.int64, t: np.int64) -> float:
    """u[sample, t] from ``key = hmm_seed_key(seed)``."""
    return hmm_sample_uniform_row_nb(hmm_sample_row_nb(key, sample), t)
