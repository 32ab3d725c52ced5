"""S as it streams: one array or batches, cut into fixed blocks of points, and each block's
inputs of every prunable layer (the trace, lazily). Fixed blocks make a streamed S give the
same bits as the whole array (docs/theory.md S5; docs/performance.md)."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from . import _blas

__all__ = ["is_one_array"]


def is_one_array(X_S, point_ndim: int = 1) -> bool:
    """True when S is one array of points (an ndarray, a memory map, or nested lists of
    numbers), False when it is a sequence or iterable of batches (``1 + point_ndim``-D:
    2-D for vectors, 4-D for NCHW images)."""
    if isinstance(X_S, np.ndarray) or hasattr(X_S, "__array_interface__"):
        return True
    return isinstance(X_S, (list, tuple)) and not all(np.ndim(b) == 1 + point_ndim for b in X_S)


def _batches(network, X_S, chunk_size: int):
    """Validated 2-D batches of S in the network's dtype, read lazily.

    An array (a memory-mapped ``.npy`` included) is read ``chunk_size`` rows at
    a time, so only one block is in memory. A list or tuple of 2-D arrays, or
    any other iterable (a generator), is a sequence of batches; a list of
    numbers per point is one array.
    """
    if isinstance(X_S, (str, bytes, dict)):
        raise TypeError(
            f"X_S: expected an array of shape (n_points, {network.n_in}) or an iterable of such "
            f"batches, got {type(X_S).__name__}."
        )
    point_ndim = len(network.input_shape)
    if is_one_array(X_S, point_ndim) and isinstance(X_S, (list, tuple)):
        X_S = network.check_input(X_S, "X_S")  # nested lists of numbers: one array
    if is_one_array(X_S, point_ndim):
        X = np.asarray(X_S)
        if point_ndim > 1 and X.shape[1:] != network.input_shape:
            expected = "(n_points, " + ", ".join(map(str, network.input_shape)) + ")"
            raise ValueError(f"X_S: expected shape {expected} (NCHW), got {X.shape}.")
        if point_ndim == 1 and (X.ndim != 2 or X.shape[1] != network.n_in):
            # shape only: do not read (a memory-mapped) S just to refuse it
            if X.ndim == 2:
                raise ValueError(
                    f"X_S: has {X.shape[1]} features per point but the network's first layer takes "
                    f"{network.n_in} (shape {X.shape}, expected (n_points, {network.n_in}))."
                )
            raise ValueError(f"X_S: expected shape (n_points, {network.n_in}), got {X.shape}.")
        n = X.shape[0]
        for start in range(0, n, chunk_size):
            name = "X_S" if n <= chunk_size else f"X_S[{start}:{min(start + chunk_size, n)}]"
            yield network.check_input(X[start:start + chunk_size], name)
        return
    if not isinstance(X_S, Iterable):
        raise TypeError(
            f"X_S: expected an array of shape (n_points, {network.n_in}) or an iterable of such "
            f"batches, got {type(X_S).__name__}."
        )
    for k, batch in enumerate(X_S):
        yield network.check_input(batch, f"X_S batch {k}")


def _fixed_blocks(batches, size: int):
    """Regroup batches into blocks of exactly ``size`` consecutive points (the last may be shorter)."""
    pending, n_pending = [], 0
    for batch in batches:
        start, n = 0, batch.shape[0]
        while start < n:
            if n_pending == 0 and n - start >= size:
                yield batch[start:start + size]
                start += size
                continue
            take = min(size - n_pending, n - start)
            pending.append(batch[start:start + take])
            n_pending += take
            start += take
            if n_pending == size:
                yield np.concatenate(pending, axis=0)
                pending, n_pending = [], 0
    if n_pending:  # a single piece (a short S) is passed on as it is, not copied
        yield pending[0] if len(pending) == 1 else np.concatenate(pending, axis=0)


def _layer_inputs_of_block(network, X):
    """The trace of one validated block: the input of each prunable layer, as in
    ``Network.trace``, lazily, and without the forward passes after the last
    prunable layer's input, whose outputs no sensitivity needs."""
    from .layers import run_layers

    a = X
    remaining = len(network.prunable_layers)
    for layer in network.layers:
        if remaining == 0:
            return
        if layer.kind == "residual":  # its weight layers' inputs, recorded by one forward pass
            inputs = []
            a = run_layers([layer], a, _blas.matmul, record=lambda _, x: inputs.append(x))
            remaining -= len(inputs)
            yield from inputs
            continue
        if layer.prunable:
            yield a
            remaining -= 1
            if remaining == 0:
                return
        a = layer.forward(a, matmul=_blas.matmul)  # row blocks on Numba's threads
