"""Per-point expected log-likelihood terms: the scalar code that Numba compiles here (for
:mod:`avicore.kernels.quadrature`) and numba-cuda compiles, from the same source, as device functions (for
:mod:`avicore.kernels._quadrature_cuda`).

It sits one floor below both so that neither imports the other; the formulas are in the docstring of
:mod:`avicore.kernels.quadrature`.
"""

from __future__ import annotations

import math

from numba import njit

from ..gp.likelihoods import (
    CODE_BERNOULLI_LOGIT,
    CODE_BERNOULLI_PROBIT,
    CODE_GAUSSIAN,
    CODE_POISSON,
)

INV_SQRT2 = 0.7071067811865476
INV_SQRT_2PI = 0.3989422804014327
HALF_LOG_2PI = 0.9189385332046728
#: log(DBL_MAX): exp of anything larger overflows.
LOG_DBL_MAX = 709.782712893384
#: Below this u the probit terms come from the Mills-ratio continued fraction.
PROBIT_SWITCH = -5.0
#: Depth of that continued fraction (terms 2..MILLS_DEPTH).
MILLS_DEPTH = 30


# ---------------------------------------------------------------------------------------------------------------

def probit_terms(u):
    """(log Φ(u), λ(u) = φ(u)/Φ(u), c(u) = λ(u) + u) without overflow, underflow or cancellation."""
    if u >= 0.0:
        q = 0.5 * math.erfc(u * INV_SQRT2)  # Φ(−u)
        lam = math.exp(-0.5 * u * u) * INV_SQRT_2PI / (1.0 - q)
        return math.log1p(-q), lam, lam + u
    if u > PROBIT_SWITCH:
        cdf = 0.5 * math.erfc(-u * INV_SQRT2)
        lam = math.exp(-0.5 * u * u) * INV_SQRT_2PI / cdf
        return math.log(cdf), lam, lam + u
    x = -u
    t = 0.0
    for k in range(MILLS_DEPTH, 1, -1):
        t = k / (x + t)
    c = 1.0 / (x + t)
    lam = x + c
    return -0.5 * x * x - HALF_LOG_2PI - math.log(lam), lam, c


_probit_terms_nb = njit(cache=True)(probit_terms)


def point_terms(code, params, y, m, v, nodes, weights):
    """(E[g], E[g'], ½E[g'']) for one point under N(m, v); see the module docstring for the formulas."""
    if code == CODE_GAUSSIAN:
        inv_noise = params[1]
        r = y - m
        return params[0] - 0.5 * (r * r + v) * inv_noise, r * inv_noise, -0.5 * inv_noise
    if code == CODE_POISSON:
        z = m + 0.5 * v
        rate = math.exp(z) if z <= LOG_DBL_MAX else math.inf
        return y * m - rate, y - rate, -0.5 * rate
    sd = math.sqrt(v)
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    n_nodes = nodes.shape[0]
    if code == CODE_BERNOULLI_LOGIT:
        s = 2.0 * y - 1.0
        sm = s * m
        ssd = s * sd
        for i in range(n_nodes):
            u = sm + ssd * nodes[i]
            e = math.exp(-abs(u))
            r = 1.0 / (1.0 + e)
            w = weights[i]
            a0 -= w * (max(-u, 0.0) + math.log1p(e))
            a1 += w * (e if u >= 0.0 else 1.0) * r
            a2 += w * e * r * r
        return a0, s * a1, -0.5 * a2
    if code == CODE_BERNOULLI_PROBIT:
        s = 2.0 * y - 1.0
        for i in range(n_nodes):
            log_cdf, lam, c = _probit_terms_nb(s * (m + sd * nodes[i]))
            w = weights[i]
            a0 += w * log_cdf
            a1 += w * lam
            a2 += w * lam * c
        return a0, s * a1, -0.5 * a2
    # CODE_STUDENT_T
    a = params[1]
    nu1 = params[2]
    for i in range(n_nodes):
        r = y - (m + sd * nodes[i])
        r2 = r * r
        d = a + r2
        w = weights[i]
        a0 += w * math.log1p(r2 / a)
        a1 += w * r / d
        a2 += w * (r2 - a) / (d * d)
    return params[0] - 0.5 * nu1 * a0, nu1 * a1, 0.5 * nu1 * a2


_point_terms_nb = njit(cache=True)(point_terms)
