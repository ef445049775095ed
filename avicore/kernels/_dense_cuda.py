"""Dense layers on the device for the device-resident fits: C = op(A)·op(B), bias + activation, their gradients.

:class:`Dense` hides where the matrix products run:

* on a real GPU with CuPy importable (``avicore[cuda]``), ``cupy.matmul`` — cuBLAS — on zero-copy CuPy views of
  the Numba device arrays (``__cuda_array_interface__``); both libraries use the legacy default stream, so the
  products and the Numba kernels run in launch order without a host synchronisation;
* otherwise (the CUDA simulator, or no CuPy) a plain Numba kernel, one thread per element of C summing its K
  products in order.

Arrays are handed around as :class:`Mat` pairs (the Numba array for the elementwise kernels, the CuPy view — or the
same Numba array — for the products), with cached row-prefix views for minibatches. The activations and their
derivatives use the arithmetic of :mod:`avicore.encoders` (``_act`` / ``_apply_act_grad``), in the same order.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _config

cuda = None  # numba.cuda, bound on first use (the simulator swaps this module global while kernels run)

ACT_CODES = {"relu": 0, "leaky_relu": 1, "tanh": 2, "softplus": 3}
_LEAKY_SLOPE = 0.01  # = avicore.encoders._LEAKY_SLOPE
_LOG2 = math.log(2.0)


def _cupy():
    """CuPy when the products should go to cuBLAS (a real GPU and CuPy importable: avicore._device's one probe),
    else None."""
    from .._device import _cupy as device_cupy

    return device_cupy()


@functools.cache
def _kernels(tile: int, threads: int):  # pragma: no cover - compiled (the simulator runs it in Python)
    global cuda
    from numba import cuda

    slope = _LEAKY_SLOPE
    log2 = _LOG2

    @cuda.jit
    def matmul(a, b, c, trans_a, trans_b, m, n, k):
        i = cuda.blockIdx.y * tile + cuda.threadIdx.y
        j = cuda.blockIdx.x * tile + cuda.threadIdx.x
        if i < m and j < n:
            acc = 0.0
            for p in range(k):
                av = a[p, i] if trans_a else a[i, p]
                bv = b[j, p] if trans_b else b[p, j]
                acc += av * bv
            c[i, j] = acc

    @cuda.jit(device=True, inline=True)
    def activation(code, v):
        if code == 0:  # np.maximum(v, 0): NaN propagates
            return v if (v > 0.0 or v != v) else 0.0
        if code == 1:
            w = slope * v
            return v if (v >= w or v != v) else w
        if code == 2:
            return math.tanh(v)
        # softplus = np.logaddexp(0, v)
        if v == 0.0:
            return log2
        if v < 0.0:
            return math.log1p(math.exp(v))
        if v > 0.0:
            return v + math.log1p(math.exp(-v))
        return v

    @cuda.jit
    def bias_act(a, bias, h, n_rows, has_input, code, last):
        q = cuda.grid(1)
        fan_out = a.shape[1]
        if q < n_rows * fan_out:
            r = q // fan_out
            c = q - r * fan_out
            v = (a[r, c] if has_input else 0.0) + bias[c]
            a[r, c] = v
            if not last:
                h[r, c] = activation(code, v)

    @cuda.jit
    def act_grad(g, a, h, n_rows, code):
        q = cuda.grid(1)
        width = g.shape[1]
        if q < n_rows * width:
            r = q // width
            c = q - r * width
            if code == 0:
                w = 1.0 if h[r, c] > 0.0 else 0.0
            elif code == 1:
                w = 1.0 if a[r, c] > 0.0 else 0.0
                w *= 1.0 - slope
                w += slope
            elif code == 2:
                w = h[r, c] * h[r, c]
                w = 1.0 - w
            else:
                w = a[r, c] * 0.5
                w = math.tanh(w)
                w += 1.0
                w *= 0.5
            g[r, c] *= w

    @cuda.jit
    def gather_rows(src, rows, n_batch, i, dst):
        q = cuda.grid(1)
        width = src.shape[1]
        if q < n_batch[i] * width:
            r = q // width
            c = q - r * width
            dst[r, c] = src[rows[i, r], c]

    return matmul, bias_act, act_grad, gather_rows


class Mat:
    """A device matrix as (Numba array ``nb``, matmul-side array ``mm``) with cached row-prefix views."""

    def __init__(self, nb, mm) -> None:
        self.nb, self.mm = nb, mm
        self._prefix: dict[int, Mat] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.nb.shape)

    def rows(self, n: int) -> Mat:
        """The first ``n`` rows (a view)."""
        if n == self.nb.shape[0]:
            return self
        view = self._prefix.get(n)
        if view is None:
            view = self._prefix[n] = Mat(self.nb[:n], self.mm[:n])
        return view


class Dense:
    """Products and elementwise layer kernels on device arrays (see the module docstring for the backends)."""

    def __init__(self) -> None:
        from numba import cuda as numba_cuda

        self.cuda = numba_cuda
        self.cupy = _cupy()
        threads = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
        self.threads = 1 << (threads.bit_length() - 1)
        tile = 1
        while (2 * tile) ** 2 <= self.threads:
            tile *= 2
        self.tile = tile
        self.k_matmul, self.k_bias_act, self.k_act_grad, self.k_gather = _kernels(tile, self.threads)

    @property
    def kind(self) -> str:
        """``"cublas (cupy)"`` or ``"numba kernel"``: where the products run."""
        return "cublas (cupy)" if self.cupy is not None else "numba kernel"

    def wrap(self, nb) -> Mat:
        """A Numba device array as a :class:`Mat` (zero-copy CuPy view when the products go to cuBLAS)."""
        return Mat(nb, nb if self.cupy is None else self.cupy.asarray(nb))

    def zeros(self, shape: tuple[int, ...]) -> Mat:
        """A new zero-filled device matrix (allocated once per fit by the callers)."""
        return self.wrap(self.cuda.to_device(np.zeros(shape)))

    def matmul(self, a: Mat, b: Mat, c: Mat, trans_a: bool = False, trans_b: bool = False) -> None:
        """c ← op(a) · op(b), op = transpose where asked; c must not alias a or b."""
        if self.cupy is not None:
            self.cupy.matmul(a.mm.T if trans_a else a.mm, b.mm.T if trans_b else b.mm, out=c.mm)
            return
        m, n = c.shape
        k = a.shape[0] if trans_a else a.shape[1]
        grid = (-(-n // self.tile), -(-m // self.tile))
        self.k_matmul[grid, (self.tile, self.tile)](a.nb, b.nb, c.nb, trans_a, trans_b, m, n, k)

    def _grid(self, size: int) -> int:
        return max(1, -(-size // self.threads))

    def bias_act(self, a: Mat, bias, h: Mat | None, n_rows: int, has_input: bool, code: int) -> None:
        """a ← a + bias (or bias alone without input), and h ← activation(a) unless ``h`` is None (output layer)."""
        last = h is None
        self.k_bias_act[self._grid(n_rows * a.shape[1]), self.threads](
            a.nb, bias, a.nb if last else h.nb, n_rows, has_input, code, last)

    def act_grad(self, g: Mat, a: Mat, h: Mat, n_rows: int, code: int) -> None:
        """g ← g ⊙ activation'(a) (from the pre-activation ``a`` and the activation ``h``)."""
        self.k_act_grad[self._grid(n_rows * g.shape[1]), self.threads](g.nb, a.nb, h.nb, n_rows, code)

    def gather(self, src: Mat, rows, n_batch, i: int, dst: Mat, n_rows: int) -> None:
        """dst[r] ← src[rows[i, r]] for the first ``n_rows`` = ``n_batch[i]`` rows."""
        self.k_gather[self._grid(n_rows * src.shape[1]), self.threads](src.nb, rows, n_batch, i, dst.nb)
