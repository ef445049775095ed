"""Gaussian-chain kernels: Kalman filter + Rauch–Tung–Striebel smoother over ragged batches of sequences.

Model (time-invariant linear-Gaussian state space, state dimension d, observation dimension p)::

    z_1 ~ N(m0, P0),    z_t = A z_{t-1} + w_t,  w_t ~ N(0, Q),    x_t = C z_t + v_t,  v_t ~ N(0, R).

This module holds the NumPy reference, the Numba kernels and the dispatcher that also calls the Cython kernel
(``src_cython/chain.pyx``) and the CUDA one (``_chain_cuda.py``, imported only when used). Kernels never validate:
:func:`avicore.chain.smoother` checks the user's input first.

Algorithm (every backend, same operations)
------------------------------------------
Forward (filter), per step t with predicted (m⁻, P⁻)::

    S = C P⁻ Cᵀ + R = L Lᵀ,   u = L⁻¹ (x_t − C m⁻),   W = L⁻¹ C P⁻,   Kᵀ = L⁻ᵀ W
    log p(x_t | x_<t) = −p/2 log 2π − Σ log L_ii − ½ uᵀu
    m = m⁻ + Wᵀ u,   P = (I − K C) P⁻ (I − K C)ᵀ + K R Kᵀ              (Joseph form)
    next: m⁻ = A m,  P⁻ = A P Aᵀ + Q,   G_t = P Aᵀ (P⁻)⁻¹  (Cholesky solve; stored in ``cross[t]``)

Backward (smoother), in place over the filtered values::

    m_t ← m_t + G_t (m_{t+1}ˢ − A m_t)
    P_t ← (I − G_t A) P_t (I − G_t A)ᵀ + G_t (Q + P_{t+1}ˢ) G_tᵀ          (Joseph form of RTS)
    cross[t] = Cov(z_{t+1}, z_t | x) = P_{t+1}ˢ G_tᵀ;   cross[last step of each sequence] = 0

Both covariance updates are sums of positive semi-definite terms, so rounding cannot make them indefinite. The
scalar case (d = p = 1) has its own kernels using the equivalent closed forms P = P⁻ R / S and
P_t ← P_t Q / P⁻_{t+1} + G_t² P_{t+1}ˢ, which involve no subtraction at all.

Repeated covariance steps (compiled backends)
---------------------------------------------
The model is time-invariant, so the covariance recursions do not depend on x; in floating point they end in a
fixed point or a short cycle after a few dozen steps. A step whose covariance inputs are bitwise equal to those of
one of the ``RING`` previous steps copies that step's outputs instead of recomputing them: the results are bitwise
those of the full computation (tested with ``reuse=False``), and long sequences cost little more than their mean
updates. The NumPy reference always recomputes.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .. import _config
from ..backends import resolve
from ._chain_core import (  # noqa: F401  (status codes, sizes and cores are part of this module's interface)
    LOG_2PI,
    RING,
    SCALAR_WORKSPACE,
    STATUS_NO_MEMORY,
    STATUS_NONFINITE,
    STATUS_NOT_POSDEF,
    STATUS_OK,
    _smoother_one,
    _smoother_scalar_one,
    workspace_size,
)
from ._slicing import sequence_slices

SUPPORTED_BACKENDS = ("numpy", "cython", "numba", "cuda")

#: Most ``rows x ((d + p)³ + 32)`` one compiled smoother call works on (< 0.1 s on one core, measured): longer
#: batches run as several calls over consecutive whole sequences, returning to Python in between so that
#: ``KeyboardInterrupt`` is honoured within a fraction of a second (one sequence is never split, so a single long
#: sequence is not interruptible mid-way).
SLICE_COST = 1 << 23


# ---------------------------------------------------------------------------------------------------------------
# NumPy reference
# ---------------------------------------------------------------------------------------------------------------

def _symmetrize(m: np.ndarray) -> np.ndarray:
    return 0.5 * (m + m.T)


def _smoother_one_numpy(x: np.ndarray, A: np.ndarray, Q: np.ndarray, C: np.ndarray, R: np.ndarray,
                        m0: np.ndarray, P0: np.ndarray, means: np.ndarray, covs: np.ndarray,
                        cross: np.ndarray) -> tuple[int, float]:
    """One sequence, written for clarity; fills ``means``, ``covs``, ``cross`` and returns (status, log p(x))."""
    from scipy.linalg import solve_triangular

    T, p = x.shape
    d = A.shape[0]
    eye = np.eye(d)
    gains = np.zeros((T, d, d))
    log_evidence = 0.0
    m_pred, P_pred = m0, P0
    for t in range(T):
        if t > 0:
            AP = A @ covs[t - 1]
            P_pred = _symmetrize(AP @ A.T + Q)
            m_pred = A @ means[t - 1]
            try:
                L_pred = np.linalg.cholesky(P_pred)
            except np.linalg.LinAlgError:
                return STATUS_NOT_POSDEF, math.nan
            # G_{t-1} = P_{t-1} Aᵀ (P⁻_t)⁻¹ = ((P⁻_t)⁻¹ A P_{t-1})ᵀ
            Y = solve_triangular(L_pred, AP, lower=True, check_finite=False)
            X = solve_triangular(L_pred, Y, lower=True, trans="T", check_finite=False)
            gains[t - 1] = X.T
        S = _symmetrize(C @ P_pred @ C.T + R)
        try:
            L = np.linalg.cholesky(S)
        except np.linalg.LinAlgError:
            return STATUS_NOT_POSDEF, math.nan
        u = solve_triangular(L, x[t] - C @ m_pred, lower=True, check_finite=False)
        W = solve_triangular(L, C @ P_pred, lower=True, check_finite=False)
        K = solve_triangular(L, W, lower=True, trans="T", check_finite=False).T
        log_evidence += -0.5 * p * LOG_2PI - np.log(np.diag(L)).sum() - 0.5 * (u @ u)
        means[t] = m_pred + W.T @ u
        M = eye - K @ C
        covs[t] = _symmetrize(M @ P_pred @ M.T + K @ R @ K.T)
    if not math.isfinite(log_evidence):
        return STATUS_NONFINITE, log_evidence
    cross[T - 1] = 0.0
    for t in range(T - 2, -1, -1):
        G = gains[t]
        m_filt, P_filt = means[t].copy(), covs[t].copy()
        means[t] = m_filt + G @ (means[t + 1] - A @ m_filt)
        M = eye - G @ A
        covs[t] = _symmetrize(M @ P_filt @ M.T + G @ (Q + covs[t + 1]) @ G.T)
        cross[t] = covs[t + 1] @ G.T
    return STATUS_OK, log_evidence


def _smoother_numpy(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status) -> None:
    # Overflow/NaN is reported through ``status`` (as by the compiled kernels), not as NumPy warnings.
    with np.errstate(all="ignore"):
        for i in range(offsets.shape[0] - 1):
            a, b = offsets[i], offsets[i + 1]
            status[i], log_evidence[i] = _smoother_one_numpy(x[a:b], A, Q, C, R, m0, P0, means[a:b], covs[a:b],
                                                             cross[a:b])


# ---------------------------------------------------------------------------------------------------------------
# Numba: general (d, p); the per-sequence cores live in _chain_core.py, shared with the CUDA kernels
# ---------------------------------------------------------------------------------------------------------------

_smoother_one_numba = njit(cache=True)(_smoother_one)


@njit(cache=True, parallel=True)
def _smoother_general_numba(x, offsets, d, p, ws, A, Q, C, R, m0, P0, means, covs, cross, log_evidence,
                            status, reuse):
    n_seq = offsets.shape[0] - 1
    for i in prange(n_seq):
        w = np.empty(ws)
        t0 = offsets[i]
        st, ll = _smoother_one_numba(x, t0, offsets[i + 1] - t0, d, p, A, Q, C, R, m0, P0, means, covs,
                                     cross, w, reuse)
        status[i] = st
        log_evidence[i] = ll


# ---------------------------------------------------------------------------------------------------------------
# Numba: scalar (d = p = 1), the benchmark case
# ---------------------------------------------------------------------------------------------------------------

_smoother_scalar_one_numba = njit(cache=True)(_smoother_scalar_one)


@njit(cache=True, parallel=True)
def _smoother_scalar_numba(x, offsets, a, q, c, r, m0, p0, means, covs, cross, log_evidence, status, reuse):
    n_seq = offsets.shape[0] - 1
    for i in prange(n_seq):
        w = np.empty(SCALAR_WORKSPACE)
        t0 = offsets[i]
        st, ll = _smoother_scalar_one_numba(x, t0, offsets[i + 1] - t0, a, q, c, r, m0, p0, means, covs, cross,
                                            w, reuse)
        status[i] = st
        log_evidence[i] = ll


# ---------------------------------------------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------------------------------------------

def run_smoother(x: np.ndarray, offsets: np.ndarray, A: np.ndarray, Q: np.ndarray, C: np.ndarray,
                 R: np.ndarray, m0: np.ndarray, P0: np.ndarray, backend: str = "auto", *, reuse: bool = True,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the smoother on validated input; returns (means, covs, cross, log_evidence, status).

    ``x`` is (n, p) float64 C-contiguous, ``offsets`` int64 (n_sequences + 1,), the parameters float64
    C-contiguous of shapes (d, d), (d, d), (p, d), (p, p), (d,), (d, d). ``status`` (int32, per sequence) holds
    the kernel's codes (``STATUS_*``); the caller turns non-zero codes into exceptions. ``reuse=False`` makes the
    compiled kernels recompute every covariance step instead of copying repeated ones (tests check that this
    changes no bit); the NumPy reference always recomputes.
    """
    n, p = x.shape
    d = A.shape[0]
    n_seq = offsets.shape[0] - 1
    backend = resolve(backend, size=n_seq, supported=SUPPORTED_BACKENDS)
    means = np.empty((n, d))
    covs = np.empty((n, d, d))
    cross = np.empty((n, d, d))
    log_evidence = np.empty(n_seq)
    status = np.zeros(n_seq, dtype=np.int32)
    scalar_args = (float(A[0, 0]), float(Q[0, 0]), float(C[0, 0]), float(R[0, 0]), float(m0[0]), float(P0[0, 0]))
    scalar = d == 1 and p == 1
    if backend == "numpy":
        _smoother_numpy(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status)
    elif backend in ("cython", "numba"):
        # Slices of whole sequences (bit-identical: sequences are independent) so Ctrl-C is honoured between them.
        bounds = sequence_slices(offsets, SLICE_COST // ((d + p) ** 3 + 32))
        for s0, s1, r0, r1 in bounds:
            _compiled_smoother(backend, scalar, scalar_args, reuse, x[r0:r1], offsets[s0:s1 + 1] - r0, A, Q, C, R,
                               m0, P0, means[r0:r1], covs[r0:r1], cross[r0:r1], log_evidence[s0:s1],
                               status[s0:s1])
    else:
        from ._chain_cuda import smoother_cuda

        smoother_cuda(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status, reuse=reuse)
    return means, covs, cross, log_evidence, status


def _compiled_smoother(backend, scalar, scalar_args, reuse, x, offsets, A, Q, C, R, m0, P0, means, covs, cross,
                       log_evidence, status) -> None:
    """One Cython or Numba smoother call over the sequences of ``offsets`` (outputs written in place)."""
    d, p = A.shape[0], x.shape[1]
    if backend == "cython":
        from .._cy import load

        cy = load("chain")
        if scalar:
            cy.cy_smoother_scalar(x.reshape(-1), offsets, *scalar_args, means.reshape(-1), covs.reshape(-1),
                                  cross.reshape(-1), log_evidence, status, _config.get_num_threads(), reuse)
        else:
            cy.cy_smoother(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status,
                           _config.get_num_threads(), reuse)
    else:
        _config.apply_numba_threads()
        if scalar:
            _smoother_scalar_numba(x.reshape(-1), offsets, *scalar_args, means.reshape(-1), covs.reshape(-1),
                                   cross.reshape(-1), log_evidence, status, reuse)
        else:
            _smoother_general_numba(x.reshape(-1), offsets, d, p, workspace_size(d, p), A.reshape(-1),
                                    Q.reshape(-1), C.reshape(-1), R.reshape(-1), m0, P0.reshape(-1),
                                    means.reshape(-1), covs.reshape(-1), cross.reshape(-1), log_evidence, status,
                                    reuse)
