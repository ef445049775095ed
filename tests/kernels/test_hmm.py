"""Every backend of the HMM kernels (avicore/kernels/hmm.py) against enumeration of all paths and the NumPy reference.

The kernels are called directly, through the dispatch tables, with the arrays the public functions would pass.
CUDA runs under the simulator without a GPU (tests/conftest.py), so its problems stay tiny there; with a real GPU
(NUMBA_ENABLE_CUDASIM=0) the stress test runs at full size on it too.
"""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp

import avicore
from avicore import backends
from avicore.kernels import _counter_rng
from avicore.kernels import hmm as kh
from tests.conftest import SEED
from tests.reference import enumerate_hmm, offsets_of, random_problem
from tests.tolerances import tol

SIMULATED_GPU = not backends.cuda_is_real_gpu()
NINF = -np.inf


def kernel_args(log_lik, log_transmat, log_startprob, lengths):
    """The arrays a public function hands to a kernel."""
    log_lik = np.ascontiguousarray(log_lik, dtype=np.float64)
    return (log_lik, np.ascontiguousarray(log_transmat, dtype=np.float64),
            np.ascontiguousarray(log_startprob, dtype=np.float64), offsets_of(lengths, log_lik.shape[0]))


def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def _tiny_problem(name):
    rng = np.random.default_rng([SEED, sum(map(ord, name))])
    if name == "dense-K3":
        return random_problem(rng, [1, 4, 6], 3)
    if name == "sparse-K3":
        return random_problem(rng, [2, 5, 3], 3, sparse=True)
    if name == "K1":
        return random_problem(rng, [1, 3], 1)
    if name == "K4-wide-spread":
        return random_problem(rng, [6, 2], 4, scale=40.0)  # emissions spread over ~±100 nats per step
    raise KeyError(name)


TINY = ["dense-K3", "sparse-K3", "K1", "K4-wide-spread"]


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    problem = _tiny_problem(request.param)
    return kernel_args(*problem), enumerate_hmm(*problem)


def assert_no_nan(*arrays):
    for a in arrays:
        assert not np.isnan(a).any()


# ---------------------------------------------------------------------------------------------------------------
# Against enumeration of every path
# ---------------------------------------------------------------------------------------------------------------

def test_forward_backward_matches_enumeration(backend, tiny):
    args, ref = tiny
    ll, post, counts, init = kh.FORWARD_BACKWARD[backend](*args)
    assert_no_nan(ll, post, counts, init)
    assert_allclose(ll, ref.log_likelihood, **tol())
    assert_allclose(post, ref.posteriors, **tol())
    assert_allclose(counts, ref.transition_counts, **tol())
    assert_allclose(init, ref.initial_counts, **tol())
    assert_array_equal(counts[np.isneginf(args[1])], 0.0)  # forbidden transitions get exactly nothing


def test_viterbi_matches_enumeration(backend, tiny):
    args, ref = tiny
    log_prob, states = kh.VITERBI[backend](*args)
    assert states.dtype == np.int64
    assert_array_equal(states, ref.viterbi_states)
    assert_allclose(log_prob, ref.viterbi_log_prob, **tol())


def test_sample_posterior_draws_the_same_paths_on_every_backend(backend):
    # One ragged batch with forbidden transitions; the numpy reference defines the draws (see the module docstring
    # of avicore.kernels.hmm for the rule every backend follows).
    log_lik, log_A, log_pi, lengths = _tiny_problem("sparse-K3")
    args = kernel_args(log_lik, log_A, log_pi, lengths)
    want = kh.SAMPLE_POSTERIOR["numpy"](*args, 40, 2024)
    got = kh.SAMPLE_POSTERIOR[backend](*args, 40, 2024)
    assert got.dtype == np.int64 and got.shape == (40, log_lik.shape[0])
    assert_array_equal(got, want)
    other = kh.SAMPLE_POSTERIOR[backend](*args, 40, 2025)
    assert (other != got).any()  # the seed matters
    offsets = args[3]
    for b, e in itertools.pairwise(offsets):  # every sampled path has positive probability
        z = got[:, b:e]
        assert np.isfinite(log_A[z[:, :-1], z[:, 1:]]).all()
        assert np.isfinite(log_pi[z[:, 0]]).all()


def _mix64_int(z: int) -> int:
    """The mixer of the avicore.kernels._counter_rng docstring, on Python ints modulo 2^64."""
    mask = (1 << 64) - 1
    z &= mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_sampling_uniforms_follow_the_documented_formula():
    # u[s, t] = ((mix(mix(mix(seed) + (s+1)·GAMMA) + (t+1)·GAMMA)) >> 11) · 2^-53, written out with Python ints.
    gamma, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1
    for seed in (0, 1, 2**63 - 1, 123456789):
        u = _counter_rng.hmm_sample_uniforms(seed, 3, 5)
        key = _mix64_int(seed)
        for s in range(3):
            row = _mix64_int((key + (s + 1) * gamma) & mask)
            for t in range(5):
                h = _mix64_int((row + (t + 1) * gamma) & mask)
                assert u[s, t] == (h >> 11) * 2.0**-53
                assert _counter_rng.hmm_sample_uniform_nb(np.uint64(key), s, t) == u[s, t]


# ---------------------------------------------------------------------------------------------------------------
# Against the NumPy reference on bigger ragged batches
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ragged():
    rng = np.random.default_rng([SEED, 1])
    lengths = rng.integers(1, 40, size=25)
    lengths[:3] = 1
    args = kernel_args(*random_problem(rng, lengths, 6, sparse=True))
    return args, kh.FORWARD_BACKWARD["numpy"](*args), kh.VITERBI["numpy"](*args)


def test_forward_backward_matches_the_reference_on_a_ragged_batch(backend, ragged):
    args, want, _ = ragged
    if backend == "cuda" and SIMULATED_GPU:
        args, want = _first_sequences(args, 6), kh.FORWARD_BACKWARD["numpy"](*_first_sequences(args, 6))
    got = kh.FORWARD_BACKWARD[backend](*args)
    for g, w in zip(got, want):
        assert_no_nan(g)
        assert_allclose(g, w, **tol())


def test_viterbi_matches_the_reference_on_a_ragged_batch(backend, ragged):
    args, _, want = ragged
    if backend == "cuda" and SIMULATED_GPU:
        args = _first_sequences(args, 6)
        want = kh.VITERBI["numpy"](*args)
    log_prob, states = kh.VITERBI[backend](*args)
    assert_array_equal(states, want[1])
    assert_array_equal(log_prob, want[0])  # same float64 additions on every backend: bit-identical


@pytest.mark.parametrize("n_states", [47, 53])
@pytest.mark.parametrize("impl", ["cython", "numba"])
def test_large_state_spaces_match_the_reference(impl, n_states):
    # From 48 padded states the Cython backward pass switches to one fused pass over A (avi_dual_matvec); 53 also
    # leaves a tail of rows that is not a multiple of 4.
    rng = np.random.default_rng([SEED, n_states])
    args = kernel_args(*random_problem(rng, [1, 9, 40], n_states, sparse=True))
    want = kh.FORWARD_BACKWARD["numpy"](*args)
    for g, w in zip(kh.FORWARD_BACKWARD[impl](*args), want):
        assert_allclose(g, w, **tol())
    assert_array_equal(kh.VITERBI[impl](*args)[1], kh.VITERBI["numpy"](*args)[1])


def _first_sequences(args, n):
    log_lik, log_A, log_pi, offsets = args
    return log_lik[:offsets[n]], log_A, log_pi, offsets[:n + 1]


# ---------------------------------------------------------------------------------------------------------------
# Impossible sequences, log-space fallback, underflow stress
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def impossible():
    # No switching allowed; sequence 0 (rows 0-1) needs a switch, sequence 1 is possible, sequence 2 has a step
    # where every emission is impossible.
    log_A = _log(np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    log_pi = np.log([0.2, 0.3, 0.5])
    log_lik = _log(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0],
                             [0.5, 0.2, 0.1], [0.3, 0.3, 0.3], [0.1, 0.9, 0.2],
                             [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]))
    lengths = [2, 3, 2]
    return kernel_args(log_lik, log_A, log_pi, lengths), enumerate_hmm(log_lik, log_A, log_pi, lengths)


def test_impossible_sequences_get_minus_inf_and_zero_posteriors(backend, impossible):
    args, ref = impossible
    ll, post, counts, init = kh.FORWARD_BACKWARD[backend](*args)
    assert_no_nan(ll, post, counts, init)
    assert_array_equal(ll[[0, 2]], NINF)
    assert_allclose(ll[1], ref.log_likelihood[1], **tol())
    assert_array_equal(post[:2], 0.0)
    assert_array_equal(post[5:], 0.0)
    assert_allclose(post, ref.posteriors, **tol())
    assert_allclose(counts, ref.transition_counts, **tol())
    assert_allclose(init, ref.initial_counts, **tol())


def test_impossible_sequences_in_viterbi_and_sampling(backend, impossible):
    args, ref = impossible
    log_prob, states = kh.VITERBI[backend](*args)
    assert_array_equal(log_prob[[0, 2]], NINF)
    assert_array_equal(states, kh.VITERBI["numpy"](*args)[1])  # the documented rules, even without a path
    assert_array_equal(states[2:5], ref.viterbi_states[2:5])
    samples = kh.SAMPLE_POSTERIOR[backend](*args, 5, 7)
    assert_array_equal(samples[:, :2], -1)
    assert_array_equal(samples[:, 5:], -1)
    assert (samples[:, 2:5] >= 0).all()


def _underflowing_problem():
    """Sequence 1 is only explainable through a state that is ~800 nats less likely for a while: scaled
    probabilities underflow there, so that sequence must fall back to log space; sequence 0 is ordinary."""
    log_A = np.log(np.array([[0.5, 0.5], [0.5, 0.5]]))
    log_pi = np.log([0.5, 0.5])
    log_lik = np.array([[-1.0, -2.0], [-0.5, -1.5], [-2.0, -0.1],
                        [0.0, -800.0], [0.0, -805.0], [0.0, -790.0], [NINF, 0.0]])
    return log_lik, log_A, log_pi, [3, 4]


@pytest.mark.parametrize("impl", ["cython", "numba"])
def test_log_space_fallback_triggers_per_sequence_and_agrees(impl):
    problem = _underflowing_problem()
    args = kernel_args(*problem)
    run = {"cython": kh._forward_backward_cython_status, "numba": kh._forward_backward_numba_status}[impl]
    got, status = run(*args)
    assert_array_equal(status, [kh.STATUS_SCALED, kh.STATUS_LOG_SPACE])
    ref = enumerate_hmm(*problem)
    assert_allclose(got[0], ref.log_likelihood, **tol())
    assert_allclose(got[1], ref.posteriors, **tol())
    assert_allclose(got[2], ref.transition_counts, **tol())
    # Tiny transition probabilities (below ~1e-39) switch on the exact reachability test; below exp(-700) every
    # sequence goes to log space.
    rng = np.random.default_rng([SEED, 3])
    for floor, expected in [(-150.0, kh.STATUS_SCALED), (-750.0, kh.STATUS_LOG_SPACE)]:
        log_lik, log_A, log_pi, lengths = random_problem(rng, [4, 5], 3)
        log_A[0, 1] = floor
        log_A[0] -= logsumexp(log_A[0])
        args = kernel_args(log_lik, log_A, log_pi, lengths)
        got, status = run(*args)
        assert_array_equal(status, expected)
        ref = enumerate_hmm(log_lik, log_A, log_pi, lengths)
        assert_allclose(got[1], ref.posteriors, **tol())
        assert_allclose(got[2], ref.transition_counts, **tol())


def test_log_space_fallback_on_every_backend(backend):
    args = kernel_args(*_underflowing_problem())
    ref = enumerate_hmm(*_underflowing_problem())
    ll, post, counts, _ = kh.FORWARD_BACKWARD[backend](*args)
    assert_allclose(ll, ref.log_likelihood, **tol())
    assert_allclose(post, ref.posteriors, **tol())
    assert_allclose(counts, ref.transition_counts, **tol())


@pytest.fixture(scope="module")
def stress():
    """T = 10⁵, log-likelihoods around -10³ with a large spread per step, sparse transitions.

    The first sequence (60,000 steps, spread ±20 nats) stays in probability space; the last (spread ±300 nats,
    so scaled values underflow) falls back to log space; the middle one has a single step.
    """
    rng = np.random.default_rng([SEED, 4])
    K, T = 5, 100_000
    spread = np.where(np.arange(T) < 60_000, 20.0, 300.0)[:, None]
    log_lik = -1000.0 + spread * rng.standard_normal((T, K))
    log_lik[rng.random((T, K)) < 0.02] = NINF
    log_lik[np.arange(T), rng.integers(0, K, T)] = -1000.0 + 5.0 * rng.standard_normal(T)  # one finite entry/row
    A = rng.dirichlet(np.ones(K), size=K)
    A[rng.random((K, K)) < 0.5] = 0.0
    A += np.eye(K, k=1) + np.eye(K, k=-(K - 1))  # a cycle keeps every state reachable
    A /= A.sum(axis=1, keepdims=True)
    lengths = [60_000, 1, 39_999]
    args = kernel_args(log_lik, _log(A), np.log(np.full(K, 1.0 / K)), lengths)
    return args, kh.FORWARD_BACKWARD["numpy"](*args)


def test_underflow_stress_is_finite_and_equal_on_every_backend(backend, stress):
    args, want = stress
    if backend == "cuda" and SIMULATED_GPU:  # the simulator runs each GPU thread in Python: a short slice
        log_lik, log_A, log_pi, _ = args
        args = (log_lik[:60], log_A, log_pi, np.array([0, 30, 31, 60]))
        want = kh.FORWARD_BACKWARD["numpy"](*args)
    got = want if backend == "numpy" else kh.FORWARD_BACKWARD[backend](*args)  # numpy: the fixture's own run
    if backend == "cython":
        status = kh._forward_backward_cython_status(*args)[1]
        assert (status[0], status[2]) == (kh.STATUS_SCALED, kh.STATUS_LOG_SPACE)  # both paths are exercised
    assert np.isfinite(got[0]).all()
    assert_allclose(got[1].sum(axis=1), 1.0, rtol=1e-10)
    for g, w in zip(got, want):
        assert np.isfinite(g).all()
        assert_allclose(g, w, rtol=1e-10, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Threads, and the completeness guard
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["cython", "numba"])
def test_results_are_bit_identical_for_any_thread_count(impl, ragged, monkeypatch):
    args = ragged[0]
    outs = []
    for n in (1, 2):
        monkeypatch.setattr(avicore._config, "_num_threads", n)
        outs.append((kh.FORWARD_BACKWARD[impl](*args), kh.VITERBI[impl](*args),
                     kh.SAMPLE_POSTERIOR[impl](*args, 3, 11)))
    for a, b in zip(outs[0], outs[1]):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert_array_equal(x, y)


#: The test that runs each dispatch table on every backend (through the `backend` fixture).
BACKEND_TESTS = {
    "forward_backward": test_forward_backward_matches_enumeration,
    "viterbi": test_viterbi_matches_enumeration,
    "sample_posterior": test_sample_posterior_draws_the_same_paths_on_every_backend,
}


def test_every_dispatch_table_entry_has_a_backend_test():
    """Completeness guard: a new table, or a backend in a table, fails here until a backend test covers it."""
    assert set(kh.DISPATCH) == set(BACKEND_TESTS)
    for name, table in kh.DISPATCH.items():
        assert set(table) == set(backends.BACKENDS), name
        assert tuple(kh.SUPPORTED_BACKENDS) == tuple(backends.BACKENDS)
        assert "backend" in inspect.signature(BACKEND_TESTS[name]).parameters
        assert all(callable(fn) for fn in table.values())
