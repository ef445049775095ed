"""GMMHMM against hmmlearn: EM trajectories from the same start for every covariance type, scoring, sampling."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore.hmm import GMMHMM

from ._fixtures import history, ragged_gaussian, set_params

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
def test_gmm_em_trajectory_equals_hmmlearn(rng, covariance_type):
    X, lengths = ragged_gaussian(rng, n_seq=8, sep=5.0)  # hmmlearn's full/tied GMM E-step is slow: keep it small
    K, M, d = 3, 2, 2
    means = X[rng.choice(len(X), K * M, replace=False)].reshape(K, M, d)
    covars = {"spherical": rng.uniform(0.5, 2, (K, M)), "diag": rng.uniform(0.5, 2, (K, M, d)),
              "full": np.tile(np.eye(d) * 1.5 + 0.3, (K, M, 1, 1)),
              "tied": np.tile(np.eye(d) + 0.2, (K, 1, 1))}[covariance_type]
    # a proper covariance prior keeps every component non-degenerate for any seed
    priors = ({"covars_prior": 0.5 * np.eye(d), "covars_weight": 3.0} if covariance_type in ("full", "tied")
              else {"covars_prior": 1.0, "covars_weight": 1.0})
    kw = dict(covariance_type=covariance_type, init_params="", n_iter=10, tol=-np.inf, weights_prior=2.0,
              means_weight=0.5, **priors)
    ours, ref = GMMHMM(K, M, **kw), hmmlearn_hmm.GMMHMM(K, M, **kw)
    set_params((ours, ref), startprob_=rng.dirichlet(np.ones(K)), transmat_=rng.dirichlet(3 * np.ones(K), size=K),
               means_=means, covars_=covars, weights_=rng.dirichlet(3 * np.ones(M), size=K))
    ours.fit(X, lengths)
    ref.fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-8, atol=0)
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=1e-11, err_msg=name)
    assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
    assert_allclose(ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), atol=1e-9)
    x1, z1 = ours.sample(15, random_state=2)
    x2, z2 = ref.sample(15, random_state=2)
    assert_array_equal(z1, z2)
    assert_allclose(x1, x2, rtol=1e-10)


def test_gmm_own_initialisation_improves_and_validates(rng):
    X, lengths = ragged_gaussian(rng, n_seq=10, sep=6.0)
    model = GMMHMM(2, n_mix=2, random_state=0, n_iter=8, tol=-np.inf).fit(X, lengths)
    h = history(model)
    assert h[-1] > h[0]
    assert model.means_.shape == (2, 2, 2) and model.n_features_in_ == 2
    model.weights_ = np.array([[0.7, 0.7], [0.5, 0.5]])
    with pytest.raises(ValueError, match="weights_ rows must be probability vectors"):
        model.score(X)
    with pytest.raises(ValueError, match="n_mix must be >= 1"):
        GMMHMM(2, n_mix=0).fit(X)
