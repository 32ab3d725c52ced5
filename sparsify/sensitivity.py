"""Empirical sensitivity ``s_ij = max_x g_ij(x)`` (DESIGN §2 items 1–5).

Public function :func:`sensitivity`, fast path ``_sensitivity_layer`` and its
Numba kernel ``_max_times``; the readable twin is
:func:`sparsify.reference.sensitivity_layer`. docs/performance.md explains the
kernel's design and measured speed.

Fast-path algebra. For ``W_ij > 0``, ``g_ij(x) = W_ij * A_xj / Z+_xi``, so
``s_ij = W_ij * max_x (A_xj * r+_xi)`` with ``r+ = 1/Z+`` (0 where ``Z+ = 0``);
likewise for ``W_ij < 0`` with ``|W_ij|`` and ``r- = 1/|Z-|``. Both parts of
``Z`` come from one product with the stacked weights ``[W+; W-]``. The
max-times product ``R_ij = max_x r^{sign W_ij}_xi A_xj`` has GEMM shape and runs
in the kernel, which never materialises the (points x out x in) tensor of ``g``.

Threads. All parallel work of :func:`sensitivity` runs on Numba's threads: the
products (``Z`` and the trace's forward passes) are fixed row blocks of
single-threaded BLAS calls (:mod:`sparsify._blas`), so no BLAS worker thread
spins beside the kernel, and no result depends on a thread count.

Streaming. S is processed in blocks of ``chunk_size`` consecutive points,
counted over the whole of S (a block may join the end of one user batch to the
start of the next). Every block is traced, multiplied and reduced the same way
whatever batches S arrived in, and a maximum does not depend on the order or
grouping of its terms, so the result is bit-identical for every split of S into
batches. The running state per layer is one array ``R`` shaped like ``W``:
memory does not grow with |S|.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _blas
from ._blas import row_block, row_parts, single_threaded_blas
from ._config import njit, prange

#: points per block of S (see "Streaming" above); results are bit-identical for
#: every split of S into batches at a fixed chunk size.
DEFAULT_CHUNK_SIZE = 512

#: cache tiles of the max-times kernel: neurons per parallel task (``tile_i``),
#: inputs per task (``tile_j``, at most ``_TILE_J_CAPACITY``; None: the whole row
#: up to that, so layers with at most 1024 inputs need no packed copy of A) and
#: points per block kept in cache while a task sweeps its neurons (``tile_x``).
#: Passed to the kernel as arguments; docs/performance.md shows how they were chosen.
DEFAULT_TILES = {"tile_i": 16, "tile_j": None, "tile_x": 512}

#: size of the kernel's four stack buffers (elements). A structural constant,
#: not a tunable: a stack buffer's size must be known when the kernel compiles.
_TILE_J_CAPACITY = 1024


# --- a stack buffer for the kernel's accumulators ------------------------------
@intrinsic
def _stack_buffer(typingctx, size, dtype):
    """A 1-D C array of ``size`` (a compile-time constant) elements on the stack.

    LLVM knows that a stack buffer cannot overlap any argument array, so the
    loop that updates it vectorises without run-time overlap checks (Numba gives
    array arguments no ``noalias``). The buffer lives in the entry block of the
    enclosing function and holds garbage until written.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value
    arrty = types.Array(dtype.dtype, 1, "C")

    def codegen(context, builder, sig, args):
        elem = context.get_value_type(dtype.dtype)
        data = cgutils.alloca_once(builder, elem, size=context.get_constant(types.intp, n))
        ary = context.make_array(arrty)(context, builder)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(elem))
        context.populate_array(
            ary,
            data=data,
            shape=cgutils.pack_array(builder, [context.get_constant(types.intp, n)]),
            strides=cgutils.pack_array(builder, [itemsize]),
            itemsize=itemsize,
            meminfo=None,
        )
        return ary._getvalue()

    return arrty(size, dtype), codegen


if numba.config.DISABLE_JIT:  # kernels run as plain Python: an ordinary array will do
    def _stack_buffer(size, dtype):  # noqa: F811
        return np.empty(size, dtype)


# --- the max-times kernel ----------------------------------------------------------
@njit(parallel=True, fastmath=True)
def _max_times(Ap, rT, W, R, tile_i, tile_j, tile_x, mask_dtype):
    """``R[i, j] = max(R[i, j], max_x A[x, j] * r[side, i, x])``, side = + if ``W[i, j] > 0`` else -.

    Ap: (n_tiles, n_points, tile_j) the input block A >= 0 packed in column tiles
    (``Ap[t, x, :] = A[x, t*tile_j : (t+1)*tile_j]``, zero-padded);
    rT: (2, n_out, n_points) reciprocals ``r+`` and ``r-`` (>= 0), point index last;
    W: (n_out, n_in) weights (only their signs are read); R: (n_out, n_in) running
    maxima, updated in place. ``tile_j <= _TILE_J_CAPACITY``; ``mask_dtype``: the
    signed integer dtype of A's width (int64 for float64, int32 for float32).

    Parallel over (neuron tile, input tile) tasks; each task owns its block of
    ``R``, so no two threads write one entry and the result does not depend on
    the thread count. Inside a task, a step handles 2 neurons x 4 points for a
    run of ``tile_j`` contiguous inputs. The side is chosen per element, not
    computed twice: an integer mask per neuron (-1 where ``W > 0``, else 0, of
    A's width, built once per block) selects ``r+`` or ``r-`` with a vector blend
    that reads the mask's sign bit directly (no compare), so each
    (neuron, input, point) costs one blend, one multiply and one max. The inner
    ``j`` loop is contiguous and vectorised by LLVM into vblendvpd/vmulpd/vmaxpd
    (ps for float32) on full vector registers; each accumulator load/store is
    shared by 4 points. Odd neuron and point counts repeat the last neuron or
    point, which a maximum ignores.
    """
    n_tiles, n_points = Ap.shape[0], Ap.shape[1]
    n_out, n_in = R.shape
    n_itiles = (n_out + tile_i - 1) // tile_i
    for task in prange(n_itiles * n_tiles):
        it = task // n_tiles
        jt = task - it * n_tiles
        i_lo = it * tile_i
        i_hi = min(i_lo + tile_i, n_out)
        j0 = jt * tile_j
        width = min(tile_j, n_in - j0)
        panel = Ap[jt]
        # accumulators and sign masks of neurons a and b over `width` inputs
        acc_a = _stack_buffer(_TILE_J_CAPACITY, Ap.dtype)
        acc_b = _stack_buffer(_TILE_J_CAPACITY, Ap.dtype)
        neg_a = _stack_buffer(_TILE_J_CAPACITY, mask_dtype)
        neg_b = _stack_buffer(_TILE_J_CAPACITY, mask_dtype)
        for x_lo in range(0, n_points, tile_x):
            x_hi = min(x_lo + tile_x, n_points)
            for ia in range(i_lo, i_hi, 2):
                ib = min(ia + 1, i_hi - 1)
                Ra = R[ia, j0:]
                Rb = R[ib, j0:]
                Wa = W[ia, j0:]
                Wb = W[ib, j0:]
                for j in range(width):
                    acc_a[j] = Ra[j]
                    acc_b[j] = Rb[j]
                    neg_a[j] = -1 if Wa[j] > 0 else 0  # < 0 (sign bit set) selects r+
                    neg_b[j] = -1 if Wb[j] > 0 else 0
                rpa = rT[0, ia]
                rna = rT[1, ia]
                rpb = rT[0, ib]
                rnb = rT[1, ib]
                for x in range(x_lo, x_hi, 4):
                    x1 = min(x + 1, x_hi - 1)
                    x2 = min(x + 2, x_hi - 1)
                    x3 = min(x + 3, x_hi - 1)
                    a0 = panel[x]
                    a1 = panel[x1]
                    a2 = panel[x2]
                    a3 = panel[x3]
                    pa0, pa1, pa2, pa3 = rpa[x], rpa[x1], rpa[x2], rpa[x3]
                    na0, na1, na2, na3 = rna[x], rna[x1], rna[x2], rna[x3]
                    pb0, pb1, pb2, pb3 = rpb[x], rpb[x1], rpb[x2], rpb[x3]
                    nb0, nb1, nb2, nb3 = rnb[x], rnb[x1], rnb[x2], rnb[x3]
                    for j in range(width):
                        v0 = a0[j]
                        v1 = a1[j]
                        v2 = a2[j]
                        v3 = a3[j]
                        # the old value sits inside the max tree, not at its root:
                        # `acc = max(m, acc)` would be turned into a masked store
                        pos = neg_a[j] < 0
                        acc_a[j] = max(max(acc_a[j], v0 * (pa0 if pos else na0)),
                                       max(v1 * (pa1 if pos else na1),
                                           max(v2 * (pa2 if pos else na2), v3 * (pa3 if pos else na3))))
                        pos = neg_b[j] < 0
                        acc_b[j] = max(max(acc_b[j], v0 * (pb0 if pos else nb0)),
                                       max(v1 * (pb1 if pos else nb1),
                                           max(v2 * (pb2 if pos else nb2), v3 * (pb3 if pos else nb3))))
                for j in range(width):
                    Ra[j] = acc_a[j]
                    Rb[j] = acc_b[j]


# --- one layer: running maxima over blocks of S --------------------------------------
@njit(parallel=True, fastmath=True)
def _z_reciprocals(stacked, AT, r, parts):
    """``r = 1/|stacked @ AT|`` where that is finite, else 0; r: (rows of stacked, points).

    One BLAS call per row block (blocks as in :func:`sparsify._blas.row_block`),
    run in parallel on Numba's threads, each followed by the reciprocals of its
    rows while they are in cache. ``Z = 0`` means the side has no mass at that
    point, and ``1/|Z|`` overflows only for subnormal ``Z``, whose terms are
    subnormal products that have already lost their relative precision; an
    overflowing ``Z = inf`` gives 0 as well (``W A / inf = 0`` in the reference).
    All three contribute nothing (``g = 0``).
    """
    for p in prange(parts):
        lo, hi = row_block(stacked.shape[0], parts, p)
        Z = r[lo:hi]
        np.dot(stacked[lo:hi], AT, Z)  # Z in place, then its reciprocals
        for i in range(hi - lo):
            for x in range(Z.shape[1]):
                q = 1 / abs(Z[i, x])  # inf for 0 and for subnormal Z
                Z[i, x] = q if q < np.inf else 0


def _side_reciprocals(stacked: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``r[0] = 1/Z+`` and ``r[1] = 1/|Z-|`` (0 where not finite), shape (2, n_out, points).

    One GEMM with the stacked weights ``[W+; W-]`` gives both parts of ``Z``
    (rows of ``Z+`` then ``Z-``), in :func:`sparsify._blas.row_parts` blocks.
    Run it inside :func:`sparsify._blas.single_threaded_blas`.
    """
    rows, points = stacked.shape[0], A.shape[0]
    r = np.empty((rows, points), dtype=A.dtype)
    _z_reciprocals(stacked, A.T, r, row_parts(rows))
    return r.reshape(2, rows // 2, points)


def _pack_columns(A: np.ndarray, tile_j: int) -> np.ndarray:
    """``Ap[t, x, :] = A[x, t*tile_j : (t+1)*tile_j]``, zero-padded: each column tile contiguous.

    With one tile the kernel reads only ``n_in`` entries of a row, so a
    C-contiguous ``A`` is passed as it is (a view, no copy).
    """
    n_points, n_in = A.shape
    n_tiles = -(-n_in // tile_j)
    if n_tiles == 1 and A.flags.c_contiguous:
        return A.reshape(1, n_points, n_in)
    Ap = np.zeros((n_tiles, n_points, tile_j), dtype=A.dtype)
    for t in range(n_tiles):
        cols = A[:, t * tile_j:(t + 1) * tile_j]
        Ap[t, :, :cols.shape[1]] = cols
    return Ap


class _LayerMaxima:
    """Running ``R_ij = max_x r^{sign W_ij}_xi A_xj`` of one layer over blocks of S."""

    def __init__(self, W: np.ndarray, tiles: dict):
        self.W = np.ascontiguousarray(W)
        n_out = W.shape[0]
        self.stacked = np.empty((2 * n_out, W.shape[1]), dtype=W.dtype)  # [W+; W-]
        np.maximum(W, 0, out=self.stacked[:n_out])
        np.minimum(W, 0, out=self.stacked[n_out:])
        self.R = np.zeros(W.shape, dtype=W.dtype)
        self.tiles = dict(tiles)
        self.mask_dtype = np.dtype(np.int64 if W.dtype.itemsize == 8 else np.int32)  # see _max_times
        if self.tiles["tile_j"] is None:
            self.tiles["tile_j"] = _TILE_J_CAPACITY

    def update(self, A: np.ndarray) -> None:
        """Fold one block ``A`` (points x n_in, finite) into the running maxima.

        Sign split (DESIGN §2 item 1), decided per block: a block with a negative
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
        if A.min() < 0:
            self._update_nonnegative(np.maximum(A, 0))
            self._update_nonnegative(np.maximum(-A, 0))
        else:
            self._update_nonnegative(A)

    def _update_nonnegative(self, A: np.ndarray) -> None:
        r = _side_reciprocals(self.stacked, A)
        Ap = _pack_columns(A, self.tiles["tile_j"])
        _max_times(Ap, r, self.W, self.R, self.tiles["tile_i"], self.tiles["tile_j"], self.tiles["tile_x"],
                   self.mask_dtype)

    def result(self) -> np.ndarray:
        """``s = |W| * R``, clamped to 1 and without negative zeros."""
        s = np.empty_like(self.R)
        _finish(self.W, self.R, s)
        return s


@njit(parallel=True)  # no fast-math: "nsz" would drop the + 0 below
def _finish(W, R, s):
    """``s = min(|W| * R, 1) + 0`` in one pass.

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
        if key == "tile_j" and value is None:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"tiles[{key!r}]: expected a positive integer, got {value!r}.")
        out[key] = int(value)
    if out["tile_j"] is not None and out["tile_j"] > _TILE_J_CAPACITY:
        raise ValueError(
            f"tiles['tile_j']: at most {_TILE_J_CAPACITY} (the kernel's stack buffers), got {out['tile_j']}."
        )
    return out


def _check_chunk_size(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(
            f"chunk_size: expected a positive integer number of points, got {chunk_size!r}; "
            f"the default is {DEFAULT_CHUNK_SIZE}."
        )
    return int(chunk_size)


def _sensitivity_layer(A: np.ndarray, W: np.ndarray, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                       tiles: dict | None = None) -> np.ndarray:
    """Fast ``s`` for one layer; ``A`` (points x n_in, may be signed) and ``W`` validated, one dtype."""
    acc = _LayerMaxima(W, _check_tiles(tiles))
    with single_threaded_blas():
        for start in range(0, A.shape[0], chunk_size):
            acc.update(np.ascontiguousarray(A[start:start + chunk_size]))
    return acc.result()


# --- S as an array, a memory map or an iterable of batches ------------------------------
def is_one_array(X_S) -> bool:
    """True when S is one array of points (an ndarray, a memory map, or nested lists of
    numbers), False when it is a sequence or iterable of 2-D batches."""
    if isinstance(X_S, np.ndarray) or hasattr(X_S, "__array_interface__"):
        return True
    return isinstance(X_S, (list, tuple)) and not all(np.ndim(b) == 2 for b in X_S)


def _batches(network, X_S, chunk_size: int):
    """Validated 2-D batches of S in the network's dtype, read lazily.

    An array (a memory-mapped ``.npy`` included) is read ``chunk_size`` rows at
    a time, so only one block is in memory. A list or tuple of 2-D arrays, or
    any other iterable (a generator), is a sequence of batches; a list of
    numbers per point is one array.
    """
    if isinstance(X_S, (str, bytes, dict)):
        raise TypeError(
            f"X_S: expected an array of shape (n_points, {network.n_in}) or an iterable of such "
            f"batches, got {type(X_S).__name__}."
        )
    if is_one_array(X_S) and isinstance(X_S, (list, tuple)):
        X_S = network.check_input(X_S, "X_S")  # nested lists of numbers: one array
    if is_one_array(X_S):
        X = np.asarray(X_S)
        if X.ndim != 2 or X.shape[1] != network.n_in:
            # shape only: do not read (a memory-mapped) S just to refuse it
            if X.ndim == 2:
                raise ValueError(
                    f"X_S: has {X.shape[1]} features per point but the network's first layer takes "
                    f"{network.n_in} (shape {X.shape}, expected (n_points, {network.n_in}))."
                )
            raise ValueError(f"X_S: expected shape (n_points, {network.n_in}), got {X.shape}.")
        n = X.shape[0]
        for start in range(0, n, chunk_size):
            name = "X_S" if n <= chunk_size else f"X_S[{start}:{min(start + chunk_size, n)}]"
            yield network.check_input(X[start:start + chunk_size], name)
        return
    if not isinstance(X_S, Iterable):
        raise TypeError(
            f"X_S: expected an array of shape (n_points, {network.n_in}) or an iterable of such "
            f"batches, got {type(X_S).__name__}."
        )
    for k, batch in enumerate(X_S):
        yield network.check_input(batch, f"X_S batch {k}")


def _fixed_blocks(batches, size: int):
    """Regroup batches into blocks of exactly ``size`` consecutive points (the last may be shorter)."""
    pending, n_pending = [], 0
    for batch in batches:
        start, n = 0, batch.shape[0]
        while start < n:
            if n_pending == 0 and n - start >= size:
                yield batch[start:start + size]
                start += size
                continue
            take = min(size - n_pending, n - start)
            pending.append(batch[start:start + take])
            n_pending += take
            start += take
            if n_pending == size:
                yield np.concatenate(pending, axis=0)
                pending, n_pending = [], 0
    if n_pending:
        yield np.concatenate(pending, axis=0)


def _layer_inputs_of_block(network, X):
    """The trace of one validated block: the steps of ``Network.trace``, lazily,
    and without the last layer's forward pass, whose output no sensitivity needs."""
    a = X
    last = len(network.layers) - 1
    for k, layer in enumerate(network.layers):
        yield layer.input_matrix(a)
        if k < last:
            a = layer.forward(a, matmul=_blas.matmul)  # row blocks on Numba's threads


def sensitivity(network, X_S, *, chunk_size: int = DEFAULT_CHUNK_SIZE, tiles: dict | None = None) -> list:
    """Empirical sensitivities of every prunable layer of ``network`` on ``X_S``.

    Parameters
    ----------
    network : sparsify.Network
    X_S : array (n_points, n_in), memory-mapped array, or iterable of such batches
        The batch S that defines the importance distribution; at least one point.
        A list/tuple of 2-D arrays or a generator is consumed batch by batch and
        a (memory-mapped) array ``chunk_size`` rows at a time, so memory stays flat
        as |S| grows.
    chunk_size : int
        Points per internal block. For a fixed value the result is bit-identical
        however S is split into batches (see the module docstring).
    tiles : dict, optional
        Cache tiles of the kernel (keys of :data:`DEFAULT_TILES`); they change
        speed only, never the result.

    Returns
    -------
    list of arrays, one per prunable layer, each shaped like its ``weight`` and of
    its dtype, with ``0 <= s <= 1``; ``s_ij = max_{x in S} W_ij a_j(x) / Z^{sign W_ij}_i(x)``
    (DESIGN §2 item 5).

    Raises
    ------
    ValueError
        If S has no points, a batch has the wrong shape, a value is NaN or
        infinite, or the forward pass overflows.
    """
    from .network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    chunk_size = _check_chunk_size(chunk_size)
    tiles = _check_tiles(tiles)
    state = [_LayerMaxima(layer.weight, tiles) if layer.prunable else None for layer in network.layers]
    n_points = 0
    with single_threaded_blas():  # all parallel work on Numba's threads (see sparsify._blas)
        for X in _fixed_blocks(_batches(network, X_S, chunk_size), chunk_size):
            n_points += X.shape[0]
            for k, (A, acc) in enumerate(zip(_layer_inputs_of_block(network, X), state)):
                if not np.all(np.isfinite(A)):
                    raise ValueError(
                        f"X_S: the forward pass overflowed: the input of layer {k} has NaN or infinite "
                        "values; rescale the data or the weights."
                    )
                if acc is not None:
                    acc.update(A)
    if n_points == 0:
        raise ValueError(
            "X_S: the batch S is empty; sensitivities need at least one input point "
            "(the authors use about 3 ln(8 eta eta*/delta) points)."
        )
    return [acc.result() for acc in state if acc is not None]


def layer_inputs(network, X_S) -> list:
    """Validate S (an array) and return the input matrix of each layer (the trace,
    as ``network.trace``, with the products of :func:`sparsify._blas.matmul`)."""
    from .network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    X = network.check_input(X_S, "X_S")
    if X.shape[0] == 0:
        raise ValueError(
            "X_S: the batch S is empty; sensitivities need at least one input point "
            "(the authors use about 3 ln(8 eta eta*/delta) points)."
        )
    return list(_layer_inputs_of_block(network, X))
