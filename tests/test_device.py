"""GPU plumbing (avicore/_device.py) and honest cuda availability (avicore/backends.py).

Runs under Numba's CUDA simulator without a GPU (tests/conftest.py): simulator arrays stand in for GPU arrays, and
objects exposing ``__cuda_array_interface__`` / ``__dlpack_device__`` stand in for CuPy/PyTorch/JAX in detection.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from avicore import _device, backends, chain, hmm, quadrature
from avicore.gp.likelihoods import Bernoulli
from avicore.kernels import _hmm_cuda_launch
from tests.reference import random_problem

pytestmark = pytest.mark.cuda


@pytest.fixture
def fresh_probe():
    """Forget the cached backend probes before and after the test (the real probe result comes back)."""
    backends._probe.cache_clear()
    yield
    backends._probe.cache_clear()


# ----- numpy >= 2.5 compatibility -----

def test_row_stack_alias_is_added_only_when_numpy_lacks_it(monkeypatch):
    monkeypatch.delattr(np, "row_stack")
    _device.ensure_numpy_compat()
    assert getattr(np, "row_stack") is np.vstack  # noqa: B009  (NPY201 flags the literal attribute)
    sentinel = object()
    monkeypatch.setattr(np, "row_stack", sentinel)
    _device.ensure_numpy_compat()
    assert getattr(np, "row_stack") is sentinel  # noqa: B009


# ----- availability -----

def test_probe_kernel_runs_here():
    _device.probe_launch()  # compiles and launches the one-thread kernel (the simulator here)
    assert backends.available()["cuda"].available
    assert "probe kernel ran" in backends.available()["cuda"].detail


def test_failing_probe_makes_cuda_unavailable_and_auto_falls_back(monkeypatch, fresh_probe):
    def broken():
        raise RuntimeError("NVVM_ERROR_COMPILATION: boom")

    monkeypatch.setattr(_device, "probe_launch", broken)
    status = backends.available()["cuda"]
    assert not status.available
    assert "one-thread probe kernel failed (RuntimeError: NVVM_ERROR_COMPILATION: boom)" in status.detail
    assert "fix: install the CUDA toolkit libraries" in status.detail
    assert backends.resolve("auto", size=10**9) == "cython"
    with pytest.raises(RuntimeError, match=r"backend='cuda' is unavailable: .*probe kernel failed .*boom.*"
                                           r"or use backend='auto'"):
        backends.resolve("cuda")
    with pytest.raises(RuntimeError, match="backend='cuda' is unavailable"):
        hmm.viterbi(cuda.to_device(np.zeros((2, 1))), [[0.0]], [0.0])


def test_row_stack_failure_names_its_fix(monkeypatch, fresh_probe):
    def broken():
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(_device, "probe_launch", broken)
    detail = backends.available()["cuda"].detail
    assert "row_stack" in detail and "pin numpy<2.5" in detail


# ----- detection -----

class _CAI:
    @property
    def __cuda_array_interface__(self):
        return {"shape": (2,), "typestr": "<f8", "data": (0, False), "version": 3}


class _DLPack:
    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack_device__(self):
        return (self.device_type, 0)


def test_device_array_detection():
    assert _device.is_device_array(cuda.to_device(np.zeros(3)))
    assert _device.is_device_array(_CAI())
    assert _device.is_device_array(_DLPack(2))  # kDLCUDA
    assert not _device.is_device_array(_DLPack(1))  # kDLCPU (numpy arrays say this too)
    for host in (np.zeros(3), [1.0, 2.0], 3.0, None, "x"):
        assert not _device.is_device_array(host)
    assert _device.output_kind() == ("cupy" if _device._cupy() is not None else "numba")  # never CuPy in the simulator
    if _device.simulator_enabled():
        assert _device.output_kind() == "numba"


@pytest.mark.skipif(_device._cupy() is not None, reason="CuPy is installed: DLPack arrays are read through it")
def test_dlpack_without_cupy_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"log_lik is a DLPack GPU array .* install CuPy"):
        _device.as_numba(_DLPack(2), "log_lik")


# ----- workspace and staging -----

def test_workspace_reuses_and_grows():
    ws = _device.DeviceWorkspace()
    a = ws.get("x", (2, 3))
    assert a.shape == (2, 3)
    held = ws.nbytes
    b = ws.get("x", 4)
    assert ws.nbytes == held and b.shape == (4,)
    ws.get("x", 100)
    assert ws.nbytes >= 800
    assert ws.get("x", (0, 3)).shape == (0, 3)
    ws.clear()
    assert ws.nbytes == 0


def test_staging_round_trip_in_chunks(monkeypatch, rng):
    monkeypatch.setattr(_device, "STAGING_BYTES", 40)  # 5 float64 per chunk: many chunks
    st = _device.PinnedStaging()
    host = rng.normal(size=(7, 3))
    dev = cuda.device_array((7, 3))
    st.upload(host, dev)
    np.testing.assert_array_equal(dev.copy_to_host(), host)
    np.testing.assert_array_equal(st.download(dev), host)


def test_large_staging_copies_split_over_threads(monkeypatch, rng):
    monkeypatch.setattr(_device, "PARALLEL_COPY_BYTES", 16)
    monkeypatch.setattr(_device, "COPY_THREADS", 3)
    _device._copy_pool.cache_clear()
    try:
        src = rng.integers(0, 255, size=1001).astype(np.uint8)
        dst = np.zeros_like(src)
        _device._copy(dst, src)
        np.testing.assert_array_equal(dst, src)
    finally:
        _device._copy_pool().shutdown()
        _device._copy_pool.cache_clear()


def test_host_calls_allocate_nothing_once_sizes_are_seen(monkeypatch, rng):
    """The second call with host arrays makes no device or pinned allocation (workspace + staging reused)."""
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, [3, 4], 3)
    args = (log_lik, log_transmat, log_startprob, lengths)
    x = rng.normal(size=(5, 2))
    chain_args = (x, np.eye(2), np.eye(2), np.eye(2), np.eye(2), np.zeros(2), np.eye(2))
    quad_args = (Bernoulli("logit"), np.array([0.0, 1.0, 1.0]), np.zeros(3), np.ones(3))

    def run_all():
        res = hmm.forward_backward(*args, backend="cuda")
        hmm.viterbi(*args, backend="cuda")
        hmm.sample_posterior(*args, n_samples=2, seed=1, backend="cuda")
        chain.smoother(*chain_args, lengths=[2, 3], backend="cuda")
        quadrature.expected_log_lik(*quad_args, n_points=3, backend="cuda")
        return res

    run_all()
    calls = []
    for name in ("device_array", "to_device", "pinned_array", "device_array_like"):
        original = getattr(cuda, name)
        monkeypatch.setattr(cuda, name, lambda *a, _f=original, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    first = run_all()
    assert calls == []
    # and the results handed back are host copies, not views of the reused buffers
    second = hmm.forward_backward(log_lik + 1.0, log_transmat, log_startprob, lengths, backend="cuda")
    assert isinstance(first.posteriors, np.ndarray)
    assert not np.shares_memory(first.posteriors, second.posteriors)
    np.testing.assert_allclose(first.posteriors, second.posteriors, rtol=1e-12, atol=1e-12)  # shift-invariant


def test_workspace_is_per_thread():
    import threading

    seen = []
    t = threading.Thread(target=lambda: seen.append(_device.workspace()))
    t.start()
    t.join()
    assert seen[0] is not _device.workspace()
    assert _hmm_cuda_launch.workspace_alloc is _device.workspace_alloc


def test_launch_1d_spreads_few_items_over_many_blocks(monkeypatch):
    from avicore import _config

    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 128)
    assert _device.launch_1d(10_000) == (313, 32)  # 10,000 sequences: 313 warps-sized blocks, not 79 full ones
    assert _device.launch_1d(10**7) == (78_125, 128)
    assert _device.launch_1d(5) == (1, 32)
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 4)
    assert _device.launch_1d(10) == (3, 4)
