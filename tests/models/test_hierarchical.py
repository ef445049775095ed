"""Linear and nonlinear hierarchical models: simulation follows the model, log joint vs scipy densities and finite
differences, priors, the closed-form F-VI optimum (stationary, equal to dense Gaussian conditioning), its exact ELBO
vs a brute-force Monte-Carlo ELBO, log-evidence vs scipy's multivariate normal, and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import integrate, stats

from avicore.models import CustomHierarchical, LinearHierarchical, NonlinearHierarchical
from avicore.models.base import LatentVariableModel

TAU, SIGMA = 1.155, 2.43


# -- simulate ---------------------------------------------------------------------------------------------------

def test_linear_simulation_moments():
    data = LinearHierarchical(tau=TAU, sigma=SIGMA).simulate(40_000, seed=0, theta=1.5)
    n = data.x.shape[0]
    assert data.x.shape == data.z.shape == (n, 1) and data.theta.tolist() == [1.5]
    c = TAU**2 + SIGMA**2
    assert abs(data.x.mean() - 1.5) < 5 * math.sqrt(c / n)
    assert abs(data.x.var() - c) < 5 * c * math.sqrt(2 / n)
    resid = (data.x - 1.5 - TAU * data.z) / SIGMA
    assert stats.kstest(resid.ravel(), "norm").pvalue > 1e-3
    assert stats.kstest(data.z.ravel(), "norm").pvalue > 1e-3


def test_nonlinear_simulation_follows_the_model():
    data = NonlinearHierarchical().simulate(40_000, seed=1, theta=-0.5)
    z, x = data.z.ravel(), data.x.ravel()
    resid = (x + 0.5 - z - z * np.sin(z)) / np.exp(np.cos(z))
    assert stats.kstest(resid, "norm").pvalue > 1e-3
    # E[x] = θ + E[z sin z] = θ + E[cos z] = θ + e^{-1/2} (Stein's identity); Var by quadrature.
    phi = stats.norm.pdf
    mean_f = integrate.quad(lambda t: (t + t * math.sin(t)) * phi(t), -12, 12)[0]
    var_x = (integrate.quad(lambda t: (t + t * math.sin(t)) ** 2 * phi(t), -12, 12)[0] - mean_f**2
             + integrate.quad(lambda t: math.exp(2 * math.cos(t)) * phi(t), -12, 12)[0])
    assert abs(mean_f - math.exp(-0.5)) < 1e-10
    assert abs(x.mean() - (-0.5 + mean_f)) < 5 * math.sqrt(var_x / x.size)
    assert abs(x.var() - var_x) / var_x < 0.05


def test_simulate_draws_theta_from_a_proper_prior_and_is_seeded():
    model = LinearHierarchical(theta_prior_scale=3.0)
    thetas = np.array([model.simulate(1, seed=s).theta[0] for s in range(400)])
    assert abs(thetas.std() - 3.0) < 0.4
    assert LinearHierarchical().simulate(3, seed=2).theta.tolist() == [0.0]
    a, b = model.simulate(5, seed=9), model.simulate(5, seed=9)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.z, b.z)


# -- log joint and prior ----------------------------------------------------------------------------------------

def _finite_diff(f, v, h=1e-6):
    return (f(v + h) - f(v - h)) / (2 * h)


@pytest.mark.parametrize("name", ["linear", "nonlinear"])
def test_log_joint_matches_scipy_and_finite_differences(name):
    rng = np.random.default_rng(3)
    x, z, theta = rng.normal(size=(25, 1)) * 2, rng.normal(size=(25, 1)) * 1.5, np.array([0.4])
    if name == "linear":
        model = LinearHierarchical(tau=TAU, sigma=SIGMA)
        loc, scale = theta + TAU * z, SIGMA
    else:
        model = NonlinearHierarchical()
        loc, scale = theta + z + z * np.sin(z), np.exp(np.cos(z))
    ref = (stats.norm.logpdf(z) + stats.norm.logpdf(x, loc=loc, scale=scale)).ravel()
    lj = model.log_joint(x, z, theta)
    assert_allclose(lj.value, ref, rtol=1e-13, atol=1e-13)
    assert_allclose(lj.grad_z, _finite_diff(lambda v: model.log_joint(x, v, theta).value[:, None], z),
                    rtol=1e-6, atol=1e-7)
    assert_allclose(lj.grad_theta, _finite_diff(lambda v: model.log_joint(x, z, v).value[:, None], theta),
                    rtol=1e-6, atol=1e-7)


def test_priors():
    theta = np.array([[-1.0], [0.5], [2.0]])
    value, grad = LinearHierarchical().log_prior_global(theta)
    assert np.all(value == 0) and np.all(grad == 0)
    value, grad = NonlinearHierarchical(theta_prior_scale=1.7).log_prior_global(theta)
    assert_allclose(value, stats.norm.logpdf(theta[:, 0], scale=1.7), rtol=1e-14)
    assert_allclose(grad, _finite_diff(lambda v: stats.norm.logpdf(v, scale=1.7), theta), rtol=1e-6)


# -- F-VI optimum, exact ELBO, evidence -------------------------------------------------------------------------

def _elbo_of_params(model, x, p):
    n = x.shape[0]
    return model.exact_elbo(x, p[:n], np.exp(p[n:2 * n]), p[2 * n], math.exp(p[2 * n + 1]))


@pytest.mark.parametrize("prior", [None, 0.8])
def test_fvi_optimum_is_a_stationary_point_of_the_exact_elbo(prior):
    model = LinearHierarchical(tau=TAU, sigma=SIGMA, theta_prior_scale=prior)
    x = model.simulate(7, seed=4, theta=1.0).x
    opt = model.fvi_optimum(x)
    p = np.concatenate([opt.local_mean.ravel(), np.log(opt.local_sd.ravel()), opt.global_mean,
                        np.log(opt.global_sd)])
    grad = [_finite_diff(lambda t, i=i: _elbo_of_params(model, x, np.where(np.arange(p.size) == i, t, p)), p[i])
            for i in range(p.size)]
    assert np.max(np.abs(grad)) < 1e-6
    # ... and a maximum: random perturbations lower the ELBO.
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert _elbo_of_params(model, x, p + 0.05 * rng.normal(size=p.size)) < opt.elbo


@pytest.mark.parametrize("prior", [None, 0.8])
def test_fvi_optimum_equals_gaussian_conditioning(prior):
    # Mean-field optimum of a Gaussian target: exact posterior means, variances 1/diag(precision).
    model = LinearHierarchical(tau=TAU, sigma=SIGMA, theta_prior_scale=prior)
    x = model.simulate(6, seed=5, theta=-0.3).x.ravel()
    n = x.size
    # Precision of (θ, z₁..z_N) from -log p(θ, z, x) = Σ (x - θ - τz)²/(2σ²) + Σ z²/2 (+ θ²/(2s²)); linear term b.
    prec = np.zeros((n + 1, n + 1))
    prec[0, 0] = n / SIGMA**2 + (0.0 if prior is None else 1 / prior**2)
    prec[0, 1:] = prec[1:, 0] = TAU / SIGMA**2
    prec[1:, 1:] = np.eye(n) * (1 + TAU**2 / SIGMA**2)
    b = np.concatenate([[x.sum() / SIGMA**2], TAU * x / SIGMA**2])
    post_mean = np.linalg.solve(prec, b)
    opt = model.fvi_optimum(x)
    assert_allclose(opt.global_mean, post_mean[:1], rtol=1e-12, atol=1e-12)
    assert_allclose(opt.local_mean.ravel(), post_mean[1:], rtol=1e-12, atol=1e-12)
    assert_allclose(opt.global_sd ** 2, 1 / prec[0, 0], rtol=1e-12)
    assert_allclose(opt.local_sd.ravel() ** 2, 1 / np.diag(prec)[1:], rtol=1e-12)
    if prior is None:
        assert_allclose(opt.global_mean, [x.mean()], rtol=1e-13)
        assert_allclose(opt.local_mean.ravel(), TAU * (x - x.mean()) / (SIGMA**2 + TAU**2), rtol=1e-12)


@pytest.mark.parametrize("prior", [None, 1.3])
def test_exact_elbo_matches_a_brute_force_monte_carlo_elbo(prior):
    model = LinearHierarchical(tau=TAU, sigma=SIGMA, theta_prior_scale=prior)
    x = model.simulate(5, seed=6, theta=0.5).x.ravel()
    opt = model.fvi_optimum(x)
    # A q away from the optimum too, so that every term matters.
    for m, s, mu, sd in ((opt.local_mean.ravel(), opt.local_sd.ravel(), opt.global_mean[0], opt.global_sd[0]),
                         (np.linspace(-1, 1, 5), np.linspace(0.3, 1.2, 5), 0.2, 0.7)):
        rng = np.random.default_rng(7)
        n_draws = 200_000
        theta = rng.normal(mu, sd, size=n_draws)
        z = rng.normal(m, s, size=(n_draws, 5))
        log_p = (stats.norm.logpdf(z).sum(axis=1)
                 + stats.norm.logpdf(x, loc=theta[:, None] + TAU * z, scale=SIGMA).sum(axis=1))
        if prior is not None:
            log_p += stats.norm.logpdf(theta, scale=prior)
        log_q = stats.norm.logpdf(theta, mu, sd) + stats.norm.logpdf(z, m, s).sum(axis=1)
        samples = log_p - log_q
        exact = model.exact_elbo(x, m, s, mu, sd)
        assert abs(samples.mean() - exact) < 5 * samples.std() / math.sqrt(n_draws)
    assert model.exact_elbo(x, opt.local_mean, opt.local_sd, opt.global_mean, opt.global_sd) == opt.elbo


def test_log_evidence_matches_dense_gaussian_and_bounds_the_elbo():
    model = LinearHierarchical(tau=TAU, sigma=SIGMA, theta_prior_scale=1.9)
    x = model.simulate(6, seed=8).x.ravel()
    cov = 1.9**2 * np.ones((6, 6)) + (TAU**2 + SIGMA**2) * np.eye(6)
    ref = stats.multivariate_normal(mean=np.zeros(6), cov=cov).logpdf(x)
    assert_allclose(model.log_evidence(x), ref, rtol=1e-12)
    assert model.fvi_optimum(x).elbo < model.log_evidence(x)


def test_optimum_formulas_at_the_papers_setting():
    model = LinearHierarchical()
    assert (model.tau, model.sigma, model.theta_prior_scale) == (1.155, 2.43, None)
    x = model.simulate(1000, seed=9).x
    opt = model.fvi_optimum(x)
    assert_allclose(opt.global_sd, [2.43 / math.sqrt(1000)], rtol=1e-14)
    assert_allclose(opt.local_sd, 2.43 / math.sqrt(2.43**2 + 1.155**2), rtol=1e-14)


# -- errors -----------------------------------------------------------------------------------------------------

def test_constructor_errors():
    with pytest.raises(ValueError, match=r"tau must be >= 0; got -1.0"):
        LinearHierarchical(tau=-1.0)
    with pytest.raises(ValueError, match=r"sigma must be > 0; got -2.0"):
        LinearHierarchical(sigma=-2.0)
    with pytest.raises(ValueError, match=r"sigma must be > 0; got 0.0"):
        LinearHierarchical(sigma=0.0)
    with pytest.raises(ValueError, match=r"theta_prior_scale must be > 0; got -1.0"):
        NonlinearHierarchical(theta_prior_scale=-1.0)
    with pytest.raises(TypeError, match=r"tau must be a real number; got str"):
        LinearHierarchical(tau="1")


def test_data_errors():
    model = LinearHierarchical()
    with pytest.raises(ValueError, match=r"x must not contain NaN or infinite values; got nan at index \(1, 0\)"):
        model.fvi_optimum([[0.0], [np.nan]])
    with pytest.raises(ValueError, match=r"x must have shape \(n_obs, 1\) or \(n_obs,\); got \(3, 2\)"):
        model.fvi_optimum(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"z must have shape \(2, 1\) like x; got \(3,\)"):
        model.log_joint([0.0, 1.0], [0.0, 1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match=r"theta must hold 1 value\(s\); got shape \(2,\)"):
        model.log_joint([0.0], [0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"n must be >= 1; got 0"):
        model.simulate(0)
    with pytest.raises(ValueError, match=r"log_evidence needs a proper prior on theta; got theta_prior_scale=None"):
        model.log_evidence([1.0])
    with pytest.raises(ValueError, match=r"local_sd must be > 0; got min -1.0"):
        model.exact_elbo([1.0], [0.0], [-1.0], 0.0, 1.0)
    with pytest.raises(ValueError, match=r"global_sd must be > 0; got 0.0"):
        model.exact_elbo([1.0], [0.0], [1.0], 0.0, 0.0)


def test_models_implement_the_contract():
    for model in (LinearHierarchical(), NonlinearHierarchical()):
        assert isinstance(model, LatentVariableModel)
        assert (model.latent_dim, model.global_dim, model.obs_dim, model.global_names) == (1, 1, 1, ("theta",))
        assert model.supported_backends == ("numpy", "cython", "numba", "cuda")
        assert "Hierarchical(" in repr(model)


def test_custom_model_constructor_errors():
    with pytest.raises(TypeError, match=r"log_density_grad must be a Numba-compiled function .*; got function"):
        CustomHierarchical(lambda x, z, t, gz, gt: 0.0, latent_dim=1, global_dim=1, obs_dim=1)
