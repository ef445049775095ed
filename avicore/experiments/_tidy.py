"""An experiment's ``results.json`` as a tidy table: one row per seed × method (× sub-case).

The ``results.json`` schema (written by :func:`avicore.experiments.run`, one file per output folder):

``experiment`` (str), ``description`` (str), ``quick`` (bool), ``config`` (the configuration in force, a dict),
``seeds`` (a list: one dict per finished seed), ``summary`` (aggregates and findings, or null until every seed is
done), ``figures`` (file names), ``environment`` (versions, threads, command line), ``complete`` (bool) and
``seconds_total``. Non-finite numbers are stored as the strings ``"nan"``, ``"inf"`` and ``"-inf"``.

Each seed dict holds ``seed``, ``seconds`` and the experiment's numbers. Wherever a dict has a ``methods`` entry, it
maps a method name (``"F-VI"``, ``"MLP(16)"``, ``"Polynomial(1) w=(0, 1)"``…) to that fit's numbers; the dicts
around it give its context — a dict of sub-cases keyed by name (the gp experiment's ``likelihoods``) or a list of
them (width-vs-n's ``per_n``), and seed-level scalars such as ``log_evidence`` or ``optimum_elbo``. :func:`load`
turns every method entry into one row: the experiment, the seed, the context (scalars of the enclosing dicts; a
sub-case key as a column named for its container in the singular, e.g. ``likelihood``), ``method``, and the fit's
scalar numbers. Lists (traces) are left out unless ``traces=True``; nested dicts are flattened with ``.`` joins.
Where a fit's number and a context scalar share a name, the fit keeps the name and the context column is prefixed
with its level (``seed.seconds``: the seed's wall time, beside the fit's own ``seconds``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ._runner import RESULTS_FILE, _restore


def load(path: str | os.PathLike[str], *, as_frame: bool | None = None, traces: bool = False) -> Any:
    """Read an experiment's ``results.json`` as a tidy table, one row per seed × method.

    Parameters
    ----------
    path : str or path-like
        The ``results.json`` file, or the output folder that holds it.
    as_frame : bool, optional
        True: a :class:`pandas.DataFrame` (pandas must be installed); False: a list of dicts; None (default): a
        DataFrame when pandas is importable, else the list.
    traces : bool
        Keep list-valued entries (ELBO traces, per-epoch MSE) as list cells.

    Returns
    -------
    list of dict or pandas.DataFrame
        Columns ``experiment``, ``seed``, the context columns, ``method`` and the fit's numbers; non-finite values
        as floats (``nan``, ``inf``). The module docstring documents the schema of ``results.json``.

    Raises
    ------
    FileNotFoundError
        If there is no results file at ``path``.
    ValueError
        If the file is not an avicore experiment's results (no ``experiment``/``seeds`` entries).
    ImportError
        With ``as_frame=True`` when pandas is not installed.

    Examples
    --------
    >>> import json, os, tempfile
    >>> from avicore.experiments import load
    >>> out = tempfile.mkdtemp()
    >>> seed0 = {"seed": 0, "seconds": 1.5, "log_evidence": -10.0,
    ...          "methods": {"F-VI": {"elbo": -10.5}, "Constant": {"elbo": -12.0, "gap": 1.5}}}
    >>> with open(os.path.join(out, "results.json"), "w") as fh:
    ...     json.dump({"experiment": "linear", "config": {}, "seeds": [seed0]}, fh)
    >>> [(r["seed"], r["method"], r["elbo"], r["log_evidence"]) for r in load(out, as_frame=False)]
    [(0, 'F-VI', -10.5, -10.0), (0, 'Constant', -12.0, -10.0)]
    """
    file = Path(path)
    if file.is_dir():
        file = file / RESULTS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"path must be an experiment's {RESULTS_FILE} or the folder holding it; "
                                f"found no {file}.")
    try:
        payload = json.loads(file.read_text())
    except ValueError as exc:
        raise ValueError(f"path {str(file)!r} is not valid JSON ({exc}).") from exc
    if not isinstance(payload, dict) or "experiment" not in payload or not isinstance(payload.get("seeds"), list):
        raise ValueError(f"path {str(file)!r} is not an avicore experiment's {RESULTS_FILE} (it needs 'experiment' "
                         f"and 'seeds' entries).")
    rows: list[dict] = []
    for seed in payload["seeds"]:
        base = {"experiment": (payload["experiment"], "run"), "seed": (seed.get("seed"), "seed")}
        _collect(_restore(seed), base, rows, traces)
    if as_frame is False:
        return rows
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise ImportError("as_frame=True needs pandas: pip install pandas (or pass as_frame=False for a list "
                              "of dicts).") from None
        return rows
    return pd.DataFrame(rows)


def _collect(node: dict, context: dict, rows: list[dict], traces: bool, level: str = "seed") -> None:
    """Rows for every ``methods`` mapping below ``node``, with the scalars met on the way as context.

    ``context`` maps a column to (value, level): a fit number of the same name keeps the plain column, and the
    context value moves to ``"<level>.<name>"`` (e.g. a seed's wall time ``seed.seconds`` beside a fit's
    ``seconds``)."""
    here = dict(context)
    for key, value in node.items():
        if key != "methods" and _is_scalar(value):  # a sub-case's own value shadows an outer one
            here[key] = (value, level)
    methods = node.get("methods")
    if isinstance(methods, dict):
        for name, numbers in methods.items():
            fit = _flatten(numbers, "", traces) if isinstance(numbers, dict) else {}
            row = {}
            for key, (value, where) in here.items():
                row[f"{where}.{key}" if key in fit else key] = value
            rows.append({**row, "method": name, **fit})
    for key, value in node.items():
        if key == "methods":
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                _collect(item, here, rows, traces, key)
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            if any(_has_methods(v) for v in value.values()):
                column = key[:-1] if key.endswith("s") else key
                for name, item in value.items():
                    _collect(item, {**here, column: (name, column)}, rows, traces, column)


def _has_methods(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    return "methods" in node or any(_has_methods(v) for v in node.values() if isinstance(v, dict))


def _flatten(numbers: dict, prefix: str, traces: bool) -> dict:
    out: dict[str, Any] = {}
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if _is_scalar(value):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{name}.", traces))
        elif traces:
            out[name] = value
    return out


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
