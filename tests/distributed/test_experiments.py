"""``--dask``: the experiment runner's seeds as Dask tasks give the numbers of ``--jobs``."""

from __future__ import annotations

import pytest

from avicore.experiments import REGISTRY, register, run
from avicore.experiments.__main__ import main


@pytest.fixture(autouse=True)
def toy():
    register("toy", "tests.experiments.toy_experiment", "runner test")
    yield
    REGISTRY.pop("toy", None)


def test_seeds_on_a_dask_cluster_equal_jobs(tmp_path, dask_client):
    lines: list[str] = []
    jobs = run("toy", quick=True, out=tmp_path / "jobs", figures=False, jobs=2, log=lambda _: None)
    on_dask = run("toy", quick=True, out=tmp_path / "dask", figures=False, dask=dask_client.scheduler.address,
                  log=lines.append)
    assert [s["draws"] for s in on_dask["seeds"]] == [s["draws"] for s in jobs["seeds"]]
    assert [s["seed"] for s in on_dask["seeds"]] == [0, 1, 2, 3]
    assert on_dask["summary"] == jobs["summary"]
    assert {s["threads"] for s in on_dask["seeds"]} <= {"1", None}
    assert any("4 seed(s) as Dask tasks on 2 worker(s)" in line for line in lines)


def test_real_fits_on_a_dask_cluster_equal_jobs(tmp_path, dask_client):
    overrides = {"n_obs": [60, 120], "n_iter": [40, 40], "n_samples": [2, 2], "elbo_samples": [20, 20],
                 "widths": [1, 2], "seeds": 2}
    kw = {"quick": True, "figures": False, "progress": False, "log": lambda _: None, "config_overrides": overrides}
    jobs = run("width-vs-n", out=tmp_path / "jobs", jobs=1, **kw)  # = --jobs 2 (the runner's own tests)
    on_dask = run("width-vs-n", out=tmp_path / "dask", dask=dask_client.scheduler.address, **kw)
    assert _untimed(on_dask["seeds"]) == _untimed(jobs["seeds"])
    assert _untimed(on_dask["summary"]) == _untimed(jobs["summary"])


def _untimed(obj):
    """``obj`` without wall times (keys naming seconds) and process ids: the numbers that must be equal."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if "second" not in k and k != "pid"}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def test_dask_option_is_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ValueError, match="dask must be a scheduler address or 'local'; got ''"):
        run("toy", out=tmp_path, dask="", log=lambda _: None)
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(SystemExit):
        main(["toy", "--dask", " ", "--out", str(tmp_path)])
    assert "dask must be a scheduler address or 'local'" in capsys.readouterr().err


def test_local_cluster_gives_a_lone_seed_every_job(tmp_path):
    """``--dask local --jobs 2`` with one seed: one worker process with both threads (the large scale runs have one
    seed); with more seeds than jobs, one single-threaded worker per job."""
    lines: list[str] = []
    one = run("toy", quick=True, seeds=1, out=tmp_path / "one", figures=False, dask="local", jobs=2,
              log=lines.append)
    assert [s["num_threads"] for s in one["seeds"]] == [2]
    assert any("1 seed(s) as Dask tasks on 1 worker(s)" in line for line in lines)
    jobs = run("toy", quick=True, seeds=1, out=tmp_path / "jobs", figures=False, jobs=1, log=lambda _: None)
    assert [list(s["draws"]) for s in one["seeds"]] == [list(s["draws"]) for s in jobs["seeds"]]
