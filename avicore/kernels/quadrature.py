"""Expected log-likelihoods under Gaussian factors: NumPy reference, Numba kernel and the dispatcher.

For each point n, with q(fₙ) = N(mₙ, vₙ) and g(f) = log p(yₙ | f)::

    value[n]     = E_q[g(f)]
    grad_mean[n] = ∂/∂mₙ E_q[g(f)] = E_q[g'(f)]
    grad_var[n]  = ∂/∂vₙ E_q[g(f)] = ½ E_q[g''(f)]

(the last two are Stein's/Price's identities). Gaussian and Poisson-log have closed forms; the others use
probabilists' Gauss–Hermite quadrature with K nodes xᵢ and weights wᵢ (Σ wᵢ = 1): E_q[h(f)] ≈ Σᵢ wᵢ h(mₙ + √vₙ xᵢ),
with the analytic g' and g'' of each likelihood. The Cython kernel (``src_cython/quadrature.pyx``) and the CUDA
kernel (``_quadrature_cuda.py``, imported only when used) compute the same formulas; kernels never validate —
:func:`avicore.quadrature.expected_log_lik` checks the user's input first.

Per-node formulas (u = s·f with s = 2y − 1 for the Bernoulli likelihoods; r = y − f)
---------------------------------------------------------------------------------
logit    e = exp(−|u|):  g = −(max(−u, 0) + log1p(e)),  g' = s·σ(−u) = s·(u ≥ 0 ? e : 1)/(1 + e),
         g'' = −σ(u)σ(−u) = −e/(1 + e)²  — one exp and one log1p, no overflow for any u.
probit   λ(u) = φ(u)/Φ(u) and c(u) = λ(u) + u:  g = log Φ(u),  g' = s·λ(u),  g'' = −λ(u)·c(u).
         u ≥ 0: Φ(u) = 1 − ½erfc(u/√2), log Φ = log1p(−½erfc(u/√2));  −5 < u < 0: Φ(u) = ½erfc(−u/√2);
         u ≤ −5 (x = −u): the Mills-ratio continued fraction c = 1/(x + 2/(x + 3/(x + … 30/x))) (relative error
         below 2e-16 for x ≥ 5), λ = x + c, log Φ(u) = −x²/2 − ½log 2π − log λ — no cancellation in c, no underflow.
StudentT a = ν s², d = a + r²:  g = C − (ν+1)/2 · log1p(r²/a),  g' = (ν+1) r/d,  g'' = (ν+1)(r² − a)/d².
Gaussian value = C − ((y − m)² + v)/(2σ²),  grad_mean = (y − m)/σ²,  grad_var = −1/(2σ²).
Poisson  t = exp(m + v/2):  value = y m − t (− log y!, added by the dispatcher),  grad_mean = y − t,
         grad_var = −t/2; t = +inf when m + v/2 > log(DBL_MAX), giving −inf (the exact value is below −1.8e308).

Kernel parameters (float64 vector of length 4, built by each likelihood's ``_kernel_params``)::

    Gaussian (code 0)   (C = −½ log(2πσ²), 1/σ², 0, 0)
    StudentT (code 4)   (C = log Γ((ν+1)/2) − log Γ(ν/2) − ½ log(νπs²), ν s², ν + 1, 0)
    others              unused
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

from .. import _config
from ..backends import resolve
from ..gp.likelihoods import (
    CODE_BERNOULLI_LOGIT,
    CODE_BERNOULLI_PROBIT,
    CODE_GAUSSIAN,
    CODE_POISSON,
    CODE_STUDENT_T,
)
from ._quadrature_point import (  # noqa: F401  (the constants are part of this module's interface)
    HALF_LOG_2PI,
    INV_SQRT2,
    INV_SQRT_2PI,
    LOG_DBL_MAX,
    MILLS_DEPTH,
    PROBIT_SWITCH,
    _point_terms_nb,
    _probit_terms_nb,
    point_terms,
    probit_terms,
)

SUPPORTED_BACKENDS = ("numpy", "cython", "numba", "cuda")

#: Most ``points x nodes`` one compiled call evaluates: longer inputs run as several calls over consecutive
#: points, returning to Python in between so that ``KeyboardInterrupt`` is honoured within a fraction of a
#: second. Points are independent and the slices hold multiples of 64 points, so the results are the same bits.
SLICE_COST = 1 << 21

#: Wide factors (see :func:`wide_rows`): a K-node Gauss–Hermite rule is trusted while sd ≤ WIDE_RESOLVE · τ · √(K/20),
#: τ the likelihood's feature scale (the half-width of the strip around the real axis where log p(y | ·) is analytic:
#: π for logit, whose poles sit at u = ±iπ, and probit; √(ν s²) for Student-t). Measured against adaptive quadrature:
#: sd/τ = 0.32 gives 2e-9 relative error at K = 20 (logit), sd/τ = 1 gives 4e-3, and Student-t(4, 0.3) at sd = 1 (sd/τ
#: = 1.7) 19 %.
WIDE_RESOLVE = 0.3
#: The composite rule for wide factors: Gauss–Legendre nodes per panel, the range |x| ≤ WIDE_RANGE of the standard
#: normal variable x = (f − m)/sd (mass outside: 1.5e-23), uniform breakpoints every WIDE_UNIFORM, rows per block.
WIDE_PANEL_NODES = 16
#: Finer Gauss–Hermite rules for moderately wide factors, run by the backend's own kernel: K nodes resolve
#: sd ≤ WIDE_RESOLVE · τ · √(K/20) (so 80 nodes to twice the 20-node width, 256 to 3.6 times); only factors wider
#: still take the composite rule (evaluated in NumPy, ~50× a 20-node row's cost).
WIDE_LEVELS = (80, 256)
WIDE_RANGE = 10.0
WIDE_UNIFORM = 0.5
WIDE_BLOCK = 2048


# ---------------------------------------------------------------------------------------------------------------
# NumPy reference (vectorised over points × nodes, written for clarity)
# ---------------------------------------------------------------------------------------------------------------

def _mills_c_numpy(x: np.ndarray) -> np.ndarray:
    """c(−x) = λ(−x) − x by the continued fraction 1/(x + 2/(x + 3/(x + …))) (for x ≥ 5)."""
    t = np.zeros_like(x)
    for k in range(MILLS_DEPTH, 1, -1):
        t = k / (x + t)
    return 1.0 / (x + t)


def _node_terms_numpy(code: int, params: np.ndarray, y: np.ndarray, f: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g, g', g'' of log p(y | f) at the nodes ``f`` (broadcast against ``y``)."""
    from scipy.special import expit, log_expit, log_ndtr

    if code == CODE_BERNOULLI_LOGIT:
        s = 2.0 * y - 1.0
        u = s * f
        return log_expit(u), s * expit(-u), -expit(u) * expit(-u)
    if code == CODE_BERNOULLI_PROBIT:
        s = 2.0 * y - 1.0
        u = s * f
        log_cdf = log_ndtr(u)
        tail = u <= PROBIT_SWITCH
        # In the tail λ = x + c(x) (x = −u) from the continued fraction, as the compiled kernels do: there
        # exp(−u²/2 − ½log 2π − log Φ(u)) subtracts two numbers of size u²/2 and loses every digit (m = −1e8).
        c_tail = _mills_c_numpy(np.where(tail, -u, 10.0))
        with np.errstate(over="ignore"):
            lam = np.where(tail, -u + c_tail, np.exp(np.where(tail, 0.0, -0.5 * u * u - HALF_LOG_2PI - log_cdf)))
        c = np.where(tail, c_tail, lam + u)
        return log_cdf, s * lam, -lam * c
    if code == CODE_STUDENT_T:
        log_norm, a, nu1 = params[0], params[1], params[2]
        r = y - f
        d = a + r * r
        return log_norm - 0.5 * nu1 * np.log1p(r * r / a), nu1 * r / d, nu1 * (r * r - a) / (d * d)
    raise ValueError(f"likelihood code {code} has no quadrature rule")


def _expected_log_lik_numpy(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray,
                            nodes: np.ndarray, weights: np.ndarray, value: np.ndarray, grad_mean: np.ndarray,
                            grad_var: np.ndarray) -> None:
    if code == CODE_GAUSSIAN:
        log_norm, inv_noise = params[0], params[1]
        r = y - mean
        value[:] = log_norm - 0.5 * (r * r + var) * inv_noise
        grad_mean[:] = r * inv_noise
        grad_var[:] = -0.5 * inv_noise
        return
    if code == CODE_POISSON:
        with np.errstate(over="ignore"):
            rate = np.exp(mean + 0.5 * var)  # E[exp(f)]
        value[:] = y * mean - rate
        grad_mean[:] = y - rate
        grad_var[:] = -0.5 * rate
        return
    f = mean[:, None] + np.sqrt(var)[:, None] * nodes[None, :]
    g, g1, g2 = _node_terms_numpy(code, params, y[:, None], f)
    value[:] = g @ weights
    grad_mean[:] = g1 @ weights
    grad_var[:] = 0.5 * (g2 @ weights)




@njit(cache=True, parallel=True)
def _expected_log_lik_numba(code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var):
    for n in prange(y.shape[0]):
        a0, a1, a2 = _point_terms_nb(code, params, y[n], mean[n], var[n], nodes, weights)
        value[n] = a0
        grad_mean[n] = a1
        grad_var[n] = a2


# ---------------------------------------------------------------------------------------------------------------
# Wide factors: a composite Gauss–Legendre rule around the likelihood's feature (every backend)
# ---------------------------------------------------------------------------------------------------------------

def feature_scale(code: int, params: np.ndarray) -> float:
    """τ: the scale on which log p(y | f) varies (inf for the closed forms, which need no rule)."""
    if code in (CODE_BERNOULLI_LOGIT, CODE_BERNOULLI_PROBIT):
        return math.pi
    if code == CODE_STUDENT_T:
        return math.sqrt(params[1])
    return math.inf


def wide_rows(code: int, params: np.ndarray, var: np.ndarray, n_nodes: int) -> np.ndarray:
    """Rows whose sd is too wide for a K-node Gauss–Hermite rule: sd > WIDE_RESOLVE · τ · √(K/20)."""
    tau = feature_scale(code, params)
    if not math.isfinite(tau):
        return np.empty(0, dtype=np.int64)
    limit = WIDE_RESOLVE * tau * math.sqrt(n_nodes / 20.0)
    return np.flatnonzero(var > limit * limit)


def _expected_log_lik_wide_numpy(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E[g], E[g'], ½E[g'']) by a composite Gauss–Legendre rule in x = (f − m)/sd on [−10, 10].

    Breakpoints: every 0.5, and geometrically around the likelihood's feature x₀ = (f₀ − m)/sd (f₀ = 0 for the
    Bernoulli likelihoods, y for Student-t) at x₀ ± (τ/4sd)·2ʲ, so panels next to the feature are τ/4 wide in f
    and each further one at most as wide as its distance to it: 16 Gauss–Legendre nodes per panel then integrate
    the analytic integrand to ~1e-13 whatever sd is. O(n · 16 · (41 + 2 log₂(80 sd/τ))) evaluations.
    """
    tau = feature_scale(code, params)
    sd = np.sqrt(var)
    center = (y if code == CODE_STUDENT_T else np.zeros_like(y)) - mean
    x0 = np.clip(center / sd, -2.0 * WIDE_RANGE, 2.0 * WIDE_RANGE)
    h = 0.25 * tau / sd
    n_geo = int(np.clip(np.ceil(np.log2(4.0 * WIDE_RANGE / h.min())) + 1, 1, 200))
    steps = h[:, None] * 2.0 ** np.arange(n_geo)[None, :]
    uniform = np.broadcast_to(np.arange(-WIDE_RANGE, WIDE_RANGE + 0.5 * WIDE_UNIFORM, WIDE_UNIFORM),
                              (y.size, round(2 * WIDE_RANGE / WIDE_UNIFORM) + 1))
    cuts = np.concatenate([uniform, x0[:, None], x0[:, None] - steps, x0[:, None] + steps], axis=1)
    cuts = np.sort(np.clip(cuts, -WIDE_RANGE, WIDE_RANGE), axis=1)
    a, b = cuts[:, :-1], cuts[:, 1:]
    t, w = np.polynomial.legendre.leggauss(WIDE_PANEL_NODES)
    x = 0.5 * (a + b)[:, :, None] + 0.5 * (b - a)[:, :, None] * t[None, None, :]
    weights = 0.5 * (b - a)[:, :, None] * w[None, None, :] * np.exp(-0.5 * x * x) * INV_SQRT_2PI
    f = mean[:, None, None] + sd[:, None, None] * x
    g, g1, g2 = _node_terms_numpy(code, params, y[:, None, None], f)
    return ((weights * g).sum(axis=(1, 2)), (weights * g1).sum(axis=(1, 2)), 0.5 * (weights * g2).sum(axis=(1, 2)))


@functools.lru_cache(maxsize=32)
def gauss_hermite_rule(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite nodes and weights (summing to 1) for the standard normal; read-only, cached."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n_points)
    weights = weights / weights.sum()
    nodes = np.ascontiguousarray(nodes, dtype=np.float64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def _refine_wide(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray, n_nodes: int,
                 value: np.ndarray, grad_mean: np.ndarray, grad_var: np.ndarray, run=None) -> None:
    """Overwrite the rows too wide for the K-node rule: with a finer Gauss–Hermite rule (:data:`WIDE_LEVELS`) run
    by ``run(code, params, y, mean, var, nodes, weights) -> (value, grad_mean, grad_var)`` (the backend's kernel;
    NumPy when None) where that resolves them, else with the composite rule (in blocks of rows)."""
    rows = wide_rows(code, params, var, n_nodes)
    if rows.size == 0:
        return
    sd_over_tau = np.sqrt(var[rows]) / feature_scale(code, params)
    for level in WIDE_LEVELS:
        if level <= n_nodes or rows.size == 0:
            continue
        fits = sd_over_tau <= WIDE_RESOLVE * math.sqrt(level / 20.0)
        if fits.any():
            r = rows[fits]
            nodes, weights = gauss_hermite_rule(level)
            out = (run or _run_numpy)(code, params, y[r], mean[r], var[r], nodes, weights)
            value[r], grad_mean[r], grad_var[r] = out
            rows, sd_over_tau = rows[~fits], sd_over_tau[~fits]
    for start in range(0, rows.size, WIDE_BLOCK):
        r = rows[start:start + WIDE_BLOCK]
        value[r], grad_mean[r], grad_var[r] = _expected_log_lik_wide_numpy(code, params, y[r], mean[r], var[r])


# ---------------------------------------------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------------------------------------------

def _run_kernel(backend: str, code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray,
                nodes: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One backend's Gauss–Hermite kernel on C-contiguous rows (no refinement): (value, grad_mean, grad_var)."""
    n = y.shape[0]
    value = np.empty(n)
    grad_mean = np.empty(n)
    grad_var = np.empty(n)
    if backend == "numpy":
        _expected_log_lik_numpy(code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var)
    elif backend in ("cython", "numba"):
        # Slices of about SLICE_COST / n_nodes points, returning to Python in between (see SLICE_COST); a multiple
        # of 64 points, so the Cython kernel's 8-point vector blocks fall on the same points as in one call.
        n_threads = _config.threads_for(n)
        step = max(64, SLICE_COST // nodes.shape[0] // 64 * 64)
        for a in range(0, n, step):
            b = min(n, a + step)
            _run_compiled(backend, code, params, y[a:b], mean[a:b], var[a:b], nodes, weights, value[a:b],
                          grad_mean[a:b], grad_var[a:b], n_threads)
    else:
        from ._quadrature_cuda import expected_log_lik_cuda

        expected_log_lik_cuda(code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var)
    return value, grad_mean, grad_var


def _run_compiled(backend, code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var, n_threads):
    """One Cython or Numba kernel call over the points given (outputs written in place)."""
    if backend == "cython":
        from .._cy import load

        load("quadrature").cy_expected_log_lik(code, params, y, mean, var, nodes, weights, value, grad_mean,
                                                grad_var, n_threads)
    else:
        _config.apply_numba_threads(n_threads)
        _expected_log_lik_numba(code, params, y, mean, var, nodes, weights, value, grad_mean, grad_var)


def _run_numpy(code, params, y, mean, var, nodes, weights):
    return _run_kernel("numpy", code, params, y, mean, var, nodes, weights)


def run_expected_log_lik(code: int, params: np.ndarray, y: np.ndarray, mean: np.ndarray, var: np.ndarray,
                         nodes: np.ndarray, weights: np.ndarray, backend: str = "auto"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the kernel on validated input; returns (value, grad_mean, grad_var), each (N,) float64.

    ``y``, ``mean``, ``var`` are C-contiguous float64 (N,) arrays (``var >= 0``, ``y`` in the likelihood's
    support), ``params`` float64 (4,), ``nodes``/``weights`` float64 (K,) with Σ weights = 1.
    """
    backend = resolve(backend, size=y.shape[0], supported=SUPPORTED_BACKENDS)
    value, grad_mean, grad_var = _run_kernel(backend, code, params, y, mean, var, nodes, weights)
    # Factors too wide for the K-node rule (sd ≫ the likelihood's feature scale): a finer rule by the same kernel,
    # or the composite rule for the widest, on every backend alike.
    _refine_wide(code, params, y, mean, var, nodes.shape[0], value, grad_mean, grad_var,
                 run=functools.partial(_run_kernel, backend))
    if code == CODE_POISSON:
        from scipy.special import gammaln

        value -= gammaln(y + 1.0)
    return value, grad_mean, grad_var
