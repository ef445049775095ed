"""The estimator machinery shared by every HMM of :mod:`avicore.hmm_estimators`.

:class:`BaseHMM` follows hmmlearn's ``BaseHMM`` (constructor arguments, ``params``/``init_params`` letters,
Dirichlet priors and MAP EM, ``monitor_``, ``fit``/``score``/``decode``/``sample``) and scikit-learn's estimator
conventions (``get_params``/``set_params``, ``clone``, trailing-underscore fitted attributes, ``n_features_in_``),
without depending on either package. Its E-step is one kernel call over every sequence at once: where a model's
emission statistics are posterior-weighted sums of fixed per-row features (``_em_inputs``: Gaussian, Poisson,
categorical), :func:`avicore.kernels.hmm_em.em_sums` returns them directly (on the cython backend one fused pass that
never writes the posteriors, its emissions computed in the pass — ``_em_emission``); otherwise (``GMMHMM``) the
forward-backward kernel's posteriors go to ``_emission_stats``. Subclasses supply those hooks and their M-step.
"""

from __future__ import annotations

import inspect
import logging
import numbers
import string
import sys
import warnings
from collections import deque
from typing import Any

import numpy as np

from .. import _config, _validate
from ..backends import resolve
from ..kernels import hmm as _kernels
from ..kernels import hmm_em

_log = logging.getLogger(__name__)

DECODER_ALGORITHMS = ("viterbi", "map")
IMPLEMENTATIONS = ("log", "scaling")
BACKENDS = ("auto", *_kernels.SUPPORTED_BACKENDS)


class NotFittedError(ValueError, AttributeError):
    """The estimator is used before ``fit`` (or before its parameters were set)."""


class DegenerateStateWarning(RuntimeWarning):
    """A state lost all its posterior mass during EM (its parameters are kept; its transition row is zero)."""


class ConvergenceMonitor:
    """Records the objective of each EM iteration and decides convergence (hmmlearn's ``ConvergenceMonitor``).

    Parameters
    ----------
    tol : float
        EM stops when the objective gains less than ``tol`` between two iterations.
    n_iter : int
        Most iterations.
    verbose : bool
        Print ``iteration, objective, delta`` to stderr after each iteration.

    Attributes
    ----------
    history : collections.deque of float
        The objective (log-likelihood, log-posterior for MAP EM, or ELBO for VB) at every iteration, evaluated at
        the parameters the iteration started from.
    iter : int
        Iterations done.
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"

    def __init__(self, tol: float, n_iter: int, verbose: bool) -> None:
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history: deque[float] = deque()
        self.iter = 0

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(tol={self.tol!r}, n_iter={self.n_iter!r}, verbose={self.verbose!r}, "
                f"iter={self.iter}, history={list(self.history)!r})")

    def _reset(self) -> None:
        self.iter = 0
        self.history.clear()

    def report(self, log_prob: float) -> None:
        """Record one iteration's objective (printing it when ``verbose``)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta), file=sys.stderr)
        if self.history and log_prob - self.history[-1] < -np.sqrt(np.finfo(float).eps):
            _log.warning("Model is not converging. Current: %s is not greater than %s. Delta is %s",
                         log_prob, self.history[-1], log_prob - self.history[-1])
        self.history.append(float(log_prob))
        self.iter += 1

    @property
    def converged(self) -> bool:
        """``n_iter`` reached, or the last gain below ``tol``."""
        return (self.iter == self.n_iter
                or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol))


def check_random_state(seed: Any) -> np.random.RandomState | np.random.Generator:
    """hmmlearn's (scikit-learn's) convention: None → NumPy's global RandomState, int → a new RandomState."""
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    raise TypeError(f"random_state must be None, an int, a numpy.random.RandomState or a numpy.random.Generator; "
                    f"got {type(seed).__name__}.")


def uniform(rs: np.random.RandomState | np.random.Generator) -> float:
    """One U(0, 1) draw from either kind of generator (RandomState.rand, as hmmlearn draws)."""
    return float(rs.rand()) if isinstance(rs, np.random.RandomState) else float(rs.random())


def normalize_rows(a: np.ndarray) -> np.ndarray:
    """Divide each row (last axis) by its sum; an all-zero row stays zero (hmmlearn's ``normalize``)."""
    s = a.sum(axis=-1, keepdims=True)
    return a / np.where(s == 0, 1.0, s)


def log_of(p: np.ndarray) -> np.ndarray:
    """``log p`` with ``log 0 = -inf`` and no warning, C-contiguous float64."""
    with np.errstate(divide="ignore"):
        return np.ascontiguousarray(np.log(p), dtype=np.float64)


class BaseHMM:
    """Base of the EM-fitted HMMs: hmmlearn's interface, avicore's kernels.

    Subclasses define ``_emission_codes`` (the ``params`` letters of their emission parameters) and the hooks
    ``_check_X``, ``_init_emissions``, ``_check_emissions``, ``_compute_log_likelihood``, ``_em_emission``,
    ``_em_inputs`` with ``_emission_stats_from_sums`` (or ``_emission_stats``), ``_mstep_emissions``,
    ``_generate_sample_from_state`` and ``_n_fit_scalars``.
    """

    _emission_codes = ""
    _fit_cache: dict[str, Any] | None = None  # per-fit constants of the data; None outside fit

    def __init__(self, n_components: int = 1, startprob_prior: Any = 1.0, transmat_prior: Any = 1.0,
                 algorithm: str = "viterbi", random_state: Any = None, n_iter: int = 10, tol: float = 1e-2,
                 verbose: bool = False, params: str = string.ascii_letters,
                 init_params: str = string.ascii_letters, implementation: str = "log", *,
                 backend: str = "auto") -> None:
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.backend = backend

    # ------------------------------------------------------------------------------------------------------------
    # scikit-learn conventions
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor arguments, by name (scikit-learn's ``get_params``; ``deep`` has nothing to recurse)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> BaseHMM:
        """Set constructor arguments by name; returns ``self``.

        Raises
        ------
        ValueError
            On a name that is not a constructor argument (the message lists the valid ones).
        """
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}; valid parameters "
                                 f"are {valid}.")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            same = default is value or (isinstance(value, (str, int, float, bool, type(None)))
                                        and type(value) is type(default) and value == default)
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    # ------------------------------------------------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------------------------------------------------
    def _check_hyper(self) -> None:
        """Check the constructor arguments (done at fit and use, as scikit-learn does)."""
        _validate.check_int(self.n_components, "n_components", minimum=1)
        _validate.check_int(self.n_iter, "n_iter", minimum=0)
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real):
            raise TypeError(f"tol must be a real number; got {type(self.tol).__name__}.")
        for name in ("params", "init_params"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string of parameter letters (e.g. "
                                f"{'st' + self._emission_codes!r}); got {type(getattr(self, name)).__name__}.")
        _validate.check_choice(self.algorithm, "algorithm", DECODER_ALGORITHMS)
        _validate.check_choice(self.implementation, "implementation", IMPLEMENTATIONS)
        _validate.check_choice(self.backend, "backend", BACKENDS)

    def _check_fitted(self) -> None:
        if not hasattr(self, "startprob_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: call fit(X, lengths) or "
                                 f"set startprob_, transmat_ and the emission parameters first.")

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _set_n_features(self, n_features: int, *, fitting: bool) -> None:
        """Record the feature count at fit; check it afterwards (hmmlearn's ``n_features``, sklearn's ``_in_``)."""
        known = getattr(self, "n_features_in_", None)
        if not fitting and known is not None and known != n_features:
            raise ValueError(f"X must have n_features={known} columns (the model's n_features_in_); got "
                             f"{n_features}.")
        self.n_features_in_ = n_features
        self.n_features = n_features

    def _prior(self, value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A prior hyper-parameter broadcast to ``shape`` (a scalar or an array of that shape)."""
        arr = _validate.as_float_array(value, name)
        try:
            return np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(f"{name} must be a scalar or broadcast to shape {shape}; got shape {arr.shape}.") from None

    def _check_startprob_transmat(self) -> None:
        n = self.n_components
        start = _validate.as_float_array(self.startprob_, "startprob_", shape=(n,))
        trans = _validate.as_float_array(self.transmat_, "transmat_", shape=(n, n))
        if (start < 0).any() or abs(start.sum() - 1.0) > 1e-8:
            raise ValueError(f"startprob_ must be a probability vector (>= 0, summing to 1); got sum "
                             f"{float(start.sum())!r} and min {float(start.min())!r}.")
        sums = trans.sum(axis=1)
        # an all-zero row is what EM leaves for a state that lost its mass (hmmlearn's normalize): allowed
        bad = ((trans < 0).any(axis=1)) | ((np.abs(sums - 1.0) > 1e-8) & (sums != 0))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"transmat_ rows must be probability vectors (>= 0, summing to 1, or all zero for a "
                             f"state that lost its mass); got row {i} summing "
                             f"to {float(sums[i])!r} with min {float(trans[i].min())!r}.")
        self.startprob_, self.transmat_ = start.copy(), trans.copy()

    def _check(self) -> None:
        """Validate the model parameters before fitting or use."""
        self._check_startprob_transmat()
        self._check_emissions()

    # ------------------------------------------------------------------------------------------------------------
    # initialisation
    # ------------------------------------------------------------------------------------------------------------
    def _needs_init(self, code: str, name: str) -> bool:
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning("Even though the %r attribute is set, it will be overwritten during initialization "
                             "because 'init_params' contains %r", name, code)
            return True
        return not hasattr(self, name)

    def _init(self, X: np.ndarray, offsets: np.ndarray) -> None:
        """Random start and transition rows from Dirichlet(1/K), drawn like hmmlearn's; then the emissions."""
        init = 1.0 / self.n_components
        rs = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = rs.dirichlet(np.full(self.n_components, init))
        if self._needs_init("t", "transmat_"):
            self.transmat_ = rs.dirichlet(np.full(self.n_components, init), size=self.n_components)
        self._init_emissions(X, offsets)
        n_scalars = sum(v for k, v in self._n_fit_scalars().items() if k in self.params)
        if X.size < n_scalars:
            _log.warning("Fitting a model with %d free scalar parameters with only %d data points will result in a "
                         "degenerate solution.", n_scalars, X.size)

    # ------------------------------------------------------------------------------------------------------------
    # the E-step on the kernels
    # ------------------------------------------------------------------------------------------------------------
    def _backend_name(self, size: int) -> str:
        return resolve(self.backend, size=size, supported=_kernels.SUPPORTED_BACKENDS)

    def _log_start_trans(self) -> tuple[np.ndarray, np.ndarray]:
        return log_of(self.startprob_), log_of(self.transmat_)

    def _forward_backward(self, log_lik: np.ndarray, offsets: np.ndarray, log_start: np.ndarray | None = None,
                          log_trans: np.ndarray | None = None):
        """One kernel call for every sequence: (log p per sequence, posteriors, Σ xi, Σ first posteriors).

        ``log_start``/``log_trans`` default to the model's; variational fits pass sub-normalised expected logs (the
        compiled kernels normalise per step, so the returned log p is then the log normaliser of q(z)).
        """
        if log_start is None:
            log_start, log_trans = self._log_start_trans()
        name = self._backend_name(log_lik.size)
        return _kernels.FORWARD_BACKWARD[name](np.ascontiguousarray(log_lik), log_trans, log_start, offsets)

    def _estep(self, X: np.ndarray, offsets: np.ndarray) -> tuple[dict[str, Any], float]:
        log_start, log_trans = self._log_start_trans()
        return self._expectations(X, offsets, self._em_emission(X), log_start, log_trans)

    def _expectations(self, X: np.ndarray, offsets: np.ndarray, emission: hmm_em.Emission, log_start: np.ndarray,
                      log_trans: np.ndarray) -> tuple[dict[str, Any], float]:
        """The E-step's statistics and Σ log p(x): reduced by the kernel (:mod:`avicore.kernels.hmm_em`) when
        the model's statistics are posterior-weighted sums of fixed per-row features (``_em_inputs``), else from
        the posteriors (``_emission_stats``)."""
        name = self._backend_name(X.shape[0] * self.n_components)
        inputs = self._cached_em_inputs(X)
        if inputs is None:
            log_lik = np.ascontiguousarray(emission.log_lik_of(slice(None)))
            log_prob, posteriors, trans, start = _kernels.FORWARD_BACKWARD[name](log_lik, log_trans, log_start,
                                                                                 offsets)
            emission_stats = self._emission_stats(X, posteriors, log_lik)
        else:
            sums = hmm_em.em_sums(name, emission, log_trans, log_start, offsets, *inputs)
            log_prob, trans, start = sums.log_likelihood, sums.trans, sums.start
            emission_stats = self._emission_stats_from_sums(sums)
        _warn_impossible(log_prob)
        stats: dict[str, Any] = {"nobs": len(offsets) - 1, "start": start, "trans": trans}
        stats.update(emission_stats)
        return stats, float(np.sum(log_prob))

    def _cached_em_inputs(self, X: np.ndarray) -> tuple[Any, ...] | None:
        """``_em_inputs(X)``, computed once per fit (the features are constants of the data)."""
        cache = self._fit_cache
        if cache is None:
            return self._em_inputs(X)
        if "em_inputs" not in cache:
            cache["em_inputs"] = self._em_inputs(X)
        return cache["em_inputs"]

    def _lower_bound(self, log_prob: float) -> float:
        return log_prob

    def _mstep(self, stats: dict[str, Any]) -> None:
        """MAP update of start and transition probabilities under their Dirichlet priors (hmmlearn's rule)."""
        n = self.n_components
        if "s" in self.params:
            prior = self._prior(self.startprob_prior, "startprob_prior", (n,))
            start = np.maximum(prior - 1.0 + stats["start"], 0.0)
            self.startprob_ = normalize_rows(np.where(self.startprob_ == 0, 0.0, start))
        if "t" in self.params:
            prior = self._prior(self.transmat_prior, "transmat_prior", (n, n))
            trans = np.maximum(prior - 1.0 + stats["trans"], 0.0)
            self.transmat_ = normalize_rows(np.where(self.transmat_ == 0, 0.0, trans))
        self._mstep_emissions(stats)

    # ------------------------------------------------------------------------------------------------------------
    # public API
    # ------------------------------------------------------------------------------------------------------------
    def fit(self, X: Any, lengths: Any = None) -> BaseHMM:
        """Estimate the parameters by EM (MAP EM under the priors) from the concatenated sequences ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Observations of every sequence, concatenated along axis 0.
        lengths : array-like of int, optional
            Length of each sequence (summing to n_samples). Default: one sequence.

        Returns
        -------
        self
            With the fitted parameters and ``monitor_`` (objective history, ``converged``).

        Raises
        ------
        ValueError, TypeError
            On invalid constructor arguments, data or ``lengths``.

        Warns
        -----
        DegenerateStateWarning
            When a state's transition row is all zero (no transition from it was ever observed).
        """
        self._check_hyper()
        x = self._check_X(X, fitting=True)
        offsets = _validate.check_lengths(lengths, x.shape[0])
        self._init(x, offsets)
        self._check()
        if self.n_features_in_ != (1 if x.dtype.kind in "iu" else x.shape[1]):
            raise ValueError(f"X must have n_features={self.n_features_in_} columns (the shape of the model's preset "
                             f"emission parameters); got {x.shape[1]}. Add their letters to init_params to "
                             f"re-initialise them.")
        self.monitor_ = ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        self._fit_cache = {}  # per-fit constants of the data (e.g. log x! for Poisson), dropped after the fit
        try:
            with _config.serial_blas():  # the small matrix products run on one BLAS thread (see avicore._config)
                self._em(x, offsets)
        finally:
            self._fit_cache = None
        return self

    def _em(self, x: np.ndarray, offsets: np.ndarray) -> None:
        for _ in range(self.n_iter):
            stats, log_prob = self._estep(x, offsets)
            lower_bound = self._lower_bound(log_prob)
            self._mstep(stats)
            self.monitor_.report(lower_bound)
            if self.monitor_.converged:
                break
            zero = np.flatnonzero(self.transmat_.sum(axis=1) == 0)
            if zero.size:
                warnings.warn(DegenerateStateWarning(
                    f"Rows {zero.tolist()} of transmat_ have zero sum because no transition from those states was "
                    f"ever observed; the states can no longer be left."), stacklevel=3)

    def _prepare(self, X: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_hyper()
        self._check_fitted()
        self._check()
        x = self._check_X(X, fitting=False)
        return x, _validate.check_lengths(lengths, x.shape[0])

    def score_samples(self, X: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
        """Log-likelihood of ``X`` and the posterior state probabilities of every sample.

        Returns
        -------
        log_prob : float
            ``Σ`` over sequences of ``log p(x)``.
        posteriors : ndarray of shape (n_samples, n_components)
            ``p(z_t = k | x)``.
        """
        x, offsets = self._prepare(X, lengths)
        log_prob, posteriors, _, _ = self._forward_backward(self._compute_log_likelihood(x), offsets)
        _warn_impossible(log_prob)
        return float(np.sum(log_prob)), posteriors

    def score(self, X: Any, lengths: Any = None) -> float:
        """``Σ`` over sequences of ``log p(x)`` under the model."""
        return self.score_samples(X, lengths)[0]

    def decode(self, X: Any, lengths: Any = None, algorithm: str | None = None) -> tuple[float, np.ndarray]:
        """Most likely states: the Viterbi path (``"viterbi"``) or each step's most probable state (``"map"``).

        Returns
        -------
        log_prob : float
            Viterbi: ``Σ`` over sequences of ``max_z log p(x, z)``; map: ``Σ_t max_k p(z_t = k | x)`` (hmmlearn's
            value).
        state_sequence : ndarray of shape (n_samples,)
            The decoded states.
        """
        algorithm = algorithm or self.algorithm
        _validate.check_choice(algorithm, "algorithm", DECODER_ALGORITHMS)
        if algorithm == "map":
            _, posteriors = self.score_samples(X, lengths)
            return float(np.max(posteriors, axis=1).sum()), np.argmax(posteriors, axis=1)
        x, offsets = self._prepare(X, lengths)
        log_lik = np.ascontiguousarray(self._compute_log_likelihood(x))
        log_start, log_trans = self._log_start_trans()
        log_prob, states = _kernels.VITERBI[self._backend_name(log_lik.size)](log_lik, log_trans, log_start, offsets)
        _warn_impossible(log_prob)
        return float(np.sum(log_prob)), states

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """The decoded state of every sample (``decode(X, lengths)[1]``)."""
        return self.decode(X, lengths)[1]

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Posterior state probabilities of every sample, shape (n_samples, n_components)."""
        return self.score_samples(X, lengths)[1]

    def sample(self, n_samples: int = 1, random_state: Any = None,
               currstate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` steps of one sequence (hmmlearn's draw order: a seed gives hmmlearn's sample).

        Parameters
        ----------
        n_samples : int
            Number of steps.
        random_state : None, int, RandomState or Generator
            Defaults to the estimator's ``random_state``.
        currstate : int, optional
            The first state (else drawn from ``startprob_``).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        state_sequence : ndarray of shape (n_samples,)
        """
        self._check_hyper()
        self._check_fitted()
        self._check()
        n = _validate.check_int(n_samples, "n_samples", minimum=1)
        rs = check_random_state(self.random_state if random_state is None else random_state)
        trans_cdf = np.cumsum(self.transmat_, axis=1)
        if currstate is None:
            currstate = int((np.cumsum(self.startprob_) > uniform(rs)).argmax())
        else:
            currstate = _validate.check_int(currstate, "currstate", minimum=0, maximum=self.n_components - 1)
        states = [currstate]
        draws = [self._generate_sample_from_state(currstate, rs)]
        for _ in range(n - 1):
            currstate = int((trans_cdf[currstate] > uniform(rs)).argmax())
            states.append(currstate)
            draws.append(self._generate_sample_from_state(currstate, rs))
        return np.atleast_2d(np.asarray(draws)), np.array(states, dtype=int)

    def get_stationary_distribution(self) -> np.ndarray:
        """The stationary distribution of ``transmat_`` (left eigenvector of eigenvalue 1, normalised)."""
        self._check_fitted()
        vals, vecs = np.linalg.eig(np.asarray(self.transmat_).T)
        v = np.real_if_close(vecs[:, np.argmax(vals.real)])
        return np.real(v / v.sum())

    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion ``-2 log L + 2 p``."""
        return -2.0 * self.score(X, lengths) + 2.0 * sum(self._n_fit_scalars().values())

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion ``-2 log L + p log n_samples``."""
        n = self._check_X(X, fitting=False).shape[0]
        return -2.0 * self.score(X, lengths) + sum(self._n_fit_scalars().values()) * np.log(n)

    # hooks ------------------------------------------------------------------------------------------------------
    def _n_fit_scalars(self) -> dict[str, int]:
        n = self.n_components
        return {"s": n - 1, "t": n * (n - 1)}

    def _init_emissions(self, X: np.ndarray, offsets: np.ndarray) -> None:
        pass

    def _check_emissions(self) -> None:
        pass

    def _em_emission(self, X: np.ndarray) -> hmm_em.Emission:
        """The E-step's emission source (default: ``_compute_log_likelihood`` of the rows asked for)."""
        return hmm_em.Emission(lambda rows: self._compute_log_likelihood(X[rows]))

    def _em_inputs(self, X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, int] | None:
        """(features, symbols, n_symbols) whose posterior-weighted sums make the emission statistics; None when
        the statistics need the posteriors themselves (``_emission_stats``)."""
        return None, None, 0

    def _emission_stats_from_sums(self, sums: hmm_em.EMSums) -> dict[str, Any]:
        return {}

    def _emission_stats(self, X: np.ndarray, posteriors: np.ndarray, log_lik: np.ndarray) -> dict[str, Any]:
        """Emission statistics from the posteriors (the reduction of ``_em_inputs`` unless overridden)."""
        features, symbols, n_symbols = self._em_inputs(X)
        post, weighted, counts = hmm_em.reduce_posteriors(posteriors, features, symbols, n_symbols)
        return self._emission_stats_from_sums(hmm_em.EMSums(np.zeros(0), np.zeros(0), np.zeros(0), post, weighted,
                                                            counts))

    def _mstep_emissions(self, stats: dict[str, Any]) -> None:
        pass


def _warn_impossible(log_prob: np.ndarray) -> None:
    from ..hmm import ImpossibleSequenceWarning

    bad = np.flatnonzero(np.asarray(log_prob) == -np.inf)
    if bad.size:
        warnings.warn(ImpossibleSequenceWarning(
            f"sequences {bad[:10].tolist()} have no state path of positive probability under the model; their "
            f"log-likelihood is -inf and their posteriors are 0.", tuple(int(i) for i in bad)), stacklevel=3)


def check_float_X(X: Any, name: str = "X") -> np.ndarray:
    """A finite 2-D float64 observation matrix with at least one row (hmmlearn wants 2-D, as scikit-learn does)."""
    x = _validate.as_float_array(X, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional (n_samples, n_features); got shape {x.shape}. Reshape a "
                         f"single feature with X.reshape(-1, 1).")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one sample and one feature; got shape {x.shape}.")
    return np.ascontiguousarray(x)
