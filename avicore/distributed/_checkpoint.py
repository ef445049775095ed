"""Checkpoints of a distributed fit: write the whole state every k iterations, resume from it exactly.

Layout of ``checkpoint_dir``: ``fit-state.pkl`` (the client's part: q(θ) and φ with their Adam states, the best
state, the convergence/divergence watcher, the minibatch order's generator and queue, the trace's times, and a
fingerprint of the fit) and one ``chunk-<c>-it<k>.npz`` per chunk (F-VI's locals, their Adam moments and step
counts, the best locals), written by the worker holding the chunk — so the directory must be one that every worker
and the client can reach (a shared file system; any local folder for a LocalCluster). The client's file is
replaced atomically after every chunk file of the same iteration is written, so a fit killed at any moment leaves
a consistent checkpoint. ``fit-state.pkl`` is a pickle: load checkpoints you wrote yourself only.

Resuming restores all of it and runs the remaining iterations with the same noise (keyed by the iteration), so the
resumed fit equals the uninterrupted one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import check_int

STATE_FILE = "fit-state.pkl"
#: Client-side arrays and Adam states saved per engine (arrays restored in place: A-VI's q(θ) is a view into
#: ``params``).
_DRIVER = {"F-VI": (("glob", "best_glob"), ("adam_global",)), "A-VI": (("params", "best"), ("adam",))}


def adam_state(adam: Any, prefix: str) -> dict[str, np.ndarray]:
    """An :class:`~avicore.optim.Adam`'s moments, step count and per-row counts, as named arrays."""
    out = {f"{prefix}.m": adam.m, f"{prefix}.v": adam.v, f"{prefix}.t": np.int64(adam.t)}
    if adam.counts is not None:
        out[f"{prefix}.counts"] = adam.counts
    return out


def set_adam_state(adam: Any, prefix: str, state: dict[str, np.ndarray]) -> None:
    np.copyto(adam.m, state[f"{prefix}.m"])
    np.copyto(adam.v, state[f"{prefix}.v"])
    adam.t = int(state[f"{prefix}.t"])
    counts = state.get(f"{prefix}.counts")
    adam.counts = None if counts is None else np.array(counts, dtype=np.int64)


class Checkpoints:
    """Where and how often a distributed fit saves its state (``checkpoint_dir=``, ``checkpoint_every=``)."""

    def __init__(self, directory: Any, every: Any) -> None:
        if directory is None or every is None:
            raise ValueError(f"checkpoint_dir and checkpoint_every must be given together; got checkpoint_dir="
                             f"{directory!r}, checkpoint_every={every!r}.")
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path; got {type(directory).__name__}.")
        self.every = check_int(every, "checkpoint_every", minimum=1)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def fingerprint(engine: Any) -> dict:
        """What must match for a checkpoint to belong to this fit."""
        return {"method": engine.method, "model": repr(engine.model), "encoder": repr(getattr(engine, "encoder", None)),
                "n_obs": int(engine.n_obs), "chunks": [int(o) for o in engine.layout.offsets],
                "seed": int(engine.key), "n_samples": engine.n_samples, "batch_size": engine.batch_size,
                "global_q": engine.global_q}

    def chunk_path(self, chunk: int, done: int) -> str:
        return str(self.dir / f"chunk-{chunk:05d}-it{done}.npz")

    def save(self, engine: Any, done: int, health: Any, batches: Any, times: np.ndarray) -> None:
        """Workers write their chunks, then the client's state replaces the previous checkpoint's."""
        previous = self._done()
        engine._flush()
        engine._call("save", [([self.chunk_path(c, done) for c in chunks],) for chunks in engine.layout.groups],
                     done)
        state = {"fingerprint": self.fingerprint(engine), "done": done, "n_iter": times.size, "health": health,
                 "batches": batches,
                 "times": times[:done].copy(),
                 "driver": self._driver_state(engine)}
        tmp = self.dir / (STATE_FILE + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.dir / STATE_FILE)
        if previous is not None and previous != done:
            for c in range(engine.layout.n_chunks):
                Path(self.chunk_path(c, previous)).unlink(missing_ok=True)

    @staticmethod
    def _driver_state(engine: Any) -> dict[str, np.ndarray]:
        arrays, adams = _DRIVER[engine.method]
        out = {name: getattr(engine, name).copy() for name in arrays}
        for name in adams:
            out.update(adam_state(getattr(engine, name), name))
        return out

    def _done(self) -> int | None:
        path = self.dir / STATE_FILE
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            return int(pickle.load(fh)["done"])

    def restore(self, engine: Any, health: Any, batches: Any, times: np.ndarray) -> int:
        """Load the checkpoint into the engine, its workers, ``health``, ``batches`` and ``times``; → iterations
        done (0 when the directory holds none)."""
        path = self.dir / STATE_FILE
        if not path.exists():
            return 0
        with open(path, "rb") as fh:
            state = pickle.load(fh)
        mine = self.fingerprint(engine)
        differ = sorted(k for k in mine if state["fingerprint"].get(k) != mine[k])
        if differ:
            theirs = ", ".join(f"{k}={state['fingerprint'].get(k)!r}" for k in differ)
            raise ValueError(f"checkpoint_dir must hold this fit's checkpoint or none; {self.dir} holds one of a fit "
                             f"with other {', '.join(differ)} ({theirs}). Choose another checkpoint_dir.")
        done = int(state["done"])
        if state["n_iter"] != times.size:
            raise ValueError(f"n_iter must be the checkpointed fit's n_iter={state['n_iter']} to resume it; got "
                             f"{times.size}.")
        arrays, adams = _DRIVER[engine.method]
        for name in arrays:
            np.copyto(getattr(engine, name), state["driver"][name])
        for name in adams:
            set_adam_state(getattr(engine, name), name, state["driver"])
        engine._call("load", [([self.chunk_path(c, done) for c in chunks],) for chunks in engine.layout.groups], done)
        health.__dict__.update(state["health"].__dict__)
        batches.__dict__.update(state["batches"].__dict__)
        times[:done] = state["times"]
        return done
