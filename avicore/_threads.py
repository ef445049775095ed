"""Row blocks on avicore's threads for NumPy code: a fixed block size and a persistent pool.

NumPy's matmul (single-threaded BLAS inside a fit, :func:`avicore._config.serial_blas`) and its ufuncs release the
GIL, so NumPy work split into blocks of rows runs in parallel on Python threads. The block size is fixed
(:data:`ROW_BLOCK`), never derived from the thread count, and every block is computed whole by one thread; partial
results (gradients summed over rows) are kept per block and added in block order by the caller. So results are the
same bits for any :func:`avicore.set_num_threads`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import _config

#: Rows per block. 1,024 rows of a width-32 layer are ~0.1 ms of BLAS: enough to hide the GIL-held Python of a
#: block (~20 NumPy calls), small enough to spread N = 10⁴ rows over 10 threads.
ROW_BLOCK = 1024

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lock = threading.Lock()


def _forget_pool_after_fork() -> None:
    """A forked child inherits the pool's bookkeeping but not its threads (work submitted there would wait
    forever): it starts its own pool on first use."""
    global _pool, _pool_size, _lock
    _pool, _pool_size, _lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def row_blocks(n_rows: int, block: int = ROW_BLOCK) -> list[tuple[int, int]]:
    """The blocks [r0, r1) of ``n_rows`` rows (the last one shorter)."""
    return [(r0, min(n_rows, r0 + block)) for r0 in range(0, n_rows, block)]


def _executor(n_threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < n_threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n_threads, thread_name_prefix="avicore"), n_threads
        return _pool


def run_blocks(fn: Callable[[int], None], n_blocks: int) -> None:
    """Call ``fn(b)`` for every block b in ``range(n_blocks)``, spread over up to ``get_num_threads()`` threads.

    The threads (the calling one among them) take the next block not yet taken, in block order, until none is
    left: a thread slowed by other work on its core takes fewer blocks. Which thread computes a block changes no
    bit of it. ``fn`` must write
    only its block's outputs. Inside a block :func:`avicore.get_num_threads` is 1, so the kernels a block calls
    (Cython ``prange``) run on its thread alone and no OpenMP team is started beside the pool (an OpenMP team's
    workers spin for milliseconds after each parallel region, taking cores from the pool's threads). An exception
    in any block is raised here.
    """
    threads = min(_config.get_num_threads(), n_blocks)
    queue = iter(range(n_blocks))  # next() on it is atomic under the GIL: each block is taken by one thread
    failed: list[BaseException] = []

    def share(k: int) -> None:
        flag = _config._block_thread
        outer, flag.inside = getattr(flag, "inside", False), True
        try:
            for b in queue:
                if failed:
                    return
                fn(b)
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            flag.inside = outer

    if threads <= 1:
        share(0)
        return

    futures = [_executor(threads - 1).submit(share, k) for k in range(1, threads)]
    share(0)
    for f in futures:
        f.result()
