"""avicore.gp.kernels: Gram matrices and their gradients in the log-hyperparameters.

References: scikit-learn's kernels (values, and gradients in log-hyperparameters via ``eval_gradient=True``),
closed forms at chosen distances, central finite differences for every kernel (sums, products and ARD
included), and eigenvalues for positive semi-definiteness.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.gaussian_process import kernels as sk

from avicore.gp.kernels import RBF, Kernel, Matern12, Matern32, Matern52, Periodic, Product, Sum

X1 = np.array([0.0, 0.3, 1.1, 2.5, -0.7, 4.0])
X2 = np.random.default_rng(5).normal(size=(7, 2))


def all_kernels() -> dict[str, Kernel]:
    return {
        "rbf": RBF(1.7, 0.8),
        "matern12": Matern12(0.6, 1.3),
        "matern32": Matern32(2.0, 0.5),
        "matern52": Matern52(0.9, 1.1),
        "periodic": Periodic(1.3, 0.7, 1.9),
        "rbf_ard": RBF(1.2, [0.5, 2.0]),
        "matern12_ard": Matern12(1.1, [0.7, 1.4]),
        "matern32_ard": Matern32(0.8, [1.5, 0.6]),
        "matern52_ard": Matern52(1.4, [0.9, 0.3]),
        "sum": RBF(1.0, 0.5) + Periodic(0.5, 1.2, 2.0),
        "product": Matern32(1.5, 2.0) * Periodic(1.0, 0.9, 1.3),
        "nested": (RBF(1.0, 0.7) + Matern12(0.3, 2.0)) * Matern52(1.2, 1.5),
    }


def inputs_for(name: str) -> np.ndarray:
    return X2 if name.endswith("_ard") else X1


SKLEARN = [
    (RBF(1.7, 0.8), sk.ConstantKernel(1.7) * sk.RBF(0.8)),
    (Matern12(0.6, 1.3), sk.ConstantKernel(0.6) * sk.Matern(1.3, nu=0.5)),
    (Matern32(2.0, 0.5), sk.ConstantKernel(2.0) * sk.Matern(0.5, nu=1.5)),
    (Matern52(0.9, 1.1), sk.ConstantKernel(0.9) * sk.Matern(1.1, nu=2.5)),
    (Periodic(1.3, 0.7, 1.9), sk.ConstantKernel(1.3) * sk.ExpSineSquared(0.7, 1.9)),
    (RBF(1.2, [0.5, 2.0]), sk.ConstantKernel(1.2) * sk.RBF([0.5, 2.0])),
    (Matern32(0.8, [1.5, 0.6]), sk.ConstantKernel(0.8) * sk.Matern([1.5, 0.6], nu=1.5)),
    (Matern52(1.4, [0.9, 0.3]), sk.ConstantKernel(1.4) * sk.Matern([0.9, 0.3], nu=2.5)),
]


@pytest.mark.parametrize("ours, theirs", SKLEARN, ids=[repr(k) for k, _ in SKLEARN])
def test_gram_and_gradients_match_scikit_learn(ours, theirs):
    X = X2 if np.ndim(getattr(ours, "lengthscale", 0.0)) else X1.reshape(-1, 1)
    K_ref, dK_ref = theirs(X, eval_gradient=True)
    K, dK = ours.gram_and_grads(X)
    assert_allclose(K, K_ref, rtol=1e-12, atol=1e-14)
    assert_allclose(dK, np.moveaxis(dK_ref, -1, 0), rtol=1e-10, atol=1e-12)
    assert_allclose(ours(X), K_ref, rtol=1e-12, atol=1e-14)
    Y = X[:3] + 0.25
    assert_allclose(ours(X, Y), theirs(X, Y), rtol=1e-12, atol=1e-14)


def test_closed_form_values_at_chosen_distances():
    x = np.array([0.0, 1.0, 3.0])
    r = np.array([1.0, 3.0, 2.0]) / 2.0  # distances (0,1), (0,3), (1,3) over lengthscale 2
    pairs = [(0, 1), (0, 2), (1, 2)]
    closed = {
        RBF(3.0, 2.0): 3.0 * np.exp(-0.5 * r**2),
        Matern12(3.0, 2.0): 3.0 * np.exp(-r),
        Matern32(3.0, 2.0): 3.0 * (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r),
        Matern52(3.0, 2.0): 3.0 * (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r),
        Periodic(3.0, 2.0, 4.0): 3.0 * np.exp(-2 * np.sin(np.pi * np.array([1.0, 3.0, 2.0]) / 4.0) ** 2 / 4.0),
    }
    for kernel, want in closed.items():
        K = kernel(x)
        assert_allclose([K[i, j] for i, j in pairs], want, rtol=1e-14, err_msg=repr(kernel))
        assert_allclose(np.diag(K), 3.0, rtol=1e-15)
        assert_allclose(kernel.diag(x), 3.0, rtol=1e-15)


def test_periodic_kernel_repeats_with_its_period():
    k = Periodic(1.0, 0.8, 1.7)
    x = np.array([0.2, 0.9])
    assert_allclose(k(x, x + 1.7), k(x), rtol=1e-12)
    assert_allclose(k(x, x + 3 * 1.7), k(x), rtol=1e-11)


@pytest.mark.parametrize("name", list(all_kernels()))
def test_gradients_match_finite_differences(name):
    kernel = all_kernels()[name]
    X = inputs_for(name)
    K, dK = kernel.gram_and_grads(X)
    assert dK.shape == (kernel.n_params, *K.shape)
    assert_allclose(K, kernel(X), rtol=1e-14)
    theta = kernel.params
    h = 1e-6
    for i in range(kernel.n_params):
        step = np.zeros_like(theta)
        step[i] = h
        fd = (kernel.with_params(theta + step)(X) - kernel.with_params(theta - step)(X)) / (2 * h)
        assert_allclose(dK[i], fd, rtol=1e-7, atol=1e-9, err_msg=f"{name}: {kernel.param_names[i]}")


@pytest.mark.parametrize("name", list(all_kernels()))
def test_gram_is_symmetric_positive_semidefinite(name):
    kernel = all_kernels()[name]
    X = np.random.default_rng(2).uniform(-3, 3, size=(40, 2) if name.endswith("_ard") else 40)
    K = kernel(X)
    assert np.array_equal(K, K.T)
    eig = np.linalg.eigvalsh(K)
    assert eig.min() >= -1e-12 * eig.max()
    assert_allclose(np.diag(K), kernel.diag(X), rtol=1e-14)


@pytest.mark.parametrize("name", list(all_kernels()))
def test_params_round_trip(name):
    kernel = all_kernels()[name]
    rebuilt = kernel.with_params(kernel.params)
    X = inputs_for(name)
    assert_allclose(rebuilt(X), kernel(X), rtol=1e-14)
    assert len(kernel.param_names) == kernel.n_params == kernel.params.size


def test_sum_and_product_combine_gram_matrices_and_parameters():
    a, b = RBF(1.5, 0.5), Matern12(0.4, 2.0)
    s, p = a + b, a * b
    assert isinstance(s, Sum) and isinstance(p, Product)
    assert_allclose(s(X1), a(X1) + b(X1), rtol=1e-15)
    assert_allclose(p(X1), a(X1) * b(X1), rtol=1e-15)
    assert_allclose(s.params, np.concatenate([a.params, b.params]))
    assert s.param_names == ("left.log_variance", "left.log_lengthscale", "right.log_variance",
                             "right.log_lengthscale")


def test_log_parameters_are_logs_of_the_hyperparameters():
    assert_allclose(RBF(2.0, [0.5, 3.0]).params, np.log([2.0, 0.5, 3.0]))
    assert_allclose(Periodic(2.0, 0.5, 3.0).params, np.log([2.0, 0.5, 3.0]))
    assert RBF(2.0, [0.5, 3.0]).param_names == ("log_variance", "log_lengthscale[0]", "log_lengthscale[1]")


def test_one_dimensional_and_column_inputs_agree():
    k = Matern52(1.0, 0.7)
    assert_allclose(k(X1), k(X1.reshape(-1, 1)), rtol=0, atol=0)


@pytest.mark.parametrize("make, err, match", [
    (lambda: RBF(0.0), ValueError, r"variance must be > 0; got 0\.0\."),
    (lambda: RBF(1.0, -1.0), ValueError, r"lengthscale must be > 0; got -1\.0 at index 0\."),
    (lambda: RBF(1.0, [[1.0]]), ValueError, r"lengthscale must be a positive number or a non-empty 1-D array"),
    (lambda: Periodic(period=np.inf), ValueError, r"period must be finite; got inf\."),
    (lambda: RBF(1.0, [1.0, 2.0])(X1), ValueError, r"X must have 2 feature\(s\), one per lengthscale; got shape "
                                                   r"\(6, 1\)\."),
    (lambda: RBF()(np.zeros((2, 2, 2))), ValueError, r"X must be 1-dimensional or 2-dimensional \(n, n_features\); "
                                                      r"got shape \(2, 2, 2\)\."),
    (lambda: RBF()([0.0, np.nan]), ValueError, r"X must not contain NaN or infinite values"),
    (lambda: RBF()(X2, X1), ValueError, r"Y must have the 2 feature\(s\) of X; got shape \(6, 1\)\."),
    (lambda: RBF().with_params([0.0]), ValueError, r"params must have shape \(2,\); got \(1,\)"),
    (lambda: RBF() + 1.0, TypeError, r"unsupported operand"),
    (lambda: Sum(RBF(), "rbf"), TypeError, r"right must be an avicore\.gp\.kernels\.Kernel; got str\."),
])
def test_bad_hyperparameters_and_inputs_are_rejected(make, err, match):
    with pytest.raises(err, match=match):
        make()
