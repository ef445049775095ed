"""Kernel (and noise) hyperparameters by maximising the exact log marginal likelihood of a Gaussian-likelihood GP.

With y = f + ε, f ~ GP(0, k_θ), ε ~ N(0, σ²I), log p(y | θ, σ²) and its gradient are exact
(:func:`avicore.gp.log_marginal_likelihood_grad`); L-BFGS-B over the log-hyperparameters finds a local maximum.
Non-Gaussian likelihoods fit their hyperparameters through the ELBO instead:
``GaussianProcess(kernel, likelihood, inputs, fit=True)`` with ``FVI(model, global_q="point")``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._validate import as_float_array, check_int
from .exact import CholeskyError, JitterWarning, log_marginal_likelihood, log_marginal_likelihood_grad
from .kernels import Kernel
from .likelihoods import Gaussian
from .prior import check_inputs, check_kernel, fit_indices

__all__ = ["MarginalLikelihoodFit", "fit_marginal_likelihood"]


@dataclass(frozen=True)
class MarginalLikelihoodFit:
    """Result of :func:`fit_marginal_likelihood`.

    Attributes
    ----------
    kernel : Kernel
        The kernel at the fitted hyperparameters (held ones unchanged).
    likelihood : Gaussian
        The Gaussian likelihood at the fitted (or held) noise variance.
    log_marginal_likelihood : float
        log p(y) at the fitted values.
    n_evaluations : int
        Evaluations of log p(y) and its gradient.
    success : bool
        Whether L-BFGS-B reported convergence.
    message : str
        The optimiser's message.
    """

    kernel: Kernel
    likelihood: Gaussian
    log_marginal_likelihood: float
    n_evaluations: int
    success: bool
    message: str


def fit_marginal_likelihood(kernel: Kernel, likelihood: Gaussian, inputs: object, y: object, *,
                            fit: bool | Sequence[str] = True, fit_noise: bool = True,
                            max_iter: int = 500) -> MarginalLikelihoodFit:
    """Maximise log p(y) over the kernel's log-hyperparameters (and the log noise variance).

    Parameters
    ----------
    kernel : Kernel
        The covariance function; its hyperparameters are the starting point.
    likelihood : Gaussian
        The Gaussian likelihood; its noise variance is the starting point (or held fixed).
    inputs : array-like of shape (n,) or (n, input_dim)
        Inputs tₙ.
    y : array-like of shape (n,) or (n, 1)
        Observations.
    fit : bool or sequence of str
        Kernel hyperparameters to fit: all (``True``), none (``False``) or the named subset of
        ``kernel.param_names`` (e.g. ``("log_lengthscale",)``); the others are held at their values.
    fit_noise : bool
        Fit the noise variance too (default) or hold it.
    max_iter : int
        L-BFGS-B iterations at most.

    Returns
    -------
    MarginalLikelihoodFit

    Raises
    ------
    TypeError
        If ``kernel`` or ``likelihood`` has the wrong type.
    ValueError
        If the inputs and observations disagree in length, contain NaN, or ``fit`` names unknown parameters.

    Notes
    -----
    Each evaluation factorises the N × N matrix K + σ²I (O(N³)). A step into a region where it does not factorise
    even with jitter counts as a failed step (L-BFGS-B backtracks); jitter warnings are not repeated per step.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp import Gaussian, Matern52, fit_marginal_likelihood
    >>> t = np.linspace(0, 1, 200)
    >>> rng = np.random.default_rng(0)
    >>> K = Matern52(1.0, 0.1)(t) + 0.01 * np.eye(200)
    >>> y = np.linalg.cholesky(K) @ rng.standard_normal(200)
    >>> res = fit_marginal_likelihood(Matern52(1.0, 0.5), Gaussian(0.1), t, y, fit=("log_lengthscale",))
    >>> 0.07 < res.kernel.lengthscale < 0.13
    True
    """
    from scipy.optimize import minimize

    check_kernel(kernel)
    if not isinstance(likelihood, Gaussian):
        raise TypeError(f"likelihood must be avicore.gp.Gaussian (the exact marginal likelihood needs Gaussian noise;"
                        f" fit other likelihoods through the ELBO); got {type(likelihood).__name__}.")
    x = check_inputs(inputs)
    y_arr = as_float_array(y, "y")
    if y_arr.shape not in ((x.shape[0],), (x.shape[0], 1)):
        raise ValueError(f"y must have shape ({x.shape[0]},) or ({x.shape[0]}, 1), one value per input; "
                         f"got {y_arr.shape}.")
    y_arr = y_arr.reshape(-1)
    index = list(fit_indices(fit, kernel))
    if (fit_noise or index) and not np.any(y_arr):
        raise ValueError("y must not be zero everywhere when hyperparameters are fitted: log p(y) then grows without "
                         "bound as the variances shrink to 0, so no maximiser exists; got y == 0 for all "
                         f"{y_arr.size} points. Hold the hyperparameters (fit=False, fit_noise=False) or add data.")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    base = kernel.params
    start = np.concatenate([base[index], likelihood.params if fit_noise else []])
    noise0 = likelihood.noise
    count = [0]

    def unpack(vec: np.ndarray) -> tuple[Kernel, float]:
        params = base.copy()
        params[index] = vec[:len(index)]
        noise = float(np.exp(vec[-1])) if fit_noise else noise0
        if not noise > 0.0:
            raise ValueError(f"noise must be > 0; got exp({float(vec[-1])!r}) = 0.0 (underflow)")
        return kernel.with_params(params), noise

    def negative(vec: np.ndarray) -> tuple[float, np.ndarray]:
        count[0] += 1
        k, noise = unpack(vec)
        try:
            K, dK = k.gram_and_grads(x)
            value, grad = log_marginal_likelihood_grad(K, dK, y_arr, noise)
        except (CholeskyError, ValueError):  # no factorisation, or a log-parameter past float64's range
            return np.inf, np.zeros_like(vec)
        g = np.concatenate([grad[index], grad[-1:] if fit_noise else []])
        return -value, -g

    if start.size == 0:
        k, noise = unpack(start)
        value = -negative(start)[0]
        return MarginalLikelihoodFit(k, Gaussian(noise), value, count[0], True, "nothing to fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)
        opt = minimize(negative, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    try:
        k, noise = unpack(opt.x)
    except ValueError as err:
        raise ValueError(f"fit_marginal_likelihood ran a hyperparameter to the edge of float64 (log values "
                         f"{opt.x.tolist()}): log p(y) keeps rising as it shrinks or grows, so there is no finite "
                         f"maximiser for these data ({err}). Hold that hyperparameter or start elsewhere.") from None
    value = log_marginal_likelihood(k(x), y_arr, noise)  # warns here if the answer itself needs jitter
    return MarginalLikelihoodFit(k, Gaussian(noise), float(value), count[0], bool(opt.success), str(opt.message))
