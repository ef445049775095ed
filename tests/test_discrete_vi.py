"""Exact mean-field ELBO for discrete HMMs against brute-force enumeration; gradients by finite differences;
CAVI monotone; F-VI >= A-VI and both <= log p(x)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import logsumexp, softmax

from avicore.discrete_vi import fit_avi, fit_fvi, log_evidence, mean_field_elbo, mean_field_elbo_grad
from avicore.encoders import MLP, Constant


def _tiny(rng, n_states=3, lengths=(3, 1, 2)):
    n = sum(lengths)
    return (rng.normal(size=(n, n_states)), np.log(rng.dirichlet(np.ones(n_states), size=n_states)),
            np.log(rng.dirichlet(np.ones(n_states))), list(lengths))


def _brute_force(log_lik, log_trans, log_start, lengths, q):
    """Σ over every joint path z of q(z) (log p(x, z) − log q(z)), and log Σ_z p(x, z)."""
    n, k = log_lik.shape
    bounds = np.cumsum([0, *lengths])
    elbo, log_joint = 0.0, []
    for path in itertools.product(range(k), repeat=n):
        z = np.array(path)
        lj = 0.0
        for a, b in itertools.pairwise(bounds):
            lj += log_start[z[a]] + log_lik[a, z[a]]
            lj += sum(log_trans[z[t - 1], z[t]] + log_lik[t, z[t]] for t in range(a + 1, b))
        lq = float(np.log(q[np.arange(n), z]).sum())
        elbo += np.exp(lq) * (lj - lq)
        log_joint.append(lj)
    return elbo, logsumexp(log_joint)


def test_exact_elbo_and_evidence_match_enumeration(rng):
    ll, lt, ls, lengths = _tiny(rng)
    q = rng.dirichlet(np.ones(3), size=ll.shape[0])
    elbo, log_px = _brute_force(ll, lt, ls, lengths, q)
    assert mean_field_elbo(ll, lt, ls, q, lengths) == pytest.approx(elbo, rel=1e-12)
    assert log_evidence(ll, lt, ls, lengths, backend="numpy") == pytest.approx(log_px, rel=1e-12)
    assert elbo < log_px


def test_gradient_matches_central_differences(rng):
    ll, lt, ls, lengths = _tiny(rng, lengths=(4, 2))
    eta = rng.normal(size=ll.shape)
    _, grad = mean_field_elbo_grad(ll, lt, ls, eta, lengths)
    h, fd = 1e-6, np.zeros_like(eta)
    for idx in np.ndindex(*eta.shape):
        d = np.zeros_like(eta)
        d[idx] = h
        fd[idx] = (mean_field_elbo_grad(ll, lt, ls, eta + d, lengths)[0]
                   - mean_field_elbo_grad(ll, lt, ls, eta - d, lengths)[0]) / (2 * h)
    assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_fvi_cavi_is_monotone_and_reaches_a_stationary_point(rng):
    ll, lt, ls, lengths = _tiny(rng, lengths=(30, 7, 13))
    res = fit_fvi(ll, lt, ls, lengths, n_sweeps=5000, tol=0.0)
    assert np.all(np.diff(res.trace) >= -1e-10)
    _, grad = mean_field_elbo_grad(ll, lt, ls, np.log(res.q), lengths)
    assert np.abs(grad).max() < 1e-6
    assert 0.0 <= res.kl and res.elbo <= res.log_evidence


def test_mean_field_is_exact_for_independent_states(rng):
    """Uniform transitions make the states independent: q = the exact posterior, KL = 0."""
    ll = rng.normal(size=(12, 3))
    res = fit_fvi(ll, np.log(np.full((3, 3), 1 / 3)), np.log(np.full(3, 1 / 3)))
    assert res.kl == pytest.approx(0.0, abs=1e-9)
    assert_allclose(res.q, softmax(ll, axis=1), atol=1e-10)


def test_avi_below_fvi_below_evidence_and_window_helps(rng):
    from avicore.experiments.discrete_hmm import config, model

    cfg = config(True)
    hmm = model(cfg)
    x, _ = hmm.sample(120, random_state=3)
    ll = hmm._compute_log_likelihood(x)
    lt, ls = np.log(hmm.transmat_), np.log(hmm.startprob_)
    fits = [fit_avi(x, ll, lt, ls, encoder=MLP(8), window=list(range(-w, w + 1)), n_iter=300, lr=0.02, seed=0)
            for w in (0, 2)]
    const = fit_avi(x, ll, lt, ls, encoder=Constant(), n_iter=200, lr=0.05, seed=0)
    fvi = fit_fvi(ll, lt, ls, starts=[f.q for f in [*fits, const]])
    for f in (*fits, const):
        assert f.elbo <= fvi.elbo <= fvi.log_evidence
        assert f.kl > 0.0 and f.elbo == pytest.approx(mean_field_elbo(ll, lt, ls, f.q), rel=1e-12)
    assert fits[1].elbo > fits[0].elbo  # the neighbours carry information about z_t


def test_bad_input():
    ll = np.zeros((3, 2))
    with pytest.raises(ValueError, match="must be finite for mean-field VI"):
        fit_fvi(ll, np.array([[0.0, -np.inf], [np.log(0.5), np.log(0.5)]]), np.log([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples=3"):
        fit_avi(np.zeros(4), ll, np.log(np.full((2, 2), 0.5)), np.log([0.5, 0.5]), encoder=MLP(2))
    with pytest.raises(TypeError, match=r"encoder must be an avicore\.encoders\.Encoder"):
        fit_avi(np.zeros(3), ll, np.log(np.full((2, 2), 0.5)), np.log([0.5, 0.5]), encoder="mlp")
    with pytest.raises(ValueError, match="q must hold positive rows summing to 1"):
        mean_field_elbo(ll, np.log(np.full((2, 2), 0.5)), np.log([0.5, 0.5]), np.full((3, 2), 0.4))
