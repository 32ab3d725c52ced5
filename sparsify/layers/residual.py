"""Residual blocks, and the walks over a list of layers that descend into them.

``Residual(layers, activation, shortcut=None)`` computes ``phi(f(x) + shortcut(x))``
where ``f`` runs ``layers`` in order and the shortcut is the identity or one
layer with weights (a 1x1 :class:`~sparsify.Conv2d`, or a :class:`~sparsify.Dense`
for flat inputs). The weight layers inside a block are prunable layers like any
other: every walk below lists them in one order, the block's ``layers`` first,
then its shortcut, recursively. All code that enumerates prunable layers goes
through :func:`weight_layers` (``Network.prunable_layers``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import get_activation

#: the layer kinds a network may hold (``layer.kind``)
KINDS = ("dense", "conv2d", "maxpool2d", "avgpool2d", "flatten", "residual")


def check_layer(layer, name: str) -> None:
    """TypeError unless ``layer`` is one of the sparsify layer kinds."""
    if getattr(type(layer), "kind", None) not in KINDS:
        raise TypeError(
            f"{name}: expected a sparsify layer (Dense, Conv2d, MaxPool2d, AvgPool2d, Flatten or Residual), "
            f"got {type(layer).__name__}."
        )


@dataclass(frozen=True, eq=False)
class Residual:
    """``phi(f(x) + shortcut(x))``: ``f`` the layers in order, ``shortcut`` None (identity)
    or one weight layer (a 1x1 Conv2d; a Dense for flat inputs).

    Parameters
    ----------
    layers : sequence of layers
        The residual branch ``f``; its last layer's activation is usually "identity".
    activation : str
        ``phi``, applied after the sum.
    shortcut : Conv2d with a 1x1 kernel, Dense, or None
    """

    layers: tuple
    activation: str = "relu"
    shortcut: object = None

    kind = "residual"
    prunable = False

    def __post_init__(self):
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else None
        if not layers:
            raise ValueError(f"layers: a residual block needs a non-empty list of layers, got {self.layers!r}.")
        for k, layer in enumerate(layers):
            check_layer(layer, f"layers[{k}]")
        object.__setattr__(self, "layers", layers)
        get_activation(self.activation)
        sc = self.shortcut
        if sc is not None:
            check_layer(sc, "shortcut")
            if sc.kind not in ("conv2d", "dense") or (sc.kind == "conv2d" and sc.kernel_size != (1, 1)):
                raise ValueError(
                    f"shortcut: expected None (identity), a Conv2d with a 1x1 kernel or a Dense layer, got "
                    f"{type(sc).__name__}" + (f" with kernel {sc.kernel_size}" if sc.kind == "conv2d" else "") + "."
                )
        dtypes = {layer.dtype for layer in weight_layers([self])}
        if len(dtypes) > 1:
            raise TypeError(f"layers: all weight layers must share one dtype, got {sorted(map(str, dtypes))}.")

    @property
    def dtype(self):
        inner = weight_layers([self])
        return inner[0].dtype if inner else None

    def output_shape(self, in_shape):
        out, _ = propagate_shapes(self.layers, in_shape, "Residual layers")
        short = tuple(in_shape) if self.shortcut is None else self.shortcut.output_shape(in_shape)
        if tuple(out) != tuple(short):
            raise ValueError(
                f"Residual: the branch maps {tuple(in_shape)} to {tuple(out)} but the shortcut gives "
                f"{tuple(short)}; both must agree (use a 1x1 Conv2d shortcut with a stride to match)."
            )
        return tuple(out)

    def forward(self, a_prev: np.ndarray, matmul=np.matmul) -> np.ndarray:
        return run_layers([self], a_prev, matmul)

    def astype(self, dtype) -> "Residual":
        return Residual([layer.astype(dtype) for layer in self.layers], self.activation,
                        None if self.shortcut is None else self.shortcut.astype(dtype))


# --- walks over a list of layers ------------------------------------------------------
def weight_layers(layers) -> list:
    """The layers with weights, in order, descending into residual blocks (branch, then shortcut)."""
    out = []
    for layer in layers:
        if layer.kind == "residual":
            out.extend(weight_layers(layer.layers))
            if layer.shortcut is not None:
                out.append(layer.shortcut)
        elif layer.prunable:
            out.append(layer)
    return out


def run_layers(layers, a: np.ndarray, matmul=np.matmul, record=None) -> np.ndarray:
    """Forward ``a`` through ``layers``; ``record(layer, input)`` is called for each weight
    layer with its input (in the order of :func:`weight_layers`)."""
    for layer in layers:
        if layer.kind == "residual":
            branch = run_layers(layer.layers, a, matmul, record)
            short = a if layer.shortcut is None else run_layers([layer.shortcut], a, matmul, record)
            a = get_activation(layer.activation)(branch + short)
        else:
            if record is not None and layer.prunable:
                record(layer, a)
            a = layer.forward(a, matmul)
    return a


def propagate_shapes(layers, in_shape, name: str = "layers"):
    """The output shape per point of ``layers`` for inputs of ``in_shape`` per point, and
    the input shape of each weight layer (order of :func:`weight_layers`); a layer that
    does not fit its input raises a ValueError naming it."""
    shape, inputs = tuple(int(v) for v in in_shape), []
    for k, layer in enumerate(layers):
        try:
            if layer.kind == "residual":
                _, inner = propagate_shapes(layer.layers, shape, f"{name}[{k}].layers")
                inputs.extend(inner)
                if layer.shortcut is not None:
                    inputs.append(shape)
                shape = layer.output_shape(shape)
            else:
                if layer.prunable:
                    inputs.append(shape)
                shape = tuple(layer.output_shape(shape))
        except ValueError as exc:
            raise ValueError(f"{name}[{k}]: {exc}") from None
    return shape, inputs


def replace_weight_layers(layers, new: list) -> list:
    """``layers`` with its weight layers replaced, in the order of :func:`weight_layers`,
    by the entries of ``new`` (consumed from the front)."""
    out = []
    for layer in layers:
        if layer.kind == "residual":
            inner = replace_weight_layers(layer.layers, new)
            short = None if layer.shortcut is None else new.pop(0)
            out.append(Residual(inner, layer.activation, short))
        elif layer.prunable:
            out.append(new.pop(0))
        else:
            out.append(layer)
    return out
