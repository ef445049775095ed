"""Acceptance on a reduced digits run: latent 8, hidden (64, 64); F-VI vs A-VI with MLP(1), MLP(16), MLP(64), Constant.

Reduced from the issue's 1,797 images to 1,000 training + 297 held-out images and 200 epochs of minibatches of 100
(the full run: ``python -m avicore.experiments dgm``). Measured here (seed 0): training / held-out MSE F-VI
0.0104 / 0.0139, MLP(64) 0.0156 / 0.0202, MLP(16) 0.0213 / 0.0249, MLP(1) 0.067 / 0.069, Constant 0.074 / 0.075.

The issue's criterion that MLP(64) reaches F-VI's training MSE within 5 % with a held-out MSE no worse does NOT hold
on the digits in these runs (ratio ≈ 1.5 at 200 epochs, ≈ 1.24 after 1,000 epochs, and widths 128/256 do not do
better at 300 epochs: 0.0137/0.0139 vs F-VI ≈ 0.0095; the full experiment, 1,500 images, 300 epochs, 5 seeds:
ratio 1.16 train, 1.15 held-out), although A-VI's ELBO overtakes F-VI's after a few hundred epochs. It is
kept below as a strict xfail, so it is visible and turns into a failure the day it starts to hold. What does hold is
asserted: k = 1 and Constant plateau ≥ 30 % above F-VI, and the encoders improve with width, the widest one far
closer to F-VI than the narrow ones.
"""

from __future__ import annotations

import pytest

from avicore.experiments import dgm

CONFIG = {**dgm.config(False), "n_train": 1000, "n_held_out": 297, "epochs": 200, "eval_every": 50,
          "batch_size": 100, "elbo_samples": 10}
METHODS = ("F-VI", "MLP(1)", "MLP(16)", "MLP(64)", "Constant")


@pytest.fixture(scope="module")
def fits() -> dict[str, dict]:
    x, x_held = dgm._load(CONFIG, 0)
    return {m: dgm.fit_method(CONFIG, m, x, x_held, 0, False) for m in METHODS}


def test_narrow_encoders_plateau_at_least_30pct_above_fvi(fits: dict[str, dict]) -> None:
    fvi = fits["F-VI"]
    for m in ("MLP(1)", "Constant"):
        assert fits[m]["train_mse"] >= 1.3 * fvi["train_mse"], (m, fits[m]["train_mse"], fvi["train_mse"])
        assert fits[m]["held_out_mse"] >= 1.3 * fvi["held_out_mse"]


def test_reconstruction_improves_with_encoder_width(fits: dict[str, dict]) -> None:
    mse = {m: fits[m]["train_mse"] for m in METHODS}
    assert mse["MLP(64)"] < mse["MLP(16)"] < mse["MLP(1)"]
    assert mse["MLP(64)"] <= 0.5 * min(mse["MLP(1)"], mse["Constant"])
    assert fits["MLP(64)"]["held_out_mse"] <= 0.5 * min(fits["MLP(1)"]["held_out_mse"],
                                                         fits["Constant"]["held_out_mse"])


@pytest.mark.xfail(strict=True, reason="measured on the digits: MLP(64)/F-VI training MSE ≈ 1.5 at 200 epochs "
                                       "(module docstring); the paper's FashionMNIST finding is not reproduced here")
def test_wide_encoder_matches_fvi_within_5pct(fits: dict[str, dict]) -> None:
    assert fits["MLP(64)"]["train_mse"] <= 1.05 * fits["F-VI"]["train_mse"]
    assert fits["MLP(64)"]["held_out_mse"] <= fits["F-VI"]["held_out_mse"]
