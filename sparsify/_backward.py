"""Backward pass through any list of layers: convolutions, pools, flattening, residual blocks.

:func:`sparsify.train._backprop` differentiates a plain stack of dense layers;
this module differentiates every other network, layer kind by layer kind, with
the same loss (mean cross-entropy of the softmax of the output). Each step of
the forward pass records what its backward step needs and returns a function
that maps ``dL/d(output)`` to ``dL/d(input)``, writing the gradients of its
weight and bias on the way:

* Conv2d (docs/theory.md S15): with ``A`` the patch matrix (rows ``(x, p)``) and
  ``dZ`` the gradient of the pre-activation laid out as rows ``(x, p)`` by
  output channel, ``dW = dZ.T @ A`` (reshaped to the 4-D weight),
  ``db = sum over (x, p) of dZ`` and ``dA = dZ @ W_mat``; ``dA`` goes back to the
  input by a scatter-add of every patch entry onto the pixel it was read from
  (col2im, the transpose of patch extraction; padding entries are dropped).
* MaxPool2d: each window's gradient goes to the entry that won its maximum (the
  first one on ties, as ``argmax``); AvgPool2d: ``1/(kh*kw)`` of it to every
  entry of the window (padded zeros included, so their share is dropped).
* Flatten: a reshape back to ``(n, c, h, w)``.
* Residual ``phi(f(x) + shortcut(x))``: ``delta = dL/d(out) * phi'``, which
  flows into ``f`` and into the shortcut (the identity, or its own layer) and
  the two input gradients add.

Weights and biases are passed as arrays in the order of
:func:`sparsify.layers.weight_layers`; the layers themselves only provide
geometry and activations. Nothing here validates: callers do.
"""
from __future__ import annotations

import numpy as np

from . import _patches
from .activations import get_activation


def _scatter_windows(grad_windows, in_shape, kernel, stride, padding, dilation=(1, 1)):
    """The transpose of :func:`sparsify._patches.windows`: add ``grad_windows[x, c, oh, ow, i, j]``
    onto the input pixel each window entry was read from; padding entries are dropped."""
    n, c, H, W = in_shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh, ow = grad_windows.shape[2], grad_windows.shape[3]
    out = np.zeros((n, c, H + 2 * ph, W + 2 * pw), dtype=grad_windows.dtype)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            out[:, :, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw] += grad_windows[:, :, :, :, i, j]
    return out[:, :, ph:ph + H, pw:pw + W]


def col2im(d_patches, in_shape, kernel, stride, padding, dilation):
    """Gradient with respect to an NCHW input of shape ``in_shape`` from the gradient of its
    patch matrix ``d_patches`` (rows ``(x, oh, ow)``, columns ``(c, i, j)``)."""
    n, c = in_shape[:2]
    oh, ow = _patches.output_hw(in_shape[2:], kernel, stride, padding, dilation)
    G = d_patches.reshape(n, oh, ow, c, kernel[0], kernel[1]).transpose(0, 3, 1, 2, 4, 5)
    return _scatter_windows(G, in_shape, kernel, stride, padding, dilation)


def _derivative(name: str):
    from .train import DERIVATIVES

    return DERIVATIVES[name]


def _times_phi_prime(d, act, z, out):
    if act in ("identity", "linear"):
        return d
    return d * _derivative(act)(z, out)


# --- one forward step per layer kind; each returns (output, backward) --------------------
def _dense(layer, a, params, grads, k, need_dx):
    W, b = params[0][k], params[1][k]
    z = a @ W.T
    if b is not None:
        z = z + b
    out = get_activation(layer.activation)(z)

    def back(d):
        d = _times_phi_prime(d, layer.activation, z, out)
        grads[0][k] = d.T @ a
        grads[1][k] = None if b is None else d.sum(axis=0)
        return d @ W if need_dx else None

    return out, back


def _conv(layer, a, params, grads, k, need_dx):
    W, b = params[0][k], params[1][k]
    geometry = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    A = _patches.extract_patches(a, *geometry)
    n, c_out = a.shape[0], W.shape[0]
    Wm = W.reshape(c_out, -1)
    oh, ow = _patches.output_hw(a.shape[2:], *geometry)
    z = (A @ Wm.T).reshape(n, oh, ow, c_out).transpose(0, 3, 1, 2)
    if b is not None:
        z = z + b[None, :, None, None]
    out = get_activation(layer.activation)(z)

    def back(d):
        d = _times_phi_prime(d, layer.activation, z, out)
        dZ = d.transpose(0, 2, 3, 1).reshape(n * oh * ow, c_out)
        grads[0][k] = (dZ.T @ A).reshape(W.shape)
        grads[1][k] = None if b is None else d.sum(axis=(0, 2, 3))
        return col2im(dZ @ Wm, a.shape, *geometry) if need_dx else None

    return out, back


def _maxpool(layer, a, need_dx):
    kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
    V = _patches.windows(a, kernel, stride, padding, pad_value=-np.inf)
    flat = V.reshape(V.shape[:4] + (-1,))
    arg = flat.argmax(axis=4)
    out = np.take_along_axis(flat, arg[..., None], axis=4)[..., 0]

    def back(d):
        if not need_dx:
            return None
        G = np.zeros(flat.shape, dtype=d.dtype)
        np.put_along_axis(G, arg[..., None], d[..., None], axis=4)
        return _scatter_windows(G.reshape(V.shape), a.shape, kernel, stride, padding)

    return out, back


def _avgpool(layer, a, need_dx):
    kernel, stride, padding = layer.kernel_size, layer.stride, layer.padding
    out = layer.forward(a)
    scale = a.dtype.type(1.0 / (kernel[0] * kernel[1]))

    def back(d):
        if not need_dx:
            return None
        G = np.broadcast_to((d * scale)[..., None, None], d.shape + tuple(kernel))
        return _scatter_windows(G, a.shape, kernel, stride, padding)

    return out, back


def _flatten(a):
    shape = a.shape
    return a.reshape(shape[0], -1), (lambda d: d.reshape(shape))


def _residual(layer, a, params, grads, counter):
    branch, back_branch = _run(layer.layers, a, params, grads, counter, True)
    if layer.shortcut is None:
        short, back_short = a, (lambda d: d)
    else:
        short, back_short = _step(layer.shortcut, a, params, grads, counter, True)
    z = branch + short
    out = get_activation(layer.activation)(z)

    def back(d):
        d = _times_phi_prime(d, layer.activation, z, out)
        return back_branch(d) + back_short(d)

    return out, back


def _step(layer, a, params, grads, counter, need_dx):
    kind = layer.kind
    if kind in ("dense", "conv2d"):
        k = counter[0]
        counter[0] += 1
        return (_dense if kind == "dense" else _conv)(layer, a, params, grads, k, need_dx)
    if kind == "residual":
        return _residual(layer, a, params, grads, counter)
    if kind == "maxpool2d":
        return _maxpool(layer, a, need_dx)
    if kind == "avgpool2d":
        return _avgpool(layer, a, need_dx)
    if kind == "flatten":
        return _flatten(a)
    raise TypeError(f"layer kind {kind!r} cannot be differentiated")


def _run(layers, a, params, grads, counter, need_dx):
    backs = []
    for pos, layer in enumerate(layers):
        a, back = _step(layer, a, params, grads, counter, need_dx or pos > 0)
        backs.append(back)

    def back_all(d):
        for back in reversed(backs):
            d = back(d)
        return d

    return a, back_all


def backprop(layers, weights, biases, X, y):
    """Mean cross-entropy of the network ``layers`` (with ``weights``, ``biases`` in the order of
    the weight layers) on ``(X, y)``; returns ``(loss, grads_W, grads_b)`` as
    :func:`sparsify.train._backprop` does (gradients shaped like the weights)."""
    from .train import _log_softmax

    grads = ([None] * len(weights), [None] * len(weights))
    logits, back = _run(layers, X, (weights, biases), grads, [0], False)
    n, out_shape = X.shape[0], logits.shape
    logp = _log_softmax(logits.reshape(n, -1))
    rows = np.arange(n)
    loss = float(-logp[rows, y].mean())
    delta = np.exp(logp)
    delta[rows, y] -= 1
    delta /= n
    back(delta.reshape(out_shape))
    return loss, grads[0], grads[1]
