"""Error bounds of SiPP as pure, vectorised functions (DESIGN §2 items 6–12).

Notation (docs/theory.md has the derivations):

* ``s`` — empirical sensitivities of one side of one neuron, ``S = sum(s)``;
* ``C`` — the constant of the out-of-sample assumption ``g(x) <= C * s``;
* ``delta`` — failure probability; ``P`` output patches and ``k`` kernel
  elements of the layer (both 1 for a dense layer).
"""
from __future__ import annotations

import numpy as np

#: Defaults used by the authors (DESIGN §2 item 8).
DEFAULT_C = 3.0
DEFAULT_DELTA = 1e-16


def alpha(C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1) -> float:
    """``alpha = 2 C ln(8 (P + 1) k / delta)``, the constant of the allocation bound.

    From the union bound over the ``P + 1`` evaluation points (patches) and the
    ``k`` kernel elements, with the Bernstein tail at level ``delta``.
    """
    return 2.0 * C * np.log(8.0 * (P + 1) * k / delta)


def eps_rand(m, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """Sampling error bound ``eps(m) = 1/2 [a/(3m) + sqrt((a/(3m))^2 + 2a/m)]``, ``a = alpha S``.

    Vectorised over ``m`` (> 0) and ``S`` (>= 0). ``m = 0`` gives ``inf`` for a
    live side (``S > 0``); a dead side (``S == 0``) has bound 0.
    """
    m = np.asarray(m, dtype=np.float64)
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = a / (3.0 * m)
        out = 0.5 * (b + np.sqrt(b * b + 2.0 * a / m))
    out = np.where(a == 0, 0.0, np.where(m <= 0, np.inf, out))
    return out if out.ndim else float(out)


def m_for_eps(eps, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """Inverse of :func:`eps_rand`: ``m(eps) = a (3 + 2 eps) / (6 eps^2)``.

    This is the number of samples at which the Bernstein bound equals ``eps``
    (solve ``eps^2 = (a/m)(1/2 + eps/3)... `` for ``m``; see docs/theory.md).
    """
    eps = np.asarray(eps, dtype=np.float64)
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    out = a * (3.0 + 2.0 * eps) / (6.0 * eps * eps)
    return out if out.ndim else float(out)


def eps_rand_slope(m, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """Derivative ``d eps_rand / dm = -3 eps^3 / (a (eps + 3))`` (from ``dm/deps``)."""
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    e = np.asarray(eps_rand(m, S, C, delta, P, k))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a == 0, 0.0, -3.0 * e**3 / (a * (e + 3.0)))
    return out if out.ndim else float(out)


def eps_det(s_sorted_desc, m, C: float = DEFAULT_C):
    """Deterministic bound ``eps_det(m) = C * sum of s outside the top m``.

    ``s_sorted_desc`` holds one side's sensitivities in descending order;
    ``m`` may be an integer or an array of integers (vectorised via a suffix sum).
    """
    s = np.asarray(s_sorted_desc, dtype=np.float64)
    tail = np.concatenate([np.cumsum(s[::-1])[::-1], [0.0]])  # tail[m] = sum(s[m:])
    m = np.clip(np.asarray(m, dtype=np.int64), 0, s.size)
    out = C * tail[m]
    return out if out.ndim else float(out)
