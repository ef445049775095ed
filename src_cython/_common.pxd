# Shared inline nogil helpers for avicore's Cython kernels.
from libc.math cimport exp, log, INFINITY

# Status codes returned by noexcept nogil cores; the Python dispatcher maps them to exceptions/warnings.
cdef enum Status:
    STATUS_OK = 0
    STATUS_IMPOSSIBLE = 1      # a sequence/point has probability zero (log p = -inf)
    STATUS_NONFINITE = 2       # a non-finite value appeared where valid input cannot produce one


cdef inline double logsumexp_vec(const double* v, Py_ssize_t n) noexcept nogil:
    """log(sum(exp(v))) for n >= 1 values; -inf when every value is -inf."""
    cdef Py_ssize_t i
    cdef double m = v[0]
    cdef double s = 0.0
    for i in range(1, n):
        if v[i] > m:
            m = v[i]
    if m == -INFINITY:
        return -INFINITY
    for i in range(n):
        s += exp(v[i] - m)
    return m + log(s)
