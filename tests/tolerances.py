"""One table of comparison tolerances, by dtype (pass them by keyword: ``assert_allclose(a, b, **tol(dt))``)."""

from __future__ import annotations

import numpy as np

_TOL = {
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-10},
    np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-4},
}


def tol(dtype: object = np.float64, scale: float = 1.0) -> dict[str, float]:
    """``rtol``/``atol`` for comparing a backend against the float64 reference; ``scale`` widens both."""
    t = _TOL[np.dtype(dtype)]
    return {"rtol": t["rtol"] * scale, "atol": t["atol"] * scale}
