"""Least-squares reconstruction of the kept weights after selection (docs/theory.md S16).

Selection (SiPP, a baseline, an N:M pattern) decides *which* weights stay;
reconstruction refits *their values* (and the bias) to calibration data.
Layer by layer, in order, with

* ``Â`` the layer's input from the already pruned-and-refitted prefix,
* ``Z = A Wᵀ + b`` the *dense* network's pre-activation (``A`` its own input),

each row ``i`` with kept set ``K`` solves the ridge least squares

    min_{w_K, b_i}  ‖Â_K w_K + b_i 1 − Z_i‖² + λ ‖w_K‖²           (bias not penalised).

All rows share the augmented Gram matrix ``G = [Â 1]ᵀ[Â 1]`` and the cross
products ``[Â 1]ᵀ Z``: one GEMM per layer and block of calibration points
(``P = [Â 1]ᵀ [Â 1 Z]``, accumulated in float64), then one Cholesky solve of
``(G_KK + λ I) x = P_Ki`` per row, rows in parallel (:func:`_solve_rows`).
Masks never change: a pruned weight stays exactly 0. No bound of
docs/theory.md S6–S12 applies to refitted values; reports show measured errors.

``λ = lam · mean(diag(ÂᵀÂ))`` per layer: ``lam`` is *relative* (default
:data:`DEFAULT_LAM` = 1e-4), so the same value suits any number of points and
any input scale. Readable twin: :func:`sparsify.reference.reconstruct_layer`.

Layers enter only through their weight-matrix view ``W.reshape(n_out, -1)`` and
``layer.input_matrix(a)`` (see :func:`layer_inputs`); a conv layer's patch rows
fit the same equations once its ``Z`` is taken in that view: its Gram matrix
sums over every (point, patch) row, built a few points at a time
(:func:`_row_blocks`), so the patches of all calibration points never exist at
once. Pooling and flattening layers have nothing to refit; inside a residual
block each weight layer is refitted like any other, its targets the dense
network's pre-activations at the same place (branch and shortcut alike).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import _blas
from ._blas import single_threaded_blas
from ._config import njit, prange
from ._validation import check_scalar
from .network import Network

#: relative ridge: λ = DEFAULT_LAM · mean of the diagonal of ÂᵀÂ (a small multiple keeps every
#: per-row system positive definite, also for inputs that are 0 on all calibration points)
DEFAULT_LAM = 1e-4
#: calibration points per block of the Gram accumulation
BLOCK_POINTS = 1024


# --- the weight-matrix view of a layer ------------------------------------------------
def weight_view(layer) -> np.ndarray:
    """``(n_out, n_in_view)``: the matrix the input rows multiply (a conv kernel flattened)."""
    return layer.weight.reshape(layer.weight.shape[0], -1)


def with_view(layer, W_view: np.ndarray, bias):
    """A copy of ``layer`` (Dense or Conv2d, geometry kept) with new weight view and bias, in its dtype."""
    W = np.asarray(W_view).reshape(layer.weight.shape).astype(layer.dtype)
    b = None if bias is None else np.asarray(bias).astype(layer.dtype)
    return replace(layer, weight=W, bias=b)


def layer_inputs(layer, a_prev: np.ndarray) -> np.ndarray:
    """The rows that ``weight_view(layer)`` multiplies for the batch ``a_prev``.

    For a dense layer ``a_prev`` itself; for a conv layer the patch matrix
    (one row per (point, patch)).
    """
    return layer.input_matrix(a_prev)


def _row_blocks(layer, a: np.ndarray, a_hat: np.ndarray):
    """``(rows, rows_hat)`` of the input matrices of ``layer`` at the dense input ``a`` and the
    refitted-prefix input ``a_hat``, a few points at a time: a convolution's patch rows are
    built for at most :data:`sparsify._patches.ROWS_PER_BLOCK` rows at once."""
    if layer.kind != "conv2d":
        yield a, a_hat
        return
    from . import _patches
    from ._patches import points_per_block

    step = points_per_block(layer.patches_per_point(a.shape[1:]), _patches.ROWS_PER_BLOCK)
    for start in range(0, a.shape[0], step):
        yield layer_inputs(layer, a[start:start + step]), layer_inputs(layer, a_hat[start:start + step])


def preactivation_view(layer, rows: np.ndarray) -> np.ndarray:
    """``rows @ Wᵀ + b`` in the view of :func:`weight_view`, float64."""
    Z = _blas.matmul(rows.astype(np.float64), np.ascontiguousarray(weight_view(layer).T, dtype=np.float64))
    if layer.bias is not None:
        Z += layer.bias.astype(np.float64)
    return Z


# --- checks --------------------------------------------------------------------------
def check_lam(lam):
    """``lam`` (relative ridge) must be a finite real > 0; None gives :data:`DEFAULT_LAM`."""
    lam = check_scalar(lam, "lam", low=0.0, low_open=True, allow_none=True)
    return DEFAULT_LAM if lam is None else lam


def calibration_blocks(network: Network, X_S, calibration=None) -> list[np.ndarray]:
    """The calibration points as a list of validated blocks: S (array, memory map or
    iterable of batches, read once) followed by the extra ``calibration`` points."""
    from ._streaming import _batches, _fixed_blocks

    blocks = list(_fixed_blocks(_batches(network, X_S, BLOCK_POINTS), BLOCK_POINTS)) if X_S is not None else []
    if calibration is not None:
        blocks.append(network.check_input(calibration, "calibration"))
    blocks = [b for b in blocks if b.shape[0]]
    if not blocks:
        raise ValueError("calibration: reconstruction needs at least one calibration point (S or calibration=).")
    return blocks


def _check_masks(network: Network, masks) -> list[np.ndarray]:
    masks = list(masks)
    layers = network.prunable_layers
    if len(masks) != len(layers):
        raise ValueError(f"masks: expected one mask per layer with weights ({len(layers)}), got {len(masks)}.")
    out = []
    for k, (mk, layer) in enumerate(zip(masks, layers)):
        mk = np.asarray(mk)
        if mk.dtype != bool or mk.shape not in (layer.weight.shape, layer.weight_matrix.shape):
            raise ValueError(f"masks[{k}]: expected a bool array of shape {layer.weight.shape}, "
                             f"got {mk.dtype} {mk.shape}.")
        out.append(mk.reshape(mk.shape[0], -1))
    return out


def _check_same_shape(dense: Network, pruned: Network) -> None:
    for name, net in (("dense_net", dense), ("pruned_net", pruned)):
        if not isinstance(net, Network):
            raise TypeError(f"{name}: expected a sparsify.Network, got {type(net).__name__}.")
    a_layers, b_layers = dense.prunable_layers, pruned.prunable_layers
    same = dense.input_shape == pruned.input_shape and len(a_layers) == len(b_layers) and all(
        a.kind == b.kind and a.weight.shape == b.weight.shape and a.activation == b.activation
        and (a.bias is None) == (b.bias is None) for a, b in zip(a_layers, b_layers))
    if not same:
        raise ValueError(f"pruned_net: must have the architecture of dense_net ({dense!r}), got {pruned!r}.")


# --- the per-row solves ---------------------------------------------------------------
@njit(parallel=True)
def _solve_rows(P, mask, lam, fit_bias, W_out, b_out):
    """Per row ``i``: solve ``(G_KK + λ I_K) x = P_Ki`` (bias unpenalised) by Cholesky.

    ``P`` (n_in + 1, n_in + 1 + n_out) float64 is ``[Â 1]ᵀ [Â 1 Z]``: its first
    ``n_in + 1`` columns the augmented Gram matrix (row/column ``n_in`` the ones
    column), column ``n_in + 1 + i`` the cross products with ``Z_i``. ``K`` is
    ``mask[i]`` plus index ``n_in`` when ``fit_bias``. Writes the kept weights of
    row ``i`` into ``W_out[i]`` (others 0) and the bias into ``b_out[i]``.
    """
    n_out, n_in = mask.shape
    for i in prange(n_out):
        k = 0
        for j in range(n_in):
            if mask[i, j]:
                k += 1
        size = k + (1 if fit_bias else 0)
        for j in range(n_in):
            W_out[i, j] = 0.0
        if size == 0:
            continue
        idx = np.empty(size, dtype=np.int64)
        t = 0
        for j in range(n_in):
            if mask[i, j]:
                idx[t] = j
                t += 1
        if fit_bias:
            idx[k] = n_in
        M = np.empty((size, size))
        r = np.empty(size)
        for a in range(size):
            for c in range(size):
                M[a, c] = P[idx[a], idx[c]]
            if a < k:
                M[a, a] += lam
            r[a] = P[idx[a], n_in + 1 + i]
        L = np.linalg.cholesky(M)
        # L y = r, then Lᵀ x = y
        y = np.empty(size)
        for a in range(size):
            acc = r[a]
            for c in range(a):
                acc -= L[a, c] * y[c]
            y[a] = acc / L[a, a]
        x = np.empty(size)
        for a in range(size - 1, -1, -1):
            acc = y[a]
            for c in range(a + 1, size):
                acc -= L[c, a] * x[c]
            x[a] = acc / L[a, a]
        for a in range(k):
            W_out[i, idx[a]] = x[a]
        if fit_bias:
            b_out[i] = x[k]


def _accumulate(P, zz, rows, Z):
    """``P += [Â 1]ᵀ [Â 1 Z]`` (one GEMM) and ``zz += Σ_x Z²`` per output, in float64."""
    n_in = rows.shape[1]
    aug = np.empty((rows.shape[0], n_in + 1 + Z.shape[1]))
    aug[:, :n_in] = rows
    aug[:, n_in] = 1.0
    aug[:, n_in + 1:] = Z
    P += _blas.matmul(aug[:, :n_in + 1].T, aug)           # row blocks on Numba's threads
    zz += np.einsum("ij,ij->j", Z, Z)


def ridge_of(P, n_in: int, lam: float) -> float:
    """The absolute ridge ``λ = lam · mean(diag(ÂᵀÂ))`` (``lam`` itself when the inputs are all 0)."""
    scale = float(np.mean(np.diag(P)[:n_in]))
    return lam * scale if scale > 0 else lam


def squared_errors(P, zz, W, b) -> np.ndarray:
    """Per row ``‖Â w_i + b_i − Z_i‖²`` from the accumulated products (clipped at 0)."""
    n_in = W.shape[1]
    v = np.concatenate([W.astype(np.float64), (np.zeros(W.shape[0]) if b is None else b.astype(np.float64))[:, None]],
                       axis=1)
    G, C = P[:, :n_in + 1], P[:, n_in + 1:]
    err = np.sum((v @ G) * v, axis=1) - 2 * np.einsum("ij,ji->i", v, C) + zz
    return np.maximum(err, 0.0)


def refit_layer(P, zz, mask, layer, lam: float):
    """Solve every row of one layer from its products; returns (W_view, bias, λ, before, after).

    ``before`` / ``after``: relative Frobenius error ``‖Ẑ − Z‖ / ‖Z‖`` of the
    layer's pre-activation on the calibration points, with the masked original
    values and with the refitted ones (inputs from the refitted prefix both times).
    """
    W0 = weight_view(layer)
    n_out, n_in = W0.shape
    fit_bias = layer.bias is not None
    lam_abs = ridge_of(P, n_in, lam)
    W = np.zeros((n_out, n_in))
    b = np.zeros(n_out)
    with single_threaded_blas():
        _solve_rows(np.ascontiguousarray(P), np.ascontiguousarray(mask), lam_abs, fit_bias, W, b)
    norm = max(float(zz.sum()), np.finfo(np.float64).tiny)
    before = np.sqrt(squared_errors(P, zz, np.where(mask, W0, 0), layer.bias).sum() / norm)
    bias = b if fit_bias else None
    after = np.sqrt(squared_errors(P, zz, W, bias).sum() / norm)
    return W, bias, lam_abs, float(before), float(after)


def reconstruct_with_stats(dense_net: Network, pruned_net: Network, masks, blocks, lam: float):
    """:func:`reconstruct` on validated blocks; also returns one stats dict per layer with weights."""
    masks = _check_masks(dense_net, masks)
    walk = _Walk(list(pruned_net.prunable_layers), masks, lam)
    state = [(X, X) for X in blocks]                      # (dense input, refitted-prefix input) per block
    layers, _ = walk.layers(dense_net.layers, state)
    return Network(layers, dense_net.input_shape), walk.stats


class _Walk:
    """The layer-by-layer refit over a list of layers, descending into residual blocks.

    Each weight layer (Dense or Conv2d, in the order of ``Network.prunable_layers``)
    is refitted with inputs from the refitted prefix and targets the dense network's
    pre-activations at the same place; pooling and flattening layers only carry both
    inputs on. In a residual block the branch and the shortcut are refitted on the
    block's two inputs, and the block's output is ``phi(branch + shortcut)`` of each.
    """

    def __init__(self, pruned_layers: list, masks: list, lam: float):
        self.pruned, self.masks, self.lam = pruned_layers, masks, lam
        self.k = 0
        self.stats: list[dict] = []

    def layers(self, layers, state):
        """``(new_layers, state after them)`` for ``layers`` run on ``state``."""
        from .activations import get_activation
        from .layers import Residual

        out = []
        for layer in layers:
            if layer.kind == "residual":
                branch, b_state = self.layers(layer.layers, state)
                short, s_state = None, state
                if layer.shortcut is not None:
                    (short,), s_state = self.layers([layer.shortcut], state)
                phi = get_activation(layer.activation)
                state = [(phi(b + c), phi(b_hat + c_hat)) for (b, b_hat), (c, c_hat) in zip(b_state, s_state)]
                out.append(Residual(branch, layer.activation, short))
            elif layer.prunable:
                new = self.refit(layer)(state)
                with single_threaded_blas():
                    state = [(layer.forward(a, matmul=_blas.matmul), new.forward(a_hat, matmul=_blas.matmul))
                             for a, a_hat in state]
                out.append(new)
            else:
                state = [(layer.forward(a), layer.forward(a_hat)) for a, a_hat in state]
                out.append(layer)
            for a, a_hat in state:
                if not (np.all(np.isfinite(a)) and np.all(np.isfinite(a_hat))):
                    raise ValueError(f"calibration: the forward pass overflowed after weight layer {self.k - 1}; "
                                     "rescale the data.")
        return out, state

    def refit(self, layer):
        """A function of the state giving the refitted copy of the next weight layer ``layer``."""
        k = self.k
        self.k += 1

        def run(state):
            n_in = weight_view(layer).shape[1]
            P = np.zeros((n_in + 1, n_in + 1 + layer.n_out))
            zz = np.zeros(layer.n_out)
            with single_threaded_blas():
                for a, a_hat in state:
                    for rows, rows_hat in _row_blocks(layer, a, a_hat):
                        _accumulate(P, zz, rows_hat.astype(np.float64), preactivation_view(layer, rows))
            W, b, lam_abs, before, after = refit_layer(P, zz, self.masks[k], self.pruned[k], self.lam)
            self.stats.append(dict(layer=k, lam=lam_abs, err_before=before, err_after=after))
            return with_view(layer, W, b)

        return run


def reconstruct(dense_net: Network, pruned_net: Network, masks, X_calib, *, lam=None) -> Network:
    """Refit the kept weights and biases of ``pruned_net`` layer by layer (docs/theory.md S16).

    Parameters
    ----------
    dense_net : Network
        The network before pruning: its pre-activations ``Z = A Wᵀ + b`` are the targets.
    pruned_net : Network
        The pruned network (same architecture); only its masks matter for the refit,
        and its masked values for the ``before`` error of :func:`reconstruct_with_stats`.
    masks : list of bool arrays, one per layer with weights (``network.prunable_layers``,
        inside residual blocks too), shaped like the weights
        True = kept. The result has exactly these nonzero positions (or fewer,
        if a refitted value happens to be exactly 0).
    X_calib : array (n_points, *input_shape) (NCHW for images), memory map, or iterable of such batches
        Calibration points (at least one), e.g. S plus more.
    lam : float > 0, optional
        Relative ridge: ``λ = lam · mean(diag(ÂᵀÂ))`` per layer; default :data:`DEFAULT_LAM`.

    Returns
    -------
    Network
        New weights and biases in the network's dtype (solves are float64).
    """
    _check_same_shape(dense_net, pruned_net)
    lam = check_lam(lam)
    blocks = calibration_blocks(dense_net, X_calib)
    return reconstruct_with_stats(dense_net, pruned_net, masks, blocks, lam)[0]


# --- the hook used by sparsify.prune and sparsify.baselines.prune_baseline ---------------
def check_options(network: Network, *, reconstruct: bool, calibration, lam, pattern):
    """Validate the reconstruction / pattern options up front (nothing has run yet)."""
    from .patterns import check_pattern_fits, parse_pattern

    if not isinstance(reconstruct, (bool, np.bool_)):
        raise TypeError(f"reconstruct: expected True or False, got {type(reconstruct).__name__}.")
    if not reconstruct and (calibration is not None or lam is not None):
        raise ValueError("calibration/lam: only used with reconstruct=True; pass reconstruct=True or drop them.")
    lam = check_lam(lam)
    if calibration is not None:
        calibration = network.check_input(calibration, "calibration")
    nm = None
    if pattern is not None:
        nm = parse_pattern(pattern)
        check_pattern_fits(network, *nm)
    return calibration, lam, nm


def with_options(select, network: Network, X_S, *, keep, budget, reconstruct: bool, calibration, lam, pattern):
    """Run ``select(X_S, nm)`` (nm = None or an (N, M) pattern) and refit if asked.

    With a pattern, ``keep``/``budget`` must be None (the pattern fixes the kept
    fraction). With ``reconstruct``, S is read once into blocks and reused for the
    refit together with ``calibration``.
    """
    calibration, lam, nm = check_options(network, reconstruct=reconstruct, calibration=calibration, lam=lam,
                                         pattern=pattern)
    if nm is not None and (keep is not None or budget is not None):
        raise ValueError(f"keep/budget: the pattern {nm[0]}:{nm[1]} fixes the kept fraction to {nm[0]}/{nm[1]}; "
                         "drop keep= and budget=.")
    blocks = None
    if reconstruct:
        blocks = calibration_blocks(network, X_S)
        X_S = np.concatenate(blocks, axis=0)  # read once; every selection rule takes an array
    res = select(X_S, nm)
    if not reconstruct:
        return res
    extra = [] if calibration is None else [calibration]
    refit, stats = reconstruct_with_stats(network, res.network, res.masks, blocks + extra, lam)
    return replace(res, network=refit, report=mark_refit(res.report, stats, sum(b.shape[0] for b in blocks + extra)))


def mark_refit(report, stats, n_calib: int):
    """The report of a refitted network: bounds dropped, measured refit errors added."""
    from copy import deepcopy

    rep = deepcopy(report)
    for row, st in zip(rep.layers, stats):
        row.update(refit=True, eps_max=float("nan"), eps_mean=float("nan"), err_max=float("nan"),
                   err_mean=float("nan"), refit_err_before=st["err_before"], refit_err_after=st["err_after"],
                   refit_lam=st["lam"])
    rep.refit = f"refit on {n_calib} calibration points: measured errors only, no bound applies"
    return rep


def sipp_with_options(network, X_S, *, keep, budget, method, allocation, rng, delta, C, reconstruct, calibration,
                      lam, pattern):
    """:func:`sparsify.prune` with an N:M pattern and/or a refit (its extra options land here)."""
    from .patterns import prune_sipp_pattern
    from .prune import prune

    def select(S, nm):
        if nm is None:
            return prune(network, S, keep=keep, budget=budget, method=method, allocation=allocation, rng=rng,
                         delta=delta, C=C)
        return prune_sipp_pattern(network, S, nm, method=method, delta=delta, C=C)

    return with_options(select, network, X_S, keep=keep, budget=budget, reconstruct=reconstruct,
                        calibration=calibration, lam=lam, pattern=pattern)


def baseline_with_options(network, X_S, *, keep, budget, method, y_S, rng, reconstruct, calibration, lam, pattern):
    """:func:`sparsify.baselines.prune_baseline` with a pattern, a refit, or method "obs".

    For "obs", ``lam`` is the damping of its Hessian (and, with ``reconstruct``,
    also the ridge of the refit).
    """
    from .baselines import prune_baseline
    from .obs import prune_obs
    from .patterns import prune_baseline_pattern

    def select(S, nm):
        if method == "obs":
            return prune_obs(network, S, keep=keep, budget=budget, pattern=nm, lam=lam)
        if nm is None:
            return prune_baseline(network, S, keep=keep, budget=budget, method=method, y_S=y_S, rng=rng)
        return prune_baseline_pattern(network, S, nm, method=method, y_S=y_S, rng=rng)

    if method == "obs" and not reconstruct:
        check_scalar(lam, "lam", low=0.0, low_open=True, allow_none=True)
        return with_options(select, network, X_S, keep=keep, budget=budget, reconstruct=False,
                            calibration=calibration, lam=None, pattern=pattern)
    return with_options(select, network, X_S, keep=keep, budget=budget, reconstruct=reconstruct,
                        calibration=calibration, lam=lam, pattern=pattern)
