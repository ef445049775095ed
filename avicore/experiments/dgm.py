"""Deep generative model with a Bayesian MLP decoder: F-VI vs A-VI encoders of growing width on images.

The paper's largest experiment (Margossian & Blei 2024, FashionMNIST): zₙ ~ N(0, I_d), xₙ ~ N(Ω_θ(zₙ), σ² I) with a
mean-field Gaussian over every decoder weight (:class:`avicore.models.BayesianDecoder`), fitted by minibatch F-VI
and by A-VI with MLP encoders of width k and a Constant encoder. Each fit records, every ``eval_every`` epochs, the
reconstruction MSE of Ω(mean q(zₙ); mean q(θ)) on the training images and the mean minibatch ELBO of the epoch; at
the end, the full ELBO estimate and the held-out MSE (A-VI: the encoder; F-VI: the held-out locals fitted by F-VI
with the decoder frozen at the fitted q(θ), :func:`avicore.models.decoder.reconstruction_mse`).

Default data: scikit-learn's 8×8 digits (latent 8, hidden (64, 64)). ``--data fashion-mnist`` runs the paper's
configuration on the real FashionMNIST (:func:`avicore.datasets.load_fashion_mnist`; on Debian
``apt-get install dataset-fashion-mnist``): z ∈ ℝ⁶⁴, decoder 64 → 256 → 256 → 784 with LeakyReLU and biases,
σ = 1 (the paper's N(Ω, I) likelihood), mean-field q over all weights, the first 10,000 training images, held-out
MSE on the first 1,000 test images, minibatch 1,000, one MC sample, Adam at a constant 10⁻³, encoders
k ∈ {1, 64, 128, 256} and Constant, 5,000 epochs (:data:`FASHION`). ``--epochs E`` shortens it, ``--seeds K`` and
``--jobs J`` as for every experiment, ``--backend cuda`` runs the decoder on the GPU. A-VI fits also record the
held-out MSE at every evaluation (``held_out_mse_trace``; F-VI needs a refit of the held-out locals, done once at
the end). ``--data PATH`` (an IDX image file) runs the same configuration on other images, held-out images drawn
from the same file.

A-VI's encoders are fitted with an L2 penalty on their weights (``encoder_weight_decay``, the ``weight_decay`` of
:class:`avicore.AVI`: 300 on the digits, none in the paper's FashionMNIST configuration): on the digits, without it
MLP(64)'s held-out MSE was 6.6 % above F-VI's (the encoder overfits 1,500 images), with it 5 % below. F-VI's factors
have no such parameters.

Measured on the digits (``python -m avicore.experiments dgm``: 1,500 training / 297 held-out images, 300 epochs,
5 seeds, 133 s in all with ``--jobs 2``; see ``benchmarks/README.md``): training / held-out MSE F-VI 0.0108 / 0.0137,
MLP(64) 0.0096 / 0.0130, MLP(16) 0.0125 / 0.0158, MLP(1) 0.060 / 0.061, Constant 0.073 / 0.073; ELBO F-VI
7,274 ± 807, MLP(64) 26,691 ± 417; epochs to MSE 0.03: F-VI 15.2, MLP(64) 5.6. So k = 1 and Constant plateau
(≥ 5.5× F-VI's MSE) and width 64 matches F-VI — training MSE 0.89×, held-out 0.95× (per seed 0.85–1.02×) — in 2.7×
fewer epochs (the paper: ~1.6× on FashionMNIST).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from ._metrics import fmt_pair as _fmt
from ._metrics import mean_se
from ._runner import positive_int

# The paper's FashionMNIST configuration (Margossian & Blei 2024, §5.3 and their code): the first 10,000 training
# images, B = 1,000, one MC sample, Adam at a constant 1e-3 for 5,000 epochs; held-out = the first 1,000 test images.
# No weight decay on the encoders (the paper used none; 10,000 images with σ = 1 overfit far less than 1,500 digits).
FASHION = {"latent_dim": 64, "hidden": [256, 256], "n_train": 10_000, "n_held_out": 1_000, "obs_scale": 1.0,
           "methods": ["F-VI", "MLP(1)", "MLP(64)", "MLP(128)", "MLP(256)", "Constant"], "epochs": 5000,
           "eval_every": 25, "threshold": 0.03, "batch_size": 1000, "n_samples": 1, "lr": 1e-3, "lr_final": 1e-3,
           "held_out_iter": 300, "elbo_samples": 20, "encoder_weight_decay": 0.0}
# Quick mode on FashionMNIST: the paper's model, a few hundred images, a few epochs (seconds, for the tests).
FASHION_QUICK = {**FASHION, "n_train": 400, "n_held_out": 100, "methods": ["F-VI", "MLP(1)", "MLP(64)", "Constant"],
                 "epochs": 10, "eval_every": 2, "batch_size": 100, "lr": 3e-3, "lr_final": 3e-3, "held_out_iter": 100}
#: ``--data`` value that selects FashionMNIST through :func:`avicore.datasets.load_fashion_mnist`.
FASHION_MNIST = "fashion-mnist"


def config(quick: bool) -> dict:
    """Digits: 1,500 training and 297 held-out images, B = 100, 300 epochs, 5 seeds (quick: 400/100 images,
    B = 25, 50 epochs, 2 seeds). ``data`` selects another data set (:func:`settings`); ``epochs_override``
    (``--epochs``) replaces the chosen setting's epoch count, ``backend`` the fits' backend; ``digits_fallback``
    (quick runs) lets ``data="fashion-mnist"`` run on the digits when FashionMNIST is not installed."""
    return {"data": None, "latent_dim": 8, "hidden": [64, 64], "obs_scale": 0.1,
            "n_train": 400 if quick else 1500, "n_held_out": 100 if quick else 297,
            "methods": ["F-VI", "MLP(1)", "MLP(16)", "MLP(64)", "Constant"],
            "epochs": 50 if quick else 300, "eval_every": 5 if quick else 2, "batch_size": 25 if quick else 100,
            "n_samples": 1,
            "lr": 0.01, "lr_final": 0.001, "threshold": 0.03, "held_out_iter": 300, "elbo_samples": 20,
            "encoder_weight_decay": 300.0, "epochs_override": None, "backend": "auto", "digits_fallback": quick,
            "seeds": 2 if quick else 5, "fashion": dict(FASHION_QUICK if quick else FASHION)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data fashion-mnist`` (the paper's setting on FashionMNIST) or ``--data PATH`` (an IDX image file);
    ``--epochs E``; ``--backend NAME``."""
    parser.add_argument("--data", default=None,
                        help="'fashion-mnist' (the paper's configuration on the real FashionMNIST: "
                             "avicore.datasets.load_fashion_mnist; apt-get install dataset-fashion-mnist) or an IDX "
                             "image file; default: scikit-learn's 8x8 digits")
    parser.add_argument("--epochs", dest="epochs_override", type=positive_int, default=None,
                        help="epochs per fit (default: the configuration's; the paper's FashionMNIST run: 5000)")
    parser.add_argument("--backend", default=None, choices=("auto", "numpy", "numba", "cuda"),
                        help="backend of the decoder's kernels (cuda: the GPU)")


def check_config(config: dict) -> None:
    """``data``, when given, must be ``"fashion-mnist"`` with the files installed (a quick run may fall back to the
    digits) or a readable file (checked before any fit starts)."""
    import os

    data = config.get("data")
    if data == FASHION_MNIST:
        from ..datasets import fashion_mnist_dir, load_fashion_mnist

        if fashion_mnist_dir() is None and not config.get("digits_fallback"):
            try:
                load_fashion_mnist()
            except FileNotFoundError as exc:
                raise ValueError(f"data={FASHION_MNIST!r} needs the FashionMNIST files: {exc}") from None
        return
    if data is not None and not (os.path.isfile(data) and os.access(data, os.R_OK)):
        raise ValueError(f"data must be a readable IDX image file; got {data!r}, which "
                         f"{'is not readable' if os.path.isfile(data) else 'does not exist or is not a file'}.")


def settings(config: dict) -> dict:
    """The configuration in force.

    ``data`` None: the digits entries of ``config``. ``data="fashion-mnist"``: the entries of ``config["fashion"]``
    (the paper's sizes, :data:`FASHION`; :data:`FASHION_QUICK` with ``--quick``) on FashionMNIST, held-out images
    from its test split; when the files are missing, a quick run falls back to the digits (``data_note`` says so)
    and a full run (``digits_fallback`` false) raises :class:`FileNotFoundError`. Any other ``data``: an IDX image
    file with the ``config["fashion"]`` sizes, held-out images drawn from the same file. ``epochs_override`` then
    replaces the epoch count.
    """
    data = config.get("data")
    if data is None:
        cfg = dict(config)
    elif data == FASHION_MNIST:
        from ..datasets import fashion_mnist_dir

        if fashion_mnist_dir() is None:
            if not config.get("digits_fallback"):
                from ..datasets import load_fashion_mnist

                load_fashion_mnist()  # raises FileNotFoundError naming the Debian package and $AVICORE_DATA
            cfg = {**config, "data": None, "data_note": "FashionMNIST not found: quick run on the digits instead"}
        else:
            cfg = {**config, **config.get("fashion", FASHION)}
    else:
        cfg = {**config, **config.get("fashion", FASHION)}
    if config.get("epochs_override") is not None:
        cfg["epochs"] = int(config["epochs_override"])
        cfg["eval_every"] = max(1, min(cfg["eval_every"], cfg["epochs"] // 20))  # at least ~20 points per curve
    return cfg


def _load(cfg: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from ..datasets import load_digits, load_fashion_mnist, load_idx

    n_train, n_held = cfg["n_train"], cfg["n_held_out"]
    if cfg["data"] == FASHION_MNIST:  # the paper's split: the first training images, the first test images
        return (load_fashion_mnist("train", n=n_train).x, load_fashion_mnist("test", n=n_held).x)
    x = load_digits().x if cfg["data"] is None else load_idx(Path(cfg["data"])).x
    if n_train + n_held > x.shape[0]:
        raise ValueError(f"n_train + n_held_out must be at most the {x.shape[0]} images; got {n_train + n_held}.")
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    return np.ascontiguousarray(x[perm[:n_train]]), np.ascontiguousarray(x[perm[n_train:n_train + n_held]])


def _encoder(method: str):
    from ..encoders import MLP, Constant

    if method == "Constant":
        return Constant()
    return MLP(int(method[4:-1]))


def fit_method(cfg: dict, method: str, x: np.ndarray, x_held: np.ndarray, seed: int, progress: bool) -> dict:
    """One fit: per-epoch training MSE and ELBO, then the final ELBO estimate and the held-out MSE."""
    import avicore
    from avicore.models import BayesianDecoder
    from avicore.models.decoder import reconstruction_mse
    from avicore.optim import exponential_decay

    model = BayesianDecoder(cfg["latent_dim"], hidden=tuple(cfg["hidden"]), obs_scale=cfg["obs_scale"])
    per_epoch = math.ceil(x.shape[0] / cfg["batch_size"])
    n_iter = cfg["epochs"] * per_epoch
    lr = exponential_decay(cfg["lr"], cfg["lr_final"], n_iter)
    common = {"n_samples": cfg["n_samples"], "batch_size": cfg["batch_size"], "elbo_samples": cfg["elbo_samples"],
              "backend": cfg.get("backend", "auto")}
    epochs, mse, held_mse = [], [], []

    def record(state) -> bool:
        if state.iteration % (per_epoch * cfg["eval_every"]) == 0:
            z = state.local_mean if state.encode is None else state.encode(x)[0]
            mse.append(float(np.mean((x - model.decode(z, state.global_mean)) ** 2)))
            if state.encode is not None:  # A-VI: the encoder gives held-out q(z) for free (F-VI needs a refit)
                held_mse.append(float(np.mean((x_held - model.decode(state.encode(x_held)[0],
                                                                     state.global_mean)) ** 2)))
            epochs.append(state.iteration // per_epoch)
        return False

    engine = (avicore.FVI(model, **common) if method == "F-VI"
              else avicore.AVI(model, _encoder(method), weight_decay=cfg["encoder_weight_decay"], **common))
    res = engine.fit(x, n_iter=n_iter, lr=lr, seed=seed, progress=progress, callback=record)
    trace = res.trace[:res.n_iter // per_epoch * per_epoch].reshape(-1, per_epoch).mean(axis=1)
    hit = [e for e, m in zip(epochs, mse) if m <= cfg["threshold"]]
    return {"elbo": res.elbo, "elbo_se": res.elbo_se, "train_mse": reconstruction_mse(res),
            "held_out_mse": reconstruction_mse(res, x_held, n_iter=cfg["held_out_iter"], lr=cfg["lr"], seed=seed),
            "epochs": epochs, "mse_trace": mse, "held_out_mse_trace": held_mse or None, "elbo_trace": trace.tolist(),
            "epochs_to_threshold": hit[0] if hit else None, "seconds": res.seconds}


def run_seed(config: dict, seed: int, progress: bool) -> dict:
    """Every method on one train/held-out split drawn from ``seed`` (also the fits' seed)."""
    cfg = settings(config)
    x, x_held = _load(cfg, seed)
    return {"methods": {m: fit_method(cfg, m, x, x_held, seed, progress) for m in cfg["methods"]}}


def _widest(methods: list[str]) -> str:
    mlps = [m for m in methods if m.startswith("MLP(")]
    return max(mlps, key=lambda m: int(m[4:-1]))


def summarize(config: dict, seeds: list[dict]) -> dict:
    """Mean ± SE per method and the findings: the widest encoder matches F-VI, k = 1 and Constant plateau."""
    cfg = settings(config)
    methods = cfg["methods"]
    per = {}
    for m in methods:
        rows = [s["methods"][m] for s in seeds]
        per[m] = {key: mean_se([r[key] for r in rows])
                  for key in ("train_mse", "held_out_mse", "elbo", "epochs_to_threshold", "seconds")}
        per[m]["reached"] = sum(r["epochs_to_threshold"] is not None for r in rows)
    wide, fvi = _widest(methods), per["F-VI"]
    narrow = [m for m in ("MLP(1)", "Constant") if m in per]
    findings = {
        "widest_encoder": wide,
        "wide_train_mse_within_5pct_of_fvi": per[wide]["train_mse"][0] <= 1.05 * fvi["train_mse"][0],
        "wide_held_out_mse_no_worse": per[wide]["held_out_mse"][0] <= fvi["held_out_mse"][0],
        "narrow_plateau_30pct_above": all(per[m]["train_mse"][0] >= 1.3 * fvi["train_mse"][0] for m in narrow),
        "wide_ratio_to_fvi_train": per[wide]["train_mse"][0] / fvi["train_mse"][0],
        "wide_ratio_to_fvi_held_out": per[wide]["held_out_mse"][0] / fvi["held_out_mse"][0],
        "narrow_ratio_to_fvi_train": {m: per[m]["train_mse"][0] / fvi["train_mse"][0] for m in narrow},
        "epochs_to_threshold_ratio_fvi_over_wide": (fvi["epochs_to_threshold"][0] / per[wide]["epochs_to_threshold"][0]
                                                   if per[wide]["reached"] and fvi["reached"] else None),
    }
    return {"settings": {k: cfg.get(k) for k in ("data", "data_note", "latent_dim", "hidden", "n_train", "n_held_out",
                                                 "obs_scale", "batch_size", "epochs", "threshold", "backend")},
            "methods": per, "findings": findings}


def table(summary: dict) -> str:
    """Train / held-out MSE, ELBO and epochs to the MSE threshold per method, then the findings."""
    st = summary["settings"]
    thr = st["threshold"]
    data = {None: "scikit-learn's 8x8 digits", FASHION_MNIST: "FashionMNIST"}.get(st["data"], st["data"])
    lines = [f"data: {data}" + (f" ({st['data_note']})" if st.get("data_note") else "")
             + f"; {st['n_train']} training / {st['n_held_out']} held-out images, latent {st['latent_dim']}, "
               f"hidden {st['hidden']}, B = {st.get('batch_size')}, {st['epochs']} epochs\n",
             f"| method | train MSE | held-out MSE | ELBO | epochs to MSE {thr} | reached |",
             "|---|---|---|---|---|---|"]
    for m, v in summary["methods"].items():
        lines.append(f"| {m} | {_fmt(v['train_mse'], 4)} | {_fmt(v['held_out_mse'], 4)} | {_fmt(v['elbo'], 1)} | "
                     f"{_fmt(v['epochs_to_threshold'], 1)} | {v['reached']} |")
    f = summary["findings"]
    lines.append(f"\n{f['widest_encoder']} / F-VI MSE: train {f['wide_ratio_to_fvi_train']:.3f}, held-out "
                 f"{f['wide_ratio_to_fvi_held_out']:.3f}; narrow / F-VI (train): "
                 + ", ".join(f"{m} {r:.2f}" for m, r in f["narrow_ratio_to_fvi_train"].items()))
    for key in ("wide_train_mse_within_5pct_of_fvi", "wide_held_out_mse_no_worse", "narrow_plateau_30pct_above"):
        lines.append(f"{key}: {f[key]}")
    return "\n".join(lines)




def _elbo_axis(ax, values: list[float]) -> None:
    """A y axis for ELBO traces: linear when they keep one sign, symmetric-log when they cross zero.

    The symmetric-log axis is ticked only at 0 and ±10ᵏ outside its linear band: matplotlib's default ticks also
    fall inside the band, where a decade takes a few pixels and the labels overlap ("10²" over "−10⁰")."""
    from matplotlib.ticker import FixedLocator, NullLocator

    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size == 0 or finite.min() >= 0.0 or finite.max() <= 0.0:
        return  # one sign: the default linear axis reads best
    top = float(np.abs(finite).max())
    linthresh = 10.0 ** max(0, math.floor(math.log10(max(top, 1.0))) - 3)
    ax.set_yscale("symlog", linthresh=linthresh)
    decades = [10.0 ** k for k in range(int(math.log10(linthresh)), math.ceil(math.log10(max(top, 1.0))) + 1)]
    ticks = sorted({0.0, *decades, *(-d for d in decades)})
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())


def figures(config: dict, seeds: list[dict], summary: dict, out_dir: Path) -> list[str]:
    """MSE and ELBO vs epoch (mean over seeds) and box plots of the epochs to the MSE threshold."""
    import matplotlib.pyplot as plt

    methods = list(summary["methods"])
    files = []
    fig, (ax_mse, ax_elbo) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        runs = [s["methods"][m] for s in seeds]
        n = min(len(r["mse_trace"]) for r in runs)
        ax_mse.plot(runs[0]["epochs"][:n], np.mean([r["mse_trace"][:n] for r in runs], axis=0), label=m)
        k = min(len(r["elbo_trace"]) for r in runs)
        ax_elbo.plot(np.arange(1, k + 1), np.mean([r["elbo_trace"][:k] for r in runs], axis=0), label=m)
    ax_mse.axhline(summary["settings"]["threshold"], color="grey", lw=0.8, ls="--")
    ax_mse.set(xlabel="epoch", ylabel="training reconstruction MSE", yscale="log")
    ax_elbo.set(xlabel="epoch", ylabel="minibatch ELBO (epoch mean)")
    _elbo_axis(ax_elbo, [v for s in seeds for m in methods for v in s["methods"][m]["elbo_trace"]])
    ax_mse.legend()
    fig.tight_layout()
    path = out_dir / "dgm_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(str(path))
    fig, ax = plt.subplots(figsize=(6, 4))
    data = [[s["methods"][m]["epochs_to_threshold"] for s in seeds
             if s["methods"][m]["epochs_to_threshold"] is not None] for m in methods]
    ax.boxplot([d if d else [np.nan] for d in data], tick_labels=methods)
    ax.set(ylabel=f"epochs to MSE ≤ {summary['settings']['threshold']}", title="(methods that never reach it: empty)")
    fig.tight_layout()
    path = out_dir / "dgm_epochs_to_threshold.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    files.append(str(path))
    return files
