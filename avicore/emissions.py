"""Emission log-likelihoods ``log_lik[t, k] = log p(x_t | z_t = k)`` for :mod:`avicore.hmm`.

Each function validates its input and returns a C-contiguous float64 array of shape (n_samples, n_states), ready
for :func:`avicore.hmm.forward_backward`. Every constant of the densities is included.

GPU arrays: when ``X`` (``symbols``) is a device array (``__cuda_array_interface__`` or CUDA DLPack: CuPy, PyTorch,
JAX, Numba), it is checked on the device (shape and dtype float64 — int32/int64 symbols — on the host, values on
the device) and the result is computed there by :mod:`avicore.kernels._emissions_cuda` and returned as a device
array: a CuPy array when CuPy is importable, else a Numba device array (see :mod:`avicore._device`). The small
parameter arrays may live on either side.

- :func:`gaussian_diag_log_lik`: Gaussian with a diagonal covariance per state.
- :func:`gaussian_full_log_lik`: Gaussian with a full covariance per state (Cholesky solves).
- :func:`categorical_log_lik`: one symbol per step from a per-state categorical distribution.
- :func:`poisson_log_lik`: independent Poisson counts per feature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _device, _validate

__all__ = ["categorical_log_lik", "gaussian_diag_log_lik", "gaussian_full_log_lik", "poisson_log_lik"]

_LOG_2PI = math.log(2.0 * math.pi)
_TINY = float(np.finfo(np.float64).tiny)
#: Most ``rows x n_states x (n_features + 4)`` one compiled emission call computes (< 0.1 s on one core): longer
#: inputs run as several calls, returning to Python in between so that ``KeyboardInterrupt`` is honoured within a
#: fraction of a second.
SLICE_COST = 1 << 26


def _check_x(X: Any, name: str = "X") -> np.ndarray:
    x = _validate.as_float_array(X, name)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1- or 2-dimensional (n_samples, n_features); got shape {x.shape}.")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample and one feature; got shape {x.shape}.")
    return x


def _is_bool(X: Any) -> bool:
    return getattr(X, "dtype", None) == np.bool_ or (not hasattr(X, "dtype") and np.asarray(X).dtype == np.bool_)


def _check_device_x(X: Any, name: str = "X", **value_checks: Any) -> Any:
    """A device ``X`` checked where it lives, as a Numba (n_samples, n_features) view."""
    _device.require_cuda("auto")
    x = _validate.check_device_array(X, name, ndims=(1, 2), **value_checks)
    if len(x.shape) == 1:
        x = x.reshape(x.shape[0], 1)
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample and one feature; got shape {tuple(x.shape)}.")
    return x


def _check_means(means: Any, n_features: int) -> np.ndarray:
    mu = _validate.as_float_array(means, "means")
    if mu.ndim == 1 and n_features == 1:
        mu = mu[:, None]
    if mu.ndim != 2 or mu.shape[1] != n_features or mu.shape[0] < 1:
        raise ValueError(f"means must have shape (n_states, {n_features}); got {mu.shape}.")
    return mu


def _diag_params(means: Any, variances: Any, n_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, ½ precisions, per-state constants), each (n_states, n_features) or (n_states,)."""
    mu = _check_means(_device.host_param(means, "means"), n_features)
    var = _validate.as_float_array(_device.host_param(variances, "variances"), "variances")
    if var.ndim == 1 and n_features == 1:
        var = var[:, None]
    if var.shape != mu.shape:
        raise ValueError(f"variances must have shape {mu.shape} (like means); got {var.shape}.")
    if (var <= 0).any():
        raise ValueError(f"variances must be > 0; got min {float(var.min())!r}.")
    if (var < _TINY).any():  # a subnormal variance: 1/var overflows and 0·inf would give NaN
        raise ValueError(f"variances must be >= {_TINY!r} (the smallest normal float64; 1/variance must not "
                         f"overflow); got min {float(var.min())!r}.")
    const = -0.5 * (n_features * _LOG_2PI + np.log(var).sum(axis=1))
    return mu, 0.5 * (1.0 / var), const


def gaussian_diag_log_lik(X: Any, means: Any, variances: Any) -> Any:
    """Log-density of each sample under each state's Gaussian with diagonal covariance.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        Observations (a 1-D array is one feature).
    means : array-like of shape (n_states, n_features)
        Per-state means.
    variances : array-like of shape (n_states, n_features)
        Per-state variances (at least the smallest normal float64, ~2.2e-308: below it 1/variance overflows).

    Returns
    -------
    ndarray of shape (n_samples, n_states)
        ``log N(x_t; means[k], diag(variances[k]))``.

    Raises
    ------
    ValueError
        On shape mismatches, no features, non-finite values or variances below the smallest normal float64.

    Notes
    -----
    Computed as ``-½ Σ_d (x_d − μ_kd)² / σ²_kd + c_k`` by a compiled kernel, parallel over blocks of rows (no
    expansion of the square, so no cancellation when the data sit far from the origin).
    O(n_samples · n_states · n_features). Long inputs run as several kernel calls over slices of rows (same
    bits), so ``KeyboardInterrupt`` stops them within a fraction of a second.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.emissions import gaussian_diag_log_lik
    >>> gaussian_diag_log_lik(np.array([[0.0]]), means=[[0.0]], variances=[[1.0]]).round(6)
    array([[-0.918939]])
    """
    if _validate.is_dask_array(X):  # chunk by chunk on a Dask cluster (avicore.distributed)
        from .distributed._hmm import emission_dask

        return emission_dask(gaussian_diag_log_lik, X, means, variances)
    if _device.is_device_array(X):
        from .kernels import _emissions_cuda

        x = _check_device_x(X)
        return _emissions_cuda.gaussian_diag(x, *_diag_params(means, variances, x.shape[1]))
    x = _check_x(X)
    mu, half_prec, const = _diag_params(means, variances, x.shape[1])
    out = np.empty((x.shape[0], mu.shape[0]))
    from . import _config
    from ._cy import load

    kernel = load("emissions").cy_gaussian_diag
    mu_t, half_prec_t = np.ascontiguousarray(mu.T), np.ascontiguousarray(half_prec.T)
    # Slices of whole 1024-row blocks, returning to Python in between (see SLICE_COST); rows are independent.
    step = max(1024, SLICE_COST // (mu.shape[0] * (x.shape[1] + 4)) // 1024 * 1024)
    for a in range(0, x.shape[0], step):
        kernel(x[a:a + step], mu_t, half_prec_t, const, out[a:a + step], _config.get_num_threads())
    return out


def _full_params(means: Any, covariances: Any, n_features: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(means, lower Cholesky factors, per-state constants -Σ log diag L_k - d/2 log 2π)."""
    mu = _check_means(_device.host_param(means, "means"), n_features)
    d = n_features
    cov = _validate.as_float_array(_device.host_param(covariances, "covariances"), "covariances")
    if cov.shape != (mu.shape[0], d, d):
        raise ValueError(f"covariances must have shape ({mu.shape[0]}, {d}, {d}); got {cov.shape}.")
    chols = [np.linalg.cholesky(_validate.check_spd_matrix(cov[k], f"covariances[{k}]")) for k in range(mu.shape[0])]
    const = np.array([-np.log(np.diag(c)).sum() - 0.5 * d * _LOG_2PI for c in chols])
    return mu, chols, const


def gaussian_full_log_lik(X: Any, means: Any, covariances: Any) -> Any:
    """Log-density of each sample under each state's Gaussian with a full covariance matrix.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        Observations.
    means : array-like of shape (n_states, n_features)
        Per-state means.
    covariances : array-like of shape (n_states, n_features, n_features)
        Per-state symmetric positive-definite covariances.

    Returns
    -------
    ndarray of shape (n_samples, n_states)
        ``log N(x_t; means[k], covariances[k])``.

    Raises
    ------
    ValueError
        On shape mismatches, non-finite values, or a covariance that is not symmetric positive-definite.

    Notes
    -----
    With ``Σ_k = L_k L_kᵀ``: ``-½ ‖L_k⁻¹ (x − μ_k)‖² − Σ log diag L_k − d/2 log 2π``; one Cholesky factorisation
    and one triangular solve with all samples per state. O(n_samples · n_states · n_features²).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.emissions import gaussian_full_log_lik
    >>> gaussian_full_log_lik(np.zeros((1, 2)), means=np.zeros((1, 2)), covariances=[np.eye(2)]).round(6)
    array([[-1.837877]])
    """
    if _validate.is_dask_array(X):  # chunk by chunk on a Dask cluster (avicore.distributed)
        from .distributed._hmm import emission_dask

        return emission_dask(gaussian_full_log_lik, X, means, covariances)
    from scipy.linalg import solve_triangular

    if _device.is_device_array(X):
        from .kernels import _emissions_cuda

        x = _check_device_x(X)
        mu, chols, const = _full_params(means, covariances, x.shape[1])
        eye = np.eye(x.shape[1])
        chol_inv = np.stack([solve_triangular(c, eye, lower=True, check_finite=False) for c in chols])
        return _emissions_cuda.gaussian_full(x, mu, chol_inv, const)
    x = _check_x(X)
    mu, chols, const = _full_params(means, covariances, x.shape[1])
    out = np.empty((x.shape[0], mu.shape[0]))
    for k, chol in enumerate(chols):
        z = solve_triangular(chol, (x - mu[k]).T, lower=True, check_finite=False)
        out[:, k] = -0.5 * np.einsum("ij,ij->j", z, z) + const[k]
    return out


def categorical_log_lik(symbols: Any, log_emissionprob: Any) -> Any:
    """Log-probability of each observed symbol under each state's categorical distribution.

    Parameters
    ----------
    symbols : array-like of int, shape (n_samples,)
        Observed symbols in ``[0, n_symbols)``.
    log_emissionprob : array-like of shape (n_states, n_symbols)
        ``log p(symbol | state)``; rows of its ``exp`` sum to 1 within 1e-8 (``-inf`` allowed).

    Returns
    -------
    ndarray of shape (n_samples, n_states)
        ``log_emissionprob[k, symbols[t]]``.

    Raises
    ------
    ValueError
        If a symbol is out of range or the emission rows are not log-distributions.
    TypeError
        If ``symbols`` are not integers.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.emissions import categorical_log_lik
    >>> np.exp(categorical_log_lik([1, 0], np.log([[0.9, 0.1], [0.3, 0.7]])))
    array([[0.1, 0.7],
           [0.9, 0.3]])
    """
    if _validate.is_dask_array(symbols):  # chunk by chunk on a Dask cluster (avicore.distributed)
        from .distributed._hmm import emission_dask

        return emission_dask(categorical_log_lik, symbols, log_emissionprob)
    log_b = _validate.check_log_prob_rows(_device.host_param(log_emissionprob, "log_emissionprob"),
                                          "log_emissionprob")
    if _device.is_device_array(symbols):
        from .kernels import _emissions_cuda

        _device.require_cuda("auto")
        sym = _validate.check_device_array(
            symbols, "symbols", ndims=(1,), dtypes=(np.int64, np.int32), low=0, high=log_b.shape[1] - 1,
            what=f"lie in [0, {log_b.shape[1]}) (n_symbols = log_emissionprob.shape[1])")
        if sym.shape[0] < 1:
            raise ValueError("symbols must be a non-empty 1-dimensional array; got shape (0,).")
        return _emissions_cuda.categorical(sym, log_b)
    raw = np.asarray(symbols)
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(f"symbols must be a non-empty 1-dimensional array; got shape {raw.shape}.")
    if not np.issubdtype(raw.dtype, np.integer):
        raise TypeError(f"symbols must contain integers; got dtype {raw.dtype}.")
    bad = (raw < 0) | (raw >= log_b.shape[1])
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"symbols must lie in [0, {log_b.shape[1]}) (n_symbols = log_emissionprob.shape[1]); "
                         f"got symbols[{i}]={int(raw[i])}.")
    return np.ascontiguousarray(log_b.T[raw.astype(np.intp)])


def _poisson_rates(rates: Any, n_features: int) -> np.ndarray:
    lam = _validate.as_float_array(_device.host_param(rates, "rates"), "rates")
    if lam.ndim == 1 and n_features == 1:
        lam = lam[:, None]
    if lam.ndim != 2 or lam.shape[1] != n_features or lam.shape[0] < 1:
        raise ValueError(f"rates must have shape (n_states, {n_features}); got {lam.shape}.")
    if (lam <= 0).any():
        raise ValueError(f"rates must be > 0; got min {float(lam.min())!r}.")
    return lam


def poisson_log_lik(X: Any, rates: Any) -> Any:
    """Log-probability of count vectors under independent per-feature Poisson distributions per state.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        Non-negative integer counts (integer or integral float dtype).
    rates : array-like of shape (n_states, n_features)
        Poisson rates (> 0).

    Returns
    -------
    ndarray of shape (n_samples, n_states)
        ``Σ_d x_d log λ_kd − λ_kd − log x_d!``.

    Raises
    ------
    ValueError
        On negative or non-integral counts, non-positive rates or shape mismatches.
    TypeError
        On boolean or non-numeric counts.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.emissions import poisson_log_lik
    >>> float(poisson_log_lik([[0]], rates=[[2.0]])[0, 0]) == -2.0
    True
    """
    if _validate.is_dask_array(X):  # chunk by chunk on a Dask cluster (avicore.distributed)
        from .distributed._hmm import emission_dask

        return emission_dask(poisson_log_lik, X, rates)
    from scipy.special import gammaln

    if _device.is_device_array(X):
        from .kernels import _emissions_cuda

        x = _check_device_x(X, low=0.0, integral=True, what="hold non-negative integer counts")
        lam = _poisson_rates(rates, x.shape[1])
        return _emissions_cuda.poisson(x, np.log(lam), lam.sum(axis=1))
    if _is_bool(X):
        raise TypeError("X must hold integer counts; got dtype bool.")
    x = _check_x(X)
    if (x < 0).any() or (x != np.round(x)).any():
        raise ValueError("X must hold non-negative integer counts; got negative or fractional values.")
    lam = _poisson_rates(rates, x.shape[1])
    out = x @ np.log(lam).T
    out -= lam.sum(axis=1)
    out -= gammaln(x + 1.0).sum(axis=1)[:, None]
    return np.ascontiguousarray(out)
