"""The fuzz suite's one harness: hostile-array strategies, the outcome rule, and the per-entry-point counter.

Outcome rule (issue 18): for every input an entry point returns a correct result — the right shape, no NaN, equal to
the NumPy reference backend where the entry point has backends — or raises ``ValueError``/``TypeError`` whose message
names one of its arguments. Anything else (another exception, a NumPy warning turned into an error by
``filterwarnings=error``, a crash, a hang) fails the test.
"""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

#: ``valid(rng, shape)`` returns an array of valid values of that shape.
Valid = Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]

#: Inputs tried per entry point in this session; printed at the end of the run by tests/fuzz/conftest.py.
COUNTS: collections.Counter[str] = collections.Counter()
#: Of those, the inputs the entry point accepted (returned a result for).
ACCEPTED: collections.Counter[str] = collections.Counter()

#: Examples per fuzz test (AVICORE_FUZZ_EXAMPLES scales them all, e.g. 2000 for a long local hunt).
EXAMPLES = int(os.environ.get("AVICORE_FUZZ_EXAMPLES", "200"))
#: Derandomized (the same inputs on every run, so CI is reproducible), no deadline (first calls JIT-compile).
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
#: The same for entry points that cost milliseconds a call (fits).
FUZZ_SLOW = settings(FUZZ, max_examples=max(10, EXAMPLES // 3))

#: Domain warnings an entry point may legitimately emit on hostile (but valid) input.
DOMAIN_WARNINGS: tuple[type[Warning], ...] = ()


def _domain_warnings() -> tuple[type[Warning], ...]:
    from avicore.hmm import ImpossibleSequenceWarning
    from avicore.optim import ConvergenceWarning, DivergenceWarning

    return (ImpossibleSequenceWarning, ConvergenceWarning, DivergenceWarning)


DTYPES = ("float64", "float32", "int64", "int8", "bool", "complex128", "object", "list")
LAYOUTS = ("C", "F", "strided", "readonly")
POISON = (None, np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, -1e-300)
SHAPE_MUTATIONS = ("ok", "ok", "ok", "ok", "empty", "one", "longer", "extra_dim", "drop_dim")


def _mutate_shape(shape: tuple[int, ...], how: str) -> tuple[int, ...]:
    if how == "ok" or not shape:
        return shape
    if how == "empty":
        return (0, *shape[1:])
    if how == "one":
        return (1, *shape[1:])
    if how == "longer":
        return (shape[0] + 1, *shape[1:])
    if how == "extra_dim":
        return (*shape, 1)
    return shape[1:]  # drop_dim


def _layout(a: np.ndarray, how: str) -> np.ndarray:
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.empty((*a.shape[:-1], 2 * a.shape[-1]) if a.ndim else (2,), dtype=a.dtype)
        view = big[..., ::2] if a.ndim else big[::2].reshape(())
        view[...] = a
        return view
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


@st.composite
def hostile(draw: st.DrawFn, shape: tuple[int, ...], valid: Valid, *, mostly_valid: bool = True,
            valid_dtype: object = np.float64) -> object:
    """An array meant to be of ``shape`` whose values ``valid(rng, shape)`` would make valid, made hostile.

    With ``mostly_valid`` half the draws keep shape, dtype and values (in a random layout: Fortran order,
    a strided view, read-only), so the correct-result branch of the rule is exercised as often as the refusals.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layout = draw(st.sampled_from(LAYOUTS))
    if mostly_valid and draw(st.booleans()):
        return _layout(np.asarray(valid(rng, shape), dtype=valid_dtype), layout)
    shp = _mutate_shape(shape, draw(st.sampled_from(SHAPE_MUTATIONS)))
    try:
        a = np.asarray(valid(rng, shp) if all(s > 0 for s in shp) else np.zeros(shp), dtype=np.float64)
    except (ValueError, IndexError):  # the generator of valid values has no meaning for the mutated shape
        a = rng.normal(size=shp)
    poison = draw(st.sampled_from(POISON))
    if poison is not None and a.size:
        a = a.copy()
        a.flat[draw(st.integers(0, a.size - 1))] = poison
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == "list":
        return a.tolist()
    if dtype in ("float64", "float32", "complex128", "object"):
        with np.errstate(over="ignore"):
            a = a.astype(dtype)
    else:
        with np.errstate(invalid="ignore"):
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).round().clip(-100, 100).astype(dtype)
    return _layout(a, layout) if a.ndim else a


def arguments(data: st.DataObject, specs: dict[str, tuple[tuple[int, ...], Callable]]) -> dict[str, object]:
    """Draw every array argument of one call: at most one is hostile (a random one, or none), the others valid in a
    random layout, so a good share of calls pass validation and reach the kernels."""
    target = data.draw(st.sampled_from([None, *specs]), label="hostile argument")
    out = {}
    for name, (shape, valid) in specs.items():
        if name == target:
            out[name] = data.draw(hostile(shape, valid), label=name)
        else:
            seed = data.draw(st.integers(0, 2**32 - 1), label=f"{name} seed")
            layout = data.draw(st.sampled_from(LAYOUTS), label=f"{name} layout")
            out[name] = _layout(np.asarray(valid(np.random.default_rng(seed), shape), dtype=np.float64), layout)
    return out


def hostile_int(minimum: int = 1, typical: int = 5) -> st.SearchStrategy[object]:
    """Counts as a user might pass them: valid ints, 0, negatives, huge ones (10¹²: must be refused before any
    allocation), floats, bools, NumPy scalars, strings, None."""
    return st.one_of(
        st.integers(minimum, typical), st.integers(minimum, typical).map(np.int64),
        st.sampled_from([0, -1, -(2**63), 10**12, 2**63, 2.0, 2.5, True, np.float64(3.0), "3", None, np.nan]))


def run(entry: str, call: Callable[[], object], arg_names: Sequence[str],
        numerical: tuple[type[Exception], ...] = ()) -> object | None:
    """Count one input to ``entry`` and apply the outcome rule's exception half.

    Returns the result, or None when ``call`` refused the input with a ValueError/TypeError naming an argument, or
    raised one of the entry point's named ``numerical`` failure classes (house rule: numerical failure has a named
    exception class carrying the index of the offending sequence or point).
    """
    global DOMAIN_WARNINGS
    if not DOMAIN_WARNINGS:
        DOMAIN_WARNINGS = _domain_warnings()
    COUNTS[entry] += 1
    try:
        with warnings.catch_warnings():
            for w in DOMAIN_WARNINGS:
                warnings.simplefilter("ignore", w)
            out = call()
        ACCEPTED[entry] += 1
        return out
    except numerical:
        return None
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        assert any(name in msg for name in arg_names), (
            f"{entry}: {type(exc).__name__} does not name an argument ({', '.join(arg_names)}): {msg}")
        return None


def assert_clean(entry: str, value: object, shape: tuple[int, ...] | None = None, *, allow_inf: bool = True) -> None:
    """The result half of the rule: the right shape, no NaN (and no inf unless ``allow_inf``)."""
    arr = np.asarray(value)
    if shape is not None:
        assert arr.shape == shape, f"{entry}: result has shape {arr.shape}, expected {shape}"
    if arr.dtype.kind in "fc":
        assert not np.isnan(arr).any(), f"{entry}: silent NaN in the result"
        if not allow_inf:
            assert np.isfinite(arr).all(), f"{entry}: non-finite value in the result"
