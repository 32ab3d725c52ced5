"""Per-machine calibration of the sensitivity step's serial threshold (docs/performance.md).

Below some amount of work a block of the sensitivity step runs faster on the calling
thread than on Numba's thread pool: waking the pool's threads and waiting for the last
of them costs more than the work it shares out. Where that crossover lies depends on
the machine (cores, their clock, how fast the operating system wakes a sleeping
thread, a hypervisor between the two), so it is measured rather than assumed:

* a ladder of square probe layers (64 points, ``n x n`` weights, ``n`` = 32 ... 512,
  so 2^16 ... 2^24 multiply-adds) is folded once on one thread and once on all of
  Numba's threads, alternately, several times, for float64 and float32;
* each time is the best of :data:`REPEATS` (the machine's rate, steady from run to
  run where medians are not); the threshold of a dtype is the work from which on the
  parallel run takes at most :data:`GAIN` times the serial one (:func:`threshold_of`).
  ``GAIN`` asks for a clear gain, 30%, not a break-even: on a machine shared with
  other jobs a parallel region also waits for threads the OS has not scheduled, and
  the measurement cannot foresee that load.

The whole measurement takes a few tenths of a second. Its result is cached per machine
in a small JSON file (:func:`cache_dir`), keyed by what it depends on (the CPU LLVM
reports with its features, Numba's thread count and version, the kernel's vector
width and this package's version), and reused by every later process. Whatever the
threshold, the results are the same bits: no kernel's result depends on the thread
count. ``SPARSIFY_SERIAL_WORK`` overrides it (an integer; ``auto`` or unset: the
calibrated value).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numba
import numpy as np

__all__ = ["CACHE_DIR_ENV", "GAIN", "LADDER_SIDES", "cache_dir", "cache_path", "calibrate", "machine_key",
           "measure"]

#: environment variable naming the folder of the calibration cache
CACHE_DIR_ENV = "SPARSIFY_CACHE_DIR"
#: sides ``n`` of the probe layers (64 points, ``n x n`` weights): 2^16 ... 2^24 multiply-adds
LADDER_SIDES = (32, 64, 128, 256, 512)
PROBE_POINTS = 64
#: the parallel run must take at most this fraction of the serial run to count as a gain
GAIN = 0.7
#: alternating serial/parallel repeats per rung
REPEATS = 9


def cache_dir() -> Path:
    """``$SPARSIFY_CACHE_DIR``, else ``$XDG_CACHE_HOME/sparsify``, else ``~/.cache/sparsify``."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsify"


def machine_key() -> dict:
    """What the threshold depends on; a cached value is used only when all of it matches."""
    import llvmlite.binding as llvm

    from . import __version__
    from ._config import vector_bytes

    try:
        cpu = llvm.get_host_cpu_name()
        features = sorted(k for k, v in llvm.get_host_cpu_features().items() if v)
    except RuntimeError:  # llvmlite cannot tell on this platform
        cpu, features = "unknown", []
    return {"cpu": cpu, "features": hashlib.sha1(" ".join(features).encode()).hexdigest()[:16],
            "threads": int(numba.config.NUMBA_NUM_THREADS), "numba": numba.__version__,
            "vector_bytes": vector_bytes(), "sparsify": __version__}


def cache_path(key: dict | None = None) -> Path:
    key = machine_key() if key is None else key
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"serial-work-{digest}.json"


def _probe(side: int, dtype):
    from .sensitivity import DEFAULT_TILES, _LayerMaxima

    rng = np.random.default_rng(side)
    W = rng.standard_normal((side, side)).astype(dtype)
    A = np.abs(rng.standard_normal((PROBE_POINTS, side))).astype(dtype)
    return _LayerMaxima(W, DEFAULT_TILES), A


def measure(repeats: int = REPEATS) -> dict:
    """Best seconds of one block on one thread and on all threads, per dtype and rung:
    ``{dtype name: [(work, serial s, parallel s), ...]}``."""
    from . import _config
    from ._blas import single_threaded_blas

    threads = numba.config.NUMBA_NUM_THREADS
    before = numba.get_num_threads()
    out = {}
    _config._calibrating = True  # the probes choose their thread count themselves
    try:
        with single_threaded_blas():  # as in the sensitivity step: all parallel work on Numba's threads
            for dtype in (np.float64, np.float32):
                rows = []
                for side in LADDER_SIDES:
                    acc, A = _probe(side, dtype)
                    acc.update(A)  # compiled code loaded, buffers allocated
                    times = {1: [], threads: []}
                    for _ in range(repeats):
                        for n in (1, threads):
                            numba.set_num_threads(n)
                            t0 = time.perf_counter()
                            acc.update(A)
                            times[n].append(time.perf_counter() - t0)
                    rows.append((PROBE_POINTS * side * side, float(np.min(times[1])), float(np.min(times[threads]))))
                out[np.dtype(dtype).name] = rows
    finally:
        numba.set_num_threads(before)
        _config._calibrating = False
    return out


def threshold_of(rows) -> int:
    """The work from which on the parallel run takes at most :data:`GAIN` times the serial one.

    ``rows``: ``(work, serial s, parallel s)`` per rung, work increasing. From the top
    rung down, the rungs with a clear gain; the threshold is where the ratio
    parallel/serial crosses ``GAIN`` between the last rung without and the first with
    one, interpolated on a log scale (so that a ratio near ``GAIN`` moves it a little,
    not by a whole rung); the smallest rung when every rung gains, twice the largest
    when the largest does not.
    """
    ratios = [parallel / serial for _, serial, parallel in rows]
    k = len(rows)
    while k > 0 and ratios[k - 1] <= GAIN:
        k -= 1
    if k == len(rows):
        return int(2 * rows[-1][0])
    if k == 0:
        return int(rows[0][0])
    (w0, r0), (w1, r1) = (rows[k - 1][0], ratios[k - 1]), (rows[k][0], ratios[k])
    return int(round(w0 * (w1 / w0) ** ((r0 - GAIN) / (r0 - r1))))


def _read(path: Path, key: dict):
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key and all(isinstance(data["threshold"][d], int) and data["threshold"][d] >= 0
                                          for d in ("float64", "float32")):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, unreadable or corrupt: measured again
    return None


def _write(path: Path, data: dict) -> None:
    """Atomically (:func:`sparsify.io._atomic.atomic_write`); a folder that cannot be
    written only means the next process measures again."""
    from .io._atomic import atomic_write

    text = json.dumps(data, indent=1).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: fh.write(text), name="calibration cache")
    except (OSError, ValueError):  # ValueError: the target is not a regular file
        pass


def calibrate(force: bool = False) -> dict:
    """The calibration of this machine: ``{"key", "threshold": {dtype: work}, "measured",
    "seconds", "path"}``, read from the cache unless absent, stale or ``force``."""
    key = machine_key()
    path = cache_path(key)
    data = None if force else _read(path, key)
    if data is None:
        t0 = time.perf_counter()
        rows = measure()
        data = {"key": key, "threshold": {d: threshold_of(r) for d, r in rows.items()},
                "measured": rows, "seconds": round(time.perf_counter() - t0, 3),
                "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write(path, data)
    data["path"] = str(path)
    return data
