"""``GaussianHMM``: Gaussian emissions with spherical, diagonal, full or tied covariances (hmmlearn's model).

Emission log-likelihoods come from :mod:`avicore.emissions` (a compiled kernel for diagonal covariances, one
Cholesky solve per state for full ones); the sufficient statistics are posterior-weighted sums over all rows at
once (matrix products); the M-step is hmmlearn's MAP update (normal prior on means, inverse-gamma / inverse-Wishart
prior on covariances), vectorised over states.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from .. import _validate, emissions
from ..kernels import hmm_em
from ._base import BaseHMM, DegenerateStateWarning, check_float_X, check_random_state
from ._kmeans import kmeans

_log = logging.getLogger(__name__)

COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")


def full_covars(covars: np.ndarray, covariance_type: str, n_components: int, n_features: int) -> np.ndarray:
    """Stored covariance parameters → one (n_features, n_features) matrix per state."""
    if covariance_type == "full":
        return covars.copy()
    if covariance_type == "diag":
        return covars[:, :, None] * np.eye(n_features)
    if covariance_type == "tied":
        return np.broadcast_to(covars, (n_components, n_features, n_features)).copy()
    return covars[:, None, None] * np.eye(n_features)


def check_covars(covars: Any, covariance_type: str, n_components: int, n_features: int | None,
                 name: str = "covars_") -> np.ndarray:
    """Validate covariance parameters of the given type; returns the stored form (spherical: (n_components,))."""
    c = _validate.as_float_array(covars, name)
    if covariance_type == "spherical":
        if c.ndim == 2 and c.shape[0] == n_components:  # hmmlearn stores spherical variances tiled per feature
            c = c[:, 0]
        if c.shape != (n_components,):
            raise ValueError(f"{name} must have shape (n_components,)=({n_components},) for 'spherical'; got "
                             f"{c.shape}.")
        if (c <= 0).any():
            raise ValueError(f"{name} must be > 0 ('spherical' variances); got min {float(c.min())!r}. A state's "
                             f"variance collapsed: raise covars_prior or min_covar.")
        return c.copy()
    if covariance_type == "diag":
        if c.ndim != 2 or c.shape[0] != n_components or (n_features is not None and c.shape[1] != n_features):
            raise ValueError(f"{name} must have shape (n_components, n_features)=({n_components}, {n_features}) "
                             f"for 'diag'; got {c.shape}.")
        if (c <= 0).any():
            i = int(np.argmax((c <= 0).any(axis=1)))
            raise ValueError(f"{name} must be > 0 ('diag' variances); state {i} has min {float(c[i].min())!r}. A "
                             f"state's variance collapsed: raise covars_prior or min_covar.")
        return c.copy()
    mats = c[None] if covariance_type == "tied" else c
    want = (1 if covariance_type == "tied" else n_components, n_features, n_features)
    if mats.ndim != 3 or mats.shape[0] != want[0] or mats.shape[1] != mats.shape[2] or (
            n_features is not None and mats.shape[1] != n_features):
        shape = "(n_features, n_features)" if covariance_type == "tied" else "(n_components, n_features, n_features)"
        raise ValueError(f"{name} must have shape {shape} for {covariance_type!r}; got {c.shape}.")
    for k, m in enumerate(mats):
        _validate.check_spd_matrix(m, name if covariance_type == "tied" else f"{name}[{k}]", rtol=1e-8)
    return c.copy()


def gaussian_log_lik(X: np.ndarray, means: np.ndarray, covars: np.ndarray, covariance_type: str) -> np.ndarray:
    """``log N(x_t; means[k], Σ_k)`` for every row and state, from the stored covariance form."""
    n_states, n_features = means.shape
    if covariance_type == "diag":
        return emissions.gaussian_diag_log_lik(X, means, covars)
    if covariance_type == "spherical":
        return emissions.gaussian_diag_log_lik(X, means, np.repeat(covars[:, None], n_features, axis=1))
    return emissions.gaussian_full_log_lik(X, means, full_covars(covars, covariance_type, n_states, n_features))


def weighted_scatter(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``Σ_t w[t, k] x_t x_tᵀ`` for every column k of ``weights``: shape (n_columns, n_features, n_features)."""
    out = np.empty((weights.shape[1], X.shape[1], X.shape[1]))
    for k in range(weights.shape[1]):  # one matrix product per state (never per sequence)
        out[k] = (X * weights[:, k:k + 1]).T @ X
    return out


def second_moment_features(X: np.ndarray, covariance_type: str) -> np.ndarray:
    """Per-row features whose posterior-weighted sums give the covariance statistics after the first D (= x):
    x² for "spherical"/"diag", the products x_i x_j (i <= j) for "full"/"tied"."""
    if covariance_type in ("spherical", "diag"):
        return X * X
    i, j = np.triu_indices(X.shape[1])
    return X[:, i] * X[:, j]


def scatter_from_pairs(sums: np.ndarray, n_features: int) -> np.ndarray:
    """(n_pairs, K) sums of x_i x_j (i <= j, ``np.triu_indices`` order) → (K, n_features, n_features) symmetric."""
    i, j = np.triu_indices(n_features)
    out = np.empty((sums.shape[1], n_features, n_features))
    out[:, i, j] = sums.T
    out[:, j, i] = sums.T
    return out


class GaussianHMM(BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by (MAP) EM on avicore's kernels.

    A drop-in for ``hmmlearn.hmm.GaussianHMM``: the same constructor arguments, fitted attributes and methods, and
    from the same initial parameters the same EM iterates (to rounding); ``backend=`` picks the forward-backward
    kernel (``"auto"``, ``"numpy"``, ``"cython"``, ``"numba"``, ``"cuda"``).

    Parameters
    ----------
    n_components : int
        Number of states.
    covariance_type : {"spherical", "diag", "full", "tied"}
        One variance per state, a diagonal covariance per state, a full covariance per state, or one full
        covariance shared by all states.
    min_covar : float
        Added to the diagonal of the data covariance that initialises ``covars_``.
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations of the start probabilities and of each transition row (1 = no prior).
    means_prior, means_weight : float or array
        Mean and precision weight of the normal prior on the means.
    covars_prior, covars_weight : float or array
        Inverse-gamma ("spherical", "diag") or inverse-Wishart ("full", "tied") prior on the covariances.
    algorithm : {"viterbi", "map"}
        Default decoder of :meth:`decode` / :meth:`predict`.
    random_state : None, int, RandomState or Generator
        Seeds the initialisation (and :meth:`sample` when it gets none).
    n_iter : int
        Most EM iterations.
    tol : float
        EM stops when the log-likelihood gains less than ``tol``.
    verbose : bool
        Print each iteration to stderr.
    params, init_params : str
        Letters of the parameters EM updates / initialisation sets: 's' startprob, 't' transmat, 'm' means,
        'c' covars.
    implementation : {"log", "scaling"}
        Accepted for compatibility; avicore's kernels choose scaled or log-space recursions per sequence.
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        Forward-backward / Viterbi kernel.

    Attributes
    ----------
    startprob_ : ndarray (n_components,)
    transmat_ : ndarray (n_components, n_components)
    means_ : ndarray (n_components, n_features)
    covars_ : ndarray (n_components, n_features, n_features)
        Full matrices whatever the type (as hmmlearn); the stored form is ``_covars_``.
    n_features_in_ : int
    monitor_ : ConvergenceMonitor

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import GaussianHMM
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (50, 1)), rng.normal(5, 1, (50, 1))])
    >>> model = GaussianHMM(n_components=2, random_state=0, n_iter=20).fit(X, lengths=[60, 40])
    >>> sorted(np.round(model.means_.ravel()).tolist())
    [0.0, 5.0]
    """

    _emission_codes = "mc"

    def __init__(self, n_components: int = 1, covariance_type: str = "diag", min_covar: float = 1e-3,
                 startprob_prior: Any = 1.0, transmat_prior: Any = 1.0, means_prior: Any = 0,
                 means_weight: Any = 0, covars_prior: Any = 1e-2, covars_weight: Any = 1,
                 algorithm: str = "viterbi", random_state: Any = None, n_iter: int = 10, tol: float = 1e-2,
                 verbose: bool = False, params: str = "stmc", init_params: str = "stmc",
                 implementation: str = "log", *, backend: str = "auto") -> None:
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, backend=backend)
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    # covars_ as hmmlearn exposes it: full matrices; stored form in _covars_
    @property
    def covars_(self) -> np.ndarray:
        """Covariance matrices, shape (n_components, n_features, n_features) for every ``covariance_type``."""
        return full_covars(self._covars_, self.covariance_type, self.n_components, self.means_.shape[1])

    @covars_.setter
    def covars_(self, covars: Any) -> None:
        _validate.check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        n_features = np.shape(self.means_)[1] if hasattr(self, "means_") else None
        self._covars_ = check_covars(covars, self.covariance_type, self.n_components, n_features)

    def _check_hyper(self) -> None:
        super()._check_hyper()
        _validate.check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:
        x = check_float_X(X)
        self._set_n_features(x.shape[1], fitting=fitting)
        return x

    def _n_fit_scalars(self) -> dict[str, int]:
        n, d = self.n_components, self.n_features
        return {**super()._n_fit_scalars(), "m": n * d,
                "c": {"spherical": n, "diag": n * d, "full": n * d * (d + 1) // 2,
                      "tied": d * (d + 1) // 2}[self.covariance_type]}

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        d = X.shape[1]
        if self._needs_init("m", "means_"):
            self.means_ = kmeans(X, self.n_components, check_random_state(self.random_state))
        if self._needs_init("c", "_covars_"):
            cv = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(d)
            n = self.n_components
            self._covars_ = {"spherical": np.full(n, cv.mean()), "diag": np.tile(np.diag(cv), (n, 1)),
                             "full": np.tile(cv, (n, 1, 1)), "tied": cv}[self.covariance_type]

    def _check_emissions(self) -> None:
        if not hasattr(self, "means_") or not hasattr(self, "_covars_"):
            raise ValueError("means_ and covars_ must be set (fit the model or assign them).")
        means = _validate.as_float_array(self.means_, "means_")
        if means.ndim != 2 or means.shape[0] != self.n_components:
            raise ValueError(f"means_ must have shape (n_components, n_features) with n_components="
                             f"{self.n_components}; got {means.shape}.")
        self.means_ = means.copy()
        self.n_features = self.n_features_in_ = means.shape[1]
        self._covars_ = check_covars(self._covars_, self.covariance_type, self.n_components, means.shape[1])

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        return gaussian_log_lik(X, self.means_, self._covars_, self.covariance_type)

    def _em_emission(self, X: np.ndarray) -> hmm_em.Emission:
        log_lik_of = super()._em_emission(X).log_lik_of
        if self.covariance_type in ("spherical", "diag"):  # the compiled E-step computes these itself
            variances = self._covars_ if self.covariance_type == "diag" else np.repeat(
                self._covars_[:, None], X.shape[1], axis=1)
            return hmm_em.Emission(log_lik_of, "diag", (X, self.means_, variances))
        covars = full_covars(self._covars_, self.covariance_type, self.n_components, X.shape[1])
        return hmm_em.Emission(log_lik_of, "full", (X, self.means_, covars))

    def _em_inputs(self, X: np.ndarray) -> tuple[np.ndarray | None, None, int]:
        if "m" not in self.params and "c" not in self.params:
            return None, None, 0
        if "c" not in self.params:
            return X, None, 0
        return np.hstack([X, second_moment_features(X, self.covariance_type)]), None, 0

    def _emission_stats_from_sums(self, sums: hmm_em.EMSums) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        if sums.weighted is None:
            return stats
        d = self.n_features
        stats["post"] = sums.post
        stats["obs"] = sums.weighted[:d].T
        if "c" in self.params:
            if self.covariance_type in ("spherical", "diag"):
                stats["obs**2"] = sums.weighted[d:].T
            else:
                stats["obs*obs.T"] = scatter_from_pairs(sums.weighted[d:], d)
        return stats

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        if "m" not in self.params and "c" not in self.params:
            return
        n, d = self.n_components, self.n_features
        post = stats["post"]
        lost = post <= 0.0
        old_means, old_covars = self.means_.copy(), self._covars_.copy()
        mp = np.asarray(self.means_prior, dtype=float)
        mw = np.asarray(self.means_weight, dtype=float)
        mw_col = mw[:, None] if mw.ndim == 1 and mw.size == n else mw
        denom = post[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            if "m" in self.params:
                self.means_ = (mw_col * mp + stats["obs"]) / (mw_col + denom)
            if "c" in self.params:
                cp = np.asarray(self.covars_prior, dtype=float)
                cw = np.asarray(self.covars_weight, dtype=float)
                meandiff = self.means_ - mp
                means = self.means_
                if self.covariance_type in ("spherical", "diag"):
                    c_n = (mw_col * meandiff ** 2 + stats["obs**2"] - 2.0 * means * stats["obs"]
                           + means ** 2 * denom)
                    c_d = np.maximum(cw - 1.0, 0.0) + denom
                    cov = (cp + c_n) / np.maximum(c_d, 1e-5)
                    self._covars_ = cov.mean(axis=1) if self.covariance_type == "spherical" else cov
                else:
                    w3 = mw[:, None, None] if mw.ndim == 1 and mw.size == n else mw
                    obsmean = stats["obs"][:, :, None] * means[:, None, :]
                    c_n = (w3 * meandiff[:, :, None] * meandiff[:, None, :] + stats["obs*obs.T"]
                           - obsmean - obsmean.transpose(0, 2, 1)
                           + means[:, :, None] * means[:, None, :] * post[:, None, None])
                    cvweight = np.maximum(cw - d, 0.0)
                    if self.covariance_type == "tied":
                        self._covars_ = (cp + c_n.sum(axis=0)) / (cvweight + post.sum())
                    else:
                        self._covars_ = (cp + c_n) / (cvweight + post[:, None, None])
        if lost.any() and self.covariance_type != "tied":
            # hmmlearn divides 0 by 0 here (NaN parameters); avicore keeps the lost states' previous values.
            states = np.flatnonzero(lost).tolist()
            warnings.warn(DegenerateStateWarning(
                f"states {states} have zero posterior mass; their means_ and covars_ keep their previous values."),
                stacklevel=4)
            self.means_[lost] = old_means[lost]
            self._covars_[lost] = old_covars[lost]

    def _generate_sample_from_state(self, state: int, rs) -> np.ndarray:
        return rs.multivariate_normal(self.means_[state], self.covars_[state])
