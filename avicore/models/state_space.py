"""Linear-Gaussian state-space models with exact references: log p(x), the posterior, and the F-VI optimum.

``LinearGaussianSSM(A, Q, C, R, m0, P0)``::

    z_1 ~ N(m0, P0),    z_t = A z_{t-1} + w_t,  w_t ~ N(0, Q),    x_t = C z_t + v_t,  v_t ~ N(0, R),

and its special case ``GaussianRandomWalk`` (d = p = 1, A = C = 1, m0 = 0) — the paper's HMM example, where the
optimal factorized q(z_n) depends on every observation, so no fixed-window encoder can reach it.

Mean-field optimum
------------------
The posterior p(z | x) is Gaussian with a block-tridiagonal precision J. Over the fully factorized Gaussian family
q(z) = ∏_{t,j} N(z_tj; μ_tj, s²_tj), the ELBO is maximised by the exact posterior means and s²_tj = 1 / J_tj,tj, and
then ELBO* = log p(x) − ½ (Σ log J_tj,tj − log det J) ≤ log p(x). :meth:`LinearGaussianSSM.elbo` evaluates the full
ELBO of any such q in closed form (every constant included), independently of log p(x), so the KL of any fitted
factorized q is exact too: log p(x) − elbo(x, local_mean, local_sd).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._validate import as_float_array, check_count, check_lengths, check_random_state, check_scalar
from .base import LatentVariableModel, LocalTerms, SimulatedData
from .hierarchical import FVIOptimum

LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class MeanFieldOptimum(FVIOptimum):
    """The optimum of the fully factorized Gaussian family q(z) = ∏ N(z_tj; local_mean_tj, local_sd_tj²).

    Attributes
    ----------
    local_mean : ndarray of shape (n_samples, d)
        Optimal means: the exact posterior means E[z_t | x].
    local_sd : ndarray of shape (n_samples, d)
        Optimal standard deviations 1 / sqrt(diag J), J the joint posterior precision.
    global_mean, global_sd : ndarray of shape (0,)
        Empty: these models have no global parameters.
    elbo : float
        The full ELBO of this q (every constant included), summed over sequences.
    log_evidence : float
        log p(x), summed over sequences.
    """

    log_evidence: float

    @property
    def variance(self) -> np.ndarray:
        """local_sd², shape (n_samples, d)."""
        return self.local_sd ** 2

    @property
    def kl(self) -> float:
        """KL(q* ‖ p(z | x)) = log p(x) − ELBO* ≥ 0."""
        return self.log_evidence - self.elbo


class LinearGaussianSSM(LatentVariableModel):
    """Time-invariant linear-Gaussian state-space model with exact inference.

    Parameters
    ----------
    A : array-like of shape (d, d)
        State transition matrix.
    Q : array-like of shape (d, d)
        Transition noise covariance (symmetric positive-definite).
    C : array-like of shape (p, d)
        Observation matrix.
    R : array-like of shape (p, p)
        Observation noise covariance (symmetric positive-definite).
    m0 : array-like of shape (d,)
        Mean of the first state.
    P0 : array-like of shape (d, d)
        Covariance of the first state (symmetric positive-definite).

    Notes
    -----
    Observations of several independent sequences can be passed concatenated with hmmlearn-style ``lengths``
    to every method. There are no global parameters (``global_dim = 0``). Scalars are accepted for 1x1
    parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.models.state_space import LinearGaussianSSM
    >>> model = LinearGaussianSSM(A=[[0.9, 0.1], [0.0, 0.8]], Q=np.eye(2), C=[[1.0, 0.0]], R=[[0.5]],
    ...                           m0=[0.0, 0.0], P0=np.eye(2))
    >>> data = model.simulate(50, seed=0)
    >>> opt = model.fvi_optimum(data.x, backend="numpy")
    >>> bool(0.0 <= opt.kl) and opt.local_mean.shape == (50, 2)
    True
    """

    global_dim = 0
    global_names = ()
    #: log p(z_t | z_{t-1}) couples neighbouring rows: the engines must pass every row, in order.
    supports_minibatch = False
    #: ``local_terms`` is NumPy (vectorised over steps and samples); the smoother has every backend.
    supported_backends = ("numpy",)

    def __init__(self, A: object, Q: object, C: object, R: object, m0: object, P0: object) -> None:
        from ..chain import check_params

        self.params = check_params(A, Q, C, R, m0, P0)
        self.latent_dim = self.params.state_dim
        self.obs_dim = self.params.obs_dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.latent_dim}, p={self.obs_dim})"

    # -- data -----------------------------------------------------------------------------------------------

    def simulate(self, n: int, seed: int | np.random.Generator | None = None) -> SimulatedData:
        """Draw one sequence of ``n`` steps.

        Parameters
        ----------
        n : int
            Number of time steps (>= 1).
        seed : int or numpy.random.Generator, optional
            Randomness.

        Returns
        -------
        SimulatedData
            ``x`` (n, p), ``z`` (n, d), ``theta`` of shape (0,).
        """
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        rng = check_random_state(seed)
        prm = self.params
        d, p = self.latent_dim, self.obs_dim
        eps = rng.standard_normal((n, d))
        noise = eps @ np.linalg.cholesky(prm.Q).T
        z = np.empty((n, d))
        z[0] = prm.m0 + np.linalg.cholesky(prm.P0) @ eps[0]
        for t in range(1, n):
            z[t] = prm.A @ z[t - 1] + noise[t]
        x = z @ prm.C.T + rng.standard_normal((n, p)) @ np.linalg.cholesky(prm.R).T
        return SimulatedData(x=x, z=z, theta=np.empty(0))

    def _prepare(self, x: object, lengths: object) -> tuple[np.ndarray, np.ndarray]:
        arr = self.validate_data(x)
        return arr, check_lengths(lengths, arr.shape[0])

    # -- exact inference ------------------------------------------------------------------------------------

    def posterior(self, x: object, lengths: object = None, *, backend: str = "auto"):
        """The exact posterior marginals p(z_t | x) (Kalman filter + RTS smoother).

        Parameters
        ----------
        x : array-like of shape (n_samples, p), or (n_samples,) when p = 1
        lengths : array-like of int, optional
            Sequence lengths (hmmlearn convention); default one sequence.
        backend : {"auto", "numpy", "cython", "numba", "cuda"}

        Returns
        -------
        avicore.chain.SmootherResult
        """
        from ..chain import smoother

        arr, offsets = self._prepare(x, lengths)
        prm = self.params
        return smoother(arr, prm.A, prm.Q, prm.C, prm.R, prm.m0, prm.P0, lengths=np.diff(offsets),
                        backend=backend)

    def log_evidence(self, x: object, lengths: object = None, *, backend: str = "auto") -> float:
        """log p(x), summed over sequences (exact, by the Kalman filter)."""
        return float(self.posterior(x, lengths, backend=backend).log_evidence.sum())

    def precision_diagonal(self, x: object, lengths: object = None) -> np.ndarray:
        """diag(J) of the joint posterior precision J of z given x, shape (n_samples, d).

        J is block-tridiagonal with diagonal blocks CᵀR⁻¹C + [first step] P0⁻¹ + [not first] Q⁻¹ + [not last]
        AᵀQ⁻¹A; it does not depend on the values of x, only on the sequence lengths.
        """
        arr, offsets = self._prepare(x, lengths)
        prm = self.params
        Qi = np.linalg.inv(prm.Q)
        n = arr.shape[0]
        starts, ends = offsets[:-1], offsets[1:] - 1
        diag = np.tile(np.diag(prm.C.T @ np.linalg.solve(prm.R, prm.C)), (n, 1))
        first = np.zeros(n, dtype=bool)
        first[starts] = True
        last = np.zeros(n, dtype=bool)
        last[ends] = True
        diag[first] += np.diag(np.linalg.inv(prm.P0))
        diag[~first] += np.diag(Qi)
        diag[~last] += np.diag(prm.A.T @ Qi @ prm.A)
        return diag

    def elbo(self, x: object, local_mean: object, local_sd: object, lengths: object = None) -> float:
        """Full ELBO of the factorized Gaussian q(z) = ∏ N(z_tj; local_mean_tj, local_sd_tj²), in closed form.

        ELBO(q) = E_q[log p(x, z)] + H[q], every constant included, summed over sequences; no Monte Carlo.

        Parameters
        ----------
        x : array-like of shape (n_samples, p), or (n_samples,) when p = 1
        local_mean : array-like of shape (n_samples, d), or (n_samples,) when d = 1
        local_sd : array-like of shape (n_samples, d), or (n_samples,) when d = 1; positive
        lengths : array-like of int, optional

        Returns
        -------
        float

        Notes
        -----
        Under q the coordinates are independent, so every expected quadratic form splits into the quadratic form
        at the means plus Σ_j (diagonal of its matrix)_j · sd_j²; e.g. E_q[(z_t − A z_{t−1})ᵀ Q⁻¹ (z_t − A z_{t−1})]
        = rᵀ Q⁻¹ r + Σ_j (Q⁻¹)_jj s²_tj + Σ_j (Aᵀ Q⁻¹ A)_jj s²_{t−1,j} with r = μ_t − A μ_{t−1}.
        """
        arr, offsets = self._prepare(x, lengths)
        n, d = arr.shape[0], self.latent_dim
        mu = as_float_array(local_mean, "local_mean")
        sd = as_float_array(local_sd, "local_sd")
        if d == 1 and mu.ndim == 1:
            mu = mu.reshape(-1, 1)
        if d == 1 and sd.ndim == 1:
            sd = sd.reshape(-1, 1)
        for name, a in (("local_mean", mu), ("local_sd", sd)):
            if a.shape != (n, d):
                raise ValueError(f"{name} must have shape ({n}, {d}) to match x; got {a.shape}.")
        if (sd <= 0).any():
            raise ValueError(f"local_sd must be positive; got min {sd.min()!r}.")
        var = sd * sd
        prm = self.params
        p = self.obs_dim
        Qi, Ri, P0i = np.linalg.inv(prm.Q), np.linalg.inv(prm.R), np.linalg.inv(prm.P0)
        logdet = {k: np.linalg.slogdet(m)[1] for k, m in (("Q", prm.Q), ("R", prm.R), ("P0", prm.P0))}
        starts = offsets[:-1]
        first = np.zeros(n, dtype=bool)
        first[starts] = True
        nxt = np.flatnonzero(~first)  # steps t with a predecessor t - 1 in the same sequence

        resid = arr - mu @ prm.C.T
        obs = (-0.5 * n * (p * LOG_2PI + logdet["R"])
               - 0.5 * np.einsum("ti,ij,tj->", resid, Ri, resid)
               - 0.5 * float((var * np.diag(prm.C.T @ Ri @ prm.C)).sum()))
        r0 = mu[starts] - prm.m0
        init = (-0.5 * starts.size * (d * LOG_2PI + logdet["P0"])
                - 0.5 * np.einsum("ti,ij,tj->", r0, P0i, r0)
                - 0.5 * float((var[starts] * np.diag(P0i)).sum()))
        rt = mu[nxt] - mu[nxt - 1] @ prm.A.T
        trans = (-0.5 * nxt.size * (d * LOG_2PI + logdet["Q"])
                 - 0.5 * np.einsum("ti,ij,tj->", rt, Qi, rt)
                 - 0.5 * float((var[nxt] * np.diag(Qi)).sum())
                 - 0.5 * float((var[nxt - 1] * np.diag(prm.A.T @ Qi @ prm.A)).sum()))
        entropy = 0.5 * float(np.log(2.0 * math.pi * math.e * var).sum())
        return float(obs + init + trans + entropy)

    def fvi_optimum(self, x: object, lengths: object = None, *, backend: str = "auto") -> MeanFieldOptimum:
        """The exact optimum of factorized Gaussian VI (F-VI) and its ELBO, in closed form.

        Parameters
        ----------
        x : array-like of shape (n_samples, p), or (n_samples,) when p = 1
        lengths : array-like of int, optional
        backend : {"auto", "numpy", "cython", "numba", "cuda"}
            Backend of the smoother that gives the posterior means and log p(x).

        Returns
        -------
        MeanFieldOptimum
            ``local_mean`` = exact posterior means, ``local_sd`` = 1 / sqrt(diag J), the ELBO of that q, log p(x),
            ``kl`` and ``variance``. Usable wherever an :class:`FVIOptimum` is.
        """
        post = self.posterior(x, lengths, backend=backend)
        lengths = np.diff(post.offsets)
        sd = 1.0 / np.sqrt(self.precision_diagonal(x, lengths))
        elbo = self.elbo(x, post.means, sd, lengths)
        return MeanFieldOptimum(local_mean=post.means, local_sd=sd, global_mean=np.empty(0),
                                global_sd=np.empty(0), elbo=elbo, log_evidence=float(post.log_evidence.sum()))

    def exact_kl(self, x: object, lengths: object = None, *, backend: str = "auto") -> float:
        """log p(x) − ELBO* = KL(q* ‖ p(z | x)) of the mean-field optimum q*."""
        return self.fvi_optimum(x, lengths, backend=backend).kl

    # -- engine contract ------------------------------------------------------------------------------------

    def init_local(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Initial (mean, log sd) of every q(z_t) for F-VI: the least-squares state C⁺ x_t and sd 1.

        Starting at the data instead of 0 saves Adam the long walk to a drifting series' level.
        """
        arr = self.validate_data(x)
        mean = np.ascontiguousarray(arr @ np.linalg.pinv(self.params.C).T)
        return mean, np.zeros_like(mean)

    def log_prior_global(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """No global parameters: log p(θ) = 0 for each of the S rows of ``theta`` (S, 0)."""
        s = np.shape(theta)[0]
        return np.zeros(s), np.zeros((s, 0))

    def local_terms(self, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, *,
                    seed: int, step: int, index: np.ndarray, backend: str) -> LocalTerms:
        """The reparameterised Monte-Carlo pass over one whole sequence (see :class:`~.base.LocalTerms`).

        With ε[t, s] from the counter-based generator keyed by (seed, step, index[t], s, j) — exactly as for the
        hierarchical models — and z_t⁽ˢ⁾ = m_t + s_t ⊙ ε[t, s]::

            log_joint[s] = log N(z_1; m0, P0) + Σ_{t>1} log N(z_t; A z_{t−1}, Q) + Σ_t log N(x_t; C z_t, R)

        and with g_t = ∂ log_joint / ∂z_t = CᵀR⁻¹(x_t − C z_t) − [t = 1] P0⁻¹(z_1 − m0)
        − [t > 1] Q⁻¹(z_t − A z_{t−1}) + [t < T] AᵀQ⁻¹(z_{t+1} − A z_t), ``grad_mean`` = (1/S) Σ_s g_t and
        ``grad_log_scale`` = (1/S) Σ_s g_t ⊙ ε[t, s] ⊙ s_t. There are no global parameters (``grad_global`` is
        (S, 0)).

        Parameters
        ----------
        x, mean, log_scale, theta, seed, step, index, backend
            As in :meth:`~.base.LatentVariableModel.local_terms`. The rows must be the whole ordered sequence:
            ``index`` must equal ``arange(n_rows)`` (the pairwise terms couple neighbours, so minibatches and
            chunks are refused). One sequence per call; ``theta`` has shape (S, 0).

        Returns
        -------
        LocalTerms

        Raises
        ------
        ValueError
            When ``index`` is not ``arange(n_rows)`` or a shape is wrong.

        Notes
        -----
        NumPy only (``supported_backends = ("numpy",)``), vectorised over (t, s): O(T·S·d²) time and T·S·d
        temporaries.

        Examples
        --------
        >>> import numpy as np
        >>> from avicore.models import GaussianRandomWalk
        >>> model = GaussianRandomWalk()
        >>> x = model.simulate(5, seed=0).x
        >>> terms = model.local_terms(x, np.zeros((5, 1)), np.zeros((5, 1)), np.zeros((3, 0)), seed=0, step=0,
        ...                           index=np.arange(5), backend="numpy")
        >>> terms.log_joint.shape, terms.grad_mean.shape, terms.grad_global.shape
        ((3,), (5, 1), (3, 0))
        """
        from ..kernels._counter_normal import STREAM_LOCAL, normals_numpy, stream_key
        from .hierarchical import check_local_inputs

        check_local_inputs(self, x, mean, log_scale, theta, index)
        check_whole_sequence(index)
        if backend != "numpy":
            raise ValueError(f"backend must be one of {self.supported_backends} for {type(self).__name__}; "
                             f"got {backend!r}.")
        prm = self.params
        n, d, p = x.shape[0], self.latent_dim, self.obs_dim
        n_samples = theta.shape[0]
        eps = normals_numpy(stream_key(seed, step, STREAM_LOCAL), index, n_samples, d)  # (T, S, d)
        scale = np.exp(log_scale)
        z = mean[:, None, :] + scale[:, None, :] * eps
        Qi, Ri, P0i = np.linalg.inv(prm.Q), np.linalg.inv(prm.R), np.linalg.inv(prm.P0)
        logdet = {k: np.linalg.slogdet(m)[1] for k, m in (("Q", prm.Q), ("R", prm.R), ("P0", prm.P0))}
        # observations
        resid = x[:, None, :] - z @ prm.C.T  # (T, S, p)
        w_obs = resid @ Ri  # R⁻¹ r
        log_joint = (-0.5 * np.einsum("tsi,tsi->s", resid, w_obs)
                     - 0.5 * n * (p * LOG_2PI + logdet["R"]))
        grad = w_obs @ prm.C  # CᵀR⁻¹ r, (T, S, d)
        # first state
        r0 = z[0] - prm.m0  # (S, d)
        w0 = r0 @ P0i
        log_joint -= 0.5 * np.einsum("si,si->s", r0, w0) + 0.5 * (d * LOG_2PI + logdet["P0"])
        grad[0] -= w0
        # transitions
        if n > 1:
            rt = z[1:] - z[:-1] @ prm.A.T  # (T-1, S, d)
            wt = rt @ Qi
            log_joint -= 0.5 * np.einsum("tsi,tsi->s", rt, wt) + 0.5 * (n - 1) * (d * LOG_2PI + logdet["Q"])
            grad[1:] -= wt
            grad[:-1] += wt @ prm.A
        return LocalTerms(log_joint=log_joint, grad_mean=grad.mean(axis=1),
                          grad_log_scale=(grad * eps).mean(axis=1) * scale, grad_global=np.zeros((n_samples, 0)))


def check_whole_sequence(index: np.ndarray) -> None:
    """Refuse a ``local_terms`` batch that is not one whole ordered sequence (``index == arange(n_rows)``)."""
    n = index.shape[0]
    if not (index[0] == 0 and index[-1] == n - 1 and (n == 1 or bool(np.all(np.diff(index) == 1)))):
        raise ValueError(f"index must be arange({n}): the terms of this model couple neighbouring rows, so "
                         f"local_terms needs the whole ordered sequence (no minibatches or chunks); got "
                         f"index[:5]={index[:5].tolist()}.")


class GaussianRandomWalk(LinearGaussianSSM):
    """The paper's Gaussian random-walk HMM: z_1 ~ N(0, init²), z_t ~ N(z_{t-1}, step²), x_t ~ N(z_t, obs²).

    Parameters
    ----------
    step_scale : float
        Standard deviation of a step (> 0).
    obs_scale : float
        Standard deviation of the observation noise (> 0).
    init_scale : float
        Standard deviation of z_1 (> 0).

    Examples
    --------
    >>> from avicore.models.state_space import GaussianRandomWalk
    >>> model = GaussianRandomWalk()
    >>> x = model.simulate(200, seed=1).x
    >>> opt = model.fvi_optimum(x, backend="numpy")
    >>> bool(opt.elbo < opt.log_evidence)
    True
    """

    def __init__(self, step_scale: float = 1.0, obs_scale: float = 1.0, init_scale: float = 1.0) -> None:
        self.step_scale = check_scalar(step_scale, "step_scale", positive=True)
        self.obs_scale = check_scalar(obs_scale, "obs_scale", positive=True)
        self.init_scale = check_scalar(init_scale, "init_scale", positive=True)
        super().__init__(A=1.0, Q=self.step_scale ** 2, C=1.0, R=self.obs_scale ** 2, m0=0.0,
                         P0=self.init_scale ** 2)

    def __repr__(self) -> str:
        return (f"GaussianRandomWalk(step_scale={self.step_scale!r}, obs_scale={self.obs_scale!r}, "
                f"init_scale={self.init_scale!r})")

    def simulate(self, n: int, seed: int | np.random.Generator | None = None) -> SimulatedData:
        """Draw one sequence of ``n`` steps (vectorised: a cumulative sum of Gaussian steps)."""
        n = check_count(n, "n", 32 * (self.obs_dim + self.latent_dim), "observations")
        rng = check_random_state(seed)
        eps = rng.standard_normal(n)
        steps = eps * self.step_scale
        steps[0] = eps[0] * self.init_scale
        z = np.cumsum(steps)
        x = z + rng.standard_normal(n) * self.obs_scale
        return SimulatedData(x=x.reshape(-1, 1), z=z.reshape(-1, 1), theta=np.empty(0))
