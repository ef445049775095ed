"""CUDA (numba-cuda) version of the fused ELBO-gradient pass for the built-in scalar hierarchical models.

Called only by :func:`avicore.kernels.elbo.local_terms` with checked, C-contiguous float64 arrays (every dimension
1). Importing this module imports nothing from Numba; the kernels are built on first use (:func:`_kernel`), one per
block size.

Layout of the work
------------------
One thread per row n: it draws ε[n, s] from the counter generator (device functions of
:mod:`avicore.kernels._counter_normal_cuda`: the same keying and ziggurat tables as the CPU backends), forms
z = mₙ + exp(log sₙ) ε, evaluates the model's log density and gradients (device functions per model, the same
formulas as the NumPy reference) and keeps its (1/S)-averaged gradients in registers. The sums over rows of
log_joint[s] and grad_global[s] are shared-memory tree reductions per sample, written to a per-block partial buffer
(no atomics) that the host adds in block order, so every result is reproducible run to run.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _config
from ..models.base import LocalTerms
from ._counter_normal_cuda import device_functions, quiet_simulator

cuda = None  # numba.cuda, bound by _kernel() on first use (the simulator swaps this module global while it runs)


def _block_threads() -> int:
    """Threads per block: CUDA_THREADS_PER_BLOCK rounded down to a power of two (the reduction needs one)."""
    cap = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    return 1 << (cap.bit_length() - 1)


@functools.cache
def density_functions():  # pragma: no cover - compiled (the simulator runs it in Python)
    """The built-in models' ``log p(z, x | θ)`` with its gradients as CUDA device functions.

    ``linear(params, x, z, θ)`` and ``nonlinear(params, x, z, θ)`` → (value, ∂z, ∂θ), scalars; the formulas of
    :mod:`avicore.kernels.elbo` (``linear_density_nb`` / ``nonlinear_density_nb``). Shared by the fused pass here and
    the device-resident fits (:mod:`avicore.kernels._fit_cuda`).
    """
    global cuda
    from numba import cuda

    @cuda.jit(device=True, inline=True)
    def linear_density(params, x, z, theta):
        r = x - theta - params[0] * z
        t = params[1] * r
        return params[2] - 0.5 * z * z - 0.5 * r * t, params[0] * t - z, t

    @cuda.jit(device=True, inline=True)
    def nonlinear_density(params, x, z, theta):
        sz = math.sin(z)
        cz = math.cos(z)
        w = math.exp(-2.0 * cz)
        r = x - theta - z - z * sz
        wr = w * r
        grad_z = -z + sz + wr * (1.0 + sz + z * cz) - wr * r * sz
        return params[0] - cz - 0.5 * z * z - 0.5 * wr * r, grad_z, wr

    return linear_density, nonlinear_density


@functools.cache
def _kernel(threads: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    global cuda
    from numba import cuda, float64, uint64

    dev = device_functions()
    counter_normal = dev.counter_normal
    row_key = dev.row_key
    linear_density, nonlinear_density = density_functions()

    @cuda.jit
    def fused(model, params, x, mean, log_scale, theta, key, index, block_part, grad_mean, grad_log_scale):
        sh_lj = cuda.shared.array(threads, float64)
        sh_gg = cuda.shared.array(threads, float64)
        tid = cuda.threadIdx.x
        n = cuda.blockIdx.x * threads + tid
        n_rows = mean.shape[0]
        n_samples = theta.shape[0]
        active = n < n_rows
        row = uint64(0)
        scale = 0.0
        xn = 0.0
        mn = 0.0
        if active:
            row = row_key(key, index[n])
            scale = math.exp(log_scale[n, 0])
            xn = x[n, 0]
            mn = mean[n, 0]
        acc_m = 0.0
        acc_ls = 0.0
        for s in range(n_samples):
            lp = 0.0
            gt = 0.0
            if active:
                e = counter_normal(row, s)
                z = mn + scale * e
                if model == 0:
                    lp, gz, gt = linear_density(params, xn, z, theta[s, 0])
                else:
                    lp, gz, gt = nonlinear_density(params, xn, z, theta[s, 0])
                acc_m += gz
                acc_ls += gz * e
            sh_lj[tid] = lp
            sh_gg[tid] = gt
            cuda.syncthreads()
            stride = threads // 2
            while stride > 0:
                if tid < stride:
                    sh_lj[tid] += sh_lj[tid + stride]
                    sh_gg[tid] += sh_gg[tid + stride]
                cuda.syncthreads()
                stride //= 2
            if tid == 0:
                block_part[cuda.blockIdx.x, s] = sh_lj[0]
                block_part[cuda.blockIdx.x, n_samples + s] = sh_gg[0]
            cuda.syncthreads()
        if active:
            inv_s = 1.0 / n_samples
            grad_mean[n, 0] = acc_m * inv_s
            grad_log_scale[n, 0] = acc_ls * inv_s * scale

    return fused


def local_terms_cuda(model_id: int, params: np.ndarray, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                     theta: np.ndarray, key: int, index: np.ndarray) -> LocalTerms:
    """Run the fused pass on the GPU (or the CUDA simulator); host arrays in, host :class:`LocalTerms` out."""
    from ._elbo_partials import reduce_partials

    threads = _block_threads()
    n_rows = mean.shape[0]
    n_samples = theta.shape[0]
    n_blocks = -(-n_rows // threads)
    kernel = _kernel(threads)
    d_args = [cuda.to_device(a) for a in (params, x, mean, log_scale, theta)]
    d_index = cuda.to_device(index)
    d_part = cuda.device_array((n_blocks, 2 * n_samples))  # [log_joint (S) | grad_global (S)] per block
    d_gm = cuda.device_array((n_rows, 1))
    d_gls = cuda.device_array((n_rows, 1))
    with quiet_simulator():
        kernel[n_blocks, threads](np.int64(model_id), *d_args, np.uint64(key), d_index, d_part, d_gm, d_gls)
    return reduce_partials(d_part.copy_to_host(), n_samples, 1, d_gm.copy_to_host(), d_gls.copy_to_host())
