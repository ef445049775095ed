"""``CategoricalHMM`` (one symbol per step) and ``PoissonHMM`` (independent Poisson counts), hmmlearn's models.

Both initialise exactly as hmmlearn does from the same ``random_state`` (Dirichlet start/transition rows, then
uniform-normalised emission rows or method-of-moments gamma rates), so from one seed they follow hmmlearn's whole
fit. Sufficient statistics are posterior-weighted counts over all rows at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import gammaln

from .. import _validate
from ..kernels import hmm_em
from ._base import BaseHMM, check_float_X, check_random_state, log_of, normalize_rows


def check_symbols(X: Any, n_features: int | None) -> np.ndarray:
    """Integer symbols as an int64 column (n_samples, 1): non-negative and below ``n_features`` when known."""
    raw = np.asarray(X)
    if raw.ndim == 1:
        raw = raw[:, None]
    if raw.ndim != 2 or raw.shape[1] != 1 or raw.shape[0] < 1:
        raise ValueError(f"X must have shape (n_samples, 1) of integer symbols; got shape {raw.shape}.")
    if not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"X must hold integer symbols (dtype int); got dtype {raw.dtype}. Encode categories with "
                         f"integers 0..n_features-1.")
    if raw.min() < 0:
        raise ValueError(f"X must hold non-negative symbols; got min {int(raw.min())}.")
    if n_features is not None and raw.max() >= n_features:
        raise ValueError(f"X must hold symbols below n_features={n_features}; got max {int(raw.max())}.")
    return np.ascontiguousarray(raw, dtype=np.int64)


class CategoricalHMM(BaseHMM):
    """Hidden Markov model with categorical emissions (hmmlearn's ``CategoricalHMM`` on avicore's kernels).

    Parameters
    ----------
    n_components : int
        Number of states.
    startprob_prior, transmat_prior, emissionprob_prior : float or array
        Dirichlet concentrations (1 = maximum likelihood).
    n_features : int, optional
        Number of symbols; inferred as ``max(X) + 1`` when None.
    algorithm, random_state, n_iter, tol, verbose, implementation, backend
        As in :class:`avicore.hmm.GaussianHMM`.
    params, init_params : str
        Letters: 's' startprob, 't' transmat, 'e' emissionprob.

    Attributes
    ----------
    startprob_, transmat_ : ndarray
    emissionprob_ : ndarray (n_components, n_features)
    monitor_ : ConvergenceMonitor

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import CategoricalHMM
    >>> X = np.array([[0], [0], [1], [1], [2], [0]])
    >>> CategoricalHMM(n_components=2, random_state=0).fit(X).emissionprob_.shape
    (2, 3)
    """

    _emission_codes = "e"

    def __init__(self, n_components: int = 1, startprob_prior: Any = 1.0, transmat_prior: Any = 1.0, *,
                 emissionprob_prior: Any = 1.0, n_features: int | None = None, algorithm: str = "viterbi",
                 random_state: Any = None, n_iter: int = 10, tol: float = 1e-2, verbose: bool = False,
                 params: str = "ste", init_params: str = "ste", implementation: str = "log",
                 backend: str = "auto") -> None:
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, backend=backend)
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features

    def _n_symbols(self) -> int | None:
        if self.n_features is not None:
            return _validate.check_int(self.n_features, "n_features", minimum=1)
        if hasattr(self, "emissionprob_"):
            return int(np.shape(self.emissionprob_)[1])
        return None

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:
        known = self._n_symbols() if (not fitting or self.n_features is not None) else None
        x = check_symbols(X, known)
        self.n_features_in_ = 1
        self._n_symbols_ = known if known is not None else int(x.max()) + 1
        return x

    def _n_fit_scalars(self) -> dict[str, int]:
        n = self.n_components
        return {**super()._n_fit_scalars(), "e": n * (self._n_symbols_ - 1)}

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        if self._needs_init("e", "emissionprob_"):
            rs = check_random_state(self.random_state)
            self.emissionprob_ = normalize_rows(rs.rand(self.n_components, self._n_symbols_)
                                                if isinstance(rs, np.random.RandomState)
                                                else rs.random((self.n_components, self._n_symbols_)))

    def _check_emissions(self) -> None:
        b = _validate.as_float_array(np.atleast_2d(self.emissionprob_), "emissionprob_")
        m = self._n_symbols() if self.n_features is not None else b.shape[1]
        if b.shape != (self.n_components, m):
            raise ValueError(f"emissionprob_ must have shape (n_components, n_features)=({self.n_components}, {m}); "
                             f"got {b.shape}.")
        sums = b.sum(axis=1)
        if (b < 0).any() or ((np.abs(sums - 1.0) > 1e-8) & (sums != 0)).any():  # zero row: a state EM emptied
            raise ValueError(f"emissionprob_ rows must be probability vectors (or all zero for a state that lost its "
                             f"mass); got row sums {sums.tolist()}.")
        self.emissionprob_ = b.copy()
        self._n_symbols_ = m

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(log_of(self.emissionprob_).T[X[:, 0]])

    def _em_emission(self, X: np.ndarray) -> hmm_em.Emission:
        log_b = log_of(self.emissionprob_)
        symbols = self._symbols(X)
        return hmm_em.Emission(lambda rows: np.ascontiguousarray(log_b.T[symbols[rows]]), "table", (log_b, symbols))

    def _symbols(self, X: np.ndarray) -> np.ndarray:
        """X's symbols as a contiguous int64 vector (kept for the fit's X: the same at every EM iteration)."""
        cache = self._fit_cache
        if cache is not None and cache.get("symbols_of") is X:
            return cache["symbols"]
        symbols = np.ascontiguousarray(X[:, 0], dtype=np.int64)
        if cache is not None:
            cache["symbols_of"], cache["symbols"] = X, symbols
        return symbols

    def _em_inputs(self, X: np.ndarray) -> tuple[None, np.ndarray | None, int]:
        if "e" not in self.params:
            return None, None, 0
        return None, self._symbols(X), self._n_symbols_

    def _emission_stats_from_sums(self, sums: hmm_em.EMSums) -> dict[str, Any]:
        return {} if sums.symbol_counts is None else {"obs": sums.symbol_counts.T}

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        if "e" in self.params:
            prior = np.asarray(self.emissionprob_prior, dtype=float)
            self.emissionprob_ = normalize_rows(np.maximum(prior - 1.0 + stats["obs"], 0.0))

    def _generate_sample_from_state(self, state: int, rs) -> list[int]:
        cdf = np.cumsum(self.emissionprob_[state, :])
        u = rs.rand() if isinstance(rs, np.random.RandomState) else rs.random()
        return [int((cdf > u).argmax())]


def check_counts(X: Any) -> np.ndarray:
    """Non-negative integer counts (integer or integral float dtype) as float64 (n_samples, n_features)."""
    x = check_float_X(X)
    if (x < 0).any():
        i = tuple(int(v) for v in np.argwhere(x < 0)[0])
        raise ValueError(f"X must hold non-negative counts; got X[{i[0]}, {i[1]}]={float(x[i])!r}.")
    if (x != np.round(x)).any():
        i = tuple(int(v) for v in np.argwhere(x != np.round(x))[0])
        raise ValueError(f"X must hold integer counts; got X[{i[0]}, {i[1]}]={float(x[i])!r}.")
    return x


class PoissonHMM(BaseHMM):
    """Hidden Markov model with independent Poisson emissions per feature (hmmlearn's ``PoissonHMM``).

    Parameters
    ----------
    n_components : int
        Number of states.
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations.
    lambdas_prior, lambdas_weight : float or array
        Gamma prior on the rates (shape alpha, rate beta); 0 = maximum likelihood.
    algorithm, random_state, n_iter, tol, verbose, implementation, backend
        As in :class:`avicore.hmm.GaussianHMM`.
    params, init_params : str
        Letters: 's' startprob, 't' transmat, 'l' lambdas.

    Attributes
    ----------
    lambdas_ : ndarray (n_components, n_features)
        Poisson rates.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.hmm import PoissonHMM
    >>> X = np.array([[0, 1], [2, 3], [1, 0], [5, 4]])
    >>> PoissonHMM(n_components=2, random_state=0).fit(X).lambdas_.shape
    (2, 2)
    """

    _emission_codes = "l"

    def __init__(self, n_components: int = 1, startprob_prior: Any = 1.0, transmat_prior: Any = 1.0,
                 lambdas_prior: Any = 0.0, lambdas_weight: Any = 0.0, algorithm: str = "viterbi",
                 random_state: Any = None, n_iter: int = 10, tol: float = 1e-2, verbose: bool = False,
                 params: str = "stl", init_params: str = "stl", implementation: str = "log", *,
                 backend: str = "auto") -> None:
        super().__init__(n_components, startprob_prior=startprob_prior, transmat_prior=transmat_prior,
                         algorithm=algorithm, random_state=random_state, n_iter=n_iter, tol=tol, verbose=verbose,
                         params=params, init_params=init_params, implementation=implementation, backend=backend)
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:
        x = check_counts(X)
        self._set_n_features(x.shape[1], fitting=fitting)
        return x

    def _n_fit_scalars(self) -> dict[str, int]:
        return {**super()._n_fit_scalars(), "l": self.n_components * self.n_features}

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        if self._needs_init("l", "lambdas_"):
            rs = check_random_state(self.random_state)
            mean, var = X.mean(), X.var()
            if var <= 0:
                raise ValueError(f"X must not be constant to initialise lambdas_ by moments; got every count = "
                                 f"{mean!r}. Set lambdas_ and drop 'l' from init_params.")
            self.lambdas_ = rs.gamma(shape=mean ** 2 / var, scale=var / mean, size=(self.n_components, X.shape[1]))

    def _check_emissions(self) -> None:
        lam = _validate.as_float_array(np.atleast_2d(self.lambdas_), "lambdas_")
        if lam.ndim != 2 or lam.shape[0] != self.n_components:
            raise ValueError(f"lambdas_ must have shape (n_components, n_features) with n_components="
                             f"{self.n_components}; got {lam.shape}.")
        if (lam <= 0).any():
            raise ValueError(f"lambdas_ must be > 0; got min {float(lam.min())!r}.")
        self.lambdas_ = lam.copy()
        self.n_features = self.n_features_in_ = lam.shape[1]

    def _row_log_factorials(self, X: np.ndarray, sign: float = 1.0) -> np.ndarray:
        """``sign · Σ_d log x_td!`` per row (kept for the fit's X: the same at every EM iteration)."""
        cache = self._fit_cache
        if cache is not None and cache.get("lgamma_of") is X:
            return cache["lgamma"] if sign > 0 else cache["-lgamma"]
        lgamma = gammaln(X + 1.0).sum(axis=1)
        if cache is not None:
            cache["lgamma_of"], cache["lgamma"], cache["-lgamma"] = X, lgamma, -lgamma
        return lgamma if sign > 0 else -lgamma

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        out = X @ np.log(self.lambdas_).T
        out -= self.lambdas_.sum(axis=1)
        out -= self._row_log_factorials(X)[:, None]
        return out

    def _em_emission(self, X: np.ndarray) -> hmm_em.Emission:
        lgamma = self._row_log_factorials(X)
        log_rates, total = np.log(self.lambdas_), self.lambdas_.sum(axis=1)

        def log_lik_of(rows):
            out = X[rows] @ log_rates.T
            out -= total
            out -= lgamma[rows][:, None]
            return out
        return hmm_em.Emission(log_lik_of, "linear", (X, log_rates, -total, self._row_log_factorials(X, -1.0)))

    def _em_inputs(self, X: np.ndarray) -> tuple[np.ndarray | None, None, int]:
        return (X if "l" in self.params else None), None, 0

    def _emission_stats_from_sums(self, sums: hmm_em.EMSums) -> dict[str, Any]:
        return {} if sums.weighted is None else {"post": sums.post, "obs": sums.weighted.T}

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        if "l" in self.params:
            alphas = np.asarray(self.lambdas_prior, dtype=float)
            betas = np.asarray(self.lambdas_weight, dtype=float)
            n = stats["post"].sum()
            with np.errstate(divide="ignore", invalid="ignore"):
                y_bar = stats["obs"] / stats["post"][:, None]
            self.lambdas_ = (alphas + n * y_bar) / (betas + n)

    def _generate_sample_from_state(self, state: int, rs) -> np.ndarray:
        return rs.poisson(self.lambdas_[state])
