"""The max-times register tile (LLVM vector code) and the kernels around it, against
their readable twins: same bits, on Hypothesis-drawn data and on edge cases."""
import importlib

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparsify import _maxtimes as mk
from sparsify._config import njit
from sparsify._maxtimes import TILE_I, TILE_J, max_times_tile

sens = importlib.import_module("sparsify.sensitivity")

DTYPES = [np.float64, np.float32]


@njit(cache=False)  # not cached: Numba's cache would not see edits to sparsify/_maxtimes.py
def _call_tile(AT, r, SW, R, i0, j0, x_lo, x_hi):
    max_times_tile(AT, r, SW, R, i0, j0, x_lo, x_hi, TILE_I, TILE_J)  # literal tile shape: global names


def _finite(dtype, lo, hi):
    return st.floats(lo, hi, width=np.dtype(dtype).itemsize * 8, allow_nan=False, allow_infinity=False)


@st.composite
def tile_problems(draw):
    """AT, r, SW, R and one tile (i0, j0, x_lo, x_hi) with the kernel's padding rules."""
    dt = draw(st.sampled_from(DTYPES))
    n_out = mk.TILE_I * draw(st.integers(1, 3))
    n_in = mk.TILE_J * draw(st.integers(1, 4))
    points = mk.POINT_MULTIPLE * draw(st.integers(1, 4))
    AT = draw(hnp.arrays(dt, (n_in, points), elements=_finite(dt, 0, 1e3)))
    r = draw(hnp.arrays(dt, (2 * n_out, points), elements=_finite(dt, 0, 1e3)))
    SW = draw(hnp.arrays(dt, (2 * n_out, n_in), elements=_finite(dt, -2, 2)))
    R = draw(hnp.arrays(dt, (n_out, n_in), elements=_finite(dt, 0, 1e3)))
    i0 = mk.TILE_I * draw(st.integers(0, n_out // mk.TILE_I - 1))
    j0 = mk.TILE_J * draw(st.integers(0, n_in // mk.TILE_J - 1))
    step = mk.lanes(dt)
    x_lo = step * draw(st.integers(0, points // step))
    x_hi = step * draw(st.integers(x_lo // step, points // step))
    return AT, r, SW, R, i0, j0, x_lo, x_hi


@given(tile_problems())
def test_tile_kernel_equals_its_twin_bit_for_bit(problem):
    AT, r, SW, R, i0, j0, x_lo, x_hi = problem
    copies = [a.copy() for a in (AT, r, SW)]
    fast, slow = R.copy(), R.copy()
    _call_tile(AT, r, SW, fast, i0, j0, x_lo, x_hi)
    mk.max_times_tile_py(AT, r, SW, slow, i0, j0, x_lo, x_hi, mk.TILE_I, mk.TILE_J)
    np.testing.assert_array_equal(fast, slow)
    # only the tile's cells may change, and only upwards; the inputs are not touched
    outside = np.ones(R.shape, bool)
    outside[i0:i0 + mk.TILE_I, j0:j0 + mk.TILE_J] = False
    np.testing.assert_array_equal(fast[outside], R[outside])
    assert np.all(fast >= R)
    for a, b in zip(copies, (AT, r, SW)):
        np.testing.assert_array_equal(a, b)


def test_tile_reads_the_side_of_each_weight():
    """r+ rows for positive weights, r- rows for the rest (zero weights included)."""
    dt = np.float64
    n_out, n_in, points = mk.TILE_I, mk.TILE_J, 8
    AT = np.ones((n_in, points), dt)
    r = np.zeros((2 * n_out, points), dt)
    r[0::2, 3] = 5.0             # r+ (even rows) peaks at point 3
    r[1::2, 6] = 7.0             # r- (odd rows) peaks at point 6
    W = np.array([[1.0, -1.0], [0.0, 2.0], [-3.0, 0.0], [4.0, 5.0], [-1.0, -2.0], [0.0, 0.0]])
    SW = np.empty((2 * n_out, n_in))
    SW[0::2], SW[1::2] = np.maximum(W, 0), np.minimum(W, 0)
    R = np.zeros((n_out, n_in), dt)
    _call_tile(AT, r, SW, R, 0, 0, 0, points)
    np.testing.assert_array_equal(R, np.where(W > 0, 5.0, 7.0))


def test_empty_point_range_changes_nothing():
    dt = np.float32
    AT = np.ones((mk.TILE_J, 8), dt)
    r = np.ones((2 * mk.TILE_I, 8), dt)
    SW = np.ones((2 * mk.TILE_I, mk.TILE_J), dt)
    R = np.full((mk.TILE_I, mk.TILE_J), 0.25, dt)
    _call_tile(AT, r, SW, R, 0, 0, 8, 8)
    np.testing.assert_array_equal(R, 0.25)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_products_agree_with_the_twin():
    """A term that overflows to inf is inf in both (finite inputs, IEEE multiply)."""
    AT = np.full((mk.TILE_J, 8), 1e200)
    r = np.full((2 * mk.TILE_I, 8), 1e200)
    SW = np.ones((2 * mk.TILE_I, mk.TILE_J))
    fast, slow = np.zeros((mk.TILE_I, mk.TILE_J)), np.zeros((mk.TILE_I, mk.TILE_J))
    _call_tile(AT, r, SW, fast, 0, 0, 0, 8)
    mk.max_times_tile_py(AT, r, SW, slow, 0, 0, 0, 8, mk.TILE_I, mk.TILE_J)
    assert np.all(np.isinf(fast))
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason=(
    "JIT-only: the tile refuses mixed dtypes when Numba types the intrinsic; under NUMBA_DISABLE_JIT=1 "
    "it is the pure-Python twin, which callers reach only with validated, same-dtype arrays"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_refuses_mixed_dtypes(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    AT = np.ones((mk.TILE_J, 8), dtype)
    with pytest.raises(Exception, match="(?i)typing|resolve|invalid"):
        _call_tile(AT, np.ones((2 * mk.TILE_I, 8), other), np.ones((2 * mk.TILE_I, mk.TILE_J), dtype),
                   np.zeros((mk.TILE_I, mk.TILE_J), dtype), 0, 0, 0, 8)


# --- the whole max-times pass and its helpers ----------------------------------------
def _max_times_numpy(AT, r, SW, R):
    """``R = max(R, max_x AT[j, x] * r[row(i, j), x])`` written out in NumPy."""
    n = SW.shape[0] // 2
    rows = 2 * np.arange(n)[:, None] + np.where(SW[0::2] > 0, 0, 1)  # (n, n_in): r+_i or r-_i
    terms = AT[None, :, :] * r[rows]                                   # (n, n_in, points)
    return np.maximum(R, terms.max(axis=2, initial=0))


@given(tile_problems(), st.sampled_from([(6, 2, 8), (12, 4, 16), (24, 128, 256), (6, 2, 1000)]))
def test_max_times_equals_numpy(problem, tiles):
    AT, r, SW, R = problem[:4]
    expected = _max_times_numpy(AT, r, SW, R)
    got = R.copy()
    sens._max_times(AT, r, SW, got, *tiles)
    np.testing.assert_array_equal(got, expected)


@given(st.sampled_from(DTYPES), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2),
       st.sampled_from([0, 1, -1]))
def test_transpose_part_equals_numpy(dtype, points, n_in, extra, part):
    rng = np.random.default_rng(points * 41 + n_in)
    A = rng.standard_normal((points, n_in)).astype(dtype)
    AT = np.full((n_in + extra, points + 3 + extra), np.nan, dtype)
    sens._transpose_part(A, AT, part)
    expected = np.zeros_like(AT)
    expected[:n_in, :points] = {0: A.T, 1: np.maximum(A.T, 0), -1: np.maximum(-A.T, 0)}[part]
    np.testing.assert_array_equal(AT, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_are_stacked_by_side_and_padded(dtype):
    W = np.array([[1.5, -2.0, 0.0], [-0.5, 3.0, -1.0]], dtype)
    acc = sens._LayerMaxima(W, sens.DEFAULT_TILES)
    n, m = acc.n_out, acc.n_in
    assert n % mk.TILE_I == 0 and m % mk.TILE_J == 0 and n >= 2 and m >= 3
    expected = np.zeros((2 * n, m), dtype)
    expected[0:4:2, :3] = np.maximum(W, 0)   # rows 2i: W+_i, rows 2i+1: W-_i
    expected[1:4:2, :3] = np.minimum(W, 0)
    np.testing.assert_array_equal(acc.stacked, expected)
    np.testing.assert_array_equal(acc.R, 0)
    assert acc.R.shape == (n, m)
    # W itself is not modified and the result has W's shape
    assert acc.result().shape == W.shape


@pytest.mark.parametrize("tiles, rounded", [
    ({"tile_i": 1, "tile_j": 1, "tile_x": 1}, (mk.TILE_I, mk.TILE_J, mk.POINT_MULTIPLE)),
    ({"tile_i": 7, "tile_j": 3, "tile_x": 9}, (2 * mk.TILE_I, 2 * mk.TILE_J, 2 * mk.POINT_MULTIPLE)),
])
def test_tiles_are_rounded_up_to_whole_register_tiles(tiles, rounded):
    acc = sens._LayerMaxima(np.ones((3, 3)), sens._check_tiles(tiles))
    assert (acc.tiles["tile_i"], acc.tiles["tile_j"], acc.tiles["tile_x"]) == rounded
