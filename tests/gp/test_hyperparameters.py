"""GP hyperparameters: ELBO gradients in θ, the ELBO-fitted θ vs an independent optimisation of the closed-form
mean-field ELBO, and lengthscale recovery by exact type-II maximum likelihood at N = 500."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from avicore import FVI
from avicore.gp import RBF, Gaussian, Matern12, Matern52, Poisson, fit_marginal_likelihood, mean_field_optimum
from avicore.gp.exact import log_marginal_likelihood
from avicore.models import GaussianProcess


def test_hyperparameter_gradient_matches_finite_differences() -> None:
    t = np.linspace(0.0, 1.0, 25)
    model = GaussianProcess(Matern52(1.3, 0.3) + RBF(0.5, 0.1), Poisson(), t, fit=True)
    y = model.simulate(seed=0).x
    rng = np.random.default_rng(1)
    mean, log_scale = rng.normal(size=(25, 1)), rng.normal(-1.0, 0.3, size=(25, 1))
    theta = model.kernel.params[None, :] + rng.normal(0.0, 0.2, size=(1, 4))
    kwargs = {"seed": 0, "step": 0, "index": np.arange(25), "backend": "numpy"}
    terms = model.local_terms(y, mean, log_scale, theta, **kwargs)
    h = 1e-4  # K's condition number is ~2e5: smaller steps lose more to rounding than they gain
    for i in range(4):
        up, down = theta.copy(), theta.copy()
        up[0, i] += h
        down[0, i] -= h
        fd = (model.local_terms(y, mean, log_scale, up, **kwargs).log_joint[0]
              - model.local_terms(y, mean, log_scale, down, **kwargs).log_joint[0]) / (2 * h)
        assert terms.grad_global[0, i] == pytest.approx(fd, rel=1e-6, abs=1e-6), model.global_names[i]


def test_fit_option_names_parameters_and_rejects_unknown_ones() -> None:
    t = np.linspace(0.0, 1.0, 10)
    model = GaussianProcess(Matern12(1.0, 0.2), Poisson(), t, fit=("log_lengthscale",))
    assert (model.global_dim, model.global_names) == (1, ("log_lengthscale",))
    assert GaussianProcess(Matern12(), Poisson(), t).global_dim == 0
    assert GaussianProcess(Matern12(), Poisson(), t, fit=True).global_names == ("log_variance", "log_lengthscale")
    assert model.hyperparameters([math.log(0.5)]) == {"lengthscale": pytest.approx(0.5)}
    assert model.kernel_at([math.log(0.5)]).lengthscale == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"fit must be True, False or a sequence of names from .*'bogus'"):
        GaussianProcess(Matern12(), Poisson(), t, fit=("bogus",))
    with pytest.raises(ValueError, match="fit must be True, False or a sequence"):
        GaussianProcess(Matern12(), Poisson(), t, fit="log_lengthscale")
    with pytest.raises(ValueError, match="hyperprior_sd must be"):
        GaussianProcess(Matern12(), Poisson(), t, fit=True, hyperprior_sd=0.0)


def test_elbo_fitted_lengthscale_is_the_maximiser_of_the_closed_form_mean_field_elbo() -> None:
    # Reference, independent of the engine: for each lengthscale the mean-field optimum and its ELBO are closed form
    # (Gaussian likelihood); maximise that profile over log ℓ with scipy.
    t = np.linspace(0.0, 1.0, 80)
    noise = 0.1
    sim = GaussianProcess(Matern12(1.0, 0.2), Gaussian(noise), t)
    y = sim.simulate(seed=3).x

    def profile(log_ls: float) -> float:
        return -mean_field_optimum(Matern12(1.0, math.exp(log_ls))(t), y[:, 0], noise).elbo

    ref = minimize_scalar(profile, bounds=(math.log(0.01), math.log(5.0)), method="bounded",
                          options={"xatol": 1e-6})
    model = GaussianProcess(Matern12(1.0, 0.5), Gaussian(noise), t, fit=("log_lengthscale",))
    res = FVI(model, global_q="point", n_samples=1, backend="numpy", elbo_samples=4).fit(
        y, n_iter=4000, lr=lambda i: 0.05 if i < 2500 else 0.005, seed=0)
    assert res.stop_reason != "diverged"
    assert res.global_mean[0] == pytest.approx(ref.x, abs=0.02)
    assert res.elbo == pytest.approx(-ref.fun, abs=0.1)
    # The fit moved the lengthscale from its start and raised the ELBO over the fixed-hyperparameter optimum.
    assert res.elbo > -profile(math.log(0.5)) + 1.0


@pytest.mark.parametrize(("kernel", "seed"), [(Matern52, 0), (Matern52, 1), (Matern52, 2), (RBF, 0)])
def test_marginal_likelihood_recovers_the_simulating_lengthscale_at_n500(kernel, seed) -> None:
    t = np.linspace(0.0, 1.0, 500)
    rng = np.random.default_rng(seed)
    y = np.linalg.cholesky(kernel(1.0, 0.03)(t) + 0.05 * np.eye(500)) @ rng.standard_normal(500)
    res = fit_marginal_likelihood(kernel(1.0, 0.2), Gaussian(0.5), t, y, fit=("log_lengthscale",))
    assert res.success, res.message
    assert res.kernel.lengthscale == pytest.approx(0.03, rel=0.2)
    assert res.likelihood.noise == pytest.approx(0.05, rel=0.2)
    assert res.kernel.variance == 1.0  # held
    # A local maximum: no nearby lengthscale or noise does better.
    for ls, nz in ((1.05, 1.0), (0.95, 1.0), (1.0, 1.05), (1.0, 0.95)):
        K = kernel(1.0, res.kernel.lengthscale * ls)(t)
        assert log_marginal_likelihood(K, y, res.likelihood.noise * nz) <= res.log_marginal_likelihood + 1e-8


def test_marginal_likelihood_rejects_bad_input() -> None:
    t = np.linspace(0.0, 1.0, 10)
    with pytest.raises(TypeError, match=r"likelihood must be avicore\.gp\.Gaussian"):
        fit_marginal_likelihood(Matern12(), Poisson(), t, np.zeros(10))
    with pytest.raises(ValueError, match=r"y must have shape \(10,\) or \(10, 1\), one value per input; got \(9,\)"):
        fit_marginal_likelihood(Matern12(), Gaussian(), t, np.zeros(9))
    with pytest.raises(ValueError, match="y must"):
        fit_marginal_likelihood(Matern12(), Gaussian(), t, np.full(10, np.nan))
    with pytest.raises(ValueError, match="fit must be True, False or a sequence"):
        fit_marginal_likelihood(Matern12(), Gaussian(), t, np.zeros(10), fit=("log_period",))


def test_marginal_likelihood_on_all_zero_data_says_why_it_cannot_fit() -> None:
    # log p(0) = −½ log|K + σ²I| − … grows without bound as the variances shrink: no maximiser (issue 19).
    t = np.linspace(0.0, 1.0, 20)
    with pytest.raises(ValueError, match="y must not be zero everywhere"):
        fit_marginal_likelihood(Matern12(1.0, 0.2), Gaussian(0.1), t, np.zeros(20))
    held = fit_marginal_likelihood(Matern12(1.0, 0.2), Gaussian(0.1), t, np.zeros(20), fit=False, fit_noise=False)
    K = Matern12(1.0, 0.2)(t)
    assert held.log_marginal_likelihood == pytest.approx(log_marginal_likelihood(K, np.zeros(20), 0.1), rel=1e-12)
