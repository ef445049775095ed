"""Command line: ``python -m avicore.experiments LIST`` or ``python -m avicore.experiments NAME [options]``."""

from __future__ import annotations

import argparse
import sys

from ._runner import REGISTRY, execute, positive_int, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m avicore.experiments",
        description="Reproduce the findings of Margossian & Blei, 'Amortized Variational Inference: When and Why?'.",
        add_help=False)
    parser.add_argument("name", nargs="?", help="experiment name, or LIST to list them")
    parser.add_argument("-h", "--help", action="store_true", help="show this help (after NAME: with its own options)")
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute (what the tests run)")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="number of seeds (default: the experiment's)")
    parser.add_argument("--out", default=None,
                        help="output directory (default experiments-out/NAME[-quick]); one holding another "
                             "experiment's or configuration's results is refused unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="move a previous run in --out aside (renamed OUT.replaced-TIME) and start afresh "
                             "(without it, a different run there is refused and the same one is resumed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-figures", action="store_true", help="numbers only, no PNG figures")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="seeds run at once in separate processes (default: one per CPU thread avicore uses, "
                             "AVICORE_NUM_THREADS; 1 keeps everything in this process with progress bars)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS|local",
                        help="run the seeds as tasks on a Dask cluster: a scheduler address, or 'local' for a "
                             "LocalCluster of --jobs worker processes (needs the dask extra; same results as --jobs)")
    args, extra = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        if args.name in REGISTRY and hasattr(REGISTRY[args.name].load(), "add_arguments"):
            print(f"\noptions of {args.name}:")
            _experiment_parser(args.name).print_help()
        return 0
    if args.name is None:
        parser.error("the experiment name (or LIST) is required")
    if args.name.upper() == "LIST":
        width = max(len(n) for n in REGISTRY) if REGISTRY else 0
        for exp in REGISTRY.values():
            print(f"{exp.name:<{width}}  {exp.description}")
        return 0
    if args.name not in REGISTRY:
        parser.error(f"experiment must be one of {tuple(REGISTRY)} or LIST; got {args.name!r}")
    overrides = _experiment_options(args.name, extra, parser)
    if args.jobs is None:
        from .._config import get_num_threads

        args.jobs = get_num_threads()
    try:  # every option and the output folder are checked here, before any folder or worker exists
        plan = prepare(args.name, quick=args.quick, seeds=args.seeds, out=args.out,
                       config_overrides=overrides or None, jobs=args.jobs, overwrite=args.overwrite, dask=args.dask)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        execute(plan, progress=not args.no_progress, figures=not args.no_figures)
    except KeyboardInterrupt:
        return 130
    return 0


def _experiment_options(name: str, extra: list[str], parser: argparse.ArgumentParser) -> dict:
    """Options an experiment adds to the command line (its module's ``add_arguments(parser)``, if any)."""
    module = REGISTRY[name].load()
    if not hasattr(module, "add_arguments"):
        if extra:
            parser.error(f"unrecognized arguments for {name!r}: {' '.join(extra)}")
        return {}
    ns = _experiment_parser(name).parse_args(extra)
    return {k: v for k, v in vars(ns).items() if v is not None}


def _experiment_parser(name: str) -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser(prog=f"python -m avicore.experiments {name}", add_help=False)
    REGISTRY[name].load().add_arguments(sub)
    return sub


if __name__ == "__main__":
    sys.exit(main())
