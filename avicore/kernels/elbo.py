"""Fused reparameterised ELBO-gradient pass for simple hierarchical models: NumPy reference, Numba, dispatcher.

For a batch of rows n (dataset indices ``index[n]``), Monte-Carlo samples s and latent coordinates j::

    ε[n, s, j] = counter normal (seed, step, STREAM_LOCAL, index[n], s·d + j)      (kernels/_counter_normal.py)
    z[n, s]    = mean[n] + exp(log_scale[n]) ⊙ ε[n, s]
    ℓ, g_z, g_θ = log p(z[n, s], x[n] | θ_s) and its gradients in z and θ

    log_joint[s]         = Σₙ ℓ                       grad_global[s]  = Σₙ g_θ
    grad_mean[n]         = (1/S) Σ_s g_z               grad_log_scale[n] = (1/S) Σ_s g_z ⊙ ε[n, s] ⊙ exp(log_scale[n])

The compiled versions make one pass over n (parallel over fixed-size chunks of rows), draw ε on the fly and keep
no N × S temporaries. Each chunk writes its own partial sums of ``log_joint`` and ``grad_global`` (one padded row
per chunk, :func:`partial_stride`); the partials are added in chunk order afterwards, so the result does not depend
on the thread count. The chunk size depends
only on S (:func:`chunk_rows`). The built-in models are scalar (every dimension 1) and their compiled loops
(Cython, Numba, CUDA) are written for scalars, with the per-row constants (row key, exp(log_scale), xₙ, mₙ)
hoisted out of the sample loop; the generic loop for user models handles any dimensions.

Built-in models are selected by an integer id with a float64 parameter vector (the same ids in Cython and CUDA;
:mod:`avicore.models.hierarchical` builds the vectors):

======================  ====  ===================================================================
model                   id    params
======================  ====  ===================================================================
linear hierarchical     0     (τ, 1/σ², −log 2π − log σ)
nonlinear hierarchical  1     (−log 2π,)
======================  ====  ===================================================================

User-defined models (``CustomHierarchical``) pass a Numba-compiled ``log_density_grad(x_n, z_n, theta, grad_z,
grad_theta) -> float`` instead: backends ``numpy`` (a Python loop calling it) and ``numba`` (the generic fused
loop, compiled once per function).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .. import _config
from ..models.base import LocalTerms
from ._counter_normal import STREAM_LOCAL, normal_nb, normals_numpy, row_key_nb, stream_key
from ._elbo_partials import reduce_partials

MODEL_LINEAR = 0
MODEL_NONLINEAR = 1
BUILTIN_BACKENDS = ("numpy", "cython", "numba", "cuda")
CUSTOM_BACKENDS = ("numpy", "numba")

# Rows × samples a chunk aims at: big enough to amortise a chunk's set-up, small enough to balance threads.
_CHUNK_WORK = 1 << 15


def chunk_rows(n_samples: int) -> int:
    """Rows per chunk of the CPU kernels: depends on S only, so partial sums never depend on the thread count."""
    return int(min(4096, max(16, _CHUNK_WORK // max(1, n_samples))))


def partial_stride(n_samples: int, n_global: int) -> int:
    """Row length of the per-chunk partial buffer: [log_joint (S) | grad_global (S·G) | ≥ 64 bytes of padding].

    The padding keeps two chunks' partial sums off a shared cache line (no false sharing between threads).
    """
    return -(-n_samples * (1 + n_global) // 8) * 8 + 8


# ---------------------------------------------------------------------------------------------------------------
# Model densities: NumPy (vectorised, broadcasting) and Numba (one row and one sample)
# ---------------------------------------------------------------------------------------------------------------

def linear_density_numpy(params: np.ndarray, x: np.ndarray, z: np.ndarray,
                         theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(z, x | θ) = −z²/2 − (x − θ − τz)²/(2σ²) − log 2π − log σ with gradients, broadcasting over leading axes.

    ``x`` (..., 1), ``z`` (..., 1), ``theta`` (..., 1) → (value (...), grad_z (..., 1), grad_theta (..., 1)).
    """
    tau, inv_s2, const = params
    r = x - theta - tau * z
    value = const - 0.5 * z[..., 0] ** 2 - 0.5 * inv_s2 * r[..., 0] ** 2
    return value, -z + tau * inv_s2 * r, inv_s2 * r


def nonlinear_density_numpy(params: np.ndarray, x: np.ndarray, z: np.ndarray,
                            theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(z, x | θ) for z ~ N(0, 1), x ~ N(θ + z + z sin z, exp(cos z)²), with gradients (shapes as linear)."""
    const = params[0]
    sz, cz = np.sin(z), np.cos(z)
    w = np.exp(-2.0 * cz)
    r = x - theta - z - z * sz
    value = const - cz[..., 0] - 0.5 * z[..., 0] ** 2 - 0.5 * (w * r * r)[..., 0]
    grad_z = -z + sz + w * r * (1.0 + sz + z * cz) - w * r * r * sz
    return value, grad_z, w * r


NUMPY_DENSITIES = {MODEL_LINEAR: linear_density_numpy, MODEL_NONLINEAR: nonlinear_density_numpy}


@njit(cache=True, inline="always")
def linear_density_nb(params, x, z, theta):
    """Numba twin of :func:`linear_density_numpy` for scalars → (value, ∂z, ∂θ)."""
    r = x - theta - params[0] * z
    t = params[1] * r
    return params[2] - 0.5 * z * z - 0.5 * r * t, params[0] * t - z, t


@njit(cache=True, inline="always")
def nonlinear_density_nb(params, x, z, theta):
    """Numba twin of :func:`nonlinear_density_numpy` for scalars → (value, ∂z, ∂θ)."""
    sz = math.sin(z)
    cz = math.cos(z)
    w = math.exp(-2.0 * cz)
    r = x - theta - z - z * sz
    wr = w * r
    grad_z = -z + sz + wr * (1.0 + sz + z * cz) - wr * r * sz
    return params[0] - cz - 0.5 * z * z - 0.5 * wr * r, grad_z, wr


# ---------------------------------------------------------------------------------------------------------------
# NumPy reference
# ---------------------------------------------------------------------------------------------------------------

def _assemble(eps: np.ndarray, scale: np.ndarray, value: np.ndarray, grad_z: np.ndarray,
              grad_theta: np.ndarray) -> LocalTerms:
    return LocalTerms(log_joint=value.sum(axis=0), grad_mean=grad_z.mean(axis=1),
                      grad_log_scale=(grad_z * eps).mean(axis=1) * scale, grad_global=grad_theta.sum(axis=0))


def local_terms_numpy(model_id: int, params: np.ndarray, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                      theta: np.ndarray, key: int, index: np.ndarray) -> LocalTerms:
    """The reference pass, vectorised over (n, s) with N × S temporaries."""
    eps = normals_numpy(key, index, theta.shape[0], mean.shape[1])
    scale = np.exp(log_scale)
    z = mean[:, None, :] + scale[:, None, :] * eps
    value, grad_z, grad_theta = NUMPY_DENSITIES[model_id](params, x[:, None, :], z, theta[None, :, :])
    return _assemble(eps, scale, value, grad_z, grad_theta)


def local_terms_custom_numpy(density: Callable, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                             theta: np.ndarray, key: int, index: np.ndarray) -> LocalTerms:
    """The reference pass for a user's ``log_density_grad``: a Python loop over (n, s)."""
    n_rows, d = mean.shape
    n_samples, n_global = theta.shape
    eps = normals_numpy(key, index, n_samples, d)
    scale = np.exp(log_scale)
    z = mean[:, None, :] + scale[:, None, :] * eps
    value = np.empty((n_rows, n_samples))
    grad_z = np.empty((n_rows, n_samples, d))
    grad_theta = np.empty((n_rows, n_samples, n_global))
    for n in range(n_rows):
        for s in range(n_samples):
            value[n, s] = density(x[n], z[n, s], theta[s], grad_z[n, s], grad_theta[n, s])
    return _assemble(eps, scale, value, grad_z, grad_theta)


# ---------------------------------------------------------------------------------------------------------------
# Numba: one pass over chunks of rows, ε drawn on the fly
# ---------------------------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def _fused_builtin_numba(model, params, x, mean, log_scale, theta, key, index, chunk, part, grad_mean,
                         grad_log_scale):  # pragma: no cover - compiled
    # Scalar built-in models (every dimension 1): per-row constants hoisted, everything in registers.
    n_rows = mean.shape[0]
    n_samples = theta.shape[0]
    inv_s = 1.0 / n_samples
    for c in prange(part.shape[0]):
        part[c, :] = 0.0
        for n in range(c * chunk, min(n_rows, (c + 1) * chunk)):
            row = row_key_nb(key, index[n])
            scale = math.exp(log_scale[n, 0])
            xn = x[n, 0]
            mn = mean[n, 0]
            acc_m = 0.0
            acc_ls = 0.0
            for s in range(n_samples):
                e = normal_nb(row, s)
                z = mn + scale * e
                if model == 0:
                    lp, gz, gt = linear_density_nb(params, xn, z, theta[s, 0])
                else:
                    lp, gz, gt = nonlinear_density_nb(params, xn, z, theta[s, 0])
                part[c, s] += lp
                part[c, n_samples + s] += gt
                acc_m += gz
                acc_ls += gz * e
            grad_mean[n, 0] = acc_m * inv_s
            grad_log_scale[n, 0] = acc_ls * inv_s * scale


@njit(parallel=True)
def _fused_custom_numba(density, x, mean, log_scale, theta, key, index, chunk, part, grad_mean,
                        grad_log_scale):  # pragma: no cover - compiled
    # The generic loop (any latent/global/observation dimension) around the user's function. Not cached: it takes
    # a function argument, so Numba compiles it once per function and process.
    n_rows, d = mean.shape
    n_samples, n_global = theta.shape
    inv_s = 1.0 / n_samples
    for c in prange(part.shape[0]):
        z = np.empty(d)
        eps = np.empty(d)
        scale = np.empty(d)
        acc_m = np.empty(d)
        acc_ls = np.empty(d)
        gz = np.empty(d)
        gt = np.empty(n_global)
        part[c, :] = 0.0
        for n in range(c * chunk, min(n_rows, (c + 1) * chunk)):
            row = row_key_nb(key, index[n])
            for j in range(d):
                scale[j] = math.exp(log_scale[n, j])
                acc_m[j] = 0.0
                acc_ls[j] = 0.0
            for s in range(n_samples):
                for j in range(d):
                    e = normal_nb(row, s * d + j)
                    eps[j] = e
                    z[j] = mean[n, j] + scale[j] * e
                lp = density(x[n], z, theta[s], gz, gt)
                part[c, s] += lp
                for j in range(d):
                    acc_m[j] += gz[j]
                    acc_ls[j] += gz[j] * eps[j]
                for k in range(n_global):
                    part[c, n_samples + s * n_global + k] += gt[k]
            for j in range(d):
                grad_mean[n, j] = acc_m[j] * inv_s
                grad_log_scale[n, j] = acc_ls[j] * inv_s * scale[j]


# ---------------------------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------------------------

def _outputs(n_rows: int, d: int, n_samples: int, n_global: int, n_parts: int, out: LocalTerms | None):
    grad_mean = np.empty((n_rows, d)) if out is None else out.grad_mean
    grad_log_scale = np.empty((n_rows, d)) if out is None else out.grad_log_scale
    return np.empty((n_parts, partial_stride(n_samples, n_global))), grad_mean, grad_log_scale


def _copy_into(terms: LocalTerms, out: LocalTerms | None) -> LocalTerms:
    if out is None:
        return terms
    for name in ("log_joint", "grad_mean", "grad_log_scale", "grad_global"):
        np.copyto(getattr(out, name), getattr(terms, name))
    return out


def local_terms(model_id: int, params: np.ndarray, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                theta: np.ndarray, *, seed: int, step: int, index: np.ndarray, backend: str,
                out: LocalTerms | None = None) -> LocalTerms:
    """Run the fused pass of a built-in model on a resolved ``backend`` (inputs already checked by the model).

    ``out``, when given, receives the results (its arrays are overwritten and it is returned).
    """
    key = stream_key(seed, step, STREAM_LOCAL)
    if backend == "numpy":
        return _copy_into(local_terms_numpy(model_id, params, x, mean, log_scale, theta, key, index), out)
    if backend == "cuda":
        from ._elbo_cuda import local_terms_cuda

        return _copy_into(local_terms_cuda(model_id, params, x, mean, log_scale, theta, key, index), out)
    n_rows, d = mean.shape
    n_samples, n_global = theta.shape
    chunk = chunk_rows(n_samples)
    n_parts = -(-n_rows // chunk)
    part, grad_mean, grad_log_scale = _outputs(n_rows, d, n_samples, n_global, n_parts, out)
    threads = _config.threads_for(n_rows * n_samples, 2048)
    if backend == "cython":
        from .._cy import load

        load("elbo").cy_local_terms(model_id, params, x, mean, log_scale, theta, np.uint64(key), index, chunk,
                                    part, grad_mean, grad_log_scale, min(threads, n_parts))
    elif backend == "numba":
        _config.apply_numba_threads(threads)
        _fused_builtin_numba(model_id, params, x, mean, log_scale, theta, np.uint64(key), index, chunk, part,
                             grad_mean, grad_log_scale)
    else:
        raise ValueError(f"backend must be one of {BUILTIN_BACKENDS}; got {backend!r}.")
    return reduce_partials(part, n_samples, n_global, grad_mean, grad_log_scale, out)


def local_terms_custom(density: Callable, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                       theta: np.ndarray, *, seed: int, step: int, index: np.ndarray, backend: str,
                       out: LocalTerms | None = None) -> LocalTerms:
    """The fused pass for a user's Numba-compiled ``log_density_grad`` on backend ``numpy`` or ``numba``."""
    key = stream_key(seed, step, STREAM_LOCAL)
    if backend == "numpy":
        return _copy_into(local_terms_custom_numpy(density, x, mean, log_scale, theta, key, index), out)
    if backend != "numba":
        raise ValueError(f"backend must be one of {CUSTOM_BACKENDS} for a custom model; got {backend!r}.")
    n_rows, d = mean.shape
    n_samples, n_global = theta.shape
    chunk = chunk_rows(n_samples)
    n_parts = -(-n_rows // chunk)
    part, grad_mean, grad_log_scale = _outputs(n_rows, d, n_samples, n_global, n_parts, out)
    _config.apply_numba_threads(_config.threads_for(n_rows * n_samples, 2048))
    _fused_custom_numba(density, x, mean, log_scale, theta, np.uint64(key), index, chunk, part, grad_mean,
                        grad_log_scale)
    return reduce_partials(part, n_samples, n_global, grad_mean, grad_log_scale, out)


# ---------------------------------------------------------------------------------------------------------------
# The full-batch pass with the local Adam step fused in (F-VI, Cython)
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusedPass:
    """What :class:`FusedLocalAdam` returns: the pass's sums (per sample) and its reductions of the locals.

    Attributes
    ----------
    log_joint : ndarray of shape (n_samples,)
    grad_global : ndarray of shape (n_samples, 1)
        As :class:`~avicore.models.base.LocalTerms`.
    sum_log_scale, min_log_scale, max_log_scale : float
        Σₙ log sₙ, min and max of the log scales the pass read (before the update).
    n_nonfinite : int
        Number of non-finite Adam gradients ĝ (the update is meaningless unless it is 0).
    """

    log_joint: np.ndarray
    grad_global: np.ndarray
    sum_log_scale: float
    min_log_scale: float
    max_log_scale: float
    n_nonfinite: int


class FusedLocalAdam:
    """F-VI's full-batch pass of a built-in model with the dense Adam step of every (mₙ, log sₙ) fused into it.

    One sweep over the per-row state instead of two (the pass, then Adam over the means and the log scales):
    each chunk's per-row gradients stay in a per-thread buffer and feed Adam at once. The buffers (per-chunk
    partials, per-thread gradients) are allocated once, here, for a fit's (N, S). The update writes the new
    parameters to separate arrays, so the state the ELBO estimate belongs to stays intact until the engine
    accepts the step. Same bits as :func:`local_terms` followed by :meth:`avicore.optim.Adam.step` on the means
    (ĝ = g) and the log scales (ĝ = g + 1) for any thread count; Σ log sₙ is summed per chunk in chunk order (NumPy's
    pairwise ``np.sum`` may differ from it in the last bits).

    Parameters
    ----------
    model_id : int
        Built-in model id (:data:`MODEL_LINEAR`, :data:`MODEL_NONLINEAR`).
    params : ndarray
        The model's kernel parameters.
    n_rows, n_samples : int
        N and S of the fit.
    """

    def __init__(self, model_id: int, params: np.ndarray, n_rows: int, n_samples: int) -> None:
        from .._cy import load

        self._cy = load("elbo")
        self.model_id, self.params, self.n_samples = model_id, params, n_samples
        self.chunk = chunk_rows(n_samples)
        self.n_chunks = -(-n_rows // self.chunk)
        extra = self._cy.FUSED_EXTRA_COLUMNS
        self.part = np.empty((self.n_chunks, partial_stride(n_samples, 1) + extra))
        self.threads = max(1, min(_config.threads_for(n_rows * n_samples, 2048), self.n_chunks))
        self.scratch = np.empty((self.threads, 2 * self._cy.MAX_CHUNK_ROWS))
        self.coef = np.empty(5)

    def __call__(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *, seed: int,
                 step: int, moments: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], mean_out: np.ndarray,
                 log_scale_out: np.ndarray, adam_step: float, beta1: float, beta2: float, sqrt_bc2: float,
                 eps: float) -> FusedPass:
        """Run one pass. ``moments`` = (m, v) of the means, then of the log scales, updated in place; the new
        parameters land in ``mean_out`` and ``log_scale_out``; ``adam_step`` = lr / (1 − β₁ᵗ) (signed) and
        ``sqrt_bc2`` = √(1 − β₂ᵗ) as in :meth:`avicore.optim.Adam.step`."""
        self.coef[:] = (adam_step, beta1, beta2, sqrt_bc2, eps)
        key = stream_key(seed, step, STREAM_LOCAL)
        self._cy.cy_local_terms_adam(self.model_id, self.params, x, mean, log_scale, theta, np.uint64(key),
                                     self.chunk, self.part, *moments, mean_out, log_scale_out, self.coef,
                                     self.scratch, self.threads)
        s = self.n_samples
        sums = self.part[:, :2 * s + 1].sum(axis=0)  # chunk order (NumPy's axis-0 reduction)
        extra = self.part[:, 2 * s:]
        return FusedPass(log_joint=sums[:s], grad_global=sums[s:2 * s].reshape(s, 1), sum_log_scale=float(sums[2 * s]),
                         min_log_scale=float(extra[:, 1].min()), max_log_scale=float(extra[:, 2].max()),
                         n_nonfinite=int(extra[:, 3].sum()))
