"""CategoricalHMM and PoissonHMM against hmmlearn: whole fits from one seed (same initialisation), errors."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from avicore.hmm import CategoricalHMM, PoissonHMM
from avicore.hmm_estimators import DegenerateStateWarning

from ._fixtures import history

hmmlearn_hmm = pytest.importorskip("hmmlearn.hmm")


def _ragged(rng, n_seq=15):
    lengths = rng.integers(1, 50, size=n_seq)
    return lengths, int(lengths.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_categorical_fit_from_a_seed_equals_hmmlearn(rng, seed):
    lengths, n = _ragged(rng)
    X = rng.integers(0, 5, size=(n, 1))
    kw = dict(random_state=seed, n_iter=10, tol=-np.inf, emissionprob_prior=1.3, transmat_prior=1.2)
    ours = CategoricalHMM(3, **kw).fit(X, lengths)
    ref = hmmlearn_hmm.CategoricalHMM(3, **kw).fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-8, atol=0)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=1e-12)
    assert_allclose(ours.score_samples(X, lengths)[1], ref.score_samples(X, lengths)[1], atol=1e-10)
    x1, z1 = ours.sample(40, random_state=3)
    x2, z2 = ref.sample(40, random_state=3)
    assert_array_equal(x1, x2)
    assert_array_equal(z1, z2)


@pytest.mark.parametrize("seed", [0, 1])
def test_poisson_fit_from_a_seed_equals_hmmlearn(rng, seed):
    lengths, n = _ragged(rng)
    rates = np.array([[1.0, 8.0], [6.0, 0.5], [15.0, 15.0]])
    X = rng.poisson(rates[rng.integers(0, 3, size=n)])
    kw = dict(random_state=seed, n_iter=10, tol=-np.inf, lambdas_prior=0.5, lambdas_weight=0.1)
    ours = PoissonHMM(3, **kw).fit(X, lengths)
    ref = hmmlearn_hmm.PoissonHMM(3, **kw).fit(X, lengths)
    assert_allclose(history(ours), history(ref), rtol=1e-8, atol=0)
    assert_allclose(ours.lambdas_, ref.lambdas_, rtol=1e-8)
    assert_allclose(ours.transmat_, ref.transmat_, rtol=1e-8, atol=1e-12)
    assert_allclose(ours.score(X, lengths), ref.score(X, lengths), rtol=1e-10)
    lp, states = ours.decode(X, lengths)
    ref_lp, ref_states = ref.decode(X, lengths)
    assert_allclose(lp, ref_lp, rtol=1e-10)
    assert_array_equal(states, ref_states)
    x1, z1 = ours.sample(30, random_state=4)
    x2, z2 = ref.sample(30, random_state=4)
    assert_array_equal(x1, x2)
    assert_array_equal(z1, z2)


def test_categorical_with_n_features_and_bad_symbols(rng):
    X = rng.integers(0, 3, size=(40, 1))
    model = CategoricalHMM(2, n_features=4, random_state=0, n_iter=3).fit(X)
    assert model.emissionprob_.shape == (2, 4)
    with pytest.raises(ValueError, match="X must hold integer symbols"):
        model.score(X.astype(float))
    with pytest.raises(ValueError, match="X must hold symbols below n_features=4; got max 4"):
        model.score(np.array([[0], [4]]))
    with pytest.raises(ValueError, match="X must hold non-negative symbols"):
        CategoricalHMM(2).fit(np.array([[0], [-1]]))
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 1\)"):
        CategoricalHMM(2).fit(np.zeros((4, 2), dtype=int))


def test_poisson_rejects_negative_and_fractional_counts():
    with pytest.raises(ValueError, match=r"X must hold non-negative counts; got X\[1, 0\]=-1.0"):
        PoissonHMM(2).fit(np.array([[1, 2], [-1, 0], [3, 3]]))
    with pytest.raises(ValueError, match="X must hold integer counts"):
        PoissonHMM(2).fit(np.array([[1.5, 2.0], [1.0, 0.0]]))
    model = PoissonHMM(2, random_state=0, n_iter=2).fit(np.array([[1, 2], [0, 0], [3, 3], [5, 1]]))
    with pytest.raises(ValueError, match="X must have n_features=2 columns"):
        model.score(np.ones((3, 1)))


def test_unreachable_state_warns_and_stays_finite():
    """A state never visited loses all mass: hmmlearn zeroes its transition row and warns; so do we."""
    X = np.array([[0], [1], [0], [0], [1], [1], [0]])
    model = CategoricalHMM(2, init_params="", n_iter=3, tol=-np.inf)
    model.startprob_, model.transmat_ = np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.5, 0.5]])
    model.emissionprob_ = np.array([[0.5, 0.5], [0.5, 0.5]])
    ref = hmmlearn_hmm.CategoricalHMM(2, init_params="", n_iter=3, tol=-np.inf)
    ref.startprob_, ref.transmat_, ref.emissionprob_ = model.startprob_, model.transmat_, model.emissionprob_
    with pytest.warns(DegenerateStateWarning, match="transmat_ have zero sum"):
        model.fit(X)
    ref.fit(X)
    assert_allclose(model.transmat_, ref.transmat_)
    assert_allclose(history(model), history(ref), rtol=1e-12)
    assert np.isfinite(model.score(X))


def test_monitor_stops_at_tol_and_verbose_reports(rng, capsys):
    lengths, n = _ragged(rng)
    X = rng.integers(0, 4, size=(n, 1))
    model = CategoricalHMM(2, random_state=0, n_iter=200, tol=1e-3, verbose=True).fit(X, lengths)
    h = history(model)
    assert model.monitor_.converged and model.monitor_.iter == h.size < 200
    assert h[-1] - h[-2] < 1e-3 and np.all(np.diff(h[:-1]) >= 1e-3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == h.size and float(err[-1].split()[1]) == pytest.approx(h[-1], rel=1e-8)
