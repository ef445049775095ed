"""avicore: fast factorized (F-VI) and amortized (A-VI) variational inference for latent-variable models.

Importing avicore compiles nothing and imports neither Numba nor SciPy: submodules and the names they provide
load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._config import get_num_threads, set_num_threads
from .backends import show_config

__version__ = "0.1.0"

# Submodules reachable as attributes (``avicore.hmm``) without importing them up front.
_SUBMODULES = frozenset({
    "backends", "hmm", "kernels", "models", "encoders", "optim", "inference", "diagnostics", "chain",
    "quadrature", "datasets", "gp", "emissions", "gradcheck",
})
# Public names re-exported from submodules, loaded lazily: name -> module.
_LAZY_NAMES: dict[str, str] = {
    "FVI": "inference",
    "AVI": "inference",
    "VIResult": "inference",
    "amortization_gap": "diagnostics",
    "elbo_estimate": "diagnostics",
    "check_gradients": "gradcheck",
    "load_result": "_result_io",
}

__all__ = ["__version__", "get_num_threads", "set_num_threads", "show_config", *sorted(_LAZY_NAMES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        module = importlib.import_module(f".{_LAZY_NAMES[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'avicore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_LAZY_NAMES))
