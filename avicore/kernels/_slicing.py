"""Slices of whole sequences for long compiled calls.

A compiled kernel runs its ``prange`` without the GIL, so a pending ``KeyboardInterrupt`` is raised only once the
call returns. The dispatchers of long ragged-batch kernels therefore run them over consecutive slices of whole
sequences of about ``rows`` rows each, returning to Python in between. The boundaries depend only on ``offsets``
and ``rows`` (never on the thread count or on timing), and a batch of at most ``rows`` rows is one slice.
"""

from __future__ import annotations

import itertools

import numpy as np


def sequence_slices(offsets: np.ndarray, rows: int) -> list[tuple[int, int, int, int]]:
    """Slices of whole sequences of about ``rows`` rows each, as ``(s0, s1, r0, r1)``: sequences ``s0:s1``,
    rows ``r0:r1`` (``r0 = offsets[s0]``, ``r1 = offsets[s1]``)."""
    n_seq = len(offsets) - 1
    T = int(offsets[-1])
    rows = max(1, int(rows))
    if T <= rows:
        return [(0, n_seq, 0, T)]
    inner = np.searchsorted(offsets, np.arange(rows, T, rows), side="left")
    bounds = np.unique(np.concatenate([[0], np.clip(inner, 0, n_seq), [n_seq]])).tolist()
    return [(s0, s1, int(offsets[s0]), int(offsets[s1])) for s0, s1 in itertools.pairwise(bounds)]
