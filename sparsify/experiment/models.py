"""The experiment's models: the MLP, a LeNet-5-style CNN and a small residual network.

``model = "mlp"`` is :func:`sparsify.train.init_mlp` on the run's ``hidden`` widths.
The convolutional models read images ``(1, s, s)`` (the flat features of the
data reshaped, :func:`as_images`; ``s = 8`` for digits) and have fixed shapes:

* ``"lenet"``: conv 3x3 (6 channels, padding 1) -> relu -> maxpool 2 ->
  conv 3x3 (16 channels) -> relu -> flatten -> dense 32 -> relu -> dense (classes).
* ``"resnet"``: a conv 3x3 stem (8 channels, padding 1, relu); a residual block
  of two 3x3 convolutions (8 channels) with the identity shortcut; a residual
  block of two 3x3 convolutions (16 channels, the first with stride 2) with a
  1x1 convolution of stride 2 as shortcut; global average pooling; flatten;
  dense (classes).

Every weight is He-uniform, ``U(-sqrt(6/fan_in), sqrt(6/fan_in))`` with
``fan_in = c_in*kh*kw`` for a convolution, biases are zero, and the layers are
drawn in the order of ``network.prunable_layers`` from one Generator: the same
seed gives the same bits, as for the MLP.
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import check_rng
from ..data import Dataset
from ..layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Residual
from ..network import Dense, Network

__all__ = ["MODELS", "as_images", "check_cached_model", "image_side", "init_model"]

MODELS = ("mlp", "lenet", "resnet")


def image_side(n_features: int) -> int:
    """``s`` with ``s*s == n_features`` (ValueError when the features are not a square image)."""
    side = math.isqrt(int(n_features))
    if side * side != n_features:
        raise ValueError(f"model: a convolutional model reads square one-channel images, but the data has "
                         f"{n_features} features per point, not a square number; use model = 'mlp'.")
    return side


def as_images(dataset: Dataset) -> Dataset:
    """``dataset`` with every split reshaped from ``(n, s*s)`` to ``(n, 1, s, s)`` (NCHW)."""
    side = image_side(dataset.X_train.shape[1])

    def img(X):
        return np.ascontiguousarray(X.reshape(X.shape[0], 1, side, side))

    return Dataset(dataset.name, img(dataset.X_train), dataset.y_train, img(dataset.X_val), dataset.y_val,
                   img(dataset.X_test), dataset.y_test, dataset.n_classes)


def _he(gen, shape, dtype):
    fan_in = int(np.prod(shape[1:]))
    bound = np.sqrt(6.0 / fan_in)
    return gen.uniform(-bound, bound, size=shape).astype(dtype), np.zeros(shape[0], dtype=dtype)


def _lenet(gen, side, n_classes, dtype):
    w1, b1 = _he(gen, (6, 1, 3, 3), dtype)
    w2, b2 = _he(gen, (16, 6, 3, 3), dtype)
    inner = (side // 2) - 2
    if inner < 1:
        raise ValueError(f"model: lenet needs images of at least 6x6 pixels, got {side}x{side}.")
    w3, b3 = _he(gen, (32, 16 * inner * inner), dtype)
    w4, b4 = _he(gen, (n_classes, 32), dtype)
    return [Conv2d(w1, b1, "relu", padding=1), MaxPool2d(2), Conv2d(w2, b2, "relu"), Flatten(),
            Dense(w3, b3, "relu"), Dense(w4, b4, "identity")]


def _resnet(gen, side, n_classes, dtype):
    if side < 2:
        raise ValueError(f"model: resnet needs images of at least 2x2 pixels, got {side}x{side}.")
    stem = Conv2d(*_he(gen, (8, 1, 3, 3), dtype), "relu", padding=1)
    block1 = Residual([Conv2d(*_he(gen, (8, 8, 3, 3), dtype), "relu", padding=1),
                       Conv2d(*_he(gen, (8, 8, 3, 3), dtype), "identity", padding=1)], "relu")
    branch2 = [Conv2d(*_he(gen, (16, 8, 3, 3), dtype), "relu", stride=2, padding=1),
               Conv2d(*_he(gen, (16, 16, 3, 3), dtype), "identity", padding=1)]
    block2 = Residual(branch2, "relu", Conv2d(*_he(gen, (16, 8, 1, 1), dtype), "identity", stride=2))
    pooled = (side - 1) // 2 + 1
    head = Dense(*_he(gen, (n_classes, 16), dtype), "identity")
    return [stem, block1, block2, AvgPool2d(pooled), Flatten(), head]


def init_model(model: str, n_features: int, n_classes: int, *, hidden=(300, 100), activation: str = "relu",
               rng=None, dtype=np.float64) -> Network:
    """A freshly initialised network of kind ``model`` for ``n_features`` inputs and ``n_classes`` logits.

    ``hidden`` and ``activation`` shape the MLP only; the convolutional models
    are fixed (module docs) and read ``(1, s, s)`` images with ``s*s == n_features``.
    """
    from ..train import init_mlp

    if model not in MODELS:
        raise ValueError(f"model: must be one of {list(MODELS)}, got {model!r}.")
    if model == "mlp":
        return init_mlp([n_features, *hidden, n_classes], activation, rng=rng, dtype=dtype)
    side = image_side(n_features)
    gen = check_rng(rng)
    layers = (_lenet if model == "lenet" else _resnet)(gen, side, n_classes, np.dtype(dtype))
    return Network(layers, input_shape=(1, side, side))


def check_cached_model(path, net: Network, template: Network) -> Network:
    """``net`` (loaded from ``path``) if its layer kinds, weight shapes and activations match
    ``template`` (the run's model); a ValueError naming the stale file otherwise."""
    def signature(n):
        return ([layer.kind for layer in n.layers], [tuple(w.shape) for w in n.weights], n.activations,
                n.input_shape)

    if signature(net) != signature(template):
        raise ValueError(
            f"out: cached network {str(path)!r} is stale or from another run: it is {net!r} with weight shapes "
            f"{[tuple(w.shape) for w in net.weights]}, this run needs {template!r} with "
            f"{[tuple(w.shape) for w in template.weights]}; delete it (rm {str(path)!r}) and run again to "
            "rebuild it."
        )
    return net
