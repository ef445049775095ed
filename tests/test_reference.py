"""The naive HMM references (tests/reference.py) checked against independent computations."""

from __future__ import annotations

import itertools

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp, softmax

from tests.reference import enumerate_hmm, offsets_of, path_log_joint, random_problem


def test_enumeration_matches_a_hand_worked_two_step_chain():
    # K = 2, T = 2: the joint p(z1 = a, z2 = b, x) = pi_a l1_a A_ab l2_b written out as a 2x2 table.
    pi, A = np.array([0.3, 0.7]), np.array([[0.9, 0.1], [0.2, 0.8]])
    l1, l2 = np.array([0.5, 0.1]), np.array([0.2, 0.6])
    joint = pi[:, None] * l1[:, None] * A * l2[None, :]
    ref = enumerate_hmm(np.log(np.stack([l1, l2])), np.log(A), np.log(pi))
    assert_allclose(ref.log_likelihood, [np.log(joint.sum())], rtol=1e-14)
    assert_allclose(ref.posteriors, np.stack([joint.sum(1), joint.sum(0)]) / joint.sum(), rtol=1e-14)
    assert_allclose(ref.transition_counts, joint / joint.sum(), rtol=1e-14)
    assert_allclose(ref.initial_counts, joint.sum(1) / joint.sum(), rtol=1e-14)
    assert_array_equal(ref.viterbi_states, np.unravel_index(np.argmax(joint), joint.shape))
    assert_allclose(ref.viterbi_log_prob, [np.log(joint.max())], rtol=1e-14)


def test_enumeration_of_a_mixture_factorises(rng):
    # Transition rows equal to the start distribution: the states are i.i.d. given nothing, so each step is an
    # independent mixture: p(z_t | x) = softmax(log pi + log_lik[t]) and log p(x) = Σ_t logsumexp(log pi + log_lik[t]).
    K, lengths = 3, [4, 1, 3]
    log_lik = rng.normal(size=(8, K))
    log_pi = np.log(rng.dirichlet(np.ones(K)))
    log_A = np.tile(log_pi, (K, 1))
    ref = enumerate_hmm(log_lik, log_A, log_pi, lengths)
    per_step = logsumexp(log_lik + log_pi, axis=1)
    offsets = offsets_of(lengths, 8)
    assert_allclose(ref.log_likelihood, np.add.reduceat(per_step, offsets[:-1]), rtol=1e-13)
    post = softmax(log_lik + log_pi, axis=1)
    assert_allclose(ref.posteriors, post, rtol=1e-12, atol=1e-14)
    pairs = sum(np.outer(post[t], post[t + 1]) for t in range(8 - 1) if t + 1 not in offsets)
    assert_allclose(ref.transition_counts, pairs, rtol=1e-12)
    assert_array_equal(ref.viterbi_states, np.argmax(log_lik + log_pi, axis=1))


def test_enumeration_marks_an_impossible_sequence():
    with np.errstate(divide="ignore"):
        log_A = np.log(np.eye(2))  # identity: no switching
        log_lik = np.log(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))  # needs a switch in sequence 0
    ref = enumerate_hmm(log_lik, log_A, np.log([0.5, 0.5]), [2, 1])
    assert ref.log_likelihood[0] == -np.inf
    assert_allclose(ref.log_likelihood[1], np.log(0.5), rtol=1e-14)
    assert_array_equal(ref.posteriors[:2], 0.0)
    assert_array_equal(ref.transition_counts, 0.0)


def test_path_log_joint_sums_to_one_over_paths_without_observations(rng):
    # With log_lik = 0 (no evidence) the path probabilities are the prior over paths: they sum to 1.
    _, log_A, log_pi, _ = random_problem(rng, [4], 3, sparse=True)
    paths = np.array(list(itertools.product(range(3), repeat=4)))
    assert_allclose(logsumexp(path_log_joint(np.zeros((4, 3)), log_A, log_pi, paths)), 0.0, atol=1e-14)


def test_random_problem_is_a_valid_model(rng):
    log_lik, log_A, log_pi, lengths = random_problem(rng, [3, 2], 5, sparse=True)
    assert log_lik.shape == (5, 5)
    assert_allclose(np.exp(log_A).sum(axis=1), 1.0, rtol=1e-12)
    assert np.isneginf(log_A).any() and np.isfinite(np.diag(log_A)).all()
    assert_allclose(np.exp(log_pi).sum(), 1.0, rtol=1e-12)
    assert_array_equal(lengths, [3, 2])
