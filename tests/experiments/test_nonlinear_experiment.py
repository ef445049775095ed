"""``python -m avicore.experiments nonlinear --quick``: the gap closes with the encoder's width, F-VI bounds A-VI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avicore.experiments import nonlinear, run


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("nonlinear")
    payload = run("nonlinear", quick=True, out=out, progress=False, figures=True, jobs=2, log=lambda _: None)
    payload["out"] = out
    return payload


def _widths(payload: dict) -> list[str]:
    return [nonlinear.method_name(w) for w in payload["config"]["widths"]]


def test_quick_run_writes_results_and_figures(quick: dict) -> None:
    saved = json.loads((quick["out"] / "results.json").read_text())
    assert saved["complete"] and saved["experiment"] == "nonlinear"
    assert sorted(saved["figures"]) == ["nonlinear_elbo_traces.png", "nonlinear_gap_vs_width.png",
                                        "nonlinear_iterations_to_1pct.png"]
    for name in saved["figures"]:
        assert (quick["out"] / name).stat().st_size > 1000
    cfg = saved["config"]
    assert len(saved["seeds"]) == cfg["seeds"] >= 2
    for seed in saved["seeds"]:
        assert list(seed["methods"]) == ["F-VI", *_widths(saved)]
        for rec in seed["methods"].values():
            it = rec["trace"]["iteration"]
            assert 0 < len(it) <= nonlinear.TRACE_POINTS and it[-1] == rec["n_iter"] == cfg["n_iter"]
            assert np.all(np.diff(it) > 0) and len(rec["trace"]["elbo"]) == len(it)
            assert math.isfinite(rec["elbo"]) and rec["elbo_se"] > 0


def test_thin_trace_matches_bin_means_by_brute_force() -> None:
    trace = np.random.default_rng(0).normal(size=1234).cumsum()
    thin = nonlinear.thin_trace(trace, n_points=50)
    assert len(thin["iteration"]) <= 50 and thin["iteration"][0] == 1 and thin["iteration"][-1] == 1234
    prev = 0
    for end, value in zip(thin["iteration"], thin["elbo"]):
        assert value == pytest.approx(sum(trace[prev:end]) / (end - prev), rel=1e-12)
        prev = end
    assert nonlinear.thin_trace(trace[:7])["iteration"] == list(range(1, 8))


def test_gaps_are_common_random_number_differences_of_the_reported_elbos(quick: dict) -> None:
    """The gap (amortization_gap) and the two ELBOs (elbo_estimate / amortization_gap) use the same noise keys."""
    for seed in quick["seeds"]:
        fvi = seed["methods"]["F-VI"]["elbo"]
        for m in _widths(quick):
            rec = seed["methods"][m]
            assert rec["gap"] == pytest.approx(fvi - rec["elbo"], abs=1e-6 * abs(fvi))
            assert rec["relative_gap"] == pytest.approx(rec["gap"] / abs(fvi), rel=1e-12)


def test_gap_shrinks_with_width(quick: dict) -> None:
    """MLP(1) leaves a gap of several % of |ELBO|; the widest encoder closes it to within 0.1 %."""
    narrow, wide = _widths(quick)[0], _widths(quick)[-1]
    for seed in quick["seeds"]:
        n, w = seed["methods"][narrow], seed["methods"][wide]
        assert n["relative_gap"] > 0.01 and n["gap"] > 20 * n["gap_se"]
        assert w["gap"] <= 0.05 * n["gap"]
        assert w["relative_gap"] <= 1e-3
    per = quick["summary"]["methods"]
    means = [per[m]["gap"][0] for m in _widths(quick)]
    assert means[0] > means[1] > means[-1]
    f = quick["summary"]["findings"]
    assert f["narrow_leaves_gap"] and f["wide_closes_gap"] and f["gap_shrinks_with_width"]


def test_fvi_elbo_bounds_every_avi_elbo(quick: dict) -> None:
    """A-VI's family is a subset of F-VI's: ELBO(A-VI) ≤ ELBO*(F-VI). The reference is an independent, 4x longer
    F-VI fit to seed 0's data (nearer its optimum than the run's), estimated with the same noise keys (common random
    numbers); the tolerance is 4 standard errors of the run's A-VI vs F-VI difference."""
    import avicore
    from avicore.diagnostics import elbo_estimate
    from avicore.models import NonlinearHierarchical
    from avicore.optim import exponential_decay

    cfg = quick["config"]
    seed = quick["seeds"][0]
    assert seed["seed"] == 0
    model = NonlinearHierarchical()
    x = nonlinear.simulate(cfg["n_obs"], 0, cfg["theta"])
    n_iter = 4 * cfg["n_iter"]
    long_fit = avicore.FVI(model, n_samples=cfg["n_samples"], elbo_samples=2).fit(
        x, n_iter=n_iter, lr=exponential_decay(cfg["lr"], cfg["lr_final"], n_iter), seed=7)
    best = elbo_estimate(model, x, long_fit, n_samples=cfg["elbo_samples"], seed=0).elbo
    assert seed["methods"]["F-VI"]["elbo"] <= best + 4 * seed["methods"][_widths(quick)[-1]]["gap_se"]
    for m in _widths(quick):
        rec = seed["methods"][m]
        assert rec["elbo"] <= best + 4 * rec["gap_se"], (m, rec["elbo"], best)
    assert quick["summary"]["findings"]["fvi_bounds_avi"]


def test_wide_encoder_reaches_one_percent_no_slower_than_fvi(quick: dict) -> None:
    narrow, wide = _widths(quick)[0], _widths(quick)[-1]
    per = quick["summary"]["methods"]
    n_seeds = len(quick["seeds"])
    assert per["F-VI"]["reached"] == per[wide]["reached"] == n_seeds
    assert per[narrow]["reached"] == 0  # its final ELBO stays more than 1 % below F-VI's
    assert per[wide]["iterations_to_1pct"][0] <= 1.25 * per["F-VI"]["iterations_to_1pct"][0]
    assert quick["summary"]["findings"]["wide_reaches_1pct_no_slower"]
    table = nonlinear.table(quick["summary"])
    assert all(f"| {m} |" in table for m in ["F-VI", *_widths(quick)])
