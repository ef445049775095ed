"""Concurrent callers (issue 18): avicore called from several Python threads at once — Dask's threaded scheduler,
a web service — gives exactly what it gives one call after the other.

The compiled kernels release the GIL, so these threads really overlap. Results are bitwise equal because every
kernel's result is independent of the thread count (counter-based random numbers, fixed-order reductions) and no
call leaves state that another reads, except the documented process-wide settings: ``set_num_threads`` (read at
the start of each kernel call; the result does not depend on it) and the BLAS thread limit of ``serial_blas``
(counted, so overlapping fits restore it once, at the end of the last).
"""

from __future__ import annotations

import gc
import pathlib
import re
import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import avicore
from avicore import AVI, FVI, _config, encoders, hmm
from avicore.models import LinearHierarchical


def _in_threads(*calls):
    """Run each call in its own thread, all started together; return their results (re-raising any error)."""
    results, errors = [None] * len(calls), []
    barrier = threading.Barrier(len(calls))

    def target(i, call):
        try:
            barrier.wait()
            results[i] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def _fit(method, seed):
    model = LinearHierarchical()
    x = model.simulate(300, seed=seed).x
    engine = FVI(model, n_samples=8, backend="cython") if method == "FVI" else AVI(
        model, encoders.Polynomial(1), n_samples=8, backend="cython")
    return engine.fit(x, n_iter=150, lr=0.05, seed=seed)


def _hmm_problem(seed, n=4000, k=6):
    rng = np.random.default_rng(seed)
    log_lik = rng.normal(size=(n, k))
    log_transmat = np.log(rng.dirichlet(np.ones(k), size=k))
    log_startprob = np.log(rng.dirichlet(np.ones(k)))
    return log_lik, log_transmat, log_startprob, [n // 4] * 4


def _same_fit(a, b):
    assert a.elbo == b.elbo
    assert_array_equal(a.trace, b.trace)
    assert_array_equal(a.local_mean, b.local_mean)
    assert_array_equal(a.global_mean, b.global_mean)


def test_two_fits_in_two_threads_equal_sequential_fits():
    sequential = [_fit("FVI", 1), _fit("AVI", 2)]
    concurrent = _in_threads(lambda: _fit("FVI", 1), lambda: _fit("AVI", 2))
    for s, c in zip(sequential, concurrent):
        _same_fit(s, c)


def test_a_fit_and_kernel_calls_in_two_threads_equal_sequential_results():
    problem = _hmm_problem(3)
    want_fit = _fit("FVI", 4)
    want_fb = hmm.forward_backward(*problem, backend="cython")

    def kernels():
        return [hmm.forward_backward(*problem, backend="cython") for _ in range(5)]

    got_fit, got_fbs = _in_threads(lambda: _fit("FVI", 4), kernels)
    _same_fit(want_fit, got_fit)
    for fb in got_fbs:
        assert_array_equal(fb.posteriors, want_fb.posteriors)
        assert_array_equal(fb.log_likelihood, want_fb.log_likelihood)


def test_set_num_threads_from_another_thread_does_not_change_results():
    problem = _hmm_problem(5, n=20000)
    before = avicore.get_num_threads()
    want = hmm.forward_backward(*problem, backend="cython")
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.is_set():
            avicore.set_num_threads(1 + i % min(2, _config.available_cpus()))
            i += 1
        return i

    def kernels():
        try:
            return [hmm.forward_backward(*problem, backend="cython") for _ in range(6)]
        finally:
            stop.set()

    try:
        n_flips, got = _in_threads(flip, kernels)
    finally:
        avicore.set_num_threads(before)
    assert n_flips > 0
    for fb in got:
        assert_array_equal(fb.posteriors, want.posteriors)
        assert_array_equal(fb.transition_counts, want.transition_counts)


def test_kernels_keep_their_inputs_while_another_thread_drops_and_rewrites_them():
    """A GIL-released kernel reads only buffers its validated arguments keep alive: deleting the caller's
    references, collecting garbage and reusing the memory from another thread changes nothing."""
    problem = list(_hmm_problem(7, n=20000))
    want = hmm.forward_backward(*problem, backend="cython")
    shared = {"args": [a.copy() if isinstance(a, np.ndarray) else a for a in problem]}
    stop = threading.Event()

    started = threading.Event()

    def kernel():
        args = shared["args"]
        started.set()
        try:
            return hmm.forward_backward(*args, backend="cython")
        finally:
            stop.set()

    def vandal():
        started.wait(10)
        while not stop.is_set():
            shared["args"] = None  # drop the dict's references while the kernel runs
            gc.collect()
            junk = [np.full(20000 * 6, np.nan) for _ in range(4)]  # reuse freed memory with NaN
            del junk
        return True

    got, _ = _in_threads(kernel, vandal)
    assert_array_equal(got.posteriors, want.posteriors)


def test_nogil_sections_never_take_the_gil_back():
    """Cython refuses Python objects inside ``nogil`` at compile time; only ``with gil`` could bring them back.
    The kernels have none."""
    src = pathlib.Path(__file__).resolve().parents[1] / "src_cython"
    sources = sorted(src.glob("*.pyx")) + sorted(src.glob("*.pxd"))
    assert sources, f"no Cython sources under {src}"
    offenders = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\bwith\s+gil\b", line)]
    assert offenders == []


def test_overlapping_fits_restore_the_blas_limit_once_at_the_end():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (serial_blas limits SciPy's BLAS too)

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")

    original = blas_threads()
    a_inside, a_left, b_inside, checked = (threading.Event() for _ in range(4))

    def a():
        with _config.serial_blas():
            a_inside.set()
            b_inside.wait(10)
        a_left.set()

    def b():
        a_inside.wait(10)
        with _config.serial_blas():
            b_inside.set()
            checked.wait(10)

    threads = [threading.Thread(target=f) for f in (a, b)]
    for t in threads:
        t.start()
    a_left.wait(10)
    # b is still inside: a's exit must not have lifted the limit under it. (The limit itself is OpenBLAS's global
    # thread count; read from another thread once OpenBLAS has run, it does not always show the value just set,
    # so the test reads the counter that decides when the limit is lifted.)
    during = (_config._blas_depth, _config._blas_limiter is not None)
    checked.set()
    for t in threads:
        t.join(10)
    assert during == (1, True)
    assert (_config._blas_depth, _config._blas_limiter) == (0, None)
    assert blas_threads() == original
