"""The GP prior as the model and the solvers share it: input/kernel checks and one factorised Gram matrix.

This module sits below both :mod:`avicore.models.gaussian_process` (the model) and the solvers of :mod:`avicore.gp`
(mean field, amortized, full rank, hyperparameters), so neither imports the other for these pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .._validate import as_float_array
from ._newton import lower_matvec, lower_t_matvec
from .exact import jittered_cholesky
from .kernels import Kernel

__all__ = ["PriorFactor", "check_inputs", "check_kernel", "factorise", "fit_indices"]


def check_inputs(inputs: object) -> np.ndarray:
    """GP inputs as a C-contiguous float64 (n, input_dim) array, n ≥ 1, finite."""
    arr = as_float_array(inputs, "inputs")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"inputs must have shape (n,) or (n, input_dim) with n >= 1; got {np.shape(inputs)}.")
    return np.ascontiguousarray(arr)


def check_kernel(kernel: object) -> None:
    """A covariance function, or a TypeError naming the argument."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be an avicore.gp.Kernel such as RBF(); got {type(kernel).__name__}.")


def fit_indices(fit: object, kernel: object) -> tuple[int, ...]:
    """Positions in ``kernel.params`` of the hyperparameters ``fit`` names (True: all, False: none)."""
    names = kernel.param_names
    if isinstance(fit, (bool, np.bool_)):
        return tuple(range(len(names))) if fit else ()
    if isinstance(fit, str) or not isinstance(fit, Sequence) or any(f not in names for f in fit):
        raise ValueError(f"fit must be True, False or a sequence of names from {names}; got {fit!r}.")
    if len(set(fit)) != len(fit):
        raise ValueError(f"fit must not repeat a name; got {tuple(fit)!r}.")
    return tuple(sorted(names.index(f) for f in fit))


@dataclass(frozen=True)
class PriorFactor:
    """What the prior term needs from one Gram matrix: K, its Cholesky factor and that factor's inverse,
    diag(K⁻¹) and log|K| (all of K + jitter·I), and (when hyperparameters are fitted) ∂K/∂θ.

    :meth:`alpha` gives α = K⁻¹m; a solver that carries α along with m (:mod:`avicore.gp.mean_field`) hands it over
    by :meth:`remember`, so that the model's prior term at that m costs O(N) instead of two triangular matvecs.
    """

    kernel: object
    K: np.ndarray
    L: np.ndarray
    Linv: np.ndarray
    Kinv_diag: np.ndarray
    logdet: float
    jitter: float
    dK: np.ndarray | None
    _memo: list = field(default_factory=list, repr=False, compare=False)

    def alpha(self, mean: np.ndarray) -> np.ndarray:
        """K⁻¹ mean: the remembered α when ``mean`` equals the remembered mean, 0 for mean 0, else L⁻ᵀ(L⁻¹ mean) by
        two triangular matvecs (BLAS trmv reads only the triangle: N² numbers)."""
        memo = self._memo
        if memo and memo[0].shape == mean.shape and np.array_equal(memo[0], mean):
            return memo[1]
        if not mean.any():  # the engines' start, m = 0
            return np.zeros_like(mean, dtype=np.float64)
        return lower_t_matvec(self.Linv, lower_matvec(self.Linv, mean))

    def remember(self, mean: np.ndarray, alpha: np.ndarray) -> None:
        """Store α = K⁻¹mean (computed by a solver) for :meth:`alpha`; copies ``mean``."""
        self._memo[:] = [np.array(mean, dtype=np.float64, copy=True), alpha]


def factorise(kernel: object, inputs: np.ndarray, with_grads: bool) -> PriorFactor:
    """The :class:`PriorFactor` of ``kernel`` at ``inputs`` (jitter escalated as needed, see
    :func:`avicore.gp.jittered_cholesky`); with ``with_grads`` also ∂K/∂θ."""
    K, dK = kernel.gram_and_grads(inputs) if with_grads else (kernel(inputs), None)
    L, jitter = jittered_cholesky(K, name="K")
    Linv = np.linalg.inv(L)  # triangular inverse, N² memory
    return PriorFactor(kernel, K, L, Linv, np.einsum("ij,ij->j", Linv, Linv), 2.0 * float(np.log(np.diag(L)).sum()),
                       jitter, dK)
