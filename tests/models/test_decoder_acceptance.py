"""Acceptance on a reduced digits run: latent 8, hidden (64, 64); F-VI vs A-VI with MLP(1), MLP(16), MLP(64), Constant.

Reduced from the issue's 1,797 images to 1,000 training + 297 held-out images and 200 epochs of minibatches of 100
(the full run: ``python -m avicore.experiments dgm``). Measured here (seed 0): training / held-out MSE (ELBO)
F-VI 0.0104 / 0.0139 (−3,356), MLP(64) 0.0117 / 0.0187 (+2,177), MLP(16) 0.0124 / 0.0198 (−65), MLP(1) 0.054 /
0.057, Constant 0.073 / 0.074.

The issue's criterion that MLP(64) reaches F-VI's training MSE within 5 % with a held-out MSE no worse does NOT hold
(ratio 1.13 train, 1.34 held-out). Diagnosis:

* A defect, fixed: A-VI used to start every q(zₙ) at sd 1 (the encoder's zero output layer) while F-VI starts the
  decoder's locals at sd 0.01 (``BayesianDecoder.init_local_sd``, whose docstring explains why sd 1 makes the decoder
  learn to ignore z). A-VI now starts its encoder at the model's initial local scale: MLP(64) went from 0.0156 /
  0.0202 (ratio 1.51, ELBO −12,222) to the numbers above.
* Not capacity: an MLP(64) regressed (least squares, Adam) on F-VI's fitted means reproduces them with R² = 0.997, and
  the F-VI decoder reconstructs from the regressed means at MSE 0.0106 (+2.4 %).
* Not the plumbing: the encoder's inputs are standardised, its per-row gradients carry the N/B factor (unbiased
  full-data gradient), Adam is per coordinate. ``heads="separate"`` is worse (0.0144).
* What remains is a different optimum, not a worse fit of the objective: A-VI's ELBO is far above F-VI's (+2,177 vs
  −3,356 here; +12,509 vs +5,591 after 600 epochs, where the MSEs are 0.0101 vs 0.0090), with q(zₙ) at the ELBO's
  scale (sd ≈ 0.1 at a mean spread ≈ 0.75 per coordinate), whereas F-VI's minibatched locals, moved once per epoch,
  are still near their start (sd 0.012, spread 0.11). Relative to the spread of the means, A-VI's posterior noise
  is larger (≈ 0.13 vs ≈ 0.10; a full-batch F-VI, 2,000 steps per image, keeps ≈ 0.10 and reaches MSE 0.0067, ELBO
  7,275), so its decoder is trained on noisier inputs — our best explanation of the gap, not a proof. Held-out,
  F-VI refits every image's q(zₙ) (300 full-batch steps) while the encoder generalises from 1,000 images.

The criterion is kept below as a strict xfail, so it is visible and turns into a failure the day it starts to hold.
What does hold is asserted: k = 1 and Constant plateau ≥ 30 % above F-VI, the encoders improve with width, the widest
one far closer to F-VI than the narrow ones, and A-VI with k = 64 reaches a higher ELBO than F-VI.
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


def test_wide_encoder_reaches_a_higher_elbo_than_fvi(fits: dict[str, dict]) -> None:
    wide, fvi = fits["MLP(64)"], fits["F-VI"]
    assert wide["elbo"] - fvi["elbo"] > 4 * (wide["elbo_se"] ** 2 + fvi["elbo_se"] ** 2) ** 0.5, (wide, fvi)


@pytest.mark.xfail(strict=True, reason="measured on the digits: MLP(64)/F-VI MSE ≈ 1.13 train, 1.34 held-out at 200 "
                                       "epochs; a different optimum, with a higher ELBO (module docstring)")
def test_wide_encoder_matches_fvi_within_5pct(fits: dict[str, dict]) -> None:
    assert fits["MLP(64)"]["train_mse"] <= 1.05 * fits["F-VI"]["train_mse"]
    assert fits["MLP(64)"]["held_out_mse"] <= fits["F-VI"]["held_out_mse"]
