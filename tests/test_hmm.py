"""Public HMM API (avicore.hmm): against hmmlearn's compiled kernels, properties, sampling, errors and warnings."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from hmmlearn import _hmmc as hmmc
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from avicore import backends
from avicore.hmm import (
    ForwardBackwardResult,
    ImpossibleSequenceWarning,
    ViterbiResult,
    forward_backward,
    sample_posterior,
    viterbi,
)
from tests.conftest import SEED
from tests.reference import offsets_of, path_log_joint, random_problem
from tests.tolerances import tol

SIMULATED_GPU = not backends.cuda_is_real_gpu()


# ---------------------------------------------------------------------------------------------------------------
# Against hmmlearn's C++ kernels (one sequence at a time, log implementation)
# ---------------------------------------------------------------------------------------------------------------

def hmmlearn_reference(log_lik, log_A, log_pi, lengths):
    """hmmlearn 0.3's forward/backward/xi/viterbi kernels, sequence by sequence."""
    pi, A = np.exp(log_pi), np.exp(log_A)
    offsets = offsets_of(lengths, len(log_lik))
    out = {"ll": [], "post": [], "counts": np.zeros_like(A), "vlp": [], "states": []}
    for b, e in itertools.pairwise(offsets):
        frame = np.ascontiguousarray(log_lik[b:e])
        ll, fwd = hmmc.forward_log(pi, A, frame)
        bwd = hmmc.backward_log(pi, A, frame)
        out["ll"].append(ll)
        out["post"].append(np.exp(fwd + bwd - ll))
        if e - b > 1:
            with np.errstate(under="ignore"):
                out["counts"] += np.exp(hmmc.compute_log_xi_sum(fwd, A, bwd, frame))
        vlp, states = hmmc.viterbi(pi, A, frame)
        out["vlp"].append(vlp)
        out["states"].append(states)
    out["post"] = np.concatenate(out["post"])
    out["initial"] = out["post"][offsets[:-1]].sum(axis=0)
    return out


def _lengths(rng, n_states, backend):
    if backend == "cuda" and SIMULATED_GPU:
        return [1, 5, 2]
    lengths = rng.integers(1, 60, size=12)
    lengths[[0, 5]] = 1
    return lengths


@pytest.mark.parametrize("n_states", [1, 2, 5, 30])
def test_forward_backward_and_viterbi_match_hmmlearn(backend, n_states, rng):
    if backend == "cuda" and SIMULATED_GPU and n_states > 5:
        n_states = 5  # the simulator runs every GPU thread in Python
    problem = random_problem(rng, _lengths(rng, n_states, backend), n_states, sparse=n_states > 2)
    ref = hmmlearn_reference(*problem)
    res = forward_backward(*problem, backend=backend)
    assert_allclose(res.log_likelihood, ref["ll"], **tol())
    assert_allclose(res.posteriors, ref["post"], **tol())
    assert_allclose(res.transition_counts, ref["counts"], **tol())
    assert_allclose(res.initial_counts, ref["initial"], **tol())
    log_prob, states = viterbi(*problem, backend=backend)
    assert_allclose(log_prob, ref["vlp"], **tol())
    assert_array_equal(states, np.concatenate(ref["states"]))


# ---------------------------------------------------------------------------------------------------------------
# Properties (hypothesis), on the default CPU backend
# ---------------------------------------------------------------------------------------------------------------

@st.composite
def problems(draw):
    n_states = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    seed = draw(st.integers(0, 2**32 - 1))
    sparse = draw(st.booleans())
    scale = draw(st.sampled_from([0.1, 3.0, 30.0]))
    return random_problem(np.random.default_rng(seed), lengths, n_states, sparse=sparse, scale=scale)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_forward_backward_properties(problem):
    log_lik, log_A, _, lengths = problem
    T, n_seq = len(log_lik), len(lengths)
    offsets = offsets_of(lengths, T)
    res = forward_backward(*problem)
    assert np.isfinite(res.log_likelihood).all()
    assert_allclose(res.posteriors.sum(axis=1), 1.0, rtol=1e-10)
    assert_allclose(res.transition_counts.sum(), T - n_seq, rtol=1e-10, atol=1e-10)
    assert_allclose(res.initial_counts.sum(), n_seq, rtol=1e-10)
    # Flow conservation: Σ_j xi_t(i, j) = gamma_t(i) for every step but a sequence's last, and
    # Σ_i xi_t(i, j) = gamma_{t+1}(j) for every step but a sequence's first.
    not_last = np.ones(T, bool)
    not_last[offsets[1:] - 1] = False
    not_first = np.ones(T, bool)
    not_first[offsets[:-1]] = False
    assert_allclose(res.transition_counts.sum(axis=1), res.posteriors[not_last].sum(axis=0), rtol=1e-9, atol=1e-9)
    assert_allclose(res.transition_counts.sum(axis=0), res.posteriors[not_first].sum(axis=0), rtol=1e-9, atol=1e-9)
    assert (res.transition_counts[np.isneginf(log_A)] == 0).all()


@settings(max_examples=60, deadline=None)
@given(problems())
def test_viterbi_properties(problem):
    log_lik, log_A, log_pi, lengths = problem
    offsets = offsets_of(lengths, len(log_lik))
    log_prob, states = viterbi(*problem)
    fb = forward_backward(*problem)
    assert (log_prob <= fb.log_likelihood + 1e-9).all()  # one path's probability never exceeds the total
    for s, (b, e) in enumerate(itertools.pairwise(offsets)):  # the returned path scores log_prob
        score = path_log_joint(log_lik[b:e], log_A, log_pi, states[None, b:e])[0]
        assert_allclose(score, log_prob[s], rtol=1e-12, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(problems(), st.integers(0, 2**31))
def test_relabelling_the_states_permutes_every_output(problem, perm_seed):
    log_lik, log_A, log_pi, lengths = problem
    perm = np.random.default_rng(perm_seed).permutation(log_lik.shape[1])
    res = forward_backward(*problem)
    res_p = forward_backward(log_lik[:, perm], log_A[np.ix_(perm, perm)], log_pi[perm], lengths)
    assert_allclose(res_p.log_likelihood, res.log_likelihood, rtol=1e-10, atol=1e-10)
    assert_allclose(res_p.posteriors, res.posteriors[:, perm], rtol=1e-9, atol=1e-12)
    assert_allclose(res_p.transition_counts, res.transition_counts[np.ix_(perm, perm)], rtol=1e-9, atol=1e-12)


def test_uniform_transitions_reduce_to_an_independent_mixture(rng):
    # Every row of the transition matrix equal to the start distribution: each step is an independent mixture.
    log_lik = 3.0 * rng.normal(size=(50, 4))
    log_pi = np.log(rng.dirichlet(np.ones(4)))
    res = forward_backward(log_lik, np.tile(log_pi, (4, 1)), log_pi, [20, 30])
    joint = log_lik + log_pi
    per_step = np.logaddexp.reduce(joint, axis=1)
    assert_allclose(res.posteriors, np.exp(joint - per_step[:, None]), rtol=1e-10)
    assert_allclose(res.log_likelihood, [per_step[:20].sum(), per_step[20:].sum()], rtol=1e-12)
    assert_array_equal(viterbi(log_lik, np.tile(log_pi, (4, 1)), log_pi, [20, 30]).states, joint.argmax(axis=1))


# ---------------------------------------------------------------------------------------------------------------
# Posterior sampling
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["numpy", "cython", "numba"])
def test_sample_posterior_marginals_match_forward_backward(impl):
    problem = random_problem(np.random.default_rng([SEED, 5]), [6, 1, 4], 3, sparse=True)
    n = 20_000
    samples = sample_posterior(*problem, n_samples=n, seed=12345, backend=impl)
    res = forward_backward(*problem)
    T, K = res.posteriors.shape
    freq = np.stack([(samples == k).mean(axis=0) for k in range(K)], axis=1)
    se = np.sqrt(res.posteriors * (1 - res.posteriors) / n)
    assert (np.abs(freq - res.posteriors) <= 5 * se + 1e-12).all()  # 5 Monte-Carlo standard errors per cell
    # pairs (z_t, z_{t+1}) within sequences: expected transition counts, per sample
    offsets = offsets_of(problem[3], T)
    inner = np.setdiff1d(np.arange(T - 1), offsets[1:-1] - 1)
    pair_freq = np.zeros((K, K))
    np.add.at(pair_freq, (samples[:, inner].ravel(), samples[:, inner + 1].ravel()), 1.0 / n)
    # per sample the pair count X ∈ [0, m] (m inner steps) has Var X <= E[X²] <= m E[X]: a bound on the standard error
    se_pair = np.sqrt(len(inner) * res.transition_counts / n)
    assert (np.abs(pair_freq - res.transition_counts) <= 5 * se_pair + 1e-12).all()


def test_sample_posterior_is_reproducible_and_seeded():
    problem = random_problem(np.random.default_rng([SEED, 6]), [5, 3], 4)
    a = sample_posterior(*problem, n_samples=30, seed=7)
    assert_array_equal(a, sample_posterior(*problem, n_samples=30, seed=7, backend="numpy"))
    assert (a != sample_posterior(*problem, n_samples=30, seed=8)).any()
    assert_array_equal(sample_posterior(*problem, n_samples=30, seed=np.random.default_rng(3)),
                       sample_posterior(*problem, n_samples=30, seed=np.random.default_rng(3)))
    fresh = sample_posterior(*problem, n_samples=2)
    assert fresh.shape == (2, 8) and fresh.dtype == np.int64 and (fresh >= 0).all()
    # one sample is the first row of many: draws are keyed by (seed, sample, step), not by the batch
    assert_array_equal(sample_posterior(*problem, n_samples=1, seed=7), a[:1])


# ---------------------------------------------------------------------------------------------------------------
# Results, warnings, errors
# ---------------------------------------------------------------------------------------------------------------

def _small():
    return np.log([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.log([[0.7, 0.3], [0.4, 0.6]]), np.log([0.5, 0.5])


def test_results_are_frozen_dataclasses_and_viterbi_unpacks():
    log_lik, log_A, log_pi = _small()
    res = forward_backward(log_lik, log_A, log_pi)
    assert isinstance(res, ForwardBackwardResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.posteriors = None
    assert res.total_log_likelihood == pytest.approx(float(res.log_likelihood.sum()))
    v = viterbi(log_lik, log_A, log_pi)
    assert isinstance(v, ViterbiResult)
    log_prob, states = v
    assert log_prob is v.log_prob and states is v.states


def test_float32_and_list_input_are_accepted():
    log_lik, log_A, log_pi = _small()
    want = forward_backward(log_lik, log_A, log_pi)
    got = forward_backward(log_lik.astype(np.float32).tolist(), log_A, log_pi, lengths=[3])
    assert got.posteriors.dtype == np.float64
    assert_allclose(got.posteriors, want.posteriors, rtol=1e-6)


def test_impossible_sequences_warn_with_their_indices():
    with np.errstate(divide="ignore"):
        log_A = np.log(np.eye(2))
        log_lik = np.log([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0]])
    log_pi = np.log([0.5, 0.5])
    with pytest.warns(ImpossibleSequenceWarning, match=r"sequence \(0\) has no state path") as record:
        res = forward_backward(log_lik[:3], log_A, log_pi, [2, 1])
    assert record[0].message.sequences == (0,)
    assert res.log_likelihood[0] == -np.inf and np.isfinite(res.log_likelihood[1])
    assert_array_equal(res.posteriors[:2], 0.0)
    with pytest.warns(ImpossibleSequenceWarning, match=r"2 sequences \(0, 2\) have no state path"):
        viterbi(log_lik, log_A, log_pi, [2, 1, 2])
    with pytest.warns(ImpossibleSequenceWarning, match=r"its sampled states are -1"):
        z = sample_posterior(log_lik, log_A, log_pi, [2, 1, 2], n_samples=3, seed=0)
    assert_array_equal(z[:, [0, 1, 3, 4]], -1)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    (("x", None, None), {}, TypeError, r"log_lik must be a numeric array; got str"),
    ((np.zeros(3), None, None), {}, ValueError, r"log_lik must be 2-dimensional; got shape \(3,\)"),
    ((np.zeros((3, 0)), None, None), {}, ValueError, r"log_lik must have at least one state \(column\)"),
    ((np.array([[np.nan, 0.0]]), None, None), {}, ValueError, r"log_lik must not contain NaN or \+inf"),
    ((np.array([[np.inf, 0.0]]), None, None), {}, ValueError, r"log_lik must not contain NaN or \+inf"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5]]), np.log([0.5, 0.5])), {}, ValueError,
     r"log_transmat must have shape \(2, 2\); got \(1, 2\)"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.6], [0.5, 0.5]]), np.log([0.5, 0.5])), {}, ValueError,
     r"each row of exp\(log_transmat\) must sum to 1 within 1e-08; got row 0 summing to 1.1"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5], [0.5, 0.5]]), np.log([0.5, 0.4])), {}, ValueError,
     r"exp\(log_startprob\) must sum to 1 within 1e-08; got sum 0.9"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5], [0.5, 0.5]]), np.log([0.5, 0.5, 1e-9])), {}, ValueError,
     r"log_startprob must have shape \(2,\)"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5], [0.5, 0.5]]), np.log([0.5, 0.5])), {"lengths": [2, 2]}, ValueError,
     r"lengths must sum to n_samples=3; got sum\(lengths\)=4"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5], [0.5, 0.5]]), np.log([0.5, 0.5])), {"lengths": [3, 0]}, ValueError,
     r"lengths must be positive integers; got lengths\[1\]=0"),
    ((np.zeros((3, 2)), np.log([[0.5, 0.5], [0.5, 0.5]]), np.log([0.5, 0.5])), {"backend": "gpu"}, ValueError,
     r"backend must be one of \('auto', 'numpy', 'cython', 'numba', 'cuda'\); got 'gpu'"),
])
def test_bad_input_raises_a_clear_error(args, kwargs, exc, match):
    for fn in (forward_backward, viterbi, sample_posterior):
        with pytest.raises(exc, match=match):
            fn(*args, **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"n_samples": 0}, ValueError, r"n_samples must be >= 1; got 0"),
    ({"n_samples": 2.5}, TypeError, r"n_samples must be an integer; got float 2.5"),
    ({"seed": -1}, ValueError, r"seed must be a non-negative integer or a numpy.random.Generator; got -1"),
    ({"seed": "a"}, TypeError, r"seed must be None, a non-negative int or a numpy.random.Generator; got str"),
])
def test_bad_sampling_options_raise(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sample_posterior(*_small(), **kwargs)
