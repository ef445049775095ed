"""The paper's time-series findings, run through the A-VI engine and scored with noise-free closed-form ELBOs.

- Saw: an encoder on the Markov blanket (xₙ, xₙ₊₁) closes the amortization gap; one on xₙ₊₁ alone cannot.
- Gaussian random walk: the optimal q(zₙ) depends on all of x, so the gap of a centred window encoder shrinks with
  the window's half-width w but never reaches 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize

import avicore
from avicore.encoders import MLP, Polynomial, window_inputs
from avicore.models import GaussianRandomWalk, SawTimeSeries
from avicore.optim import exponential_decay
from tests.models.test_saw import dense_precision


def best_affine_window_gap_saw(model: SawTimeSeries, x: np.ndarray, window: tuple[int, ...]) -> float:
    """Exact gap of the best encoder affine in the window inputs, q(θ) free (dense algebra, no engine).

    The target p(z, θ | x) is Gaussian with precision J and mean ν, so for a mean-field q with means v and local
    sds s, ELBO*_F − ELBO(q) = ½ (v − ν)ᵀ J (v − ν) + Σₙ [½ Jₙₙ sₙ² − log sₙ − ½(1 + log Jₙₙ)] (+ 0 for the
    optimal q(θ) sd). With v = (Uβ, μ_θ) the first part is a J-weighted least squares; log s = Uγ is convex.
    """
    n = x.shape[0]
    J, h = dense_precision(model, x[:, 0])
    nu = np.linalg.solve(J, h)
    U = np.hstack([np.ones((n, 1)), window_inputs(x, window)])
    D = np.zeros((n + 1, U.shape[1] + 1))
    D[:n, :-1] = U
    D[n, -1] = 1.0
    return _weighted_gap(J, nu, D, U, np.diag(J)[:n])


def _weighted_gap(J, nu, D, U, jd):
    L = np.linalg.cholesky(J)
    beta = np.linalg.lstsq(L.T @ D, L.T @ nu, rcond=None)[0]
    dm = D @ beta - nu
    res = minimize(lambda g: float(np.sum(0.5 * jd * np.exp(2 * U @ g) - U @ g)), np.zeros(U.shape[1]),
                   jac=lambda g: U.T @ (jd * np.exp(2 * U @ g) - 1.0), method="BFGS", options={"gtol": 1e-10})
    ls = U @ res.x
    return float(0.5 * dm @ J @ dm + np.sum(0.5 * jd * np.exp(2 * ls) - ls - 0.5 * (1.0 + np.log(jd))))


@pytest.fixture(scope="module")
def saw():
    model = SawTimeSeries()
    x = model.simulate(1000, seed=0).x
    return model, x, model.fvi_optimum(x)


def saw_gap(model, x, opt, window, width, n_iter=1500):
    res = avicore.AVI(model, MLP(width), n_samples=4, window=window, elbo_samples=8).fit(
        x, n_iter=n_iter, lr=exponential_decay(0.02, 1e-4, n_iter), seed=0)
    return opt.elbo - model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd)


def test_saw_optimum_is_affine_in_the_markov_blanket(saw):
    """The F-VI optimum lies in the affine family of (xₙ, xₙ₊₁, mask): the best such encoder has gap 0."""
    model, x, _ = saw
    assert best_affine_window_gap_saw(model, x[:250], (0, 1)) == pytest.approx(0.0, abs=1e-8)
    assert best_affine_window_gap_saw(model, x[:250], (1,)) > 25.0


def test_saw_markov_blanket_window_closes_the_gap(saw):
    model, x, opt = saw
    gap = saw_gap(model, x, opt, (0, 1), 4)
    print(f"saw N=1000, window (0, 1), MLP(4): gap {gap:.3f} nats")
    assert 0.0 <= gap < 1.0


def test_saw_next_observation_alone_leaves_a_large_gap(saw):
    model, x, opt = saw
    gap = saw_gap(model, x, opt, (1,), 4)
    best = best_affine_window_gap_saw(model, x, (1,))
    print(f"saw N=1000, window (1,), MLP(4): gap {gap:.1f} nats (best affine encoder: {best:.1f})")
    assert gap >= 100.0
    assert 0.9 * best < gap < 1.05 * best  # the fit converged to its family's level, not stopped early


@pytest.mark.slow
def test_saw_next_observation_alone_leaves_a_large_gap_wide_mlp(saw):
    model, x, opt = saw
    gap = saw_gap(model, x, opt, (1,), 32)
    best = best_affine_window_gap_saw(model, x, (1,))
    print(f"saw N=1000, window (1,), MLP(32): gap {gap:.1f} nats (best affine encoder: {best:.1f})")
    assert gap >= 100.0
    assert 0.9 * best < gap < 1.05 * best


def test_saw_next_observation_alone_leaves_a_large_gap_wide_mlp_small_n():
    """Fast twin of the slow N = 1,000 test: N = 250, threshold scaled to 100 · 250/1000 = 25 nats."""
    model = SawTimeSeries()
    x = model.simulate(250, seed=0).x
    gap = saw_gap(model, x, model.fvi_optimum(x), (1,), 32, n_iter=800)
    best = best_affine_window_gap_saw(model, x, (1,))
    print(f"saw N=250, window (1,), MLP(32): gap {gap:.1f} nats (best affine encoder: {best:.1f})")
    assert gap >= 25.0
    assert 0.9 * best < gap < 1.05 * best


def random_walk_precision(n: int) -> np.ndarray:
    """Posterior precision of z for the unit walk: z_1 ~ N(0, 1) gives J₁₁ = 3, the last step J_NN = 2."""
    J = np.diag(np.full(n, 3.0)) - np.diag(np.ones(n - 1), 1) - np.diag(np.ones(n - 1), -1)
    J[-1, -1] = 2.0
    return J


def best_affine_window_gap(x: np.ndarray, window: tuple[int, ...]) -> float:
    """Exact gap of the best encoder affine in the window inputs for the unit random walk (no θ): see
    :func:`best_affine_window_gap_saw`, with J the walk's tridiagonal posterior precision and ν = J⁻¹x."""
    n = x.shape[0]
    U = np.hstack([np.ones((n, 1)), window_inputs(x, window)])
    J = random_walk_precision(n)
    return _weighted_gap(J, np.linalg.solve(J, x[:, 0]), U, U, np.diag(J))


WINDOWS = (0, 1, 2, 4, 8)


@pytest.mark.parametrize("degree", [1, 2])
def test_whitened_polynomial_spans_the_same_family(degree):
    """whiten=True only reparametrises: identity covariance of the value columns, masks as missing-indicators, and
    the least-squares projection of any target onto [1, design] unchanged (same family of functions)."""
    x = GaussianRandomWalk().simulate(200, seed=5).x
    u = window_inputs(x, (-2, -1, 0, 1, 2))
    plain = Polynomial(degree).bind(u, 1, n_masks=4)
    white = Polynomial(degree, whiten=True).bind(u, 1, n_masks=4)
    dp, dw = plain.design(u), white.design(u)
    p = dw.shape[1] - 4
    assert_allclose(np.cov(dw[:, :p], rowvar=False, bias=True), np.eye(p), atol=1e-8)
    assert_allclose(dw[:, p:], 1.0 - u[:, -4:], atol=0)
    target = np.sin(np.arange(200) / 7.0) + x[:, 0]
    fits = []
    for d in (dp, dw):
        a = np.hstack([np.ones((200, 1)), d])
        fits.append(a @ np.linalg.lstsq(a, target, rcond=None)[0])
    assert_allclose(fits[0], fits[1], atol=1e-8)
    assert repr(Polynomial(degree, whiten=True)) == f"Polynomial({degree}, whiten=True)"
    with pytest.raises(TypeError, match="whiten must be a bool; got int 1"):
        Polynomial(degree, whiten=1)


def test_random_walk_best_window_gap_shrinks_with_w_but_stays_positive():
    """N = 1,000, exact: the best encoder affine in a centred window of half-width w never reaches F-VI."""
    model = GaussianRandomWalk()
    x = model.simulate(1000, seed=3).x
    best = np.array([best_affine_window_gap(x, tuple(range(-w, w + 1))) for w in WINDOWS])
    print("\nrandom walk N=1000, best affine window encoder: " + ", ".join(
        f"w={w}: {g:.4g}" for w, g in zip(WINDOWS, best)))
    assert np.all(best > 0.0) and np.all(np.diff(best) < 0.0)
    # F-VI's exact KL (closed form) against dense Gaussian algebra: ½ (Σ log Jₙₙ − log det J)
    J = random_walk_precision(1000)
    kl = 0.5 * (np.log(np.diag(J)).sum() - np.linalg.slogdet(J)[1])
    assert model.exact_kl(x, backend="numpy") == pytest.approx(kl, rel=1e-9)


def test_random_walk_avi_window_gap_shrinks_with_w_but_stays_positive():
    """N = 1,000: A-VI fits of a whitened affine window encoder, scored with the exact ELBO of the walk.

    Reference: the closed-form gap of the best encoder of the same family (``best_affine_window_gap``); the fitted
    gaps are scored with the exact ELBO, so they carry no Monte-Carlo error, only the optimiser's residual. Each
    fit must land within 0.1 nats of its optimum (observed excess 0.002 … 0.044 nats over three data/fit seed
    pairs: the jitter a 1e-4 final Adam step leaves). Consecutive optima (949, 57, 6.6, 0.14, 6e-5 nats) differ by
    more than 0.1, so the bounds alone already imply the strict decrease asserted last.
    """
    model = GaussianRandomWalk()
    x = model.simulate(1000, seed=3).x
    opt = model.fvi_optimum(x, backend="numpy")
    rows = []
    for w in WINDOWS:
        window = tuple(range(-w, w + 1))
        n_iter = 8000
        res = avicore.AVI(model, Polynomial(1, whiten=True), n_samples=4, window=window, elbo_samples=8).fit(
            x, n_iter=n_iter, lr=exponential_decay(0.1, 1e-4, n_iter), seed=0)
        fitted = opt.elbo - model.elbo(x, res.local_mean, res.local_sd)
        rows.append((w, fitted, best_affine_window_gap(x, window)))
    print("\nrandom walk N=1000, A-VI Polynomial(1, whiten=True), centred windows: w, fitted gap, best gap (nats)")
    for w, fitted, best in rows:
        print(f"  w={w}: {fitted:10.4f} {best:12.6g}")
    fitted = np.array([r[1] for r in rows])
    best = np.array([r[2] for r in rows])
    assert np.all(fitted > 0.0)
    assert np.all(fitted >= best - 1e-6)  # no encoder of the family beats its optimum
    assert np.all(fitted < best + 0.1)  # the fits reach their family's closed-form optimum
    assert np.all(np.diff(fitted) < 0.0)  # w = 0 → 1 → 2 → 4 → 8: the fitted gaps decrease strictly
