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
    # A changed configuration is refused (nothing lost); with overwrite the old run is moved aside, not deleted.
    with pytest.raises(ValueError, match=r"out must be a new folder or one holding this run's results; .* holds "
                                         r"results of 'toy' with another configuration: size=3 \(now 5\)\. Choose "
                                         r"another --out, or pass --overwrite"):
        run("toy", quick=False, out=tmp_path, figures=False, log=_quiet)
    fresh = run("toy", quick=False, out=tmp_path, figures=False, log=_quiet, overwrite=True)
    assert fresh["summary"]["total"] == pytest.approx(_expected_total(range(4), size=5), rel=1e-12)
    aside = [p for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name + ".replaced-")]
    assert len(aside) == 1 and json.loads((aside[0] / "results.json").read_text())["config"]["size"] == 3
    # overwrite never resumes: the same configuration again is moved aside too (a second, distinct name)
    again = run("toy", quick=False, out=tmp_path, figures=False, log=_quiet, overwrite=True)
    assert again["summary"] == fresh["summary"]
    assert len([p for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name + ".replaced-")]) == 2


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
    assert "argument --jobs: must be a positive integer; got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="config_overrides must name entries"):
        run("toy", out=tmp_path, config_overrides={"bogus": 1}, log=_quiet)
    with pytest.raises(ValueError, match="jobs must be"):
        run("toy", out=tmp_path, jobs=0, log=_quiet)


def test_another_experiments_folder_is_refused_and_nothing_is_created_for_bad_options(tmp_path, capsys) -> None:
    run("toy", quick=True, out=tmp_path / "d", figures=False, log=_quiet)
    before = (tmp_path / "d" / "results.json").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["linear", "--quick", "--no-figures", "--out", str(tmp_path / "d")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "holds results of the experiment 'toy'" in err and "--overwrite" in err and "usage:" in err
    assert (tmp_path / "d" / "results.json").read_text() == before
    bad = [(["toy", "--seeds", "-1"], "argument --seeds: must be a positive integer; got -1"),
           (["toy", "--seeds", "two"], "argument --seeds: must be a positive integer; got 'two'"),
           (["toy", "--jobs", "0"], "argument --jobs: must be a positive integer; got 0"),
           (["toy", "--out", str(tmp_path / "d" / "results.json")], "out must be a folder; got"),
           (["toy", "--out", str(tmp_path / "d" / "results.json" / "x")], "out must be a folder that can be created"),
           (["linear", "--quick", "--tol", "-5", "--out", str(tmp_path / "new")], "tol must be >= 0; got -5.0"),
           (["linear", "--quick", "--n-obs", "1", "--out", str(tmp_path / "new")], "n_obs must be >= 2; got 1"),
           (["dgm", "--quick", "--data", str(tmp_path / "none.gz"), "--out", str(tmp_path / "new")],
            "data must be a readable IDX image file")]
    for argv, message in bad:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err, argv
    assert not (tmp_path / "new").exists()  # validated before any folder was created


def test_an_out_that_cannot_be_created_is_a_usage_error(tmp_path, capsys) -> None:
    """The twin of the permission test below that runs as root too: no folder can be made inside a file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["toy", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "out must be" in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_an_unwritable_out_is_a_usage_error(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["toy", "--out", str(locked / "sub")])
        assert exc.value.code == 2 and "out must be a writable folder" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_fit_warnings_are_recorded_per_seed_and_counted_in_the_log(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TOY_WARN", "1")
    lines: list[str] = []
    payload = run("toy", quick=True, seeds=2, out=tmp_path, figures=False, log=lines.append)
    assert [s["fit_warnings"] for s in payload["seeds"]] == [
        [{"category": "ConvergenceWarning", "message": f"seed {k}: F-VI fit ended while its ELBO was still rising"}]
        for k in (0, 1)]
    assert "seed 1: 1 fit warning(s) of non-convergence, 0 of divergence" in "\n".join(lines)
