"""Shared fixtures: every available backend, dtypes, a seeded ``rng``.

Without a real GPU the CUDA kernels are tested under Numba's CUDA simulator: this file turns it on before Numba
is imported, unless the environment already says otherwise (set ``NUMBA_ENABLE_CUDASIM=0`` on a GPU machine).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if "numba.core.config" in sys.modules:
    # pytest imported Numba before this file (resolving the NumbaPerformanceWarning filter in pyproject.toml), so
    # Numba read its configuration before NUMBA_ENABLE_CUDASIM was set: read it again before numba.cuda loads.
    sys.modules["numba.core.config"].reload_config()

import numpy as np
import pytest

from avicore import _config, _device, backends

_device.ensure_numpy_compat()  # numpy >= 2.5: before any test compiles a CUDA kernel of its own

SEED = int(os.environ.get("AVICORE_TEST_SEED", "20241128"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    status = backends.available()
    summary = ", ".join(f"{k}={'yes' if v.available else 'no'}" for k, v in status.items())
    try:
        from avicore._cy import _build_info

        build = f"OpenMP {'on' if _build_info.OPENMP else 'off'}"
    except ImportError:
        build = "not built"
    import avicore

    return [f"avicore from {avicore.__file__} (compiled kernels: {build})",
            f"avicore test seed: AVICORE_TEST_SEED={SEED}", f"avicore backends: {summary}",
            f"NUMBA_ENABLE_CUDASIM={os.environ.get('NUMBA_ENABLE_CUDASIM')}"]


def available_backends() -> list[str]:
    """Every backend that can run here; a missing one is a test failure, not a silent skip."""
    return [name for name, status in backends.available().items() if status.available]


@pytest.fixture(params=list(backends.BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    """Every backend. One that cannot run here fails loudly: CI installs all four (cuda via the simulator)."""
    name = request.param
    status = backends.available()[name]
    if not status.available:
        pytest.fail(f"backend {name!r} is unavailable in the test environment: {status.detail}")
    if name == "cuda" and not backends.cuda_is_real_gpu():
        # The simulator runs every thread in Python: keep blocks tiny.
        old = _config.CUDA_THREADS_PER_BLOCK
        _config.CUDA_THREADS_PER_BLOCK = 8
        yield name
        _config.CUDA_THREADS_PER_BLOCK = old
        return
    yield name


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def dtype(request: pytest.FixtureRequest) -> type:
    return request.param


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A Generator seeded from AVICORE_TEST_SEED and the test's name (printed on failure)."""
    import zlib

    seed = SEED ^ zlib.crc32(request.node.nodeid.encode())
    print(f"rng seed for {request.node.nodeid}: {seed}")
    return np.random.default_rng(seed)
