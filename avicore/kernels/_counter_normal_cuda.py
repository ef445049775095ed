"""CUDA device copy of avicore's counter-based normal generator (:mod:`avicore.kernels._counter_normal`).

Same keying, same ziggurat tables (``cuda.const.array_like`` of the NumPy literals), same mixer as
:mod:`avicore.kernels._counter_rng`. Importing this module imports nothing from Numba: :func:`device_functions`
compiles on first use. :func:`normals_cuda` and :func:`first_hashes_cuda` run the generator alone (tests compare
them with the NumPy generator, bit for bit on the hashes).
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from types import SimpleNamespace

import numpy as np

from .. import _config
from ._counter_normal import GAMMA, RETRY_GAMMA, ZIG_F, ZIG_R, ZIG_X
from ._counter_rng import MIX_M1, MIX_M2

cuda = None  # numba.cuda, bound on first use (the simulator swaps this module global while kernels run)


@functools.cache
def device_functions() -> SimpleNamespace:  # pragma: no cover - compiled (the simulator runs it in Python)
    """``mix64``, ``row_key``, ``first_hash``, ``counter_normal`` as CUDA device functions."""
    global cuda
    from numba import cuda, float64, int64, uint64

    u_gamma = uint64(GAMMA)
    u_retry = uint64(RETRY_GAMMA)
    m1 = uint64(MIX_M1)
    m2 = uint64(MIX_M2)
    two_m53 = 1.0 / 9007199254740992.0
    zig_r = ZIG_R

    @cuda.jit(device=True, inline=True)
    def mix64(z):
        z = (z ^ (z >> uint64(30))) * m1
        z = (z ^ (z >> uint64(27))) * m2
        return z ^ (z >> uint64(31))

    @cuda.jit(device=True, inline=True)
    def open_uniform(h):
        return (float64(int64(h >> uint64(11))) + 0.5) * two_m53

    @cuda.jit(device=True, inline=True)
    def row_key(key, index):
        return mix64(key + uint64(index) * u_gamma)

    @cuda.jit(device=True, inline=True)
    def first_hash(row, counter):
        return mix64(row + uint64(counter + 1) * u_gamma)

    @cuda.jit(device=True)
    def counter_normal(row, counter):
        zx = cuda.const.array_like(ZIG_X)
        zf = cuda.const.array_like(ZIG_F)
        h = first_hash(row, counter)
        while True:
            layer = int64(h & uint64(255))
            sign = 1.0 - 2.0 * float64(int64((h >> uint64(8)) & uint64(1)))
            x = float64(int64(h >> uint64(11))) * two_m53 * zx[layer]
            if x < zx[layer + 1]:
                return sign * x
            h = mix64(h + u_retry)
            if layer == 0:
                while True:
                    a = -math.log(open_uniform(h)) / zig_r
                    h = mix64(h + u_retry)
                    b = -math.log(open_uniform(h))
                    h = mix64(h + u_retry)
                    if 2.0 * b > a * a:
                        return sign * (zig_r + a)
            y = zf[layer + 1] + open_uniform(h) * (zf[layer] - zf[layer + 1])
            if y < math.exp(-0.5 * x * x):
                return sign * x
            h = mix64(h + u_retry)

    return SimpleNamespace(mix64=mix64, row_key=row_key, first_hash=first_hash, counter_normal=counter_normal)


@contextlib.contextmanager
def quiet_simulator():
    """Under the CUDA simulator the hash runs on NumPy uint64 scalars, whose (intended) wrap-around warns."""
    from ..backends import cuda_is_real_gpu

    if cuda_is_real_gpu():
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="overflow encountered in scalar", category=RuntimeWarning)
        yield


@functools.cache
def _test_kernels():  # pragma: no cover - compiled
    dev = device_functions()
    row_key, first_hash, counter_normal = dev.row_key, dev.first_hash, dev.counter_normal

    @cuda.jit
    def normals(key, index, out):
        n = cuda.grid(1)
        if n < out.shape[0]:
            row = row_key(key, index[n])
            dim = out.shape[2]
            for s in range(out.shape[1]):
                for j in range(dim):
                    out[n, s, j] = counter_normal(row, s * dim + j)

    @cuda.jit
    def hashes(key, index, out):
        n = cuda.grid(1)
        if n < out.shape[0]:
            row = row_key(key, index[n])
            for c in range(out.shape[1]):
                out[n, c] = first_hash(row, c)

    return normals, hashes


def _launch(kernel, key: int, index: np.ndarray, out: np.ndarray) -> np.ndarray:
    threads = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    d_out = cuda.to_device(out)
    with quiet_simulator():
        kernel[-(-index.size // threads), threads](np.uint64(key), cuda.to_device(index), d_out)
    return d_out.copy_to_host()


def normals_cuda(key: int, index: np.ndarray, n_samples: int, dim: int) -> np.ndarray:
    """ε[n, s, j] on the device → host array (len(index), n_samples, dim); twin of ``normals_numpy``."""
    normals, _ = _test_kernels()
    return _launch(normals, key, index, np.zeros((index.size, n_samples, dim)))


def first_hashes_cuda(key: int, index: np.ndarray, n_draws: int) -> np.ndarray:
    """h₀ of every (row, counter) on the device → uint64 array (len(index), n_draws)."""
    _, hashes = _test_kernels()
    return _launch(hashes, key, index, np.zeros((index.size, n_draws), dtype=np.uint64))
