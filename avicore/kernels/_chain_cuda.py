"""CUDA Kalman filter + RTS smoother: one GPU thread per sequence (imported only when ``backend="cuda"`` runs).

The per-sequence cores and their small-matrix helpers are the very Python functions (avicore/kernels/_chain_core.py)
that avicore/kernels/chain.py compiles for the CPU; here they are compiled as CUDA device functions, so the two
targets run the same operations.
Each thread of the general (d, p) kernel owns one column of a (workspace_size, n_sequences) scratch array, so that
neighbouring threads touch neighbouring addresses (coalesced). One thread per sequence suits batches of many
sequences; a single long sequence runs serially on one GPU thread (a parallel-scan formulation would be needed to
spread it over the GPU).

Device arrays in, device arrays out (:func:`smoother_device`); host arrays go up and down through
:mod:`avicore._device`'s pinned staging buffers, and the scratch array lives in its cached workspace.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import numpy as np

from .. import _device
from . import _chain_core as _k

cuda = _device.cuda()  # a module global: the CUDA simulator swaps it while a kernel of this module runs

_HELPERS = ("_chol", "_solve_lower", "_solve_lower_t", "_matmul", "_sym_abt_plus", "_sym_two_abt", "_same", "_copy")


def _device_fn(fn: types.FunctionType, **bindings: object) -> object:
    """Compile the plain function ``fn`` as a CUDA device function, with some of its global names rebound."""
    scope = dict(fn.__globals__)
    scope.update(bindings)
    retargeted = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
    return cuda.jit(device=True)(retargeted)


_device_helpers = {name: cuda.jit(device=True)(getattr(_k, name).py_func) for name in _HELPERS}
_smoother_one_dev = _device_fn(_k._smoother_one, **_device_helpers)
_smoother_scalar_one_dev = cuda.jit(device=True)(_k._smoother_scalar_one)


@cuda.jit
def _smoother_scalar_kernel(x, offsets, a, q, c, r, m0, p0, means, covs, cross, log_evidence, status, work,
                            reuse):
    i = cuda.grid(1)
    if i < offsets.shape[0] - 1:
        t0 = offsets[i]
        st, ll = _smoother_scalar_one_dev(x, t0, offsets[i + 1] - t0, a, q, c, r, m0, p0, means, covs, cross,
                                          work[:, i], reuse)
        status[i] = st
        log_evidence[i] = ll


@cuda.jit
def _smoother_general_kernel(x, offsets, d, p, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status,
                             work, reuse):
    i = cuda.grid(1)
    if i < offsets.shape[0] - 1:
        t0 = offsets[i]
        st, ll = _smoother_one_dev(x, t0, offsets[i + 1] - t0, d, p, A, Q, C, R, m0, P0, means, covs, cross,
                                   work[:, i], reuse)
        status[i] = st
        log_evidence[i] = ll


def smoother_device(x: Any, offsets: np.ndarray, A: np.ndarray, Q: np.ndarray, C: np.ndarray, R: np.ndarray,
                    m0: np.ndarray, P0: np.ndarray, alloc: Any = _device.user_alloc, *,
                    reuse: bool = True) -> tuple[tuple[Any, Any, Any, Any], np.ndarray]:
    """Smoother of the validated C-contiguous float64 (n, p) device array ``x``.

    Returns ``((means (n, d), covs (n, d, d), cross (n, d, d), log_evidence (n_sequences,)), status)``: the
    outputs as ``alloc`` makes them and the per-sequence status codes on the host.
    """
    n, p = x.shape
    d = A.shape[0]
    n_seq = offsets.shape[0] - 1
    ws = _device.workspace()
    made = [alloc("chain.means", (n, d), np.float64), alloc("chain.covs", (n, d, d), np.float64),
            alloc("chain.cross", (n, d, d), np.float64), alloc("chain.log_evidence", (n_seq,), np.float64)]
    flat = [view.reshape(-1) for _, view in made[:3]]
    d_status = ws.put("chain.status", np.zeros(n_seq, dtype=np.int32))
    outputs = (*flat, made[3][1], d_status)
    d_x = x.reshape(-1)
    d_off = ws.put("chain.offsets", offsets)
    blocks, threads = _device.launch_1d(n_seq)
    # Overflow is reported through ``status``; under the CUDA simulator the arithmetic runs in NumPy scalars,
    # whose overflow warnings would otherwise escape from the simulated threads.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if d == 1 and p == 1:
            scalars = (float(A[0, 0]), float(Q[0, 0]), float(C[0, 0]), float(R[0, 0]), float(m0[0]),
                       float(P0[0, 0]))
            work = ws.get("chain.work", (_k.SCALAR_WORKSPACE, n_seq))
            _smoother_scalar_kernel[blocks, threads](d_x, d_off, *scalars, *outputs, work, reuse)
        else:
            params = [ws.put(f"chain.{name}", np.ascontiguousarray(m).reshape(-1))
                      for name, m in zip(("A", "Q", "C", "R", "m0", "P0"), (A, Q, C, R, m0, P0))]
            work = ws.get("chain.work", (_k.workspace_size(d, p), n_seq))
            _smoother_general_kernel[blocks, threads](d_x, d_off, d, p, *params, *outputs, work, reuse)
    return tuple(obj for obj, _ in made), d_status.copy_to_host()


def smoother_cuda(x: np.ndarray, offsets: np.ndarray, A: np.ndarray, Q: np.ndarray, C: np.ndarray,
                  R: np.ndarray, m0: np.ndarray, P0: np.ndarray, means: np.ndarray, covs: np.ndarray,
                  cross: np.ndarray, log_evidence: np.ndarray, status: np.ndarray, *, reuse: bool = True) -> None:
    """Fill the preallocated host outputs on the GPU (validated, C-contiguous float64 host input)."""
    d_x = _device.upload(x, "chain.in.x")
    outs, st = smoother_device(d_x, offsets, A, Q, C, R, m0, P0, _device.workspace_alloc, reuse=reuse)
    for d_out, host in zip(outs, (means, covs, cross, log_evidence)):
        _device.staging().download(d_out, host)
    status[:] = st
