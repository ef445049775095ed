"""CUDA backend of the Bayesian MLP decoder's batched forward/backward pass (:class:`avicore.models.BayesianDecoder`).

The same pass as the host backends (:meth:`BayesianDecoder.local_terms`), with every array of one call kept on the
device: the data, the latent draws, θ_s, each layer's hidden outputs and the back-propagated gradients live in
device arrays from the first kernel to the last, and only the results (log joint, ∂/∂θ_s, ∂/∂mₙ, ∂/∂log sₙ) come
back. Kernels:

* ``draw``: zₙ⁽ˢ⁾ = mₙ + exp(log sₙ) ⊙ ε[n, s], ε from the counter-based generator's device copy (the host
  backends' noise, same keying), one thread per row;
* ``matmul``: C = op(A) · op(B) with op = identity or transpose, tiled through shared memory (square tiles of
  T × T threads, each thread one element of C, the K dimension walked tile by tile);
* ``bias_act``: h ← activation(h + b) (or h + b for the output layer), one thread per element;
* ``act_grad``: g ← g ⊙ activation'(a) from the activation's output h;
* ``residual``: out ← (x − out)/σ², and Σⱼ (x − out)² per row;
* ``col_sum``: the bias gradients Σₙ gₙⱼ, one thread per column;
* ``locals``: g ← g − z (local prior), accumulating ∂/∂mₙ, ∂/∂log sₙ (before the exp(log s)/S factor) and ‖zₙ‖².

Tile: T = the largest power of two with T² ≤ ``CUDA_THREADS_PER_BLOCK`` (8 at the default 128; the tests shrink
it to 2 under the simulator, which runs every thread in Python).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _config
from ..models.base import LocalTerms
from ._counter_normal import STREAM_LOCAL, stream_key
from ._counter_normal_cuda import device_functions, quiet_simulator

cuda = None  # numba.cuda, bound by _kernels() on first use (the simulator swaps this module global while it runs)

_LEAKY_SLOPE = 0.01  # = avicore.kernels.decoder.LEAKY_SLOPE (not imported: that module imports numba's njit)


def _tile() -> int:
    """Side T of the square thread blocks: the largest power of two with T² ≤ CUDA_THREADS_PER_BLOCK."""
    cap = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    t = 1
    while (2 * t) * (2 * t) <= cap:
        t *= 2
    return t


def _block_1d() -> int:
    return max(1, int(_config.CUDA_THREADS_PER_BLOCK))


@functools.cache
def _kernels(tile: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    global cuda
    from numba import cuda, float64

    dev = device_functions()
    counter_normal, row_key = dev.counter_normal, dev.row_key
    slope = _LEAKY_SLOPE

    @cuda.jit
    def draw(key, index, mean, log_scale, z, eps):
        n = cuda.grid(1)
        n_samples, n_rows, d = z.shape
        if n < n_rows:
            row = row_key(key, index[n])
            for s in range(n_samples):
                for j in range(d):
                    e = counter_normal(row, s * d + j)
                    eps[s, n, j] = e
                    z[s, n, j] = mean[n, j] + math.exp(log_scale[n, j]) * e

    @cuda.jit
    def matmul(a, b, c, trans_a, trans_b):
        # C (M, N) = op(A) (M, K) · op(B) (K, N); op(A)[i, k] = A[k, i] when trans_a, likewise for B.
        sh_a = cuda.shared.array((tile, tile), float64)
        sh_b = cuda.shared.array((tile, tile), float64)
        tx = cuda.threadIdx.x  # column within the tile
        ty = cuda.threadIdx.y  # row within the tile
        i = cuda.blockIdx.y * tile + ty
        j = cuda.blockIdx.x * tile + tx
        m, n = c.shape
        k_dim = a.shape[0] if trans_a else a.shape[1]
        acc = 0.0
        for k0 in range(0, k_dim, tile):
            ka = k0 + tx  # the A element this thread loads: (i, ka)
            if i < m and ka < k_dim:
                sh_a[ty, tx] = a[ka, i] if trans_a else a[i, ka]
            else:
                sh_a[ty, tx] = 0.0
            kb = k0 + ty  # the B element this thread loads: (kb, j)
            if kb < k_dim and j < n:
                sh_b[ty, tx] = b[j, kb] if trans_b else b[kb, j]
            else:
                sh_b[ty, tx] = 0.0
            cuda.syncthreads()
            for kk in range(tile):
                acc += sh_a[ty, kk] * sh_b[kk, tx]
            cuda.syncthreads()
        if i < m and j < n:
            c[i, j] = acc

    @cuda.jit
    def bias_act(h, b, code, apply):
        j, i = cuda.grid(2)  # x runs over columns, y over rows (_grid2)
        if i < h.shape[0] and j < h.shape[1]:
            v = h[i, j] + b[j]
            if apply:
                if code == 0:
                    v = v if v > 0.0 else 0.0
                elif code == 1:
                    v = v if v > 0.0 else slope * v
                else:
                    v = math.tanh(v)
            h[i, j] = v

    @cuda.jit
    def act_grad(g, h, code):
        j, i = cuda.grid(2)  # x runs over columns, y over rows (_grid2)
        if i < h.shape[0] and j < h.shape[1]:
            v = h[i, j]
            if code == 0:
                if v <= 0.0:
                    g[i, j] = 0.0
            elif code == 1:
                if v <= 0.0:
                    g[i, j] *= slope
            else:
                g[i, j] *= 1.0 - v * v

    @cuda.jit
    def residual(x, out, inv_var, row_sq):
        n = cuda.grid(1)
        if n < x.shape[0]:
            acc = 0.0
            for j in range(x.shape[1]):
                r = x[n, j] - out[n, j]
                acc += r * r
                out[n, j] = r * inv_var
            row_sq[n] = acc

    @cuda.jit
    def col_sum(g, out):
        j = cuda.grid(1)
        if j < g.shape[1]:
            acc = 0.0
            for n in range(g.shape[0]):
                acc += g[n, j]
            out[j] = acc

    @cuda.jit
    def locals_(g, z, eps, grad_mean, grad_log_scale, row_zz):
        n = cuda.grid(1)
        if n < g.shape[0]:
            acc = 0.0
            for j in range(g.shape[1]):
                zj = z[n, j]
                gj = g[n, j] - zj
                acc += zj * zj
                grad_mean[n, j] += gj
                grad_log_scale[n, j] += gj * eps[n, j]
            row_zz[n] = acc

    return {"draw": draw, "matmul": matmul, "bias_act": bias_act, "act_grad": act_grad, "residual": residual,
            "col_sum": col_sum, "locals": locals_}


def _grid2(rows: int, cols: int, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) of a 2-D launch over a (rows, cols) array: x over columns, y over rows."""
    return (-(-cols // tile), -(-rows // tile)), (tile, tile)


def local_terms_cuda(layer_shapes: tuple[tuple[int, int], ...], code: int, inv_var: float, const: float,
                     x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray, theta: np.ndarray, seed: int, step: int,
                     index: np.ndarray) -> LocalTerms:
    """The decoder's fused pass on the GPU (or the CUDA simulator): host arrays in, host :class:`LocalTerms` out.

    ``layer_shapes`` and the flat layout of θ are :class:`~avicore.models.BayesianDecoder`'s; ``const`` is the
    log joint's constant for these rows. Inputs are validated by the model before this is called.
    """
    tile = _tile()
    k = _kernels(tile)
    t1 = _block_1d()
    n_samples, n_rows, d = theta.shape[0], x.shape[0], mean.shape[1]
    n_layers = len(layer_shapes)
    d_x = cuda.to_device(np.ascontiguousarray(x))
    d_mean = cuda.to_device(np.ascontiguousarray(mean))
    d_log_scale = cuda.to_device(np.ascontiguousarray(log_scale))
    d_theta = cuda.to_device(np.ascontiguousarray(theta))
    d_grad = cuda.device_array(theta.shape)
    d_z = cuda.device_array((n_samples, n_rows, d))
    d_eps = cuda.device_array((n_samples, n_rows, d))
    d_gm = cuda.to_device(np.zeros((n_rows, d)))
    d_gls = cuda.to_device(np.zeros((n_rows, d)))
    d_hs = [cuda.device_array((n_rows, fo)) for _, fo in layer_shapes]  # each layer's output, reused per sample
    d_gs = [cuda.device_array((n_rows, fi)) for fi, _ in layer_shapes[1:]]  # back-propagated into layer l's input
    d_row = cuda.device_array(n_rows)
    blocks_rows = -(-n_rows // t1)
    log_joint = np.empty(n_samples)
    with quiet_simulator():
        k["draw"][blocks_rows, t1](np.uint64(stream_key(seed, step, STREAM_LOCAL)), cuda.to_device(index), d_mean,
                                   d_log_scale, d_z, d_eps)
        for s in range(n_samples):
            weights, grads, o = [], [], 0
            for fi, fo in layer_shapes:  # views of θ_s and ∂/∂θ_s, layer by layer
                weights.append((d_theta[s][o:o + fi * fo].reshape(fi, fo), d_theta[s][o + fi * fo:o + fi * fo + fo]))
                grads.append((d_grad[s][o:o + fi * fo].reshape(fi, fo), d_grad[s][o + fi * fo:o + fi * fo + fo]))
                o += fi * fo + fo
            h_in = d_z[s]
            for l, ((w, b), (_, fo)) in enumerate(zip(weights, layer_shapes)):
                blocks, threads = _grid2(n_rows, fo, tile)
                k["matmul"][blocks, threads](h_in, w, d_hs[l], False, False)
                k["bias_act"][blocks, threads](d_hs[l], b, code, l < n_layers - 1)
                h_in = d_hs[l]
            g = d_hs[-1]  # Ω(z), overwritten by (x − Ω)/σ²
            k["residual"][blocks_rows, t1](d_x, g, inv_var, d_row)
            sq = float(d_row.copy_to_host().sum())
            for l in range(n_layers - 1, -1, -1):
                fi, fo = layer_shapes[l]
                w = weights[l][0]
                gw, gb = grads[l]
                h_prev = d_z[s] if l == 0 else d_hs[l - 1]
                blocks, threads = _grid2(fi, fo, tile)
                k["matmul"][blocks, threads](h_prev, g, gw, True, False)
                k["col_sum"][-(-fo // t1), t1](g, gb)
                g_prev = d_gs[l - 1] if l > 0 else cuda.device_array((n_rows, fi))
                blocks, threads = _grid2(n_rows, fi, tile)
                k["matmul"][blocks, threads](g, w, g_prev, False, True)
                g = g_prev
                if l > 0:
                    k["act_grad"][blocks, threads](g, d_hs[l - 1], code)
            k["locals"][blocks_rows, t1](g, d_z[s], d_eps[s], d_gm, d_gls, d_row)
            zz = float(d_row.copy_to_host().sum())
            log_joint[s] = -0.5 * inv_var * sq - 0.5 * zz - const
    grad_mean = d_gm.copy_to_host()
    grad_mean /= n_samples
    grad_log_scale = d_gls.copy_to_host()
    grad_log_scale *= np.exp(log_scale) / n_samples
    return LocalTerms(log_joint=log_joint, grad_mean=grad_mean, grad_log_scale=grad_log_scale,
                      grad_global=d_grad.copy_to_host())


__all__ = ["local_terms_cuda"]
_ = math  # used inside the compiled kernels
