"""Gaussian-process building blocks: covariance functions, likelihoods and exact Gaussian-likelihood references.

- :mod:`avicore.gp.kernels`: ``RBF``, ``Matern12``, ``Matern32``, ``Matern52``, ``Periodic``, sums and products,
  with log-scale hyperparameters and Gram-matrix gradients.
- :mod:`avicore.gp.likelihoods`: ``Gaussian``, ``Poisson``, ``Bernoulli``, ``StudentT``.
- :mod:`avicore.gp.full_rank`: ``FullRankVI``, the full-covariance Gaussian family (reference for F-VI).
- :mod:`avicore.gp.mean_field`: the mean-field fixed point / Newton iteration that :class:`avicore.FVI` runs on the
  locals of a GP model (any kernel, however ill-conditioned; O(N²) an iteration by preconditioned conjugate
  gradients, :mod:`avicore.gp._pcg`); :mod:`avicore.gp.amortized`: Gauss–Newton steps on encoders for
  :class:`avicore.AVI` (exact for Constant and Polynomial, Levenberg–Marquardt ones for MLPs).
- :mod:`avicore.gp.prior`: input and kernel checks and the factorised Gram matrix, shared by the model
  (:class:`avicore.models.GaussianProcess`) and the solvers here, one floor below both.
- :mod:`avicore.gp.exact`: posterior, log marginal likelihood and the mean-field optimum for a Gaussian
  likelihood; a Cholesky factorisation with jitter escalation.
- :mod:`avicore.gp.hyperparameters`: ``fit_marginal_likelihood``, hyperparameters by exact type-II maximum
  likelihood (Gaussian likelihood; other likelihoods fit theirs through the ELBO, ``GaussianProcess(..., fit=True)``).

Expected log-likelihoods under Gaussian factors are in :func:`avicore.quadrature.expected_log_lik`.
"""

from __future__ import annotations

from .exact import (
    CholeskyError,
    JitterWarning,
    MeanFieldOptimum,
    Posterior,
    gaussian_elbo,
    jittered_cholesky,
    log_marginal_likelihood,
    log_marginal_likelihood_grad,
    mean_field_optimum,
    posterior,
)
from .full_rank import FullRankResult, FullRankVI
from .hyperparameters import MarginalLikelihoodFit, fit_marginal_likelihood
from .kernels import RBF, Kernel, Matern12, Matern32, Matern52, Periodic, Product, Sum
from .likelihoods import Bernoulli, Gaussian, Likelihood, Poisson, StudentT

__all__ = [
    "RBF", "Bernoulli", "CholeskyError", "FullRankResult", "FullRankVI", "Gaussian", "JitterWarning", "Kernel",
    "Likelihood", "MarginalLikelihoodFit", "Matern12",
    "Matern32", "Matern52", "MeanFieldOptimum", "Periodic", "Poisson", "Posterior", "Product", "StudentT", "Sum",
    "fit_marginal_likelihood", "gaussian_elbo", "jittered_cholesky", "log_marginal_likelihood",
    "log_marginal_likelihood_grad", "mean_field_optimum", "posterior",
]
