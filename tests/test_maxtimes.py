"""The max-times register tile (LLVM vector code) and the kernels around it, against
their readable twins: same bits, on Hypothesis-drawn data and on edge cases."""
import importlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sparsify import _maxtimes as mk
from sparsify._config import njit
from sparsify._maxtimes import REGISTER_TILES, max_times_tile

sens = importlib.import_module("sparsify.sensitivity")

DTYPES = [np.float64, np.float32]
WIDTHS = list(REGISTER_TILES)  # 32 (AVX2 ymm) and 64 (AVX-512 zmm): both compile on any x86 host
_I32, _J32 = REGISTER_TILES[32]
_I64, _J64 = REGISTER_TILES[64]


# not cached: Numba's cache would not see edits to sparsify/_maxtimes.py; the register
# tile and width are literals (global names), one caller per width
@njit(cache=False)
def _call_tile_32(AT, r, SW, R, i0, j0, x_lo, x_hi):
    max_times_tile(AT, r, SW, R, i0, j0, x_lo, x_hi, _I32, _J32, 32)


@njit(cache=False)
def _call_tile_64(AT, r, SW, R, i0, j0, x_lo, x_hi):
    max_times_tile(AT, r, SW, R, i0, j0, x_lo, x_hi, _I64, _J64, 64)


CALL_TILE = {32: _call_tile_32, 64: _call_tile_64}


def _finite(dtype, lo, hi):
    return st.floats(lo, hi, width=np.dtype(dtype).itemsize * 8, allow_nan=False, allow_infinity=False)


@st.composite
def tile_problems(draw, width=32):
    """AT, r, SW, R and one register tile (i0, j0, x_lo, x_hi) of the given vector
    width, with the kernel's padding rules."""
    dt = draw(st.sampled_from(DTYPES))
    ti, tj = REGISTER_TILES[width]
    n_out = mk.TILE_I * draw(st.integers(1, 2))
    n_in = mk.TILE_J * draw(st.integers(1, 4))
    points = mk.POINT_MULTIPLE * draw(st.integers(1, 4))
    AT = draw(hnp.arrays(dt, (n_in, points), elements=_finite(dt, 0, 1e3)))
    r = draw(hnp.arrays(dt, (2 * n_out, points), elements=_finite(dt, 0, 1e3)))
    SW = draw(hnp.arrays(dt, (2 * n_out, n_in), elements=_finite(dt, -2, 2)))
    R = draw(hnp.arrays(dt, (n_out, n_in), elements=_finite(dt, 0, 1e3)))
    i0 = ti * draw(st.integers(0, n_out // ti - 1))
    j0 = tj * draw(st.integers(0, n_in // tj - 1))
    step = mk.lanes(dt, width)
    x_lo = step * draw(st.integers(0, points // step))
    x_hi = step * draw(st.integers(x_lo // step, points // step))
    return AT, r, SW, R, i0, j0, x_lo, x_hi


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_tile_kernel_equals_its_twin_bit_for_bit(width, data):
    AT, r, SW, R, i0, j0, x_lo, x_hi = data.draw(tile_problems(width))
    ti, tj = REGISTER_TILES[width]
    copies = [a.copy() for a in (AT, r, SW)]
    fast, slow = R.copy(), R.copy()
    CALL_TILE[width](AT, r, SW, fast, i0, j0, x_lo, x_hi)
    mk.max_times_tile_py(AT, r, SW, slow, i0, j0, x_lo, x_hi, ti, tj)
    np.testing.assert_array_equal(fast, slow)
    # only the tile's cells may change, and only upwards; the inputs are not touched
    outside = np.ones(R.shape, bool)
    outside[i0:i0 + ti, j0:j0 + tj] = False
    np.testing.assert_array_equal(fast[outside], R[outside])
    assert np.all(fast >= R)
    for a, b in zip(copies, (AT, r, SW)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("width", WIDTHS)
def test_tile_reads_the_side_of_each_weight(width):
    """r+ rows for positive weights, r- rows for the rest (zero weights included)."""
    dt = np.float64
    ti, tj = REGISTER_TILES[width]
    W = np.array([[1.0, -1.0], [0.0, 2.0], [-3.0, 0.0], [4.0, 5.0], [-1.0, -2.0], [0.0, 0.0]])
    W = np.tile(W, (ti // 6, tj // 2))
    n_out, n_in, points = ti, tj, 16
    AT = np.ones((n_in, points), dt)
    r = np.zeros((2 * n_out, points), dt)
    r[0::2, 3] = 5.0             # r+ (even rows) peaks at point 3
    r[1::2, 9] = 7.0             # r- (odd rows) peaks at point 9 (in the second float64 zmm vector)
    SW = np.empty((2 * n_out, n_in))
    SW[0::2], SW[1::2] = np.maximum(W, 0), np.minimum(W, 0)
    R = np.zeros((n_out, n_in), dt)
    CALL_TILE[width](AT, r, SW, R, 0, 0, 0, points)
    np.testing.assert_array_equal(R, np.where(W > 0, 5.0, 7.0))


@pytest.mark.parametrize("width", WIDTHS)
def test_empty_point_range_changes_nothing(width):
    dt = np.float32
    ti, tj = REGISTER_TILES[width]
    AT = np.ones((tj, 16), dt)
    r = np.ones((2 * ti, 16), dt)
    SW = np.ones((2 * ti, tj), dt)
    R = np.full((ti, tj), 0.25, dt)
    CALL_TILE[width](AT, r, SW, R, 0, 0, 16, 16)
    np.testing.assert_array_equal(R, 0.25)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_overflowing_products_agree_with_the_twin(width):
    """A term that overflows to inf is inf in both (finite inputs, IEEE multiply)."""
    ti, tj = REGISTER_TILES[width]
    AT = np.full((tj, 16), 1e200)
    r = np.full((2 * ti, 16), 1e200)
    SW = np.ones((2 * ti, tj))
    fast, slow = np.zeros((ti, tj)), np.zeros((ti, tj))
    CALL_TILE[width](AT, r, SW, fast, 0, 0, 0, 16)
    mk.max_times_tile_py(AT, r, SW, slow, 0, 0, 0, 16, ti, tj)
    assert np.all(np.isinf(fast))
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason=(
    "JIT-only: the tile refuses mixed dtypes when Numba types the intrinsic; under NUMBA_DISABLE_JIT=1 "
    "it is the pure-Python twin, which callers reach only with validated, same-dtype arrays"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_refuses_mixed_dtypes(dtype):
    other = np.float32 if dtype == np.float64 else np.float64
    AT = np.ones((_J32, 8), dtype)
    with pytest.raises(Exception, match="(?i)typing|resolve|invalid"):
        _call_tile_32(AT, np.ones((2 * _I32, 8), other), np.ones((2 * _I32, _J32), dtype),
                      np.zeros((_I32, _J32), dtype), 0, 0, 0, 8)


# --- the whole max-times pass and its helpers ----------------------------------------
def _max_times_numpy(AT, r, SW, R):
    """``R = max(R, max_x AT[j, x] * r[row(i, j), x])`` written out in NumPy."""
    n = SW.shape[0] // 2
    rows = 2 * np.arange(n)[:, None] + np.where(SW[0::2] > 0, 0, 1)  # (n, n_in): r+_i or r-_i
    terms = AT[None, :, :] * r[rows]                                   # (n, n_in, points)
    return np.maximum(R, terms.max(axis=2, initial=0))


#: cache tiles (tile_i, tile_j, tile_x), multiples of the padded layout as callers round them
_CACHE_TILES = [(12, 2, 16), (24, 4, 32), (24, 128, 256), (12, 2, 1008)]


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=40, deadline=None)
@given(problem=tile_problems(), tiles=st.sampled_from(_CACHE_TILES))
def test_max_times_equals_numpy(width, problem, tiles):
    AT, r, SW, R = problem[:4]
    expected = _max_times_numpy(AT, r, SW, R)
    got = R.copy()
    mk.max_times(AT, r, SW, got, *tiles, vector_bytes=width)
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(problem=tile_problems(), tiles=st.sampled_from(_CACHE_TILES))
def test_both_widths_give_the_same_bits(problem, tiles):
    """The ymm and zmm passes (both compiled here, whatever the host) compute every term
    alone and take exact maxima: the same bits."""
    AT, r, SW, R = problem[:4]
    outs = {w: R.copy() for w in WIDTHS}
    for w, out in outs.items():
        mk.max_times(AT, r, SW, out, *tiles, vector_bytes=w)
    assert outs[32].tobytes() == outs[64].tobytes()


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=40, deadline=None)
@given(problem=tile_problems(), tiles=st.sampled_from(_CACHE_TILES), data=st.data())
def test_max_times_reads_the_first_n_points_in_balanced_blocks(width, problem, tiles, data):
    """With ``n_points`` the pass reads only the first columns (the rest may hold anything: the
    caller's padding), in blocks of nearly equal width; the result is the maximum over those
    columns alone."""
    AT, r, SW, R = problem[:4]
    n = data.draw(st.sampled_from(range(0, AT.shape[1] + 1, mk.POINT_MULTIPLE)), label="n_points")
    expected = _max_times_numpy(AT[:, :n], r[:, :n], SW, R)
    AT, r = AT.copy(), r.copy()
    AT[:, n:], r[:, n:] = 1e30, 1e30  # columns beyond n_points must not be read
    got = R.copy()
    mk.max_times(AT, r, SW, got, *tiles, vector_bytes=width, n_points=n)
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
    ({"tile_i": mk.TILE_I + 1, "tile_j": mk.TILE_J + 1, "tile_x": mk.POINT_MULTIPLE + 1},
     (2 * mk.TILE_I, 2 * mk.TILE_J, 2 * mk.POINT_MULTIPLE)),
])
def test_tiles_are_rounded_up_to_whole_register_tiles(tiles, rounded):
    acc = sens._LayerMaxima(np.ones((3, 3)), sens._check_tiles(tiles))
    assert (acc.tiles["tile_i"], acc.tiles["tile_j"], acc.tiles["tile_x"]) == rounded


_WIDTH_SCRIPT = """
import hashlib, sys
import numpy as np
import sparsify as sp
from sparsify import _config
net = sp.random_mlp([40, 30, 20], rng=0)
X = np.random.default_rng(1).standard_normal((700, 40))
h = hashlib.sha256()
for dtype in (np.float64, np.float32):
    for s in sp.sensitivity(net.astype(dtype), X.astype(dtype), chunk_size=256):
        h.update(s.tobytes())
print(_config.vector_bytes(), h.hexdigest())
"""


def test_vector_width_override_and_the_same_bits_either_way():
    """SPARSIFY_VECTOR_BITS=256 / 512 selects the width in a fresh process; the public
    sensitivities (signed inputs, several blocks, both dtypes) have the same bytes."""
    import os
    import subprocess
    import sys

    out = {}
    for bits in ("256", "512"):
        env = dict(os.environ, SPARSIFY_VECTOR_BITS=bits, SPARSIFY_SERIAL_WORK="0")
        res = subprocess.run([sys.executable, "-c", _WIDTH_SCRIPT], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        width, digest = res.stdout.split()
        out[bits] = (int(width), digest)
    assert out["256"][0] == 32 and out["512"][0] == 64
    assert out["256"][1] == out["512"][1]


def test_vector_width_override_is_validated(monkeypatch):
    from sparsify import _config

    monkeypatch.setattr(_config, "_vector_bytes_cache", {})
    monkeypatch.setenv("SPARSIFY_VECTOR_BITS", "384")
    with pytest.raises(ValueError, match="SPARSIFY_VECTOR_BITS.*256, 512 or auto.*'384'"):
        _config.vector_bytes()
    monkeypatch.setattr(_config, "_vector_bytes_cache", {})
    monkeypatch.setenv("SPARSIFY_VECTOR_BITS", "auto")
    assert _config.vector_bytes() == (64 if _config.host_has_avx512() and _config._numba_targets_the_host() else 32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_path_of_small_layers_gives_the_same_bits(monkeypatch, dtype):
    """Below SPARSIFY_SERIAL_WORK a layer runs on the calling thread; the result has the
    bytes of the parallel path (and matches the NumPy reference)."""
    from sparsify import reference
    from sparsify._config import ATOL, RTOL

    rng = np.random.default_rng(7)
    A = rng.standard_normal((300, 45)).astype(dtype)  # signed: the sign split runs too
    W = rng.standard_normal((37, 45)).astype(dtype)
    results = {}
    for work in ("0", str(10**12)):  # always parallel, always serial
        monkeypatch.setenv("SPARSIFY_SERIAL_WORK", work)
        results[work] = sens._sensitivity_layer(A, W, chunk_size=128)
    assert results["0"].tobytes() == results[str(10**12)].tobytes()
    np.testing.assert_allclose(results["0"], reference.sensitivity_layer(A, W), rtol=RTOL[np.dtype(dtype)] * 10,
                               atol=ATOL[np.dtype(dtype)])
    monkeypatch.setenv("SPARSIFY_SERIAL_WORK", "-3")
    with pytest.raises(ValueError, match="SPARSIFY_SERIAL_WORK"):
        sens._sensitivity_layer(A, W)


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="inspects the compiled code")
def test_the_hot_loop_of_each_width_is_one_multiply_and_one_max_per_edge():
    """The structure docs/performance.md builds on, read from a fresh compile of each width's
    pass (benchmarks/run.py's inspector): per step of the loop over points, one multiply (its r
    load folded in) and one max per edge of the register tile, two input loads, no blend and no
    scalar floating-point operation."""
    from benchmarks.run import inspect_kernel

    loops = inspect_kernel()
    assert set(loops) == {f"{reg} {dt}" for reg in ("ymm", "zmm") for dt in ("float64", "float32")}
    for name, loop in loops.items():
        edges = loop["register_tile"][0] * loop["register_tile"][1]
        assert loop["mul"] == loop["mul_from_memory"] == loop["max"] == edges, name
        assert loop["vector_loads"] == loop["register_tile"][1], name
        assert loop["blends"] == 0 and loop["scalar_fp"] == 0, name
