"""Gaussian-chain kernels (avicore/kernels/chain.py, src_cython/chain.pyx, avicore/kernels/_chain_cuda.py).

Every backend against dense Gaussian conditioning of the joint (z, x) on tiny ragged batches, against the NumPy
reference on a larger batch, and — scalar case, T = 10⁶, compiled backends — against SciPy's banded solver and the
closed-form steady-state variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.stats import multivariate_normal, norm

import avicore
from avicore import chain
from avicore.kernels import chain as kchain
from tests.reference_chain import condition, joint_moments, marginals, random_model
from tests.tolerances import tol

# (d, p): scalar kernels, and the general kernels with d > p, d < p and d = p > 1.
SHAPES = [(1, 1), (3, 1), (1, 2), (3, 2)]
LENGTHS = [4, 1, 3]


@pytest.fixture(scope="module", params=SHAPES, ids=[f"d{d}p{p}" for d, p in SHAPES])
def problem(request: pytest.FixtureRequest):
    d, p = request.param
    rng = np.random.default_rng(1000 * d + p)
    model = random_model(d, p, rng)
    x = rng.normal(size=(sum(LENGTHS), p)) * 2.0
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    refs = []
    for i in range(len(LENGTHS)):
        seg = x[offsets[i]:offsets[i + 1]]
        mean, cov, _ = condition(seg, **model)
        covs, cross = marginals(cov, seg.shape[0], d)
        _, _, mx, Sxx, _ = joint_moments(seg.shape[0], **model)
        log_px = multivariate_normal(mean=mx, cov=Sxx).logpdf(seg.reshape(-1))
        refs.append((mean, covs, cross, log_px))
    return model, x, offsets, refs


def test_dense_reference_matches_precision_form():
    """The test helper itself: conditioning the joint equals solving with the block-tridiagonal precision."""
    a, q, c, r, m0, p0 = 0.7, 0.5, 1.3, 0.8, 0.4, 2.0
    x = np.array([[0.3], [-1.2], [2.0], [0.1]])
    T = x.shape[0]
    J = np.zeros((T, T))
    for t in range(T):
        J[t, t] = c * c / r + (1 / p0 if t == 0 else 1 / q) + (a * a / q if t < T - 1 else 0.0)
        if t < T - 1:
            J[t, t + 1] = J[t + 1, t] = -a / q
    h = c * x[:, 0] / r
    h[0] += m0 / p0
    mean, cov, log_px = condition(x, a, q, c, r, m0, p0)
    assert_allclose(mean[:, 0], np.linalg.solve(J, h), rtol=1e-12, atol=1e-12)
    assert_allclose(cov, np.linalg.inv(J), rtol=1e-12, atol=1e-12)
    # log p(x) = log p(x | z) + log p(z) - log p(z | x) at any z (here z = 0)
    z = np.zeros(T)
    log_prior = norm(m0, math.sqrt(p0)).logpdf(z[0]) + norm(a * z[:-1], math.sqrt(q)).logpdf(z[1:]).sum()
    log_lik = norm(c * z, math.sqrt(r)).logpdf(x[:, 0]).sum()
    log_post = multivariate_normal(np.linalg.solve(J, h), np.linalg.inv(J)).logpdf(z)
    assert log_px == pytest.approx(log_lik + log_prior - log_post, rel=1e-12)


def test_smoother_matches_dense_conditioning(problem, backend):
    model, x, offsets, refs = problem
    res = chain.smoother(x, **model, lengths=LENGTHS, backend=backend)
    for i, (mean, covs, cross, log_px) in enumerate(refs):
        rows = slice(offsets[i], offsets[i + 1])
        assert_allclose(res.means[rows], mean, **tol())
        assert_allclose(res.covariances[rows], covs, **tol())
        assert_allclose(res.cross_covariances[rows], cross, **tol())
        assert res.log_evidence[i] == pytest.approx(log_px, rel=1e-10, abs=1e-10)
    assert_array_equal(res.offsets, offsets)


def test_last_step_cross_covariance_is_zero(problem, backend):
    model, x, offsets, _ = problem
    res = chain.smoother(x, **model, lengths=LENGTHS, backend=backend)
    assert (res.cross_covariances[offsets[1:] - 1] == 0.0).all()


@pytest.fixture(scope="module", params=[(1, 1), (3, 2)], ids=["scalar", "d3p2"])
def batch(request: pytest.FixtureRequest):
    """A ragged batch with lengths 1 and 2 and a long-ish tail, and its NumPy-reference answer."""
    d, p = request.param
    rng = np.random.default_rng(7 + d)
    model = random_model(d, p, rng)
    lengths = [1, 2, 9, 1, 30, 5, 17, 1]
    x = rng.normal(size=(sum(lengths), p))
    ref = chain.smoother(x, **model, lengths=lengths, backend="numpy")
    return model, x, lengths, ref


def test_backends_agree_with_numpy_reference(batch, backend):
    model, x, lengths, ref = batch
    res = chain.smoother(x, **model, lengths=lengths, backend=backend)
    assert_allclose(res.means, ref.means, **tol())
    assert_allclose(res.covariances, ref.covariances, **tol())
    assert_allclose(res.cross_covariances, ref.cross_covariances, **tol())
    assert_allclose(res.log_evidence, ref.log_evidence, **tol())


def test_sequences_are_independent(batch, backend):
    """A sequence's answer does not depend on the other sequences of the batch."""
    model, x, _, ref = batch
    alone = chain.smoother(x[3:12], **model, lengths=[9], backend=backend)
    assert_allclose(alone.means, ref.means[3:12], **tol())
    assert_allclose(alone.log_evidence[0], ref.log_evidence[2], **tol())


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_thread_count_does_not_change_results(batch, name):
    model, x, lengths, _ = batch
    old = avicore.get_num_threads()
    try:
        avicore.set_num_threads(1)
        one = chain.smoother(x, **model, lengths=lengths, backend=name)
        avicore.set_num_threads(2)
        two = chain.smoother(x, **model, lengths=lengths, backend=name)
    finally:
        avicore.set_num_threads(old)
    assert_array_equal(one.means, two.means)
    assert_array_equal(one.covariances, two.covariances)
    assert_array_equal(one.log_evidence, two.log_evidence)


REUSE_SHAPES = [(1, 1), (2, 1), (3, 2)]


@pytest.mark.parametrize("backend", ["cython", "numba", "cuda"])
@pytest.mark.parametrize(("d", "p"), REUSE_SHAPES, ids=[f"d{d}p{p}" for d, p in REUSE_SHAPES])
def test_reusing_repeated_covariance_steps_changes_no_bit(backend, d, p, monkeypatch):
    """The compiled kernels copy a covariance step whose inputs repeat one of the RING steps before (the Riccati
    recursions' fixed point or short cycle in floating point); that must give bitwise what recomputing gives.
    (The NumPy reference always recomputes.)"""
    monkeypatch.setattr(avicore._config, "CUDA_THREADS_PER_BLOCK", 8)  # the simulator runs threads in Python
    rng = np.random.default_rng(17 + d)
    model = random_model(d, p, rng)
    model["A"] *= 0.5  # spectral radius 0.45: the recursions settle within the sequences below
    lengths = [1, 2, 3, 4, 5, 120] if backend == "cuda" else [1, 2, 3, 4, 5, 150, 400]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    x = rng.normal(size=(offsets[-1], p))
    prm = chain.check_params(**model)
    args = (x, offsets, prm.A, prm.Q, prm.C, prm.R, prm.m0, prm.P0, backend)
    full = kchain.run_smoother(*args, reuse=False)
    fast = kchain.run_smoother(*args, reuse=True)
    for a, b in zip(full, fast):
        assert_array_equal(a, b)
    # the copy path was taken: the longest sequence's interior covariances repeat with a period <= RING
    covs = fast[1][offsets[-2] + 20:offsets[-1] - 20]
    assert any((covs[k:] == covs[:-k]).all(axis=(1, 2)).any() for k in range(1, kchain.RING + 1))


def test_numerical_breakdown_names_the_sequence(backend):
    """Valid but absurd scales overflow S = C P Cᵀ + R to inf: a ChainNumericalError naming the sequence."""
    x = np.zeros(5)
    with pytest.raises(chain.ChainNumericalError, match="sequence 0") as info:
        chain.smoother(x, A=1.0, Q=1.0, C=1e200, R=1.0, m0=0.0, P0=1e200, lengths=[5], backend=backend)
    assert info.value.sequence == 0


def test_every_backend_is_tested():
    """Completeness guard: the dispatcher's backends are exactly those the `backend` fixture runs."""
    assert kchain.SUPPORTED_BACKENDS == avicore.backends.BACKENDS


# ---------------------------------------------------------------------------------------------------------------
# Long scalar chains (compiled backends only): T = 10⁶
# ---------------------------------------------------------------------------------------------------------------

LONG_T = 1_000_000
A_, Q_, C_, R_, M0_, P0_ = 0.95, 0.3, 1.5, 0.7, 0.2, 2.0


@pytest.fixture(scope="module")
def long_chain():
    rng = np.random.default_rng(11)
    z = np.empty(LONG_T)
    z[0] = M0_ + math.sqrt(P0_) * rng.standard_normal()
    w = rng.standard_normal(LONG_T) * math.sqrt(Q_)
    for t in range(1, 50):  # a few steps by hand, then the stationary AR(1) via lfilter
        z[t] = A_ * z[t - 1] + w[t]
    from scipy.signal import lfilter

    z[49:] = lfilter([1.0], [1.0, -A_], w[49:], zi=[A_ * z[48]])[0]
    x = C_ * z + rng.standard_normal(LONG_T) * math.sqrt(R_)
    # Independent answer: the tridiagonal posterior precision J, its banded Cholesky factor, J μ = h.
    ab = np.empty((2, LONG_T))
    ab[0] = C_ * C_ / R_ + 1.0 / Q_ + A_ * A_ / Q_
    ab[0, 0] = C_ * C_ / R_ + 1.0 / P0_ + A_ * A_ / Q_
    ab[0, -1] = C_ * C_ / R_ + 1.0 / Q_
    ab[1, :-1] = -A_ / Q_
    ab[1, -1] = 0.0
    h = C_ * x / R_
    h[0] += M0_ / P0_
    factor = cholesky_banded(ab, lower=True)
    mean = cho_solve_banded((factor, True), h)
    log_det_J = 2.0 * np.log(factor[0]).sum()
    # log p(x) = log p(x | μ) + log p(μ) − log p(μ | x), with log p(μ | x) = −T/2 log 2π + ½ log det J
    log_px = (norm(C_ * mean, math.sqrt(R_)).logpdf(x).sum() + norm(M0_, math.sqrt(P0_)).logpdf(mean[0])
              + norm(A_ * mean[:-1], math.sqrt(Q_)).logpdf(mean[1:]).sum()
              + 0.5 * LONG_T * math.log(2 * math.pi) - 0.5 * log_det_J)
    return x, mean, log_px


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_long_scalar_chain_is_stable(long_chain, name):
    x, mean, log_px = long_chain
    res = chain.smoother(x, A_, Q_, C_, R_, M0_, P0_, backend=name)
    var = res.covariances[:, 0, 0]
    assert np.isfinite(res.means).all() and np.isfinite(var).all() and np.isfinite(res.cross_covariances).all()
    assert_allclose(res.means[:, 0], mean, rtol=0, atol=1e-8)
    assert res.log_evidence[0] == pytest.approx(log_px, rel=1e-10)
    # Far from both ends the smoothed variance is the diagonal of the inverse of the infinite Toeplitz
    # tridiagonal precision (α on the diagonal, β off it): 1 / sqrt(α² − 4β²). No drift along 10⁶ steps.
    # Its off-diagonal is ρ times that, ρ = (−α + sqrt(α² − 4β²)) / (2β): the lag-one cross-covariance.
    alpha, beta = C_ * C_ / R_ + (1 + A_ * A_) / Q_, -A_ / Q_
    root = math.sqrt(alpha * alpha - 4 * beta * beta)
    assert_allclose(var[1000:-1000], 1.0 / root, rtol=1e-12)
    assert_allclose(res.cross_covariances[1000:-1000, 0, 0], (-alpha + root) / (2 * beta) / root, rtol=1e-12)
    # A window around the middle smoothed on its own by the NumPy reference: the influence of the far data
    # decays like ρ^300 ≈ 0, so the middle values must agree after 5·10⁵ steps.
    mid, half = LONG_T // 2, 300
    window = chain.smoother(x[mid - half:mid + half], A_, Q_, C_, R_, M0_, P0_, backend="numpy")
    assert_allclose(res.means[mid - 5:mid + 5], window.means[half - 5:half + 5], rtol=0, atol=1e-10)
    assert_allclose(res.covariances[mid - 5:mid + 5], window.covariances[half - 5:half + 5], rtol=1e-10)
    assert_allclose(res.cross_covariances[mid - 5:mid + 5], window.cross_covariances[half - 5:half + 5],
                    rtol=1e-10)
