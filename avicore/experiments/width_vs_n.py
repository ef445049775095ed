"""How wide must A-VI's encoder be to match F-VI, as N grows? The nonlinear model for N = 10² to 10⁵.

Margossian & Blei (2024) argue that for a simple hierarchical model p(θ) ∏ p(zₙ) p(xₙ | zₙ, θ) the ideal inference
function f*(xₙ) = ν*ₙ does not depend on N, so the encoder A-VI needs to close the amortization gap does not grow
with the number of observations. This experiment measures it on :class:`avicore.models.NonlinearHierarchical` (flat
p(θ), zₙ ~ N(0, 1), xₙ ~ N(θ + zₙ + zₙ sin zₙ, exp(cos zₙ)²), data at θ = 0): for each N ∈ {10², 10³, 10⁴, 10⁵} it
fits F-VI and A-VI with two-hidden-layer ReLU MLPs of width k from the ladder 1, 2, 4, 8, 16, 32 (the fits of
:mod:`avicore.experiments.nonlinear`), and reports the smallest width whose ELBO reaches F-VI's within 0.1 %:

    gap + 2·SE(gap) ≤ 0.001·|ELBO(F-VI)|,

gap = ELBO(F-VI) − ELBO(A-VI) estimated with common random numbers (:func:`avicore.amortization_gap`), so the
criterion holds at ~97.5 % confidence, not just for the point estimate. The full run stops each ladder at the first
width that reaches it (``--full-ladder`` fits every width), per seed; the reported width for an N is the largest over
seeds.

Settings: every fit at an N uses the same Adam schedule (0.02 decaying geometrically to 10⁻⁴), full batch, S = 10
Monte-Carlo samples. Iterations: 4,000 / 3,000 / 2,000 / 2,000 for N = 10² / 10³ / 10⁴ / 10⁵ — with few observations
the encoder's gradient (a sum over N rows) is noisier, and N = 100 needs ~4,000 iterations before MLP(4) settles
(0.5 % gap after 1,500, 0.04 % after 4,000); the criterion is about capacity, not speed. No minibatches and no
fewer samples at N = 10⁵ (they would have to be the same for F-VI, whose locals each move once an epoch with
minibatches, so they would not save time): N = 10⁵ simply costs ~10x N = 10⁴. ELBO estimates use 2,000 / 1,000 /
500 / 200 samples (the gaps' standard errors: ~20 % of the threshold at N = 100, ~1 % at N = 10⁴).

Measured, full configuration, seed 0, one thread (relative gaps; 20 s of CPU for the two small N): N = 100 (4,000
iterations): MLP(1) 0.12, MLP(2) 3.1·10⁻³, MLP(4) 4.5·10⁻⁴ → smallest width 4 (after 1,500 iterations no width up to
32 met the 2-SE criterion); N = 1,000 (3,000 iterations): MLP(1) 0.11, MLP(2) 6.6·10⁻³, MLP(4) 4.4·10⁻³, MLP(8)
2.2·10⁻⁴ → 8; N = 10⁴ (2,000 iterations, an exploratory full-ladder run): MLP(2) 7.7·10⁻³, MLP(4) 1.3·10⁻³, MLP(8)
~0, MLP(16) ~0, MLP(32) −1·10⁻⁴ → 8. So the width needed stays at 4-8 (one ladder step) from N = 10² to 10⁴; N = 10⁵
was not run here (see the cost). CPU time per iteration at N = 10⁵: F-VI 34 ms, MLP(4) 39 ms, MLP(8) 50 ms (MLP(32)
~3x MLP(8)): ~6.5 CPU minutes for N = 10⁵ with the ladder stopping at 8, ~7.5 a seed in all, so the full run (2
seeds, ``--jobs 2``) takes ~8 minutes on the two idle cores, ~15-20 with the machine shared. ``--quick`` (N = 100
and 1,000, widths 2, 8, 32, every width, 2,500 / 1,500 iterations, 1 seed): 11.5 s of CPU (21-34 s wall on the
loaded machine); it found width 8 at both N (N = 100: MLP(2) 3.4·10⁻³, MLP(8) 4.8·10⁻⁴, MLP(32) 1.2·10⁻⁴; N = 1,000:
8.1·10⁻³, 3.3·10⁻⁴, −7·10⁻⁵).

Larger N (issue 15's scale run): ``--n-obs 1000000`` (or any list) replaces the sizes, each with the schedule of
:func:`settings_for` (2,000 iterations, S = 10, fewer ELBO samples as N grows); ``--widths 8`` shortens the ladder
(the table then reports the width as an upper bound, "≤ 8", since narrower ones were not fitted); ``--dask local``
runs the seeds on a LocalCluster, one worker process per seed with ``--jobs`` threads shared among them. The runs at
different N merge into one table and figure with ``benchmarks/width_vs_n_scale.py`` (:func:`merge_runs`).
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._metrics import mean_se
from .nonlinear import fit_methods, method_name, simulate

LADDER = (1, 2, 4, 8, 16, 32)
#: The 0.1 % criterion.
TOLERANCE = 1e-3
#: Standard errors of the gap added before comparing with the tolerance.
N_SE = 2.0
#: Options that are not configuration entries (:func:`apply_overrides` turns them into entries).
DERIVED_OPTIONS = ("n_obs_sizes",)


def settings_for(n_obs: int) -> dict:
    """The per-N schedule: iterations (fewer as N grows: the encoder's gradient sums over more rows), Monte-Carlo
    samples per fit, and samples of the final ELBO estimates (their relative SE shrinks like 1/sqrt(N·samples), so
    fewer are needed at large N).

    Examples
    --------
    >>> from avicore.experiments.width_vs_n import settings_for
    >>> settings_for(10**5)
    {'n_iter': 2000, 'n_samples': 10, 'elbo_samples': 200}
    >>> settings_for(10**7)["elbo_samples"]
    20
    """
    n_iter = 4000 if n_obs <= 100 else 3000 if n_obs <= 1000 else 2000
    elbo = next((e for limit, e in ((100, 2000), (1000, 1000), (10_000, 500), (100_000, 200), (1_000_000, 100))
                 if n_obs <= limit), 20)
    return {"n_iter": n_iter, "n_samples": 10, "elbo_samples": elbo}


def _schedule(sizes: list[int]) -> dict:
    """``n_obs`` and, per N, the entries of :func:`settings_for` as lists (the configuration's per-N layout)."""
    per_n = [settings_for(n) for n in sizes]
    return {"n_obs": list(sizes), **{key: [s[key] for s in per_n] for key in ("n_iter", "n_samples", "elbo_samples")}}


def config(quick: bool) -> dict:
    """N = 10², 10³, 10⁴, 10⁵ with :func:`settings_for`'s schedule, ladder 1-32 stopped at the first sufficient
    width, 2 seeds (quick: N = 10², 10³, widths 2, 8, 32 all fitted, 1 seed)."""
    if quick:
        sizes = {"n_obs": [100, 1000], "n_iter": [2500, 1500], "n_samples": [10, 10], "elbo_samples": [2000, 1000],
                 "widths": [2, 8, 32], "full_ladder": True, "seeds": 1}
    else:
        sizes = {**_schedule([100, 1000, 10_000, 100_000]), "widths": list(LADDER), "full_ladder": False,
                 "seeds": 2}
    return {**sizes, "tolerance": TOLERANCE, "n_se": N_SE, "depth": 2, "lr": 0.02, "lr_final": 1e-4,
            "batch_size": None, "theta": 0.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--full-ladder``: fit every width at every N instead of stopping at the first sufficient one; ``--n-obs``:
    other sizes (the scale runs: ``--n-obs 1000000``), each with :func:`settings_for`'s schedule; ``--widths``: a
    shorter ladder (e.g. only the width that sufficed at smaller N)."""
    parser.add_argument("--full-ladder", dest="full_ladder", action="store_true", default=None,
                        help="fit every width of the ladder at every N (default: stop at the first width within "
                             "0.1 %% of F-VI's ELBO)")
    parser.add_argument("--n-obs", dest="n_obs_sizes", type=_int_list("--n-obs", minimum=10), default=None,
                        metavar="N[,N...]", help="sizes to run instead of 10^2..10^5, e.g. 1000000,10000000")
    parser.add_argument("--widths", dest="widths", type=_int_list("--widths", minimum=1), default=None,
                        metavar="K[,K...]", help="MLP widths to try, in order (default: 1,2,4,8,16,32)")


def _int_list(option: str, minimum: int) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} must be comma-separated integers; got {text!r}") from None
        if not values or min(values) < minimum:
            raise argparse.ArgumentTypeError(f"{option} values must be >= {minimum}; got {text!r}")
        return values
    return parse


def apply_overrides(config: dict, overrides: dict) -> dict:
    """``n_obs_sizes`` (from ``--n-obs``) replaces the sizes and their per-N schedule; other keys as given."""
    overrides = dict(overrides)
    sizes = overrides.pop("n_obs_sizes", None)
    if sizes is not None:
        config = {**config, **_schedule(sizes)}
    return {**config, **overrides}


def reaches(record: dict, tolerance: float = TOLERANCE, n_se: float = N_SE) -> bool:
    """Whether an A-VI fit's ELBO is within ``tolerance`` (relative) of F-VI's: gap + n_se·SE ≤ tolerance·|ELBO_F|.

    Examples
    --------
    >>> from avicore.experiments.width_vs_n import reaches
    >>> reaches({"relative_gap": 5e-4, "relative_gap_se": 1e-4})  # 5e-4 + 2 x 1e-4 <= 1e-3
    True
    >>> reaches({"relative_gap": 9e-4, "relative_gap_se": 1e-4})
    False
    """
    return record["relative_gap"] + n_se * record["relative_gap_se"] <= tolerance


def _check_lengths(config: dict) -> None:
    n = len(config["n_obs"])
    for key in ("n_iter", "n_samples", "elbo_samples"):
        if len(config[key]) != n:
            raise ValueError(f"{key} must hold one entry per N (len(n_obs) = {n}); got {len(config[key])}.")


def run_seed(config: dict, seed: int, progress: bool) -> dict:
    """For each N: new data from ``seed``, F-VI, then A-VI up the width ladder (stopping at the first width that
    reaches the criterion unless ``full_ladder``)."""
    _check_lengths(config)
    tol, n_se = config["tolerance"], config["n_se"]
    per_n = []
    for n_obs, n_iter, n_samples, elbo_samples in zip(config["n_obs"], config["n_iter"], config["n_samples"],
                                                      config["elbo_samples"]):
        x = simulate(n_obs, seed, config["theta"])
        methods = fit_methods(x, config["widths"], n_iter=n_iter, lr=config["lr"], lr_final=config["lr_final"],
                              n_samples=n_samples, elbo_samples=elbo_samples, depth=config["depth"], seed=seed,
                              progress=progress, batch_size=config["batch_size"],
                              stop=None if config["full_ladder"] else (lambda rec: reaches(rec, tol, n_se)))
        fitted = [w for w in config["widths"] if method_name(w) in methods]
        ok = [w for w in fitted if reaches(methods[method_name(w)], tol, n_se)]
        per_n.append({"n_obs": n_obs, "n_iter": n_iter, "n_samples": n_samples, "elbo_samples": elbo_samples,
                      "elbo_fvi": methods["F-VI"]["elbo"], "widths_fitted": fitted,
                      "smallest_width": ok[0] if ok else None, "methods": methods})
    return {"per_n": per_n}


def _ladder_index(widths: list[int], width: int | None) -> int | None:
    return None if width is None else widths.index(width)


def summarize(config: dict, seeds: list[dict]) -> dict:
    """Per N: the smallest sufficient width (largest over seeds) and mean gaps per width; the finding: the width
    needed does not grow with N (the largest N needs at most one ladder step more than the smallest, and no N one
    step more than the N before it; the strict comparison and the range over N are reported beside)."""
    widths = [int(w) for w in config["widths"]]
    per_n = {}
    for i, n_obs in enumerate(config["n_obs"]):
        rows = [s["per_n"][i] for s in seeds]
        smallest = [r["smallest_width"] for r in rows]
        gaps = {}
        for w in widths:
            recs = [r["methods"][method_name(w)] for r in rows if method_name(w) in r["methods"]]
            if recs:
                gaps[method_name(w)] = {"gap": mean_se([r["gap"] for r in recs]),
                                        "relative_gap": mean_se([r["relative_gap"] for r in recs]),
                                        "relative_gap_se_mc": float(np.sqrt(np.mean([r["relative_gap_se"] ** 2
                                                                                      for r in recs]))),
                                        "reached": sum(reaches(r, config["tolerance"], config["n_se"])
                                                       for r in recs),
                                        "n_seeds": len(recs)}
        per_n[str(n_obs)] = {
            "elbo_fvi": mean_se([r["elbo_fvi"] for r in rows]),
            "smallest_width_per_seed": smallest,
            "smallest_width": None if any(w is None for w in smallest) else max(smallest),
            "seconds_fvi": mean_se([r["methods"]["F-VI"]["seconds"] for r in rows]),
            "gaps": gaps}
    return _summary(config, per_n)


def _summary(config: dict, per_n: dict) -> dict:
    """The summary of per-N results: the settings a table needs, the per-N entries and the findings over them."""
    settings = {k: config[k] for k in ("n_obs", "n_iter", "n_samples", "widths", "tolerance", "n_se", "full_ladder")}
    widths = [int(w) for w in config["widths"]]
    return {"settings": settings, "per_n": per_n, "findings": _findings(config["n_obs"], widths, per_n)}


def _findings(n_obs: list[int], widths: list[int], per_n: dict) -> dict:
    """Whether the smallest sufficient width grows with N, in steps of the ladder ``widths``."""
    needed = [per_n[str(n)]["smallest_width"] for n in n_obs]
    index = [_ladder_index(widths, w) for w in needed]
    all_reach = all(i is not None for i in index)
    steps = list(itertools.pairwise(index))
    return {
        "smallest_width_by_n": {str(n): w for n, w in zip(n_obs, needed)},
        "every_n_reaches": all_reach,
        # Up to one ladder step (the resolution of a run: gaps near the threshold flip with the seed).
        "width_does_not_grow": all_reach and index[-1] <= index[0] + 1,
        "width_at_largest_n_not_above_smallest_n": all_reach and index[-1] <= index[0],
        "width_range_in_ladder_steps": max(index) - min(index) if all_reach else None,
        "at_most_one_step_up_between_consecutive_n": all_reach and all(b - a <= 1 for a, b in steps),
        "largest_step_up": max([b - a for a, b in steps], default=0) if all_reach else None,
    }


def merge_runs(runs: list[dict]) -> tuple[dict, list[dict], dict]:
    """One ``(config, seeds, summary)`` for :func:`table` and :func:`figures` from several runs' ``results.json``
    contents (e.g. the default sizes, then ``--n-obs 1000000``, then ``--n-obs 10000000 --widths 8``): sizes in
    increasing N, each with its own run's seeds, schedule and fitted widths, and the findings over all of them in
    steps of the full ladder. Runs must share the criterion and must not repeat an N.
    """
    if not runs:
        raise ValueError("runs must hold at least one width-vs-n result; got none.")
    for key in ("tolerance", "n_se", "depth", "lr", "lr_final"):
        values = {run["config"][key] for run in runs}
        if len(values) > 1:
            raise ValueError(f"runs must share {key!r} to be merged; got {sorted(values)}.")
    rows = sorted(((int(n), run, i) for run in runs for i, n in enumerate(run["config"]["n_obs"])),
                  key=lambda r: r[0])
    n_obs = [n for n, _, _ in rows]
    if len(set(n_obs)) != len(n_obs):
        raise ValueError(f"runs must not repeat an N; got sizes {n_obs}.")
    widths = sorted({int(w) for run in runs for w in run["config"]["widths"]} | set(LADDER))
    first = runs[0]["config"]
    config = {**first, "n_obs": n_obs, "widths": widths,
              **{key: [run["config"][key][i] for _, run, i in rows] for key in ("n_iter", "n_samples",
                                                                               "elbo_samples")},
              "full_ladder": all(run["config"]["full_ladder"] for run in runs),
              "seeds": max(len(run["seeds"]) for run in runs)}
    absent = {"smallest_width": None}  # a seed a smaller run did not have: no point in the figure
    seeds = [{"per_n": [run["seeds"][k]["per_n"][i] if k < len(run["seeds"]) else absent for _, run, i in rows]}
             for k in range(config["seeds"])]
    per_n = {str(n): run["summary"]["per_n"][str(n)] for n, run, _ in rows}
    return config, seeds, _summary(config, per_n)


def _upper_bound(per_n_entry: dict, widths: list[int]) -> bool:
    """Whether an N's smallest sufficient width is only an upper bound: a narrower ladder width was not fitted
    (a shorter ``--widths`` ladder)."""
    smallest = per_n_entry["smallest_width"]
    return smallest is not None and any(method_name(w) not in per_n_entry["gaps"] for w in widths if w < smallest)


def table(summary: dict) -> str:
    """One row per N: F-VI's ELBO, the smallest sufficient width, and each width's gap / |ELBO(F-VI)|."""
    widths = [method_name(w) for w in summary["settings"]["widths"]]
    lines = ["| N | iterations | ELBO F-VI | smallest width | " + " | ".join(widths) + " |",
             "|---|---|---|---|" + "---|" * len(widths)]
    for (n, v), n_iter in zip(summary["per_n"].items(), summary["settings"]["n_iter"]):
        m, se = (float(u) for u in v["elbo_fvi"])  # results.json writes NaN as "nan"
        elbo = f"{m:,.1f}" if math.isnan(se) else f"{m:,.1f} ± {se:,.1f}"
        cells = []
        for w in widths:
            g = v["gaps"].get(w)
            cells.append("-" if g is None else f"{float(g['relative_gap'][0]):.1e} ({g['reached']}/{g['n_seeds']})")
        per_seed = ", ".join("-" if w is None else str(w) for w in v["smallest_width_per_seed"])
        smallest = v["smallest_width"]
        label = f"≤ {smallest}" if _upper_bound(v, summary["settings"]["widths"]) else str(smallest)
        lines.append(f"| {int(n):,} | {n_iter:,} | {elbo} | {label} (seeds: {per_seed}) | "
                     + " | ".join(cells) + " |")
    s, f = summary["settings"], summary["findings"]
    lines.append(f"\ncells: mean gap / abs(ELBO F-VI) over seeds (seeds reaching gap + {s['n_se']:g} SE <= "
                 f"{s['tolerance']:g} abs(ELBO F-VI)); '-': not fitted"
                 + ("" if s["full_ladder"] else " (the ladder stops at the first sufficient width)"))
    for key in ("every_n_reaches", "width_does_not_grow", "width_at_largest_n_not_above_smallest_n",
                "at_most_one_step_up_between_consecutive_n", "width_range_in_ladder_steps"):
        lines.append(f"{key}: {f[key]}")
    return "\n".join(lines)


def figures(config: dict, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    """Smallest sufficient width vs N, and gap / |ELBO(F-VI)| vs width for each N."""
    import matplotlib.pyplot as plt

    widths = [int(w) for w in config["widths"]]
    n_obs = [int(n) for n in config["n_obs"]]
    fig, (ax_w, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, s in enumerate(seeds):
        pts = [(n, r["smallest_width"]) for n, r in zip(n_obs, s["per_n"]) if r["smallest_width"] is not None]
        if pts:
            jitter = 1.0 + 0.04 * (k - (len(seeds) - 1) / 2)
            ax_w.plot([n * jitter for n, _ in pts], [w for _, w in pts], "o", color="grey", alpha=0.6, ms=5,
                      label="per seed" if k == 0 else None)
    reported = [(n, summary["per_n"][str(n)]["smallest_width"]) for n in n_obs]
    reported = [(n, w) for n, w in reported if w is not None]
    if reported:
        ax_w.plot(*zip(*reported), "s-", color="C0", label="reported (largest over seeds)")
        bounds = [(n, w) for n, w in reported if _upper_bound(summary["per_n"][str(n)], widths)]
        if bounds:
            ax_w.plot(*zip(*bounds), "v", color="C3", ms=9, label="upper bound (narrower widths not fitted)")
    ax_w.set(xscale="log", xlabel="N (observations)", ylabel="smallest MLP width within 0.1 % of F-VI",
             title="encoder width needed vs N")
    ax_w.set_yscale("log", base=2)
    ax_w.set_yticks(widths, [str(w) for w in widths])
    ax_w.set_ylim(widths[0] / 1.5, widths[-1] * 1.5)
    if ax_w.get_legend_handles_labels()[0]:  # nothing to label when no width reached the criterion
        ax_w.legend(fontsize=8)
    for i, n in enumerate(n_obs):
        gaps = summary["per_n"][str(n)]["gaps"]
        ws = [w for w in widths if method_name(w) in gaps]
        mean = [float(gaps[method_name(w)]["relative_gap"][0]) for w in ws]
        err = [np.nan_to_num(float(gaps[method_name(w)]["relative_gap"][1])) for w in ws]  # "nan": one seed
        ax_g.errorbar(ws, mean, yerr=err, marker="o", capsize=3, color=f"C{i}", label=f"N = {n:,}")
    ax_g.axhline(config["tolerance"], color="C3", ls="--", lw=0.8, label="0.1 % criterion")
    plotted = [float(g["relative_gap"][0]) for v in summary["per_n"].values() for g in v["gaps"].values()]
    if plotted and min(plotted) >= 0:
        ax_g.set_ylim(bottom=0.0)  # no negative gaps: no empty negative half
    ax_g.axhline(0.0, color="black", lw=0.5)
    ax_g.set_xscale("log", base=2)
    ax_g.set_yscale("symlog", linthresh=1e-5)
    ax_g.set_xticks(widths, [str(w) for w in widths])
    ax_g.set(xlabel="MLP width k", ylabel="gap / |ELBO(F-VI)|", title="relative amortization gap vs width")
    ax_g.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "width_vs_n.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [str(path)]
