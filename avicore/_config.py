"""Tunables shared by every backend: CPU thread count, CUDA launch sizes, Numba fastmath flags.

Nothing here changes global state at import time; Numba's thread count is applied on each kernel call
(:func:`apply_numba_threads`), so ``set_num_threads`` works whenever it is called.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

# fastmath without "nnan"/"ninf": log-space code relies on -inf and NaN checks.
FASTMATH_FLAGS = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

# Threads per block for one-dimensional CUDA launches; tests shrink it under the simulator.
CUDA_THREADS_PER_BLOCK = 128

# Problems smaller than this many work items stay on the CPU when backend="auto" and a GPU is present.
CUDA_AUTO_MIN_SIZE = 200_000

_ENV_THREADS = "AVICORE_NUM_THREADS"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


_warned_counts: set[int] = set()


def _warn_if_oversubscribed(n: int, source: str) -> None:
    """Warn once per count when ``n`` threads exceed the CPUs available (the threads would share cores, and every
    parallel step would wait for a descheduled one)."""
    cpus = available_cpus()
    if n > cpus and n not in _warned_counts:
        _warned_counts.add(n)
        warnings.warn(f"{source} asks for {n} threads but this process may use {cpus} CPU(s): the extra threads "
                      f"share cores and slow avicore's parallel kernels; use at most {cpus}.", RuntimeWarning,
                      stacklevel=4)


def _default_num_threads() -> int:
    value = os.environ.get(_ENV_THREADS)
    if value is None or value.strip() == "":
        return available_cpus()
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{_ENV_THREADS} must be a positive integer; got {value!r}.") from None
    if n < 1:
        raise ValueError(f"{_ENV_THREADS} must be a positive integer; got {value!r}.")
    _warn_if_oversubscribed(n, f"{_ENV_THREADS}={value.strip()}")
    return n


_num_threads: int | None = None
# Set while a thread runs blocks of avicore._threads.run_blocks: kernels called from a block run on one thread (the
# blocks already occupy the cores; nested OpenMP teams would oversubscribe them).
_block_thread = threading.local()


def get_num_threads() -> int:
    """Number of CPU threads avicore's Cython and Numba kernels use.

    Defaults to the ``AVICORE_NUM_THREADS`` environment variable, else to the CPUs this process may run on. A count
    above the CPUs available warns (once per count).
    """
    global _num_threads
    if getattr(_block_thread, "inside", False):  # a block of avicore._threads.run_blocks: one thread each
        return 1
    if _num_threads is None:
        _num_threads = _default_num_threads()
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set the number of CPU threads used by avicore's Cython (OpenMP) and Numba kernels.

    Parameters
    ----------
    n : int
        A positive thread count. Numba caps it at ``numba.config.NUMBA_NUM_THREADS``.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer.

    Warns
    -----
    RuntimeWarning
        Once per count, when ``n`` exceeds the CPUs this process may use.

    Examples
    --------
    >>> import avicore
    >>> avicore.set_num_threads(1)
    >>> avicore.get_num_threads()
    1
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    _warn_if_oversubscribed(n, f"set_num_threads({n})")
    _num_threads = n


def threads_for(work_items: int, min_per_thread: int = 4096) -> int:
    """Threads worth starting for ``work_items`` cheap independent items: at most ``get_num_threads()``, and one
    per ``min_per_thread`` items (a parallel region's fork/join and, on a busy machine, waiting for a descheduled
    thread cost more than a few thousand sub-microsecond items: a 2,000-point quadrature pass took 0.15 ms on one
    thread and 8-24 ms on two on the shared 2-core machine)."""
    return max(1, min(get_num_threads(), work_items // max(1, min_per_thread)))


def apply_numba_threads(n_threads: int | None = None) -> int:
    """Make Numba's parallel loops use ``n_threads`` (default ``get_num_threads()``) threads, capped by Numba's
    pool; return the number set."""
    import numba

    n = min(get_num_threads() if n_threads is None else n_threads, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    return n


@contextlib.contextmanager
def serial_blas() -> Iterator[None]:
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl), for the duration of a fit.

    avicore's own kernels already spread each iteration over the cores (OpenMP / Numba). OpenBLAS's worker threads
    busy-wait for a long time after every call, so a multi-threaded BLAS between two parallel kernels takes a core
    away from them: on 2 cores an A-VI iteration with an MLP(32) encoder at N = 10⁴ ran 2.2× slower. The encoder's
    and decoder's matrix products are small and thin enough that one BLAS thread loses nothing.

    threadpoolctl only limits libraries already loaded, and SciPy ships its own OpenBLAS: it is loaded here first
    (the GP model's triangular products and Cholesky factorisations run on it; loaded lazily during the first fit
    it ran multi-threaded, 40x slower per iteration).

    Threads: the BLAS thread limit is process-wide, so the context is counted: the first of overlapping contexts
    (two fits in two threads) sets the limit and the last to leave restores the original. (threadpoolctl's own
    context, nested across threads, let the first fit to finish lift the limit under the other and the last one
    leave BLAS on one thread for good.)
    """
    global _blas_depth, _blas_limiter
    with _blas_lock:
        if _blas_depth == 0:
            _blas_limiter = _limit_blas()
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limiter: Any = None


def _limit_blas() -> Any:
    """threadpoolctl's limiter holding BLAS at one thread (None without threadpoolctl)."""
    try:
        import scipy.linalg  # noqa: F401  (loads SciPy's BLAS/LAPACK so the limit covers it)
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay usable without it
        return None
    return threadpool_limits(limits=1, user_api="blas")
