"""The saw time series (avicore/models/saw.py): simulation, the closed-form F-VI optimum and ELBO against dense
Gaussian algebra, numeric optimisation and Monte Carlo, and the Monte-Carlo pass against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize
from scipy.stats import norm

import avicore
from avicore.models import FVIOptimum, SawTimeSeries


def dense_precision(model: SawTimeSeries, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision J and linear term h of the Gaussian p(z, θ | x) ∝ exp(−½ vᵀJv + hᵀv), v = (z₁…z_N, θ)."""
    n, a = x.size, model.a
    J = np.zeros((n + 1, n + 1))
    h = np.zeros(n + 1)
    for i in range(n):  # log N(z_i; x_i, 1)
        J[i, i] += 1.0
        h[i] += x[i]
    for i in range(n - 1):  # log N(x_{i+1}; a z_i + a θ, 1): the row vector (a e_i + a e_θ)
        g = np.zeros(n + 1)
        g[i], g[n] = a, a
        J += np.outer(g, g)
        h += g * x[i + 1]
    if model.theta_prior_scale is not None:
        J[n, n] += 1.0 / model.theta_prior_scale ** 2
    return J, h


@pytest.mark.parametrize("prior", [None, 0.7])
def test_fvi_optimum_is_exact_means_and_inverse_precision_diagonal(prior):
    model = SawTimeSeries(a=0.6, theta_prior_scale=prior)
    x = model.simulate(9, seed=1, theta=0.8).x[:, 0]
    J, h = dense_precision(model, x)
    mean = np.linalg.solve(J, h)
    opt = model.fvi_optimum(x)
    assert isinstance(opt, FVIOptimum)
    assert_allclose(opt.local_mean[:, 0], mean[:-1], rtol=1e-12, atol=1e-12)
    assert_allclose(opt.global_mean, mean[-1:], rtol=1e-12, atol=1e-12)
    assert_allclose(opt.local_sd[:, 0] ** 2, 1.0 / np.diag(J)[:-1], rtol=1e-12)
    assert_allclose(opt.global_sd ** 2, 1.0 / np.diag(J)[-1:], rtol=1e-12)


def test_fvi_optimum_matches_numeric_maximisation_of_the_closed_form_elbo():
    model = SawTimeSeries()
    x = model.simulate(6, seed=2).x[:, 0]
    n = x.size

    def neg(v):
        return -model.exact_elbo(x, v[:n], np.exp(v[n:2 * n]), v[2 * n], math.exp(v[2 * n + 1]))

    res = minimize(neg, np.zeros(2 * n + 2), method="BFGS", options={"gtol": 1e-9})
    opt = model.fvi_optimum(x)
    assert_allclose(res.x[:n], opt.local_mean[:, 0], atol=1e-5)
    assert_allclose(np.exp(res.x[n:2 * n]), opt.local_sd[:, 0], atol=1e-5)
    assert res.x[2 * n] == pytest.approx(opt.global_mean[0], abs=1e-5)
    assert -res.fun == pytest.approx(opt.elbo, abs=1e-8)


@pytest.mark.parametrize("prior", [None, 1.5])
def test_closed_form_elbo_matches_monte_carlo(prior):
    """E_q[log p(x, z, θ) − log q] by sampling q, with scipy's normal densities term by term."""
    model = SawTimeSeries(a=0.75, theta_prior_scale=prior)
    x = model.simulate(12, seed=3).x[:, 0]
    rng = np.random.default_rng(4)
    m, s = rng.normal(size=12), rng.uniform(0.3, 1.5, size=12)
    mu, v = 0.4, 0.3
    n_draws = 50_000
    z = m + s * rng.standard_normal((n_draws, 12))
    th = mu + v * rng.standard_normal(n_draws)
    log_p = norm.logpdf(x[0]) + norm.logpdf(z, loc=x).sum(1)
    log_p += norm.logpdf(x[1:], loc=0.75 * (z[:, :-1] + th[:, None])).sum(1)
    if prior is not None:
        log_p += norm.logpdf(th, scale=prior)
    log_q = norm.logpdf(z, loc=m, scale=s).sum(1) + norm.logpdf(th, loc=mu, scale=v)
    values = log_p - log_q
    closed = model.exact_elbo(x, m, s, mu, v)
    assert abs(values.mean() - closed) < 5 * values.std() / math.sqrt(n_draws)


def test_simulate_follows_the_model():
    model = SawTimeSeries(a=0.5)
    data = model.simulate(40_000, seed=5, theta=2.0)
    x, z = data.x[:, 0], data.z[:, 0]
    assert data.theta.tolist() == [2.0]
    assert (z - x).mean() == pytest.approx(0.0, abs=0.03) and (z - x).std() == pytest.approx(1.0, rel=0.02)
    resid = x[1:] - 0.5 * (z[:-1] + 2.0)
    assert resid.mean() == pytest.approx(0.0, abs=0.03) and resid.std() == pytest.approx(1.0, rel=0.02)
    # the residual of x_{n+1} is independent of z_n (it follows the model, not a shifted copy of x)
    assert abs(np.corrcoef(resid, z[:-1])[0, 1]) < 0.03
    assert_allclose(model.simulate(5, seed=1).x, model.simulate(5, seed=np.random.default_rng(1)).x)
    assert SawTimeSeries(theta_prior_scale=3.0).simulate(3, seed=0).theta.shape == (1,)


def test_local_terms_gradients_match_finite_differences():
    model = SawTimeSeries(theta_prior_scale=2.0)
    x = model.simulate(15, seed=6).x
    report = avicore.check_gradients(model, x, n_points=15, n_samples=3, seed=7, backend="numpy")
    assert report.passed, report
    assert set(report.max_rel_error) == {"mean", "log_scale", "global", "prior"}


def test_local_terms_average_is_the_exact_expected_log_joint():
    """(1/S) Σ_s log_joint[s] → E_q[log p(x, z | θ)] = exact_elbo − entropies (flat prior, fixed θ)."""
    model = SawTimeSeries()
    x = model.simulate(10, seed=8).x
    rng = np.random.default_rng(9)
    m, ls = rng.normal(size=(10, 1)), np.log(rng.uniform(0.4, 1.2, size=(10, 1)))
    theta = np.full((4000, 1), 0.3)
    terms = model.local_terms(x, m, ls, theta, seed=1, step=2, index=np.arange(10), backend="numpy")
    tiny = 1e-150  # q(θ) ≈ a point mass at 0.3: its variance term vanishes
    entropy = 0.5 * (math.log(2 * math.pi) + 1) * 11 + ls.sum() + math.log(tiny)
    expected = model.exact_elbo(x, m, np.exp(ls), 0.3, tiny) - entropy
    assert abs(terms.log_joint.mean() - expected) < 5 * terms.log_joint.std() / math.sqrt(4000)


def test_bad_inputs_are_rejected():
    model = SawTimeSeries()
    x = model.simulate(4, seed=0).x
    args = (x, np.zeros((4, 1)), np.zeros((4, 1)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"index must be arange\(4\)"):
        model.local_terms(*args, seed=0, step=0, index=np.array([0, 2, 3, 4]), backend="numpy")
    with pytest.raises(ValueError, match="batch_size must be None for SawTimeSeries"):
        avicore.FVI(model, batch_size=2)
    with pytest.raises(ValueError, match="at least 2 observations"):
        model.fvi_optimum([1.0])
    with pytest.raises(ValueError, match="local_sd must be > 0"):
        model.exact_elbo(x, np.zeros(4), np.zeros(4), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"theta_prior_scale must be > 0"):
        SawTimeSeries(theta_prior_scale=0.0)
    assert "a=0.75" in repr(model)
