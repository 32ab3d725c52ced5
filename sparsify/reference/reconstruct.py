"""Least-squares reconstruction of one layer (S16): one ``np.linalg.lstsq`` per row.
"""
from __future__ import annotations

import numpy as np

__all__ = ['reconstruct_layer']


# --- docs/theory.md S16: least-squares reconstruction of one layer ---------------------
def reconstruct_layer(A_hat: np.ndarray, Z: np.ndarray, mask: np.ndarray, lam: float,
                      fit_bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Refit the kept weights (and the bias) of every row by ridge least squares.

    Row ``i`` with kept set ``K = mask[i]`` solves
    ``min ‖A_hat[:, K] w_K + b_i − Z[:, i]‖² + lam ‖w_K‖²`` (bias unpenalised) as
    one ordinary least-squares problem on the stacked system
    ``[[A_hat_K, 1], [√lam I, 0]] [w_K; b_i] = [Z_i; 0]``. ``lam`` is the absolute
    ridge. Returns ``W`` (n_out, n_in), zero outside ``mask``, and the bias (or None).
    """
    A_hat = np.asarray(A_hat, dtype=np.float64)
    Z = np.asarray(Z, dtype=np.float64)
    n_points, n_in = A_hat.shape
    W = np.zeros((Z.shape[1], n_in))
    b = np.zeros(Z.shape[1])
    for i in range(Z.shape[1]):
        K = np.flatnonzero(mask[i])
        columns = [A_hat[:, K]] + ([np.ones((n_points, 1))] if fit_bias else [])
        top = np.concatenate(columns, axis=1)
        ridge = np.zeros((K.size, top.shape[1]))
        ridge[:, :K.size] = np.sqrt(lam) * np.eye(K.size)
        system = np.concatenate([top, ridge], axis=0)
        target = np.concatenate([Z[:, i], np.zeros(K.size)])
        if system.shape[1] == 0:
            continue
        x = np.linalg.lstsq(system, target, rcond=None)[0]
        W[i, K] = x[:K.size]
        if fit_bias:
            b[i] = x[K.size]
    return W, (b if fit_bias else None)
