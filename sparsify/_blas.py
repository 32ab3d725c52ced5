"""Matrix products for the sensitivity step, run on Numba's threads.

Why. The sensitivity step alternates BLAS products with parallel Numba kernels.
Both thread pools busy-wait after their work for a while (OpenBLAS for about
2**28 cycles, ~0.1 s; GNU OpenMP, which Numba's "omp" layer uses, for some
milliseconds) in case more work follows. Alternating between the two pools on
a machine with few cores therefore makes each run beside the other's spinning
threads, measured at up to 2x slower (docs/performance.md).

What. Inside :func:`single_threaded_blas`, every BLAS library that
threadpoolctl finds is limited to one thread, and :func:`matmul` splits a large
product ``left @ right`` into row blocks of ``left``, computed in a Numba
``prange`` that calls BLAS (``np.dot``) once per block. All parallel work of the
step then runs on one pool, Numba's.

Determinism. The row blocks depend only on the number of rows (see
:func:`row_parts`), never on the thread count, and each block is one
single-threaded BLAS call, so the bits do not depend on ``NUMBA_NUM_THREADS``
or on the BLAS thread setting. (A BLAS library may round a block differently
from the whole product: float32 GEMMs in OpenBLAS do; the blocks are fixed, so
results are still reproducible.)
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._config import njit, prange

#: a product is split into row blocks of at most this many rows of ``left``
ROWS_PER_PART = 256

#: products with fewer multiply-adds than this are one plain ``@`` (thread
#: hand-off would cost more than it saves)
MIN_SPLIT_WORK = 1_000_000

_controller_cache: list = []


def _controller():
    """threadpoolctl's controller of the loaded BLAS libraries, or None if unavailable."""
    if not _controller_cache:
        try:
            # load the BLAS that np.dot in Numba code calls (SciPy's) before looking
            import scipy.linalg.cython_blas  # noqa: F401
            from threadpoolctl import ThreadpoolController

            ctl = ThreadpoolController().select(user_api="blas")
            _controller_cache.append(ctl if ctl.lib_controllers else None)
        except Exception:  # threadpoolctl missing or unable to inspect this process
            _controller_cache.append(None)
    return _controller_cache[0]


@contextmanager
def single_threaded_blas():
    """Limit every BLAS library to one thread for the duration of the block.

    Other threads of the process that call BLAS meanwhile run single-threaded
    too; the previous limits are restored on exit, also after an exception.
    """
    ctl = _controller()
    if ctl is None:
        yield
        return
    limiter = ctl.limit(limits=1)
    try:
        yield
    finally:
        limiter.restore_original_limits()


def row_parts(n_rows: int, rows_per_part: int = ROWS_PER_PART) -> int:
    """The number of row blocks for ``n_rows`` rows: the smallest power of two with
    at most ``rows_per_part`` rows per block (powers of two divide evenly
    among 2, 4, 8, ... threads)."""
    parts = 1
    while parts * rows_per_part < n_rows:
        parts *= 2
    return parts


@njit
def row_block(n_rows, parts, p):
    """Rows ``lo:hi`` of block ``p`` of ``parts`` (nearly equal, contiguous); the one
    block rule of every kernel that splits a product."""
    return (p * n_rows) // parts, ((p + 1) * n_rows) // parts


@njit(parallel=True)
def _matmul_rows(left, right, out, parts):
    """``out = left @ right``, one BLAS call per row block of ``left`` (:func:`row_block`)."""
    for p in prange(parts):
        lo, hi = row_block(left.shape[0], parts, p)
        np.dot(left[lo:hi], right, out[lo:hi])


def _contiguous(a: np.ndarray) -> np.ndarray:
    """``a`` if it is C- or F-contiguous (both are BLAS operands as they are), else a C copy."""
    return a if a.flags.c_contiguous or a.flags.f_contiguous else np.ascontiguousarray(a)


def matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` for 2-D float arrays of one dtype, in fixed blocks on
    Numba's threads when large (BLAS limited to one thread meanwhile; a caller
    that alternates products with Numba kernels should hold
    :func:`single_threaded_blas` around the whole loop).

    The blocks are row blocks of ``left`` (:func:`row_parts`); a product with too
    few rows for two blocks but enough columns (a forward pass of a small batch
    through a wide layer) is split into column blocks instead, computed as row
    blocks of ``right.T @ left.T``. Either way the blocks depend on the shape only.
    """
    m, k = left.shape
    n = right.shape[1]
    if m * k * n < MIN_SPLIT_WORK or left.dtype != right.dtype:
        return left @ right
    parts = row_parts(m)
    if parts > 1:
        out = np.empty((m, n), dtype=left.dtype)
        with single_threaded_blas():
            _matmul_rows(np.ascontiguousarray(left), _contiguous(right), out, parts)
        return out
    col_parts = row_parts(n)
    if col_parts > 1:
        out_t = np.empty((n, m), dtype=left.dtype)
        with single_threaded_blas():
            _matmul_rows(np.ascontiguousarray(right.T), _contiguous(left.T), out_t, col_parts)
        return np.ascontiguousarray(out_t.T)
    return left @ right
