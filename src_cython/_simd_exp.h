/* avicore's one branch-free exp, shared by every Cython kernel that needs a vectorisable exp:
 * src_cython/_hmm_simd.h (HMM forward-backward), src_cython/_quadrature_simd.h (Bernoulli-logit Gauss-Hermite)
 * and src_cython/_fast_exp.pxd (the ELBO kernels, scalar, in loops the compiler vectorises).
 *
 * exp(x) = 2^n e^r with n = round(x / ln2) (the 1.5*2^52 rounding trick: n lands in the low mantissa bits),
 * r = x - n ln2 by Cody-Waite reduction (ln2 split as in fdlibm: n * AVI_LN2_HI is exact for |n| < 2^11, so
 * |r| <= ln2/2 to within an ulp), e^r by its degree-13 Taylor polynomial (truncation < 5e-18 relative), and 2^n
 * assembled in the exponent bits. Within 1.1 ulp of libm's exp on [-708, 709].
 *
 * Below -700: one behaviour everywhere.
 *   avi_exp_poly(x)     the polynomial alone, defined on [-708, 709] only (callers keep x in range; the ELBO
 *                       kernels call it on bounded arguments and use fast_exp_checked -> libm elsewhere).
 *   avi_exp_nonpos(v)   x <= 0, lane-wise: the polynomial on [-708, 0] and exactly 0 below -708 (and for -inf).
 *                       exp(-708) = 3.3e-307 is the smallest normal result it gives, so no lane goes through the
 *                       slow subnormal range; the true value of a flushed lane is < 3.4e-308 in absolute value.
 */
#ifndef AVICORE_SIMD_EXP_H
#define AVICORE_SIMD_EXP_H

#include <stdint.h>
#include <string.h>

#define AVI_LOG2E 1.4426950408889634
#define AVI_LN2_HI 0.6931471803691238        /* ln 2 split (fdlibm): n * AVI_LN2_HI is exact for |n| < 2^11 */
#define AVI_LN2_LO 1.9082149292705877e-10
#define AVI_ROUND_MAGIC 6755399441055744.0   /* 1.5 * 2^52: adding it rounds to an integer held in the low bits */
#define AVI_EXP_MIN (-708.0)

/* The Taylor polynomial of e^r, degree 13, by Horner; T is double or a vector of doubles. */
#define AVI_EXP_TAYLOR(T, p, r)                                                                                  \
    T p = (r) * (1.0 / 6227020800.0) + 1.0 / 479001600.0;                                                       \
    p = p * (r) + 1.0 / 39916800.0;                                                                              \
    p = p * (r) + 1.0 / 3628800.0;                                                                               \
    p = p * (r) + 1.0 / 362880.0;                                                                                \
    p = p * (r) + 1.0 / 40320.0;                                                                                 \
    p = p * (r) + 1.0 / 5040.0;                                                                                  \
    p = p * (r) + 1.0 / 720.0;                                                                                   \
    p = p * (r) + 1.0 / 120.0;                                                                                   \
    p = p * (r) + 1.0 / 24.0;                                                                                    \
    p = p * (r) + 1.0 / 6.0;                                                                                     \
    p = p * (r) + 0.5;                                                                                           \
    p = p * (r) + 1.0;                                                                                           \
    p = p * (r) + 1.0;

/* e^x for -708 <= x <= 709 (undefined outside). */
static inline double avi_exp_poly(double x) {
    double t = x * AVI_LOG2E + AVI_ROUND_MAGIC;
    double n = t - AVI_ROUND_MAGIC;
    double r = (x - n * AVI_LN2_HI) - n * AVI_LN2_LO;
    uint64_t bits;
    double two_n;
    AVI_EXP_TAYLOR(double, p, r)
    memcpy(&bits, &t, 8);
    bits = (bits + 1023) << 52;
    memcpy(&two_n, &bits, 8);
    return p * two_n;
}

#if defined(__GNUC__) || defined(__clang__)
/* The same vector types as _hmm_simd.h's avi_v4 / avi_i4 and _quadrature_simd.h's avq_v4d / avq_v4i (GCC and
   Clang give every 32-byte double / int64 vector typedef the same type). */
typedef double avi_exp_v4 __attribute__((vector_size(32)));
typedef int64_t avi_exp_i4 __attribute__((vector_size(32)));

/* e^x lane-wise for x <= 0; exactly 0 where x < -708 (including -inf). */
static inline __attribute__((always_inline)) avi_exp_v4 avi_exp_nonpos(avi_exp_v4 x) {
    const avi_exp_v4 lo = {AVI_EXP_MIN, AVI_EXP_MIN, AVI_EXP_MIN, AVI_EXP_MIN};
    const avi_exp_v4 magic = {AVI_ROUND_MAGIC, AVI_ROUND_MAGIC, AVI_ROUND_MAGIC, AVI_ROUND_MAGIC};
    avi_exp_i4 under = x < lo;
    avi_exp_v4 xc = (avi_exp_v4)(((avi_exp_i4)lo & under) | ((avi_exp_i4)x & ~under));
    avi_exp_v4 t = xc * AVI_LOG2E + magic;
    avi_exp_v4 n = t - magic;
    avi_exp_v4 r = xc - n * AVI_LN2_HI;
    r = r - n * AVI_LN2_LO;
    AVI_EXP_TAYLOR(avi_exp_v4, p, r)
    avi_exp_v4 scale = (avi_exp_v4)(((avi_exp_i4)t + 1023) << 52);   /* 2^n: low bits of t hold n */
    return (avi_exp_v4)((avi_exp_i4)(p * scale) & ~under);
}
#endif

#endif
