"""Training in NumPy: cross-entropy, backprop, minibatch SGD with momentum.

One backward pass (:func:`_backprop` for a stack of dense layers,
:func:`sparsify._backward.backprop` for convolutions, pools, flattening and
residual blocks) serves training, fine-tuning after
pruning, lottery-ticket rewinding and the SNIP baseline (which needs
``dL/dW`` on S). The loss is the mean cross-entropy of the softmax of the
network's output, whose last layer must have the identity activation:

    p = softmax(z_L),   L = -(1/n) sum_x log p_{x, y_x},   dL/dz_L = (p - onehot(y)) / n.

Going down, ``dL/dW_l = delta_l.T @ a_{l-1}``, ``dL/db_l = sum_x delta_l``,
``dL/da_{l-1} = delta_l @ W_l`` and ``delta_{l-1} = dL/da_{l-1} * phi'(z_{l-1})``.

:func:`train` is SGD with (PyTorch-style) momentum ``v <- mu v + g;
w <- w - lr v``, L2 weight decay ``g <- g + wd w`` on the weights (not the
biases), a step learning-rate schedule (``lr`` is
multiplied by ``gamma`` at each epoch in ``milestones``) and seeded
shuffling. With ``masks``, pruned weights are zero before the first step and
stay exactly zero: their gradient, velocity and value are multiplied by the
mask at every step. Networks are immutable, so training returns a new one.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np

from . import _backward
from ._validation import check_rng, check_scalar
from .activations import LEAKY_SLOPE, get_activation
from .layers import replace_weight_layers
from .network import Dense, Network, mlp_from_init


# --- activation derivatives, written from z = pre-activation and a = phi(z) --------
def _d_relu(z, a):
    return (z > 0).astype(z.dtype)


def _d_identity(z, a):
    return np.ones_like(z)


def _d_leaky_relu(z, a):
    return np.where(z >= 0, z.dtype.type(1), z.dtype.type(LEAKY_SLOPE))


def _d_tanh(z, a):
    return 1 - a * a


def _d_sigmoid(z, a):
    return a * (1 - a)


#: ``phi'(z)`` for every activation name of :mod:`sparsify.activations`.
DERIVATIVES = {
    "relu": _d_relu,
    "identity": _d_identity,
    "linear": _d_identity,
    "leaky_relu": _d_leaky_relu,
    "tanh": _d_tanh,
    "sigmoid": _d_sigmoid,
}


# --- validation ----------------------------------------------------------------------
def _output_activation(layers) -> str:
    """The activation that produces the network's output: that of the last layer with one
    (Flatten and pools after it only rearrange or pool the logits)."""
    for layer in reversed(layers):
        if layer.kind in ("dense", "conv2d", "residual"):
            return layer.activation
    return "identity"


def _differentiated_layers(layers):
    """Every layer with an activation (weight layers and residual blocks), descending into blocks."""
    for layer in layers:
        if layer.kind == "residual":
            yield from _differentiated_layers(layer.layers)
            if layer.shortcut is not None:
                yield layer.shortcut
            yield layer
        elif layer.kind in ("dense", "conv2d"):
            yield layer


def _check_network(network) -> Network:
    if not isinstance(network, Network):
        raise TypeError(f"network: expected a sparsify.Network, got {type(network).__name__}.")
    last = _output_activation(network.layers)
    if last not in ("identity", "linear"):
        raise ValueError(
            f"network: the cross-entropy loss applies softmax to the output layer, so its activation must be "
            f"'identity', got {last!r}; build the network with output_activation='identity'."
        )
    for layer in _differentiated_layers(network.layers):
        if layer.activation not in DERIVATIVES:
            where = (f"layers[{network.layers.index(layer)}]" if layer in network.layers
                     else f"a {type(layer).__name__} inside a residual block")
            raise ValueError(
                f"network: {where} has activation {layer.activation!r}, which training cannot "
                f"differentiate; supported: {sorted(DERIVATIVES)}."
            )
    return network


def _is_dense_stack(network: Network) -> bool:
    return all(layer.kind == "dense" for layer in network.layers)


def check_labels(y, n_points: int, n_classes: int, name: str = "y") -> np.ndarray:
    """Integer class labels ``0 <= y < n_classes``, one per point."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise TypeError(f"{name}: expected integer class labels, got dtype {y.dtype}.")
    if y.shape != (n_points,):
        raise ValueError(f"{name}: expected one label per point, shape ({n_points},), got {y.shape}.")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"{name}: labels must lie in 0..{n_classes - 1} (the network has {n_classes} outputs), "
            f"got values in {int(y.min())}..{int(y.max())}."
        )
    return y.astype(np.int64, copy=False)


def _check_masks(masks, network: Network) -> list[np.ndarray] | None:
    if masks is None:
        return None
    masks = list(masks)
    layers = network.prunable_layers
    if len(masks) != len(layers):
        raise ValueError(f"masks: expected one boolean mask per layer with weights ({len(layers)}), "
                         f"got {len(masks)}.")
    out = []
    for k, (m, layer) in enumerate(zip(masks, layers)):
        m = np.asarray(m)
        if m.shape != layer.weight.shape and m.shape == layer.weight_matrix.shape:
            m = m.reshape(layer.weight.shape)  # a convolution's mask given as its matrix view
        if m.shape != layer.weight.shape:
            raise ValueError(f"masks[{k}]: expected shape {layer.weight.shape} (the layer's weight), got {m.shape}.")
        if m.dtype != bool:
            raise TypeError(f"masks[{k}]: expected a boolean array, got dtype {m.dtype}; pass W != 0 or res.masks.")
        out.append(m)
    return out


# --- forward and backward ------------------------------------------------------------------
def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _backprop(weights, biases, activations, X, y):
    """Mean cross-entropy and its gradients on raw arrays (no validation).

    Returns ``(loss, grads_W, grads_b)``; ``grads_b[l]`` is None where layer
    ``l`` has no bias.
    """
    inputs, zs, outs = [], [], []
    a = X
    for W, b, act in zip(weights, biases, activations):
        inputs.append(a)
        z = a @ W.T
        if b is not None:
            z = z + b
        zs.append(z)
        a = z if act in ("identity", "linear") else _apply(act, z)
        outs.append(a)
    n = X.shape[0]
    logp = _log_softmax(zs[-1])
    rows = np.arange(n)
    loss = float(-logp[rows, y].mean())
    delta = np.exp(logp)
    delta[rows, y] -= 1
    delta /= n
    grads_W: list = [None] * len(weights)
    grads_b: list = [None] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        grads_W[k] = delta.T @ inputs[k]
        if biases[k] is not None:
            grads_b[k] = delta.sum(axis=0)
        if k:
            delta = (delta @ weights[k]) * DERIVATIVES[activations[k - 1]](zs[k - 1], outs[k - 1])
    return loss, grads_W, grads_b


def _apply(name: str, z: np.ndarray) -> np.ndarray:
    return get_activation(name)(z)


def loss_and_gradients(network: Network, X, y) -> tuple[float, list[np.ndarray], list[np.ndarray | None]]:
    """Mean cross-entropy of ``network`` on ``(X, y)`` and its gradients.

    Parameters
    ----------
    network : Network whose last activation is ``"identity"`` (logits); dense,
        convolutional, pooling, flattening and residual layers are differentiated.
    X : array (n_points, *input_shape);  y : int array (n_points,) of class labels.

    Returns
    -------
    loss : float
    grads_W : list of arrays shaped like each layer's weight, ``dL/dW``
    grads_b : list of arrays ``dL/db`` (None for a layer without bias)
    """
    net = _check_network(network)
    X = net.check_input(X)
    y = check_labels(y, X.shape[0], net.n_out)
    if X.shape[0] == 0:
        raise ValueError("X: needs at least one point to compute a loss.")
    biases = [layer.bias for layer in net.prunable_layers]
    if _is_dense_stack(net):
        return _backprop(net.weights, biases, net.activations, X, y)
    return _backward.backprop(net.layers, net.weights, biases, X, y)


def cross_entropy(network: Network, X, y) -> float:
    """Mean cross-entropy ``-(1/n) sum log softmax(net(X))[y]``."""
    net = _check_network(network)
    X = net.check_input(X)
    y = check_labels(y, X.shape[0], net.n_out)
    logp = _log_softmax(net.forward(X))
    return float(-logp[np.arange(len(y)), y].mean())


def predict(network: Network, X, batch_size: int = 4096) -> np.ndarray:
    """Predicted classes ``argmax net(X)`` (ties to the lower class), in batches."""
    X = network.check_input(X)
    out = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], batch_size):
        out[start:start + batch_size] = np.argmax(network.forward(X[start:start + batch_size]), axis=1)
    return out


def accuracy(network: Network, X, y) -> float:
    """Fraction of points whose predicted class equals the label."""
    pred = predict(network, X)
    y = check_labels(y, pred.shape[0], network.n_out)
    return float(np.mean(pred == y)) if y.size else float("nan")


def per_class_recall(network: Network, X, y, n_classes: int | None = None) -> np.ndarray:
    """Recall of each class: the fraction of its points classified correctly (NaN if absent)."""
    n_classes = network.n_out if n_classes is None else int(n_classes)
    pred = predict(network, X)
    y = check_labels(y, pred.shape[0], n_classes)
    hits = np.bincount(y[pred == y], minlength=n_classes).astype(np.float64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / counts, np.nan)


# --- SGD -------------------------------------------------------------------------------------
def _check_int(value, name: str, minimum: int) -> int:
    return check_scalar(value, name, kind="int", low=minimum)


def _check_nonneg(value, name: str, upper: float | None = None) -> float:
    return check_scalar(value, name, low=0.0, high=upper, high_open=upper is not None)


def train(network: Network, X, y, *, epochs: int = 30, batch_size: int = 64, lr: float = 0.05,
          momentum: float = 0.9, weight_decay: float = 5e-4, milestones: Sequence[int] = (),
          gamma: float = 0.1, masks=None, rng=None,
          on_epoch: Callable[[int, float], None] | None = None) -> Network:
    """Train ``network`` on ``(X, y)`` by minibatch SGD and return the trained copy.

    Parameters
    ----------
    network : Network with an ``"identity"`` output layer (its outputs are logits),
        of any layer kinds (:mod:`sparsify._backward` for convolutions, pools,
        flattening and residual blocks; the returned network keeps the layout).
    X : array (n_points, *input_shape);  y : int labels (n_points,).
    epochs, batch_size : passes over the data and points per step (the last
        batch of an epoch may be smaller).
    lr, momentum, weight_decay : ``g = dL/dw + weight_decay * w`` (weights only),
        ``v = momentum * v + g``, ``w -= lr_epoch * v``.
    milestones, gamma : step schedule, ``lr_epoch = lr * gamma ** (number of
        milestones <= epoch)`` with epochs counted from 0.
    masks : list of bool arrays shaped like the weights (a convolution's may
        also have the shape of its matrix view), one per layer with weights, or
        None. Weights where the mask is False are set to 0 first and stay exactly 0.
    rng : None, int or Generator for the shuffling (the only randomness).
    on_epoch : called as ``on_epoch(epoch, mean_loss)`` after each epoch, with
        the mean of the minibatch losses of that epoch.
    """
    net = _check_network(network)
    X = net.check_input(X)
    y = check_labels(y, X.shape[0], net.n_out)
    if X.shape[0] == 0:
        raise ValueError("X: training needs at least one point.")
    epochs = _check_int(epochs, "epochs", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    lr = check_scalar(lr, "lr", low=0.0, low_open=True)
    momentum = _check_nonneg(momentum, "momentum", upper=1.0)
    weight_decay = _check_nonneg(weight_decay, "weight_decay")
    gamma = check_scalar(gamma, "gamma", low=0.0, low_open=True)
    milestones = sorted(_check_int(m, "milestones[]", 0) for m in milestones)
    masks = _check_masks(masks, net)
    gen = check_rng(rng)

    dtype = net.dtype
    weights = [np.array(w, dtype=dtype) for w in net.weights]
    biases = [None if l.bias is None else np.array(l.bias, dtype=dtype) for l in net.prunable_layers]
    acts = net.activations
    dense = _is_dense_stack(net)
    fmask = None
    if masks is not None:
        fmask = [m.astype(dtype) for m in masks]
        for w, m in zip(weights, fmask):
            w *= m
    vel_W = [np.zeros_like(w) for w in weights]
    vel_b = [None if b is None else np.zeros_like(b) for b in biases]
    wd = dtype.type(weight_decay)
    mu = dtype.type(momentum)
    n = X.shape[0]
    for epoch in range(epochs):
        step_lr = dtype.type(lr * gamma ** sum(1 for m in milestones if m <= epoch))
        order = gen.permutation(n)
        losses = []
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if dense:
                loss, gW, gb = _backprop(weights, biases, acts, X[idx], y[idx])
            else:
                loss, gW, gb = _backward.backprop(net.layers, weights, biases, X[idx], y[idx])
            losses.append(loss)
            for k in range(len(weights)):
                g = gW[k]
                if wd:
                    g += wd * weights[k]
                if fmask is not None:
                    g *= fmask[k]
                vel_W[k] *= mu
                vel_W[k] += g
                weights[k] -= step_lr * vel_W[k]
                if fmask is not None:
                    weights[k] *= fmask[k]
                if biases[k] is not None:
                    vel_b[k] *= mu
                    vel_b[k] += gb[k]
                    biases[k] -= step_lr * vel_b[k]
        if not np.all([np.all(np.isfinite(w)) for w in weights]):
            raise ValueError(
                f"lr: training diverged (non-finite weights after epoch {epoch}) with lr={lr}; use a smaller lr."
            )
        if on_epoch is not None:
            on_epoch(epoch, float(np.mean(losses)))
    if dense:
        return Network([Dense(w, b, act) for w, b, act in zip(weights, biases, acts)])
    new = [replace(layer, weight=w, bias=b) for layer, w, b in zip(net.prunable_layers, weights, biases)]
    return Network(replace_weight_layers(net.layers, new), net.input_shape)


def init_mlp(widths: Sequence[int], activation: str = "relu", *, rng=None, dtype=np.float64) -> Network:
    """A freshly initialised MLP for training (He-uniform weights, zero biases).

    ``W ~ U(-sqrt(6 / n_in), sqrt(6 / n_in))``; the output layer is
    ``"identity"`` (logits). This is the "original initialisation" a lottery
    ticket rewinds to.
    """
    def he_uniform(gen, n_out, n_in):
        bound = np.sqrt(6.0 / n_in)
        return gen.uniform(-bound, bound, size=(n_out, n_in)), np.zeros(n_out)

    return mlp_from_init(widths, he_uniform, activation, output_activation="identity", rng=rng, dtype=dtype)
