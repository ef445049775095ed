"""One table and figure for the width-vs-n runs at every size (issue 15's scale run).

The default run covers N = 10²–10⁵; the scale runs add N = 10⁶ and 10⁷ on a local Dask cluster
(``python -m avicore.experiments width-vs-n --dask local --n-obs 1000000 ...``, see benchmarks/README.md). This
script merges their ``results.json`` files (:func:`avicore.experiments.width_vs_n.merge_runs`), prints the table and
writes ``width_vs_n.png`` into ``--out``::

    python benchmarks/width_vs_n_scale.py benchmarks/experiments/width-vs-n benchmarks/experiments/width-vs-n-1e6 \\
        benchmarks/experiments/width-vs-n-1e7 --out benchmarks/experiments/width-vs-n-scale
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from avicore.experiments import width_vs_n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="width-vs-n output folders (each with results.json)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged figure and table")
    args = parser.parse_args(argv)
    runs = []
    for folder in args.runs:
        payload = json.loads((folder / "results.json").read_text())
        if payload.get("experiment") != "width-vs-n" or not payload.get("complete"):
            parser.error(f"{folder} does not hold a complete width-vs-n run")
        runs.append(payload)
    config, seeds, summary = width_vs_n.merge_runs(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    width_vs_n.figures(config, seeds, summary, args.out)
    text = width_vs_n.table(summary)
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
