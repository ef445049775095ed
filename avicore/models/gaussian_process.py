"""A Gaussian-process latent model f ~ GP(0, k), yₙ | fₙ ~ p(yₙ | fₙ), for the F-VI and A-VI engines.

The N latent values fₙ = f(tₙ) at the inputs are the local latents (``latent_dim = 1``); there are no global
parameters (the kernel and likelihood hyperparameters are held fixed here). Under the mean-field family
q(f) = ∏ N(mₙ, sₙ²) every term of the ELBO is computed without Monte-Carlo noise:

- the prior term, by one Cholesky factorisation K = LLᵀ (with jitter escalation, see
  :func:`avicore.gp.jittered_cholesky`)::

      E_q[log N(f; 0, K)] = −½ mᵀK⁻¹m − ½ Σₙ (K⁻¹)ₙₙ sₙ² − ½ log|K| − (N/2) log 2π,
      ∂/∂m = −K⁻¹m,    ∂/∂log sₙ = −(K⁻¹)ₙₙ sₙ²;

- the likelihood term Σₙ E_q[log p(yₙ | fₙ)] and its gradients in (mₙ, sₙ²), by
  :func:`avicore.quadrature.expected_log_lik` (closed form for Gaussian and Poisson, Gauss–Hermite otherwise),
  with ∂/∂log sₙ = 2 sₙ² ∂/∂sₙ².

``local_terms`` therefore returns the same value for every Monte-Carlo sample. The prior couples every latent, so
the engines pass all rows in order (``supports_minibatch = False``).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import as_float_array, check_int, check_random_state
from .base import LatentVariableModel, LocalTerms, SimulatedData

_LOG_2PI = math.log(2.0 * math.pi)


class GaussianProcess(LatentVariableModel):
    """Latent Gaussian process with a non-conjugate (or Gaussian) likelihood at fixed inputs.

    Parameters
    ----------
    kernel : avicore.gp.Kernel
        Covariance function k (e.g. ``RBF(variance=1.0, lengthscale=0.2)``).
    likelihood : avicore.gp.Likelihood
        Observation model p(y | f) (``Gaussian``, ``Poisson``, ``Bernoulli``, ``StudentT``).
    inputs : array-like of shape (n,) or (n, input_dim)
        The inputs tₙ; finite.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp import Matern12, Poisson
    >>> from avicore.models import GaussianProcess
    >>> model = GaussianProcess(Matern12(1.0, 0.2), Poisson(), np.linspace(0, 1, 30))
    >>> data = model.simulate(seed=0)
    >>> data.x.shape, data.z.shape
    ((30, 1), (30, 1))
    """

    latent_dim = 1
    obs_dim = 1
    global_dim = 0
    global_names = ()
    supports_minibatch = False
    supported_backends = ("numpy", "cython", "numba", "cuda")

    def __init__(self, kernel: object, likelihood: object, inputs: object) -> None:
        from ..gp import Kernel, Likelihood, jittered_cholesky

        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be an avicore.gp.Kernel such as RBF(); got {type(kernel).__name__}.")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be an avicore.gp.Likelihood such as Poisson(); "
                            f"got {type(likelihood).__name__}.")
        arr = as_float_array(inputs, "inputs")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise ValueError(f"inputs must have shape (n,) or (n, input_dim) with n >= 1; got {np.shape(inputs)}.")
        self.kernel = kernel
        self.likelihood = likelihood
        self.inputs = np.ascontiguousarray(arr)
        self.n = arr.shape[0]
        self.K = kernel(self.inputs)
        self.L, self.jitter = jittered_cholesky(self.K, name="K")
        Linv = np.linalg.inv(self.L)  # triangular inverse, N² memory
        self.Kinv_diag = np.einsum("ij,ij->j", Linv, Linv)
        self._Linv = Linv
        self.logdet = 2.0 * float(np.log(np.diag(self.L)).sum())

    def __repr__(self) -> str:
        return f"GaussianProcess({self.kernel!r}, {self.likelihood!r}, n={self.n})"

    def simulate(self, n: int | None = None, seed: int | np.random.Generator | None = None) -> SimulatedData:
        """Draw f ~ N(0, K) at the inputs and y ~ p(y | f); ``z`` holds the true f.

        Parameters
        ----------
        n : int, optional
            Must equal the number of inputs when given (the inputs fix n).
        seed : int or numpy.random.Generator, optional
            Randomness.
        """
        if n is not None and check_int(n, "n", minimum=1) != self.n:
            raise ValueError(f"n must equal the number of inputs ({self.n}); got {n}.")
        rng = check_random_state(seed)
        f = self.L @ rng.standard_normal(self.n)
        y = np.asarray(self.likelihood.sample(f, seed=rng), dtype=np.float64)
        return SimulatedData(x=y.reshape(-1, 1), z=f.reshape(-1, 1), theta=np.empty(0))

    def validate_data(self, x: object, name: str = "x") -> np.ndarray:
        """Check y: shape (n,) or (n, 1) with n the number of inputs, finite, in the likelihood's support."""
        arr = super().validate_data(x, name)
        if arr.shape[0] != self.n:
            raise ValueError(f"{name} must have one row per input ({self.n}); got {arr.shape[0]}.")
        self.likelihood.check_y(arr[:, 0], name)
        return arr

    def encoder_inputs(self, x: np.ndarray) -> np.ndarray:
        """Encoder features: (yₙ, tₙ)."""
        return np.ascontiguousarray(np.hstack([x, self.inputs]))

    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """No global parameters: zeros of shapes (S,) and (S, 0)."""
        s = np.shape(theta)[0]
        return np.zeros(s), np.zeros((s, 0))

    def prior_term(self, mean: np.ndarray, var: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """E_q[log N(f; 0, K)] and its gradients in m and in s² (exact, one triangular solve pair)."""
        alpha = self._Linv.T @ (self._Linv @ mean)
        value = (-0.5 * float(mean @ alpha) - 0.5 * float(self.Kinv_diag @ var) - 0.5 * self.logdet
                 - 0.5 * self.n * _LOG_2PI)
        return value, -alpha, -0.5 * self.Kinv_diag

    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str) -> LocalTerms:
        """Exact (noise-free) E_q[log p(f, y)] and its gradients; see the module docstring."""
        from ..quadrature import expected_log_lik
        from .hierarchical import check_local_inputs
        from .state_space import check_whole_sequence

        check_local_inputs(self, x, mean, log_scale, theta, index)
        check_whole_sequence(index)
        if x.shape[0] != self.n:
            raise ValueError(f"x must have one row per input ({self.n}); got {x.shape[0]}.")
        m = mean[:, 0]
        var = np.exp(2.0 * log_scale[:, 0])
        prior, gm, gv = self.prior_term(m, var)
        ell = expected_log_lik(self.likelihood, x[:, 0], m, var, backend=backend)
        value = prior + float(ell.value.sum())
        gm = gm + ell.grad_mean
        gv = gv + ell.grad_var
        s = theta.shape[0]
        return LocalTerms(log_joint=np.full(s, value), grad_mean=gm.reshape(-1, 1),
                          grad_log_scale=(2.0 * var * gv).reshape(-1, 1), grad_global=np.zeros((s, 0)))
