"""Expected log-likelihoods under Gaussian factors, with gradients: E_{N(m, v)}[log p(y | f)].

The workhorse of variational inference in latent Gaussian models (Gaussian processes with non-Gaussian
likelihoods): for each point the expectation, and its derivatives in the mean and the variance of q(f), in
closed form where one exists (Gaussian, Poisson with log link) and by Gauss–Hermite quadrature otherwise
(Bernoulli logit/probit, Student-t), on the numpy, cython, numba or cuda backend.

GPU arrays: when ``y``, ``mean`` and ``var`` are device arrays (``__cuda_array_interface__`` or CUDA DLPack: CuPy,
PyTorch, JAX, Numba), the work runs on the GPU with no host round trip and the results are device arrays — CuPy
arrays when CuPy is importable, else Numba device arrays (:mod:`avicore._device`). They are checked where they live
(float64, C-contiguous; values and the likelihood's support on the device); ``backend`` must then be ``"auto"`` or
``"cuda"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._device import any_device
from ._validate import as_float_array, check_device_array, check_int

__all__ = ["ExpectedLogLik", "expected_log_lik", "gauss_hermite"]

#: Largest number of Gauss–Hermite nodes (numpy's node/weight computation loses the weights beyond ~300).
MAX_POINTS = 256


@dataclass(frozen=True)
class ExpectedLogLik:
    """E_q[log p(yₙ | fₙ)] per point under q(fₙ) = N(meanₙ, varₙ), and its gradients.

    Attributes
    ----------
    value : ndarray of shape (n,)
        E_q[log p(yₙ | fₙ)].
    grad_mean : ndarray of shape (n,)
        ∂ value / ∂ meanₙ = E_q[∂/∂f log p(yₙ | f)].
    grad_var : ndarray of shape (n,)
        ∂ value / ∂ varₙ = ½ E_q[∂²/∂f² log p(yₙ | f)].
    """

    value: np.ndarray
    grad_mean: np.ndarray
    grad_var: np.ndarray


#: Largest |y| and |mean| the kernels accept (var: its square): their squares stay far from float64's limit.
_MAX_ABS = 1e150


def gauss_hermite(n_points: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss–Hermite rule for the standard normal: E[h(x)] ≈ Σᵢ wᵢ h(xᵢ).

    Parameters
    ----------
    n_points : int
        Number of nodes K, 1 ≤ K ≤ 256. The rule is exact for polynomials of degree ≤ 2K − 1.

    Returns
    -------
    nodes : ndarray of shape (n_points,)
        The nodes xᵢ (roots of the Hermite polynomial He_K), ascending. Read-only (cached).
    weights : ndarray of shape (n_points,)
        Positive weights summing to 1. Read-only (cached).

    Examples
    --------
    >>> from avicore.quadrature import gauss_hermite
    >>> x, w = gauss_hermite(5)
    >>> round(float((w * x**4).sum()), 12)  # E[x⁴] = 3
    3.0
    """
    from .kernels.quadrature import gauss_hermite_rule

    n_points = check_int(n_points, "n_points", minimum=1, maximum=MAX_POINTS)
    return gauss_hermite_rule(n_points)


def expected_log_lik(likelihood: object, y: object, mean: object, var: object, *, n_points: int = 20,
                     backend: str = "auto") -> ExpectedLogLik:
    """E_{N(mean, var)}[log p(y | f)] for each point, and its gradients in the mean and the variance.

    Parameters
    ----------
    likelihood : avicore.gp.likelihoods.Likelihood
        ``Gaussian(noise)``, ``Poisson()``, ``Bernoulli(link)`` or ``StudentT(df, scale)``.
    y : array-like of shape (n,)
        Observations, in the likelihood's support (Bernoulli: 0/1; Poisson: non-negative integers).
    mean : array-like of shape (n,)
        Means of the Gaussian factors q(fₙ) (finite).
    var : array-like of shape (n,)
        Variances of q(fₙ) (finite, ≥ 0; 0 evaluates log p(y | mean)).
    n_points : int
        Gauss–Hermite nodes, 1 ≤ n_points ≤ 256 (ignored by the closed forms: Gaussian, Poisson).
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Where to compute (see :func:`avicore.backends.resolve`).

    Returns
    -------
    ExpectedLogLik
        ``value``, ``grad_mean``, ``grad_var``, each float64 of shape (n,).

    Raises
    ------
    TypeError
        If ``likelihood`` is not an avicore likelihood, or an array is not numeric.
    ValueError
        If the arrays are not 1-D of one length, hold NaN/inf, ``var`` is negative, ``y`` is outside the
        support, or ``n_points``/``backend`` is invalid.
    RuntimeError
        If the requested backend is unavailable here.

    Notes
    -----
    Closed forms: Gaussian, E = −½ log(2πσ²) − ((y − m)² + v)/(2σ²); Poisson with log link,
    E = y m − exp(m + v/2) − log y! (−inf, never NaN, once exp(m + v/2) exceeds the float64 range).
    Otherwise E ≈ Σᵢ wᵢ g(m + √v xᵢ), ∂E/∂m ≈ Σᵢ wᵢ g'(·), ∂E/∂v ≈ ½ Σᵢ wᵢ g''(·) with the analytic derivatives
    of g = log p(y | ·), evaluated without overflow for any mean (log-sigmoid through softplus, the probit
    through erfc and, in the far tail, a continued fraction for the Mills ratio). The gradients are those of
    the quadrature rule itself only up to quadrature error. Cost: O(n · K); the compiled backends make
    one pass over the points, in parallel, with no (N, K) temporaries. Points whose sd is too wide for K nodes to
    resolve the likelihood's feature (sd > 0.3 τ √(K/20), τ = π for Bernoulli, √(ν s²) for Student-t: beyond
    it 20 nodes lose accuracy — 2e-6 relative at var 2 for the logit, 7e-3 at var 10) are recomputed by the same
    kernel with a finer rule of 80 or 256 nodes where that resolves them (sd ≤ 0.6 τ, ≤ 1.07 τ), and by a
    composite Gauss–Legendre rule around the feature beyond that (relative error ~1e-13 at any variance), on every
    backend alike (:func:`avicore.kernels.quadrature.wide_rows`, :data:`~avicore.kernels.quadrature.WIDE_LEVELS`).
    The compiled CPU backends evaluate long inputs in slices of points (same bits), so ``KeyboardInterrupt`` stops
    them within a fraction of a second.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.likelihoods import Bernoulli
    >>> from avicore.quadrature import expected_log_lik
    >>> res = expected_log_lik(Bernoulli("logit"), [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], backend="numpy")
    >>> bool(np.isclose(res.value[0], np.log(0.5)))
    True
    """
    from .gp.likelihoods import Likelihood

    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be an avicore.gp.likelihoods.Likelihood (Gaussian, Poisson, Bernoulli, "
                        f"StudentT); got {type(likelihood).__name__}.")
    nodes, weights = gauss_hermite(n_points)
    if any_device(y, mean, var):
        return _expected_log_lik_on_device(likelihood, y, mean, var, nodes, weights, backend)
    y_arr = likelihood.check_y(y, "y")
    n = y_arr.shape[0]
    mean_arr = as_float_array(mean, "mean", ndim=1)
    var_arr = as_float_array(var, "var", ndim=1)
    for name, arr in (("mean", mean_arr), ("var", var_arr)):
        if arr.shape[0] != n:
            raise ValueError(f"{name} must have the length of y ({n}); got length {arr.shape[0]}.")
    if (var_arr < 0).any():
        i = int(np.argmax(var_arr < 0))
        raise ValueError(f"var must be >= 0 (variances); got {float(var_arr[i])!r} at index {i}.")
    # the kernels square residuals and standard deviations: beyond these magnitudes they overflow float64
    for name, arr, limit in (("y", y_arr, _MAX_ABS), ("mean", mean_arr, _MAX_ABS), ("var", var_arr, _MAX_ABS**2)):
        big = np.abs(arr) > limit
        if big.any():
            i = int(np.argmax(big))
            raise ValueError(f"{name} must lie within ±{limit:.0e} (its square must not overflow float64); got "
                             f"{float(arr[i])!r} at index {i}.")

    from .kernels.quadrature import run_expected_log_lik

    value, grad_mean, grad_var = run_expected_log_lik(likelihood._code, likelihood._kernel_params(), y_arr,
                                                      mean_arr, var_arr, nodes, weights, backend)
    return ExpectedLogLik(value, grad_mean, grad_var)


#: What y must hold on the device, by likelihood code: (low, high, integral, expectation for the message).
_Y_SUPPORT = {
    1: (0.0, np.inf, True, "contain non-negative integers (counts) for a Poisson likelihood"),
    2: (0.0, 1.0, True, "contain only 0 and 1 for a Bernoulli likelihood"),
    3: (0.0, 1.0, True, "contain only 0 and 1 for a Bernoulli likelihood"),
}


def _expected_log_lik_on_device(likelihood: object, y: object, mean: object, var: object, nodes: np.ndarray,
                                weights: np.ndarray, backend: str) -> ExpectedLogLik:
    """The device-array path of :func:`expected_log_lik`: checks on the device, results as device arrays."""
    from . import _device
    from .kernels._quadrature_cuda import expected_log_lik_device

    _device.require_cuda(backend)
    arrays = {}
    for name, arr in (("y", y), ("mean", mean), ("var", var)):
        if not _device.is_device_array(arr):
            raise TypeError(f"{name} must be a device array like the other arrays (y, mean and var live on one "
                            f"device); got {type(arr).__name__}.")
        low, high, integral, what = _Y_SUPPORT.get(likelihood._code, (-np.inf, np.inf, False, "be finite")) \
            if name == "y" else ((0.0, np.inf, False, "be finite and >= 0 (variances)") if name == "var"
                                 else (-np.inf, np.inf, False, "be finite"))
        arrays[name] = check_device_array(arr, name, ndims=(1,), low=low, high=high, integral=integral,
                                          what=what)
    n = arrays["y"].shape[0]
    for name in ("mean", "var"):
        if arrays[name].shape[0] != n:
            raise ValueError(f"{name} must have the length of y ({n}); got length {arrays[name].shape[0]}.")
    value, grad_mean, grad_var = expected_log_lik_device(likelihood._code, likelihood._kernel_params(),
                                                         arrays["y"], arrays["mean"], arrays["var"], nodes, weights)
    _refine_wide_on_device(likelihood._code, likelihood._kernel_params(), arrays, nodes.shape[0],
                           (value, grad_mean, grad_var))
    return ExpectedLogLik(value, grad_mean, grad_var)


def _refine_wide_on_device(code: int, params: np.ndarray, arrays: dict, n_nodes: int, outputs: tuple) -> None:
    """The host backends' composite rule for factors too wide for the Gauss–Hermite rule, on device results.

    One device pass looks for such a factor (only its index comes back); in the common case there is none and
    nothing leaves the device. Otherwise the arrays make one round trip and the wide rows are recomputed by the
    same code as on every other backend, so all backends agree."""
    from . import _device
    from .kernels.quadrature import WIDE_RESOLVE, _refine_wide, feature_scale

    tau = feature_scale(code, params)
    if not np.isfinite(tau):
        return
    limit = WIDE_RESOLVE * tau * np.sqrt(n_nodes / 20.0)
    if _device.first_violation(arrays["var"], high=limit * limit) < 0:
        return
    y, mean, var = (arrays[k].copy_to_host() for k in ("y", "mean", "var"))
    views = [_device.as_numba(out, "result") for out in outputs]
    host = [view.copy_to_host() for view in views]
    _refine_wide(code, params, y, mean, var, n_nodes, *host)
    for view, values in zip(views, host):
        view.copy_to_device(values)
