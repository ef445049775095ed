"""Nonlinear hierarchical model: F-VI vs A-VI with ReLU MLP encoders of width 1-32 (Margossian & Blei 2024).

The model (:class:`avicore.models.NonlinearHierarchical`): flat p(θ), zₙ ~ N(0, 1), xₙ ~ N(θ + zₙ + zₙ sin zₙ,
exp(cos zₙ)²) with the properly normalised Gaussian likelihood, data simulated at θ = 0, N = 10⁴. F-VI fits a free
Gaussian q(zₙ) per observation; A-VI fits q(zₙ) = N(f_φ(xₙ)) with a two-hidden-layer ReLU MLP f_φ of width
k ∈ {1, 2, 4, 8, 16, 32}. The paper's finding: a simple hierarchical model has an ideal inference function, so the
amortization gap ELBO(F-VI) − ELBO(A-VI) ≥ 0 closes as the encoder grows (narrow ones leave a gap, wide ones reach
F-VI's ELBO), and A-VI reaches 1 % of F-VI's final ELBO in comparable or fewer iterations.

Settings (every method the same): Adam with the same learning-rate schedule for F-VI and A-VI, 0.02 decaying
geometrically to 10⁻⁴ (:func:`avicore.optim.exponential_decay`), full batch, S = 10 Monte-Carlo samples per
iteration, 2,000 iterations, 10 seeds (new data and new fits per seed). The paper used Adam at a constant 10⁻² (not
the same for both methods), 100 samples and 20,000 iterations; at N = 10⁴ that is ~10⁶ model evaluations an
iteration, beyond this 2-core machine for 7 methods × 10 seeds, and 2,000 decaying-rate iterations with S = 10
already converge (F-VI's ELBO moves by ~1-2 nats, 5·10⁻⁵ relative, from 2,000 to 3,000 iterations or S = 10 to 30).

Measured per seed and method: the full ELBO (every constant, :func:`avicore.diagnostics.elbo_estimate` with
``elbo_samples`` samples and the seed, so all methods of a seed share common random numbers) and its standard
error, the gap to F-VI with its common-random-numbers standard error (:func:`avicore.amortization_gap`), the ELBO
trace (bin means on a logarithmic grid of iterations), iterations and seconds to reach 1 % of F-VI's final ELBO.
No exact KL or log-evidence: the model has no closed form and the flat prior makes the evidence improper.

Measured, full configuration, seed 0 (N = 10⁴, 2,000 iterations; one thread on a machine loaded ~3x): gap MLP(1)
2,707 ± 4 nats (11 % of |ELBO| = 23,690), MLP(2) 183 ± 2 (0.8 %), MLP(4) 30 ± 0.5 (0.13 %), MLP(8) −0.1 ± 0.3,
MLP(16) 0.0 ± 0.3, MLP(32) −2.6 ± 0.2 (A-VI a hair above F-VI: F-VI's optimisation residual, 10⁻⁴ relative);
iterations to 1 %: F-VI 129, MLP(32) 59, MLP(8) 105, MLP(16) 114, MLP(4) 283, MLP(2) 354, MLP(1) never. CPU time a
seed ≈ 85 s (F-VI ~5.5 s, MLP(1)-(8) 7-10 s each, MLP(16) ~20 s, MLP(32) ~27 s; ELBO estimates ~2 s), so the
10-seed full run (``--jobs 2``: two one-thread processes) takes ~7.5 minutes on the two idle cores, ~15-20 with
the machine shared. ``--quick`` (N = 1,000, widths 1, 2, 8, 32, 1,200 iterations, 2 seeds): 15 s of CPU, 36-38 s
wall on the loaded machine; it gave gaps MLP(1) 210 ± 67 nats (8.7 %), MLP(2) 55 ± 33, MLP(8) 3.0 ± 1.8 (0.13 %),
MLP(32) −0.4 ± 0.4, and iterations to 1 % F-VI 141 ± 8, MLP(8) 163 ± 49, MLP(32) 76 ± 6.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._metrics import fmt_pair as _fmt
from ._metrics import iterations_to_reach, log_bin_means, mean_se, save_figure, seconds_to_reach

WIDTHS = (1, 2, 4, 8, 16, 32)
#: Iterations-to-1 % threshold (relative to F-VI's final ELBO).
REACH = 0.01
#: Points kept of each ELBO trace (bins on a logarithmic grid of iterations).
TRACE_POINTS = 400
#: F-VI is itself an iterative fit: its ELBO sits below its optimum by an optimisation residual (measured by running
#: it 5x longer: 1-5·10⁻⁴ relative at N = 10³-10⁴ after 1,200-2,000 iterations). The bound ELBO(A-VI) ≤ ELBO(F-VI)
#: is checked up to 4 Monte-Carlo standard errors of the gap plus this relative slack.
FVI_SLACK = 5e-4


def config(quick: bool) -> dict:
    """N = 10⁴, widths 1-32, 2,000 iterations, 10 seeds (quick: N = 1,000, widths 1, 2, 8, 32, 1,200 iterations,
    2 seeds)."""
    return {"n_obs": 1000 if quick else 10_000, "theta": 0.0,
            "widths": [1, 2, 8, 32] if quick else list(WIDTHS), "depth": 2,
            "n_iter": 1200 if quick else 2000, "lr": 0.02, "lr_final": 1e-4, "n_samples": 10, "batch_size": None,
            "elbo_samples": 500 if quick else 1000, "seeds": 2 if quick else 10}


def method_name(width: int) -> str:
    """The label of the A-VI fit with an MLP encoder of this width."""
    return f"MLP({width})"


def thin_trace(trace: np.ndarray, n_points: int = TRACE_POINTS) -> dict:
    """At most ``n_points`` bin means of ``trace`` on a logarithmic grid of iterations.

    Returns ``{"iteration": [...], "elbo": [...]}``: ``elbo[k]`` is the mean of the trace over iterations
    (iteration[k-1], iteration[k]] (1-based; the first bin is iteration 1 alone; every iteration when the trace is
    no longer than ``n_points``).

    Examples
    --------
    >>> from avicore.experiments.nonlinear import thin_trace
    >>> thin = thin_trace([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], n_points=3)
    >>> thin["iteration"], thin["elbo"]
    ([1, 2, 6], [1.0, 2.0, 4.5])
    """
    iterations, means = log_bin_means(trace, n_points)
    return {"iteration": iterations, "elbo": means}


def _record(res, elbo: float, elbo_se: float, target: float, gap: float, gap_se: float) -> dict:
    it = iterations_to_reach(res.trace, target, rel=REACH)
    return {"elbo": elbo, "elbo_se": elbo_se, "gap": gap, "gap_se": gap_se, "relative_gap": gap / abs(target),
            "relative_gap_se": gap_se / abs(target),
            "iterations_to_1pct": it, "seconds_to_1pct": seconds_to_reach(res.trace, res.seconds, target, rel=REACH),
            "seconds": res.seconds, "n_iter": res.n_iter, "stop_reason": res.stop_reason,
            "trace": thin_trace(res.trace)}


def fit_methods(x: np.ndarray, widths: list[int], *, n_iter: int, lr: float, lr_final: float, n_samples: int,
                elbo_samples: int, depth: int, seed: int, progress: bool, batch_size: int | None = None,
                stop: Callable[[dict], bool] | None = None) -> dict:
    """F-VI, then A-VI with ``MLP(width)`` for each width in order, on the nonlinear model; all with one seed.

    Every fit runs Adam on the same schedule ``exponential_decay(lr, lr_final, n_iter)`` with the same samples and
    batch size. ELBOs are re-estimated after the fits with ``elbo_samples`` samples and ``seed``, so the gaps use
    common random numbers (:func:`avicore.amortization_gap`). With ``stop``, the ladder stops after the first width
    whose record (the dict below) makes ``stop(record)`` true.

    Returns
    -------
    dict
        ``{"F-VI": {...}, "MLP(k)": {...}, ...}`` with per method: ``elbo``, ``elbo_se``, ``gap``, ``gap_se``,
        ``relative_gap``, ``relative_gap_se``, ``iterations_to_1pct``, ``seconds_to_1pct``, ``seconds``,
        ``n_iter``, ``stop_reason``, ``trace``.
    """
    import avicore
    from avicore.diagnostics import elbo_estimate
    from avicore.encoders import MLP
    from avicore.models import NonlinearHierarchical
    from avicore.optim import exponential_decay

    model = NonlinearHierarchical()
    schedule = exponential_decay(lr, lr_final, n_iter)
    common = {"n_samples": n_samples, "batch_size": batch_size, "elbo_samples": 2}  # ELBOs re-estimated below
    fit = {"n_iter": n_iter, "lr": schedule, "seed": seed, "progress": progress}
    fvi = avicore.FVI(model, **common).fit(x, **fit)
    est = elbo_estimate(model, x, fvi, n_samples=elbo_samples, seed=seed, backend=fvi.backend)
    target = est.elbo
    out = {"F-VI": _record(fvi, est.elbo, est.se, target, 0.0, 0.0)}
    for width in widths:
        avi = avicore.AVI(model, MLP(int(width), depth=depth), **common).fit(x, **fit)
        gap = avicore.amortization_gap(fvi, avi, n_samples=elbo_samples, seed=seed)
        rec = _record(avi, gap.elbo_avi.elbo, gap.elbo_avi.se, target, gap.gap, gap.se)
        out[method_name(width)] = rec
        if stop is not None and stop(rec):
            break
    return out


def simulate(n_obs: int, seed: int, theta: float = 0.0) -> np.ndarray:
    """The data of one seed: ``n_obs`` draws of the nonlinear model at ``theta``."""
    from avicore.models import NonlinearHierarchical

    return NonlinearHierarchical().simulate(n_obs, seed=seed, theta=theta).x


def run_seed(config: dict, seed: int, progress: bool) -> dict:
    """New data and every fit from ``seed``: F-VI and one A-VI fit per width."""
    x = simulate(config["n_obs"], seed, config["theta"])
    methods = fit_methods(x, config["widths"], n_iter=config["n_iter"], lr=config["lr"], lr_final=config["lr_final"],
                          n_samples=config["n_samples"], elbo_samples=config["elbo_samples"], depth=config["depth"],
                          seed=seed, progress=progress, batch_size=config["batch_size"])
    return {"methods": methods}


def _fvi_bound_holds(rec: dict, elbo_fvi: float) -> bool:
    """ELBO(A-VI) ≤ ELBO(F-VI) up to 4 Monte-Carlo SEs of the gap and F-VI's optimisation slack."""
    return rec["gap"] >= -(4.0 * rec["gap_se"] + FVI_SLACK * abs(elbo_fvi))


def summarize(config: dict, seeds: list[dict]) -> dict:
    """Mean ± SE over seeds per method, and the findings: the gap closes with width, F-VI bounds A-VI, wide A-VI
    reaches 1 % of F-VI's ELBO in comparable or fewer iterations."""
    names = ["F-VI"] + [method_name(w) for w in config["widths"]]
    per = {}
    for m in names:
        rows = [s["methods"][m] for s in seeds if m in s["methods"]]
        per[m] = {key: mean_se([r[key] for r in rows])
                  for key in ("elbo", "gap", "relative_gap", "iterations_to_1pct", "seconds_to_1pct", "seconds")}
        per[m]["gap_mc_se"] = float(np.sqrt(np.mean([r["gap_se"] ** 2 for r in rows])))
        per[m]["reached"] = sum(r["iterations_to_1pct"] is not None for r in rows)
        per[m]["n_seeds"] = len(rows)
    widths = [method_name(w) for w in config["widths"]]
    narrow, wide = widths[0], widths[-1]

    def spread(m: str) -> float:  # seed-to-seed SE, or the Monte-Carlo SE with a single seed
        se = per[m]["gap"][1]
        return per[m]["gap_mc_se"] if math.isnan(se) else max(se, per[m]["gap_mc_se"])

    steps_ok = [per[b]["gap"][0] <= per[a]["gap"][0] + 3.0 * math.hypot(spread(a), spread(b))
                for a, b in itertools.pairwise(widths)]
    bound = [_fvi_bound_holds(s["methods"][m], s["methods"]["F-VI"]["elbo"]) for s in seeds for m in widths]
    z_min = min(s["methods"][m]["gap"] / s["methods"][m]["gap_se"] for s in seeds for m in widths)
    it_fvi, it_wide = per["F-VI"]["iterations_to_1pct"][0], per[wide]["iterations_to_1pct"][0]
    findings = {
        "narrowest": narrow, "widest": wide,
        "gap_narrowest": per[narrow]["gap"][0], "gap_widest": per[wide]["gap"][0],
        "relative_gap_narrowest": per[narrow]["relative_gap"][0], "relative_gap_widest": per[wide]["relative_gap"][0],
        "narrow_leaves_gap": per[narrow]["relative_gap"][0] > 0.01,
        "wide_closes_gap": per[wide]["relative_gap"][0] <= 1e-3,
        "gap_shrinks_with_width": per[wide]["gap"][0] <= 0.01 * per[narrow]["gap"][0],
        "gap_nonincreasing_in_width": all(steps_ok),
        "fvi_bounds_avi": all(bound),
        "min_gap_z": z_min,
        "iterations_to_1pct_fvi_over_widest": (it_fvi / it_wide if per["F-VI"]["reached"] and per[wide]["reached"]
                                               else None),
        "wide_reaches_1pct_no_slower": (per[wide]["reached"] == len(seeds) and per["F-VI"]["reached"] == len(seeds)
                                        and it_wide <= 1.25 * it_fvi),
    }
    return {"settings": {k: config[k] for k in ("n_obs", "widths", "n_iter", "lr", "lr_final", "n_samples",
                                                "elbo_samples")},
            "methods": per, "findings": findings}




def table(summary: dict) -> str:
    """ELBO, gap, relative gap, iterations and seconds to 1 % of F-VI's ELBO per method, then the findings."""
    lines = ["| method | ELBO | gap (nats) | gap / abs(ELBO F-VI) | iterations to 1 % | seconds to 1 % | seconds | "
             "reached |", "|---|---|---|---|---|---|---|---|"]
    for m, v in summary["methods"].items():
        rel = "-" if m == "F-VI" else f"{float(v['relative_gap'][0]):.2e}"
        lines.append(f"| {m} | {_fmt(v['elbo'], 1)} | {'-' if m == 'F-VI' else _fmt(v['gap'], 2)} | {rel} | "
                     f"{_fmt(v['iterations_to_1pct'], 0)} | {_fmt(v['seconds_to_1pct'], 2)} | "
                     f"{_fmt(v['seconds'], 1)} | {v['reached']}/{v['n_seeds']} |")
    f = summary["findings"]
    ratio = f["iterations_to_1pct_fvi_over_widest"]
    lines.append(f"\ngap {f['narrowest']}: {f['relative_gap_narrowest']:.2%} of abs(ELBO); {f['widest']}: "
                 f"{f['relative_gap_widest']:.2e}; iterations to 1 %, F-VI / {f['widest']}: "
                 + ("-" if ratio is None else f"{ratio:.2f}") + f"; smallest gap z-score {f['min_gap_z']:.1f}")
    for key in ("narrow_leaves_gap", "wide_closes_gap", "gap_shrinks_with_width", "gap_nonincreasing_in_width",
                "fvi_bounds_avi", "wide_reaches_1pct_no_slower"):
        lines.append(f"{key}: {f[key]}")
    return "\n".join(lines)


def _distance_traces(seeds: list[dict], names: list[str]) -> dict:
    """Per method: (iterations, mean over seeds of ELBO* − trace), ELBO* the best value any method of the seed
    reached (final estimates and trace bins)."""
    out = {}
    per_seed = []
    for s in seeds:
        ms = s["methods"]
        best = max(max(ms[m]["elbo"] for m in ms), max(max(ms[m]["trace"]["elbo"]) for m in ms))
        per_seed.append((best, ms))
    for m in names:
        runs = [(best, ms[m]["trace"]) for best, ms in per_seed if m in ms]
        if not runs:
            continue
        k = min(len(t["iteration"]) for _, t in runs)
        dist = np.mean([best - np.asarray(t["elbo"][:k]) for best, t in runs], axis=0)
        out[m] = (np.asarray(runs[0][1]["iteration"][:k]), dist)
    return out


def figures(config: dict, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    """Gap vs width, ELBO traces (distance to the best ELBO, log-log) and iterations / seconds to 1 % box plots."""
    import matplotlib.pyplot as plt

    names = list(summary["methods"])
    widths = [int(w) for w in config["widths"]]
    files = []
    # 1. Gap vs width.
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in seeds:
        ws = [w for w in widths if method_name(w) in s["methods"]]
        ax.plot(ws, [s["methods"][method_name(w)]["gap"] for w in ws], "o", color="grey", alpha=0.4, ms=4)
    mean = [float(summary["methods"][method_name(w)]["gap"][0]) for w in widths]
    err = [np.nan_to_num(float(summary["methods"][method_name(w)]["gap"][1])) for w in widths]  # "nan": one seed
    ax.errorbar(widths, mean, yerr=err, marker="o", color="C0", capsize=3, label="mean ± SE over seeds")
    elbo_f = abs(float(summary["methods"]["F-VI"]["elbo"][0]))
    ax.axhline(1e-3 * elbo_f, color="C3", ls="--", lw=0.8, label="0.1 % of |ELBO(F-VI)|")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=1.0)
    if min(mean) >= 0:
        ax.set_ylim(bottom=0.0)
    ax.set(xlabel="MLP width k", ylabel="amortization gap ELBO(F-VI) − ELBO(A-VI) (nats)",
           title=f"nonlinear model, N = {config['n_obs']:,}")
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "nonlinear_gap_vs_width.png"))
    # 2. ELBO traces, log-log distance to the best ELBO.
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (m, (it, dist)) in enumerate(_distance_traces(seeds, names).items()):
        keep = dist > 0
        ax.plot(it[keep], dist[keep], label=m, color="black" if m == "F-VI" else f"C{i}",
                lw=2.0 if m == "F-VI" else 1.2)
    ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel="ELBO* − ELBO estimate (nats, mean over seeds)",
           title="distance to the best ELBO (ELBO*: the best any method reached)")
    ax.axhline(REACH * elbo_f, color="grey", ls="--", lw=0.8, label="1 % of |ELBO(F-VI)|")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "nonlinear_elbo_traces.png"))
    # 3. Iterations and seconds to 1 % of F-VI's final ELBO.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "iterations_to_1pct", "iterations"), (axes[1], "seconds_to_1pct", "seconds")):
        data = [[s["methods"][m][key] for s in seeds if m in s["methods"] and s["methods"][m][key] is not None]
                for m in names]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=names)
        ax.set(ylabel=f"{label} to 1 % of F-VI's final ELBO", yscale="log",
               title="(methods that never reach it: empty)")
        ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "nonlinear_iterations_to_1pct.png"))
    return files


