"""The one-pass EM E-step (avicore/kernels/hmm_em.py, ``cy_em_expectations``) against the reference: the NumPy
log-space forward-backward with its posteriors reduced by NumPy (itself tested against path enumeration in
tests/kernels/test_hmm.py).

Every emission source the Cython kernel computes itself is compared with the same log-likelihoods handed over as
rows; the sequences the scaled pass cannot do (underflow, impossible steps, probabilities below e^-700) go through
the generic kernel and must give the reference's numbers too; and the sums are the same bits for any thread count.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import gammaln

import avicore
from avicore import emissions
from avicore.kernels import hmm as kh
from avicore.kernels import hmm_em
from tests.conftest import SEED
from tests.reference import offsets_of, random_problem
from tests.tolerances import tol

FIELDS = ("log_likelihood", "trans", "start", "post", "weighted", "symbol_counts")
LENGTHS = [1, 7, 2, 40, 1, 13]


def _assert_same_sums(got: hmm_em.EMSums, want: hmm_em.EMSums, **kw) -> None:
    for field in FIELDS:
        g, w = getattr(got, field), getattr(want, field)
        assert (g is None) == (w is None), field
        if w is not None:
            assert_allclose(g, w, err_msg=field, **(kw or tol()))


def _model(rng, K, sparse=False):
    _, log_transmat, log_startprob, _ = random_problem(rng, [2], K, sparse=sparse)
    return np.ascontiguousarray(log_transmat), np.ascontiguousarray(log_startprob)


def _emission(kind, rng, X, K):
    """An Emission of the given kind for observations X, and the log-likelihood rows it stands for."""
    D = X.shape[1]
    if kind in ("rows", "diag"):
        means, variances = rng.normal(size=(K, D)), rng.uniform(0.5, 2.0, size=(K, D))
        log_lik = emissions.gaussian_diag_log_lik(X, means, variances)
        params = (X, means, variances)
    elif kind == "full":
        a = rng.normal(size=(K, D, D)) * 0.4
        means, covs = rng.normal(size=(K, D)), a @ a.transpose(0, 2, 1) + np.eye(D)
        log_lik = emissions.gaussian_full_log_lik(X, means, covs)
        params = (X, means, covs)
    elif kind == "linear":  # Poisson counts
        X = rng.poisson(3.0, size=X.shape).astype(float)
        rates = rng.uniform(0.5, 6.0, size=(K, D))
        lgamma = gammaln(X + 1.0).sum(axis=1)
        log_lik = X @ np.log(rates).T - rates.sum(axis=1) - lgamma[:, None]
        params = (X, np.log(rates), -rates.sum(axis=1), -lgamma)
    else:  # table
        symbols = rng.integers(0, 6, size=X.shape[0])
        log_b = np.log(rng.dirichlet(np.ones(6), size=K))
        log_lik = np.ascontiguousarray(log_b.T[symbols])
        params = (log_b, symbols)
    return hmm_em.Emission(lambda rows: log_lik[rows], kind if kind != "rows" else "rows",
                           params if kind != "rows" else ()), params


@pytest.mark.parametrize("kind", ["rows", "diag", "full", "linear", "table"])
@pytest.mark.parametrize("K", [1, 3, 6])
def test_em_sums_match_the_reference_for_every_emission_source(kind, K):
    rng = np.random.default_rng([SEED, K, len(kind)])
    offsets = offsets_of(LENGTHS, sum(LENGTHS))
    X = rng.normal(size=(sum(LENGTHS), 2)) * 2.0
    emission, params = _emission(kind, rng, X, K)
    log_transmat, log_startprob = _model(rng, K)
    if kind == "table":
        features, symbols, n_symbols = None, params[1], 6
    else:
        x = params[0]
        features, symbols, n_symbols = np.hstack([x, x * x]), None, 0
    want = hmm_em.em_sums("numpy", emission, log_transmat, log_startprob, offsets, features, symbols, n_symbols)
    got = hmm_em.em_sums("cython", emission, log_transmat, log_startprob, offsets, features, symbols, n_symbols)
    _assert_same_sums(got, want)
    assert_allclose(want.post.sum(), sum(LENGTHS), rtol=1e-12)  # the reference's posteriors sum to one per step


def test_em_sums_with_forbidden_transitions_match_the_reference():
    rng = np.random.default_rng([SEED, 17])
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [30, 1, 9, 50], 7, sparse=True)
    offsets = offsets_of(lengths, log_lik.shape[0])
    emission = hmm_em.Emission(lambda rows: log_lik[rows])
    features = rng.normal(size=(log_lik.shape[0], 3))
    want = hmm_em.em_sums("numpy", emission, log_transmat, log_startprob, offsets, features)
    got = hmm_em.em_sums("cython", emission, log_transmat, log_startprob, offsets, features)
    _assert_same_sums(got, want)


@pytest.mark.parametrize("case", ["underflow", "impossible-step", "all-log"])
def test_sequences_the_scaled_pass_cannot_do_are_redone_exactly(case, monkeypatch):
    rng = np.random.default_rng([SEED, len(case)])
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [20, 30, 25], 4)
    if case == "underflow":  # three states emit e^-800 less than the fourth: scaled, their values underflow
        log_lik[25:28] = -800.0
        log_lik[25:28, 0] = 0.0
    elif case == "impossible-step":
        log_lik[30] = -np.inf
    else:
        log_transmat[0, 1] = -750.0
    offsets = offsets_of(lengths, log_lik.shape[0])
    emission = hmm_em.Emission(lambda rows: log_lik[rows])
    features = rng.normal(size=(log_lik.shape[0], 2))
    redone = []
    generic = hmm_em._em_sums_generic

    def spy(backend, emission, log_transmat, log_startprob, offsets, *rest):
        redone.append(len(offsets) - 1)
        return generic(backend, emission, log_transmat, log_startprob, offsets, *rest)

    monkeypatch.setattr(hmm_em, "_em_sums_generic", spy)
    got = hmm_em.em_sums("cython", emission, log_transmat, log_startprob, offsets, features)
    monkeypatch.setattr(hmm_em, "_em_sums_generic", generic)
    want = hmm_em.em_sums("numpy", emission, log_transmat, log_startprob, offsets, features)
    assert redone == [3 if case == "all-log" else 1]
    if case == "impossible-step":
        assert got.log_likelihood[1] == -np.inf and np.isfinite(got.log_likelihood[[0, 2]]).all()
    _assert_same_sums(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["rows", "diag", "table"])
def test_em_sums_are_bit_identical_for_any_thread_count(kind, monkeypatch):
    rng = np.random.default_rng([SEED, 99])
    lengths = rng.integers(1, 120, size=40)
    offsets = offsets_of(lengths, int(lengths.sum()))
    X = rng.normal(size=(int(lengths.sum()), 2))
    emission, params = _emission(kind, rng, X, 5)
    log_transmat, log_startprob = _model(rng, 5)
    inputs = (None, params[1], 6) if kind == "table" else (np.hstack([X, X * X]), None, 0)
    outs = []
    for n in (1, 2):
        monkeypatch.setattr(avicore._config, "_num_threads", n)
        monkeypatch.setattr(hmm_em, "_threads", lambda n_rows, n_states, n=n: n)  # small data: force n threads
        outs.append(hmm_em.em_sums("cython", emission, log_transmat, log_startprob, offsets, *inputs))
    for field in FIELDS:
        a, b = getattr(outs[0], field), getattr(outs[1], field)
        if a is not None:
            assert_array_equal(a, b, err_msg=field)


def test_chunks_run_longest_first_and_every_chunk_once():
    offsets = offsets_of([5, 100, 3, 100, 7], 215)
    chunks = np.array([0, 1, 2, 4, 5], dtype=np.int64)  # rows per chunk: 5, 100, 103, 7
    assert kh.chunk_order(offsets, chunks).tolist() == [2, 1, 3, 0]


def test_small_batches_run_on_fewer_threads(monkeypatch):
    monkeypatch.setattr(avicore._config, "_num_threads", 8)
    assert hmm_em._threads(10_000, 10) == 1  # ~3 ms of work: not worth a fork/join per EM iteration
    assert hmm_em._threads(10**6, 10) == 8
    assert hmm_em._threads(10_000, 50) == 8  # 25x the work per row
