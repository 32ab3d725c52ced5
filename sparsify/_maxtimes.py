"""The max-times kernel of the sensitivity step and its register tile, written as LLVM vector code.

:func:`max_times` runs the whole product ``R_ij = max_x r^{sign W_ij}_xi A_xj`` of a
block of points in parallel tasks of register tiles; :func:`max_times_tile` is
the tile. (Both live in this one file because Numba's on-disk cache of a
function is invalidated by edits to its own file only.)

One call of :func:`max_times_tile` updates a tile of ``TILE_I x TILE_J``
running maxima (neurons ``i0 .. i0+TILE_I-1`` by inputs ``j0 .. j0+TILE_J-1``)
over the points ``x_lo .. x_hi-1``::

    R[i, j] = max(R[i, j], max_x AT[j, x] * r[row(i, j), x])

``AT`` is the layer's input block transposed (one row per input, points
contiguous) and ``r`` holds the reciprocals of every neuron and side (points
contiguous), interleaved: row ``2i`` is ``r+_i``, row ``2i+1`` is ``r-_i``. Edge
``(i, j)`` reads ``row(i, j) = 2i`` if ``W_ij > 0``, else ``2i + 1``, where the sign
is read from the stacked weights ``SW`` (rows ``2i = W+_i``, ``2i+1 = W-_i``, so
``SW[2i, j] > 0`` exactly when ``W_ij > 0``). The side is thus chosen once per
edge, by an address, not per point by a blend. (Interleaving keeps the 12 rows a
tile reads consecutive in memory; with all ``r+`` rows before all ``r-`` rows, the
two groups could fall into the same L1 sets.)

Why LLVM code. The loop runs over points, with the points in the vector lanes
(4 float64 or 8 float32 in 32 bytes, twice that in 64) and the accumulators of
the tile in vector registers for the whole run of points; per step it loads one
vector of each of the 2 input rows and, folded into each multiply, one vector of
the edge's ``r`` row: for the 6 x 2 tile, 12 multiplies and 12 maxima for 14 loads.

Vector width. The width is a compile-time constant of the tile: 32 bytes (AVX2
``ymm``, 16 registers, tile 6 x 2) or 64 bytes (AVX-512 ``zmm``, 32 registers,
tile 12 x 2), one parallel pass per width; :func:`max_times` runs the one
:func:`sparsify._config.vector_bytes` picks from the host's features (or the
``SPARSIFY_VECTOR_BITS`` override). Both widths give the same bits. Written as Numba
source, this loop is a reduction over points that LLVM's loop vectoriser keeps
scalar (float maxima are not reassociated without the "no NaNs" flag, which the
project does not set) or spills. Here the loop is emitted directly as LLVM IR
with vector types, through a Numba ``intrinsic``: generic IR, no
target-specific intrinsics, so it compiles for any CPU LLVM targets (vector
types wider than the hardware's are split by LLVM).

Exactness. Each term is one IEEE multiply ``AT[j, x] * r[row, x]``, the same
multiply as in the readable twin :func:`max_times_tile_py`, and the maximum of a
set does not depend on the order in which it is taken, so the kernel and its
twin give the same bits (``tests/test_maxtimes.py``). The maximum is
``acc > t ? acc : t``, which x86 executes as one ``vmaxpd``/``vmaxps``; inputs
are finite and nonnegative, so no NaN reaches it.

Under ``NUMBA_DISABLE_JIT=1`` :func:`max_times_tile` is the twin.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._config import njit, prange
from ._config import vector_bytes as vector_bytes_in_use

#: register tiles (neurons, inputs) per vector width in bytes: with AVX2's 16 ``ymm``
#: registers, 6 x 2 = 12 accumulators plus 2 input vectors; with AVX-512's 32 ``zmm``
#: registers, 12 x 2 = 24 accumulators plus 2 input vectors (structural constants:
#: the tile is unrolled when the kernel compiles)
REGISTER_TILES = {32: (6, 2), 64: (12, 2)}

#: the padded layout, the same for every vector width (so that the products around
#: the kernel see the same shapes and give the same bits whichever width runs):
#: ``n_out`` is padded to a multiple of TILE_I, ``n_in`` of TILE_J, the point
#: dimension of ``AT`` and ``r`` to a multiple of POINT_MULTIPLE (a whole 64-byte
#: vector of float32), all with zeros
TILE_I = 12
TILE_J = 2
POINT_MULTIPLE = 16

#: vector widths (bytes) the kernel is written for: 32 (AVX2 ``ymm``), 64 (AVX-512 ``zmm``)
VECTOR_WIDTHS = tuple(REGISTER_TILES)


def lanes(dtype, vector_bytes: int = 32) -> int:
    """Points per vector: 4 (float64) or 8 (float32) in 32 bytes, 8 or 16 in 64."""
    return vector_bytes // np.dtype(dtype).itemsize


def max_times_tile_py(AT, r, SW, R, i0, j0, x_lo, x_hi, n_i, n_j, vector_bytes=32):
    """Readable twin of :func:`max_times_tile` (same arguments, same bits)."""
    for a in range(n_i):
        for b in range(n_j):
            i, j = i0 + a, j0 + b
            row = 2 * i if SW[2 * i, j] > 0 else 2 * i + 1  # r+ for a positive weight, else r-
            terms = AT[j, x_lo:x_hi] * r[row, x_lo:x_hi]
            if terms.size:
                R[i, j] = max(R[i, j], terms.max())


def _is_c_float_matrix(ty) -> bool:
    return (isinstance(ty, types.Array) and ty.ndim == 2 and ty.layout == "C"
            and ty.dtype in (types.float32, types.float64))


@intrinsic
def max_times_tile(typingctx, AT, r, SW, R, i0, j0, x_lo, x_hi, n_i, n_j, vector_bytes):
    """``R[i, j] = max(R[i, j], max_{x_lo <= x < x_hi} AT[j, x] * r[row(i, j), x])`` on one tile.

    AT: (inputs, points) and r: (2 neurons, points), C-contiguous, one float
    dtype, the same number of points, a multiple of the vector width; SW:
    (2 neurons, inputs), the interleaved stacked weights, whose even rows give
    the side of each edge (module docstring); R: (neurons, inputs), the running
    maxima, updated in place;
    ``i0, j0``: the tile's first neuron and input (the tile must lie inside R);
    ``x_lo, x_hi``: multiples of the vector width; ``n_i, n_j``: the tile's
    shape, and ``vector_bytes`` (32 or 64) its vector width, compile-time
    integer literals. No bounds are checked: the caller
    (:func:`max_times`) guarantees them.
    """
    if not all(isinstance(n, types.IntegerLiteral) for n in (n_i, n_j, vector_bytes)):
        return None
    if not all(_is_c_float_matrix(a) for a in (AT, r, SW, R)) or not (AT.dtype == r.dtype == SW.dtype == R.dtype):
        return None
    I, J, V = n_i.literal_value, n_j.literal_value, vector_bytes.literal_value
    dtype = AT.dtype
    sig = types.void(AT, r, SW, R, i0, j0, x_lo, x_hi, n_i, n_j, vector_bytes)

    def codegen(context, builder, sig, args):
        intp_t = types.intp
        intp = context.get_value_type(intp_t)
        i32 = ir.IntType(32)

        def const(v):
            return ir.Constant(intp, v)

        def as_intp(k):
            return context.cast(builder, args[k], sig.args[k], intp_t)

        ft = context.get_value_type(dtype)
        itemsize = context.get_abi_sizeof(ft)
        n_lanes = V // itemsize
        vt = ir.VectorType(ft, n_lanes)
        arrays = [context.make_array(sig.args[k])(context, builder, args[k]) for k in range(4)]
        at, rr, sw, acc = arrays
        n_points = builder.extract_value(at.shape, 1)  # = r's row length
        n_cols = builder.extract_value(acc.shape, 1)   # = SW's row length
        zero = ir.Constant(ft, 0.0)
        i0v, j0v, x_lo_v, x_hi_v = (as_intp(k) for k in range(4, 8))

        def vload(base, x):
            return builder.load(builder.bitcast(builder.gep(base, [x]), vt.as_pointer()), align=itemsize)

        def vmax(a, b):  # a > b ? a : b, one vmaxpd/vmaxps on x86
            return builder.select(builder.fcmp_ordered(">", a, b), a, b)

        # entry: the tile's input rows, the r row of each edge, the old maxima broadcast
        a_rows = [builder.gep(at.data, [builder.mul(builder.add(j0v, const(b)), n_points)]) for b in range(J)]
        r_rows, cells, start = [], [], []
        splat = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
        for a in range(I):
            i = builder.add(i0v, const(a))
            two_i = builder.add(i, i)
            offset = builder.mul(i, n_cols)
            sw_offset = builder.mul(two_i, n_cols)
            for b in range(J):
                j = builder.add(j0v, const(b))
                k = builder.add(offset, j)
                positive = builder.fcmp_ordered(">", builder.load(builder.gep(sw.data, [builder.add(sw_offset, j)])), zero)
                which = builder.select(positive, two_i, builder.add(two_i, const(1)))
                r_rows.append(builder.gep(rr.data, [builder.mul(which, n_points)]))
                cell = builder.gep(acc.data, [k])
                cells.append(cell)
                one = builder.insert_element(ir.Constant(vt, ir.Undefined), builder.load(cell), ir.Constant(i32, 0))
                start.append(builder.shuffle_vector(one, one, splat))

        entry = builder.block
        header = builder.append_basic_block("maxtimes.header")
        body = builder.append_basic_block("maxtimes.body")
        done = builder.append_basic_block("maxtimes.done")
        builder.branch(header)

        builder.position_at_end(header)
        x = builder.phi(intp)
        x.add_incoming(x_lo_v, entry)
        accs = []
        for value in start:
            phi = builder.phi(vt)
            phi.add_incoming(value, entry)
            accs.append(phi)
        builder.cbranch(builder.icmp_signed("<", x, x_hi_v), body, done)

        # body: one vector of points; 2 input loads, then a multiply (r load folded) and a max per edge
        builder.position_at_end(body)
        a_vecs = [vload(p, x) for p in a_rows]
        new = [vmax(accs[k], builder.fmul(a_vecs[k % J], vload(r_rows[k], x))) for k in range(I * J)]
        x.add_incoming(builder.add(x, const(n_lanes)), body)
        for phi, value in zip(accs, new):
            phi.add_incoming(value, body)
        builder.branch(header)

        # done: the maximum over the lanes of each accumulator, stored back
        builder.position_at_end(done)
        for phi, cell in zip(accs, cells):
            v, width = phi, n_lanes
            while width > 1:
                width //= 2
                lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, width), list(range(width))))
                hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, width), list(range(width, 2 * width))))
                v = vmax(lo, hi)
            builder.store(builder.extract_element(v, ir.Constant(i32, 0)), cell)
        return context.get_dummy_value()

    return sig, codegen


if numba.config.DISABLE_JIT:  # kernels run as plain Python: the twin is the kernel
    max_times_tile = max_times_tile_py  # noqa: F811


# --- the whole pass: parallel tasks of register tiles ------------------------------------
def _make_pass(vector_bytes: int):
    """The whole pass for one vector width. The width and its register tile are closure
    constants, which Numba freezes into the code as literals (the tile needs them at
    compile time); each width is its own function, with its own entry in Numba's cache
    (the cache tells closures apart by their constants)."""
    n_i, n_j = REGISTER_TILES[vector_bytes]

    @njit(parallel=True)
    def max_times_pass(AT, r, SW, R, tile_i, tile_j, tile_x, n_points):
        n_out, n_in = R.shape
        n_itiles = (n_out + tile_i - 1) // tile_i
        n_jtiles = (n_in + tile_j - 1) // tile_j
        for task in prange(n_itiles * n_jtiles):
            it = task // n_jtiles
            jt = task - it * n_jtiles
            i_hi = min((it + 1) * tile_i, n_out)
            j_hi = min((jt + 1) * tile_j, n_in)
            for x_lo in range(0, n_points, tile_x):
                x_hi = min(x_lo + tile_x, n_points)
                for i0 in range(it * tile_i, i_hi, n_i):
                    for j0 in range(jt * tile_j, j_hi, n_j):
                        max_times_tile(AT, r, SW, R, i0, j0, x_lo, x_hi, n_i, n_j, vector_bytes)

    max_times_pass.__doc__ = (f":func:`max_times` with {vector_bytes}-byte vectors and the {n_i} x {n_j} "
                              "register tile.")
    return max_times_pass


#: the pass of each vector width
_PASSES = {width: _make_pass(width) for width in VECTOR_WIDTHS}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def max_times(AT, r, SW, R, tile_i, tile_j, tile_x, vector_bytes=None, n_points=None):
    """``R[i, j] = max(R[i, j], max_x AT[j, x] * r^{sign W_ij}[i, x])`` for all ``(i, j)``.

    AT: (n_in, n_points) the input block A >= 0 transposed; r: (2 n_out, n_points)
    the reciprocals, row ``2i`` for ``r+_i`` and ``2i+1`` for ``r-_i``; SW:
    (2 n_out, n_in) the stacked weights in the same order (rows ``2i = W+_i``,
    ``2i+1 = W-_i``; only the signs of the even rows are read); R: (n_out, n_in)
    running maxima, updated in place. Everything is padded:
    ``n_out`` a multiple of ``TILE_I``, ``n_in`` of ``TILE_J``, ``n_points`` of
    ``POINT_MULTIPLE`` (with zero rows and columns, which never raise a maximum);
    ``tile_i``, ``tile_j``, ``tile_x`` multiples of the same.
    ``n_points``: the columns of AT and r to read (a multiple of ``POINT_MULTIPLE``;
    None: all); columns beyond are padding, zeros that never raise a maximum.
    ``vector_bytes``: 32 or 64, the width the pass runs with; None takes
    :func:`sparsify._config.vector_bytes` (the host's, or the override). Every
    width gives the same bits.

    Parallel over (``tile_i`` neurons) x (``tile_j`` inputs) tasks; each task owns
    its block of ``R``, so no two threads write one entry and the result does not
    depend on the thread count. Inside a task, for each cache block of
    ``tile_x`` points, each register tile of the width's ``REGISTER_TILES`` edges
    runs over the block's points in :func:`max_times_tile`; the ``r`` rows of the
    tile's neurons stay in L1 while the task sweeps its inputs, and the task's
    part of ``AT`` (``tile_j x tile_x``) in L2 while it sweeps its neurons.
    """
    if vector_bytes is None:
        vector_bytes = vector_bytes_in_use()
    n_points = AT.shape[1] if n_points is None else n_points
    if n_points == 0:
        return
    # blocks of (nearly) equal width, whole vectors: 272 points in blocks of at most 256
    # are 144 + 128, not 256 + 16 (a block of one vector pays a whole pass of tile
    # set-ups and reductions for one step of each)
    n_blocks = _ceil_div(n_points, tile_x)  # >= 1: n_points > 0 here
    width = _ceil_div(_ceil_div(n_points, n_blocks), POINT_MULTIPLE) * POINT_MULTIPLE
    _PASSES[vector_bytes](AT, r, SW, R, tile_i, tile_j, width, n_points)
