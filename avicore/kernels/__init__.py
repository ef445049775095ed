"""Kernel families: one module each, holding the NumPy reference, the Numba version and the dispatcher.

CUDA versions live beside them in ``_<family>_cuda.py`` and are imported only when ``backend="cuda"`` runs.
"""
