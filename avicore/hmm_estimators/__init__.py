"""Estimators with hmmlearn's interface on avicore's kernels (re-exported by :mod:`avicore.hmm`).

- :class:`GaussianHMM`: Gaussian emissions ("spherical", "diag", "full", "tied" covariances).
- :class:`CategoricalHMM`: one symbol per step; :class:`PoissonHMM`: counts; :class:`GMMHMM`: Gaussian mixtures.
- :class:`VariationalCategoricalHMM`, :class:`VariationalGaussianHMM`: variational Bayes (VB-EM).

Every estimator runs its E-step as one forward-backward call over all sequences (:mod:`avicore.kernels.hmm`) and a
vectorised M-step; ``backend=`` selects the kernel.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "BaseHMM": "_base", "ConvergenceMonitor": "_base", "DegenerateStateWarning": "_base", "NotFittedError": "_base",
    "GaussianHMM": "_gaussian", "CategoricalHMM": "_discrete", "PoissonHMM": "_discrete", "GMMHMM": "_gmm",
    "VariationalCategoricalHMM": "_variational", "VariationalGaussianHMM": "_variational",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
