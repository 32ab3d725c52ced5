"""Activation functions, looked up by name.

Networks store activation *names*, never callables, so that a network can be
saved, loaded and dispatched on. Each entry maps an array to an array of the
same shape and dtype.
"""
from __future__ import annotations

import numpy as np

#: slope of ``leaky_relu`` for negative inputs (PyTorch's default).
LEAKY_SLOPE = 0.01


def _relu(z):
    return np.maximum(z, 0)


def _identity(z):
    return z


def _leaky_relu(z):
    return np.where(z >= 0, z, z * z.dtype.type(LEAKY_SLOPE))


def _tanh(z):
    return np.tanh(z)


def _sigmoid(z):
    # numerically stable for large |z|
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1 / (1 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1 + ez)
    return out


ACTIVATIONS = {
    "relu": _relu,
    "identity": _identity,
    "linear": _identity,
    "leaky_relu": _leaky_relu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
}


def get_activation(name: str):
    """Return the function registered under ``name`` (ValueError if unknown)."""
    if not isinstance(name, str):
        raise TypeError(f"activation: expected a name (str), got {type(name).__name__}.")
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"activation: unknown name {name!r}; known activations are {sorted(ACTIVATIONS)}."
        ) from None
