"""A-VI encoders on the device: the forward and backward passes of Constant, Polynomial and MLP on device arrays.

All three are one chain of dense layers on the flat parameter vector φ (the layouts of :mod:`avicore.encoders`):
Constant is a bias alone (no input columns), Polynomial one affine layer on its design rows (the monomials,
computed once per fit on the host), MLP its hidden layers and a shared output head. The products go through
:class:`avicore.kernels._dense_cuda.Dense` (cuBLAS via CuPy on a GPU, a Numba kernel under the simulator). Every
buffer is allocated once per fit, at the largest batch; a smaller (last) minibatch uses row-prefix views.

Forward on a batch of n rows (H₀ = the design rows, gathered by row index under minibatches)::

    A_l = H_{l-1} W_l + b_l,   H_l = act(A_l)  (hidden layers),   out = A_L = [mean | log_scale]  (n, 2d)

Backward from G_L = ∂/∂out (written by the A-VI local kernel)::

    ∂W_l = H_{l-1}ᵀ G_l,   ∂b_l = 1ᵀ G_l,   G_{l-1} = (G_l W_lᵀ) ⊙ act'(A_{l-1})
"""

from __future__ import annotations

import numpy as np

from .encoders import BoundEncoder, _BoundConstant, _BoundMLP, _BoundPolynomial
from .kernels._dense_cuda import ACT_CODES, Dense, Mat


def device_layers(bound: BoundEncoder) -> tuple[list[tuple[int, int, int, int, int]], str] | None:
    """The encoder as (layers (w_start, w_stop, b_stop, fan_in, fan_out) into φ, activation), or None.

    None means the device path does not run this encoder (an MLP with separate heads): the fit stays on the host.
    """
    k = 2 * bound.latent_dim
    if isinstance(bound, _BoundConstant):
        return [(0, 0, k, 0, k)], "relu"
    if isinstance(bound, _BoundPolynomial):
        w_stop = bound.n_design * k
        return [(0, w_stop, w_stop + k, bound.n_design, k)], "relu"
    if isinstance(bound, _BoundMLP) and len(bound.towers) == 1:
        return list(bound.towers[0]), bound.spec.activation
    return None


class DeviceEncoder:
    """One encoder's device buffers and passes for one fit.

    Parameters
    ----------
    layers, activation
        From :func:`device_layers`.
    design : ndarray of shape (n_obs, n_design)
        The design rows of every observation (``bound.design(u)``), uploaded once.
    max_rows : int
        The largest batch.
    minibatch : bool
        Whether batches are gathered by row index (else the batch is every row, in order).
    params, grad : numba device arrays of shape (n_total,)
        The engine's flat parameter and gradient vectors; φ starts at ``offset``.
    offset : int
        Position of φ in them.
    dense : Dense
        Where the products run.
    """

    def __init__(self, layers, activation: str, design: np.ndarray, max_rows: int, minibatch: bool, params, grad,
                 offset: int, dense: Dense) -> None:
        self.dense, self.code, self.minibatch = dense, ACT_CODES[activation], minibatch
        cuda = dense.cuda
        n_design = design.shape[1]
        self.design = dense.wrap(cuda.to_device(np.ascontiguousarray(design)))
        self.h0 = dense.zeros((max_rows, n_design)) if minibatch and n_design else self.design
        self.layers = []
        for i, (w0, w1, b1, fan_in, fan_out) in enumerate(layers):
            last = i == len(layers) - 1
            w = gw = None
            if fan_in:
                w = dense.wrap(params[offset + w0:offset + w1].reshape(fan_in, fan_out))
                gw = dense.wrap(grad[offset + w0:offset + w1].reshape(fan_in, fan_out))
            self.layers.append(dict(
                fan_in=fan_in, w=w, gw=gw, b=params[offset + w1:offset + b1],
                gb=dense.wrap(grad[offset + w1:offset + b1].reshape(1, fan_out)),
                a=dense.zeros((max_rows, fan_out)), h=None if last else dense.zeros((max_rows, fan_out)),
                g_in=dense.zeros((max_rows, fan_in)) if i > 0 else None))
        self.ones = dense.wrap(cuda.to_device(np.ones((max_rows, 1))))
        #: (max_rows, 2d): [mean | log_scale] of the batch after :meth:`forward`.
        self.out: Mat = self.layers[-1]["a"]
        #: (max_rows, 2d): ∂/∂[mean | log_scale], written by the A-VI local kernel, read by :meth:`backward`.
        self.out_grad: Mat = dense.zeros(self.out.shape)

    def forward(self, n_rows: int, rows, n_batch, i: int) -> None:
        """out[:n_rows] ← the encoder on the batch of chunk iteration ``i``."""
        dense = self.dense
        h = self.design
        if self.minibatch and self.design.shape[1]:
            dense.gather(self.design, rows, n_batch, i, self.h0, n_rows)
            h = self.h0
        h = h.rows(n_rows)
        for layer in self.layers:
            a = layer["a"].rows(n_rows)
            if layer["fan_in"]:
                dense.matmul(h, layer["w"], a)
            nxt = None if layer["h"] is None else layer["h"].rows(n_rows)
            dense.bias_act(a, layer["b"], nxt, n_rows, bool(layer["fan_in"]), self.code)
            h = nxt

    def backward(self, n_rows: int) -> None:
        """grad[φ] ← ∂/∂φ of Σₙ G_L[n] · out[n] (every entry of φ's gradient is overwritten)."""
        dense = self.dense
        g = self.out_grad.rows(n_rows)
        design = self.h0 if self.minibatch and self.design.shape[1] else self.design
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            h_in = design.rows(n_rows) if i == 0 else self.layers[i - 1]["h"].rows(n_rows)
            if layer["fan_in"]:
                dense.matmul(h_in, g, layer["gw"], trans_a=True)
            dense.matmul(self.ones.rows(n_rows), g, layer["gb"], trans_a=True)
            if i > 0:
                g_prev = layer["g_in"].rows(n_rows)
                dense.matmul(g, layer["w"], g_prev, trans_b=True)
                prev = self.layers[i - 1]
                dense.act_grad(g_prev, prev["a"].rows(n_rows), prev["h"].rows(n_rows), n_rows, self.code)
                g = g_prev
