"""Budget allocation over layers and neuron sides (docs/theory.md S10).

Two rules, both usable with every method:

``"global"``
    keep the global top-B scores (sensitivities for SiPP) over all layers and
    sides; ties go to the lower (layer, flat index). This is the authors' rule
    for the deterministic method.
``"balanced"``
    choose per-side targets ``m`` minimising
    ``sum_l (1/eta_l) sum_{i,±} eps_rand(m_{l,i,±})`` subject to
    ``sum m <= B`` and ``0 <= m <= nnz(side)``. The objective is separable and
    convex, so the optimum is found exactly by bisection on the Lagrange
    multiplier ``lambda``; for a given ``lambda`` each side's stationary point
    is the positive root of a cubic in ``eps`` (closed form, below).

A side is *dead* when it has weights but zero sensitivity mass on S. Dead
sides carry no information, so both rules give them budget only after every
live weight is kept (which makes ``keep=1`` return the network unchanged and
keeps the kept count exact).
"""
from __future__ import annotations

import numpy as np

from ._config import njit, prange
from .bounds import alpha, eps_det_of_mass

__all__ = ["ALLOCATIONS", "DEFAULT_ALLOCATION", "balanced_targets", "det_bound", "global_top_b", "side_stats",
           "side_sums", "stationary_eps"]

ALLOCATIONS = ("global", "balanced")
#: the authors' default rule for each method
DEFAULT_ALLOCATION = {"det": "global", "rand": "balanced", "hybrid": "balanced"}


# --- side statistics ---------------------------------------------------------
def side_sums(W: np.ndarray, values) -> np.ndarray:
    """Per neuron, the sum of ``values`` (shaped like ``W``) over each side.

    Shape (n_out, 2): column 0 sums over the positive side (``w > 0``), column 1
    over the negative side (``w < 0``); in NumPy terms
    ``np.where(W > 0, values, 0).sum(axis=1)`` and the same with ``W < 0``.
    Boolean ``values`` give counts (int64); numbers are summed in float64,
    left to right along each row. One pass of the kernel :func:`_side_sums`.
    """
    W = np.ascontiguousarray(W)
    values = np.ascontiguousarray(np.broadcast_to(values, W.shape))
    out = np.empty((W.shape[0], 2), dtype=np.float64)
    if values.dtype == np.bool_:
        _side_sums(W, values.view(np.uint8), out)
        return out.astype(np.int64)
    _side_sums(W, values.astype(np.float64, copy=False), out)
    return out


@njit(parallel=True)
def _side_sums(W, values, out):
    """``out[i] = (sum of values[i, j] over W[i, j] > 0, the same over W[i, j] < 0)``."""
    for i in prange(W.shape[0]):
        pos = 0.0
        neg = 0.0
        for j in range(W.shape[1]):
            w = W[i, j]
            v = np.float64(values[i, j])
            # selects, not branches: signs are unpredictable, and adding 0.0 changes no sum
            pos += v if w > 0 else 0.0
            neg += v if w < 0 else 0.0
        out[i, 0] = pos
        out[i, 1] = neg


def side_stats(W: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-side weight count ``nnz`` and sensitivity mass ``S_i = sum_j s_ij``, each (n_out, 2)."""
    nnz = side_sums(W, W != 0)  # int64 counts
    mass = side_sums(W, s)
    return nnz, mass


def det_bound(W: np.ndarray, s: np.ndarray, kept: np.ndarray, mass: np.ndarray, C: float) -> np.ndarray:
    """``eps_det = C * (sensitivity mass of the pruned weights)`` per side, (n_out, 2).

    ``kept`` is the boolean mask of kept weights; ``mass`` comes from :func:`side_stats`.
    """
    kept_mass = side_sums(W, np.where(kept, s, 0))
    return eps_det_of_mass(mass - kept_mass, C)


# --- rule "global": top-B -------------------------------------------------------
def global_top_b(scores, budget: int, eligible=None, demoted=None) -> list[np.ndarray]:
    """Boolean masks keeping the ``budget`` highest scores over all layers.

    Parameters
    ----------
    scores : list of arrays
        One score array per layer (any shape); higher is kept first.
    budget : int
        Number of entries to keep (clipped to the number of eligible entries).
    eligible : list of bool arrays, optional
        Entries that may be kept at all (default: all). SiPP passes ``W != 0``.
    demoted : list of bool arrays, optional
        Entries ranked after every non-demoted one (SiPP: weights of dead sides).

    Ties go to the lower (layer, flat index), so the result is deterministic.
    """
    flat = np.concatenate([np.asarray(sc, dtype=np.float64).ravel() for sc in scores])
    if np.isnan(flat).any():
        raise ValueError("scores: contain NaN; every entry needs a comparable score.")
    ok = np.ones(flat.size, bool) if eligible is None else np.concatenate([np.ravel(e) for e in eligible])
    late = np.zeros(flat.size, bool) if demoted is None else np.concatenate([np.ravel(d) for d in demoted])
    budget = int(min(max(budget, 0), np.count_nonzero(ok)))
    keep = np.zeros(flat.size, bool)
    # rank: eligible non-demoted entries by score, then eligible demoted ones by score
    for tier in (ok & ~late, ok & late):
        cand = np.flatnonzero(tier)
        take = min(budget - int(np.count_nonzero(keep)), cand.size)
        if take > 0:
            keep[cand[_top_k(flat[cand], take)]] = True
    out, start = [], 0
    for sc in scores:
        n = np.size(sc)
        out.append(keep[start:start + n].reshape(np.shape(sc)))
        start += n
    return out


def _top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values`` (0 < k <= size), ties to the lower position."""
    n = values.size
    kth = np.partition(values, n - k)[n - k]  # the k-th largest value
    keep = values > kth
    ties = np.flatnonzero(values == kth)[: k - np.count_nonzero(keep)]  # lowest positions first
    keep[ties] = True
    return np.flatnonzero(keep)


# --- rule "balanced": the convex program ------------------------------------------
def stationary_eps(t: np.ndarray) -> np.ndarray:
    """Positive root of ``eps^3 - t eps - 3 t = 0`` for ``t > 0`` (vectorised).

    With ``c = 4.5 sqrt(3/t)`` the root is ``2 sqrt(t/3) cosh(arccosh(c)/3)`` when
    ``c >= 1`` (one real root) and ``2 sqrt(t/3) cos(arccos(c)/3)`` otherwise (the
    largest of three real roots; the other two are negative since their sum is
    ``-root`` and their product ``3t/root`` is positive).
    """
    t = np.asarray(t, dtype=np.float64)
    c = 4.5 * np.sqrt(3.0 / t)
    scale = 2.0 * np.sqrt(t / 3.0)
    with np.errstate(invalid="ignore"):
        hyper = np.cosh(np.arccosh(np.maximum(c, 1.0)) / 3.0)
        trig = np.cos(np.arccos(np.minimum(c, 1.0)) / 3.0)
    return scale * np.where(c >= 1.0, hyper, trig)


def _balanced_m(lam: float, a: np.ndarray, inv_eta: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Continuous optimum ``m(lambda)`` per side, clipped to ``[0, cap]``.

    Stationarity: ``(1/eta) |d eps/dm| = lambda`` with ``d eps/dm = -3 eps^3 / (a (eps + 3))``,
    i.e. ``eps^3 / (eps + 3) = t`` where ``t = lambda a eta / 3``.
    """
    live = a > 0
    m = np.zeros_like(a)
    t = lam * a[live] / (3.0 * inv_eta[live])
    eps = stationary_eps(t)
    m[live] = a[live] * (3.0 + 2.0 * eps) / (6.0 * eps * eps)
    return np.minimum(m, cap)


@njit
def _balanced_m_fast(lam, a, d, cap, out):
    """Fast twin of :func:`_balanced_m` (one pass, no temporaries): fills ``out`` and
    returns its sum. ``d = 3 * inv_eta``; sides with ``a <= 0`` get 0."""
    total = 0.0
    for k in range(a.size):
        m = 0.0
        if a[k] > 0:
            t = lam * a[k] / d[k]
            c = 4.5 * np.sqrt(3.0 / t)
            scale = 2.0 * np.sqrt(t / 3.0)
            if c >= 1.0:
                eps = scale * np.cosh(np.arccosh(c) / 3.0)
            else:
                eps = scale * np.cos(np.arccos(c) / 3.0)
            m = a[k] * (3.0 + 2.0 * eps) / (6.0 * eps * eps)
        if m > cap[k]:
            m = cap[k]
        out[k] = m
        total += m
    return total


def balanced_targets(mass: np.ndarray, nnz: np.ndarray, inv_eta: np.ndarray, budget: int,
                     C: float, delta: float, *, return_lambda: bool = False, alpha_side=None):
    """Integer per-side targets of the balanced program (flat arrays over all sides).

    Parameters
    ----------
    mass, nnz : arrays, shape (n_sides,)
        Sensitivity mass ``S_i`` and weight count of each side.
    inv_eta : array, shape (n_sides,)
        ``1/eta_l`` of the side's layer (its weight in the objective).
    budget : int
        Total number of kept weights ``B``.
    alpha_side : array, shape (n_sides,), optional
        ``alpha`` of each side's layer (with its patches P and kernel elements k,
        docs/theory.md S15); default ``alpha(C, delta)`` (P = k = 1) for every side.

    Returns integer ``m`` with ``sum(m) == min(B, sum(nnz))`` and ``0 <= m <= nnz``.
    Live sides are solved by bisection on ``log lambda``; the continuous optimum is
    rounded down and the remainder goes to the largest fractional parts (ties to
    the lower side index). Budget left after every live side is full goes to dead
    sides in index order.
    """
    mass = np.asarray(mass, dtype=np.float64)
    nnz = np.asarray(nnz, dtype=np.int64)
    a = (alpha(C, delta) if alpha_side is None else np.asarray(alpha_side, dtype=np.float64)) * mass
    live = (a > 0) & (nnz > 0)
    cap = np.where(live, nnz, 0).astype(np.float64)
    budget = int(min(budget, nnz.sum()))
    lam = np.nan
    if budget >= cap.sum():
        m = cap.astype(np.int64)
    else:
        d = 3.0 * np.asarray(inv_eta, dtype=np.float64)
        work = np.empty_like(a)

        def total(log_lam):  # sum of _balanced_m(exp(log_lam), a, inv_eta, cap), in one kernel pass
            return _balanced_m_fast(np.exp(log_lam), a, d, cap, work)

        lo, hi = -50.0, 50.0  # bracket on log lambda, widened until it holds
        while total(lo) < budget:
            lo -= 50.0
        while total(hi) > budget:
            hi += 50.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if total(mid) > budget:
                lo = mid
            else:
                hi = mid
            if hi - lo < 1e-13:
                break
        lam = float(np.exp(hi))
        m_cont = np.empty_like(a)
        _balanced_m_fast(lam, a, d, cap, m_cont)      # sum(m_cont) <= budget
        m = np.floor(m_cont).astype(np.int64)
        frac = m_cont - m
        rest = budget - int(m.sum())
        room = np.flatnonzero(m < cap)
        order = room[np.argsort(-frac[room], kind="stable")]
        m[order[:rest]] += 1
    rest = budget - int(m.sum())
    if rest > 0:  # every live side is full: dead sides get what is left, in index order
        for idx in np.flatnonzero(nnz > m):
            take = min(rest, int(nnz[idx] - m[idx]))
            m[idx] += take
            rest -= take
            if rest == 0:
                break
    return (m, lam) if return_lambda else m
