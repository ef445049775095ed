"""EM expectations of an HMM: forward-backward reduced to the sufficient statistics EM needs.

An EM iteration needs, summed over every sequence, the expected transition counts, the first-step posteriors, the
posterior mass of each state and posterior-weighted sums of per-row features (x and x² for diagonal Gaussians,
x and x xᵀ for full ones, counts for Poisson) or of symbol indicators (categorical). The reference
(:func:`_em_sums_generic`, every backend) runs the forward-backward kernel of :mod:`avicore.kernels.hmm`, which
writes the (n_samples, n_states) posteriors, and reduces them with NumPy. The Cython kernel
(``cy_em_expectations`` in ``src_cython/hmm.pyx``) does the same maths in one pass per sequence without writing
any posterior: the forward pass keeps each sequence's scaled alphas and scaled emissions ``r_t = e_t / c_t`` in a
per-thread buffer (in cache for typical lengths), the backward pass uses ``w_t = r_t ⊙ beta_t`` (no division, no
recomputed ``alpha A``) and adds each step's posterior into the statistics. It can also compute the emission
log-likelihoods itself (diagonal Gaussians from X; categorical symbols from a table), so that no (n_samples,
n_states) array is written or read at all.

Sequences the scaled pass cannot do (an underflow, an impossible step, a model with probabilities below e^-700)
are redone with the generic kernel (its log-space fallback) and their statistics added after the chunk sums, in
sequence order. Chunks are fixed by the data (:func:`avicore.kernels.hmm._chunks`), run longest first on a
dynamic schedule and each write their own partial sums, added in chunk order: the results are the same bits for
every thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import _config
from . import hmm as _hmm

#: Status of a sequence the Cython EM kernel left to the generic kernel (see src_cython/hmm.pyx).
STATUS_FALLBACK = 5
#: Emission sources of the Cython kernel (``Emission.mode`` in src_cython/hmm.pyx).
EMIT_ROWS, EMIT_DIAG, EMIT_TABLE, EMIT_FULL, EMIT_LINEAR = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class EMSums:
    """Sufficient statistics of one E-step, summed over sequences.

    Attributes
    ----------
    log_likelihood : ndarray (n_sequences,)
        ``log p(x)`` of each sequence.
    trans : ndarray (n_states, n_states)
        Expected transition counts ``Σ_t xi_t``.
    start : ndarray (n_states,)
        Σ over sequences of the first step's posterior.
    post : ndarray (n_states,)
        ``Σ_t gamma_t``.
    weighted : ndarray (n_features, n_states) or None
        ``Σ_t features[t, f] gamma_t[k]``.
    symbol_counts : ndarray (n_symbols, n_states) or None
        ``Σ_t [symbols[t] = m] gamma_t[k]``.
    """

    log_likelihood: np.ndarray
    trans: np.ndarray
    start: np.ndarray
    post: np.ndarray
    weighted: np.ndarray | None
    symbol_counts: np.ndarray | None


@dataclass(frozen=True)
class Emission:
    """Where the E-step's emission log-likelihoods come from.

    ``log_lik_of(rows)`` gives the (len(rows), n_states) log-likelihoods of the batch rows ``rows`` (an index array,
    or ``slice(None)`` for all): every backend can use it. ``kind`` and ``params`` let the Cython kernel compute them
    in its forward pass instead: ``"rows"`` (``params = ()``: it reads ``log_lik_of(slice(None))``), ``"diag"``
    (``params = (X, means, variances)``), ``"full"`` (``params = (X, means, covariances)``), ``"linear"``
    (``params = (X, W (n_states, n_features), c (n_states,), row_shift (n_samples,))``: ``c_k + W_k · x_t +
    row_shift[t]``, the shift added per sequence after the pass — Poisson's ``-Σ_d log x_td!``) or ``"table"``
    (``params = (log_emissionprob (n_states, n_symbols), symbols (n_samples,) int64)``; when statistics
    ``symbols`` are given too they must be these).
    """

    log_lik_of: Callable[[np.ndarray | slice], np.ndarray]
    kind: str = "rows"
    params: tuple = ()


def reduce_posteriors(posteriors: np.ndarray, features: np.ndarray | None, symbols: np.ndarray | None,
                      n_symbols: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(Σ gamma, Σ features·gamma (n_features, K), symbol counts (n_symbols, K)) from materialised posteriors."""
    weighted = None if features is None else features.T @ posteriors
    counts = None
    if symbols is not None:
        counts = np.stack([np.bincount(symbols, weights=posteriors[:, k], minlength=n_symbols)
                           for k in range(posteriors.shape[1])], axis=1)
    return posteriors.sum(axis=0), weighted, counts


def _em_sums_generic(backend: str, emission: Emission, log_transmat: np.ndarray, log_startprob: np.ndarray,
                     offsets: np.ndarray, features: np.ndarray | None, symbols: np.ndarray | None,
                     n_symbols: int) -> EMSums:
    """The reference: the backend's forward-backward kernel, then NumPy reductions of its posteriors."""
    log_lik = np.ascontiguousarray(emission.log_lik_of(slice(None)))
    ll, posteriors, trans, start = _hmm.FORWARD_BACKWARD[backend](log_lik, log_transmat, log_startprob, offsets)
    post, weighted, counts = reduce_posteriors(np.asarray(posteriors), features, symbols, n_symbols)
    return EMSums(np.asarray(ll), np.asarray(trans), np.asarray(start), post, weighted, counts)


def _em_params(emission: Emission, K: int, Kp: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(mode, X, P) for cy_em_expectations: P is the padded parameter block of ``Emission`` in src_cython/hmm.pyx."""
    dummy = np.zeros((1, 1))
    if emission.kind == "diag":
        X, means, variances = emission.params
        D = X.shape[1]
        P = np.zeros((2 * D + 1, Kp))
        P[:D, :K] = means.T
        P[D:2 * D, :K] = 0.5 / variances.T
        P[2 * D] = -np.inf
        P[2 * D, :K] = -0.5 * (D * np.log(2.0 * np.pi) + np.log(variances).sum(axis=1))
        return EMIT_DIAG, np.ascontiguousarray(X, dtype=np.float64), P
    if emission.kind == "full":
        X, means, covariances = emission.params
        D = X.shape[1]
        chols = np.linalg.cholesky(covariances)
        inv = np.linalg.inv(chols)  # lower triangular L_k⁻¹
        i, j = np.tril_indices(D)
        P = np.zeros((D + len(i) + 1, Kp))
        P[:D, :K] = means.T
        P[D:D + len(i), :K] = inv[:, i, j].T
        P[-1] = -np.inf
        P[-1, :K] = -np.log(np.diagonal(chols, axis1=1, axis2=2)).sum(axis=1) - 0.5 * D * np.log(2.0 * np.pi)
        return EMIT_FULL, np.ascontiguousarray(X, dtype=np.float64), P
    if emission.kind == "linear":
        X, W, c = emission.params[:3]
        D = X.shape[1]
        P = np.zeros((D + 1, Kp))
        P[:D, :K] = W.T
        P[D] = -np.inf
        P[D, :K] = c
        return EMIT_LINEAR, np.ascontiguousarray(X, dtype=np.float64), P
    if emission.kind == "table":
        log_emissionprob = emission.params[0]
        M = log_emissionprob.shape[1]
        P = np.full((3 * M, Kp), -np.inf)  # log rows | exp(rows - max) | maxima (column 0)
        P[:M, :K] = log_emissionprob.T
        shift = P[:M].max(axis=1)
        with np.errstate(invalid="ignore"):
            P[M:2 * M] = np.where(P[:M] > -np.inf, np.exp(P[:M] - np.where(shift > -np.inf, shift, 0.0)[:, None]),
                                  0.0)
        P[2 * M:, 0] = shift
        return EMIT_TABLE, dummy, P
    return EMIT_ROWS, dummy, dummy


def _threads(n_rows: int, n_states: int) -> int:
    """Threads for one E-step: one per ~16k rows' worth of K = 10 work (~1 ms), at most ``get_num_threads()`` — a
    fork/join per EM iteration, and on a busy machine the wait for a descheduled thread, cost more than a small
    batch (100 sequences, 10⁴ rows: 3.4 ms an iteration on one thread, 15 ms on two of a loaded 2-core machine)."""
    return _config.threads_for(n_rows * max(n_states, 10) ** 2 // 100, 16384)


def _em_sums_cython(emission: Emission, log_transmat: np.ndarray, log_startprob: np.ndarray, offsets: np.ndarray,
                    features: np.ndarray | None, symbols: np.ndarray | None, n_symbols: int) -> EMSums:
    """One pass of the Cython EM kernel; sequences it leaves (status 5) go through the generic Cython kernel."""
    K = log_transmat.shape[0]
    md = _hmm._prepare_model(log_transmat, log_startprob, pad=4)
    Kp = md["A"].shape[0]
    n_seq = len(offsets) - 1
    T = int(offsets[-1])
    mode, X, P = _em_params(emission, K, Kp)
    log_lik = np.ascontiguousarray(emission.log_lik_of(slice(None))) if mode == EMIT_ROWS else np.zeros((1, 1))
    nf = 0 if features is None else features.shape[1]
    feats = np.ascontiguousarray(features, dtype=np.float64) if nf else np.zeros((1, 1))
    if emission.kind == "table":  # the kernel reads one symbol array, for the table and for the counts
        syms = np.ascontiguousarray(emission.params[1], dtype=np.int64)
    elif symbols is not None:
        syms = np.ascontiguousarray(symbols, dtype=np.int64)
    else:
        syms = np.zeros(1, dtype=np.int64)
    ns = n_symbols if symbols is not None else 0
    chunks = _hmm._chunks(offsets, K)
    acc_size = K * K + Kp * (2 + nf + ns)
    acc = np.empty((len(chunks) - 1, acc_size))
    log_likelihood = np.empty(n_seq)
    status = np.empty(n_seq, dtype=np.int8)
    _hmm._check_alloc(_hmm._cy().cy_em_expectations(
        mode, log_lik, X, P, syms, md["A"], md["At"], md["pi"], md["log_transmat"], md["log_transmat_t"],
        md["log_startprob"], md["all_log"], md["check_reach"], offsets, chunks, _hmm.chunk_order(offsets, chunks),
        feats, nf, ns, acc, log_likelihood, status, _threads(T, K)))
    total = acc.sum(axis=0)
    trans = total[:K * K].reshape(K, K)
    rest = total[K * K:].reshape(2 + nf + ns, Kp)[:, :K]
    start, post = rest[0].copy(), rest[1].copy()
    weighted = rest[2:2 + nf].copy() if nf else None
    counts = rest[2 + nf:].copy() if ns else None
    if emission.kind == "linear":
        log_likelihood += np.add.reduceat(emission.params[3], offsets[:-1])
    redo = np.flatnonzero(status == STATUS_FALLBACK)
    if redo.size:  # the generic kernel (with its log-space fallback) on those sequences, added in sequence order
        lengths = offsets[redo + 1] - offsets[redo]
        rows = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in redo])
        sub_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        sub = _em_sums_generic("cython", Emission(lambda idx: emission.log_lik_of(rows[idx])), log_transmat,
                               log_startprob, sub_offsets, None if features is None else features[rows],
                               None if symbols is None else symbols[rows], n_symbols)
        log_likelihood[redo] = sub.log_likelihood
        trans, start, post = trans + sub.trans, start + sub.start, post + sub.post
        weighted = None if weighted is None else weighted + sub.weighted
        counts = None if counts is None else counts + sub.symbol_counts
    return EMSums(log_likelihood, trans, start, post, weighted, counts)


def em_sums(backend: str, emission: Emission, log_transmat: np.ndarray, log_startprob: np.ndarray,
            offsets: np.ndarray, features: np.ndarray | None = None, symbols: np.ndarray | None = None,
            n_symbols: int = 0) -> EMSums:
    """The E-step's sufficient statistics on ``backend`` (cython: the fused kernel; others: the reference).

    Inputs are validated by the caller: C-contiguous float64 ``log_transmat`` (K, K) and ``log_startprob`` (K,),
    int64 ``offsets``, ``features`` (n_samples, n_features) float64 or None, ``symbols`` (n_samples,) int64 in
    ``[0, n_symbols)`` or None.
    """
    if backend == "cython":
        return _em_sums_cython(emission, log_transmat, log_startprob, offsets, features, symbols, n_symbols)
    return _em_sums_generic(backend, emission, log_transmat, log_startprob, offsets, features, symbols, n_symbols)
