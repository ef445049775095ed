"""The one layer where user arrays and options are checked and converted.

Every public function calls these before any compiled kernel runs, so kernels receive C-contiguous arrays of the
right dtype and shape and never need to check bounds. Messages follow the house format:
``"<argument> must <expectation>; got <what was given>."``
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import numpy as np

FLOAT_DTYPES = (np.float64, np.float32)


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}" if np.ndim(x) == 0 else f"{type(x).__name__}"


def is_dask_array(x: object) -> bool:
    """Whether ``x`` is a dask array (checked without importing dask): such input goes to avicore.distributed."""
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "chunks") and hasattr(x, "dask")


def check_float_dtype(dtype: object, name: str = "dtype") -> np.dtype:
    """Return ``np.dtype(dtype)`` if it is float64 or float32, else raise ``ValueError``."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be numpy.float64 or numpy.float32; got {dtype!r}.") from None
    if dt not in (np.dtype(np.float64), np.dtype(np.float32)):
        raise ValueError(f"{name} must be numpy.float64 or numpy.float32; got {dt}.")
    return dt


def _all_finite_fast(arr: np.ndarray, allow_neg_inf: bool) -> bool:
    """True if ``arr`` has no NaN/+inf (and no -inf unless allowed), by one or two reductions (NaN propagates
    through max); a False sends the caller to the exact element-wise check that locates the culprit."""
    if arr.size == 0:
        return True
    if arr.size >= _THREADED_CHECK_SIZE and arr.flags.c_contiguous:
        return _all_finite_blocks(arr.reshape(-1), allow_neg_inf)
    if not arr.max() < np.inf:
        return False
    return allow_neg_inf or bool(arr.min() > -np.inf)


#: Arrays of at least this many elements are checked in blocks on avicore's threads (a 10⁷-element check is
#: ~2 ms of one core, the serial part of a public call such as ``hmm.forward_backward``).
_THREADED_CHECK_SIZE = 1 << 21
_CHECK_BLOCK = 1 << 19


def _all_finite_blocks(flat: np.ndarray, allow_neg_inf: bool) -> bool:
    """:func:`_all_finite_fast` of a 1-d array by blocks of :data:`_CHECK_BLOCK` elements on avicore's threads
    (NumPy's reductions release the GIL); the answer is a bool, so the thread count cannot change it."""
    from ._threads import row_blocks, run_blocks

    blocks = row_blocks(flat.size, _CHECK_BLOCK)
    ok = np.ones(len(blocks), dtype=bool)

    def run(b: int) -> None:
        part = flat[blocks[b][0]:blocks[b][1]]
        ok[b] = part.max() < np.inf and (allow_neg_inf or part.min() > -np.inf)

    run_blocks(run, len(blocks))
    return bool(ok.all())


def as_float_array(x: object, name: str, *, ndim: int | None = None, shape: Sequence[int | None] | None = None,
                   dtype: object = np.float64, finite: bool = True, allow_neg_inf: bool = False) -> np.ndarray:
    """Convert ``x`` to a C-contiguous float array and check its dimensions and values.

    Parameters
    ----------
    x : array-like
        The user's input.
    name : str
        Argument name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    shape : sequence of int or None, optional
        Required shape; ``None`` entries match any length. Implies ``ndim``.
    dtype : float64 or float32
        Output dtype.
    finite : bool
        Reject NaN and infinities.
    allow_neg_inf : bool
        With ``finite=True``, still accept ``-inf`` (log-probabilities of impossible events). NaN and ``+inf``
        are always rejected when ``finite`` is set.

    Returns
    -------
    numpy.ndarray
        C-contiguous array of ``dtype``.

    Raises
    ------
    TypeError
        If ``x`` is not numeric.
    ValueError
        On wrong dimensions/shape or non-finite values.
    """
    dt = check_float_dtype(dtype)
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array; got {_describe(x)}.")
    try:
        raw = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array; got {type(x).__name__} ({exc}).") from None
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric array; got dtype {raw.dtype}.")
    if np.issubdtype(raw.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real-valued; got dtype {raw.dtype}.")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and raw.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional; got shape {raw.shape}.")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, raw.shape)):
            if want is not None and want != got:
                expected = tuple("any" if s is None else s for s in shape)
                raise ValueError(f"{name} must have shape {expected}; got {raw.shape} (axis {axis}).")
    arr = np.ascontiguousarray(raw, dtype=dt)
    if finite and not _all_finite_fast(arr, allow_neg_inf):
        if allow_neg_inf:
            bad = np.isnan(arr) | (arr == np.inf)
            what = "NaN or +inf"
        else:
            bad = ~np.isfinite(arr)
            what = "NaN or infinite values"
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} must not contain {what}; got {arr[first]} at index {first}.")
    return arr


def check_lengths(lengths: object, n_samples: int, name: str = "lengths") -> np.ndarray:
    """Validate hmmlearn-style sequence ``lengths`` and return ``offsets`` (int64, ``n_sequences + 1``).

    ``None`` means one sequence of length ``n_samples``. Every length must be a positive integer and the
    lengths must sum to ``n_samples``; sequence ``i`` occupies rows ``offsets[i]:offsets[i + 1]``.
    """
    if lengths is None:
        if n_samples < 1:
            raise ValueError(f"the input must hold at least one time step; got n_samples={n_samples}.")
        return np.array([0, n_samples], dtype=np.int64)
    raw = np.asarray(lengths)
    if raw.ndim == 0:
        raw = raw.reshape(1)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be a 1-dimensional sequence of positive integers; got shape {raw.shape}.")
    if raw.size == 0:
        raise ValueError(f"{name} must hold at least one sequence length; got an empty sequence.")
    if not (np.issubdtype(raw.dtype, np.integer) or
            (np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)))):
        raise TypeError(f"{name} must contain integers; got dtype {raw.dtype}.")
    lens = raw.astype(np.int64)
    if (lens < 1).any():
        i = int(np.argmax(lens < 1))
        raise ValueError(f"{name} must be positive integers; got {name}[{i}]={int(lens[i])}.")
    total = int(lens.sum())
    if total != n_samples:
        raise ValueError(f"{name} must sum to n_samples={n_samples}; got sum({name})={total}.")
    offsets = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    return offsets


def _input_eps(x: object) -> float:
    """Machine epsilon of the precision ``x`` arrives in: float32 (or float16) input is checked at its own
    precision; anything else (float64, ints, lists) at float64's."""
    dt = getattr(x, "dtype", None)
    if dt is not None and np.dtype(dt).kind == "f" and np.dtype(dt).itemsize < 8:
        return float(np.finfo(dt).eps)
    return 0.0


def _sum_tolerance(atol: float | None, eps: float, n: int) -> float:
    """``atol`` if given; else 1e-8 for float64 input, and 4·n·eps (a sum of n rounded entries) for float32."""
    if atol is not None:
        return atol
    return max(1e-8, 4.0 * max(n, 1) * eps)


def _check_log_probs(arr: np.ndarray, name: str, eps: float, atol: float | None, vector: bool) -> np.ndarray:
    """Entries ≤ 0 (up to the input's rounding), ``exp`` of each row (or of the vector) summing to 1 within the
    tolerance; input of lower precision is then renormalised in float64 (so its rows sum to 1 to float64's)."""
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one entry; got shape {arr.shape}.")
    high = max(1e-12, 4.0 * eps)
    if (arr > high).any():
        raise ValueError(f"{name} must be log-probabilities (<= 0); got max {float(arr.max())!r}.")
    rows = arr.reshape(1, -1) if vector else arr
    tol = _sum_tolerance(atol, eps, rows.shape[1])
    sums = np.exp(rows.astype(np.float64)).sum(axis=1)
    bad = np.abs(sums - 1.0) > tol
    if bad.any():
        i = int(np.argmax(bad))
        where = "" if vector else "each row of "
        what = f"sum {float(sums[i])!r}" if vector else f"row {i} summing to {float(sums[i])!r}"
        precision = " (float32 input: tolerance scaled to its precision)" if eps and atol is None else ""
        raise ValueError(f"{where}exp({name}) must sum to 1 within {tol:g}{precision}; got {what}.")
    if eps:  # renormalise lower-precision input in float64
        fixed = rows.astype(np.float64) - np.log(sums)[:, None]
        arr = np.ascontiguousarray(fixed.reshape(arr.shape).astype(arr.dtype, copy=False))
    return arr


def check_log_prob_vector(v: object, name: str, *, size: int | None = None, atol: float | None = None,
                          dtype: object = np.float64) -> np.ndarray:
    """A 1-D log-probability vector: finite or ``-inf`` entries, ``exp`` summing to 1 within ``atol``.

    The default tolerance fits the input's precision: 1e-8 for float64, 4·n·ε₃₂ for float32 input, which is then
    renormalised in float64.
    """
    arr = as_float_array(v, name, shape=(size,), dtype=dtype, allow_neg_inf=True)
    return _check_log_probs(arr, name, _input_eps(v), atol, vector=True)


def check_log_stochastic_matrix(m: object, name: str, *, size: int | None = None, atol: float | None = None,
                                dtype: object = np.float64) -> np.ndarray:
    """A square matrix of log-probabilities whose ``exp`` rows each sum to 1 within ``atol`` (default: fitted to
    the input's precision, as :func:`check_log_prob_vector`)."""
    arr = as_float_array(m, name, shape=(size, size), dtype=dtype, allow_neg_inf=True)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one state; got shape {arr.shape}.")
    return _check_log_probs(arr, name, _input_eps(m), atol, vector=False)


def _physical_memory() -> int:
    """Bytes of physical memory (0 when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 0


def check_allocation(n_bytes: int, name: str, what: str) -> None:
    """Refuse, before allocating, an allocation larger than this machine's physical memory.

    ``ValueError`` naming the argument and the size, instead of a ``MemoryError`` half-way through a call (or
    an allocation that swaps the machine to a halt).
    """
    limit = _physical_memory()
    if limit and n_bytes > limit:
        raise ValueError(f"{name} must fit in memory; got {what}, which needs {n_bytes / 2**30:.3g} GiB of "
                         f"{limit / 2**30:.3g} GiB physical memory.")


def check_int(value: object, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not bool) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {_describe(value)}.")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {v}.")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {v}.")
    return v


def check_count(value: object, name: str, bytes_each: int, what: str = "items") -> int:
    """A count >= 1 whose ``bytes_each``-byte items fit in memory (:func:`check_allocation`)."""
    n = check_int(value, name, minimum=1)
    check_allocation(n * bytes_each, name, f"{name}={n} {what}")
    return n


def check_bool(value: object, name: str) -> bool:
    """A bool (Python or NumPy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {_describe(value)}.")
    return bool(value)


def check_scalar(value: object, name: str, *, positive: bool = False, non_negative: bool = False) -> float:
    """A finite real scalar, optionally > 0 or >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {_describe(value)}.")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}.")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0; got {v}.")
    if non_negative and v < 0:
        raise ValueError(f"{name} must be >= 0; got {v}.")
    return v


def check_choice(value: object, name: str, options: Sequence[str]) -> str:
    """One of ``options`` (the message lists them)."""
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}; got {value!r}.")
    return value  # type: ignore[return-value]


def check_random_state(seed: object, name: str = "seed") -> np.random.Generator:
    """``None``, an int or a ``numpy.random.Generator`` -> ``numpy.random.Generator``."""
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        if seed is not None and int(seed) < 0:
            raise ValueError(f"{name} must be a non-negative integer or a numpy.random.Generator; got {seed}.")
        return np.random.default_rng(seed)
    if isinstance(seed, np.random.Generator):
        return seed
    raise TypeError(f"{name} must be None, a non-negative int or a numpy.random.Generator; got {_describe(seed)}.")


def check_seed_int(seed: object, name: str = "seed") -> int:
    """A 63-bit integer seed for counter-based generators: ints pass, a Generator draws one, None draws fresh."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if int(seed) < 0:
            raise ValueError(f"{name} must be a non-negative integer or a numpy.random.Generator; got {seed}.")
        return int(seed) & ((1 << 63) - 1)
    return int(check_random_state(seed, name).integers(0, 2**63 - 1))


def check_spd_matrix(m: object, name: str, *, size: int | None = None, rtol: float = 1e-10) -> np.ndarray:
    """A symmetric positive-definite float64 matrix (a scalar is read as 1x1); returned exactly symmetrised.

    Symmetry is checked to ``rtol`` relative to the largest entry; positive-definiteness by a Cholesky
    factorisation.
    """
    arr = as_float_array(m, name)
    if np.ndim(m) == 0:
        arr = arr.reshape(1, 1)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {arr.shape}.")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} must have shape ({size}, {size}); got {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one entry; got shape {arr.shape}.")
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > rtol * float(np.max(np.abs(arr))):
        raise ValueError(f"{name} must be symmetric; got max |{name} - {name}.T| = {asym:.3g}.")
    sym = np.ascontiguousarray(0.5 * (arr + arr.T))
    try:
        np.linalg.cholesky(sym)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(sym)[0])
        raise ValueError(f"{name} must be positive-definite; got smallest eigenvalue {smallest:.3g}.") from None
    return sym


def check_log_prob_rows(m: object, name: str, *, n_rows: int | None = None, atol: float | None = None) -> np.ndarray:
    """A 2-D array of log-probabilities (finite or ``-inf``), ``exp`` of each row summing to 1 within ``atol``
    (default: fitted to the input's precision, as :func:`check_log_prob_vector`)."""
    arr = as_float_array(m, name, shape=(n_rows, None), allow_neg_inf=True)
    return _check_log_probs(arr, name, _input_eps(m), atol, vector=False)


# ---------------------------------------------------------------------------------------------------------------
# Device (GPU) arrays: shape and dtype checked on the host, values on the device (avicore._device)
# ---------------------------------------------------------------------------------------------------------------

def check_device_array(x: object, name: str, *, shape: Sequence[int | None] | None = None,
                       ndims: Sequence[int] | None = None, dtypes: Sequence[object] = (np.float64,),
                       allow_neg_inf: bool = False, low: float = -np.inf, high: float = np.inf,
                       low_inclusive: bool = True, integral: bool = False, what: str | None = None) -> object:
    """Check a GPU array without copying it to the host; return a Numba device-array view of it.

    Parameters
    ----------
    x : device array
        Anything :func:`avicore._device.is_device_array` accepts.
    name : str
        Argument name used in error messages.
    shape : sequence of int or None, optional
        Required shape (``None`` entries match any length).
    ndims : sequence of int, optional
        Accepted numbers of dimensions (when ``shape`` is not given).
    dtypes : sequence of dtypes
        Accepted dtypes (no conversion happens on the device).
    allow_neg_inf, low, high, low_inclusive, integral
        The values allowed: never NaN or +inf; ``-inf`` only with ``allow_neg_inf``; finite values within
        ``[low, high]`` (``(low, high]`` when not ``low_inclusive``), integral when ``integral`` is set.
    what : str, optional
        The expectation in the message on a bad value (default: derived from the options).

    Returns
    -------
    numba.cuda device array
        A view of ``x`` (C-contiguous).

    Raises
    ------
    TypeError
        On a dtype outside ``dtypes`` or a non-contiguous array.
    ValueError
        On a wrong shape, or a bad value (the message gives the first one and its index).
    """
    from . import _device

    arr = _device.as_numba(x, name)
    got_shape = tuple(int(s) for s in arr.shape)
    dt = np.dtype(arr.dtype)
    allowed = tuple(np.dtype(d) for d in dtypes)
    if dt not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{name} must be a device array of dtype {names}; got dtype {dt}. Convert it on the device "
                        f"first (e.g. cupy_array.astype(cupy.{allowed[0]})).")
    if shape is not None:
        expected = tuple("any" if s is None else s for s in shape)
        if len(got_shape) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got_shape)):
            raise ValueError(f"{name} must have shape {expected}; got {got_shape}.")
    elif ndims is not None and len(got_shape) not in tuple(ndims):
        raise ValueError(f"{name} must be {' or '.join(str(n) for n in ndims)}-dimensional; got shape {got_shape}.")
    if not arr.is_c_contiguous():
        raise TypeError(f"{name} must be a C-contiguous device array; got strides {tuple(arr.strides)}. Make a "
                        "contiguous copy on the device first (e.g. cupy.ascontiguousarray).")
    i = _device.first_violation(arr.reshape(-1), low=low, high=high, low_inclusive=low_inclusive,
                                allow_neg_inf=allow_neg_inf, integral=integral)
    if i >= 0:
        index = tuple(int(k) for k in np.unravel_index(i, got_shape))
        value = arr.reshape(-1)[i:i + 1].copy_to_host()[0].item()
        if what is None:
            parts = ["finite" if not allow_neg_inf else "finite or -inf"]
            if low > -np.inf:
                parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
            if high < np.inf:
                parts.append(f"<= {high:g}")
            if integral:
                parts.append("integral")
            what = "be " + ", ".join(parts)
        raise ValueError(f"{name} must {what}; got {value!r} at index {index}.")
    return arr
