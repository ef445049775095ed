"""GPU arrays in, GPU arrays out: every public kernel entry point given device arrays (Numba device arrays of the
CUDA simulator here; CuPy/PyTorch/JAX on a GPU) computes on the device, returns device arrays, and agrees with
independent references (enumeration, scipy.stats) and the NumPy backend. Device inputs are validated where they
live: shape and dtype on the host, values on the device."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from avicore import _config, _device, chain, emissions, hmm, quadrature
from avicore.gp.likelihoods import Bernoulli, Poisson, StudentT
from tests.reference import enumerate_hmm, random_problem
from tests.tolerances import tol

pytestmark = pytest.mark.cuda
NINF = -np.inf


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 4)  # the simulator runs every thread in Python


def host(x):
    assert _device.is_device_array(x), f"expected a device array, got {type(x).__name__}"
    return _device.to_host(x, "result")


def dev(x):
    return cuda.to_device(np.ascontiguousarray(x))


# ----- HMM -----

def test_forward_backward_device_matches_enumeration(rng):
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [3, 1, 4], 3, sparse=True)
    log_lik[4, 1] -= 2000.0  # the third sequence needs the log-space pass
    got = hmm.forward_backward(dev(log_lik), dev(log_transmat), log_startprob, lengths)
    want = enumerate_hmm(log_lik, log_transmat, log_startprob, lengths)
    assert_allclose(host(got.log_likelihood), want.log_likelihood, **tol())
    assert_allclose(host(got.posteriors), want.posteriors, **tol())
    assert_allclose(host(got.transition_counts), want.transition_counts, **tol())
    assert_allclose(host(got.initial_counts), want.initial_counts, **tol())
    assert_allclose(got.total_log_likelihood, want.log_likelihood.sum(), **tol())


def test_viterbi_and_sampling_device_match_the_host_backends(rng):
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [4, 3], 3)
    log_prob, states = hmm.viterbi(dev(log_lik), log_transmat, log_startprob, dev(np.array(lengths)))
    want = enumerate_hmm(log_lik, log_transmat, log_startprob, lengths)
    assert_array_equal(host(states), want.viterbi_states)
    assert_allclose(host(log_prob), want.viterbi_log_prob, **tol())
    samples = hmm.sample_posterior(dev(log_lik), log_transmat, log_startprob, lengths, n_samples=5, seed=7)
    assert_array_equal(host(samples), hmm.sample_posterior(log_lik, log_transmat, log_startprob, lengths,
                                                           n_samples=5, seed=7, backend="numpy"))


def test_impossible_sequence_warns_on_the_device_path(rng):
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [2, 3], 2)
    log_lik[3, :] = NINF
    with pytest.warns(hmm.ImpossibleSequenceWarning, match=r"sequence \(1\) has no state path") as rec:
        res = hmm.forward_backward(dev(log_lik), log_transmat, log_startprob, lengths)
    assert rec[0].message.sequences == (1,)
    assert_array_equal(host(res.log_likelihood)[1], NINF)
    with pytest.warns(hmm.ImpossibleSequenceWarning, match="its sampled states are -1"):
        samples = hmm.sample_posterior(dev(log_lik), log_transmat, log_startprob, lengths, n_samples=2, seed=0)
    assert_array_equal(host(samples)[:, 2:], -1)


def test_device_inputs_are_checked_where_they_live(rng):
    log_lik, log_transmat, log_startprob, _ = random_problem(rng, [4], 2)
    bad = log_lik.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"log_lik must not contain NaN or \+inf; got nan at index \(2, 1\)"):
        hmm.forward_backward(dev(bad), log_transmat, log_startprob)
    with pytest.raises(TypeError, match="log_lik must be a device array of dtype float64; got dtype float32"):
        hmm.viterbi(dev(log_lik.astype(np.float32)), log_transmat, log_startprob)
    with pytest.raises(TypeError, match="log_lik must be a C-contiguous device array"):
        hmm.viterbi(dev(np.hstack([log_lik, log_lik]))[:, ::2], log_transmat, log_startprob)
    with pytest.raises(ValueError, match=r"log_lik must be 2-dimensional; got shape \(4,\)"):
        hmm.viterbi(dev(log_lik[:, 0]), log_transmat, log_startprob)
    with pytest.raises(ValueError, match=r"backend must be 'auto' or 'cuda' for GPU .* got 'cython'"):
        hmm.forward_backward(dev(log_lik), log_transmat, log_startprob, backend="cython")
    with pytest.raises(ValueError, match="lengths must sum to n_samples=4"):
        hmm.forward_backward(dev(log_lik), log_transmat, log_startprob, [1, 2])


# ----- emissions: against scipy.stats -----

def test_emissions_device_match_scipy(rng):
    x = rng.normal(size=(5, 2))
    means = rng.normal(size=(3, 2))
    variances = rng.uniform(0.5, 2.0, size=(3, 2))
    want = np.stack([stats.norm.logpdf(x, means[k], np.sqrt(variances[k])).sum(axis=1) for k in range(3)], axis=1)
    assert_allclose(host(emissions.gaussian_diag_log_lik(dev(x), means, dev(variances))), want, **tol())
    b = rng.normal(size=(3, 2, 2))
    covs = b @ b.transpose(0, 2, 1) + np.eye(2)
    want = np.stack([stats.multivariate_normal.logpdf(x, means[k], covs[k]) for k in range(3)], axis=1)
    assert_allclose(host(emissions.gaussian_full_log_lik(dev(x), means, covs)), want, **tol())
    counts = rng.integers(0, 6, size=(5, 2)).astype(np.float64)
    rates = rng.uniform(0.5, 3.0, size=(3, 2))
    want = np.stack([stats.poisson.logpmf(counts, rates[k]).sum(axis=1) for k in range(3)], axis=1)
    assert_allclose(host(emissions.poisson_log_lik(dev(counts), rates)), want, **tol())
    symbols = rng.integers(0, 4, size=6)
    log_b = np.log(rng.dirichlet(np.ones(4), size=3))
    assert_array_equal(host(emissions.categorical_log_lik(dev(symbols), log_b)), log_b[:, symbols].T)


def test_emission_device_values_are_checked():
    with pytest.raises(ValueError, match=r"symbols must lie in \[0, 2\) .*; got 2 at index \(1,\)"):
        emissions.categorical_log_lik(dev(np.array([0, 2])), np.log([[0.5, 0.5]]))
    with pytest.raises(ValueError, match=r"X must hold non-negative integer counts; got 0.5 at index \(0, 0\)"):
        emissions.poisson_log_lik(dev(np.array([[0.5]])), [[1.0]])
    with pytest.raises(ValueError, match=r"variances must be > 0"):
        emissions.gaussian_diag_log_lik(dev(np.zeros((2, 1))), [[0.0]], [[0.0]])


# ----- quadrature and chain: against the NumPy backend -----

@pytest.mark.parametrize("likelihood", [Bernoulli("logit"), Poisson(), StudentT(3.0, 0.7)], ids=repr)
def test_expected_log_lik_device_matches_numpy(rng, likelihood):
    n = 6
    y = {"Bernoulli": rng.integers(0, 2, n), "Poisson": rng.integers(0, 5, n)}.get(
        type(likelihood).__name__, rng.normal(size=n)).astype(np.float64)
    mean, var = rng.normal(size=n), rng.uniform(0.0, 2.0, size=n)
    got = quadrature.expected_log_lik(likelihood, dev(y), dev(mean), dev(var), n_points=8)
    want = quadrature.expected_log_lik(likelihood, y, mean, var, n_points=8, backend="numpy")
    for field in ("value", "grad_mean", "grad_var"):
        assert_allclose(host(getattr(got, field)), getattr(want, field), **tol())


@pytest.mark.parametrize("likelihood", [Bernoulli("logit"), Bernoulli("probit"), StudentT(0.5, 1.0)], ids=repr)
def test_expected_log_lik_device_uses_the_composite_rule_for_wide_factors(likelihood):
    """Factors far wider than the likelihood's feature (var up to 1e4) take the host backends' composite rule on
    the device path too, so every backend agrees there as well."""
    y = np.array([1.0, 0.0, 1.0, 0.0]) if isinstance(likelihood, Bernoulli) else np.array([0.3, -1.0, 2.0, 0.0])
    mean, var = np.array([0.5, -2.0, 3.0, 0.0]), np.array([0.01, 50.0, 1e4, 2.0])
    got = quadrature.expected_log_lik(likelihood, dev(y), dev(mean), dev(var))
    want = quadrature.expected_log_lik(likelihood, y, mean, var, backend="numpy")
    for field in ("value", "grad_mean", "grad_var"):
        assert_allclose(host(getattr(got, field)), getattr(want, field), **tol())


def test_expected_log_lik_device_checks():
    ones = dev(np.ones(2))
    with pytest.raises(ValueError, match=r"y must contain only 0 and 1 for a Bernoulli likelihood; got 2.0"):
        quadrature.expected_log_lik(Bernoulli("logit"), dev(np.array([0.0, 2.0])), ones, ones)
    with pytest.raises(ValueError, match=r"var must be finite and >= 0 \(variances\); got -1.0 at index \(1,\)"):
        quadrature.expected_log_lik(Bernoulli("logit"), ones, ones, dev(np.array([1.0, -1.0])))
    with pytest.raises(TypeError, match="mean must be a device array like the other arrays"):
        quadrature.expected_log_lik(Bernoulli("logit"), ones, np.ones(2), ones)


@pytest.mark.parametrize("d,p", [(1, 1), (2, 1)])
def test_chain_smoother_device_matches_numpy(rng, d, p):
    A = 0.8 * np.eye(d) + 0.1
    C = rng.normal(size=(p, d))
    x = rng.normal(size=(7, p))
    params = (A, np.eye(d), C, 0.5 * np.eye(p), np.zeros(d), np.eye(d))
    got = chain.smoother(dev(x), *params, lengths=[3, 4])
    want = chain.smoother(x, *params, lengths=[3, 4], backend="numpy")
    for field in ("means", "covariances", "cross_covariances", "log_evidence"):
        assert_allclose(host(getattr(got, field)), getattr(want, field), **tol())
    assert_array_equal(got.offsets, want.offsets)
    with pytest.raises(ValueError, match=r"x must be finite; got inf at index \(1, 0\)"):
        x[1, 0] = np.inf
        chain.smoother(dev(x), *params)
