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
    # The paper's FashionMNIST configuration (Margossian & Blei 2024, §5.3).
    paper = dgm.FASHION
    assert (paper["batch_size"], paper["n_samples"], paper["lr"], paper["lr_final"], paper["epochs"]) == (
        1000, 1, 1e-3, 1e-3, 5000)
    assert paper["methods"] == ["F-VI", "MLP(1)", "MLP(64)", "MLP(128)", "MLP(256)", "Constant"]
    ns = parser.parse_args(["--data", "fashion-mnist", "--epochs", "40", "--backend", "cuda"])
    assert (ns.data, ns.epochs_override, ns.backend) == ("fashion-mnist", 40, "cuda")
    for bad in (["--epochs", "0"], ["--epochs", "x"], ["--backend", "gpu"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert "must be a positive integer" in capsys.readouterr().err


def test_epochs_option_replaces_the_chosen_settings_epochs_and_keeps_the_curves_sampled() -> None:
    digits = dgm.settings({**dgm.config(False), "epochs_override": 7})
    assert (digits["epochs"], digits["eval_every"]) == (7, 1)
    fashion = dgm.settings({**dgm.config(False), "data": "images.idx", "epochs_override": 400})
    assert (fashion["epochs"], fashion["eval_every"]) == (400, 20)


def test_fashion_mnist_quick_mode_uses_the_real_data_when_installed(tmp_path, monkeypatch) -> None:
    """Quick mode on FashionMNIST when it is there, on the digits (said in the table) when it is not; a full run
    without the files stops with the loader's message."""
    from avicore.datasets import fashion_mnist_dir

    small = {**dgm.FASHION_QUICK, "n_train": 100, "n_held_out": 20, "methods": ["F-VI", "MLP(64)"], "epochs": 2,
             "eval_every": 1, "held_out_iter": 5, "elbo_samples": 4}
    lines: list[str] = []
    payload = run("dgm", quick=True, seeds=1, out=tmp_path / "q", progress=False, figures=False, log=lines.append,
                  config_overrides={"data": "fashion-mnist", "fashion": small, "n_train": 60, "n_held_out": 20,
                                    "epochs": 2, "eval_every": 1, "held_out_iter": 5, "elbo_samples": 4,
                                    "methods": ["F-VI", "MLP(64)"]})
    settings = payload["summary"]["settings"]
    seed = payload["seeds"][0]["methods"]
    if fashion_mnist_dir() is not None:
        assert settings["data"] == "fashion-mnist" and settings["latent_dim"] == 64 and settings["n_train"] == 100
        assert "data: FashionMNIST;" in "\n".join(lines)
        assert len(seed["MLP(64)"]["held_out_mse_trace"]) == 2 and seed["F-VI"]["held_out_mse_trace"] is None
    else:
        assert settings["data"] is None and "quick run on the digits" in settings["data_note"]
    monkeypatch.setenv("AVICORE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr("avicore.datasets.FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dgm.settings({**dgm.config(False), "data": "fashion-mnist"})
    assert dgm.settings({**dgm.config(True), "data": "fashion-mnist"})["data"] is None
    with pytest.raises(ValueError, match="needs the FashionMNIST files"):  # refused before any worker starts
        dgm.check_config({**dgm.config(False), "data": "fashion-mnist"})
    dgm.check_config({**dgm.config(True), "data": "fashion-mnist"})  # quick: falls back to the digits


def test_data_option_reads_idx_images(tmp_path) -> None:
    from avicore.datasets import write_idx

    rng = np.random.default_rng(0)
    path = tmp_path / "images-idx3-ubyte"
    write_idx(path, rng.integers(0, 256, size=(30, 4, 4), dtype=np.uint8))
    cfg = {**dgm.settings({**dgm.config(True), "data": str(path)}), "n_train": 20, "n_held_out": 10}
    x, x_held = dgm._load(cfg, 0)
    assert x.shape == (20, 16) and x_held.shape == (10, 16) and 0.0 <= x.min() and x.max() <= 1.0
