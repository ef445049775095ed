# cython: language_level=3
"""Emission log-likelihood kernels for avicore.emissions (avicore._cy.emissions).

Called only by avicore/emissions.py with validated, C-contiguous float64 arrays. Rows are independent: prange over
blocks of rows, static schedule (every block costs the same).
"""

from cython.parallel cimport prange

cdef enum:
    ROW_BLOCK = 1024


def cy_gaussian_diag(const double[:, ::1] X, const double[:, ::1] means_t, const double[:, ::1] half_prec_t,
                     const double[::1] const_term, double[:, ::1] out, int num_threads):
    """out[t, k] = const_term[k] - Σ_d (X[t, d] - means_t[d, k])² half_prec_t[d, k].

    ``means_t`` and ``half_prec_t`` (= precisions / 2) are transposed to (n_features, n_states) so that the
    innermost loop runs over states, contiguous and vectorisable.
    """
    cdef Py_ssize_t n = X.shape[0], D = X.shape[1], K = means_t.shape[1]
    cdef Py_ssize_t n_blocks = (n + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t blk, t, k, d, t_end
    cdef double x, diff
    cdef double* row
    cdef const double* m
    cdef const double* h
    for blk in prange(n_blocks, nogil=True, schedule="static", num_threads=num_threads):
        t_end = min((blk + 1) * ROW_BLOCK, n)
        for t in range(blk * ROW_BLOCK, t_end):
            row = &out[t, 0]
            for k in range(K):
                row[k] = const_term[k]
            for d in range(D):
                x = X[t, d]
                m = &means_t[d, 0]
                h = &half_prec_t[d, 0]
                for k in range(K):
                    diff = x - m[k]
                    row[k] = row[k] - diff * diff * h[k]
