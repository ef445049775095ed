"""Gaussian-process latent model: the amortization gap under a GP prior (F-VI vs encoders of growing width).

The seed abstract of Margossian & Blei (2024) names Gaussian processes, with HMMs, as models where no inference
function matches F-VI: under a GP prior f ~ GP(0, k), yₙ | fₙ ~ p(yₙ | fₙ), every fₙ's optimal mean-field factor
depends on *all* the observations (the prior precision K⁻¹ couples them), so an encoder that sees one observation
cannot reproduce it, however wide. The model is :class:`avicore.models.GaussianProcess` on N equally spaced inputs
tₙ in [0, 1] with a Matérn-1/2, RBF or Matérn-5/2 kernel (variance 1, lengthscale 0.2; variance 3 for Bernoulli;
cases "<likelihood>" for Matérn-1/2, "<likelihood>/rbf", "<likelihood>/matern52"). The smooth kernels' Gram
matrices on dense inputs are numerically singular (cond(K) ~1e12–1e15 after jitter), so first-order steps in
(mₙ, log sₙ) or in an encoder's parameters are scaled by K⁻¹ and barely move (issue 19). Every family is therefore
fitted by second-order steps that do not depend on that condition number, and the gaps are measured between
optima:

- F-VI (mean-field q(f) = ∏ N(mₙ, sₙ²)) by the mean-field fixed point (:mod:`avicore.gp.mean_field`: the optimum in
  2–10 iterations for every kernel).
- A-VI with a Polynomial(2) encoder by block Newton steps (:class:`avicore.gp.amortized.LinearEncoderSolver`: its
  own optimum in a few iterations).
- A-VI with MLP encoders (two hidden layers of width k; tanh, ``activation``) by Levenberg–Marquardt steps with
  geodesic acceleration on the exact per-row Jacobian (:class:`avicore.gp.amortized.GaussNewtonEncoderSolver`;
  ``mlp_n_iter`` iterations: 200 quick, 300 full; the learning rate is not used). Their ELBO never falls. Each
  fit's gain over its last 10 % of iterations is reported (``late_gain``): where it is not ~0, the budget ended a
  climb and that gap is an upper bound. tanh rather than ReLU: ReLU outputs kink in the parameters, which the
  steps' second-order model cannot follow in directions K⁻¹ penalises by ~1e10 (MLP(64) on RBF at N = 200:
  ReLU 318 nats below F-VI after 140 iterations, tanh 0.5).
- The encoders see uₙ = (yₙ, tₙ) by default, the most favourable case for A-VI; ``--encoder-inputs y`` gives them
  yₙ alone, the paper's strict setting.
- The full-covariance Gaussian family (the reference F-VI cannot beat): its optimum has S⁻¹ = K⁻¹ + diag(λ)
  (Opper & Archambeau 2009), found by :meth:`avicore.gp.FullRankVI.fit_fixed_point` (equal to FullRankVI's Adam
  optimum, checked in the tests, at a fraction of the cost).
- Gaussian likelihood only: the exact log evidence log p(y) (= the full-rank optimum) and the closed-form mean-field
  optimum (:func:`avicore.gp.mean_field_optimum`), and F-VI's distance to it (ELBO, means, variances).

Full ELBOs with every constant and the correctly normalised likelihoods of :mod:`avicore.gp.likelihoods` (Gaussian,
Poisson with log y! included, Bernoulli-logit). The GP model's ELBO is exact (closed-form expected log-likelihood
for Gaussian and Poisson, 20-point Gauss–Hermite for Bernoulli; exact prior term), so its Monte-Carlo SE is 0 and
the SEs reported are over seeds. Every method is fitted on the same simulated data per seed (data and fits seeded
from the seed).

Reported per seed and case: every method's final ELBO, the gap F-VI − A-VI, iterations and seconds to reach 1 % of
F-VI's final ELBO, the ELBO trace (log-thinned), the exact KL(q ‖ posterior) = log p(y) − ELBO (Gaussian).
Full run: N = 1,000, widths {1, 4, 16, 64} and Polynomial(2), Gaussian, Poisson and Bernoulli-logit × the three
kernels, 3 seeds: 3,350 s wall on 2 cores (``--jobs 2``, 2026-12-05), almost all of it in the MLP(64) fits
(~0.5 s an iteration: 4,418 parameters for 2N = 2,000 outputs, so the step is solved in its 2N × 2N form).
Quick run: N = 200, widths {4, 64}, Gaussian and Poisson × Matérn-1/2 and RBF, 1 seed: ~25 s.

Measured (full run, 3 seeds; tables in benchmarks/README.md): F-VI ≥ every A-VI fit in every case. With yₙ alone
the gap does not depend on width on any kernel (Poisson 181, Bernoulli 114, Gaussian/RBF 2,017 nats at every width
1–64; every count and binary fit stationary): the paper's claim. With (yₙ, tₙ) the gap closes with width — MLP(64)
can reproduce F-VI's optimum exactly and ends 0.02–4.3 nats short of it — because for one data set an encoder that
sees the input location can memorise the posterior as a function of t; Polynomial(2) leaves 28–1,362 nats.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np

from ..models.gaussian_process import GaussianProcess
from ._metrics import fmt_pair as _fmt
from ._metrics import iterations_to_reach, mean_se, save_figure, seconds_to_reach

#: Likelihood settings: the likelihood's constructor arguments and the kernel used with it.
LIKELIHOODS = {
    "gaussian": {"kernel_variance": 1.0, "lengthscale": 0.2, "noise": 0.1},
    "poisson": {"kernel_variance": 1.0, "lengthscale": 0.2},
    "bernoulli": {"kernel_variance": 3.0, "lengthscale": 0.2},
}
FVI_NAME = "F-VI"
#: The encoder linear in its parameters whose optimum A-VI reaches (Gauss–Newton steps): its gap is between optima.
POLY_NAME = "Polynomial(2)"
ENCODER_INPUTS = ("y,t", "y")
#: Covariance functions (variance and lengthscale from the likelihood's settings). Matérn-1/2 cases keep the plain
#: likelihood name as their key; the smooth kernels' cases are "<likelihood>/<kernel>".
KERNELS = ("matern12", "rbf", "matern52")


def config(quick: bool) -> dict:
    """Full: N = 1,000, widths {1, 4, 16, 64}, three likelihoods × three kernels, 4,000 iterations, 3 seeds
    (quick: N = 200, widths {4, 64}, Gaussian and Poisson, Matérn-1/2 and RBF, 1,500 iterations, 1 seed)."""
    return {"n": 200 if quick else 1000,
            "likelihoods": ["gaussian", "poisson"] if quick else ["gaussian", "poisson", "bernoulli"],
            "kernels": ["matern12", "rbf"] if quick else list(KERNELS),
            "settings": {k: dict(v) for k, v in LIKELIHOODS.items()},
            "widths": [4, 64] if quick else [1, 4, 16, 64], "depth": 2, "activation": "tanh",
            "n_iter": 1500 if quick else 4000, "mlp_n_iter": 200 if quick else 300, "lr": 0.05, "lr_final": 5e-4,
            "encoder_inputs": "y,t", "backend": "numpy", "max_trace_points": 500, "rel": 0.01,
            "seeds": 1 if quick else 3}


def method_names(config: dict) -> list[str]:
    """F-VI, one MLP(k) per width, then Polynomial(2)."""
    return [FVI_NAME, *mlp_names(config), POLY_NAME]


def mlp_names(config: dict) -> list[str]:
    """One MLP(k) per width."""
    return [f"MLP({k})" for k in config["widths"]]


def case_names(config: dict) -> list[str]:
    """Every (likelihood, kernel) case: "gaussian" (Matérn-1/2), "gaussian/rbf", ..."""
    return [lik if kernel == "matern12" else f"{lik}/{kernel}" for kernel in config.get("kernels", ["matern12"])
            for lik in config["likelihoods"]]


def split_case(case: str) -> tuple[str, str]:
    """(likelihood, kernel) of a case name."""
    lik, _, kernel = case.partition("/")
    return lik, kernel or "matern12"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--encoder-inputs {y,t | y}``: what the A-VI encoder sees (default (yₙ, tₙ); ``y``: yₙ alone, the paper's
    strict setting)."""
    parser.add_argument("--encoder-inputs", dest="encoder_inputs", choices=ENCODER_INPUTS, default=None,
                        help="A-VI encoder inputs: 'y,t' (observation and input location, default) or 'y' alone")


class _ObservationOnly(GaussianProcess):
    """The same model, with an A-VI encoder that sees yₙ alone (not tₙ)."""

    def encoder_inputs(self, x: np.ndarray) -> np.ndarray:
        return x


def build_model(config: dict, likelihood: str, kernel: str = "matern12") -> GaussianProcess:
    """The :class:`~avicore.models.GaussianProcess` of one likelihood and kernel at the configured N (smooth
    kernels on dense inputs need jitter: their JitterWarning is expected and silenced here)."""
    from ..gp import RBF, Bernoulli, Gaussian, JitterWarning, Matern12, Matern52, Poisson

    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihoods must be among {tuple(LIKELIHOODS)}; got {likelihood!r}.")
    if kernel not in KERNELS:
        raise ValueError(f"kernels must be among {KERNELS}; got {kernel!r}.")
    inputs = config.get("encoder_inputs", "y,t")
    if inputs not in ENCODER_INPUTS:
        raise ValueError(f"encoder_inputs must be one of {ENCODER_INPUTS}; got {inputs!r}.")
    s = config["settings"][likelihood]
    lik = {"gaussian": lambda: Gaussian(s["noise"]), "poisson": Poisson,
           "bernoulli": lambda: Bernoulli("logit")}[likelihood]()
    k = {"matern12": Matern12, "rbf": RBF, "matern52": Matern52}[kernel](s["kernel_variance"], s["lengthscale"])
    cls = GaussianProcess if inputs == "y,t" else _ObservationOnly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JitterWarning)
        return cls(k, lik, np.linspace(0.0, 1.0, config["n"]))


def full_rank_optimum(model, y: np.ndarray) -> dict:
    """The full-covariance family's optimum (:meth:`avicore.gp.FullRankVI.fit_fixed_point`) as JSON numbers."""
    from ..gp import FullRankVI

    t0 = time.perf_counter()
    res = FullRankVI(model).fit_fixed_point(y)
    return {"elbo": res.elbo, "iterations": res.iterations, "converged": res.converged,
            "seconds": time.perf_counter() - t0, "max_abs_grad": res.max_abs_grad}


def _thin(trace: np.ndarray, max_points: int) -> tuple[list[int], list[float]]:
    """Log-spaced iterations (1-based) of a trace, at most ``max_points`` of them, the last one always kept."""
    n = len(trace)
    if n == 0:
        return [], []
    idx = np.unique(np.geomspace(1, n, num=max(2, max_points)).astype(np.int64))
    idx[-1] = n
    return idx.tolist(), [float(trace[i - 1]) for i in idx]


def _fit(config: dict, model, y: np.ndarray, method: str, seed: int, progress: bool):
    import avicore
    from avicore.encoders import MLP, Polynomial
    from avicore.optim import exponential_decay

    lr = exponential_decay(config["lr"], config["lr_final"], config["n_iter"])
    common = {"n_samples": 1, "elbo_samples": 2, "backend": config["backend"]}  # the GP ELBO is exact: S = 1
    if method == FVI_NAME:
        engine = avicore.FVI(model, **common)
    elif method == POLY_NAME:
        engine = avicore.AVI(model, Polynomial(2), **common)
    else:
        # Gauss–Newton steps (the model's own encoder solver; the learning rate is not used): far fewer iterations
        # than Adam needed, each costlier.
        encoder = MLP(int(method[4:-1]), depth=config["depth"], activation=config.get("activation", "relu"))
        engine = avicore.AVI(model, encoder, **common)
        return engine.fit(y, n_iter=config.get("mlp_n_iter", config["n_iter"]), lr=lr, seed=seed, progress=progress)
    return engine.fit(y, n_iter=config["n_iter"], lr=lr, seed=seed, progress=progress)


def run_likelihood(config: dict, case: str, seed: int, progress: bool) -> dict:
    """Simulate data for one case (likelihood and kernel) and fit every method and the references."""
    from ..gp import log_marginal_likelihood, mean_field_optimum

    likelihood, kernel = split_case(case)
    model = build_model(config, likelihood, kernel)
    data = model.simulate(seed=seed)
    y = data.x
    results = {m: _fit(config, model, y, m, seed, progress) for m in method_names(config)}
    fvi = results[FVI_NAME]
    target = fvi.elbo
    out: dict = {"n": model.n, "methods": {}}
    exact = None
    if likelihood == "gaussian":
        noise = config["settings"]["gaussian"]["noise"]
        K = model.K + model.jitter * np.eye(model.n)  # the prior the model factorised
        exact = log_marginal_likelihood(K, y[:, 0], noise)
        opt = mean_field_optimum(K, y[:, 0], noise)
        m_f, v_f = fvi.local_mean[:, 0], fvi.local_sd[:, 0] ** 2
        out["exact_log_evidence"] = exact
        out["mean_field_optimum"] = {
            "elbo": opt.elbo, "fvi_elbo_minus_optimum": fvi.elbo - opt.elbo,
            "fvi_mean_max_abs_error": float(np.abs(m_f - opt.mean).max()),
            "fvi_mean_max_rel_error": float(np.abs(m_f - opt.mean).max() / np.abs(opt.mean).max()),
            "fvi_var_max_rel_error": float(np.abs(v_f / opt.var - 1.0).max())}
    out["full_rank"] = full_rank_optimum(model, y[:, 0])
    out["fvi_corr_true_f"] = float(np.corrcoef(fvi.local_mean[:, 0], data.z[:, 0])[0, 1])
    for m, res in results.items():
        it, vals = _thin(res.trace, config["max_trace_points"])
        out["methods"][m] = {
            # A diverged fit (its best state returned) is no optimum of its family: it gets no gap (issue 20).
            "elbo": res.elbo, "elbo_se": res.elbo_se, "seconds": res.seconds,
            "gap": None if res.stop_reason == "diverged" else target - res.elbo,
            "n_iter": res.n_iter, "stop_reason": res.stop_reason, "converged": res.converged,
            # The GP ELBO is exact (no Monte-Carlo noise): no running mean (a fixed-point fit takes ~5 iterations).
            "iterations_to_1pct": iterations_to_reach(res.trace, target, rel=config["rel"], smooth=1),
            "seconds_to_1pct": seconds_to_reach(res.trace, res.seconds, target, rel=config["rel"], smooth=1),
            "kl_to_posterior": None if exact is None else exact - res.elbo,
            "trace_iteration": it, "trace_elbo": vals}
    return out


def run_seed(config: dict, seed: int, progress: bool) -> dict:
    """Every likelihood on data simulated from ``seed`` (also the seed of every fit)."""
    # Load SciPy's BLAS before the first fit: the engines hold BLAS to one thread during a fit (threadpoolctl), which
    # only reaches libraries already loaded; a first import inside the fit left SciPy's OpenBLAS multi-threaded
    # (busy-waiting) and the first fit ran 30-40× slower on the shared 2-core machine.
    import scipy.linalg.blas  # noqa: F401

    return {"likelihoods": {case: run_likelihood(config, case, seed, progress) for case in case_names(config)}}


def _ms(values) -> list[float]:
    return list(mean_se(values))


def late_gain(method_row: dict) -> float | None:
    """ELBO a fit gained over the last 10 % of its iterations (from its thinned trace): ~0 near an optimum, a few
    nats where the budget ended a climb (that fit's gap is then an upper bound). None for a fit that stopped at
    its solver's fixed point (``stop_reason="stationary"``: its last iteration gained < 1e-8 nats; its trace may be
    2–6 iterations long, the first of them the starting point)."""
    it, elbo = method_row["trace_iteration"], method_row["trace_elbo"]
    if not it or method_row.get("stop_reason") == "stationary":
        return None
    cut = 0.9 * it[-1]
    earlier = [e for i, e in zip(it, elbo) if i <= cut]
    return float(elbo[-1] - (earlier[-1] if earlier else elbo[0]))


def summarize(config: dict, seeds: list[dict]) -> dict:
    """Mean ± SE over seeds per likelihood and method, and the findings (F-VI ≥ every A-VI, gap > 1 nat at every
    width, full-rank ≥ F-VI; Gaussian: F-VI at the mean-field optimum, full-rank at log p(y))."""
    methods, mlps = method_names(config), mlp_names(config)
    per_lik, findings = {}, {}
    for lik in case_names(config):
        rows = [s["likelihoods"][lik] for s in seeds]
        per = {}
        for m in methods:
            r = [row["methods"][m] for row in rows]
            per[m] = {key: _ms([v[key] for v in r]) for key in
                      ("elbo", "gap", "iterations_to_1pct", "seconds_to_1pct", "seconds")}
            per[m]["late_gain"] = _ms([late_gain(v) for v in r])
            per[m]["reached_1pct"] = sum(v["iterations_to_1pct"] is not None for v in r)
            per[m]["diverged"] = sum(v.get("stop_reason") == "diverged" for v in r)
        entry = {"methods": per, "full_rank_elbo": _ms([row["full_rank"]["elbo"] for row in rows]),
                 "fvi_corr_true_f": _ms([row["fvi_corr_true_f"] for row in rows])}
        # Gaps between comparable fits only: a diverged A-VI fit (gap None) is counted, not compared.
        all_gaps = {m: [row["methods"][m]["gap"] for row in rows] for m in methods[1:]}
        gaps = {m: [g for g in gs if g is not None] for m, gs in all_gaps.items() if any(g is not None for g in gs)}
        fr_minus_fvi = [row["full_rank"]["elbo"] - row["methods"][FVI_NAME]["elbo"] for row in rows]
        f = {"fvi_ge_every_avi": all(g >= 0.0 for gs in gaps.values() for g in gs),
             "gap_above_1_nat_every_width": all(g > 1.0 for gs in gaps.values() for g in gs),
             "min_gap": min((g for gs in gaps.values() for g in gs), default=math.nan),
             "gap_by_width": {m: _ms(gs) for m, gs in gaps.items()},
             "widest_over_narrowest_gap": (float(np.mean(gaps[mlps[-1]]) / np.mean(gaps[mlps[0]]))
                                          if len(mlps) > 1 and mlps[0] in gaps and mlps[-1] in gaps else None),
             "diverged_fits": {m: sum(g is None for g in gs) for m, gs in all_gaps.items() if None in gs},
             "full_rank_ge_fvi": all(d >= -1e-6 for d in fr_minus_fvi),
             "full_rank_minus_fvi": _ms(fr_minus_fvi)}
        if split_case(lik)[0] == "gaussian":
            entry["exact_log_evidence"] = _ms([row["exact_log_evidence"] for row in rows])
            entry["mean_field_optimum_elbo"] = _ms([row["mean_field_optimum"]["elbo"] for row in rows])
            d_opt = [row["mean_field_optimum"]["fvi_elbo_minus_optimum"] for row in rows]
            d_exact = [row["full_rank"]["elbo"] - row["exact_log_evidence"] for row in rows]
            f["fvi_minus_mean_field_optimum"] = _ms(d_opt)
            f["fvi_at_mean_field_optimum"] = all(abs(d) < 0.5 for d in d_opt)
            f["fvi_mean_max_rel_error"] = max(row["mean_field_optimum"]["fvi_mean_max_rel_error"] for row in rows)
            f["full_rank_minus_exact"] = _ms(d_exact)
            f["full_rank_at_exact_log_evidence"] = all(abs(d) < 1e-6 for d in d_exact)
        per_lik[lik] = entry
        findings[lik] = f
    findings["no_encoder_closes_the_gap"] = all(findings[lik]["gap_above_1_nat_every_width"]
                                                and findings[lik]["fvi_ge_every_avi"] for lik in case_names(config))
    keys = ("n", "widths", "activation", "kernels", "n_iter", "mlp_n_iter", "lr", "lr_final", "rel", "encoder_inputs")
    return {"settings": {k: config.get(k) for k in keys},
            "likelihoods": per_lik, "findings": findings}




def table(summary: dict) -> str:
    """One markdown table per likelihood (ELBO, gap, iterations/seconds to 1 % of F-VI's ELBO), then references."""
    n = summary["settings"]["n"]
    lines = []
    for lik, entry in summary["likelihoods"].items():
        f = summary["findings"][lik]
        head = f"\n**{lik}** (N = {n}, encoder inputs ({summary['settings']['encoder_inputs']}))\n"
        lines += [head, "| method | ELBO | gap to F-VI (nats) | gained in the last 10 % of iterations | "
                  "iterations to 1 % | seconds to 1 % | seconds | reached | diverged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, v in entry["methods"].items():
            late = _fmt(v["late_gain"], 2) if "late_gain" in v else "-"
            lines.append(f"| {m} | {_fmt(v['elbo'], 2)} | {_fmt(v['gap'], 2)} | {late} "
                         f"| {_fmt(v['iterations_to_1pct'], 0)} | {_fmt(v['seconds_to_1pct'], 2)} "
                         f"| {_fmt(v['seconds'], 2)} | {v['reached_1pct']} | {v.get('diverged', 0)} |")
        fr_gap = [-f["full_rank_minus_fvi"][0], f["full_rank_minus_fvi"][1]]  # F-VI − full-rank (≤ 0)
        lines.append(f"| full-rank Gaussian | {_fmt(entry['full_rank_elbo'], 2)} | {_fmt(fr_gap, 2)} | | | | | | |")
        if "exact_log_evidence" in entry:
            lines.append(f"| exact log p(y) | {_fmt(entry['exact_log_evidence'], 2)} | | | | | | | |")
            lines.append(f"| mean-field optimum (closed form) | {_fmt(entry['mean_field_optimum_elbo'], 2)} | | | "
                         f"| | | | |")
            lines.append(f"\nF-VI − mean-field optimum: {_fmt(f['fvi_minus_mean_field_optimum'], 4)} nats "
                         f"(means within {f['fvi_mean_max_rel_error']:.1e} relative); full-rank − log p(y): "
                         f"{float(f['full_rank_minus_exact'][0]):.1e} nats")
        lines.append(f"\nF-VI ≥ every A-VI: {f['fvi_ge_every_avi']}; gap > 1 nat at every width: "
                     f"{f['gap_above_1_nat_every_width']} (smallest {f['min_gap']:.2f}); full-rank ≥ F-VI: "
                     f"{f['full_rank_ge_fvi']}"
                     + (f"; diverged (no gap): {f['diverged_fits']}" if f["diverged_fits"] else ""))
    lines.append(f"\nno encoder closes the gap: {summary['findings']['no_encoder_closes_the_gap']}")
    return "\n".join(lines)


def _panel_grid(plt, n: int):
    """One panel per case, at most three to a row (nine cases in one row were too small to read); unused panels
    of the last row are hidden. Returns the figure and the flat list of the n axes in use."""
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def figures(config: dict, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    """Gap vs width, ELBO traces (full-rank ELBO − ELBO, log-log) and box plots of iterations to 1 %."""
    import matplotlib.pyplot as plt

    liks = list(summary["likelihoods"])
    methods, mlps = method_names(config), mlp_names(config)
    files = []

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for lik in liks:
        gaps = summary["findings"][lik]["gap_by_width"]
        nan_pair = (math.nan, math.nan)  # a width whose every fit diverged has no gap
        mean = [float(gaps.get(m, nan_pair)[0]) for m in mlps]
        se = [float(gaps.get(m, nan_pair)[1]) for m in mlps]  # "nan" (JSON) for a single seed
        se = [0.0 if math.isnan(v) else v for v in se]
        ax.errorbar(config["widths"], mean, yerr=se, marker="o", capsize=3, label=lik)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="1 nat")
    ax.set(xscale="log", yscale="log", xlabel="MLP width k", ylabel="ELBO(F-VI) − ELBO(A-VI) (nats)",
           title=f"GP, N = {config['n']}, encoder on ({config.get('encoder_inputs', 'y,t')})")
    ax.set_xticks(config["widths"], [str(k) for k in config["widths"]])
    ax.legend()
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "gp_gap_vs_width.png"))

    fig, axes = _panel_grid(plt, len(liks))
    for ax, lik in zip(axes, liks):
        run = seeds[0]["likelihoods"][lik]
        best = run["full_rank"]["elbo"]
        for m in methods:
            v = run["methods"][m]
            dist = np.maximum(best - np.asarray(v["trace_elbo"]), 1e-3)
            ax.plot(v["trace_iteration"], dist, label=m)
        ax.set(xscale="log", yscale="log", xlabel="iteration", ylabel="full-rank ELBO − ELBO (nats)",
               title=f"{lik} (seed 0)")
        if "exact_log_evidence" in run:
            ax.axhline(best - run["mean_field_optimum"]["elbo"], color="grey", lw=0.8, ls="--",
                       label="mean-field optimum")
        ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "gp_elbo_traces.png"))

    fig, axes = _panel_grid(plt, len(liks))
    for ax, lik in zip(axes, liks):
        data = [[s["likelihoods"][lik]["methods"][m]["iterations_to_1pct"] for s in seeds] for m in methods]
        reached = [[d for d in col if d is not None] for col in data]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN box (never reached) is drawn empty
            ax.boxplot([r or [np.nan] for r in reached], tick_labels=methods)
        ax.set(yscale="log", ylabel="iterations to 1 % of F-VI's ELBO", ylim=(1, config["n_iter"]),
               title=f"{lik}, N = {config['n']}")
        for i, r in enumerate(reached, start=1):  # how many seeds got there at all
            ax.annotate(f"{len(r)}/{len(seeds)} seeds" if r else "never", (i, 1), xytext=(0, 4),
                        textcoords="offset points", ha="center", fontsize=8)
    fig.tight_layout()
    files.append(save_figure(fig, out_dir / "gp_iterations_to_1pct.png"))
    return files


