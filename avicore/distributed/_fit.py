"""The distributed executor of the F-VI / A-VI loop: the engine's own loop, the rows' passes on Dask workers.

:func:`fit_distributed` (called by ``FVI.fit`` / ``AVI.fit`` when ``x`` is a dask array) turns the engine into a
:class:`DistributedFVI` or :class:`DistributedAVI` — the same class with the hooks of
:meth:`avicore.inference._Engine._run` that touch the rows overridden — and runs
:meth:`~avicore.inference._Engine._execute`. Validation, q(θ)'s noise, the ELBO estimate, the gradient in q(θ),
Adam on q(θ) (and φ), the convergence and divergence checks, the minibatch order and the result stay on the client,
in the in-process code. Each iteration sends every worker one message — (keep-best flag, the pending local step's
learning rate, its chunks' rows of the batch, θ_s, seed, iteration, N/B; A-VI adds q(θ)'s parameters and φ) — and
each chunk answers with its partial sums: log p(zₙ, xₙ | θ_s) and its gradient in θ_s summed over its rows (S and
S·dθ numbers), Σ log sₙ, the range of log sₙ, and A-VI's ∂/∂φ. The client adds them in chunk order.

Supported: models whose rows are independent given θ (``model.supports_minibatch``) and, for A-VI, the window
``(0,)`` (the encoder reads xₙ alone, so every chunk's inputs are its own). A-VI binds its encoder (the
standardisation of its inputs) to the whole data, so the client reads x once at the start of an A-VI fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..inference import AVI, FVI, FitState, _Diverged
from ..optim import Adam
from ._cluster import Layout, WorkerLostError, fit_client, layout, rows_text
from ._worker import ChunkGroup


def fit_distributed(engine: FVI | AVI, x: Any, client: Any, n_iter: int, lr: Any, seed: Any, tol: Any,
                    progress: bool, tol_window: int, fix_global: Any, callback: Any,
                    checkpoint_dir: Any = None, checkpoint_every: Any = None) -> Any:
    """Run ``engine``'s fit of the dask array ``x`` on a Dask cluster (see the module docstring)."""
    model = engine.model
    if not model.supports_minibatch:
        raise ValueError(f"x must be a NumPy array for {type(model).__name__}: its terms couple neighbouring rows, "
                         f"so its fits run in one process; got a dask array.")
    if engine.method == "A-VI" and engine.window != (0,):
        raise ValueError(f"window must be (0,) for a distributed A-VI fit (a chunk sees only its own rows); got "
                         f"{engine.window}.")
    if checkpoint_dir is not None or checkpoint_every is not None:
        from ._checkpoint import Checkpoints

        checkpoints = Checkpoints(checkpoint_dir, checkpoint_every)
    else:
        checkpoints = None
    cls = DistributedFVI if engine.method == "F-VI" else DistributedAVI
    dist = cls.__new__(cls)
    dist.__dict__.update(vars(engine))
    with fit_client(client) as (active, owned):
        dist.client, dist.owned, dist.checkpoints = active, owned, checkpoints
        with active.as_current():  # actor handles find their client as the current one
            return dist._execute(x, n_iter, lr, seed, tol, progress, tol_window, fix_global, callback)


def _in_order(parts: list, k: int) -> Any:
    """Σ over chunks of field k, added in chunk order."""
    acc = np.array(parts[0][k], dtype=np.float64, copy=True)
    for p in parts[1:]:
        acc += p[k]
    return acc


class _Remote:
    """The cluster side shared by the two engines: validation, the actors, one call per worker, the final sums."""

    _remote = True
    client: Any
    owned: bool
    layout: Layout

    def _validate_x(self, x: Any) -> Any:
        model = self.model
        if x.ndim == 1 and model.obs_dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != model.obs_dim:
            raise ValueError(f"x must have shape (n_obs, {model.obs_dim}); got a dask array of shape {x.shape}.")
        if any(math.isnan(c) for c in x.chunks[0]):
            raise ValueError("x must have known chunk sizes; got a dask array with unknown ones: call "
                             "x.compute_chunk_sizes() first.")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"x must hold real numbers; got a dask array of dtype {x.dtype}.")
        if x.shape[0] == 0:
            raise ValueError("x must have at least one row; got 0.")
        x = x.astype(np.float64)
        return x.rechunk({1: -1}) if len(x.chunks[1]) > 1 else x

    def _start(self, x: Any, **options: Any) -> None:
        """Place the chunks on the workers, each group of them in one actor (the data move there once)."""
        self.layout = lay = layout(self.client, x.chunks[0])
        blocks = x.to_delayed().ravel()
        futures = self.client.compute([blocks[i] for i in lay.blocks])
        self.actor_futures = [
            self.client.submit(ChunkGroup, self.method, self.model, self.backend_resolved,
                               [int(lay.offsets[c]) for c in chunks], [futures[c] for c in chunks],
                               workers=[w], allow_other_workers=False, actor=True, pure=False, **options)
            for w, chunks in zip(lay.workers, lay.groups)]
        self.actors = [self._answer(f, g, -1) for g, f in enumerate(self.actor_futures)]
        del futures

    def _lost(self, group: int, iteration: int) -> WorkerLostError:
        chunks = self.layout.groups[group]
        when = "while the chunks were being placed" if iteration < 0 else f"at iteration {iteration}"
        return WorkerLostError(
            f"worker {self.layout.workers[group]} was lost {when}; it held {rows_text(chunks, self.layout.offsets)}. "
            f"The fit stopped (no result without them): rerun it, with checkpoint_dir= to resume from the last "
            f"checkpoint.", max(iteration, 0), tuple(chunks))

    def _answer(self, future: Any, group: int, iteration: int) -> Any:
        """A worker's answer; a lost worker raises :class:`WorkerLostError` naming the iteration and chunks."""
        from distributed.comm.core import CommClosedError

        try:
            return future.result()
        except (CommClosedError, OSError, TimeoutError) as err:
            raise self._lost(group, iteration) from err

    def _call(self, method: str, per_group: list[tuple], iteration: int) -> list:
        """Call ``method`` on every worker's actor at once; → the answers in group order."""
        futures = []
        for g, (actor, args) in enumerate(zip(self.actors, per_group)):
            try:
                futures.append(getattr(actor, method)(*args))
            except RuntimeError as err:  # the handle already knows its worker is gone
                if "Worker holding Actor was lost" not in str(err):
                    raise
                raise self._lost(g, iteration) from err
        return [self._answer(f, g, iteration) for g, f in enumerate(futures)]

    def _pass(self, rows: np.ndarray | None, keep: bool, lr: float | None, theta: np.ndarray, seed: int,
              step: int, scale: float, *params: np.ndarray) -> list:
        """One iteration on every chunk; → the per-chunk partial sums in chunk order (None: not finite)."""
        share = self.layout.split(rows)
        answers = self._call("step", [(keep, lr, [share[c] for c in chunks], theta, seed, step, scale, *params)
                                      for chunks in self.layout.groups], step)
        parts = [p for group in answers for p in group]
        if any(p is None for p in parts):
            raise _Diverged
        self.log_sd_range = (min(p[3] for p in parts), max(p[4] for p in parts))
        return parts

    def _local_log_sd_range(self):
        return self.log_sd_range

    def _per_chunk(self, method: str, *args: Any) -> list:
        """``method(local_index, *args)`` on every chunk; → the answers in chunk order."""
        futures = [(g, getattr(self.actors[g], method)(j, *args))
                   for g, chunks in enumerate(self.layout.groups) for j in range(len(chunks))]
        return [self._answer(f, g, -1) for g, f in futures]

    def _final_values(self, local_mean, local_log_sd, global_mean, global_log_sd):
        from ..diagnostics import estimate_entropy

        self._flush()
        parts = self._per_chunk("estimate", self._phi_or_none(), global_mean, global_log_sd, self.elbo_samples,
                                self.key)
        log_joint = _in_order(parts, 1)
        sum_log_sd = 0.0
        for p in parts:
            sum_log_sd += p[2]
        entropy = estimate_entropy(sum_log_sd, self.n_obs * self.model.latent_dim, global_log_sd)
        return parts[0][0] + log_joint + entropy, entropy

    def _log_evidence(self) -> None:
        return None  # needs all of x in one process: not computed for a distributed fit

    def _locals(self):
        """(mean, log sd) of every q(zₙ) as dask arrays chunked like x (held by the workers; gathered into the
        client's memory when the cluster was started for this fit only)."""
        import dask
        import dask.array as da

        self._flush()
        lay, d, params = self.layout, self.model.latent_dim, self._phi_or_none()
        if self.owned:
            stacked = np.concatenate(self._per_chunk("locals", params))
            arr = da.from_array(stacked, chunks=(tuple(np.diff(lay.offsets)), 2, d))
        else:
            futures = [self.client.submit(_chunk_locals, self.actors[g], j, params, workers=[w], pure=False)
                       for g, (w, chunks) in enumerate(zip(lay.workers, lay.groups)) for j in range(len(chunks))]
            for g, f in zip([g for g, chunks in enumerate(lay.groups) for _ in chunks], futures):
                self._answer(f, g, -1)  # computed before the actors go
            arr = da.concatenate([da.from_delayed(dask.delayed(f), shape=(int(n), 2, d), dtype=np.float64)
                                  for f, n in zip(futures, np.diff(lay.offsets))])
        return arr[:, 0, :], arr[:, 1, :]

    def _resume(self, health, batches, times):
        return 0 if self.checkpoints is None else self.checkpoints.restore(self, health, batches, times)

    def _checkpoint(self, done, health, batches, times):
        if self.checkpoints is not None and done % self.checkpoints.every == 0:
            self.checkpoints.save(self, done, health, batches, times)

    # -- hooks the engines fill --------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Apply what is pending on the workers (F-VI's last local step)."""

    def _phi_or_none(self) -> np.ndarray | None:
        return None


def _chunk_locals(actor: Any, local: int, params: np.ndarray | None) -> np.ndarray:
    """A task on the chunk's worker: its locals, stacked (n_rows, 2, latent_dim), kept there as a Dask result."""
    return actor.locals(local, params).result()


class DistributedFVI(_Remote, FVI):
    """F-VI with each chunk's rows, q(zₙ) and their Adam moments on a Dask worker (see the module docstring)."""

    def _setup(self, x, seed, rng):
        self.adam_global = Adam(self.glob.shape, lr=self.lr, maximize=True)
        self.best_glob = np.empty_like(self.glob)
        self.local_solver = self.fused = None  # the chunks' own passes (FVIChunk) do the rows
        self.pending_keep, self.pending_lr = False, None
        self._start(x, lr=self.lr)

    def _local_pass(self, rows, theta, seed, step, scale):
        keep, lr = self.pending_keep, self.pending_lr
        self.pending_keep, self.pending_lr = False, None
        parts = self._pass(rows, keep, lr, theta, seed, step, scale)
        sum_log_scale = 0.0
        for p in parts:
            sum_log_scale += p[2]
        return _in_order(parts, 0), _in_order(parts, 1), sum_log_scale, None

    def _step_locals(self, grads, rows, lr):
        self.pending_lr = lr  # applied by the workers at the start of the next call (a non-finite step fails it)
        return True

    def _flush(self):
        if self.pending_keep or self.pending_lr is not None:
            keep, lr = self.pending_keep, self.pending_lr
            self.pending_keep, self.pending_lr = False, None
            self._call("flush", [(keep, lr)] * len(self.actors), -1)

    def _keep_best(self):
        np.copyto(self.best_glob, self.glob)
        self.pending_keep = True

    def _restore_best(self):
        self._flush()
        np.copyto(self.glob, self.best_glob)
        self._call("restore_best", [()] * len(self.actors), -1)

    def _state(self, iteration, elbo, running):
        d_theta = self.model.global_dim
        return FitState(iteration=iteration, elbo=elbo, running_elbo=running, global_mean=self.glob[:d_theta].copy(),
                        global_log_sd=self.glob[d_theta:].copy())


class DistributedAVI(_Remote, AVI):
    """A-VI with each chunk's rows (and encoder design rows) on a Dask worker; φ and q(θ) on the client."""

    def _setup(self, x, seed, rng):
        AVI._setup(self, np.asarray(x), seed, rng)  # binds the encoder to the whole data's inputs
        del self.design
        self._start(x, bound=self.bound, n_glob=self.n_glob)

    def _local_pass(self, rows, theta, seed, step, scale):
        phi = self.params[self.n_glob:]
        parts = self._pass(rows, False, None, theta, seed, step, scale, self.params)
        sum_log_scale = 0.0
        for p in parts:
            sum_log_scale += p[2]
        g_phi = _in_order(parts, 5)
        if self.weight_decay:
            g_phi -= self.weight_decay * phi
        return _in_order(parts, 0), _in_order(parts, 1), sum_log_scale, (g_phi,)

    def _phi_or_none(self):
        return self.params
