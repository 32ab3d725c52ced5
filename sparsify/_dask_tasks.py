"""Dask plumbing shared by every distributed use (:mod:`sparsify.distributed` is the public face):
where the work runs, threads per task, inputs as they arrive on a worker, and independent tasks
with their failures reported."""
from __future__ import annotations

import copy
import os
import traceback
from contextlib import contextmanager
from typing import Callable, Iterable, NamedTuple

__all__ = [
    "DASK_EXTRA", "TaskFailure", "UNSET_WORKER_ENV", "check_dask", "connect", "current_client",
    "is_dask_collection", "limited_threads", "local_cluster", "run_ordered", "run_tasks", "settled",
    "thread_plan", "usable_cores",
]


#: the pip extra that installs Dask for this module
DASK_EXTRA = 'pip install "sparsify[dask]"'

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

#: Dask settings of sparsify's own local clusters. A worker's statistical profiler
#: (for the dashboard) samples every thread's stack each 10 ms and takes the GIL to
#: do it; an experiment cell (training in many small NumPy calls) measured 0.194 s
#: on a worker with it and 0.159 s without (0.153 s in a plain process), and
#: 0.225 s against 0.172 s with both workers busy. On a cluster of your own, set
#: ``distributed.worker.profile.enabled: false`` in the workers' configuration
#: (docs/scale.md).
LOCAL_CLUSTER_CONFIG = {"distributed.worker.profile.enabled": False}


@contextmanager
def local_cluster(n_workers: int, **kwargs):
    """A ``LocalCluster`` of ``n_workers`` single-threaded worker processes (closed on exit),
    without the variables of :data:`UNSET_WORKER_ENV` in the workers' environment and
    with :data:`LOCAL_CLUSTER_CONFIG` (no statistical profiler on the workers)."""
    import dask

    distributed = _require_distributed()
    unset = {f"distributed.nanny.pre-spawn-environ.{name}": None for name in UNSET_WORKER_ENV}
    with dask.config.set({**unset, **LOCAL_CLUSTER_CONFIG}):
        # The nanny keeps a shallow copy of the global configuration for the workers it
        # (re)starts: its nested settings would return to the global values when this block
        # ends, and a worker restarted after a crash would profile again. A deep copy stays.
        settings = {"distributed": copy.deepcopy(dask.config.get("distributed"))}
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                           config=settings, **kwargs)
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
