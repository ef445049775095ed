"""Experiment registry and runner: seeds, incremental results.json, resumable runs, the summary table.

An experiment is a module in ``avicore.experiments`` registered with :func:`register`. It defines

- ``config(quick: bool) -> dict``: the sizes and settings (``--quick`` ones finish in under a minute);
- ``run_seed(config: dict, seed: int, progress: bool) -> dict``: one seed's numbers (JSON-serialisable);
- ``summarize(config: dict, seeds: list[dict]) -> dict``: aggregate numbers and the findings checked;
- ``table(summary: dict) -> str``: a printable table;
- ``figures(config, seeds, summary, out_dir) -> list[str]``: PNG files written (matplotlib imported inside).

Optional: ``check_config(config)`` raising ``ValueError`` on bad option values (called before anything starts).

The runner writes ``results.json`` after every finished seed, so an interrupted run keeps the seeds it finished, and
a rerun with the same ``--out`` continues from them when the configuration is unchanged. Nothing is ever lost: an
``--out`` folder holding another experiment's or configuration's results is refused (``--overwrite`` moves it aside),
and every option is checked (:func:`prepare`) before any folder is created or any worker starts.

With ``jobs > 1`` the seeds run in that many worker processes, each with its share of avicore's threads (seeds are
independent fits; on two cores two one-thread processes beat one two-thread process, whose parallel kernels wait on
each other every step).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its CLI name, the module implementing it and a one-line description."""

    name: str
    module: str
    description: str

    def load(self) -> ModuleType:
        return _import(self.module)


def _import(module: str) -> ModuleType:
    """A module of this package by its short name, or any importable module by its dotted path."""
    return importlib.import_module(module if "." in module else f"avicore.experiments.{module}")


def positive_int(text: str) -> int:
    """argparse type for experiment options: an integer >= 1 (a bad value is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {value}")
    return value


REGISTRY: dict[str, Experiment] = {}


def register(name: str, module: str, description: str) -> None:
    """Add an experiment to the registry (called at import of :mod:`avicore.experiments`).

    ``module`` is a module of this package (``"linear"``) or the dotted path of any importable module that follows
    the contract above (a user's own experiment).
    """
    REGISTRY[name] = Experiment(name, module, description)


def get(name: str) -> Experiment:
    """The experiment called ``name``; an unknown name lists the valid ones."""
    if name not in REGISTRY:
        raise ValueError(f"experiment must be one of {tuple(REGISTRY)}; got {name!r}.")
    return REGISTRY[name]


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into JSON-safe values (inf/nan as strings)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: Path, payload: dict) -> None:
    """Write atomically (temporary file + rename) so an interruption never leaves a truncated results.json."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False))
    tmp.replace(path)


@dataclass(frozen=True)
class Plan:
    """A validated run: what :func:`prepare` checked and :func:`execute` carries out (nothing created yet)."""

    experiment: Experiment
    module: ModuleType
    quick: bool
    config: dict
    out_dir: Path
    resumed: list
    jobs: int
    overwrite: bool
    dask: str | None = None


def prepare(name: str, *, quick: bool = False, seeds: int | None = None, out: str | Path | None = None,
            config_overrides: dict | None = None, jobs: int = 1, overwrite: bool = False,
            dask: str | None = None) -> Plan:
    """Check every option of a run and its output folder, creating nothing; raise ``ValueError`` on any problem.

    The folder ``out`` may be new, empty of results, or hold a ``results.json`` of the *same* experiment and
    configuration (any seed count: the run resumes from its seeds). A folder holding another experiment's or
    another configuration's results (or an unreadable results.json) is refused with a message that says what is
    there, unless ``overwrite`` — then :func:`execute` moves the old folder aside (renamed, never deleted) and
    starts afresh (also when the old run has the same configuration: ``overwrite`` never resumes).
    """
    from .. import _validate

    experiment = get(name)
    module = experiment.load()
    config = dict(module.config(quick))
    if config_overrides:
        # An experiment may take derived options (not configuration entries) and apply them itself.
        derived = tuple(getattr(module, "DERIVED_OPTIONS", ()))
        unknown = set(config_overrides) - set(config) - set(derived)
        if unknown:
            raise ValueError(f"config_overrides must name entries of the {name!r} configuration "
                             f"{sorted(config)}{' or ' + str(sorted(derived)) if derived else ''}; "
                             f"got {sorted(unknown)}.")
        if hasattr(module, "apply_overrides"):
            config = module.apply_overrides(config, config_overrides)
        else:
            config.update(config_overrides)
    n_seeds = _validate.check_int(seeds if seeds is not None else config.get("seeds", 1), "seeds", minimum=1)
    config["seeds"] = n_seeds
    n_jobs = _validate.check_int(jobs, "jobs", minimum=1)
    if dask is not None:
        if not isinstance(dask, str) or not dask.strip():
            raise ValueError(f"dask must be a scheduler address or 'local'; got {dask!r}.")
        try:
            import avicore.distributed  # noqa: F401
        except ImportError as exc:
            raise ValueError(f"dask={dask!r} needs Dask: {exc}") from None
    if hasattr(module, "check_config"):
        module.check_config(config)  # the experiment's own option checks, before any worker starts
    out_dir = Path(out) if out is not None else Path("experiments-out") / (name + ("-quick" if quick else ""))
    _check_writable(out_dir)
    resumed: list = []
    path = out_dir / RESULTS_FILE
    if path.exists():
        try:
            previous = json.loads(path.read_text())
            if not isinstance(previous, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            previous = None
            what = f"an unreadable {RESULTS_FILE} ({exc})"
        else:
            what = _describe_previous(previous, name, config)
        if what is not None and not overwrite:
            raise ValueError(f"out must be a new folder or one holding this run's results; {out_dir} holds {what}. "
                             f"Choose another --out, or pass --overwrite (overwrite=True) to move the old run "
                             f"aside to {_aside_name(out_dir)}.")
        if what is None and not overwrite:
            resumed = [s for s in previous.get("seeds", []) if s.get("seed", n_seeds) < n_seeds]
    return Plan(experiment=experiment, module=module, quick=quick, config=config, out_dir=out_dir, resumed=resumed,
                jobs=n_jobs, overwrite=overwrite, dask=dask)


def _describe_previous(previous: dict, name: str, config: dict) -> str | None:
    """None when ``previous`` is a run of the same experiment and configuration, else what it is."""
    other = previous.get("experiment")
    if other != name:
        return f"results of the experiment {other!r}"
    old = _without_seeds(previous.get("config", {}))
    new = _without_seeds(_jsonable(config))
    if old != new:
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys[:4])
        return f"results of {name!r} with another configuration: {shown}{' …' if len(keys) > 4 else ''}"
    return None


def _aside_name(out_dir: Path) -> Path:
    """Where an overwritten run goes: ``<out>.replaced-<UTC time>`` beside it (``-2``, ``-3`` … if taken)."""
    base = out_dir.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
    aside, k = base, 1
    while aside.exists():
        k += 1
        aside = base.with_name(f"{base.name}-{k}")
    return aside


def _check_writable(out_dir: Path) -> None:
    """``out_dir`` must be a folder (or not exist yet) that this process can create and write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out must be a folder; got {out_dir}, which is a file.")
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"out must be a folder that can be created; got {out_dir}, under the file {probe}.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"out must be a writable folder; got {out_dir}"
                         f"{'' if probe == out_dir else f', whose nearest existing folder {probe}'} is not "
                         f"writable.")


def run(name: str, *, quick: bool = False, seeds: int | None = None, out: str | Path | None = None,
        progress: bool = True, figures: bool = True, config_overrides: dict | None = None,
        jobs: int = 1, log: Callable[[str], None] = print, overwrite: bool = False, dask: str | None = None) -> dict:
    """Run experiment ``name`` for ``seeds`` seeds and write ``results.json`` (and figures) to ``out``.

    Parameters
    ----------
    name : str
        A registered experiment (``python -m avicore.experiments LIST`` shows them).
    quick : bool
        Small sizes (under a minute); what the tests run.
    seeds : int, optional
        Number of seeds (0, 1, …); default the experiment's own.
    out : path, optional
        Output directory (created); default ``experiments-out/<name>[-quick]``. It must be new or hold this
        experiment's results with the same configuration (then the run resumes); see :func:`prepare`.
    progress : bool
        Progress bars for long fits.
    figures : bool
        Write PNG figures (needs matplotlib; without it, a message says so and the numbers are still written).
    config_overrides : dict, optional
        Replace entries of the experiment's configuration (tests use it to shrink runs further).
    jobs : int
        Seeds run at once, each in its own process with ``get_num_threads() // jobs`` threads (at least 1);
        progress bars are off when ``jobs > 1``. Results do not depend on ``jobs``.
    log : callable
        Receives the progress lines and the final table (default ``print``).
    overwrite : bool
        When ``out`` holds results (another experiment's or configuration's, or this one's), move that folder aside
        (to ``<out>.replaced-<time>``) and start afresh, instead of refusing or resuming.
    dask : str, optional
        Run the seeds as tasks on a Dask cluster: a scheduler address, or ``"local"`` for a ``LocalCluster`` of
        ``jobs`` worker processes (1 thread each) started for the run (:mod:`avicore.distributed`; needs the
        ``dask`` extra). The results equal those of ``jobs`` processes.

    Returns
    -------
    dict
        The content of ``results.json``: ``experiment``, ``config``, ``seeds`` (one dict per seed, each with its
        ``fit_warnings``), ``summary``, ``figures``, ``environment``.

    Raises
    ------
    ValueError
        On any invalid option or output folder — before any folder is created or any worker starts.
    """
    return execute(prepare(name, quick=quick, seeds=seeds, out=out, config_overrides=config_overrides, jobs=jobs,
                           overwrite=overwrite, dask=dask), progress=progress, figures=figures, log=log)


def execute(plan: Plan, *, progress: bool = True, figures: bool = True,
            log: Callable[[str], None] = print) -> dict:
    """Carry out a :func:`prepare`-d run (see :func:`run`)."""
    name, module, config, out_dir = plan.experiment.name, plan.module, plan.config, plan.out_dir
    n_seeds = config["seeds"]
    path = out_dir / RESULTS_FILE
    if plan.overwrite and path.exists():
        aside = _aside_name(out_dir)
        out_dir.rename(aside)
        log(f"moved the previous run in {out_dir} aside to {aside}")
    out_dir.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"experiment": name, "description": plan.experiment.description, "quick": plan.quick,
                               "config": config, "seeds": list(plan.resumed), "summary": None, "figures": [],
                               "environment": _environment(), "complete": False}
    if payload["seeds"]:
        log(f"resuming {name}: {len(payload['seeds'])} of {n_seeds} seeds already in {path}")
    todo = sorted(set(range(n_seeds)) - {s["seed"] for s in payload["seeds"]})
    n_jobs = min(plan.jobs, max(1, len(todo)))

    def keep(result: dict) -> None:
        payload["seeds"].append(_jsonable(result))
        payload["seeds"].sort(key=lambda s: s["seed"])
        write_json(path, payload)

    t0 = time.perf_counter()
    try:
        if plan.dask is not None and todo:
            from ..distributed._experiments import run_seeds

            run_seeds(plan.experiment.module, config, todo, plan.dask, plan.jobs, keep, lambda m: log(f"[{name}] {m}"))
        elif n_jobs == 1:
            for seed in todo:
                log(f"[{name}] seed {seed + 1}/{n_seeds}")
                keep(_run_one(plan.experiment.module, config, seed, progress))
        else:
            _run_parallel(plan.experiment.module, config, todo, n_jobs, keep, lambda m: log(f"[{name}] {m}"))
    except KeyboardInterrupt:
        write_json(path, payload)
        log(f"interrupted: {len(payload['seeds'])} finished seed(s) kept in {path}")
        raise
    # The saved numbers are JSON-safe (non-finite floats as strings); the experiment's own functions get floats.
    seeds = _restore(payload["seeds"])
    summary = module.summarize(config, seeds)
    payload["summary"] = _jsonable(summary)
    payload["complete"] = True
    payload["seconds_total"] = time.perf_counter() - t0
    if figures:
        payload["figures"] = _figures(module, config, seeds, summary, out_dir, log)
    write_json(path, payload)
    log(module.table(summary))
    for line in fit_warning_lines(seeds):
        log(line)
    log(f"results written to {path}")
    return payload


def _without_seeds(config: dict) -> dict:
    """A configuration minus its seed count: more (or fewer) seeds of the same run still resume from the saved ones."""
    return {k: v for k, v in config.items() if k != "seeds"}


#: Warnings about the fits themselves, recorded in each seed's ``fit_warnings`` rather than printed.
FIT_WARNINGS = ("ConvergenceWarning", "DivergenceWarning")


def _run_one(module_name: str, config: dict, seed: int, progress: bool) -> dict:
    """One seed's numbers with its wall time (also the worker-process entry point).

    A fit that did not converge or diverged warns (:class:`avicore.optim.ConvergenceWarning`,
    :class:`~avicore.optim.DivergenceWarning`); those warnings are kept, in order, in the seed's ``fit_warnings``
    (category and message), so results.json says which fits are not at their optimum. Other warnings pass through.
    """
    module = _import(module_name)
    t_seed = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = module.run_seed(config, seed, progress)
    kept = []
    for w in caught:
        if w.category.__name__ in FIT_WARNINGS:
            kept.append({"category": w.category.__name__, "message": str(w.message)})
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return {"seed": seed, "seconds": time.perf_counter() - t_seed, **result, "fit_warnings": kept}


def fit_warning_lines(seeds: list[dict]) -> list[str]:
    """One line per seed whose fits warned: how many did not converge / diverged (for the printed table)."""
    lines = []
    for s in seeds:
        counts = {c: sum(w["category"] == c for w in s.get("fit_warnings", [])) for c in FIT_WARNINGS}
        if any(counts.values()):
            lines.append(f"seed {s['seed']}: {counts['ConvergenceWarning']} fit warning(s) of non-convergence, "
                         f"{counts['DivergenceWarning']} of divergence (messages in results.json, 'fit_warnings')")
    return lines


def _init_worker(threads: int) -> None:
    import os

    from .. import _config

    os.environ["AVICORE_NUM_THREADS"] = str(threads)
    _config.set_num_threads(threads)


def _run_parallel(module_name: str, config: dict, seeds: list[int], jobs: int, keep: Callable[[dict], None],
                  log: Callable[[str], None]) -> None:
    """Seeds in ``jobs`` spawned processes (fresh interpreters: no forked OpenMP/BLAS thread state)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from .. import _config

    threads = max(1, _config.get_num_threads() // jobs)
    log(f"{len(seeds)} seed(s) in {jobs} processes x {threads} thread(s)")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(_run_one, module_name, config, seed, False) for seed in seeds}
        done_count = 0
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    done_count += 1
                    log(f"seed {result['seed'] + 1} done ({done_count}/{len(seeds)}, {result['seconds']:.1f} s)")
                    keep(result)
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _restore(obj: Any) -> Any:
    """Undo :func:`_jsonable`'s strings for non-finite floats ("nan", "inf", "-inf")."""
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    if isinstance(obj, str) and obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def _figures(module: ModuleType, config: dict, seeds: list[dict], summary: dict, out_dir: Path,
             log: Callable[[str], None]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        log("figures skipped: matplotlib is not installed (pip install 'avicore[plots]'); "
            "the numbers are in results.json")
        return []
    files = module.figures(config, seeds, summary, out_dir)
    return [str(Path(f).name) for f in files]


def _environment() -> dict:
    import numpy as np

    from .. import __version__, _config

    return {"avicore": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "threads": _config.get_num_threads(), "argv": sys.argv}
