"""The Dask client of a distributed fit, the chunk layout of its data and the placement of chunks on workers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


class WorkerLostError(RuntimeError):
    """A worker holding chunks of a distributed fit was lost: the fit stops (it never continues without them).

    Attributes
    ----------
    iteration : int
        The iteration whose pass over the rows failed.
    chunks : tuple of int
        Indices of the chunks (along the rows) the lost worker held.
    """

    def __init__(self, message: str, iteration: int, chunks: tuple[int, ...]) -> None:
        super().__init__(message)
        self.iteration, self.chunks = iteration, chunks


@contextlib.contextmanager
def fit_client(client: object) -> Iterator[tuple[object, bool]]:
    """``(client, owned)``: the given client, else the current one, else a LocalCluster of processes (owned:
    started here and closed when the block ends)."""
    from distributed import Client, LocalCluster
    from distributed.client import default_client

    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client or None; got {type(client).__name__}.")
        yield client, False
        return
    try:
        yield default_client(), False
        return
    except ValueError:  # no current client: start one for this fit
        pass
    from .._config import available_cpus

    cluster = LocalCluster(n_workers=max(1, available_cpus()), threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    own = Client(cluster, set_as_default=False)
    try:
        yield own, True
    finally:
        own.close()
        cluster.close()


@dataclass(frozen=True)
class Layout:
    """Chunks along the rows and their workers.

    Attributes
    ----------
    offsets : ndarray of int64, shape (n_chunks + 1,)
        First row of each chunk (empty chunks of the user's array dropped), then n_obs.
    blocks : list of int
        Index of each chunk among the dask array's blocks along axis 0.
    workers : list of str
        The worker address of each group; ``groups[g]`` lists the chunks group g holds (contiguous, ascending).
    groups : list of list of int
    """

    offsets: np.ndarray
    blocks: list[int]
    workers: list[str]
    groups: list[list[int]]

    @property
    def n_chunks(self) -> int:
        return len(self.blocks)

    def split(self, rows: np.ndarray | None) -> list[np.ndarray | None]:
        """Each chunk's share of a sorted batch of global rows, as rows of the chunk (None: all its rows)."""
        if rows is None:
            return [None] * self.n_chunks
        cut = np.searchsorted(rows, self.offsets)
        return [rows[cut[i]:cut[i + 1]] - self.offsets[i] for i in range(self.n_chunks)]


def layout(client: object, row_chunks: tuple[int, ...]) -> Layout:
    """Place the non-empty chunks on the client's workers: contiguous runs of chunks, in address order."""
    sizes = np.asarray(row_chunks, dtype=np.int64)
    blocks = [int(i) for i in np.flatnonzero(sizes > 0)]
    offsets = np.concatenate([[0], np.cumsum(sizes[blocks])]).astype(np.int64)
    addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not addresses:
        raise RuntimeError("the Dask cluster has no workers; start some (or pass client=None for a LocalCluster).")
    n_groups = min(len(addresses), len(blocks))
    groups = [[] for _ in range(n_groups)]
    for c in range(len(blocks)):
        groups[c * n_groups // len(blocks)].append(c)
    return Layout(offsets=offsets, blocks=blocks, workers=addresses[:n_groups], groups=groups)


def rows_text(chunks: list[int], offsets: np.ndarray) -> str:
    """'chunks 0–3 (rows 0–39999)' for error messages."""
    lo, hi = min(chunks), max(chunks)
    ids = f"chunk {lo}" if lo == hi else f"chunks {lo}–{hi}"
    return f"{ids} (rows {offsets[lo]}–{offsets[hi + 1] - 1})"


def worker_threads() -> int:
    """This worker's thread count (1 outside a worker)."""
    from distributed import get_worker

    try:
        return max(1, int(get_worker().state.nthreads))
    except (ValueError, AttributeError):
        return 1

