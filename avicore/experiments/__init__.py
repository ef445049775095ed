"""Reproductions of Margossian & Blei (UAI 2024), one command each.

Run ``python -m avicore.experiments LIST`` for the list and ``python -m avicore.experiments NAME [--quick]
[--seeds K] [--out DIR]`` for one experiment; :func:`run` does the same from Python. Each experiment is a module of
this package (``config``, ``run_seed``, ``summarize``, ``table``, ``figures``; see ``_runner``) registered below.
"""

from __future__ import annotations

from ._runner import REGISTRY, get, register, run

# Each experiment is registered once its module exists (issue 7 adds linear, nonlinear, saw, random-walk, gp and
# width-vs-n on this same contract).
register("dgm", "dgm", "deep generative model (Bayesian MLP decoder) on images: F-VI vs MLP encoders of width 1-64")

__all__ = ["REGISTRY", "get", "register", "run"]
