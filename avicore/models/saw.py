"""The paper's "saw" time series: zₙ ~ N(xₙ, 1), xₙ₊₁ ~ N(a(zₙ + θ), 1), with its closed-form F-VI optimum.

Generative process (one sequence of N steps)::

    x₁ ~ N(0, 1)                       (the documented start)
    zₙ | xₙ ~ N(xₙ, 1)                 n = 1 … N
    xₙ₊₁ | zₙ, θ ~ N(a(zₙ + θ), 1)      n = 1 … N − 1
    θ ~ flat, or N(0, s²)

The latent zₙ's Markov blanket holds xₙ and xₙ₊₁, so the ideal inference function takes the window (xₙ, xₙ₊₁):
an A-VI encoder with ``window=(0, 1)`` can close the amortization gap, one on xₙ₊₁ alone cannot.

Per-row terms (what :meth:`SawTimeSeries.local_terms` sums)::

    ℓₙ = log N(zₙ; xₙ, 1) + [n < N] log N(xₙ₊₁; a(zₙ + θ), 1) + [n = 1] log N(x₁; 0, 1)

The last latent z_N has only its own term (its child x_{N+1} is not observed), and the start density of x₁ is
counted once, in row 1, so that the ELBO is the full ELBO of the simulated process.
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import as_float_array, check_count, check_random_state, check_scalar
from ._priors import draw_theta, flat_or_normal_log_prior
from .base import LatentVariableModel, LocalTerms, SimulatedData
from .hierarchical import FVIOptimum, check_local_inputs
from .state_space import check_whole_sequence

_LOG_2PI = math.log(2.0 * math.pi)


class SawTimeSeries(LatentVariableModel):
    """The saw time series zₙ ~ N(xₙ, 1), xₙ₊₁ ~ N(a(zₙ + θ), 1) (module docstring for the full process).

    Parameters
    ----------
    a : float
        Autoregressive coefficient (default 0.75, the paper's value; |a| < 1 keeps the simulated series
        stationary, any real a is accepted).
    theta_prior_scale : float, optional
        ``None`` (default) for the flat prior log p(θ) = 0; else the standard deviation s of θ ~ N(0, s²).

    Notes
    -----
    The joint of (θ, z) given x is Gaussian, so the mean-field optimum is closed-form (:meth:`fvi_optimum`):
    q(zₙ) has mean (xₙ + a xₙ₊₁ − a² E[θ | x]) / (1 + a²) and variance 1/(1 + a²) for n < N, and N(x_N, 1) for
    the last step — affine in (xₙ, xₙ₊₁). ``local_terms`` needs the whole ordered sequence (row n reads xₙ₊₁), so
    minibatches are refused; it is NumPy only.

    Examples
    --------
    >>> from avicore.models import SawTimeSeries
    >>> model = SawTimeSeries()
    >>> data = model.simulate(500, seed=0, theta=1.0)
    >>> opt = model.fvi_optimum(data.x)
    >>> bool(abs(opt.global_mean[0] - 1.0) < 0.3)
    True
    """

    latent_dim = 1
    global_dim = 1
    obs_dim = 1
    global_names = ("theta",)
    supports_minibatch = False
    supported_backends = ("numpy",)

    def __init__(self, a: float = 0.75, theta_prior_scale: float | None = None) -> None:
        self.a = check_scalar(a, "a")
        self.theta_prior_scale = (None if theta_prior_scale is None
                                  else check_scalar(theta_prior_scale, "theta_prior_scale", positive=True))

    def __repr__(self) -> str:
        return f"SawTimeSeries(a={self.a!r}, theta_prior_scale={self.theta_prior_scale!r})"

    # -- data -----------------------------------------------------------------------------------------------
    def simulate(self, n: int, seed: int | np.random.Generator | None = None, *,
                 theta: float | None = None) -> SimulatedData:
        """Draw one sequence of ``n`` steps following the model: x₁ ~ N(0, 1), then zₙ | xₙ and xₙ₊₁ | zₙ, θ.

        Parameters
        ----------
        n : int
            Number of steps (>= 1).
        seed : int, numpy.random.Generator or None
            Randomness.
        theta : float, optional
            The global parameter. Default: a draw from N(0, s²) with a proper prior, 0.0 with the flat prior.

        Returns
        -------
        SimulatedData
            ``x`` and ``z`` of shape (n, 1), ``theta`` of shape (1,).
        """
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        rng = check_random_state(seed)
        th = draw_theta(rng, theta, self.theta_prior_scale)
        eps_z = rng.standard_normal(n)
        eps_x = rng.standard_normal(n)
        x = np.empty(n)
        z = np.empty(n)
        x[0] = eps_x[0]
        for t in range(n):
            z[t] = x[t] + eps_z[t]
            if t + 1 < n:
                x[t + 1] = self.a * (z[t] + th) + eps_x[t + 1]
        return SimulatedData(x=x.reshape(-1, 1), z=z.reshape(-1, 1), theta=np.array([th]))

    # -- prior ----------------------------------------------------------------------------------------------
    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log p(θ) and its gradient per row of ``theta`` (S, 1): 0 for the flat prior, else N(0, s²)."""
        theta = as_float_array(theta, "theta", shape=(None, 1))
        return flat_or_normal_log_prior(theta, self.theta_prior_scale)

    # -- the Monte-Carlo pass -------------------------------------------------------------------------------
    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str) -> LocalTerms:
        """The reparameterised pass over the whole sequence (see :class:`~avicore.models.base.LocalTerms`).

        ε[n, s] comes from the counter-based generator keyed by (seed, step, index[n], s), as for every model;
        zₙ⁽ˢ⁾ = mₙ + sₙ ε[n, s] and the per-row terms are those of the module docstring. ∂ℓₙ/∂zₙ =
        (xₙ − zₙ) + [n < N] a(xₙ₊₁ − a(zₙ + θ)) and ∂/∂θ Σₙ ℓₙ = Σ_{n<N} a(xₙ₊₁ − a(zₙ + θ)).

        Raises
        ------
        ValueError
            When ``index`` is not ``arange(n_rows)`` (row n reads xₙ₊₁: no minibatches) or a shape is wrong.

        Examples
        --------
        >>> import numpy as np
        >>> from avicore.models import SawTimeSeries
        >>> model = SawTimeSeries()
        >>> x = model.simulate(4, seed=0).x
        >>> terms = model.local_terms(x, np.zeros((4, 1)), np.zeros((4, 1)), np.zeros((2, 1)), seed=0, step=0,
        ...                           index=np.arange(4), backend="numpy")
        >>> terms.log_joint.shape, terms.grad_mean.shape, terms.grad_global.shape
        ((2,), (4, 1), (2, 1))
        """
        from ..kernels._counter_normal import STREAM_LOCAL, normals_numpy, stream_key

        check_local_inputs(self, x, mean, log_scale, theta, index)
        check_whole_sequence(index)
        if backend != "numpy":
            raise ValueError(f"backend must be one of {self.supported_backends} for SawTimeSeries; "
                             f"got {backend!r}.")
        a = self.a
        n_samples = theta.shape[0]
        eps = normals_numpy(stream_key(seed, step, STREAM_LOCAL), index, n_samples, 1)[:, :, 0]  # (N, S)
        scale = np.exp(log_scale[:, 0])
        xs = x[:, 0]
        z = mean[:, :1] + scale[:, None] * eps
        own = xs[:, None] - z
        log_joint = -0.5 * (own * own).sum(axis=0) - 0.5 * xs.size * _LOG_2PI - 0.5 * (xs[0] ** 2 + _LOG_2PI)
        grad = own
        if xs.size > 1:
            child = xs[1:, None] - a * (z[:-1] + theta[None, :, 0])  # (N-1, S)
            log_joint -= 0.5 * (child * child).sum(axis=0) + 0.5 * (xs.size - 1) * _LOG_2PI
            grad[:-1] += a * child
            grad_global = a * child.sum(axis=0)[:, None]
        else:
            grad_global = np.zeros((n_samples, 1))
        return LocalTerms(log_joint=log_joint, grad_mean=grad.mean(axis=1)[:, None],
                          grad_log_scale=((grad * eps).mean(axis=1) * scale)[:, None], grad_global=grad_global)

    # -- exact references -----------------------------------------------------------------------------------
    def exact_elbo(self, x: object, local_mean: object, local_sd: object, global_mean: object,
                   global_sd: object) -> float:
        """The full ELBO of a Gaussian mean-field q(θ) ∏ q(zₙ), in closed form (no Monte Carlo).

        Parameters
        ----------
        x : array-like of shape (n_obs, 1) or (n_obs,)
            One sequence.
        local_mean, local_sd : array-like of shape (n_obs, 1) or (n_obs,)
            q(zₙ) = N(mₙ, sₙ²), sₙ > 0.
        global_mean, global_sd : float or array-like of shape (1,)
            q(θ) = N(μ, v), v = global_sd² (> 0).

        Returns
        -------
        float

        Notes
        -----
        E_q[log N(zₙ; xₙ, 1)] = −½ log 2π − ½((mₙ − xₙ)² + sₙ²);
        E_q[log N(xₙ₊₁; a(zₙ + θ), 1)] = −½ log 2π − ½((xₙ₊₁ − a mₙ − a μ)² + a² sₙ² + a² v); plus log N(x₁; 0, 1),
        E_q[log p(θ)] (0 when flat, else −½ log 2πS² − (μ² + v)/(2S²)) and the entropies ½ log(2πe s²).

        Examples
        --------
        >>> from avicore.models import SawTimeSeries
        >>> model = SawTimeSeries()
        >>> x = model.simulate(50, seed=0).x
        >>> opt = model.fvi_optimum(x)
        >>> bool(abs(model.exact_elbo(x, opt.local_mean, opt.local_sd, opt.global_mean, opt.global_sd)
        ...          - opt.elbo) < 1e-9)
        True
        """
        xs = self.validate_data(x)[:, 0]
        n = xs.size
        m = self._column(local_mean, "local_mean", n)
        s = self._column(local_sd, "local_sd", n)
        if (s <= 0).any():
            raise ValueError(f"local_sd must be > 0; got min {float(s.min())!r}.")
        mu = float(as_float_array(global_mean, "global_mean").reshape(-1)[0])
        sd = float(as_float_array(global_sd, "global_sd").reshape(-1)[0])
        if sd <= 0:
            raise ValueError(f"global_sd must be > 0; got {sd!r}.")
        a, v = self.a, sd * sd
        value = -0.5 * n * _LOG_2PI - 0.5 * float(((m - xs) ** 2 + s * s).sum())
        value += -0.5 * (xs[0] ** 2 + _LOG_2PI)
        if n > 1:
            r = xs[1:] - a * m[:-1] - a * mu
            value += -0.5 * (n - 1) * _LOG_2PI - 0.5 * float((r * r + a * a * s[:-1] ** 2).sum()) \
                - 0.5 * (n - 1) * a * a * v
        if self.theta_prior_scale is not None:
            ps = self.theta_prior_scale
            value += -0.5 * _LOG_2PI - math.log(ps) - (mu * mu + v) / (2.0 * ps * ps)
        entropy = 0.5 * (_LOG_2PI + 1.0) * (n + 1) + float(np.log(s).sum()) + math.log(sd)
        return float(value + entropy)

    def fvi_optimum(self, x: object) -> FVIOptimum:
        """The exact F-VI (mean-field Gaussian) optimum and its ELBO.

        Parameters
        ----------
        x : array-like of shape (n_obs, 1) or (n_obs,)
            One sequence (n_obs >= 2 with the flat prior, so that θ is identified).

        Returns
        -------
        FVIOptimum
            With c = 1 + a², dₙ = xₙ₊₁ − a xₙ and the θ precision P = (N − 1) a²/c (+ 1/S² with a prior):
            q(θ) = N(μ, 1/((N − 1) a² [+ 1/S²])) with μ = (a/c) Σ_{n<N} dₙ / P;
            q(zₙ) = N((xₙ + a xₙ₊₁ − a² μ)/c, 1/c) for n < N and q(z_N) = N(x_N, 1).

        Notes
        -----
        The target p(θ, z | x) is Gaussian, so the mean-field optimum has the exact posterior means and the
        variances 1/diag(precision). Integrating zₙ out gives xₙ₊₁ | xₙ, θ ~ N(a xₙ + aθ, c), hence E[θ | x];
        then E[zₙ | x, θ] = (xₙ + a(xₙ₊₁ − aθ))/c is linear in θ. The precision's diagonal is c for n < N, 1 for
        z_N and (N − 1) a² (+ 1/S²) for θ.
        """
        xs = self.validate_data(x)[:, 0]
        n, a = xs.size, self.a
        c = 1.0 + a * a
        prior_prec = 0.0 if self.theta_prior_scale is None else 1.0 / self.theta_prior_scale ** 2
        prec_marg = (n - 1) * a * a / c + prior_prec
        if prec_marg <= 0.0:
            raise ValueError(f"x must hold at least 2 observations (with a != 0) for the flat prior to give a "
                             f"proper posterior of theta; got n_obs={n}, a={a!r}.")
        mu = (a / c) * float((xs[1:] - a * xs[:-1]).sum()) / prec_marg
        mean = xs.copy()
        mean[:-1] = (xs[:-1] + a * xs[1:] - a * a * mu) / c
        sd = np.ones(n)
        sd[:-1] = 1.0 / math.sqrt(c)
        global_sd = 1.0 / math.sqrt((n - 1) * a * a + prior_prec)
        local_mean, local_sd = mean.reshape(-1, 1), sd.reshape(-1, 1)
        gm, gs = np.array([mu]), np.array([global_sd])
        elbo = self.exact_elbo(xs, local_mean, local_sd, gm, gs)
        return FVIOptimum(local_mean=local_mean, local_sd=local_sd, global_mean=gm, global_sd=gs, elbo=elbo)

    @staticmethod
    def _column(v: object, name: str, n: int) -> np.ndarray:
        arr = as_float_array(v, name)
        if arr.size != n or arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
            raise ValueError(f"{name} must have shape ({n}, 1) or ({n},); got {np.shape(v)}.")
        return arr.reshape(-1)
