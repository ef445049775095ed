"""CUDA expected log-likelihoods: one GPU thread per point (imported only when ``backend="cuda"`` runs).

The per-point function is the very Python function that avicore/kernels/quadrature.py compiles for the CPU
(:func:`avicore.kernels._quadrature_point.point_terms`), compiled here as a CUDA device function, so both targets run
the same operations. Each thread reads its point's (y, mean, var) — neighbouring threads read neighbouring addresses —
and walks the K Gauss–Hermite nodes, which every thread of a warp reads at once (one broadcast load per node).
The likelihood code is the same for every thread, so the branch on it never diverges.

Device arrays in, device arrays out (:func:`expected_log_lik_device`, the Poisson ``log y!`` included); host arrays
go up and down through :mod:`avicore._device`'s pinned staging buffers into its cached workspace.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np

from .. import _config, _device
from . import _quadrature_point as _k

cuda = _device.cuda()  # a module global: the CUDA simulator swaps it while a kernel of this module runs


def _device_fn(fn: types.FunctionType, **bindings: object) -> object:
    """Compile the plain function ``fn`` as a CUDA device function, with some of its global names rebound."""
    scope = dict(fn.__globals__)
    scope.update(bindings)
    retargeted = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    return cuda.jit(device=True)(retargeted)


_probit_terms_dev = cuda.jit(device=True)(_k.probit_terms)
_point_terms_dev = _device_fn(_k.point_terms, _probit_terms_nb=_probit_terms_dev)


@cuda.jit
def _expected_log_lik_kernel(code, params, y, mean, var, nodes, weights, log_factorial, value, grad_mean,
                             grad_var):
    n = cuda.grid(1)
    if n < y.shape[0]:
        yn = y[n]
        a0, a1, a2 = _point_terms_dev(code, params, yn, mean[n], var[n], nodes, weights)
        if log_factorial:
            a0 -= math.lgamma(yn + 1.0)
        value[n] = a0
        grad_mean[n] = a1
        grad_var[n] = a2


def expected_log_lik_device(code: int, params: np.ndarray, y: Any, mean: Any, var: Any, nodes: np.ndarray,
                            weights: np.ndarray, alloc: Any = _device.user_alloc, *,
                            log_factorial: bool = True) -> tuple[Any, Any, Any]:
    """(value, grad_mean, grad_var) of validated C-contiguous float64 (N,) device arrays, as ``alloc`` makes
    them; ``log_factorial`` subtracts ``lgamma(y + 1)`` from the Poisson value on the device."""
    n = int(y.shape[0])
    ws = _device.workspace()
    outs = [alloc(f"quad.{name}", (n,), np.float64) for name in ("value", "grad_mean", "grad_var")]
    if n:
        threads = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
        _expected_log_lik_kernel[-(-n // threads), threads](
            int(code), ws.put("quad.params", np.asarray(params, dtype=np.float64)), y, mean, var,
            ws.put("quad.nodes", nodes), ws.put("quad.weights", weights),
            bool(log_factorial and code == _k.CODE_POISSON), outs[0][1], outs[1][1], outs[2][1])
    return outs[0][0], outs[1][0], outs[2][0]


def expected_log_lik_cuda(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray,
                          nodes: np.ndarray, weights: np.ndarray, value: np.ndarray, grad_mean: np.ndarray,
                          grad_var: np.ndarray) -> None:
    """Fill the preallocated (N,) host outputs on the GPU (validated, C-contiguous float64 host input); the
    dispatcher subtracts the Poisson ``log y!`` itself."""
    if y.shape[0] == 0:
        return
    d_y, d_mean, d_var = (_device.upload(a, f"quad.in.{name}") for a, name in ((y, "y"), (mean, "mean"),
                                                                             (var, "var")))
    outs = expected_log_lik_device(code, params, d_y, d_mean, d_var, np.ascontiguousarray(nodes),
                                   np.ascontiguousarray(weights), _device.workspace_alloc, log_factorial=False)
    for d_out, host in zip(outs, (value, grad_mean, grad_var)):
        _device.staging().download(d_out, host)
