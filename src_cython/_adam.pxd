# cython: language_level=3
"""One Adam element update, shared by the fused passes of optim.pyx and elbo.pyx (the maths: avicore/optim.py).

With ĝ = gscale·g + goffset (:func:`adam_grad`): m ← β₁m + (1 − β₁)ĝ, v ← β₂v + (1 − β₂)ĝ², and the new parameter
p + step · m / (√v / √(1 − β₂ᵗ) + ε) (:func:`adam_apply`). Both kernels inline these two functions, so the dense
step and the step fused into the ELBO pass compute the same bits.
"""

from libc.math cimport sqrt


cdef inline double adam_grad(double g, double gscale, double goffset) noexcept nogil:
    return gscale * g + goffset


cdef inline double adam_apply(double p, double gi, double* m, double* v, double step, double beta1, double c1,
                              double beta2, double c2, double sqrt_bc2, double eps) noexcept nogil:
    cdef double mi = beta1 * m[0] + c1 * gi
    cdef double vi = beta2 * v[0] + c2 * gi * gi
    m[0] = mi
    v[0] = vi
    return p + step * mi / (sqrt(vi) / sqrt_bc2 + eps)
