"""Reproductions of Margossian & Blei (UAI 2024), one command each.

Run ``python -m avicore.experiments LIST`` for the list and ``python -m avicore.experiments NAME [--quick]
[--seeds K] [--out DIR]`` for one experiment; :func:`run` does the same from Python. Each experiment is a module of
this package (``config``, ``run_seed``, ``summarize``, ``table``, ``figures``; see ``_runner``) registered below.
"""

from __future__ import annotations

from ._runner import REGISTRY, get, register, run

register("linear", "linear", "linear hierarchical model: F-VI vs Constant, Polynomial(1), Polynomial(2) encoders")
register("nonlinear", "nonlinear", "nonlinear hierarchical model: F-VI vs MLP encoders of width 1-32")
register("saw", "saw", "saw time series: A-VI closes the gap only with the expanded domain (x_n, x_n+1)")
register("random-walk", "random_walk", "Gaussian random walk (HMM): the gap shrinks with the window but never closes")
register("gp", "gp", "Gaussian process: no encoder closes the gap to F-VI")
register("dgm", "dgm", "deep generative model (Bayesian MLP decoder) on images: F-VI vs MLP encoders of width 1-64")
register("width-vs-n", "width_vs_n", "nonlinear model: the encoder width A-VI needs does not grow with N")

__all__ = ["REGISTRY", "get", "register", "run"]
