"""A tiny experiment on the runner's contract (tests only): each seed draws a few numbers from its seed."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np


def config(quick: bool) -> dict:
    return {"size": 3 if quick else 5, "seeds": 4}


def run_seed(config: dict, seed: int, progress: bool) -> dict:
    if os.environ.get("TOY_FAIL_AT") == str(seed):
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a seed
    if os.environ.get("TOY_WARN"):  # what an unconverged fit inside a seed does
        from avicore.optim import ConvergenceWarning

        warnings.warn(f"seed {seed}: F-VI fit ended while its ELBO was still rising", ConvergenceWarning,
                      stacklevel=2)
    draws = np.random.default_rng(seed).normal(size=config["size"])
    from avicore import get_num_threads

    return {"draws": draws, "threads": os.environ.get("AVICORE_NUM_THREADS"), "num_threads": get_num_threads(),
            "pid": os.getpid()}


def summarize(config: dict, seeds: list[dict]) -> dict:
    return {"total": float(sum(sum(s["draws"]) for s in seeds)), "n": len(seeds)}


def table(summary: dict) -> str:
    return f"| n | total |\n|---|---|\n| {summary['n']} | {summary['total']:.6f} |"


def figures(config: dict, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([d for s in seeds for d in s["draws"]])
    path = out_dir / "toy.png"
    fig.savefig(path)
    plt.close(fig)
    return [str(path)]
