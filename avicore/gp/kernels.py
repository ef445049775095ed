"""Covariance functions for Gaussian processes, with hyperparameters on a log scale and Gram-matrix gradients.

Every kernel exposes a flat parameter vector of *log* hyperparameters (``params``, named by ``param_names``),
``with_params(vec)`` to rebuild it from such a vector, ``k(X, Y=None)`` for the Gram matrix, and
``gram_and_grads(X)`` for the Gram matrix and its derivatives with respect to each log-hyperparameter. Sums and
products (``k1 + k2``, ``k1 * k2``) concatenate their parameter vectors, left operand first.

Stationary kernels, with r² = Σ_d (x_d − y_d)² / ℓ_d² (one lengthscale, or one per input dimension: ARD)::

    RBF       σ² exp(−r²/2)
    Matern12  σ² exp(−r)
    Matern32  σ² (1 + √3 r) exp(−√3 r)
    Matern52  σ² (1 + √5 r + 5r²/3) exp(−√5 r)
    Periodic  σ² exp(−2 Σ_d sin²(π |x_d − y_d| / p) / ℓ²)          (MacKay; GPyTorch's convention; sklearn's
                                                                     ExpSineSquared only in 1-D, see Periodic)

Inputs are 1-D arrays (one input dimension) or (n, D) arrays.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from .._validate import as_float_array, check_scalar

__all__ = ["RBF", "Kernel", "Matern12", "Matern32", "Matern52", "Periodic", "Product", "Sum"]

_SQRT3 = math.sqrt(3.0)
_SQRT5 = math.sqrt(5.0)


def _as_inputs(X: object, name: str) -> np.ndarray:
    """A (n, D) float64 array from 1-D or 2-D input; finite values, at least one row and one column."""
    arr = as_float_array(X, name)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-dimensional or 2-dimensional (n, n_features); got shape {arr.shape}.")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one point with at least one feature; got shape {arr.shape}.")
    return arr


def _positive_vector(value: object, name: str) -> np.ndarray:
    """A positive finite scalar or 1-D vector, as a 1-D float64 array."""
    arr = as_float_array(value, name)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a positive number or a non-empty 1-D array of them; got shape "
                         f"{arr.shape}.")
    if (arr <= 0).any():
        i = int(np.argmax(arr <= 0))
        raise ValueError(f"{name} must be > 0; got {float(arr[i])!r} at index {i}.")
    return arr


class Kernel(ABC):
    """Base class: a covariance function with log-scale hyperparameters."""

    @property
    @abstractmethod
    def param_names(self) -> tuple[str, ...]:
        """Names of the entries of :attr:`params`."""

    @property
    @abstractmethod
    def params(self) -> np.ndarray:
        """The log-hyperparameters, float64 of shape (n_params,)."""

    @property
    def n_params(self) -> int:
        """Number of log-hyperparameters."""
        return len(self.param_names)

    def with_params(self, params: object) -> Kernel:
        """A kernel of the same structure with log-hyperparameters ``params`` (shape (n_params,))."""
        vec = as_float_array(params, "params", shape=(self.n_params,))
        return self._with_params(vec)

    @abstractmethod
    def _with_params(self, vec: np.ndarray) -> Kernel:
        """Rebuild from a checked vector."""

    def _check_dims(self, X: np.ndarray, name: str) -> None:
        """Hook for kernels whose hyperparameters fix the input dimension (ARD)."""
        return

    def _inputs(self, X: object, Y: object | None) -> tuple[np.ndarray, np.ndarray]:
        Xa = _as_inputs(X, "X")
        self._check_dims(Xa, "X")
        if Y is None:
            return Xa, Xa
        Ya = _as_inputs(Y, "Y")
        if Ya.shape[1] != Xa.shape[1]:
            raise ValueError(f"Y must have the {Xa.shape[1]} feature(s) of X; got shape {Ya.shape}.")
        return Xa, Ya

    def __call__(self, X: object, Y: object | None = None) -> np.ndarray:
        """The Gram matrix k(X, Y) (k(X, X) when ``Y`` is None).

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_features)
        Y : array-like of shape (m,) or (m, n_features), optional

        Returns
        -------
        ndarray of shape (n, m)
        """
        Xa, Ya = self._inputs(X, Y)
        return self._gram(Xa, Ya)

    def gram_and_grads(self, X: object) -> tuple[np.ndarray, np.ndarray]:
        """The Gram matrix k(X, X) and its derivatives with respect to each log-hyperparameter.

        Parameters
        ----------
        X : array-like of shape (n,) or (n, n_features)

        Returns
        -------
        K : ndarray of shape (n, n)
        dK : ndarray of shape (n_params, n, n)
            ``dK[i] = ∂K / ∂params[i]``.
        """
        Xa, _ = self._inputs(X, None)
        return self._gram_and_grads(Xa)

    def diag(self, X: object) -> np.ndarray:
        """The diagonal of k(X, X), shape (n,)."""
        Xa, _ = self._inputs(X, None)
        return self._diag(Xa)

    @abstractmethod
    def _gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _gram_and_grads(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _diag(self, X: np.ndarray) -> np.ndarray: ...

    def __add__(self, other: object) -> Kernel:
        if not isinstance(other, Kernel):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, other: object) -> Kernel:
        if not isinstance(other, Kernel):
            return NotImplemented
        return Product(self, other)


class _Stationary(Kernel):
    """σ² κ(r²) with r² = Σ_d (x_d − y_d)² / ℓ_d²; subclasses give κ and ψ = −2 dκ/d(r²)."""

    def __init__(self, variance: float = 1.0, lengthscale: float | np.ndarray = 1.0) -> None:
        self.variance = check_scalar(variance, "variance", positive=True)
        ls = _positive_vector(lengthscale, "lengthscale")
        self._ard = np.ndim(lengthscale) > 0
        self.lengthscale = ls if self._ard else float(ls[0])

    def __repr__(self) -> str:
        ls = np.array2string(self.lengthscale, precision=6) if self._ard else repr(self.lengthscale)
        return f"{type(self).__name__}(variance={self.variance!r}, lengthscale={ls})"

    @property
    def _ls(self) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.lengthscale, dtype=np.float64))

    @property
    def param_names(self) -> tuple[str, ...]:
        if self._ard:
            return ("log_variance", *(f"log_lengthscale[{d}]" for d in range(self._ls.size)))
        return ("log_variance", "log_lengthscale")

    @property
    def params(self) -> np.ndarray:
        return np.concatenate([[math.log(self.variance)], np.log(self._ls)])

    def _with_params(self, vec: np.ndarray) -> Kernel:
        ls = np.exp(vec[1:]) if self._ard else float(np.exp(vec[1]))
        return type(self)(float(np.exp(vec[0])), ls)

    def _check_dims(self, X: np.ndarray, name: str) -> None:
        if self._ard and X.shape[1] != self._ls.size:
            raise ValueError(f"{name} must have {self._ls.size} feature(s), one per lengthscale; got shape "
                             f"{X.shape}.")

    def _scaled_sq(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Per-dimension (x_d − y_d)² / ℓ_d², shape (D, n, m), from direct differences (exact symmetry)."""
        ls = self._ls if self._ard else np.full(X.shape[1], self.lengthscale)
        diff = (X.T[:, :, None] - Y.T[:, None, :]) / ls[:, None, None]
        return diff * diff

    @abstractmethod
    def _kappa(self, r2: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _psi(self, r2: np.ndarray) -> np.ndarray: ...

    def _gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return self.variance * self._kappa(self._scaled_sq(X, Y).sum(axis=0))

    def _gram_and_grads(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sq = self._scaled_sq(X, X)
        r2 = sq.sum(axis=0)
        K = self.variance * self._kappa(r2)
        scaled_psi = self.variance * self._psi(r2)
        if self._ard:
            d_ls = scaled_psi[None] * sq                # ∂K/∂log ℓ_d = σ² ψ(r²) (x_d − y_d)²/ℓ_d²
        else:
            d_ls = (scaled_psi * r2)[None]
        return K, np.concatenate([K[None], d_ls])

    def _diag(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[0], self.variance * float(self._kappa(np.zeros(1))[0]))


class RBF(_Stationary):
    """Squared-exponential kernel σ² exp(−r²/2).

    Parameters
    ----------
    variance : float
        σ² > 0.
    lengthscale : float or array-like of shape (n_features,)
        ℓ > 0; an array gives one lengthscale per input dimension (ARD).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import RBF
    >>> K = RBF(variance=2.0, lengthscale=0.5)([0.0, 0.5])
    >>> bool(np.isclose(K[0, 1], 2.0 * np.exp(-0.5)))
    True
    """

    def _kappa(self, r2: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * r2)

    def _psi(self, r2: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * r2)


class Matern12(_Stationary):
    """Matérn ν = 1/2 (exponential, Ornstein–Uhlenbeck) kernel σ² exp(−r).

    Parameters are those of :class:`RBF`.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import Matern12
    >>> bool(np.isclose(Matern12(lengthscale=2.0)([0.0, 1.0])[0, 1], np.exp(-0.5)))
    True
    """

    def _kappa(self, r2: np.ndarray) -> np.ndarray:
        return np.exp(-np.sqrt(r2))

    def _psi(self, r2: np.ndarray) -> np.ndarray:
        # ψ = exp(−r)/r; at r = 0 it multiplies a zero ((x_d − y_d)² = 0), so 0 is returned there.
        r = np.sqrt(r2)
        out = np.zeros_like(r)
        pos = r > 0
        out[pos] = np.exp(-r[pos]) / r[pos]
        return out


class Matern32(_Stationary):
    """Matérn ν = 3/2 kernel σ² (1 + √3 r) exp(−√3 r).

    Parameters are those of :class:`RBF`.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import Matern32
    >>> r = np.sqrt(3.0)
    >>> bool(np.isclose(Matern32()([0.0, 1.0])[0, 1], (1 + r) * np.exp(-r)))
    True
    """

    def _kappa(self, r2: np.ndarray) -> np.ndarray:
        t = _SQRT3 * np.sqrt(r2)
        return (1.0 + t) * np.exp(-t)

    def _psi(self, r2: np.ndarray) -> np.ndarray:
        return 3.0 * np.exp(-_SQRT3 * np.sqrt(r2))


class Matern52(_Stationary):
    """Matérn ν = 5/2 kernel σ² (1 + √5 r + 5r²/3) exp(−√5 r).

    Parameters are those of :class:`RBF`.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import Matern52
    >>> r = np.sqrt(5.0)
    >>> bool(np.isclose(Matern52()([0.0, 1.0])[0, 1], (1 + r + 5 / 3) * np.exp(-r)))
    True
    """

    def _kappa(self, r2: np.ndarray) -> np.ndarray:
        t = _SQRT5 * np.sqrt(r2)
        return (1.0 + t + (5.0 / 3.0) * r2) * np.exp(-t)

    def _psi(self, r2: np.ndarray) -> np.ndarray:
        t = _SQRT5 * np.sqrt(r2)
        return (5.0 / 3.0) * (1.0 + t) * np.exp(-t)


class Periodic(Kernel):
    """Periodic (exp-sine-squared) kernel σ² exp(−2 Σ_d sin²(π |x_d − y_d| / p) / ℓ²).

    Parameters
    ----------
    variance : float
        σ² > 0.
    lengthscale : float
        ℓ > 0.
    period : float
        p > 0. The log-hyperparameters are ``("log_variance", "log_lengthscale", "log_period")``.

    Notes
    -----
    With D > 1 input dimensions the sin² terms are summed over the dimensions (a product of 1-D periodic kernels,
    as GPyTorch's ``PeriodicKernel``). scikit-learn's ``ExpSineSquared`` instead takes sin² of the Euclidean
    distance, σ² exp(−2 sin²(π ‖x − y‖ / p) / ℓ²): the two agree only for 1-D inputs.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import Periodic
    >>> K = Periodic(period=2.0)([0.0, 2.0, 1.0])
    >>> bool(np.isclose(K[0, 1], 1.0)), bool(np.isclose(K[0, 2], np.exp(-2.0)))
    (True, True)
    """

    param_names = ("log_variance", "log_lengthscale", "log_period")

    def __init__(self, variance: float = 1.0, lengthscale: float = 1.0, period: float = 1.0) -> None:
        self.variance = check_scalar(variance, "variance", positive=True)
        self.lengthscale = check_scalar(lengthscale, "lengthscale", positive=True)
        self.period = check_scalar(period, "period", positive=True)

    def __repr__(self) -> str:
        return f"Periodic(variance={self.variance!r}, lengthscale={self.lengthscale!r}, period={self.period!r})"

    @property
    def params(self) -> np.ndarray:
        return np.log([self.variance, self.lengthscale, self.period])

    def _with_params(self, vec: np.ndarray) -> Kernel:
        v, ls, p = np.exp(vec)
        return Periodic(float(v), float(ls), float(p))

    def _phase(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """π (x_d − y_d) / p, shape (D, n, m)."""
        return (math.pi / self.period) * (X.T[:, :, None] - Y.T[:, None, :])

    def _gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        s = np.sin(self._phase(X, Y))
        return self.variance * np.exp(-2.0 * (s * s).sum(axis=0) / self.lengthscale**2)

    def _gram_and_grads(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        phase = self._phase(X, X)
        s = np.sin(phase)
        S = (s * s).sum(axis=0)
        inv_l2 = 1.0 / self.lengthscale**2
        K = self.variance * np.exp(-2.0 * S * inv_l2)
        d_ls = K * (4.0 * S * inv_l2)
        # ∂S/∂log p = −Σ_d phase_d sin(2 phase_d)
        d_p = K * (2.0 * inv_l2) * (phase * np.sin(2.0 * phase)).sum(axis=0)
        return K, np.stack([K, d_ls, d_p])

    def _diag(self, X: np.ndarray) -> np.ndarray:
        return np.full(X.shape[0], self.variance)


class _Combination(Kernel):
    def __init__(self, left: Kernel, right: Kernel) -> None:
        for name, k in (("left", left), ("right", right)):
            if not isinstance(k, Kernel):
                raise TypeError(f"{name} must be an avicore.gp.kernels.Kernel; got {type(k).__name__}.")
        self.left = left
        self.right = right

    @property
    def param_names(self) -> tuple[str, ...]:
        return (*(f"left.{n}" for n in self.left.param_names), *(f"right.{n}" for n in self.right.param_names))

    @property
    def params(self) -> np.ndarray:
        return np.concatenate([self.left.params, self.right.params])

    def _with_params(self, vec: np.ndarray) -> Kernel:
        k = self.left.n_params
        return type(self)(self.left._with_params(vec[:k]), self.right._with_params(vec[k:]))

    def _check_dims(self, X: np.ndarray, name: str) -> None:
        self.left._check_dims(X, name)
        self.right._check_dims(X, name)


class Sum(_Combination):
    """k₁ + k₂ (also written ``k1 + k2``); parameters: those of k₁ then those of k₂.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import RBF, Matern12
    >>> k = RBF() + Matern12()
    >>> k.param_names
    ('left.log_variance', 'left.log_lengthscale', 'right.log_variance', 'right.log_lengthscale')
    >>> bool(np.allclose(k([0.0, 1.0]), RBF()([0.0, 1.0]) + Matern12()([0.0, 1.0])))
    True
    """

    def __repr__(self) -> str:
        return f"({self.left!r} + {self.right!r})"

    def _gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return self.left._gram(X, Y) + self.right._gram(X, Y)

    def _gram_and_grads(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K1, d1 = self.left._gram_and_grads(X)
        K2, d2 = self.right._gram_and_grads(X)
        return K1 + K2, np.concatenate([d1, d2])

    def _diag(self, X: np.ndarray) -> np.ndarray:
        return self.left._diag(X) + self.right._diag(X)


class Product(_Combination):
    """k₁ · k₂ (also written ``k1 * k2``), elementwise; parameters: those of k₁ then those of k₂.

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.gp.kernels import RBF, Periodic
    >>> k = RBF(lengthscale=10.0) * Periodic(period=1.0)   # a locally periodic kernel
    >>> k.n_params
    5
    >>> bool(np.allclose(k([0.0, 1.0]), RBF(lengthscale=10.0)([0.0, 1.0]) * Periodic()([0.0, 1.0])))
    True
    """

    def __repr__(self) -> str:
        return f"({self.left!r} * {self.right!r})"

    def _gram(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return self.left._gram(X, Y) * self.right._gram(X, Y)

    def _gram_and_grads(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K1, d1 = self.left._gram_and_grads(X)
        K2, d2 = self.right._gram_and_grads(X)
        return K1 * K2, np.concatenate([d1 * K2[None], K1[None] * d2])

    def _diag(self, X: np.ndarray) -> np.ndarray:
        return self.left._diag(X) * self.right._diag(X)
