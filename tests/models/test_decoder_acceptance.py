"""Acceptance on the digits: latent 8, hidden (64, 64); F-VI vs A-VI with MLP(1), MLP(16), MLP(64), Constant.

One seed of the full experiment's configuration (``python -m avicore.experiments dgm``: 1,500 training + 297
held-out of the 1,797 images, 300 epochs of minibatches of 100, encoder weight decay 300; the full run has 5 seeds,
``benchmarks/README.md``). Measured over those 5 seeds: training / held-out MSE F-VI 0.0108 / 0.0137, MLP(64) 0.0096
/ 0.0130, MLP(16) 0.0125 / 0.0158, MLP(1) 0.060 / 0.061, Constant 0.073 / 0.073; MLP(64) / F-VI per seed: training
0.909, 0.879, 0.863, 0.921, 0.862, held-out 0.984, 0.952, 0.949, 1.018, 0.848 (seed 0 is the one tested here).

History: A-VI used to start every q(zₙ) at sd 1 (the encoder's zero output layer) while F-VI starts the decoder's
locals at sd 0.01 (``BayesianDecoder.init_local_sd``, whose docstring explains why sd 1 makes the decoder learn to
ignore z): MLP(64) sat at 1.5x F-VI's training MSE. With the encoder started at the model's initial local scale it
matched the training MSE but its held-out MSE was 6.6 % above F-VI's — the encoder overfitted 1,500 images, while F-VI
optimises each held-out image's factor (300 full-batch steps with the decoder frozen, as many as each training local
received). An L2 penalty on the encoder's weights (``AVI(weight_decay=300)``) fixed that.
"""

from __future__ import annotations

import pytest

from avicore.experiments import dgm
from avicore.optim import ConvergenceWarning

CONFIG = {**dgm.config(False), "eval_every": 50, "elbo_samples": 10}
METHODS = ("F-VI", "MLP(1)", "MLP(16)", "MLP(64)", "Constant")


@pytest.fixture(scope="module")
def fits() -> dict[str, dict]:
    x, x_held = dgm._load(CONFIG, 0)
    # The experiment's fixed budget (300 epochs) ends with the ELBO still rising (~2 nats an iteration for F-VI):
    # the fits report converged=False and warn. The comparisons below are at that equal budget.
    with pytest.warns(ConvergenceWarning, match="fit ended .* while its ELBO was still rising"):
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


def test_wide_encoder_held_out_mse_no_worse_than_fvi(fits: dict[str, dict]) -> None:
    assert fits["MLP(64)"]["held_out_mse"] <= fits["F-VI"]["held_out_mse"], (fits["MLP(64)"], fits["F-VI"])
