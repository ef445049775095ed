"""Public API of avicore.chain: argument checking, conventions, result type (the kernels are tested in
tests/kernels/test_chain.py)."""

from __future__ import annotations

import dataclasses
import doctest
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore import chain
from tests.reference_chain import random_model


@pytest.fixture(scope="module")
def model3():
    return random_model(3, 2, np.random.default_rng(3))


def test_result_is_a_frozen_dataclass(model3):
    x = np.random.default_rng(0).normal(size=(6, 2))
    res = chain.smoother(x, **model3, lengths=[2, 4], backend="numpy")
    assert res.means.shape == (6, 3)
    assert res.covariances.shape == res.cross_covariances.shape == (6, 3, 3)
    assert res.log_evidence.shape == (2,)
    assert_array_equal(res.offsets, [0, 2, 6])
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.means = None


def test_scalars_and_1d_observations_mean_the_scalar_model():
    x = np.array([0.3, -0.2, 1.5])
    a = chain.smoother(x, 0.9, 0.5, 1.1, 0.7, 0.1, 2.0, backend="numpy")
    b = chain.smoother(x.reshape(-1, 1), [[0.9]], [[0.5]], [[1.1]], [[0.7]], [0.1], [[2.0]], backend="numpy")
    assert_array_equal(a.means, b.means)
    assert_array_equal(a.covariances, b.covariances)
    assert_array_equal(a.log_evidence, b.log_evidence)


def test_integer_and_float32_input_is_converted(model3):
    x = np.arange(8, dtype=np.int32).reshape(4, 2)
    a = chain.smoother(x, **model3, backend="numpy")
    b = chain.smoother(x.astype(np.float32), **model3, backend="numpy")
    assert a.means.dtype == np.float64
    assert_allclose(a.means, b.means, rtol=0, atol=0)


def test_slightly_asymmetric_covariance_is_symmetrised(model3):
    x = np.ones((3, 2))
    Q = model3["Q"].copy()
    Q[0, 1] += 1e-14
    res = chain.smoother(x, **{**model3, "Q": Q}, backend="numpy")
    ref = chain.smoother(x, **model3, backend="numpy")
    assert_allclose(res.means, ref.means, rtol=1e-12, atol=1e-12)


BAD_INPUT = [
    ({"A": np.ones((2, 3))}, ValueError, r"A must be a square \(d, d\) matrix; got shape \(2, 3\)"),
    ({"A": "a"}, TypeError, "A must be a numeric array"),
    ({"A": np.full((3, 3), np.nan)}, ValueError, "A must not contain NaN"),
    ({"Q": np.eye(2)}, ValueError, r"Q must have shape \(3, 3\); got \(2, 2\)"),
    ({"Q": np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]])}, ValueError, "Q must be symmetric"),
    ({"Q": -np.eye(3)}, ValueError, "Q must be positive-definite; got smallest eigenvalue -1"),
    ({"C": np.ones((2, 2))}, ValueError, r"C must have shape \('any', 3\); got \(2, 2\)"),
    ({"R": np.eye(3)}, ValueError, r"R must have shape \(2, 2\); got \(3, 3\)"),
    ({"R": np.zeros((2, 2))}, ValueError, "R must be positive-definite"),
    ({"m0": np.zeros(2)}, ValueError, r"m0 must have shape \(3,\); got \(2,\)"),
    ({"P0": np.diag([1.0, 1.0, 0.0])}, ValueError, "P0 must be positive-definite"),
    ({"P0": np.full((3, 3), np.inf)}, ValueError, "P0 must not contain NaN or infinite values"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_INPUT,
                         ids=[f"{next(iter(c))}-{i}" for i, (c, _, _) in enumerate(BAD_INPUT)])
def test_bad_parameters_are_rejected(model3, change, error, match):
    with pytest.raises(error, match=match):
        chain.smoother(np.zeros((4, 2)), **{**model3, **change}, backend="numpy")


def test_bad_observations_are_rejected(model3):
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, 2\) to match C's 2 rows; got \(4, 3\)"):
        chain.smoother(np.zeros((4, 3)), **model3)
    with pytest.raises(ValueError, match=r"x must have shape \(n_samples, 2\) to match C's 2 rows; got \(4,\)"):
        chain.smoother(np.zeros(4), **model3)
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"x must not contain NaN or infinite values; got nan at index \(2, 1\)"):
        chain.smoother(bad, **model3)
    with pytest.raises(TypeError, match="x must be a numeric array"):
        chain.smoother(None, **model3)


def test_bad_lengths_and_backend_are_rejected(model3):
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"lengths must sum to n_samples=4; got sum\(lengths\)=5"):
        chain.smoother(x, **model3, lengths=[2, 3])
    with pytest.raises(ValueError, match=r"lengths must be positive integers; got lengths\[1\]=0"):
        chain.smoother(x, **model3, lengths=[4, 0])
    with pytest.raises(ValueError, match="the input must hold at least one time step"):
        chain.smoother(np.zeros((0, 2)), **model3)
    with pytest.raises(ValueError, match="backend must be one of"):
        chain.smoother(x, **model3, backend="fortran")


def test_importing_avicore_chain_does_not_import_numba():
    code = "import sys, avicore.chain, avicore.models.state_space; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_docstring_examples_run():
    import avicore.models.state_space as state_space

    for module in (chain, state_space):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
