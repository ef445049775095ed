"""Counter-based normal generator: the mixer, the ziggurat tables, bit-identical hashes and equal normals on every
backend, index keying, independent streams, and the distribution of the draws."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from avicore._cy import load
from avicore.kernels import _counter_normal as cn
from avicore.kernels import _counter_rng as rng64
from avicore.kernels import _ziggurat_tables as zt

MASK = (1 << 64) - 1
HEADER = Path(__file__).resolve().parents[2] / "src_cython" / "_ziggurat.h"


def splitmix64_reference(state: int, n: int) -> list[int]:
    """SplitMix64 (Steele, Lea & Flood 2014) with Python integers: an implementation independent of NumPy's."""
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def slow_path_rows(key: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices whose first draw (counter 0) leaves the ziggurat's fast path: (tail rows, wedge rows)."""
    index = np.arange(n_rows, dtype=np.int64)
    h = cn.first_hashes(cn.row_keys(key, index), 1)[:, 0]
    layer = (h & np.uint64(255)).astype(np.intp)
    x = (h >> np.uint64(11)).astype(np.int64).astype(np.float64) * 2.0**-53 * cn.ZIG_X[layer]
    slow = x >= cn.ZIG_X[layer + 1]
    return index[slow & (layer == 0)], index[slow & (layer > 0)]


KEY = cn.stream_key(20241128, 7, cn.STREAM_LOCAL)
TAIL_ROWS, WEDGE_ROWS = slow_path_rows(KEY, 200_000)


# -- the mixer --------------------------------------------------------------------------------------------------

def test_mixer_reproduces_splitmix64():
    ref = splitmix64_reference(0, 4)
    assert ref[0] == 0xE220A8397B1DCDAF  # SplitMix64's published first output for seed 0
    keys = np.array([(0x9E3779B97F4A7C15 * (i + 1)) & MASK for i in range(4)], dtype=np.uint64)
    assert [int(v) for v in rng64.mix64(keys)] == ref
    assert [int(rng64.mix64_nb(k)) for k in keys] == ref
    assert [load("elbo").cy_mix64(int(k)) for k in keys] == ref
    assert [cn._mix_int(int(k)) for k in keys] == ref


def test_uniforms_are_exact_53_bit_conversions():
    h = np.array([0, 1 << 11, MASK], dtype=np.uint64)
    assert_array_equal(rng64.uniform(h), [0.0, 2.0**-53, 1.0 - 2.0**-53])
    assert_array_equal(rng64.open_uniform(h), [2.0**-54, 1.5 * 2.0**-53, 1.0 - 2.0**-54])
    assert [rng64.uniform_nb(v) for v in h] == list(rng64.uniform(h))
    assert [rng64.open_uniform_nb(v) for v in h] == list(rng64.open_uniform(h))


# -- the ziggurat tables ----------------------------------------------------------------------------------------

def test_tables_close_the_ziggurat_with_equal_areas():
    x, f = np.array(zt.X), np.array(zt.F)
    assert x.size == f.size == zt.N_LAYERS + 1
    assert x[1] == zt.R and x[-1] == 0.0 and np.all(np.diff(x) < 0)
    assert_allclose(f, np.exp(-0.5 * x * x), rtol=1e-15, atol=0)
    areas = x[1:-1] * (f[2:] - f[1:-1])  # layers 1..255
    assert_allclose(areas, zt.V, rtol=1e-12)
    tail = math.sqrt(math.pi / 2) * math.erfc(zt.R / math.sqrt(2))
    assert_allclose([zt.R * f[1] + tail, x[0] * f[1]], zt.V, rtol=1e-14)
    # Marsaglia & Tsang's published R for 256 layers.
    assert abs(zt.R - 3.6541528853610088) < 1e-14


def test_table_literals_match_their_generator():
    r, v, x, f = zt.build_tables()
    assert_allclose([r, v], [zt.R, zt.V], rtol=1e-14)
    assert_allclose(x, zt.X, rtol=1e-13)
    assert_allclose(f, zt.F, rtol=1e-13)


@pytest.mark.parametrize("source", ["generated", "built"])
def test_c_header_holds_the_same_bits(source):
    """The header setup.py writes (c_header) and the one the installed build compiled hold the literals' bits."""
    if source == "built":
        if not HEADER.exists():
            pytest.skip(f"no source tree here ({HEADER} absent): only the generator is checked")
        assert HEADER.read_text() == zt.c_header(), "src_cython/_ziggurat.h is stale: rebuild (setup.py writes it)"
    text = zt.c_header()

    def array(name: str) -> list[float]:
        body = re.search(name + r"\[\d+\] = \{(.*?)\};", text, re.S).group(1)
        return [float(tok) for tok in body.replace("\n", " ").split(",") if tok.strip()]

    assert array("AVICORE_ZIG_X") == list(zt.X)
    assert array("AVICORE_ZIG_F") == list(zt.F)
    assert float(re.search(r"AVICORE_ZIG_R = ([0-9.e+-]+);", text).group(1)) == zt.R


# -- every backend draws the same numbers -----------------------------------------------------------------------

def test_slow_path_fixture_covers_tail_and_wedges():
    assert TAIL_ROWS.size > 20 and WEDGE_ROWS.size > 500


def test_hashes_bit_identical_numba_cython():
    index = np.concatenate([np.arange(300), TAIL_ROWS[:5], [2**40]]).astype(np.int64)
    ref = cn.first_hashes(cn.row_keys(KEY, index), 6)
    assert_array_equal(cn.first_hashes_nb(np.uint64(KEY), index, 6), ref)
    out = np.empty_like(ref)
    load("elbo").cy_counter_first_hashes(np.uint64(KEY), index, out)
    assert_array_equal(out, ref)


def test_normals_equal_numba_cython_including_slow_paths():
    index = np.concatenate([np.arange(500), TAIL_ROWS, WEDGE_ROWS[:300]]).astype(np.int64)
    ref = cn.normals_numpy(KEY, index, 3, 2)
    got_nb = cn.normals_nb(np.uint64(KEY), index, 3, 2)
    got_cy = np.empty_like(ref)
    load("elbo").cy_counter_normals(np.uint64(KEY), index, 3, 2, got_cy)
    for got in (got_nb, got_cy):
        assert_allclose(got, ref, rtol=1e-15, atol=1e-15)
    # The fast path (no transcendental) is bit-identical.
    fast = np.abs(ref) < zt.X[2]
    assert_array_equal(got_cy[fast], ref[fast])


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda"], indirect=True)
def test_cuda_generator_matches_numpy(backend):
    from avicore.kernels import _counter_normal_cuda as cc

    index = np.concatenate([np.arange(2), TAIL_ROWS[:3], WEDGE_ROWS[:3]]).astype(np.int64)
    assert_array_equal(cc.first_hashes_cuda(KEY, index, 3), cn.first_hashes(cn.row_keys(KEY, index), 3))
    assert_allclose(cc.normals_cuda(KEY, index, 2, 1), cn.normals_numpy(KEY, index, 2, 1), rtol=1e-15, atol=1e-15)


# -- keying -----------------------------------------------------------------------------------------------------

def test_noise_of_a_row_depends_on_its_index_only():
    full = cn.local_normals(5, 11, np.arange(40), 4, 2)
    subset = np.array([33, 2, 17], dtype=np.int64)
    assert_array_equal(cn.local_normals(5, 11, subset, 4, 2), full[subset])
    # Draw (s, j) has counter s·dim + j: the first draws do not depend on how many samples follow.
    assert_array_equal(cn.local_normals(5, 11, subset, 2, 2), full[subset, :2])


def test_seed_step_and_stream_give_independent_draws():
    index = np.arange(20_000)
    base = cn.local_normals(1, 0, index, 1, 1).ravel()
    others = [cn.local_normals(2, 0, index, 1, 1).ravel(), cn.local_normals(1, 1, index, 1, 1).ravel(),
              cn.local_normals(1, 0, index + 1, 1, 1).ravel(),
              cn.normals_numpy(cn.stream_key(1, 0, cn.STREAM_GLOBAL), index, 1, 1).ravel()]
    bound = 5.0 / math.sqrt(index.size)
    for other in others:
        assert abs(np.corrcoef(base, other)[0, 1]) < bound
    pair = cn.local_normals(1, 0, index, 1, 2)
    assert abs(np.corrcoef(pair[:, 0, 0], pair[:, 0, 1])[0, 1]) < bound


def test_global_normals_come_from_their_own_stream():
    eta = cn.global_normals(9, 4, 5, 3)
    assert eta.shape == (5, 3)
    assert_array_equal(eta, cn.normals_numpy(cn.stream_key(9, 4, cn.STREAM_GLOBAL), np.zeros(1, np.int64), 5, 3)[0])
    assert not np.any(eta == cn.local_normals(9, 4, np.zeros(1, np.int64), 5, 3)[0])
    assert_array_equal(cn.global_normals(9, 4, 5, 3), eta)


# -- distribution -----------------------------------------------------------------------------------------------

def test_draws_are_standard_normal():
    eps = cn.local_normals(123, 0, np.arange(100_000), 1, 1).ravel()
    n = eps.size
    assert stats.kstest(eps, stats.norm.cdf).pvalue > 1e-3
    assert abs(eps.mean()) < 5 / math.sqrt(n)
    assert abs(eps.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.skew(eps)) < 5 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(eps)) < 5 * math.sqrt(24 / n)
    # The tail beyond R (drawn by the slow path) has the right mass and the right shape.
    p_tail = 2 * stats.norm.sf(zt.R)
    k = int(np.sum(np.abs(eps) > zt.R))
    assert stats.binomtest(k, n, p_tail).pvalue > 1e-3


def test_tail_draws_follow_the_conditional_tail():
    eps = cn.normals_numpy(KEY, TAIL_ROWS, 1, 1).ravel()
    assert np.all(np.abs(eps) > zt.R)
    u = stats.norm.sf(np.abs(eps)) / stats.norm.sf(zt.R)  # uniform on (0, 1) if the tail is right
    assert stats.kstest(u, "uniform").pvalue > 1e-3
