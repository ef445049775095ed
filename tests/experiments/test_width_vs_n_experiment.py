"""``python -m avicore.experiments width-vs-n --quick``: the encoder width A-VI needs does not grow with N."""

from __future__ import annotations

import argparse
import json

import pytest

from avicore.experiments import run, width_vs_n
from avicore.experiments.nonlinear import method_name


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("width_vs_n")
    payload = run("width-vs-n", quick=True, out=out, progress=False, figures=True, log=lambda _: None)
    payload["out"] = out
    return payload


def test_quick_run_writes_results_and_figure(quick: dict) -> None:
    saved = json.loads((quick["out"] / "results.json").read_text())
    assert saved["complete"] and saved["experiment"] == "width-vs-n"
    assert saved["figures"] == ["width_vs_n.png"] and (quick["out"] / "width_vs_n.png").stat().st_size > 1000
    cfg = saved["config"]
    assert cfg["n_obs"] == [100, 1000] and cfg["full_ladder"]
    for seed in saved["seeds"]:
        assert [r["n_obs"] for r in seed["per_n"]] == cfg["n_obs"]
        for r in seed["per_n"]:
            assert r["widths_fitted"] == cfg["widths"]  # the quick run fits every width
            assert list(r["methods"]) == ["F-VI", *[method_name(w) for w in cfg["widths"]]]


def _meets(rec: dict, elbo_fvi: float, cfg: dict) -> bool:
    """The criterion recomputed from the two reported ELBOs: ELBO(A-VI) ≥ ELBO(F-VI) − 0.1 % |ELBO(F-VI)|, with
    n_se standard errors of the (common-random-numbers) difference to spare."""
    return elbo_fvi - rec["elbo"] + cfg["n_se"] * rec["gap_se"] <= 1e-3 * abs(elbo_fvi)


def test_each_reported_width_reaches_the_criterion_and_narrower_ones_do_not(quick: dict) -> None:
    cfg = quick["config"]
    for seed in quick["seeds"]:
        for r in seed["per_n"]:
            elbo_fvi = r["methods"]["F-VI"]["elbo"]
            assert r["elbo_fvi"] == elbo_fvi
            w = r["smallest_width"]
            assert w is not None, f"no width reaches 0.1 % at N = {r['n_obs']}"
            assert _meets(r["methods"][method_name(w)], elbo_fvi, cfg)
            for narrower in cfg["widths"][:cfg["widths"].index(w)]:
                assert not _meets(r["methods"][method_name(narrower)], elbo_fvi, cfg)
    assert quick["summary"]["findings"]["every_n_reaches"]


def test_width_needed_does_not_grow_with_n(quick: dict) -> None:
    """The smallest sufficient width at N = 1,000 is at most one ladder step above the one at N = 100."""
    ladder = quick["config"]["widths"]
    found = quick["summary"]["findings"]["smallest_width_by_n"]
    small, large = found["100"], found["1000"]
    assert ladder.index(large) <= ladder.index(small) + 1
    assert quick["summary"]["findings"]["at_most_one_step_up_between_consecutive_n"]
    # The narrowest width leaves a gap well above the criterion at both N (the ladder starts below what is needed).
    for n in ("100", "1000"):
        assert quick["summary"]["per_n"][n]["gaps"][method_name(ladder[0])]["relative_gap"][0] > 2e-3
    table = width_vs_n.table(quick["summary"])
    assert "| 100 |" in table and "| 1,000 |" in table


def test_reaches_and_options() -> None:
    rec = {"relative_gap": 6e-4, "relative_gap_se": 1.5e-4}
    assert width_vs_n.reaches(rec) and not width_vs_n.reaches(rec, n_se=3.0)
    parser = argparse.ArgumentParser()
    width_vs_n.add_arguments(parser)
    assert parser.parse_args([]).full_ladder is None and parser.parse_args(["--full-ladder"]).full_ladder
    bad = {**width_vs_n.config(True), "n_iter": [100]}
    with pytest.raises(ValueError, match=r"n_iter must hold one entry per N \(len\(n_obs\) = 2\); got 1\."):
        width_vs_n.run_seed(bad, 0, False)
