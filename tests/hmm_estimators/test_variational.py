"""Variational Bayes HMMs: hmmlearn's VB-EM iterates and ELBO (every constant included), ELBO never decreases."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from avicore.hmm import VariationalCategoricalHMM, VariationalGaussianHMM
from avicore.hmm_estimators._variational import kl_dirichlet, kl_wishart

from ._fixtures import history, ragged_gaussian

vhmm = pytest.importorskip("hmmlearn.vhmm")

_GAUSS_NAMES = ["startprob_prior_", "startprob_posterior_", "transmat_prior_", "transmat_posterior_", "means_prior_",
                "means_posterior_", "beta_prior_", "beta_posterior_", "dof_prior_", "dof_posterior_", "scale_prior_",
                "scale_posterior_"]


@pytest.mark.parametrize("seed", [0, 1])
def test_variational_categorical_equals_hmmlearn_and_elbo_increases(rng, seed):
    lengths = rng.integers(1, 40, size=12)
    X = rng.integers(0, 4, size=(int(lengths.sum()), 1))
    kw = dict(random_state=seed, n_iter=15, tol=-np.inf)
    ours = VariationalCategoricalHMM(3, **kw).fit(X, lengths)
    ref = vhmm.VariationalCategoricalHMM(3, **kw).fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-9)
    for name in ("startprob_posterior_", "transmat_posterior_", "emissionprob_posterior_"):
        assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8)
    assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
    assert np.all(np.diff(history(ours)) >= -1e-9 * np.abs(history(ours)[1:]))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_variational_gaussian_equals_hmmlearn(rng, covariance_type):
    X, lengths = ragged_gaussian(rng, n_seq=12)
    start = VariationalGaussianHMM(3, covariance_type=covariance_type, random_state=0, n_iter=0).fit(X, lengths)
    ours = VariationalGaussianHMM(3, covariance_type=covariance_type, init_params="", n_iter=12, tol=-np.inf)
    ref = vhmm.VariationalGaussianHMM(3, covariance_type=covariance_type, init_params="", n_iter=12, tol=-np.inf)
    ref.n_features = X.shape[1]
    for name in _GAUSS_NAMES:
        value = getattr(start, name)
        setattr(ours, name, np.copy(value))
        setattr(ref, name, np.array(value) if np.ndim(value) else float(value))
    ref.covars_ = start._covars_
    ours.fit(X, lengths)
    ref.fit(X, lengths)
    # hmmlearn leaves out the Gaussian constant -n_samples * n_features / 2 * log(2 pi); avicore's ELBO keeps it
    shift = X.size / 2 * np.log(2 * np.pi)
    assert_allclose(history(ours), history(ref) - shift, rtol=1e-9)
    for name in ("means_posterior_", "beta_posterior_", "dof_posterior_", "scale_posterior_", "transmat_posterior_"):
        assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, err_msg=name)
    assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_variational_gaussian_elbo_never_decreases_from_its_own_start(rng, covariance_type):
    X, lengths = ragged_gaussian(rng, n_seq=10, sep=3.0)
    model = VariationalGaussianHMM(4, covariance_type=covariance_type, random_state=1, n_iter=40, tol=-np.inf)
    h = history(model.fit(X, lengths))
    assert np.all(np.diff(h) >= -1e-9 * np.abs(h[1:]))
    assert h[-1] > h[0]


def test_kl_helpers_against_closed_forms(rng):
    a = rng.uniform(0.5, 3.0, 4)
    assert kl_dirichlet(a, a) == pytest.approx(0.0, abs=1e-12)
    # Dir(a, b) with 2 components is Beta(a, b): compare with numerical integration of q log q/p
    from scipy import integrate, stats

    q, p = np.array([2.0, 3.0]), np.array([1.5, 0.7])
    val, _ = integrate.quad(lambda t: stats.beta.pdf(t, *q) * (stats.beta.logpdf(t, *q) - stats.beta.logpdf(t, *p)),
                            0, 1)
    assert kl_dirichlet(q, p) == pytest.approx(val, rel=1e-7)
    # 1-D Wishart(dof, 1/s) is Gamma(dof/2, rate s/2)
    dof_q, s_q, dof_p, s_p = 5.0, 2.0, 3.0, 0.5
    gq, gp = stats.gamma(dof_q / 2, scale=2 / s_q), stats.gamma(dof_p / 2, scale=2 / s_p)
    val, _ = integrate.quad(lambda t: gq.pdf(t) * (gq.logpdf(t) - gp.logpdf(t)), 0, np.inf)
    got = kl_wishart(np.array(dof_q), np.array([[s_q]]), np.array(dof_p), np.array([[s_p]]))
    assert float(got) == pytest.approx(val, rel=1e-7)
