"""avicore.gp.exact: Gaussian-likelihood references and the jittered Cholesky.

References: dense SciPy linear algebra (inverses, solves, multivariate_normal.logpdf), the ELBO identity
ELBO(posterior) = log p(y), a Monte-Carlo ELBO, finite differences (marginal-likelihood gradients, stationarity
of the mean-field optimum).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import linalg, stats

from avicore.gp.exact import (
    CholeskyError,
    JitterWarning,
    gaussian_elbo,
    jittered_cholesky,
    log_marginal_likelihood,
    log_marginal_likelihood_grad,
    mean_field_optimum,
    posterior,
)
from avicore.gp.kernels import RBF, Matern32, Periodic

NOISE = 0.25


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    x = np.sort(rng.uniform(0, 5, 30))
    kernel = Matern32(1.3, 0.9) + Periodic(0.4, 1.0, 2.0)
    K = kernel(x)
    f = rng.multivariate_normal(np.zeros(x.size), K)
    y = f + np.sqrt(NOISE) * rng.standard_normal(x.size)
    return kernel, x, K, y


def test_posterior_matches_dense_conditioning(problem):
    _, _, K, y = problem
    post = posterior(K, y, NOISE)
    C = K + NOISE * np.eye(len(y))
    assert_allclose(post.mean, K @ linalg.solve(C, y), rtol=1e-9, atol=1e-10)
    assert_allclose(post.cov, K - K @ linalg.solve(C, K), rtol=1e-9, atol=1e-10)
    # the precision form: Σ = (K⁻¹ + σ⁻²I)⁻¹, μ = Σ y / σ²
    cov_prec = linalg.inv(linalg.inv(K) + np.eye(len(y)) / NOISE)
    assert_allclose(post.cov, cov_prec, rtol=1e-7, atol=1e-8)
    assert_allclose(post.mean, cov_prec @ y / NOISE, rtol=1e-7, atol=1e-8)
    assert np.array_equal(post.cov, post.cov.T)


def test_log_marginal_likelihood_matches_scipy(problem):
    _, _, K, y = problem
    want = stats.multivariate_normal(np.zeros(len(y)), K + NOISE * np.eye(len(y))).logpdf(y)
    assert_allclose(log_marginal_likelihood(K, y, NOISE), want, rtol=1e-12)


def test_log_marginal_likelihood_gradient_matches_finite_differences(problem):
    kernel, x, _, y = problem
    K, dK = kernel.gram_and_grads(x)
    value, grad = log_marginal_likelihood_grad(K, dK, y, NOISE)
    assert_allclose(value, log_marginal_likelihood(K, y, NOISE), rtol=1e-14)
    theta = np.concatenate([kernel.params, [np.log(NOISE)]])

    def lml(t):
        return log_marginal_likelihood(kernel.with_params(t[:-1])(x), y, float(np.exp(t[-1])))

    h = 1e-6
    fd = np.array([(lml(theta + h * e) - lml(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


def test_elbo_of_the_posterior_is_the_log_marginal_likelihood(problem):
    _, _, K, y = problem
    post = posterior(K, y, NOISE)
    assert_allclose(gaussian_elbo(K, y, NOISE, post.mean, post.cov), log_marginal_likelihood(K, y, NOISE),
                    rtol=1e-10)


def test_elbo_matches_monte_carlo(problem):
    _, _, K, y = problem
    n = len(y)
    rng = np.random.default_rng(0)
    mean = rng.normal(size=n) * 0.3
    A = rng.normal(size=(n, n)) * 0.1
    cov = A @ A.T + 0.05 * np.eye(n)
    var = rng.uniform(0.05, 0.3, n)
    prior = stats.multivariate_normal(np.zeros(n), K)
    for S in (cov, np.diag(var)):
        q = stats.multivariate_normal(mean, S)
        f = q.rvs(size=60_000, random_state=1)
        lik = stats.norm.logpdf(y, f, np.sqrt(NOISE)).sum(axis=1)
        terms = lik + prior.logpdf(f) - q.logpdf(f)
        se = terms.std() / np.sqrt(terms.size)
        got = gaussian_elbo(K, y, NOISE, mean, S if S is cov else var)
        assert abs(got - terms.mean()) < 5 * se, (got, terms.mean(), se)


def test_mean_field_optimum_matches_the_precision_diagonal(problem):
    _, _, K, y = problem
    opt = mean_field_optimum(K, y, NOISE)
    precision = linalg.inv(K) + np.eye(len(y)) / NOISE
    assert_allclose(opt.var, 1.0 / np.diag(precision), rtol=1e-8)
    assert_allclose(opt.mean, posterior(K, y, NOISE).mean, rtol=1e-12)
    assert (opt.var <= np.diag(posterior(K, y, NOISE).cov) * (1 + 1e-10)).all()
    assert_allclose(opt.elbo, gaussian_elbo(K, y, NOISE, opt.mean, opt.var), rtol=1e-14)
    assert opt.elbo < log_marginal_likelihood(K, y, NOISE)


def test_mean_field_optimum_is_a_stationary_point_of_the_elbo(problem):
    _, _, K, y = problem
    opt = mean_field_optimum(K, y, NOISE)
    h = 1e-5
    for i in (0, 7, 29):
        e = np.zeros(len(y))
        e[i] = h
        d_mean = (gaussian_elbo(K, y, NOISE, opt.mean + e, opt.var)
                  - gaussian_elbo(K, y, NOISE, opt.mean - e, opt.var)) / (2 * h)
        d_logvar = (gaussian_elbo(K, y, NOISE, opt.mean, opt.var * np.exp(e))
                    - gaussian_elbo(K, y, NOISE, opt.mean, opt.var * np.exp(-e))) / (2 * h)
        assert abs(d_mean) < 1e-5 and abs(d_logvar) < 1e-5, (i, d_mean, d_logvar)
    # and any other mean-field q is worse
    assert gaussian_elbo(K, y, NOISE, opt.mean + 0.01, opt.var) < opt.elbo
    assert gaussian_elbo(K, y, NOISE, opt.mean, opt.var * 1.1) < opt.elbo


def test_jittered_cholesky_is_exact_for_a_positive_definite_matrix():
    A = np.array([[4.0, 2.0, 0.4], [2.0, 3.0, 0.5], [0.4, 0.5, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        L, jitter = jittered_cholesky(A)
    assert jitter == 0.0
    assert_allclose(L, linalg.cholesky(A, lower=True), rtol=1e-15)


def test_jittered_cholesky_adds_jitter_and_warns_for_a_singular_matrix():
    x = np.linspace(0.0, 1.0, 20)  # a smooth kernel on dense inputs: numerically singular
    K = RBF(2.0, 1.0)(x)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(K)
    with pytest.warns(JitterWarning, match=r"K is not numerically positive-definite; added jitter \S+ \(1\.0e-\d+ "
                                           r"of its mean diagonal\) to its diagonal"):
        L, jitter = jittered_cholesky(K)
    assert 0 < jitter <= 1e-3 * 2.0
    assert_allclose(L @ L.T, K + jitter * np.eye(len(x)), rtol=1e-12, atol=1e-14)


def test_references_warn_and_stay_finite_for_a_singular_prior():
    x = np.linspace(0.0, 1.0, 20)
    K = RBF(2.0, 1.0)(x)
    y = np.sin(3 * x)
    with pytest.warns(JitterWarning):
        opt = mean_field_optimum(K, y, NOISE)
    assert np.isfinite(opt.mean).all() and np.isfinite(opt.var).all() and np.isfinite(opt.elbo)
    assert opt.elbo < log_marginal_likelihood(K, y, NOISE)


def test_jittered_cholesky_raises_clearly_for_an_indefinite_matrix():
    A = np.array([[1.0, 0.0], [0.0, -1.0]])
    with pytest.raises(CholeskyError, match=r"K must be positive-definite; the Cholesky factorisation failed even "
                                            r"with jitter 0\.001 added to the diagonal \(smallest eigenvalue -1\)\.") \
            as info:
        jittered_cholesky(A)
    assert info.value.jitter == pytest.approx(1e-3)


@pytest.mark.parametrize("call, err, match", [
    (lambda: jittered_cholesky(np.ones((2, 3))), ValueError, r"K must be a non-empty square matrix; got shape "
                                                             r"\(2, 3\)\."),
    (lambda: jittered_cholesky([[1.0, 0.5], [0.0, 1.0]]), ValueError, r"K must be symmetric; got max "
                                                                       r"\|K - K\.T\| = 0\.5\."),
    (lambda: jittered_cholesky([[1.0, np.nan], [np.nan, 1.0]]), ValueError, r"K must not contain NaN"),
    (lambda: jittered_cholesky(np.eye(2), max_tries=0), ValueError, r"max_tries must be >= 1; got 0\."),
    (lambda: posterior(np.eye(3), [1.0, 2.0], 1.0), ValueError, r"y must have one entry per row of K \(3\); got "
                                                                r"length 2\."),
    (lambda: posterior(np.eye(2), [1.0, np.nan], 1.0), ValueError, r"y must not contain NaN or infinite values"),
    (lambda: log_marginal_likelihood(np.eye(2), [1.0, 2.0], 0.0), ValueError, r"noise must be > 0; got 0\.0\."),
    (lambda: gaussian_elbo(np.eye(2), [1.0, 2.0], 1.0, [0.0, 0.0], [1.0, -1.0]), ValueError,
     r"cov must hold positive variances; got -1\.0 at index 1\."),
    (lambda: gaussian_elbo(np.eye(2), [1.0, 2.0], 1.0, [0.0, 0.0], np.ones(3)), ValueError,
     r"cov must have shape \(2,\) \(variances\) or \(2, 2\); got \(3,\)\."),
    (lambda: gaussian_elbo(np.eye(2), [1.0, 2.0], 1.0, [0.0, 0.0], -np.eye(2)), ValueError,
     r"cov must be positive-definite"),
    (lambda: log_marginal_likelihood_grad(np.eye(2), np.zeros((1, 3, 3)), [1.0, 2.0], 1.0), ValueError,
     r"dK must have shape \(n_params, 2, 2\); got \(1, 3, 3\)\."),
])
def test_bad_input_is_rejected(call, err, match):
    with pytest.raises(err, match=match):
        call()
