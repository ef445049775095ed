"""Acceptance on the digits: latent 8, hidden (64, 64); F-VI vs A-VI with MLP(1), MLP(16), MLP(64), Constant.

One seed of the full experiment's configuration (``python -m avicore.experiments dgm``: 1,500 training + 297
held-out of the 1,797 images, 300 epochs of minibatches of 100; the full run has 5 seeds, ``benchmarks/README.md``).
Measured over those 5 seeds: training / held-out MSE F-VI 0.0108 / 0.0137, MLP(64) 0.0102 / 0.0146, MLP(16) 0.0159
/ 0.0192, MLP(1) 0.063 / 0.063, Constant 0.073 / 0.073; MLP(64) / F-VI per seed: training 1.038, 0.891, 0.919,
0.906, 0.942, held-out 1.135, 1.092, 1.102, 1.064, 0.953.

So the issue's criterion holds for the training MSE (k = 64 within 5 % of F-VI; asserted below on seed 0) but not for
the held-out MSE, which is 6.6 % above F-VI's on average (a strict xfail below, so it turns into a failure the day it
holds). Held-out, F-VI optimises every image's q(zₙ) with the decoder frozen (300 full-batch Adam steps: as many as
each training local received), while the encoder must generalise from 1,500 images: MLP(64)'s held-out / training
ratio is 1.43, F-VI's 1.27.

History of the training criterion: A-VI used to start every q(zₙ) at sd 1 (the encoder's zero output layer) while F-VI
starts the decoder's locals at sd 0.01 (``BayesianDecoder.init_local_sd``, whose docstring explains why sd 1 makes
the decoder learn to ignore z); MLP(64) was then 1.5x F-VI's MSE. A-VI now starts its encoder at the model's initial
local scale. A-VI's ELBO is far above F-VI's (24,393 vs 7,274): with every q(zₙ) moved at every step the encoder
finds the ELBO's posterior scale, while F-VI's minibatched locals, each moved once per epoch, stay near their start.
"""

from __future__ import annotations

import pytest

from avicore.experiments import dgm

CONFIG = {**dgm.config(False), "eval_every": 50, "elbo_samples": 10}
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


def test_wide_encoder_reaches_a_higher_elbo_than_fvi(fits: dict[str, dict]) -> None:
    wide, fvi = fits["MLP(64)"], fits["F-VI"]
    assert wide["elbo"] - fvi["elbo"] > 4 * (wide["elbo_se"] ** 2 + fvi["elbo_se"] ** 2) ** 0.5, (wide, fvi)


def test_wide_encoder_matches_fvi_training_mse_within_5pct(fits: dict[str, dict]) -> None:
    assert fits["MLP(64)"]["train_mse"] <= 1.05 * fits["F-VI"]["train_mse"], (fits["MLP(64)"], fits["F-VI"])


@pytest.mark.xfail(strict=True, reason="measured on the digits: MLP(64)'s held-out MSE is 1.135x F-VI's on seed 0 "
                                       "(1.066x over 5 seeds): F-VI optimises each held-out q(z_n) (module docstring)")
def test_wide_encoder_held_out_mse_no_worse_than_fvi(fits: dict[str, dict]) -> None:
    assert fits["MLP(64)"]["held_out_mse"] <= fits["F-VI"]["held_out_mse"]
