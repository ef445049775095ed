#!/usr/bin/env bash
# Full runs of the paper reproductions, results and figures into benchmarks/experiments/NAME/ (what
# benchmarks/README.md shows). Usage: bash benchmarks/run_experiments.sh [NAME ...]   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(linear nonlinear width-vs-n saw random-walk gp dgm discrete-hmm)
fi
for name in "${names[@]}"; do
  echo "=== $name ($(date -u +%H:%M:%S))"
  /usr/bin/time -f "$name: %e s wall" "$PY" -m avicore.experiments "$name" --no-progress --out "benchmarks/experiments/$name"
done
