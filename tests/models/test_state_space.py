"""Linear-Gaussian state-space models (avicore/models/state_space.py): exact log-evidence, posterior, the
mean-field (F-VI) optimum and its closed-form ELBO, against dense Gaussian algebra and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.linalg import solveh_banded
from scipy.stats import multivariate_normal

import avicore
from avicore.models import FVIOptimum, GaussianRandomWalk, LinearGaussianSSM, MeanFieldOptimum
from avicore.optim import exponential_decay
from tests.reference_chain import condition, random_model


@pytest.fixture(scope="module")
def lgssm():
    params = random_model(3, 2, np.random.default_rng(5))
    return LinearGaussianSSM(**params), params


def dense_precision(post_cov: np.ndarray) -> np.ndarray:
    return np.linalg.inv(post_cov)


def test_random_walk_is_the_scalar_lgssm():
    rw = GaussianRandomWalk(step_scale=0.7, obs_scale=1.3, init_scale=2.0)
    same = LinearGaussianSSM(A=1.0, Q=0.49, C=1.0, R=1.69, m0=0.0, P0=4.0)
    x = rw.simulate(40, seed=0).x
    assert rw.log_evidence(x, backend="numpy") == pytest.approx(same.log_evidence(x, backend="numpy"),
                                                                rel=1e-14)
    assert (rw.latent_dim, rw.obs_dim, rw.global_dim) == (1, 1, 0)
    assert "step_scale=0.7" in repr(rw)


def test_simulate_follows_the_model(lgssm):
    model, prm = lgssm
    data = model.simulate(20_000, seed=1)
    assert data.x.shape == (20_000, 2) and data.z.shape == (20_000, 3) and data.theta.shape == (0,)
    steps = data.z[1:] - data.z[:-1] @ prm["A"].T
    noise = data.x - data.z @ prm["C"].T
    # sample covariances within ~5 standard errors of the model's
    assert_allclose(np.cov(steps.T), prm["Q"], atol=0.05)
    assert_allclose(np.cov(noise.T), prm["R"], atol=0.05)
    assert_allclose(model.simulate(5, seed=3).x, model.simulate(5, seed=np.random.default_rng(3)).x)


def test_random_walk_simulate_follows_the_model():
    data = GaussianRandomWalk(step_scale=0.5, obs_scale=2.0, init_scale=3.0).simulate(50_000, seed=2)
    assert np.diff(data.z[:, 0]).std() == pytest.approx(0.5, rel=0.02)
    assert (data.x - data.z).std() == pytest.approx(2.0, rel=0.02)


def test_log_evidence_matches_scipy(lgssm):
    model, prm = lgssm
    x = model.simulate(9, seed=4).x
    lengths = [5, 1, 3]
    expected = 0.0
    for seg in np.split(x, np.cumsum(lengths)[:-1]):
        expected += condition(seg, **prm)[2]
    assert model.log_evidence(x, lengths, backend="numpy") == pytest.approx(expected, rel=1e-12)
    # the dense reference's log p(x) is scipy's multivariate normal (tests/reference_chain.py)
    single = condition(x[:5], **prm)[2]
    assert model.log_evidence(x[:5], backend="cython") == pytest.approx(single, rel=1e-12)


def test_fvi_optimum_is_exact_means_and_inverse_precision_diagonal(lgssm):
    model, prm = lgssm
    x = model.simulate(7, seed=6).x
    opt = model.fvi_optimum(x, backend="numpy")
    mean, cov, log_px = condition(x, **prm)
    J = dense_precision(cov)
    assert isinstance(opt, MeanFieldOptimum) and isinstance(opt, FVIOptimum)
    assert_allclose(opt.local_mean, mean, rtol=1e-10, atol=1e-10)
    assert_allclose(opt.variance.reshape(-1), 1.0 / np.diag(J), rtol=1e-10)
    assert_allclose(opt.local_sd ** 2, opt.variance, rtol=0)
    assert opt.global_mean.shape == opt.global_sd.shape == (0,)
    assert_allclose(model.precision_diagonal(x).reshape(-1), np.diag(J), rtol=1e-10)
    assert opt.log_evidence == pytest.approx(log_px, rel=1e-12)
    # KL(q* ‖ p) = ½ (Σ log J_ii − log det J) for the mean-field optimum of a Gaussian target
    kl = 0.5 * (np.log(np.diag(J)).sum() - np.linalg.slogdet(J)[1])
    assert opt.kl == pytest.approx(kl, rel=1e-9)
    assert model.exact_kl(x, backend="numpy") == pytest.approx(kl, rel=1e-9)
    assert opt.elbo < opt.log_evidence


def test_fvi_optimum_maximises_the_elbo(lgssm):
    model, _ = lgssm
    x = model.simulate(8, seed=7).x
    opt = model.fvi_optimum(x, backend="numpy")
    rng = np.random.default_rng(8)
    for _ in range(5):
        mean = opt.local_mean + 0.05 * rng.normal(size=opt.local_mean.shape)
        sd = opt.local_sd * np.exp(0.1 * rng.normal(size=opt.local_sd.shape))
        assert model.elbo(x, mean, sd) < opt.elbo
    assert model.elbo(x, opt.local_mean, opt.local_sd) == pytest.approx(opt.elbo, rel=1e-14)


def monte_carlo_elbo(x, mean, var, prm, lengths, n_draws, rng):
    """ELBO(q) = E_q[log p(x, z) − log q(z)] by sampling q; log p from scipy densities term by term."""
    z = mean + np.sqrt(var) * rng.standard_normal((n_draws, *mean.shape))
    log_q = (-0.5 * ((z - mean) ** 2 / var + np.log(2 * math.pi * var))).sum(axis=(1, 2))
    log_p = np.zeros(n_draws)
    start = 0
    for length in lengths:
        zs, xs = z[:, start:start + length], x[start:start + length]
        log_p += multivariate_normal(prm["m0"], prm["P0"]).logpdf(zs[:, 0])
        if length > 1:
            resid = zs[:, 1:] - zs[:, :-1] @ prm["A"].T
            log_p += multivariate_normal(np.zeros(len(prm["m0"])), prm["Q"]).logpdf(resid).reshape(n_draws, -1).sum(1)
        obs = xs[None] - zs @ prm["C"].T
        log_p += multivariate_normal(np.zeros(len(prm["R"])), prm["R"]).logpdf(obs).reshape(n_draws, -1).sum(1)
        start += length
    values = log_p - log_q
    return values.mean(), values.std(ddof=1) / math.sqrt(n_draws)


@pytest.mark.parametrize("which", ["optimum", "arbitrary"])
def test_closed_form_elbo_matches_monte_carlo(lgssm, which):
    model, prm = lgssm
    lengths = [6, 1, 4]
    x = model.simulate(11, seed=9).x
    rng = np.random.default_rng(10)
    if which == "optimum":
        opt = model.fvi_optimum(x, lengths, backend="numpy")
        mean, var, closed = opt.local_mean, opt.variance, opt.elbo
    else:
        mean, var = rng.normal(size=(11, 3)), rng.uniform(0.2, 2.0, size=(11, 3))
        closed = model.elbo(x, mean, np.sqrt(var), lengths)
    estimate, se = monte_carlo_elbo(x, mean, var, prm, lengths, 40_000, rng)
    assert abs(closed - estimate) < 5 * se, (closed, estimate, se)


def test_single_step_scalar_model_has_zero_kl():
    """With one scalar latent the factorized family contains the posterior."""
    rw = GaussianRandomWalk(init_scale=1.5)
    assert rw.exact_kl(np.array([0.7]), backend="numpy") == pytest.approx(0.0, abs=1e-12)


def test_ragged_lengths_sum_over_independent_sequences(lgssm):
    model, _ = lgssm
    x = model.simulate(10, seed=12).x
    both = model.fvi_optimum(x, [4, 6], backend="numpy")
    first, second = model.fvi_optimum(x[:4], backend="numpy"), model.fvi_optimum(x[4:], backend="numpy")
    assert both.elbo == pytest.approx(first.elbo + second.elbo, rel=1e-12)
    assert both.log_evidence == pytest.approx(first.log_evidence + second.log_evidence, rel=1e-12)
    assert_allclose(both.local_sd, np.vstack([first.local_sd, second.local_sd]), rtol=1e-14)


def test_random_walk_equal_observations_get_different_optimal_means():
    """The paper's point: ν*_n depends on all of x, so equal x_n = x_m do not give equal ν*_n = ν*_m."""
    rw = GaussianRandomWalk()
    x = rw.simulate(1000, seed=13).x[:, 0]
    n, m = 100, 700
    x[m] = x[n]
    opt = rw.fvi_optimum(x)
    # independent check of the optimal means: the tridiagonal system J ν = h (scipy's banded solver)
    ab = np.empty((2, x.size))
    ab[0] = 3.0
    ab[0, -1] = 2.0
    ab[1, :-1] = -1.0
    ab[1, -1] = 0.0
    nu = solveh_banded(ab, x, lower=True)
    assert_allclose(opt.local_mean[:, 0], nu, rtol=1e-10, atol=1e-10)
    assert x[n] == x[m]
    assert abs(nu[n] - nu[m]) > 0.1
    # interior steps share the same optimal variance 1 / J_nn = 1/3: only the means carry the difference
    assert opt.variance[n, 0] == pytest.approx(opt.variance[m, 0], rel=1e-15)


def test_bad_model_arguments_are_rejected(lgssm):
    model, _ = lgssm
    with pytest.raises(ValueError, match=r"step_scale must be > 0; got 0\.0"):
        GaussianRandomWalk(step_scale=0.0)
    with pytest.raises(TypeError, match="obs_scale must be a real number"):
        GaussianRandomWalk(obs_scale="1")
    with pytest.raises(ValueError, match="Q must be positive-definite"):
        LinearGaussianSSM(A=1.0, Q=-1.0, C=1.0, R=1.0, m0=0.0, P0=1.0)
    x = model.simulate(4, seed=0).x
    with pytest.raises(ValueError, match=r"local_mean must have shape \(4, 3\) to match x; got \(4, 2\)"):
        model.elbo(x, np.zeros((4, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="local_sd must be positive"):
        model.elbo(x, np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(n_obs, 2\)"):
        model.log_evidence(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="n must be >= 1; got 0"):
        model.simulate(0)


def test_local_terms_needs_the_whole_sequence(lgssm):
    model, _ = lgssm
    with pytest.raises(ValueError, match=r"index must be arange\(2\)"):
        model.local_terms(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((1, 0)), seed=0,
                          step=0, index=np.array([1, 2]), backend="numpy")
    with pytest.raises(ValueError, match="batch_size must be None for LinearGaussianSSM"):
        avicore.FVI(model, batch_size=10)
    lp, grad = model.log_prior_global(np.zeros((4, 0)))
    assert lp.shape == (4,) and grad.shape == (4, 0)


@pytest.mark.parametrize("which", ["random_walk", "lgssm"])
def test_local_terms_gradients_match_finite_differences(lgssm, which):
    model = GaussianRandomWalk(step_scale=0.8, obs_scale=1.3, init_scale=2.0) if which == "random_walk" else lgssm[0]
    x = model.simulate(12, seed=20).x
    report = avicore.check_gradients(model, x, n_points=12, n_samples=3, seed=21, backend="numpy")
    assert report.passed, report


@pytest.mark.parametrize("which", ["random_walk", "lgssm"])
def test_local_terms_expectation_is_the_exact_elbo_and_its_gradient(lgssm, which):
    """Many samples: mean log_joint → exact ELBO − entropy; grad_mean (grad_log_scale + 1) → ∂ELBO/∂m (∂/∂log s)."""
    model = GaussianRandomWalk(step_scale=0.8, obs_scale=1.3) if which == "random_walk" else lgssm[0]
    n, d, n_samples = 5, model.latent_dim, 20_000
    x = model.simulate(n, seed=22).x
    rng = np.random.default_rng(23)
    m, ls = rng.normal(size=(n, d)), np.log(rng.uniform(0.4, 1.2, size=(n, d)))
    terms = model.local_terms(x, m, ls, np.zeros((n_samples, 0)), seed=3, step=4, index=np.arange(n),
                              backend="numpy")
    entropy = 0.5 * n * d * (math.log(2 * math.pi) + 1) + ls.sum()
    exact = model.elbo(x, m, np.exp(ls))
    se = terms.log_joint.std() / math.sqrt(n_samples)
    assert abs(terms.log_joint.mean() + entropy - exact) < 5 * se
    h = 1e-5
    fd_mean, fd_ls = np.empty_like(m), np.empty_like(ls)
    for i in np.ndindex(m.shape):
        e = np.zeros_like(m)
        e[i] = h
        fd_mean[i] = (model.elbo(x, m + e, np.exp(ls)) - model.elbo(x, m - e, np.exp(ls))) / (2 * h)
        fd_ls[i] = (model.elbo(x, m, np.exp(ls + e)) - model.elbo(x, m, np.exp(ls - e))) / (2 * h)
    scale = np.abs(fd_mean).max() + np.abs(fd_ls).max()
    assert_allclose(terms.grad_mean, fd_mean, atol=0.03 * scale)
    assert_allclose(terms.grad_log_scale + 1.0, fd_ls, atol=0.03 * scale)


def test_fvi_fit_reaches_the_closed_form_optimum():
    model = GaussianRandomWalk()
    x = model.simulate(200, seed=24).x
    opt = model.fvi_optimum(x, backend="numpy")
    res = avicore.FVI(model, n_samples=10, elbo_samples=200).fit(x, n_iter=2000, lr=exponential_decay(0.1, 1e-3, 2000),
                                                                 seed=0)
    spread = opt.local_mean.std()
    assert np.abs(res.local_mean - opt.local_mean).max() < 0.03 * spread
    assert_allclose(res.local_sd, opt.local_sd, rtol=0.06)
    fitted = model.elbo(x, res.local_mean, res.local_sd)
    assert opt.elbo - 1.0 < fitted <= opt.elbo
    # VIResult.kl = log p(x) − ELBO (Monte-Carlo ELBO) matches the closed-form KL of the optimum
    assert res.log_evidence == pytest.approx(opt.log_evidence, rel=1e-12)
    assert abs(res.kl - opt.kl) < 4 * res.elbo_se + 1.0
    assert res.kl >= opt.kl - 4 * res.elbo_se
