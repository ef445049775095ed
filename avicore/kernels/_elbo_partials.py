"""The fused ELBO pass's partial sums, added in a fixed order: shared by the CPU dispatcher
(:mod:`avicore.kernels.elbo`) and the CUDA pass (:mod:`avicore.kernels._elbo_cuda`), one floor below both.
"""

from __future__ import annotations

import numpy as np

from ..models.base import LocalTerms


def reduce_partials(part: np.ndarray, n_samples: int, n_global: int, grad_mean: np.ndarray,
                    grad_log_scale: np.ndarray, out: LocalTerms | None = None) -> LocalTerms:
    """Add the per-chunk (or per-block) partial sums in chunk order (NumPy's axis-0 reduction) → LocalTerms.

    ``part`` rows hold [log_joint (S) | grad_global (S·G) | padding].
    """
    sums = part[:, :n_samples * (1 + n_global)].sum(axis=0)
    log_joint, grad_global = sums[:n_samples], sums[n_samples:].reshape(n_samples, n_global)
    if out is None:
        return LocalTerms(log_joint=log_joint, grad_mean=grad_mean, grad_log_scale=grad_log_scale,
                          grad_global=grad_global)
    out.log_joint[...] = log_joint
    out.grad_global[...] = grad_global
    return out
