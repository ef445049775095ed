"""Exact references for a Gaussian-process model with a Gaussian likelihood, and a jittered Cholesky.

Model: f ~ N(0, K), yₙ | f ~ N(fₙ, σ²) (σ² = ``noise``). Everything here is closed form:

- the posterior p(f | y) = N(K (K + σ²I)⁻¹ y, K − K (K + σ²I)⁻¹ K);
- log p(y) = −½ yᵀ(K + σ²I)⁻¹y − ½ log|K + σ²I| − (n/2) log 2π, and its gradient in the log-hyperparameters;
- the full ELBO of any Gaussian q(f) = N(μ, S) (S diagonal or full), every constant included;
- the mean-field optimum: among q(f) = ∏ N(μₙ, sₙ²), the ELBO is maximised by the exact posterior mean and
  sₙ² = 1 / (K⁻¹ + σ⁻²I)ₙₙ (the diagonal of the posterior *precision*, not of the covariance).

A kernel matrix that is positive-definite in exact arithmetic can fail to factorise in floating point (smooth
kernels on dense inputs). :func:`jittered_cholesky` then adds an escalating multiple of the identity, warns with
:class:`JitterWarning` how much it added, and raises :class:`CholeskyError` only after its last try. Quantities
involving K⁻¹ (the prior term of the ELBO, the mean-field variances) are those of the jittered matrix K + jI that
was factorised, so that a numerical optimiser using the same factorisation reaches exactly these values.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._validate import as_float_array, check_int, check_scalar

__all__ = [
    "CholeskyError", "JitterWarning", "MeanFieldOptimum", "Posterior", "gaussian_elbo", "jittered_cholesky",
    "log_marginal_likelihood", "log_marginal_likelihood_grad", "mean_field_optimum", "posterior",
]

_LOG_2PI = math.log(2.0 * math.pi)


class JitterWarning(RuntimeWarning):
    """A Cholesky factorisation succeeded only after adding jitter to the diagonal."""


class CholeskyError(np.linalg.LinAlgError):
    """A matrix could not be factorised even with the largest jitter; ``jitter`` is the last amount tried."""

    def __init__(self, message: str, jitter: float) -> None:
        super().__init__(message)
        self.jitter = jitter


def _check_square(A: object, name: str) -> np.ndarray:
    arr = as_float_array(A, name, ndim=2)
    if arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix; got shape {arr.shape}.")
    scale = float(np.max(np.abs(arr)))
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > 1e-10 * scale:
        raise ValueError(f"{name} must be symmetric; got max |{name} - {name}.T| = {asym:.3g}.")
    return arr


def _cholesky_checked(arr: np.ndarray, name: str, initial_jitter: float, max_tries: int
                      ) -> tuple[np.ndarray, float]:
    try:
        return np.linalg.cholesky(arr), 0.0
    except np.linalg.LinAlgError:
        pass
    diag = np.diag(arr)
    scale = float(np.mean(np.abs(diag))) or 1.0
    eye = np.eye(arr.shape[0])
    jitter = 0.0
    for k in range(max_tries):
        jitter = initial_jitter * scale * 10.0**k
        try:
            L = np.linalg.cholesky(arr + jitter * eye)
        except np.linalg.LinAlgError:
            continue
        warnings.warn(f"{name} is not numerically positive-definite; added jitter {jitter:.3g} "
                      f"({jitter / scale:.1e} of its mean diagonal) to its diagonal to factorise it.",
                      JitterWarning, stacklevel=3)
        return L, jitter
    smallest = float(np.linalg.eigvalsh(0.5 * (arr + arr.T))[0])
    raise CholeskyError(f"{name} must be positive-definite; the Cholesky factorisation failed even with jitter "
                        f"{jitter:.3g} added to the diagonal (smallest eigenvalue {smallest:.3g}).", jitter)


def jittered_cholesky(A: object, *, name: str = "K", initial_jitter: float = 1e-10, max_tries: int = 8
                      ) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of a symmetric matrix, adding jitter to the diagonal only if needed.

    Parameters
    ----------
    A : array-like of shape (n, n)
        A symmetric (to 1e-10 relative) matrix, positive-definite in exact arithmetic.
    name : str
        The matrix's name in warnings and errors.
    initial_jitter : float
        First jitter tried, relative to the mean absolute diagonal of ``A``; each further try multiplies it by 10.
    max_tries : int
        Number of jitter values tried after the plain factorisation fails (default: up to 1e-3 relative).

    Returns
    -------
    L : ndarray of shape (n, n)
        Lower-triangular, with L Lᵀ = A + jitter · I.
    jitter : float
        The absolute jitter added (0.0 when A factorised as given).

    Raises
    ------
    CholeskyError
        If even the largest jitter fails (the message gives the smallest eigenvalue).
    ValueError
        If ``A`` is not a finite symmetric square matrix.

    Warns
    -----
    JitterWarning
        When jitter was added (the message says how much).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import jittered_cholesky
    >>> L, jitter = jittered_cholesky(np.array([[4.0, 2.0], [2.0, 2.0]]))
    >>> L.tolist(), jitter
    ([[2.0, 0.0], [1.0, 1.0]], 0.0)
    """
    arr = _check_square(A, name)
    initial_jitter = check_scalar(initial_jitter, "initial_jitter", positive=True)
    max_tries = check_int(max_tries, "max_tries", minimum=1)
    return _cholesky_checked(arr, name, initial_jitter, max_tries)


def _check_problem(K: object, y: object, noise: object) -> tuple[np.ndarray, np.ndarray, float]:
    K_arr = _check_square(K, "K")
    y_arr = as_float_array(y, "y", ndim=1)
    if y_arr.shape[0] != K_arr.shape[0]:
        raise ValueError(f"y must have one entry per row of K ({K_arr.shape[0]}); got length {y_arr.shape[0]}.")
    return K_arr, y_arr, check_scalar(noise, "noise", positive=True)


def _solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular

    return solve_triangular(L, b, lower=True, check_finite=False)


def _cho_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.linalg import cho_solve

    return cho_solve((L, True), b, check_finite=False)


@dataclass(frozen=True)
class Posterior:
    """The exact posterior p(f | y) = N(mean, cov) of a GP with a Gaussian likelihood.

    Attributes
    ----------
    mean : ndarray of shape (n,)
        E[f | y] = K (K + σ²I)⁻¹ y.
    cov : ndarray of shape (n, n)
        Cov(f | y) = K − K (K + σ²I)⁻¹ K (exactly symmetric).
    """

    mean: np.ndarray
    cov: np.ndarray


def posterior(K: object, y: object, noise: float) -> Posterior:
    """Exact posterior of f ~ N(0, K) given yₙ = fₙ + N(0, σ²) noise.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Prior covariance (Gram matrix) of f at the inputs.
    y : array-like of shape (n,)
        Observations.
    noise : float
        Noise variance σ² > 0.

    Returns
    -------
    Posterior
        ``mean`` (n,) and ``cov`` (n, n).

    Notes
    -----
    One Cholesky factorisation of K + σ²I = L Lᵀ (jittered if needed): α = (K + σ²I)⁻¹ y, mean = y − σ² α,
    V = L⁻¹K, cov = K − VᵀV. Cost O(n³).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import posterior
    >>> post = posterior(np.eye(2), [1.0, -1.0], noise=1.0)   # independent: shrink by half
    >>> np.round(post.mean, 12).tolist(), np.round(np.diag(post.cov), 12).tolist()
    ([0.5, -0.5], [0.5, 0.5])
    """
    K_arr, y_arr, noise = _check_problem(K, y, noise)
    L, _ = _cholesky_checked(K_arr + noise * np.eye(K_arr.shape[0]), "K + noise*I", 1e-10, 8)
    alpha = _cho_solve(L, y_arr)
    V = _solve_lower(L, K_arr)
    cov = K_arr - V.T @ V
    return Posterior(y_arr - noise * alpha, 0.5 * (cov + cov.T))


def log_marginal_likelihood(K: object, y: object, noise: float) -> float:
    """log p(y) = log N(y; 0, K + σ²I).

    Parameters
    ----------
    K : array-like of shape (n, n)
        Prior covariance of f.
    y : array-like of shape (n,)
        Observations.
    noise : float
        Noise variance σ² > 0.

    Returns
    -------
    float
        −½ yᵀ(K + σ²I)⁻¹y − Σ log Lᵢᵢ − (n/2) log 2π, with L the Cholesky factor of K + σ²I.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import log_marginal_likelihood
    >>> bool(np.isclose(log_marginal_likelihood(np.eye(1), [0.0], 1.0), -0.5 * np.log(2 * np.pi * 2.0)))
    True
    """
    K_arr, y_arr, noise = _check_problem(K, y, noise)
    L, _ = _cholesky_checked(K_arr + noise * np.eye(K_arr.shape[0]), "K + noise*I", 1e-10, 8)
    u = _solve_lower(L, y_arr)
    n = y_arr.shape[0]
    return float(-0.5 * (u @ u) - np.log(np.diag(L)).sum() - 0.5 * n * _LOG_2PI)


def log_marginal_likelihood_grad(K: object, dK: object, y: object, noise: float) -> tuple[float, np.ndarray]:
    """log p(y) and its gradient in the kernel's log-hyperparameters and the log noise variance.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Prior covariance of f (e.g. the first output of ``kernel.gram_and_grads(X)``).
    dK : array-like of shape (n_params, n, n)
        ∂K/∂θᵢ for each log-hyperparameter θᵢ (the second output of ``gram_and_grads``).
    y : array-like of shape (n,)
        Observations.
    noise : float
        Noise variance σ² > 0.

    Returns
    -------
    value : float
        log p(y).
    grad : ndarray of shape (n_params + 1,)
        ∂ log p(y)/∂θᵢ = ½ tr((ααᵀ − (K + σ²I)⁻¹) ∂K/∂θᵢ), then ∂ log p(y)/∂ log σ² (last entry).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import log_marginal_likelihood_grad
    >>> from avicore.gp.kernels import RBF
    >>> K, dK = RBF().gram_and_grads([0.0, 1.0])
    >>> value, grad = log_marginal_likelihood_grad(K, dK, [0.5, -0.5], noise=0.1)
    >>> grad.shape
    (3,)
    """
    K_arr, y_arr, noise = _check_problem(K, y, noise)
    n = K_arr.shape[0]
    dK_arr = as_float_array(dK, "dK", ndim=3)
    if dK_arr.shape[1:] != (n, n):
        raise ValueError(f"dK must have shape (n_params, {n}, {n}); got {dK_arr.shape}.")
    L, _ = _cholesky_checked(K_arr + noise * np.eye(n), "K + noise*I", 1e-10, 8)
    alpha = _cho_solve(L, y_arr)
    u = _solve_lower(L, y_arr)
    value = float(-0.5 * (u @ u) - np.log(np.diag(L)).sum() - 0.5 * n * _LOG_2PI)
    W = np.outer(alpha, alpha) - _cho_solve(L, np.eye(n))
    grad = np.empty(dK_arr.shape[0] + 1)
    grad[:-1] = 0.5 * np.einsum("ij,kji->k", W, dK_arr)
    grad[-1] = 0.5 * noise * np.trace(W)
    return value, grad


def _prior_terms(L_K: np.ndarray, mean: np.ndarray) -> tuple[float, np.ndarray]:
    """(μᵀK⁻¹μ + log|K|, diag(K⁻¹)) from the Cholesky factor of K."""
    u = _solve_lower(L_K, mean)
    L_inv = _solve_lower(L_K, np.eye(L_K.shape[0]))
    return float(u @ u + 2.0 * np.log(np.diag(L_K)).sum()), (L_inv * L_inv).sum(axis=0)


def gaussian_elbo(K: object, y: object, noise: float, mean: object, cov: object) -> float:
    """The full ELBO of q(f) = N(mean, cov) for f ~ N(0, K), yₙ ~ N(fₙ, σ²).

    Parameters
    ----------
    K : array-like of shape (n, n)
        Prior covariance (factorised with jitter if needed; the ELBO is then that of the jittered prior).
    y : array-like of shape (n,)
        Observations.
    noise : float
        Noise variance σ² > 0.
    mean : array-like of shape (n,)
        Mean of q.
    cov : array-like of shape (n,) or (n, n)
        Variances of a mean-field q (1-D, each > 0) or a full positive-definite covariance (2-D).

    Returns
    -------
    float
        E_q[log p(y | f)] + E_q[log p(f)] + H[q], every constant included (≤ log p(y), with equality exactly
        when q is the posterior).

    Notes
    -----
    E_q[log p(y | f)] = Σₙ −½ log(2πσ²) − ((yₙ − μₙ)² + Sₙₙ)/(2σ²);
    E_q[log p(f)] = −(n/2) log 2π − ½ log|K| − ½ μᵀK⁻¹μ − ½ tr(K⁻¹S);  H[q] = (n/2) log(2πe) + ½ log|S|.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import gaussian_elbo, log_marginal_likelihood, posterior
    >>> K, y = np.array([[1.0, 0.5], [0.5, 1.0]]), np.array([0.3, -0.2])
    >>> post = posterior(K, y, 0.1)
    >>> bool(np.isclose(gaussian_elbo(K, y, 0.1, post.mean, post.cov), log_marginal_likelihood(K, y, 0.1)))
    True
    """
    K_arr, y_arr, noise = _check_problem(K, y, noise)
    n = K_arr.shape[0]
    mean_arr = as_float_array(mean, "mean", shape=(n,))
    cov_arr = as_float_array(cov, "cov")
    L_K, _ = _cholesky_checked(K_arr, "K", 1e-10, 8)
    quad_logdet, diag_kinv = _prior_terms(L_K, mean_arr)
    if cov_arr.ndim == 1:
        if cov_arr.shape != (n,):
            raise ValueError(f"cov must have shape ({n},) (variances) or ({n}, {n}); got {cov_arr.shape}.")
        if (cov_arr <= 0).any():
            i = int(np.argmax(cov_arr <= 0))
            raise ValueError(f"cov must hold positive variances; got {float(cov_arr[i])!r} at index {i}.")
        var = cov_arr
        trace = float(diag_kinv @ var)
        logdet_q = float(np.log(var).sum())
    else:
        if cov_arr.shape != (n, n):
            raise ValueError(f"cov must have shape ({n},) (variances) or ({n}, {n}); got {cov_arr.shape}.")
        try:
            L_S = np.linalg.cholesky(0.5 * (cov_arr + cov_arr.T))
        except np.linalg.LinAlgError:
            raise ValueError("cov must be positive-definite; its Cholesky factorisation failed.") from None
        var = np.diag(cov_arr)
        M = _solve_lower(L_K, L_S)
        trace = float((M * M).sum())
        logdet_q = float(2.0 * np.log(np.diag(L_S)).sum())
    r = y_arr - mean_arr
    expected_lik = -0.5 * n * (_LOG_2PI + math.log(noise)) - 0.5 * float(r @ r + var.sum()) / noise
    expected_prior = -0.5 * n * _LOG_2PI - 0.5 * quad_logdet - 0.5 * trace
    entropy = 0.5 * n * (_LOG_2PI + 1.0) + 0.5 * logdet_q
    return expected_lik + expected_prior + entropy


@dataclass(frozen=True)
class MeanFieldOptimum:
    """The best fully factorised Gaussian q(f) = ∏ N(μₙ, sₙ²) for a GP with a Gaussian likelihood.

    Attributes
    ----------
    mean : ndarray of shape (n,)
        μ = the exact posterior mean.
    var : ndarray of shape (n,)
        sₙ² = 1 / ((K⁻¹)ₙₙ + 1/σ²): never larger than the exact posterior variances.
    elbo : float
        The full ELBO at the optimum (closed form, ≤ log p(y)).
    """

    mean: np.ndarray
    var: np.ndarray
    elbo: float


def mean_field_optimum(K: object, y: object, noise: float) -> MeanFieldOptimum:
    """The F-VI optimum of a GP with a Gaussian likelihood, in closed form.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Prior covariance (jittered if it does not factorise; see the module notes).
    y : array-like of shape (n,)
        Observations.
    noise : float
        Noise variance σ² > 0.

    Returns
    -------
    MeanFieldOptimum
        ``mean``, ``var`` and the full ``elbo``.

    Notes
    -----
    The target p(f | y) is Gaussian with precision Λ = K⁻¹ + σ⁻²I; the mean-field Gaussian minimising
    KL(q‖p) matches its mean and has variances 1/Λₙₙ. Cost O(n³) (two Cholesky factorisations and K⁻¹'s diagonal).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.exact import mean_field_optimum
    >>> opt = mean_field_optimum(np.array([[1.0, 0.9], [0.9, 1.0]]), [1.0, 1.0], noise=1.0)
    >>> bool(np.all(opt.var < 1.0))
    True
    """
    K_arr, y_arr, noise = _check_problem(K, y, noise)
    L_K, jitter = _cholesky_checked(K_arr, "K", 1e-10, 8)
    if jitter:
        K_arr = K_arr + jitter * np.eye(K_arr.shape[0])  # the prior that was factorised
    post_mean = posterior(K_arr, y_arr, noise).mean
    _, diag_kinv = _prior_terms(L_K, post_mean)
    var = 1.0 / (diag_kinv + 1.0 / noise)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)  # already warned above for the same K
        elbo = gaussian_elbo(K_arr, y_arr, noise, post_mean, var)
    return MeanFieldOptimum(post_mean, var, elbo)
