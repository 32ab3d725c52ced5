"""Budget allocation (S10) solved plainly: one sort for global top-B, bisection on the
Lagrange multiplier with a per-side closed form for the balanced program.
"""
from __future__ import annotations

import numpy as np

__all__ = ['balanced_m', 'balanced_targets', 'global_top_b']


# --- S10: budget allocation ----------------------------------------------------------
def global_top_b(scores, budget: int, eligible=None, demoted=None) -> list[np.ndarray]:
    """Masks keeping the ``budget`` best entries over all layers, by one plain sort.

    Every eligible entry gets the sort key (demoted?, -score, position in the
    concatenation of all layers); the first ``budget`` keys are kept. So
    non-demoted entries come before demoted ones, higher scores first, and
    ties go to the lower (layer, flat index). Twin of
    :func:`sparsify.allocation.global_top_b`.
    """
    flat = np.concatenate([np.ravel(np.asarray(sc, dtype=np.float64)) for sc in scores])
    ok = np.ones(flat.size, bool) if eligible is None else np.concatenate([np.ravel(e) for e in eligible])
    late = np.zeros(flat.size, bool) if demoted is None else np.concatenate([np.ravel(d) for d in demoted])
    candidates = sorted((bool(late[i]), -flat[i], i) for i in range(flat.size) if ok[i])
    keep = np.zeros(flat.size, bool)
    for _, _, i in candidates[:max(int(budget), 0)]:
        keep[i] = True
    out, start = [], 0
    for sc in scores:
        out.append(keep[start:start + np.size(sc)].reshape(np.shape(sc)))
        start += np.size(sc)
    return out


def balanced_m(lam: float, a: float, inv_eta: float, cap: float) -> float:
    """One side's continuous optimum of ``(1/eta) eps_rand(m) + lam m`` over ``0 <= m <= cap``.

    ``a = alpha S``. With ``eps = eps_rand(m)``, ``m = a (3 + 2 eps) / (6 eps^2)`` and
    ``d eps/dm = -3 eps^3 / (a (eps + 3))``; stationarity
    ``(1/eta) 3 eps^3 / (a (eps + 3)) = lam`` is the cubic ``eps^3 - t eps - 3 t = 0``
    with ``t = lam a / (3 / eta)``, whose one positive root is taken from ``np.roots``.
    """
    if a <= 0:
        return 0.0
    t = lam * a / (3.0 * inv_eta)
    roots = np.roots([1.0, 0.0, -t, -3.0 * t])
    eps = max(r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r.real)))
    return min(a * (3.0 + 2.0 * eps) / (6.0 * eps * eps), cap)


def balanced_targets(mass, nnz, inv_eta, budget: int, C: float, delta: float) -> np.ndarray:
    """Integer per-side targets of the balanced program, solved plainly (docs/theory.md S10).

    Minimise ``sum (1/eta) eps_rand(m)`` s.t. ``sum m <= B``, ``0 <= m <= nnz``:
    bisection on ``log lambda`` until the continuous optimum (:func:`balanced_m`,
    side by side) spends the budget; then round down and give the remaining
    units to the largest fractional parts (ties to the lower side). Sides
    without sensitivity mass (dead) get budget only once every live side is
    full, in index order. Twin of :func:`sparsify.allocation.balanced_targets`.
    """
    from ..bounds import alpha

    mass = np.asarray(mass, dtype=np.float64)
    nnz = np.asarray(nnz, dtype=np.int64)
    a = alpha(C, delta) * mass
    cap = [float(n) if (ai > 0 and n > 0) else 0.0 for ai, n in zip(a, nnz)]
    budget = int(min(budget, nnz.sum()))
    if budget >= sum(cap):
        m = np.array(cap, dtype=np.int64)
    else:
        def spent(log_lam):
            return sum(balanced_m(np.exp(log_lam), ai, ie, c) for ai, ie, c in zip(a, inv_eta, cap))

        lo, hi = -50.0, 50.0
        while spent(lo) < budget:
            lo -= 50.0
        while spent(hi) > budget:
            hi += 50.0
        while hi - lo > 1e-12:
            mid = 0.5 * (lo + hi)
            if spent(mid) > budget:
                lo = mid
            else:
                hi = mid
        m_cont = np.array([balanced_m(np.exp(hi), ai, ie, c) for ai, ie, c in zip(a, inv_eta, cap)])
        m = np.floor(m_cont).astype(np.int64)
        frac = m_cont - m
        for _ in range(budget - int(m.sum())):
            room = [i for i in range(m.size) if m[i] < cap[i]]
            best = max(room, key=lambda i: (frac[i], -i))
            m[best] += 1
            frac[best] = -1.0
    for i in range(m.size):  # dead sides last, in index order
        m[i] += min(budget - int(m.sum()), int(nnz[i] - m[i]))
    return m
