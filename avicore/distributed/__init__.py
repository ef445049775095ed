"""avicore on a Dask cluster (``dask.distributed``): F-VI / A-VI fits and the HMM kernels over dask arrays.

Install with ``pip install -e ".[dask]"``. Nothing here is needed for a distributed fit's call itself — pass a
``dask.array`` to :meth:`avicore.FVI.fit` / :meth:`avicore.AVI.fit` (with ``client=``, default the current Dask
client; with none, a ``LocalCluster`` of worker processes is started and closed for the fit). This package holds
the executor behind it:

- :mod:`._cluster`  the client (current, given or embedded), chunk layout and chunk → worker placement;
- :mod:`._worker`   what each worker keeps: its chunks, F-VI's local parameters and Adam moments (a Dask actor);
- :mod:`._fit`      the engines whose hooks ship the global state out and bring partial sums back;
- :mod:`._encode`   an A-VI encoder applied to a dask array chunk by chunk;
- :mod:`._hmm`      :mod:`avicore.hmm`'s forward-backward / Viterbi and :mod:`avicore.emissions` on dask arrays
  (chunks of whole sequences; :func:`rechunk_to_sequences`).

How a distributed fit equals the in-process fit: the iteration loop is the engine's own
(:meth:`avicore.inference._Engine._run`); only the pass over the rows and the local Adam step run on the workers,
with the same code (:class:`~avicore.inference.FVI`'s and :class:`~avicore.inference.AVI`'s methods). The
counter-based generator keys every row's noise by its global index, the minibatch order is drawn on the client as
in-process, and partial sums come back per chunk and are added in chunk order — so the same seed gives the same
numbers up to the rounding of the sums' order (≤ 1e-10 in the tests).
"""

from __future__ import annotations

try:
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised where dask is absent
    raise ImportError("avicore.distributed needs Dask: install the 'dask' extra, pip install -e \".[dask]\" "
                      "(or pip install \"dask[distributed]\").") from err

from ._cluster import WorkerLostError
from ._hmm import rechunk_to_sequences

__all__ = ["WorkerLostError", "rechunk_to_sequences"]
