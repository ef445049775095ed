"""A Gaussian-process latent model f ~ GP(0, k), yₙ | fₙ ~ p(yₙ | fₙ), for the F-VI and A-VI engines.

The N latent values fₙ = f(tₙ) at the inputs are the local latents (``latent_dim = 1``). The kernel's
log-hyperparameters are held fixed (``fit=False``, the default: no global parameters), or some or all of them are the
model's global parameters θ (``fit=True`` or a tuple of names): fitted with ``FVI(..., global_q="point")`` they
maximise the ELBO (type-II maximum likelihood through the ELBO, flat prior), with ``global_q="gaussian"`` they get a
Gaussian q(θ) under the prior N(log initial value, ``hyperprior_sd``²). Under the mean-field family
q(f) = ∏ N(mₙ, sₙ²) every term of the ELBO is computed without Monte-Carlo noise:

- the prior term, by one Cholesky factorisation K = LLᵀ (with jitter escalation, see
  :func:`avicore.gp.jittered_cholesky`)::

      E_q[log N(f; 0, K)] = −½ mᵀK⁻¹m − ½ Σₙ (K⁻¹)ₙₙ sₙ² − ½ log|K| − (N/2) log 2π,
      ∂/∂m = −K⁻¹m,    ∂/∂log sₙ = −(K⁻¹)ₙₙ sₙ²;

  and, for fitted hyperparameters, ∂/∂θᵢ = ½ tr(W ∂K/∂θᵢ) with W = ααᵀ + K⁻¹ diag(s²) K⁻¹ − K⁻¹, α = K⁻¹m
  (one Cholesky factorisation per distinct θ; a matrix that will not factorise even with jitter gives a −∞ log joint,
  which the engines report as divergence);

- the likelihood term Σₙ E_q[log p(yₙ | fₙ)] and its gradients in (mₙ, sₙ²), by
  :func:`avicore.quadrature.expected_log_lik` (closed form for Gaussian and Poisson, Gauss–Hermite otherwise),
  with ∂/∂log sₙ = 2 sₙ² ∂/∂sₙ².

Hyperparameters fitted through the *mean-field* ELBO are biased towards short lengthscales (a shorter lengthscale
makes the posterior less correlated, so the factorised family loses less; Turner & Sahani 2011): measured with
Poisson counts at N = 500 from a Matérn-1/2 of lengthscale 0.1 (variance held), F-VI fitted 0.045. With a Gaussian
likelihood, :func:`avicore.gp.fit_marginal_likelihood` maximises the exact log p(y) instead (within 20 % of the
simulating lengthscale at N = 500 in ``tests/gp/test_hyperparameters.py``).

How the engines fit the locals: the prior term's gradient in m is −K⁻¹m, whose entries reach 10¹⁰ for smooth kernels
(RBF, Matérn-5/2) on dense inputs, so Adam on (mₙ, log sₙ) barely moves there. By default (``local_solver=
"fixed-point"``) :class:`avicore.FVI` therefore updates the locals by the mean-field fixed point / Newton iteration of
:mod:`avicore.gp.mean_field` (the optimum in a few iterations for any kernel; the fit stops with
``stop_reason="stationary"``) and :class:`avicore.AVI` fits Constant and Polynomial encoders by Gauss–Newton steps
(:mod:`avicore.gp.amortized`) and MLP encoders by Levenberg–Marquardt steps in the same metric; a Gaussian q(θ)
over fitted hyperparameters keeps Adam.

``local_terms`` therefore returns the same value for every Monte-Carlo sample. The prior couples every latent, so
the engines pass all rows in order (``supports_minibatch = False``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._validate import as_float_array, check_choice, check_int, check_random_state, check_scalar
from ..gp.prior import PriorFactor, check_inputs, check_kernel, factorise, fit_indices
from .base import LatentVariableModel, LocalTerms, SimulatedData

_LOG_2PI = math.log(2.0 * math.pi)
#: How FVI/AVI update the locals of a GP model (see the ``local_solver`` parameter).
LOCAL_SOLVERS = ("fixed-point", "adam")


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
    fit : bool or sequence of str
        Kernel log-hyperparameters to fit as global parameters: ``False`` (default) holds them all fixed, ``True``
        fits all of them, or a subset of ``kernel.param_names`` (e.g. ``("log_lengthscale",)``, holding the
        variance fixed). Their initial values are the kernel's.
    hyperprior_sd : float, optional
        Prior sd of each fitted log-hyperparameter around its initial value. Default ``None``: a flat prior, meant
        for ``global_q="point"`` (the fitted values then maximise the ELBO).
    local_solver : {"fixed-point", "adam"}
        How :class:`avicore.FVI` updates the locals (mₙ, sₙ): ``"fixed-point"`` (default) by the mean-field
        fixed point / Newton iteration of :mod:`avicore.gp.mean_field` (reaches the optimum in a few iterations
        for any kernel, stops with ``stop_reason="stationary"`` when no hyperparameter is fitted; used when q(θ)
        is a point or there is no θ), ``"adam"`` by the engine's Adam steps on the ELBO gradient, whose progress
        depends on K's condition number. Under ``"fixed-point"`` :class:`avicore.AVI` likewise takes Gauss–Newton
        steps on the encoder (:mod:`avicore.gp.amortized`: exact ones for ``Constant`` and ``Polynomial``,
        damped (Levenberg–Marquardt) ones for ``MLP``), ignoring the learning rate. On the smooth kernels (RBF,
        Matérn-5/2) give the MLP a smooth activation (``MLP(k, activation="tanh")``): ReLU outputs kink in the
        encoder's parameters, which those steps cannot follow where K⁻¹ is ~1e10.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp import Matern12, Poisson
    >>> from avicore.models import GaussianProcess
    >>> model = GaussianProcess(Matern12(1.0, 0.2), Poisson(), np.linspace(0, 1, 30))
    >>> data = model.simulate(seed=0)
    >>> data.x.shape, data.z.shape
    ((30, 1), (30, 1))

    Fitting the lengthscale (type-II maximum likelihood through the ELBO):

    >>> import avicore
    >>> learn = GaussianProcess(Matern12(1.0, 0.5), Poisson(), np.linspace(0, 1, 30), fit=("log_lengthscale",))
    >>> res = avicore.FVI(learn, global_q="point", elbo_samples=2).fit(data.x, n_iter=50, lr=0.05, seed=0)
    >>> learn.hyperparameters(res.global_mean)["lengthscale"] < 0.5
    True
    """

    latent_dim = 1
    obs_dim = 1
    global_dim = 0
    global_names = ()
    supports_minibatch = False
    supported_backends = ("numpy", "cython", "numba", "cuda")

    def __init__(self, kernel: object, likelihood: object, inputs: object, *, fit: bool | Sequence[str] = False,
                 hyperprior_sd: float | None = None, local_solver: str = "fixed-point") -> None:
        from ..gp import Likelihood

        check_kernel(kernel)
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be an avicore.gp.Likelihood such as Poisson(); "
                            f"got {type(likelihood).__name__}.")
        self.kernel = kernel
        self.likelihood = likelihood
        self.inputs = check_inputs(inputs)
        self.n = self.inputs.shape[0]
        self._fit_index = fit_indices(fit, kernel)
        self.global_names = tuple(kernel.param_names[i] for i in self._fit_index)
        self.global_dim = len(self.global_names)
        self.hyperprior_sd = None if hyperprior_sd is None else check_scalar(hyperprior_sd, "hyperprior_sd",
                                                                             positive=True)
        self.local_solver = check_choice(local_solver, "local_solver", LOCAL_SOLVERS)
        self._factor = factorise(kernel, self.inputs, with_grads=self.global_dim > 0)
        self._theta_key = kernel.params[list(self._fit_index)]

    # The Gram matrix and its factorisation at the hyperparameters last evaluated (the kernel's own when none are
    # fitted): views of the cached factor.
    K = property(lambda self: self._factor.K, doc="The Gram matrix K (before jitter).")
    L = property(lambda self: self._factor.L, doc="Lower Cholesky factor of K + jitter·I.")
    jitter = property(lambda self: self._factor.jitter, doc="The jitter added to K's diagonal (0.0 if none).")
    Kinv_diag = property(lambda self: self._factor.Kinv_diag, doc="diag((K + jitter·I)⁻¹).")
    logdet = property(lambda self: self._factor.logdet, doc="log|K + jitter·I|.")
    _Linv = property(lambda self: self._factor.Linv)

    def __repr__(self) -> str:
        fitted = f", fit={self.global_names}" if self.global_dim else ""
        return f"GaussianProcess({self.kernel!r}, {self.likelihood!r}, n={self.n}{fitted})"

    def kernel_at(self, theta: object) -> object:
        """The kernel with the fitted log-hyperparameters set to ``theta`` (shape (global_dim,)), the rest as given.

        Parameters
        ----------
        theta : array-like of shape (global_dim,)
            Values of the fitted log-hyperparameters, in the order of :attr:`global_names` (e.g. a result's
            ``global_mean``).
        """
        vec = as_float_array(theta, "theta", shape=(self.global_dim,))
        params = self.kernel.params.copy()
        params[list(self._fit_index)] = vec
        return self.kernel.with_params(params)

    def hyperparameters(self, theta: object) -> dict[str, float]:
        """The fitted hyperparameters on their natural scale: ``{"lengthscale": 0.21, ...}`` (exp of log values)."""
        vec = as_float_array(theta, "theta", shape=(self.global_dim,))
        return {name.removeprefix("log_"): float(np.exp(v)) for name, v in zip(self.global_names, vec)}

    def init_local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q(fₙ) starts at mean 0 and sd 1 — or, when hyperparameters are fitted, sd 1/√((K⁻¹)ₙₙ), the prior sd of
        fₙ given every other f.

        With fitted hyperparameters the sd of 1 puts −½ Σₙ (K⁻¹)ₙₙ ≈ −10¹⁰ nats in the first ELBO for smooth kernels,
        and its gradient in the hyperparameters is as large: Adam's second moment then holds their steps near zero
        for thousands of iterations (measured: Matérn-5/2, N = 60, the lengthscale stuck at 0.59 instead of 0.084).
        """
        n = x.shape[0]
        if self.global_dim == 0:
            return np.zeros((n, 1)), np.zeros((n, 1))
        return np.zeros((n, 1)), (-0.5 * np.log(self.Kinv_diag)).reshape(-1, 1)

    def init_global(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """q(θ) starts at the kernel's log-hyperparameters, with sd 0.1."""
        return self.kernel.params[list(self._fit_index)], np.full(self.global_dim, math.log(0.1))

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

    # -- exact references (Gaussian likelihood, hyperparameters held): VIResult.kl is then exact -----------------
    def _gaussian_prior(self, what: str) -> tuple[np.ndarray, float]:
        from ..gp.likelihoods import Gaussian

        if self.global_dim or not isinstance(self.likelihood, Gaussian):
            raise NotImplementedError(f"{what} is exact only for a Gaussian likelihood with the hyperparameters "
                                      f"held; got {self.likelihood!r} with fit={self.global_names}.")
        return self.K + self.jitter * np.eye(self.n), self.likelihood.noise

    def log_evidence(self, x: object) -> float:
        """log p(y) under the factorised prior N(0, K + jitter·I) (:func:`avicore.gp.log_marginal_likelihood`).

        Raises
        ------
        NotImplementedError
            Unless the likelihood is Gaussian and no hyperparameter is fitted.
        """
        from ..gp.exact import log_marginal_likelihood

        K, noise = self._gaussian_prior("log_evidence")
        return log_marginal_likelihood(K, self.validate_data(x)[:, 0], noise)

    def exact_elbo(self, x: object, local_mean: np.ndarray, local_sd: np.ndarray, global_mean: np.ndarray,
                   global_sd: np.ndarray) -> float:
        """The ELBO of the mean-field q(f) = N(local_mean, diag local_sd²) in closed form
        (:func:`avicore.gp.exact.gaussian_elbo`); Gaussian likelihood and held hyperparameters only."""
        from ..gp.exact import gaussian_elbo

        K, noise = self._gaussian_prior("exact_elbo")
        sd = np.asarray(local_sd, dtype=np.float64)[:, 0]
        return gaussian_elbo(K, self.validate_data(x)[:, 0], noise, np.asarray(local_mean)[:, 0], sd * sd)

    def encoder_inputs(self, x: np.ndarray) -> np.ndarray:
        """Encoder features: (yₙ, tₙ)."""
        return np.ascontiguousarray(np.hstack([x, self.inputs]))

    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) of the fitted log-hyperparameters: flat (zeros), or N(initial, hyperprior_sd²) each."""
        theta = np.asarray(theta, dtype=np.float64)
        if self.hyperprior_sd is None:
            return np.zeros(theta.shape[0]), np.zeros_like(theta)
        z = (theta - self.kernel.params[list(self._fit_index)]) / self.hyperprior_sd
        const = self.global_dim * (0.5 * _LOG_2PI + math.log(self.hyperprior_sd))
        return -0.5 * np.sum(z * z, axis=1) - const, -z / self.hyperprior_sd

    def prior_term(self, mean: np.ndarray, var: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """E_q[log N(f; 0, K)] and its gradients in m and in s² (exact, one triangular matvec pair), at the
        hyperparameters last evaluated (the kernel's own when none are fitted)."""
        return self._prior(self._factor, mean, var)[:3]

    def _prior(self, factor: PriorFactor, mean: np.ndarray, var: np.ndarray
               ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        alpha = factor.alpha(mean)  # the mean-field solver's own α after its steps, else two triangular matvecs
        value = (-0.5 * float(mean @ alpha) - 0.5 * float(factor.Kinv_diag @ var) - 0.5 * factor.logdet
                 - 0.5 * self.n * _LOG_2PI)
        return value, -alpha, -0.5 * factor.Kinv_diag, alpha

    def _factor_at(self, theta: np.ndarray) -> PriorFactor | None:
        """The factorised Gram matrix at log-hyperparameters ``theta`` (cached: point q(θ) asks for one value per
        step); None when it cannot be factorised even with jitter."""
        from ..gp import CholeskyError

        if np.array_equal(self._theta_key, theta):
            return self._factor
        try:
            factor = factorise(self.kernel_at(theta), self.inputs, with_grads=True)
        except (CholeskyError, ValueError):
            return None
        self._theta_key = theta.copy()
        self._factor = factor
        return factor

    def _hyper_grad(self, factor: PriorFactor, alpha: np.ndarray, var: np.ndarray) -> np.ndarray:
        """∂/∂θᵢ of E_q[log N(f; 0, K)] = ½ tr(W ∂K/∂θᵢ), W = ααᵀ + K⁻¹ diag(s²) K⁻¹ − K⁻¹."""
        Kinv = factor.Linv.T @ factor.Linv
        W = np.outer(alpha, alpha) + (Kinv * var) @ Kinv - Kinv
        return 0.5 * np.einsum("kij,ij->k", factor.dK[list(self._fit_index)], W)

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
        ell = expected_log_lik(self.likelihood, x[:, 0], m, var, backend=backend)
        ell_sum = float(ell.value.sum())
        s = theta.shape[0]
        if self.global_dim == 0:
            prior, gm, gv, _ = self._prior(self._factor, m, var)
            return LocalTerms(log_joint=np.full(s, prior + ell_sum), grad_mean=(gm + ell.grad_mean).reshape(-1, 1),
                              grad_log_scale=(2.0 * var * (gv + ell.grad_var)).reshape(-1, 1),
                              grad_global=np.zeros((s, 0)))
        # One factorisation per distinct θ row (a point q(θ) has one), local gradients averaged over the rows.
        log_joint, grad_global = np.empty(s), np.zeros((s, self.global_dim))
        gm, gv = np.zeros(self.n), np.zeros(self.n)
        distinct, which = np.unique(theta, axis=0, return_inverse=True)
        for j, row in enumerate(distinct):
            rows = np.flatnonzero(which.reshape(-1) == j)
            factor = self._factor_at(row)
            if factor is None:
                log_joint[rows] = -np.inf
                continue
            prior, gm_j, gv_j, alpha = self._prior(factor, m, var)
            log_joint[rows] = prior + ell_sum
            grad_global[rows] = self._hyper_grad(factor, alpha, var)
            gm += gm_j * (rows.size / s)
            gv += gv_j * (rows.size / s)
        return LocalTerms(log_joint=log_joint, grad_mean=(gm + ell.grad_mean).reshape(-1, 1),
                          grad_log_scale=(2.0 * var * (gv + ell.grad_var)).reshape(-1, 1), grad_global=grad_global)

    # -- the engines' solver hooks (issue 19): FVI/AVI ask the model for its own update of the locals -------------
    def _solver_factor(self, glob: np.ndarray) -> PriorFactor | None:
        """The prior factor at q(θ)'s point value ``glob[:global_dim]`` (None: not factorisable)."""
        return self._factor if self.global_dim == 0 else self._factor_at(np.asarray(glob[:self.global_dim]))

    def _fvi_local_solver(self, x: np.ndarray, *, backend: str, global_q: str, fixed_global: bool) -> object:
        """F-VI's update of the locals: a :class:`_FVISolver` (mean-field fixed point), or None for Adam.

        Used with ``local_solver="fixed-point"`` when q(θ) is a point (or there is no θ): the factor of the prior
        is then one matrix per iteration. A Gaussian q(θ) over fitted hyperparameters keeps Adam.
        """
        if self.local_solver != "fixed-point" or (self.global_dim and global_q != "point"):
            return None
        from ..gp.mean_field import MeanFieldSolver

        return _FVISolver(self, MeanFieldSolver(self.likelihood, x[:, 0].copy(), backend),
                          stops=self.global_dim == 0 or fixed_global)

    def _avi_local_solver(self, x: np.ndarray, encoder: object, bound: object, design: np.ndarray, *,
                          backend: str, global_q: str, fixed_global: bool) -> object:
        """A-VI's update of the encoder: Gauss–Newton steps for one linear in its parameters (Constant, Polynomial;
        :class:`avicore.gp.amortized.LinearEncoderSolver`), Levenberg–Marquardt steps for any other (MLP;
        :class:`avicore.gp.amortized.GaussNewtonEncoderSolver`), or None for Adam."""
        from ..encoders import Constant, Polynomial

        if self.local_solver != "fixed-point" or (self.global_dim and global_q != "point"):
            return None
        from ..gp.amortized import GaussNewtonEncoderSolver, LinearEncoderSolver

        kind = LinearEncoderSolver if isinstance(encoder, (Constant, Polynomial)) else GaussNewtonEncoderSolver
        return _AVISolver(self, kind(self.likelihood, x[:, 0].copy(), bound, design, backend),
                          stops=self.global_dim == 0 or fixed_global)


class _FVISolver:
    """Adapter between the F-VI engine's (n, 1) local arrays and :class:`avicore.gp.mean_field.MeanFieldSolver`."""

    def __init__(self, model: GaussianProcess, solver: object, stops: bool) -> None:
        self.model, self.solver, self.stops = model, solver, stops
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (log sd handed out, the variances it came from)

    def step(self, glob: np.ndarray, mean: np.ndarray, log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(new mean, new log sd, stationary) from the current locals at q(θ)'s point value."""
        factor = self.model._solver_factor(glob)
        if factor is None:
            return mean, log_scale, False
        last = self._last
        # exp(2·½ log v) is not v to the last bit: hand the solver back its own variances, so that it recognises
        # its last state (and reuses the expected log-likelihood there).
        same = last is not None and np.array_equal(last[0], log_scale[:, 0])
        var = last[1] if same else np.exp(2.0 * log_scale[:, 0])
        res = self.solver.step(factor, mean[:, 0], var)
        out = 0.5 * np.log(res.var)
        self._last = (out, res.var)
        return res.mean.reshape(-1, 1), out.reshape(-1, 1), self.stops and res.stationary


class _AVISolver:
    """Adapter between the A-VI engine's encoder parameters and :class:`avicore.gp.amortized.LinearEncoderSolver`."""

    def __init__(self, model: GaussianProcess, solver: object, stops: bool) -> None:
        self.model, self.solver, self.stops = model, solver, stops

    def step(self, glob: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, bool]:
        """(new encoder parameters, stationary) at q(θ)'s point value."""
        factor = self.model._solver_factor(glob)
        if factor is None:
            return phi, False
        res = self.solver.step(factor, phi)
        return res.params, self.stops and res.stationary
