"""Variational Bayes HMMs (VB-EM): ``VariationalCategoricalHMM`` and ``VariationalGaussianHMM`` (hmmlearn's models).

q(θ) q(z) with Dirichlet factors on the start and transition probabilities and conjugate emission factors
(Dirichlet rows; Normal–Wishart per state). The E-step is one forward-backward call over all sequences with the
*expected log-parameters* ``E_q[log π]``, ``E_q[log A]``, ``E_q[log p(x | z)]`` (sub-normalised); the M-step adds
the expected counts to the prior parameters. ``monitor_`` records the evidence lower bound

    ELBO = log Σ_z exp(E_q[log p(x, z | θ)]) − KL(q(θ) ‖ p(θ)),

evaluated at the q(θ) each iteration starts from; coordinate ascent never decreases it. Every constant is included
(hmmlearn's Gaussian bound omits ``n_samples · n_features / 2 · log 2π``; otherwise the values equal hmmlearn's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import digamma, gammaln

from .. import _validate
from ..kernels import hmm_em
from ._base import BaseHMM, check_random_state, normalize_rows
from ._discrete import CategoricalHMM
from ._gaussian import GaussianHMM, check_covars, full_covars, gaussian_log_lik


def kl_dirichlet(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``KL(Dir(q) ‖ Dir(p))`` over the last axis (one value per leading index)."""
    q0, p0 = q.sum(axis=-1), p.sum(axis=-1)
    return (gammaln(q0) - gammaln(p0) - (gammaln(q) - gammaln(p)).sum(axis=-1)
            + ((q - p) * (digamma(q) - digamma(q0)[..., None])).sum(axis=-1))


def expected_log_dirichlet(alpha: np.ndarray) -> np.ndarray:
    """``E[log p]`` under ``Dir(alpha)`` over the last axis: ``ψ(α_i) − ψ(Σ α)``."""
    return digamma(alpha) - digamma(alpha.sum(axis=-1, keepdims=True))


def _logdet(m: np.ndarray) -> np.ndarray:
    sign, value = np.linalg.slogdet(m)
    if (sign <= 0).any():
        raise ValueError("scale_posterior_ must be positive-definite; a state's scale matrix is singular.")
    return value


def _wishart_expected_logdet(dof: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``E[log |Λ|]`` for Λ ~ Wishart(dof, scale⁻¹) (``scale`` the inverse scale matrix), per leading index."""
    d = scale.shape[-1]
    return digamma(0.5 * (dof[..., None] - np.arange(d))).sum(axis=-1) + d * np.log(2.0) - _logdet(scale)


def _wishart_log_norm(dof: np.ndarray, scale: np.ndarray) -> np.ndarray:
    d = scale.shape[-1]
    return (d * (d - 1) / 4.0 * np.log(np.pi) - 0.5 * dof * (_logdet(scale) - d * np.log(2.0))
            + gammaln(0.5 * (dof[..., None] - np.arange(d))).sum(axis=-1))


def kl_wishart(dof_q: np.ndarray, scale_q: np.ndarray, dof_p: np.ndarray, scale_p: np.ndarray) -> np.ndarray:
    """``KL(W(dof_q, scale_q⁻¹) ‖ W(dof_p, scale_p⁻¹))`` per leading index (scales are inverse scale matrices)."""
    d = scale_q.shape[-1]
    trace = np.einsum("...ij,...ji->...", scale_p, np.linalg.inv(scale_q))
    return (0.5 * (dof_q - dof_p) * _wishart_expected_logdet(dof_q, scale_q) - 0.5 * d * dof_q + 0.5 * dof_q * trace
            + _wishart_log_norm(dof_p, scale_p) - _wishart_log_norm(dof_q, scale_q))


class _VariationalHMM(BaseHMM):
    """VB-EM over Dirichlet start / transition factors; subclasses add the emission factors."""

    def _init(self, X: np.ndarray, offsets: np.ndarray) -> None:
        n = self.n_components
        rs = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_posterior_") or self._needs_init("s", "startprob_prior_"):
            init = 1.0 / n if self.startprob_prior is None else self.startprob_prior
            self.startprob_prior_ = np.full(n, init, dtype=float)
            self.startprob_posterior_ = rs.dirichlet(np.full(n, 1.0 / n)) * (len(offsets) - 1)
        if self._needs_init("t", "transmat_posterior_") or self._needs_init("t", "transmat_prior_"):
            init = 1.0 / n if self.transmat_prior is None else self.transmat_prior
            self.transmat_prior_ = np.full((n, n), init, dtype=float)
            self.transmat_posterior_ = rs.dirichlet(np.full(n, 1.0 / n), size=n) * (X.shape[0] / n)
        self._init_emissions(X, offsets)

    def _check_startprob_transmat(self) -> None:
        n = self.n_components
        for name, shape in (("startprob_prior_", (n,)), ("startprob_posterior_", (n,)),
                            ("transmat_prior_", (n, n)), ("transmat_posterior_", (n, n))):
            arr = _validate.as_float_array(getattr(self, name), name, shape=shape)
            if (arr <= 0).any():
                raise ValueError(f"{name} must hold Dirichlet concentrations > 0; got min {float(arr.min())!r}.")
            setattr(self, name, arr.copy())
        self.startprob_ = self.startprob_posterior_ / self.startprob_posterior_.sum()
        self.transmat_ = normalize_rows(self.transmat_posterior_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "startprob_posterior_"):
            super()._check_fitted()

    def _estep(self, X: np.ndarray, offsets: np.ndarray) -> tuple[dict[str, Any], float]:
        return self._expectations(
            X, offsets, hmm_em.Emission(lambda rows: self._expected_log_lik(X[rows])),
            np.ascontiguousarray(expected_log_dirichlet(self.startprob_posterior_)),
            np.ascontiguousarray(expected_log_dirichlet(self.transmat_posterior_)))

    def _mstep(self, stats: dict[str, Any]) -> None:
        if "s" in self.params:
            self.startprob_posterior_ = self.startprob_prior_ + stats["start"]
            self.startprob_ = self.startprob_posterior_ / self.startprob_posterior_.sum()
        if "t" in self.params:
            self.transmat_posterior_ = self.transmat_prior_ + stats["trans"]
            self.transmat_ = normalize_rows(self.transmat_posterior_)
        self._mstep_emissions(stats)

    def _lower_bound(self, log_prob: float) -> float:
        kl = (float(kl_dirichlet(self.startprob_posterior_, self.startprob_prior_))
              + float(kl_dirichlet(self.transmat_posterior_, self.transmat_prior_).sum()))
        return log_prob - kl - self._emission_kl()


class VariationalCategoricalHMM(_VariationalHMM, CategoricalHMM):
    """Categorical HMM fitted by variational Bayes (hmmlearn's ``VariationalCategoricalHMM``).

    Parameters
    ----------
    n_components : int
        Number of states.
    startprob_prior, transmat_prior, emissionprob_prior : float, array or None
        Dirichlet prior concentrations (None: 1/n_components, resp. 1/n_features, as hmmlearn).
    n_features : int, optional
        Number of symbols (default ``max(X) + 1``).
    algorithm, random_state, n_iter, tol, verbose, params, init_params, implementation, backend
        As in :class:`avicore.hmm.CategoricalHMM` (``n_iter=100``, ``tol=1e-6`` by default).

    Attributes
    ----------
    startprob_posterior_, transmat_posterior_, emissionprob_posterior_ : ndarray
        Dirichlet parameters of q(θ).
    startprob_, transmat_, emissionprob_ : ndarray
        Their means (used by ``score``, ``decode``, ``sample``).
    monitor_ : ConvergenceMonitor
        ``history`` holds the ELBO of every iteration.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import VariationalCategoricalHMM
    >>> X = np.array([[0], [0], [1], [2], [2], [1], [0]])
    >>> model = VariationalCategoricalHMM(n_components=2, random_state=0, n_iter=20).fit(X)
    >>> bool(np.all(np.diff(model.monitor_.history) > -1e-9))
    True
    """

    def __init__(self, n_components: int = 1, startprob_prior: Any = None, transmat_prior: Any = None,
                 emissionprob_prior: Any = None, n_features: int | None = None, algorithm: str = "viterbi",
                 random_state: Any = None, n_iter: int = 100, tol: float = 1e-6, verbose: bool = False,
                 params: str = "ste", init_params: str = "ste", implementation: str = "log", *,
                 backend: str = "auto") -> None:
        CategoricalHMM.__init__(self, n_components, startprob_prior, transmat_prior,
                                emissionprob_prior=emissionprob_prior, n_features=n_features, algorithm=algorithm,
                                random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose, params=params,
                                init_params=init_params, implementation=implementation, backend=backend)

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        if self._needs_init("e", "emissionprob_posterior_"):
            m = self._n_symbols_
            init = 1.0 / m if self.emissionprob_prior is None else self.emissionprob_prior
            rs = check_random_state(self.random_state)
            self.emissionprob_prior_ = np.full((self.n_components, m), init, dtype=float)
            self.emissionprob_posterior_ = rs.dirichlet(np.full(m, init), size=self.n_components) * (
                X.shape[0] / self.n_components)

    def _check_emissions(self) -> None:
        prior = _validate.as_float_array(np.atleast_2d(self.emissionprob_prior_), "emissionprob_prior_")
        post = _validate.as_float_array(np.atleast_2d(self.emissionprob_posterior_), "emissionprob_posterior_")
        m = self._n_symbols() if self.n_features is not None else post.shape[1]
        for name, arr in (("emissionprob_prior_", prior), ("emissionprob_posterior_", post)):
            if arr.shape != (self.n_components, m):
                raise ValueError(f"{name} must have shape (n_components, n_features)=({self.n_components}, {m}); "
                                 f"got {arr.shape}.")
            if (arr <= 0).any():
                raise ValueError(f"{name} must hold Dirichlet concentrations > 0; got min {float(arr.min())!r}.")
        self.emissionprob_prior_, self.emissionprob_posterior_ = prior.copy(), post.copy()
        self.emissionprob_ = normalize_rows(post)
        self._n_symbols_ = m

    def _expected_log_lik(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(expected_log_dirichlet(self.emissionprob_posterior_).T[X[:, 0]])

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        if "e" in self.params:
            self.emissionprob_posterior_ = self.emissionprob_prior_ + stats["obs"]
            self.emissionprob_ = normalize_rows(self.emissionprob_posterior_)

    def _emission_kl(self) -> float:
        return float(kl_dirichlet(self.emissionprob_posterior_, self.emissionprob_prior_).sum())


class VariationalGaussianHMM(_VariationalHMM, GaussianHMM):
    """Gaussian HMM fitted by variational Bayes with Normal–Wishart emission factors (hmmlearn's model).

    q(μ_k, Λ_k) = N(μ_k | m_k, (β_k Λ_k)⁻¹) W(Λ_k | ν_k, S_k⁻¹) per state ("tied": one Wishart for all states;
    "diag"/"spherical": diagonal S_k, as hmmlearn).

    Parameters
    ----------
    n_components : int
        Number of states.
    covariance_type : {"full", "diag", "spherical", "tied"}
    startprob_prior, transmat_prior : float, array or None
        Dirichlet concentrations (None: 1/n_components).
    means_prior, beta_prior : array or None
        Prior mean (default: the data mean) and its precision scale (default 1).
    dof_prior, scale_prior : float, array or None
        Wishart degrees of freedom (default n_features) and inverse scale (default 1e-3 · I).
    algorithm, random_state, n_iter, tol, verbose, params, init_params, implementation, backend
        As in :class:`avicore.hmm.GaussianHMM` (``n_iter=100``, ``tol=1e-6`` by default).

    Attributes
    ----------
    means_posterior_, beta_posterior_, dof_posterior_, scale_posterior_ : ndarray
        Parameters of q(μ, Λ); ``means_`` is ``means_posterior_`` and ``covars_`` is ``scale_posterior_ / dof``.
    monitor_ : ConvergenceMonitor
        ``history`` holds the ELBO (every constant included) of every iteration.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import VariationalGaussianHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-3, 1, (40, 1)), rng.normal(3, 1, (40, 1))])
    >>> model = VariationalGaussianHMM(n_components=2, random_state=0, n_iter=30).fit(X)
    >>> bool(np.all(np.diff(model.monitor_.history) > -1e-9))
    True
    """

    _emission_codes = "mc"

    def __init__(self, n_components: int = 1, covariance_type: str = "full", startprob_prior: Any = None,
                 transmat_prior: Any = None, means_prior: Any = None, beta_prior: Any = None, dof_prior: Any = None,
                 scale_prior: Any = None, algorithm: str = "viterbi", random_state: Any = None, n_iter: int = 100,
                 tol: float = 1e-6, verbose: bool = False, params: str = "stmc", init_params: str = "stmc",
                 implementation: str = "log", *, backend: str = "auto") -> None:
        BaseHMM.__init__(self, n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, backend=backend)
        self.covariance_type = covariance_type
        self.means_prior = means_prior
        self.beta_prior = beta_prior
        self.dof_prior = dof_prior
        self.scale_prior = scale_prior

    @property
    def means_(self) -> np.ndarray:
        """The posterior means of the state means (``means_posterior_``)."""
        return self.means_posterior_

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        from ._kmeans import kmeans

        nc, nf, ct = self.n_components, X.shape[1], self.covariance_type
        names_m = ("means_prior_", "means_posterior_", "beta_prior_", "beta_posterior_")
        names_c = ("dof_prior_", "dof_posterior_", "scale_prior_", "scale_posterior_")
        need_m = any([self._needs_init("m", name) for name in names_m])
        need_c = any([self._needs_init("c", name) for name in names_c])
        if not (need_m or need_c):
            return
        centres = kmeans(X, nc, check_random_state(self.random_state))
        counts = np.bincount(np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1),
                             minlength=nc).astype(float)
        if need_m:
            self.means_prior_ = (np.tile(X.mean(axis=0), (nc, 1)) if self.means_prior is None
                                 else np.array(self.means_prior, dtype=float))
            self.means_posterior_ = centres.copy()
            self.beta_prior_ = np.ones(nc) if self.beta_prior is None else np.array(self.beta_prior, dtype=float)
            self.beta_posterior_ = counts.copy()
        if need_c:
            tied = ct == "tied"
            default_dof = float(nf) if tied else np.full(nc, float(nf))
            self.dof_prior_ = default_dof if self.dof_prior is None else np.array(self.dof_prior, dtype=float)
            self.dof_posterior_ = counts.sum() if tied else counts.copy()
            cv = np.atleast_2d(np.cov(X.T)) + 1e-3 * np.eye(nf)
            if self.scale_prior is None:
                self.scale_prior_ = {"full": np.tile(1e-3 * np.eye(nf), (nc, 1, 1)), "tied": 1e-3 * np.eye(nf),
                                     "diag": np.full((nc, nf), 1e-3), "spherical": np.full(nc, 1e-3)}[ct]
            else:
                self.scale_prior_ = np.array(self.scale_prior, dtype=float)
            dof = np.asarray(self.dof_posterior_, dtype=float)
            if ct == "full":
                self.scale_posterior_ = np.tile(cv, (nc, 1, 1)) * dof[:, None, None]
            elif ct == "tied":
                self.scale_posterior_ = cv * dof
            elif ct == "diag":
                self.scale_posterior_ = np.tile(np.diag(cv), (nc, 1)) * dof[:, None]
            else:
                self.scale_posterior_ = np.full(nc, cv.mean()) * dof

    def _check_emissions(self) -> None:
        nc, ct = self.n_components, self.covariance_type
        m_post = _validate.as_float_array(self.means_posterior_, "means_posterior_")
        if m_post.ndim != 2 or m_post.shape[0] != nc:
            raise ValueError(f"means_posterior_ must have shape (n_components, n_features); got {m_post.shape}.")
        nf = m_post.shape[1]
        self.means_posterior_ = m_post.copy()
        self.means_prior_ = _validate.as_float_array(self.means_prior_, "means_prior_", shape=(nc, nf)).copy()
        for name in ("beta_prior_", "beta_posterior_"):
            arr = _validate.as_float_array(getattr(self, name), name, shape=(nc,))
            if (arr <= 0).any():
                raise ValueError(f"{name} must be > 0; got min {float(arr.min())!r}.")
            setattr(self, name, arr.copy())
        dof_shape: tuple[int, ...] = () if ct == "tied" else (nc,)
        for name in ("dof_prior_", "dof_posterior_"):
            arr = _validate.as_float_array(np.reshape(getattr(self, name), (-1,)), name)
            if arr.shape != (dof_shape[0] if dof_shape else 1,):
                raise ValueError(f"{name} must have shape {dof_shape} for {ct!r}; got {np.shape(getattr(self, name))}.")
            arr = arr.reshape(dof_shape)
            if (arr <= nf - 1).any():
                raise ValueError(f"{name} must be > n_features - 1 = {nf - 1} (Wishart degrees of freedom); got min "
                                 f"{float(np.min(arr))!r}.")
            setattr(self, name, arr.copy())
        for name in ("scale_prior_", "scale_posterior_"):
            setattr(self, name, check_covars(getattr(self, name), ct, nc, nf, name=name))
        self.n_features = self.n_features_in_ = nf
        self._covars_ = self.scale_posterior_ / (self.dof_posterior_ if ct in ("tied", "spherical")
                                                 else self.dof_posterior_[:, None] if ct == "diag"
                                                 else self.dof_posterior_[:, None, None])

    def _full(self, scale: np.ndarray) -> np.ndarray:
        return full_covars(scale, self.covariance_type, self.n_components, self.n_features)

    def _expected_log_lik(self, X: np.ndarray) -> np.ndarray:
        """``E_q[log N(x_t | μ_k, Λ_k⁻¹)]`` for every row and state (one emission kernel call + per-state terms)."""
        nc, nf = self.n_components, self.n_features
        scale = self._full(self.scale_posterior_)  # (nc, nf, nf)
        dof = np.broadcast_to(self.dof_posterior_, (nc,))
        # dof · (x − m)ᵀ S⁻¹ (x − m) is the Mahalanobis term of N(x; m, S / dof):
        plug_in = gaussian_log_lik(X, self.means_posterior_, self._covars_, self.covariance_type)
        half_logdet_cov = 0.5 * (_logdet(scale) - nf * np.log(dof))
        # E log N = ½ E log|Λ| − (d/2) log 2π − ½ E[(x − μ)ᵀ Λ (x − μ)], the last = dof · Mahalanobis + d / β
        const = half_logdet_cov + 0.5 * _wishart_expected_logdet(dof, scale) - 0.5 * nf / self.beta_posterior_
        return np.ascontiguousarray(plug_in + const)

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        ct = self.covariance_type
        b0, m0 = self.beta_prior_, self.means_prior_
        if "m" in self.params:
            self.beta_posterior_ = b0 + stats["post"]
            self.means_posterior_ = (b0[:, None] * m0 + stats["obs"]) / self.beta_posterior_[:, None]
        if "c" in self.params:
            b1, m1 = self.beta_posterior_, self.means_posterior_
            if ct in ("full", "tied"):
                scatter = (stats["obs*obs.T"] + b0[:, None, None] * m0[:, :, None] * m0[:, None, :]
                           - b1[:, None, None] * m1[:, :, None] * m1[:, None, :])
                if ct == "full":
                    self.dof_posterior_ = self.dof_prior_ + stats["post"]
                    self.scale_posterior_ = self.scale_prior_ + scatter
                    self._covars_ = self.scale_posterior_ / self.dof_posterior_[:, None, None]
                else:
                    self.dof_posterior_ = self.dof_prior_ + stats["post"].sum()
                    self.scale_posterior_ = self.scale_prior_ + scatter.sum(axis=0)
                    self._covars_ = self.scale_posterior_ / self.dof_posterior_
            else:
                sq = stats["obs**2"] + b0[:, None] * m0 ** 2 - b1[:, None] * m1 ** 2
                self.dof_posterior_ = self.dof_prior_ + stats["post"]
                if ct == "diag":
                    self.scale_posterior_ = self.scale_prior_ + sq
                    self._covars_ = self.scale_posterior_ / self.dof_posterior_[:, None]
                else:
                    self.scale_posterior_ = self.scale_prior_ + sq.mean(axis=1)
                    self._covars_ = self.scale_posterior_ / self.dof_posterior_

    def _emission_kl(self) -> float:
        nc, nf = self.n_components, self.n_features
        scale_q, scale_p = self._full(self.scale_posterior_), self._full(self.scale_prior_)
        dof_q = np.broadcast_to(self.dof_posterior_, (nc,))
        precision = np.linalg.inv(scale_q) * dof_q[:, None, None]  # E[Λ_k]
        b_q, b_p = self.beta_posterior_, self.beta_prior_
        diff = self.means_posterior_ - self.means_prior_
        kl_normal = 0.5 * (nf * np.log(b_q / b_p) + nf * b_p / b_q
                           + b_p * np.einsum("ki,kij,kj->k", diff, precision, diff) - nf)
        if self.covariance_type == "tied":
            kl_w = kl_wishart(np.asarray(self.dof_posterior_), scale_q[0], np.asarray(self.dof_prior_), scale_p[0])
        else:
            kl_w = kl_wishart(dof_q, scale_q, np.broadcast_to(self.dof_prior_, (nc,)), scale_p).sum()
        return float(kl_normal.sum() + kl_w)
