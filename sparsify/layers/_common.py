"""Validation helpers shared by the layer kinds (no pipeline imports)."""
from __future__ import annotations

import numbers

import numpy as np

from .._validation import as_float_array


def readonly(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only copy of ``a``."""
    a = np.array(a, copy=True, order="C")
    a.setflags(write=False)
    return a


def check_pair(value, name: str, *, low: int) -> tuple[int, int]:
    """An int or a pair of ints, each ``>= low``, as a pair of Python ints."""
    def is_int(v):
        return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))

    if is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2 and all(is_int(v) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints (height, width), got {value!r}; "
                        f"e.g. {name}=1 or {name}=(1, 2).")
    if min(pair) < low:
        raise ValueError(f"{name}: each entry must be >= {low}, got {pair}.")
    return pair


def check_weight_bias(weight, bias, ndim: int):
    """The weight as a read-only float array of rank ``ndim`` and a matching read-only bias (or None)."""
    w = as_float_array(weight, "weight", ndim=ndim)
    if 0 in w.shape:
        raise ValueError(f"weight: a layer needs at least one input and one output, got shape {w.shape}.")
    b = None
    if bias is not None:
        b = as_float_array(bias, "bias", ndim=1, dtype=w.dtype)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias: expected shape ({w.shape[0]},) to match weight of shape {w.shape}, "
                             f"got {b.shape}.")
        b = readonly(b)
    return readonly(w), b


def check_image_shape(in_shape, layer: str) -> tuple[int, int, int]:
    """``in_shape`` must be ``(c, h, w)``: an image per point (NCHW batches)."""
    if len(in_shape) != 3:
        raise ValueError(f"{layer}: expects images of shape (channels, height, width) per point, got "
                         f"inputs of shape {tuple(in_shape)} per point; put it before any Flatten/Dense layer.")
    return tuple(int(v) for v in in_shape)
