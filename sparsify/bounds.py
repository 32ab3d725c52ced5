"""Per-side error bounds of SiPP as pure, vectorised functions (docs/theory.md S6–S9, S14).

Every function computes exactly the formula its docstring states; the
derivations are in docs/theory.md (section names given per function) and the
tests in tests/test_bounds.py and tests/test_guarantees.py check them.

Notation (the table in docs/theory.md maps every symbol to a code name):

* ``s`` — empirical sensitivities of one side of one neuron, ``S = sum(s)``
  (``S >= 1`` for a side that is alive on the batch S, ``0`` for a dead one);
* ``m`` — kept weights of a side, ``N`` — draws of the sampler;
* ``eps`` — relative error of a side's pre-activation, ``delta`` — failure
  probability;
* ``C`` — the constant of the out-of-sample assumption ``g(x) <= C * s``;
* ``P`` output patches and ``k`` kernel elements of a layer (both 1 for a
  dense layer).

Which statements are assumption-free:

* :func:`eps_det_in_sample`, :func:`det_relative_error`, :func:`eps_in_sample`
  and :func:`draws_in_sample` hold for every point of S with no assumption;
* :func:`eps_det`, :func:`eps_out_of_sample`, :func:`draws_out_of_sample` and
  the authors' :func:`eps_rand` / :func:`m_for_eps` hold for a fresh point x
  only under ``g(x) <= C * s``.

The network-level propagation of these per-side bounds (docs/theory.md S12)
lives in :mod:`sparsify.verify.propagation`, next to the checks that use it.
"""
from __future__ import annotations

import math

import numpy as np

from ._validation import check_scalar

__all__ = [
    "DEFAULT_C",
    "DEFAULT_DELTA",
    "alpha",
    "det_relative_error",
    "draws_in_sample",
    "draws_out_of_sample",
    "eps_det",
    "eps_det_in_sample",
    "eps_det_of_mass",
    "eps_in_sample",
    "eps_out_of_sample",
    "eps_rand",
    "eps_rand_slope",
    "hybrid_rule",
    "hybrid_samples",
    "m_for_eps",
    "network_eta",
    "size_of_S",
]

#: Defaults used by the authors (docs/theory.md S8).
DEFAULT_C = 3.0
DEFAULT_DELTA = 1e-16


def _scalar_or_array(out: np.ndarray):
    return out if np.ndim(out) else float(out)


# --- S8: the authors' allocation form ---------------------------------
def alpha(C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1) -> float:
    """``alpha = 2 C ln(8 (P + 1) k / delta)``, the constant of the allocation bound.

    From the union bound over the ``P + 1`` evaluation points (patches) and the
    ``k`` kernel elements, with a Bernstein tail at level ``delta``; ``C`` is
    the constant of the assumption ``g(x) <= C s`` (docs/theory.md S8; docs/theory.md,
    "The authors' allocation form").
    """
    return 2.0 * C * np.log(8.0 * (P + 1) * k / delta)


def eps_rand(m, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """The authors' sampling error bound ``eps(m) = 1/2 [a/(3m) + sqrt((a/(3m))^2 + 2a/m)]``, ``a = alpha S``.

    ``alpha`` is :func:`alpha`. This is the positive root of
    ``m eps^2 = a (1/2 + eps/3)``, the Bernstein-type condition the authors
    use to allocate budgets; it rests on the assumption ``g(x) <= C s`` for the
    points it is applied to (docs/theory.md, "The authors' allocation form").
    Vectorised over ``m`` (> 0) and ``S`` (>= 0). ``m = 0`` gives ``inf`` for a
    live side (``S > 0``); a dead side (``S == 0``) has bound 0. Decreasing and
    convex in ``m``.
    """
    m = np.asarray(m, dtype=np.float64)
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        b = a / (3.0 * m)
        out = 0.5 * (b + np.sqrt(b * b + 2.0 * a / m))
    out = np.where(a == 0, 0.0, np.where(m <= 0, np.inf, out))
    return out if out.ndim else float(out)


def m_for_eps(eps, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """Inverse of :func:`eps_rand`: ``m(eps) = a (3 + 2 eps) / (6 eps^2)``, ``a = alpha S``.

    Solving ``m eps^2 = a (1/2 + eps/3)`` for ``m`` gives this; it is the
    (real-valued) number of samples at which :func:`eps_rand` equals ``eps``.
    Vectorised over ``eps`` (> 0) and ``S``.
    """
    eps = np.asarray(eps, dtype=np.float64)
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    out = a * (3.0 + 2.0 * eps) / (6.0 * eps * eps)
    return out if out.ndim else float(out)


def eps_rand_slope(m, S, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """Derivative ``d eps_rand / dm = -3 eps^3 / (a (eps + 3))`` (the reciprocal of ``dm/deps``).

    From ``m(eps) = a (3 + 2 eps)/(6 eps^2)``: ``dm/deps = -a (eps + 3)/(3 eps^3)``.
    The balanced allocation (docs/theory.md S10, :mod:`sparsify.allocation`)
    sets ``(1/eta) * 3 eps^3 / (a (eps + 3)) = lambda``.
    """
    a = alpha(C, delta, P, k) * np.asarray(S, dtype=np.float64)
    e = np.asarray(eps_rand(m, S, C, delta, P, k))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a == 0, 0.0, -3.0 * e**3 / (a * (e + 3.0)))
    return out if out.ndim else float(out)


# --- S8: assumption-free and out-of-sample Bernstein guarantees -------
def _bernstein_eps(N, R, L):
    """``eps(N) = b L/(3N) + sqrt((b L/(3N))^2 + 2 v L / N)`` with ``v = R - 1``, ``b = max(1, R - 1)``."""
    N = np.asarray(N, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    v = np.maximum(R - 1.0, 0.0)
    b = np.maximum(1.0, R - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = b * L / (3.0 * N)
        out = h + np.sqrt(h * h + 2.0 * v * L / N)
    out = np.where(R == 0, 0.0, np.where(N <= 0, np.inf, out))
    return _scalar_or_array(out)


def _bernstein_draws(eps, R, L):
    """``N(eps) = ceil(L (2 v + 2 b eps / 3) / eps^2)`` with ``v = R - 1``, ``b = max(1, R - 1)``."""
    eps = np.asarray(eps, dtype=np.float64)
    if np.any(~(eps > 0)):
        raise ValueError(f"eps: the relative error must be > 0, got {eps[~(eps > 0)].ravel()[:3].tolist()}.")
    R = np.asarray(R, dtype=np.float64)
    v = np.maximum(R - 1.0, 0.0)
    b = np.maximum(1.0, R - 1.0)
    n = L * (2.0 * v + 2.0 * b * eps / 3.0) / (eps * eps)
    # guard the ceiling against rounding just above an integer
    out = np.ceil(n * (1.0 - 4 * np.finfo(np.float64).eps))
    out = np.where(R == 0, 0.0, out).astype(np.int64)
    return out if out.ndim else int(out)


def eps_in_sample(N, S, delta: float = DEFAULT_DELTA, n_points: int = 1):
    """Assumption-free sampling bound on S: ``eps(N) = b L/(3N) + sqrt((b L/(3N))^2 + 2 v L/N)``.

    With ``L = ln(2 n_points / delta)``, ``v = S - 1`` and ``b = max(1, S - 1)``.

    Guarantee: a side with sensitivities ``s`` (``S = sum s``) sampled with
    ``N`` draws from ``q = s / S`` and reweighted (docs/theory.md S7) satisfies
    ``|Z_hat(x) - Z(x)| <= eps |Z(x)|`` at all ``n_points`` points x of S at
    once with probability at least ``1 - delta``.

    Derivation (docs/theory.md, "Sampling on S"): ``Z_hat(x)/Z(x)`` is the mean
    of ``N`` i.i.d. terms ``Y = g_J(x)/q_J``; for x in S, ``g_j(x) <= s_j`` so
    ``Y`` lies in ``[0, S]``, its mean is ``sum_j g_j(x) = 1`` and its variance is
    at most ``E[Y^2] - 1 <= S - 1``. Bernstein's inequality for the mean of
    ``N`` terms with ``|Y - 1| <= b`` and variance ``<= v`` gives
    ``P(|mean - 1| >= eps) <= 2 exp(-N eps^2 / (2v + 2b eps/3))``; setting this
    to ``delta / n_points`` and taking the union over the points gives the
    formula. No assumption on the data. Vectorised over ``N`` and ``S``; a dead
    side (``S == 0``) has bound 0, ``N = 0`` gives ``inf``.
    """
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    n_points = check_scalar(n_points, "n_points", kind="int", low=1)
    return _bernstein_eps(N, S, math.log(2.0 * n_points / delta))


def draws_in_sample(eps, S, delta: float = DEFAULT_DELTA, n_points: int = 1):
    """Draws that make :func:`eps_in_sample` at most ``eps``: ``N = ceil(L (2v + 2b eps/3) / eps^2)``.

    ``L = ln(2 n_points / delta)``, ``v = S - 1``, ``b = max(1, S - 1)``. With
    this many draws the sampled side is within ``(1 ± eps)`` of the original
    at every point of S simultaneously with probability at least
    ``1 - delta``, with no assumption (docs/theory.md, "Sampling on S").
    Returns integers; 0 for a dead side.
    """
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    n_points = check_scalar(n_points, "n_points", kind="int", low=1)
    return _bernstein_draws(eps, S, math.log(2.0 * n_points / delta))


def eps_out_of_sample(N, S, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C, n_points: int = 1):
    """Sampling bound at fresh points under ``g(x) <= C s``: :func:`eps_in_sample` with ``S`` -> ``C S``.

    ``eps(N) = b L/(3N) + sqrt((b L/(3N))^2 + 2 v L/N)``, ``L = ln(2 n_points/delta)``,
    ``v = C S - 1``, ``b = max(1, C S - 1)``.

    Assumption: for each of the ``n_points`` fixed points x (chosen
    independently of the draws), every weight of the side has
    ``g_j(x) <= C s_j``. Then ``Y = g_J(x)/q_J`` lies in ``[0, C S]`` with mean 1
    and the in-sample argument goes through unchanged (docs/theory.md,
    "Sampling off S"). Without the assumption nothing is claimed.
    """
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    C = check_scalar(C, "C (>= 1: g <= s on S itself)", low=1.0)
    n_points = check_scalar(n_points, "n_points", kind="int", low=1)
    return _bernstein_eps(N, C * np.asarray(S, dtype=np.float64), math.log(2.0 * n_points / delta))


def draws_out_of_sample(eps, S, delta: float = DEFAULT_DELTA, C: float = DEFAULT_C, n_points: int = 1):
    """Inverse of :func:`eps_out_of_sample`: ``N = ceil(L (2v + 2b eps/3) / eps^2)``, ``v = C S - 1``, ``b = max(1, C S - 1)``."""
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    C = check_scalar(C, "C (>= 1: g <= s on S itself)", low=1.0)
    n_points = check_scalar(n_points, "n_points", kind="int", low=1)
    return _bernstein_draws(eps, C * np.asarray(S, dtype=np.float64), math.log(2.0 * n_points / delta))


# --- S6: deterministic sparsification ---------------------------------
def eps_det(s_sorted_desc, m, C: float = DEFAULT_C):
    """Deterministic bound ``eps_det(m) = C * sum of s outside the top m``.

    ``s_sorted_desc`` holds one side's sensitivities in descending order;
    ``m`` may be an integer or an array of integers (vectorised via a suffix
    sum). For points x of S the error is exactly ``sum_{pruned j} g_j(x) <=
    sum_{pruned j} s_j`` (:func:`eps_det_in_sample`, i.e. ``C = 1``, no
    assumption); for a fresh x it is at most this value under ``g(x) <= C s``.
    The error is one-sided: ``(1 - eps) Z <= Z_hat <= Z`` on the side's own
    sign (docs/theory.md, "Deterministic pruning"). Non-increasing in ``m``.
    """
    s = np.asarray(s_sorted_desc, dtype=np.float64)
    tail = np.concatenate([np.cumsum(s[::-1])[::-1], [0.0]])  # tail[m] = sum(s[m:])
    m = np.clip(np.asarray(m, dtype=np.int64), 0, s.size)
    out = eps_det_of_mass(tail[m], C)
    return out if out.ndim else float(out)


def eps_det_of_mass(pruned_mass, C: float = DEFAULT_C):
    """The deterministic bound from the pruned sensitivity mass: ``eps_det = C * max(pruned_mass, 0)``.

    The one statement of the rule (docs/theory.md S6): :func:`eps_det` passes the
    suffix sum of one sorted side, :func:`sparsify.allocation.det_bound` the mass
    of every side minus its kept mass (clamped at 0 against rounding).
    Vectorised; returns an array (a 0-d one for scalar input).
    """
    return C * np.maximum(np.asarray(pruned_mass, dtype=np.float64), 0.0)


def eps_det_in_sample(s_sorted_desc, m):
    """Assumption-free deterministic bound on S: ``sum_{j not in top m} s_j`` (:func:`eps_det` with ``C = 1``)."""
    return eps_det(s_sorted_desc, m, C=1.0)


def det_relative_error(g, kept):
    """Exact relative error of deterministic pruning at each point: ``sum_{j pruned} g_j(x)``.

    ``g`` has shape ``(n_points, n)`` (the relative importances of one side at
    each point, ``reference.relative_importance``), ``kept`` is a boolean mask
    of shape ``(n,)``. On a side with ``Z(x) != 0``,
    ``(Z(x) - Z_hat(x)) / Z(x)`` equals this value exactly (docs/theory.md,
    "Deterministic pruning"); it never exceeds :func:`eps_det_in_sample`.
    """
    g = np.asarray(g, dtype=np.float64)
    kept = np.asarray(kept, dtype=bool)
    if g.shape[-1:] != kept.shape:
        raise ValueError(f"kept: expected a mask of shape {g.shape[-1:]} to match g of shape {g.shape}, got {kept.shape}.")
    return np.sum(np.where(kept, 0.0, g), axis=-1)


# --- S9: the hybrid rule -------------------------------------------------
def hybrid_samples(s_sorted_desc, m, C: float = DEFAULT_C, delta: float = DEFAULT_DELTA, P: int = 1, k: int = 1):
    """The hybrid choice for one side: sample iff ``eps_det(m) > eps_rand(m)`` (docs/theory.md S9).

    Both bounds use the same ``C``; ``S = sum(s)``. Vectorised over ``m``.
    Ties keep the deterministic top-m (no reweighting, no randomness).
    """
    s = np.asarray(s_sorted_desc, dtype=np.float64)
    out = hybrid_rule(eps_det(s, m, C), eps_rand(m, s.sum(), C, delta, P, k))
    return out if out.ndim else bool(out)


def hybrid_rule(e_det, e_rand):
    """The hybrid rule itself (docs/theory.md S9): sample a side iff ``e_det > e_rand``.

    ``e_det`` and ``e_rand`` are its two bounds at the same ``m`` (vectorised); a
    tie keeps the deterministic top-m. :func:`hybrid_samples` and
    :func:`sparsify.prune` both decide with this function.
    """
    return np.asarray(e_det) > np.asarray(e_rand)


# --- size of S (docs/theory.md S14) ---------------------------------
def size_of_S(eta, eta_star, delta: float = DEFAULT_DELTA, K: float = 3.0) -> int:
    """Points in the batch S: ``ceil(K ln(8 eta eta* / delta))``.

    ``eta`` is the number of neurons of all layers with weights, ``eta*`` the
    largest of them, ``K`` the authors' constant (``K = 3`` in their
    experiments). It is the sample size at which, by a union bound over the
    ``eta`` neurons and a Chernoff-type tail per neuron, the empirical
    sensitivities on S upper-bound the true ones up to the constant ``C`` with
    probability ``1 - delta`` (docs/theory.md, "How large S must be"). For a
    784-300-100-10 network (``eta = 410``, ``eta* = 300``) with ``delta = 1e-16``
    this is 152.
    """
    eta = check_scalar(eta, "eta", kind="int", low=1)
    eta_star = check_scalar(eta_star, "eta_star", kind="int", low=1)
    if eta_star > eta:
        raise ValueError(f"eta_star: the widest layer ({eta_star}) cannot have more neurons than all layers together (eta={eta}).")
    delta = check_scalar(delta, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
    K = check_scalar(K, "K (the authors use 3)", low=0.0, low_open=True)
    value = K * math.log(8.0 * eta * eta_star / delta)
    return int(math.ceil(value * (1.0 - 4e-16)))


def network_eta(network) -> tuple[int, int]:
    """``(eta, eta*)`` of a network: neurons of all layers with weights, and the widest such layer."""
    widths = [layer.n_out for layer in network.prunable_layers]  # a convolution's neurons: its output channels
    return int(sum(widths)), int(max(widths))


def patch_sizes(network) -> list[tuple[int, int]]:
    """``(P, k)`` of every prunable layer, the arguments of :func:`alpha` (docs/theory.md S8, S15):
    ``P`` patches per point and ``k = c_in*kh*kw`` kernel elements for a convolution, ``(1, 1)``
    for a dense layer."""
    return [(layer.patches_per_point(shape), layer.n_in) if layer.kind == "conv2d" else (1, 1)
            for layer, shape in zip(network.prunable_layers, network.prunable_input_shapes)]
