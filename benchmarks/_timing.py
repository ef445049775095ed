"""Shared timing helper for avicore's benchmarks.

Every benchmark times avicore and its anchor (a peer library or a baseline) in the same run and prints the ratio;
nothing here asserts a speed. Use :func:`measure` for one callable and :func:`print_table` for the report.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Wall-clock timings of one callable, in seconds.

    Attributes
    ----------
    label : str
        What was timed.
    times : tuple of float
        One entry per measured repeat (after warm-up).
    """

    label: str
    times: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(label: str, fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1,
            max_seconds: float | None = None) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` untimed calls (JIT compilation, caches).

    ``max_seconds`` stops repeating early once that much time was spent (at least one repeat is always kept).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if max_seconds is not None and spent >= max_seconds:
            break
    return Timing(label, tuple(times))


def ratio(anchor: Timing, candidate: Timing) -> float:
    """How many times faster ``candidate`` is than ``anchor`` (ratio of minimum times)."""
    return anchor.min / candidate.min


def format_seconds(t: float) -> str:
    if t >= 1.0:
        return f"{t:.3f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} us"


def print_table(title: str, rows: Sequence[tuple[str, Timing, Timing | None]], *, goal: str = "") -> None:
    """Print one table: each row is (case, candidate timing, anchor timing or None).

    The speed-up column is ``anchor.min / candidate.min`` (> 1 means the candidate is faster).
    """
    print(f"\n## {title}" + (f"  (goal: {goal})" if goal else ""))
    head = (f"| {'case':<44} | {'candidate':<28} | {'min':>10} | {'median':>10} | {'anchor':<28} "
            f"| {'anchor min':>10} | {'speed-up':>8} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for case, cand, anchor in rows:
        a_label = anchor.label if anchor else "-"
        a_min = format_seconds(anchor.min) if anchor else "-"
        speed = f"{ratio(anchor, cand):.2f}x" if anchor else "-"
        print(f"| {case:<44} | {cand.label:<28} | {format_seconds(cand.min):>10} | {format_seconds(cand.median):>10} "
              f"| {a_label:<28} | {a_min:>10} | {speed:>8} |")
    sys.stdout.flush()


def machine_line() -> str:
    """One line describing where the numbers were measured."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.processor() or platform.machine()}, {cpus} CPUs, Python {platform.python_version()}"


def base_parser(description: str) -> argparse.ArgumentParser:
    """Argument parser with the options every benchmark shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the script runs, not the goals")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (min and median reported)")
    return parser
