"""Scratch arrays of the sensitivity step, kept for the next call on the same thread.

The step's working arrays (the stacked weights, the running maxima, a block's
transposed inputs and reciprocals) are several times the size of a layer's
weights. Allocated afresh on every call, arrays of tens of MB come from the
operating system as new pages: glibc maps them (or returns the top of its heap
to the system when they are freed), and the next call takes one page fault per
4 KiB again. For a 1024 x 1024 float64 layer that was 2,100 faults per call, 5-15
ms of a 150 ms step; on a virtual machine a fault costs more still. Kept in a
small pool instead, the same arrays serve the next call with their pages
already mapped.

The pool belongs to the calling thread (no locking, and two threads never share
an array), holds at most :data:`POOL_BYTES` per thread (least recently returned
arrays go first), and only arrays of at least :data:`MIN_BYTES` (smaller ones
come from the allocator's own free lists anyway). Contents of a taken array are
undefined: callers overwrite it whole. No result handed to a user ever comes
from the pool.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["MIN_BYTES", "POOL_BYTES", "give_back", "pooled_bytes", "take"]

#: most bytes of scratch arrays a thread keeps between calls
POOL_BYTES = 128 << 20
#: arrays below this size are not pooled
MIN_BYTES = 1 << 20

_local = threading.local()


def _pool() -> list:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = []  # arrays, least recently returned first
    return pool


def take(shape, dtype) -> np.ndarray:
    """An array of ``shape`` and ``dtype``, C-contiguous, contents undefined: a pooled one
    when this thread returned one of that shape and dtype, else a new one."""
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    pool = _pool()
    for k in range(len(pool) - 1, -1, -1):
        a = pool[k]
        if a.shape == shape and a.dtype == dtype:
            return pool.pop(k)
    return np.empty(shape, dtype=dtype)


def give_back(*arrays) -> None:
    """Return arrays from :func:`take` for a later call on this thread; the caller must
    not use them afterwards. Small arrays are dropped, and the oldest pooled ones
    when the pool would exceed :data:`POOL_BYTES`."""
    pool = _pool()
    for a in arrays:
        if a is None or a.nbytes < MIN_BYTES or a.nbytes > POOL_BYTES or a.base is not None:
            continue
        if any(p is a for p in pool):
            continue
        pool.append(a)
    total = sum(p.nbytes for p in pool)
    while total > POOL_BYTES:
        total -= pool.pop(0).nbytes


def pooled_bytes() -> int:
    """Bytes this thread's pool holds now."""
    return sum(p.nbytes for p in _pool())


def clear() -> None:
    """Drop this thread's pool."""
    _pool().clear()
