"""The shared argument checks: conversions, and messages that name the argument, the expectation and the input."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from avicore import _validate as v


class TestAsFloatArray:
    def test_converts_lists_and_ints_to_contiguous_float64(self):
        out = v.as_float_array([[1, 2], [3, 4]], "x", ndim=2)
        assert out.dtype == np.float64 and out.flags.c_contiguous
        assert_array_equal(out, [[1.0, 2.0], [3.0, 4.0]])

    def test_makes_fortran_and_strided_input_contiguous(self):
        f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
        assert v.as_float_array(f, "x").flags.c_contiguous
        assert v.as_float_array(np.arange(10.0)[::2], "x").flags.c_contiguous

    def test_float32_on_request(self):
        assert v.as_float_array([1.0], "x", dtype=np.float32).dtype == np.float32

    def test_wrong_ndim_names_argument_and_shape(self):
        with pytest.raises(ValueError, match=r"log_lik must be 2-dimensional; got shape \(3,\)"):
            v.as_float_array(np.zeros(3), "log_lik", ndim=2)

    def test_wrong_shape_names_axis(self):
        with pytest.raises(ValueError, match=r"log_startprob must have shape \(4,\); got \(3,\) \(axis 0\)"):
            v.as_float_array(np.zeros(3), "log_startprob", shape=(4,))

    def test_nan_rejected_with_index(self):
        x = np.zeros((2, 2))
        x[1, 0] = np.nan
        with pytest.raises(ValueError, match=r"x must not contain NaN or infinite values; got nan at index \(1, 0\)"):
            v.as_float_array(x, "x")

    def test_neg_inf_allowed_only_when_asked(self):
        x = np.array([0.0, -np.inf])
        assert v.as_float_array(x, "log_p", allow_neg_inf=True)[1] == -np.inf
        with pytest.raises(ValueError, match="log_p must not contain NaN or infinite values"):
            v.as_float_array(x, "log_p")
        with pytest.raises(ValueError, match=r"log_p must not contain NaN or \+inf"):
            v.as_float_array([np.inf], "log_p", allow_neg_inf=True)

    @pytest.mark.parametrize("bad", ["abc", None, [1, "a"], np.array([1 + 2j])])
    def test_non_numeric_is_type_error(self, bad):
        with pytest.raises(TypeError, match="x must be"):
            v.as_float_array(bad, "x")

    def test_bad_dtype_argument(self):
        with pytest.raises(ValueError, match=r"dtype must be numpy.float64 or numpy.float32; got int64"):
            v.as_float_array([1.0], "x", dtype=np.int64)


class TestLengths:
    def test_none_is_one_sequence(self):
        assert_array_equal(v.check_lengths(None, 5), [0, 5])

    def test_offsets_are_cumulative(self):
        out = v.check_lengths([2, 1, 3], 6)
        assert out.dtype == np.int64
        assert_array_equal(out, [0, 2, 3, 6])

    def test_integral_floats_accepted(self):
        assert_array_equal(v.check_lengths(np.array([2.0, 3.0]), 5), [0, 2, 5])

    def test_wrong_sum(self):
        with pytest.raises(ValueError, match=r"lengths must sum to n_samples=500; got sum\(lengths\)=499"):
            v.check_lengths([250, 249], 500)

    def test_non_positive(self):
        with pytest.raises(ValueError, match=r"lengths must be positive integers; got lengths\[1\]=0"):
            v.check_lengths([3, 0], 3)

    def test_non_integer(self):
        with pytest.raises(TypeError, match="lengths must contain integers; got dtype float64"):
            v.check_lengths([1.5, 1.5], 3)

    def test_empty_and_2d(self):
        with pytest.raises(ValueError, match="lengths must hold at least one sequence length"):
            v.check_lengths([], 0)
        with pytest.raises(ValueError, match="lengths must be a 1-dimensional"):
            v.check_lengths([[1, 2]], 3)

    def test_empty_input_without_lengths(self):
        with pytest.raises(ValueError, match="at least one time step; got n_samples=0"):
            v.check_lengths(None, 0)


class TestLogProbabilities:
    def test_valid_vector_passes_with_neg_inf(self):
        out = v.check_log_prob_vector([np.log(0.5), np.log(0.5), -np.inf], "log_startprob")
        assert out[2] == -np.inf

    def test_vector_must_normalise(self):
        with pytest.raises(ValueError, match=r"exp\(log_startprob\) must sum to 1 within 1e-08; got sum 0.9"):
            v.check_log_prob_vector(np.log([0.5, 0.4]), "log_startprob")

    def test_vector_rejects_positive(self):
        with pytest.raises(ValueError, match=r"log_startprob must be log-probabilities \(<= 0\)"):
            v.check_log_prob_vector([0.5, -1.0], "log_startprob")

    def test_matrix_rows_must_normalise_and_names_row(self):
        m = np.log(np.array([[0.5, 0.5], [0.3, 0.6]]))
        with pytest.raises(ValueError, match=r"each row of exp\(log_transmat\) must sum to 1 within 1e-08; got row 1"):
            v.check_log_stochastic_matrix(m, "log_transmat")

    def test_matrix_must_be_square_of_given_size(self):
        with pytest.raises(ValueError, match=r"log_transmat must have shape \(3, 3\)"):
            v.check_log_stochastic_matrix(np.zeros((2, 2)), "log_transmat", size=3)
        with pytest.raises(ValueError, match="log_transmat must be a square matrix; got shape"):
            v.check_log_stochastic_matrix(np.log(np.full((2, 3), 1 / 3)), "log_transmat")

    def test_matrix_with_forbidden_transitions_passes(self):
        m = np.array([[0.0, -np.inf], [np.log(0.25), np.log(0.75)]])
        assert v.check_log_stochastic_matrix(m, "log_transmat")[0, 1] == -np.inf


class TestScalarsAndChoices:
    def test_int_bounds(self):
        assert v.check_int(np.int32(3), "n_samples", minimum=1) == 3
        with pytest.raises(ValueError, match="n_samples must be >= 1; got 0"):
            v.check_int(0, "n_samples", minimum=1)
        with pytest.raises(TypeError, match=r"n_samples must be an integer; got float 2.5"):
            v.check_int(2.5, "n_samples")
        with pytest.raises(TypeError, match="n_samples must be an integer; got bool"):
            v.check_int(True, "n_samples")

    def test_scalar(self):
        assert v.check_scalar(2, "lr", positive=True) == 2.0
        with pytest.raises(ValueError, match=r"lr must be > 0; got -1.0"):
            v.check_scalar(-1, "lr", positive=True)
        with pytest.raises(ValueError, match="sigma must be finite; got nan"):
            v.check_scalar(float("nan"), "sigma")
        with pytest.raises(ValueError, match=r"tol must be >= 0; got -0.5"):
            v.check_scalar(-0.5, "tol", non_negative=True)

    def test_choice_lists_options(self):
        with pytest.raises(ValueError, match=r"activation must be one of \('relu', 'tanh'\); got 'gelu'"):
            v.check_choice("gelu", "activation", ("relu", "tanh"))

    def test_random_state(self):
        g = np.random.default_rng(0)
        assert v.check_random_state(g) is g
        a = v.check_random_state(5).standard_normal(3)
        b = v.check_random_state(5).standard_normal(3)
        assert_array_equal(a, b)
        with pytest.raises(TypeError, match=r"seed must be None, a non-negative int or a numpy.random.Generator"):
            v.check_random_state("x")
        with pytest.raises(ValueError, match="seed must be a non-negative integer"):
            v.check_random_state(-1)

    def test_seed_int(self):
        assert v.check_seed_int(7) == 7
        assert v.check_seed_int(np.random.default_rng(1)) == v.check_seed_int(np.random.default_rng(1))
        assert 0 <= v.check_seed_int(None) < 2**63


def _float32_stochastic(k: int, seed: int) -> np.ndarray:
    """log of a float32 row-stochastic matrix as a float32 pipeline makes it (softmax in float32)."""
    logits = np.random.default_rng(seed).normal(size=(k, k)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True, dtype=np.float32)
    return np.log(p)


def test_float32_log_probabilities_pass_at_their_precision_and_are_renormalised():
    for k in (2, 5, 50):
        lt32 = _float32_stochastic(k, k)
        off = np.abs(np.exp(lt32.astype(np.float64)).sum(axis=1) - 1.0).max()
        assert off <= 4 * k * np.finfo(np.float32).eps  # what the tolerance allows
        out = v.check_log_stochastic_matrix(lt32, "log_transmat")
        assert out.dtype == np.float64
        np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_allclose(out, lt32.astype(np.float64), rtol=0, atol=1e-6)  # renormalised, not rebuilt
        vec = v.check_log_prob_vector(lt32[0], "log_startprob")
        assert abs(np.exp(vec).sum() - 1.0) < 1e-15
        rows = v.check_log_prob_rows(lt32[:3], "log_emissionprob")
        np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_float32_rows_that_do_not_sum_to_one_are_still_refused():
    bad = np.log(np.array([[0.5, 0.49], [0.5, 0.5]], dtype=np.float32))
    with pytest.raises(ValueError, match=r"each row of exp\(log_transmat\) must sum to 1 within 9\.53674e-07 "
                                         r"\(float32 input: tolerance scaled to its precision\); got row 0 summing to "
                                         r"0\.99"):
        v.check_log_stochastic_matrix(bad, "log_transmat")
    # float64 keeps its tolerance of 1e-8, and is returned as given (no renormalisation)
    m64 = np.log(np.array([[0.5, 0.5 + 5e-9], [0.25, 0.75]]))
    assert_array_equal(v.check_log_stochastic_matrix(m64, "log_transmat"), m64)
    with pytest.raises(ValueError, match=r"must sum to 1 within 1e-08; got row 0 summing to 1\.0000000(2|19)"):
        v.check_log_stochastic_matrix(np.log(np.array([[0.5, 0.5 + 2e-8], [0.25, 0.75]])), "log_transmat")


def test_hmm_accepts_float32_parameters_and_matches_float64():
    from avicore import hmm

    k = 4
    lt32 = _float32_stochastic(k, 1)
    ls32 = np.log(np.full(k, 1 / k, dtype=np.float32))
    log_lik = np.random.default_rng(2).normal(size=(30, k))
    lt64 = lt32.astype(np.float64) - np.log(np.exp(lt32.astype(np.float64)).sum(axis=1, keepdims=True))
    ls64 = ls32.astype(np.float64) - np.log(np.exp(ls32.astype(np.float64)).sum())
    a = hmm.forward_backward(log_lik, lt32, ls32, backend="numpy")
    b = hmm.forward_backward(log_lik, lt64, ls64, backend="numpy")
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=1e-12, atol=0)
    assert_array_equal(hmm.viterbi(log_lik, lt32, ls32).states, hmm.viterbi(log_lik, lt64, ls64).states)
    paths = hmm.sample_posterior(log_lik, lt32, ls32, n_samples=3, seed=0)
    assert paths is not None
