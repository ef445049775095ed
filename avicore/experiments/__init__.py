"""Reproductions of Margossian & Blei (UAI 2024), one command each.

Run ``python -m avicore.experiments LIST`` for the list and ``python -m avicore.experiments NAME [--quick]
[--seeds K] [--out DIR]`` for one experiment; :func:`run` does the same from Python. Each experiment is a module of
this package (``config``, ``run_seed``, ``summarize``, ``table``, ``figures``; see ``_runner``) registered below.
"""

from __future__ import annotations

from ._runner import REGISTRY, get, register, run
from ._tidy import load

# The paper's experiments in its order, then the deep generative model.
register("linear", "linear", "linear hierarchical model, N = 10^4: F-VI vs Constant, Polynomial(1, 2), exact gaps")
register("nonlinear", "nonlinear", "nonlinear hierarchical model, N = 10^4: F-VI vs MLP encoders of width 1-32")
register("width-vs-n", "width_vs_n", "nonlinear model: smallest MLP width within 0.1 % of F-VI, N = 10^2 to 10^5")
register("saw", "saw", "saw time series, N = 1,000: A-VI on x_n alone leaves a gap, windows holding x_n+1 close it")
register("random-walk", "random_walk", "Gaussian random walk, N = 1,000: A-VI gap vs window w = 0-8, closed-form floor")
register("gp", "gp", "Gaussian process, N = 1,000: F-VI vs MLP encoders of width 1-64, full-rank and exact references")
register("discrete-hmm", "discrete_hmm", "3-state HMM, N = 1,000: exact mean-field ELBO, F-VI vs window encoders")
register("dgm", "dgm", "deep generative model (Bayesian MLP decoder) on images: F-VI vs MLP encoders of width 1-64")

__all__ = ["REGISTRY", "get", "load", "register", "run"]
