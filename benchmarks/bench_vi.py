"""Benchmark avicore's F-VI and A-VI engines against NumPyro and PyTorch, and time the paper's linear experiment.

1. One F-VI iteration (reparameterised gradient + Adam update), float64, on the linear hierarchical model
   zₙ ~ N(0, 1), xₙ ~ N(θ + τ zₙ, σ²), flat p(θ), vs NumPyro's ``SVI`` step with ``AutoNormal`` and
   ``Trace_ELBO(num_particles=S, vectorize_particles=True)`` in float64 (``jax_enable_x64``), JIT-compiled and run
   inside ``lax.fori_loop``: (N, S) = (10⁶, 1) and (10⁴, 100). Goal ≥ 3× faster. avicore's time per iteration is
   read from the fit's own per-iteration timestamps (``VIResult.trace_seconds``), so it includes everything the
   engine does each iteration (noise, fused pass, ELBO estimate, finiteness checks, Adam).
2. One A-VI iteration with ``MLP(32)`` (two hidden ReLU layers of 32) on the nonlinear hierarchical model
   xₙ ~ N(θ + zₙ + zₙ sin zₙ, exp(cos zₙ)²), N = 10⁴, S = 100, vs the same model, encoder, ELBO and Adam written in
   PyTorch on the CPU (the authors' framework), float64 (the same precision; a float32 row is printed for
   reference). Goal ≥ 3× faster.
3. Wall time to reproduce the paper's linear experiment: N = 10⁴; F-VI, Constant, Polynomial(1), Polynomial(2);
   100 Monte-Carlo samples; 5,000 Adam iterations at the paper's constant lr = 10⁻²; 10 seeds (new data and a new
   fit seed each); with the ELBO table (Monte-Carlo estimate and, since the model is Gaussian, the exact ELBO of
   each fitted q) next to the closed-form F-VI optimum and Constant gap.

Peers: NumPyro and PyTorch are optional (``pip install avicore[bench]``). Here they were installed into the
project's virtual environment with ``.venv/bin/pip install numpyro jax`` and ``.venv/bin/pip install
torch==2.13.0`` (that exact CPU wheel came from a local file). When a peer does not import, its rows say so and why.

Run: ``.venv/bin/python benchmarks/bench_vi.py`` (``--quick`` for small sizes; ``--skip-paper`` to leave out
part 3, which takes tens of minutes on two cores; ``--paper-only`` for part 3 alone).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import Timing, base_parser, format_seconds, machine_line, print_table

import avicore
from avicore.encoders import MLP, Constant, Polynomial
from avicore.models import LinearHierarchical, NonlinearHierarchical

TAU, SIGMA = 1.155, 2.43


# ---------------------------------------------------------------------------------------------------------------
# avicore
# ---------------------------------------------------------------------------------------------------------------

def avicore_step(engine, x: np.ndarray, n_iter: int, repeats: int, label: str) -> Timing:
    """Seconds per iteration of ``engine.fit`` from its per-iteration timestamps (first iteration excluded)."""
    times = []
    for r in range(repeats):
        res = engine.fit(x, n_iter=n_iter, lr=1e-3, seed=r)
        stamps = res.trace_seconds
        times.append(float(stamps[-1] - stamps[0]) / (stamps.size - 1))
    return Timing(label, tuple(times))


# ---------------------------------------------------------------------------------------------------------------
# NumPyro (F-VI anchor)
# ---------------------------------------------------------------------------------------------------------------

def numpyro_step(x: np.ndarray, n_samples: int, n_iter: int, repeats: int) -> tuple[Timing | None, str]:
    """NumPyro's float64 SVI step (AutoNormal, Trace_ELBO) on the linear model, or (None, why not)."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal
        from numpyro.infer.initialization import init_to_value
    except Exception as exc:  # ImportError or a broken install
        return None, f"{type(exc).__name__}: {exc}"

    def model(obs):
        theta = numpyro.sample("theta", dist.ImproperUniform(constraints.real, (), ()))
        with numpyro.plate("n", obs.shape[0]):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
            numpyro.sample("x", dist.Normal(theta + TAU * z, SIGMA), obs=obs)

    xj = jnp.asarray(x[:, 0], dtype=jnp.float64)
    guide = AutoNormal(model, init_loc_fn=init_to_value(values={"theta": 0.0, "z": jnp.zeros(x.shape[0])}))
    svi = SVI(model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO(num_particles=n_samples, vectorize_particles=True))
    state = svi.init(jax.random.PRNGKey(0), xj)
    run = jax.jit(lambda st: jax.lax.fori_loop(0, n_iter, lambda i, s: svi.update(s, xj)[0], st))
    state = jax.block_until_ready(run(state))  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(run(state))
        times.append((time.perf_counter() - t0) / n_iter)
    return Timing(f"NumPyro {numpyro.__version__} f64", tuple(times)), ""


# ---------------------------------------------------------------------------------------------------------------
# PyTorch (A-VI anchor)
# ---------------------------------------------------------------------------------------------------------------

def torch_avi_step(x: np.ndarray, width: int, n_samples: int, n_iter: int, repeats: int,
                   dtype_name: str) -> tuple[Timing | None, str]:
    """The nonlinear model's A-VI step (MLP encoder, reparameterised ELBO, Adam) in PyTorch, or (None, why not)."""
    try:
        import torch
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    torch.set_num_threads(avicore.get_num_threads())
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    xs = torch.from_numpy((x - x.mean()) / x.std()).to(dtype)
    xt = torch.from_numpy(x).to(dtype)
    net = torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.ReLU(), torch.nn.Linear(width, width),
                              torch.nn.ReLU(), torch.nn.Linear(width, 2)).to(dtype)
    glob = torch.zeros(2, dtype=dtype, requires_grad=True)  # (μ_θ, log σ_θ)
    opt = torch.optim.Adam([*net.parameters(), glob], lr=1e-3)
    n = x.shape[0]
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def step():
        out = net(xs)
        mean, log_scale = out[:, :1], out[:, 1:]
        eps = torch.randn(n, n_samples, dtype=dtype)
        eta = torch.randn(n_samples, dtype=dtype)
        theta = glob[0] + torch.exp(glob[1]) * eta
        z = mean + torch.exp(log_scale) * eps
        cz = torch.cos(z)
        r = xt - theta - z - z * torch.sin(z)
        log_joint = -0.5 * z * z - 2 * half_log_2pi - cz - 0.5 * r * r * torch.exp(-2.0 * cz)
        elbo = log_joint.sum(0).mean() + log_scale.sum() + glob[1] + (n + 1) * (half_log_2pi + 0.5)
        opt.zero_grad()
        (-elbo).backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n_iter):
            step()
        times.append((time.perf_counter() - t0) / n_iter)
    return Timing(f"PyTorch {torch.__version__} {dtype_name}", tuple(times)), ""


# ---------------------------------------------------------------------------------------------------------------
# 3. the paper's linear experiment
# ---------------------------------------------------------------------------------------------------------------

def paper_linear(n_obs: int, n_iter: int, n_seeds: int, n_samples: int, lr: float) -> None:
    model = LinearHierarchical(tau=TAU, sigma=SIGMA)
    methods = [("F-VI", None), ("Constant", Constant()), ("Polynomial(1)", Polynomial(1)),
               ("Polynomial(2)", Polynomial(2))]
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in methods}
    optimum, closed_gap = [], []
    seconds: dict[str, float] = {name: 0.0 for name, _ in methods}
    print(f"\n## The paper's linear experiment: N = {n_obs}, {n_samples} MC samples, {n_iter} iterations, "
          f"lr = {lr:g}, {n_seeds} seeds", flush=True)
    t_all = time.perf_counter()
    for seed in range(n_seeds):
        x = model.simulate(n_obs, seed=1000 + seed).x
        opt = model.fvi_optimum(x)
        optimum.append(opt.elbo)
        c = SIGMA ** 2 + TAU ** 2
        closed_gap.append(TAU ** 2 * float(np.sum((x - x.mean()) ** 2)) / (2 * SIGMA ** 2 * c))
        fvi = None
        for name, enc in methods:
            engine = (avicore.FVI(model, n_samples=n_samples) if enc is None
                      else avicore.AVI(model, enc, n_samples=n_samples))
            t0 = time.perf_counter()
            res = engine.fit(x, n_iter=n_iter, lr=lr, seed=seed)
            seconds[name] += time.perf_counter() - t0
            exact = model.exact_elbo(x, res.local_mean, res.local_sd, res.global_mean, res.global_sd)
            if enc is None:
                fvi = res
                gap = 0.0
            else:
                gap = avicore.amortization_gap(fvi, res, seed=seed).gap
            rows[name].append((res.elbo, exact, gap))
        print(f"  seed {seed}: done ({time.perf_counter() - t_all:.0f} s so far)", flush=True)
    wall = time.perf_counter() - t_all
    print(f"\n| {'method':<14} | {'ELBO (MC), mean ± sd':>24} | {'exact ELBO of q':>22} | {'gap to F-VI (nats)':>22} "
          f"| {'fit seconds':>11} |")
    print(f"|{'-' * 16}|{'-' * 26}|{'-' * 24}|{'-' * 24}|{'-' * 13}|")
    for name, _ in methods:
        a = np.array(rows[name])
        print(f"| {name:<14} | {a[:, 0].mean():14.2f} ± {a[:, 0].std(ddof=1) if n_seeds > 1 else 0:7.2f} "
              f"| {a[:, 1].mean():12.2f} ± {a[:, 1].std(ddof=1) if n_seeds > 1 else 0:7.2f} "
              f"| {a[:, 2].mean():12.2f} ± {a[:, 2].std(ddof=1) if n_seeds > 1 else 0:7.2f} "
              f"| {seconds[name]:11.1f} |")
    print(f"\nclosed form: F-VI optimum ELBO {np.mean(optimum):.2f} (mean over seeds); Constant gap "
          f"τ²Σ(xₙ−x̄)²/(2σ²(σ²+τ²)) = {np.mean(closed_gap):.2f} ± {np.std(closed_gap):.2f} nats; "
          f"Polynomial(d ≥ 1) gap 0.")
    print(f"wall time for the whole experiment ({len(methods)} methods × {n_seeds} seeds, final ELBO estimates and "
          f"gaps included): {wall:.1f} s")


# ---------------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-paper", action="store_true", help="leave out part 3 (the paper's experiment)")
    parser.add_argument("--paper-only", action="store_true", help="run part 3 only")
    parser.add_argument("--paper-seeds", type=int, default=None, help="seeds of part 3 (default 10, quick 2)")
    args = parser.parse_args()
    quick, repeats = args.quick, args.repeats
    print(f"# bench_vi ({machine_line()}, avicore threads {avicore.get_num_threads()})")

    if not args.paper_only:
        # 1. F-VI vs NumPyro
        cases = [(10 ** 4, 1), (10 ** 3, 10)] if quick else [(10 ** 6, 1), (10 ** 4, 100)]
        rows = []
        lin = LinearHierarchical(tau=TAU, sigma=SIGMA)
        for n_obs, n_samples in cases:
            x = lin.simulate(n_obs, seed=0).x
            n_iter = 10 if quick else 40
            cand = avicore_step(avicore.FVI(lin, n_samples=n_samples, elbo_samples=2), x, n_iter, repeats,
                                "avicore F-VI f64")
            anchor, why = numpyro_step(x, n_samples, n_iter, repeats)
            if anchor is None:
                print(f"NumPyro unavailable ({why}); install it with `pip install numpyro jax`.")
            rows.append((f"F-VI step, linear, N={n_obs:.0e}, S={n_samples}", cand, anchor))
        print_table("F-VI iteration (gradient + Adam), float64, vs NumPyro SVI (AutoNormal, Trace_ELBO)", rows,
                    goal=">= 3x")

        # 2. A-VI MLP(32) vs PyTorch
        n_obs, n_samples, width = (10 ** 3, 10, 32) if quick else (10 ** 4, 100, 32)
        nonlin = NonlinearHierarchical()
        x = nonlin.simulate(n_obs, seed=0).x
        n_iter = 10 if quick else 30
        cand = avicore_step(avicore.AVI(nonlin, MLP(width), n_samples=n_samples, elbo_samples=2), x, n_iter,
                            repeats, f"avicore A-VI MLP({width}) f64")
        rows = []
        for dtype_name in ("float64", "float32"):
            anchor, why = torch_avi_step(x, width, n_samples, n_iter, repeats, dtype_name)
            if anchor is None:
                print(f"PyTorch unavailable ({why}); install it with `pip install torch`.")
            rows.append((f"A-VI step, nonlinear, N={n_obs:.0e}, S={n_samples} vs {dtype_name}", cand, anchor))
        print_table(f"A-VI iteration with MLP({width}) vs the same model in PyTorch (CPU)", rows,
                    goal=">= 3x vs float64")

    if not args.skip_paper:
        seeds = args.paper_seeds if args.paper_seeds is not None else (2 if quick else 10)
        if quick:
            paper_linear(1000, 500, seeds, 100, 1e-2)
        else:
            paper_linear(10 ** 4, 5000, seeds, 100, 1e-2)
    print(f"\n(times per iteration; {format_seconds(0.001)} = one millisecond)")


if __name__ == "__main__":
    main()
