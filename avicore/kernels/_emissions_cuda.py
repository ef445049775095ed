"""CUDA emission log-likelihoods for device-array input (:mod:`avicore.emissions`): one thread per output entry.

Thread ``i`` of a grid-stride launch owns ``out[t, k]`` with ``i = t * K + k``, so the writes of a warp are
contiguous and its reads of ``x[t]`` are broadcasts; the per-state parameters (K × d, small) stay in cache.
The formulas are the host ones of :mod:`avicore.emissions` term for term (Gaussian with a full covariance: the
host factors each covariance once, the device applies ``L_k⁻¹`` by a dot product per row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _config, _device

cuda = _device.cuda()  # a module global: the CUDA simulator swaps it while a kernel of this module runs


@cuda.jit(device=True)
def _gaussian_diag_entry(x, t, k, mu_t, half_prec_t, const):
    # const[k] - sum_d (x[t, d] - mu_t[d, k])^2 * half_prec_t[d, k]
    acc = 0.0
    for d in range(x.shape[1]):
        r = x[t, d] - mu_t[d, k]
        acc += r * r * half_prec_t[d, k]
    return const[k] - acc


@cuda.jit(device=True)
def _gaussian_full_entry(x, t, k, mu, chol_inv, const):
    # const[k] - 0.5 * || chol_inv[k] (x[t] - mu[k]) ||^2, chol_inv[k] lower triangular
    acc = 0.0
    for a in range(x.shape[1]):
        z = 0.0
        for b in range(a + 1):
            z += chol_inv[k, a, b] * (x[t, b] - mu[k, b])
        acc += z * z
    return const[k] - 0.5 * acc


@cuda.jit(device=True)
def _categorical_entry(symbols, t, k, log_b, unused1, unused2):
    # log_b[k, symbols[t]]
    return log_b[k, symbols[t]]


@cuda.jit(device=True)
def _poisson_entry(x, t, k, log_rates, rate_sums, unused):
    # sum_d x[t, d] log_rates[k, d] - rate_sums[k] - sum_d lgamma(x[t, d] + 1)
    acc = 0.0
    for d in range(x.shape[1]):
        acc += x[t, d] * log_rates[k, d]
    acc -= rate_sums[k]
    lf = 0.0
    for d in range(x.shape[1]):
        lf += math.lgamma(x[t, d] + 1.0)
    return acc - lf


def _entry_kernel(entry: Any) -> Any:
    """A grid-stride kernel writing ``out[t, k] = entry(x, t, k, p0, p1, p2)``, thread ``i`` owning
    ``i = t * K + k``."""

    @cuda.jit
    def kernel(x, p0, p1, p2, out):
        T, K = out.shape
        i = cuda.grid(1)
        while i < T * K:
            t = i // K
            k = i - t * K
            out[t, k] = entry(x, t, k, p0, p1, p2)
            i += cuda.gridsize(1)

    return kernel


_KERNELS = {name: _entry_kernel(fn) for name, fn in (
    ("gaussian_diag", _gaussian_diag_entry), ("gaussian_full", _gaussian_full_entry),
    ("categorical", _categorical_entry), ("poisson", _poisson_entry))}


def _launch(kernel: Any, n_items: int, *args: Any) -> None:
    threads = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    blocks = max(1, min(-(-n_items // threads), 65535))
    kernel[blocks, threads](*args)


def _run(kind: str, x: Any, n_states: int, params: dict[str, np.ndarray]) -> Any:
    """Launch the ``kind`` kernel over an (n_samples, n_states) output with the (at most three) host parameters
    ``params`` uploaded to the workspace; return the output (a fresh device array of the documented kind)."""
    ws = _device.workspace()
    out_user, out = _device.new_array((x.shape[0], n_states), np.float64)
    dev = [ws.put(f"emissions.{name}", np.ascontiguousarray(value)) for name, value in params.items()]
    dev += [dev[0]] * (3 - len(dev))
    _launch(_KERNELS[kind], x.shape[0] * n_states, x, *dev, out)
    return out_user


def gaussian_diag(x: Any, mu: np.ndarray, half_prec: np.ndarray, const: np.ndarray) -> Any:
    """Diagonal Gaussian log-densities of the (n, d) device array ``x``."""
    return _run("gaussian_diag", x, mu.shape[0], {"mu_t": mu.T, "half_prec_t": half_prec.T, "const": const})


def gaussian_full(x: Any, mu: np.ndarray, chol_inv: np.ndarray, const: np.ndarray) -> Any:
    """Full-covariance Gaussian log-densities of the (n, d) device array ``x``."""
    return _run("gaussian_full", x, mu.shape[0], {"mu": mu, "chol_inv": chol_inv, "const": const})


def categorical(symbols: Any, log_b: np.ndarray) -> Any:
    """Categorical log-probabilities of the (n,) integer device array ``symbols``."""
    return _run("categorical", symbols, log_b.shape[0], {"log_b": log_b})


def poisson(x: Any, log_rates: np.ndarray, rate_sums: np.ndarray) -> Any:
    """Poisson log-probabilities of the (n, d) device array of counts ``x``."""
    return _run("poisson", x, log_rates.shape[0], {"log_rates": log_rates, "rate_sums": rate_sums})
