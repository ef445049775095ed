"""Shared parts of the time-series experiments (``saw``, ``random-walk``): windows, encoders, closed-form references,
the fits, the summary table and the figures.

Both models have a Gaussian posterior p(v | x) = N(ν, J⁻¹) over v = (z₁ … z_N, θ…) with a known precision J, so for
any fitted mean-field q with means m and standard deviations s

    KL(q ‖ p) = ½ (m − ν)ᵀ J (m − ν) + Σᵢ [½ Jᵢᵢ sᵢ² − log sᵢ − ½] − ½ log det J,

and the best A-VI encoder *affine in its window inputs* (:func:`best_affine_gap`) is a J-weighted least-squares
problem for the means plus a convex problem for the log-scales: a closed-form floor under every fitted affine
encoder, against which the fitted gaps are checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._metrics import fmt_pair as _fmt
from ._metrics import iterations_to_reach, log_bin_means, mean_se, seconds_to_reach
from ._metrics import save_figure as _save_figure

#: The F-VI method's label (every other method is "<encoder> <window>").
FVI_LABEL = "F-VI"
#: Gaps below this are drawn at this value on the log-scale figures (the closed-form affine gap of the saw is 0).
GAP_FLOOR = 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Windows and encoders
# ---------------------------------------------------------------------------------------------------------------

def centred(w: int) -> list[int]:
    """The offsets −w … w of a centred window of half-width w (w = 0: xₙ alone)."""
    return list(range(-w, w + 1))


def half_width(window: list[int]) -> int | None:
    """w when ``window`` is the centred window −w … w, else None."""
    w = max(abs(k) for k in window)
    return w if list(window) == centred(w) else None


def window_label(window: list[int]) -> str:
    """``"w=2"`` for a centred window, else the offsets, e.g. ``"(0,1)"``."""
    w = half_width(window)
    return f"w={w}" if w is not None else "(" + ",".join(str(k) for k in window) + ")"


def encoder_label(spec: dict) -> str:
    """Short name of an encoder specification: ``"Poly(1)"``, ``"MLP(16,tanh)"``."""
    if spec["kind"] == "polynomial":
        return f"Poly({spec['degree']})"
    act = spec.get("activation", "relu")
    return f"MLP({spec['width']})" if act == "relu" else f"MLP({spec['width']},{act})"


def make_encoder(spec: dict):
    """The encoder of a JSON specification ``{"kind": "polynomial", "degree": 1, "whiten": true}`` or
    ``{"kind": "mlp", "width": 16, "activation": "tanh"}``."""
    from ..encoders import MLP, Polynomial

    if spec["kind"] == "polynomial":
        return Polynomial(spec["degree"], whiten=spec.get("whiten", False))
    if spec["kind"] == "mlp":
        return MLP(spec["width"], activation=spec.get("activation", "relu"))
    raise ValueError(f"encoder kind must be one of ('polynomial', 'mlp'); got {spec['kind']!r}.")


def methods(config: dict) -> list[dict]:
    """F-VI then one A-VI method per (encoder, window) of the configuration, with labels."""
    out = [{"label": FVI_LABEL, "encoder": None, "window": [0]}]
    for spec in config["encoders"]:
        for window in config["windows"]:
            out.append({"label": f"{encoder_label(spec)} {window_label(window)}", "encoder": spec,
                        "window": list(window)})
    return out


def is_affine(spec: dict | None) -> bool:
    """Whether an encoder's family is affine in its window inputs (so the closed-form floor applies to it)."""
    return spec is not None and spec["kind"] == "polynomial" and spec["degree"] == 1


# ---------------------------------------------------------------------------------------------------------------
# Closed-form references for a Gaussian posterior N(ν, J⁻¹)
# ---------------------------------------------------------------------------------------------------------------

def gaussian_kl(J: np.ndarray, nu: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> float:
    """KL(q ‖ N(ν, J⁻¹)) of the mean-field q = ∏ N(meanᵢ, sdᵢ²) (all of v, locals then globals)."""
    d = mean - nu
    jd = np.diag(J)
    logdet = np.linalg.slogdet(J)[1]
    return float(0.5 * d @ J @ d + np.sum(0.5 * jd * sd * sd - np.log(sd) - 0.5) - 0.5 * logdet)


def mean_field_kl(J: np.ndarray) -> float:
    """KL of the mean-field optimum (exact means, sdᵢ² = 1/Jᵢᵢ): ½ (Σ log Jᵢᵢ − log det J)."""
    return float(0.5 * (np.log(np.diag(J)).sum() - np.linalg.slogdet(J)[1]))


def _newton_log_scale(U: np.ndarray, jd: np.ndarray) -> np.ndarray:
    """argmin over γ of Σₙ ½ jdₙ exp(2 uₙᵀγ) − uₙᵀγ (convex): damped Newton from γ = 0."""
    g = np.zeros(U.shape[1])

    def objective(gamma: np.ndarray) -> float:
        t = U @ gamma
        return float(np.sum(0.5 * jd * np.exp(2.0 * t) - t))

    f = objective(g)
    for _ in range(100):
        e = jd * np.exp(2.0 * (U @ g))
        grad = U.T @ (e - 1.0)
        hess = 2.0 * (U.T * e) @ U
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        decrement = float(grad @ step)
        if decrement < 1e-22:
            break
        t = 1.0
        while True:
            f_new = objective(g - t * step)
            if f_new <= f - 0.25 * t * decrement or t < 1e-12:
                break
            t *= 0.5
        g, f = g - t * step, f_new
    return U @ g


def best_affine_gap(J: np.ndarray, nu: np.ndarray, U: np.ndarray) -> float:
    """ELBO*_F − max ELBO over encoders affine in the inputs ``U`` (the bias column included in ``U``).

    Parameters
    ----------
    J : ndarray of shape (N + G, N + G)
        Posterior precision of v = (z₁ … z_N, θ₁ … θ_G).
    nu : ndarray of shape (N + G,)
        Posterior mean.
    U : ndarray of shape (N, P)
        Affine design of the encoder: a column of ones, the window inputs and their edge masks.

    Returns
    -------
    float
        ½ min_β (Dβ − ν)ᵀ J (Dβ − ν) + min_γ Σₙ [½ Jₙₙ e^{2uₙᵀγ} − uₙᵀγ − ½(1 + log Jₙₙ)], with D = diag(U, I_G):
        q(θ) stays free (its optimal sd has no gap); ≥ 0, and 0 exactly when ν's local block is affine in U.
    """
    n = U.shape[0]
    n_global = nu.size - n
    D = np.zeros((nu.size, U.shape[1] + n_global))
    D[:n, :U.shape[1]] = U
    D[n:, U.shape[1]:] = np.eye(n_global)
    L = np.linalg.cholesky(J)
    beta = np.linalg.lstsq(L.T @ D, L.T @ nu, rcond=None)[0]
    dm = D @ beta - nu
    jd = np.diag(J)[:n]
    ls = _newton_log_scale(U, jd)
    return float(0.5 * dm @ J @ dm + np.sum(0.5 * jd * np.exp(2.0 * ls) - ls - 0.5 * (1.0 + np.log(jd))))


def affine_design(x: np.ndarray, window: list[int]) -> np.ndarray:
    """[1, window inputs, edge masks] of one sequence: the span of ``Polynomial(1)`` on that window."""
    from ..encoders import window_inputs

    return np.hstack([np.ones((x.shape[0], 1)), window_inputs(x, tuple(window))])


# ---------------------------------------------------------------------------------------------------------------
# The fits
# ---------------------------------------------------------------------------------------------------------------

def fit_all(model, x: np.ndarray, config: dict, seed: int, progress: bool, exact_elbo, reference: dict) -> dict:
    """Fit F-VI and every A-VI method of ``config`` with the same lr schedule, n_iter and samples.

    Parameters
    ----------
    exact_elbo : callable
        ``exact_elbo(result) -> float``: the closed-form full ELBO of a fitted q.
    reference : dict
        ``optimum_elbo`` (ELBO of the F-VI optimum), ``log_evidence`` and ``best_affine`` (window label → the
        closed-form gap of the best affine encoder).

    Returns
    -------
    dict
        Method label → its numbers (module docstring of the experiment).
    """
    import avicore
    from avicore.optim import exponential_decay

    n_iter = config["n_iter"]
    lr = exponential_decay(config["lr"], config["lr_final"], n_iter)
    common = {"n_samples": config["n_samples"], "elbo_samples": config["elbo_samples"]}
    out: dict[str, dict] = {}
    fvi = None
    for m in methods(config):
        if m["encoder"] is None:
            engine = avicore.FVI(model, **common)
        else:
            engine = avicore.AVI(model, make_encoder(m["encoder"]), window=tuple(m["window"]), **common)
        res = engine.fit(x, n_iter=n_iter, lr=lr, seed=seed, progress=progress)
        exact = exact_elbo(res)
        if fvi is None:
            fvi = {"elbo": res.elbo, "exact": exact}
        its, vals = log_bin_means(res.trace)
        label = window_label(m["window"])
        out[m["label"]] = {
            "encoder": None if m["encoder"] is None else encoder_label(m["encoder"]),
            "window": m["window"], "elbo": res.elbo, "elbo_se": res.elbo_se, "exact_elbo": exact,
            "kl": reference["log_evidence"] - exact,
            "gap": fvi["exact"] - exact, "gap_mc": fvi["elbo"] - res.elbo,
            "gap_to_optimum": reference["optimum_elbo"] - exact,
            "best_affine_gap": reference["best_affine"][label] if m["encoder"] is not None else None,
            "iterations_to_1pct": iterations_to_reach(res.trace, fvi["elbo"]),
            "seconds_to_1pct": seconds_to_reach(res.trace, res.seconds, fvi["elbo"]),
            "seconds": res.seconds, "n_iter": res.n_iter, "trace_iter": its, "trace": vals}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Summary, table, figures
# ---------------------------------------------------------------------------------------------------------------

_KEYS = ("elbo", "elbo_se", "exact_elbo", "kl", "gap", "gap_mc", "gap_to_optimum", "best_affine_gap",
         "iterations_to_1pct", "seconds_to_1pct", "seconds")
_SEED_KEYS = ("log_evidence", "optimum_elbo", "optimum_kl")


def summarize_methods(seeds: list[dict]) -> dict:
    """Mean ± SE over seeds of every number of every method, the seed-level references, and reach counts."""
    labels = list(seeds[0]["methods"])
    per = {}
    for label in labels:
        rows = [s["methods"][label] for s in seeds]
        per[label] = {k: mean_se([r[k] for r in rows]) for k in _KEYS}
        per[label]["reached"] = sum(r["iterations_to_1pct"] is not None for r in rows)
        per[label]["encoder"], per[label]["window"] = rows[0]["encoder"], rows[0]["window"]
    refs = {k: mean_se([s[k] for s in seeds]) for k in _SEED_KEYS}
    return {"methods": per, "references": refs, "n_seeds": len(seeds)}




def methods_table(summary: dict) -> str:
    """Markdown table: ELBO (MC ± SE), exact gap to fitted F-VI and to the F-VI optimum, closed-form best affine
    gap, exact KL, iterations and seconds to 1 % of F-VI's final ELBO."""
    lines = ["| method | ELBO (MC) | gap to F-VI | gap to F-VI optimum | best affine gap | KL(q‖p) | "
             "iters to 1 % | s to 1 % | s |", "|---|---|---|---|---|---|---|---|---|"]
    for label, v in summary["methods"].items():
        reached = v["reached"] if v["reached"] == summary["n_seeds"] else f"{v['reached']}/{summary['n_seeds']}"
        its = _fmt(v["iterations_to_1pct"], 0) + ("" if isinstance(reached, int) else f" ({reached})")
        lines.append(f"| {label} | {_fmt(v['elbo'], 1)} | {_fmt(v['gap'], 3)} | {_fmt(v['gap_to_optimum'], 3)} | "
                     f"{_fmt(v['best_affine_gap'], 3)} | {_fmt(v['kl'], 2)} | {its} | "
                     f"{_fmt(v['seconds_to_1pct'], 2)} | {_fmt(v['seconds'], 1)} |")
    r = summary["references"]
    lines.append(f"\nexact log p(x) = {_fmt(r['log_evidence'], 2)}; F-VI optimum: "
                 f"ELBO* = {_fmt(r['optimum_elbo'], 2)}, "
                 f"KL(q*‖p) = {_fmt(r['optimum_kl'], 3)} (closed forms, mean ± SE over {summary['n_seeds']} seed(s))")
    return "\n".join(lines)


def _num(value) -> float:
    """A number of the saved summary as a float (results.json stores NaN, e.g. a single seed's SE, as "nan")."""
    return math.nan if value is None else float(value)


def figures(name: str, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    """Gap vs window (log y), distance to the F-VI optimum along the fits (log-log), iterations to 1 % (box)."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    per = summary["methods"]
    encoders = list(dict.fromkeys(v["encoder"] for v in per.values() if v["encoder"] is not None))
    windows = list(dict.fromkeys(window_label(v["window"]) for v in per.values() if v["encoder"] is not None))
    files = []

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    pos = np.arange(len(windows))
    for enc in encoders:
        rows = [next(v for v in per.values() if v["encoder"] == enc and window_label(v["window"]) == w)
                for w in windows]
        mean = np.array([max(_num(r["gap_to_optimum"][0]), GAP_FLOOR) for r in rows])
        se = np.nan_to_num(np.array([_num(r["gap_to_optimum"][1]) for r in rows]))
        ax.errorbar(pos, mean, yerr=se, marker="o", capsize=3, label=f"A-VI {enc} (fitted)")
    best = [_num(next(v for v in per.values() if window_label(v["window"]) == w and v["encoder"] is not None)
                 ["best_affine_gap"][0]) for w in windows]
    ax.plot(pos, np.maximum(best, GAP_FLOOR), "k--", marker="x", label="best affine encoder (closed form)")
    ax.axhline(max(_num(per[FVI_LABEL]["gap_to_optimum"][0]), GAP_FLOOR), color="grey", lw=1, ls=":",
               label="F-VI (fitted)")
    ax.set_xticks(pos, windows)
    ax.set(yscale="log", xlabel="encoder input window", ylabel="ELBO*(F-VI optimum) − ELBO  [nats]",
           title=f"{name}: amortization gap vs window (floor {GAP_FLOOR:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save_figure(fig, out_dir / f"{name}_gap_vs_window.png"))

    fig, axes = plt.subplots(1, len(encoders), figsize=(5.5 * len(encoders), 4.2), squeeze=False)
    target = [s["optimum_elbo"] for s in seeds]
    for ax, enc in zip(axes[0], encoders):
        for label, v in per.items():
            if v["encoder"] not in (None, enc):
                continue
            runs = [s["methods"][label] for s in seeds]
            k = min(len(r["trace"]) for r in runs)
            dist = np.mean([t - np.asarray(r["trace"][:k]) for t, r in zip(target, runs)], axis=0)
            ax.plot(runs[0]["trace_iter"][:k], np.maximum(dist, 1e-1), lw=1.2,
                    color="k" if label == FVI_LABEL else None, label=label)
        one_pct = 0.01 * abs(float(np.mean([s["methods"][FVI_LABEL]["elbo"] for s in seeds])))
        ax.axhline(one_pct, color="grey", lw=0.8, ls="--", label="1 % of F-VI's ELBO")
        ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel="ELBO* − ELBO estimate (bin means)  [nats]",
               title=f"{name}: {enc} vs F-VI")
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append(_save_figure(fig, out_dir / f"{name}_elbo_traces.png"))

    labels = list(per)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(labels)), 4.2))
    data = [[s["methods"][m]["iterations_to_1pct"] for s in seeds
             if s["methods"][m]["iterations_to_1pct"] is not None] for m in labels]
    ax.boxplot([d if d else [np.nan] for d in data], tick_labels=labels)
    for i, d in enumerate(data):
        if not d:
            ax.annotate("never", (i + 1, 0.5), xycoords=("data", "axes fraction"), ha="center", fontsize=8)
    ax.set(ylabel="iterations to 1 % of F-VI's final ELBO", yscale="log",
           title=f"{name}: convergence over {len(seeds)} seed(s)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    files.append(_save_figure(fig, out_dir / f"{name}_iterations_to_1pct.png"))
    return files
