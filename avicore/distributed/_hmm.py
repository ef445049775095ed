"""The HMM kernels (:mod:`avicore.hmm`) and emission log-likelihoods (:mod:`avicore.emissions`) on dask arrays.

Emissions are row-wise: any chunking along the rows works, and the result is a dask array chunked like X. The
forward-backward and Viterbi recursions run along each sequence, so every chunk of ``log_lik`` must end on a
sequence boundary (``lengths`` given): each chunk's sequences then run where the chunk lives, with the in-process
kernels. A chunk that splits a sequence is an error naming it; :func:`rechunk_to_sequences` fixes the chunking.
Per-row outputs (posteriors, states) stay dask arrays; the per-sequence log-likelihoods and the counts come back as
NumPy (counts summed over chunks in chunk order).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _validate


def rechunk_to_sequences(x: Any, lengths: Any, rows_per_chunk: int | None = None) -> Any:
    """Rechunk the dask array ``x`` along its rows so that every chunk holds whole sequences.

    Parameters
    ----------
    x : dask.array of shape (n_samples, ...)
        Concatenated sequences (e.g. ``log_lik`` or X).
    lengths : array-like of int
        Length of each sequence (summing to n_samples).
    rows_per_chunk : int, optional
        Target rows per chunk (default: x's largest chunk); a chunk closes at the first sequence boundary at or
        past it (a sequence longer than the target is one chunk).

    Returns
    -------
    dask.array
        ``x`` with chunks along axis 0 that end on sequence boundaries.

    Examples
    --------
    >>> import dask.array as da, numpy as np
    >>> from avicore.distributed import rechunk_to_sequences
    >>> rechunk_to_sequences(da.zeros((10, 2), chunks=(4, 2)), [3, 3, 4]).chunks[0]
    (6, 4)
    """
    offsets = _validate.check_lengths(lengths, x.shape[0])
    target = max(x.chunks[0]) if rows_per_chunk is None else _validate.check_int(rows_per_chunk, "rows_per_chunk",
                                                                                   minimum=1)
    sizes, start = [], 0
    for end in offsets[1:]:
        if end - start >= target or end == offsets[-1]:
            sizes.append(int(end - start))
            start = int(end)
    return x.rechunk({0: tuple(sizes)})


def chunk_lengths(chunks: tuple[int, ...], offsets: np.ndarray, name: str) -> list[np.ndarray]:
    """Each chunk's sequence lengths; a chunk that ends inside a sequence is a ValueError naming the first one."""
    bounds = np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)
    cut = np.searchsorted(offsets, bounds)
    for i, b in enumerate(bounds[1:]):
        j = cut[i + 1]
        if offsets[j] != b:
            raise ValueError(
                f"{name} chunks must end on sequence boundaries; got chunk {i} (rows {bounds[i]}–{b - 1}) ending "
                f"inside sequence {j - 1} (rows {offsets[j - 1]}–{offsets[j] - 1}). Rechunk with "
                f"avicore.distributed.rechunk_to_sequences({name}, lengths).")
    return [np.diff(offsets[cut[i]:cut[i + 1] + 1]) for i in range(len(chunks))]


def _check_rows(arr: Any, name: str, ndim: tuple[int, ...]) -> Any:
    import math

    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimension(s); got a dask array of shape "
                         f"{arr.shape}.")
    if any(math.isnan(c) for c in arr.chunks[0]):
        raise ValueError(f"{name} must have known chunk sizes; got a dask array with unknown ones: call "
                         f"{name}.compute_chunk_sizes() first.")
    return arr.rechunk({k: -1 for k in range(1, arr.ndim)}) if arr.ndim > 1 else arr


def _quiet(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn`` on one chunk, its ImpossibleSequenceWarning left to the client (it names global sequences)."""
    from ..hmm import ImpossibleSequenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImpossibleSequenceWarning)
        return fn(*args, **kwargs)


def _sequence_chunks(fn: Callable, log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any,
                     backend: str) -> tuple[list, list[int]]:
    """Run ``fn`` (forward_backward or viterbi) on each chunk of whole sequences; → persisted per-chunk results."""
    import dask

    from ..hmm import _check_inputs

    if lengths is None:
        raise ValueError("lengths must be given for a dask log_lik (chunks end on sequence boundaries); got None.")
    log_lik = _check_rows(log_lik, "log_lik", (2,))
    n_states = log_lik.shape[1]
    # the small arrays are checked here, once, before anything runs (a one-row dummy stands for log_lik)
    _, lt, ls, offsets = _check_inputs(np.zeros((1, n_states)), log_transmat, log_startprob, None)
    offsets = _validate.check_lengths(lengths, log_lik.shape[0])
    per_chunk = chunk_lengths(log_lik.chunks[0], offsets, "log_lik")
    blocks = log_lik.to_delayed().ravel()
    parts = [dask.delayed(_quiet)(fn, b, lt, ls, lens, backend=backend) for b, lens in zip(blocks, per_chunk)]
    return list(dask.persist(*parts)), list(log_lik.chunks[0])


def forward_backward_dask(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any,
                          backend: str) -> Any:
    """:func:`avicore.hmm.forward_backward` of a dask ``log_lik`` (posteriors a dask array, the rest NumPy)."""
    import dask
    import dask.array as da

    from ..hmm import ForwardBackwardResult, _warn_impossible, forward_backward

    parts, rows = _sequence_chunks(forward_backward, log_lik, log_transmat, log_startprob, lengths, backend)
    small = dask.compute(*[(p.log_likelihood, p.transition_counts, p.initial_counts) for p in parts])
    log_likelihood = np.concatenate([s[0] for s in small])
    counts, initial = np.array(small[0][1], copy=True), np.array(small[0][2], copy=True)
    for s in small[1:]:
        counts += s[1]
        initial += s[2]
    n_states = log_lik.shape[1]
    posteriors = da.concatenate([da.from_delayed(p.posteriors, shape=(n, n_states), dtype=np.float64)
                                 for p, n in zip(parts, rows)])
    _warn_impossible(log_likelihood, "its posteriors are 0")
    return ForwardBackwardResult(log_likelihood, posteriors, counts, initial)


def viterbi_dask(log_lik: Any, log_transmat: Any, log_startprob: Any, lengths: Any, backend: str) -> Any:
    """:func:`avicore.hmm.viterbi` of a dask ``log_lik`` (states a dask array, log_prob NumPy)."""
    import dask
    import dask.array as da

    from ..hmm import ViterbiResult, _warn_impossible, viterbi

    parts, rows = _sequence_chunks(viterbi, log_lik, log_transmat, log_startprob, lengths, backend)
    log_prob = np.concatenate(dask.compute(*[p.log_prob for p in parts]))
    states = da.concatenate([da.from_delayed(p.states, shape=(n,), dtype=np.int64) for p, n in zip(parts, rows)])
    _warn_impossible(log_prob, "its Viterbi path is arbitrary")
    return ViterbiResult(log_prob, states)


def emission_dask(fn: Callable, X: Any, *params: Any) -> Any:
    """An emission log-likelihood ``fn(X, *params)`` of a dask X, chunk by chunk (a dask array chunked like X)."""
    X = _check_rows(X, "X", (1, 2) if fn.__name__ != "categorical_log_lik" else (1,))
    n_states = fn(np.zeros((1, *X.shape[1:]), dtype=X.dtype), *params).shape[1]  # checks the parameters now
    extra = {"new_axis": 1} if X.ndim == 1 else {}
    return X.map_blocks(fn, *params, dtype=np.float64, chunks=(X.chunks[0], (n_states,)), **extra)
