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
import traceback
from contextlib import contextmanager
from typing import Callable, Iterable, NamedTuple

import numpy as np

#: the pip extra that installs Dask for this module
DASK_EXTRA = 'pip install "sparsify[dask]"'

#: the rows of one task of the sensitivity step are this many of its fixed blocks
#: unless the dask array's own chunks are larger (see :func:`task_rows`)
BLOCKS_PER_TASK = 16


def _require_distributed():
    """Import ``dask`` and ``distributed`` or say which extra installs them."""
    try:
        import dask.array  # noqa: F401
        import distributed
    except ImportError as exc:
        raise ImportError(f"running on Dask needs dask[distributed] ({exc}); install the 'dask' extra: "
                          f"{DASK_EXTRA}.") from None
    return distributed


def is_dask_collection(X) -> bool:
    """True for a dask array (or other dask object), checked without importing dask."""
    return type(X).__module__.split(".")[0] == "dask"


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- where the work runs ---------------------------------------------------------------
def check_dask(dask):
    """Validate the ``dask`` argument; returns None, ``("local", N)``, ``("address", str)`` or
    ``("client", Client)``."""
    if dask is None:
        return None
    if isinstance(dask, str):
        spec = dask.strip()
        if spec == "local":
            return ("local", usable_cores())
        if spec.startswith("local:"):
            n = spec[len("local:"):]
            if not n.isdigit() or int(n) < 1:
                raise ValueError(f"dask: 'local:N' needs a positive whole number of workers N, got {dask!r}; "
                                 "e.g. 'local:4'.")
            return ("local", int(n))
        scheme, sep, rest = spec.partition("://")
        if sep and scheme.isalnum() and rest:
            return ("address", spec)
        raise ValueError(f"dask: expected 'local', 'local:N' or a scheduler address such as "
                         f"'tcp://10.0.0.5:8786', got {dask!r}.")
    distributed = _require_distributed()
    if isinstance(dask, distributed.Client):
        return ("client", dask)
    raise TypeError(f"dask: expected None, 'local', 'local:N', a scheduler address or a distributed.Client, "
                    f"got {type(dask).__name__}.")


@contextmanager
def connect(dask):
    """Yield a ``distributed.Client`` for a validated-or-raw ``dask`` argument (None yields None).

    A ``LocalCluster`` started here (``"local[:N]"``: N worker processes of one
    thread each) and a client opened here are closed on exit, also after an
    error; a client passed in stays open.
    """
    spec = dask if (dask is None or isinstance(dask, tuple)) else check_dask(dask)
    if spec is None:
        yield None
        return
    kind, value = spec
    if kind == "client":
        yield value
        return
    distributed = _require_distributed()
    if kind == "address":
        with distributed.Client(value) as client:
            yield client
        return
    with local_cluster(value) as cluster, distributed.Client(cluster) as client:
        yield client


#: environment variables that Dask's nanny sets in the worker processes it starts and
#: sparsify's own local clusters leave unset: with ``MALLOC_TRIM_THRESHOLD_`` set, glibc
#: stops adapting its mmap threshold, every array above 128 KiB is mapped and unmapped
#: afresh, and the experiment's training measured 2.3x slower
UNSET_WORKER_ENV = ("MALLOC_TRIM_THRESHOLD_",)


@contextmanager
def local_cluster(n_workers: int, **kwargs):
    """A ``LocalCluster`` of ``n_workers`` single-threaded worker processes (closed on exit),
    without the variables of :data:`UNSET_WORKER_ENV` in the workers' environment."""
    import dask

    distributed = _require_distributed()
    unset = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in UNSET_WORKER_ENV}
    with dask.config.set(unset):
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **kwargs)
    with cluster:
        yield cluster


def current_client():
    """The active ``distributed.Client`` of this process, or None (no import of dask if it is absent)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client
        return None


# --- threads per task ------------------------------------------------------------------
def thread_plan(client) -> dict:
    """Threads per task on each worker: the usable cores of its host divided by the
    worker threads that share them (at least 1), so N workers on N cores do not
    oversubscribe. Keys are worker addresses."""
    workers = client.scheduler_info(n_workers=-1)["workers"] if _accepts_n_workers(client) \
        else client.scheduler_info()["workers"]
    cores = client.run(usable_cores)
    per_host: dict = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + int(info["nthreads"])
    return {addr: max(1, cores.get(addr, 1) // max(1, per_host[info["host"]])) for addr, info in workers.items()}


def _accepts_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


@contextmanager
def limited_threads(plan: dict | None):
    """Inside a task: BLAS (threadpoolctl) and Numba limited to this worker's share of the cores.

    Results do not depend on these counts (the package's kernels split work in
    blocks fixed by the shapes); only the speed does.
    """
    n = None
    if plan:
        try:
            from distributed import get_worker

            n = plan.get(get_worker().address)
        except (ImportError, ValueError):  # not inside a worker
            n = None
    if n is None:
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(before)


# --- inputs as they arrive on a worker ---------------------------------------------------
#: per worker process: the settled copies of the last shared inputs (see :func:`settled`)
_SETTLED: dict = {}


def settled(obj, *, cache: bool = False):
    """``obj`` with every array in freshly allocated memory (an in-band pickle round trip).

    Dask hands a task its NumPy inputs as views into the received network frames,
    whose addresses need not be aligned as NumPy's own allocations are; some
    NumPy loops (and BLAS calls on them) then take other code paths and round
    differently (measured here: a convolution network's sensitivities differed
    in the last bit). Tasks therefore compute on settled copies. ``cache=True``
    keeps the copy of a shared input for the next tasks on this worker (keyed by
    the object, which the worker holds while those tasks run).
    """
    import pickle

    if not cache:
        return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    key = id(obj)
    if key not in _SETTLED or _SETTLED[key][0] is not obj:
        while len(_SETTLED) >= 4:
            _SETTLED.pop(next(iter(_SETTLED)))
        _SETTLED[key] = (obj, settled(obj))
    return _SETTLED[key][1]


# --- independent tasks -----------------------------------------------------------------
class TaskFailure(NamedTuple):
    """A task that raised: its index, the exception and the worker's traceback (text)."""

    index: int
    error: BaseException
    traceback: str


def _call(fn, shared, item, plan):
    with limited_threads(plan):
        return fn(settled(shared, cache=True), settled(item))


def run_tasks(client, fn: Callable, shared, items: Iterable, *, name: str = "sparsify-task"):
    """Run ``fn(shared, item)`` for every item on ``client``'s workers; yield ``(index, result)``
    as tasks finish (any order), with result a :class:`TaskFailure` when the task raised.

    ``shared`` travels to every worker once (``client.scatter(..., broadcast=True)``),
    not once per task. ``fn`` must be a module-level function. A task whose worker
    dies is rerun elsewhere by the scheduler (up to its ``allowed-failures``), then
    reported as failed with ``KilledWorker``. Closing the generator early cancels
    the tasks not yet finished.
    """
    distributed = _require_distributed()
    items = list(items)
    if not items:
        return
    plan = thread_plan(client)
    shared_f = client.scatter(shared, broadcast=True, hash=False)
    futures = [client.submit(_call, fn, shared_f, item, plan, key=f"{name}-{i}-{os.urandom(4).hex()}",
                             pure=False, retries=0) for i, item in enumerate(items)]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in distributed.as_completed(futures, loop=client.loop):
            i = index[fut.key]
            if fut.status == "error":
                exc = fut.exception()
                tb = fut.traceback()
                text = "".join(traceback.format_exception(type(exc), exc, tb)) if tb is not None else repr(exc)
                yield i, TaskFailure(i, exc, text)
            else:
                yield i, fut.result()
            fut.release()
    finally:
        client.cancel([f for f in futures if not f.done()])
        del shared_f


def run_ordered(client, fn: Callable, shared, items: Iterable, *, name: str = "sparsify-task",
                progress: Callable[[int, int], None] | None = None):
    """:func:`run_tasks`, but yield the results in the order of ``items`` (later
    results wait in memory for earlier ones); a failed task raises its exception
    (with the worker's traceback as a note) after the tasks already running have been
    cancelled. ``progress(done, total)``
    counts finished tasks."""
    items = list(items)
    waiting: dict = {}
    nxt = 0
    for done, (i, res) in enumerate(run_tasks(client, fn, shared, items, name=name), 1):
        if isinstance(res, TaskFailure):
            res.error.add_note(f"(in task {i} on a Dask worker)\n{res.traceback}")
            raise res.error
        waiting[i] = res
        if progress is not None:
            progress(done, len(items))
        while nxt in waiting:
            yield waiting.pop(nxt)
            nxt += 1


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

