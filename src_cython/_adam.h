/* Adam's element update, shared by every fused Adam pass (avicore._cy.optim and the F-VI pass of avicore._cy.elbo).
 *
 * With g' = gscale*g + goffset:  m <- b1 m + (1 - b1) g',  v <- b2 v + (1 - b2) g'^2,
 *                                p_out = p + step * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * (the maths and the NumPy twin: avicore/optim.py). adam_apply is the one scalar formula; adam_span runs it over a
 * span whose pointers do not overlap (restrict: the compiler vectorises it; sqrt and division are correctly
 * rounded in every lane, so a lane gives the same bits as the scalar code). In-place use (p_out == p) is how the
 * engines call it: each p[i] is read once, before p_out[i] is written, so no value is read after a write to it.
 */
#ifndef AVICORE_ADAM_H
#define AVICORE_ADAM_H

#include <math.h>
#include <stddef.h>

typedef struct {
    double step, beta1, beta2, sqrt_bc2, eps;
} avicore_adam_coef;

static inline double adam_apply(double p, double gi, double *m, double *v, double step, double beta1, double beta2,
                                double sqrt_bc2, double eps) {
    double mi = beta1 * m[0] + (1.0 - beta1) * gi;
    double vi = beta2 * v[0] + (1.0 - beta2) * gi * gi;
    m[0] = mi;
    v[0] = vi;
    return p + step * mi / (sqrt(vi) / sqrt_bc2 + eps);
}

/* p_out[i] = Adam(p[i], gscale*g[i] + goffset) for i < n, m and v in place; returns the count of non-finite g'. */
static inline ptrdiff_t adam_span(const double *restrict p, const double *restrict g, double *restrict m,
                                  double *restrict v, double *restrict p_out, ptrdiff_t n, double gscale,
                                  double goffset, const avicore_adam_coef *c) {
    const double step = c->step, beta1 = c->beta1, beta2 = c->beta2, sqrt_bc2 = c->sqrt_bc2, eps = c->eps;
    ptrdiff_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double gi = gscale * g[i] + goffset;
        bad += !isfinite(gi);
        p_out[i] = adam_apply(p[i], gi, &m[i], &v[i], step, beta1, beta2, sqrt_bc2, eps);
    }
    return bad;
}

#endif
