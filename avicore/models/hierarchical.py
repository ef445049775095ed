"""The paper's simple hierarchical models: p(θ) ∏ₙ N(zₙ | 0, 1) p(xₙ | zₙ, θ), with exact references for the linear one.

:class:`LinearHierarchical` has a Gaussian joint, so its F-VI optimum, its ELBO for any Gaussian mean-field q and
(with a proper prior) its log-evidence are closed forms. :class:`NonlinearHierarchical` has none; both run the fused
ELBO-gradient kernels of :mod:`avicore.kernels.elbo` on every backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import as_float_array, check_count, check_random_state, check_scalar
from ._priors import draw_theta, flat_or_normal_log_prior
from .base import LatentVariableModel, LocalTerms, SimulatedData

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class LogJoint:
    """log p(zₙ, xₙ | θ) of each row and its gradients (hand-derived).

    Attributes
    ----------
    value : ndarray of shape (n_obs,)
        log p(zₙ, xₙ | θ), every constant included.
    grad_z : ndarray of shape (n_obs, latent_dim)
        ∂/∂zₙ of ``value[n]``.
    grad_theta : ndarray of shape (n_obs, global_dim)
        ∂/∂θ of ``value[n]``.
    """

    value: np.ndarray
    grad_z: np.ndarray
    grad_theta: np.ndarray


@dataclass(frozen=True)
class FVIOptimum:
    """The exact optimum of the factorized (mean-field Gaussian) family and its ELBO.

    Attributes
    ----------
    local_mean, local_sd : ndarray of shape (n_obs, 1)
        Mean and standard deviation of each q(zₙ).
    global_mean, global_sd : ndarray of shape (1,)
        Mean and standard deviation of q(θ).
    elbo : float
        The full ELBO of this q, every constant included.
    """

    local_mean: np.ndarray
    local_sd: np.ndarray
    global_mean: np.ndarray
    global_sd: np.ndarray
    elbo: float


def check_local_inputs(model: LatentVariableModel, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                       theta: np.ndarray, index: np.ndarray, out: LocalTerms | None = None) -> None:
    """O(1) shape/dtype checks of a ``local_terms`` call, so that no kernel can read or write out of bounds."""
    n_rows = x.shape[0] if isinstance(x, np.ndarray) and x.ndim == 2 else "n_rows"
    n_samples = theta.shape[0] if isinstance(theta, np.ndarray) and theta.ndim == 2 else "n_samples"
    d, n_global = model.latent_dim, model.global_dim
    checks = [("x", x, (n_rows, model.obs_dim)), ("mean", mean, (n_rows, d)), ("log_scale", log_scale, (n_rows, d)),
              ("theta", theta, ("n_samples", n_global)), ("index", index, (n_rows,))]
    if out is not None:
        if not isinstance(out, LocalTerms):
            raise TypeError(f"out must be a LocalTerms or None; got {type(out).__name__}.")
        checks += [("out.log_joint", out.log_joint, (n_samples,)), ("out.grad_mean", out.grad_mean, (n_rows, d)),
                   ("out.grad_log_scale", out.grad_log_scale, (n_rows, d)),
                   ("out.grad_global", out.grad_global, (n_samples, n_global))]
    for name, arr, shape in checks:
        want = np.dtype(np.int64 if name == "index" else np.float64)
        ok = (isinstance(arr, np.ndarray) and arr.dtype == want and arr.flags.c_contiguous
              and (arr.flags.writeable or not name.startswith("out"))
              and arr.ndim == len(shape) and all(isinstance(w, str) or w == g for w, g in zip(shape, arr.shape)))
        if not ok:
            got = (f"shape {arr.shape}, dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__)
            shape_text = "(" + ", ".join(str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            what = "writeable, C-contiguous" if name.startswith("out") else "C-contiguous"
            raise ValueError(f"{name} must be a {what} {want} array of shape {shape_text}; got {got}.")
    if x.shape[0] < 1 or theta.shape[0] < 1:
        raise ValueError(f"x and theta must hold at least one row; got shapes {x.shape} and {theta.shape}.")
    if out is not None:
        for name, arr, _ in checks[5:]:
            if any(np.may_share_memory(arr, other) for _, other, _ in checks[:5]):
                raise ValueError(f"{name} must not share memory with the inputs; got an overlapping array.")


def linear_params(tau: float, sigma: float) -> np.ndarray:
    """Kernel parameters of the linear model (layout in :mod:`avicore.kernels.elbo`): (τ, 1/σ², −log 2π − log σ)."""
    return np.array([tau, 1.0 / (sigma * sigma), -_LOG_2PI - math.log(sigma)])


def nonlinear_params() -> np.ndarray:
    """Kernel parameters of the nonlinear model: (−log 2π,)."""
    return np.array([-_LOG_2PI])


class HierarchicalModel(LatentVariableModel):
    """Shared machinery of the built-in scalar hierarchical models (latent_dim = global_dim = obs_dim = 1).

    Subclasses set ``_model_id`` (see :mod:`avicore.kernels.elbo`), ``_params`` and implement ``_sample_x``.
    """

    latent_dim = 1
    global_dim = 1
    obs_dim = 1
    global_names = ("theta",)
    _model_id: int
    _params: np.ndarray

    def __init__(self, theta_prior_scale: float | None = None) -> None:
        self.theta_prior_scale = (None if theta_prior_scale is None
                                  else check_scalar(theta_prior_scale, "theta_prior_scale", positive=True))

    # -- prior ----------------------------------------------------------------------------------------------
    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) and its gradient per row of ``theta`` (n_samples, 1): 0 for the flat prior, else N(0, s²).

        Examples
        --------
        >>> import numpy as np
        >>> from avicore.models import LinearHierarchical
        >>> value, grad = LinearHierarchical(theta_prior_scale=2.0).log_prior_global(np.array([[1.0]]))
        >>> float(grad[0, 0])
        -0.25
        """
        theta = as_float_array(theta, "theta", shape=(None, self.global_dim))
        return flat_or_normal_log_prior(theta, self.theta_prior_scale)

    # -- data -----------------------------------------------------------------------------------------------
    def simulate(self, n: int, seed: int | np.random.Generator | None = None, *,
                 theta: float | None = None) -> SimulatedData:
        """Draw ``n`` observations: θ (from its prior, or ``theta``), zₙ ~ N(0, 1), xₙ ~ p(xₙ | zₙ, θ).

        Parameters
        ----------
        n : int
            Number of observations (>= 1).
        seed : int, numpy.random.Generator or None
            Randomness.
        theta : float, optional
            The global parameter. Default: a draw from N(0, s²) with a proper prior, 0.0 with the flat prior.

        Returns
        -------
        SimulatedData
            ``x`` and ``z`` of shape (n, 1), ``theta`` of shape (1,).

        Examples
        --------
        >>> from avicore.models import NonlinearHierarchical
        >>> data = NonlinearHierarchical().simulate(5, seed=0, theta=1.0)
        >>> data.x.shape, data.theta.tolist()
        ((5, 1), [1.0])
        """
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        rng = check_random_state(seed)
        th = draw_theta(rng, theta, self.theta_prior_scale)
        z = rng.standard_normal((n, 1))
        x = self._sample_x(rng, z, th)
        return SimulatedData(x=x, z=z, theta=np.array([th]))

    def _sample_x(self, rng: np.random.Generator, z: np.ndarray, theta: float) -> np.ndarray:
        raise NotImplementedError

    # -- log joint ------------------------------------------------------------------------------------------
    def log_joint(self, x: object, z: object, theta: object) -> LogJoint:
        """log p(zₙ, xₙ | θ) for each row and its gradients in zₙ and θ (NumPy).

        Parameters
        ----------
        x : array-like of shape (n_obs, 1) or (n_obs,)
            Observations.
        z : array-like of shape (n_obs, 1) or (n_obs,)
            Local latents.
        theta : array-like of shape (1,) or float
            The global parameter.

        Returns
        -------
        LogJoint
            Per-row value and gradients.

        Examples
        --------
        >>> from avicore.models import LinearHierarchical
        >>> lj = LinearHierarchical(tau=1.0, sigma=1.0).log_joint([0.0], [0.0], 0.0)
        >>> round(float(lj.value[0]), 6)  # two N(0, 1) densities at 0: -log(2π)
        -1.837877
        """
        from ..kernels.elbo import NUMPY_DENSITIES

        xa = self.validate_data(x)
        za = as_float_array(z, "z")
        if za.ndim == 1:
            za = za.reshape(-1, 1)
        if za.shape != (xa.shape[0], self.latent_dim):
            raise ValueError(f"z must have shape ({xa.shape[0]}, {self.latent_dim}) like x; got {np.shape(z)}.")
        th = as_float_array(theta, "theta").reshape(-1)
        if th.shape != (self.global_dim,):
            raise ValueError(f"theta must hold {self.global_dim} value(s); got shape {np.shape(theta)}.")
        value, grad_z, grad_theta = NUMPY_DENSITIES[self._model_id](self._params, xa, za, th[None, :])
        return LogJoint(value=value, grad_z=grad_z, grad_theta=grad_theta)

    # -- the fused pass -------------------------------------------------------------------------------------
    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str,
                    out: LocalTerms | None = None) -> LocalTerms:
        """The fused reparameterised pass over a batch (see :class:`~avicore.models.base.LocalTerms`).

        ``out`` (optional) is a :class:`LocalTerms` of preallocated arrays that receive the results and is
        returned: an engine can reuse it every iteration instead of allocating (N, d) arrays each time.

        Examples
        --------
        >>> import numpy as np
        >>> from avicore.models import LinearHierarchical
        >>> model = LinearHierarchical()
        >>> x = model.simulate(4, seed=0).x
        >>> terms = model.local_terms(x, np.zeros((4, 1)), np.zeros((4, 1)), np.zeros((2, 1)), seed=0, step=0,
        ...                           index=np.arange(4), backend="numpy")
        >>> terms.log_joint.shape, terms.grad_mean.shape, terms.grad_global.shape
        ((2,), (4, 1), (2, 1))
        """
        from ..kernels.elbo import local_terms

        check_local_inputs(self, x, mean, log_scale, theta, index, out)
        return local_terms(self._model_id, self._params, x, mean, log_scale, theta, seed=seed, step=step,
                           index=index, backend=backend, out=out)


class LinearHierarchical(HierarchicalModel):
    """Linear hierarchical model: zₙ ~ N(0, 1), xₙ ~ N(θ + τ zₙ, σ²), θ flat or N(0, s²).

    Parameters
    ----------
    tau : float
        Loading of the latent (>= 0). Default 1.155 (the paper's value).
    sigma : float
        Observation noise standard deviation (> 0). Default 2.43.
    theta_prior_scale : float, optional
        ``None`` (default, the paper's choice) for the flat prior log p(θ) = 0; else the standard deviation s of
        θ ~ N(0, s²).

    Notes
    -----
    The joint of (θ, z) is Gaussian, so the mean-field optimum has the exact posterior means and the variances
    1/diag(precision) (see :meth:`fvi_optimum`).

    Examples
    --------
    >>> from avicore.models import LinearHierarchical
    >>> model = LinearHierarchical()
    >>> data = model.simulate(100, seed=1)
    >>> opt = model.fvi_optimum(data.x)
    >>> bool(abs(opt.global_mean[0] - data.x.mean()) < 1e-12)
    True
    """

    _model_id = 0  # avicore.kernels.elbo.MODEL_LINEAR

    def __init__(self, tau: float = 1.155, sigma: float = 2.43, theta_prior_scale: float | None = None) -> None:
        super().__init__(theta_prior_scale)
        self.tau = check_scalar(tau, "tau", non_negative=True)
        self.sigma = check_scalar(sigma, "sigma", positive=True)
        self._params = linear_params(self.tau, self.sigma)

    def __repr__(self) -> str:
        return (f"LinearHierarchical(tau={self.tau!r}, sigma={self.sigma!r}, "
                f"theta_prior_scale={self.theta_prior_scale!r})")

    def _sample_x(self, rng: np.random.Generator, z: np.ndarray, theta: float) -> np.ndarray:
        return theta + self.tau * z + self.sigma * rng.standard_normal(z.shape)

    def fvi_optimum(self, x: object) -> FVIOptimum:
        """The exact F-VI optimum and its ELBO.

        Parameters
        ----------
        x : array-like of shape (n_obs, 1) or (n_obs,)
            Observations.

        Returns
        -------
        FVIOptimum
            With c = σ² + τ² and the flat prior: q(θ) = N(x̄, σ²/N), q(zₙ) = N(τ(xₙ − x̄)/c, σ²/c). With the
            prior N(0, s²): q(θ) = N(N s² x̄ / (N s² + c), 1 / (N/σ² + 1/s²)) and q(zₙ) = N(τ(xₙ − μ_θ)/c, σ²/c).

        Notes
        -----
        Mean-field Gaussian VI on a Gaussian target recovers the exact posterior means, here
        E[θ | x] (from xₙ | θ ~ N(θ, c) independently) and E[zₙ | x] = τ(xₙ − E[θ | x])/c, and the variances
        1/diag(precision) with precision N/σ² (+ 1/s²) for θ and 1 + τ²/σ² for each zₙ.

        Examples
        --------
        >>> from avicore.models import LinearHierarchical
        >>> opt = LinearHierarchical(tau=1.0, sigma=1.0).fvi_optimum([1.0, 3.0])
        >>> opt.local_mean.ravel().tolist(), opt.global_sd.tolist()
        ([-0.5, 0.5], [0.7071067811865476])
        """
        xa = self.validate_data(x)
        n = xa.shape[0]
        tau, sigma = self.tau, self.sigma
        c = sigma ** 2 + tau ** 2
        xbar = float(xa.mean())
        if self.theta_prior_scale is None:
            mu, var = xbar, sigma ** 2 / n
        else:
            s2 = self.theta_prior_scale ** 2
            mu = n * s2 * xbar / (n * s2 + c)
            var = 1.0 / (n / sigma ** 2 + 1.0 / s2)
        local_mean = tau * (xa - mu) / c
        local_sd = np.full((n, 1), sigma / math.sqrt(c))
        global_mean, global_sd = np.array([mu]), np.array([math.sqrt(var)])
        elbo = self.exact_elbo(xa, local_mean, local_sd, global_mean, global_sd)
        return FVIOptimum(local_mean=local_mean, local_sd=local_sd, global_mean=global_mean,
                          global_sd=global_sd, elbo=elbo)

    def exact_elbo(self, x: object, local_mean: object, local_sd: object, global_mean: object,
                   global_sd: object) -> float:
        """The full ELBO of a Gaussian mean-field q(θ) ∏ q(zₙ), in closed form.

        Parameters
        ----------
        x : array-like of shape (n_obs, 1) or (n_obs,)
            Observations.
        local_mean, local_sd : array-like of shape (n_obs, 1) or (n_obs,)
            q(zₙ) = N(mₙ, sₙ²).
        global_mean, global_sd : array-like of shape (1,) or float
            q(θ) = N(μ, v).

        Returns
        -------
        float
            E_q[log p(θ)] + Σₙ E_q[log p(zₙ, xₙ | θ)] + Σₙ H[q(zₙ)] + H[q(θ)].

        Notes
        -----
        With v = global_sd², E_q[log p(zₙ, xₙ | θ)] = −log 2π − log σ − (mₙ² + sₙ²)/2
        − ((xₙ − μ − τ mₙ)² + v + τ² sₙ²)/(2σ²); H[N(m, s²)] = ½ log(2πe s²); with the prior N(0, S²),
        E_q[log p(θ)] = −½ log(2π S²) − (μ² + v)/(2S²) (0 for the flat prior).

        Examples
        --------
        >>> from avicore.models import LinearHierarchical
        >>> model = LinearHierarchical()
        >>> opt = model.fvi_optimum([0.5, -1.0, 2.0])
        >>> bool(abs(model.exact_elbo([0.5, -1.0, 2.0], opt.local_mean, opt.local_sd, opt.global_mean,
        ...                           opt.global_sd) - opt.elbo) < 1e-12)
        True
        """
        xa = self.validate_data(x)
        n = xa.shape[0]
        m = self._column(local_mean, "local_mean", n)
        s = self._column(local_sd, "local_sd", n)
        if (s <= 0).any():
            raise ValueError(f"local_sd must be > 0; got min {float(s.min())!r}.")
        mu = self._scalar(global_mean, "global_mean")
        sd = self._scalar(global_sd, "global_sd")
        if sd <= 0:
            raise ValueError(f"global_sd must be > 0; got {sd!r}.")
        tau, sigma, v = self.tau, self.sigma, sd * sd
        expected = (-_LOG_2PI - math.log(sigma) - 0.5 * (m ** 2 + s ** 2)
                    - ((xa - mu - tau * m) ** 2 + v + tau ** 2 * s ** 2) / (2.0 * sigma ** 2))
        entropy = 0.5 * (_LOG_2PI + 1.0) * (n + 1) + np.log(s).sum() + math.log(sd)
        prior = 0.0
        if self.theta_prior_scale is not None:
            ps = self.theta_prior_scale
            prior = -0.5 * _LOG_2PI - math.log(ps) - (mu ** 2 + v) / (2.0 * ps ** 2)
        return float(expected.sum() + entropy + prior)

    def log_evidence(self, x: object) -> float:
        """log p(x) under a proper prior: x ~ N(0, s² 11ᵀ + (τ² + σ²) I), in O(N).

        Raises
        ------
        ValueError
            With the flat prior (``theta_prior_scale=None``), whose evidence is improper.

        Notes
        -----
        With c = τ² + σ², the determinant lemma gives log det = (N − 1) log c + log(c + N s²) and
        xᵀ Σ⁻¹ x = (xᵀx − s² (Σ xₙ)² / (c + N s²)) / c.

        Examples
        --------
        >>> from avicore.models import LinearHierarchical
        >>> round(LinearHierarchical(tau=1.0, sigma=1.0, theta_prior_scale=1.0).log_evidence([0.0]), 6)  # N(0 | 0, 3)
        -1.468245
        """
        if self.theta_prior_scale is None:
            raise ValueError("log_evidence needs a proper prior on theta; got theta_prior_scale=None (flat "
                             "prior, improper evidence). Pass theta_prior_scale=... to the model.")
        xa = self.validate_data(x).ravel()
        n = xa.size
        c = self.tau ** 2 + self.sigma ** 2
        s2 = self.theta_prior_scale ** 2
        logdet = (n - 1) * math.log(c) + math.log(c + n * s2)
        quad = (float(xa @ xa) - s2 * float(xa.sum()) ** 2 / (c + n * s2)) / c
        return -0.5 * (n * _LOG_2PI + logdet + quad)

    @staticmethod
    def _column(v: object, name: str, n: int) -> np.ndarray:
        arr = as_float_array(v, name)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.shape != (n, 1):
            raise ValueError(f"{name} must have shape ({n}, 1) or ({n},); got {np.shape(v)}.")
        return arr

    @staticmethod
    def _scalar(v: object, name: str) -> float:
        arr = as_float_array(v, name).reshape(-1)
        if arr.shape != (1,):
            raise ValueError(f"{name} must hold one value; got shape {np.shape(v)}.")
        return float(arr[0])


class NonlinearHierarchical(HierarchicalModel):
    """Nonlinear hierarchical model: zₙ ~ N(0, 1), xₙ ~ N(θ + zₙ + zₙ sin zₙ, exp(cos zₙ)²), θ flat or N(0, s²).

    The likelihood is the properly normalised Gaussian with log standard deviation cos zₙ:
    log p(xₙ | zₙ, θ) = −½ log 2π − cos zₙ − ½ (xₙ − θ − zₙ − zₙ sin zₙ)² exp(−2 cos zₙ).

    Parameters
    ----------
    theta_prior_scale : float, optional
        ``None`` (default, the paper's choice) for the flat prior; else the standard deviation of θ ~ N(0, s²).

    Examples
    --------
    >>> from avicore.models import NonlinearHierarchical
    >>> model = NonlinearHierarchical()
    >>> lj = model.log_joint([0.0], [0.0], 0.0)
    >>> round(float(lj.value[0]), 6)  # -log(2π) - cos(0)
    -2.837877
    """

    _model_id = 1  # avicore.kernels.elbo.MODEL_NONLINEAR

    def __init__(self, theta_prior_scale: float | None = None) -> None:
        super().__init__(theta_prior_scale)
        self._params = nonlinear_params()

    def __repr__(self) -> str:
        return f"NonlinearHierarchical(theta_prior_scale={self.theta_prior_scale!r})"

    def _sample_x(self, rng: np.random.Generator, z: np.ndarray, theta: float) -> np.ndarray:
        return theta + z + z * np.sin(z) + np.exp(np.cos(z)) * rng.standard_normal(z.shape)
