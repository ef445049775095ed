"""Naive references for the HMM tests: brute-force enumeration of every state path.

Nothing here shares code with avicore: each quantity is a sum (or max) over all K^n paths of a sequence, weighted
by the path's joint probability ``p(x, z) = p(z_1) p(x_1|z_1) Π p(z_t|z_{t-1}) p(x_t|z_t)``. Only for tiny problems
(K^n up to ~10⁵ paths per sequence).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

MAX_PATHS = 200_000


@dataclass(frozen=True)
class Enumeration:
    """Exact quantities of a batch of sequences, by enumeration of every path."""

    log_likelihood: np.ndarray      # (n_sequences,)
    posteriors: np.ndarray          # (T, K)
    transition_counts: np.ndarray   # (K, K)
    initial_counts: np.ndarray      # (K,)
    viterbi_log_prob: np.ndarray    # (n_sequences,)
    viterbi_states: np.ndarray      # (T,) int64, ties to the lexicographically smallest path


def offsets_of(lengths, n_samples: int) -> np.ndarray:
    if lengths is None:
        return np.array([0, n_samples], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def path_log_joint(log_lik: np.ndarray, log_transmat: np.ndarray, log_startprob: np.ndarray,
                   paths: np.ndarray) -> np.ndarray:
    """log p(x, z) of each row of ``paths`` (n_paths, n) for one sequence's ``log_lik`` (n, K)."""
    n = log_lik.shape[0]
    out = log_startprob[paths[:, 0]] + log_lik[np.arange(n), paths].sum(axis=1)
    if n > 1:
        out = out + log_transmat[paths[:, :-1], paths[:, 1:]].sum(axis=1)
    return out


def enumerate_hmm(log_lik, log_transmat, log_startprob, lengths=None) -> Enumeration:
    """Every quantity the HMM kernels compute, by summing over all paths of each sequence.

    Viterbi ties go to the lexicographically smallest path, which is the path the kernels' rule (lowest state
    index at every back-pointer and at the last step) returns whenever the maximum is unique up to the tie at
    the last step; the tests use problems with continuous random inputs where exact ties do not occur.
    """
    log_lik = np.asarray(log_lik, dtype=np.float64)
    log_transmat = np.asarray(log_transmat, dtype=np.float64)
    log_startprob = np.asarray(log_startprob, dtype=np.float64)
    T, K = log_lik.shape
    offsets = offsets_of(lengths, T)
    n_seq = len(offsets) - 1
    log_likelihood = np.empty(n_seq)
    posteriors = np.zeros((T, K))
    counts = np.zeros((K, K))
    initial = np.zeros(K)
    v_log_prob = np.empty(n_seq)
    v_states = np.zeros(T, dtype=np.int64)
    for s in range(n_seq):
        b, e = int(offsets[s]), int(offsets[s + 1])
        n = e - b
        if K**n > MAX_PATHS:
            raise ValueError(f"too many paths to enumerate: K^n = {K}^{n}")
        paths = np.array(list(itertools.product(range(K), repeat=n)), dtype=np.int64)
        log_w = path_log_joint(log_lik[b:e], log_transmat, log_startprob, paths)
        best = int(np.argmax(log_w))  # product() is lexicographic: the first maximum is the smallest path
        v_log_prob[s] = log_w[best]
        v_states[b:e] = paths[best]
        if not np.any(log_w > -np.inf):
            log_likelihood[s] = -np.inf
            continue
        total = logsumexp(log_w)
        log_likelihood[s] = total
        w = np.exp(log_w - total)
        for t in range(n):
            posteriors[b + t] = np.bincount(paths[:, t], weights=w, minlength=K)
        for t in range(n - 1):
            counts += np.bincount(paths[:, t] * K + paths[:, t + 1], weights=w, minlength=K * K).reshape(K, K)
        initial += posteriors[b]
    return Enumeration(log_likelihood, posteriors, counts, initial, v_log_prob, v_states)


def random_problem(rng: np.random.Generator, lengths, n_states: int, *, sparse: bool = False, scale: float = 2.0,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(log_lik, log_transmat, log_startprob, lengths) with Gaussian log-likelihoods and Dirichlet probabilities.

    ``sparse`` forbids about 40 % of the transitions (``-inf``), keeping the diagonal allowed.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    K = n_states
    log_lik = scale * rng.normal(size=(int(lengths.sum()), K))
    A = rng.dirichlet(np.ones(K), size=K)
    if sparse and K > 1:
        A[rng.random((K, K)) < 0.4] = 0.0
        A[np.arange(K), np.arange(K)] += 0.1
        A /= A.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        log_transmat = np.log(A)
    return log_lik, log_transmat, np.log(rng.dirichlet(np.ones(K))), lengths
