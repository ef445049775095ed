"""avicore.gp.likelihoods: log p(y | f) against scipy.stats, simulation moments, support checks."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats
from scipy.special import expit

from avicore.gp.likelihoods import Bernoulli, Gaussian, Likelihood, Poisson, StudentT

F = np.array([-3.0, -0.4, 0.0, 1.2, 5.0])


def test_gaussian_log_prob_matches_scipy():
    y = np.array([0.1, -1.0, 2.0, 1.2, 4.0])
    assert_allclose(Gaussian(0.7).log_prob(y, F), stats.norm.logpdf(y, F, np.sqrt(0.7)), rtol=1e-14)


def test_poisson_log_prob_matches_scipy():
    y = np.array([0.0, 1.0, 3.0, 2.0, 150.0])
    assert_allclose(Poisson().log_prob(y, F), stats.poisson.logpmf(y, np.exp(F)), rtol=1e-13)


@pytest.mark.parametrize("link, cdf", [("logit", expit), ("probit", stats.norm.cdf)])
def test_bernoulli_log_prob_matches_scipy(link, cdf):
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    # P(y = 1 | f) = 1 − cdf(−f), P(y = 0 | f) = 1 − cdf(f) for both links: log1p keeps full precision
    assert_allclose(Bernoulli(link).log_prob(y, F), np.where(y == 1, np.log1p(-cdf(-F)), np.log1p(-cdf(F))),
                    rtol=1e-13)
    assert_allclose(Bernoulli(link).log_prob(y[:3], F[:3]), stats.bernoulli.logpmf(y[:3], cdf(F[:3])), rtol=1e-12)


def test_bernoulli_log_prob_is_stable_far_in_the_tails():
    # log σ(−800) = −800 − log1p(e^−800); log Φ(−x) = −x²/2 − log(x √2π) + log(1 − 1/x² + 3/x⁴ − …)
    assert_allclose(Bernoulli("logit").log_prob(1.0, -800.0), -800.0, rtol=1e-15)
    x = 800.0
    want = -x * x / 2 - np.log(x * np.sqrt(2 * np.pi)) + np.log1p(-1 / x**2 + 3 / x**4)
    assert_allclose(Bernoulli("probit").log_prob(0.0, x), want, rtol=1e-14)


def test_student_t_log_prob_matches_scipy():
    y = np.array([0.1, -1.0, 2.0, 1.2, 40.0])
    assert_allclose(StudentT(2.5, 0.6).log_prob(y, F), stats.t.logpdf(y, 2.5, loc=F, scale=0.6), rtol=1e-13)


def test_log_prob_broadcasts_and_keeps_scalar_shape():
    assert Gaussian().log_prob(0.0, 0.0).shape == ()
    assert Bernoulli().log_prob(np.array([[1.0], [0.0]]), F).shape == (2, 5)


def test_samples_have_the_right_moments():
    f = np.full(200_000, 0.4)
    rng = 123
    assert_allclose(Gaussian(0.5).sample(f, rng).var(), 0.5, rtol=0.02)
    assert_allclose(Poisson().sample(f, rng).mean(), np.exp(0.4), rtol=0.01)
    assert_allclose(Bernoulli("logit").sample(f, rng).mean(), expit(0.4), rtol=0.01)
    assert_allclose(Bernoulli("probit").sample(f, rng).mean(), stats.norm.cdf(0.4), rtol=0.01)
    t = StudentT(5.0, 0.5).sample(f, rng)
    assert stats.kstest((t - 0.4) / 0.5, stats.t(5.0).cdf).pvalue > 1e-3


def test_samples_are_reproducible_and_in_the_support():
    f = np.linspace(-2, 2, 50)
    for lik in (Gaussian(), Poisson(), Bernoulli(), Bernoulli("probit"), StudentT()):
        a, b = lik.sample(f, seed=7), lik.sample(f, seed=np.random.default_rng(7))
        assert np.array_equal(a, b)
        assert a.shape == f.shape and a.dtype == np.float64
        lik.check_y(a)  # every draw passes the support check


def test_params_round_trip():
    for lik in (Gaussian(0.3), StudentT(4.0, 0.2), Poisson(), Bernoulli()):
        back = lik.with_params(lik.params)
        assert type(back) is type(lik)
        assert_allclose(back.params, lik.params, rtol=1e-15)
        assert len(lik.param_names) == lik.params.size
    assert_allclose(Gaussian(0.3).params, np.log([0.3]))
    assert Gaussian(2.0).with_params([0.0]).noise == 1.0


def test_check_y_accepts_the_support():
    assert_allclose(Bernoulli().check_y([True, False]), [1.0, 0.0])
    assert_allclose(Poisson().check_y([0, 3, 12.0]), [0.0, 3.0, 12.0])
    assert isinstance(Poisson(), Likelihood)


@pytest.mark.parametrize("call, err, match", [
    (lambda: Bernoulli().check_y([0.0, 0.5]), ValueError,
     r"y must contain only 0 and 1 for a Bernoulli likelihood; got 0\.5 at index 1\."),
    (lambda: Bernoulli("probit").check_y([-1.0]), ValueError, r"got -1\.0 at index 0\."),
    (lambda: Poisson().check_y([2.0, -3.0]), ValueError,
     r"y must contain non-negative integers \(counts\) for a Poisson likelihood; got -3\.0 at index 1\."),
    (lambda: Poisson().check_y([2.5]), ValueError, r"got 2\.5 at index 0\."),
    (lambda: Gaussian().check_y([0.0, np.inf]), ValueError, r"y must not contain NaN or infinite values"),
    (lambda: Gaussian().check_y([[0.0]]), ValueError, r"y must be 1-dimensional; got shape \(1, 1\)\."),
    (lambda: Gaussian().log_prob(0.0, np.nan), ValueError, r"f must not contain NaN or infinite values"),
    (lambda: Bernoulli().log_prob(2.0, 0.0), ValueError, r"y must contain only 0 and 1"),
    (lambda: Gaussian(0.0), ValueError, r"noise must be > 0; got 0\.0\."),
    (lambda: Gaussian("1"), TypeError, r"noise must be a real number; got str '1'\."),
    (lambda: StudentT(df=-1.0), ValueError, r"df must be > 0; got -1\.0\."),
    (lambda: StudentT(scale=0.0), ValueError, r"scale must be > 0; got 0\.0\."),
    (lambda: Bernoulli("tanh"), ValueError, r"link must be one of \('logit', 'probit'\); got 'tanh'\."),
    (lambda: Poisson().sample([50.0]), ValueError, r"f must be <= 40\.0 to draw Poisson counts"),
    (lambda: Gaussian().with_params([0.0, 1.0]), ValueError, r"params must have shape \(1,\)"),
    (lambda: Gaussian().sample([0.0], seed=-1), ValueError, r"seed must be a non-negative integer"),
])
def test_bad_input_is_rejected(call, err, match):
    with pytest.raises(err, match=match):
        call()
