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

#: Kernel status codes (shared with the Cython and CUDA kernels).
STATUS_OK = 0
STATUS_NONFINITE = 2
STATUS_NOT_POSDEF = 3
STATUS_NO_MEMORY = 4

LOG_2PI = math.log(2.0 * math.pi)

SUPPORTED_BACKENDS = ("numpy", "cython", "numba", "cuda")


#: Covariance steps repeating one of the RING previous ones (a fixed point or short cycle of the Riccati
#: recursions in floating point) are copied instead of recomputed; same value in src_cython/chain.pyx.
RING = 8

#: Doubles of scratch one sequence needs in the scalar kernels (five rings).
SCALAR_WORKSPACE = 5 * RING


def workspace_size(d: int, p: int) -> int:
    """Doubles of scratch one sequence needs in the general (d, p) kernels (Cython, Numba, CUDA)."""
    return (9 + 2 * RING) * d * d + (4 + RING) * p * d + RING * p * p + 3 * d + p + RING


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
# Small-matrix helpers on flat row-major matrices given as (array, offset) pairs, and the per-sequence cores.
# Numba compiles them here; _chain_cuda.py compiles the same Python source as CUDA device functions
# (``.py_func``), so the CPU and GPU kernels cannot drift apart.
# ---------------------------------------------------------------------------------------------------------------

@njit(cache=True)
def _chol(a, ao, n):
    """In-place lower Cholesky factor of the n×n matrix at a[ao:]; 0 on success, 1 if not positive-definite."""
    for j in range(n):
        s = a[ao + j * n + j]
        for k in range(j):
            s -= a[ao + j * n + k] * a[ao + j * n + k]
        if not s > 0.0:  # also catches NaN
            return 1
        ljj = math.sqrt(s)
        a[ao + j * n + j] = ljj
        for i in range(j + 1, n):
            s = a[ao + i * n + j]
            for k in range(j):
                s -= a[ao + i * n + k] * a[ao + j * n + k]
            a[ao + i * n + j] = s / ljj
    return 0


@njit(cache=True)
def _solve_lower(L, lo, b, bo, n, m):
    """b ← L⁻¹ b for the n×m matrix b and the lower triangle of the n×n matrix L."""
    for c in range(m):
        for i in range(n):
            s = b[bo + i * m + c]
            for k in range(i):
                s -= L[lo + i * n + k] * b[bo + k * m + c]
            b[bo + i * m + c] = s / L[lo + i * n + i]


@njit(cache=True)
def _solve_lower_t(L, lo, b, bo, n, m):
    """b ← L⁻ᵀ b for the n×m matrix b and the lower triangle of the n×n matrix L."""
    for c in range(m):
        for i in range(n - 1, -1, -1):
            s = b[bo + i * m + c]
            for k in range(i + 1, n):
                s -= L[lo + k * n + i] * b[bo + k * m + c]
            b[bo + i * m + c] = s / L[lo + i * n + i]


@njit(cache=True)
def _matmul(a, ao, b, bo, c, co, n, k, m):
    """c = a b for a (n×k) and b (k×m)."""
    for i in range(n):
        for j in range(m):
            s = 0.0
            for l in range(k):
                s += a[ao + i * k + l] * b[bo + l * m + j]
            c[co + i * m + j] = s


@njit(cache=True)
def _sym_abt_plus(a, ao, b, bo, e, eo, c, co, n, k):
    """c = a bᵀ + e (n×n, a and b n×k), computed on the lower triangle and mirrored (exactly symmetric)."""
    for i in range(n):
        for j in range(i + 1):
            s = e[eo + i * n + j]
            for l in range(k):
                s += a[ao + i * k + l] * b[bo + j * k + l]
            c[co + i * n + j] = s
            c[co + j * n + i] = s


@njit(cache=True)
def _sym_two_abt(a, ao, b, bo, k1, f, fo, g, go, k2, c, co, n):
    """c = a bᵀ + f gᵀ (n×n; a, b n×k1; f, g n×k2), lower triangle mirrored."""
    for i in range(n):
        for j in range(i + 1):
            s = 0.0
            for l in range(k1):
                s += a[ao + i * k1 + l] * b[bo + j * k1 + l]
            for l in range(k2):
                s += f[fo + i * k2 + l] * g[go + j * k2 + l]
            c[co + i * n + j] = s
            c[co + j * n + i] = s


@njit(cache=True)
def _same(a, ao, b, bo, n):
    """Bitwise equality of n doubles (all values here are finite, so == is bitwise up to ±0)."""
    for i in range(n):
        if a[ao + i] != b[bo + i]:
            return False
    return True


@njit(cache=True)
def _copy(src, so, dst, do, n):
    for i in range(n):
        dst[do + i] = src[so + i]


def _smoother_one(x, t0, T, d, p, A, Q, C, R, m0, P0, means, covs, cross, w, reuse):
    """One sequence on flat arrays (x: n·p, means: n·d, covs/cross: n·d·d); w: workspace_size(d, p) doubles.

    Returns (status, log p(x)). The covariance recursions do not depend on x and, in floating point, end in a
    fixed point or a short cycle: with ``reuse``, a step whose covariance inputs equal those of a step at most RING
    before copies that step's outputs (bitwise the same as recomputing them). Rings of RING slots (index
    t % RING) hold what the copies need. A plain Python function on purpose: compiled below for the CPU and, with
    its helper names bound to device functions, for CUDA in _chain_cuda.py.
    """
    dd = d * d
    pd = p * d
    pp = p * p
    o_mp = 0
    o_Pp = o_mp + d
    o_AP = o_Pp + dd
    o_L = o_AP + dd
    o_M = o_L + dd
    o_T1 = o_M + dd
    o_T2 = o_T1 + dd
    o_T3 = o_T2 + dd
    o_G = o_T3 + dd
    o_Gring = o_G + dd  # RING slots
    o_Pfring = o_Gring + RING * dd  # RING slots
    o_CP = o_Pfring + RING * dd
    o_KT = o_CP + pd
    o_K = o_KT + pd
    o_KR = o_K + pd
    o_Wring = o_KR + pd  # RING slots
    o_Sring = o_Wring + RING * pd  # RING slots
    o_u = o_Sring + RING * pp
    o_v = o_u + p
    o_v2 = o_v + d
    o_logdet = o_v2 + d  # RING slots: Σ log diag of the factor of S

    log_ev = 0.0
    for t in range(T):
        row = t0 + t
        slot = t % RING
        o_S = o_Sring + slot * pp
        o_W = o_Wring + slot * pd
        back = 0
        if reuse:
            for period in range(1, min(RING, t - 1) + 1):                       # step t − period had t > 0
                if _same(covs, (row - 1) * dd, covs, (row - 1 - period) * dd, dd):
                    back = period
                    break
        if t == 0:
            _copy(m0, 0, w, o_mp, d)
            _copy(P0, 0, w, o_Pp, dd)
        else:
            _matmul(A, 0, means, (row - 1) * d, w, o_mp, d, d, 1)                 # m⁻ = A m_{t-1}
        if back > 0:                                                             # step t repeats t − back
            _copy(cross, (row - 1 - back) * dd, cross, (row - 1) * dd, dd)
            _copy(covs, (row - back) * dd, covs, row * dd, dd)
            src = (t - back) % RING
            if src != slot:
                _copy(w, o_Sring + src * pp, w, o_S, pp)
                _copy(w, o_Wring + src * pd, w, o_W, pd)
                w[o_logdet + slot] = w[o_logdet + src]
        else:
            if t > 0:
                prev = (row - 1) * dd
                _matmul(A, 0, covs, prev, w, o_AP, d, d, d)                       # AP = A P_{t-1}
                _sym_abt_plus(w, o_AP, A, 0, Q, 0, w, o_Pp, d, d)                 # P⁻ = AP Aᵀ + Q
                _copy(w, o_Pp, w, o_L, dd)
                if _chol(w, o_L, d) != 0:
                    return STATUS_NOT_POSDEF, math.nan
                _solve_lower(w, o_L, w, o_AP, d, d)                               # AP ← P⁻⁻¹ AP
                _solve_lower_t(w, o_L, w, o_AP, d, d)
                for i in range(d):                                               # G_{t-1} = (P⁻⁻¹ AP)ᵀ
                    for j in range(d):
                        cross[prev + i * d + j] = w[o_AP + j * d + i]
            _matmul(C, 0, w, o_Pp, w, o_CP, p, d, d)                              # CP = C P⁻
            _sym_abt_plus(w, o_CP, C, 0, R, 0, w, o_S, p, d)                      # S = CP Cᵀ + R
            if _chol(w, o_S, p) != 0:
                return STATUS_NOT_POSDEF, math.nan
            s = 0.0
            for i in range(p):
                s += math.log(w[o_S + i * p + i])
            w[o_logdet + slot] = s
            _copy(w, o_CP, w, o_W, pd)
            _solve_lower(w, o_S, w, o_W, p, d)                                    # W = L⁻¹ CP
            _copy(w, o_W, w, o_KT, pd)
            _solve_lower_t(w, o_S, w, o_KT, p, d)                                 # Kᵀ = L⁻ᵀ W
            for i in range(d):
                for k in range(p):
                    w[o_K + i * p + k] = w[o_KT + k * d + i]
            for i in range(d):                                                   # M = I − K C
                for j in range(d):
                    s = 1.0 if i == j else 0.0
                    for k in range(p):
                        s -= w[o_K + i * p + k] * C[k * d + j]
                    w[o_M + i * d + j] = s
            _matmul(w, o_M, w, o_Pp, w, o_T1, d, d, d)                            # T1 = M P⁻
            _matmul(w, o_K, R, 0, w, o_KR, d, p, p)                               # KR = K R
            _sym_two_abt(w, o_T1, w, o_M, d, w, o_KR, w, o_K, p, covs, row * dd, d)  # P = T1 Mᵀ + KR Kᵀ
        for i in range(p):                                                       # u = L⁻¹ (x_t − C m⁻)
            s = x[row * p + i]
            for k in range(d):
                s -= C[i * d + k] * w[o_mp + k]
            w[o_u + i] = s
        _solve_lower(w, o_S, w, o_u, p, 1)
        step = 0.0
        for i in range(p):
            step += w[o_u + i] * w[o_u + i]
        log_ev += -0.5 * p * LOG_2PI - w[o_logdet + slot] - 0.5 * step
        for i in range(d):                                                       # m = m⁻ + Wᵀ u
            s = w[o_mp + i]
            for k in range(p):
                s += w[o_W + k * d + i] * w[o_u + k]
            means[row * d + i] = s
    if not math.isfinite(log_ev):
        return STATUS_NONFINITE, log_ev

    last = t0 + T - 1
    for i in range(dd):
        cross[last * dd + i] = 0.0
    for t in range(T - 2, -1, -1):
        row = t0 + t
        slot = t % RING
        _copy(cross, row * dd, w, o_G, dd)                                        # G_t (forward gain)
        _matmul(A, 0, means, row * d, w, o_v, d, d, 1)                            # v = A m_t
        for i in range(d):
            w[o_v + i] = means[(row + 1) * d + i] - w[o_v + i]
        _matmul(w, o_G, w, o_v, w, o_v2, d, d, 1)
        for i in range(d):
            means[row * d + i] += w[o_v2 + i]                                     # m_t += G (m_{t+1}ˢ − A m_t)
        back = 0
        if reuse:
            for period in range(1, min(RING, T - 2 - t) + 1):                   # step t + period exists
                src = (t + period) % RING
                if (_same(w, o_G, w, o_Gring + src * dd, dd) and _same(covs, row * dd, w, o_Pfring + src * dd, dd)
                        and _same(covs, (row + 1) * dd, covs, (row + 1 + period) * dd, dd)):
                    back = period
                    break
        _copy(w, o_G, w, o_Gring + slot * dd, dd)
        _copy(covs, row * dd, w, o_Pfring + slot * dd, dd)
        if back > 0:                                                             # step t repeats t + back
            _copy(covs, (row + back) * dd, covs, row * dd, dd)
            _copy(cross, (row + back) * dd, cross, row * dd, dd)
            continue
        for i in range(d):                                                       # M = I − G A
            for j in range(d):
                s = 1.0 if i == j else 0.0
                for k in range(d):
                    s -= w[o_G + i * d + k] * A[k * d + j]
                w[o_M + i * d + j] = s
        _matmul(w, o_M, covs, row * dd, w, o_T1, d, d, d)                         # T1 = M P_t
        for i in range(dd):
            w[o_T2 + i] = Q[i] + covs[(row + 1) * dd + i]                         # T2 = Q + P_{t+1}ˢ
        _matmul(w, o_G, w, o_T2, w, o_T3, d, d, d)                                # T3 = G T2
        _sym_two_abt(w, o_T1, w, o_M, d, w, o_T3, w, o_G, d, covs, row * dd, d)
        for i in range(d):                                                       # cross = P_{t+1}ˢ Gᵀ
            for j in range(d):
                s = 0.0
                for k in range(d):
                    s += covs[(row + 1) * dd + i * d + k] * w[o_G + j * d + k]
                cross[row * dd + i * d + j] = s
    return STATUS_OK, log_ev


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

def _smoother_scalar_one(x, t0, T, a, q, c, r, m0, p0, means, covs, cross, w, reuse):
    """One scalar sequence (flat arrays; w: SCALAR_WORKSPACE doubles); returns (status, log p(x)).

    The same reuse of repeated variance steps as :func:`_smoother_one`. Compiled for the CPU below and for CUDA in
    _chain_cuda.py.
    """
    o_gain, o_inv_s, o_log_s, o_pf, o_g = 0, RING, 2 * RING, 3 * RING, 4 * RING  # rings
    log_ev = 0.0
    mf = m0
    pf = p0
    for t in range(T):
        row = t0 + t
        slot = t % RING
        back = 0
        if reuse:
            for period in range(1, min(RING, t - 1) + 1):
                if covs[row - 1] == covs[row - 1 - period]:
                    back = period
                    break
        mp = m0 if t == 0 else a * mf
        if back > 0:
            pf = covs[row - back]
            src = (t - back) % RING
            w[o_gain + slot] = w[o_gain + src]
            w[o_inv_s + slot] = w[o_inv_s + src]
            w[o_log_s + slot] = w[o_log_s + src]
        else:
            pp = p0 if t == 0 else a * a * pf + q
            s = c * c * pp + r
            w[o_inv_s + slot] = 1.0 / s
            w[o_gain + slot] = pp * c * w[o_inv_s + slot]
            pf = pp * r * w[o_inv_s + slot]
            w[o_log_s + slot] = math.log(s)
        e = x[row] - c * mp
        mf = mp + w[o_gain + slot] * e
        log_ev -= 0.5 * (w[o_log_s + slot] + e * e * w[o_inv_s + slot])
        means[row] = mf
        covs[row] = pf
    log_ev -= 0.5 * T * LOG_2PI
    if not math.isfinite(log_ev):
        return STATUS_NONFINITE, log_ev
    ms = mf
    cross[t0 + T - 1] = 0.0
    for t in range(T - 2, -1, -1):
        row = t0 + t
        slot = t % RING
        mf = means[row]
        pf_t = covs[row]
        back = 0
        if reuse:
            for period in range(1, min(RING, T - 2 - t) + 1):
                if pf_t == w[o_pf + (t + period) % RING] and covs[row + 1] == covs[row + 1 + period]:
                    back = period
                    break
        if back > 0:
            g = w[o_g + (t + back) % RING]
            covs[row] = covs[row + back]
            cross[row] = cross[row + back]
        else:
            ps = covs[row + 1]
            inv_pp = 1.0 / (a * a * pf_t + q)
            g = pf_t * a * inv_pp
            cross[row] = ps * g
            covs[row] = pf_t * q * inv_pp + g * g * ps
        w[o_pf + slot] = pf_t
        w[o_g + slot] = g
        ms = mf + g * (ms - a * mf)
        means[row] = ms
    return STATUS_OK, log_ev


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
    elif backend == "cython":
        from .._cy import load

        cy = load("chain")
        if scalar:
            cy.cy_smoother_scalar(x.reshape(-1), offsets, *scalar_args, means.reshape(-1), covs.reshape(-1),
                                  cross.reshape(-1), log_evidence, status, _config.get_num_threads(), reuse)
        else:
            cy.cy_smoother(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status,
                           _config.get_num_threads(), reuse)
    elif backend == "numba":
        _config.apply_numba_threads()
        if scalar:
            _smoother_scalar_numba(x.reshape(-1), offsets, *scalar_args, means.reshape(-1), covs.reshape(-1),
                                   cross.reshape(-1), log_evidence, status, reuse)
        else:
            _smoother_general_numba(x.reshape(-1), offsets, d, p, workspace_size(d, p), A.reshape(-1),
                                    Q.reshape(-1), C.reshape(-1), R.reshape(-1), m0, P0.reshape(-1),
                                    means.reshape(-1), covs.reshape(-1), cross.reshape(-1), log_evidence, status,
                                    reuse)
    else:
        from ._chain_cuda import smoother_cuda

        smoother_cuda(x, offsets, A, Q, C, R, m0, P0, means, covs, cross, log_evidence, status, reuse=reuse)
    return means, covs, cross, log_evidence, status
