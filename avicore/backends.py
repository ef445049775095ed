"""Which kernel backends can run here, how ``backend="auto"`` is resolved, and :func:`show_config`.

Backends
--------
``"numpy"``   plain NumPy/SciPy reference, always available.
``"cython"``  ahead-of-time compiled kernels (``avicore._cy``), OpenMP-parallel when built with it.
``"numba"``   ``@njit`` CPU kernels, compiled lazily on first call and cached on disk.
``"cuda"``    numba-cuda kernels: a real NVIDIA GPU, or the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

Probing imports Numba, so it happens on first use, never at ``import avicore``.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
from dataclasses import dataclass

from . import _config

BACKENDS: tuple[str, ...] = ("numpy", "cython", "numba", "cuda")
_HOW_TO_GET = {
    "cython": "Build avicore from source: pip install -e . (needs a C compiler)",
    "numba": "Install numba: pip install numba",
    "cuda": "Install avicore[cuda] on a machine with an NVIDIA GPU and driver, "
    "or set NUMBA_ENABLE_CUDASIM=1 to run the CUDA kernels in the (slow) simulator",
}


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here.

    Attributes
    ----------
    name : str
        Backend name.
    available : bool
        True if kernels of this backend can run in this process.
    detail : str
        Version/what it runs on when available, else why not.
    """

    name: str
    available: bool
    detail: str


def _cuda_simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in {"", "0"}


@functools.cache
def _probe(name: str) -> BackendStatus:
    if name == "numpy":
        import numpy as np

        return BackendStatus(name, True, f"numpy {np.__version__}")
    if name == "cython":
        try:
            info = importlib.import_module("avicore._cy._build_info")
        except ImportError as exc:
            return BackendStatus(name, False, f"compiled kernels not built ({exc})")
        omp = "OpenMP" if info.OPENMP else "no OpenMP (serial)"
        return BackendStatus(name, True, f"built with Cython {info.CYTHON_VERSION}, {omp}")
    if name == "numba":
        try:
            import numba
        except ImportError as exc:
            return BackendStatus(name, False, f"numba not importable ({exc})")
        return BackendStatus(name, True, f"numba {numba.__version__}, threading layer {_numba_threading_layer()}, "
                             f"pool of {numba.config.NUMBA_NUM_THREADS} threads")
    if name == "cuda":
        return _probe_cuda()
    raise ValueError(f"backend must be one of {BACKENDS}; got {name!r}.")


def _probe_cuda() -> BackendStatus:
    """numba-cuda importable, a device (or the simulator), and a one-thread kernel that compiles, launches and
    writes the expected value (:func:`avicore._device.probe_launch`); any failure makes cuda unavailable, with
    the exception and its fix in ``detail``."""
    from . import _device

    try:
        nc = _device.cuda()
    except ImportError as exc:
        return BackendStatus("cuda", False, f"numba.cuda not importable ({exc})")
    if _cuda_simulator_enabled():
        where = "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    else:
        try:
            if not nc.is_available():
                return BackendStatus("cuda", False, "no CUDA driver or GPU found")
            dev = nc.get_current_device()
            gpu = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        except Exception as exc:  # driver errors come in many types
            return BackendStatus("cuda", False, f"no usable CUDA device ({type(exc).__name__}: {exc})")
        where = f"GPU {gpu}"
    try:
        _device.probe_launch()
    except Exception as exc:  # compile, link or launch: all mean the kernels cannot run here
        return BackendStatus("cuda", False, f"{where} found, but a one-thread probe kernel failed "
                             f"({type(exc).__name__}: {exc}); fix: {_device.probe_fix(exc)}")
    return BackendStatus("cuda", True, f"{where}, probe kernel ran")


def available() -> dict[str, BackendStatus]:
    """Report, for each backend, whether it can run here and why not.

    Returns
    -------
    dict of str to BackendStatus
        Keyed by backend name, in the order numpy, cython, numba, cuda.

    Examples
    --------
    >>> from avicore import backends
    >>> backends.available()["numpy"].available
    True
    """
    return {name: _probe(name) for name in BACKENDS}


def cuda_is_real_gpu() -> bool:
    """True when the cuda backend runs on a real GPU (not the simulator)."""
    status = _probe("cuda")
    return status.available and not _cuda_simulator_enabled()


def resolve(backend: str = "auto", *, size: int | None = None,
            supported: tuple[str, ...] = BACKENDS) -> str:
    """Turn a ``backend=`` argument into the name of a backend that can run here.

    Parameters
    ----------
    backend : {"auto", "numpy", "cython", "numba", "cuda"}
        The requested backend.
    size : int, optional
        Number of independent work items (e.g. time steps x states). ``"auto"`` picks ``"cuda"`` only on a
        real GPU and when ``size >= avicore._config.CUDA_AUTO_MIN_SIZE``.
    supported : tuple of str
        The backends the calling kernel family implements.

    Returns
    -------
    str
        ``"auto"``: cuda (real GPU, large problem), else cython, else numba, else numpy.

    Raises
    ------
    ValueError
        If ``backend`` is not a known name.
    RuntimeError
        If the requested backend is unavailable here (the message says how to get it).
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {('auto', *BACKENDS)}; got {type(backend).__name__}.")
    if backend == "auto":
        if ("cuda" in supported and size is not None and size >= _config.CUDA_AUTO_MIN_SIZE
                and cuda_is_real_gpu()):
            return "cuda"
        for name in ("cython", "numba", "numpy"):
            if name in supported and _probe(name).available:
                return name
        raise RuntimeError("no backend is available for this kernel")  # numpy always is; defensive
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {('auto', *BACKENDS)}; got {backend!r}.")
    if backend not in supported:
        raise ValueError(f"backend={backend!r} is not implemented for this function; choose one of "
                         f"{('auto', *supported)}.")
    status = _probe(backend)
    if not status.available:
        raise RuntimeError(f"backend={backend!r} is unavailable: {status.detail}. {_HOW_TO_GET[backend]}, "
                           f"or use backend='auto'.")
    return backend


def _numba_threading_layer() -> str:
    """The threading layer Numba uses ('omp', 'tbb', 'workqueue'), or the one it will choose at its first parallel
    kernel (its default order tbb, omp, workqueue, among those that import here)."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # not chosen yet: no parallel kernel has run in this process
        pass
    requested = str(numba.config.THREADING_LAYER)
    if requested in ("tbb", "omp", "workqueue"):
        return f"{requested!r} (requested)"
    for layer in ("tbb", "omp", "workqueue"):
        try:
            importlib.import_module(f"numba.np.ufunc.{layer}pool" if layer != "workqueue"
                                    else "numba.np.ufunc.workqueue")
        except ImportError:
            continue
        return f"{layer!r} (to be chosen at the first parallel kernel)"
    return "none available"


def show_config() -> None:
    """Print versions, the build, CPU threads and backend availability.

    Examples
    --------
    >>> import avicore
    >>> avicore.show_config()  # doctest: +ELLIPSIS
    avicore ...
    """
    import numpy as np
    import scipy

    from . import __version__

    lines = [f"avicore {__version__}", f"python {platform.python_version()} ({platform.machine()})",
             f"numpy {np.__version__}", f"scipy {scipy.__version__}"]
    try:
        import numba

        lines.append(f"numba {numba.__version__}")
    except ImportError:
        lines.append("numba (not installed)")
    try:
        info = importlib.import_module("avicore._cy._build_info")
        lines.append(f"Cython build: Cython {info.CYTHON_VERSION}, OpenMP {'on' if info.OPENMP else 'off'}, "
                     f"flags {info.COMPILE_FLAGS!r}")
    except ImportError:
        lines.append("Cython build: not built")
    lines.append(f"CPU threads (avicore.set_num_threads / AVICORE_NUM_THREADS): {_config.get_num_threads()} of "
                 f"{_config.available_cpus()} CPU(s) available")
    cuda = _probe("cuda")
    kind = ("simulator" if _cuda_simulator_enabled() else "real GPU") if cuda.available else "none"
    lines.append(f"CUDA: {kind}")
    lines.append("")
    lines.append(f"{'backend':<8} {'available':<10} detail")
    for name, status in available().items():
        lines.append(f"{name:<8} {'yes' if status.available else 'no':<10} {status.detail}")
    print("\n".join(lines))
