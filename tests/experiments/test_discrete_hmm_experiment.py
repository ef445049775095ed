"""``python -m avicore.experiments discrete-hmm --quick``: results, figures, and the orderings the theory demands."""

from __future__ import annotations

import json

import pytest

from avicore.experiments import discrete_hmm, run


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("discrete-hmm")
    payload = run("discrete-hmm", quick=True, out=out, progress=False, figures=True, log=lambda _: None)
    payload["out"] = out
    return payload


def test_quick_run_writes_results_and_figures(quick: dict) -> None:
    saved = json.loads((quick["out"] / "results.json").read_text())
    assert saved["complete"] and saved["experiment"] == "discrete-hmm"
    assert sorted(saved["figures"]) == ["discrete-hmm_elbo_traces.png", "discrete-hmm_gap_vs_window.png"]
    for name in saved["figures"]:
        assert (quick["out"] / name).stat().st_size > 1000
    assert len(saved["seeds"]) == discrete_hmm.config(True)["seeds"]


def test_orderings_and_gap_shrinking_with_the_window(quick: dict) -> None:
    f = quick["summary"]["findings"]
    assert f["fvi_ge_avi_everywhere"] and f["elbos_below_log_evidence"]
    assert f["gap_decreases_with_w"]
    n = discrete_hmm.config(True)["n_obs"]
    assert f["gap_w0"] > 0.1 * n  # x_t alone misses the neighbours: ~0.4 nats a step
    for seed in quick["seeds"]:
        for v in seed["avi"].values():
            assert v["kl"] > 0.0 and v["gap"] >= 0.0
    assert "fvi_ge_avi_everywhere: True" in discrete_hmm.table(quick["summary"])
