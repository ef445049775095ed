"""Adam (fused Cython and NumPy paths) vs a scalar transcription of the algorithm; the convergence monitor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from avicore.optim import Adam, ConvergenceMonitor, all_finite, exponential_decay


def _reference_adam(p0, grads, lr, b1=0.9, b2=0.999, eps=1e-8, sign=-1.0, scale=1.0, offset=0.0):
    """Kingma & Ba's Algorithm 1 with PyTorch's placement of ε, one scalar at a time."""
    p = [float(v) for v in p0]
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    for t, g in enumerate(grads, start=1):
        for i in range(len(p)):
            gi = scale * g[i] + offset
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            denom = math.sqrt(v[i]) / math.sqrt(1 - b2 ** t) + eps
            p[i] += sign * lr / (1 - b1 ** t) * m[i] / denom
    return np.array(p)


@pytest.fixture(params=["compiled", "numpy"])
def path(request):
    return request.param


def _adam(shape, path, **kw):
    opt = Adam(shape, **kw)
    if path == "numpy":
        opt._cy = None
    else:
        assert opt._cy is not None, "the compiled Adam kernel is not built"
    return opt


@pytest.mark.parametrize("maximize", [False, True])
def test_dense_step_matches_reference(path, maximize, rng):
    p0 = rng.normal(size=9)
    grads = rng.normal(size=(6, 9)) * np.logspace(-3, 3, 9)
    opt = _adam(9, path, lr=0.05, maximize=maximize)
    p = p0.copy()
    for g in grads:
        p = opt.step(p, g, scale=2.0, offset=0.5)
    ref = _reference_adam(p0, grads, 0.05, sign=1.0 if maximize else -1.0, scale=2.0, offset=0.5)
    assert_allclose(p, ref, rtol=1e-13, atol=1e-14)


def test_dense_step_in_place_and_out_of_place_agree(path, rng):
    p0, g = rng.normal(size=(40000,)), rng.normal(size=(40000,))  # above the parallel threshold
    a, b = _adam(p0.shape, path, lr=0.1), _adam(p0.shape, path, lr=0.1)
    out = a.step(p0, g)
    inplace = p0.copy()
    b.step(inplace, g, out=inplace)
    assert np.array_equal(out, inplace)
    assert not np.array_equal(out, p0)


def test_row_steps_are_lazy_adam_per_row(path, rng):
    p0 = rng.normal(size=(5, 2))
    batches = [np.array([0, 3]), np.array([1, 3, 4]), np.array([0]), np.array([2, 3])]
    grads = [rng.normal(size=(b.size, 2)) for b in batches]
    opt = _adam(p0.shape, path, lr=0.03, maximize=True)
    p = p0.copy()
    for rows, g in zip(batches, grads):
        opt.step_rows(p, g, rows, offset=1.0)
    for r in range(5):
        row_grads = [g[list(b).index(r)] for b, g in zip(batches, grads) if r in b]
        expected = _reference_adam(p0[r], row_grads, 0.03, sign=1.0, offset=1.0) if row_grads else p0[r]
        assert_allclose(p[r], expected, rtol=1e-13, atol=1e-14)
    assert opt.counts.tolist() == [2, 1, 1, 3, 1]


def test_steps_report_non_finite_gradients(path):
    opt = _adam(4, path, lr=0.1)
    opt.step(np.zeros(4), np.ones(4))
    assert opt.finite
    opt.step(np.zeros(4), np.array([1.0, np.nan, 0.0, 0.0]))
    assert not opt.finite
    rows = _adam((3, 2), path, lr=0.1)
    rows.step_rows(np.zeros((3, 2)), np.array([[1.0, np.inf]]), np.array([2]))
    assert not rows.finite
    rows.step_rows(np.zeros((3, 2)), np.array([[1.0, 2.0]]), np.array([1]))
    assert rows.finite


def test_compiled_and_numpy_paths_agree(rng):
    p0 = rng.normal(size=1000)
    grads = rng.normal(size=(20, 1000))
    a, b = _adam(1000, "compiled", lr=0.01), _adam(1000, "numpy", lr=0.01)
    pa, pb = p0.copy(), p0.copy()
    for g in grads:
        pa, pb = a.step(pa, g), b.step(pb, g)
    assert_allclose(pa, pb, rtol=1e-13, atol=1e-15)


def test_adam_minimises_a_quadratic(path):
    target = np.array([3.0, -1.0, 0.5])
    opt = _adam(3, path, lr=0.05)
    p = np.zeros(3)
    for _ in range(2000):
        p = opt.step(p, 2.0 * (p - target))
    assert_allclose(p, target, atol=1e-3)


@pytest.mark.parametrize(("kw", "match"), [
    ({"lr": 0.0}, r"lr must be > 0; got 0\.0\."),
    ({"lr": -1.0}, r"lr must be > 0; got -1\.0\."),
    ({"lr": 0.1, "beta1": 1.0}, r"beta1 must be < 1; got 1\.0\."),
    ({"lr": 0.1, "beta2": -0.1}, r"beta2 must be >= 0; got -0\.1\."),
    ({"lr": 0.1, "eps": 0.0}, r"eps must be > 0; got 0\.0\."),
])
def test_adam_rejects_bad_hyperparameters(kw, match):
    with pytest.raises(ValueError, match=match):
        Adam(3, **kw)


def test_monitor_detects_a_plateau_not_a_trend():
    mon = ConvergenceMonitor(1000, tol=1e-4, window=50)
    trend = [mon.record(-1000.0 + t) for t in range(200)]
    assert not any(trend)
    mon = ConvergenceMonitor(1000, tol=1e-4, window=50)
    flags = [mon.record(-1000.0 + 0.01 * (-1) ** t) for t in range(100)]
    assert flags[-1] and not any(flags[:-1])
    assert mon.running_mean() == pytest.approx(-1000.0, abs=1e-3)
    assert_allclose(mon.trace, [-1000.0 + 0.01 * (-1) ** t for t in range(100)])


def test_monitor_without_tol_never_converges():
    mon = ConvergenceMonitor(10, tol=None, window=1)
    assert not any(mon.record(1.0) for _ in range(10))


def test_all_finite_spots_nan_and_inf():
    assert all_finite(np.ones(3), np.zeros((2, 2)))
    assert not all_finite(np.ones(3), np.array([1.0, np.nan]))
    assert not all_finite(np.array([np.inf, -np.inf]))


def test_exponential_decay_runs_from_start_to_stop():
    lr = exponential_decay(0.05, 5e-4, 101)
    assert lr(0) == pytest.approx(0.05) and lr(50) == pytest.approx(5e-3) and lr(100) == pytest.approx(5e-4)
    assert lr(1000) == pytest.approx(5e-4)
    with pytest.raises(ValueError, match=r"stop must be > 0; got 0\.0\."):
        exponential_decay(0.1, 0.0, 10)


# ----- issue 18: inputs found by hand to crash or corrupt the compiled kernel; each is refused before it runs -----

@pytest.mark.parametrize(("call", "exc", "match"), [
    # was "double free or corruption": a longer params/grad than the moments
    (lambda a: a.step(np.zeros(4), np.ones(4)), ValueError, r"params must have shape \(3,\); got \(4,\)\."),
    # a short gradient was read past its end
    (lambda a: a.step(np.zeros(3), np.ones(2)), ValueError, r"grad must have shape \(3,\); got \(2,\)\."),
    (lambda a: a.step(np.zeros(3), np.ones(3), out=np.empty(4)), ValueError,
     r"out must have the optimizer's shape \(3,\); got \(4,\)\."),
    (lambda a: a.step(np.zeros(3), np.ones(3), out=np.empty(3, np.float32)), TypeError,
     r"out must be a float64 numpy.ndarray \(it is written in place\); got array of shape \(3,\) and dtype float32"),
    (lambda a: a.step(np.zeros(3), np.ones(3), out=np.empty(6)[::2]), ValueError,
     r"out must be a writeable C-contiguous array \(it is written in place\); got a non-contiguous one\."),
    (lambda a: a.step(np.zeros(3), np.ones(3) * 1j), TypeError, r"grad must be real-valued; got dtype complex128\."),
    (lambda a: a.step(np.zeros(3), np.array(["a", "b", "c"])), TypeError, r"grad must be a numeric array; got dtype"),
    (lambda a: a.step(np.zeros(3), np.ones(3), scale=np.nan), ValueError, r"scale must be finite; got nan\."),
    (lambda a: a.step_rows(np.zeros(3), np.ones((1, 1)), [0]), ValueError,
     r"step_rows needs a 2-D optimizer \(n_rows, k\); this one has shape \(3,\)\."),
])
def test_dense_step_refuses_mismatched_inputs(path, call, exc, match):
    opt = _adam(3, path, lr=0.1)
    with pytest.raises(exc, match=match):
        call(opt)
    assert opt.t == 0 and not opt.m.any(), "a refused step must not change the state"


def test_dense_step_refuses_a_huge_input_before_running():
    """Adam(1) stepped with 10⁶ elements segfaulted."""
    with pytest.raises(ValueError, match=r"params must have shape \(1,\); got \(1000000,\)\."):
        Adam(1, lr=0.1).step(np.zeros(10**6), np.ones(10**6))


@pytest.mark.parametrize(("rows", "grad_rows", "exc", "match"), [
    # rows=[-1] corrupted the heap before
    (np.array([-1]), 1, ValueError, r"rows must lie in \[0, 3\) \(the optimizer's n_rows\); got -1\."),
    (np.array([3]), 1, ValueError, r"rows must lie in \[0, 3\) \(the optimizer's n_rows\); got 3\."),
    (np.array([1, 1]), 2, ValueError, r"rows must be distinct; got 1 more than once\."),
    (np.array([0.0]), 1, TypeError,
     r"rows must be an array of integer indices; got array of shape \(1,\) and dtype float64"),
    (np.array([True]), 1, TypeError, r"rows must be an array of integer indices"),
    (np.array([[0]]), 1, ValueError, r"rows must be 1-dimensional; got shape \(1, 1\)\."),
    (np.array([0, 1]), 1, ValueError, r"grad must have shape \(2, 2\); got \(1, 2\)\."),
])
def test_row_step_refuses_bad_rows(path, rows, grad_rows, exc, match):
    opt = _adam((3, 2), path, lr=0.1)
    params = np.zeros((3, 2))
    with pytest.raises(exc, match=match):
        opt.step_rows(params, np.ones((grad_rows, 2)), rows)
    assert not params.any() and opt.counts is None


@pytest.mark.parametrize(("params", "exc", "match"), [
    (np.zeros((3, 2), np.float32), TypeError, r"params must be a float64 numpy.ndarray \(it is written in place\)"),
    ([[0.0, 0.0]] * 3, TypeError, r"params must be a float64 numpy.ndarray \(it is written in place\); got list"),
    (np.zeros((3, 3)), ValueError, r"params must have the optimizer's shape \(3, 2\); got \(3, 3\)\."),
    (np.zeros((2, 3)).T, ValueError, r"params must be a writeable C-contiguous array"),
])
def test_row_step_refuses_params_it_cannot_update_in_place(path, params, exc, match):
    with pytest.raises(exc, match=match):
        _adam((3, 2), path, lr=0.1).step_rows(params, np.ones((1, 2)), [0])


def test_step_converts_float32_and_list_operands(path):
    """float32 or list operands gave raw Cython/AttributeError messages; they are converted like any array-like."""
    a, b = _adam(3, path, lr=0.1), _adam(3, path, lr=0.1)
    got = a.step([0.0, 1.0, 2.0], np.array([1.0, -2.0, 0.5], np.float32))
    want = b.step(np.array([0.0, 1.0, 2.0]), np.array([1.0, -2.0, 0.5]))
    assert got.dtype == np.float64
    assert_allclose(got, want, rtol=0, atol=0)
    assert_allclose(got, _reference_adam([0.0, 1.0, 2.0], [[1.0, -2.0, 0.5]], 0.1), rtol=1e-15)


@pytest.mark.parametrize(("shape", "exc", "match"), [
    (-1, ValueError, r"shape must be >= 0; got -1\."),
    (2.5, TypeError, r"shape must be an integer; got float 2\.5\."),
    ((10**7, 10**7), ValueError, r"shape must fit in memory; got \(10000000, 10000000\) \(two float64 moment arrays\)"),
])
def test_adam_refuses_bad_shapes(shape, exc, match):
    with pytest.raises(exc, match=match):
        Adam(shape, lr=0.1)


def test_monitor_refuses_a_record_past_n_iter_and_a_window_past_n_iter():
    mon = ConvergenceMonitor(3, tol=None, window=3)
    for v in (1.0, 2.0, 3.0):
        mon.record(v)
    with pytest.raises(ValueError, match=r"record: the monitor holds n_iter=3 values already"):
        mon.record(4.0)
    assert_allclose(mon.trace, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"window must be <= 3; got 4\."):
        ConvergenceMonitor(3, tol=1e-3, window=4)


def test_exponential_decay_edge_cases():
    one = exponential_decay(0.1, 0.01, 1)  # reached stop at step 0 (it stayed at start before)
    assert one(0) == 0.01 and one(5) == 0.01
    flat = exponential_decay(0.1, 0.1, 5)
    assert all(flat(t) == 0.1 for t in range(7))
    lr = exponential_decay(0.1, 0.001, 3)
    assert lr(2) == 0.001 and lr(99) == 0.001  # stop exactly, not exp(log) rounding
    with pytest.raises(ValueError, match=r"stop must be <= start=0\.1 \(a decay falls\); got 0\.2\."):
        exponential_decay(0.1, 0.2, 10)
    with pytest.raises(ValueError, match=r"step must be >= 0; got -1\."):
        lr(-1)
    with pytest.raises(TypeError, match=r"step must be an integer; got float 1\.5\."):
        lr(1.5)
    with pytest.raises(ValueError, match=r"n_steps must be >= 1; got 0\."):
        exponential_decay(0.1, 0.01, 0)
