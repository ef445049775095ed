"""Private pieces of the VI engines' loop: minibatch order, global noise blocks, progress line, argument helpers."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._validate import as_float_array, check_scalar


class Batches:
    """Row batches: None (all rows) without minibatching, else epochs of sorted minibatches from a permutation."""

    def __init__(self, n_obs: int, batch_size: int | None, rng: np.random.Generator) -> None:
        self.n_obs, self.rng = n_obs, rng
        self.size = None if batch_size is None or batch_size >= n_obs else batch_size
        self._queue: list[np.ndarray] = []

    def next(self) -> np.ndarray | None:
        if self.size is None:
            return None
        if not self._queue:
            perm = self.rng.permutation(self.n_obs).astype(np.int64)
            self._queue = [np.sort(perm[i:i + self.size]) for i in range(0, self.n_obs, self.size)][::-1]
        return self._queue.pop()


class GlobalNoise:
    """η[s, j] of each iteration (the counter generator's global stream), drawn for blocks of iterations at once.

    Equal to ``kernels._counter_normal.global_normals(seed, step, n_samples, global_dim)`` for every step; the
    blocks only amortise NumPy's per-call overhead when S · global_dim is small.
    """

    def __init__(self, seed: int, n_samples: int, global_dim: int) -> None:
        self.seed, self.n_samples, self.dim = seed, n_samples, global_dim
        self.block = max(1, min(256, (1 << 14) // max(1, n_samples * global_dim)))
        self.first = 0
        self.values = np.empty((0, n_samples, global_dim))

    def __call__(self, step: int) -> np.ndarray:
        if not self.n_samples * self.dim:  # nothing to draw (a model without globals): no hashing
            return np.empty((self.n_samples, self.dim))
        if not self.first <= step < self.first + self.values.shape[0]:
            from .kernels._counter_normal import STREAM_GLOBAL, first_hashes, row_keys, stream_key, ziggurat_numpy

            zero = np.zeros(1, dtype=np.int64)
            rows = np.concatenate([row_keys(stream_key(self.seed, t, STREAM_GLOBAL), zero)
                                   for t in range(step, step + self.block)])
            draws = ziggurat_numpy(first_hashes(rows, self.n_samples * self.dim))
            self.values = draws.reshape(self.block, self.n_samples, self.dim)
            self.first = step
        return self.values[step - self.first]

    def draw(self, step: int, mu: np.ndarray, log_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(θ (S, dim), η (S, dim), σ) with θ = μ + σ ⊙ η for this step; large factors (S · dim ≥ 2¹⁴, e.g. the
        weights of a neural decoder) in one fused Numba pass (:mod:`avicore.kernels.global_draw`), same η."""
        if self.n_samples * self.dim >= 1 << 14:
            from .kernels.global_draw import draw_global

            return draw_global(self.seed, step, mu, log_sd, self.n_samples)
        sd = np.exp(log_sd)
        eta = self(step)
        return np.ascontiguousarray(mu + sd * eta), eta, sd


class Progress:
    """A hand-written progress line on stderr: bar, iteration, running ELBO, speed (rate-limited redraws)."""

    def __init__(self, label: str, n_iter: int, enabled: bool, interval: float = 0.2) -> None:
        self.label, self.n_iter, self.enabled, self.interval = label, n_iter, enabled, interval
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int, running: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        width = 24
        filled = int(width * done / self.n_iter)
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.n_iter} "
                         f"ELBO {running:.6g}  {rate:.0f} it/s ")
        sys.stderr.flush()

    def close(self, done: int, running: float, status: str) -> None:
        if self.enabled:
            self.update(done, running, force=True)
            sys.stderr.write(f"{status}\n")
            sys.stderr.flush()


def lr_schedule(lr: object) -> Callable[[int], float]:
    """A constant ``lr`` or a schedule ``lr(iteration)`` → a checked schedule."""
    if callable(lr):
        def checked(t: int) -> float:
            value = lr(t)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"lr(iteration) must return a positive finite float; got {value!r} at iteration "
                                 f"{t}.")
            return float(value)

        checked(0)
        return checked
    value = check_scalar(lr, "lr", positive=True)
    return lambda t: value


def fixed_global(fix_global: Any, d_theta: int, point: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, log sd) from a result-like object with ``global_mean``/``global_sd`` or a (mean, sd) pair.

    For a point-mass q(θ) only the mean is used (the sd may be 0 or None).
    """
    if hasattr(fix_global, "global_mean") and hasattr(fix_global, "global_sd"):
        mean, sd = fix_global.global_mean, fix_global.global_sd
    elif isinstance(fix_global, (tuple, list)) and len(fix_global) == 2:
        mean, sd = fix_global
    else:
        raise TypeError(f"fix_global must be None, a VIResult or a (mean, sd) pair; got "
                        f"{type(fix_global).__name__}.")
    mean = as_float_array(mean, "fix_global mean").reshape(-1)
    if point:
        if mean.shape != (d_theta,):
            raise ValueError(f"fix_global must hold a mean of {d_theta} value(s); got shape {mean.shape}.")
        return mean, np.full(d_theta, -np.inf)
    sd = as_float_array(sd, "fix_global sd").reshape(-1)
    if mean.shape != (d_theta,) or sd.shape != (d_theta,):
        raise ValueError(f"fix_global must hold a mean and an sd of {d_theta} value(s) each; got shapes "
                         f"{mean.shape} and {sd.shape}.")
    if (sd <= 0).any():
        raise ValueError(f"fix_global sd must be > 0; got min {float(sd.min())!r}.")
    return mean, np.log(sd)


def blocked_local_terms(model: Any, backend: str, x: np.ndarray, mean: np.ndarray, log_scale: np.ndarray,
                        theta: np.ndarray, seed: int, step: int, index: np.ndarray,
                        after: Callable[[int, np.ndarray, np.ndarray], None] | None = None) -> Any:
    """A-VI's call of the model's fused pass over a chunk of rows → :class:`~avicore.models.base.LocalTerms`.

    A built-in hierarchical model on the Cython backend runs it in the encoder's row blocks on avicore's threads
    (:mod:`avicore._threads`: one thread a block, the per-sample sums added in block order, so the same bits for
    any thread count), which keeps the whole A-VI step on one pool of threads (no OpenMP team spinning beside it);
    other models in one call.

    ``after(b, grad_mean, grad_log_scale)``, if given, is called for every row block b of
    :func:`avicore._threads.row_blocks` with the whole gradient arrays once block b's rows of them are written: in
    the block's own task on the blocked path (the encoder's backward beside the model pass: one pool dispatch),
    else in a :func:`~avicore._threads.run_blocks` of its own after the one call.
    """
    from ._threads import row_blocks, run_blocks
    from .kernels.elbo import local_terms
    from .models.base import LocalTerms
    from .models.hierarchical import HierarchicalModel, check_local_inputs

    blocks = row_blocks(x.shape[0])
    if (backend != "cython" or len(blocks) == 1 or not isinstance(model, HierarchicalModel)
            or type(model).local_terms is not HierarchicalModel.local_terms):
        terms = model.local_terms(x, mean, log_scale, theta, seed=seed, step=step, index=index, backend=backend)
        if after is not None:
            run_blocks(lambda b: after(b, terms.grad_mean, terms.grad_log_scale), len(blocks))
        return terms
    check_local_inputs(model, x, mean, log_scale, theta, index)  # once; the blocks call the kernel directly
    grad_mean, grad_log_scale = np.empty_like(mean), np.empty_like(log_scale)
    log_joint = np.empty((len(blocks), theta.shape[0]))
    grad_global = np.empty((len(blocks), *theta.shape))

    def run(b: int) -> None:
        r0, r1 = blocks[b]
        out = LocalTerms(log_joint=log_joint[b], grad_mean=grad_mean[r0:r1], grad_log_scale=grad_log_scale[r0:r1],
                         grad_global=grad_global[b])
        local_terms(model._model_id, model._params, x[r0:r1], mean[r0:r1], log_scale[r0:r1], theta, seed=seed,
                    step=step, index=index[r0:r1], backend=backend, out=out)
        if after is not None:
            after(b, grad_mean, grad_log_scale)

    run_blocks(run, len(blocks))
    return LocalTerms(log_joint=log_joint.sum(axis=0), grad_mean=grad_mean, grad_log_scale=grad_log_scale,
                      grad_global=grad_global.sum(axis=0))


def encoder_output_grads(grad_mean: np.ndarray, grad_log_scale: np.ndarray,
                         scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A-VI's gradients of the encoder's outputs (rows of them): the model terms' ∂/∂mₙ and ∂/∂log sₙ plus the
    entropy's 1, times the minibatch ``scale`` → (g_mean, g_log_scale)."""
    g_ls = grad_log_scale + 1.0
    g_m = grad_mean
    if scale != 1.0:
        g_ls *= scale
        g_m = g_m * scale
    return g_m, g_ls


class FusedLocals:
    """F-VI's locals (mₙ, log sₙ) when their Adam step runs inside the Cython pass
    (:class:`avicore.kernels.elbo.FusedLocalAdam`).

    The pass reads the current buffer and writes the updated locals into another, so the state the ELBO estimate
    belongs to is intact until the engine accepts the step. Three buffers rotate — current, next, best — so keeping
    the best state and restoring it move no data: the next pass writes into the one buffer that is neither current
    nor best.
    """

    def __init__(self, kernel: Any, mean: np.ndarray, log_scale: np.ndarray) -> None:
        self.kernel = kernel
        self.buffers = [(mean, log_scale)] + [(np.empty_like(mean), np.empty_like(log_scale)) for _ in range(2)]
        self.current, self.best, self.pending = 0, -1, -1
        self.log_sd_range = (0.0, 0.0)

    @classmethod
    def make(cls, engine: Any, x: np.ndarray) -> FusedLocals | None:
        """For an F-VI engine after its setup: the fused locals where they apply (backend cython, no minibatches,
        no model solver of the locals, a built-in hierarchical model), else None."""
        from .kernels.elbo import FusedLocalAdam
        from .models.hierarchical import HierarchicalModel

        model = engine.model
        if (engine.backend_resolved != "cython" or engine.local_solver is not None
                or (engine.batch_size is not None and engine.batch_size < x.shape[0])
                or not isinstance(model, HierarchicalModel)
                or type(model).local_terms is not HierarchicalModel.local_terms):
            return None
        kernel = FusedLocalAdam(model._model_id, model._params, x.shape[0], engine.n_samples)
        return cls(kernel, engine.mean, engine.log_scale)

    def run(self, x: np.ndarray, theta: np.ndarray, seed: int, step: int, adam_mean: Any, adam_log_scale: Any,
            lr: float) -> tuple[np.ndarray, np.ndarray, float, None]:
        """One pass with the Adam step of the locals (both optimisers count the step) → the engine's
        ``_local_pass`` tuple (log_joint, grad_global, Σ log sₙ, None)."""
        adam_mean.lr = adam_log_scale.lr = lr
        adam_step, sqrt_bc2 = adam_mean.advance()
        adam_log_scale.advance()
        self.pending = next(i for i in range(3) if i not in (self.current, self.best))
        (mean, log_scale), (mean_out, ls_out) = self.buffers[self.current], self.buffers[self.pending]
        res = self.kernel(x, mean, log_scale, theta, seed=seed, step=step,
                          moments=(adam_mean.m, adam_mean.v, adam_log_scale.m, adam_log_scale.v), mean_out=mean_out,
                          log_scale_out=ls_out, adam_step=adam_step, beta1=adam_mean.beta1, beta2=adam_mean.beta2,
                          sqrt_bc2=sqrt_bc2, eps=adam_mean.eps)
        adam_mean.finite = adam_log_scale.finite = res.n_nonfinite == 0
        self.log_sd_range = (res.min_log_scale, res.max_log_scale)
        return res.log_joint, res.grad_global, res.sum_log_scale, None

    def accept(self) -> tuple[np.ndarray, np.ndarray]:
        """The last pass's update becomes the current state → (mean, log_scale)."""
        self.current = self.pending
        return self.buffers[self.current]

    def keep_best(self) -> None:
        """The current state is the best so far (before the pending update is accepted)."""
        self.best = self.current

    def restore_best(self) -> tuple[np.ndarray, np.ndarray]:
        """Go back to the best state kept → (mean, log_scale)."""
        self.current = self.best
        return self.buffers[self.current]
