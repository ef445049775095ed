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


def test_scale_options_give_each_size_its_schedule(tmp_path) -> None:
    """``--n-obs``/``--widths`` (the scale runs): the default sizes' schedule comes from the same rule, larger N get
    fewer ELBO samples (relative SE ~ 1/sqrt(N·samples)), and bad values are refused by the parser."""
    from avicore.experiments._runner import prepare

    default = width_vs_n.config(False)
    assert [width_vs_n.settings_for(n)["n_iter"] for n in default["n_obs"]] == default["n_iter"] == [4000, 3000,
                                                                                                      2000, 2000]
    assert [width_vs_n.settings_for(n)["elbo_samples"] for n in default["n_obs"]] == [2000, 1000, 500, 200]
    plan = prepare("width-vs-n", out=tmp_path, config_overrides={"n_obs_sizes": [10**6, 10**7], "widths": [8]})
    assert plan.config["n_obs"] == [10**6, 10**7] and plan.config["widths"] == [8]
    assert plan.config["n_iter"] == [2000, 2000] and plan.config["n_samples"] == [10, 10]
    assert plan.config["elbo_samples"] == [100, 20]
    with pytest.raises(ValueError, match="config_overrides must name entries"):
        prepare("width-vs-n", out=tmp_path, config_overrides={"n_obs_size": [10]})
    parser = argparse.ArgumentParser()
    width_vs_n.add_arguments(parser)
    args = parser.parse_args(["--n-obs", "1000000,10000000", "--widths", "4,8"])
    assert args.n_obs_sizes == [10**6, 10**7] and args.widths == [4, 8]
    for bad in (["--n-obs", "1e6"], ["--n-obs", "5"], ["--widths", "0"], ["--widths", ""]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def _renamed(payload: dict, sizes: dict[int, int]) -> dict:
    """The quick run's results.json as if it had run at other sizes (N renamed, numbers unchanged)."""
    saved = json.loads((payload["out"] / "results.json").read_text())
    saved["config"]["n_obs"] = [sizes[n] for n in saved["config"]["n_obs"]]
    saved["summary"]["per_n"] = {str(sizes[int(n)]): v for n, v in saved["summary"]["per_n"].items()}
    for seed in saved["seeds"]:
        for r in seed["per_n"]:
            r["n_obs"] = sizes[r["n_obs"]]
    return saved


def test_merged_runs_give_one_table_and_figure(quick: dict, tmp_path) -> None:
    """The scale runs' tables: runs at other N merge into one table in increasing N, each N keeping its own run's
    numbers; the findings are recomputed over all N; a shorter ladder shows its width as an upper bound."""
    small = json.loads((quick["out"] / "results.json").read_text())
    large = _renamed(quick, {100: 10**7, 1000: 10**6})
    large["config"]["widths"] = [8]
    for v in large["summary"]["per_n"].values():  # as if only MLP(8) had been fitted, and had reached
        v["gaps"] = {k: g for k, g in v["gaps"].items() if k == method_name(8)}
        v["smallest_width"], v["smallest_width_per_seed"] = 8, [8]
    config, seeds, summary = width_vs_n.merge_runs([large, small])
    assert config["n_obs"] == [100, 1000, 10**6, 10**7] and config["widths"] == list(width_vs_n.LADDER)
    assert summary["per_n"]["1000000"] == large["summary"]["per_n"]["1000000"]
    assert summary["per_n"]["100"] == small["summary"]["per_n"]["100"]
    assert [r["n_obs"] for r in seeds[0]["per_n"]] == config["n_obs"]
    found = summary["findings"]["smallest_width_by_n"]
    assert found == {"100": small["summary"]["per_n"]["100"]["smallest_width"],
                     "1000": small["summary"]["per_n"]["1000"]["smallest_width"], "1000000": 8, "10000000": 8}
    text = width_vs_n.table(summary)
    rows = [line for line in text.splitlines() if line.startswith("| 1")]
    assert [r.split(" |")[0] for r in rows] == ["| 100", "| 1,000", "| 1,000,000", "| 10,000,000"]
    assert "| ≤ 8 (seeds: 8) |" in rows[2] and "| ≤ 8 (seeds: 8) |" in rows[3]
    assert width_vs_n.figures(config, seeds, summary, tmp_path) == [str(tmp_path / "width_vs_n.png")]
    with pytest.raises(ValueError, match="must not repeat an N"):
        width_vs_n.merge_runs([small, small])
    other = {**large, "config": {**large["config"], "tolerance": 1e-2}}
    with pytest.raises(ValueError, match="must share 'tolerance'"):
        width_vs_n.merge_runs([small, other])
