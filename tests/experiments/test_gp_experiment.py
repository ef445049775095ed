"""``python -m avicore.experiments gp --quick``: the amortization gap under a GP prior, measured between optima.

The qualitative findings are checked on the run's own numbers against references computed here independently:
the closed-form mean-field optimum and the exact log marginal likelihood (Gaussian likelihood), and
:class:`avicore.gp.FullRankVI`'s Adam fit for the experiment's fixed-point full-rank reference.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings

import numpy as np
import pytest

from avicore.experiments import gp, run
from avicore.gp import log_marginal_likelihood, mean_field_optimum
from avicore.optim import ConvergenceWarning


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gp")
    payload = run("gp", quick=True, out=out, progress=False, figures=True, log=lambda _: None)
    payload["out"] = out
    return payload


def _per_seed(quick: dict, likelihood: str) -> list[dict]:
    return [s["likelihoods"][likelihood] for s in quick["seeds"]]


def test_quick_run_writes_results_and_figures(quick: dict) -> None:
    saved = json.loads((quick["out"] / "results.json").read_text())
    assert saved["complete"] and saved["experiment"] == "gp"
    assert sorted(saved["figures"]) == ["gp_elbo_traces.png", "gp_gap_vs_width.png", "gp_iterations_to_1pct.png"]
    for name in saved["figures"]:
        assert (quick["out"] / name).stat().st_size > 1000
    cfg = gp.config(True)
    cases = {"gaussian", "poisson", "gaussian/rbf", "poisson/rbf"}
    assert set(saved["summary"]["likelihoods"]) == set(gp.case_names(cfg)) == cases
    for case in cases:
        row = saved["seeds"][0]["likelihoods"][case]
        assert set(row["methods"]) == {"F-VI", "Polynomial(2)", *(f"MLP({k})" for k in cfg["widths"])}
        for m, v in row["methods"].items():
            # F-VI's fixed point and the Polynomial encoder's Gauss–Newton fit stop at their optimum; MLPs take
            # Levenberg–Marquardt steps (issue 19): they never diverge, on the smooth kernels too, and run until
            # their own fixed point or the iteration budget.
            if m in ("F-VI", "Polynomial(2)"):
                done = v["stop_reason"] == "stationary" and v["n_iter"] <= 20 and v["gap"] is not None
            else:
                done = (v["stop_reason"] in ("n_iter", "stationary") and v["n_iter"] <= cfg["mlp_n_iter"]
                        and v["gap"] is not None)
            assert math.isfinite(v["elbo"]) and done, (case, m, v["stop_reason"], v["n_iter"])
            assert v["elbo_se"] == 0.0  # the GP ELBO is exact: no Monte-Carlo error
            assert len(v["trace_iteration"]) == len(v["trace_elbo"]) <= cfg["max_trace_points"]
            assert v["trace_iteration"][-1] == v["n_iter"]
            # Every solver here only ever climbs: the gain over the last 10 % of the iterations is ≥ 0, and ~0
            # for the fits that stop at their optimum.
            late = gp.late_gain(v)
            assert (late is None) == (v["stop_reason"] == "stationary")
            assert late is None or late >= -1e-9


def test_fvi_bounds_every_encoder_and_only_an_encoder_that_sees_t_and_outnumbers_its_data_closes_the_gap(
        quick: dict) -> None:
    """F-VI ≥ every A-VI fit (its family contains theirs), on the smooth RBF kernel too. Polynomial(2) on (yₙ, tₙ),
    at its own optimum, stays more than a nat below. MLP(64) sees tₙ and has 4,418 parameters for 2N = 400 outputs:
    it can produce F-VI's optimum exactly, so A-VI's optimum is F-VI's and its fit (Levenberg–Marquardt steps) must
    end within a nat of it — the paper's claim holds in its strict setting (yₙ alone, the test below), not when the
    encoder may memorise the posterior as a function of the input location."""
    cfg = quick["config"]
    assert cfg["activation"] == "tanh" and 2 * cfg["n"] < 4418
    for lik in ("gaussian", "poisson", "gaussian/rbf", "poisson/rbf"):
        for row in _per_seed(quick, lik):
            fvi = row["methods"]["F-VI"]["elbo"]
            assert row["methods"]["F-VI"]["iterations_to_1pct"] <= 5
            for m, v in row["methods"].items():
                if m != "F-VI":
                    assert fvi - v["elbo"] >= -1e-6, (lik, m)
                    assert v["gap"] == pytest.approx(fvi - v["elbo"], abs=1e-9)
            assert fvi - row["methods"]["Polynomial(2)"]["elbo"] > 1.0, lik
            assert fvi - row["methods"]["MLP(64)"]["elbo"] < 1.0, lik
            if lik == "gaussian":  # Matérn-1/2: the rough posterior mean is out of the narrow encoder's reach
                assert fvi - row["methods"]["MLP(4)"]["elbo"] > 1.0
        f = quick["summary"]["findings"][lik]
        assert f["fvi_ge_every_avi"] and not f["gap_above_1_nat_every_width"]
    assert not quick["summary"]["findings"]["no_encoder_closes_the_gap"]


@pytest.mark.parametrize("kernel", ["matern12", "rbf"])
def test_fvi_reaches_the_closed_form_mean_field_optimum(quick: dict, kernel: str) -> None:
    cfg = quick["config"]
    model = gp.build_model(cfg, "gaussian", kernel)
    noise = cfg["settings"]["gaussian"]["noise"]
    case = "gaussian" if kernel == "matern12" else f"gaussian/{kernel}"
    for seed, row in enumerate(_per_seed(quick, case)):
        y = model.simulate(seed=seed).x[:, 0]  # the data of that seed, redrawn here
        K = model.K + model.jitter * np.eye(model.n)
        opt = mean_field_optimum(K, y, noise)
        exact = log_marginal_likelihood(K, y, noise)
        fvi = row["methods"]["F-VI"]
        assert abs(fvi["elbo"] - opt.elbo) < 0.05
        assert fvi["elbo"] <= exact
        assert row["mean_field_optimum"]["elbo"] == pytest.approx(opt.elbo, abs=1e-8)
        assert row["mean_field_optimum"]["fvi_mean_max_rel_error"] < 1e-3
        assert row["exact_log_evidence"] == pytest.approx(exact, abs=1e-8)
        for v in row["methods"].values():  # exact KL(q ‖ p(f | y)) = log p(y) − ELBO ≥ 0
            assert v["kl_to_posterior"] == pytest.approx(exact - v["elbo"], abs=1e-8) and v["kl_to_posterior"] > 0
    assert quick["summary"]["findings"][case]["fvi_at_mean_field_optimum"]


def test_full_rank_reference_is_above_fvi_and_exact_for_a_gaussian_likelihood(quick: dict) -> None:
    cfg = quick["config"]
    model = gp.build_model(cfg, "gaussian")
    noise = cfg["settings"]["gaussian"]["noise"]
    for lik in ("gaussian", "poisson"):
        for row in _per_seed(quick, lik):
            fr = row["full_rank"]
            assert fr["converged"] and fr["max_abs_grad"] < 1e-6
            assert fr["elbo"] > row["methods"]["F-VI"]["elbo"] + 1.0  # mean-field loses the posterior correlations
    for seed, row in enumerate(_per_seed(quick, "gaussian")):
        y = model.simulate(seed=seed).x[:, 0]
        exact = log_marginal_likelihood(model.K + model.jitter * np.eye(model.n), y, noise)
        assert row["full_rank"]["elbo"] == pytest.approx(exact, abs=1e-6)


def test_encoder_inputs_option() -> None:
    parser = argparse.ArgumentParser()
    gp.add_arguments(parser)
    assert parser.parse_args(["--encoder-inputs", "y"]).encoder_inputs == "y"
    assert parser.parse_args([]).encoder_inputs is None
    cfg = {**gp.config(True), "n": 10}
    y = np.ones((10, 1))
    assert gp.build_model(cfg, "poisson").encoder_inputs(y).shape == (10, 2)
    assert gp.build_model({**cfg, "encoder_inputs": "y"}, "poisson").encoder_inputs(y).shape == (10, 1)
    with pytest.raises(ValueError, match="encoder_inputs must be one of"):
        gp.build_model({**cfg, "encoder_inputs": "t"}, "poisson")
    with pytest.raises(ValueError, match="likelihoods must be among"):
        gp.build_model(cfg, "student")
    with pytest.raises(ValueError, match="kernels must be among"):
        gp.build_model(cfg, "poisson", "periodic")


def test_encoder_on_the_observation_alone_leaves_a_gap_that_width_does_not_shrink() -> None:
    """The paper's strict setting (``--encoder-inputs y``): with yₙ alone (Poisson counts), q(fₙ) can only depend on
    the count, so a 16× wider encoder gains almost nothing and stays far below F-VI."""
    import scipy.linalg.blas  # noqa: F401  (loaded before the fits, which hold BLAS to one thread)

    import avicore
    from avicore.encoders import MLP
    from avicore.optim import exponential_decay

    cfg = {**gp.config(True), "n": 100, "encoder_inputs": "y"}
    model = gp.build_model(cfg, "poisson")
    y = model.simulate(seed=0).x
    lr = exponential_decay(cfg["lr"], cfg["lr_final"], 1000)
    fvi = avicore.FVI(model, n_samples=1, elbo_samples=2, backend="numpy").fit(y, n_iter=1000, lr=lr, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # Gauss–Newton steps: 150 is enough to see the gap
        gaps = [fvi.elbo - avicore.AVI(model, MLP(k), n_samples=1, elbo_samples=2, backend="numpy").fit(
            y, n_iter=150, lr=lr, seed=0).elbo for k in (4, 64)]
    assert min(gaps) > 5.0
    assert abs(gaps[1] - gaps[0]) < 0.1 * gaps[0]
