# A branch-free exp that compilers can vectorise (libm's exp is a call per element): src_cython/_simd_exp.h's.
#
# exp(x) = 2^k · e^r with k = round(x / ln 2), r = x − k ln 2 (Cody–Waite split of ln 2, |r| ≤ ln 2 / 2) and e^r by
# its degree-13 Taylor polynomial (truncation < 2e-17 relative); 2^k is assembled in the exponent bits. Accurate to
# a few ulp for −708 ≤ x ≤ 709; outside that range (and for NaN) call libm's exp instead — see fast_exp_checked.
from libc.math cimport exp


cdef extern from "_simd_exp.h" nogil:
    double avi_exp_poly(double x)  # avicore's one exp polynomial (also behind the HMM and quadrature vector exp)


cdef inline double fast_exp(double x) noexcept nogil:
    """e^x for −708 ≤ x ≤ 709 (undefined outside)."""
    return avi_exp_poly(x)


cdef inline double fast_exp_checked(double x) noexcept nogil:
    """e^x for every x (libm outside [−708, 709] and for NaN)."""
    if -708.0 <= x <= 709.0:
        return fast_exp(x)
    return exp(x)
