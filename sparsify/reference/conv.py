"""Convolutions, pools and residual blocks by explicit loops (S15): forward pass, trace and
sensitivities over (point, patch) pairs.
"""
from __future__ import annotations

import numpy as np

from .dense import relative_importance_point, sensitivity_layer

__all__ = ['avg_pool2d', 'conv2d', 'conv_patch', 'conv_patches_of_point', 'forward', 'max_pool2d', 'sensitivity_conv_layer', 'sensitivity_network', 'trace']


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
    from ..activations import get_activation

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
