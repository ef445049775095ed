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

from _adam cimport adam_apply, adam_grad

# Below this many elements the update runs on one thread (OpenMP start-up costs more than it saves).
cdef Py_ssize_t _PARALLEL_MIN = 1 << 15


def cy_adam_dense(const double[::1] p, const double[::1] g, double[::1] m, double[::1] v, double[::1] p_out,
                  double step, double beta1, double beta2, double sqrt_bc2, double eps, double gscale,
                  double goffset, int num_threads):
    """Dense update of every element; ``p_out`` may be ``p`` (in place). Returns the count of non-finite ĝ."""
    cdef Py_ssize_t i, n = p.shape[0]
    cdef Py_ssize_t bad = 0
    cdef double gi
    cdef double c1 = 1.0 - beta1
    cdef double c2 = 1.0 - beta2
    cdef int threads = num_threads if n >= _PARALLEL_MIN else 1
    with nogil:
        for i in prange(n, schedule="static", num_threads=threads):
            gi = adam_grad(g[i], gscale, goffset)
            if not isfinite(gi):
                bad += 1
            p_out[i] = adam_apply(p[i], gi, &m[i], &v[i], step, beta1, c1, beta2, c2, sqrt_bc2, eps)
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
    cdef double c1 = 1.0 - beta1
    cdef double c2 = 1.0 - beta2
    cdef int threads = num_threads if n_rows * k >= _PARALLEL_MIN else 1
    with nogil:
        for b in prange(n_rows, schedule="static", num_threads=threads):
            r = rows[b]
            t = <double> counts[r]
            step = lr / (1.0 - pow(beta1, t))
            sqrt_bc2 = sqrt(1.0 - pow(beta2, t))
            for j in range(k):
                gi = adam_grad(g[b, j], gscale, goffset)
                if not isfinite(gi):
                    bad += 1
                p[r, j] = adam_apply(p[r, j], gi, &m[r, j], &v[r, j], step, beta1, c1, beta2, c2, sqrt_bc2, eps)
    return bad
