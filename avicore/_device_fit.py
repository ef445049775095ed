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

With the fit-health watcher of issue 20 (``FitHealth``: record, best state, runaway of the running ELBO) the
same entries go through ``record``/``is_best``/``runaway``; its *scale* test (``FitHealth.scales``: a local or
global sd leaving float64's usable range, checked on the parameters before each record) is not applied by this
loop yet — it would need a per-iteration device flag for every row's log sd — so such a fit stops one or two
iterations later, on the running-ELBO test or a non-finite value, returning the same best state.

The arithmetic is the host loop's, in its order (the ELBO estimate, the gradient in (μ, log σ), Adam — dense or
lazy per row — with the same bias corrections); only the order of the sums over rows differs (block tree
reductions instead of chunked sums), so a device fit equals the cython fit with the same seed to rounding
(≤ 1e-10 in the tests).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

#: Iterations between host synchronisations (trace copy, bookkeeping, next schedule upload).
SYNC_EVERY = 100
#: F-VI runs each chunk of iterations in one cooperative (grid-synchronised) launch when the device allows it;
#: False, or a device that refuses, gives two launches an iteration. The numbers are the same for the same grid.
PERSISTENT = True


def supported(engine: Any) -> bool:
    """Whether the device executor runs this engine's fit (else the host loop runs it with the cuda kernels)."""
    from .models.decoder import BayesianDecoder
    from .models.hierarchical import HierarchicalModel

    model = engine.model
    cls = type(model)
    if isinstance(model, BayesianDecoder):
        base_ok = (cls.local_terms is BayesianDecoder.local_terms
                   and cls.log_prior_global is BayesianDecoder.log_prior_global)
    else:
        base_ok = (isinstance(model, HierarchicalModel) and model._model_id in (0, 1) and model.latent_dim == 1
                   and cls.local_terms is HierarchicalModel.local_terms
                   and cls.log_prior_global is HierarchicalModel.log_prior_global)
    if not base_ok:
        return False
    if engine.method == "A-VI":
        from ._encoders_cuda import device_layers

        return device_layers(engine.bound) is not None
    return True


def device_loop(engine: Any, backend: str) -> DeviceLoop | None:
    """The device executor for this fit (called after ``engine._setup``), or None to run the host loop."""
    if backend != "cuda" or not supported(engine):
        return None
    from .models.decoder import BayesianDecoder

    if isinstance(engine.model, BayesianDecoder):
        from ._decoder_fit import DecoderDeviceLoop

        return DecoderDeviceLoop(engine)
    return DeviceLoop(engine)


class DeviceLoop:
    """Device buffers of one fit and the chunked loop over them; call it in place of the host loop."""

    def __init__(self, engine: Any) -> None:
        from .kernels import _fit_cuda as fc

        cfg = self._common(engine, fc.N_CFG)
        model, dev = engine.model, self.cuda.to_device
        n_obs, n_samples, dim = engine.n_obs, engine.n_samples, model.global_dim
        self.k_fvi, self.k_avi, self.k_global, self.k_draw, self.k_persistent = fc.fit_kernels(self.threads)
        cfg[fc.C_PRIOR_SCALE] = model.theta_prior_scale or 0.0
        n_cols = n_samples * (1 + dim) + 3
        self.max_blocks = -(-self.max_rows // self.threads)
        self.model_id = np.int64(model._model_id)
        self.d_mparams, self.d_cfg, self.d_x = dev(model._params), dev(cfg), dev(engine.x)
        self.d_theta, self.d_eta = dev(np.zeros((n_samples, dim))), dev(np.zeros((n_samples, dim)))
        self.d_part, self.d_sums = dev(np.zeros((self.max_blocks, n_cols))), dev(np.zeros(n_cols))
        if self.avi:
            self.encoder = self._device_encoder()
        else:
            loc = np.zeros((6, n_obs))
            loc[0], loc[1] = engine.mean[:, 0], engine.log_scale[:, 0]
            self.d_loc, self.d_counts = self._saved_locals(loc)
        self.d_scale_state = self._scale_state(None if self.avi else engine.log_scale)
        self.persistent_blocks = self._cooperative_grid() if PERSISTENT and not self.avi else None
        if self.persistent_blocks is not None and self.persistent_blocks > self.max_blocks:
            self.d_part = dev(np.zeros((self.persistent_blocks, n_cols)))

    def _common(self, engine: Any, n_cfg: int) -> np.ndarray:
        """The model-independent part: schedule buffers, trace, q(θ)/φ state and Adam moments; → host cfg."""
        from numba import cuda

        from .inference import _HALF_LOG_2PI_E
        from .kernels import _fit_cuda as fc
        from .kernels._counter_normal_cuda import quiet_simulator
        from .kernels._elbo_cuda import _block_threads

        self.engine, self.cuda, self.quiet = engine, cuda, quiet_simulator
        model = engine.model
        self.avi = engine.method == "A-VI"
        self.threads = _block_threads()
        self.persistent_blocks = None
        n_obs = engine.n_obs
        self.n_obs, self.key = n_obs, engine.key
        self.minibatch = engine.batch_size is not None and engine.batch_size < n_obs
        self.max_rows = max_rows = engine.batch_size if self.minibatch else n_obs
        self.sync = max(1, int(SYNC_EVERY))
        adam = engine.adam if self.avi else engine.adam_global
        self.beta1, self.beta2 = adam.beta1, adam.beta2
        cfg = np.zeros(n_cfg)
        cfg[fc.C_CONST_LOCAL] = _HALF_LOG_2PI_E * n_obs * model.latent_dim
        cfg[fc.C_CONST_GLOBAL] = _HALF_LOG_2PI_E * model.global_dim
        cfg[fc.C_POINT] = float(engine.global_q == "point")
        cfg[fc.C_FIXED] = float(engine.fixed_global)
        cfg[fc.C_WEIGHT_DECAY] = engine.weight_decay if self.avi else 0.0
        cfg[fc.C_BETA1], cfg[fc.C_BETA2], cfg[fc.C_EPS] = adam.beta1, adam.beta2, adam.eps
        cfg[fc.C_AVI] = float(self.avi)
        params = engine.params if self.avi else engine.glob
        gstate = np.zeros((3, params.size))
        gstate[0] = params
        dev = cuda.to_device
        self.d_gstate, self.d_grad = dev(gstate), dev(np.zeros(params.size))
        self.d_trace, self.d_status = dev(np.zeros(self.sync)), dev(np.zeros(self.sync, dtype=np.int64))
        # Two host schedules (this chunk's and the previous one's, for a replay that reaches back one iteration)
        # and the device copies of the current one.
        self.h_sets = [self._host_schedule(max_rows), self._host_schedule(max_rows)]
        self.d_keys, self.d_sched, self.d_rows, self.d_n_batch = (dev(a) for a in self.h_sets[0][:4])
        # (live, checkpoint at this chunk's start, checkpoint at the previous chunk's start) for each state array
        self.saved = [(self.d_gstate, dev(gstate), dev(gstate))]
        self.best_saved: list | None = None  # the start of the chunk holding the watcher's best state
        return cfg

    def _scale_state(self, log_scale: np.ndarray | None):
        """[F-VI's rows with a log sd outside FitHealth's usable range, that count for each iteration of the chunk]
        on the device, checkpointed (A-VI: unused zeros)."""
        from .kernels._fit_cuda import _LOG_EPS, _LOG_MAX_SD

        state = np.zeros(self.sync + 1, dtype=np.int64)
        if log_scale is not None:
            state[0] = int(np.count_nonzero(np.any((log_scale < _LOG_EPS) | (log_scale > _LOG_MAX_SD), axis=1)))
        dev = self.cuda.to_device
        d_state = dev(state)
        self.saved.append((d_state, dev(state), dev(state)))
        return d_state

    def _saved_locals(self, loc: np.ndarray) -> tuple:
        """F-VI's local parameters/moments ``loc`` and per-row Adam step counts on the device, checkpointed."""
        dev = self.cuda.to_device
        counts = np.zeros(self.n_obs, dtype=np.int64)
        d_loc, d_counts = dev(loc), dev(counts)
        self.saved += [(d_loc, dev(loc), dev(loc)), (d_counts, dev(counts), dev(counts))]
        return d_loc, d_counts

    def _device_encoder(self):
        """A-VI's encoder on the device, writing its φ gradient after q(θ)'s entries of the gradient vector."""
        from ._encoders_cuda import DeviceEncoder, device_layers
        from .kernels._dense_cuda import Dense

        engine = self.engine
        layers, activation = device_layers(engine.bound)
        return DeviceEncoder(layers, activation, engine.design, self.max_rows, self.minibatch, self.d_gstate[0],
                             self.d_grad, engine.n_glob, Dense())

    def _persistent_args(self, count: int) -> tuple:
        return (self.model_id, self.d_mparams, self.d_cfg, self.d_x, self.d_loc, self.d_counts, self.d_theta,
                self.d_eta, self.d_keys, self.d_sched, self.d_rows, self.d_n_batch, self.d_part, self.d_sums,
                self.d_gstate, self.d_grad, self.d_trace, self.d_status, np.int64(count), self.d_scale_state)

    def _cooperative_grid(self) -> int | None:
        """Blocks of the persistent F-VI kernel (all resident at once), or None when it cannot run here.

        The simulator runs cooperative grids of one block; on a GPU, as many blocks as stay resident (at most one
        per tile of rows), from the compiled kernel's occupancy.
        """
        from .backends import cuda_is_real_gpu

        if not cuda_is_real_gpu():
            return 1
        try:
            special = self.k_persistent.specialize(*self._persistent_args(1))
            kernel = next(iter(special.overloads.values()))
            resident = int(kernel.max_cooperative_grid_blocks(self.threads))
        except Exception:  # no cooperative launch on this device/driver: two launches an iteration
            return None
        self.k_persistent = special  # skips the per-launch type dispatch
        return max(1, min(resident, self.max_blocks)) if resident > 0 else None

    # -- the host side of a chunk ----------------------------------------------------------------------------
    def _host_schedule(self, max_rows: int) -> list:
        """[keys (c, 2) uint64, sched (c, 4), rows (c, B) or (1, 0), n_batch (c,), batch sizes (list)]."""
        return [np.zeros((self.sync, 2), dtype=np.uint64), np.zeros((self.sync, 4)),
                np.zeros((self.sync, max_rows) if self.minibatch else (1, 0), dtype=np.int64),
                np.zeros(self.sync, dtype=np.int64), []]

    def _schedule(self, h: list, start: int, count: int, lr_at: Callable[[int], float], batches: Any) -> None:
        """Fill the host schedule ``h`` of iterations start … start + count − 1 (the host loop's objects)."""
        from .kernels._counter_normal import STREAM_GLOBAL, STREAM_LOCAL, stream_key

        keys, sched, rows_h, n_batch, sizes = h
        sizes.clear()
        for i in range(count):
            t = start + i
            rows = batches.next()
            lr = lr_at(t)
            n = self.n_obs if rows is None else rows.size
            keys[i, 0] = stream_key(self.key, t, STREAM_LOCAL)
            keys[i, 1] = stream_key(self.key, t, STREAM_GLOBAL)
            # Adam's dense step t + 1 (avicore.optim.Adam.step, maximising) and the minibatch scale N/B.
            sched[i] = (lr, lr / (1.0 - self.beta1 ** (t + 1)), math.sqrt(1.0 - self.beta2 ** (t + 1)),
                        1.0 if rows is None else self.n_obs / rows.size)
            if rows is not None:
                rows_h[i, :n] = rows
                n_batch[i] = n
            sizes.append(n)

    def _upload(self, h: list) -> None:
        self.d_keys.copy_to_device(h[0])
        self.d_sched.copy_to_device(h[1])
        if self.minibatch:
            self.d_rows.copy_to_device(h[2])
            self.d_n_batch.copy_to_device(h[3])

    def _launch(self, sizes: list[int], count: int) -> None:
        """Run iterations 0 … count − 1 of the uploaded chunk (launches only; no host synchronisation)."""
        t = self.threads
        if self.persistent_blocks is not None:
            try:
                self.k_persistent[self.persistent_blocks, t](*self._persistent_args(count))
                return
            except Exception:  # a GPU refused the cooperative launch (nothing ran): two launches from now on
                from .backends import cuda_is_real_gpu

                if not cuda_is_real_gpu():
                    raise  # the simulator runs it: a failure there is a bug, not a refusal
                self.persistent_blocks = None
        self.k_draw[1, t](self.d_gstate, self.d_cfg, self.d_keys, 0, self.d_theta, self.d_eta, self.d_scale_state)
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
                                      self.d_n_batch, i, self.d_part, self.d_scale_state)
            self.k_global[1, t](self.d_part, blocks, self.d_sums, self.d_theta, self.d_eta, self.d_gstate,
                                self.d_grad, self.d_cfg, self.d_sched, self.d_keys, i, count, self.d_trace,
                                self.d_status, self.d_scale_state)

    def _checkpoint(self) -> None:
        """Save the live state as this chunk's start; the previous save becomes the previous chunk's."""
        self.saved = [(live, prev, cur) for live, cur, prev in self.saved]
        for live, cur, _ in self.saved:
            cur.copy_to_device(live)

    def _replay(self, keep: int, start: int, count: int, prev_count: int) -> None:
        """Back to the state after ``keep`` iterations (≥ start − 1) from a checkpoint, replaying the schedule."""
        if keep == start + count:
            return
        previous = keep < start
        for live, cur, prev in self.saved:
            live.copy_to_device(prev if previous else cur)
        h = self.h_sets[(start // self.sync - 1) % 2] if previous else self.h_sets[(start // self.sync) % 2]
        n = prev_count - 1 if previous else keep - start
        if n:
            self._upload(h)
            self._launch(h[4], n)

    def to_host(self) -> None:
        """Copy the current parameters into the engine's host arrays (what ``_result`` and ``_state`` read)."""
        engine = self.engine
        params = self.d_gstate[0].copy_to_host()
        if self.avi:
            engine.params[...] = params
        else:
            engine.glob[...] = params
            loc = self.d_loc[:2].copy_to_host()
            engine.mean[...] = loc[0].reshape(engine.mean.shape)
            engine.log_scale[...] = loc[1].reshape(engine.log_scale.shape)

    # -- the loop --------------------------------------------------------------------------------------------
    def __call__(self, n_iter: int, lr_at: Callable[[int], float], batches: Any, monitor: Any, bar: Any,
                 times: np.ndarray, t0: float, callback: Callable | None) -> tuple[str, str, float, float]:
        """Run up to ``n_iter`` iterations; fill ``times``, feed ``monitor``/``bar``/``callback``.

        ``monitor`` is the engine's watcher of the ELBO estimates: a :class:`~avicore.optim.ConvergenceMonitor`,
        or a fit-health watcher (an object with ``record``, ``is_best``, ``best_index``, ``runaway`` and the
        monitor as ``.monitor``), whose best state this loop rebuilds on the device and hands to the engine's
        ``_keep_best``. Returns (stop reason, cause of a divergence or "", the refused estimate (NaN), the last
        learning rate).
        """
        if callback is not None:
            self.sync = 1  # the callback sees every iteration's state
        stop_reason, cause, lr_t, refused = "n_iter", "", math.nan, math.nan
        with self.quiet(), warnings.catch_warnings():
            # The simulator runs the kernels on NumPy scalars in threads (outside the engine's np.errstate): a
            # diverging fit's inf − inf must not warn there, as it does not on a GPU.
            warnings.filterwarnings("ignore", message=".* encountered in scalar", category=RuntimeWarning)
            start, prev_count = 0, 0
            while start < n_iter:
                count = min(self.sync, n_iter - start)
                h = self.h_sets[(start // self.sync) % 2]
                self._schedule(h, start, count, lr_at, batches)
                self._upload(h)
                self._checkpoint()
                begin = time.perf_counter() - t0
                self._launch(h[4], count)
                trace = self.d_trace.copy_to_host()
                status = self.d_status.copy_to_host()
                end = time.perf_counter() - t0
                keep, stop_reason, cause, best, last, refused = self._book(
                    start, count, prev_count, trace, status, monitor, bar, times, begin, end, callback)
                lr_t = lr_at(last)  # the learning rate of the last iteration run, as the host loop reports it
                if best:
                    self._save_best(h, start)
                if keep is not None:
                    if stop_reason == "diverged" and getattr(monitor, "best_index", -1) >= 0:
                        self._to_best(monitor.best_index)  # the watcher's best state, for engine._keep_best
                    else:
                        self._replay(keep, start, count, prev_count)
                    break
                start, prev_count = start + count, count
            self.to_host()
            if stop_reason == "diverged" and getattr(monitor, "best_index", -1) >= 0:
                self.engine._keep_best()
        return stop_reason, cause, refused, lr_t

    def _save_best(self, h: list, start: int) -> None:
        """Keep this chunk's start state and schedule: the watcher's best state lies in it."""
        if self.best_saved is None:
            self.best_saved = [self.cuda.device_array_like(live) for live, _, _ in self.saved]
        for (_, cur, _), kept in zip(self.saved, self.best_saved):
            kept.copy_to_device(cur)
        self.best_h = [a.copy() for a in h[:4]] + [list(h[4])]
        self.best_start = start

    def _to_best(self, best_index: int) -> None:
        """Rebuild the state after ``best_index`` iterations from the saved chunk start."""
        for (live, _, _), kept in zip(self.saved, self.best_saved):
            live.copy_to_device(kept)
        n = best_index - self.best_start
        if n:
            self._upload(self.best_h)
            self._launch(self.best_h[4], n)

    def _book(self, start, count, prev_count, trace, status, monitor, bar, times, begin, end, callback):
        """The host loop's bookkeeping for each entry of a chunk → (iterations whose updates to keep or None,
        stop reason, cause, whether a new best estimate was recorded, the last iteration looked at, the refused
        estimate or NaN).

        Mirrors :meth:`avicore.inference._Engine._run` after the ELBO estimate. A non-finite θ, ELBO or gradient in
        (μ, log σ) at iteration t (status 1) stops before its trace entry; a non-finite local or encoder gradient
        (status 2) right after the record. With a plain monitor the state kept is the one whose ELBO is the last
        entry (t − 1 updates, resp. t); with a fit-health watcher the engine returns the watcher's best state, and
        a scale out of float64's usable range (status 3, flagged on the device) is confirmed and worded by the
        watcher's own ``scales`` on the state of that iteration, rebuilt on the host.
        """
        health = monitor if hasattr(monitor, "runaway") else None
        record = monitor.record
        running = (monitor.monitor if health is not None else monitor).running_mean
        nonfinite = getattr(health, "NONFINITE", "")
        best = False
        for i in range(count):
            t = start + i
            if status[i] == 1:
                return (max(t - 1, 0) if health is None else t), "diverged", nonfinite, best, t, math.nan
            if status[i] == 3 and health is not None:
                cause = self._scales(health, t, start, count, prev_count, i)
                if cause:
                    return t, "diverged", cause, best, t, float(trace[i])
            times[t] = begin + (end - begin) * (i + 1) / count
            converged = record(float(trace[i]))
            if health is not None:
                best = best or health.is_best
                cause = health.runaway()
                if cause:
                    return t, "diverged", cause, best, t, math.nan
            if status[i] == 2:
                return t, "diverged", nonfinite, best, t, math.nan
            bar.update(t + 1, running())
            if converged:
                return t + 1, "tol", "", best, t, math.nan
            if callback is not None:
                self.to_host()
                if callback(self.engine._state(t + 1, float(trace[i]), running())):
                    return t + 1, "callback", "", best, t, math.nan
        return None, "n_iter", "", best, start + count - 1, math.nan

    def _scales(self, health: Any, t: int, start: int, count: int, prev_count: int, i: int) -> str:
        """The watcher's scale test on the state iteration t evaluates (rebuilt from the chunk's checkpoint)."""
        self._replay(t, start, count, prev_count)
        self.to_host()
        engine, d_theta = self.engine, self.engine.model.global_dim
        if self.avi:  # the batch's encoder log sd, as the host's _local_pass records it
            h = self.h_sets[(start // self.sync) % 2]
            rows = np.arange(self.n_obs) if not self.minibatch else h[2][i, :h[3][i]]
            _, log_scale, _ = engine.bound.forward(engine.params[engine.n_glob:], engine.design[rows])
            engine.log_sd_range = (float(log_scale.min(initial=math.inf)), float(log_scale.max(initial=-math.inf)))
        cause = health.scales(engine.glob[:d_theta], engine.glob[d_theta:], *engine._local_log_sd_range())
        # The device flag and the host test agree except at float64 ties on the boundary; a tie stops as well.
        return cause or "a scale parameter left float64's usable range"
