/* Vector helpers of avicore's one-pass EM E-step (cy_em_expectations in src_cython/hmm.pyx).
 *
 * Same conventions as _hmm_simd.h (included here): vectors padded to Kp, a multiple of 4 doubles; GCC/Clang vector
 * extensions, or the plain loops below (same results up to rounding) elsewhere or with -DAVICORE_HMM_SCALAR. The
 * per-step vectors are short (Kp = 12 at K = 10), so every loop here is an explicit 4-lane loop: compiled
 * auto-vectorised loops of that length spend more time in their alias checks and remainders than in the work.
 *
 *   avi_copy(dst, src, Kp)                     dst[j] = src[j]
 *   avi_scale(dst, src, s, Kp)                 dst[j] = src[j] * s
 *   avi_scale2(a, u, r, e, inv, Kp)            a[j] = u[j] * inv, r[j] = e[j] * inv
 *   avi_masked_mul(v, a, r, b, Kp)             v[j] = a[j] > 0 ? r[j] * b[j] : 0
 *   avi_mul(g, a, b, Kp)                       g[j] = a[j] * b[j]
 *   avi_em_add(g, Ft, nf, symrow, post, wsum, Kp)
 *                                              post += g; wsum[f*Kp..] += Ft[f] * g (f < nf); symrow += g if not NULL
 *   avi_diag_row(out, x, D, P, Kp)             out[j] = P[2D*Kp + j] - sum_d (x[d] - P[d*Kp + j])^2 P[(D+d)*Kp + j]
 *   avi_full_row(out, x, D, P, Kp)             out[j] = c[j] - 1/2 sum_d (sum_{e<=d} M_de[j] (x[e] - mu_e[j]))^2 with P =
 *                                              mu (D, Kp) | M, the lower triangle of L^-1 by rows (D(D+1)/2, Kp) | c
 *   avi_linear_row(out, x, D, P, Kp)           out[j] = P[D*Kp + j] + sum_d x[d] P[d*Kp + j]
 */
#ifndef AVICORE_HMM_EM_SIMD_H
#define AVICORE_HMM_EM_SIMD_H

#include "_hmm_simd.h"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(AVICORE_HMM_SCALAR)

AVI_INLINE void avi_copy(double* dst, const double* src, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) avi_store(dst + j, avi_load(src + j));
}

AVI_INLINE void avi_scale(double* dst, const double* src, double s, ptrdiff_t Kp) {
    avi_v4 sv = avi_set1(s);
    for (ptrdiff_t j = 0; j < Kp; j += 4) avi_store(dst + j, avi_load(src + j) * sv);
}

AVI_INLINE void avi_scale2(double* a, const double* u, double* r, const double* e, double inv, ptrdiff_t Kp) {
    avi_v4 s = avi_set1(inv);
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_store(a + j, avi_load(u + j) * s);
        avi_store(r + j, avi_load(e + j) * s);
    }
}

AVI_INLINE void avi_masked_mul(double* v, const double* a, const double* r, const double* b, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4)
        avi_store(v + j, avi_select(avi_load(a + j) > 0.0, avi_load(r + j) * avi_load(b + j), avi_set1(0.0)));
}

AVI_INLINE void avi_mul(double* g, const double* a, const double* b, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) avi_store(g + j, avi_load(a + j) * avi_load(b + j));
}

AVI_INLINE void avi_em_add(const double* g, const double* Ft, ptrdiff_t nf, double* symrow, double* post,
                           double* wsum, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 gv = avi_load(g + j);
        avi_store(post + j, avi_load(post + j) + gv);
        for (ptrdiff_t f = 0; f < nf; f++) {
            double* w = wsum + f * Kp + j;
            avi_store(w, avi_load(w) + Ft[f] * gv);
        }
        if (symrow) avi_store(symrow + j, avi_load(symrow + j) + gv);
    }
}

AVI_INLINE void avi_diag_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 acc = avi_load(P + 2 * D * Kp + j);
        for (ptrdiff_t d = 0; d < D; d++) {
            avi_v4 diff = x[d] - avi_load(P + d * Kp + j);
            acc = acc - diff * diff * avi_load(P + (D + d) * Kp + j);
        }
        avi_store(out + j, acc);
    }
}

AVI_INLINE void avi_full_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    const double* M = P + D * Kp;
    const double* c = M + (D * (D + 1) / 2) * Kp;
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 quad = avi_set1(0.0);
        ptrdiff_t idx = 0;
        for (ptrdiff_t d = 0; d < D; d++) {
            avi_v4 s = avi_set1(0.0);
            for (ptrdiff_t e = 0; e <= d; e++, idx++)
                s += avi_load(M + idx * Kp + j) * (x[e] - avi_load(P + e * Kp + j));
            quad += s * s;
        }
        avi_store(out + j, avi_load(c + j) - 0.5 * quad);
    }
}

AVI_INLINE void avi_linear_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j += 4) {
        avi_v4 acc = avi_load(P + D * Kp + j);
        for (ptrdiff_t d = 0; d < D; d++) acc += x[d] * avi_load(P + d * Kp + j);
        avi_store(out + j, acc);
    }
}

#else /* portable scalar versions */

static inline void avi_copy(double* dst, const double* src, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) dst[j] = src[j];
}

static inline void avi_scale(double* dst, const double* src, double s, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) dst[j] = src[j] * s;
}

static inline void avi_scale2(double* a, const double* u, double* r, const double* e, double inv, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) { a[j] = u[j] * inv; r[j] = e[j] * inv; }
}

static inline void avi_masked_mul(double* v, const double* a, const double* r, const double* b, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) v[j] = a[j] > 0.0 ? r[j] * b[j] : 0.0;
}

static inline void avi_mul(double* g, const double* a, const double* b, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) g[j] = a[j] * b[j];
}

static inline void avi_em_add(const double* g, const double* Ft, ptrdiff_t nf, double* symrow, double* post,
                              double* wsum, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) {
        post[j] += g[j];
        for (ptrdiff_t f = 0; f < nf; f++) wsum[f * Kp + j] += Ft[f] * g[j];
        if (symrow) symrow[j] += g[j];
    }
}

static inline void avi_diag_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) {
        double acc = P[2 * D * Kp + j];
        for (ptrdiff_t d = 0; d < D; d++) {
            double diff = x[d] - P[d * Kp + j];
            acc = acc - diff * diff * P[(D + d) * Kp + j];
        }
        out[j] = acc;
    }
}

static inline void avi_full_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    const double* M = P + D * Kp;
    const double* c = M + (D * (D + 1) / 2) * Kp;
    for (ptrdiff_t j = 0; j < Kp; j++) {
        double quad = 0.0;
        ptrdiff_t idx = 0;
        for (ptrdiff_t d = 0; d < D; d++) {
            double s = 0.0;
            for (ptrdiff_t e = 0; e <= d; e++, idx++) s += M[idx * Kp + j] * (x[e] - P[e * Kp + j]);
            quad += s * s;
        }
        out[j] = c[j] - 0.5 * quad;
    }
}

static inline void avi_linear_row(double* out, const double* x, ptrdiff_t D, const double* P, ptrdiff_t Kp) {
    for (ptrdiff_t j = 0; j < Kp; j++) {
        double acc = P[D * Kp + j];
        for (ptrdiff_t d = 0; d < D; d++) acc += x[d] * P[d * Kp + j];
        out[j] = acc;
    }
}

#endif
#endif /* AVICORE_HMM_EM_SIMD_H */
