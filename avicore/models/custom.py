"""User-defined simple hierarchical models: a Numba-compiled log density with its gradient, run by the fused kernels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._validate import as_float_array, check_count, check_int, check_random_state
from .base import LatentVariableModel, LocalTerms, SimulatedData
from .hierarchical import LogJoint, check_local_inputs


class CustomHierarchical(LatentVariableModel):
    """A model p(θ) ∏ₙ p(zₙ, xₙ | θ) defined by a Numba-compiled log density and its gradient.

    Parameters
    ----------
    log_density_grad : numba-compiled function ``(x_n, z_n, theta, grad_z, grad_theta) -> float``
        Returns log p(zₙ, xₙ | θ) (the local prior and the likelihood, every constant included) for one row:
        ``x_n`` (obs_dim,), ``z_n`` (latent_dim,), ``theta`` (global_dim,), and writes ∂/∂zₙ into ``grad_z``
        (latent_dim,) and ∂/∂θ into ``grad_theta`` (global_dim,). It must overwrite every entry of both outputs
        and must not keep references to its arguments. Decorate it with ``@numba.njit`` (``cache=True`` avoids
        recompiling it in every process).
    latent_dim, global_dim, obs_dim : int
        Dimensions of zₙ (>= 1), θ (>= 0) and xₙ (>= 1).
    log_prior_global : callable, optional
        ``theta (n_samples, global_dim) -> (log p(θ) (n_samples,), gradient (n_samples, global_dim))``.
        Default: the flat prior (log p(θ) = 0).
    simulate : callable, optional
        ``(n, rng) -> SimulatedData`` (or a tuple ``(x, z, theta)``), used by :meth:`simulate`.
    global_names : tuple of str, optional
        Names of the global parameters (default ``theta[0]``, ``theta[1]``, ...).

    Notes
    -----
    The fused pass (:meth:`local_terms`) runs on backends ``"numpy"`` (a Python loop calling the compiled
    function, for tests) and ``"numba"`` (the generic parallel loop of :mod:`avicore.kernels.elbo`, compiled once
    per function and process). Check the hand-written gradient with :func:`avicore.check_gradients`.

    Examples
    --------
    A Poisson model with log-rate θ + zₙ, zₙ ~ N(0, 1):

    >>> import math
    >>> import numpy as np
    >>> from numba import njit
    >>> import avicore
    >>> from avicore.models import CustomHierarchical
    >>> @njit
    ... def poisson_log_density(x, z, theta, grad_z, grad_theta):
    ...     eta = theta[0] + z[0]
    ...     rate = math.exp(eta)
    ...     grad_z[0] = -z[0] + x[0] - rate
    ...     grad_theta[0] = x[0] - rate
    ...     return -0.5 * z[0] ** 2 - 0.5 * math.log(2 * math.pi) + x[0] * eta - rate - math.lgamma(x[0] + 1.0)
    >>> model = CustomHierarchical(poisson_log_density, latent_dim=1, global_dim=1, obs_dim=1)
    >>> x = np.array([[0.0], [2.0], [5.0]])
    >>> report = avicore.check_gradients(model, x, theta=[0.3], seed=0, backend="numba")
    >>> report.passed
    True
    """

    supported_backends = ("numpy", "numba")

    def __init__(self, log_density_grad: Callable, latent_dim: int, global_dim: int, obs_dim: int,
                 log_prior_global: Callable | None = None, simulate: Callable | None = None,
                 global_names: tuple[str, ...] | None = None) -> None:
        from numba.core.registry import CPUDispatcher

        if not isinstance(log_density_grad, CPUDispatcher):
            raise TypeError("log_density_grad must be a Numba-compiled function (decorate it with @numba.njit); "
                            f"got {type(log_density_grad).__name__}.")
        self.log_density_grad = log_density_grad
        self.latent_dim = check_int(latent_dim, "latent_dim", minimum=1)
        self.global_dim = check_int(global_dim, "global_dim", minimum=0)
        self.obs_dim = check_int(obs_dim, "obs_dim", minimum=1)
        for name, fn in (("log_prior_global", log_prior_global), ("simulate", simulate)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable or None; got {type(fn).__name__}.")
        self._log_prior_global = log_prior_global
        self._simulate = simulate
        if global_names is None:
            global_names = tuple(f"theta[{k}]" for k in range(self.global_dim))
        if len(global_names) != self.global_dim:
            raise ValueError(f"global_names must hold global_dim={self.global_dim} names; got {len(global_names)}.")
        self.global_names = tuple(global_names)

    def __repr__(self) -> str:
        name = getattr(self.log_density_grad, "__name__", "log_density_grad")
        return (f"CustomHierarchical({name}, latent_dim={self.latent_dim}, global_dim={self.global_dim}, "
                f"obs_dim={self.obs_dim})")

    def simulate(self, n: int, seed: int | np.random.Generator | None = None) -> SimulatedData:
        """Draw ``n`` observations with the ``simulate`` function given at construction."""
        if self._simulate is None:
            raise NotImplementedError("this CustomHierarchical has no simulator; pass simulate=(n, rng) -> "
                                      "SimulatedData when constructing it.")
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        out = self._simulate(n, check_random_state(seed))
        if isinstance(out, SimulatedData):
            return out
        x, z, theta = out
        return SimulatedData(x=np.asarray(x, dtype=np.float64), z=np.asarray(z, dtype=np.float64),
                             theta=np.asarray(theta, dtype=np.float64))

    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) and its gradient per row of ``theta`` (flat prior unless one was given)."""
        theta = as_float_array(theta, "theta", shape=(None, self.global_dim))
        if self._log_prior_global is None:
            return np.zeros(theta.shape[0]), np.zeros_like(theta)
        value, grad = self._log_prior_global(theta)
        return np.asarray(value, dtype=np.float64).reshape(theta.shape[0]), np.asarray(grad, dtype=np.float64)

    def log_joint(self, x: object, z: object, theta: object) -> LogJoint:
        """log p(zₙ, xₙ | θ) for each row and its gradients, by calling ``log_density_grad`` row by row."""
        xa = self.validate_data(x)
        za = as_float_array(z, "z", shape=(xa.shape[0], self.latent_dim))
        th = as_float_array(theta, "theta", shape=(self.global_dim,))
        n = xa.shape[0]
        value = np.empty(n)
        grad_z = np.empty((n, self.latent_dim))
        grad_theta = np.empty((n, self.global_dim))
        for i in range(n):
            value[i] = self.log_density_grad(xa[i], za[i], th, grad_z[i], grad_theta[i])
        return LogJoint(value=value, grad_z=grad_z, grad_theta=grad_theta)

    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str,
                    out: LocalTerms | None = None) -> LocalTerms:
        """The fused reparameterised pass (see :class:`~avicore.models.base.LocalTerms`); numpy or numba.

        ``out`` (optional) is a :class:`LocalTerms` of preallocated arrays that receive the results.
        """
        from ..kernels.elbo import local_terms_custom

        check_local_inputs(self, x, mean, log_scale, theta, index, out)
        return local_terms_custom(self.log_density_grad, x, mean, log_scale, theta, seed=seed, step=step,
                                  index=index, backend=backend, out=out)
