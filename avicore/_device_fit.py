"""The device executor of the F-VI / A-VI loop: a whole fit's iterations on the GPU (``backend="cuda"``).

:meth:`avicore.inference._Engine._run` validates, initialises (``_setup``), builds the convergence monitor, the
progress line and the minibatch order, then hands the iterations to :func:`device_loop` when the resolved backend
is ``"cuda"`` and the model and encoder have device kernels (the built-in hierarchical models; Constant,
Polynomial and shared-head MLP encoders); everything after the loop — divergence warning, ``converged``, the
:class:`~avicore.inference.VIResult` with its final ELBO estimate — is the engine's own code.

What stays on the device for the whole fit: x, F-VI's local parameters and their Adam moments (and per-row step
counts under minibatches), q(θ)'s parameters, φ and their Adam moments, θ_s and η_s, the block partials and the
trace. An iteration is two launches (:mod:`avicore.kernels._fit_cuda`; A-VI adds the encoder's layers,
:mod:`avicore._encoders_cuda`), with no host synchronisation. Every ``SYNC_EVERY`` iterations (every iteration
with a ``callback``) the host uploads the next chunk's schedule (learning rates, stream keys, minibatch rows — the
same host objects as the host loop draw them), copies the chunk's trace and status codes back, and feeds each
entry through the host loop's bookkeeping in the host loop's order: ``monitor.record(elbo)``, the divergence
checks, the progress line, ``tol``, the callback. A stop inside a chunk (``tol``, divergence, callback) restores
the state saved at the chunk's start (device-to-device copies) and replays the iterations up to the stop, so the
final state is the one the host loop would have kept: the noise depends only on (seed, iteration), so a replay
is exact.

The arithmetic is the host loop's, in its order (the ELBO estimate, the gradient in (μ, log σ), Adam — dense or
lazy per row — with the same bias corrections); only the order of the sums over rows differs (block tree
reductions instead of chunked sums), so a device fit equals the cython fit with the same seed to rounding
(≤ 1e-10 in the tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: Iterations between host synchronisations (trace copy, bookkeeping, next schedule upload).
SYNC_EVERY = 100


def supported(engine: Any) -> bool:
    """Whether the device executor runs this engine's fit (else the host loop runs it with the cuda kernels)."""
    from .models.hierarchical import HierarchicalModel

    model = engine.model
    cls = type(model)
    if not (isinstance(model, HierarchicalModel) and model._model_id in (0, 1) and model.latent_dim == 1
            and cls.local_terms is HierarchicalModel.local_terms
            and cls.log_prior_global is HierarchicalModel.log_prior_global):
        return False
    if engine.method == "A-VI":
        from ._encoders_cuda import device_layers

        return device_layers(engine.bound) is not None
    return True


def device_loop(engine: Any, backend: str) -> DeviceLoop | None:
    """The device executor for this fit (called after ``engine._setup``), or None to run the host loop."""
    if backend != "cuda" or not supported(engine):
        return None
    return DeviceLoop(engine)


class DeviceLoop:
    """Device buffers of one fit and the chunked loop over them; call it in place of the host loop."""

    def __init__(self, engine: Any) -> None:
        from numba import cuda

        from .inference import _HALF_LOG_2PI_E
        from .kernels import _fit_cuda as fc
        from .kernels._counter_normal_cuda import quiet_simulator
        from .kernels._elbo_cuda import _block_threads

        self.engine, self.cuda, self.quiet = engine, cuda, quiet_simulator
        model = engine.model
        self.avi = engine.method == "A-VI"
        self.threads = _block_threads()
        self.k_fvi, self.k_avi, self.k_global, self.k_draw = fc.fit_kernels(self.threads)
        n_obs, n_samples, dim = engine.n_obs, engine.n_samples, model.global_dim
        self.n_obs, self.key = n_obs, engine.key
        self.minibatch = engine.batch_size is not None and engine.batch_size < n_obs
        max_rows = engine.batch_size if self.minibatch else n_obs
        self.sync = max(1, int(SYNC_EVERY))
        adam = engine.adam if self.avi else engine.adam_global
        self.beta1, self.beta2 = adam.beta1, adam.beta2
        cfg = np.zeros(fc.N_CFG)
        cfg[fc.C_CONST_LOCAL] = _HALF_LOG_2PI_E * n_obs * model.latent_dim
        cfg[fc.C_CONST_GLOBAL] = _HALF_LOG_2PI_E * dim
        cfg[fc.C_PRIOR_SCALE] = model.theta_prior_scale or 0.0
        cfg[fc.C_POINT] = float(engine.global_q == "point")
        cfg[fc.C_FIXED] = float(engine.fixed_global)
        cfg[fc.C_WEIGHT_DECAY] = engine.weight_decay if self.avi else 0.0
        cfg[fc.C_BETA1], cfg[fc.C_BETA2], cfg[fc.C_EPS] = adam.beta1, adam.beta2, adam.eps
        cfg[fc.C_AVI] = float(self.avi)
        params = engine.params if self.avi else engine.glob
        n_params = params.size
        gstate = np.zeros((3, n_params))
        gstate[0] = params
        n_cols = n_samples * (1 + dim) + 2
        self.max_blocks = -(-max_rows // self.threads)
        dev = cuda.to_device
        self.model_id = np.int64(model._model_id)
        self.d_mparams, self.d_cfg, self.d_x = dev(model._params), dev(cfg), dev(engine.x)
        self.d_gstate, self.d_grad = dev(gstate), dev(np.zeros(n_params))
        self.d_theta, self.d_eta = dev(np.zeros((n_samples, dim))), dev(np.zeros((n_samples, dim)))
        self.d_part, self.d_sums = dev(np.zeros((self.max_blocks, n_cols))), dev(np.zeros(n_cols))
        self.d_trace, self.d_status = dev(np.zeros(self.sync)), dev(np.zeros(self.sync, dtype=np.int64))
        self.h_keys = np.zeros((self.sync, 2), dtype=np.uint64)
        self.h_sched = np.zeros((self.sync, 4))
        self.h_rows = np.zeros((self.sync, max_rows) if self.minibatch else (1, 0), dtype=np.int64)
        self.h_n_batch = np.zeros(self.sync, dtype=np.int64)
        self.d_keys, self.d_sched = dev(self.h_keys), dev(self.h_sched)
        self.d_rows, self.d_n_batch = dev(self.h_rows), dev(self.h_n_batch)
        self.saved = [(self.d_gstate, dev(gstate))]  # (live, checkpoint) pairs restored by a replay
        if self.avi:
            from ._encoders_cuda import DeviceEncoder, device_layers
            from .kernels._dense_cuda import Dense

            layers, activation = device_layers(engine.bound)
            self.encoder = DeviceEncoder(layers, activation, engine.design, max_rows, self.minibatch,
                                         self.d_gstate[0], self.d_grad, engine.n_glob, Dense())
        else:
            loc = np.zeros((6, n_obs))
            loc[0], loc[1] = engine.mean[:, 0], engine.log_scale[:, 0]
            self.d_loc, self.d_counts = dev(loc), dev(np.zeros(n_obs, dtype=np.int64))
            self.saved += [(self.d_loc, dev(loc)), (self.d_counts, dev(np.zeros(n_obs, dtype=np.int64)))]

    # -- the host side of a chunk ----------------------------------------------------------------------------
    def _schedule(self, start: int, count: int, lr_at: Callable[[int], float], batches: Any) -> list[int]:
        """Fill and upload the chunk's keys, Adam factors, batch scales and rows; return the batch sizes."""
        from .kernels._counter_normal import STREAM_GLOBAL, STREAM_LOCAL, stream_key

        sizes = []
        for i in range(count):
            t = start + i
            rows = batches.next()
            lr = lr_at(t)
            n = self.n_obs if rows is None else rows.size
            self.h_keys[i, 0] = stream_key(self.key, t, STREAM_LOCAL)
            self.h_keys[i, 1] = stream_key(self.key, t, STREAM_GLOBAL)
            # Adam's dense step t + 1 (avicore.optim.Adam.step, maximising) and the minibatch scale N/B.
            self.h_sched[i] = (lr, lr / (1.0 - self.beta1 ** (t + 1)), math.sqrt(1.0 - self.beta2 ** (t + 1)),
                               1.0 if rows is None else self.n_obs / rows.size)
            if rows is not None:
                self.h_rows[i, :n] = rows
                self.h_n_batch[i] = n
            sizes.append(n)
        self.d_keys.copy_to_device(self.h_keys)
        self.d_sched.copy_to_device(self.h_sched)
        if self.minibatch:
            self.d_rows.copy_to_device(self.h_rows)
            self.d_n_batch.copy_to_device(self.h_n_batch)
        return sizes

    def _launch(self, sizes: list[int], count: int) -> None:
        """Run iterations 0 … count − 1 of the uploaded chunk (launches only; no host synchronisation)."""
        t = self.threads
        self.k_draw[1, t](self.d_gstate, self.d_cfg, self.d_keys, 0, self.d_theta, self.d_eta)
        for i in range(count):
            blocks = -(-sizes[i] // t)
            if self.avi:
                enc = self.encoder
                enc.forward(sizes[i], self.d_rows, self.d_n_batch, i)
                self.k_avi[blocks, t](self.model_id, self.d_mparams, self.d_x, enc.out.nb, enc.out_grad.nb,
                                      self.d_theta, self.d_keys, self.d_sched, self.d_rows, self.d_n_batch, i,
                                      self.d_part)
                enc.backward(sizes[i])
            else:
                self.k_fvi[blocks, t](self.model_id, self.d_mparams, self.d_cfg, self.d_x, self.d_loc,
                                      self.d_counts, self.d_theta, self.d_keys, self.d_sched, self.d_rows,
                                      self.d_n_batch, i, self.d_part)
            self.k_global[1, t](self.d_part, blocks, self.d_sums, self.d_theta, self.d_eta, self.d_gstate,
                                self.d_grad, self.d_cfg, self.d_sched, self.d_keys, i, count, self.d_trace,
                                self.d_status)

    def _checkpoint(self, restore: bool = False) -> None:
        for live, saved in self.saved:
            (live if restore else saved).copy_to_device(saved if restore else live)

    def to_host(self) -> None:
        """Copy the current parameters into the engine's host arrays (what ``_result`` and ``_state`` read)."""
        engine = self.engine
        params = self.d_gstate[0].copy_to_host()
        if self.avi:
            engine.params[...] = params
        else:
            engine.glob[...] = params
            loc = self.d_loc[:2].copy_to_host()
            engine.mean[:, 0] = loc[0]
            engine.log_scale[:, 0] = loc[1]

    # -- the loop --------------------------------------------------------------------------------------------
    def __call__(self, n_iter: int, lr_at: Callable[[int], float], batches: Any, monitor: Any, bar: Any,
                 times: np.ndarray, t0: float, callback: Callable | None) -> str:
        """Run up to ``n_iter`` iterations; fill ``times``, feed ``monitor``/``bar``/``callback``; → stop reason."""
        sync = 1 if callback is not None else self.sync
        stop_reason = "n_iter"
        with self.quiet():
            start = 0
            while start < n_iter:
                count = min(sync, n_iter - start)
                sizes = self._schedule(start, count, lr_at, batches)
                self._checkpoint()
                begin = time.perf_counter() - t0
                self._launch(sizes, count)
                trace = self.d_trace.copy_to_host()
                status = self.d_status.copy_to_host()
                end = time.perf_counter() - t0
                keep, stop_reason = self._book(start, count, trace, status, monitor, bar, times, begin, end,
                                               callback)
                if keep is not None:
                    if keep < count:  # back to the chunk's start, then the iterations the host loop kept
                        self._checkpoint(restore=True)
                        if keep:
                            self._launch(sizes, keep)
                    break
                start += count
            self.to_host()
        return stop_reason

    def _book(self, start, count, trace, status, monitor, bar, times, begin, end, callback):
        """The host loop's bookkeeping for each entry of a chunk → (iterations to keep or None, stop reason).

        Mirrors :meth:`avicore.inference._Engine._run` after the ELBO estimate: a non-finite θ, ELBO or gradient
        in (μ, log σ) stops before the trace entry (status 1), a non-finite local or encoder gradient right after
        ``monitor.record`` (status 2); both keep the state before the iteration.
        """
        for i in range(count):
            t = start + i
            if status[i] == 1:
                return i, "diverged"
            times[t] = begin + (end - begin) * (i + 1) / count
            converged = monitor.record(float(trace[i]))
            if status[i] == 2:
                return i, "diverged"
            bar.update(t + 1, monitor.running_mean())
            if converged:
                return i + 1, "tol"
            if callback is not None:
                self.to_host()
                if callback(self.engine._state(t + 1, float(trace[i]), monitor.running_mean())):
                    return i + 1, "callback"
        return None, "n_iter"
