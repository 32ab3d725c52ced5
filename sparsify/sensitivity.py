"""Empirical sensitivity ``s_ij = max_x g_ij(x)`` (DESIGN §2 items 1–5).

Public function :func:`sensitivity`, fast path ``_sensitivity_layer`` and its
Numba kernel ``_max_times``; the readable twin is
:func:`sparsify.reference.sensitivity_layer`.

Fast-path algebra. For ``W_ij > 0``, ``g_ij(x) = W_ij * A_xj / Z+_xi``, so
``s_ij = W_ij * max_x (A_xj * r+_xi)`` with ``r+ = 1/Z+`` (0 where ``Z+ = 0``);
likewise for ``W_ij < 0`` with ``|W_ij|`` and ``r- = 1/|Z-|``. The pre-activation
parts ``Z±`` are two GEMMs; the two max-times products
``R±_ij = max_x r±_xi A_xj`` have GEMM shape and run in the kernel, which never
materialises the (points × out × in) tensor.
"""
from __future__ import annotations

import numpy as np

from ._config import njit, prange
from .reference import split_inputs, split_weights


@njit(parallel=True, fastmath=True)
def _max_times(A, r, out):
    """``out[i, j] = max_x r[x, i] * A[x, j]`` (all inputs >= 0), parallel over i.

    A: (n_points, n_in), r: (n_points, n_out), out: (n_out, n_in), zero-filled.
    """
    n_points, n_in = A.shape
    n_out = r.shape[1]
    for i in prange(n_out):
        row = out[i]
        for x in range(n_points):
            c = r[x, i]
            if c == 0:
                continue
            a = A[x]
            for j in range(n_in):
                v = a[j] * c
                if v > row[j]:
                    row[j] = v


def _reciprocal(Z: np.ndarray) -> np.ndarray:
    """``1/|Z|`` where ``Z != 0``, else 0 (a side with no mass at x contributes nothing)."""
    absz = np.abs(Z)
    out = np.zeros_like(absz)
    np.divide(1, absz, out=out, where=absz != 0)
    out[~np.isfinite(out)] = 0  # 1/subnormal overflow: such a side carries no usable mass
    return out


def _sensitivity_layer(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Fast ``s`` for one layer; ``A`` and ``W`` are validated and of one dtype."""
    A = np.ascontiguousarray(split_inputs(A))
    Wp, Wn = split_weights(W)
    rp = np.ascontiguousarray(_reciprocal(A @ Wp.T))
    rn = np.ascontiguousarray(_reciprocal(A @ Wn.T))
    Rp = np.zeros(W.shape, dtype=W.dtype)
    Rn = np.zeros(W.shape, dtype=W.dtype)
    _max_times(A, rp, Rp)
    _max_times(A, rn, Rn)
    s = Wp * Rp - Wn * Rn
    np.minimum(s, 1, out=s)  # W * (A * (1/Z)) can exceed W * A / Z = 1 by an ulp
    return s


def sensitivity(network, X_S) -> list:
    """Empirical sensitivities of every prunable layer of ``network`` on ``X_S``.

    Parameters
    ----------
    network : sparsify.Network
    X_S : array, shape (n_points, n_in)
        The batch S that defines the importance distribution; at least one point.

    Returns
    -------
    list of arrays, one per prunable layer, each shaped like its ``weight``,
    with ``0 <= s <= 1``; ``s_ij = max_{x in S} W_ij a_j(x) / Z^{sign W_ij}_i(x)``.
    """
    inputs = layer_inputs(network, X_S)
    return [_sensitivity_layer(A, layer.weight) for A, layer in zip(inputs, network.layers)]


def layer_inputs(network, X_S) -> list:
    """Validate S and return the input matrix of each layer (the trace)."""
    from .network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    X = network.check_input(X_S, "X_S")
    if X.shape[0] == 0:
        raise ValueError(
            "X_S: the batch S is empty; sensitivities need at least one input point "
            "(the authors use about 3 ln(8 eta eta*/delta) points)."
        )
    return network.trace(X)
