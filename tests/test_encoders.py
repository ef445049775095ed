"""Encoders: backward passes vs finite differences, forward passes vs naive per-row code, windows, conditioning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose

from avicore.encoders import MLP, BoundEncoder, Constant, Polynomial, check_window, window_inputs

ENCODERS = [
    Constant(),
    Polynomial(1),
    Polynomial(2),
    Polynomial(3),
    MLP(5, depth=1),
    MLP(4, depth=2, activation="relu"),
    MLP(3, depth=3, activation="leaky_relu"),
    MLP(4, depth=2, activation="tanh", heads="separate"),
    MLP(2, depth=2, activation="softplus", heads="separate"),
    MLP(1, depth=2, activation="tanh"),
]


def _loss(bound, params, design, g_mean, g_ls):
    mean, log_scale, _ = bound.forward(params, design)
    return float(np.sum(g_mean * mean) + np.sum(g_ls * log_scale))


def _bound_at_random_params(encoder, latent_dim, rng):
    """The encoder bound to 7 shifted, scaled inputs, random parameters and the design rows."""
    u = rng.normal(size=(7, 2)) * np.array([3.0, 0.5]) + np.array([10.0, -2.0])
    bound = encoder.bind(u, latent_dim)
    return bound, bound.init_params(rng) + 0.3 * rng.normal(size=bound.n_params), bound.design(u)


@pytest.mark.parametrize("encoder", ENCODERS, ids=repr)
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_backward_matches_central_finite_differences(encoder, latent_dim, rng):
    bound, params, design = _bound_at_random_params(encoder, latent_dim, rng)
    g_mean, g_ls = rng.normal(size=(7, latent_dim)), rng.normal(size=(7, latent_dim))
    _, _, cache = bound.forward(params, design, keep=True)
    analytic = bound.backward(params, cache, g_mean, g_ls)
    assert analytic.shape == (bound.n_params,)
    h = 1e-6
    numeric = np.empty(bound.n_params)
    for i in range(bound.n_params):
        e = np.zeros(bound.n_params)
        e[i] = h
        numeric[i] = (_loss(bound, params + e, design, g_mean, g_ls)
                      - _loss(bound, params - e, design, g_mean, g_ls)) / (2 * h)
    assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("encoder", ENCODERS, ids=repr)
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_jacobian_rows_match_finite_differences_and_the_backward_pass(encoder, latent_dim, rng):
    # Per-row Jacobian (the Gauss–Newton solver of GP encoders builds its system from it): each output's column
    # against central differences of forward(), and its contraction against backward() (an independent code path).
    bound, params, design = _bound_at_random_params(encoder, latent_dim, rng)
    jac = bound.jacobian(params, design)
    assert jac.shape == (7, 2 * latent_dim, bound.n_params)
    h = 1e-6
    for i in range(bound.n_params):
        e = np.zeros(bound.n_params)
        e[i] = h
        mp, lp, _ = bound.forward(params + e, design)
        mm, lm, _ = bound.forward(params - e, design)
        numeric = np.concatenate([mp - mm, lp - lm], axis=1) / (2 * h)
        assert_allclose(jac[:, :, i], numeric, rtol=1e-6, atol=1e-7)
    # The base class's central-difference default (for encoders without an exact one) agrees too.
    assert_allclose(BoundEncoder.jacobian(bound, params, design), jac, rtol=1e-6, atol=1e-7)
    g = rng.normal(size=(7, 2 * latent_dim))
    _, _, cache = bound.forward(params, design, keep=True)
    assert_allclose(np.einsum("no,nop->p", g, jac),
                    bound.backward(params, cache, g[:, :latent_dim], g[:, latent_dim:]), rtol=1e-6, atol=1e-8)


def _naive_mlp(bound, params, u):
    """Per-row MLP written from the documented layout, independent of the batched code."""
    spec = bound.spec
    act = {"relu": lambda a: max(a, 0.0), "leaky_relu": lambda a: a if a > 0 else 0.01 * a,
           "tanh": np.tanh, "softplus": lambda a: np.log1p(np.exp(a))}[spec.activation]
    v = (u - u.mean(axis=0)) / u.std(axis=0)  # bind() saw the same u
    n_out = 2 * bound.latent_dim if spec.heads == "shared" else bound.latent_dim
    sizes = [u.shape[1]] + [spec.width] * spec.depth + [n_out]
    outs = []
    pos = 0
    towers = []
    for _ in range(1 if spec.heads == "shared" else 2):
        layers = []
        for fi, fo in itertools.pairwise(sizes):
            w = params[pos:pos + fi * fo].reshape(fi, fo)
            pos += fi * fo
            b = params[pos:pos + fo]
            pos += fo
            layers.append((w, b))
        towers.append(layers)
    for row in v:
        out_row = []
        for layers in towers:
            h = row
            for i, (w, b) in enumerate(layers):
                a = np.array([sum(h[k] * w[k, j] for k in range(w.shape[0])) + b[j] for j in range(w.shape[1])])
                h = a if i == len(layers) - 1 else np.array([act(t) for t in a])
            out_row.append(h)
        outs.append(np.concatenate(out_row))
    out = np.array(outs)
    d = bound.latent_dim
    return out[:, :d], out[:, d:]


@pytest.mark.parametrize("encoder", [e for e in ENCODERS if isinstance(e, MLP)], ids=repr)
def test_mlp_forward_matches_naive_per_row_network(encoder, rng):
    u = rng.normal(size=(6, 3)) * 2.0 + 1.0
    bound = encoder.bind(u, 2)
    params = rng.normal(size=bound.n_params)
    mean, log_scale = bound(params, u)
    ref_mean, ref_ls = _naive_mlp(bound, params, u)
    assert_allclose(mean, ref_mean, rtol=1e-12, atol=1e-12)
    assert_allclose(log_scale, ref_ls, rtol=1e-12, atol=1e-12)


def test_mlp_init_is_reproducible_and_scaled(rng):
    u = rng.normal(size=(10, 50))
    bound = MLP(400, depth=1).bind(u, 1)  # layout: W1 (50, 400), b1, W2 (400, 2), b2
    a, b, c = bound.init_params(3), bound.init_params(3), bound.init_params(4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    w_first = a[:50 * 400]
    # He-normal: variance 2/fan_in for the ReLU layer; biases start at zero.
    assert abs(w_first.var() / (2.0 / 50) - 1.0) < 0.05
    assert np.all(a[50 * 400:] == 0.0)  # hidden biases, output weights and biases start at zero
    # so every input starts at q(zₙ) = N(0, 1), F-VI's starting point.
    mean, log_scale = bound(a, u)
    assert np.all(mean == 0.0) and np.all(log_scale == 0.0)


def test_constant_gives_the_same_factor_to_every_row():
    bound = Constant().bind(np.arange(4.0).reshape(4, 1), 2)
    mean, log_scale = bound(np.array([1.0, 2.0, -1.0, 0.5]), np.arange(4.0).reshape(4, 1))
    assert_allclose(mean, np.tile([1.0, 2.0], (4, 1)))
    assert_allclose(log_scale, np.tile([-1.0, 0.5], (4, 1)))


def test_polynomial_design_is_standardised_and_spans_the_raw_polynomials(rng):
    x = rng.normal(loc=50.0, scale=0.1, size=(200, 1))  # badly conditioned raw powers
    bound = Polynomial(3).bind(x, 1)
    design = bound.design(x)
    assert_allclose(design.mean(axis=0), 0.0, atol=1e-10)
    assert_allclose(design.std(axis=0), 1.0, rtol=1e-10)
    # The encoder is a fixed cubic of the raw input, also on new points: fit it exactly by least squares.
    params = rng.normal(size=bound.n_params)
    x_new = rng.normal(loc=50.0, scale=0.2, size=(30, 1))
    mean, log_scale = bound(params, x_new)
    t = (x_new[:, 0] - 50.0) / 0.1
    basis = np.vander(t, 4)
    for out in (mean[:, 0], log_scale[:, 0]):
        coef, *_ = np.linalg.lstsq(basis, out, rcond=None)
        assert_allclose(basis @ coef, out, rtol=1e-9, atol=1e-9)


def test_polynomial_counts_all_monomials_and_keeps_masks_linear(rng):
    u = np.column_stack([rng.normal(size=(20, 3)), rng.integers(0, 2, size=(20, 2)).astype(float)])
    bound = Polynomial(2).bind(u, 1, n_masks=2)
    # 3 linear + 6 quadratic monomials of the values, plus 2 mask columns, plus a bias; times (mean, log-scale).
    assert bound.n_params == (3 + 6 + 2 + 1) * 2
    design = bound.design(u)
    assert_allclose(design[:, -2:], u[:, -2:])


def test_affine_map_ignores_constant_columns():
    u = np.column_stack([np.ones(5), np.arange(5.0)])
    bound = MLP(2).bind(u, 1)
    design = bound.design(u)
    assert np.all(np.isfinite(design)) and np.all(design[:, 0] == 0.0)


# -- windows ---------------------------------------------------------------------------------------------------

def _naive_window(x, window, lengths):
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = []
    for start, length in zip(starts, lengths):
        for t in range(length):
            vals, masks = [], []
            for k in window:
                inside = 0 <= t + k < length
                vals.extend(x[start + t + k] if inside else np.zeros(x.shape[1]))
                if k != 0:
                    masks.append(1.0 if inside else 0.0)
            rows.append(vals + masks)
    return np.array(rows)


@pytest.mark.parametrize("window", [(0,), (0, 1), (1,), (-2, -1, 0, 1, 2), (3, -1)])
def test_window_inputs_pad_with_zeros_and_mask_the_edges(window, rng):
    x = rng.normal(size=(9, 2))
    assert_allclose(window_inputs(x, window), _naive_window(x, window, [9]))


def test_window_inputs_respect_sequence_boundaries(rng):
    x = rng.normal(size=(10, 1))
    offsets = np.array([0, 4, 5, 10], dtype=np.int64)
    assert_allclose(window_inputs(x, (-1, 0, 2), offsets), _naive_window(x, (-1, 0, 2), [4, 1, 5]))


# -- errors ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda: Polynomial(0), ValueError, r"degree must be >= 1; got 0\."),
    (lambda: MLP(0), ValueError, r"width must be >= 1; got 0\."),
    (lambda: MLP(4, depth=0), ValueError, r"depth must be >= 1; got 0\."),
    (lambda: MLP(4, activation="gelu"), ValueError, r"activation must be one of \('relu', 'leaky_relu', 'tanh', "
                                                    r"'softplus'\); got 'gelu'\."),
    (lambda: MLP(4, heads="both"), ValueError, r"heads must be one of \('shared', 'separate'\); got 'both'\."),
    (lambda: MLP(2.5), TypeError, r"width must be an integer; got float 2\.5\."),
    (lambda: check_window(()), ValueError, r"window must hold at least one offset; got an empty sequence\."),
    (lambda: check_window((0, 0)), ValueError, r"window must hold distinct offsets; got \(0, 0\)\."),
    (lambda: check_window(1), TypeError, r"window must be a sequence of distinct integer offsets"),
    (lambda: check_window((0, 0.5)), TypeError, r"window\[1\] must be an integer; got float 0\.5\."),
    (lambda: Constant().bind(np.zeros((3, 1)), 0), ValueError, r"latent_dim must be >= 1; got 0\."),
])
def test_bad_arguments_raise_clear_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
