"""avicore's compiled (Cython) kernels, built ahead of time by ``setup.py``.

Import a kernel module with :func:`load`, which turns a missing build into a clear error instead of an
``ImportError`` deep inside a dispatcher.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILD_HINT = 'run `pip install -e .` (or `python setup.py build_ext --inplace`) in the avicore source tree'


class NotBuiltError(ImportError):
    """The compiled kernels were not built."""


def load(name: str) -> ModuleType:
    """Import ``avicore._cy.<name>``, raising :class:`NotBuiltError` with the build command if it is missing."""
    try:
        return importlib.import_module(f"avicore._cy.{name}")
    except ImportError as exc:
        raise NotBuiltError(f"avicore's compiled kernels are not built ({exc}); {BUILD_HINT}.") from exc
