"""Empirical sensitivity ``s_ij = max_x g_ij(x)`` (docs/theory.md S1–S5).

Public function :func:`sensitivity`, fast path ``_sensitivity_layer`` and its
Numba kernel :func:`sparsify._maxtimes.max_times` (``_max_times`` here); the readable twin is
:func:`sparsify.reference.sensitivity_layer`. docs/performance.md explains the
kernel's design and measured speed.

Fast-path algebra. For ``W_ij > 0``, ``g_ij(x) = W_ij * A_xj / Z+_xi``, so
``s_ij = W_ij * max_x (A_xj * r+_xi)`` with ``r+ = 1/Z+`` (0 where ``Z+ = 0``);
likewise for ``W_ij < 0`` with ``|W_ij|`` and ``r- = 1/|Z-|``. Both parts of
``Z`` come from one product with the stacked weights ``[W+; W-]``. The
max-times product ``R_ij = max_x r^{sign W_ij}_xi A_xj`` has GEMM shape and runs
in the kernel, which never materialises the (points x out x in) tensor of ``g``.
Both products read the block of points transposed, ``AT`` (inputs x points),
and write ``r`` with points last, so the kernel runs over points in its vector
lanes and picks the side of edge ``(i, j)`` once, as the row of ``r`` it reads.

Threads. All parallel work of :func:`sensitivity` runs on Numba's threads: the
products (``Z`` and the trace's forward passes) are fixed row blocks of
single-threaded BLAS calls (:mod:`sparsify._blas`), so no BLAS worker thread
spins beside the kernel, and no result depends on a thread count.

Streaming. S is processed in blocks of ``chunk_size`` consecutive points,
counted over the whole of S (a block may join the end of one user batch to the
start of the next). Every block is traced, multiplied and reduced the same way
whatever batches S arrived in, and a maximum does not depend on the order or
grouping of its terms, so the result is bit-identical for every split of S into
batches. The running state per layer is one array ``R`` shaped like ``W``
(padded to whole register tiles): memory does not grow with |S|.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _blas, _scratch
from ._blas import row_block, row_parts, single_threaded_blas
from ._config import njit, prange, serial_below
from ._maxtimes import POINT_MULTIPLE, TILE_I, TILE_J
from ._maxtimes import max_times as _max_times
from ._validation import check_scalar
from ._streaming import _batches, _fixed_blocks, _layer_inputs_of_block, is_one_array  # noqa: F401

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_TILES", "HeadBlock", "Z_ROWS_PER_PART", "head_block", "is_one_array",
           "sensitivity", "sensitivity_and_head", "stack_sides", "z_parts"]

#: points per block of S (see "Streaming" above); results are bit-identical for
#: every split of S into batches at a fixed chunk size.
DEFAULT_CHUNK_SIZE = 512

#: cache tiles of the max-times kernel: neurons (``tile_i``) and inputs
#: (``tile_j``) of one parallel task, and points per cache block (``tile_x``), so
#: that the ``r`` rows of one register tile (12 rows of ``tile_x`` points) stay in
#: L1 while the task sweeps its inputs, and the task's part of ``AT`` in L2 while
#: it sweeps its neurons. They are rounded up to whole register tiles (``TILE_I``
#: neurons, ``TILE_J`` inputs, ``POINT_MULTIPLE`` points), change speed only, never
#: a bit, and are passed to the kernel as arguments; docs/performance.md shows
#: how they were chosen.
DEFAULT_TILES = {"tile_i": 24, "tile_j": 128, "tile_x": 256}

#: the Z product ``[W+; W-] @ AT`` is split into row blocks of at most this many
#: rows (fixed by the shape, so no bit depends on a thread count); larger than
#: :data:`sparsify._blas.ROWS_PER_PART` because fewer, larger BLAS calls measured
#: 5-15% faster here for the 600-row Z of a 300-neuron layer (2 blocks instead of 4)
Z_ROWS_PER_PART = 512


def z_parts(n_rows: int) -> int:
    """Row blocks of a ``Z`` product with ``n_rows`` rows (fixed by the shape; see
    :data:`Z_ROWS_PER_PART`); the report's ``Ẑ`` uses the same blocks."""
    return row_parts(n_rows, Z_ROWS_PER_PART)


#: one cache line: each row of ``AT`` and ``r`` is padded by this much, so that
#: rows of 512 float64 points (4 KiB apart) do not all fall into the same L1 sets
_ROW_PAD_BYTES = 64


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@njit(parallel=True)
def _transpose_part(A, AT, part):
    """``AT[j, x]`` = ``A[x, j]`` (part 0), ``max(A[x, j], 0)`` (part +1) or ``max(-A[x, j], 0)`` (part -1).

    AT: (>= n_in, >= n_points); its rows and columns beyond A's are set to 0.
    Parallel over blocks of 32 rows of AT, each written in 32 x 32 tiles.
    """
    n_points, n_in = A.shape
    rows, cols = AT.shape
    for jb in prange((rows + 31) // 32):
        j_lo = jb * 32
        j_hi = min(j_lo + 32, rows)
        j_in = min(j_hi, n_in)
        for x_lo in range(0, n_points, 32):
            x_hi = min(x_lo + 32, n_points)
            for j in range(j_lo, j_in):
                for x in range(x_lo, x_hi):
                    v = A[x, j]
                    AT[j, x] = v if part == 0 else (max(v, 0) if part > 0 else max(-v, 0))
        for j in range(j_lo, j_hi):  # padding
            AT[j, n_points if j < n_in else 0:] = 0


# --- one layer: running maxima over blocks of S --------------------------------------
@njit(parallel=True, fastmath=True)
def _z_reciprocals(stacked, AT, r, parts, Z_out=None):
    """``r = 1/|stacked @ AT|`` where that is finite, else 0; r: (rows of stacked, points).

    One BLAS call per row block (blocks as in :func:`sparsify._blas.row_block`),
    run in parallel on Numba's threads, each followed by the reciprocals of its
    rows while they are in cache. ``Z = 0`` means the side has no mass at that
    point, and ``1/|Z|`` overflows only for subnormal ``Z``, whose terms are
    subnormal products that have already lost their relative precision; an
    overflowing ``Z = inf`` gives 0 as well (``W A / inf = 0`` in the reference).
    All three contribute nothing (``g = 0``). ``Z_out`` (optional, shaped like
    ``r``) receives ``Z`` itself (``prune``'s report measures errors against it).
    """
    for p in prange(parts):
        lo, hi = row_block(stacked.shape[0], parts, p)
        Z = r[lo:hi]
        np.dot(stacked[lo:hi], AT, Z)  # Z in place, then its reciprocals
        if Z_out is not None:
            Z_out[lo:hi] = Z
        for i in range(hi - lo):
            for x in range(Z.shape[1]):
                q = 1 / abs(Z[i, x])  # inf for 0 and for subnormal Z
                Z[i, x] = q if q < np.inf else 0


class HeadBlock(NamedTuple):
    """One block (part) of the points kept for ``prune``'s report, as the sensitivity step saw it.

    ``AT`` (padded inputs x padded points) the block's (sign-part of the) inputs,
    transposed; ``Z`` (2 padded neurons x padded points) the product of the stacked
    weights with ``AT`` (row ``2i`` for ``Z+_i``, ``2i+1`` for ``Z-_i``), both in the
    padded layout of :class:`_LayerMaxima`; only the first ``points`` columns
    are points of the head.
    """

    AT: np.ndarray
    Z: np.ndarray
    points: int


class _LayerMaxima:
    """Running ``R_ij = max_x r^{sign W_ij}_xi A_xj`` of one layer over blocks of S.

    Padded to whole register tiles: ``n_out`` up to a multiple of ``TILE_I``,
    ``n_in`` of ``TILE_J``, with zero weights, whose rows of ``r`` and ``AT`` are
    zero; :meth:`result` returns the unpadded ``s``.
    """

    def __init__(self, W: np.ndarray, tiles: dict):
        self.W = np.ascontiguousarray(W)
        n_out, n_in = W.shape
        self.n_out = _round_up(n_out, TILE_I)
        self.n_in = _round_up(n_in, TILE_J)
        # rows W+_i, W-_i interleaved, padded to 2 self.n_out rows and self.n_in columns
        # working arrays from this thread's scratch pool (pages already mapped; see _scratch),
        # returned to it by result()
        self.stacked = _scratch.take((2 * self.n_out, self.n_in), W.dtype)
        with serial_below(self.stacked.size * POINT_MULTIPLE, W.dtype):  # small layers: on this thread
            stack_sides(self.W, self.W, self.stacked)
        self.R = _scratch.take((self.n_out, self.n_in), W.dtype)
        self.R.fill(0)
        self.tiles = {"tile_i": _round_up(tiles["tile_i"], TILE_I), "tile_j": _round_up(tiles["tile_j"], TILE_J),
                      "tile_x": _round_up(tiles["tile_x"], POINT_MULTIPLE)}
        self._pad = _ROW_PAD_BYTES // W.dtype.itemsize
        self._buffers = {}  # padded point count -> (AT, r), reused block after block
        #: the :class:`HeadBlock` of every part of a block folded with ``keep > 0``
        self.head: list = []

    def buffers(self, n_points: int):
        """``AT`` (n_in, P) and ``r`` (2 n_out, P) for a block of ``n_points``, P padded."""
        P = _round_up(n_points, POINT_MULTIPLE) + self._pad
        if P not in self._buffers:
            dt = self.W.dtype
            self._buffers[P] = (_scratch.take((self.n_in, P), dt), _scratch.take((2 * self.n_out, P), dt))
        return self._buffers[P]

    def update(self, A: np.ndarray, keep: int = 0) -> None:
        """Fold one block ``A`` (points x n_in, finite) into the running maxima; with
        ``keep > 0`` also append its first ``keep`` points to :attr:`head`.

        Sign split (docs/theory.md S1), decided per block: a block with a negative
        entry is replaced by its parts ``max(A, 0)`` and ``max(-A, 0)``. The
        design decides once for the whole of S, and a stream cannot know that in
        advance; both give the same maxima: splitting a nonnegative point yields
        the point itself plus an all-zero row, and an all-zero row has ``Z = 0``,
        hence ``r = 0`` and ``g = 0`` everywhere, which never raises a maximum.
        Each part goes through its own GEMM of the block's shape, so a
        nonnegative point gets the same bits in a split block as in an unsplit one.
        """
        if A.shape[0] == 0:
            return
        with serial_below(A.shape[0] * self.R.size, self.R.dtype):  # small blocks: on this thread, same bits
            if A.min() < 0:
                self._update_part(A, +1, keep)
                self._update_part(A, -1, keep)
            else:
                self._update_part(A, 0, keep)

    def _update_part(self, A: np.ndarray, part: int, keep: int = 0) -> None:
        """One GEMM and one max-times pass for ``A`` (part 0), ``max(A, 0)`` (+1) or ``max(-A, 0)`` (-1)."""
        AT, r = self.buffers(A.shape[0])
        _transpose_part(A, AT, part)
        if keep > 0:  # this block's first points are kept for prune's report
            Z = np.empty_like(r)
            _z_reciprocals(self.stacked, AT, r, z_parts(r.shape[0]), Z)
            self.head.append(HeadBlock(AT.copy(), Z, keep))
        else:
            _z_reciprocals(self.stacked, AT, r, z_parts(r.shape[0]))
        t = self.tiles
        # the row padding of AT and r (zeros) is left out of the kernel's blocks of points
        _max_times(AT, r, self.stacked, self.R, t["tile_i"], t["tile_j"], t["tile_x"],
                   n_points=_round_up(A.shape[0], POINT_MULTIPLE))

    def result(self) -> np.ndarray:
        """``s = |W| * R``, clamped to 1 and without negative zeros."""
        if self.R is None:
            raise RuntimeError("result() was already called: the working arrays went back to the scratch pool.")
        s = np.empty_like(self.W)
        with serial_below(self.R.size * POINT_MULTIPLE, self.R.dtype):
            _finish(self.W, self.R, s)
        _scratch.give_back(self.stacked, self.R, *(a for pair in self._buffers.values() for a in pair))
        self.stacked = self.R = None
        self._buffers = {}
        return s


def head_block(A: np.ndarray, W: np.ndarray) -> HeadBlock:
    """One :class:`HeadBlock` for the points ``A`` (points x n_in, nonnegative, W's dtype)
    of the layer with weights ``W``: ``A`` transposed and ``Z = [W+; W-] @ AT`` in the
    padded, interleaved layout and the row blocks of the sensitivity step (no max-times
    pass is run). The report measures errors on points given as an array with it."""
    A = np.ascontiguousarray(A, dtype=W.dtype)
    acc = _LayerMaxima(W, DEFAULT_TILES)
    AT, r = acc.buffers(A.shape[0])
    _transpose_part(A, AT, 0)
    Z = np.empty_like(r)
    with single_threaded_blas():
        _blas._matmul_rows(acc.stacked, AT, Z, z_parts(Z.shape[0]))
    return HeadBlock(AT, Z, A.shape[0])


@njit(parallel=True)
def stack_sides(W, V, out):
    """``out``: the sides of ``V`` by the sign of ``W``, interleaved, in one parallel pass:
    row ``2i`` is ``V_ij`` where ``W_ij > 0`` (else 0), row ``2i+1`` is ``V_ij`` where
    ``W_ij < 0``; zero-padded to ``out``'s shape. ``V = W`` gives ``W+_i`` and ``W-_i``
    (the stacked weights of the ``Z`` product); ``V = Ŵ`` the pruned sides the report
    compares with them."""
    n_out, n_in = W.shape
    rows, cols = out.shape[0] // 2, out.shape[1]
    for i in prange(rows):
        for j in range(cols):
            inside = i < n_out and j < n_in
            w = W[i, j] if inside else 0
            v = V[i, j] if inside else 0
            out[2 * i, j] = v if w > 0 else 0
            out[2 * i + 1, j] = v if w < 0 else 0


@njit(parallel=True)  # no fast-math: "nsz" would drop the + 0 below
def _finish(W, R, s):
    """``s = min(|W| * R, 1) + 0`` in one pass (R may be padded beyond W's shape).

    ``W * (A * (1/Z))`` can exceed ``W * A / Z = 1`` by an ulp, hence the clamp;
    adding 0 turns -0.0 into +0.0, so zero has one representation and bytes compare equal.
    """
    for i in prange(W.shape[0]):
        for j in range(W.shape[1]):
            s[i, j] = min(abs(W[i, j]) * R[i, j], 1) + 0


def _check_tiles(tiles) -> dict:
    if tiles is None:
        return dict(DEFAULT_TILES)
    if not isinstance(tiles, dict):
        raise TypeError(f"tiles: expected a dict like {DEFAULT_TILES}, got {type(tiles).__name__}.")
    out = dict(DEFAULT_TILES)
    for key, value in tiles.items():
        if key not in DEFAULT_TILES:
            raise ValueError(f"tiles: unknown key {key!r}; the keys are {sorted(DEFAULT_TILES)}.")
        out[key] = check_scalar(value, f"tiles[{key!r}]", kind="int", low=1)
    return out


def _sensitivity_layer(A: np.ndarray, W: np.ndarray, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       tiles: dict | None = None) -> np.ndarray:
    """Fast ``s`` for one layer; ``A`` (points x n_in, may be signed) and ``W`` validated, one dtype."""
    acc = _LayerMaxima(W, _check_tiles(tiles))
    with single_threaded_blas():
        for start in range(0, A.shape[0], chunk_size):
            acc.update(np.ascontiguousarray(A[start:start + chunk_size]))
    return acc.result()


# --- S as an array, a memory map or an iterable of batches ------------------------------
def sensitivity(network, X_S, *, patch_reduction: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                tiles: dict | None = None, dask=None) -> list:
    """Empirical sensitivities of every prunable layer of ``network`` on ``X_S``.

    Parameters
    ----------
    network : sparsify.Network
    X_S : array (n_points, *network.input_shape), memory-mapped array, or iterable of such batches
        The batch S that defines the importance distribution; at least one point.
        A list/tuple of batches or a generator is consumed batch by batch and
        a (memory-mapped) array ``chunk_size`` rows at a time, so memory stays flat
        as |S| grows.
    patch_reduction : {"max", "mean"}, optional
        How a convolution reduces ``g_ij(x, p)`` over the patches p of a point
        (docs/theory.md S15): ``"max"`` gives ``s_ij = max_x max_p g_ij(x, p)``,
        ``"mean"`` gives ``s_ij = max_x mean_p g_ij(x, p)``. Default "max".
        Dense layers ignore it.
    chunk_size : int
        Points per internal block. For a fixed value the result is bit-identical
        however S is split into batches (see the module docstring).
    tiles : dict, optional
        Cache tiles of the kernel (keys of :data:`DEFAULT_TILES`); they change
        speed only, never the result.
    dask : None, "local", "local:N", "tcp://HOST:PORT" or a distributed.Client
        Where the chunks of a ``dask.array`` S (or, when given, of an array S)
        run, one task per chunk (:mod:`sparsify.distributed`); bit-identical to
        the in-memory result.

    Returns
    -------
    list of arrays, one per prunable layer (``network.prunable_layers``), each shaped
    like its ``weight`` (4-D for a convolution) and of its dtype, with ``0 <= s <= 1``;
    ``s_ij = max_{x in S} W_ij a_j(x) / Z^{sign W_ij}_i(x)`` (docs/theory.md S5, S15).

    Raises
    ------
    ValueError
        If S has no points, a batch has the wrong shape, a value is NaN or
        infinite, or the forward pass overflows.
    """
    return sensitivity_and_head(network, X_S, 0, patch_reduction=patch_reduction, chunk_size=chunk_size,
                                tiles=tiles, dask=dask)[0]


def sensitivity_and_head(network, X_S, keep_points: int, *, patch_reduction: str | None = None,
                         chunk_size: int = DEFAULT_CHUNK_SIZE, tiles: dict | None = None, dask=None):
    """:func:`sensitivity`, |S|, and per layer the :class:`HeadBlock` list of the first
    ``keep_points`` points of S (the blocks, transposed inputs and ``Z`` the
    sensitivity step computes anyway; None when ``keep_points`` is 0). ``prune``'s
    report measures its errors on them, so S is traced and ``Z`` computed once (dense
    layers only; a convolution's head is empty)."""
    from ._sensitivity_conv import PATCH_REDUCTIONS, layer_state
    from ._validation import check_choice
    from .network import Network

    if dask is not None or type(X_S).__module__.split(".")[0] == "dask":  # a task per chunk, on Dask
        from . import distributed
        return distributed.sensitivity_and_head(network, X_S, keep_points, patch_reduction=patch_reduction,
                                                chunk_size=chunk_size, tiles=tiles, dask=dask)
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    chunk_size = check_scalar(chunk_size, f"chunk_size (points per block; default {DEFAULT_CHUNK_SIZE})",
                              kind="int", low=1)
    tiles = _check_tiles(tiles)
    patch_reduction = check_choice("max" if patch_reduction is None else patch_reduction, "patch_reduction",
                                   PATCH_REDUCTIONS)
    state = [layer_state(layer, shape, tiles, patch_reduction)
             for layer, shape in zip(network.prunable_layers, network.prunable_input_shapes)]
    n_points = 0
    with single_threaded_blas():  # all parallel work on Numba's threads (see sparsify._blas)
        for X in _fixed_blocks(_batches(network, X_S, chunk_size), chunk_size):
            take = min(X.shape[0], keep_points - n_points) if n_points < keep_points else 0
            n_points += X.shape[0]
            for k, (A, acc) in enumerate(zip(_layer_inputs_of_block(network, X), state)):
                if not np.all(np.isfinite(A)):
                    raise ValueError(
                        f"X_S: the forward pass overflowed: the input of layer {k} has NaN or infinite "
                        "values; rescale the data or the weights."
                    )
                acc.update(A, take)
    if n_points == 0:
        raise ValueError(
            "X_S: the batch S is empty; sensitivities need at least one input point "
            "(the authors use about 3 ln(8 eta eta*/delta) points)."
        )
    heads = [acc.head for acc in state] if keep_points > 0 else None
    return [acc.result() for acc in state], n_points, heads
