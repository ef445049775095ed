"""Time the fused ELBO-gradient kernel (``model.local_terms``) per backend, against the NumPy reference.

One call = draw ε for every (n, s), form z, evaluate log p(xₙ, zₙ | θ_s) and its gradients, reduce: the per-iteration
work of F-VI's gradient (the engine adds Adam; benchmarks/bench_vi.py times the whole step against NumPyro).
``out=`` rows reuse preallocated outputs (what an engine does every iteration).

    python benchmarks/bench_elbo_kernel.py [--quick] [--repeats 5] [--threads 1 2] [--backends cython numba]
"""

from __future__ import annotations

import functools

import numpy as np
from _timing import base_parser, machine_line, measure, print_table

import avicore
from avicore.models import LatentVariableModel, LinearHierarchical, LocalTerms, NonlinearHierarchical


def _call(model: LatentVariableModel, args: tuple, backend: str, out: LocalTerms | None) -> LocalTerms:
    x, mean, log_scale, theta, index = args
    return model.local_terms(x, mean, log_scale, theta, seed=0, step=1, index=index, backend=backend, out=out)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["cython", "numba"])
    opts = parser.parse_args()
    sizes = [(10_000, 1), (1_000, 10)] if opts.quick else [(1_000_000, 1), (10_000, 100)]
    print(machine_line())
    for model in (LinearHierarchical(), NonlinearHierarchical()):
        rows = []
        for n_rows, n_samples in sizes:
            rng = np.random.default_rng(0)
            args = (model.simulate(n_rows, seed=rng).x, rng.normal(size=(n_rows, 1)), np.full((n_rows, 1), -0.5),
                    rng.normal(size=(n_samples, 1)), np.arange(n_rows, dtype=np.int64))
            out = LocalTerms(np.empty(n_samples), np.empty((n_rows, 1)), np.empty((n_rows, 1)),
                             np.empty((n_samples, 1)))
            anchor = measure("numpy reference", functools.partial(_call, model, args, "numpy", None),
                             repeats=max(1, opts.repeats // 2))
            for backend in opts.backends:
                for threads in opts.threads:
                    avicore.set_num_threads(threads)
                    for reuse in (None, out):
                        label = f"{backend}, {threads} thr" + (", out=" if reuse is not None else "")
                        timing = measure(label, functools.partial(_call, model, args, backend, reuse),
                                         repeats=opts.repeats, warmup=2)
                        rows.append((f"N={n_rows:,} S={n_samples}", timing, anchor))
        print_table(f"{type(model).__name__}.local_terms", rows)


if __name__ == "__main__":
    main()
