"""Emission log-likelihoods (avicore.emissions) against scipy.stats, and end to end against hmmlearn's models."""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from numpy.testing import assert_allclose
from scipy import stats

from avicore.emissions import categorical_log_lik, gaussian_diag_log_lik, gaussian_full_log_lik, poisson_log_lik
from avicore.hmm import forward_backward


def test_gaussian_diag_matches_scipy(rng):
    X = rng.normal(size=(300, 3)) * 2.0
    means = rng.normal(size=(4, 3))
    variances = rng.uniform(0.2, 3.0, size=(4, 3))
    got = gaussian_diag_log_lik(X, means, variances)
    want = np.stack([stats.norm.logpdf(X, means[k], np.sqrt(variances[k])).sum(axis=1) for k in range(4)], axis=1)
    assert got.shape == (300, 4) and got.flags.c_contiguous
    assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_gaussian_diag_is_accurate_far_from_the_origin(rng):
    # Data at 1e6 with variances 1e-2: expanding the square would cancel ~1e14-sized terms.
    X = 1e6 + rng.normal(size=(50, 1)) * 0.1
    means = np.array([[1e6], [1e6 + 0.05]])
    variances = np.array([[1e-2], [2e-2]])
    want = np.stack([stats.norm.logpdf(X[:, 0], means[k, 0], np.sqrt(variances[k, 0])) for k in range(2)], axis=1)
    assert_allclose(gaussian_diag_log_lik(X, means, variances), want, rtol=1e-9, atol=1e-9)


def test_one_dimensional_observations_are_one_feature(rng):
    x = rng.normal(size=20)
    assert_allclose(gaussian_diag_log_lik(x, [0.0, 1.0], [1.0, 2.0]),
                    gaussian_diag_log_lik(x[:, None], [[0.0], [1.0]], [[1.0], [2.0]]), rtol=0, atol=0)


def test_gaussian_full_matches_scipy(rng):
    D, K = 3, 3
    X = rng.normal(size=(200, D))
    means = rng.normal(size=(K, D))
    covs = []
    for _ in range(K):
        M = rng.normal(size=(D, D))
        covs.append(M @ M.T + 0.5 * np.eye(D))
    got = gaussian_full_log_lik(X, means, np.array(covs))
    want = np.stack([stats.multivariate_normal(means[k], covs[k]).logpdf(X) for k in range(K)], axis=1)
    assert_allclose(got, want, rtol=1e-11, atol=1e-11)
    diag = np.array([np.diag(np.diag(c)) for c in covs])  # a diagonal full covariance agrees with the diag helper
    assert_allclose(gaussian_full_log_lik(X, means, diag),
                    gaussian_diag_log_lik(X, means, np.array([np.diag(c) for c in covs])), rtol=1e-12)


def test_categorical_picks_the_emission_column(rng):
    probs = rng.dirichlet(np.ones(5), size=3)
    symbols = rng.integers(0, 5, size=40)
    got = categorical_log_lik(symbols, np.log(probs))
    assert_allclose(np.exp(got), probs[:, symbols].T, rtol=1e-14)


def test_poisson_matches_scipy(rng):
    rates = rng.uniform(0.5, 8.0, size=(4, 2))
    X = rng.poisson(3.0, size=(100, 2))
    want = np.stack([stats.poisson.logpmf(X, rates[k]).sum(axis=1) for k in range(4)], axis=1)
    assert_allclose(poisson_log_lik(X, rates), want, rtol=1e-12, atol=1e-12)
    assert_allclose(poisson_log_lik(X.astype(float), rates), want, rtol=1e-12, atol=1e-12)


def test_gaussian_hmm_end_to_end_matches_hmmlearn(rng):
    K, D = 3, 2
    model = GaussianHMM(n_components=K, covariance_type="diag")
    model.startprob_ = rng.dirichlet(np.ones(K))
    model.transmat_ = rng.dirichlet(np.ones(K), size=K)
    model.means_ = rng.normal(size=(K, D)) * 3
    variances = rng.uniform(0.5, 2.0, size=(K, D))
    model.covars_ = variances
    X = rng.normal(size=(120, D)) * 3
    lengths = [50, 1, 69]
    log_prob, post = model.score_samples(X, lengths)
    res = forward_backward(gaussian_diag_log_lik(X, model.means_, variances), np.log(model.transmat_),
                           np.log(model.startprob_), lengths)
    assert_allclose(res.total_log_likelihood, log_prob, rtol=1e-11)
    assert_allclose(res.posteriors, post, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("fn, args, exc, match", [
    (gaussian_diag_log_lik, (np.zeros((3, 2)), np.zeros((2, 3)), np.ones((2, 3))), ValueError,
     r"means must have shape \(n_states, 2\); got \(2, 3\)"),
    (gaussian_diag_log_lik, (np.zeros((3, 2)), np.zeros((2, 2)), np.ones((2, 1))), ValueError,
     r"variances must have shape \(2, 2\) \(like means\); got \(2, 1\)"),
    (gaussian_diag_log_lik, (np.zeros((3, 2)), np.zeros((2, 2)), np.zeros((2, 2))), ValueError,
     r"variances must be > 0; got min 0.0"),
    (gaussian_diag_log_lik, (np.array([[np.nan]]), [[0.0]], [[1.0]]), ValueError,
     r"X must not contain NaN or infinite values"),
    (gaussian_full_log_lik, (np.zeros((3, 2)), np.zeros((1, 2)), np.eye(2)[None] * -1), ValueError,
     r"covariances\[0\] must be positive-definite"),
    (gaussian_full_log_lik, (np.zeros((3, 2)), np.zeros((1, 2)), np.eye(2)), ValueError,
     r"covariances must have shape \(1, 2, 2\); got \(2, 2\)"),
    (categorical_log_lik, ([0, 3], np.log([[0.5, 0.5]])), ValueError,
     r"symbols must lie in \[0, 2\) \(n_symbols = log_emissionprob.shape\[1\]\); got symbols\[1\]=3"),
    (categorical_log_lik, ([0.0, 1.0], np.log([[0.5, 0.5]])), TypeError, r"symbols must contain integers"),
    (categorical_log_lik, ([0, 1], np.log([[0.5, 0.6]])), ValueError,
     r"each row of exp\(log_emissionprob\) must sum to 1 within 1e-08; got row 0 summing to 1.1"),
    (poisson_log_lik, (np.array([[1.5]]), [[1.0]]), ValueError, r"X must hold non-negative integer counts"),
    (poisson_log_lik, (np.array([[1]]), [[0.0]]), ValueError, r"rates must be > 0; got min 0.0"),
    (poisson_log_lik, (np.array([[1, 2]]), [[1.0]]), ValueError, r"rates must have shape \(n_states, 2\)"),
    # issue 18, found by hand: a subnormal variance made 1/var overflow (NaN out); 0 features gave zeros;
    # boolean counts were read as 0/1.
    (gaussian_diag_log_lik, (np.zeros((1, 1)), [[0.0]], [[5e-309]]), ValueError,
     r"variances must be >= 2\.2250738585072014e-308 \(the smallest normal float64; 1/variance must not "
     r"overflow\); got min 5e-309"),
    (gaussian_diag_log_lik, (np.zeros((3, 0)), np.zeros((2, 0)), np.ones((2, 0))), ValueError,
     r"X must hold at least one sample and one feature; got shape \(3, 0\)"),
    (gaussian_full_log_lik, (np.zeros((3, 0)), np.zeros((2, 0)), np.ones((2, 0, 0))), ValueError,
     r"X must hold at least one sample and one feature; got shape \(3, 0\)"),
    (poisson_log_lik, (np.zeros((3, 0)), np.ones((2, 0))), ValueError,
     r"X must hold at least one sample and one feature; got shape \(3, 0\)"),
    (poisson_log_lik, (np.array([[True, False]]), [[1.0, 1.0]]), TypeError,
     r"X must hold integer counts; got dtype bool"),
    (poisson_log_lik, ([[True]], [[1.0]]), TypeError, r"X must hold integer counts; got dtype bool"),
])
def test_bad_emission_input_raises(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)


def test_gaussian_diag_at_the_smallest_normal_variance_is_finite():
    """The smallest accepted variance gives the closed form, as the full-covariance version does."""
    var = np.finfo(np.float64).tiny
    got = gaussian_diag_log_lik(np.zeros((1, 1)), [[0.0]], [[var]])
    assert_allclose(got, [[-0.5 * (np.log(2 * np.pi) + np.log(var))]], rtol=1e-14)
    assert_allclose(got, gaussian_full_log_lik(np.zeros((1, 1)), [[0.0]], [[[var]]]), rtol=1e-14)
