"""The network data model: an ordered list of layers with weight-matrix views.

A :class:`Dense` layer computes ``z = a_prev @ W.T + b`` and ``a = phi(z)`` with
``W`` of shape ``(n_out, n_in)`` (the PyTorch/ONNX convention) and ``phi`` named
in the activation registry. Arrays are batch-first.

Layers own read-only copies of their arrays, so nothing a caller holds can be
changed through a network and a network cannot be changed behind its back.
Pruning code only relies on the weight-matrix view of a layer: ``weight``
``(n_out, n_in)`` and ``input_matrix(a_prev)`` (the rows that ``weight``
multiplies; for a dense layer the activations themselves).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ._config import SUPPORTED_DTYPES
from ._validation import as_float_array, check_scalar
from .activations import get_activation


def _refuse_masked(x, name: str) -> None:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name}: numpy masked arrays are not accepted (the mask would be silently dropped); "
            f"fill the masked entries first, e.g. {name}.filled(0)."
        )


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True, order="C")
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Dense:
    """A fully connected layer ``a = phi(a_prev @ weight.T + bias)``.

    Parameters
    ----------
    weight : array, shape (n_out, n_in)
    bias : array, shape (n_out,), or None
    activation : str
        A name from :data:`sparsify.activations.ACTIVATIONS`.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: str = "identity"

    def __post_init__(self):
        _refuse_masked(self.weight, "weight")
        _refuse_masked(self.bias, "bias")
        w = as_float_array(self.weight, "weight", ndim=2)
        if w.shape[0] == 0 or w.shape[1] == 0:
            raise ValueError(f"weight: a layer needs at least one input and one output, got shape {w.shape}.")
        object.__setattr__(self, "weight", _readonly(w))
        if self.bias is not None:
            b = as_float_array(self.bias, "bias", ndim=1, dtype=w.dtype)
            if b.shape != (w.shape[0],):
                raise ValueError(
                    f"bias: expected shape ({w.shape[0]},) to match weight of shape {w.shape}, got {b.shape}."
                )
            object.__setattr__(self, "bias", _readonly(b))
        get_activation(self.activation)

    kind = "dense"
    prunable = True

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.weight.dtype

    def input_matrix(self, a_prev: np.ndarray) -> np.ndarray:
        """The matrix whose rows ``weight`` multiplies (here: ``a_prev`` itself)."""
        return a_prev

    def preactivation(self, a_prev: np.ndarray, matmul=np.matmul) -> np.ndarray:
        """``a_prev @ weight.T + bias``; ``matmul`` computes the product (default ``np.matmul``)."""
        z = matmul(a_prev, self.weight.T)
        if self.bias is not None:
            z = z + self.bias
        return z

    def forward(self, a_prev: np.ndarray, matmul=np.matmul) -> np.ndarray:
        return get_activation(self.activation)(self.preactivation(a_prev, matmul))

    def with_weight(self, weight: np.ndarray) -> "Dense":
        """A copy of this layer with another weight matrix of the same shape."""
        if np.shape(weight) != self.weight.shape:
            raise ValueError(f"weight: expected shape {self.weight.shape}, got {np.shape(weight)}.")
        return Dense(np.asarray(weight, dtype=self.dtype), self.bias, self.activation)


class Network:
    """An ordered list of layers; ``net(X)`` runs the forward pass.

    Parameters
    ----------
    layers : sequence of Dense
        Consecutive layers must agree: ``layers[k].n_out == layers[k+1].n_in``;
        all layers share one dtype (float32 or float64).
    """

    def __init__(self, layers: Sequence[Dense]):
        if isinstance(layers, Dense):
            raise TypeError("layers: expected a sequence of sparsify.Dense layers, got a single Dense; "
                            "wrap it in a list: Network([layer]).")
        try:
            layers = tuple(layers)
        except TypeError:
            raise TypeError(
                f"layers: expected a sequence of sparsify.Dense layers, got {type(layers).__name__}; "
                "e.g. Network([Dense(W0, b0, 'relu'), Dense(W1, b1, 'identity')])."
            ) from None
        if not layers:
            raise ValueError("layers: a network needs at least one layer.")
        for k, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise TypeError(f"layers[{k}]: expected a sparsify.Dense layer, got {type(layer).__name__}.")
        for k in range(1, len(layers)):
            if layers[k].n_in != layers[k - 1].n_out:
                raise ValueError(
                    f"layers[{k}]: takes {layers[k].n_in} inputs but layers[{k - 1}] produces "
                    f"{layers[k - 1].n_out} outputs (weight shapes {layers[k - 1].weight.shape} -> "
                    f"{layers[k].weight.shape}); weights are (n_out, n_in)."
                )
        dtypes = {layer.dtype for layer in layers}
        if len(dtypes) > 1:
            raise TypeError(
                f"layers: all layers must share one dtype, got {sorted(str(d) for d in dtypes)}; "
                "cast the weights with .astype(np.float64) or .astype(np.float32)."
            )
        self.layers = layers

    # --- shape facts -------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].dtype

    @property
    def weights(self) -> list[np.ndarray]:
        return [layer.weight for layer in self.layers]

    @property
    def activations(self) -> list[str]:
        return [layer.activation for layer in self.layers]

    @property
    def n_weights(self) -> int:
        """Number of prunable weights (all entries of all weight matrices)."""
        return int(sum(layer.weight.size for layer in self.layers if layer.prunable))

    @property
    def n_biases(self) -> int:
        return int(sum(layer.bias.size for layer in self.layers if layer.bias is not None))

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        widths = "-".join([str(self.n_in)] + [str(layer.n_out) for layer in self.layers])
        acts = ",".join(self.activations)
        return f"Network({widths}, activations=[{acts}], dtype={self.dtype})"

    # --- computing ----------------------------------------------------------
    def check_input(self, X, name: str = "X") -> np.ndarray:
        """Validate a batch ``X`` of shape (n_points, n_in) in the network's dtype.

        float32 data for a float64 network (and the reverse) is cast, since
        that is lossless or the network's own precision; anything else that is
        not a finite real 2-D array is refused.
        """
        _refuse_masked(X, name)
        X = as_float_array(X, name)
        if X.ndim != 2:
            raise ValueError(
                f"{name}: expected shape (n_points, {self.n_in}), got {X.shape}; "
                "reshape a single point with x[None, :]."
            )
        if X.shape[1] != self.n_in:
            raise ValueError(
                f"{name}: has {X.shape[1]} features per point but the network's first layer takes "
                f"{self.n_in} (shape {X.shape}, expected (n_points, {self.n_in}))."
            )
        if X.dtype != self.dtype:
            X = X.astype(self.dtype)
        return X

    def forward(self, X) -> np.ndarray:
        """Output of the network for a batch ``X`` (n_points, n_in)."""
        a = self.check_input(X)
        for layer in self.layers:
            a = layer.forward(a)
        return a

    __call__ = forward

    def trace(self, X) -> list[np.ndarray]:
        """The input matrix of each layer for batch ``X`` (one entry per layer).

        ``trace(X)[k]`` is what ``layers[k].weight`` multiplies; this is the one
        way the data enters pruning.
        """
        a = self.check_input(X)
        inputs = []
        for layer in self.layers:
            inputs.append(layer.input_matrix(a))
            a = layer.forward(a)
        return inputs

    def with_weights(self, weights: Sequence[np.ndarray]) -> "Network":
        """A new network with the same biases and activations and new weights."""
        weights = list(weights)
        if len(weights) != len(self.layers):
            raise ValueError(f"weights: expected {len(self.layers)} matrices, got {len(weights)}.")
        return Network([layer.with_weight(w) for layer, w in zip(self.layers, weights)])

    def astype(self, dtype) -> "Network":
        """A copy in ``dtype``, which must be float32 or float64."""
        try:
            ok = dtype is not None and np.dtype(dtype) in SUPPORTED_DTYPES
        except TypeError:
            ok = False
        if not ok:
            raise TypeError(
                f"dtype: a network computes in float32 or float64, got {getattr(dtype, '__name__', repr(dtype))}; "
                "use net.astype(np.float32) or net.astype(np.float64)."
            )
        dtype = np.dtype(dtype)
        return Network(
            [
                Dense(
                    layer.weight.astype(dtype),
                    None if layer.bias is None else layer.bias.astype(dtype),
                    layer.activation,
                )
                for layer in self.layers
            ]
        )


def from_arrays(arrays: Sequence, activations: Sequence[str]) -> Network:
    """Build a network from plain ``[W0, b0, W1, b1, ...]`` arrays.

    ``b_k`` may be None. ``activations`` gives one name per layer.
    """
    if isinstance(activations, str):
        raise TypeError(
            f"activations: expected a sequence of names, one per layer, got the string {activations!r}; "
            f"for a one-layer network pass [{activations!r}]."
        )
    arrays = list(arrays)
    if len(arrays) % 2:
        raise ValueError(
            f"arrays: expected pairs [W0, b0, W1, b1, ...] (use None for a missing bias), got {len(arrays)} arrays."
        )
    n_layers = len(arrays) // 2
    activations = list(activations)
    if len(activations) != n_layers:
        raise ValueError(
            f"activations: expected one name per layer ({n_layers}), got {len(activations)}: {activations}."
        )
    return Network([Dense(arrays[2 * k], arrays[2 * k + 1], activations[k]) for k in range(n_layers)])


def mlp_from_init(widths: Sequence[int], init, activation: str = "relu", *,
                  output_activation: str = "identity", rng=None, dtype=np.float64) -> Network:
    """An MLP whose layer ``k`` gets ``(W, b) = init(gen, n_out, n_in)``.

    ``widths`` lists the layer sizes including the input, e.g. ``[64, 300, 100, 10]``;
    hidden layers use ``activation``, the last one ``output_activation``. Layers are
    initialised in order from one Generator built from ``rng``.
    """
    from ._validation import check_rng

    gen = check_rng(rng)
    widths = [check_scalar(w, f"widths[{k}]", kind="int", low=1) for k, w in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"widths: need at least two positive sizes (input and output), got {widths}.")
    layers = []
    for k in range(len(widths) - 1):
        W, b = init(gen, widths[k + 1], widths[k])
        act = activation if k < len(widths) - 2 else output_activation
        layers.append(Dense(W.astype(dtype), None if b is None else b.astype(dtype), act))
    return Network(layers)


def random_mlp(widths: Sequence[int], activation: str = "relu", *, output_activation: str = "identity",
               rng=None, dtype=np.float64, bias: bool = True) -> Network:
    """A seeded random MLP with He-scaled Gaussian weights (for demos and tests).

    ``W ~ N(0, 2 / n_in)``, ``b ~ N(0, 0.01)`` (or no bias).
    """
    def gaussian(gen, n_out, n_in):
        W = gen.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)
        return W, (gen.standard_normal(n_out) * 0.1 if bias else None)

    return mlp_from_init(widths, gaussian, activation, output_activation=output_activation, rng=rng, dtype=dtype)
