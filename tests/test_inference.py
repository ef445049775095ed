"""F-VI and A-VI engines against closed forms (linear model, a conjugate vector-latent stand-in) and the paper's
nonlinear model; minibatches, windows, divergence, reproducibility, progress, validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import avicore
from avicore import _config
from avicore._engine_parts import GlobalNoise
from avicore.encoders import MLP, Constant, Polynomial
from avicore.inference import AVI, FVI, VIResult
from avicore.kernels._counter_normal import global_normals
from avicore.models import LinearHierarchical, NonlinearHierarchical
from avicore.optim import DivergenceWarning, exponential_decay

from .reference_vi import ConjugateGaussian

N = 2000


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Results do not depend on the thread count (tested below); one thread is fastest on a shared 2-core box."""
    old = _config.get_num_threads()
    avicore.set_num_threads(1)
    yield
    avicore.set_num_threads(old)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------------------------
# Linear hierarchical model, N = 2,000 (acceptance)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def linear():
    model = LinearHierarchical()
    x = model.simulate(N, seed=11).x
    return model, x, model.fvi_optimum(x)


@pytest.fixture(scope="module")
def fvi_linear(linear):
    model, x, _ = linear
    # A decaying learning rate lets the per-observation means settle: the Monte-Carlo jitter of Adam scales like
    # sqrt(lr), and 1 % of the means needs ~1e5 noisy gradient evaluations per observation.
    return FVI(model, n_samples=100, backend="cython").fit(x, n_iter=2000, lr=exponential_decay(0.05, 5e-5, 2000),
                                                            seed=0)


@pytest.fixture(scope="module")
def avi_poly1(linear):
    model, x, _ = linear
    return AVI(model, Polynomial(1), n_samples=10, backend="cython").fit(
        x, n_iter=1000, lr=exponential_decay(0.05, 1e-3, 1000), seed=0)


@pytest.fixture(scope="module")
def avi_constant(linear):
    model, x, _ = linear
    return AVI(model, Constant(), n_samples=10, backend="cython").fit(
        x, n_iter=500, lr=exponential_decay(0.05, 1e-3, 500), seed=0)


def test_fvi_reaches_the_closed_form_optimum(linear, fvi_linear):
    model, x, opt = linear
    res = fvi_linear
    assert res.method == "F-VI" and res.converged and res.n_iter == 2000 and res.stop_reason == "n_iter"
    assert rel(res.local_mean, opt.local_mean) < 0.01
    assert rel(res.local_sd, opt.local_sd) < 0.02
    assert abs(res.global_mean[0] - opt.global_mean[0]) < 0.01 * np.abs(x).mean()
    assert abs(res.global_sd[0] / opt.global_sd[0] - 1.0) < 0.02
    exact = model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd)
    assert opt.elbo - 0.5 < exact <= opt.elbo + 1e-9
    # The reported (Monte-Carlo) ELBO agrees with the closed form of the same q.
    assert abs(res.elbo - exact) < 4 * res.elbo_se
    assert res.elbo_se < 2.0 and res.trace.shape == (2000,) and res.trace_seconds.shape == (2000,)
    assert np.all(np.diff(res.trace_seconds) >= 0) and res.seconds >= res.trace_seconds[-1]
    assert res.encoder_params is None and res.kl is None  # flat prior: no evidence


def test_avi_polynomial1_reaches_the_fvi_optimum_with_the_ideal_slope(linear, avi_poly1):
    model, x, opt = linear
    res = avi_poly1
    exact = model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd)
    assert opt.elbo - 0.5 < exact <= opt.elbo + 1e-9
    mean, sd = res.encode([[0.0], [1.0]])
    c = model.sigma ** 2 + model.tau ** 2
    assert mean[1, 0] - mean[0, 0] == pytest.approx(model.tau / c, rel=0.01)
    assert_allclose(sd, model.sigma / math.sqrt(c), rtol=0.01)


def test_avi_constant_leaves_the_closed_form_gap(linear, fvi_linear, avi_constant):
    model, x, opt = linear
    c = model.sigma ** 2 + model.tau ** 2
    theory = model.tau ** 2 * float(np.sum((x - x.mean()) ** 2)) / (2 * model.sigma ** 2 * c)
    gap = avicore.amortization_gap(fvi_linear, avi_constant, n_samples=1000, seed=3)
    assert gap.gap == pytest.approx(theory, rel=0.05)
    assert gap.se < 0.01 * theory
    exact = model.exact_elbo(x, avi_constant.local_mean, avi_constant.local_sd, avi_constant.global_mean,
                             avi_constant.global_sd)
    assert opt.elbo - exact == pytest.approx(theory, rel=0.05)


def test_encode_on_fresh_data_is_the_fitted_encoder_and_the_closed_form(linear, avi_poly1):
    model, x, opt = linear
    res = avi_poly1
    # On the training data the encoder reproduces the fitted factors exactly.
    mean, sd = res.encode(x)
    assert np.array_equal(mean, res.local_mean) and np.array_equal(sd, res.local_sd)
    x_new = model.simulate(300, seed=99).x
    mean_new, sd_new = res.encode(x_new)
    # Row-wise: encoding a row alone gives the same output as encoding it in a batch.
    m5, s5 = res.encode(x_new[5:6])
    assert_allclose(m5, mean_new[5:6], rtol=1e-14, atol=1e-15) and assert_allclose(s5, sd_new[5:6], rtol=1e-14)
    # The closed-form optimal factors for new points, given the fitted q(θ): τ(x − μ)/c and σ/√c.
    c = model.sigma ** 2 + model.tau ** 2
    assert_allclose(mean_new, model.tau * (x_new - opt.global_mean[0]) / c, atol=0.01 * np.abs(mean_new).max())
    assert_allclose(sd_new, model.sigma / math.sqrt(c), rtol=0.01)


def test_fvi_has_no_encoder(fvi_linear):
    with pytest.raises(TypeError, match=r"encode needs an A-VI result; got method='F-VI'\."):
        fvi_linear.encode([[0.0]])


# ---------------------------------------------------------------------------------------------------------------
# Nonlinear hierarchical model, N = 2,000 (acceptance)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nonlinear():
    model = NonlinearHierarchical()
    x = model.simulate(N, seed=12).x
    fvi = FVI(model, n_samples=10, backend="cython", elbo_samples=300).fit(
        x, n_iter=1500, lr=exponential_decay(0.05, 1e-4, 1500), seed=0)
    return model, x, fvi


def _avi(model, x, encoder, n_samples, n_iter, lr0, lr1):
    return AVI(model, encoder, n_samples=n_samples, backend="cython", elbo_samples=300).fit(
        x, n_iter=n_iter, lr=exponential_decay(lr0, lr1, n_iter), seed=0)


def test_nonlinear_mlp16_closes_the_gap(nonlinear):
    model, x, fvi = nonlinear
    avi = _avi(model, x, MLP(16), 10, 1500, 0.02, 1e-4)
    gap = avicore.amortization_gap(fvi, avi, n_samples=300, seed=1)
    assert abs(gap.gap) < 0.002 * abs(fvi.elbo)
    assert gap.relative < 0.002


@pytest.mark.parametrize("encoder", [Constant(), MLP(1)], ids=repr)
def test_nonlinear_poor_encoders_leave_a_gap(nonlinear, encoder):
    model, x, fvi = nonlinear
    avi = _avi(model, x, encoder, 5, 600, 0.05, 1e-3)
    gap = avicore.amortization_gap(fvi, avi, n_samples=300, seed=1)
    assert gap.relative > 0.02 and gap.gap > 20 * gap.se


# ---------------------------------------------------------------------------------------------------------------
# Conjugate vector-latent stand-in (d = 2, proper prior): closed forms for everything
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conjugate():
    model = ConjugateGaussian([[1.0, 0.5], [-0.3, 0.8]], [0.7, 1.2])
    x = model.simulate(100, seed=5).x
    return model, x, model.fvi_optimum(x)


def test_vector_latents_fvi_and_avi_reach_the_mean_field_optimum(conjugate):
    model, x, (lm, ls, gm, gs) = conjugate
    best = model.exact_elbo(x, lm, ls, gm, gs)
    fvi = FVI(model, n_samples=10).fit(x, n_iter=1500, lr=exponential_decay(0.05, 1e-4, 1500), seed=0)
    avi = AVI(model, Polynomial(1), n_samples=10).fit(x, n_iter=800, lr=exponential_decay(0.05, 1e-3, 800), seed=0)
    for res in (fvi, avi):
        assert res.local_mean.shape == (100, 2) and res.global_mean.shape == (2,)
        exact = model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd)
        assert best - 0.3 < exact <= best + 1e-9
        assert_allclose(res.global_mean, gm, atol=0.05 * np.abs(gm).max())
        assert_allclose(res.global_sd, gs, rtol=0.05)
        # The exact evidence is known: kl = log p(x) − ELBO, and at the optimum it is the closed-form KL.
        assert res.log_evidence == pytest.approx(model.log_evidence(x), rel=1e-12)
        assert res.kl == pytest.approx(model.log_evidence(x) - best, abs=0.3 + 4 * res.elbo_se)
    assert rel(fvi.local_mean, lm) < 0.03 and rel(avi.local_mean, lm) < 0.01


@pytest.mark.parametrize("engine", ["F-VI", "A-VI"])
def test_point_mass_global_maximises_the_elbo(conjugate, engine):
    # q(θ) = δ(θ̂): the objective E_q[log p(x, z, θ̂)] + H[q(z)] = log p(x, θ̂) − KL(q(z) ‖ p(z | x, θ̂)), and for this
    # Gaussian model the mean-field KL does not depend on θ̂, so θ̂ is the posterior mode (= mean).
    model, x, (lm, ls, gm, _) = conjugate
    lr = exponential_decay(0.05, 1e-3, 800)
    if engine == "F-VI":
        res = FVI(model, n_samples=10, global_q="point").fit(x, n_iter=800, lr=lr, seed=0)
    else:
        res = AVI(model, Polynomial(1), n_samples=10, global_q="point").fit(x, n_iter=800, lr=lr, seed=0)
    assert np.all(res.global_sd == 0.0) and np.all(res.global_log_sd == -np.inf)
    assert_allclose(res.global_mean, gm, atol=0.02 * np.abs(gm).max())
    # Its ELBO has no H[q(θ)]: the closed form at a vanishing σ_θ, minus that Gaussian's entropy.
    tiny = np.full(2, 1e-9)
    exact = (model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, tiny)
             - float(np.sum(0.5 * np.log(2 * np.pi * np.e * tiny ** 2))))
    assert abs(res.elbo - exact) < 4 * res.elbo_se
    best = model.exact_elbo(x, lm, ls, gm, tiny) - float(np.sum(0.5 * np.log(2 * np.pi * np.e * tiny ** 2)))
    assert exact > best - 0.3


def test_minibatch_epochs_visit_every_point_once(conjugate):
    model, x, _ = conjugate
    recorder = ConjugateGaussian(model.A, model.noise_sd, record=True)
    FVI(recorder, n_samples=2, batch_size=30, elbo_samples=2).fit(x, n_iter=8, lr=0.01, seed=4)
    batches = recorder.seen[:8]  # the final ELBO estimate then passes every row
    assert [b.size for b in batches] == [30, 30, 30, 10] * 2
    for epoch in (batches[:4], batches[4:]):
        assert np.array_equal(np.sort(np.concatenate(epoch)), np.arange(100))
    assert all(np.all(np.diff(b) > 0) for b in batches)
    assert not all(np.array_equal(a, b) for a, b in zip(batches[:4], batches[4:]))  # reshuffled


@pytest.mark.parametrize("engine", ["F-VI", "A-VI"])
def test_minibatch_scaling_finds_the_same_optimum(conjugate, engine):
    # Without the N/B scaling q(θ)'s sd would be off by √(N/B) = 2: the fitted sd pins the scaling.
    model, x, (lm, ls, gm, gs) = conjugate
    best = model.exact_elbo(x, lm, ls, gm, gs)
    if engine == "F-VI":
        res = FVI(model, n_samples=10, batch_size=25).fit(x, n_iter=3000, lr=exponential_decay(0.05, 1e-4, 3000),
                                                          seed=1)
    else:
        res = AVI(model, Polynomial(1), n_samples=10, batch_size=25).fit(
            x, n_iter=1500, lr=exponential_decay(0.05, 5e-4, 1500), seed=1)
    assert_allclose(res.global_sd, gs, rtol=0.1)
    assert model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd) > best - 1.0
    # A minibatch ELBO estimate is unbiased: near the optimum the trace averages to the full ELBO.
    assert abs(res.trace[-500:].mean() - best) < 2.0


def test_coupled_models_refuse_minibatches(conjugate):
    model, _, _ = conjugate

    class Coupled(ConjugateGaussian):
        supports_minibatch = False

    coupled = Coupled(model.A, model.noise_sd)
    with pytest.raises(ValueError, match=r"batch_size must be None for Coupled \(its terms couple neighbouring "
                                         r"rows, so every iteration needs all of them\); got 10\."):
        FVI(coupled, batch_size=10)


def test_fix_global_fits_only_the_locals(conjugate):
    model, x, (lm, ls, gm, gs) = conjugate
    res = FVI(model, n_samples=10).fit(x, n_iter=800, lr=exponential_decay(0.05, 1e-3, 800), seed=0,
                                       fix_global=(gm, gs))
    assert np.array_equal(res.global_mean, gm)
    assert_allclose(res.global_sd, gs, rtol=1e-14)
    assert rel(res.local_mean, lm) < 0.05 and rel(res.local_sd, ls) < 0.05


# ---------------------------------------------------------------------------------------------------------------
# Windows (expanded domain)
# ---------------------------------------------------------------------------------------------------------------

def test_window_encoder_sees_neighbours_and_still_reaches_the_optimum(linear):
    model, _, _ = linear
    x = model.simulate(300, seed=21).x
    opt = model.fvi_optimum(x)
    res = AVI(model, Polynomial(1), n_samples=10, window=(-1, 0, 1), backend="cython").fit(
        x, n_iter=1500, lr=exponential_decay(0.05, 1e-3, 1500), seed=0)
    assert res.window == (-1, 0, 1)
    assert model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd) > opt.elbo - 0.5
    mean, _ = res.encode(x)
    assert_allclose(mean, res.local_mean, rtol=1e-13, atol=1e-14)
    # Changing a neighbour barely moves the factor (the ideal encoder ignores it); changing x_n moves it by τ/c.
    probe = np.array([[0.0], [1.0], [0.0]])
    base = res.encode(probe)[0][1, 0]
    c = model.sigma ** 2 + model.tau ** 2
    assert res.encode(probe + np.array([[0.0], [1.0], [0.0]]))[0][1, 0] - base == pytest.approx(model.tau / c,
                                                                                             rel=0.05)
    assert abs(res.encode(probe + np.array([[1.0], [0.0], [0.0]]))[0][1, 0] - base) < 0.01


# ---------------------------------------------------------------------------------------------------------------
# Engine behaviour: backends, reproducibility, divergence, convergence, progress, callbacks
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_linear():
    model = LinearHierarchical()
    return model, model.simulate(16, seed=2).x


def _short_fit(model, x, backend, engine="F-VI"):
    if engine == "F-VI":
        eng = FVI(model, n_samples=3, backend=backend, elbo_samples=4)
    else:
        eng = AVI(model, MLP(3), n_samples=3, backend=backend, elbo_samples=4)
    return eng.fit(x, n_iter=4, lr=0.05, seed=7)


@pytest.mark.parametrize("engine", ["F-VI", "A-VI"])
def test_every_backend_gives_the_same_fit(small_linear, backend, engine):
    model, x = small_linear
    ref = _short_fit(model, x, "numpy", engine)
    res = _short_fit(model, x, backend, engine)
    assert res.backend == backend
    assert_allclose(res.trace, ref.trace, rtol=1e-10, atol=1e-10)
    assert_allclose(res.local_mean, ref.local_mean, rtol=1e-10, atol=1e-10)
    assert_allclose(res.local_sd, ref.local_sd, rtol=1e-10, atol=1e-10)
    assert_allclose(res.global_mean, ref.global_mean, rtol=1e-10, atol=1e-10)
    assert res.elbo == pytest.approx(ref.elbo, rel=1e-10)


def test_same_seed_same_result_and_thread_count_does_not_matter(linear):
    model, x, _ = linear
    eng = AVI(model, MLP(4), n_samples=4, backend="cython", batch_size=500, elbo_samples=64)
    a = eng.fit(x, n_iter=30, lr=0.02, seed=123)
    avicore.set_num_threads(2)
    try:
        b = eng.fit(x, n_iter=30, lr=0.02, seed=123)
    finally:
        avicore.set_num_threads(1)
    c = eng.fit(x, n_iter=30, lr=0.02, seed=124)
    for field in ("trace", "local_mean", "local_sd", "global_mean", "global_sd", "encoder_params"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.elbo == b.elbo and a.elbo_se == b.elbo_se
    assert not np.array_equal(a.trace, c.trace)
    f1 = FVI(model, n_samples=2, batch_size=700, elbo_samples=8).fit(x, n_iter=10, lr=0.05, seed=np.int64(5))
    f2 = FVI(model, n_samples=2, batch_size=700, elbo_samples=8).fit(x, n_iter=10, lr=0.05, seed=5)
    assert np.array_equal(f1.local_mean, f2.local_mean) and np.array_equal(f1.trace, f2.trace)


def test_global_noise_blocks_equal_the_generator(small_linear):
    noise = GlobalNoise(9, 3, 2)
    for step in (0, 1, 255, 256, 700, 3):
        assert np.array_equal(noise(step), global_normals(9, step, 3, 2))


@pytest.mark.parametrize("engine", ["F-VI", "F-VI minibatch", "A-VI"])
def test_divergence_stops_warns_and_keeps_the_best_finite_state(small_linear, engine):
    model, x = small_linear
    if engine == "A-VI":
        eng = AVI(model, MLP(4), n_samples=2, elbo_samples=4)
    else:
        eng = FVI(model, n_samples=2, elbo_samples=4, batch_size=5 if "minibatch" in engine else None)
    with pytest.warns(DivergenceWarning, match=r"fit diverged at iteration \d+: .*Likely cause: the learning rate "
                                               r"\(lr=1e\+200\) is too large.*Returning the best state seen, after "
                                               r"0 iteration\(s\)"):
        res = eng.fit(x, n_iter=500, lr=1e200, seed=0)  # Adam moves each parameter by ~lr a step
    assert not res.converged and res.stop_reason == "diverged" and res.n_iter < 500 and res.state_iteration == 0
    assert np.all(np.isfinite(res.trace)) and res.trace.size == res.n_iter
    for field in ("local_mean", "local_sd", "global_mean", "global_sd"):
        assert np.all(np.isfinite(getattr(res, field))), field
    assert math.isfinite(res.elbo)


class _BreaksAtStep(ConjugateGaussian):
    """The stand-in, with a NaN gradient (``what="grad"``) or a NaN log joint (``"elbo"``) at one iteration."""

    def __init__(self, base, step, what):
        super().__init__(base.A, base.noise_sd)
        self.bad_step, self.what = step, what

    def local_terms(self, x, mean, log_scale, theta, *, seed, step, index, backend):
        terms = super().local_terms(x, mean, log_scale, theta, seed=seed, step=step, index=index, backend=backend)
        if step == self.bad_step:
            if self.what == "grad":
                terms.grad_mean[1, 0] = np.nan
            else:
                terms.log_joint[0] = np.nan
        return terms


@pytest.mark.parametrize("batch_size", [None, 30])
@pytest.mark.parametrize("what", ["grad", "elbo"])
def test_divergence_returns_the_state_of_the_best_trace_entry(conjugate, what, batch_size):
    # A NaN gradient (or a NaN log joint) at iteration 3 stops the fit; the state returned is the one whose ELBO
    # estimate is the best in the trace, i.e. the final state of a clean fit run for state_iteration iterations.
    model, x, _ = conjugate
    eng = FVI(_BreaksAtStep(model, 3, what), n_samples=3, elbo_samples=4, batch_size=batch_size)
    with pytest.warns(DivergenceWarning):
        broken = eng.fit(x, n_iter=10, lr=0.05, seed=1)
    recorded = 4 if what == "grad" else 3  # a NaN gradient comes with a finite ELBO estimate of that state
    assert broken.n_iter == recorded and broken.trace.size == recorded
    assert broken.state_iteration == int(np.argmax(broken.trace))
    clean = FVI(model, n_samples=3, elbo_samples=4, batch_size=batch_size).fit(x, n_iter=recorded, lr=0.05, seed=1)
    assert np.array_equal(broken.trace, clean.trace)
    if broken.state_iteration > 0:
        kept = FVI(model, n_samples=3, elbo_samples=4, batch_size=batch_size).fit(
            x, n_iter=broken.state_iteration, lr=0.05, seed=1)
        for field in ("local_mean", "local_sd", "global_mean", "global_sd"):
            assert np.array_equal(getattr(broken, field), getattr(kept, field)), field


def test_tol_stops_a_converged_fit_early(linear):
    model, x, opt = linear
    res = AVI(model, Polynomial(1), n_samples=10, backend="cython").fit(x, n_iter=5000, lr=0.05, seed=0, tol=1e-4,
                                                                        tol_window=50)
    assert res.converged and res.stop_reason == "tol" and 100 <= res.n_iter < 5000
    assert res.elbo > opt.elbo - 5.0


def test_callback_sees_the_state_and_can_stop(conjugate):
    model, x, _ = conjugate
    seen = []

    def callback(state):
        seen.append((state.iteration, state.elbo, state.local_mean.shape))
        assert not state.local_mean.flags.writeable
        return state.iteration == 5

    res = FVI(model, n_samples=2, elbo_samples=4).fit(x, n_iter=100, lr=0.01, seed=0, callback=callback)
    # Stopped after 5 iterations: too short to test convergence, so not converged (stop_reason says why it ended).
    assert res.stop_reason == "callback" and res.n_iter == 5 and not res.converged
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5] and seen[0][2] == (100, 2)
    assert [s[1] for s in seen] == res.trace.tolist()
    encoded = []
    AVI(model, MLP(2), n_samples=2, elbo_samples=4).fit(
        x, n_iter=3, lr=0.01, seed=0, callback=lambda s: encoded.append(s.encode(x[:3])[0].shape))
    assert encoded == [(3, 2)] * 3


def test_progress_line_goes_to_stderr(small_linear, capsys):
    model, x = small_linear
    FVI(model, n_samples=2, elbo_samples=4).fit(x, n_iter=20, lr=0.01, seed=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "F-VI [" in captured.err and "20/20 ELBO" in captured.err and captured.err.endswith("n_iter\n")


def test_result_repr_and_fields(small_linear):
    model, x = small_linear
    res = AVI(model, Constant(), n_samples=2, elbo_samples=4).fit(x, n_iter=3, lr=0.01, seed=0)
    assert isinstance(res, VIResult)
    assert repr(res).startswith("VIResult(method='A-VI', encoder=Constant(), window=(0,), elbo=")
    with pytest.raises(AttributeError):
        res.elbo = 0.0  # frozen
    assert res.n_samples == 2 and res.elbo_samples == 4 and res.seed == 0 and res.x.shape == (16, 1)


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "exc", "match"), [
    (lambda m: FVI(m, n_samples=0), ValueError, r"n_samples must be >= 1; got 0\."),
    (lambda m: FVI(m, n_samples=2.0), TypeError, r"n_samples must be an integer; got float 2\.0\."),
    (lambda m: FVI(m, batch_size=0), ValueError, r"batch_size must be >= 1; got 0\."),
    (lambda m: FVI(m, elbo_samples=1), ValueError, r"elbo_samples must be >= 2; got 1\."),
    (lambda m: FVI(m, backend="gpu"), ValueError, r"backend must be one of \('auto', 'numpy', 'cython', "
                                                  r"'numba', 'cuda'\); got 'gpu'\."),
    (lambda m: FVI("model"), TypeError, r"model must be an avicore\.models\.LatentVariableModel; got str\."),
    (lambda m: AVI(m, "mlp"), TypeError, r"encoder must be an avicore\.encoders\.Encoder such as Constant\(\), "
                                         r"Polynomial\(1\) or MLP\(16\); got str\."),
    (lambda m: AVI(m, Constant(), window=(0, 0)), ValueError, r"window must hold distinct offsets; got \(0, 0\)\."),
    (lambda m: FVI(m, global_q="delta"), ValueError, r"global_q must be one of \('gaussian', 'point'\); got "
                                                     r"'delta'\."),
])
def test_bad_engine_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make(LinearHierarchical())


@pytest.mark.parametrize(("x", "kw", "exc", "match"), [
    ([[1.0], [np.nan]], {}, ValueError, r"x must not contain NaN or infinite values; got nan at index \(1, 0\)\."),
    (np.zeros((3, 2)), {}, ValueError, r"x must have shape \(n_obs, 1\) or \(n_obs,\); got \(3, 2\)\."),
    (np.zeros((0, 1)), {}, ValueError, r"x must hold at least one observation; got shape \(0, 1\)\."),
    ("abc", {}, TypeError, r"x must be a numeric array"),
    ([1.0, 2.0], {"n_iter": 0}, ValueError, r"n_iter must be >= 1; got 0\."),
    ([1.0, 2.0], {"lr": 0.0}, ValueError, r"lr must be > 0; got 0\.0\."),
    ([1.0, 2.0], {"lr": -0.1}, ValueError, r"lr must be > 0; got -0\.1\."),
    ([1.0, 2.0], {"lr": float("nan")}, ValueError, r"lr must be finite; got nan\."),
    ([1.0, 2.0], {"lr": lambda t: -1.0}, ValueError, r"lr\(iteration\) must return a positive finite float; got "
                                                     r"-1\.0 at iteration 0\."),
    ([1.0, 2.0], {"tol": 0.0}, ValueError, r"tol must be > 0; got 0\.0\."),
    ([1.0, 2.0], {"seed": -1}, ValueError, r"seed must be a non-negative integer or a numpy\.random\.Generator; "
                                           r"got -1\."),
    ([1.0, 2.0], {"callback": 3}, TypeError, r"callback must be callable or None; got int\."),
    ([1.0, 2.0], {"fix_global": "x"}, TypeError, r"fix_global must be None, a VIResult or a \(mean, sd\) pair; "
                                                 r"got str\."),
    ([1.0, 2.0], {"fix_global": ([0.0], [-1.0])}, ValueError, r"fix_global sd must be > 0; got min -1\.0\."),
])
def test_bad_fit_arguments(x, kw, exc, match):
    args = {"n_iter": 2, "lr": 0.01, "seed": 0, **kw}
    with pytest.raises(exc, match=match):
        FVI(LinearHierarchical(), n_samples=1).fit(x, **args)


def test_encode_validates_new_data(avi_poly1):
    with pytest.raises(ValueError, match=r"x_new must not contain NaN or infinite values"):
        avi_poly1.encode([[np.inf]])
    with pytest.raises(ValueError, match=r"x_new must have shape \(n_obs, 1\)"):
        avi_poly1.encode(np.zeros((2, 3)))


def test_no_warning_in_a_healthy_fit(small_linear):
    model, x = small_linear
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FVI(model, n_samples=2, elbo_samples=4).fit(x, n_iter=50, lr=0.01, seed=0)


def test_demo_prints_the_table(capsys):
    from avicore import demo

    assert demo.main(["--n", "60", "--backend", "cython"]) == 0
    out = capsys.readouterr().out
    assert out.count("| linear    |") == 3 and out.count("| nonlinear |") == 4
    assert "closed forms (linear model): F-VI optimum ELBO" in out


def test_weight_decay_moves_the_constant_encoder_to_the_penalised_closed_form() -> None:
    # θ held at a point: the ELBO of q(zₙ) = N(c, s²) for every n is closed form, and so is the maximiser of
    # ELBO − (λ/2)(c² + ℓ²), ℓ = log s: c* = τΣ(xₙ − θ)/σ² / (N(1 + τ²/σ²) + λ), ℓ* the root of
    # N − N e^{2ℓ}(1 + τ²/σ²) − λℓ = 0.
    from scipy.optimize import brentq

    from avicore.models import LinearHierarchical

    model = LinearHierarchical()
    x = model.simulate(200, seed=3).x
    theta, lam, n = 2.0, 2000.0, 200
    k = 1.0 + model.tau ** 2 / model.sigma ** 2
    c_star = model.tau * float(np.sum(x[:, 0] - theta)) / model.sigma ** 2 / (n * k + lam)
    l_star = brentq(lambda v: n - n * math.exp(2 * v) * k - lam * v, -10.0, 10.0)
    res = AVI(model, Constant(), n_samples=50, weight_decay=lam, global_q="point", elbo_samples=10).fit(
        x, n_iter=3000, lr=exponential_decay(0.05, 1e-4, 3000), seed=0, fix_global=([theta], None))
    c, log_s = res.encoder_params
    assert c == pytest.approx(c_star, abs=0.01) and log_s == pytest.approx(l_star, abs=0.01)
    free = AVI(model, Constant(), n_samples=50, global_q="point", elbo_samples=10).fit(
        x, n_iter=3000, lr=exponential_decay(0.05, 1e-4, 3000), seed=0, fix_global=([theta], None))
    c_free = model.tau * float(np.sum(x[:, 0] - theta)) / model.sigma ** 2 / (n * k)
    assert free.encoder_params[0] == pytest.approx(c_free, abs=0.01)
    assert free.encoder_params[1] == pytest.approx(-0.5 * math.log(k), abs=0.01)
    # The penalty moved the optimum far beyond the tolerances above.
    assert abs(l_star + 0.5 * math.log(k)) > 0.05 and abs(c_star - c_free) > 0.1
    with pytest.raises(ValueError, match="weight_decay must be"):
        AVI(model, Constant(), weight_decay=-1.0)
