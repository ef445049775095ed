# cython: language_level=3
"""Fused Adam updates for the VI engine (avicore._cy.optim); the NumPy twins and the maths are in avicore/optim.py.

One pass over the parameters reads p, g, m, v and writes p_out, m, v (no temporaries): with
ĝ = gscale·g + goffset,

    m ← β₁ m + (1 − β₁) ĝ,    v ← β₂ v + (1 − β₂) ĝ²,    p_out = p + step · m / (√v / √(1 − β₂ᵗ) + ε)

where step = ±lr / (1 − β₁ᵗ) (the sign makes it ascent or descent). Elementwise, so the result does not depend on
the thread count. The row variant updates only the rows listed, each with its own step count t (lazy Adam for
per-observation parameters under minibatching). Both return how many ĝ were not finite (an integer reduction, so
also independent of the thread count); the caller discards the update when it is not 0.
"""

from cython.parallel cimport prange
from libc.math cimport isfinite, pow, sqrt
from libc.stdint cimport int64_t

from _adam cimport adam_apply, adam_span, avicore_adam_coef

# Below this many elements the update runs on one thread (OpenMP start-up costs more than it saves).
cdef Py_ssize_t _PARALLEL_MIN = 1 << 15
# Elements per span of the dense update (one thread's unit of work).
cdef Py_ssize_t _SPAN = 4096


def cy_adam_dense(const double[::1] p, const double[::1] g, double[::1] m, double[::1] v, double[::1] p_out,
                  double step, double beta1, double beta2, double sqrt_bc2, double eps, double gscale,
                  double goffset, int num_threads):
    """Dense update of every element; ``p_out`` may be ``p`` (in place). Returns the count of non-finite ĝ.

    Spans of _SPAN elements (adam_span of _adam.h, vectorised) spread over the threads."""
    cdef Py_ssize_t b, b0, nb, n = p.shape[0]
    cdef Py_ssize_t n_spans = (n + _SPAN - 1) // _SPAN
    cdef Py_ssize_t bad = 0
    cdef avicore_adam_coef coef
    coef.step, coef.beta1, coef.beta2, coef.sqrt_bc2, coef.eps = step, beta1, beta2, sqrt_bc2, eps
    cdef int threads = num_threads if n >= _PARALLEL_MIN else 1
    if n == 0:
        return 0
    cdef const double* pp = &p[0]
    cdef const double* pg = &g[0]
    cdef double* pm = &m[0]
    cdef double* pv = &v[0]
    cdef double* po = &p_out[0]
    with nogil:  # p_out may be p: adam_span reads each p[i] once, before writing p_out[i]
        for b in prange(n_spans, schedule="static", num_threads=threads):
            b0 = b * _SPAN
            nb = _SPAN if b0 + _SPAN <= n else n - b0
            bad += adam_span(pp + b0, pg + b0, pm + b0, pv + b0, po + b0, nb, gscale, goffset, &coef)
    return bad


def cy_adam_rows(double[:, ::1] p, const double[:, ::1] g, double[:, ::1] m, double[:, ::1] v,
                 const int64_t[::1] rows, const int64_t[::1] counts, double lr, double beta1, double beta2,
                 double eps, double gscale, double goffset, int num_threads):
    """In-place update of rows ``rows[b]`` of p, m, v with gradient row g[b] and step count counts[rows[b]].

    ``rows`` must be distinct and ``counts[rows[b]] >= 1`` (the caller increments the counts first). Returns the
    count of non-finite ĝ.
    """
    cdef Py_ssize_t b, j, r, n_rows = rows.shape[0], k = p.shape[1]
    cdef Py_ssize_t bad = 0
    cdef double gi, step, sqrt_bc2, t
    cdef int threads = num_threads if n_rows * k >= _PARALLEL_MIN else 1
    with nogil:
        for b in prange(n_rows, schedule="static", num_threads=threads):
            r = rows[b]
            t = <double> counts[r]
            step = lr / (1.0 - pow(beta1, t))
            sqrt_bc2 = sqrt(1.0 - pow(beta2, t))
            for j in range(k):
                gi = gscale * g[b, j] + goffset
                if not isfinite(gi):
                    bad += 1
                p[r, j] = adam_apply(p[r, j], gi, &m[r, j], &v[r, j], step, beta1, beta2, sqrt_bc2, eps)
    return bad
