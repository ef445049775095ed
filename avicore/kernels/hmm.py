"""HMM kernels: forward-backward, Viterbi and exact posterior sampling over ragged batches of sequences.

This module holds the NumPy reference (log space, written for clarity), the Numba CPU kernels, and the dispatch
tables that also reach the Cython kernels (``src_cython/hmm.pyx`` → ``avicore._cy.hmm``) and the CUDA ones
(``_hmm_cuda.py``, imported only when used). Kernels never validate: :mod:`avicore.hmm` checks the user's input.

Kernel contract (every backend)
-------------------------------
Inputs are C-contiguous float64 (float32 is not supported: the public functions convert), already validated:
``log_lik`` (T, K), ``log_transmat`` (K, K) (``-inf`` = forbidden transition), ``log_startprob`` (K,), and
``offsets`` (int64, ``n_sequences + 1``): sequence ``s`` is rows ``offsets[s]:offsets[s + 1]``, each non-empty.

- ``_forward_backward_<backend>(log_lik, log_transmat, log_startprob, offsets)`` →
  ``(log_likelihood (n_sequences,), posteriors (T, K), transition_counts (K, K), initial_counts (K,))``, the
  counts summed over sequences (``initial_counts`` = Σ over sequences of the posterior at each first step).
- ``_viterbi_<backend>(log_lik, log_transmat, log_startprob, offsets)`` → ``(log_prob (n_sequences,), states (T,)
  int64)``.
- ``_sample_posterior_<backend>(log_lik, log_transmat, log_startprob, offsets, n_samples, seed)`` →
  ``(n_samples, T)`` int64.

A sequence with no possible path gets ``log_likelihood = -inf``, all-zero posterior rows, no transition counts,
``-1`` in every sampled state, and (Viterbi) ``log_prob = -inf`` with the path the rules below produce; nothing
is NaN.

Forward-backward (compiled backends)
------------------------------------
Probability space with per-step normalisation. With ``A = exp(log_transmat)``, ``pred_t = alpha_{t-1} A``
(``pred_0 = exp(log_startprob)``) and a shift ``m_t`` (Cython: the max of ``log_lik[t]`` over all states, which
keeps the K exps off the alpha dependency chain, redone with the max over states with ``pred_t[k] > 0`` when that
underflows a reachable state; Numba: the latter directly)::

    u_t = exp(log_lik[t] - m_t) ⊙ pred_t,   c_t = Σ u_t,   alpha_t = u_t / c_t,   log p(x) = Σ_t (log c_t + m_t)
    w_t = alpha_t ⊙ beta_t / pred_t  (0 where alpha_t = 0),   beta_{T-1} = 1,   beta_t = A w_{t+1}
    gamma_t = alpha_t ⊙ beta_t,   Σ_t xi_t = A ⊙ Σ_t alpha_t w_{t+1}ᵀ

A sequence is redone in log space (the reference recursions below) as soon as a state whose exact ``u`` is
positive gets ``u < 1e-280`` (an underflow of the shifted emission, of ``pred`` or of their product), or a step
has no reachable state with finite ``log_lik``. Above that threshold every stored value is a normal double, so the
scaled pass is accurate to rounding. If ``log_transmat`` or ``log_startprob`` hold finite entries below -700 (they
underflow in probability space) every sequence runs in log space.

NumPy reference and log-space fallback: the same recursions in log space, each row of ``log_lik`` shifted by its
maximum ``M_t`` (``l_t = log_lik[t] - M_t``, exact for nearby values) and normalised per step, so that every
quantity stays O(1) however long the sequence (unnormalised log alphas reach -10⁸ on long sequences and lose
~1e-5 to rounding; normalising without the shift still drifts ~1e-10 over 10⁵ steps)::

    a_0 = log_startprob + l_0,   a_t = l_t + logsumexp_i(la_{t-1}[i] + log A[i, :])
    log c_t = logsumexp(a_t),   la_t = a_t - log c_t,   log p(x) = Σ_t (log c_t + M_t)   (-inf once a c_t = 0)
    lb_{T-1} = 0,   v_{t+1} = l_{t+1} + lb_{t+1} - log c_{t+1},   lb_t = logsumexp_j(log A[:, j] + v_{t+1}[j])
    gamma_t = exp(la_t + lb_t),   xi_t[i, j] = exp(la_t[i] + log A[i, j] + v_{t+1}[j])

Viterbi
-------
``delta_0 = log_startprob + log_lik[0]``; ``delta_t[j] = max_i (delta_{t-1}[i] + log_transmat[i, j]) +
log_lik[t, j]``; the back-pointer is the *lowest* i attaining the maximum (all ``-inf`` → 0), the last state the
lowest j maximising ``delta_{T-1}``. Every backend does the same float64 additions, so ties resolve identically.

Posterior sampling (forward filtering, backward sampling)
---------------------------------------------------------
``z_{T-1}`` is drawn from weights ``alpha_{T-1}``, then ``z_t`` from weights ``alpha_t[k] · A[k, z_{t+1}]``
(log-space sequences: ``exp(la_t[k] + log A[k, z_{t+1}] - max)``). Sample ``s``'s draw at row ``t`` of the
batch uses the counter-based uniform ``u[s, t]`` of :mod:`avicore.kernels._counter_rng` and the inverse CDF: the
smallest k with ``u · Σw < w_0 + … + w_k`` (left-to-right sums), else the last k with ``w_k > 0``. Draws are
identical on every backend (barring a uniform within rounding, ~1e-15, of a CDF step).

Threads (compiled backends): sequences are grouped into fixed chunks of about equal rows (``_chunks``, a function of
``offsets`` and K only), each chunk adds into its own count accumulator, and the accumulators are summed in chunk
order, so the results are the same bits for every thread count; the Cython kernel hands the chunks out longest
first (``chunk_order``) on a dynamic schedule. EM's E-step has a one-pass variant that never writes the posteriors
(:mod:`avicore.kernels.hmm_em`).

Cost per step (compiled forward-backward): 3K² multiply-adds, plus K² to recompute ``pred`` in the backward pass
(cheaper than storing it or redoing K ``exp``), and K ``exp`` (vectorised in the Cython kernel); memory beyond the
outputs is O(K²) per thread. The Cython kernel's SIMD primitives are in ``src_cython/_hmm_simd.h``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import _config
from ._counter_rng import hmm_sample_row_nb, hmm_sample_uniform_row_nb, hmm_sample_uniforms, hmm_seed_key
from ._hmm_model import (  # noqa: F401  (status codes and thresholds are part of this module's interface)
    LOG_EXACT_ZERO,
    LOG_FLOOR,
    STATUS_IMPOSSIBLE,
    STATUS_LOG_SPACE,
    STATUS_SCALED,
    TINY,
    _prepare_model,
)
from ._slicing import sequence_slices

#: Most chunks (each with its own K x K count accumulator) a forward-backward call splits the sequences into:
#: as many as fit in CHUNK_COUNT_BYTES of accumulators, within [4, 256] (small chunks balance the threads' load).
MAX_CHUNKS = 256
CHUNK_COUNT_BYTES = 4_000_000

#: Most ``rows x (K² + 64)`` one compiled forward-backward / Viterbi call works on (0.02-0.09 s on one core for
#: K = 2..64, measured): longer batches run as several calls over consecutive whole sequences (``_slices``),
#: returning to Python in between, so that a pending ``KeyboardInterrupt`` is raised within a fraction of a second.
#: One sequence is never split, so a single very long sequence is not interruptible mid-way. Posterior sampling
#: slices the same way, counting ``n_samples · (K + 16)`` more a row (``_sample_slices``).
SLICE_COST = 1 << 26

SUPPORTED_BACKENDS = ("numpy", "cython", "numba", "cuda")


# ---------------------------------------------------------------------------------------------------------------
# NumPy reference (log space)
# ---------------------------------------------------------------------------------------------------------------

def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log Σ exp along ``axis`` (``np.logaddexp`` folded along it); ``-inf`` where every entry is ``-inf``."""
    return np.logaddexp.reduce(a, axis=axis)


def _log_forward_numpy(log_lik: np.ndarray, log_transmat: np.ndarray,
                       log_startprob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Forward pass of one sequence in log space, normalised per step.

    Returns the normalised log alphas ``la`` (n, K), the shifted log-likelihoods ``l = log_lik - M`` (n, K),
    their per-step log normalisers ``log c`` (n,) and ``log p(x)``; rows from an impossible step on stay -inf.
    """
    n = len(log_lik)
    shift = np.max(log_lik, axis=1)
    shifted = log_lik - np.where(shift > -np.inf, shift, 0.0)[:, None]
    log_alpha = np.full_like(log_lik, -np.inf)
    log_c = np.full(n, -np.inf)
    for t in range(n):
        if t == 0:
            a = log_startprob + shifted[0]
        else:
            a = shifted[t] + _logsumexp(log_alpha[t - 1][:, None] + log_transmat, axis=0)
        log_c[t] = _logsumexp(a, axis=0)
        if log_c[t] == -np.inf:
            return log_alpha, shifted, log_c, -np.inf
        log_alpha[t] = a - log_c[t]
    return log_alpha, shifted, log_c, float(log_c.sum() + shift.sum())


def _forward_backward_numpy(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                            offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Log-space forward-backward normalised per step, one sequence at a time (the reference)."""
    T, K = log_lik.shape
    n_seq = len(offsets) - 1
    log_likelihood = np.empty(n_seq)
    posteriors = np.zeros((T, K))
    counts = np.zeros((K, K))
    for s in range(n_seq):
        b, e = int(offsets[s]), int(offsets[s + 1])
        log_alpha, shifted, log_c, log_likelihood[s] = _log_forward_numpy(log_lik[b:e], log_transmat,
                                                                          log_startprob)
        if log_likelihood[s] == -np.inf:
            continue
        log_beta = np.zeros_like(shifted)
        for t in range(e - b - 2, -1, -1):
            v = shifted[t + 1] + log_beta[t + 1] - log_c[t + 1]
            log_beta[t] = _logsumexp(log_transmat + v[None, :], axis=1)
            counts += np.exp(log_alpha[t][:, None] + log_transmat + v[None, :])
        posteriors[b:e] = np.exp(log_alpha + log_beta)
    initial = posteriors[offsets[:-1]].sum(axis=0)
    return log_likelihood, posteriors, counts, initial


def _viterbi_numpy(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                   offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max-product in log space; ties go to the lowest state index (``np.argmax``)."""
    T, K = log_lik.shape
    n_seq = len(offsets) - 1
    log_prob = np.empty(n_seq)
    states = np.empty(T, dtype=np.int64)
    for s in range(n_seq):
        b, e = int(offsets[s]), int(offsets[s + 1])
        backptr = np.zeros((e - b, K), dtype=np.int64)
        delta = log_startprob + log_lik[b]
        for t in range(1, e - b):
            cand = delta[:, None] + log_transmat
            backptr[t] = np.argmax(cand, axis=0)
            delta = np.max(cand, axis=0) + log_lik[b + t]
        z = int(np.argmax(delta))
        log_prob[s] = delta[z]
        states[e - 1] = z
        for t in range(e - b - 1, 0, -1):
            z = int(backptr[t, z])
            states[b + t - 1] = z
    return log_prob, states


def _pick_numpy(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF per row of ``weights`` (n, K) at uniforms ``u`` (n,) — the rule in the module docstring."""
    csum = np.cumsum(weights, axis=1)
    hit = (u * csum[:, -1])[:, None] < csum
    last_positive = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), last_positive)


def _sample_posterior_numpy(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                            offsets: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    """Forward filtering (log space), backward sampling, all samples of a sequence at once."""
    T, K = log_lik.shape
    u = hmm_sample_uniforms(seed, n_samples, T)
    samples = np.empty((n_samples, T), dtype=np.int64)
    for s in range(len(offsets) - 1):
        b, e = int(offsets[s]), int(offsets[s + 1])
        log_alpha, _, _, total = _log_forward_numpy(log_lik[b:e], log_transmat, log_startprob)
        if total == -np.inf:
            samples[:, b:e] = -1
            continue
        logw = np.broadcast_to(log_alpha[-1], (n_samples, K))
        for t in range(e - b - 1, -1, -1):
            w = np.exp(logw - logw.max(axis=1, keepdims=True))
            z = _pick_numpy(w, u[:, b + t])
            samples[:, b + t] = z
            if t > 0:
                logw = log_alpha[t - 1][None, :] + log_transmat[:, z].T
    return samples


def _chunks(offsets: np.ndarray, n_states: int) -> np.ndarray:
    """Sequence boundaries of chunks holding about equal numbers of rows (see MAX_CHUNKS).

    Depends only on ``offsets`` and ``n_states`` (never on the thread count), so chunked sums are reproducible.
    """
    max_chunks = int(np.clip(CHUNK_COUNT_BYTES // (8 * n_states * n_states), 4, MAX_CHUNKS))
    n_seq = len(offsets) - 1
    T = int(offsets[-1])
    targets = (np.arange(1, max_chunks) * T) // max_chunks
    inner = np.searchsorted(offsets, targets, side="left")
    return np.unique(np.concatenate([[0], np.clip(inner, 0, n_seq), [n_seq]])).astype(np.int64)


def chunk_order(offsets: np.ndarray, chunks: np.ndarray) -> np.ndarray:
    """Chunks by decreasing number of rows (ties by index): with a dynamic schedule the longest start first and
    the last ones to finish are short (each chunk still writes its own partial sums, so order changes no bit)."""
    rows = offsets[chunks[1:]] - offsets[chunks[:-1]]
    return np.lexsort((np.arange(len(rows)), -rows)).astype(np.int64)


def _slices(offsets: np.ndarray, n_states: int) -> list[tuple[int, int, int, int]]:
    """The slices ``(s0, s1, r0, r1)`` a compiled call is split into (about ``SLICE_COST / (K² + 64)`` rows each,
    whole sequences; one slice for small batches). Depends only on ``offsets`` and K."""
    return sequence_slices(offsets, SLICE_COST // (n_states * n_states + 64))


def _sliced_forward_backward(kernel, log_lik, offsets, chunks, posteriors, log_likelihood, counts, status):
    """Run ``kernel(log_lik, offsets, chunks, posteriors, log_likelihood, counts, status)`` (views) slice by slice.

    A slice may cut a chunk: both parts add into the same ``counts[c]`` in sequence order, exactly as one call does,
    so every bit matches the unsliced call (the chunk partials are still summed in chunk order afterwards).
    """
    bounds = _slices(offsets, counts.shape[1])
    for s0, s1, r0, r1 in bounds:
        g0 = int(np.searchsorted(chunks, s0, side="right")) - 1
        g1 = int(np.searchsorted(chunks, s1, side="left"))
        local = (np.concatenate([[s0], chunks[g0 + 1:g1], [s1]]) - s0).astype(np.int64)
        kernel(log_lik[r0:r1], offsets[s0:s1 + 1] - r0, local, posteriors[r0:r1], log_likelihood[s0:s1],
               counts[g0:g1], status[s0:s1])


def _initial_counts(posteriors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return posteriors[offsets[:-1]].sum(axis=0)


def _check_alloc(failed: int) -> None:
    if failed:
        raise MemoryError("the HMM kernel could not allocate its per-thread workspace")


# ---------------------------------------------------------------------------------------------------------------
# Cython
# ---------------------------------------------------------------------------------------------------------------

def _cy():
    from .._cy import load

    return load("hmm")


def _forward_backward_cython_status(log_lik, log_transmat, log_startprob, offsets):
    """Cython forward-backward, also returning the per-sequence status codes (tests use them)."""
    T, K = log_lik.shape
    md = _prepare_model(log_transmat, log_startprob, pad=4)
    chunks = _chunks(offsets, K)
    posteriors = np.empty((T, K))
    log_likelihood = np.empty(len(offsets) - 1)
    counts = np.zeros((len(chunks) - 1, K, K))
    status = np.empty(len(offsets) - 1, dtype=np.int8)
    cy, n_threads = _cy(), _config.get_num_threads()

    def kernel(log_lik, offsets, chunks, posteriors, log_likelihood, counts, status):
        _check_alloc(cy.cy_forward_backward(
            log_lik, md["A"], md["At"], md["pi"], md["log_transmat"], md["log_transmat_t"], md["log_startprob"],
            md["all_log"], md["check_reach"], offsets, chunks, chunk_order(offsets, chunks), posteriors,
            log_likelihood, counts, status, n_threads))

    _sliced_forward_backward(kernel, log_lik, offsets, chunks, posteriors, log_likelihood, counts, status)
    return (log_likelihood, posteriors, counts.sum(axis=0), _initial_counts(posteriors, offsets)), status


def _forward_backward_cython(log_lik, log_transmat, log_startprob, offsets):
    return _forward_backward_cython_status(log_lik, log_transmat, log_startprob, offsets)[0]


def _viterbi_cython(log_lik, log_transmat, log_startprob, offsets):
    T, K = log_lik.shape
    log_prob = np.empty(len(offsets) - 1)
    states = np.empty(T, dtype=np.int64)
    backpointers = np.empty((T, K), dtype=np.int32)
    Kp = -(-K // 4) * 4
    log_transmat_pad = np.full((Kp, Kp), -np.inf)
    log_transmat_pad[:K, :K] = log_transmat
    cy, n_threads = _cy(), _config.get_num_threads()
    bounds = _slices(offsets, K)
    for s0, s1, r0, r1 in bounds:
        _check_alloc(cy.cy_viterbi(log_lik[r0:r1], log_transmat_pad, log_startprob, offsets[s0:s1 + 1] - r0,
                                   backpointers[r0:r1], log_prob[s0:s1], states[r0:r1], n_threads))
    return log_prob, states


def _sample_slices(offsets: np.ndarray, n_states: int, n_samples: int) -> list[tuple[int, int, int, int]]:
    """The slices of a posterior-sampling call: the filter costs ~K² + 64 a row and every sample ~K + 16 more."""
    return sequence_slices(offsets, SLICE_COST // (n_states * n_states + 64 + n_samples * (n_states + 16)))


def _sample_posterior_cython(log_lik, log_transmat, log_startprob, offsets, n_samples, seed):
    T, K = log_lik.shape
    md = _prepare_model(log_transmat, log_startprob, pad=4)
    n_seq = len(offsets) - 1
    samples = np.empty((n_samples, T), dtype=np.int64)
    alpha, log_likelihood, status = np.empty((T, K)), np.empty(n_seq), np.empty(n_seq, dtype=np.int8)
    cy, n_threads, key = _cy(), _config.get_num_threads(), hmm_seed_key(seed)
    # Each slice passes its sequences' offsets unshifted, with the whole arrays: the kernel indexes rows (and keys
    # its random numbers) by the global row and the global sample, so the slices change no bit.
    for s0, s1, _, _ in _sample_slices(offsets, K, n_samples):
        _check_alloc(cy.cy_sample_posterior(
            log_lik, md["A"], md["At"], md["pi"], md["log_transmat"], md["log_transmat_t"], md["log_startprob"],
            md["all_log"], md["check_reach"], offsets[s0:s1 + 1], key, alpha, log_likelihood[s0:s1],
            status[s0:s1], samples, n_threads))
    return samples


# ---------------------------------------------------------------------------------------------------------------
# Numba (same algorithm as the Cython kernels, unpadded)
# ---------------------------------------------------------------------------------------------------------------

@njit(cache=True)
def _predict_nb(A, alpha, pred):
    K = alpha.shape[0]
    pred[:] = 0.0
    for i in range(K):
        a = alpha[i]
        if a != 0.0:
            for j in range(K):
                pred[j] += a * A[i, j]


@njit(cache=True)
def _reaches_nb(log_transmat_t, alpha, j):
    for i in range(alpha.shape[0]):
        if alpha[i] > 0.0 and log_transmat_t[j, i] > -np.inf:
            return True
    return False


@njit(cache=True)
def _scaled_forward_nb(log_lik, b, e, A, pi, log_transmat_t, check_reach, alpha, cur, pred):
    """Normalised forward pass into alpha[b:e]; returns (ok, log p(x))."""
    K = log_lik.shape[1]
    total = 0.0
    cur[:] = 0.0
    for t in range(b, e):
        if t == b:
            pred[:] = pi
        else:
            _predict_nb(A, cur, pred)
        m = -np.inf
        for j in range(K):
            if pred[j] > 0.0 and log_lik[t, j] > m:
                m = log_lik[t, j]
        if m == -np.inf:
            return False, 0.0
        c = 0.0
        for j in range(K):
            u = 0.0
            if pred[j] > 0.0:
                u = np.exp(log_lik[t, j] - m) * pred[j]
                if u < TINY and log_lik[t, j] > -np.inf:
                    return False, 0.0
            elif check_reach and t > b and log_lik[t, j] > -np.inf and _reaches_nb(log_transmat_t, cur, j):
                return False, 0.0
            pred[j] = u
            c += u
        inv = 1.0 / c
        for j in range(K):
            cur[j] = pred[j] * inv
            alpha[t, j] = cur[j]
        total += np.log(c) + m
    return True, total


@njit(cache=True)
def _scaled_backward_nb(post, b, e, A, At, counts, a_cur, a_prev, pred, beta, w, xiT):
    K = post.shape[1]
    if e - b < 2:
        return
    xiT[:, :] = 0.0
    a_cur[:] = post[e - 1]
    a_prev[:] = post[e - 2]
    _predict_nb(A, a_prev, pred)
    for i in range(K):
        w[i] = a_cur[i] / pred[i] if a_cur[i] > 0.0 else 0.0
    for t in range(e - 2, b - 1, -1):
        a_cur, a_prev = a_prev, a_cur
        beta[:] = 0.0
        for j in range(K):
            wj = w[j]
            if wj != 0.0:
                for i in range(K):
                    beta[i] += wj * At[j, i]
                    xiT[j, i] += wj * a_cur[i]
        for i in range(K):
            g = a_cur[i] * beta[i]
            post[t, i] = g
            beta[i] = g
        if t > b:
            a_prev[:] = post[t - 1]
            _predict_nb(A, a_prev, pred)
            for i in range(K):
                w[i] = beta[i] / pred[i] if a_cur[i] > 0.0 else 0.0
    for i in range(K):
        for j in range(K):
            counts[i, j] += A[i, j] * xiT[j, i]


@njit(cache=True)
def _lse_nb(v):
    m = -np.inf
    for x in v:
        if x > m:
            m = x
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for x in v:
        s += np.exp(x - m)
    return m + np.log(s)


@njit(cache=True)
def _row_max_nb(log_lik, t):
    m = -np.inf
    for x in log_lik[t]:
        if x > m:
            m = x
    return m


@njit(cache=True)
def _log_forward_nb(log_lik, b, e, log_transmat_t, log_startprob, la, tmp, log_c, shift):
    """Shifted, per-step-normalised log forward into la[b:e]; log c_t and M_t into log_c, shift[0:e-b].
    Returns log p(x)."""
    K = log_lik.shape[1]
    total = 0.0
    for t in range(b, e):
        m = _row_max_nb(log_lik, t)
        if m == -np.inf:
            return -np.inf
        for j in range(K):
            if t == b:
                la[t, j] = log_startprob[j] + (log_lik[t, j] - m)
            else:
                for i in range(K):
                    tmp[i] = la[t - 1, i] + log_transmat_t[j, i]
                la[t, j] = (log_lik[t, j] - m) + _lse_nb(tmp)
        c = _lse_nb(la[t])
        if c == -np.inf:
            return -np.inf
        for j in range(K):
            la[t, j] -= c
        log_c[t - b] = c
        shift[t - b] = m
        total += c + m
    return total


@njit(cache=True)
def _log_forward_backward_nb(log_lik, b, e, log_transmat, log_transmat_t, log_startprob, post, counts, tmp, v,
                             v_new):
    K = log_lik.shape[1]
    log_c = np.empty(e - b)
    shift = np.empty(e - b)
    ll = _log_forward_nb(log_lik, b, e, log_transmat_t, log_startprob, post, tmp, log_c, shift)
    if ll == -np.inf:
        post[b:e] = 0.0
        return ll
    for j in range(K):
        v[j] = (log_lik[e - 1, j] - shift[e - 1 - b]) - log_c[e - 1 - b]
        post[e - 1, j] = np.exp(post[e - 1, j])
    for t in range(e - 2, b - 1, -1):
        for i in range(K):
            for j in range(K):
                tmp[j] = log_transmat[i, j] + v[j]
            lb = _lse_nb(tmp)
            la_i = post[t, i]
            if la_i > -np.inf:
                for j in range(K):
                    x = la_i + tmp[j]
                    if x > -np.inf:
                        counts[i, j] += np.exp(x)
                post[t, i] = np.exp(la_i + lb)
            else:
                post[t, i] = 0.0
            v_new[i] = ((log_lik[t, i] - shift[t - b]) + lb) - log_c[t - b]
        v, v_new = v_new, v
    return ll


@njit(cache=True, parallel=True)
def _forward_backward_numba_kernel(log_lik, A, At, pi, log_transmat, log_transmat_t, log_startprob, all_log,
                                   check_reach, offsets, chunks, post, log_likelihood, counts, status):
    K = log_lik.shape[1]
    for c in prange(len(chunks) - 1):
        ws = np.empty((5, K))
        tmp = np.empty((3, K))
        xiT = np.empty((K, K))
        for s in range(chunks[c], chunks[c + 1]):
            b, e = offsets[s], offsets[s + 1]
            ok = False
            if not all_log:
                ok, ll = _scaled_forward_nb(log_lik, b, e, A, pi, log_transmat_t, check_reach, post, ws[0], ws[1])
            if ok:
                _scaled_backward_nb(post, b, e, A, At, counts[c], ws[0], ws[1], ws[2], ws[3], ws[4], xiT)
                status[s] = STATUS_SCALED
            else:
                ll = _log_forward_backward_nb(log_lik, b, e, log_transmat, log_transmat_t, log_startprob, post,
                                              counts[c], tmp[0], tmp[1], tmp[2])
                status[s] = STATUS_IMPOSSIBLE if ll == -np.inf else STATUS_LOG_SPACE
            log_likelihood[s] = ll


def _forward_backward_numba_status(log_lik, log_transmat, log_startprob, offsets):
    T, K = log_lik.shape
    md = _prepare_model(log_transmat, log_startprob, pad=1)
    chunks = _chunks(offsets, K)
    posteriors = np.empty((T, K))
    log_likelihood = np.empty(len(offsets) - 1)
    counts = np.zeros((len(chunks) - 1, K, K))
    status = np.empty(len(offsets) - 1, dtype=np.int8)
    _config.apply_numba_threads()

    def kernel(log_lik, offsets, chunks, posteriors, log_likelihood, counts, status):
        _forward_backward_numba_kernel(log_lik, md["A"], md["At"], md["pi"], md["log_transmat"],
                                       md["log_transmat_t"], md["log_startprob"], md["all_log"], md["check_reach"],
                                       offsets, chunks, posteriors, log_likelihood, counts, status)

    _sliced_forward_backward(kernel, log_lik, offsets, chunks, posteriors, log_likelihood, counts, status)
    return (log_likelihood, posteriors, counts.sum(axis=0), _initial_counts(posteriors, offsets)), status


def _forward_backward_numba(log_lik, log_transmat, log_startprob, offsets):
    return _forward_backward_numba_status(log_lik, log_transmat, log_startprob, offsets)[0]


@njit(cache=True, parallel=True)
def _viterbi_numba_kernel(log_lik, log_transmat, log_startprob, offsets, log_prob, states):
    K = log_lik.shape[1]
    for s in prange(len(offsets) - 1):
        b, e = offsets[s], offsets[s + 1]
        backptr = np.zeros((e - b, K), dtype=np.int32)
        delta = log_startprob + log_lik[b]
        nd = np.empty(K)
        for t in range(1, e - b):
            nd[:] = -np.inf
            for i in range(K):
                d = delta[i]
                if d == -np.inf:
                    continue
                for j in range(K):
                    x = d + log_transmat[i, j]
                    if x > nd[j]:
                        nd[j] = x
                        backptr[t, j] = i
            for j in range(K):
                delta[j] = nd[j] + log_lik[b + t, j]
        best = -np.inf
        z = 0
        for j in range(K):
            if delta[j] > best:
                best = delta[j]
                z = j
        log_prob[s] = best
        states[e - 1] = z
        for t in range(e - b - 1, 0, -1):
            z = backptr[t, z]
            states[b + t - 1] = z


def _viterbi_numba(log_lik, log_transmat, log_startprob, offsets):
    log_prob = np.empty(len(offsets) - 1)
    states = np.empty(log_lik.shape[0], dtype=np.int64)
    _config.apply_numba_threads()
    bounds = _slices(offsets, log_lik.shape[1])
    for s0, s1, r0, r1 in bounds:
        _viterbi_numba_kernel(log_lik[r0:r1], log_transmat, log_startprob, offsets[s0:s1 + 1] - r0,
                              log_prob[s0:s1], states[r0:r1])
    return log_prob, states


@njit(cache=True)
def _pick_nb(w, u):
    K = w.shape[0]
    total = 0.0
    for k in range(K):
        total += w[k]
    target = u * total
    acc = 0.0
    for k in range(K):
        acc += w[k]
        if target < acc:
            return k
    for k in range(K - 1, -1, -1):
        if w[k] > 0.0:
            return k
    return 0


@njit(cache=True, parallel=True)
def _filter_numba_kernel(log_lik, A, pi, log_transmat_t, log_startprob, all_log, check_reach, offsets, alpha,
                         status):
    K = log_lik.shape[1]
    for s in prange(len(offsets) - 1):
        b, e = offsets[s], offsets[s + 1]
        ws = np.empty((2, K))
        ok = False
        if not all_log:
            ok, ll = _scaled_forward_nb(log_lik, b, e, A, pi, log_transmat_t, check_reach, alpha, ws[0], ws[1])
        if ok:
            status[s] = STATUS_SCALED
        else:
            ll = _log_forward_nb(log_lik, b, e, log_transmat_t, log_startprob, alpha, ws[0], np.empty(e - b),
                                 np.empty(e - b))
            status[s] = STATUS_IMPOSSIBLE if ll == -np.inf else STATUS_LOG_SPACE


@njit(cache=True, parallel=True)
def _backward_sample_numba_kernel(alpha, At, log_transmat_t, offsets, status, key, samples):
    K = alpha.shape[1]
    n_seq = len(offsets) - 1
    n_samples = samples.shape[0]
    for item in prange(n_samples * n_seq):
        s = item // n_seq
        q = item - s * n_seq
        b, e = offsets[q], offsets[q + 1]
        mode = status[q]
        if mode == STATUS_IMPOSSIBLE:
            samples[s, b:e] = -1
            continue
        row_key = hmm_sample_row_nb(key, s)
        w = np.empty(K)
        if mode == STATUS_SCALED:
            w[:] = alpha[e - 1]
        else:
            w[:] = np.exp(alpha[e - 1] - np.max(alpha[e - 1]))
        z = _pick_nb(w, hmm_sample_uniform_row_nb(row_key, e - 1))
        samples[s, e - 1] = z
        for t in range(e - 2, b - 1, -1):
            if mode == STATUS_SCALED:
                for k in range(K):
                    w[k] = alpha[t, k] * At[z, k]
            else:
                mx = -np.inf
                for k in range(K):
                    w[k] = alpha[t, k] + log_transmat_t[z, k]
                    if w[k] > mx:
                        mx = w[k]
                for k in range(K):
                    w[k] = np.exp(w[k] - mx)
            z = _pick_nb(w, hmm_sample_uniform_row_nb(row_key, t))
            samples[s, t] = z


def _sample_posterior_numba(log_lik, log_transmat, log_startprob, offsets, n_samples, seed):
    T, K = log_lik.shape
    md = _prepare_model(log_transmat, log_startprob, pad=1)
    alpha = np.empty((T, K))
    status = np.empty(len(offsets) - 1, dtype=np.int8)
    samples = np.empty((n_samples, T), dtype=np.int64)
    key = np.uint64(hmm_seed_key(seed))
    _config.apply_numba_threads()
    for s0, s1, _, _ in _sample_slices(offsets, K, n_samples):  # unshifted offsets, whole arrays (as in Cython)
        part = offsets[s0:s1 + 1]
        _filter_numba_kernel(log_lik, md["A"], md["pi"], md["log_transmat_t"], md["log_startprob"], md["all_log"],
                             md["check_reach"], part, alpha, status[s0:s1])
        _backward_sample_numba_kernel(alpha, md["At"], md["log_transmat_t"], part, status[s0:s1], key, samples)
    return samples


# ---------------------------------------------------------------------------------------------------------------
# CUDA (imported on first use)
# ---------------------------------------------------------------------------------------------------------------

def _forward_backward_cuda(log_lik, log_transmat, log_startprob, offsets):
    from ._hmm_cuda import _forward_backward_cuda as impl

    return impl(log_lik, log_transmat, log_startprob, offsets)


def _viterbi_cuda(log_lik, log_transmat, log_startprob, offsets):
    from ._hmm_cuda import _viterbi_cuda as impl

    return impl(log_lik, log_transmat, log_startprob, offsets)


def _sample_posterior_cuda(log_lik, log_transmat, log_startprob, offsets, n_samples, seed):
    from ._hmm_cuda import _sample_posterior_cuda as impl

    return impl(log_lik, log_transmat, log_startprob, offsets, n_samples, seed)


# ---------------------------------------------------------------------------------------------------------------
# Dispatch tables: backend name -> implementation (the public functions in avicore.hmm use these)
# ---------------------------------------------------------------------------------------------------------------

FORWARD_BACKWARD = {
    "numpy": _forward_backward_numpy,
    "cython": _forward_backward_cython,
    "numba": _forward_backward_numba,
    "cuda": _forward_backward_cuda,
}
VITERBI = {
    "numpy": _viterbi_numpy,
    "cython": _viterbi_cython,
    "numba": _viterbi_numba,
    "cuda": _viterbi_cuda,
}
SAMPLE_POSTERIOR = {
    "numpy": _sample_posterior_numpy,
    "cython": _sample_posterior_cython,
    "numba": _sample_posterior_numba,
    "cuda": _sample_posterior_cuda,
}
#: Every dispatch table, by public function name (the completeness guard in the tests walks it).
DISPATCH = {"forward_backward": FORWARD_BACKWARD, "viterbi": VITERBI, "sample_posterior": SAMPLE_POSTERIOR}
