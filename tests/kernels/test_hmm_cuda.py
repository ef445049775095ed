"""CUDA-specific tests of the HMM kernels (avicore/kernels/_hmm_cuda.py).

Without a GPU they run under Numba's CUDA simulator (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1), which runs
every GPU thread in Python: problems stay tiny. What is checked here and not in tests/kernels/test_hmm.py:
both layouts (one thread per sequence for few states, kernels/_hmm_cuda_small.py; one block per sequence),
block sizes smaller than K (threads loop over states), grid-stride over more sequences than blocks, the per-sequence
log-space fallback and its trigger, impossible sequences, reproducibility of the per-block count buffers, and the
device copy of the counter-based RNG.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from numba import cuda  # a module global: the simulator swaps it while this file's test kernels run
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp

from avicore import _config
from avicore.kernels import _counter_rng, _hmm_cuda
from avicore.kernels import hmm as hmm_kernels
from tests.reference import enumerate_hmm, offsets_of, random_problem
from tests.tolerances import tol

pytestmark = pytest.mark.cuda

NINF = -np.inf


# ---------------------------------------------------------------------------------------------------------------
# Problems and the enumeration reference (tests/reference.py)
# ---------------------------------------------------------------------------------------------------------------

def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def make_problem(rng, lengths, K, **kwargs):
    """(log_lik, log_transmat, log_startprob, offsets): reference.random_problem with offsets for the kernels."""
    log_lik, log_transmat, log_startprob, lengths = random_problem(rng, lengths, K, **kwargs)
    return log_lik, log_transmat, log_startprob, offsets_of(lengths, log_lik.shape[0])


def enumerate_paths(log_lik, log_transmat, log_startprob, offsets):
    """Brute force over every path: (log_likelihood, posteriors, transition_counts, initial_counts, viterbi)."""
    e = enumerate_hmm(log_lik, log_transmat, log_startprob, np.diff(offsets))
    return (e.log_likelihood, e.posteriors, e.transition_counts, e.initial_counts,
            (e.viterbi_log_prob, e.viterbi_states))


class LaunchSpy:
    """Wraps a kernel in the (cached) kernel table and records the sequence ids of each log-space launch."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.ids: list[np.ndarray] = []

    def __getitem__(self, config):
        launch = self.kernel[config]

        def run(*args):
            self.ids.append(args[5].copy_to_host())  # the `ids` argument of _fb_log_kernel
            return launch(*args)

        return run


@pytest.fixture(autouse=True, params=["thread", "block"])
def layout(request, monkeypatch):
    """Every test runs with both layouts: one thread per sequence (few states) and one block per sequence."""
    if request.param == "block":
        monkeypatch.setattr(_hmm_cuda, "THREAD_LAYOUT_MAX_K", 0)
    else:
        monkeypatch.setattr(_hmm_cuda, "THREAD_LAYOUT_MAX_K", 64)
    return request.param


@pytest.fixture
def block(request, monkeypatch):
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", request.param)
    return request.param


@pytest.fixture
def log_spy(monkeypatch):
    table = _hmm_cuda._kernels()
    spy = LaunchSpy(table["fb_log"])
    monkeypatch.setitem(table, "fb_log", spy)
    return spy


def assert_fb_equal(got, want, **tolerance):
    ll, post, counts, init = got
    for arr in got:
        assert not np.any(np.isnan(arr))
    assert_allclose(ll, want[0], **tolerance)
    assert_allclose(post, want[1], **tolerance)
    assert_allclose(counts, want[2], **tolerance)
    assert_allclose(init, want[3], **tolerance)


# ---------------------------------------------------------------------------------------------------------------
# Forward-backward and Viterbi against enumeration
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [2, 8], indirect=True)
@pytest.mark.parametrize("K,sparse", [(1, False), (3, False), (3, True)])
def test_forward_backward_matches_enumeration(rng, block, K, sparse, log_spy):
    problem = make_problem(rng, [1, 4, 7], K, sparse=sparse)
    got = _hmm_cuda._forward_backward_cuda(*problem)
    assert_fb_equal(got, enumerate_paths(*problem)[:4], **tol(np.float64))
    assert log_spy.ids == []  # well-scaled problems never leave probability space
    assert_allclose(got[1].sum(axis=1), 1.0, **tol(np.float64))
    assert_allclose(got[2].sum(), (1 + 4 + 7) - 3, **tol(np.float64))


@pytest.mark.parametrize("block", [2, 8], indirect=True)
@pytest.mark.parametrize("K", [1, 3, 4])
def test_viterbi_matches_enumeration(rng, block, K):
    log_lik, log_transmat, log_startprob, offsets = make_problem(rng, [1, 4, 6], K, sparse=True)
    log_prob, states = _hmm_cuda._viterbi_cuda(log_lik, log_transmat, log_startprob, offsets)
    want_logp, want_path = enumerate_paths(log_lik, log_transmat, log_startprob, offsets)[4]
    assert states.dtype == np.int64
    assert_array_equal(states, want_path)
    assert_allclose(log_prob, want_logp, **tol(np.float64))


@pytest.mark.parametrize("block", [4], indirect=True)
def test_viterbi_breaks_ties_toward_the_lowest_state(block):
    # Uniform everything: every path ties; the answer is all zeros. Then make states 1 and 2 tie above 0.
    K = 3
    uniform = np.full((K, K), -np.log(K))
    log_lik = np.zeros((5, K))
    _, states = _hmm_cuda._viterbi_cuda(log_lik, uniform, np.full(K, -np.log(K)), np.array([0, 2, 5]))
    assert_array_equal(states, np.zeros(5, dtype=np.int64))
    log_lik[:, 0] = -1.0
    _, states = _hmm_cuda._viterbi_cuda(log_lik, uniform, np.full(K, -np.log(K)), np.array([0, 2, 5]))
    assert_array_equal(states, np.ones(5, dtype=np.int64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_grid_stride_over_more_sequences_than_blocks(rng, block, monkeypatch):
    # Two blocks (threads, in the thread layout) for five sequences: each runs several sequences and reuses its
    # count buffer.
    monkeypatch.setattr(_hmm_cuda, "_MAX_BLOCKS", 2)
    monkeypatch.setattr(_hmm_cuda, "_MAX_THREADS", 2)
    problem = make_problem(rng, [3, 1, 2, 4, 2], 3)
    want = enumerate_paths(*problem)
    assert_fb_equal(_hmm_cuda._forward_backward_cuda(*problem), want[:4], **tol(np.float64))
    log_prob, states = _hmm_cuda._viterbi_cuda(*problem)
    assert_array_equal(states, want[4][1])
    assert_allclose(log_prob, want[4][0], **tol(np.float64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_results_are_bitwise_reproducible(rng, block):
    problem = make_problem(rng, [2, 5, 3], 3)
    first = _hmm_cuda._forward_backward_cuda(*problem)
    second = _hmm_cuda._forward_backward_cuda(*problem)
    for a, b in zip(first, second):
        assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# Log-space fallback, impossible sequences
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [2], indirect=True)
def test_spread_of_2000_within_a_step_falls_back_to_log_space(rng, block, log_spy):
    log_lik, log_transmat, log_startprob, offsets = make_problem(rng, [2, 4, 3], 3)
    log_lik[2:6:2, 1] -= 2000.0  # sequence 1 only: exp(-2000) underflows, in a state the chain can reach
    got = _hmm_cuda._forward_backward_cuda(log_lik, log_transmat, log_startprob, offsets)
    assert [ids.tolist() for ids in log_spy.ids] == [[1]]
    assert_fb_equal(got, enumerate_paths(log_lik, log_transmat, log_startprob, offsets)[:4], **tol(np.float64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_evidence_that_overturns_an_underflowed_state_is_not_lost(block, log_spy):
    # Two absorbing chains. State 1 starts 2000 nats behind (its scaled alpha underflows to 0) and then gains
    # 500 nats a step: p(z = 1 | x) ~ 1. A scaled pass that only watched for all-zero steps would answer z = 0.
    log_lik = np.array([[0.0, -2000.0]] + [[0.0, 500.0]] * 5)
    log_transmat = np.array([[0.0, NINF], [NINF, 0.0]])
    problem = (log_lik, log_transmat, np.log([0.5, 0.5]), np.array([0, 6]))
    got = _hmm_cuda._forward_backward_cuda(*problem)
    assert [ids.tolist() for ids in log_spy.ids] == [[0]]
    want = enumerate_paths(*problem)
    assert_fb_equal(got, want[:4], **tol(np.float64))
    assert_allclose(got[1][:, 1], 1.0, **tol(np.float64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_transition_probabilities_below_exp_minus_700_use_log_space(rng, block, log_spy):
    log_lik, log_transmat, log_startprob, offsets = make_problem(rng, [3, 2], 3)
    log_transmat[0, 2] = -750.0  # exp(-750) underflows to 0 in float64
    log_transmat[0] -= logsumexp(log_transmat[0])
    got = _hmm_cuda._forward_backward_cuda(log_lik, log_transmat, log_startprob, offsets)
    assert [ids.tolist() for ids in log_spy.ids] == [[0, 1]]
    assert_fb_equal(got, enumerate_paths(log_lik, log_transmat, log_startprob, offsets)[:4], **tol(np.float64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_sequences_with_no_possible_path(rng, block):
    log_lik, _, log_startprob, offsets = make_problem(rng, [2, 3, 4], 3)
    log_transmat = _log(np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]))
    log_lik[3, :] = NINF  # sequence 1: no state can emit its second observation
    log_lik[5, 0] = NINF  # sequence 2: starts outside state 0 ...
    log_lik[6:, 1:] = NINF  # ... but must then sit in state 0, which the upper-triangular chain forbids
    problem = (log_lik, log_transmat, log_startprob, offsets)
    got = _hmm_cuda._forward_backward_cuda(*problem)
    want = enumerate_paths(*problem)
    assert_array_equal(got[0][1:], [NINF, NINF])
    assert_array_equal(got[1][2:], 0.0)
    assert_fb_equal(got, want[:4], **tol(np.float64))
    log_prob, states = _hmm_cuda._viterbi_cuda(*problem)
    assert_array_equal(log_prob[1:], [NINF, NINF])
    assert_array_equal(states, want[4][1])


@pytest.mark.parametrize("block", [2], indirect=True)
def test_an_unreachable_state_with_a_huge_likelihood_does_not_force_log_space(rng, block, log_spy):
    # State 2 can never be entered, yet emits 900 nats above the others: the per-step shift is taken over
    # reachable states only, so the scaled pass stays accurate and no sequence is redone in log space.
    log_lik, _, _, offsets = make_problem(rng, [3, 4], 3)
    log_lik[:, 2] = 900.0
    log_transmat = _log(np.array([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.5, 0.5, 0.0]]))
    problem = (log_lik, log_transmat, _log(np.array([0.5, 0.5, 0.0])), offsets)
    got = _hmm_cuda._forward_backward_cuda(*problem)
    assert log_spy.ids == []
    assert_fb_equal(got, enumerate_paths(*problem)[:4], **tol(np.float64))


@pytest.mark.parametrize("block", [2], indirect=True)
def test_a_product_underflowing_to_an_exact_zero_is_detected(block, log_spy):
    # alpha_0[1] = 1e-200 and A[1, 1] = exp(-400): their product underflows to 0 although state 1 is reachable
    # at t = 1. State 2 keeps the step's sum positive, so only the reachability scan can notice.
    eps = 1e-200
    log_transmat = _log(np.array([[0.5, 0.0, 0.5], [1.0 - np.exp(-400.0), np.exp(-400.0), 0.0], [0.5, 0.0, 0.5]]))
    log_transmat[1, 1] = -400.0
    log_lik = np.array([[0.0, 0.0, 0.0], [NINF, 0.0, -5.0], [0.0, -1.0, -2.0]])
    problem = (log_lik, log_transmat, _log(np.array([1.0 - eps, eps, 0.0])), np.array([0, 3]))
    got = _hmm_cuda._forward_backward_cuda(*problem)
    assert [ids.tolist() for ids in log_spy.ids] == [[0]]
    assert_fb_equal(got, enumerate_paths(*problem)[:4], **tol(np.float64))


# ---------------------------------------------------------------------------------------------------------------
# Against the NumPy reference of kernels/hmm.py on a larger ragged batch
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [4], indirect=True)
def test_forward_backward_and_viterbi_match_the_numpy_reference(rng, block):
    problem = make_problem(rng, [1, 9, 2, 6, 1], 5, sparse=True, scale=4.0)
    assert_fb_equal(_hmm_cuda._forward_backward_cuda(*problem), hmm_kernels._forward_backward_numpy(*problem),
                    **tol(np.float64))
    log_prob, states = _hmm_cuda._viterbi_cuda(*problem)
    want_logp, want_states = hmm_kernels._viterbi_numpy(*problem)
    assert_array_equal(states, want_states)
    assert_allclose(log_prob, want_logp, **tol(np.float64))


# ---------------------------------------------------------------------------------------------------------------
# Posterior sampling
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [2], indirect=True)
@pytest.mark.parametrize("K", [1, 3])
def test_sample_posterior_draws_the_numpy_reference_samples(rng, block, K):
    # Sequence 1 needs log space (spread of 2000), sequence 3 has no possible path (-1 throughout).
    log_lik, log_transmat, log_startprob, offsets = make_problem(rng, [1, 4, 5, 2], K)
    log_lik[2, K - 1] -= 2000.0
    log_lik[11, :] = NINF
    problem = (log_lik, log_transmat, log_startprob, offsets)
    got = _hmm_cuda._sample_posterior_cuda(*problem, 6, 20241128)
    want = hmm_kernels._sample_posterior_numpy(*problem, 6, 20241128)
    assert got.dtype == np.int64
    assert_array_equal(got, want)
    assert_array_equal(got[:, 10:], -1)
    if K > 1:
        assert len(np.unique(got[:, :10])) > 1  # the draws do depend on the uniforms


@pytest.mark.parametrize("block", [2], indirect=True)
def test_sample_posterior_puts_all_draws_on_a_certain_path(block):
    # Near-deterministic chain: the exact posterior puts probability ~1 on the path 0, 1, 2, 0, 1.
    K = 3
    log_transmat = np.log(np.full((K, K), 1e-12) + np.eye(K)[[1, 2, 0]] * (1 - 2e-12))
    log_lik = np.log(np.full((5, K), 1e-12) + np.eye(K)[[0, 1, 2, 0, 1]])
    samples = _hmm_cuda._sample_posterior_cuda(log_lik, log_transmat, np.log(np.full(K, 1 / K)),
                                               np.array([0, 5]), 4, 7)
    assert_array_equal(samples, np.tile([0, 1, 2, 0, 1], (4, 1)))


def test_device_uniforms_are_bit_identical_to_the_counter_rng():
    kern = _hmm_cuda._kernels()
    mix64, sample_uniform = kern["mix64"], kern["sample_uniform"]

    @cuda.jit
    def mixes(z, out):
        i = cuda.grid(1)
        if i < z.shape[0]:
            out[i] = mix64(z[i])

    @cuda.jit
    def uniforms(key, out):
        s = cuda.grid(1)
        if s < out.shape[0]:
            sample_key = mix64(key + np.uint64(s + 1) * np.uint64(_counter_rng.GAMMA))
            for t in range(out.shape[1]):
                out[s, t] = sample_uniform(sample_key, t)

    edges = np.array([0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, _counter_rng.GAMMA], dtype=np.uint64)
    z = np.concatenate([edges, np.random.default_rng(5).integers(0, 2**64 - 1, 120, dtype=np.uint64,
                                                                  endpoint=True)])
    d_out = cuda.device_array(z.size, dtype=np.uint64)
    u = cuda.device_array((6, 40), dtype=np.float64)
    seed = 2**63 - 25
    with _hmm_cuda._quiet():
        mixes[16, 8](cuda.to_device(z), d_out)
        uniforms[1, 8](np.uint64(_counter_rng.hmm_seed_key(seed)), u)
    assert_array_equal(d_out.copy_to_host(), _counter_rng.mix64(z))
    assert_array_equal(u.copy_to_host().view(np.uint64),
                       _counter_rng.hmm_sample_uniforms(seed, 6, 40).view(np.uint64))


def test_too_many_states_for_shared_memory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_hmm_cuda, "_SHARED_BYTES", 1024)
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 8)
    with pytest.raises(ValueError, match=r"log_lik must have at most 55 states for backend='cuda'; got n_states=64"):
        _hmm_cuda._forward_backward_cuda(np.zeros((1, 64)), np.full((64, 64), -np.log(64)),
                                         np.full(64, -np.log(64)), np.array([0, 1]))


def test_block_threads_is_a_power_of_two_capped_by_the_config(monkeypatch):
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 128)
    assert [_hmm_cuda._block_threads(k) for k in (1, 2, 3, 32, 33, 500)] == [1, 2, 4, 32, 64, 128]
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 96)
    assert _hmm_cuda._block_threads(500) == 64


def test_importing_the_module_imports_no_numba():
    code = ("import sys, avicore.kernels._hmm_cuda; "
            "assert not any(m == 'numba' or m.startswith('numba.') for m in sys.modules), 'numba imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("block", [2], indirect=True)
@pytest.mark.parametrize("room", [96, 200], ids=["counts-in-global", "counts-in-shared"])
def test_block_counts_in_shared_or_global_memory(rng, block, monkeypatch, room):
    # K = 3, 2 threads: the vectors, reduction buffer and flag take 96 bytes; the 3x3 counts 72 more.
    monkeypatch.setattr(_hmm_cuda, "THREAD_LAYOUT_MAX_K", 0)  # the block layout's count buffers
    monkeypatch.setattr(_hmm_cuda, "_SHARED_BYTES", room)
    table = _hmm_cuda._kernels()
    seen = []
    real = table["fb_scaled"]

    class Spy:
        def __getitem__(self, config):
            def run(*args):
                seen.append(args[-1])
                return real[config](*args)
            return run

    monkeypatch.setitem(table, "fb_scaled", Spy())
    problem = make_problem(rng, [2, 4], 3)
    assert_fb_equal(_hmm_cuda._forward_backward_cuda(*problem), enumerate_paths(*problem)[:4], **tol(np.float64))
    assert seen == [room >= 96 + 72]
