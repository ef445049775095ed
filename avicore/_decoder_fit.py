"""The device executor for :class:`~avicore.models.BayesianDecoder` fits (F-VI, and A-VI with a device encoder).

The host side — chunked schedule, checkpoints, replay, the host loop's bookkeeping — is
:class:`avicore._device_fit.DeviceLoop`'s; this subclass holds the decoder's device buffers and launches one
iteration (:mod:`avicore.kernels._decoder_fit_cuda`, the elementwise kernels of
:mod:`avicore.kernels._decoder_cuda`, products on :class:`avicore.kernels._dense_cuda.Dense`):

1. θ_s = μ + σ ⊙ η_s for every weight, with the prior's partial sums;
2. the batch's q(zₙ) (F-VI's rows, or the encoder's forward pass), its rows of x and the latent draws;
3. per sample s, the decoder's forward pass (products, bias + activation), the residual, and the backward pass
   into ∂θ_s (weights and biases) and the per-row gradient in z;
4. the rows' gradients: F-VI's Adam step of each row's (m, log s) in place, or A-VI's encoder backward pass;
5. Adam on [μ, log σ, φ]; the ELBO estimate, status code and trace entry.

Everything stays on the device; weights of θ_s and their gradients are views into (S, P) buffers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._device_fit import DeviceLoop


class DecoderDeviceLoop(DeviceLoop):
    """Device buffers and iteration of one BayesianDecoder fit."""

    def __init__(self, engine: Any) -> None:
        from .kernels import _decoder_cuda
        from .kernels import _decoder_fit_cuda as kd
        from .kernels._dense_cuda import Dense
        from .kernels.decoder import ACTIVATION_CODES

        cfg = self._common(engine, kd.N_DECODER_CFG)
        model = engine.model
        n_theta, d, px, n_samples = model.global_dim, model.latent_dim, model.obs_dim, engine.n_samples
        log_2pi = math.log(2.0 * math.pi)
        cfg[kd.C_PRIOR_SCALE] = model.weight_prior_scale
        cfg[kd.C_INV_VAR] = self.inv_var = 1.0 / model.obs_scale ** 2
        cfg[kd.C_ROW_CONST] = d * 0.5 * log_2pi + px * (0.5 * log_2pi + math.log(model.obs_scale))
        cfg[kd.C_N_THETA] = n_theta
        self.code = ACTIVATION_CODES[model.activation]
        self.k = kd.decoder_fit_kernels(self.threads)
        self.tile = _decoder_cuda._tile()
        self.t1 = _decoder_cuda._block_1d()
        self.kd = _decoder_cuda._kernels(self.tile)
        self.dense = dense = Dense()
        dev, zeros = self.cuda.to_device, np.zeros
        b, t = self.max_rows, self.threads
        self.n_theta, self.n_samples = n_theta, n_samples
        self.d_cfg, self.d_x = dev(cfg), dev(engine.x)
        self.d_theta, self.d_eta = dev(zeros((n_samples, n_theta))), dev(zeros((n_samples, n_theta)))
        self.d_gtheta = dev(zeros((n_samples, n_theta)))
        self.d_part_g = dev(zeros((n_samples, -(-n_theta // t), 3)))
        self.d_part_l = dev(zeros((-(-b // t), 3)))
        self.d_part_u = dev(zeros((-(-self.d_gstate.shape[1] // t), 3)))
        self.d_mean, self.d_log_scale = dev(zeros((b, d))), dev(zeros((b, d)))
        self.d_z, self.d_eps = dev(zeros((n_samples, b, d))), dev(zeros((n_samples, b, d)))
        self.d_xb = dev(zeros((b, px)))
        self.d_gm, self.d_gls = dev(zeros((b, d))), dev(zeros((b, d)))
        self.d_row_sq, self.d_row_zz = dev(zeros((n_samples, b))), dev(zeros((n_samples, b)))
        self.shapes = model.layer_shapes
        self.hs = [dense.zeros((b, fo)) for _, fo in self.shapes]  # each layer's output
        self.gs = [dense.zeros((b, fi)) for fi, _ in self.shapes]  # the gradient into each layer's input
        self.zs = [dense.wrap(self.d_z[s]) for s in range(n_samples)]
        self.layers = []  # per sample: [(W, b, ∂W, ∂b)] views of θ_s and ∂θ_s
        for s in range(n_samples):
            views, o = [], 0
            for fi, fo in self.shapes:
                w = slice(o, o + fi * fo)
                bias = slice(o + fi * fo, o + fi * fo + fo)
                views.append((dense.wrap(self.d_theta[s][w].reshape(fi, fo)), self.d_theta[s][bias],
                              dense.wrap(self.d_gtheta[s][w].reshape(fi, fo)), self.d_gtheta[s][bias]))
                o += fi * fo + fo
            self.layers.append(views)
        if self.avi:
            self.encoder = self._device_encoder()
            self.d_loc, self.d_counts = dev(zeros((1, 1, 1))), dev(zeros(1, dtype=np.int64))
        else:
            loc = zeros((6, self.n_obs, d))
            loc[0], loc[1] = engine.mean, engine.log_scale
            self.d_loc, self.d_counts = self._saved_locals(loc)
            self.d_enc_grad = dev(zeros((1, 1)))
        self.d_scale_state = self._scale_state(None if self.avi else engine.log_scale)

    def _grid2(self, rows: int, cols: int):
        from .kernels._decoder_cuda import _grid2

        return _grid2(rows, cols, self.tile)

    def _launch(self, sizes: list[int], count: int) -> None:
        k, kd, dense, t, t1 = self.k, self.kd, self.dense, self.threads, self.t1
        draw_global, gather_locals, split_out, draw_latents, local_update, global_update, assemble = k
        n_layers = len(self.shapes)
        for i in range(count):
            n = sizes[i]
            rows_blocks, rows_blocks1 = -(-n // t), -(-n // t1)
            draw_global[(-(-self.n_theta // t), self.n_samples), t](self.d_gstate, self.d_cfg, self.d_keys, i,
                                                                     self.d_theta, self.d_eta, self.d_part_g,
                                                                     self.d_scale_state)
            if self.avi:
                self.encoder.forward(n, self.d_rows, self.d_n_batch, i)
                split_out[rows_blocks, t](self.encoder.out.nb, n, self.d_mean, self.d_log_scale)
            else:
                gather_locals[rows_blocks, t](self.d_loc, self.d_rows, self.d_n_batch, i, n, self.d_mean,
                                              self.d_log_scale)
            draw_latents[rows_blocks, t](self.d_keys, i, self.d_rows, self.d_n_batch, n, self.d_x, self.d_mean,
                                         self.d_log_scale, self.d_z, self.d_eps, self.d_xb)
            for s in range(self.n_samples):
                views = self.layers[s]
                h_in = self.zs[s].rows(n)
                for layer, (_, fo) in enumerate(self.shapes):  # forward
                    h = self.hs[layer].rows(n)
                    dense.matmul(h_in, views[layer][0], h)
                    blocks, threads = self._grid2(n, fo)
                    kd["bias_act"][blocks, threads](h.nb, views[layer][1], self.code, layer < n_layers - 1)
                    h_in = h
                g = h_in  # Ω(z), overwritten by (x − Ω)/σ²
                kd["residual"][rows_blocks1, t1](self.d_xb[:n], g.nb, self.inv_var, self.d_row_sq[s][:n])
                for layer in range(n_layers - 1, -1, -1):  # backward
                    fi, fo = self.shapes[layer]
                    h_prev = self.zs[s].rows(n) if layer == 0 else self.hs[layer - 1].rows(n)
                    dense.matmul(h_prev, g, views[layer][2], trans_a=True)
                    kd["col_sum"][-(-fo // t1), t1](g.nb, views[layer][3])
                    g_prev = self.gs[layer].rows(n)
                    dense.matmul(g, views[layer][0], g_prev, trans_b=True)
                    if layer > 0:
                        blocks, threads = self._grid2(n, fi)
                        kd["act_grad"][blocks, threads](g_prev.nb, self.hs[layer - 1].rows(n).nb, self.code)
                    g = g_prev
                kd["locals"][rows_blocks1, t1](g.nb, self.d_z[s][:n], self.d_eps[s][:n], self.d_gm[:n],
                                               self.d_gls[:n], self.d_row_zz[s][:n])
            enc_grad = self.encoder.out_grad.nb if self.avi else self.d_enc_grad
            local_update[rows_blocks, t](self.d_cfg, self.d_sched, i, self.d_rows, n, self.n_samples, self.d_loc,
                                         self.d_counts, self.d_mean, self.d_log_scale, self.d_gm, self.d_gls,
                                         enc_grad, self.d_part_l, self.d_scale_state)
            if self.avi:
                self.encoder.backward(n)
            global_update[-(-self.d_gstate.shape[1] // t), t](self.d_gstate, self.d_grad, self.d_theta,
                                                               self.d_eta, self.d_gtheta, self.d_cfg,
                                                               self.d_sched, i, self.d_part_u)
            assemble[1, 1](self.d_part_g, self.d_part_l, rows_blocks, self.d_part_u, self.d_row_sq,
                           self.d_row_zz, n, self.d_cfg, self.d_sched, i, self.d_trace, self.d_status,
                           self.d_scale_state)
