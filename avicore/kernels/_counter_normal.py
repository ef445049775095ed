"""Counter-based standard normal draws: ε = f(seed, step, stream, index, counter), identical on every backend.

The ELBO-gradient kernels need Monte-Carlo noise that depends only on *what* is drawn, never on the batch, the
thread count or the backend. Each draw is a pure function of its key, built on the 64-bit mixer of
:mod:`avicore.kernels._counter_rng`, written ``mix`` below (all arithmetic modulo 2⁶⁴):

Keying
------
::

    key     = mix(mix(seed ^ (stream · STREAM_GAMMA)) + step · GAMMA)     one per (seed, step, stream)
    row     = mix(key + index · GAMMA)                                     one per data point (its dataset index)
    h₀      = mix(row + (c + 1) · GAMMA),   c = s · dim + j               the draw's first hash
    next(h) = mix(h + RETRY_GAMMA)                                         further hashes of the same draw

``stream`` separates independent uses of one (seed, step): :data:`STREAM_LOCAL` keys the local noise
ε[n, s, j] (``index`` = the row's index in the full data set, ``dim`` = latent_dim) and :data:`STREAM_GLOBAL` keys
the engine's noise for θ, η[s, j] (``index`` = 0, ``dim`` = global_dim).

Hash → normal (256-layer ziggurat, tables in :mod:`avicore.kernels._ziggurat_tables`)
-------------------------------------------------------------------------------------
::

    h = h₀
    loop:
        i = h & 255;  sign = 1 - 2·((h >> 8) & 1);  x = (h >> 11) · 2⁻⁵³ · X[i]
        if x < X[i+1]: return sign · x                                  (≈ 99 % of draws: no transcendental)
        h = next(h)
        if i == 0:                                                      tail beyond R (Marsaglia 1964)
            loop: a = -log U(h) / R; h = next(h); b = -log U(h); h = next(h)
                  if 2b > a²: return sign · (R + a)
        elif F[i+1] + U(h) · (F[i] - F[i+1]) < exp(-x²/2): return sign · x
        else: h = next(h)

with the open uniform U(h) = ((h >> 11) + ½) · 2⁻⁵³ ∈ (0, 1). The fast path is integer work plus one exact and one
rounded multiplication, so its output is bit-identical on every backend; the rare slow paths call ``exp``/``log``,
whose last bit may differ between libm and CUDA (≈1e-16 relative). The same recipe is written in NumPy (vectorised),
Numba (``@njit`` here), Cython (``src_cython/_counter_normal.pxd``) and CUDA (``_counter_normal_cuda.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._counter_rng import GAMMA, MIX_M1, MIX_M2, mix64, mix64_nb, open_uniform, open_uniform_nb
from ._ziggurat_tables import F as _F_LITERAL
from ._ziggurat_tables import R as ZIG_R
from ._ziggurat_tables import X as _X_LITERAL

MASK64 = (1 << 64) - 1
STREAM_GAMMA = 0xD6E8FEB86659FD93
RETRY_GAMMA = 0xD1B54A32D192ED03
#: Stream of the local noise ε[n, s, j] drawn inside ``local_terms``.
STREAM_LOCAL = 0
#: Stream of the engine's noise η[s, j] for the global factor θ.
STREAM_GLOBAL = 1

ZIG_X = np.array(_X_LITERAL, dtype=np.float64)
ZIG_F = np.array(_F_LITERAL, dtype=np.float64)
_TWO_M53 = 1.0 / 9007199254740992.0

_U_GAMMA = np.uint64(GAMMA)
_U_RETRY = np.uint64(RETRY_GAMMA)
_U_255 = np.uint64(255)
_U_1 = np.uint64(1)
_U_8 = np.uint64(8)
_U_11 = np.uint64(11)


# ---------------------------------------------------------------------------------------------------------------
# Keys (Python ints / NumPy uint64 arrays)
# ---------------------------------------------------------------------------------------------------------------

def _mix_int(z: int) -> int:
    """:func:`~avicore.kernels._counter_rng.mix64` on a Python int (exact: the arithmetic is masked to 64 bits)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX_M1) & MASK64
    z = ((z ^ (z >> 27)) * MIX_M2) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, step: int, stream: int) -> int:
    """The per-call key ``mix(mix(seed ^ stream·STREAM_GAMMA) + step·GAMMA)`` as a Python int in [0, 2⁶⁴).

    ``seed`` and ``step`` are non-negative integers (validated by the caller).
    """
    k = _mix_int(int(seed) ^ ((int(stream) * STREAM_GAMMA) & MASK64))
    return _mix_int(k + int(step) * GAMMA)


def row_keys(key: int, index: np.ndarray) -> np.ndarray:
    """``mix(key + index·GAMMA)`` for each (non-negative, int64) index → uint64 array."""
    idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
    return mix64(np.uint64(key) + idx * _U_GAMMA)


def first_hashes(rows: np.ndarray, n_draws: int) -> np.ndarray:
    """h₀ for counters c = 0 … n_draws-1 of each row → uint64 array of shape (len(rows), n_draws)."""
    c1 = np.arange(1, n_draws + 1, dtype=np.uint64)
    return mix64(rows[:, None] + c1[None, :] * _U_GAMMA)


def _next(h: np.ndarray) -> np.ndarray:
    return mix64(h + _U_RETRY)


def ziggurat_numpy(h0: np.ndarray) -> np.ndarray:
    """Standard normal draws from first hashes ``h0`` (any shape), vectorised; see the module docstring."""
    h = np.ascontiguousarray(h0, dtype=np.uint64).ravel()
    out = np.empty(h.size, dtype=np.float64)
    todo = np.arange(h.size)
    while todo.size:
        hh = h[todo]
        layer = (hh & _U_255).astype(np.intp)
        sign = 1.0 - 2.0 * ((hh >> _U_8) & _U_1).astype(np.float64)
        x = (hh >> _U_11).astype(np.int64).astype(np.float64) * _TWO_M53 * ZIG_X[layer]
        fast = x < ZIG_X[layer + 1]
        out[todo[fast]] = sign[fast] * x[fast]
        slow = ~fast
        todo, hh, layer, sign, x = todo[slow], _next(hh[slow]), layer[slow], sign[slow], x[slow]
        tail = layer == 0
        # Tail beyond R: repeat until accepted, each round consuming two hashes.
        t_idx, t_h, t_sign = todo[tail], hh[tail], sign[tail]
        while t_idx.size:
            a = -np.log(open_uniform(t_h)) / ZIG_R
            t_h = _next(t_h)
            b = -np.log(open_uniform(t_h))
            t_h = _next(t_h)
            ok = 2.0 * b > a * a
            out[t_idx[ok]] = t_sign[ok] * (ZIG_R + a[ok])
            t_idx, t_h, t_sign = t_idx[~ok], t_h[~ok], t_sign[~ok]
        # Wedge of layer i >= 1: accept under the curve, else start over with the next hash.
        w = ~tail
        todo, hh, layer, sign, x = todo[w], hh[w], layer[w], sign[w], x[w]
        y = ZIG_F[layer + 1] + open_uniform(hh) * (ZIG_F[layer] - ZIG_F[layer + 1])
        ok = y < np.exp(-0.5 * x * x)
        out[todo[ok]] = sign[ok] * x[ok]
        todo = todo[~ok]
        h[todo] = _next(hh[~ok])
    return out.reshape(np.shape(h0))


def normals_numpy(key: int, index: np.ndarray, n_samples: int, dim: int) -> np.ndarray:
    """ε[n, s, j] for the rows ``index`` of one stream key → float64 array of shape (len(index), n_samples, dim)."""
    rows = row_keys(key, index)
    return ziggurat_numpy(first_hashes(rows, n_samples * dim)).reshape(len(rows), n_samples, dim)


def local_normals(seed: int, step: int, index: np.ndarray, n_samples: int, latent_dim: int) -> np.ndarray:
    """The local noise ε[n, s, j] that ``local_terms`` draws for (seed, step) → (len(index), n_samples, latent_dim).

    Examples
    --------
    >>> import numpy as np
    >>> from avicore.kernels._counter_normal import local_normals
    >>> eps = local_normals(0, 3, np.arange(4), 2, 1)
    >>> eps.shape, bool(np.all(local_normals(0, 3, np.array([2]), 2, 1)[0] == eps[2]))
    ((4, 2, 1), True)
    """
    return normals_numpy(stream_key(seed, step, STREAM_LOCAL), index, n_samples, latent_dim)


def global_normals(seed: int, step: int, n_samples: int, global_dim: int) -> np.ndarray:
    """The engine's noise η[s, j] for θ = μ_θ + σ_θ ⊙ η[s], from the global stream → (n_samples, global_dim).

    Examples
    --------
    >>> from avicore.kernels._counter_normal import global_normals
    >>> global_normals(0, 0, 3, 2).shape
    (3, 2)
    """
    return normals_numpy(stream_key(seed, step, STREAM_GLOBAL), np.zeros(1, dtype=np.int64),
                         n_samples, global_dim)[0]


# ---------------------------------------------------------------------------------------------------------------
# Numba (scalar, inlined into the fused kernels)
# ---------------------------------------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def row_key_nb(key: np.uint64, index: np.int64) -> np.uint64:
    return mix64_nb(key + np.uint64(index) * _U_GAMMA)


@njit(cache=True, inline="always")
def first_hash_nb(row: np.uint64, counter: np.int64) -> np.uint64:
    return mix64_nb(row + np.uint64(counter + 1) * _U_GAMMA)


@njit(cache=True)
def _ziggurat_slow_nb(h: np.uint64, layer: np.int64, sign: float, x: float) -> float:
    while True:
        h = mix64_nb(h + _U_RETRY)
        if layer == 0:
            while True:
                a = -math.log(open_uniform_nb(h)) / ZIG_R
                h = mix64_nb(h + _U_RETRY)
                b = -math.log(open_uniform_nb(h))
                h = mix64_nb(h + _U_RETRY)
                if 2.0 * b > a * a:
                    return sign * (ZIG_R + a)
        y = ZIG_F[layer + 1] + open_uniform_nb(h) * (ZIG_F[layer] - ZIG_F[layer + 1])
        if y < math.exp(-0.5 * x * x):
            return sign * x
        h = mix64_nb(h + _U_RETRY)
        layer = np.int64(h & _U_255)
        sign = 1.0 - 2.0 * np.float64(np.int64((h >> _U_8) & _U_1))
        x = np.float64(np.int64(h >> _U_11)) * _TWO_M53 * ZIG_X[layer]
        if x < ZIG_X[layer + 1]:
            return sign * x


@njit(cache=True, inline="always")
def normal_nb(row: np.uint64, counter: np.int64) -> float:
    """ε for draw ``counter`` (= s·dim + j) of the row keyed ``row``."""
    h = first_hash_nb(row, counter)
    layer = np.int64(h & _U_255)
    sign = 1.0 - 2.0 * np.float64(np.int64((h >> _U_8) & _U_1))
    x = np.float64(np.int64(h >> _U_11)) * _TWO_M53 * ZIG_X[layer]
    if x < ZIG_X[layer + 1]:
        return sign * x
    return _ziggurat_slow_nb(h, layer, sign, x)


@njit(cache=True)
def normals_nb(key: np.uint64, index: np.ndarray, n_samples: np.int64, dim: np.int64) -> np.ndarray:
    """Numba twin of :func:`normals_numpy` (for tests)."""
    out = np.empty((index.size, n_samples, dim))
    for n in range(index.size):
        row = row_key_nb(key, index[n])
        for s in range(n_samples):
            for j in range(dim):
                out[n, s, j] = normal_nb(row, s * dim + j)
    return out


@njit(cache=True)
def first_hashes_nb(key: np.uint64, index: np.ndarray, n_draws: np.int64) -> np.ndarray:
    """Numba twin of ``first_hashes(row_keys(key, index), n_draws)`` (for bit-level tests)."""
    out = np.empty((index.size, n_draws), dtype=np.uint64)
    for n in range(index.size):
        row = row_key_nb(key, index[n])
        for c in range(n_draws):
            out[n, c] = first_hash_nb(row, c)
    return out
