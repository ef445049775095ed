"""Observation models p(y | f) for Gaussian-process latent models: Gaussian, Poisson, Bernoulli, Student-t.

Each likelihood gives log p(y | f) for arrays (broadcasting), draws y given f, and checks that y lies in its
support. Expected log-likelihoods under a Gaussian q(f) and their gradients live in
:func:`avicore.quadrature.expected_log_lik`; the integer ``_code`` and ``_kernel_params()`` of each likelihood
are what the compiled kernels of :mod:`avicore.kernels.quadrature` receive.

======================  ====  ==============================================================  ==============
likelihood              code  log p(y | f)                                                    y
======================  ====  ==============================================================  ==============
``Gaussian(noise)``     0     −½ log(2π σ²) − (y − f)² / (2σ²),  σ² = noise                   real
``Poisson()``           1     y f − exp(f) − log y!                                           0, 1, 2, ...
``Bernoulli("logit")``  2     log σ(s f),  s = 2y − 1, σ the logistic function               0 or 1
``Bernoulli("probit")`` 3     log Φ(s f),  Φ the standard normal CDF                          0 or 1
``StudentT(df, scale)`` 4     log Γ((ν+1)/2) − log Γ(ν/2) − ½ log(νπ s²)                       real
                              − (ν+1)/2 · log(1 + (y − f)² / (ν s²))
======================  ====  ==============================================================  ==============
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from .._validate import as_float_array, check_choice, check_random_state, check_scalar

__all__ = ["Bernoulli", "Gaussian", "Likelihood", "Poisson", "StudentT"]

# Kernel codes (shared with avicore/kernels/quadrature.py, src_cython/quadrature.pyx and the CUDA kernel).
CODE_GAUSSIAN = 0
CODE_POISSON = 1
CODE_BERNOULLI_LOGIT = 2
CODE_BERNOULLI_PROBIT = 3
CODE_STUDENT_T = 4
#: Length of the float64 parameter vector every kernel receives.
N_KERNEL_PARAMS = 4

_LOG_2PI = math.log(2.0 * math.pi)


class Likelihood(ABC):
    """Base class of the observation models p(y | f) of a latent Gaussian model."""

    _code: int
    #: Names of the log-scale parameters in :attr:`params` order.
    param_names: tuple[str, ...] = ()

    @property
    def params(self) -> np.ndarray:
        """The likelihood's parameters on a log scale (float64, possibly empty)."""
        return np.zeros(0)

    def with_params(self, params: object) -> Likelihood:
        """A copy of the likelihood with the log-scale parameters ``params`` (see :attr:`param_names`)."""
        vec = _check_param_vector(params, len(self.param_names))
        return self._from_log_params(vec)

    def _from_log_params(self, vec: np.ndarray) -> Likelihood:
        return self

    def _kernel_params(self) -> np.ndarray:
        """The float64 vector of constants the compiled kernels use for this likelihood."""
        return np.zeros(N_KERNEL_PARAMS)

    def check_y(self, y: object, name: str = "y") -> np.ndarray:
        """Check that ``y`` is a 1-D array of finite values in this likelihood's support; return it as float64.

        Raises
        ------
        TypeError
            If ``y`` is not numeric.
        ValueError
            If ``y`` is not 1-D, holds NaN/inf or a value outside the support.
        """
        arr = as_float_array(y, name, ndim=1)
        self._check_support(arr, name)
        return arr

    def _check_support(self, y: np.ndarray, name: str) -> None:
        """Raise ValueError if a finite ``y`` holds a value outside the support (default: all reals)."""
        return

    def log_prob(self, y: object, f: object) -> np.ndarray:
        """log p(y | f), elementwise with NumPy broadcasting.

        Parameters
        ----------
        y : array-like
            Observations (checked against the support).
        f : array-like
            Latent function values (finite).

        Returns
        -------
        ndarray
            log p(y | f), float64, of the broadcast shape.
        """
        y_arr = _as_real(y, "y")
        self._check_support(y_arr.reshape(-1), "y")
        return self._log_prob(y_arr, _as_real(f, "f"))

    @abstractmethod
    def _log_prob(self, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        """log p(y | f) on checked float64 arrays."""

    def sample(self, f: object, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Draw y ~ p(y | f) independently for each entry of ``f``.

        Parameters
        ----------
        f : array-like
            Latent function values (finite).
        seed : int, numpy.random.Generator or None
            Source of randomness.

        Returns
        -------
        ndarray
            float64 array of the shape of ``f``.
        """
        return self._sample(_as_real(f, "f"), check_random_state(seed))

    @abstractmethod
    def _sample(self, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw y given checked ``f``."""


def _as_real(x: object, name: str) -> np.ndarray:
    """A finite float64 array of the shape of ``x`` (0-d input stays 0-d)."""
    return as_float_array(x, name).reshape(np.shape(x))


def _check_param_vector(params: object, size: int) -> np.ndarray:
    return as_float_array(params, "params", shape=(size,))


def _first_bad(bad: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    i = int(np.argmax(bad))
    return float(y[i]), i


class Gaussian(Likelihood):
    """Gaussian observation noise: y = f + ε, ε ~ N(0, noise).

    Parameters
    ----------
    noise : float
        The noise *variance* σ² (> 0). Its log is the likelihood's parameter (``param_names = ("log_noise",)``).

    Examples
    --------
    >>> from avicore.gp.likelihoods import Gaussian
    >>> float(Gaussian(1.0).log_prob(0.0, 0.0))  # -½ log 2π
    -0.9189385332046727
    """

    _code = CODE_GAUSSIAN
    param_names = ("log_noise",)

    def __init__(self, noise: float = 1.0) -> None:
        self.noise = check_scalar(noise, "noise", positive=True)

    def __repr__(self) -> str:
        return f"Gaussian(noise={self.noise!r})"

    @property
    def params(self) -> np.ndarray:
        return np.array([math.log(self.noise)])

    def _from_log_params(self, vec: np.ndarray) -> Gaussian:
        return Gaussian(float(np.exp(vec[0])))

    def _kernel_params(self) -> np.ndarray:
        return np.array([-0.5 * (_LOG_2PI + math.log(self.noise)), 1.0 / self.noise, 0.0, 0.0])

    def _log_prob(self, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        return -0.5 * (_LOG_2PI + math.log(self.noise)) - 0.5 * (y - f) ** 2 / self.noise

    def _sample(self, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return f + math.sqrt(self.noise) * rng.standard_normal(f.shape)


class Poisson(Likelihood):
    """Poisson counts with a log link: y ~ Poisson(exp(f)).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.likelihoods import Poisson
    >>> bool(np.isclose(Poisson().log_prob(2.0, 0.0), -1.0 - np.log(2.0)))
    True
    """

    _code = CODE_POISSON
    #: Largest f for which :meth:`sample` can draw (numpy's Poisson sampler needs a rate below ~1e19).
    _MAX_SAMPLE_F = 40.0

    def __repr__(self) -> str:
        return "Poisson()"

    def _check_support(self, y: np.ndarray, name: str) -> None:
        bad = (y < 0) | (y != np.floor(y))
        if bad.any():
            value, i = _first_bad(bad, y)
            raise ValueError(f"{name} must contain non-negative integers (counts) for a Poisson likelihood; "
                             f"got {value!r} at index {i}.")

    def _log_prob(self, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        from scipy.special import gammaln

        with np.errstate(over="ignore"):
            return y * f - np.exp(f) - gammaln(y + 1.0)

    def _sample(self, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if f.size and f.max() > self._MAX_SAMPLE_F:
            raise ValueError(f"f must be <= {self._MAX_SAMPLE_F} to draw Poisson counts (rate exp(f) < 2.4e17); "
                             f"got max(f)={float(f.max())!r}.")
        return rng.poisson(np.exp(f)).astype(np.float64)


class Bernoulli(Likelihood):
    """Binary observations y ∈ {0, 1} with P(y = 1 | f) = σ(f) (``"logit"``) or Φ(f) (``"probit"``).

    Parameters
    ----------
    link : {"logit", "probit"}
        The inverse link: the logistic function or the standard normal CDF.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.likelihoods import Bernoulli
    >>> bool(np.isclose(Bernoulli("probit").log_prob(1.0, 0.0), np.log(0.5)))
    True
    """

    LINKS = ("logit", "probit")

    def __init__(self, link: str = "logit") -> None:
        self.link = check_choice(link, "link", self.LINKS)
        self._code = CODE_BERNOULLI_LOGIT if self.link == "logit" else CODE_BERNOULLI_PROBIT

    def __repr__(self) -> str:
        return f"Bernoulli(link={self.link!r})"

    def _check_support(self, y: np.ndarray, name: str) -> None:
        bad = (y != 0.0) & (y != 1.0)
        if bad.any():
            value, i = _first_bad(bad, y)
            raise ValueError(f"{name} must contain only 0 and 1 for a Bernoulli likelihood; got {value!r} at "
                             f"index {i}.")

    def _log_prob(self, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        from scipy.special import log_expit, log_ndtr

        u = (2.0 * y - 1.0) * f
        return log_expit(u) if self.link == "logit" else log_ndtr(u)

    def _sample(self, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy.special import expit, ndtr

        p = expit(f) if self.link == "logit" else ndtr(f)
        return (rng.random(f.shape) < p).astype(np.float64)


_TINY = float(np.finfo(np.float64).tiny)
_HUGE = float(np.finfo(np.float64).max)


class StudentT(Likelihood):
    """Heavy-tailed observation noise: y = f + scale · t_ν.

    Parameters
    ----------
    df : float
        Degrees of freedom ν (> 0).
    scale : float
        Scale s (> 0). The parameters on a log scale are ``("log_df", "log_scale")``.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import stats
    >>> from avicore.gp.likelihoods import StudentT
    >>> bool(np.isclose(StudentT(3.0, 0.5).log_prob(1.0, 0.2), stats.t.logpdf(1.0, 3.0, loc=0.2, scale=0.5)))
    True
    """

    _code = CODE_STUDENT_T
    param_names = ("log_df", "log_scale")

    def __init__(self, df: float = 4.0, scale: float = 1.0) -> None:
        self.df = check_scalar(df, "df", positive=True)
        self.scale = check_scalar(scale, "scale", positive=True)
        a = self.df * self.scale * self.scale  # the kernels divide by ν s²: it must be a normal, finite float
        if not _TINY <= a < math.inf:
            raise ValueError(f"scale must give df * scale**2 in [{_TINY!r}, {_HUGE!r}]; got df={self.df!r}, "
                             f"scale={self.scale!r} (df * scale**2 = {a!r}).")

    def __repr__(self) -> str:
        return f"StudentT(df={self.df!r}, scale={self.scale!r})"

    @property
    def params(self) -> np.ndarray:
        return np.log([self.df, self.scale])

    def _from_log_params(self, vec: np.ndarray) -> StudentT:
        return StudentT(float(np.exp(vec[0])), float(np.exp(vec[1])))

    def _log_norm(self) -> float:
        nu = self.df
        return (math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu)
                - 0.5 * (math.log(nu * math.pi) + 2.0 * math.log(self.scale)))

    def _kernel_params(self) -> np.ndarray:
        return np.array([self._log_norm(), self.df * self.scale**2, self.df + 1.0, 0.0])

    def _log_prob(self, y: np.ndarray, f: np.ndarray) -> np.ndarray:
        r = y - f
        return self._log_norm() - 0.5 * (self.df + 1.0) * np.log1p(r * r / (self.df * self.scale**2))

    def _sample(self, f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return f + self.scale * rng.standard_t(self.df, size=f.shape)
