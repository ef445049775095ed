# cython: language_level=3
"""Kalman filter + RTS smoother for time-invariant linear-Gaussian chains (avicore._cy.chain).

The same operations, in the same order, as avicore/kernels/chain.py (see its docstring for the maths). Small-matrix
Cholesky factorisations, triangular solves and products are written out by hand: no BLAS inside nogil. Sequences run
in parallel (prange, dynamic schedule); each thread owns one malloc'ed workspace.
"""

from cython.parallel cimport parallel, prange
from libc.math cimport isfinite, log, sqrt
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

# Status codes (same values as avicore/kernels/chain.py).
cdef enum:
    CHAIN_OK = 0
    CHAIN_NONFINITE = 2
    CHAIN_NOT_POSDEF = 3
    CHAIN_NO_MEMORY = 4

cdef double LOG_2PI = 1.8378770664093453
# Covariance steps repeating one of the RING previous ones (fixed point or short cycle) are copied, not recomputed.
cdef enum:
    RING = 8


# ----------------------------------------------------------------------------------------------------------------
# small row-major matrix helpers
# ----------------------------------------------------------------------------------------------------------------

cdef inline int _chol(double* a, Py_ssize_t n) noexcept nogil:
    """In-place lower Cholesky factor; 0 on success, 1 if not positive-definite."""
    cdef Py_ssize_t i, j, k
    cdef double s, ljj
    for j in range(n):
        s = a[j * n + j]
        for k in range(j):
            s -= a[j * n + k] * a[j * n + k]
        if not s > 0.0:
            return 1
        ljj = sqrt(s)
        a[j * n + j] = ljj
        for i in range(j + 1, n):
            s = a[i * n + j]
            for k in range(j):
                s -= a[i * n + k] * a[j * n + k]
            a[i * n + j] = s / ljj
    return 0


cdef inline void _solve_lower(const double* L, double* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """b ← L⁻¹ b (b is n×m)."""
    cdef Py_ssize_t c, i, k
    cdef double s
    for c in range(m):
        for i in range(n):
            s = b[i * m + c]
            for k in range(i):
                s -= L[i * n + k] * b[k * m + c]
            b[i * m + c] = s / L[i * n + i]


cdef inline void _solve_lower_t(const double* L, double* b, Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    """b ← L⁻ᵀ b (b is n×m)."""
    cdef Py_ssize_t c, i, k
    cdef double s
    for c in range(m):
        for i in range(n - 1, -1, -1):
            s = b[i * m + c]
            for k in range(i + 1, n):
                s -= L[k * n + i] * b[k * m + c]
            b[i * m + c] = s / L[i * n + i]


cdef inline void _matmul(const double* a, const double* b, double* c, Py_ssize_t n, Py_ssize_t k,
                         Py_ssize_t m) noexcept nogil:
    """c = a b for a (n×k), b (k×m)."""
    cdef Py_ssize_t i, j, l
    cdef double s
    for i in range(n):
        for j in range(m):
            s = 0.0
            for l in range(k):
                s += a[i * k + l] * b[l * m + j]
            c[i * m + j] = s


cdef inline void _sym_abt_plus(const double* a, const double* b, const double* e, double* c, Py_ssize_t n,
                               Py_ssize_t k) noexcept nogil:
    """c = a bᵀ + e (n×n; a, b n×k) on the lower triangle, mirrored."""
    cdef Py_ssize_t i, j, l
    cdef double s
    for i in range(n):
        for j in range(i + 1):
            s = e[i * n + j]
            for l in range(k):
                s += a[i * k + l] * b[j * k + l]
            c[i * n + j] = s
            c[j * n + i] = s


cdef inline void _sym_two_abt(const double* a, const double* b, Py_ssize_t k1, const double* f, const double* g,
                              Py_ssize_t k2, double* c, Py_ssize_t n) noexcept nogil:
    """c = a bᵀ + f gᵀ (n×n; a, b n×k1; f, g n×k2) on the lower triangle, mirrored."""
    cdef Py_ssize_t i, j, l
    cdef double s
    for i in range(n):
        for j in range(i + 1):
            s = 0.0
            for l in range(k1):
                s += a[i * k1 + l] * b[j * k1 + l]
            for l in range(k2):
                s += f[i * k2 + l] * g[j * k2 + l]
            c[i * n + j] = s
            c[j * n + i] = s


cdef inline Py_ssize_t _workspace_size(Py_ssize_t d, Py_ssize_t p) noexcept nogil:
    return (9 + 2 * RING) * d * d + (4 + RING) * p * d + RING * p * p + 3 * d + p + RING


cdef inline bint _same(const double* a, const double* b, Py_ssize_t n) noexcept nogil:
    """Bitwise equality of n doubles."""
    return memcmp(a, b, n * sizeof(double)) == 0


cdef inline void _copy(const double* src, double* dst, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = src[i]


# ----------------------------------------------------------------------------------------------------------------
# general (d, p) sequence
# ----------------------------------------------------------------------------------------------------------------

cdef int _smoother_one(const double* x, Py_ssize_t T, Py_ssize_t d, Py_ssize_t p, const double* A,
                       const double* Q, const double* C, const double* R, const double* m0, const double* P0,
                       double* means, double* covs, double* cross, double* w, double* log_ev,
                       bint reuse) noexcept nogil:
    """One sequence: x (T×p), outputs means (T×d), covs/cross (T×d×d); w holds _workspace_size(d, p) doubles.

    The covariance recursions do not depend on x and, in floating point, end in a fixed point or a short cycle. A
    step whose covariance inputs are bitwise equal to those of a step at most RING before copies that step's
    outputs instead of recomputing them, so the results are bitwise those of the full computation. Rings of RING
    slots (index t % RING) keep what the copies need: the innovation factor, W and log det S (forward), G_t and
    P_t (backward).
    """
    cdef Py_ssize_t dd = d * d, pd = p * d, pp = p * p
    cdef double* mp = w
    cdef double* Pp = mp + d
    cdef double* AP = Pp + dd
    cdef double* L = AP + dd
    cdef double* M = L + dd
    cdef double* T1 = M + dd
    cdef double* T2 = T1 + dd
    cdef double* T3 = T2 + dd
    cdef double* G = T3 + dd
    cdef double* G_ring = G + dd              # RING slots
    cdef double* Pf_ring = G_ring + RING * dd  # RING slots
    cdef double* CP = Pf_ring + RING * dd
    cdef double* KT = CP + pd
    cdef double* K = KT + pd
    cdef double* KR = K + pd
    cdef double* W_ring = KR + pd              # RING slots
    cdef double* S_ring = W_ring + RING * pd   # RING slots
    cdef double* u = S_ring + RING * pp
    cdef double* v = u + p
    cdef double* v2 = v + d
    cdef double* logdet_ring = v2 + d          # RING slots: Σ log diag of the factor of S
    cdef double* S
    cdef double* W
    cdef Py_ssize_t t, i, j, k, slot, back, src, period
    cdef double s, step, ll = 0.0

    for t in range(T):
        slot = t % RING
        S = S_ring + slot * pp
        W = W_ring + slot * pd
        back = 0
        if reuse:
            for period in range(1, min(RING, t - 1) + 1):                 # step t − period must have t > 0
                if _same(covs + (t - 1) * dd, covs + (t - 1 - period) * dd, dd):
                    back = period
                    break
        if t == 0:
            for i in range(d):
                mp[i] = m0[i]
            for i in range(dd):
                Pp[i] = P0[i]
        else:
            _matmul(A, means + (t - 1) * d, mp, d, d, 1)                  # m⁻ = A m_{t-1}
        if back:                                                          # step t repeats step t - back
            _copy(cross + (t - 1 - back) * dd, cross + (t - 1) * dd, dd)
            _copy(covs + (t - back) * dd, covs + t * dd, dd)
            src = (t - back) % RING
            if src != slot:
                _copy(S_ring + src * pp, S, pp)
                _copy(W_ring + src * pd, W, pd)
                logdet_ring[slot] = logdet_ring[src]
        else:
            if t > 0:
                _matmul(A, covs + (t - 1) * dd, AP, d, d, d)              # AP = A P_{t-1}
                _sym_abt_plus(AP, A, Q, Pp, d, d)                         # P⁻ = AP Aᵀ + Q
                _copy(Pp, L, dd)
                if _chol(L, d) != 0:
                    return CHAIN_NOT_POSDEF
                _solve_lower(L, AP, d, d)                                 # AP ← P⁻⁻¹ AP
                _solve_lower_t(L, AP, d, d)
                for i in range(d):                                        # G_{t-1} = (P⁻⁻¹ AP)ᵀ
                    for j in range(d):
                        cross[(t - 1) * dd + i * d + j] = AP[j * d + i]
            _matmul(C, Pp, CP, p, d, d)                                   # CP = C P⁻
            _sym_abt_plus(CP, C, R, S, p, d)                              # S = CP Cᵀ + R
            if _chol(S, p) != 0:
                return CHAIN_NOT_POSDEF
            s = 0.0
            for i in range(p):
                s += log(S[i * p + i])
            logdet_ring[slot] = s
            _copy(CP, W, pd)
            _solve_lower(S, W, p, d)                                      # W = L⁻¹ CP
            _copy(W, KT, pd)
            _solve_lower_t(S, KT, p, d)                                   # Kᵀ = L⁻ᵀ W
            for i in range(d):
                for k in range(p):
                    K[i * p + k] = KT[k * d + i]
            for i in range(d):                                            # M = I − K C
                for j in range(d):
                    s = 1.0 if i == j else 0.0
                    for k in range(p):
                        s -= K[i * p + k] * C[k * d + j]
                    M[i * d + j] = s
            _matmul(M, Pp, T1, d, d, d)                                   # T1 = M P⁻
            _matmul(K, R, KR, d, p, p)                                    # KR = K R
            _sym_two_abt(T1, M, d, KR, K, p, covs + t * dd, d)            # P = T1 Mᵀ + KR Kᵀ
        for i in range(p):                                                # u = L⁻¹ (x_t − C m⁻)
            s = x[t * p + i]
            for k in range(d):
                s -= C[i * d + k] * mp[k]
            u[i] = s
        _solve_lower(S, u, p, 1)
        step = 0.0
        for i in range(p):
            step += u[i] * u[i]
        ll += -0.5 * p * LOG_2PI - logdet_ring[slot] - 0.5 * step
        for i in range(d):                                                # m = m⁻ + Wᵀ u
            s = mp[i]
            for k in range(p):
                s += W[k * d + i] * u[k]
            means[t * d + i] = s
    log_ev[0] = ll
    if not isfinite(ll):
        return CHAIN_NONFINITE

    for i in range(dd):
        cross[(T - 1) * dd + i] = 0.0
    for t in range(T - 2, -1, -1):
        slot = t % RING
        _copy(cross + t * dd, G, dd)                                      # G_t (forward gain)
        _matmul(A, means + t * d, v, d, d, 1)                             # v = A m_t
        for i in range(d):
            v[i] = means[(t + 1) * d + i] - v[i]
        _matmul(G, v, v2, d, d, 1)
        for i in range(d):
            means[t * d + i] += v2[i]                                     # m_t += G (m_{t+1}ˢ − A m_t)
        back = 0
        if reuse:
            for period in range(1, min(RING, T - 2 - t) + 1):            # step t + period must exist
                src = (t + period) % RING
                if (_same(G, G_ring + src * dd, dd) and _same(covs + t * dd, Pf_ring + src * dd, dd)
                        and _same(covs + (t + 1) * dd, covs + (t + 1 + period) * dd, dd)):
                    back = period
                    break
        _copy(G, G_ring + slot * dd, dd)
        _copy(covs + t * dd, Pf_ring + slot * dd, dd)
        if back:                                                          # step t repeats step t + back
            _copy(covs + (t + back) * dd, covs + t * dd, dd)
            _copy(cross + (t + back) * dd, cross + t * dd, dd)
            continue
        for i in range(d):                                                # M = I − G A
            for j in range(d):
                s = 1.0 if i == j else 0.0
                for k in range(d):
                    s -= G[i * d + k] * A[k * d + j]
                M[i * d + j] = s
        _matmul(M, covs + t * dd, T1, d, d, d)                            # T1 = M P_t
        for i in range(dd):
            T2[i] = Q[i] + covs[(t + 1) * dd + i]                         # T2 = Q + P_{t+1}ˢ
        _matmul(G, T2, T3, d, d, d)                                       # T3 = G T2
        _sym_two_abt(T1, M, d, T3, G, d, covs + t * dd, d)
        for i in range(d):                                                # cross = P_{t+1}ˢ Gᵀ
            for j in range(d):
                s = 0.0
                for k in range(d):
                    s += covs[(t + 1) * dd + i * d + k] * G[j * d + k]
                cross[t * dd + i * d + j] = s
    return CHAIN_OK


def cy_smoother(const double[:, ::1] x, const int64_t[::1] offsets, const double[:, ::1] A,
                const double[:, ::1] Q, const double[:, ::1] C, const double[:, ::1] R, const double[::1] m0,
                const double[:, ::1] P0, double[:, ::1] means, double[:, :, ::1] covs,
                double[:, :, ::1] cross, double[::1] log_evidence, int32_t[::1] status, int num_threads,
                bint reuse=True):
    """General (d, p) smoother over the sequences of ``offsets``; inputs validated by avicore.chain.

    ``reuse=False`` turns off the copying of repeated covariance steps (for tests: results must not change).
    """
    cdef Py_ssize_t n_seq = offsets.shape[0] - 1
    cdef Py_ssize_t d = A.shape[0]
    cdef Py_ssize_t p = C.shape[0]
    cdef Py_ssize_t dd = d * d
    cdef Py_ssize_t ws = _workspace_size(d, p)
    cdef Py_ssize_t i, t0, T
    cdef double* w
    cdef const double* xp = &x[0, 0]
    cdef const double* Ap = &A[0, 0]
    cdef const double* Qp = &Q[0, 0]
    cdef const double* Cp = &C[0, 0]
    cdef const double* Rp = &R[0, 0]
    cdef const double* m0p = &m0[0]
    cdef const double* P0p = &P0[0, 0]
    cdef double* mp = &means[0, 0]
    cdef double* cp = &covs[0, 0, 0]
    cdef double* xc = &cross[0, 0, 0]
    if n_seq < 1:
        return
    w = NULL  # firstprivate in the parallel block: give it a defined value
    with nogil, parallel(num_threads=num_threads):
        w = <double*> malloc(ws * sizeof(double))
        for i in prange(n_seq, schedule="dynamic"):
            if w == NULL:
                status[i] = CHAIN_NO_MEMORY
                continue
            t0 = offsets[i]
            T = offsets[i + 1] - t0
            status[i] = _smoother_one(xp + t0 * p, T, d, p, Ap, Qp, Cp, Rp, m0p, P0p, mp + t0 * d,
                                      cp + t0 * dd, xc + t0 * dd, w, &log_evidence[i], reuse)
        free(w)


# ----------------------------------------------------------------------------------------------------------------
# scalar (d = p = 1) sequence: the benchmark case
# ----------------------------------------------------------------------------------------------------------------

cdef int _smoother_scalar_one(const double* x, Py_ssize_t T, double a, double q, double c, double r, double m0,
                              double p0, double* means, double* covs, double* cross, double* log_ev,
                              bint reuse) noexcept nogil:
    """One scalar sequence, with the same reuse of repeated variance steps as the general core."""
    cdef Py_ssize_t t, slot, back, src, period
    cdef double mp, pp, mf = m0, pf = p0, s, e, ll = 0.0, ms, ps, pf_t, inv_pp, g
    cdef double gain[RING]
    cdef double inv_s[RING]
    cdef double log_s[RING]
    cdef double pf_ring[RING]
    cdef double g_ring[RING]
    for t in range(T):
        slot = t % RING
        back = 0
        if reuse:
            for period in range(1, min(RING, t - 1) + 1):
                if covs[t - 1] == covs[t - 1 - period]:
                    back = period
                    break
        mp = m0 if t == 0 else a * mf
        if back:
            pf = covs[t - back]
            src = (t - back) % RING
            gain[slot] = gain[src]
            inv_s[slot] = inv_s[src]
            log_s[slot] = log_s[src]
        else:
            pp = p0 if t == 0 else a * a * pf + q
            s = c * c * pp + r
            inv_s[slot] = 1.0 / s
            gain[slot] = pp * c * inv_s[slot]
            pf = pp * r * inv_s[slot]
            log_s[slot] = log(s)
        e = x[t] - c * mp
        mf = mp + gain[slot] * e
        ll -= 0.5 * (log_s[slot] + e * e * inv_s[slot])
        means[t] = mf
        covs[t] = pf
    ll -= 0.5 * T * LOG_2PI
    log_ev[0] = ll
    if not isfinite(ll):
        return CHAIN_NONFINITE
    ms = mf
    cross[T - 1] = 0.0
    for t in range(T - 2, -1, -1):
        slot = t % RING
        mf = means[t]
        pf_t = covs[t]
        back = 0
        if reuse:
            for period in range(1, min(RING, T - 2 - t) + 1):
                src = (t + period) % RING
                if pf_t == pf_ring[src] and covs[t + 1] == covs[t + 1 + period]:
                    back = period
                    break
        if back:
            g = g_ring[(t + back) % RING]
            covs[t] = covs[t + back]
            cross[t] = cross[t + back]
        else:
            ps = covs[t + 1]
            inv_pp = 1.0 / (a * a * pf_t + q)
            g = pf_t * a * inv_pp
            cross[t] = ps * g
            covs[t] = pf_t * q * inv_pp + g * g * ps
        pf_ring[slot] = pf_t
        g_ring[slot] = g
        ms = mf + g * (ms - a * mf)
        means[t] = ms
    return CHAIN_OK


def cy_smoother_scalar(const double[::1] x, const int64_t[::1] offsets, double a, double q, double c, double r,
                       double m0, double p0, double[::1] means, double[::1] covs, double[::1] cross,
                       double[::1] log_evidence, int32_t[::1] status, int num_threads, bint reuse=True):
    """Scalar smoother over the sequences of ``offsets`` (flat arrays); inputs validated by avicore.chain."""
    cdef Py_ssize_t n_seq = offsets.shape[0] - 1
    cdef Py_ssize_t i, t0
    cdef const double* xp = &x[0]
    cdef double* mp = &means[0]
    cdef double* cp = &covs[0]
    cdef double* xc = &cross[0]
    if n_seq < 1:
        return
    if n_seq == 1:
        with nogil:
            status[0] = _smoother_scalar_one(xp, offsets[1], a, q, c, r, m0, p0, mp, cp, xc, &log_evidence[0],
                                             reuse)
        return
    for i in prange(n_seq, nogil=True, schedule="dynamic", num_threads=num_threads):
        t0 = offsets[i]
        status[i] = _smoother_scalar_one(xp + t0, offsets[i + 1] - t0, a, q, c, r, m0, p0, mp + t0, cp + t0,
                                         xc + t0, &log_evidence[i], reuse)
