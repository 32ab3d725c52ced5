"""The per-layer steps for dense layers, by plain loops: sign splits, relative importance,
sensitivity (S1–S5), top-m and sampling of one side (S6, S7, S11), and the report's side errors.
"""
from __future__ import annotations

import numpy as np


__all__ = ['draws_for_unique', 'expected_unique', 'relative_importance', 'relative_importance_point', 'sample_counts', 'sensitivity', 'sensitivity_layer', 'side_entries', 'side_errors', 'side_preactivations', 'sparsify_side_det', 'sparsify_side_rand', 'split_inputs', 'split_weights', 'top_m']


# --- S1: sign split of the inputs ----------------------------------
def split_inputs(A: np.ndarray) -> np.ndarray:
    """Return ``A`` if it is nonnegative, else ``[max(A, 0); max(-A, 0)]`` (rows stacked).

    With a negative input a weight's contribution can change sign; splitting
    each point into its positive and negative part makes every side's terms
    share one sign again. Every point then counts twice.
    """
    if A.size == 0 or A.min() >= 0:
        return A
    return np.concatenate([np.maximum(A, 0), np.maximum(-A, 0)], axis=0)


# --- S2: sign split of the weights ---------------------------------
def split_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W+ = max(W, 0)`` and ``W- = min(W, 0)``; ``W = W+ + W-``."""
    return np.maximum(W, 0), np.minimum(W, 0)


# --- S3–S4: pre-activation parts and relative importance ------------
def relative_importance_point(a: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``g_ij(x) = W_ij a_j / Z^{sign W_ij}_i(x)`` for one point ``a`` (n_in,) >= 0.

    ``Z+ = W+ @ a`` and ``Z- = W- @ a`` (no bias). Where the denominator is 0
    the importance is 0. Returns an array shaped like ``W``.
    """
    Wp, Wn = split_weights(W)
    zp, zn = Wp @ a, Wn @ a
    contrib = W * a[None, :]                       # W_ij a_j
    denom = np.where(W > 0, zp[:, None], zn[:, None])  # Z of the weight's own side
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(denom != 0, contrib / denom, 0.0)
    return g.astype(W.dtype, copy=False)


def relative_importance(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``g`` for every point: shape (n_points, n_out, n_in). For small inputs only."""
    return np.stack([relative_importance_point(a, W) for a in A])


# --- S5: empirical sensitivity ---------------------------------------
def sensitivity_layer(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``s_ij = max over x in S of g_ij(x)`` for one layer.

    ``A`` (n_points, n_in) is the layer's input on S; it is sign-split here
    when it has negative entries. Memory stays O(n_out * n_in): one point at a
    time.
    """
    A = split_inputs(A)
    s = np.zeros(W.shape, dtype=W.dtype)
    for a in A:
        np.maximum(s, relative_importance_point(a, W), out=s)
    return s


def sensitivity(network, X_S, patch_reduction: str = "max") -> list[np.ndarray]:
    """Empirical sensitivities of every prunable layer of ``network`` on the batch ``X_S``
    (a convolution's by :func:`sensitivity_conv_layer` with ``patch_reduction``)."""
    from .conv import sensitivity_conv_layer

    return [sensitivity_conv_layer(A, layer, patch_reduction) if layer.kind == "conv2d"
            else sensitivity_layer(A, layer.weight)
            for A, layer in zip(network.trace(X_S), network.prunable_layers)]


# --- sides --------------------------------------------------------------------
def side_entries(w_row: np.ndarray, sign: int) -> np.ndarray:
    """Indices ``j`` of one side of a neuron: ``w_j > 0`` (sign=+1) or ``w_j < 0`` (sign=-1)."""
    return np.flatnonzero(w_row > 0) if sign > 0 else np.flatnonzero(w_row < 0)


# --- S6: deterministic sparsification --------------------------------
def top_m(s_side: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` largest values of ``s_side``; ties go to the lower index."""
    order = np.argsort(-s_side, kind="stable")
    return np.sort(order[:m])


def sparsify_side_det(w_side: np.ndarray, s_side: np.ndarray, m: int) -> np.ndarray:
    """Keep the top-``m`` weights of one side by sensitivity, unchanged; zero the rest."""
    out = np.zeros_like(w_side)
    keep = top_m(s_side, m)
    out[keep] = w_side[keep]
    return out


# --- S11: distinct kept weights vs number of draws ----------------------
def expected_unique(q: np.ndarray, N: float) -> float:
    """``E[#distinct indices in N draws from q] = sum_j 1 - (1 - q_j)^N``."""
    return float(np.sum(1.0 - (1.0 - q) ** N))


def draws_for_unique(q: np.ndarray, m: float) -> int:
    """Smallest integer ``N`` with ``expected_unique(q, N) >= m`` (bisection).

    ``m`` must be below the number of positive ``q_j`` (else no finite N).
    """
    support = int(np.count_nonzero(q > 0))
    if m <= 0:
        return 0
    if m > support:
        raise ValueError(f"m={m} exceeds the support size {support}")
    if m <= 1:
        return 1  # one draw hits exactly one entry (no rounding of sum q involved)
    lo, hi = 0, max(1, int(np.ceil(m)))
    while expected_unique(q, hi) < m:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if expected_unique(q, mid) >= m:
            hi = mid
        else:
            lo = mid
    return hi


# --- S7: randomized sparsification -----------------------------------
def sample_counts(s_side: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Multinomial counts over ``q = s / S`` from uniforms ``u`` in [0, 1).

    Draw ``J`` is the first index whose running sum of ``s`` exceeds
    ``u * S`` (inverse-CDF sampling). ``S`` is the last running sum, so the
    Numba kernel, which sums in the same order, reproduces this bit for bit.
    """
    cum = np.cumsum(s_side)
    total = cum[-1]
    idx = np.searchsorted(cum, u * total, side="right")
    # u * total can round up to total: fall back to the last index with mass
    idx = np.minimum(idx, np.flatnonzero(s_side > 0)[-1])
    return np.bincount(idx, minlength=s_side.size)


def sparsify_side_rand(w_side: np.ndarray, s_side: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Importance sampling with reweighting of one side from ``N = len(u)`` draws.

    ``q_j = s_j / S``, ``c ~ Multinomial(N, q)`` and ``w_hat_j = w_j c_j / (N q_j)``,
    written as ``w_j c_j S / (N s_j)``. Unsampled weights become 0.
    """
    N = u.size
    c = sample_counts(s_side, u)
    total = np.cumsum(s_side)[-1]
    out = np.zeros_like(w_side)
    hit = c > 0
    # computed in float64 whatever the dtype, then stored in the weights' dtype
    w64, s64 = w_side[hit].astype(np.float64), s_side[hit].astype(np.float64)
    out[hit] = (w64 * c[hit]) * np.float64(total) / (np.float64(N) * s64)
    return out


# --- the report: measured error of each side on S ----------------------------------
def side_preactivations(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(|Z+|, |Ẑ+|), (|Z-|, |Ẑ-|)]``: each side's pre-activation part before and after pruning.

    ``A`` (n_points, n_in) must already be sign-split (nonnegative, S1), so the
    terms of one side share one sign and the magnitude is all a side needs.
    ``Z± = A @ W±.T`` (S3, no bias) and ``Ẑ±`` the same with the entries of
    ``W_hat`` on the original side of each weight (``W > 0`` resp. ``W < 0``).
    Each array has shape (n_points, n_out), in the dtype of the products.
    """
    return [(np.abs(A @ np.where(side, W, 0).T), np.abs(A @ np.where(side, W_hat, 0).T))
            for side in (W > 0, W < 0)]


def side_errors(A: np.ndarray, W: np.ndarray, W_hat: np.ndarray) -> np.ndarray:
    """Measured relative error ``max_x |(|Ẑ±_i(x)| - |Z±_i(x)|)| / |Z±_i(x)|`` of each side.

    ``A`` is sign-split first; ``Z±`` and ``Ẑ±`` are those of
    :func:`side_preactivations`. Only points with ``Z ≠ 0`` count; a side with
    ``Z = 0`` at every point gets NaN. Shape (n_out, 2).
    """
    A = split_inputs(A)
    out = np.full((W.shape[0], 2), np.nan)
    for col, (Z, Zh) in enumerate(side_preactivations(A, W, W_hat)):
        Z, Zh = Z.astype(np.float64), Zh.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(Z > 0, np.abs(Zh - Z) / Z, np.nan)
        has = np.any(Z > 0, axis=0)
        out[has, col] = np.nanmax(rel[:, has], axis=0)
    return out
