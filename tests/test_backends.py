"""Backend registry: availability report, "auto" resolution, clear errors for unknown or missing backends."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import pytest

import avicore
from avicore import _config, backends


def test_available_reports_every_backend_with_a_reason():
    status = backends.available()
    assert list(status) == ["numpy", "cython", "numba", "cuda"]
    assert status["numpy"].available
    for s in status.values():
        assert isinstance(s.detail, str) and s.detail


def test_test_environment_has_every_backend():
    # CI installs the test extra and the conftest enables the CUDA simulator: all four must run.
    assert all(s.available for s in backends.available().values()), backends.available()


def test_auto_prefers_cython_on_cpu():
    assert backends.resolve("auto") == "cython"
    assert backends.resolve("auto", supported=("numpy", "numba")) == "numba"
    assert backends.resolve("auto", supported=("numpy",)) == "numpy"


def test_auto_never_picks_the_simulator():
    # Under NUMBA_ENABLE_CUDASIM the cuda backend is available but must not be chosen automatically.
    assert backends.resolve("auto", size=10**9) != "cuda"


def test_explicit_names_resolve_to_themselves():
    for name in backends.BACKENDS:
        assert backends.resolve(name) == name


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'numpy', 'cython', 'numba', 'cuda'\); "
                                         r"got 'gpu'"):
        backends.resolve("gpu")
    with pytest.raises(TypeError, match="backend must be a str"):
        backends.resolve(3)


def test_unsupported_backend_for_a_family():
    with pytest.raises(ValueError, match=r"backend='cuda' is not implemented for this function"):
        backends.resolve("cuda", supported=("numpy", "numba"))


def test_unavailable_backend_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(backends, "_probe", lambda name: backends.BackendStatus(name, False, "no CUDA driver found"))
    with pytest.raises(RuntimeError, match=r"backend='cuda' is unavailable: no CUDA driver found\. Install "
                                           r"avicore\[cuda\].*or use backend='auto'"):
        backends.resolve("cuda")


def test_show_config_prints_table(capsys):
    avicore.show_config()
    out = capsys.readouterr().out
    for needle in ("avicore", "numpy", "scipy", "numba", "Cython build", "OpenMP", "CPU threads", "CUDA:",
                   "backend", "cython"):
        assert needle in out
    # The threading layer and the pool size are two things, named separately (the layer is omp/tbb/workqueue).
    numba_line = next(line for line in out.splitlines() if line.startswith("numba ") and "threading" in line)
    assert re.search(r"threading layer '?(omp|tbb|workqueue)'?.*, pool of \d+ threads", numba_line), numba_line
    assert f"of {_config.available_cpus()} CPU(s) available" in out


def test_set_num_threads_round_trip_and_validation():
    old = _config.get_num_threads()
    try:
        avicore.set_num_threads(1)
        assert avicore.get_num_threads() == 1
        import numba

        assert _config.apply_numba_threads() == 1
        assert numba.get_num_threads() == 1
    finally:
        avicore.set_num_threads(old)
        _config.apply_numba_threads()
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            avicore.set_num_threads(bad)


def test_num_threads_env_variable():
    code = "import avicore; print(avicore.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), "AVICORE_NUM_THREADS": "1"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
    bad = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), "AVICORE_NUM_THREADS": "zero"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "AVICORE_NUM_THREADS must be a positive integer; got 'zero'" in bad.stderr


def test_a_thread_count_above_the_cpus_warns_once():
    too_many = _config.available_cpus() + 62
    code = "import avicore; avicore.get_num_threads(); avicore.get_num_threads(); print('ran')"
    out = subprocess.run([sys.executable, "-c", code], env={**_clean_env(), "AVICORE_NUM_THREADS": str(too_many)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ran"
    assert out.stderr.count(f"AVICORE_NUM_THREADS={too_many} asks for {too_many} threads but this process may use "
                            f"{_config.available_cpus()} CPU(s)") == 1
    old = _config.get_num_threads()
    try:
        with pytest.warns(RuntimeWarning, match=f"set_num_threads\\({too_many + 1}\\) asks for {too_many + 1} "
                                                f"threads"):
            avicore.set_num_threads(too_many + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            avicore.set_num_threads(too_many + 1)  # once per count
    finally:
        avicore.set_num_threads(old)


def test_import_is_fast_and_lazy():
    code = ("import sys, time; t = time.perf_counter(); import avicore; dt = time.perf_counter() - t; "
            "print(dt, 'numba' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True,
                         check=True).stdout.split()
    assert float(out[0]) < 1.0
    assert out[1] == "False", "import avicore must not import numba"


def test_lazy_attributes():
    assert avicore.backends is backends
    with pytest.raises(AttributeError, match="module 'avicore' has no attribute 'nope'"):
        avicore.nope


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "AVICORE_NUM_THREADS"}
