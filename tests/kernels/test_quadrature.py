"""Expected-log-likelihood kernels (avicore/kernels/quadrature.py, src_cython/quadrature.pyx, _quadrature_cuda.py).

Every backend against the NumPy reference (float64, 1e-10) on tiny batches that mix ordinary and extreme means and
variances (CUDA runs in the simulator: N ≤ 8), and the scalar probit helper against SciPy's log_ndtr and an
independent asymptotic series of the Mills ratio.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import log_ndtr

from avicore import backends
from avicore.gp.likelihoods import Bernoulli, Gaussian, Poisson, StudentT
from avicore.kernels import quadrature as kq
from avicore.quadrature import expected_log_lik, gauss_hermite
from tests.tolerances import tol

LIKELIHOODS = {
    "gaussian": Gaussian(0.3),
    "poisson": Poisson(),
    "logit": Bernoulli("logit"),
    "probit": Bernoulli("probit"),
    "student_t": StudentT(3.0, 0.5),
}

# 8 points: ordinary values, then |mean| = 1e3, var from 1e-12 to 1e4 (CUDA simulator: keep N <= 8).
MEAN = np.array([0.3, -1.2, 2.5, 1e3, -1e3, -1e3, 1e3, 4.0])
VAR = np.array([0.5, 2.0, 1e-12, 1e4, 1e4, 1.0, 1e-12, 1e4])


def _y(name: str) -> np.ndarray:
    if name in ("logit", "probit"):
        return np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    if name == "poisson":
        return np.array([0.0, 3.0, 1.0, 2.0, 0.0, 5.0, 7.0, 1.0])
    return np.array([0.2, -0.7, 3.0, 5.0, -2.0, 1.0, 999.0, 0.0])


@pytest.fixture(scope="module")
def references() -> dict[str, object]:
    return {name: expected_log_lik(lik, _y(name), MEAN, VAR, backend="numpy") for name, lik in LIKELIHOODS.items()}


def test_dispatch_table_is_covered_by_the_backend_fixture():
    """Completeness guard: the ``backend`` fixture runs every backend this kernel family dispatches to."""
    assert set(kq.SUPPORTED_BACKENDS) == set(backends.BACKENDS)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_backends_match_numpy_reference(backend, references, name):
    ref = references[name]
    res = expected_log_lik(LIKELIHOODS[name], _y(name), MEAN, VAR, backend=backend)
    for field in ("value", "grad_mean", "grad_var"):
        got, want = getattr(res, field), getattr(ref, field)
        finite = np.isfinite(want)
        # Poisson at mean + var/2 > 709.78: exp overflows and every backend returns -inf (never NaN).
        assert np.array_equal(np.isfinite(got), finite), (field, got, want)
        assert not np.isnan(got).any()
        assert_allclose(got[finite], want[finite], **tol(np.float64), err_msg=f"{backend} {name} {field}")
        assert np.array_equal(got[~finite], want[~finite])


def test_reference_is_finite_except_poisson_overflow(references):
    for name, ref in references.items():
        for field in ("value", "grad_mean", "grad_var"):
            arr = getattr(ref, field)
            if name == "poisson":
                overflow = MEAN + 0.5 * VAR > kq.LOG_DBL_MAX
                assert np.isfinite(arr[~overflow]).all()
                assert (arr[overflow] == -np.inf).all()
            else:
                assert np.isfinite(arr).all(), (name, field, arr)


def test_backends_match_with_other_node_counts(backend):
    lik = Bernoulli("probit")
    y = np.array([1.0, 0.0, 1.0])
    for n_points in (1, 7, 64):
        ref = expected_log_lik(lik, y, MEAN[:3], VAR[:3], n_points=n_points, backend="numpy")
        res = expected_log_lik(lik, y, MEAN[:3], VAR[:3], n_points=n_points, backend=backend)
        assert_allclose(res.value, ref.value, **tol(np.float64))
        assert_allclose(res.grad_var, ref.grad_var, **tol(np.float64))


def test_empty_input_gives_empty_output(backend):
    res = expected_log_lik(Bernoulli(), np.zeros(0), np.zeros(0), np.zeros(0), backend=backend)
    assert res.value.shape == res.grad_mean.shape == res.grad_var.shape == (0,)


def test_compiled_backends_match_on_many_points():
    """A larger random batch on the CPU backends (the CUDA simulator is too slow for it)."""
    rng = np.random.default_rng(7)
    n = 2000
    mean = rng.normal(size=n) * np.exp(rng.uniform(-2, 6, n))
    var = np.exp(rng.uniform(-27, 9, n))
    for name, lik in LIKELIHOODS.items():
        if name == "poisson":
            y = rng.poisson(2.0, n).astype(float)
            mean = np.clip(mean, -700, 300)
            var = np.minimum(var, 400.0)
        elif name in ("logit", "probit"):
            y = (rng.random(n) < 0.5).astype(float)
        else:
            y = rng.normal(size=n) * 3
        ref = expected_log_lik(lik, y, mean, var, backend="numpy")
        for backend in ("cython", "numba"):
            res = expected_log_lik(lik, y, mean, var, backend=backend)
            for field in ("value", "grad_mean", "grad_var"):
                assert_allclose(getattr(res, field), getattr(ref, field), **tol(np.float64),
                                err_msg=f"{backend} {name} {field}")


# ---------------------------------------------------------------------------------------------------------------
# The probit helper
# ---------------------------------------------------------------------------------------------------------------

def _mills_c_asymptotic(x: np.ndarray, terms: int = 12) -> np.ndarray:
    """c = λ(−x) − x (x >= 20) from the Mills ratio's asymptotic series x·R(x) = Σ (−1)^k (2k−1)!! x^(−2k), inverted."""
    a = np.array([(-1.0) ** k * float(np.prod(np.arange(2.0 * k - 1.0, 0.0, -2.0))) for k in range(terms)])
    b = np.zeros(terms)  # 1 / (x R(x)) = Σ b_k w^k, w = x^-2
    b[0] = 1.0
    for k in range(1, terms):
        b[k] = -sum(a[j] * b[k - j] for j in range(1, k + 1))
    w = x**-2.0
    return x * sum(b[k] * w**k for k in range(1, terms))


def test_probit_terms_match_scipy_and_asymptotics():
    probit = kq._probit_terms_nb
    u = np.concatenate([np.linspace(-30.0, 40.0, 1401), [kq.PROBIT_SWITCH, -5.0 - 1e-12, -5.0 + 1e-12]])
    out = np.array([probit(float(v)) for v in u])
    log_cdf_ref = log_ndtr(u)
    lam_ref = np.exp(-0.5 * u * u - 0.5 * math.log(2 * math.pi) - log_cdf_ref)
    assert_allclose(out[:, 0], log_cdf_ref, rtol=1e-13, atol=1e-300)
    assert_allclose(out[:, 1], lam_ref, rtol=1e-12, atol=1e-300)
    # c = λ + u: the direct difference (the reference) loses ~eps·u³ relative, so compare it where |u| <= 20.
    near = u >= -20.0
    assert_allclose(out[near, 2], (lam_ref + u)[near], rtol=1e-10, atol=1e-300)
    # Far tail: against the asymptotic series (accurate to < 1e-15 for x >= 20).
    x = np.array([20.0, 25.0, 30.0, 50.0, 1e2, 1e3, 1e5, 1e8])
    tail = np.array([probit(float(-v)) for v in x])
    c_ref = _mills_c_asymptotic(x)
    assert_allclose(tail[:, 2], c_ref, rtol=1e-13)
    assert_allclose(tail[:, 1], x + c_ref, rtol=1e-15)
    assert_allclose(tail[:, 0], log_ndtr(-x), rtol=1e-14)


def test_mills_asymptotic_helper_matches_scipy_where_both_apply():
    x = np.array([20.0, 22.0])
    direct = np.exp(-0.5 * x * x - 0.5 * math.log(2 * math.pi) - log_ndtr(-x)) - x
    assert_allclose(_mills_c_asymptotic(x), direct, rtol=1e-10)


def test_numpy_mills_fraction_matches_compiled():
    x = np.array([5.0, 7.5, 40.0, 1e4])
    assert_allclose(kq._mills_c_numpy(x), [kq._probit_terms_nb(float(-v))[2] for v in x], rtol=1e-15)


def test_gauss_hermite_nodes_are_cached_and_read_only():
    x1, w1 = gauss_hermite(20)
    x2, w2 = gauss_hermite(20)
    assert x1 is x2 and w1 is w2
    assert not x1.flags.writeable and not w1.flags.writeable


def test_vectorised_logit_blocks_match_reference_across_the_whole_range():
    """Cython runs Bernoulli-logit eight points per call with polynomial exp/log1p: sweep u through every regime
    (|u| from 1e-9 to 1e3, both signs, past the exp clamp at 700) with a ragged tail (N mod 8 = 5)."""
    mag = np.concatenate([np.logspace(-9, 3, 40), [699.9, 700.0, 700.1, 745.0, 800.0]])
    mean = np.concatenate([mag, -mag, [0.0, -0.0, 1e-300]])
    n = mean.size
    assert n % 8 == 5
    y = (np.arange(n) % 2).astype(float)
    for var in (np.zeros(n), np.full(n, 1e-12), np.full(n, 0.7), np.full(n, 1e4)):
        ref = expected_log_lik(Bernoulli("logit"), y, mean, var, backend="numpy")
        res = expected_log_lik(Bernoulli("logit"), y, mean, var, backend="cython")
        for field in ("value", "grad_mean", "grad_var"):
            assert_allclose(getattr(res, field), getattr(ref, field), rtol=1e-13, atol=1e-300 + 1e-303,
                            err_msg=field)


def test_probit_gradients_agree_far_in_the_tail(backend):
    """Issue 19: the numpy reference lost every digit of λ = φ/Φ at m ≤ −1e8 (1.78e8 instead of 1e8; inf at
    −1e12). Every backend against the asymptotic series λ(−x) = x + 1/x − 2/x³ + 10/x⁵ (x ≥ 1e4: exact to 1e-16)."""
    x = np.array([1e4, 1e6, 1e8, 1e9, 1e10, 1e12, 1e12, 1e8])
    y = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    mean = np.where(y == 1.0, -x, x)  # u = (2y − 1)·m = −x in every row
    res = expected_log_lik(Bernoulli("probit"), y, mean, np.zeros(8), backend=backend)
    c = 1.0 / x - 2.0 / x**3 + 10.0 / x**5  # the Mills-ratio remainder c(−x) = λ − x
    lam = x + c
    assert_allclose(res.grad_mean, np.where(y == 1.0, lam, -lam), rtol=1e-10, atol=0)
    assert_allclose(res.grad_var, -0.5 * lam * c, rtol=1e-10, atol=0)
    assert_allclose(res.value, log_ndtr(-x), rtol=1e-10, atol=0)


@pytest.mark.parametrize("likelihood", [Bernoulli("logit"), StudentT(4.0, 1.0)], ids=repr)
def test_moderately_wide_factors_take_the_finer_rule_on_the_same_kernel(backend, likelihood):
    """A factor too wide for 20 nodes but resolved by 80 (0.3 τ < sd ≤ 0.6 τ) gets exactly this backend's own
    80-node result; wider than 256 nodes resolve (sd > 1.07 τ), the composite rule, as on every backend."""
    tau = kq.feature_scale(likelihood._code, likelihood._kernel_params())
    y = np.array([1.0, 0.0, 1.0]) if isinstance(likelihood, Bernoulli) else np.array([0.3, -1.0, 2.0])
    mean = np.array([0.4, -1.0, 2.5])
    var = (np.array([0.45, 0.55, 0.59]) * tau) ** 2
    coarse = expected_log_lik(likelihood, y, mean, var, n_points=20, backend=backend)
    fine = expected_log_lik(likelihood, y, mean, var, n_points=80, backend=backend)
    for field in ("value", "grad_mean", "grad_var"):
        np.testing.assert_array_equal(getattr(coarse, field), getattr(fine, field))
    very_wide = (np.array([1.2, 3.0, 30.0]) * tau) ** 2
    got = expected_log_lik(likelihood, y, mean, very_wide, backend=backend)
    want = kq._expected_log_lik_wide_numpy(likelihood._code, likelihood._kernel_params(), y, mean, very_wide)
    for g, w in zip((got.value, got.grad_mean, got.grad_var), want):
        assert_allclose(g, w, rtol=1e-12, atol=0)
