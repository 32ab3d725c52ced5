"""Scale beyond one machine on Dask: sensitivities of a dask array, and independent tasks.

Two uses share this module:

* :func:`sensitivity_and_head` — the sensitivity step on a ``dask.array`` S.
  Each chunk of S (a whole number of the step's fixed blocks) is one task that
  runs the in-memory step on its rows; the per-layer results are combined with
  an elementwise maximum. The result is bit-identical to the in-memory run (the
  argument is in the function's docstring and in docs/scale.md).
* :func:`run_tasks` — many independent tasks (verify seeds, experiment cells)
  on a ``dask.distributed`` cluster, with the shared inputs sent once per worker
  and each task's BLAS and Numba threads limited to its share of the cores.

Where the work runs is given by one argument, ``dask``:

* ``None`` — no cluster of our own (the sensitivity step uses the current
  ``distributed.Client`` if there is one, else computes the chunks one after the
  other in this process);
* ``"local"`` or ``"local:N"`` — a ``LocalCluster`` of N single-threaded worker
  processes (N = the usable cores when omitted), started and closed here;
* ``"tcp://HOST:PORT"`` (any ``scheme://`` address) — the scheduler of a running cluster;
* a ``distributed.Client`` — used as it is, never closed here.

Dask is optional: it is imported only when one of these functions runs, and a
missing install raises an ImportError naming the ``dask`` extra.
"""
from __future__ import annotations

import os

import numpy as np

from ._dask_tasks import (  # noqa: F401  (the public names of the distributed runner)
    DASK_EXTRA, TaskFailure, UNSET_WORKER_ENV, _require_distributed, check_dask, connect,
    current_client, is_dask_collection, limited_threads, local_cluster, run_ordered, run_tasks,
    settled, thread_plan, usable_cores,
)

#: the rows of one task of the sensitivity step are this many of its fixed blocks
#: unless the dask array's own chunks are larger (see :func:`task_rows`)
BLOCKS_PER_TASK = 16


# --- the sensitivity step on a dask array ------------------------------------------------
def task_rows(chunk_rows: int, chunk_size: int) -> int:
    """Points per task: the dask array's chunk length rounded down to a whole number of
    the step's blocks (at least :data:`BLOCKS_PER_TASK` blocks)."""
    return max(BLOCKS_PER_TASK, chunk_rows // chunk_size) * chunk_size


def _chunk_sensitivity(shared, item):
    """One task: the in-memory sensitivity step on one chunk of S (``item = (start, X, keep)``)."""
    from .sensitivity import sensitivity_and_head

    network, chunk_size, tiles, patch_reduction = shared
    start, X, keep = item
    X = np.array(X, copy=True)  # in memory of its own (see settled)
    try:
        return sensitivity_and_head(network, X, keep, patch_reduction=patch_reduction, chunk_size=chunk_size,
                                    tiles=tiles)
    except ValueError as exc:  # name the rows of S, not of the chunk
        raise ValueError(f"X_S rows {start}:{start + X.shape[0]}: {exc}") from None


def _chunk_task(shared, X, start, keep, plan):
    with limited_threads(plan):
        return _chunk_sensitivity(settled(shared, cache=True), (start, X, keep))


def _as_dask_array(network, X_S, chunk_size: int):
    from dask import array as da

    if not is_dask_collection(X_S):
        if not (isinstance(X_S, np.ndarray) or hasattr(X_S, "__array_interface__")):
            raise TypeError(f"X_S: with dask= give a dask array or a NumPy array (a memory map included), "
                            f"got {type(X_S).__name__}.")
        X_S = np.asarray(X_S)
        X_S = da.from_array(X_S, chunks=(BLOCKS_PER_TASK * chunk_size,) + (-1,) * (X_S.ndim - 1))
    if not isinstance(X_S, da.Array):
        raise TypeError(f"X_S: expected a dask.array.Array, got {type(X_S).__module__}.{type(X_S).__name__}.")
    point = tuple(network.input_shape)
    if X_S.ndim != 1 + len(point) or tuple(X_S.shape[1:]) != point:
        expected = "(n_points, " + ", ".join(map(str, point)) + ")"
        raise ValueError(f"X_S: expected shape {expected}, got {X_S.shape}.")
    if any(np.isnan(c) for c in X_S.chunks[0]):
        raise ValueError("X_S: the dask array's chunk lengths are unknown; call X_S.compute_chunk_sizes() first.")
    return X_S


def sensitivity_and_head(network, X_S, keep_points: int, *, patch_reduction=None, chunk_size: int, tiles,
                         dask=None):
    """:func:`sparsify.sensitivity.sensitivity_and_head` for a dask array ``X_S``, one task per chunk.

    S is rechunked along points to whole multiples of ``chunk_size`` starting at
    point 0 (all features in one chunk), so every task sees exactly the blocks of
    ``chunk_size`` points the in-memory stream cuts: the ``Z`` GEMM and the
    forward passes of a block are computed on the same rows, with the same
    shapes and row blocks, hence the same bits. (A task cut elsewhere would hand
    the GEMM other rows; the bits of a BLAS product may depend on its shape.)

    Each task returns its finished ``s = min(|W| R, 1) + 0`` per layer, with ``R``
    the running maximum of its blocks; the tasks' ``s`` are combined with
    ``np.maximum``. This equals the in-memory ``s``, whose ``R`` is the maximum
    over all blocks, bit for bit: for a fixed ``|W| >= 0``, ``R -> fl(|W| R)`` is
    nondecreasing (rounding to nearest is monotone), and so are ``min(., 1)`` and
    ``+ 0`` (which only maps -0.0 to +0.0), so the finishing step commutes with
    ``max``; ``R >= 0`` and never NaN (``r`` and ``A`` are finite and nonnegative),
    and the one NaN the step can make (``0 * inf`` when ``R`` overflows at a zero
    weight) propagates through ``np.maximum`` exactly as through ``max``. A
    maximum is associative and commutative, so the order in which tasks finish
    does not matter. (A convolution's ``"mean"`` over patches finishes with
    ``min(|W| R / P, 1) + 0``, monotone as well.) The first task holds at least
    the first ``keep_points`` points, so the report's head is its head.

    ``dask``: see the module docstring; None uses the current client if there is
    one, else computes the chunks one after the other in this process.
    """
    from ._sensitivity_conv import PATCH_REDUCTIONS
    from ._validation import check_choice, check_scalar
    from .network import Network
    from .sensitivity import DEFAULT_CHUNK_SIZE, _check_tiles

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    chunk_size = check_scalar(chunk_size, f"chunk_size (points per block; default {DEFAULT_CHUNK_SIZE})",
                              kind="int", low=1)
    tiles = _check_tiles(tiles)
    if patch_reduction is not None:
        check_choice(patch_reduction, "patch_reduction", PATCH_REDUCTIONS)
    spec = check_dask(dask)
    _require_distributed()
    X = _as_dask_array(network, X_S, chunk_size)
    n = int(X.shape[0])
    if n == 0:
        raise ValueError("X_S: the batch S is empty; sensitivities need at least one input point "
                         "(the authors use about 3 ln(8 eta eta*/delta) points).")
    rows = task_rows(int(X.chunks[0][0]), chunk_size)
    rows = max(rows, -(-keep_points // chunk_size) * chunk_size)  # the head in the first task
    X = X.rechunk({0: rows, **{d: -1 for d in range(1, X.ndim)}})
    blocks = X.to_delayed().ravel()
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int).tolist()
    keeps = [max(0, min(keep_points - s, c)) for s, c in zip(starts, X.chunks[0])]
    shared = (network, chunk_size, tiles, patch_reduction)

    s_list, heads = None, {}
    if spec is None and current_client() is None:
        results = ((i, _chunk_sensitivity(shared, (starts[i], b.compute(scheduler="synchronous"), keeps[i])))
                   for i, b in enumerate(blocks))
        for i, res in results:
            s_list = _fold(s_list, heads, i, res)
    else:
        with connect(spec if spec is not None else ("client", current_client())) as client:
            for i, res in _chunks_on(client, blocks, starts, keeps, shared):
                s_list = _fold(s_list, heads, i, res)
    return s_list, n, (heads[0] if keep_points > 0 else None)


def _chunks_on(client, blocks, starts, keeps, shared):
    """Yield ``(i, result)`` of the chunk tasks as they finish, with at most two chunks per
    worker thread in flight (so S is never in the workers' memory all at once)."""
    distributed = _require_distributed()
    plan = thread_plan(client)
    shared_f = client.scatter(shared, broadcast=True, hash=False)  # the network travels once
    window = 2 * max(1, sum(client.nthreads().values()))
    running = distributed.as_completed(loop=client.loop)
    index, inputs, futures = {}, {}, {}
    nxt = 0

    def submit(i):
        block = client.compute(blocks[i])  # the chunk is read (or made) on a worker
        fut = client.submit(_chunk_task, shared_f, block, starts[i], keeps[i], plan, pure=False,
                            key=f"sparsify-sensitivity-chunk-{i}-{os.urandom(4).hex()}")
        index[fut.key], inputs[fut.key], futures[fut.key] = i, block, fut
        running.add(fut)

    try:
        while nxt < min(window, len(blocks)):
            submit(nxt)
            nxt += 1
        for fut in running:
            res = fut.result()  # a task's error is raised here, with the worker's traceback
            i = index.pop(fut.key)
            inputs.pop(fut.key).release()
            futures.pop(fut.key).release()
            if nxt < len(blocks):
                submit(nxt)
                nxt += 1
            yield i, res
    finally:
        client.cancel(list(futures.values()) + list(inputs.values()))
        del shared_f


def _fold(s_list, heads: dict, i: int, res):
    """Combine one task's ``(s, n, heads)`` into the running maxima; keep the first task's heads."""
    s_chunk, _, head = res
    if i == 0:
        heads[0] = head
    if s_list is None:
        return [np.array(s, copy=True) for s in s_chunk]
    for acc, s in zip(s_list, s_chunk):
        np.maximum(acc, s, out=acc)
    return s_list

