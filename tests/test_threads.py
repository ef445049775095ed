"""Thread-count independence of the fits (issue 21), the fused F-VI pass against the unfused one, and the blocked
encoder passes against one block."""

from __future__ import annotations

import warnings

import pytest
from numpy.testing import assert_allclose, assert_array_equal

import avicore
from avicore import _threads
from avicore._engine_parts import FusedLocals
from avicore.encoders import MLP
from avicore.models import LinearHierarchical, NonlinearHierarchical
from avicore.optim import DivergenceWarning

RESULT_ARRAYS = ("trace", "local_mean", "local_log_sd", "global_mean", "global_log_sd")


def fit_with_threads(n_threads, make_engine, x, **kw):
    before = avicore.get_num_threads()
    try:
        with warnings.catch_warnings():  # a 1-CPU runner warns about 2 threads; the results must still agree
            warnings.simplefilter("ignore", RuntimeWarning)
            avicore.set_num_threads(n_threads)
        return make_engine().fit(x, **kw)
    finally:
        avicore.set_num_threads(before)


def assert_same_bits(a, b, names=RESULT_ARRAYS):
    for name in names:
        assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("model", [LinearHierarchical(), NonlinearHierarchical()], ids=["linear", "nonlinear"])
def test_fvi_fit_is_the_same_bits_on_one_and_two_threads(model):
    x = model.simulate(10_000, seed=1).x  # S = 2: chunks of 4,096 rows, three chunks

    def make():
        return avicore.FVI(model, n_samples=2, backend="cython", elbo_samples=20)

    one, two = (fit_with_threads(n, make, x, n_iter=30, lr=0.05, seed=4) for n in (1, 2))
    assert_same_bits(one, two)
    assert one.elbo == two.elbo


def test_fused_fvi_pass_equals_the_unfused_pass(monkeypatch):
    """The fused pass updates the locals with the same bits as the pass followed by Adam; only Σ log sₙ (hence the
    ELBO trace) is summed in another order (per chunk instead of NumPy's pairwise sum)."""
    model = NonlinearHierarchical()
    x = model.simulate(9_000, seed=2).x
    fused = avicore.FVI(model, n_samples=3, backend="cython", elbo_samples=20).fit(x, n_iter=40, lr=0.05, seed=5)
    monkeypatch.setattr(FusedLocals, "make", classmethod(lambda cls, engine, x: None))
    plain = avicore.FVI(model, n_samples=3, backend="cython", elbo_samples=20).fit(x, n_iter=40, lr=0.05, seed=5)
    assert_same_bits(fused, plain, RESULT_ARRAYS[1:])
    assert_allclose(fused.trace, plain.trace, rtol=1e-13, atol=0)
    assert fused.elbo == plain.elbo


def test_fused_fvi_returns_the_same_best_state_when_a_fit_diverges(monkeypatch):
    """The fused engine keeps its best state by rotating buffers instead of copying: a fit that runs away returns
    the same state as the copying engine."""
    model = LinearHierarchical()
    x = model.simulate(5_000, seed=3).x
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(FusedLocals, "make", classmethod(lambda cls, engine, x: None))
        with pytest.warns(DivergenceWarning):
            results.append(avicore.FVI(model, n_samples=1, backend="cython", elbo_samples=20)
                           .fit(x, n_iter=300, lr=1e4, seed=6))
    a, b = results
    assert a.stop_reason == b.stop_reason == "diverged"
    assert a.state_iteration == b.state_iteration < a.n_iter
    assert_same_bits(a, b, RESULT_ARRAYS[1:])


@pytest.mark.parametrize("heads", ["shared", "separate"])
def test_avi_fit_is_the_same_bits_on_one_and_two_threads(heads):
    model = NonlinearHierarchical()
    x = model.simulate(2_500, seed=1).x  # three encoder row blocks

    def make():
        return avicore.AVI(model, MLP(8, heads=heads), n_samples=4, backend="cython", elbo_samples=20)

    one, two = (fit_with_threads(n, make, x, n_iter=20, lr=0.01, seed=4) for n in (1, 2))
    assert_same_bits(one, two)
    assert_array_equal(one.encoder_params, two.encoder_params)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "softplus"])
def test_mlp_blocked_passes_match_one_block(activation, rng, monkeypatch):
    """Forward and backward over several row blocks equal the single-block passes (gradient partials added in
    block order: equal up to rounding)."""
    n = 2 * _threads.ROW_BLOCK + 37
    u = rng.normal(size=(n, 2))
    enc = MLP(6, activation=activation).bind(u, latent_dim=2)
    params = enc.init_params(rng) + 0.1 * rng.normal(size=enc.n_params)
    design = enc.design(u)
    g_mean, g_ls = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    mean, log_scale, cache = enc.forward(params, design, keep=True)
    grad = enc.backward(params, cache, g_mean, g_ls)
    monkeypatch.setattr("avicore.encoders.row_blocks", lambda n_rows: [(0, n_rows)])
    mean1, log_scale1, cache1 = enc.forward(params, design, keep=True)
    grad1 = enc.backward(params, cache1, g_mean, g_ls)
    assert_allclose(mean, mean1, rtol=1e-13, atol=1e-13)
    assert_allclose(log_scale, log_scale1, rtol=1e-13, atol=1e-13)
    assert_allclose(grad, grad1, rtol=1e-12, atol=1e-12)
