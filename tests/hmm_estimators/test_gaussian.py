"""GaussianHMM against hmmlearn: the EM trajectory from the same start, scoring, decoding, sampling, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import avicore
from avicore.hmm import GaussianHMM
from avicore.kernels import hmm_em

from ._fixtures import LAST_CENTRES, history, ragged_gaussian, random_covars, set_params

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")

COV_TYPES = ["spherical", "diag", "full", "tied"]


def _twins(rng, covariance_type, n_states=3, n_features=2, **kwargs):
    start = rng.dirichlet(np.ones(n_states))
    trans = rng.dirichlet(np.ones(n_states), size=n_states)
    means = LAST_CENTRES[0] + rng.normal(0.0, 0.5, (n_states, n_features))
    covars = random_covars(rng, covariance_type, n_states, n_features)
    ours = GaussianHMM(n_states, covariance_type=covariance_type, init_params="", n_iter=10, tol=-np.inf, **kwargs)
    ref = hmmlearn_hmm.GaussianHMM(n_states, covariance_type=covariance_type, init_params="", n_iter=10,
                                   tol=-np.inf, **{k: v for k, v in kwargs.items() if k != "backend"})
    set_params((ours, ref), startprob_=start, transmat_=trans, means_=means, covars_=covars)
    return ours, ref


def _stored_covars(model, covariance_type):
    c = model._covars_
    return c[:, 0] if covariance_type == "spherical" and c.ndim == 2 else c  # hmmlearn tiles spherical variances


def _record_iterates(model, method: str) -> list:
    """Wrap the model's M-step so that every iteration's parameters are kept (works for both libraries)."""
    seen, mstep = [], getattr(model, method)

    def recording(stats):
        mstep(stats)
        seen.append({name: np.array(getattr(model, name), copy=True)
                     for name in ("startprob_", "transmat_", "means_", "_covars_")})

    setattr(model, method, recording)
    return seen


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_trajectory_equals_hmmlearn(rng, covariance_type):
    X, lengths = ragged_gaussian(rng)
    ours, ref = _twins(rng, covariance_type)
    ours_iterates, ref_iterates = _record_iterates(ours, "_mstep"), _record_iterates(ref, "_do_mstep")
    ours.fit(X, lengths)
    ref.fit(X, lengths)
    assert len(ours.monitor_.history) == 10 == len(ours_iterates) == len(ref_iterates)
    assert_allclose(history(ours), history(ref), rtol=1e-8, atol=0)
    for it, (a, b) in enumerate(zip(ours_iterates, ref_iterates)):  # every iterate, not only the last
        b["_covars_"] = _stored_covars(type("M", (), {"_covars_": b["_covars_"]}), covariance_type)
        for name in a:
            assert_allclose(a[name], b[name], rtol=1e-8, atol=1e-12, err_msg=f"{name} at iteration {it + 1}")
    for name in ("startprob_", "transmat_", "means_"):
        assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=1e-12)
    assert_allclose(ours._covars_, _stored_covars(ref, covariance_type), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_map_em_with_priors_equals_hmmlearn(rng, covariance_type):
    X, lengths = ragged_gaussian(rng)
    priors = dict(startprob_prior=2.0, transmat_prior=1.5, means_prior=0.5, means_weight=2.0, covars_prior=0.3,
                  covars_weight=4.0)
    ours, ref = _twins(rng, covariance_type, **priors)
    ours.fit(X, lengths)
    ref.fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-8, atol=0)
    assert_allclose(ours.means_, ref.means_, rtol=1e-8, atol=1e-12)
    assert_allclose(ours._covars_, ref._covars_, rtol=1e-8, atol=1e-12)


def test_params_subset_keeps_the_others(rng):
    X, lengths = ragged_gaussian(rng)
    ours, ref = _twins(rng, "diag")
    ours.set_params(params="tm")
    ref.params = "tm"
    covars, start = ours._covars_.copy(), ours.startprob_.copy()
    ours.fit(X, lengths)
    ref.fit(X, lengths)
    assert_array_equal(ours._covars_, covars)
    assert_array_equal(ours.startprob_, start)
    assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    assert_allclose(history(ours), history(ref), rtol=1e-8)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_score_decode_predict_sample_equal_hmmlearn(rng, covariance_type):
    X, lengths = ragged_gaussian(rng, sep=6.0)
    ours, ref = _twins(rng, covariance_type)
    ours.fit(X, lengths)
    set_params([ref], startprob_=ours.startprob_, transmat_=ours.transmat_, means_=ours.means_,
               covars_=ours._covars_)
    log_prob, post = ours.score_samples(X, lengths)
    ref_log_prob, ref_post = ref.score_samples(X, lengths)
    assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    assert_allclose(post, ref_post, rtol=1e-8, atol=1e-10)
    assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
    assert_allclose(ours.predict_proba(X, lengths), ref.predict_proba(X, lengths), atol=1e-10)
    for algorithm in ("viterbi", "map"):
        lp, states = ours.decode(X, lengths, algorithm=algorithm)
        ref_lp, ref_states = ref.decode(X, lengths, algorithm=algorithm)
        assert_allclose(lp, ref_lp, rtol=1e-10)
        assert_array_equal(states, ref_states)
    assert_array_equal(ours.predict(X, lengths), ref.predict(X, lengths))
    x1, z1 = ours.sample(25, random_state=7)
    x2, z2 = ref.sample(25, random_state=7)
    assert_array_equal(z1, z2)
    assert_allclose(x1, x2, rtol=1e-10)
    x3, z3 = ours.sample(25, random_state=7)
    assert_array_equal(x1, x3)
    assert_array_equal(z1, z3)


def test_every_backend_gives_the_same_fit(rng, backend):
    X, lengths = ragged_gaussian(rng, n_seq=6)
    n_iter = 3
    if backend == "cuda":  # the simulator runs every GPU thread in Python: two short sequences, one iteration
        lengths = np.array([5, 3])
        X, n_iter = X[:8], 1
    ref, _ = _twins(rng, "diag")
    ours = GaussianHMM(**{**ref.get_params(), "backend": backend, "n_iter": n_iter})
    set_params([ours], startprob_=ref.startprob_, transmat_=ref.transmat_, means_=ref.means_,
               covars_=ref._covars_)
    ref.set_params(n_iter=n_iter, backend="numpy").fit(X, lengths)
    ours.fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-10)
    assert_allclose(ours.means_, ref.means_, rtol=1e-10, atol=1e-12)
    assert_array_equal(ours.predict(X, lengths), ref.predict(X, lengths))


def test_fit_from_its_own_initialisation_converges_and_recovers_states(rng):
    X, lengths = ragged_gaussian(rng, sep=8.0, n_seq=20)
    model = GaussianHMM(3, covariance_type="full", n_iter=50, random_state=0).fit(X, lengths)
    h = history(model)
    assert model.monitor_.converged
    assert np.all(np.diff(h) > -1e-8)  # EM without priors on the means never decreases the likelihood
    assert model.n_features_in_ == 2


def test_sklearn_conventions_clone_params_pickle(rng):
    sklearn_base = pytest.importorskip("sklearn.base")
    X, lengths = ragged_gaussian(rng)
    model = GaussianHMM(3, covariance_type="tied", random_state=1, n_iter=5, backend="numpy")
    params = model.get_params()
    assert params["covariance_type"] == "tied" and params["backend"] == "numpy"
    twin = sklearn_base.clone(model)
    assert twin.get_params() == params and not hasattr(twin, "means_")
    model.fit(X, lengths)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.score(X, lengths) == model.score(X, lengths)
    assert model.set_params(n_iter=7) is model and model.n_iter == 7
    with pytest.raises(ValueError, match="Invalid parameter 'n_iters'"):
        model.set_params(n_iters=3)
    assert "covariance_type='tied'" in repr(model)


def test_bad_input_errors(rng):
    X, lengths = ragged_gaussian(rng)
    model = GaussianHMM(3, n_iter=2, random_state=0)
    with pytest.raises(ValueError, match="not fitted"):
        model.score(X)
    with pytest.raises(ValueError, match=r"lengths must sum to n_samples="):
        model.fit(X, lengths=[len(X) - 1])
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianHMM(2, covariance_type="banded").fit(X)
    preset = GaussianHMM(2, init_params="", n_iter=1)
    preset.startprob_, preset.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    preset.means_, preset.covars_ = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"X must have n_features=3 columns \(the shape of the model's preset"):
        preset.fit(X)
    with pytest.raises(ValueError, match="X must be 2-dimensional"):
        model.fit(X[:, 0])
    with pytest.raises(ValueError, match="must not contain NaN"):
        model.fit(np.where(np.arange(X.size).reshape(X.shape) == 3, np.nan, X))
    model.fit(X, lengths)
    with pytest.raises(ValueError, match=r"X must have n_features=2 columns"):
        model.score(np.ones((5, 3)))
    with pytest.raises(ValueError, match="algorithm must be one of"):
        model.decode(X, algorithm="beam")
    bad = GaussianHMM(2, covariance_type="diag", init_params="")
    bad.startprob_, bad.transmat_, bad.means_ = np.array([0.5, 0.5]), np.eye(2), np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"covars_ must be > 0 \('diag' variances\); state 1"):
        bad.covars_ = np.array([[1.0, 1.0], [1.0, 0.0]])
    bad.covariance_type = "full"
    with pytest.raises(ValueError, match=r"covars_\[0\] must be positive-definite"):
        bad.covars_ = np.array([[[1.0, 2.0], [2.0, 1.0]], np.eye(2)])
    with pytest.raises(ValueError, match="transmat_ rows must be probability vectors"):
        bad.transmat_ = np.array([[0.5, 0.6], [0.5, 0.5]])
        bad.covars_ = np.array([np.eye(2), np.eye(2)])
        bad.score(X)


def test_state_losing_its_mass_warns_like_hmmlearn_and_keeps_its_parameters():
    X = np.concatenate([np.zeros((5, 1)), np.ones((5, 1))]) + np.linspace(0, 0.1, 10)[:, None]
    model = GaussianHMM(2, init_params="", n_iter=3, tol=-np.inf)
    model.startprob_, model.transmat_ = np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.5, 0.5]])
    model.means_, model.covars_ = np.array([[0.5], [9.0]]), np.ones((2, 1))
    with pytest.warns(RuntimeWarning) as record:
        model.fit(X)
    messages = " ".join(str(w.message) for w in record)
    assert "zero posterior mass" in messages and "transmat_ have zero sum" in messages
    assert_array_equal(model.means_[1], [9.0])
    assert np.all(np.isfinite(model.means_))
    assert_array_equal(model.transmat_[1], [0.0, 0.0])
    assert np.isfinite(model.score(X))  # a zero transition row is a valid fitted state (never entered)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_fit_is_bit_identical_for_any_thread_count(rng, covariance_type, monkeypatch):
    X, lengths = ragged_gaussian(rng, n_seq=30)
    fits = []
    for n in (1, 2):
        monkeypatch.setattr(avicore._config, "_num_threads", n)
        monkeypatch.setattr(hmm_em, "_threads", lambda n_rows, n_states, n=n: n)  # small data: force n threads
        model, _ = _twins(np.random.default_rng(5), covariance_type)
        fits.append(model.set_params(backend="cython", n_iter=4).fit(X, lengths))
    assert_array_equal(history(fits[0]), history(fits[1]))
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert_array_equal(getattr(fits[0], name), getattr(fits[1], name), err_msg=name)
