"""GPU plumbing shared by every CUDA kernel family: device-array detection, the array kind returned, a cached
device workspace, reused pinned staging buffers, the numpy ≥ 2.5 compatibility alias and the availability probe.

Importing this module imports no Numba; :func:`cuda` loads numba-cuda on first use (after
:func:`ensure_numpy_compat`).

Arrays
------
A *device array* is anything exposing ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, Numba device
arrays), a DLPack array on a CUDA device (JAX; converted through CuPy), or, under ``NUMBA_ENABLE_CUDASIM=1``, the
simulator's Numba device arrays. Public functions given device arrays compute on the GPU and return device arrays
of one kind: **CuPy arrays when CuPy is importable, else Numba device arrays** (:func:`output_kind`); both expose
``__cuda_array_interface__``, so PyTorch (``torch.as_tensor(x, device="cuda")``) and CuPy take them without a
copy.

Buffers
-------
Host arrays with ``backend="cuda"`` go through two caches kept per thread, so a call makes no ``cudaMalloc`` and
no pinned allocation once the sizes have been seen:

- :class:`DeviceWorkspace`: named device buffers that grow (×1.5) and are reused; a kernel's scratch arrays and
  the device copies of host inputs/outputs are views of them. They are overwritten by the next call: never hand one
  to the user.
- :class:`PinnedStaging`: two fixed-size page-locked host buffers; copies in both directions go through them in
  chunks (pinned copies run at the full PCIe rate, pageable ones at a fraction of it), so pinned memory stays
  bounded whatever the array size.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from typing import Any

import numpy as np

#: DLPack device types that live in GPU memory (kDLCUDA, kDLCUDAManaged).
_DLPACK_CUDA = (2, 13)
#: Size of each of the two pinned staging buffers.
STAGING_BYTES = 32 * 2**20

_FIX_ROW_STACK = ("numba-cuda reads numpy.row_stack, which numpy 2.5 removed; avicore aliases it to numpy.vstack "
                  "before numba-cuda loads — import avicore before compiling CUDA kernels of your own, or pin "
                  "numpy<2.5")


def simulator_enabled() -> bool:
    """True when Numba's CUDA simulator is switched on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0").strip() not in {"", "0"}


def ensure_numpy_compat() -> None:
    """Alias ``numpy.row_stack`` to ``numpy.vstack`` where numpy (≥ 2.5) no longer has it.

    numba-cuda 0.30.4 registers an overload of ``np.row_stack`` when its array module loads (at the first CUDA
    kernel compile) and fails with ``AttributeError`` on numpy 2.5. The alias is the function numpy deprecated
    ``row_stack`` in favour of (they were identical), is set only when the name is missing, and changes nothing on
    older numpy.
    """
    if not hasattr(np, "row_stack"):
        setattr(np, "row_stack", np.vstack)  # noqa: B010  (a literal attribute would trip NPY201)


_nc: Any = None  # numba.cuda once loaded: a module global, which the simulator swaps while a kernel here runs


def cuda() -> Any:
    """``numba.cuda``, imported after :func:`ensure_numpy_compat`."""
    global _nc
    if _nc is None:
        ensure_numpy_compat()
        from numba import cuda as numba_cuda

        _nc = numba_cuda
    return _nc


# ---------------------------------------------------------------------------------------------------------------
# Availability probe
# ---------------------------------------------------------------------------------------------------------------

@functools.cache
def _probe_kernel() -> Any:
    nc = cuda()

    @nc.jit
    def _one_thread(out):
        out[0] = out[0] * 2.0 + 1.0

    return _one_thread


def probe_launch() -> None:
    """Compile and launch a one-thread kernel and check what it wrote; raises whatever fails on the way.

    ``numba.cuda.is_available()`` only finds a driver and a device: a toolkit, NVVM or numpy incompatibility
    shows up at the first compile, and a driver/device mismatch at the first launch.
    """
    nc = cuda()
    d_out = nc.to_device(np.array([20.0]))
    _probe_kernel()[1, 1](d_out)
    got = float(d_out.copy_to_host()[0])
    if got != 41.0:
        raise RuntimeError(f"the probe kernel wrote {got!r} instead of 41.0")


def probe_fix(exc: BaseException) -> str:
    """How to fix a failed probe, from its exception."""
    text = f"{type(exc).__name__}: {exc}"
    if "row_stack" in text:
        return _FIX_ROW_STACK
    if "NVVM" in text or "libdevice" in text or "nvrtc" in text.lower():
        return "install the CUDA toolkit libraries numba-cuda needs (pip install avicore[cuda])"
    return ("check that the NVIDIA driver supports the installed numba-cuda (pip install avicore[cuda]; "
            "python -c 'from numba import cuda; cuda.detect()')")


# ---------------------------------------------------------------------------------------------------------------
# Device arrays: detection, conversion, output kind
# ---------------------------------------------------------------------------------------------------------------

def _is_simulator_array(x: object) -> bool:
    return type(x).__module__.startswith("numba.cuda.simulator")


def is_device_array(x: object) -> bool:
    """True if ``x`` lives in GPU memory (``__cuda_array_interface__``, CUDA DLPack, or a simulator array)."""
    if x is None or isinstance(x, (np.ndarray, np.generic, list, tuple, int, float, str, bytes)):
        return False
    if _is_simulator_array(x):
        return hasattr(x, "copy_to_host")
    try:
        if hasattr(x, "__cuda_array_interface__"):
            return True
    except Exception:  # a property that raises: not a device array we can use
        return False
    dl_device = getattr(x, "__dlpack_device__", None)
    if callable(dl_device):
        try:
            return int(dl_device()[0]) in _DLPACK_CUDA
        except Exception:
            return False
    return False


def any_device(*arrays: object) -> bool:
    """True if any argument is a device array."""
    return any(is_device_array(a) for a in arrays)


@functools.cache
def _cupy() -> Any:
    if simulator_enabled():
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def output_kind() -> str:
    """The kind of device array public functions return: ``"cupy"`` when CuPy is importable, else ``"numba"``."""
    return "cupy" if _cupy() is not None else "numba"


def as_numba(x: object, name: str) -> Any:
    """A Numba device-array view of the device array ``x`` (no copy).

    Raises
    ------
    TypeError
        If ``x`` is a DLPack GPU array and CuPy (needed to read DLPack) is not installed.
    """
    nc = cuda()
    if _is_simulator_array(x):
        return x
    try:
        has_cai = hasattr(x, "__cuda_array_interface__")
    except Exception:  # e.g. a sharded JAX array: fall through to DLPack
        has_cai = False
    if has_cai:
        return nc.as_cuda_array(x)
    cp = _cupy()
    if cp is None:
        raise TypeError(f"{name} is a DLPack GPU array ({type(x).__name__}) without __cuda_array_interface__; "
                        "install CuPy (avicore[cuda]) to pass it, or pass a CuPy/PyTorch/Numba device array.")
    return nc.as_cuda_array(cp.from_dlpack(x))


def to_host(x: object, name: str) -> np.ndarray:
    """A host copy of a (small) device array, e.g. model parameters."""
    return np.asarray(as_numba(x, name).copy_to_host())


def new_array(shape: tuple[int, ...], dtype: object = np.float64) -> tuple[Any, Any]:
    """A fresh device array for the user: ``(returned object, Numba view for the kernels)``.

    CuPy arrays come from CuPy's memory pool (no ``cudaMalloc`` once the pool holds the size).
    """
    cp = _cupy()
    nc = cuda()
    if cp is not None:
        arr = cp.empty(shape, dtype=dtype)
        return arr, nc.as_cuda_array(arr)
    arr = nc.device_array(shape, dtype=dtype)
    return arr, arr


# ---------------------------------------------------------------------------------------------------------------
# Workspace and staging
# ---------------------------------------------------------------------------------------------------------------

class DeviceWorkspace:
    """Named device buffers that grow and are reused across calls (see the module docstring)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, str], Any] = {}

    def get(self, name: str, shape: tuple[int, ...] | int, dtype: object = np.float64) -> Any:
        """A C-contiguous device array of ``shape`` backed by the buffer ``name`` (contents undefined)."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        dt = np.dtype(dtype)
        n = max(1, math.prod(shape))
        key = (name, dt.str)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < n:
            size = n if buf is None else max(n, int(buf.shape[0] * 1.5))
            buf = cuda().device_array(size, dtype=dt)
            self._buffers[key] = buf
        return buf[:math.prod(shape)].reshape(shape)

    def put(self, name: str, host: np.ndarray) -> Any:
        """A device copy of the (small) host array ``host`` in the buffer ``name``."""
        host = np.ascontiguousarray(host)
        dev = self.get(name, host.shape, host.dtype)
        if host.size:
            dev.copy_to_device(host)
        return dev

    @property
    def nbytes(self) -> int:
        """Device bytes held."""
        return sum(int(b.shape[0]) * b.dtype.itemsize for b in self._buffers.values())

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()


#: Host copies into or out of a staging buffer are split over this many threads once a chunk exceeds
#: :data:`PARALLEL_COPY_BYTES` (NumPy releases the GIL while copying): one thread copies ~5-10 GB/s, far below
#: what pinned PCIe transfers reach.
COPY_THREADS = max(1, min(8, os.cpu_count() or 1))
PARALLEL_COPY_BYTES = 4 * 2**20


@functools.cache
def _copy_pool() -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="avicore-staging")


def _copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src`` for 1-D uint8 arrays, over several threads when large."""
    n = dst.size
    if n < PARALLEL_COPY_BYTES or COPY_THREADS == 1:
        dst[:] = src
        return
    step = -(-n // COPY_THREADS)
    parts = [(i, min(n, i + step)) for i in range(0, n, step)]
    list(_copy_pool().map(lambda ab: np.copyto(dst[ab[0]:ab[1]], src[ab[0]:ab[1]]), parts))


class PinnedStaging:
    """Two page-locked host buffers of :data:`STAGING_BYTES` through which host↔device copies go in chunks.

    The copies are pipelined on a stream of their own: while the DMA of one chunk runs, the host fills (or empties)
    the other buffer, so a large transfer runs at about the slower of the PCIe rate and the (multi-threaded) host
    copy.
    """

    def __init__(self) -> None:
        self._buffers: list[np.ndarray] = []
        self._stream: Any = None

    def _buffer(self, i: int) -> np.ndarray:
        while len(self._buffers) <= i:
            self._buffers.append(cuda().pinned_array(STAGING_BYTES, dtype=np.uint8))
        return self._buffers[i]

    def _get_stream(self) -> Any:
        if self._stream is None:
            self._stream = cuda().stream()
        return self._stream

    def upload(self, host: np.ndarray, dev: Any) -> None:
        """Copy the C-contiguous host array into the same-sized C-contiguous device array ``dev``."""
        src = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        if src.size == 0:
            return
        dst = dev.reshape(-1).view(np.uint8)
        stream = self._get_stream()
        done: list[Any] = [None, None]  # the event after the last DMA that read each buffer
        for k, start in enumerate(range(0, src.size, STAGING_BYTES)):
            stop = min(src.size, start + STAGING_BYTES)
            b = k % 2
            if done[b] is not None:
                done[b].synchronize()
            pinned = self._buffer(b)[:stop - start]
            _copy(pinned, src[start:stop])
            dst[start:stop].copy_to_device(pinned, stream=stream)
            done[b] = cuda().event()
            done[b].record(stream)
        stream.synchronize()

    def download(self, dev: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Copy the C-contiguous device array ``dev`` to a new host array (or into ``out``)."""
        if out is None:
            out = np.empty(dev.shape, dtype=dev.dtype)
        dst = out.reshape(-1).view(np.uint8)
        if dst.size == 0:
            return out
        src = dev.reshape(-1).view(np.uint8)
        stream = self._get_stream()
        pending: tuple[int, int, int, Any] | None = None  # (buffer, start, stop, event) still to copy out
        for k, start in enumerate(range(0, dst.size, STAGING_BYTES)):
            stop = min(dst.size, start + STAGING_BYTES)
            b = k % 2
            src[start:stop].copy_to_host(self._buffer(b)[:stop - start], stream=stream)
            event = cuda().event()
            event.record(stream)
            if pending is not None:
                self._drain(dst, pending)
            pending = (b, start, stop, event)
        self._drain(dst, pending)
        return out

    def _drain(self, dst: np.ndarray, pending: tuple[int, int, int, Any]) -> None:
        b, start, stop, event = pending
        event.synchronize()
        _copy(dst[start:stop], self._buffer(b)[:stop - start])

    def clear(self) -> None:
        """Release the pinned buffers."""
        self._buffers.clear()


_local = threading.local()


def workspace() -> DeviceWorkspace:
    """This thread's device workspace."""
    ws = getattr(_local, "workspace", None)
    if ws is None:
        ws = _local.workspace = DeviceWorkspace()
    return ws


def staging() -> PinnedStaging:
    """This thread's pinned staging buffers."""
    st = getattr(_local, "staging", None)
    if st is None:
        st = _local.staging = PinnedStaging()
    return st


def release() -> None:
    """Free this thread's cached device workspace and pinned staging buffers."""
    workspace().clear()
    staging().clear()


#: Blocks a one-dimensional launch should at least have before its blocks are shrunk: two per SM of an H200 (132).
MIN_BLOCKS = 264


def launch_1d(n_threads: int) -> tuple[int, int]:
    """``(blocks, threads per block)`` for one thread per item: ``CUDA_THREADS_PER_BLOCK`` per block, halved (down
    to a warp) while that leaves fewer than :data:`MIN_BLOCKS` blocks, so that a few thousand items (one thread per
    sequence) still spread over every SM instead of filling a few."""
    from . import _config

    tpb = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    while tpb > 32 and -(-n_threads // tpb) < MIN_BLOCKS:
        tpb //= 2
    return max(1, -(-n_threads // tpb)), tpb


def workspace_alloc(name: str, shape: tuple, dtype: object = np.float64) -> tuple[Any, Any]:
    """Output buffers of a host-array call: workspace views ``(view, view)``, copied to the host before the
    next call overwrites them."""
    arr = workspace().get(name, shape, dtype)
    return arr, arr


def user_alloc(name: str, shape: tuple, dtype: object = np.float64) -> tuple[Any, Any]:
    """Output buffers of a device-array call: ``(array of the documented kind, Numba view)``, owned by the
    caller (``name`` is unused: the signature matches :func:`workspace_alloc`)."""
    return new_array(shape, dtype)


def upload(host: np.ndarray, name: str) -> Any:
    """A workspace device copy of the host array ``host`` (through the pinned staging buffers)."""
    host = np.ascontiguousarray(host)
    dev = workspace().get(name, host.shape, host.dtype)
    if host.size:
        staging().upload(host, dev)
    return dev


def download(dev: Any) -> np.ndarray:
    """A new host array holding the device array ``dev`` (through the pinned staging buffers)."""
    return staging().download(dev)


# ---------------------------------------------------------------------------------------------------------------
# Value checks on the device (used by avicore._validate.check_device_array)
# ---------------------------------------------------------------------------------------------------------------

@functools.cache
def _first_violation_kernel() -> Any:
    cuda()

    @_nc.jit
    def _kernel(x, low, high, low_inclusive, allow_neg_inf, integral, out):
        # out[0] = the smallest flat index whose value is NaN, +inf, -inf (unless allowed), below low (or at it
        # when not low_inclusive), above high, or not integral when integral is set; untouched when none is.
        i = _nc.grid(1)
        stride = _nc.gridsize(1)
        n = x.shape[0]
        while i < n:
            v = x[i]
            bad = False
            if v != v or v == math.inf:
                bad = True
            elif v == -math.inf:
                bad = not allow_neg_inf
            elif v < low or v > high or (v == low and not low_inclusive):
                bad = True
            elif integral and math.floor(v) != v:
                bad = True
            if bad:
                _nc.atomic.min(out, 0, i)
            i += stride

    return _kernel


def first_violation(flat: Any, *, low: float = -math.inf, high: float = math.inf, low_inclusive: bool = True,
                    allow_neg_inf: bool = False, integral: bool = False) -> int:
    """Flat index of the first bad value of the 1-D device array ``flat`` (see the kernel), or -1.

    One grid-stride pass on the device; only the index (8 bytes) comes back to the host.
    """
    n = int(flat.shape[0])
    if n == 0:
        return -1
    ws = workspace()
    d_out = ws.put("check.first_violation", np.array([n], dtype=np.int64))
    from . import _config

    threads = max(1, int(_config.CUDA_THREADS_PER_BLOCK))
    blocks = max(1, min(-(-n // threads), 8192))
    _first_violation_kernel()[blocks, threads](flat, float(low), float(high), bool(low_inclusive),
                                               bool(allow_neg_inf), bool(integral), d_out)
    i = int(d_out.copy_to_host()[0])
    return -1 if i >= n else i


def require_cuda(backend: object) -> None:
    """Check ``backend`` for device-array input: ``"auto"`` or ``"cuda"``, and cuda available.

    Raises
    ------
    ValueError
        For any other backend (device arrays are not copied to the host behind the user's back).
    RuntimeError
        If cuda is unavailable here (the message says why and how to fix it).
    """
    from .backends import resolve

    if not isinstance(backend, str) or backend not in ("auto", "cuda"):
        raise ValueError(f"backend must be 'auto' or 'cuda' for GPU (device) array input; got {backend!r}. Copy "
                         "the arrays to the host first (e.g. cupy.asnumpy) to run on a CPU backend.")
    resolve("cuda")


def host_param(x: object, name: str) -> object:
    """A small parameter array given on the device, copied to the host for validation; host input unchanged."""
    return to_host(x, name) if is_device_array(x) else x
