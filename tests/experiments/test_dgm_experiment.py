"""``python -m avicore.experiments dgm --quick``: the runner contract and the qualitative finding on the digits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from avicore.experiments import dgm, run
from avicore.experiments.__main__ import main


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("dgm")
    payload = run("dgm", quick=True, seeds=1, out=out, progress=False, figures=True, log=lambda _: None)
    payload["out"] = out
    return payload


def test_quick_run_writes_results_and_figures(quick: dict) -> None:
    saved = json.loads((quick["out"] / "results.json").read_text())
    assert saved["complete"] and saved["experiment"] == "dgm"
    assert sorted(saved["figures"]) == ["dgm_curves.png", "dgm_epochs_to_threshold.png"]
    for name in saved["figures"]:
        assert (quick["out"] / name).stat().st_size > 1000
    seed = saved["seeds"][0]["methods"]
    assert set(seed) == set(dgm.config(True)["methods"])
    for m, v in seed.items():
        assert len(v["mse_trace"]) == len(v["epochs"]) == dgm.config(True)["epochs"] // dgm.config(True)["eval_every"]
        assert len(v["elbo_trace"]) == dgm.config(True)["epochs"], m
        assert math.isfinite(v["elbo"]) and 0.0 < v["train_mse"] < 0.2 and 0.0 < v["held_out_mse"] < 0.2


def test_quick_run_shows_that_a_wide_encoder_is_needed(quick: dict) -> None:
    """k = 1 and Constant plateau far above F-VI; the widest encoder gets much closer than they do."""
    per = quick["summary"]["methods"]
    fvi, wide = per["F-VI"]["train_mse"][0], per["MLP(64)"]["train_mse"][0]
    for narrow in ("MLP(1)", "Constant"):
        assert per[narrow]["train_mse"][0] >= 1.3 * fvi
        assert per[narrow]["held_out_mse"][0] >= 1.3 * per["F-VI"]["held_out_mse"][0]
        assert wide <= 0.75 * per[narrow]["train_mse"][0]
    assert quick["summary"]["findings"]["narrow_plateau_30pct_above"]
    # The MSE trace is computed from the same decoder the final MSE uses (last evaluation = end of the fit).
    seed = quick["seeds"][0]["methods"]["F-VI"]
    assert np.isclose(seed["mse_trace"][-1], seed["train_mse"], rtol=1e-12)


def test_cli_accepts_data_option_and_rejects_unknown_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dgm", "--quick", "--bogus", "1"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    parser = __import__("argparse").ArgumentParser()
    dgm.add_arguments(parser)
    assert parser.parse_args(["--data", "images.idx"]).data == "images.idx"
    cfg = dgm.settings({**dgm.config(False), "data": "images.idx"})
    assert (cfg["latent_dim"], cfg["hidden"], cfg["n_train"]) == (64, [256, 256], 10_000)


def test_data_option_reads_idx_images(tmp_path) -> None:
    from avicore.datasets import write_idx

    rng = np.random.default_rng(0)
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, rng.integers(0, 256, size=(30, 4, 4), dtype=np.uint8))
    cfg = {**dgm.settings({**dgm.config(True), "data": str(path)}), "n_train": 20, "n_held_out": 10}
    x, x_held = dgm._load(cfg, 0)
    assert x.shape == (20, 16) and x_held.shape == (10, 16) and 0.0 <= x.min() and x.max() <= 1.0
