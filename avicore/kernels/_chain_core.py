"""The Gaussian chain's per-sequence cores and their small-matrix helpers, on flat row-major arrays.

Numba compiles them for the CPU in :mod:`avicore.kernels.chain`; :mod:`avicore.kernels._chain_cuda` compiles the
same Python source as CUDA device functions (``.py_func``), so the CPU and GPU kernels cannot drift apart. This
module sits one floor below both, so that neither imports the other; the algorithm is in the docstring of
:mod:`avicore.kernels.chain`.
"""

from __future__ import annotations

import math

from numba import njit

#: Kernel status codes (shared with the Cython and CUDA kernels).
STATUS_OK = 0
STATUS_NONFINITE = 2
STATUS_NOT_POSDEF = 3
STATUS_NO_MEMORY = 4

LOG_2PI = math.log(2.0 * math.pi)

#: Covariance steps repeating one of the RING previous ones (a fixed point or short cycle of the Riccati
#: recursions in floating point) are copied instead of recomputed; same value in src_cython/chain.pyx.
RING = 8

#: Doubles of scratch one sequence needs in the scalar kernels (five rings).
SCALAR_WORKSPACE = 5 * RING


def workspace_size(d: int, p: int) -> int:
    """Doubles of scratch one sequence needs in the general (d, p) kernels (Cython, Numba, CUDA)."""
    return (9 + 2 * RING) * d * d + (4 + RING) * p * d + RING * p * p + 3 * d + p + RING


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
