"""avicore.check_gradients: passes correct gradients on every CPU backend, catches a wrong gradient in the block where
it is wrong, checks the prior, and rejects bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

import avicore
from avicore.gradcheck import GradientCheck
from avicore.models import CustomHierarchical, LinearHierarchical, NonlinearHierarchical


@njit(cache=True)
def _poisson(x, z, theta, grad_z, grad_theta):
    eta = theta[0] + z[0]
    rate = math.exp(eta)
    grad_z[0] = -z[0] + x[0] - rate
    grad_theta[0] = x[0] - rate
    return -0.5 * z[0] ** 2 - 0.5 * math.log(2 * math.pi) + x[0] * eta - rate - math.lgamma(x[0] + 1.0)


@njit(cache=True)
def _poisson_wrong_z(x, z, theta, grad_z, grad_theta):
    eta = theta[0] + z[0]
    rate = math.exp(eta)
    grad_z[0] = x[0] - rate  # forgets the prior's -z
    grad_theta[0] = x[0] - rate
    return -0.5 * z[0] ** 2 + x[0] * eta - rate


@njit(cache=True)
def _poisson_wrong_theta(x, z, theta, grad_z, grad_theta):
    eta = theta[0] + z[0]
    rate = math.exp(eta)
    grad_z[0] = -z[0] + x[0] - rate
    grad_theta[0] = x[0]  # forgets -rate
    return -0.5 * z[0] ** 2 + x[0] * eta - rate


X_COUNTS = np.array([[0.0], [1.0], [3.0], [2.0], [7.0], [0.0]])


def test_correct_custom_gradients_pass():
    report = avicore.check_gradients(CustomHierarchical(_poisson, 1, 1, 1), X_COUNTS, theta=[0.2], seed=0,
                                     backend="numpy")
    assert isinstance(report, GradientCheck) and report.passed and report.backend == "numpy"
    assert set(report.max_abs_error) == {"mean", "log_scale", "global"}
    assert max(report.max_rel_error.values()) < 1e-7


@pytest.mark.parametrize(("fn", "bad_blocks"), [(_poisson_wrong_z, {"mean", "log_scale"}),
                                                (_poisson_wrong_theta, {"global"})])
def test_wrong_gradient_is_caught_in_its_block(fn, bad_blocks):
    report = avicore.check_gradients(CustomHierarchical(fn, 1, 1, 1), X_COUNTS, theta=[0.2], seed=0,
                                     backend="numpy")
    assert not report.passed
    assert {k for k, v in report.max_rel_error.items() if v > 1e-3} == bad_blocks


@pytest.mark.parametrize("backend_name", ["numpy", "cython", "numba"])
def test_builtin_models_pass_with_a_proper_prior(backend_name):
    model = LinearHierarchical(theta_prior_scale=2.0)
    report = avicore.check_gradients(model, model.simulate(30, seed=1).x, seed=2, backend=backend_name)
    assert report.passed, report.max_rel_error
    assert set(report.max_rel_error) == {"mean", "log_scale", "global", "prior"}


def test_wrong_prior_gradient_is_caught():
    class BadPrior(NonlinearHierarchical):
        def log_prior_global(self, theta):
            value, grad = super().log_prior_global(theta)
            return value, 2 * grad

    report = avicore.check_gradients(BadPrior(theta_prior_scale=1.0), [[0.1], [0.5]], seed=3, backend="numpy")
    assert not report.passed and report.max_rel_error["prior"] > 0.5


def test_auto_backend_resolves_within_the_models_backends():
    assert avicore.check_gradients(CustomHierarchical(_poisson, 1, 1, 1), X_COUNTS, seed=0).backend == "numba"
    assert avicore.check_gradients(NonlinearHierarchical(), [[0.0], [1.0]], seed=0).backend == "cython"


def test_argument_errors():
    model = NonlinearHierarchical()
    with pytest.raises(TypeError, match=r"model must be an avicore LatentVariableModel; got str"):
        avicore.check_gradients("model", [[0.0]])
    with pytest.raises(ValueError, match=r"theta must hold global_dim=1 values; got shape \(2,\)"):
        avicore.check_gradients(model, [[0.0]], theta=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"n_points must be >= 1; got 0"):
        avicore.check_gradients(model, [[0.0]], n_points=0)
    with pytest.raises(ValueError, match=r"step must be > 0; got -1.0"):
        avicore.check_gradients(model, [[0.0]], step=-1.0)
    with pytest.raises(ValueError, match=r"x must not contain NaN"):
        avicore.check_gradients(model, [[np.nan]])
    with pytest.raises(ValueError, match=r"backend='cython' is not implemented for this function"):
        avicore.check_gradients(CustomHierarchical(_poisson, 1, 1, 1), X_COUNTS, backend="cython")
