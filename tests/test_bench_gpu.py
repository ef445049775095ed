"""benchmarks/bench_gpu.py's interface with issue 14's benchmarks/gpu_fit_rows.py, and its report (no timing)."""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(BENCH_DIR)
    return importlib.import_module("bench_gpu")


def _row(**overrides):
    base = {"case": "F-VI step", "avicore_cuda_s": 1e-4, "avicore_cuda_host_io_s": None, "cython_s": 2e-3,
            "peer": "NumPyro", "peer_s": 1.3e-4, "max_abs_diff": 1e-14, "transfer_floor_s": None}
    base.update(overrides)
    return base


def test_fit_rows_are_taken_from_gpu_fit_rows_when_present(bench, monkeypatch):
    calls = []
    fake = types.ModuleType("gpu_fit_rows")
    fake.run_fit_rows = lambda quick, host_threads: calls.append((quick, host_threads)) or [_row()]
    monkeypatch.setitem(sys.modules, "gpu_fit_rows", fake)
    assert bench.fit_rows(True, 16) == [_row()]
    assert calls == [(True, 16)]
    fake.run_fit_rows = lambda quick, host_threads: [{"case": "x"}]
    with pytest.raises(ValueError, match=r"gpu_fit_rows\.run_fit_rows returned a row without"):
        bench.fit_rows(False, 1)


def test_missing_gpu_fit_rows_is_a_printed_note(bench, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpu_fit_rows", None)  # the import fails as for an absent file
    assert bench.fit_rows(True, 2) == []
    assert "gpu_fit_rows.py is absent" in capsys.readouterr().out


def test_report_prints_ratios_and_missing_peers(bench, capsys):
    bench.print_report([_row(), _row(case="Viterbi", peer=None, peer_s=None, avicore_cuda_host_io_s=0.5)])
    out = capsys.readouterr().out
    assert "20.00x" in out  # cython / cuda
    assert "1.30x" in out  # peer / cuda
    assert "peer of 'F-VI step': NumPyro" in out
    assert "agreement cuda vs cython (max |diff| <= 1e-06): all rows" in out
    bench.print_report([_row(max_abs_diff=float("nan"))])
    assert "FAILED for ['F-VI step']" in capsys.readouterr().out
    assert set(bench.ROW_KEYS) == set(_row())
