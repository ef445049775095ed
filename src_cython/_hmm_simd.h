/* SIMD building blocks of avicore's HMM kernels (src_cython/hmm.pyx).
 *
 * Vectors are padded to Kp, a multiple of 4 doubles (zeros, or -inf for log-likelihood rows), so every loop
 * runs over whole 4-lane vectors. With GCC or Clang the lanes are GCC vector extensions (AVX2 registers under
 * -march=native, two SSE2 registers otherwise); other compilers (or -DAVICORE_HMM_SCALAR) get the plain scalar
 * loops below, with the same results up to rounding (libm's exp instead of the polynomial).
 *
 *   avi_matvec(M, v, out, K, Kp)           out[j] = sum_{i<K} v[i] M[i*Kp + j]             (j < Kp)
 *   avi_rank_update(xiT, W, Aa, nb, K, Kp)  xiT[j*Kp + i] += sum_{b<nb} W[b*Kp + j] Aa[b*Kp + i]   (j < K, i < Kp)
 *   avi_dual_matvec(A, w, a, beta, pred, K, Kp)
 *                                          beta[i] = sum_j A[i*Kp + j] w[j] and pred[j] = sum_{i<K} a[i] A[i*Kp + j]
 *                                          in one pass over A (4 rows at a time): for large K, where A lives in
 *                                          L2, this halves the matrix traffic of the backward step
 *   avi_exp_shift(l, m, e, Kp)             e[j] = exp(min(l[j] - m, 0))  (0 for l[j] = -inf)
 *   avi_emit(e, l, p, u, tiny, Kp, &sum)   u[j] = e[j] p[j]; returns 1 if a state with p[j] > 0 and
 *                                          l[j] > -inf got u[j] < tiny; *sum = sum of u
 *   avi_max(l, Kp)                         max of l[j]
 *   avi_masked_max(l, p, Kp)               max of l[j] over p[j] > 0 (-inf if none)
 *   avi_ratio(w, a, g, p, Kp)              w[j] = a[j] > 0 ? g[j] / p[j] : 0
 *   avi_viterbi_step(delta, logA, l, out, bp, K, Kp)
 *                                          out[j] = max_i (delta[i] + logA[i*Kp + j]) + l[j], bp[j] = the lowest
 *                                          maximising i (0 if all are -inf); delta, logA, l padded with -inf
 *
 * Mat-vecs keep eight 4-lane accumulators in registers over the whole i loop (16 columns at a time, even and odd
 * rows apart), so the dependency chains are K/2 FMAs long. The rank update (the transition counts, nb time steps
 * at once) holds a 2 x 16 tile of xiT in registers over the nb steps: one load and store of xiT per nb steps
 * instead of one per step. exp(x) for x <= 0 is Cody-Waite range reduction
 * (x = n ln2 + r, |r| <= ln2/2) and the degree-13 Taylor polynomial of exp(r) (truncation < 5e-18), scaled by
 * 2^n built in the exponent bits; within 1.1 ulp of libm's exp over [-708, 0], and exactly 0 below -708 (the
 * callers treat such an underflow as a reason to leave probability space anyway).
 */
#ifndef AVICORE_HMM_SIMD_H
#define AVICORE_HMM_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_simd_exp.h"   /* avi_exp_nonpos (exp for x <= 0, 0 below -708) and AVI_EXP_MIN: one exp for all kernels */

#if (defined(__GNUC__) || defined(__clang__)) && !defined(AVICORE_HMM_SCALAR)

#if defined(__GNUC__) && !defined(__clang__)
/* Without AVX a 32-byte vector is passed differently; every helper here is force-inlined, so no ABI is crossed. */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define AVI_INLINE static inline __attribute__((always_inline))

typedef double avi_v4 __attribute__((vector_size(32)));
typedef int64_t avi_i4 __attribute__((vector_size(32)));

AVI_INLINE avi_v4 avi_load(const double* p) { avi_v4 v; memcpy(&v, p, sizeof v); return v; }
AVI_INLINE void avi_store(double* p, avi_v4 v) { memcpy(p, &v, sizeof v); }
AVI_INLINE avi_v4 avi_set1(double a) { avi_v4 v = {a, a, a, a}; return v; }
/* mask ? a : b for a lane mask of all-ones / all-zeros */
AVI_INLINE avi_v4 avi_select(avi_i4 mask, avi_v4 a, avi_v4 b) {
    return (avi_v4)(((avi_i4)a & mask) | ((avi_i4)b & ~mask));
}

/* Two accumulators per column vector (even and odd rows) halve the length of each FMA dependency chain. */
#define AVI_DEFINE_MATVEC(NV)                                                                                    \
    AVI_INLINE void avi_matvec_##NV(const double* M, const double* v, double* out, ptrdiff_t K,              \
                                       ptrdiff_t Kp) {                                                           \
        avi_v4 acc[NV], acc2[NV];                                                                                \
        int q;                                                                                                   \
        ptrdiff_t i = 0;                                                                                         \
        for (q = 0; q < NV; q++) { acc[q] = avi_set1(0.0); acc2[q] = avi_set1(0.0); }                           \
        for (; i + 1 < K; i += 2, M += 2 * Kp) {                                                                 \
            avi_v4 b = avi_set1(v[i]), b2 = avi_set1(v[i + 1]);                                                  \
            for (q = 0; q < NV; q++) {                                                                           \
                acc[q] += b * avi_load(M + 4 * q);                                                               \
                acc2[q] += b2 * avi_load(M + Kp + 4 * q);                                                        \
            }                                                                                                    \
        }                                                                                                        \
        if (i < K) {                                                                                             \
            avi_v4 b = avi_set1(v[i]);                                                                           \
            for (q = 0; q < NV; q++) acc[q] += b * avi_load(M + 4 * q);                                          \
        }                                                                                                        \
        for (q = 0; q < NV; q++) avi_store(out + 4 * q, acc[q] + acc2[q]);                                       \
    }

#define AVI_DEFINE_RANK(NV)                                                                                      \
    AVI_INLINE void avi_rank_##NV(double* xiT, const double* W, const double* Aa, ptrdiff_t nb, ptrdiff_t K,  \
                                     ptrdiff_t Kp) {                                                             \
        avi_v4 acc[NV], acc2[NV];                                                                                \
        int q;                                                                                                   \
        ptrdiff_t j = 0, b;                                                                                      \
        for (; j + 1 < K; j += 2) {                                                                              \
            double* x0 = xiT + j * Kp;                                                                           \
            for (q = 0; q < NV; q++) { acc[q] = avi_load(x0 + 4 * q); acc2[q] = avi_load(x0 + Kp + 4 * q); }   \
            for (b = 0; b < nb; b++) {                                                                           \
                avi_v4 w0 = avi_set1(W[b * Kp + j]), w1 = avi_set1(W[b * Kp + j + 1]);                            \
                for (q = 0; q < NV; q++) {                                                                       \
                    avi_v4 av = avi_load(Aa + b * Kp + 4 * q);                                                   \
                    acc[q] += w0 * av;                                                                           \
                    acc2[q] += w1 * av;                                                                          \
                }                                                                                                \
            }                                                                                                    \
            for (q = 0; q < NV; q++) { avi_store(x0 + 4 * q, acc[q]); avi_store(x0 + Kp + 4 * q, acc2[q]); }   \
        }                                                                                                        \
        if (j < K) {                                                                                             \
            double* x0 = xiT + j * Kp;                                                                           \
            for (q = 0; q < NV; q++) acc[q] = avi_load(x0 + 4 * q);                                             \
            for (b = 0; b < nb; b++) {                                                                           \
                avi_v4 w0 = avi_set1(W[b * Kp + j]);                                                             \
                for (q = 0; q < NV; q++) acc[q] += w0 * avi_load(Aa + b * Kp + 4 * q);                           \
            }                                                                                                    \
            for (q = 0; q < NV; q++) avi_store(x0 + 4 * q, acc[q]);                                             \
        }                                                                                                        \
    }

AVI_DEFINE_MATVEC(1)
AVI_DEFINE_MATVEC(2)
AVI_DEFINE_MATVEC(3)
AVI_DEFINE_MATVEC(4)
AVI_DEFINE_RANK(1)
AVI_DEFINE_RANK(2)
AVI_DEFINE_RANK(3)
AVI_DEFINE_RANK(4)

AVI_INLINE void avi_matvec(const double* M, const double* v, double* out, ptrdiff_t K, ptrdiff_t Kp) {
    ptrdiff_t jb = 0;
    for (; jb + 16 <= Kp; jb += 16) avi_matvec_4(M + jb, v, out + jb, K, Kp);
    switch ((Kp - jb) / 4) {
        case 3: avi_matvec_3(M + jb, v, out + jb, K, Kp); break;
        case 2: avi_matvec_2(M + jb, v, out + jb, K, Kp); break;
        case 1: avi_matvec_1(M + jb, v, out + jb, K, Kp); break;
        default: break;
    }
}

AVI_INLINE void avi_rank_update(double* xiT, const double* W, const double* Aa, ptrdiff_t nb, ptrdiff_t K,
                                   ptrdiff_t Kp) {
    ptrdiff_t ib = 0;
    for (; ib + 16 <= Kp; ib += 16) avi_rank_4(xiT + ib, W, Aa + ib, nb, K, Kp);
    switch ((Kp - ib) / 4) {
        case 3: avi_rank_3(xiT + ib, W, Aa + ib, nb, K, Kp); break;
        case 2: avi_rank_2(xiT + ib, W, Aa + ib, nb, K, Kp); break;
        case 1: avi_rank_1(xiT + ib, W, Aa + ib, nb, K, Kp); break;
        default: break;
    }
}

AVI_INLINE void avi_exp_shift(const double* l, double m, double* e, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 x = avi_load(l + j) - m;
        avi_store(e + j, avi_exp_nonpos(avi_select(x > 0.0, avi_set1(0.0), x)));
    }
}

AVI_INLINE int avi_emit(const double* e, const double* l, const double* p, double* u, double tiny, ptrdiff_t Kp,
                           double* sum) {
    avi_v4 s = avi_set1(0.0);
    avi_i4 bad = {0, 0, 0, 0};
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 pv = avi_load(p + j);
        avi_v4 uv = avi_load(e + j) * pv;
        bad |= (uv < tiny) & (pv > 0.0) & (avi_load(l + j) > -INFINITY);
        s += uv;
        avi_store(u + j, uv);
    }
    *sum = (s[0] + s[1]) + (s[2] + s[3]);
    return (bad[0] | bad[1] | bad[2] | bad[3]) != 0;
}

AVI_INLINE double avi_max(const double* l, ptrdiff_t Kp) {
    avi_v4 best = avi_load(l);
    for (ptrdiff_t j = 4; j < Kp; j += 4) {
        avi_v4 lv = avi_load(l + j);
        best = avi_select(lv > best, lv, best);
    }
    double m0 = best[0] > best[1] ? best[0] : best[1];
    double m1 = best[2] > best[3] ? best[2] : best[3];
    return m0 > m1 ? m0 : m1;
}

AVI_INLINE double avi_masked_max(const double* l, const double* p, ptrdiff_t Kp) {
    avi_v4 best = avi_set1(-INFINITY);
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 lv = avi_select(avi_load(p + j) > 0.0, avi_load(l + j), avi_set1(-INFINITY));
        best = avi_select(lv > best, lv, best);
    }
    double m0 = best[0] > best[1] ? best[0] : best[1];
    double m1 = best[2] > best[3] ? best[2] : best[3];
    return m0 > m1 ? m0 : m1;
}

AVI_INLINE void avi_ratio(double* w, const double* a, const double* g, const double* p, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 av = avi_load(a + j);
        avi_store(w + j, avi_select(av > 0.0, avi_load(g + j) / avi_load(p + j), avi_set1(0.0)));
    }
}

AVI_INLINE void avi_viterbi_step(const double* delta, const double* logA, const double* l, double* out,
                                    int32_t* bp, ptrdiff_t K, ptrdiff_t Kp) {
    /* Rows in increasing order with a strict >: among equal candidates the lowest row index is kept. */
    for (ptrdiff_t jb = 0; jb < Kp; jb += 4) {
        avi_v4 best = avi_set1(-INFINITY);
        avi_i4 arg = {0, 0, 0, 0};
        for (ptrdiff_t i = 0; i < K; i++) {
            double d = delta[i];
            if (d == -INFINITY) continue;
            avi_v4 cand = d + avi_load(logA + i * Kp + jb);
            avi_i4 gt = cand > best;
            best = avi_select(gt, cand, best);
            arg = (arg & ~gt) | ((avi_i4){i, i, i, i} & gt);
        }
        avi_store(out + jb, best + avi_load(l + jb));
        for (int q = 0; q < 4 && jb + q < K; q++) bp[jb + q] = (int32_t)arg[q];
    }
}

AVI_INLINE double avi_hsum(avi_v4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

AVI_INLINE void avi_dual_matvec(const double* A, const double* w, const double* a, double* beta, double* pred,
                                ptrdiff_t K, ptrdiff_t Kp) {
    ptrdiff_t i = 0, j;
    for (j = 0; j < Kp; j += 4) avi_store(pred + j, avi_set1(0.0));
    for (j = K; j < Kp; j++) beta[j] = 0.0;
    for (; i + 4 <= K; i += 4) {
        const double* r = A + i * Kp;
        avi_v4 d0 = avi_set1(0.0), d1 = d0, d2 = d0, d3 = d0;
        avi_v4 a0 = avi_set1(a[i]), a1 = avi_set1(a[i + 1]), a2 = avi_set1(a[i + 2]), a3 = avi_set1(a[i + 3]);
        for (j = 0; j < Kp; j += 4) {
            avi_v4 r0 = avi_load(r + j), r1 = avi_load(r + Kp + j);
            avi_v4 r2 = avi_load(r + 2 * Kp + j), r3 = avi_load(r + 3 * Kp + j);
            avi_v4 wv = avi_load(w + j);
            d0 += r0 * wv; d1 += r1 * wv; d2 += r2 * wv; d3 += r3 * wv;
            avi_store(pred + j, avi_load(pred + j) + ((a0 * r0 + a1 * r1) + (a2 * r2 + a3 * r3)));
        }
        beta[i] = avi_hsum(d0); beta[i + 1] = avi_hsum(d1); beta[i + 2] = avi_hsum(d2); beta[i + 3] = avi_hsum(d3);
    }
    for (; i < K; i++) {
        const double* r = A + i * Kp;
        avi_v4 d0 = avi_set1(0.0), a0 = avi_set1(a[i]);
        for (j = 0; j < Kp; j += 4) {
            avi_v4 r0 = avi_load(r + j);
            d0 += r0 * avi_load(w + j);
            avi_store(pred + j, avi_load(pred + j) + a0 * r0);
        }
        beta[i] = avi_hsum(d0);
    }
}

#else /* portable scalar versions */

static inline void avi_matvec(const double* M, const double* v, double* out, ptrdiff_t K, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) out[j] = 0.0;
    for (ptrdiff_t i = 0; i < K; i++)
        for (ptrdiff_t j = 0; j < Kp; j++) out[j] += v[i] * M[i * Kp + j];
}

static inline void avi_rank_update(double* xiT, const double* W, const double* Aa, ptrdiff_t nb, ptrdiff_t K,
                                   ptrdiff_t Kp) {
    for (ptrdiff_t b = 0; b < nb; b++)
        for (ptrdiff_t j = 0; j < K; j++)
            for (ptrdiff_t i = 0; i < Kp; i++) xiT[j * Kp + i] += W[b * Kp + j] * Aa[b * Kp + i];
}

static inline void avi_exp_shift(const double* l, double m, double* e, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) {
        double x = l[j] - m;
        e[j] = x < AVI_EXP_MIN ? 0.0 : exp(x > 0.0 ? 0.0 : x);
    }
}

static inline int avi_emit(const double* e, const double* l, const double* p, double* u, double tiny, ptrdiff_t Kp,
                           double* sum) {
    int bad = 0;
    double s = 0.0;
    for (ptrdiff_t j = 0; j < Kp; j++) {
        u[j] = e[j] * p[j];
        bad |= (u[j] < tiny) & (p[j] > 0.0) & (l[j] > -INFINITY);
        s += u[j];
    }
    *sum = s;
    return bad;
}

static inline double avi_max(const double* l, ptrdiff_t Kp) {
    double best = l[0];
    for (ptrdiff_t j = 1; j < Kp; j++)
        if (l[j] > best) best = l[j];
    return best;
}

static inline double avi_masked_max(const double* l, const double* p, ptrdiff_t Kp) {
    double best = -INFINITY;
    for (ptrdiff_t j = 0; j < Kp; j++)
        if (p[j] > 0.0 && l[j] > best) best = l[j];
    return best;
}

static inline void avi_ratio(double* w, const double* a, const double* g, const double* p, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) w[j] = a[j] > 0.0 ? g[j] / p[j] : 0.0;
}

static inline void avi_viterbi_step(const double* delta, const double* logA, const double* l, double* out,
                                    int32_t* bp, ptrdiff_t K, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) {
        double best = -INFINITY;
        int32_t arg = 0;
        for (ptrdiff_t i = 0; i < K; i++) {
            double cand = delta[i] + logA[i * Kp + j];
            if (cand > best) { best = cand; arg = (int32_t)i; }
        }
        out[j] = best + l[j];
        if (j < K) bp[j] = arg;
    }
}

static inline void avi_dual_matvec(const double* A, const double* w, const double* a, double* beta, double* pred,
                                   ptrdiff_t K, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) { pred[j] = 0.0; beta[j] = 0.0; }
    for (ptrdiff_t i = 0; i < K; i++)
        for (ptrdiff_t j = 0; j < Kp; j++) {
            beta[i] += A[i * Kp + j] * w[j];
            pred[j] += a[i] * A[i * Kp + j];
        }
}

#endif
#endif /* AVICORE_HMM_SIMD_H */
