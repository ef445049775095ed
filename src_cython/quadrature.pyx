# cython: language_level=3
"""Expected log-likelihoods under Gaussian factors, with gradients (avicore._cy.quadrature).

The same formulas as avicore/kernels/quadrature.py (see its docstring): closed forms for the Gaussian and
Poisson-log likelihoods, Gauss–Hermite quadrature with analytic g', g'' otherwise. Points are independent: one
prange over them (static schedule where every point costs the same), each thread keeping three scalar accumulators.
Bernoulli-logit, the hot case, runs eight points per call of a vectorised block kernel (_quadrature_simd.h:
branch-free polynomial exp and log1p in 4-wide vectors; each point still sums its nodes in order), with the
scalar kernel for the last N mod 8 points.
"""

from cython.parallel cimport prange
from libc.math cimport erfc, exp, fabs, fmax, log, log1p, sqrt, INFINITY

cdef extern from "_quadrature_simd.h" nogil:
    # 1 when the compiler has GCC/Clang vector extensions (then the logit kernel runs eight points per call)
    int AVICORE_HAVE_VECTOR_EXT
    void avq_logit_block8(const double* y, const double* mean, const double* var, const double* nodes,
                          const double* weights, Py_ssize_t K, double* value, double* grad_mean,
                          double* grad_var) noexcept

# Likelihood codes (same values as avicore/gp/likelihoods.py).
cdef enum:
    CODE_GAUSSIAN = 0
    CODE_POISSON = 1
    CODE_BERNOULLI_LOGIT = 2
    CODE_BERNOULLI_PROBIT = 3
    CODE_STUDENT_T = 4

cdef double INV_SQRT2 = 0.7071067811865476
cdef double INV_SQRT_2PI = 0.3989422804014327
cdef double HALF_LOG_2PI = 0.9189385332046728
cdef double LOG_DBL_MAX = 709.782712893384
cdef double PROBIT_SWITCH = -5.0
cdef int MILLS_DEPTH = 30


ctypedef struct Terms:
    double value      # E[g]
    double grad_mean  # E[g']
    double grad_var   # ½ E[g'']


cdef inline void _probit_terms(double u, double* log_cdf, double* lam, double* c) noexcept nogil:
    """log Φ(u), λ(u) = φ(u)/Φ(u) and c(u) = λ(u) + u (see the Python module for the three regimes)."""
    cdef double q, cdf, x, t
    cdef int k
    if u >= 0.0:
        q = 0.5 * erfc(u * INV_SQRT2)
        lam[0] = exp(-0.5 * u * u) * INV_SQRT_2PI / (1.0 - q)
        log_cdf[0] = log1p(-q)
        c[0] = lam[0] + u
    elif u > PROBIT_SWITCH:
        cdf = 0.5 * erfc(-u * INV_SQRT2)
        lam[0] = exp(-0.5 * u * u) * INV_SQRT_2PI / cdf
        log_cdf[0] = log(cdf)
        c[0] = lam[0] + u
    else:
        x = -u
        t = 0.0
        for k in range(MILLS_DEPTH, 1, -1):
            t = k / (x + t)
        c[0] = 1.0 / (x + t)
        lam[0] = x + c[0]
        log_cdf[0] = -0.5 * x * x - HALF_LOG_2PI - log(lam[0])


cdef inline Terms _logit_point(double y, double m, double v, const double* nodes, const double* weights,
                              Py_ssize_t K) noexcept nogil:
    cdef double s = 2.0 * y - 1.0
    cdef double sm = s * m
    cdef double ssd = s * sqrt(v)
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0
    cdef double u, e, r, w, sel
    cdef Py_ssize_t i
    for i in range(K):
        u = sm + ssd * nodes[i]
        e = exp(-fabs(u))
        r = 1.0 / (1.0 + e)
        w = weights[i]
        sel = e if u >= 0.0 else 1.0
        a0 = a0 - w * (fmax(-u, 0.0) + log1p(e))
        a1 = a1 + w * sel * r
        a2 = a2 + w * e * r * r
    cdef Terms t
    t.value = a0
    t.grad_mean = s * a1
    t.grad_var = -0.5 * a2
    return t


cdef inline Terms _probit_point(double y, double m, double v, const double* nodes, const double* weights,
                               Py_ssize_t K) noexcept nogil:
    cdef double s = 2.0 * y - 1.0
    cdef double sd = sqrt(v)
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0
    cdef double log_cdf, lam, c, w
    cdef Py_ssize_t i
    for i in range(K):
        _probit_terms(s * (m + sd * nodes[i]), &log_cdf, &lam, &c)
        w = weights[i]
        a0 = a0 + w * log_cdf
        a1 = a1 + w * lam
        a2 = a2 + w * lam * c
    cdef Terms t
    t.value = a0
    t.grad_mean = s * a1
    t.grad_var = -0.5 * a2
    return t


cdef inline Terms _student_t_point(double y, double m, double v, const double* nodes, const double* weights,
                                  Py_ssize_t K, double log_norm, double a, double nu1) noexcept nogil:
    cdef double sd = sqrt(v)
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0
    cdef double r, r2, d, w
    cdef Py_ssize_t i
    for i in range(K):
        r = y - (m + sd * nodes[i])
        r2 = r * r
        d = a + r2
        w = weights[i]
        a0 = a0 + w * log1p(r2 / a)
        a1 = a1 + w * r / d
        a2 = a2 + w * (r2 - a) / (d * d)
    cdef Terms t
    t.value = log_norm - 0.5 * nu1 * a0
    t.grad_mean = nu1 * a1
    t.grad_var = 0.5 * nu1 * a2
    return t


def cy_expected_log_lik(int code, const double[::1] params, const double[::1] y, const double[::1] mean,
                        const double[::1] var, const double[::1] nodes, const double[::1] weights,
                        double[::1] value, double[::1] grad_mean, double[::1] grad_var, int num_threads):
    """Fill value, grad_mean, grad_var (each (N,)) for likelihood ``code``; inputs validated by the caller."""
    cdef Py_ssize_t N = y.shape[0]
    cdef Py_ssize_t K = nodes.shape[0]
    cdef Py_ssize_t n, b, n_blocks
    cdef double p0 = params[0], p1 = params[1], p2 = params[2]
    cdef double r, z, rate
    cdef Terms t
    cdef const double* x_ptr = &nodes[0]
    cdef const double* w_ptr = &weights[0]
    if N == 0:
        return
    cdef const double* y_ptr = &y[0]
    cdef const double* m_ptr = &mean[0]
    cdef const double* v_ptr = &var[0]
    cdef double* val_ptr = &value[0]
    cdef double* gm_ptr = &grad_mean[0]
    cdef double* gv_ptr = &grad_var[0]
    with nogil:
        if code == CODE_GAUSSIAN:
            for n in prange(N, schedule="static", num_threads=num_threads):
                r = y[n] - mean[n]
                value[n] = p0 - 0.5 * (r * r + var[n]) * p1
                grad_mean[n] = r * p1
                grad_var[n] = -0.5 * p1
        elif code == CODE_POISSON:
            for n in prange(N, schedule="static", num_threads=num_threads):
                z = mean[n] + 0.5 * var[n]
                rate = exp(z) if z <= LOG_DBL_MAX else INFINITY
                value[n] = y[n] * mean[n] - rate
                grad_mean[n] = y[n] - rate
                grad_var[n] = -0.5 * rate
        elif code == CODE_BERNOULLI_LOGIT:
            n_blocks = N // 8 if AVICORE_HAVE_VECTOR_EXT else 0
            for b in prange(n_blocks, schedule="static", num_threads=num_threads):
                avq_logit_block8(y_ptr + 8 * b, m_ptr + 8 * b, v_ptr + 8 * b, x_ptr, w_ptr, K,
                                 val_ptr + 8 * b, gm_ptr + 8 * b, gv_ptr + 8 * b)
            for n in range(8 * n_blocks, N):
                t = _logit_point(y[n], mean[n], var[n], x_ptr, w_ptr, K)
                value[n] = t.value
                grad_mean[n] = t.grad_mean
                grad_var[n] = t.grad_var
        elif code == CODE_BERNOULLI_PROBIT:
            for n in prange(N, schedule="dynamic", num_threads=num_threads):
                t = _probit_point(y[n], mean[n], var[n], x_ptr, w_ptr, K)
                value[n] = t.value
                grad_mean[n] = t.grad_mean
                grad_var[n] = t.grad_var
        elif code == CODE_STUDENT_T:
            for n in prange(N, schedule="static", num_threads=num_threads):
                t = _student_t_point(y[n], mean[n], var[n], x_ptr, w_ptr, K, p0, p1, p2)
                value[n] = t.value
                grad_mean[n] = t.grad_mean
                grad_var[n] = t.grad_var
