"""The decoder's CUDA pass on launch grids whose row and column extents differ (regression: the elementwise
kernels read ``cuda.grid(2)`` as (row, column) while the grid runs x over columns, so a batch with more rows than
the column extent, or the reverse, skipped the bias and activation of some elements)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from avicore import _config
from avicore.models import BayesianDecoder
from tests.tolerances import tol


@pytest.mark.parametrize("rows, hidden", [(5, (4, 4)), (3, (8,))], ids=["rows>cols", "cols>rows"])
def test_cuda_pass_matches_numpy_when_rows_and_columns_differ(monkeypatch, rows, hidden):
    monkeypatch.setattr(_config, "CUDA_THREADS_PER_BLOCK", 8)  # 2 × 2 tiles: extents round to 2, not 8
    rng = np.random.default_rng(0)
    model = BayesianDecoder(2, hidden=hidden, obs_dim=6)
    x = rng.uniform(size=(rows, 6))
    theta = rng.normal(size=(1, model.global_dim))
    mean, log_scale = rng.normal(size=(rows, 2)), rng.normal(size=(rows, 2)) - 1.0
    terms = {b: model.local_terms(x, mean, log_scale, theta, seed=0, step=0, index=np.arange(rows), backend=b)
             for b in ("numpy", "cuda")}
    for field in ("log_joint", "grad_mean", "grad_log_scale", "grad_global"):
        assert_allclose(getattr(terms["cuda"], field), getattr(terms["numpy"], field), **tol(), err_msg=field)
