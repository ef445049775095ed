"""A KeyboardInterrupt during one long compiled HMM kernel call returns control quickly (the dispatchers run the
kernel over slices of whole sequences and return to Python in between), and the slicing changes no bit."""

from __future__ import annotations

import _thread
import threading
import time

import numpy as np
import pytest

from avicore import _config, emissions
from avicore.gp.likelihoods import Bernoulli, Poisson, StudentT
from avicore.hmm import forward_backward
from avicore.kernels import chain as Ch
from avicore.kernels import hmm as H
from avicore.kernels import quadrature as Qd
from avicore.kernels._slicing import sequence_slices
from avicore.quadrature import expected_log_lik


def _model(rng, K):
    return np.log(rng.dirichlet(np.ones(K), size=K)), np.log(rng.dirichlet(np.ones(K)))


@pytest.mark.parametrize("backend, n_rows", [("cython", 6000), ("numba", 3000)])
def test_keyboard_interrupt_in_one_long_forward_backward(backend, n_rows):
    # K = 1024 on one thread: ~0.6 ms (Cython) / ~1.3 ms (Numba) per row, so the whole call is several seconds,
    # and one slice (SLICE_COST / (K² + 64) = 64 rows) well under 0.2 s.
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    K = 1024
    log_lik = rng.normal(size=(n_rows, K))
    log_transmat, log_startprob = _model(rng, K)
    lengths = [50] * (n_rows // 50)
    small = slice(0, 20)
    forward_backward(log_lik[small], log_transmat, log_startprob, backend=backend)  # compile / load first
    old = _config.get_num_threads()
    _config.set_num_threads(1)
    sent = []

    def interrupt():
        sent.append(time.perf_counter())
        _thread.interrupt_main()

    timer = threading.Timer(0.3, interrupt)
    try:
        timer.start()
        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            forward_backward(log_lik, log_transmat, log_startprob, lengths, backend=backend)
            time.sleep(10)  # not reached: the call takes longer than 0.3 s, this only guards a too-fast machine
        done = time.perf_counter()
    finally:
        timer.cancel()
        _config.set_num_threads(old)
    print(f"setup {start - t0:.2f} s, latency {done - sent[0]:.3f} s")
    assert sent and done - sent[0] < 1.0, f"latency {done - sent[0]:.3f} s"
    assert done - start < 2.0
    # the engine is reusable: a following call matches the NumPy reference
    got = forward_backward(log_lik[small], log_transmat, log_startprob, [10, 10], backend=backend)
    ref = forward_backward(log_lik[small], log_transmat, log_startprob, [10, 10], backend="numpy")
    np.testing.assert_allclose(got.log_likelihood, ref.log_likelihood, rtol=1e-10)
    np.testing.assert_allclose(got.posteriors, ref.posteriors, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("K", [2, 5])
def test_slicing_is_bit_identical(monkeypatch, backend, n_threads, K):
    rng = np.random.default_rng(K)
    lengths = rng.integers(1, 120, size=300)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    log_lik = rng.normal(scale=3.0, size=(int(offsets[-1]), K))
    log_lik[7:11] = -800.0  # sends a sequence to the log-space fallback
    log_transmat, log_startprob = _model(rng, K)
    old = _config.get_num_threads()
    _config.set_num_threads(n_threads)
    try:
        monkeypatch.setattr(H, "SLICE_COST", 1 << 60)
        assert len(H._slices(offsets, K)) == 1
        fb_ref = H.FORWARD_BACKWARD[backend](log_lik, log_transmat, log_startprob, offsets)
        vit_ref = H.VITERBI[backend](log_lik, log_transmat, log_startprob, offsets)
        # slices of ~50 rows: more slices than chunks, so many slices cut a chunk
        monkeypatch.setattr(H, "SLICE_COST", 50 * (K * K + 64))
        n_slices = len(H._slices(offsets, K))
        assert n_slices > len(H._chunks(offsets, K)) - 1 > 1
        fb = H.FORWARD_BACKWARD[backend](log_lik, log_transmat, log_startprob, offsets)
        vit = H.VITERBI[backend](log_lik, log_transmat, log_startprob, offsets)
    finally:
        _config.set_num_threads(old)
    for a, b in zip(fb_ref + vit_ref, fb + vit):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("d, p", [(1, 1), (3, 2)])
def test_chain_slicing_is_bit_identical(monkeypatch, backend, d, p):
    rng = np.random.default_rng(d)
    lengths = rng.integers(1, 60, size=120)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    x = rng.normal(size=(int(offsets[-1]), p))
    A = 0.9 * np.eye(d) + 0.05 * rng.normal(size=(d, d))
    Q, R, P0 = np.eye(d), 0.5 * np.eye(p), 2.0 * np.eye(d)
    C, m0 = rng.normal(size=(p, d)), rng.normal(size=d)
    old = _config.get_num_threads()
    try:
        for n_threads in (1, 2):
            _config.set_num_threads(n_threads)
            monkeypatch.setattr(Ch, "SLICE_COST", 1 << 60)
            ref = Ch.run_smoother(x, offsets, A, Q, C, R, m0, P0, backend)
            monkeypatch.setattr(Ch, "SLICE_COST", 40 * ((d + p) ** 3 + 32))  # slices of ~40 rows
            got = Ch.run_smoother(x, offsets, A, Q, C, R, m0, P0, backend)
            for a, b in zip(ref, got, strict=True):
                assert a.dtype == b.dtype and np.array_equal(a, b)
    finally:
        _config.set_num_threads(old)
    assert len(sequence_slices(offsets, 40)) > 10


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("lik, y_value", [(Bernoulli("logit"), 1.0), (Bernoulli("probit"), 0.0),
                                          (StudentT(3.0, 0.5), 0.3), (Poisson(), 2.0)])
def test_quadrature_slicing_is_bit_identical(monkeypatch, backend, lik, y_value):
    rng = np.random.default_rng(1)
    n = 1001  # not a multiple of the Cython kernel's 8-point blocks
    y = np.full(n, y_value)
    mean = rng.normal(size=n)
    var = rng.uniform(0.0, 3.0, size=n)
    var[::97] = 400.0  # a few points too wide for 20 nodes: the refinement runs through the same kernel
    old = _config.get_num_threads()
    try:
        for n_threads in (1, 2):
            _config.set_num_threads(n_threads)
            monkeypatch.setattr(Qd, "SLICE_COST", 1 << 60)
            ref = expected_log_lik(lik, y, mean, var, backend=backend)
            monkeypatch.setattr(Qd, "SLICE_COST", 1)  # slices of 64 points (the smallest)
            got = expected_log_lik(lik, y, mean, var, backend=backend)
            for field in ("value", "grad_mean", "grad_var"):
                assert np.array_equal(getattr(ref, field), getattr(got, field))
    finally:
        _config.set_num_threads(old)


def test_emission_slicing_is_bit_identical(monkeypatch):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(5000, 3))  # not a multiple of the 1024-row slices
    means, variances = rng.normal(size=(4, 3)), rng.uniform(0.5, 2.0, size=(4, 3))
    monkeypatch.setattr(emissions, "SLICE_COST", 1 << 60)
    ref = emissions.gaussian_diag_log_lik(X, means, variances)
    monkeypatch.setattr(emissions, "SLICE_COST", 1)  # slices of 1024 rows (the smallest)
    assert np.array_equal(ref, emissions.gaussian_diag_log_lik(X, means, variances))


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_sample_posterior_slicing_is_bit_identical(monkeypatch, backend, n_threads):
    rng = np.random.default_rng(11)
    K, n_samples = 3, 4
    lengths = rng.integers(1, 60, size=120)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    log_lik = rng.normal(scale=2.0, size=(int(offsets[-1]), K))
    log_lik[int(offsets[5]):int(offsets[5]) + 1] = -np.inf  # an impossible sequence: its samples are -1
    log_transmat, log_startprob = _model(rng, K)
    old = _config.get_num_threads()
    _config.set_num_threads(n_threads)
    try:
        monkeypatch.setattr(H, "SLICE_COST", 1 << 60)
        assert len(H._sample_slices(offsets, K, n_samples)) == 1
        ref = H.SAMPLE_POSTERIOR[backend](log_lik, log_transmat, log_startprob, offsets, n_samples, 5)
        monkeypatch.setattr(H, "SLICE_COST", 40 * (K * K + 64 + n_samples * (K + 16)))  # slices of ~40 rows
        assert len(H._sample_slices(offsets, K, n_samples)) > 20
        got = H.SAMPLE_POSTERIOR[backend](log_lik, log_transmat, log_startprob, offsets, n_samples, 5)
    finally:
        _config.set_num_threads(old)
    assert (ref[:, int(offsets[5]):int(offsets[6])] == -1).all()
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
