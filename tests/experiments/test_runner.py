"""The experiment runner: results.json, resuming, parallel seeds, the CLI, and runs without matplotlib."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from avicore.experiments import REGISTRY, register, run
from avicore.experiments.__main__ import main


@pytest.fixture(autouse=True)
def toy():
    register("toy", "tests.experiments.toy_experiment", "runner test")
    yield
    REGISTRY.pop("toy", None)


def _quiet(_: str) -> None:
    return None


def _expected_total(seeds: range, size: int = 3) -> float:
    return float(sum(np.random.default_rng(s).normal(size=size).sum() for s in seeds))


def test_results_json_holds_every_seed_and_the_summary(tmp_path) -> None:
    payload = run("toy", quick=True, out=tmp_path, figures=False, log=_quiet)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["complete"] and [s["seed"] for s in saved["seeds"]] == [0, 1, 2, 3]
    assert saved["summary"]["total"] == pytest.approx(_expected_total(range(4)), rel=1e-12)
    assert payload["summary"] == saved["summary"]


def test_parallel_seeds_give_the_same_numbers_in_separate_one_thread_processes(tmp_path) -> None:
    serial = run("toy", quick=True, out=tmp_path / "serial", figures=False, log=_quiet)
    parallel = run("toy", quick=True, out=tmp_path / "parallel", figures=False, jobs=2, log=_quiet)
    assert [s["draws"] for s in parallel["seeds"]] == [s["draws"] for s in serial["seeds"]]
    assert [s["seed"] for s in parallel["seeds"]] == [0, 1, 2, 3]
    assert {s["pid"] for s in parallel["seeds"]}.isdisjoint({os.getpid()})
    assert {s["threads"] for s in parallel["seeds"]} == {"1"} or os.cpu_count() >= 4


def test_an_interrupted_run_keeps_finished_seeds_and_a_rerun_resumes(tmp_path, monkeypatch) -> None:
    lines: list[str] = []
    monkeypatch.setenv("TOY_FAIL_AT", "2")
    with pytest.raises(KeyboardInterrupt):
        run("toy", quick=True, out=tmp_path, figures=False, log=lines.append)
    monkeypatch.delenv("TOY_FAIL_AT")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert not saved["complete"] and [s["seed"] for s in saved["seeds"]] == [0, 1]
    assert any("interrupted: 2 finished seed(s) kept" in line for line in lines)
    # Same configuration (any number of seeds): the saved seeds are kept, not rerun — mark them to tell.
    for s in saved["seeds"]:
        s["marker"] = "kept"
    (tmp_path / "results.json").write_text(json.dumps(saved))
    lines.clear()
    payload = run("toy", quick=True, out=tmp_path, figures=False, seeds=3,
                  log=lines.append)
    assert any("resuming toy: 2 of 3 seeds" in line for line in lines)
    assert [s.get("marker") for s in payload["seeds"]] == ["kept", "kept", None]
    assert payload["summary"]["total"] == pytest.approx(_expected_total(range(3)), rel=1e-12)
    # A changed configuration starts afresh.
    fresh = run("toy", quick=False, out=tmp_path, figures=False, log=_quiet)
    assert fresh["summary"]["total"] == pytest.approx(_expected_total(range(4), size=5), rel=1e-12)


def test_figures_are_written_and_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    payload = run("toy", quick=True, out=tmp_path / "with", log=_quiet)
    assert payload["figures"] == ["toy.png"] and (tmp_path / "with" / "toy.png").stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    lines: list[str] = []
    payload = run("toy", quick=True, out=tmp_path / "without", log=lines.append)
    assert payload["figures"] == [] and payload["complete"]
    assert any("matplotlib is not installed" in line for line in lines)
    assert json.loads((tmp_path / "without" / "results.json").read_text())["summary"]["n"] == 4


def test_cli_lists_runs_and_rejects_bad_input(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["LIST"]) == 0
    listing = capsys.readouterr().out
    assert "toy" in listing and "dgm" in listing
    assert main(["toy", "--quick", "--no-figures", "--jobs", "1", "--out", str(tmp_path)]) == 0
    assert "| n | total |" in capsys.readouterr().out
    assert main(["linear", "--help"]) == 0
    assert "--jobs" in (out := capsys.readouterr().out) and "options of linear:" in out and "--tol" in out
    with pytest.raises(SystemExit):
        main([])
    assert "the experiment name (or LIST) is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "experiment must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["toy", "--jobs", "0"])
    assert "--jobs must be a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="config_overrides must name entries"):
        run("toy", out=tmp_path, config_overrides={"bogus": 1}, log=_quiet)
    with pytest.raises(ValueError, match="jobs must be"):
        run("toy", out=tmp_path, jobs=0, log=_quiet)
