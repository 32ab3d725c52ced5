"""Readable NumPy reference of every SiPP computation (DESIGN §2).

This module is the ground truth for the tests and the text to read when
porting the method. It favours clarity over speed: loops go over points or
sides, and every line maps to one formula of docs/theory.md. The fast paths
in :mod:`sparsify.sensitivity` and :mod:`sparsify.sampling` must agree with
these functions (to rounding for sensitivities, exactly for sampling given the
same uniforms).
"""
from __future__ import annotations

import numpy as np


__all__ = [
    "balanced_m",
    "balanced_targets",
    "draws_for_unique",
    "expected_unique",
    "global_top_b",
    "relative_importance",
    "relative_importance_point",
    "sample_counts",
    "sensitivity",
    "sensitivity_layer",
    "side_entries",
    "side_errors",
    "sparsify_side_det",
    "sparsify_side_rand",
    "split_inputs",
    "split_weights",
    "top_m",
]

# --- §2 item 1: sign split of the inputs ----------------------------------
def split_inputs(A: np.ndarray) -> np.ndarray:
    """Return ``A`` if it is nonnegative, else ``[max(A, 0); max(-A, 0)]`` (rows stacked).

    With a negative input a weight's contribution can change sign; splitting
    each point into its positive and negative part makes every side's terms
    share one sign again. Every point then counts twice.
    """
    if A.size == 0 or A.min() >= 0:
        return A
    return np.concatenate([np.maximum(A, 0), np.maximum(-A, 0)], axis=0)


# --- §2 item 2: sign split of the weights ---------------------------------
def split_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W+ = max(W, 0)`` and ``W- = min(W, 0)``; ``W = W+ + W-``."""
    return np.maximum(W, 0), np.minimum(W, 0)


# --- §2 items 3-4: pre-activation parts and relative importance ------------
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


# --- §2 item 5: empirical sensitivity ---------------------------------------
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
    return [sensitivity_conv_layer(A, layer, patch_reduction) if layer.kind == "conv2d"
            else sensitivity_layer(A, layer.weight)
            for A, layer in zip(network.trace(X_S), network.prunable_layers)]


# --- sides --------------------------------------------------------------------
def side_entries(w_row: np.ndarray, sign: int) -> np.ndarray:
    """Indices ``j`` of one side of a neuron: ``w_j > 0`` (sign=+1) or ``w_j < 0`` (sign=-1)."""
    return np.flatnonzero(w_row > 0) if sign > 0 else np.flatnonzero(w_row < 0)


# --- §2 item 6: deterministic sparsification --------------------------------
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


# --- §2 item 11: distinct kept weights vs number of draws ----------------------
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


# --- §2 item 7: randomized sparsification -----------------------------------
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
    from .bounds import alpha

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


# --- S15: convolutions, pools and residual blocks, by explicit loops -------------------
def _pair(v):
    return (v, v) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _out_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_patch(x: np.ndarray, kernel, stride, padding, dilation, oh: int, ow: int, pad_value=0.0) -> np.ndarray:
    """The inputs under the kernel at output position ``(oh, ow)`` of one point ``x``
    (c, H, W), shape (c, kh, kw); positions outside the image read ``pad_value``."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel, stride, padding, dilation))
    c, H, W = x.shape
    out = np.full((c, kh, kw), pad_value, dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            r = oh * sh - ph + i * dh
            q = ow * sw - pw + j * dw
            if 0 <= r < H and 0 <= q < W:
                out[:, i, j] = x[:, r, q]
    return out


def conv_patches_of_point(x: np.ndarray, conv) -> np.ndarray:
    """All patches of one point as rows ``(P, c*kh*kw)``, positions in C order."""
    kernel = conv.weight.shape[2:]
    oh = _out_size(x.shape[1], kernel[0], conv.stride[0], conv.padding[0], conv.dilation[0])
    ow = _out_size(x.shape[2], kernel[1], conv.stride[1], conv.padding[1], conv.dilation[1])
    return np.stack([conv_patch(x, kernel, conv.stride, conv.padding, conv.dilation, r, q).ravel()
                     for r in range(oh) for q in range(ow)])


def conv2d(X, weight, bias=None, stride=1, padding=0, dilation=1) -> np.ndarray:
    """``out[x, o, r, q] = b_o + sum_{c,i,j} W[o, c, i, j] Xpad[x, c, r*sh + i*dh, q*sw + j*dw]``
    (cross-correlation, zero padding), one output value at a time."""
    n, c, H, W = X.shape
    c_out, _, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = map(_pair, (stride, padding, dilation))
    oh, ow = _out_size(H, kh, sh, ph, dh), _out_size(W, kw, sw, pw, dw)
    out = np.zeros((n, c_out, oh, ow), dtype=weight.dtype)
    for x in range(n):
        for r in range(oh):
            for q in range(ow):
                patch = conv_patch(X[x], (kh, kw), stride, padding, dilation, r, q)
                for o in range(c_out):
                    out[x, o, r, q] = np.sum(weight[o] * patch) + (0 if bias is None else bias[o])
    return out


def _pool(X, kernel, stride, padding, reduce, pad_value):
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
    (sh, sw) = (kh, kw) if stride is None else _pair(stride)
    n, c, H, W = X.shape
    oh, ow = _out_size(H, kh, sh, ph, 1), _out_size(W, kw, sw, pw, 1)
    out = np.empty((n, c, oh, ow), dtype=X.dtype)
    for x in range(n):
        for r in range(oh):
            for q in range(ow):
                patch = conv_patch(X[x], (kh, kw), (sh, sw), (ph, pw), 1, r, q, pad_value)
                for ch in range(c):
                    out[x, ch, r, q] = reduce(patch[ch])
    return out


def max_pool2d(X, kernel, stride=None, padding=0) -> np.ndarray:
    """Maximum over each window; padding never wins (it reads -inf)."""
    return _pool(X, kernel, stride, padding, np.max, -np.inf)


def avg_pool2d(X, kernel, stride=None, padding=0) -> np.ndarray:
    """Sum over each window divided by ``kh*kw``: padded zeros count (PyTorch's
    ``count_include_pad=True``)."""
    kh, kw = _pair(kernel)
    return _pool(X, kernel, stride, padding, lambda v: np.sum(v) / (kh * kw), 0.0)


def _run(layers, a, record):
    from .activations import get_activation

    for layer in layers:
        if layer.kind == "residual":  # phi(f(a) + shortcut(a))
            branch = _run(layer.layers, a, record)
            short = a if layer.shortcut is None else _run([layer.shortcut], a, record)
            a = get_activation(layer.activation)(branch + short)
            continue
        if layer.prunable:
            record.append(a)
        if layer.kind == "dense":
            z = a @ layer.weight.T + (0 if layer.bias is None else layer.bias)
        elif layer.kind == "conv2d":
            z = conv2d(a, layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation)
        elif layer.kind == "maxpool2d":
            a = max_pool2d(a, layer.kernel_size, layer.stride, layer.padding)
            continue
        elif layer.kind == "avgpool2d":
            a = avg_pool2d(a, layer.kernel_size, layer.stride, layer.padding)
            continue
        else:  # flatten: C order, (n, c, h, w) -> (n, c*h*w)
            a = a.reshape(a.shape[0], -1)
            continue
        a = get_activation(layer.activation)(z.astype(layer.weight.dtype, copy=False))
    return a


def forward(network, X) -> np.ndarray:
    """The network's output, every layer by the loops above (residual blocks included)."""
    return _run(network.layers, np.asarray(X, dtype=network.dtype), [])


def trace(network, X) -> list[np.ndarray]:
    """The input of each prunable layer (NCHW for a convolution), by the loops above."""
    record = []
    _run(network.layers, np.asarray(X, dtype=network.dtype), record)
    return record


def sensitivity_conv_layer(X: np.ndarray, conv, reduction: str = "max") -> np.ndarray:
    """``s`` of a convolution on inputs ``X`` (n, c_in, H, W), shaped like ``conv.weight``.

    A point of the layer is a pair (x, patch p), and S1-S4 hold per pair with the
    weight-matrix view ``W = conv.weight.reshape(c_out, -1)`` (docs/theory.md S15):
    ``"max"`` gives ``s_ij = max_x max_p g_ij(x, p)``, ``"mean"`` gives
    ``s_ij = max_x (1/P) sum_p g_ij(x, p)``. A point with a negative entry counts as
    its two parts ``max(x, 0)`` and ``max(-x, 0)`` (S1); padding patches count.
    """
    W = conv.weight.reshape(conv.weight.shape[0], -1)
    s = np.zeros(W.shape, dtype=W.dtype)
    for x in X:
        parts = [x] if x.min() >= 0 else [np.maximum(x, 0), np.maximum(-x, 0)]
        for part in parts:
            patches = conv_patches_of_point(part, conv)
            total = np.zeros(W.shape, dtype=np.float64)
            for a in patches:
                g = relative_importance_point(a, W)
                if reduction == "max":
                    np.maximum(s, g, out=s)
                else:
                    total += g
            if reduction == "mean":
                np.maximum(s, (total / len(patches)).astype(W.dtype), out=s)
    return s.reshape(conv.weight.shape)


def sensitivity_network(network, X_S, patch_reduction: str = "max") -> list[np.ndarray]:
    """Sensitivities of every prunable layer, each shaped like its weight (convolutions too)."""
    out = []
    for A, layer in zip(trace(network, X_S), network.prunable_layers):
        if layer.kind == "conv2d":
            out.append(sensitivity_conv_layer(A, layer, patch_reduction))
        else:
            out.append(sensitivity_layer(A, layer.weight))
    return out

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
