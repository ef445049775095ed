# A branch-free exp that compilers can vectorise (libm's exp is a call per element).
#
# exp(x) = 2^k · e^r with k = round(x / ln 2), r = x − k ln 2 (Cody–Waite split of ln 2, |r| ≤ ln 2 / 2) and e^r by
# its degree-13 Taylor polynomial (truncation < 2e-17 relative); 2^k is assembled in the exponent bits. Accurate to
# a few ulp for −708 ≤ x ≤ 709; outside that range (and for NaN) call libm's exp instead — see fast_exp_checked.
from libc.math cimport exp
from libc.stdint cimport uint64_t
from libc.string cimport memcpy


cdef inline double fast_exp(double x) noexcept nogil:
    """e^x for −708 ≤ x ≤ 709 (undefined outside)."""
    cdef double t = x * 1.4426950408889634 + 6755399441055744.0  # 1.5·2⁵²: rounds x/ln2 into the low bits
    cdef double kf = t - 6755399441055744.0
    cdef double r = (x - kf * 0.6931471803691238) - kf * 1.9082149292705877e-10
    cdef double p = 1.0 / 6227020800.0
    cdef uint64_t bits
    cdef double two_k
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    memcpy(&bits, &t, 8)
    bits = (bits + 1023) << 52
    memcpy(&two_k, &bits, 8)
    return p * two_k


cdef inline double fast_exp_checked(double x) noexcept nogil:
    """e^x for every x (libm outside [−708, 709] and for NaN)."""
    if -708.0 <= x <= 709.0:
        return fast_exp(x)
    return exp(x)
