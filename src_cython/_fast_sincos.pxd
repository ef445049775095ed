# Branch-free sin and cos of one argument, inlined (libm's sin and cos are two calls per element and dominate the
# nonlinear model's fused pass).
#
# x = k·π/2 + r with k = round(2x/π) and a three-part Cody–Waite split of π/2 (the first part has 33 significant
# bits, so k·PIO2_1 is exact for |k| < 2²⁰), |r| ≤ π/4; sin r and cos r by their Taylor polynomials to r¹⁷ and r¹⁸
# (truncation below 1e-19); the quadrant k mod 4 picks and signs them. Within a few ulp of libm for |x| ≤ 1e5;
# fast_sincos_checked falls back to libm outside that range (and for NaN/inf).
from libc.math cimport cos, sin
from libc.stdint cimport uint64_t
from libc.string cimport memcpy


cdef inline void fast_sincos(double x, double* s_out, double* c_out) noexcept nogil:
    """sin x and cos x for |x| ≤ 1e5 (undefined outside)."""
    cdef double t = x * 0.63661977236758134308 + 6755399441055744.0  # 1.5·2⁵²: rounds 2x/π into the low bits
    cdef double kf = t - 6755399441055744.0
    cdef double r = ((x - kf * 1.57079632673412561417e+00) - kf * 6.07710050630396597660e-11) \
        - kf * 2.02226624879595063154e-21
    cdef double r2 = r * r
    cdef double ps, pc
    cdef uint64_t bits
    cdef int q
    cdef double s, c, sign_s, sign_c, swap
    # Horner in r² with alternating signs written out: sin r = r (1 − r²/3! + r⁴/5! − … + r¹⁶/17!)
    ps = 1.0 / 355687428096000.0
    ps = ps * r2 - 1.0 / 1307674368000.0
    ps = ps * r2 + 1.0 / 6227020800.0
    ps = ps * r2 - 1.0 / 39916800.0
    ps = ps * r2 + 1.0 / 362880.0
    ps = ps * r2 - 1.0 / 5040.0
    ps = ps * r2 + 1.0 / 120.0
    ps = ps * r2 - 1.0 / 6.0
    s = r + r * r2 * ps
    # cos r = 1 − r²/2! + r⁴/4! − … + r¹⁸/18!
    pc = -1.0 / 6402373705728000.0
    pc = pc * r2 + 1.0 / 20922789888000.0
    pc = pc * r2 - 1.0 / 87178291200.0
    pc = pc * r2 + 1.0 / 479001600.0
    pc = pc * r2 - 1.0 / 3628800.0
    pc = pc * r2 + 1.0 / 40320.0
    pc = pc * r2 - 1.0 / 720.0
    pc = pc * r2 + 1.0 / 24.0
    pc = pc * r2 - 0.5
    c = 1.0 + r2 * pc
    memcpy(&bits, &t, 8)
    q = <int>(bits & 3)
    sign_s = 1.0 - 2.0 * <double>((q >> 1) & 1)
    sign_c = 1.0 - 2.0 * <double>(((q + 1) >> 1) & 1)
    # Selects as exact arithmetic (swap is 0 or 1, |s|, |c| ≤ 1), not branches, so loops over fast_sincos vectorise.
    swap = <double>(q & 1)
    s_out[0] = sign_s * (s * (1.0 - swap) + c * swap)
    c_out[0] = sign_c * (c * (1.0 - swap) + s * swap)


cdef inline void fast_sincos_checked(double x, double* s_out, double* c_out) noexcept nogil:
    """sin x and cos x for every x (libm outside |x| ≤ 1e5 and for NaN/inf)."""
    if -1e5 <= x <= 1e5:
        fast_sincos(x, s_out, c_out)
    else:
        s_out[0] = sin(x)
        c_out[0] = cos(x)
