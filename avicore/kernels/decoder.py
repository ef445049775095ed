"""Elementwise kernels of the Bayesian MLP decoder's batched forward/backward pass (NumPy reference and Numba).

The decoder's matrix products go to BLAS (``numpy.matmul``) on every backend; what is left between them is
elementwise: the reparameterised draw of the latents zₙ⁽ˢ⁾ = mₙ + exp(log sₙ) ⊙ ε[n, s] (ε from the counter-based
generator, so both backends see the same noise), the hidden activations, their derivatives multiplied into the
back-propagated gradient, and the Gaussian residual. The Numba versions fuse each of these into one pass in place
(no temporaries); the NumPy versions are the readable reference the tests compare against.

The Numba kernels are deliberately serial: they sit between BLAS calls whose threads spin-wait after each product,
and a parallel region woken there fights them for the cores (measured on 2 cores: a parallel leaky ReLU over a
100 × 256 block after a matmul took 8.9 ms, the serial one 0.05 ms). The parallelism is in BLAS.

Activations are identified by an integer code (:data:`ACTIVATION_CODES`); the derivative is evaluated from the
activation's *output* h (relu: 1[h > 0]; leaky relu: 1 or :data:`LEAKY_SLOPE`; tanh: 1 − h²), so the forward pass
keeps only the hidden outputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._counter_normal import STREAM_LOCAL, local_normals, normal_nb, row_key_nb, stream_key

#: Activation names → kernel codes.
ACTIVATION_CODES = {"relu": 0, "leaky_relu": 1, "tanh": 2}
#: Slope of the leaky ReLU for negative inputs (PyTorch's default).
LEAKY_SLOPE = 0.01


# ---------------------------------------------------------------------------------------------------------------
# NumPy reference
# ---------------------------------------------------------------------------------------------------------------

def draw_latents_numpy(seed: int, step: int, index: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                       n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(z, ε) of shape (n_samples, batch, latent_dim): z[s] = mean + exp(log_scale) ⊙ ε[s]."""
    eps = np.ascontiguousarray(local_normals(seed, step, index, n_samples, mean.shape[1]).transpose(1, 0, 2))
    return mean + np.exp(log_scale) * eps, eps


def activation_numpy(h: np.ndarray, code: int) -> None:
    """h ← activation(h), in place."""
    if code == 0:
        np.maximum(h, 0.0, out=h)
    elif code == 1:
        np.maximum(h, LEAKY_SLOPE * h, out=h)
    else:
        np.tanh(h, out=h)


def activation_grad_numpy(g: np.ndarray, h: np.ndarray, code: int) -> None:
    """g ← g ⊙ activation'(a), in place, from the activation's output h = activation(a)."""
    if code == 0:
        g *= h > 0.0
    elif code == 1:
        g *= np.where(h > 0.0, 1.0, LEAKY_SLOPE)
    else:
        g *= 1.0 - h * h


def residual_numpy(x: np.ndarray, out: np.ndarray, inv_var: float) -> float:
    """out ← (x − out) / σ² in place (the likelihood's gradient w.r.t. the decoder output); returns Σ (x − out)²."""
    np.subtract(x, out, out=out)
    sq = float(np.einsum("ij,ij->", out, out))
    out *= inv_var
    return sq


# ---------------------------------------------------------------------------------------------------------------
# Numba (serial, in place)
# ---------------------------------------------------------------------------------------------------------------

@njit(cache=True)
def _draw_latents_nb(key: np.uint64, index: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, n_samples: int,
                     z: np.ndarray, eps: np.ndarray) -> None:
    n_rows, d = mean.shape
    for n in range(n_rows):
        row = row_key_nb(key, index[n])
        for s in range(n_samples):
            for j in range(d):
                e = normal_nb(row, s * d + j)
                eps[s, n, j] = e
                z[s, n, j] = mean[n, j] + np.exp(log_scale[n, j]) * e


@njit(cache=True)
def _activation_nb(h: np.ndarray, code: int) -> None:
    n_rows, m = h.shape
    for n in range(n_rows):
        for j in range(m):
            v = h[n, j]
            if code == 0:
                h[n, j] = v if v > 0.0 else 0.0
            elif code == 1:
                h[n, j] = v if v > 0.0 else LEAKY_SLOPE * v
            else:
                h[n, j] = np.tanh(v)


@njit(cache=True)
def _activation_grad_nb(g: np.ndarray, h: np.ndarray, code: int) -> None:
    n_rows, m = h.shape
    for n in range(n_rows):
        for j in range(m):
            v = h[n, j]
            if code == 0:
                if v <= 0.0:
                    g[n, j] = 0.0
            elif code == 1:
                if v <= 0.0:
                    g[n, j] *= LEAKY_SLOPE
            else:
                g[n, j] *= 1.0 - v * v


@njit(cache=True)
def _residual_nb(x: np.ndarray, out: np.ndarray, inv_var: float) -> float:
    n_rows, m = x.shape
    total = 0.0
    for n in range(n_rows):
        acc = 0.0
        for j in range(m):
            r = x[n, j] - out[n, j]
            acc += r * r
            out[n, j] = r * inv_var
        total += acc
    return total


def draw_latents_numba(seed: int, step: int, index: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                       n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Numba twin of :func:`draw_latents_numpy` (same ε, bit for bit on the ziggurat's fast path)."""
    n_rows, d = mean.shape
    z = np.empty((n_samples, n_rows, d))
    eps = np.empty((n_samples, n_rows, d))
    _draw_latents_nb(np.uint64(stream_key(seed, step, STREAM_LOCAL)), index, mean, log_scale, n_samples, z, eps)
    return z, eps


def activation_numba(h: np.ndarray, code: int) -> None:
    _activation_nb(h, code)


def activation_grad_numba(g: np.ndarray, h: np.ndarray, code: int) -> None:
    _activation_grad_nb(g, h, code)


def residual_numba(x: np.ndarray, out: np.ndarray, inv_var: float) -> float:
    return float(_residual_nb(x, out, inv_var))


#: backend → (draw_latents, activation, activation_grad, residual)
KERNELS = {
    "numpy": (draw_latents_numpy, activation_numpy, activation_grad_numpy, residual_numpy),
    "numba": (draw_latents_numba, activation_numba, activation_grad_numba, residual_numba),
}
