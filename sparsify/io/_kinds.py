"""The ``.npz`` arrays of each layer kind: one writer and one reader per kind.

Format version 2 extends version 1 (which holds dense layers only) without
changing a dense layer's arrays. Each layer has an id: its index in the network
(``"3"``), or, inside a residual block, the block's id, a dot and the index in
the block (``"3.0"``; ``"3.s"`` for the shortcut). Per kind:

=========== ==============================================================================
dense       ``W<id>`` (n_out, n_in), ``b<id>`` (absent without bias)
conv2d      ``W<id>`` (c_out, c_in, kh, kw), ``b<id>``, ``conv<id>`` = [sh, sw, ph, pw, dh, dw]
maxpool2d   ``pool<id>`` = [kh, kw, sh, sw, ph, pw]
avgpool2d   ``pool<id>`` = [kh, kw, sh, sw, ph, pw]
flatten     nothing
residual    ``kinds<id>``, ``activations<id>`` (its layers, then its shortcut if any),
            ``shortcut<id>`` (0 or 1), and the arrays of its layers under their ids
=========== ==============================================================================

The network's own ``kinds`` and ``activations`` (one per top-level layer, "" for
a layer without activation) and ``input_shape`` (ints) complete the file.
"""
from __future__ import annotations

import numpy as np

from ..layers import AvgPool2d, Conv2d, Flatten, MaxPool2d, Residual

#: deepest nesting of residual blocks a file may hold
_MAX_DEPTH = 32


def _ints(data, key: str, n: int, source: str) -> list[int]:
    a = data.get(key)
    if a is None or a.shape != (n,) or a.dtype.kind not in "iu":
        raise ValueError(f"model: {source} lacks a valid {key!r} entry ({n} integers).")
    return [int(v) for v in a]


def _weights(data, lid: str, source: str):
    if f"W{lid}" not in data:
        raise ValueError(f"model: {source} lacks the weight array 'W{lid}'.")
    return data[f"W{lid}"], data.get(f"b{lid}")


# --- writers: layer -> dict of arrays --------------------------------------------------
def _write_weights(layer, lid):
    out = {f"W{lid}": layer.weight}
    if layer.bias is not None:
        out[f"b{lid}"] = layer.bias
    return out


def _write_conv(layer, lid):
    return {**_write_weights(layer, lid), f"conv{lid}": np.array([*layer.stride, *layer.padding, *layer.dilation])}


def _write_pool(layer, lid):
    return {f"pool{lid}": np.array([*layer.kernel_size, *layer.stride, *layer.padding])}


def _write_residual(layer, lid):
    members = list(layer.layers) + ([layer.shortcut] if layer.shortcut is not None else [])
    ids = [f"{lid}.{i}" for i in range(len(layer.layers))] + ([f"{lid}.s"] if layer.shortcut is not None else [])
    out = {f"kinds{lid}": np.array([m.kind for m in members], dtype=str),
           f"activations{lid}": np.array([getattr(m, "activation", "") for m in members], dtype=str),
           f"shortcut{lid}": np.array(int(layer.shortcut is not None))}
    for m, mid in zip(members, ids):
        out.update(layer_arrays(m, mid))
    return out


# --- readers: arrays -> layer ----------------------------------------------------------
def _read_dense(data, lid, activation, source, depth):
    from ..network import Dense

    return Dense(*_weights(data, lid, source), activation)


def _read_conv(data, lid, activation, source, depth):
    g = _ints(data, f"conv{lid}", 6, source)
    return Conv2d(*_weights(data, lid, source), activation, tuple(g[0:2]), tuple(g[2:4]), tuple(g[4:6]))


def _read_pool(cls):
    def read(data, lid, activation, source, depth):
        g = _ints(data, f"pool{lid}", 6, source)
        return cls(tuple(g[0:2]), tuple(g[2:4]), tuple(g[4:6]))
    return read


def _read_flatten(data, lid, activation, source, depth):
    return Flatten()


def _read_residual(data, lid, activation, source, depth):
    if depth >= _MAX_DEPTH:
        raise ValueError(f"model: {source} nests residual blocks deeper than {_MAX_DEPTH}.")
    kinds, acts = data.get(f"kinds{lid}"), data.get(f"activations{lid}")
    flag = data.get(f"shortcut{lid}")
    if (kinds is None or acts is None or flag is None or kinds.ndim != 1 or kinds.dtype.kind != "U"
            or acts.shape != kinds.shape or acts.dtype.kind != "U" or flag.shape != () or flag.dtype.kind not in "iu"
            or int(flag) not in (0, 1) or kinds.size - int(flag) < 1):
        raise ValueError(f"model: {source} lacks a valid description of residual block {lid} "
                         f"('kinds{lid}', 'activations{lid}', 'shortcut{lid}').")
    n = kinds.size - int(flag)
    ids = [f"{lid}.{i}" for i in range(n)] + ([f"{lid}.s"] if flag else [])
    members = [layer_from_arrays(data, str(kd), str(ac), mid, source, depth + 1)
               for kd, ac, mid in zip(kinds.tolist(), acts.tolist(), ids)]
    return Residual(members[:n], activation, members[n] if flag else None)


#: kind -> (writer, reader)
KIND_ARRAYS = {
    "dense": (_write_weights, _read_dense),
    "conv2d": (_write_conv, _read_conv),
    "maxpool2d": (_write_pool, _read_pool(MaxPool2d)),
    "avgpool2d": (_write_pool, _read_pool(AvgPool2d)),
    "flatten": (lambda layer, lid: {}, _read_flatten),
    "residual": (_write_residual, _read_residual),
}


def layer_arrays(layer, lid) -> dict:
    """The arrays of one layer under id ``lid``."""
    return KIND_ARRAYS[layer.kind][0](layer, str(lid))


def layer_from_arrays(data, kind: str, activation: str, lid, source: str, depth: int = 0):
    """The layer of kind ``kind`` stored under id ``lid``; ValueError naming the layer if invalid."""
    if kind not in KIND_ARRAYS:
        raise ValueError(f"model: {source} holds a layer of unknown kind {kind!r} (layer {lid}); "
                         f"this sparsify reads {sorted(KIND_ARRAYS)}.")
    try:
        return KIND_ARRAYS[kind][1](data, str(lid), activation, source, depth)
    except (TypeError, ValueError) as exc:
        if str(exc).startswith("model:"):
            raise
        raise type(exc)(f"model: layer {lid} of {source}: {exc}") from None


def network_from_arrays(data, kinds, activations, source: str):
    """A network of any layer kinds from a version-2 file's arrays."""
    from ..network import Network

    if len(activations) != len(kinds):
        raise ValueError(f"model: {source} has {len(kinds)} layer kinds but {len(activations)} activations.")
    shape = data.get("input_shape")
    if shape is None or shape.ndim != 1 or shape.dtype.kind not in "iu" or not 1 <= shape.size <= 3:
        raise ValueError(f"model: {source} lacks a valid 'input_shape' entry (1 to 3 integers).")
    layers = [layer_from_arrays(data, kd, ac, k, source) for k, (kd, ac) in enumerate(zip(kinds, activations))]
    try:
        return Network(layers, tuple(int(v) for v in shape))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"model: {source}: {exc}") from None
