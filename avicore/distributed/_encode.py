"""An A-VI encoder applied to a dask array chunk by chunk (:meth:`avicore.VIResult.encode`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_dask(model: Any, bound: Any, params: np.ndarray, window: tuple[int, ...], x_new: Any) -> tuple[Any, Any]:
    """(mean, sd) of q(zₙ) for every row of the dask array ``x_new``, as dask arrays chunked like its rows."""
    if window != (0,):
        raise ValueError(f"x_new may be a dask array only for an encoder with window (0,); got window {window} "
                         f"(the window reaches rows of neighbouring chunks): pass a NumPy array.")
    if x_new.ndim == 1 and model.obs_dim == 1:
        x_new = x_new[:, None]
    if x_new.ndim != 2 or x_new.shape[1] != model.obs_dim:
        raise ValueError(f"x_new must have shape (n_new, {model.obs_dim}); got a dask array of shape "
                         f"{x_new.shape}.")
    x_new = x_new.astype(np.float64)
    if len(x_new.chunks[1]) > 1:
        x_new = x_new.rechunk({1: -1})
    d = bound.latent_dim
    stacked = x_new.map_blocks(_encode_block, model, bound, params, dtype=np.float64,
                               chunks=(x_new.chunks[0], (2,), (d,)), new_axis=2)
    return stacked[:, 0, :], np.exp(stacked[:, 1, :])


def _encode_block(block: np.ndarray, model: Any, bound: Any, params: np.ndarray) -> np.ndarray:
    from ..encoders import window_inputs
    from ..inference import _encode_all

    xa = model.validate_data(block, "x_new")
    mean, log_scale = _encode_all(bound, params, bound.design(window_inputs(model.encoder_inputs(xa), (0,))))
    return np.stack([mean, log_scale], axis=1)
