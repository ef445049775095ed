"""Kernels of the Bayesian decoder and the engine's fused global draw vs their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore._engine_parts import GlobalNoise
from avicore.kernels import decoder as k
from avicore.kernels._counter_normal import global_normals, local_normals
from avicore.kernels.global_draw import draw_global


def test_latent_draws_match_counter_generator() -> None:
    rng = np.random.default_rng(0)
    mean, log_scale = rng.normal(size=(9, 3)), rng.normal(size=(9, 3))
    index = np.arange(40, 49, dtype=np.int64)
    eps = local_normals(2, 7, index, 4, 3).transpose(1, 0, 2)
    for draw in (k.draw_latents_numpy, k.draw_latents_numba):
        z, e = draw(2, 7, index, mean, log_scale, 4)
        assert_array_equal(e, eps)
        # an ulp or two: NumPy's and Numba's exp differ in the last bit on some versions (numba 0.59 + numpy 1.26)
        assert_allclose(z, mean + np.exp(log_scale) * eps, rtol=1e-14, atol=0)


@pytest.mark.parametrize("code", sorted(k.ACTIVATION_CODES.values()))
def test_activation_kernels_match_numpy(code: int) -> None:
    a = np.random.default_rng(code).normal(size=(7, 11))
    h_ref, h_nb = a.copy(), a.copy()
    k.activation_numpy(h_ref, code)
    k.activation_numba(h_nb, code)
    expected = {0: np.maximum(a, 0), 1: np.where(a > 0, a, k.LEAKY_SLOPE * a), 2: np.tanh(a)}[code]
    assert_allclose(h_ref, expected, rtol=1e-15)
    assert_allclose(h_nb, expected, rtol=1e-15)
    g = np.random.default_rng(9).normal(size=a.shape)
    deriv = {0: (a > 0) * 1.0, 1: np.where(a > 0, 1.0, k.LEAKY_SLOPE), 2: 1 - np.tanh(a) ** 2}[code]
    for fn, h in ((k.activation_grad_numpy, h_ref), (k.activation_grad_numba, h_nb)):
        gg = g.copy()
        fn(gg, h, code)
        assert_allclose(gg, g * deriv, rtol=1e-12, atol=1e-15)


def test_residual_kernels_match_numpy() -> None:
    rng = np.random.default_rng(1)
    x, out = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    for fn in (k.residual_numpy, k.residual_numba):
        o = out.copy()
        sq = fn(x, o, 4.0)
        assert_allclose(sq, np.sum((x - out) ** 2), rtol=1e-13)
        assert_allclose(o, 4.0 * (x - out), rtol=1e-15)


def test_fused_global_draw_matches_reference() -> None:
    rng = np.random.default_rng(2)
    mu, log_sd = rng.normal(size=20_000), rng.normal(size=20_000) - 2
    theta, eta, sd = draw_global(5, 3, mu, log_sd, 2)
    ref = global_normals(5, 3, 2, 20_000)
    assert_array_equal(eta, ref)
    assert_allclose(theta, mu + np.exp(log_sd) * ref, rtol=1e-15, atol=1e-15)
    assert_allclose(sd, np.exp(log_sd), rtol=1e-15)


@pytest.mark.parametrize("dim", [3, 20_000])  # the blocked NumPy path and the fused Numba path
def test_engine_global_noise_draw_is_path_independent(dim: int) -> None:
    rng = np.random.default_rng(3)
    mu, log_sd = rng.normal(size=dim), rng.normal(size=dim)
    theta, eta, _ = GlobalNoise(11, 2, dim).draw(4, mu, log_sd)
    ref = global_normals(11, 4, 2, dim)
    assert_array_equal(eta, ref)
    assert_allclose(theta, mu + np.exp(log_sd) * ref, rtol=1e-15, atol=1e-15)
