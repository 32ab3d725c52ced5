"""sparsify._blas: products in fixed row blocks on Numba's threads, BLAS single-threaded.

The kernel-vs-reference check here is the product itself against NumPy's
``@``; the determinism checks run fresh processes with different thread
settings, since both Numba and BLAS read them at start-up.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sparsify import _blas
from sparsify._config import ATOL, RTOL


@given(st.integers(1, 100_000))
def test_row_parts_is_the_smallest_power_of_two_that_fits(n_rows):
    parts = _blas.row_parts(n_rows)
    assert parts >= 1 and parts & (parts - 1) == 0
    assert n_rows <= parts * _blas.ROWS_PER_PART
    assert parts == 1 or n_rows > (parts // 2) * _blas.ROWS_PER_PART


@given(st.integers(1, 5000), st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_row_blocks_cover_the_rows_once_in_order(n_rows, parts):
    blocks = [_blas.row_block(n_rows, parts, p) for p in range(parts)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [hi - lo for lo, hi in blocks]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(600, 300, 512), (257, 64, 200), (40, 30, 20), (1030, 17, 90),
                                   (152, 784, 300), (100, 300, 1000)])  # the last two: column blocks
def test_matmul_equals_numpy(dtype, shape):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    left = rng.standard_normal((m, k)).astype(dtype)
    right = rng.standard_normal((n, k)).astype(dtype).T  # F-ordered, as W.T or A.T are passed
    with _blas.single_threaded_blas():
        got = _blas.matmul(left, right)
        again = _blas.matmul(left, right)
    want = left @ right
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = np.abs(left) @ np.abs(right)  # bounds the rounding error of each entry
    assert np.all(np.abs(got - want) <= RTOL[np.dtype(dtype)] * 10 * scale + ATOL[np.dtype(dtype)])
    assert got.tobytes() == again.tobytes()


def test_matmul_accepts_non_contiguous_operands_and_leaves_them_alone():
    rng = np.random.default_rng(3)
    big = rng.standard_normal((700, 90))
    left = big[::2, ::3]  # neither C- nor F-contiguous
    right = rng.standard_normal((30, 400))[:, ::2]
    before = (left.copy(), right.copy())
    with _blas.single_threaded_blas():
        got = _blas.matmul(left, right)
    np.testing.assert_allclose(got, left @ right, rtol=1e-12, atol=1e-12)
    assert np.array_equal(left, before[0]) and np.array_equal(right, before[1])


def test_single_threaded_blas_limits_and_restores_even_on_error():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ctl = _blas._controller()
    if ctl is None:
        pytest.skip("no BLAS library that threadpoolctl can control")

    def threads():
        return sorted(lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas")

    before = threads()
    with _blas.single_threaded_blas():
        assert set(threads()) == {1}
    assert threads() == before
    with pytest.raises(RuntimeError), _blas.single_threaded_blas():
        raise RuntimeError("boom")
    assert threads() == before


_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import sparsify as sp
    dtype = np.dtype(sys.argv[1])
    net = sp.random_mlp([200, 300, 300, 10], rng=4, dtype=dtype)  # Z of 600 rows: 2 row blocks
    X = np.random.default_rng(5).random((300, 200)).astype(dtype)
    S = sp.sensitivity(net, X)
    print(hashlib.sha256(b"".join(s.tobytes() for s in S)).hexdigest())
    """
)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sensitivity_bits_do_not_depend_on_numba_or_blas_threads(dtype):
    """Row blocks are fixed by the shape, so neither thread setting changes a bit."""
    from sparsify.sensitivity import z_parts

    assert z_parts(600) > 1  # the split is really exercised
    digests = set()
    for numba_threads, blas_threads in (("1", "1"), ("2", "2"), ("1", "2"), ("2", "1")):
        env = dict(os.environ, NUMBA_NUM_THREADS=numba_threads, OPENBLAS_NUM_THREADS=blas_threads)
        out = subprocess.run([sys.executable, "-c", _SCRIPT, dtype], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert len(next(iter(digests))) == len(hashlib.sha256().hexdigest())
