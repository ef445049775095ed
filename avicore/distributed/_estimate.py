"""ELBO estimates of a fitted q over a dask x, chunk by chunk (``elbo_estimate``, ``amortization_gap``)."""

from __future__ import annotations

from typing import Any

import numpy as np


def sample_values_dask(model: Any, x: Any, local_mean: Any, local_log_sd: Any, global_mean: np.ndarray,
                       global_log_sd: np.ndarray, *, n_samples: int, seed: int,
                       backend: str) -> tuple[np.ndarray, float]:
    """:func:`avicore.diagnostics.sample_values` for a dask ``x`` (locals dask or NumPy, aligned with x's rows):
    each chunk's sums where it lives, added in chunk order (the noise is keyed by the rows' global indices)."""
    import dask
    import dask.array as da

    from ..diagnostics import estimate_entropy

    if x.ndim == 1:
        x = x[:, None]
    x = x.rechunk({1: -1})
    rows = x.chunks[0]
    mean = da.asarray(local_mean).rechunk((rows, -1))
    log_sd = da.asarray(local_log_sd).rechunk((rows, -1))
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    parts = dask.compute(*[
        dask.delayed(_chunk_sums)(model, xb, mb, lb, global_mean, global_log_sd, n_samples, seed, backend, int(s))
        for xb, mb, lb, s in zip(x.to_delayed().ravel(), mean.to_delayed().ravel(), log_sd.to_delayed().ravel(),
                                 starts)])
    log_joint = np.array(parts[0][1], copy=True)
    sum_log_sd = parts[0][2]
    for p in parts[1:]:
        log_joint += p[1]
        sum_log_sd += p[2]
    entropy = estimate_entropy(sum_log_sd, x.shape[0] * model.latent_dim, global_log_sd)
    return parts[0][0] + log_joint + entropy, entropy


def _chunk_sums(model: Any, x: np.ndarray, mean: np.ndarray, log_sd: np.ndarray, global_mean: np.ndarray,
                global_log_sd: np.ndarray, n_samples: int, seed: int, backend: str,
                start: int) -> tuple[np.ndarray, np.ndarray, float]:
    from .._config import serial_blas
    from ..diagnostics import sample_log_joint

    xa = model.validate_data(x)
    with serial_blas(), np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        log_prior, log_joint = sample_log_joint(model, xa, np.ascontiguousarray(mean), np.ascontiguousarray(log_sd),
                                                global_mean, global_log_sd, n_samples=n_samples, seed=seed,
                                                backend=backend, index=np.arange(start, start + xa.shape[0]))
    return log_prior, log_joint, float(np.sum(log_sd))
