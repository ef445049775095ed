"""The device-resident fits (``backend="cuda"``, :mod:`avicore._device_fit`) against the cython fit, same seed.

The reference is the host loop of :mod:`avicore.inference` with the cython kernels: an independent
implementation of the same iteration (host NumPy arithmetic, CPU kernels, host Adam). Under the CUDA simulator
the sizes are tiny and ``SYNC_EVERY`` is small, so that every fit crosses several host synchronisations and stops
(``tol``, callback, divergence) inside a chunk, which exercises the replay.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from avicore import AVI, FVI, _config, _device_fit, backends
from avicore.encoders import MLP, Constant, Polynomial
from avicore.models import LinearHierarchical, NonlinearHierarchical
from avicore.optim import DivergenceWarning

from .tolerances import tol

N_OBS = 12
FIELDS = ("trace", "local_mean", "local_sd", "global_mean", "global_sd")


@pytest.fixture(autouse=True)
def small_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks under the simulator, and a host synchronisation every 3 iterations."""
    if not backends.available()["cuda"].available:
        pytest.fail(f"backend 'cuda' is unavailable in the test environment: {backends.available()['cuda'].detail}")
    if not backends.cuda_is_real_gpu():
        monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 8)
    monkeypatch.setattr(_device_fit, "SYNC_EVERY", 3)


def _data(model):
    return model.simulate(N_OBS, seed=5).x


def _assert_same_fit(device, host) -> None:
    assert device.backend == "cuda" and host.backend == "cython"
    assert (device.n_iter, device.stop_reason, device.converged) == (host.n_iter, host.stop_reason, host.converged)
    for field in FIELDS:
        assert_allclose(getattr(device, field), getattr(host, field), **tol(), err_msg=field)
    if host.encoder_params is not None:
        assert_allclose(device.encoder_params, host.encoder_params, **tol())
    assert_allclose(device.elbo, host.elbo, **tol())


def _both(make, x, **fit):
    return make("cuda").fit(x, **fit), make("cython").fit(x, **fit)


@pytest.mark.parametrize("model, batch_size, extra, persistent", [
    (LinearHierarchical(), None, {}, True),
    (NonlinearHierarchical(), 5, {}, True),  # batches 5, 5, 2: lazy per-row Adam, N/B scaling, a short last batch
    (NonlinearHierarchical(), 5, {}, False),
    (LinearHierarchical(theta_prior_scale=2.0), 5, {"global_q": "point"}, True),
], ids=["linear-full-persistent", "nonlinear-minibatch-persistent",
        "nonlinear-minibatch-two-launches", "linear-prior-point-minibatch"])
def test_fvi_device_fit_equals_cython_fit(monkeypatch, model, batch_size, extra, persistent):
    # persistent: one cooperative launch per chunk (one block under the simulator, a grid-stride loop over the
    # row tiles); else a local and a global launch per iteration.
    monkeypatch.setattr(_device_fit, "PERSISTENT", persistent)
    x = _data(model)
    device, host = _both(lambda b: FVI(model, n_samples=3, backend=b, batch_size=batch_size, elbo_samples=4,
                                       **extra), x, n_iter=7, lr=0.05, seed=3)
    _assert_same_fit(device, host)
    assert device.trace.size == 7 and np.all(np.diff(device.trace_seconds) >= 0)


@pytest.mark.parametrize("encoder, batch_size, weight_decay", [
    (Constant(), None, 0.0),
    (Polynomial(2), 5, 0.0),
    (MLP(3), None, 0.1),
], ids=["constant-full", "polynomial-minibatch", "mlp-full-decay"])
def test_avi_device_fit_equals_cython_fit(encoder, batch_size, weight_decay):
    model = NonlinearHierarchical()
    x = _data(model)
    device, host = _both(lambda b: AVI(model, encoder, n_samples=3, backend=b, batch_size=batch_size,
                                       elbo_samples=4, weight_decay=weight_decay), x, n_iter=7, lr=0.05, seed=4)
    _assert_same_fit(device, host)
    assert_allclose(device.encode(x[:3])[0], host.encode(x[:3])[0], **tol())


@pytest.mark.parametrize("activation", ["tanh", "softplus"])  # relu: above; leaky_relu: the decoder's A-VI test
def test_avi_device_mlp_activations_equal_cython(activation):
    model = LinearHierarchical()
    x = _data(model)
    device, host = _both(lambda b: AVI(model, MLP(3, depth=2, activation=activation), n_samples=2, backend=b,
                                       batch_size=7, elbo_samples=4), x, n_iter=4, lr=0.05, seed=2)
    _assert_same_fit(device, host)


def test_tol_stop_inside_a_chunk_keeps_the_host_state():
    # tol_window=2 with a loose tol stops at an iteration that is not a multiple of SYNC_EVERY = 3: the device
    # loop must replay the chunk up to there and return the state the host loop kept.
    model = LinearHierarchical()
    x = _data(model)
    device, host = _both(lambda b: FVI(model, n_samples=2, backend=b, elbo_samples=4), x, n_iter=40, lr=0.05,
                         seed=1, tol=0.05, tol_window=2)
    assert host.stop_reason == "tol" and host.n_iter < 40 and host.n_iter % 3 != 0
    _assert_same_fit(device, host)


def test_callback_sees_each_iteration_and_can_stop():
    model = LinearHierarchical()
    x = _data(model)
    seen: dict[str, list] = {"cuda": [], "cython": []}

    def make(b):
        return AVI(model, Polynomial(1), n_samples=2, backend=b, batch_size=5, elbo_samples=4)

    results = {}
    for b in ("cuda", "cython"):
        def callback(state, log=seen[b]):
            log.append((state.iteration, state.elbo, state.global_mean.copy(), state.encoder_params.copy()))
            return state.iteration == 4

        results[b] = make(b).fit(x, n_iter=10, lr=0.05, seed=7, callback=callback)
    _assert_same_fit(results["cuda"], results["cython"])
    assert results["cuda"].stop_reason == "callback" and results["cuda"].n_iter == 4
    assert [s[0] for s in seen["cuda"]] == [1, 2, 3, 4]
    for a, b in zip(seen["cuda"], seen["cython"]):
        assert_allclose(a[1], b[1], **tol())
        assert_allclose(a[2], b[2], **tol())
        assert_allclose(a[3], b[3], **tol())


@pytest.mark.parametrize("engine", ["F-VI", "A-VI"])
def test_divergence_keeps_the_same_state_as_the_host_loop(engine):
    model = NonlinearHierarchical()
    x = _data(model)

    def make(b):
        if engine == "A-VI":
            return AVI(model, MLP(3), n_samples=2, backend=b, elbo_samples=4)
        return FVI(model, n_samples=2, backend=b, batch_size=5, elbo_samples=4)

    with pytest.warns(DivergenceWarning, match="fit diverged at iteration"):
        device = make("cuda").fit(x, n_iter=30, lr=1e200, seed=0)
    with pytest.warns(DivergenceWarning, match="fit diverged at iteration"):
        host = make("cython").fit(x, n_iter=30, lr=1e200, seed=0)
    assert host.stop_reason == "diverged"
    _assert_same_fit(device, host)


def test_divergence_at_a_chunk_start_reaches_back_into_the_previous_chunk():
    # A huge step at iteration 2 (the last of the first chunk) makes iteration 3's θ or ELBO non-finite: the host
    # loop keeps the state after 2 updates, which the device loop rebuilds from the previous chunk's checkpoint.
    model = LinearHierarchical()
    x = _data(model)
    with pytest.warns(DivergenceWarning):
        device, host = _both(lambda b: FVI(model, n_samples=2, backend=b, elbo_samples=4), x, n_iter=10,
                             lr=lambda t: 1e200 if t == 2 else 0.05, seed=1)
    assert host.stop_reason == "diverged" and host.n_iter == 3
    _assert_same_fit(device, host)


def test_unsupported_fits_stay_on_the_host_loop():
    from avicore._encoders_cuda import device_layers

    model = LinearHierarchical()
    x = _data(model)
    enc = MLP(2, heads="separate").bind(x, 1)
    assert device_layers(enc) is None
    assert device_layers(MLP(2).bind(x, 1)) is not None
    # The host loop with the cuda kernels still gives the cython fit's numbers.
    device, host = _both(lambda b: AVI(model, MLP(2, heads="separate"), n_samples=2, backend=b, elbo_samples=4),
                         x, n_iter=2, lr=0.05, seed=0)
    _assert_same_fit(device, host)


@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True)])
def test_dense_matmul_matches_numpy(rng, trans_a, trans_b):
    from numba import cuda

    from avicore.kernels._dense_cuda import Dense

    dense = Dense()
    a = rng.normal(size=(3, 5) if trans_a else (5, 3))
    b = rng.normal(size=(4, 3) if trans_b else (3, 4))
    c = dense.wrap(cuda.to_device(np.zeros((5, 4))))
    dense.matmul(dense.wrap(cuda.to_device(a)), dense.wrap(cuda.to_device(b)), c, trans_a=trans_a, trans_b=trans_b)
    assert_allclose(c.nb.copy_to_host(), (a.T if trans_a else a) @ (b.T if trans_b else b), **tol())


@pytest.mark.parametrize("method, batch_size, activation", [
    ("F-VI", 4, "leaky_relu"),  # minibatches 4, 2: lazy per-row Adam of (N, d) locals, N/B scaling
    ("A-VI", None, "tanh"),
], ids=["fvi-minibatch", "avi-full"])
def test_decoder_device_fit_equals_numba_fit(method, batch_size, activation):
    # The decoder has no cython kernels: its reference is the host loop on the numba backend.
    from avicore.models import BayesianDecoder

    x = np.random.default_rng(0).uniform(size=(6, 5))

    def make(b):
        model = BayesianDecoder(2, hidden=(3,), activation=activation, obs_scale=0.5)
        if method == "A-VI":
            return AVI(model, MLP(3, activation="leaky_relu"), n_samples=2, backend=b, batch_size=batch_size,
                       elbo_samples=2)
        return FVI(model, n_samples=2, backend=b, batch_size=batch_size, elbo_samples=2)

    device, host = make("cuda").fit(x, n_iter=3, lr=0.01, seed=0), make("numba").fit(x, n_iter=3, lr=0.01, seed=0)
    assert device.backend == "cuda" and host.backend == "numba"
    assert (device.n_iter, device.stop_reason) == (host.n_iter, host.stop_reason)
    for field in FIELDS:
        assert_allclose(getattr(device, field), getattr(host, field), **tol(), err_msg=field)
    if method == "A-VI":
        assert_allclose(device.encoder_params, host.encoder_params, **tol())
