"""The Cython kernels build and pass their tests without OpenMP too (``AVICORE_NO_OPENMP=1``).

The serial build goes to a temporary copy of the package and its tests; the kernel tests then run in a subprocess
from that copy, which imports it first, so the installed OpenMP build is untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import avicore

ROOT = Path(avicore.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def serial_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "setup.py").exists():
        pytest.fail(f"the source tree (setup.py) is needed to test the serial build; not found under {ROOT}")
    out = tmp_path_factory.mktemp("serial_build")
    skip = shutil.ignore_patterns("*.so", "__pycache__")
    shutil.copytree(ROOT / "avicore", out / "avicore", ignore=skip)
    # The tests travel with it so that pytest's rootdir (put first on sys.path) is the serial copy.
    shutil.copytree(ROOT / "tests", out / "tests", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", out / "pyproject.toml")
    env = {**os.environ, "AVICORE_NO_OPENMP": "1"}
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
                           "--build-temp", str(out / "tmp")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OpenMP disabled by AVICORE_NO_OPENMP" in proc.stdout + proc.stderr
    return out


def _env(build: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(build) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_serial_build_reports_no_openmp(serial_build: Path):
    code = ("import avicore, avicore._cy._build_info as b; "
            "print(avicore.__file__); print(b.OPENMP); print(b.openmp_max_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=serial_build, env=_env(serial_build),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0].startswith(str(serial_build)), "the serial copy must be the one imported"
    assert out[1:] == ["False", "1"]


def test_serial_build_passes_the_cython_kernel_tests(serial_build: Path):
    kernel_tests = serial_build / "tests" / "kernels"
    if not kernel_tests.is_dir():
        pytest.fail(f"kernel tests not found under {kernel_tests}")
    proc = subprocess.run([sys.executable, "-m", "pytest", str(kernel_tests), "-x", "-k", "cython",
                           "-p", "no:cacheprovider"], cwd=serial_build, env=_env(serial_build), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"avicore from {serial_build}" in proc.stdout and "(compiled kernels: OpenMP off)" in proc.stdout
    assert " passed" in proc.stdout
