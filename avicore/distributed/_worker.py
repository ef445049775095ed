"""What a worker keeps during a distributed fit: its chunks of rows and their per-row state (a Dask actor).

Each chunk runs the in-process engine's own methods on its rows (:meth:`FVI._local_pass`, :meth:`FVI._step_locals`,
:meth:`AVI._local_pass`): a chunk object carries the attributes those methods read (x, the locals, their Adam
states, ``index`` = the chunk's global row numbers), so the maths of an iteration lives once.

F-VI's step is fused into one call per iteration: the call first applies the previous iteration's pending local
Adam step (and, before it, saves the best state when the client says the previous estimate was the best so far —
the in-process loop's order: record, keep best, update), then runs this iteration's pass.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..inference import _AVI_CHUNK_ROWS, AVI, FVI, _Diverged
from ..models.base import LatentVariableModel


def _validated(model: LatentVariableModel, x: np.ndarray, start: int) -> np.ndarray:
    """``model.validate_data`` of one chunk; an error names the chunk's rows (its indices are the chunk's own)."""
    try:
        return model.validate_data(x)
    except ValueError as err:
        raise ValueError(f"{err} (in the chunk of rows {start}–{start + len(x) - 1} of x)") from None


class FVIChunk:
    """One chunk of an F-VI fit: its rows of x, q(zₙ)'s parameters and their Adam moments."""

    _init_locals = FVI._init_locals
    _local_pass = FVI._local_pass
    _step_locals = FVI._step_locals

    def __init__(self, model: LatentVariableModel, x: np.ndarray, start: int, lr: float, backend: str) -> None:
        self.model, self.lr, self.backend_resolved = model, lr, backend
        self.fused = None  # FVI._local_pass's unfused path: the pending step is applied by flush()
        self.x = _validated(model, x, start)
        self.index = np.arange(start, start + self.x.shape[0], dtype=np.int64)
        self._init_locals(self.x)
        self.best: tuple[np.ndarray, np.ndarray] | None = None
        self.pending: tuple[Any, np.ndarray | None] | None = None

    def flush(self, keep_best: bool, lr: float | None) -> bool:
        """Save the best state if asked, then apply the pending local step with ``lr``; → its finiteness."""
        if keep_best:
            self.best = (self.mean.copy(), self.log_scale.copy())
        pending, self.pending = self.pending, None
        if lr is None or pending is None:
            return True
        return self._step_locals(pending[0], pending[1], lr)

    def step(self, keep_best: bool, lr: float | None, rows: np.ndarray | None, theta: np.ndarray, seed: int,
             step: int, scale: float) -> tuple | None:
        """→ (log_joint (S,), grad_global (S, dθ), Σ log sₙ of the batch rows, min and max log sₙ), or None when
        the pending step was not finite."""
        if not self.flush(keep_best, lr):
            return None
        lo, hi = float(self.log_scale.min(initial=math.inf)), float(self.log_scale.max(initial=-math.inf))
        if rows is not None and rows.size == 0:
            return (np.zeros(theta.shape[0]), np.zeros(theta.shape), 0.0, lo, hi)
        log_joint, grad_global, sum_log_scale, grads = self._local_pass(rows, theta, seed, step, scale)
        self.pending = (grads, rows)
        return log_joint, grad_global, sum_log_scale, lo, hi

    def restore_best(self) -> None:
        if self.best is not None:
            np.copyto(self.mean, self.best[0])
            np.copyto(self.log_scale, self.best[1])

    def locals(self, params: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return self.mean, self.log_scale

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint needs (the client flushes the pending step first)."""
        from ._checkpoint import adam_state

        out = {"mean": self.mean, "log_scale": self.log_scale, **adam_state(self.adam_mean, "adam_mean"),
               **adam_state(self.adam_log_scale, "adam_log_scale")}
        if self.best is not None:
            out["best_mean"], out["best_log_scale"] = self.best
        return out

    def load(self, state: dict[str, Any]) -> None:
        from ._checkpoint import set_adam_state

        np.copyto(self.mean, state["mean"])
        np.copyto(self.log_scale, state["log_scale"])
        set_adam_state(self.adam_mean, "adam_mean", state)
        set_adam_state(self.adam_log_scale, "adam_log_scale", state)
        self.best = (np.array(state["best_mean"]), np.array(state["best_log_scale"])) if "best_mean" in state else None
        self.pending = None


class AVIChunk:
    """One chunk of an A-VI fit: its rows of x and their encoder design rows (window (0,))."""

    _local_pass = AVI._local_pass

    def __init__(self, model: LatentVariableModel, x: np.ndarray, start: int, bound: Any, n_glob: int,
                 backend: str) -> None:
        from ..encoders import window_inputs

        self.model, self.bound, self.n_glob, self.backend_resolved = model, bound, n_glob, backend
        self.x = _validated(model, x, start)
        self.index = np.arange(start, start + self.x.shape[0], dtype=np.int64)
        self.design = bound.design(window_inputs(model.encoder_inputs(self.x), (0,)))
        self.chunk, self.weight_decay = _AVI_CHUNK_ROWS, 0.0  # the client adds the weight decay once
        self.params = np.empty(0)

    def step(self, keep_best: bool, lr: float | None, rows: np.ndarray | None, theta: np.ndarray, seed: int,
             step: int, scale: float, params: np.ndarray) -> tuple | None:
        """→ (log_joint, grad_global, Σ log sₙ, min and max log sₙ of the batch rows, ∂/∂φ), or None when the
        encoder's output is not finite."""
        self.params = params
        if rows is not None and rows.size == 0:
            return (np.zeros(theta.shape[0]), np.zeros(theta.shape), 0.0, math.inf, -math.inf,
                    np.zeros(params.size - self.n_glob))
        try:
            log_joint, grad_global, sum_log_scale, (g_phi,) = self._local_pass(rows, theta, seed, step, scale)
        except _Diverged:
            return None
        return log_joint, grad_global, sum_log_scale, *self.log_sd_range, g_phi

    def locals(self, params: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from ..inference import _encode_all

        return _encode_all(self.bound, params[self.n_glob:], self.design)

    def restore_best(self) -> None:
        """A-VI keeps no per-row state: the client restores φ."""

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        """Nothing per row to load."""


class ChunkGroup:
    """The chunks one worker holds (a Dask actor: ``client.submit(ChunkGroup, ..., actor=True)``)."""

    def __init__(self, kind: str, model: LatentVariableModel, backend: str, starts: list[int],
                 blocks: list[np.ndarray], **options: Any) -> None:
        from .._config import serial_blas, set_num_threads
        from ._cluster import worker_threads

        set_num_threads(worker_threads())  # the worker's threads, not every core of the machine
        # NumPy's BLAS on one thread while this fit's chunks live here, as in an in-process fit (entering
        # threadpoolctl's limit costs ~1 ms: once per fit, not per iteration); undone when the actor goes.
        self._blas = serial_blas()
        self._blas.__enter__()
        if kind == "F-VI":
            self.chunks = [FVIChunk(model, b, s, options["lr"], backend) for s, b in zip(starts, blocks)]
        else:
            self.chunks = [AVIChunk(model, b, s, options["bound"], options["n_glob"], backend)
                           for s, b in zip(starts, blocks)]

    def step(self, keep_best: bool, lr: float | None, rows: list[np.ndarray | None], theta: np.ndarray, seed: int,
             step: int, scale: float, *params: np.ndarray) -> list:
        """One iteration's pass over every chunk; → the per-chunk partial sums, in chunk order."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return [c.step(keep_best, lr, r, theta, seed, step, scale, *params) for c, r in zip(self.chunks, rows)]

    def __del__(self) -> None:
        blas = getattr(self, "_blas", None)
        if blas is not None:
            blas.__exit__(None, None, None)

    def flush(self, keep_best: bool, lr: float | None) -> bool:
        return all([c.flush(keep_best, lr) for c in self.chunks]) if isinstance(self.chunks[0], FVIChunk) else True

    def restore_best(self) -> None:
        for c in self.chunks:
            c.restore_best()

    def estimate(self, local: int, params: np.ndarray | None, global_mean: np.ndarray, global_log_sd: np.ndarray,
                 n_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The final ELBO estimate's sums over one chunk: (log p(θ_s), Σₙ log p(zₙ, xₙ | θ_s), Σ log sₙ)."""
        from ..diagnostics import sample_log_joint

        c = self.chunks[local]
        mean, log_sd = c.locals(params)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            log_prior, log_joint = sample_log_joint(c.model, c.x, mean, log_sd, global_mean, global_log_sd,
                                                    n_samples=n_samples, seed=seed, backend=c.backend_resolved,
                                                    index=c.index)
        return log_prior, log_joint, float(np.sum(log_sd))

    def locals(self, local: int, params: np.ndarray | None) -> np.ndarray:
        """One chunk's (mean, log sd) stacked as (n_rows, 2, latent_dim) (copies)."""
        mean, log_sd = self.chunks[local].locals(params)
        return np.stack([mean, log_sd], axis=1)

    def save(self, paths: list[str]) -> None:
        """Write each chunk's state to its checkpoint file (``np.savez``; no pickle)."""
        for c, path in zip(self.chunks, paths):
            state = c.state()
            if state:
                tmp = path + ".tmp.npz"
                np.savez(tmp, **state)
                os.replace(tmp, path)

    def load(self, paths: list[str]) -> None:
        for c, path in zip(self.chunks, paths):
            if isinstance(c, FVIChunk):
                with np.load(path, allow_pickle=False) as saved:
                    c.load(dict(saved))
