"""Sparsifying neuron sides: deterministic top-m and importance sampling
(docs/theory.md S6, S7, S11), vectorised over all sides of a layer.

Fast paths here, readable twins in :mod:`sparsify.reference`
(``top_m``/``sparsify_side_det``, ``sample_counts``/``sparsify_side_rand``,
``draws_for_unique``). The sampling kernel consumes uniforms drawn beforehand
from the caller's Generator, in side order, so the reference given the same
uniforms reproduces it bit for bit, with any number of threads.
"""
from __future__ import annotations

import numpy as np

from ._config import njit, prange


__all__ = [
    "SIDES_PER_TASK",
    "det_sides",
    "draws_for_unique",
    "expected_unique",
    "rand_sides",
]

@njit
def _gather_side(W, s, i, sign, idx, vals):
    """Fill ``idx``/``vals`` with the indices and sensitivities of side ``(i, sign)``
    of ``W`` (``w > 0`` for sign > 0, ``w < 0`` otherwise), in index order; returns their count."""
    n = 0
    for j in range(W.shape[1]):
        w = W[i, j]
        # branch-free compaction (signs are unpredictable): write always, advance if on the side;
        # n <= j, so the write stays inside the buffers
        idx[n] = j
        vals[n] = s[i, j]
        n += (w > 0) if sign > 0 else (w < 0)
    return n


@njit
def _kth_smallest(a, n, k):
    """The ``k``-th smallest (0-based) of ``a[:n]``, by quickselect in place (``a[:n]`` is reordered).

    A value, not a position, so it does not depend on the order the selection
    visits: equal to ``np.partition(a[:n], k)[k]``.
    """
    lo, hi = 0, n - 1
    while lo < hi:
        mid = (lo + hi) // 2  # median of three as the pivot
        x, y, z = a[lo], a[mid], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


#: sides per parallel task of :func:`_det_sides` (each task allocates its scratch once);
#: passed to the kernel as an argument
SIDES_PER_TASK = 32


@njit(parallel=True)
def _det_sides(W, s, rows, signs, m, out, sides_per_task):
    """Write the top-``m[t]`` weights (by ``s``, ties to the lower index) of side
    ``(rows[t], signs[t])`` of ``W`` into ``out``; other entries of the side stay 0.

    Selection, not sorting: the m-th largest value ``thr`` comes from a
    quickselect (:func:`_kth_smallest`); every entry above ``thr`` is kept, then
    entries equal to ``thr`` in index order until ``m`` are kept (the
    reference's stable sort breaks ties the same way). Parallel over tasks of
    ``sides_per_task`` sides, each with its own scratch buffers.
    """
    n_in = W.shape[1]
    n_sides = rows.size
    n_tasks = (n_sides + sides_per_task - 1) // sides_per_task
    for task in prange(n_tasks):
        idx = np.empty(n_in, np.int64)
        vals = np.empty(n_in, s.dtype)
        scratch = np.empty(n_in, s.dtype)
        for t in range(task * sides_per_task, min((task + 1) * sides_per_task, n_sides)):
            i = rows[t]
            n = _gather_side(W, s, i, signs[t], idx, vals)
            want = min(m[t], n)
            if want <= 0:
                continue
            if want == n:
                for k in range(n):
                    out[i, idx[k]] = W[i, idx[k]]
                continue
            scratch[:n] = vals[:n]
            thr = _kth_smallest(scratch, n, n - want)
            above = 0
            for k in range(n):
                if vals[k] > thr:
                    above += 1
            ties = want - above
            for k in range(n):
                v = vals[k]
                if v > thr or (v == thr and ties > 0):
                    if v == thr:
                        ties -= 1
                    out[i, idx[k]] = W[i, idx[k]]


@njit(parallel=True)
def _rand_sides(W, s, rows, signs, draws, offsets, u, out, kept):
    """Importance-sample side ``t`` with ``draws[t]`` draws from ``u[offsets[t]:]``.

    ``q_j = s_j / S`` over the side's entries in index order; draw ``J`` is the
    first entry whose running sum of ``s`` exceeds ``u * S``; the kept weight is
    ``w_j c_j S / (N s_j)``. ``kept[t]`` receives the number of distinct entries.
    """
    n_in = W.shape[1]
    for t in prange(rows.size):
        i = rows[t]
        idx = np.empty(n_in, np.int64)
        cum = np.empty(n_in, s.dtype)
        n = _gather_side(W, s, i, signs[t], idx, cum)
        acc = s[i, 0] - s[i, 0]  # a zero of s's dtype (s[i, 0] * 0 would be float64)
        last = -1
        for k in range(n):  # running sums in index order, as np.cumsum in the reference
            if cum[k] > 0:
                last = k
            acc += cum[k]
            cum[k] = acc
        total = acc
        counts = np.zeros(n, np.int64)
        N = draws[t]
        for d in range(N):
            target = u[offsets[t] + d] * total
            # first k with cum[k] > target (binary search)
            lo, hi = 0, n
            while lo < hi:
                mid = (lo + hi) // 2
                if cum[mid] > target:
                    hi = mid
                else:
                    lo = mid + 1
            if lo > last:
                lo = last
            counts[lo] += 1
        distinct = 0
        for k in range(n):
            if counts[k] > 0:
                j = idx[k]
                # w c S / (N s), in float64 whatever the dtype (the reference does the same)
                out[i, j] = (np.float64(W[i, j]) * counts[k]) * np.float64(total) / (np.float64(N) * np.float64(s[i, j]))
                distinct += 1
        kept[t] = distinct


def det_sides(W, s, rows, signs, m, out) -> None:
    """Top-m per side (see :func:`_det_sides`); arrays are used in place."""
    if rows.size:
        _det_sides(W, s, rows.astype(np.int64), signs.astype(np.int64), m.astype(np.int64), out, SIDES_PER_TASK)


def rand_sides(W, s, rows, signs, draws, u, out) -> np.ndarray:
    """Importance sampling per side from the concatenated uniforms ``u``; returns distinct kept counts."""
    draws = draws.astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(draws)[:-1]]).astype(np.int64)
    kept = np.zeros(rows.size, np.int64)
    if rows.size:
        _rand_sides(W, s, rows.astype(np.int64), signs.astype(np.int64), draws, offsets,
                    np.ascontiguousarray(u, dtype=np.float64), out, kept)
    return kept


def _expected_unique(log1mq, sizes, starts, N):
    per_entry = -np.expm1(np.repeat(np.asarray(N, dtype=np.float64), sizes) * log1mq)
    return np.add.reduceat(per_entry, starts)


def expected_unique(q_sides: list[np.ndarray], N: np.ndarray) -> np.ndarray:
    """``E[distinct entries in N[t] draws from q_sides[t]] = sum_j 1 - (1 - q_j)^N`` per side."""
    if not len(q_sides):
        return np.zeros(0)
    sizes = np.array([q.size for q in q_sides])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return _expected_unique(np.log1p(-np.concatenate(q_sides)), sizes, starts, N)


def draws_for_unique(q_sides: list[np.ndarray], m: np.ndarray) -> np.ndarray:
    """For each side, the smallest integer ``N`` with ``sum_j 1-(1-q_j)^N >= m``.

    Vectorised integer bisection over all sides at once (``q_sides[t]`` holds the
    positive probabilities of side ``t``). Targets must satisfy
    ``0 < m[t] <= len(q_sides[t])``; a target equal to the support size needs
    infinitely many draws and is refused. A target ``m <= 1`` gets ``N = 1``
    exactly (one draw hits one entry), whatever the rounding of ``sum q``.
    """
    n = len(q_sides)
    m = np.asarray(m, dtype=np.float64)
    if n == 0:
        return np.zeros(0, np.int64)
    sizes = np.array([q.size for q in q_sides])
    if np.any(m >= sizes) or np.any(m <= 0):
        raise ValueError("draws_for_unique: each target must satisfy 0 < m < support size")
    log1mq = np.log1p(-np.concatenate(q_sides))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def expected(N):
        return _expected_unique(log1mq, sizes, starts, N)

    lo = np.zeros(n, np.int64)                     # expected(lo) < m
    hi = np.maximum(np.ceil(m).astype(np.int64), 1)  # grow until expected(hi) >= m
    # one draw gives exactly one distinct entry: N = 1 for m <= 1 without rounding (the
    # computed expected(1) = sum q can fall one ulp short of 1 and would ask for 2 draws)
    one = m <= 1.0
    for _ in range(64):
        short = (expected(hi) < m) & ~one
        if not short.any():
            break
        lo = np.where(short, hi, lo)
        hi = np.where(short, 2 * hi, hi)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        ok = expected(mid) >= m
        hi = np.where(ok, mid, hi)
        lo = np.where(ok, lo, mid)
    return hi
