# cython: language_level=3
"""Adam's element update (_adam.h), shared by optim.pyx and the fused F-VI pass of elbo.pyx: one formula, the same
bits in both."""

cdef extern from "_adam.h" nogil:
    ctypedef struct avicore_adam_coef:
        double step, beta1, beta2, sqrt_bc2, eps

    double adam_apply(double p, double gi, double* m, double* v, double step, double beta1, double beta2,
                      double sqrt_bc2, double eps)
    Py_ssize_t adam_span(const double* p, const double* g, double* m, double* v, double* p_out, Py_ssize_t n,
                         double gscale, double goffset, const avicore_adam_coef* c)
