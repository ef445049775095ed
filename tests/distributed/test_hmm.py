"""HMM kernels and emissions on dask arrays equal the in-process calls; chunks must hold whole sequences."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore import emissions, hmm
from avicore.distributed import rechunk_to_sequences

from ..tolerances import tol


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    n_states, lengths = 3, rng.integers(5, 40, size=12)
    log_lik = rng.normal(size=(int(lengths.sum()), n_states))
    transmat = rng.dirichlet(np.ones(n_states), size=n_states)
    startprob = rng.dirichlet(np.ones(n_states))
    return log_lik, np.log(transmat), np.log(startprob), lengths


def test_forward_backward_and_viterbi_on_sequence_chunks(problem, dask_client):
    log_lik, log_transmat, log_startprob, lengths = problem
    dll = rechunk_to_sequences(da.from_array(log_lik, chunks=(60, 3)), lengths)
    assert len(dll.chunks[0]) > 2
    with dask_client.as_current():
        res = hmm.forward_backward(dll, log_transmat, log_startprob, lengths, backend="cython")
        ref = hmm.forward_backward(log_lik, log_transmat, log_startprob, lengths, backend="cython")
        assert isinstance(res.posteriors, da.Array) and isinstance(res.log_likelihood, np.ndarray)
        assert_allclose(res.log_likelihood, ref.log_likelihood, **tol())
        assert_allclose(res.transition_counts, ref.transition_counts, **tol())
        assert_allclose(res.initial_counts, ref.initial_counts, **tol())
        assert_allclose(res.posteriors.compute(), ref.posteriors, **tol())
        log_prob, states = hmm.viterbi(dll, log_transmat, log_startprob, lengths, backend="numba")
        ref_prob, ref_states = hmm.viterbi(log_lik, log_transmat, log_startprob, lengths, backend="numba")
        assert_allclose(log_prob, ref_prob, **tol())
        assert_array_equal(states.compute(), ref_states)


def test_a_chunk_splitting_a_sequence_is_named(problem):
    log_lik, log_transmat, log_startprob, lengths = problem
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cut = int(offsets[4]) + 2  # chunk 1 ends two rows into sequence 4
    dll = da.from_array(log_lik, chunks=((int(offsets[2]), cut - int(offsets[2]), log_lik.shape[0] - cut), (3,)))
    msg = (rf"log_lik chunks must end on sequence boundaries; got chunk 1 \(rows {offsets[2]}–{cut - 1}\) ending "
           rf"inside sequence 4 \(rows {offsets[4]}–{offsets[5] - 1}\)\. Rechunk with "
           r"avicore\.distributed\.rechunk_to_sequences")
    with pytest.raises(ValueError, match=msg):
        hmm.forward_backward(dll, log_transmat, log_startprob, lengths)
    with pytest.raises(ValueError, match="lengths must be given for a dask log_lik"):
        hmm.viterbi(dll, log_transmat, log_startprob)


def test_rechunk_to_sequences_keeps_whole_sequences():
    lengths = np.array([3, 5, 2, 7, 1, 4])
    x = da.arange(int(lengths.sum()), chunks=5)
    sizes = rechunk_to_sequences(x, lengths, rows_per_chunk=6).chunks[0]
    assert sizes == (8, 9, 5)  # 3+5 ≥ 6, 2+7 ≥ 6, then the rest
    with pytest.raises(ValueError, match=r"lengths must sum to n_samples=22; got sum\(lengths\)=21"):
        rechunk_to_sequences(x, [*lengths[:-1].tolist(), 3])


def test_emissions_on_dask_arrays(dask_client):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(90, 2))
    dX = da.from_array(X, chunks=(25, 2))
    means, variances = rng.normal(size=(3, 2)), rng.uniform(0.5, 2.0, size=(3, 2))
    covs = np.stack([np.eye(2) * v for v in (1.0, 2.0, 0.5)])
    symbols = rng.integers(0, 4, size=90)
    log_emission = np.log(rng.dirichlet(np.ones(4), size=3))
    counts = rng.poisson(2.0, size=(90, 2))
    rates = rng.uniform(0.5, 3.0, size=(3, 2))
    cases = [(emissions.gaussian_diag_log_lik, X, (means, variances)),
             (emissions.gaussian_diag_log_lik, X[:, 0], (means[:, :1], variances[:, :1])),
             (emissions.gaussian_full_log_lik, X, (means, covs)),
             (emissions.categorical_log_lik, symbols, (log_emission,)),
             (emissions.poisson_log_lik, counts, (rates,))]
    for fn, data, params in cases:
        out = fn(da.from_array(data, chunks=25), *params)
        assert isinstance(out, da.Array) and out.chunks[0] == (25, 25, 25, 15)
        assert_allclose(dask_client.compute(out).result(), fn(data, *params), **tol(), err_msg=fn.__name__)
    with pytest.raises(ValueError, match="variances"):
        emissions.gaussian_diag_log_lik(dX, means, -variances)  # checked before anything runs
