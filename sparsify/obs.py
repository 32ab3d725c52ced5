"""Optimal-brain-surgeon pruning with compensating updates, SparseGPT-style (a baseline).

Per layer, in order, with ``Â`` the layer's input rows from the already pruned
prefix (calibration points), the layer's squared output change for a change
``δ`` of one row is ``δᵀ H δ`` with

    H = ÂᵀÂ + λ I,     λ = lam · mean(diag(ÂᵀÂ))   (relative damping, default 0.01).

Removing weight q of a row (``δ_q = −w_q``) at least cost changes the row by
``δ = −(w_q / [H⁻¹]_qq) H⁻¹_{:,q}`` and costs ``w_q² / [H⁻¹]_qq`` (the OBS
formula). SparseGPT makes this fast for all rows at once by visiting the
columns left to right and freezing each visited column: the inverse Hessian of
the columns not yet visited is then read off the upper Cholesky factor ``U`` of
``H⁻¹`` (``H⁻¹ = Uᵀ U``): at column j, ``[H_F⁻¹]_jj = U_jj²`` and the update of
the later columns is ``−err · U_{j, j:}`` with ``err = (w_j − q_j) / U_jj``.
Columns go in blocks of ``block_size``; inside a block the update is applied
column by column, to later blocks once per block (a GEMM).

Selection: the saliency ``w² / U_jj²`` of the block's weights (after the updates
of earlier blocks); unstructured, each block keeps its share of the layer's
budget (the same fraction in every layer); with an N:M pattern, each group of M
columns keeps the N of largest saliency per row, chosen when the sweep reaches
the group. Biases are not changed. This module is itself the readable version
(NumPy, no kernel); layers enter through :func:`sparsify.reconstruct.weight_view`
and :func:`sparsify.reconstruct.layer_inputs`.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ._blas import single_threaded_blas
from ._validation import check_keep_budget, check_scalar
from .network import Network
from .patterns import check_pattern_fits, nm_mask, parse_pattern
from .reconstruct import _row_blocks, calibration_blocks, weight_view, with_view

#: relative damping of H (SparseGPT's default share of the mean diagonal)
DEFAULT_LAM = 0.01
#: columns per block of the sweep
DEFAULT_BLOCK = 128


def damped_hessian(H: np.ndarray, lam: float) -> np.ndarray:
    """``H + λ I`` with ``λ = lam · mean(diag H)`` (``lam`` itself when H is 0)."""
    scale = float(np.mean(np.diag(H)))
    return H + (lam * scale if scale > 0 else lam) * np.eye(H.shape[0])


def inverse_cholesky_upper(H: np.ndarray) -> np.ndarray:
    """Upper ``U`` with ``H⁻¹ = Uᵀ U`` (``H`` symmetric positive definite)."""
    Hinv = cho_solve(cho_factor(H, lower=True), np.eye(H.shape[0]))
    return np.linalg.cholesky((Hinv + Hinv.T) / 2).T


def obs_sweep(W: np.ndarray, U: np.ndarray, block_size: int, *, keep_counts=None, nm=None, drop=None):
    """Prune and compensate one layer; returns ``(W_new, kept_mask)`` (float64).

    Exactly one selection rule: ``keep_counts`` (kept weights per block, among
    the nonzero ones), ``nm`` (an (N, M) pattern; ``block_size`` must be a
    multiple of M), or a fixed boolean ``drop`` mask (for tests).
    """
    W = np.array(W, dtype=np.float64)
    n_out, n_in = W.shape
    dropped = np.zeros(W.shape, dtype=bool)
    eligible = W != 0
    for b, i1 in enumerate(range(0, n_in, block_size)):
        i2 = min(i1 + block_size, n_in)
        W1, U1 = W[:, i1:i2].copy(), U[i1:i2, i1:i2]
        d = np.diag(U1)
        err = np.zeros_like(W1)
        if drop is not None:
            out = drop[:, i1:i2].copy()
        elif keep_counts is not None:
            out = ~eligible[:, i1:i2]
            sal = np.where(out, -np.inf, W1 ** 2 / d[None, :] ** 2).ravel()
            order = np.argsort(-sal, kind="stable")          # largest saliency first, ties to the lower index
            keep = np.zeros(sal.size, dtype=bool)
            keep[order[:int(keep_counts[b])]] = True
            out = (~keep.reshape(W1.shape)) | out
        else:
            out = np.zeros(W1.shape, dtype=bool)
        for c in range(i2 - i1):
            if nm is not None and c % nm[1] == 0:
                g = slice(c, c + nm[1])
                sal = W1[:, g] ** 2 / d[None, g] ** 2
                out[:, g] = ~nm_mask(sal, nm[0], nm[1], eligible[:, i1:i2][:, g])
            w = W1[:, c]
            q = np.where(out[:, c], 0.0, w)
            e = (w - q) / d[c]
            W1[:, c:] -= np.outer(e, U1[c, c:])
            W1[:, c] = q
            err[:, c] = e
        W[:, i1:i2] = W1
        W[:, i2:] -= err @ U[i1:i2, i2:]
        dropped[:, i1:i2] = out
    return W, ~dropped


def _block_keep_counts(eligible: np.ndarray, budget: int, block_size: int) -> np.ndarray:
    """Split a layer's budget over its column blocks in proportion to their eligible weights."""
    from .baselines import split_budget

    caps = [int(eligible[:, i:i + block_size].sum()) for i in range(0, eligible.shape[1], block_size)]
    return split_budget(budget, caps, caps)


def prune_obs(network: Network, X_calib, keep=None, budget=None, *, pattern=None, lam=None,
              block_size: int = DEFAULT_BLOCK):
    """Prune every layer by OBS with compensating updates (SparseGPT-style sweep).

    Parameters
    ----------
    network : Network
    X_calib : array (n_points, n_in), memory map, or iterable of batches
        Calibration points: the inputs ``Â`` of each layer come from the pruned prefix.
    keep, budget : exactly one (unless ``pattern``): fraction or count of weights kept;
        every layer keeps the same fraction (largest-remainder split).
    pattern : "N:M" or (N, M), optional
        Semi-structured selection instead of keep/budget.
    lam : float > 0, optional
        Relative damping of H (default :data:`DEFAULT_LAM`).
    block_size : int >= 1
        Columns per block (rounded up to a multiple of M with a pattern).

    Returns
    -------
    PruneResult (method "obs"; the report's side bounds are those of the masks,
    computed on the original values, and do not describe the updated weights).
    """
    from .baselines import split_budget
    from .prune import result_from_masks

    t0 = time.perf_counter()
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    lam = check_scalar(lam, "lam", low=0.0, low_open=True, allow_none=True)
    lam = DEFAULT_LAM if lam is None else lam
    block_size = check_scalar(block_size, "block_size", kind="int", low=1)
    nm = None
    if pattern is not None:
        nm = parse_pattern(pattern)
        check_pattern_fits(network, *nm)
        if keep is not None or budget is not None:
            raise ValueError(f"keep/budget: the pattern {nm[0]}:{nm[1]} fixes the kept fraction; drop them.")
        block_size = -(-block_size // nm[1]) * nm[1]
        B = None
    else:
        B = check_keep_budget(keep, budget, network.n_weights)
    blocks = calibration_blocks(network, X_calib)
    views = [weight_view(layer) for layer in network.prunable_layers]
    eligible = [w != 0 for w in views]
    layer_budgets = None
    if B is not None:
        caps = [int(e.sum()) for e in eligible]
        layer_budgets = split_budget(B, [w.size for w in views], caps)
    new_weights, masks = [], []

    def sweep_layer(layer, state):
        """OBS on the next weight layer with inputs ``state`` from the pruned prefix."""
        k = len(masks)
        W = views[k]
        H = np.zeros((W.shape[1], W.shape[1]))
        for a_hat in state:  # a convolution's patch rows, a few points at a time
            for _, rows in _row_blocks(layer, a_hat, a_hat):
                rows = rows.astype(np.float64)
                H += rows.T @ rows
        U = inverse_cholesky_upper(damped_hessian(H, lam))
        counts = None if B is None else _block_keep_counts(eligible[k], int(layer_budgets[k]), block_size)
        W_new, mask = obs_sweep(W, U, block_size, keep_counts=counts, nm=nm)
        new = with_view(layer, W_new, layer.bias)
        new_weights.append(new.weight)
        masks.append(mask.reshape(layer.weight.shape))
        return new

    def walk(layers, state):
        """The inputs after ``layers`` on the pruned prefix, sweeping each weight layer in the order of
        ``Network.prunable_layers`` (residual branch, then shortcut; pools and Flatten pass on)."""
        from .activations import get_activation

        for layer in layers:
            if layer.kind == "residual":
                branch = walk(layer.layers, state)
                short = state if layer.shortcut is None else walk([layer.shortcut], state)
                phi = get_activation(layer.activation)
                state = [phi(b + c) for b, c in zip(branch, short)]
            elif layer.prunable:
                new = sweep_layer(layer, state)
                state = [new.forward(a_hat) for a_hat in state]
            else:
                state = [layer.forward(a_hat) for a_hat in state]
        return state

    with single_threaded_blas():
        walk(network.layers, list(blocks))
    requested = B if B is not None else int(sum(m.sum() for m in masks))
    allocation = "layer" if nm is None else f"pattern {nm[0]}:{nm[1]}"
    weights = [np.where(m, w, 0).astype(w.dtype) for m, w in zip(masks, new_weights)]
    return result_from_masks(network, blocks, masks, weights, method="obs", allocation=allocation,
                             requested=requested, seconds=time.perf_counter() - t0)
