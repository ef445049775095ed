"""The contract between a latent-variable model and avicore's inference engines (F-VI, A-VI).

A model describes p(θ) ∏ₙ p(zₙ | θ) p(xₙ | zₙ, θ) with local latents zₙ ∈ R^d and global parameters θ ∈ R^{d_θ}
(``d_θ = 0`` allowed). The engines fit a Gaussian mean-field family

    q(θ) = N(μ_θ, diag σ_θ²),    q(zₙ) = N(mₙ, diag sₙ²),

where F-VI keeps a free (mₙ, log sₙ) per observation and A-VI computes them with an encoder. Both call the model
only through :meth:`LatentVariableModel.local_terms` (the fused, reparameterised Monte-Carlo pass over the
observations) and :meth:`LatentVariableModel.log_prior_global`. The entropies of q are analytic and added by the
engine, so the full ELBO is

    ELBO = E_q[log p(θ)] + Σₙ E_q[log p(zₙ, xₙ | θ)] + Σₙ H[q(zₙ)] + H[q(θ)],

every constant included (flat priors contribute log p(θ) = 0).

Random numbers
--------------
``local_terms`` draws ε[n, s, j] ~ N(0, 1) from avicore's counter-based generator keyed by
(seed, step, index[n], s, j), so an observation's noise does not depend on the batch it sits in, the thread count or
the backend: the same (seed, step) gives the same gradient on every backend.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimulatedData:
    """Data drawn from a model.

    Attributes
    ----------
    x : ndarray of shape (n_obs, obs_dim)
        Observations.
    z : ndarray of shape (n_obs, latent_dim)
        The local latents that generated them.
    theta : ndarray of shape (global_dim,)
        The global parameters that generated them.
    """

    x: np.ndarray
    z: np.ndarray
    theta: np.ndarray


@dataclass(frozen=True)
class LocalTerms:
    """Monte-Carlo estimate of Σₙ E_q[log p(zₙ, xₙ | θ)] over a batch, and its reparameterisation gradients.

    With S Monte-Carlo samples, ``theta[s]`` the s-th draw of θ and zₙ⁽ˢ⁾ = mₙ + exp(log sₙ) ⊙ ε[n, s]:

    Attributes
    ----------
    log_joint : ndarray of shape (n_samples,)
        Σₙ log p(zₙ⁽ˢ⁾, xₙ | θ_s) for each sample s (sum over the batch, no minibatch scaling).
    grad_mean : ndarray of shape (batch, latent_dim)
        (1/S) Σ_s ∂/∂z log p(zₙ⁽ˢ⁾, xₙ | θ_s): gradient of the batch's MC average w.r.t. mₙ.
    grad_log_scale : ndarray of shape (batch, latent_dim)
        (1/S) Σ_s ∂/∂z log p(zₙ⁽ˢ⁾, xₙ | θ_s) ⊙ ε[n, s] ⊙ sₙ: gradient w.r.t. log sₙ (entropy not included).
    grad_global : ndarray of shape (n_samples, global_dim)
        Σₙ ∂/∂θ log p(zₙ⁽ˢ⁾, xₙ | θ_s) for each sample s (the engine applies the chain rule through θ_s).
    """

    log_joint: np.ndarray
    grad_mean: np.ndarray
    grad_log_scale: np.ndarray
    grad_global: np.ndarray


class LatentVariableModel(ABC):
    """Base class of the models the F-VI and A-VI engines fit.

    Subclasses set ``latent_dim``, ``global_dim``, ``obs_dim`` and ``global_names`` and implement
    :meth:`simulate`, :meth:`log_prior_global` and :meth:`local_terms`. Models whose terms couple neighbouring
    latents (time series) or whose likelihood is best evaluated in batched matrix form (neural decoders) override
    ``local_terms`` with their own pass; the contract stays the same.
    """

    latent_dim: int
    global_dim: int
    obs_dim: int
    global_names: tuple[str, ...] = ()
    #: Backends ``local_terms`` implements for this model.
    supported_backends: tuple[str, ...] = ("numpy", "cython", "numba", "cuda")
    #: True when the terms log p(zₙ, xₙ | θ) of different rows are independent given θ, so that the engines may
    #: pass any subset of rows to ``local_terms`` (minibatches, memory chunks). Models whose terms couple
    #: neighbouring rows (time series) set it to False: they always receive every row, in order, with
    #: ``index = arange(n_obs)``, and ``batch_size`` is refused.
    supports_minibatch: bool = True

    def validate_data(self, x: object, name: str = "x") -> np.ndarray:
        """Check observations and return them as a C-contiguous float64 array of shape (n_obs, obs_dim).

        A 1-D ``x`` is accepted when ``obs_dim == 1``.
        """
        from .._validate import as_float_array

        arr = as_float_array(x, name)
        if arr.ndim == 1 and self.obs_dim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != self.obs_dim:
            raise ValueError(f"{name} must have shape (n_obs, {self.obs_dim})"
                             f"{' or (n_obs,)' if self.obs_dim == 1 else ''}; got {np.shape(x)}.")
        if arr.shape[0] < 1:
            raise ValueError(f"{name} must hold at least one observation; got shape {arr.shape}.")
        return np.ascontiguousarray(arr)

    @abstractmethod
    def simulate(self, n: int, seed: int | np.random.Generator | None = None) -> SimulatedData:
        """Draw ``n`` observations (and the latents and θ that generated them)."""

    @abstractmethod
    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) and its gradient for each row of ``theta`` (n_samples, global_dim) → ((S,), (S, global_dim))."""

    @abstractmethod
    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str) -> LocalTerms:
        """The fused reparameterised pass over a batch of observations (see :class:`LocalTerms`).

        Parameters
        ----------
        x : ndarray of shape (batch, obs_dim)
            The batch's observations (validated, float64, C-contiguous).
        mean, log_scale : ndarray of shape (batch, latent_dim)
            Parameters of q(zₙ) for the batch.
        theta : ndarray of shape (n_samples, global_dim)
            One draw of θ per Monte-Carlo sample (S = n_samples).
        seed, step : int
            Key of the counter-based generator (the engine passes its seed and the iteration number).
        index : ndarray of shape (batch,), int64
            Each row's index in the full data set (keys its noise).
        backend : str
            A resolved backend name from ``supported_backends``.
        """

    def init_global(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial (mean, log sd) of q(θ); default mean 0 and sd 0.1 (Pyro/NumPyro AutoNormal's ``init_scale``).

        A small initial sd matters with many observations: q(θ)'s optimal sd shrinks like 1/√N, and starting at
        sd 1 makes the first gradients in log σ_θ of order N, which Adam's second-moment estimate remembers for
        thousands of steps (slowing the approach to the optimum).
        """
        return np.zeros(self.global_dim), np.full(self.global_dim, math.log(0.1))

    def init_local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial (mean, log sd) of every q(zₙ) for F-VI, each of shape (n_obs, latent_dim); default zeros."""
        n = x.shape[0]
        return np.zeros((n, self.latent_dim)), np.zeros((n, self.latent_dim))

    def encoder_inputs(self, x: np.ndarray) -> np.ndarray:
        """The per-row inputs (n_obs, n_features) an A-VI encoder sees before windowing; default ``x`` itself.

        Models with per-row covariates (e.g. the input locations of a Gaussian process) may append them here.
        """
        return x
