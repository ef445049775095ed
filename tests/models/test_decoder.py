"""BayesianDecoder: log joint vs scipy on a naive per-row loop, gradients vs finite differences, backends, engines."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import stats

import avicore
from avicore.encoders import MLP, Constant, Polynomial
from avicore.kernels._counter_normal import local_normals
from avicore.models import BayesianDecoder
from avicore.models.decoder import reconstruction_mse
from tests.tolerances import tol

ACTIVATIONS = ("leaky_relu", "relu", "tanh")
NUMPY_ACT = {"leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a), "relu": lambda a: np.maximum(a, 0.0),
             "tanh": np.tanh}


def naive_decode(model: BayesianDecoder, z_row: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Ω_θ(z) for one row with explicit loops over output units (independent of the batched code)."""
    widths = (model.latent_dim, *model.hidden, model.obs_dim)
    h, o = z_row, 0
    for layer, (fi, fo) in enumerate(itertools.pairwise(widths)):
        w = theta[o:o + fi * fo].reshape(fi, fo)
        b = theta[o + fi * fo:o + fi * fo + fo]
        o += fi * fo + fo
        a = np.array([sum(h[i] * w[i, j] for i in range(fi)) + b[j] for j in range(fo)])
        h = NUMPY_ACT[model.activation](a) if layer < len(widths) - 2 else a
    return h


@pytest.fixture(scope="module")
def tiny() -> tuple[BayesianDecoder, np.ndarray, np.ndarray]:
    model = BayesianDecoder(3, hidden=(5, 4), obs_dim=6, obs_scale=0.7, weight_prior_scale=1.3)
    data = model.simulate(7, seed=1)
    return model, data.x, data.theta


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_log_joint_matches_scipy_on_naive_loop(activation: str) -> None:
    model = BayesianDecoder(2, hidden=(4, 3), activation=activation, obs_dim=5, obs_scale=0.6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5))
    mean, log_scale = rng.normal(size=(4, 2)), rng.normal(scale=0.3, size=(4, 2))
    theta = rng.normal(size=(2, model.global_dim))
    index = np.array([3, 8, 9, 20], dtype=np.int64)
    terms = model.local_terms(x, mean, log_scale, theta, seed=5, step=2, index=index, backend="numpy")
    eps = local_normals(5, 2, index, 2, 2)
    for s in range(2):
        expected = 0.0
        for n in range(4):
            z = mean[n] + np.exp(log_scale[n]) * eps[n, s]
            expected += stats.norm.logpdf(z).sum()
            expected += stats.norm.logpdf(x[n], naive_decode(model, z, theta[s]), 0.6).sum()
        assert_allclose(terms.log_joint[s], expected, rtol=1e-12)


def test_log_prior_matches_scipy(tiny) -> None:
    model, _, theta = tiny
    th = np.stack([theta, 0.5 * theta])
    value, grad = model.log_prior_global(th)
    assert_allclose(value, stats.norm.logpdf(th, 0.0, 1.3).sum(axis=1), rtol=1e-12)
    assert_allclose(grad, -th / 1.3 ** 2, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_finite_differences(backend: str, activation: str) -> None:
    model = BayesianDecoder(3, hidden=(5, 4), activation=activation, obs_dim=6, obs_scale=0.7)
    data = model.simulate(8, seed=1)
    report = avicore.check_gradients(model, data.x, theta=0.5 * data.theta, n_points=6, n_samples=2, seed=0,
                                     backend=backend, rtol=1e-6)
    assert report.passed, report.max_rel_error
    assert set(report.max_rel_error) == {"mean", "log_scale", "global", "prior"}


def _assert_backend_matches_numpy(backend: str, activation: str, latent: int, hidden: tuple[int, ...], obs: int,
                                  rows: int, n_samples: int) -> None:
    model = BayesianDecoder(latent, hidden=hidden, activation=activation, obs_dim=obs, obs_scale=0.5)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, obs))
    mean, log_scale = rng.normal(size=(rows, latent)), rng.normal(scale=0.3, size=(rows, latent))
    theta = rng.normal(scale=0.5, size=(n_samples, model.global_dim))
    index = np.arange(100, 100 + rows, dtype=np.int64)
    ref = model.local_terms(x, mean, log_scale, theta, seed=1, step=4, index=index, backend="numpy")
    got = model.local_terms(x, mean, log_scale, theta, seed=1, step=4, index=index, backend=backend)
    for name in ("log_joint", "grad_mean", "grad_log_scale", "grad_global"):
        assert_allclose(getattr(got, name), getattr(ref, name), **tol(np.float64), err_msg=name)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_numba_backend_matches_numpy_reference(activation: str) -> None:
    _assert_backend_matches_numpy("numba", activation, 4, (16, 8), 10, rows=37, n_samples=3)


@pytest.mark.slow
def test_cuda_gradients_match_finite_differences() -> None:
    # 2(2·2·1 + 10) + 1 = 29 passes of the simulator (25-100 s). Fast twin: test_cuda_backend_matches_numpy_reference
    # (cuda = numpy to 1e-10 for every activation) with the numpy gradients checked by finite differences above.
    model = BayesianDecoder(1, hidden=(2,), obs_dim=2, obs_scale=0.7)
    data = model.simulate(4, seed=1)
    report = avicore.check_gradients(model, data.x, theta=0.5 * data.theta, n_points=2, n_samples=1, seed=0,
                                     backend="cuda", rtol=1e-6)
    assert report.passed, report.max_rel_error
    assert set(report.max_rel_error) == {"mean", "log_scale", "global", "prior"}


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cuda_backend_matches_numpy_reference(activation: str) -> None:
    # Tiny: the CUDA simulator runs every thread of every launch in Python.
    _assert_backend_matches_numpy("cuda", activation, 2, (3,), 5, rows=5, n_samples=2)


def test_fvi_on_cuda_reproduces_numpy_fit() -> None:
    model = BayesianDecoder(2, hidden=(3,), obs_dim=4, obs_scale=0.5)
    x = model.simulate(6, seed=2).x
    fits = [avicore.FVI(model, n_samples=1, elbo_samples=2, backend=b).fit(x, n_iter=3, lr=0.05, seed=0)
            for b in ("numpy", "cuda")]
    assert_allclose(fits[1].trace, fits[0].trace, rtol=1e-9)
    assert_allclose(fits[1].global_mean, fits[0].global_mean, rtol=1e-9, atol=1e-12)
    assert_allclose(fits[1].local_mean, fits[0].local_mean, rtol=1e-9, atol=1e-12)


def test_unsupported_backends_are_refused(tiny) -> None:
    model = tiny[0]
    with pytest.raises(ValueError, match=r"backend='cython' is not implemented"):
        avicore.FVI(model, backend="cython")


def test_decode_matches_naive_loop(tiny) -> None:
    model, _, theta = tiny
    z = np.random.default_rng(2).normal(size=(3, 3))
    assert_allclose(model.decode(z, theta), np.stack([naive_decode(model, row, theta) for row in z]), rtol=1e-12)


def test_global_layout_and_init(tiny) -> None:
    model, x, _ = tiny
    assert model.global_dim == (3 + 1) * 5 + (5 + 1) * 4 + (4 + 1) * 6
    assert len(model.global_names) == model.global_dim and model.global_names[0] == "W1[0,0]"
    mean, log_sd = model.init_global(x)
    layers = model.unpack(mean)
    assert_allclose(layers[-1][1], x.mean(axis=0))  # output bias starts at the mean image
    assert np.all(layers[0][1] == 0.0) and np.all(log_sd == math.log(0.01))


def test_obs_dim_is_taken_from_the_first_data() -> None:
    model = BayesianDecoder(2, hidden=(3,))
    with pytest.raises(ValueError, match="obs_dim must be known"):
        _ = model.global_dim
    model.validate_data(np.zeros((4, 5)))
    assert model.obs_dim == 5 and model.global_dim == 3 * 3 + 4 * 5
    with pytest.raises(ValueError, match=r"x must have shape \(n_obs, 5\)"):
        model.validate_data(np.zeros((4, 6)))


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    ({"latent_dim": 0}, ValueError, "latent_dim must"),
    ({"hidden": 8}, TypeError, "hidden must be a sequence of layer widths"),
    ({"hidden": (8, 0)}, ValueError, "hidden width must"),
    ({"activation": "gelu"}, ValueError, "activation must be one of"),
    ({"obs_scale": 0.0}, ValueError, "obs_scale must"),
    ({"weight_prior_scale": -1.0}, ValueError, "weight_prior_scale must"),
])
def test_invalid_arguments(kwargs: dict, exc: type, match: str) -> None:
    args = {"latent_dim": 2, **kwargs}
    with pytest.raises(exc, match=match):
        BayesianDecoder(**args)


def test_minibatch_fits_improve_reconstruction_and_freeze_decoder_for_held_out(capsys) -> None:
    model = BayesianDecoder(2, hidden=(16,), obs_dim=12, obs_scale=0.2)
    data = model.simulate(150, seed=0, theta=0.5 * np.random.default_rng(1).normal(size=model.global_dim))
    train, held_out = data.x[:120], data.x[120:]
    # 600 iterations is a budget, not convergence: both fits end with the ELBO still rising and say so.
    with pytest.warns(avicore.optim.ConvergenceWarning, match="F-VI fit ended .* still rising"):
        fvi = avicore.FVI(model, n_samples=2, batch_size=40, elbo_samples=20).fit(train, n_iter=600, lr=0.02, seed=0,
                                                                                 progress=True)
    assert "F-VI" in capsys.readouterr().err
    with pytest.warns(avicore.optim.ConvergenceWarning, match="A-VI fit ended .* still rising"):
        avi = avicore.AVI(model, MLP(16), n_samples=2, batch_size=40, elbo_samples=20).fit(train, n_iter=600,
                                                                                        lr=0.02, seed=0)
    assert not fvi.converged and not avi.converged
    mean0, _ = model.init_global(train)
    baseline = float(np.mean((train - model.decode(np.zeros((120, 2)), mean0)) ** 2))  # z = 0, initial decoder
    for res in (fvi, avi):
        assert math.isfinite(res.elbo) and res.n_iter == 600
        assert reconstruction_mse(res) < 0.7 * baseline
        assert reconstruction_mse(res, held_out) < 0.8 * baseline
    # F-VI's held-out locals are fitted with the decoder frozen at the fitted q(θ).
    refit = avicore.FVI(model, n_samples=2, elbo_samples=2).fit(held_out, n_iter=5, lr=0.05, seed=0, fix_global=fvi)
    assert np.array_equal(refit.global_mean, fvi.global_mean) and np.array_equal(refit.global_sd, fvi.global_sd)


def test_reconstruction_mse_rejects_other_models() -> None:
    from avicore.models import LinearHierarchical

    res = avicore.FVI(LinearHierarchical(), n_samples=2, elbo_samples=2).fit(np.zeros(5), n_iter=2, lr=0.1, seed=0)
    with pytest.raises(TypeError, match="result must be a VIResult of a BayesianDecoder fit"):
        reconstruction_mse(res)


def test_linear_decoder_without_hidden_layers() -> None:
    model = BayesianDecoder(2, hidden=(), obs_dim=4)
    data = model.simulate(6, seed=0)
    assert model.global_dim == 3 * 4
    assert_allclose(model.decode(data.z, data.theta), data.z @ data.theta[:8].reshape(2, 4) + data.theta[8:],
                    rtol=1e-12)
    assert avicore.check_gradients(model, data.x, theta=data.theta, seed=0, backend="numpy").passed


def test_rows_are_independent_so_minibatches_partition_the_full_pass(tiny) -> None:
    """Noise is keyed by each row's index: a partition of the rows into batches reproduces the full pass."""
    model, x, theta = tiny
    rng = np.random.default_rng(4)
    mean, log_scale = rng.normal(size=(7, 3)), rng.normal(scale=0.2, size=(7, 3))
    th = np.stack([theta, 0.7 * theta])
    index = np.arange(7, dtype=np.int64)
    full = model.local_terms(x, mean, log_scale, th, seed=3, step=1, index=index, backend="numba")
    parts = [np.array([0, 4, 6]), np.array([1, 2]), np.array([3, 5])]
    log_joint, grad_global = np.zeros(2), np.zeros_like(th)
    for rows in parts:
        t = model.local_terms(x[rows], mean[rows], log_scale[rows], th, seed=3, step=1, index=rows, backend="numba")
        log_joint += t.log_joint
        grad_global += t.grad_global
        assert_allclose(t.grad_mean, full.grad_mean[rows], rtol=1e-12, atol=1e-12)
        assert_allclose(t.grad_log_scale, full.grad_log_scale[rows], rtol=1e-12, atol=1e-12)
    assert_allclose(log_joint, full.log_joint, rtol=1e-12)
    assert_allclose(grad_global, full.grad_global, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("encoder", [Constant(), Polynomial(1), Polynomial(2, whiten=True), MLP(4),
                                     MLP(4, heads="separate")])
def test_avi_starts_every_local_at_the_models_initial_scale(encoder) -> None:
    # F-VI starts the decoder's locals at sd init_local_sd; A-VI's encoder must start there too (from sd 1 the decoder
    # learns to ignore z). One step at a negligible rate leaves the start visible in the encoder's output.
    model = BayesianDecoder(2, hidden=(3,), obs_scale=0.5, init_local_sd=0.03)
    x = np.random.default_rng(1).normal(size=(20, 4))
    res = avicore.AVI(model, encoder, n_samples=1, elbo_samples=2, backend="numpy").fit(x, n_iter=1, lr=1e-12,
                                                                                        seed=0)
    _, sd = res.encode(x)
    assert_allclose(sd, 0.03, rtol=1e-9)
    assert_allclose(res.local_sd, 0.03, rtol=1e-9)
