"""Fused ELBO-gradient pass: every backend agrees with the NumPy reference on the same (seed, step), gradients match
finite differences, noise is keyed by the row's index, the thread count changes nothing, the estimator is unbiased
for the linear model's closed form, and user-defined models run the generic Numba loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit
from numpy.testing import assert_allclose, assert_array_equal

import avicore
from avicore.kernels import elbo
from avicore.kernels._counter_normal import local_normals
from avicore.models import CustomHierarchical, LinearHierarchical, LocalTerms, NonlinearHierarchical
from tests.tolerances import tol

MODELS = {"linear": LinearHierarchical(tau=1.155, sigma=2.43), "nonlinear": NonlinearHierarchical()}
FIELDS = ("log_joint", "grad_mean", "grad_log_scale", "grad_global")


def problem(model, n_rows: int, n_samples: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = model.simulate(n_rows, seed=rng, theta=0.7).x
    mean = rng.normal(size=(n_rows, 1))
    log_scale = np.log(0.6) + 0.3 * rng.normal(size=(n_rows, 1))
    theta = 0.7 + 0.5 * rng.normal(size=(n_samples, 1))
    index = rng.permutation(10 * n_rows)[:n_rows].astype(np.int64)
    return x, mean, log_scale, theta, index


def run(model, args, backend, seed=3, step=5):
    x, mean, log_scale, theta, index = args
    return model.local_terms(x, mean, log_scale, theta, seed=seed, step=step, index=index, backend=backend)


def assert_terms_close(got, ref, scale=1.0):
    for f in FIELDS:
        assert_allclose(getattr(got, f), getattr(ref, f), **tol(np.float64, scale), err_msg=f)


# -- backends agree ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_backend_matches_numpy_reference(backend, name):
    model = MODELS[name]
    # Several chunks on the CPU (chunk_rows(64) = 512 rows); tiny under the CUDA simulator.
    n_rows, n_samples = (8, 3) if backend == "cuda" else (1100, 64)
    args = problem(model, n_rows, n_samples)
    got, ref = run(model, args, backend), run(model, args, "numpy")
    assert got.log_joint.shape == (n_samples,) and got.grad_global.shape == (n_samples, 1)
    assert got.grad_mean.shape == got.grad_log_scale.shape == (n_rows, 1)
    assert_terms_close(got, ref)


def test_numpy_reference_is_the_documented_estimator():
    # Rebuild LocalTerms from the documented formulas, the model's log joint and the documented noise.
    model = MODELS["nonlinear"]
    x, mean, log_scale, theta, index = problem(model, 30, 4)
    eps = local_normals(3, 5, index, 4, 1)
    z = mean[:, None, :] + np.exp(log_scale)[:, None, :] * eps
    per_sample = [model.log_joint(x, z[:, s], theta[s]) for s in range(4)]
    values = np.stack([p.value for p in per_sample], axis=1)
    grads = np.stack([p.grad_z[:, 0] for p in per_sample], axis=1)
    gthetas = np.stack([p.grad_theta[:, 0] for p in per_sample], axis=1)
    got = run(model, (x, mean, log_scale, theta, index), "numpy")
    assert_allclose(got.log_joint, values.sum(axis=0), **tol())
    assert_allclose(got.grad_mean[:, 0], grads.mean(axis=1), **tol())
    assert_allclose(got.grad_log_scale[:, 0], (grads * eps[:, :, 0]).mean(axis=1) * np.exp(log_scale[:, 0]), **tol())
    assert_allclose(got.grad_global[:, 0], gthetas.sum(axis=0), **tol())


# -- gradients vs finite differences ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MODELS))
def test_gradients_match_finite_differences(backend, name):
    model = MODELS[name]
    x = model.simulate(40, seed=1).x
    small = backend == "cuda"
    report = avicore.check_gradients(model, x, n_points=2 if small else 6, n_samples=2 if small else 3, seed=4,
                                     backend=backend)
    assert report.backend == backend
    assert report.passed, report.max_rel_error


# -- noise keyed by index, thread count irrelevant, (seed, step) reproducible ---------------------------------------

@pytest.mark.parametrize("backend_name", ["numpy", "cython", "numba"])
def test_subset_batch_gives_the_same_rows(backend_name):
    model = MODELS["nonlinear"]
    x, mean, log_scale, theta, index = problem(model, 600, 8)
    full = run(model, (x, mean, log_scale, theta, index), backend_name)
    part_a, part_b = np.arange(0, 600, 3), np.setdiff1d(np.arange(600), np.arange(0, 600, 3))
    sub = [run(model, (x[p], mean[p], log_scale[p], theta, index[p]), backend_name) for p in (part_a, part_b)]
    assert_array_equal(sub[0].grad_mean, full.grad_mean[part_a])
    assert_array_equal(sub[1].grad_log_scale, full.grad_log_scale[part_b])
    assert_allclose(sub[0].log_joint + sub[1].log_joint, full.log_joint, **tol())
    assert_allclose(sub[0].grad_global + sub[1].grad_global, full.grad_global, **tol())


@pytest.mark.parametrize("backend_name", ["cython", "numba"])
def test_thread_count_does_not_change_results(backend_name):
    model = MODELS["linear"]
    args = problem(model, 5000, 16)  # chunk_rows(16) = 2048: three chunks
    before = avicore.get_num_threads()
    try:
        avicore.set_num_threads(1)
        one = run(model, args, backend_name)
        avicore.set_num_threads(2)
        two = run(model, args, backend_name)
    finally:
        avicore.set_num_threads(before)
    for f in FIELDS:
        assert_array_equal(getattr(one, f), getattr(two, f), err_msg=f)


def test_same_seed_and_step_reproduce_and_others_differ():
    model = MODELS["linear"]
    args = problem(model, 50, 2)
    a, b = run(model, args, "numba", seed=1, step=2), run(model, args, "numba", seed=1, step=2)
    assert_array_equal(a.grad_mean, b.grad_mean)
    for other in (run(model, args, "numba", seed=2, step=2), run(model, args, "numba", seed=1, step=3)):
        assert not np.any(other.grad_mean == a.grad_mean)


def test_chunk_rows_depends_on_samples_only():
    assert elbo.chunk_rows(1) == 4096 and elbo.chunk_rows(100) == 327 and elbo.chunk_rows(10**6) == 16


# -- the estimator is unbiased (linear model, closed form) ------------------------------------------------------

def test_linear_estimator_is_unbiased_for_the_expected_log_joint():
    tau, sigma = 1.155, 2.43
    model = LinearHierarchical(tau=tau, sigma=sigma)
    x = np.array([[1.5], [-0.7], [3.0]])
    mean = np.array([[0.2], [-0.4], [1.0]])
    log_scale = np.log(np.array([[0.5], [0.8], [0.3]]))
    s = np.exp(log_scale)
    n_samples = 4000
    theta = np.full((n_samples, 1), 0.3)
    terms = model.local_terms(x, mean, log_scale, theta, seed=11, step=0, index=np.arange(3), backend="cython")
    # E_q[log p(z, x | θ)] for fixed θ, and its derivatives in m and log s (closed form).
    r = x - 0.3 - tau * mean
    expected = np.sum(-math.log(2 * math.pi) - math.log(sigma) - 0.5 * (mean**2 + s**2)
                      - (r**2 + tau**2 * s**2) / (2 * sigma**2))
    d_mean = -mean + tau * r / sigma**2
    d_log_scale = -(s**2) * (1 + tau**2 / sigma**2)
    se = terms.log_joint.std() / math.sqrt(n_samples)
    assert abs(terms.log_joint.mean() - expected) < 5 * se
    assert_allclose(terms.grad_mean, d_mean, atol=0.05)
    assert_allclose(terms.grad_log_scale, d_log_scale, atol=0.05)


# -- user-defined models ----------------------------------------------------------------------------------------

@njit(cache=True)
def _linear_user(x, z, theta, grad_z, grad_theta):  # the linear model with τ = 1.155, σ = 2.43
    tau, sigma = 1.155, 2.43
    r = x[0] - theta[0] - tau * z[0]
    grad_z[0] = -z[0] + tau * r / sigma**2
    grad_theta[0] = r / sigma**2
    return -0.5 * z[0] ** 2 - 0.5 * (r / sigma) ** 2 - math.log(2 * math.pi) - math.log(sigma)


@njit(cache=True)
def _vector_user(x, z, theta, grad_z, grad_theta):
    # z ∈ R², θ ∈ R³, x ∈ R²: zₙ ~ N(0, I), xₙ ~ N(A(θ) zₙ + θ₂, 1) with A = [[θ₀, 1], [0, θ₁]] elementwise.
    m0 = theta[0] * z[0] + z[1] + theta[2]
    m1 = theta[1] * z[1] + theta[2]
    r0 = x[0] - m0
    r1 = x[1] - m1
    grad_z[0] = -z[0] + r0 * theta[0]
    grad_z[1] = -z[1] + r0 + r1 * theta[1]
    grad_theta[0] = r0 * z[0]
    grad_theta[1] = r1 * z[1]
    grad_theta[2] = r0 + r1
    return -0.5 * (z[0] ** 2 + z[1] ** 2 + r0**2 + r1**2) - 2.0 * math.log(2 * math.pi)


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_custom_model_reproduces_the_builtin(backend_name):
    custom = CustomHierarchical(_linear_user, latent_dim=1, global_dim=1, obs_dim=1)
    args = problem(MODELS["linear"], 700, 5)
    assert_terms_close(run(custom, args, backend_name), run(MODELS["linear"], args, "numpy"))


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_vector_custom_model_gradients(backend_name):
    model = CustomHierarchical(_vector_user, latent_dim=2, global_dim=3, obs_dim=2)
    x = np.random.default_rng(2).normal(size=(30, 2))
    report = avicore.check_gradients(model, x, n_points=4, n_samples=3, seed=8, backend=backend_name)
    assert report.passed, report.max_rel_error


def test_vector_custom_model_numba_matches_numpy():
    model = CustomHierarchical(_vector_user, latent_dim=2, global_dim=3, obs_dim=2)
    rng = np.random.default_rng(5)
    n = 300
    args = (rng.normal(size=(n, 2)), rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) * 0.2,
            rng.normal(size=(4, 3)), np.arange(n, dtype=np.int64))
    assert_terms_close(run(model, args, "numba"), run(model, args, "numpy"))


# -- contract checks --------------------------------------------------------------------------------------------

def test_local_terms_rejects_mismatched_arrays():
    model = MODELS["linear"]
    x, mean, log_scale, theta, index = problem(model, 5, 2)
    with pytest.raises(ValueError, match=r"mean must be a C-contiguous float64 array of shape \(5, 1\); got shape"):
        run(model, (x, mean[:4], log_scale, theta, index), "numpy")
    with pytest.raises(ValueError, match=r"index must be a C-contiguous int64 array of shape \(5,\); got shape"):
        run(model, (x, mean, log_scale, theta, index.astype(np.int32)), "cython")
    with pytest.raises(ValueError, match=r"theta must be a C-contiguous float64 array of shape \(n_samples, 1\)"):
        run(model, (x, mean, log_scale, theta.ravel(), index), "numba")
    with pytest.raises(ValueError, match=r"log_scale must be a C-contiguous float64 array"):
        run(model, (x, mean, np.ones((5, 2))[:, :1], theta, index), "numba")


def test_custom_model_backend_errors():
    custom = CustomHierarchical(_linear_user, latent_dim=1, global_dim=1, obs_dim=1)
    args = problem(MODELS["linear"], 5, 2)
    with pytest.raises(ValueError, match=r"backend must be one of \('numpy', 'numba'\) for a custom model; "
                                         r"got 'cython'"):
        run(custom, args, "cython")


@pytest.mark.parametrize("backend_name", ["numpy", "cython", "numba"])
def test_out_receives_the_results(backend_name):
    model = MODELS["linear"]
    args = problem(model, 700, 3)
    ref = run(model, args, backend_name)
    out = LocalTerms(log_joint=np.full(3, np.nan), grad_mean=np.full((700, 1), np.nan),
                     grad_log_scale=np.full((700, 1), np.nan), grad_global=np.full((3, 1), np.nan))
    x, mean, log_scale, theta, index = args
    got = model.local_terms(x, mean, log_scale, theta, seed=3, step=5, index=index, backend=backend_name, out=out)
    assert got is out
    for f in FIELDS:
        assert_array_equal(getattr(out, f), getattr(ref, f), err_msg=f)


def test_out_errors():
    model = MODELS["linear"]
    x, mean, log_scale, theta, index = problem(model, 5, 2)
    good = dict(log_joint=np.empty(2), grad_mean=np.empty((5, 1)), grad_log_scale=np.empty((5, 1)),
                grad_global=np.empty((2, 1)))
    call = dict(seed=0, step=0, index=index, backend="cython")
    with pytest.raises(ValueError, match=r"out.grad_global must be a writeable, C-contiguous float64 array of shape "
                                         r"\(2, 1\); got shape \(3, 1\)"):
        bad = LocalTerms(**{**good, "grad_global": np.empty((3, 1))})
        model.local_terms(x, mean, log_scale, theta, **call, out=bad)
    with pytest.raises(ValueError, match=r"out.grad_mean must not share memory with the inputs"):
        model.local_terms(x, mean, log_scale, theta, **call, out=LocalTerms(**{**good, "grad_mean": mean}))
    with pytest.raises(TypeError, match=r"out must be a LocalTerms or None; got dict"):
        model.local_terms(x, mean, log_scale, theta, **call, out=good)


def test_cython_fast_exp_is_accurate_everywhere():
    from avicore._cy import load

    x = np.concatenate([np.linspace(-708, 709, 200_001), np.random.default_rng(1).normal(scale=3, size=100_000),
                        [-745.0, -800.0, 709.7, 710.0, -np.inf, np.inf, 0.0, -0.0, 1e-300]])
    out = np.empty_like(x)
    load("elbo").cy_fast_exp(x, out)
    with np.errstate(over="ignore"):
        ref = np.exp(x)
    normal = ref > 2.3e-308
    assert_allclose(out[normal], ref[normal], rtol=5e-16, atol=0)
    assert_array_equal(out[~normal], ref[~normal])
    nan = np.empty(1)
    load("elbo").cy_fast_exp(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


def test_cython_fast_sincos_matches_libm_to_an_ulp():
    from avicore._cy import load

    x = np.concatenate([np.linspace(-1e5, 1e5, 400_001), np.random.default_rng(2).normal(scale=5, size=100_000),
                        np.arange(-64, 65) * (np.pi / 4), [0.0, -0.0, 1e-300, 1.0001e5, -3e7, np.inf, -np.inf]])
    sin_out, cos_out = np.empty_like(x), np.empty_like(x)
    load("elbo").cy_fast_sincos(x, sin_out, cos_out)
    finite = np.isfinite(x)
    # Absolute error: sin and cos are bounded by 1, and near their zeros libm itself is only absolutely accurate
    # relative to the rounding of x.
    assert_allclose(sin_out[finite], np.sin(x[finite]), rtol=0, atol=2.5e-16)
    assert_allclose(cos_out[finite], np.cos(x[finite]), rtol=0, atol=2.5e-16)
    assert np.isnan(sin_out[~finite]).all() and np.isnan(cos_out[~finite]).all()
    nan_s, nan_c = np.empty(1), np.empty(1)
    load("elbo").cy_fast_sincos(np.array([np.nan]), nan_s, nan_c)
    assert np.isnan(nan_s[0]) and np.isnan(nan_c[0])
