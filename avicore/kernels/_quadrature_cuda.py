"""CUDA expected log-likelihoods: one GPU thread per point (imported only when ``backend="cuda"`` runs).

The per-point function is the very Python function that avicore/kernels/quadrature.py compiles for the CPU
(:func:`avicore.kernels.quadrature.point_terms`), compiled here as a CUDA device function, so both targets run the
same operations. Each thread reads its point's (y, mean, var) — neighbouring threads read neighbouring addresses —
and walks the K Gauss–Hermite nodes, which every thread of a warp reads at once (one broadcast load per node).
The likelihood code is the same for every thread, so the branch on it never diverges.
"""

from __future__ import annotations

import types

import numpy as np
from numba import cuda

from .. import _config
from . import quadrature as _k


def _device(fn: types.FunctionType, **bindings: object) -> object:
    """Compile the plain function ``fn`` as a CUDA device function, with some of its global names rebound."""
    scope = dict(fn.__globals__)
    scope.update(bindings)
    retargeted = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    return cuda.jit(device=True)(retargeted)


_probit_terms_dev = cuda.jit(device=True)(_k.probit_terms)
_point_terms_dev = _device(_k.point_terms, _probit_terms_nb=_probit_terms_dev)


@cuda.jit
def _expected_log_lik_kernel(code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var):
    n = cuda.grid(1)
    if n < y.shape[0]:
        a0, a1, a2 = _point_terms_dev(code, params, y[n], mean[n], var[n], nodes, weights)
        value[n] = a0
        grad_mean[n] = a1
        grad_var[n] = a2


def expected_log_lik_cuda(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray,
                          nodes: np.ndarray, weights: np.ndarray, value: np.ndarray, grad_mean: np.ndarray,
                          grad_var: np.ndarray) -> None:
    """Fill the preallocated (N,) outputs on the GPU (validated, C-contiguous float64 input)."""
    n = y.shape[0]
    if n == 0:
        return
    threads = _config.CUDA_THREADS_PER_BLOCK
    blocks = (n + threads - 1) // threads
    d_value = cuda.device_array(n)
    d_grad_mean = cuda.device_array(n)
    d_grad_var = cuda.device_array(n)
    _expected_log_lik_kernel[blocks, threads](
        int(code), cuda.to_device(params), cuda.to_device(y), cuda.to_device(mean), cuda.to_device(var),
        cuda.to_device(np.ascontiguousarray(nodes)), cuda.to_device(np.ascontiguousarray(weights)),
        d_value, d_grad_mean, d_grad_var)
    value[:] = d_value.copy_to_host()
    grad_mean[:] = d_grad_mean.copy_to_host()
    grad_var[:] = d_grad_var.copy_to_host()
