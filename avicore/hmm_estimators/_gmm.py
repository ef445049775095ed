"""``GMMHMM``: each state emits from a mixture of ``n_mix`` Gaussians (hmmlearn's model and MAP updates).

All ``n_components · n_mix`` component densities come from one call of :mod:`avicore.emissions` over every row;
responsibilities, weighted sums and scatter matrices are computed for all sequences at once. hmmlearn's covariance
statistics are centred on the means the E-step started from, and so are these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from .. import _validate, emissions
from ._base import BaseHMM, check_float_X, check_random_state, log_of
from ._gaussian import COVARIANCE_TYPES, weighted_scatter
from ._kmeans import kmeans


class GMMHMM(BaseHMM):
    """Hidden Markov model with Gaussian-mixture emissions (hmmlearn's ``GMMHMM`` on avicore's kernels).

    Parameters
    ----------
    n_components : int
        Number of states.
    n_mix : int
        Mixture components per state.
    min_covar : float
        Added to the diagonal of the data covariance that initialises ``covars_``.
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations.
    weights_prior : float or array (n_components, n_mix)
        Dirichlet concentration of each state's mixture weights.
    means_prior, means_weight : float or array
        Normal prior on the component means.
    covars_prior, covars_weight : float, array or None
        Inverse-gamma / inverse-Wishart prior; None takes hmmlearn's defaults for the covariance type.
    algorithm, random_state, n_iter, tol, verbose, implementation, backend
        As in :class:`avicore.hmm.GaussianHMM`.
    covariance_type : {"spherical", "diag", "full", "tied"}
        "tied": the components of each state share one full covariance.
    params, init_params : str
        Letters: 's', 't', 'm' means, 'c' covars, 'w' weights.

    Attributes
    ----------
    weights_ : ndarray (n_components, n_mix)
    means_ : ndarray (n_components, n_mix, n_features)
    covars_ : ndarray
        (n_components, n_mix) spherical, (n_components, n_mix, n_features) diag, (n_components, n_mix,
        n_features, n_features) full, (n_components, n_features, n_features) tied.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import GMMHMM
    >>> X = np.random.default_rng(0).normal(size=(60, 2))
    >>> GMMHMM(n_components=2, n_mix=2, random_state=0, n_iter=3).fit(X).means_.shape
    (2, 2, 2)
    """

    _emission_codes = "mcw"

    def __init__(self, n_components: int = 1, n_mix: int = 1, min_covar: float = 1e-3, startprob_prior: Any = 1.0,
                 transmat_prior: Any = 1.0, weights_prior: Any = 1.0, means_prior: Any = 0.0,
                 means_weight: Any = 0.0, covars_prior: Any = None, covars_weight: Any = None,
                 algorithm: str = "viterbi", covariance_type: str = "diag", random_state: Any = None,
                 n_iter: int = 10, tol: float = 1e-2, verbose: bool = False, params: str = "stmcw",
                 init_params: str = "stmcw", implementation: str = "log", *, backend: str = "auto") -> None:
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, backend=backend)
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.n_mix = n_mix
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight

    def _check_hyper(self) -> None:
        super()._check_hyper()
        _validate.check_int(self.n_mix, "n_mix", minimum=1)
        _validate.check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:
        x = check_float_X(X)
        self._set_n_features(x.shape[1], fitting=fitting)
        return x

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        nc, nm, nf = self.n_components, self.n_mix, self.n_features
        return {"spherical": (nc, nm), "diag": (nc, nm, nf), "full": (nc, nm, nf, nf),
                "tied": (nc, nf, nf)}

    def _priors(self) -> dict[str, np.ndarray]:
        """The prior hyper-parameters at full shape, None replaced by hmmlearn's defaults (never mutates params)."""
        nc, nm, nf, ct = self.n_components, self.n_mix, self.n_features, self.covariance_type
        default_prior = {"full": 0.0, "tied": 0.0, "diag": -1.5, "spherical": -(nm + 2.0) / 2.0}[ct]
        default_weight = {"full": -(1.0 + nf + 1.0), "tied": -(nm + nf + 1.0), "diag": 0.0, "spherical": 0.0}[ct]
        cp = default_prior if self.covars_prior is None else self.covars_prior
        cw = default_weight if self.covars_weight is None else self.covars_weight
        weight_shape = {"full": (nc, nm), "tied": (nc,), "diag": (nc, nm, nf), "spherical": (nc, nm)}[ct]
        return {"weights_prior": self._prior(self.weights_prior, "weights_prior", (nc, nm)),
                "means_prior": self._prior(self.means_prior, "means_prior", (nc, nm, nf)),
                "means_weight": self._prior(self.means_weight, "means_weight", (nc, nm)),
                "covars_prior": self._prior(cp, "covars_prior", self._shapes()[ct]),
                "covars_weight": self._prior(cw, "covars_weight", weight_shape)}

    def _n_fit_scalars(self) -> dict[str, int]:
        nc, nm, nf = self.n_components, self.n_mix, self.n_features
        return {**super()._n_fit_scalars(), "m": nc * nm * nf, "w": nm - 1,
                "c": {"spherical": nc * nm, "diag": nc * nm * nf, "full": nc * nm * nf * (nf + 1) // 2,
                      "tied": nc * nf * (nf + 1) // 2}[self.covariance_type]}

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        nc, nm, nf = self.n_components, self.n_mix, X.shape[1]
        rs = check_random_state(self.random_state)
        cv = np.atleast_2d(np.cov(X.T)) + self.min_covar * np.eye(nf)
        if self._needs_init("m", "means_"):
            centres = kmeans(X, nc, rs)
            labels = np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
            means = []
            for k in range(nc):  # a loop over states, not sequences
                members = X[labels == k]
                if members.shape[0] >= nm:
                    means.append(kmeans(members, nm, rs))
                else:
                    means.append(rs.multivariate_normal(centres.mean(axis=0), cv, size=nm))
            self.means_ = np.stack(means)
        if self._needs_init("w", "weights_"):
            self.weights_ = np.full((nc, nm), 1.0 / nm)
        if self._needs_init("c", "covars_"):
            self.covars_ = {"tied": np.broadcast_to(cv, (nc, nf, nf)), "full": np.broadcast_to(cv, (nc, nm, nf, nf)),
                            "diag": np.broadcast_to(np.diag(cv), (nc, nm, nf)),
                            "spherical": np.full((nc, nm), cv.mean())}[self.covariance_type].copy()

    def _check_emissions(self) -> None:
        nc, nm = self.n_components, self.n_mix
        means = _validate.as_float_array(self.means_, "means_")
        if means.ndim != 3 or means.shape[:2] != (nc, nm):
            raise ValueError(f"means_ must have shape (n_components, n_mix, n_features)=({nc}, {nm}, ...); got "
                             f"{means.shape}.")
        self.means_ = means.copy()
        self.n_features = self.n_features_in_ = means.shape[2]
        w = _validate.as_float_array(self.weights_, "weights_", shape=(nc, nm))
        if (w < 0).any() or (np.abs(w.sum(axis=1) - 1.0) > 1e-8).any():
            raise ValueError(f"weights_ rows must be probability vectors; got row sums {w.sum(axis=1).tolist()}.")
        self.weights_ = w.copy()
        shape = self._shapes()[self.covariance_type]
        c = _validate.as_float_array(self.covars_, "covars_")
        if c.shape != shape:
            raise ValueError(f"covars_ must have shape {shape} for {self.covariance_type!r}; got {c.shape}.")
        if self.covariance_type in ("spherical", "diag"):
            if (c <= 0).any():
                raise ValueError(f"covars_ must be > 0 ({self.covariance_type!r} variances); got min "
                                 f"{float(c.min())!r}. A component collapsed: use a stronger covars_prior.")
        else:
            for idx in np.ndindex(*c.shape[:-2]):
                _validate.check_spd_matrix(c[idx], f"covars_[{', '.join(map(str, idx))}]", rtol=1e-8)
        self.covars_ = c.copy()

    def _component_log_dens(self, X: np.ndarray) -> np.ndarray:
        """``log w_km + log N(x_t; μ_km, Σ_km)``, shape (n_samples, n_components, n_mix)."""
        nc, nm, nf = self.n_components, self.n_mix, self.n_features
        means = self.means_.reshape(nc * nm, nf)
        ct = self.covariance_type
        if ct == "diag":
            dens = emissions.gaussian_diag_log_lik(X, means, self.covars_.reshape(nc * nm, nf))
        elif ct == "spherical":
            dens = emissions.gaussian_diag_log_lik(X, means, np.repeat(self.covars_.reshape(-1, 1), nf, axis=1))
        else:
            covs = self.covars_.reshape(nc * nm, nf, nf) if ct == "full" else np.repeat(self.covars_, nm, axis=0)
            dens = emissions.gaussian_full_log_lik(X, means, covs)
        return dens.reshape(-1, nc, nm) + log_of(self.weights_)

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        log_dens = self._component_log_dens(X)
        if self._fit_cache is not None:
            self._fit_cache["log_dens"] = log_dens
        with np.errstate(under="ignore"):
            return np.ascontiguousarray(logsumexp(log_dens, axis=2))

    def _em_inputs(self, X: np.ndarray) -> None:
        return None  # the mixture responsibilities need the posteriors themselves

    def _emission_stats(self, X: np.ndarray, posteriors: np.ndarray, log_lik: np.ndarray) -> dict[str, Any]:
        nc, nm, nf = self.n_components, self.n_mix, self.n_features
        log_dens = self._fit_cache["log_dens"]
        if nm == 1:
            resp = np.ones_like(log_dens)
        else:
            with np.errstate(under="ignore", invalid="ignore"):
                resp = np.exp(log_dens - log_lik[:, :, None])
            resp[~np.isfinite(resp)] = 0.0
        with np.errstate(under="ignore"):
            pcm = posteriors[:, :, None] * resp  # (n, nc, nm)
        flat = pcm.reshape(-1, nc * nm)
        s0 = pcm.sum(axis=0)
        s1 = (flat.T @ X).reshape(nc, nm, nf)
        stats: dict[str, Any] = {"post_mix_sum": s0, "post_sum": posteriors.sum(axis=0), "s1": s1}
        if "c" in self.params:
            mu = self.means_  # the means this E-step started from (hmmlearn centres its statistics there)
            if self.covariance_type in ("diag", "spherical"):
                s2 = (flat.T @ (X * X)).reshape(nc, nm, nf)
                c_n = s2 - 2.0 * mu * s1 + mu ** 2 * s0[:, :, None]
                stats["c_n"] = c_n.sum(axis=2) if self.covariance_type == "spherical" else c_n
            else:
                sxx = weighted_scatter(X, flat).reshape(nc, nm, nf, nf)
                cross = s1[..., :, None] * mu[..., None, :]
                c_n = (sxx - cross - cross.swapaxes(-1, -2)
                       + s0[:, :, None, None] * mu[..., :, None] * mu[..., None, :])
                stats["c_n"] = c_n.sum(axis=1) if self.covariance_type == "tied" else c_n
        return stats

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        pr = self._priors()
        nf, nm = self.n_features, self.n_mix
        lambdas, mus = pr["means_weight"], pr["means_prior"]
        if "w" in self.params:
            am1 = pr["weights_prior"] - 1.0
            self.weights_ = (stats["post_mix_sum"] + am1) / (stats["post_sum"] + am1.sum(axis=1))[:, None]
        if "m" in self.params:
            m_n = lambdas[:, :, None] * mus + stats["s1"]
            m_d = stats["post_mix_sum"] + lambdas
            m_d = np.where((self.weights_ == 0) & (m_n == 0).all(axis=-1), 1.0, m_d)
            self.means_ = m_n / m_d[:, :, None]
        if "c" in self.params:
            centred = self.means_ - mus
            ct = self.covariance_type
            psis, nus = pr["covars_prior"], pr["covars_weight"]
            if ct == "full":
                c_n = psis.swapaxes(-1, -2) + lambdas[:, :, None, None] * centred[..., :, None] * centred[..., None, :]
                c_d = (stats["post_mix_sum"] + 1 + nus + nf + 1)[:, :, None, None]
            elif ct == "diag":
                c_n = lambdas[:, :, None] * centred ** 2 + 2 * nus
                c_d = stats["post_mix_sum"][:, :, None] + 1 + 2 * (psis + 1)
            elif ct == "spherical":
                c_n = lambdas * np.einsum("...i,...i", centred, centred) + 2 * nus
                c_d = nf * (stats["post_mix_sum"] + 1) + 2 * (psis + 1)
            else:
                dots = centred[..., :, None] * centred[..., None, :]
                c_n = np.einsum("ij,ijkl->ikl", lambdas, dots) + psis.swapaxes(-1, -2)
                c_d = (stats["post_sum"] + nm + nus + nf + 1)[:, None, None]
            self.covars_ = (c_n + stats["c_n"]) / c_d

    def _generate_sample_from_state(self, state: int, rs) -> np.ndarray:
        comp = rs.choice(self.n_mix, p=self.weights_[state])
        nf = self.n_features
        if self.covariance_type == "tied":
            cov = self.covars_[state]
        elif self.covariance_type == "full":
            cov = self.covars_[state, comp]
        elif self.covariance_type == "diag":
            cov = np.diag(self.covars_[state, comp])
        else:
            cov = self.covars_[state, comp] * np.eye(nf)
        return rs.multivariate_normal(self.means_[state, comp], cov)
