"""Pruned weights as ``scipy.sparse`` CSR arrays, and what they cost in bytes.

:func:`save_csr` writes an ``.npz`` archive (plain numeric arrays, loadable
with ``allow_pickle=False``) with, per layer ``k``:

``layer{k}.data``, ``layer{k}.indices``, ``layer{k}.indptr``, ``layer{k}.shape``
    the weight matrix ``(n_out, n_in)`` in CSR form: ``scipy.sparse.csr_array(
    (data, indices, indptr), shape=shape)``; exact zeros (the pruned weights)
    are not stored, so a signed zero reads back as +0.
``layer{k}.bias``
    the bias, absent when the layer has none,

plus ``format`` (= "sparsify-csr"), ``format_version``, ``activations`` and
``kinds``. :func:`load_csr` reads it back into a :class:`Network`;
:func:`csr_sizes` reports dense and CSR bytes per layer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..network import Dense, Network
from ._atomic import atomic_write

FORMAT_NAME = "sparsify-csr"
FORMAT_VERSION = 1
_MAX_ELEMENTS = 2**31  # a dense weight this large is refused before allocating it
_PARTS = ("data", "indices", "indptr", "shape")


def _matrices(net: Network):
    import scipy.sparse

    if not isinstance(net, Network):
        raise TypeError(f"net: expected a sparsify.Network, got {type(net).__name__}.")
    for k, layer in enumerate(net.layers):
        kind = getattr(layer, "kind", type(layer).__name__)
        if kind != "dense":
            raise ValueError(f"net: layer {k} is a {kind} layer; CSR export covers dense layers only "
                             "(save the network as .onnx or .npz).")
        yield k, layer, scipy.sparse.csr_array(layer.weight)


def network_to_csr_arrays(net: Network) -> dict[str, np.ndarray]:
    """The arrays :func:`save_csr` writes (see the module docstring)."""
    arrays = {"format": np.array(FORMAT_NAME), "format_version": np.array(FORMAT_VERSION)}
    kinds = []
    for k, layer, m in _matrices(net):
        m.sum_duplicates()
        arrays[f"layer{k}.data"] = m.data
        arrays[f"layer{k}.indices"] = m.indices
        arrays[f"layer{k}.indptr"] = m.indptr
        arrays[f"layer{k}.shape"] = np.array(m.shape, dtype=np.int64)
        if layer.bias is not None:
            arrays[f"layer{k}.bias"] = layer.bias
        kinds.append(layer.kind)
    arrays["activations"] = np.array(net.activations, dtype=str)
    arrays["kinds"] = np.array(kinds, dtype=str)
    return arrays


def save_csr(net: Network, path) -> Path:
    """Write the weights of ``net`` as CSR arrays to ``path`` (an ``.npz`` archive), atomically."""
    arrays = network_to_csr_arrays(net)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays), "path")


def csr_sizes(net: Network) -> list[dict]:
    """Per layer: ``shape``, ``nnz``, ``dense_bytes`` (the weight array) and ``csr_bytes``
    (data + indices + indptr as scipy stores them; biases are not counted in either)."""
    rows = []
    for k, layer, m in _matrices(net):
        csr = int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)
        rows.append({"layer": k, "shape": tuple(layer.weight.shape), "nnz": int(m.nnz),
                     "dense_bytes": int(layer.weight.nbytes), "csr_bytes": csr})
    return rows


def format_sizes(rows) -> str:
    """A text table of :func:`csr_sizes`, with a total line."""
    lines = [f"{'layer':>5} {'shape':>14} {'nnz':>10} {'dense bytes':>12} {'CSR bytes':>12} {'CSR/dense':>9}"]
    for r in rows:
        lines.append(f"{r['layer']:>5} {str(r['shape']):>14} {r['nnz']:>10} {r['dense_bytes']:>12} "
                     f"{r['csr_bytes']:>12} {r['csr_bytes'] / r['dense_bytes']:>9.3f}")
    dense, csr = sum(r["dense_bytes"] for r in rows), sum(r["csr_bytes"] for r in rows)
    lines.append(f"{'total':>5} {'':>14} {sum(r['nnz'] for r in rows):>10} {dense:>12} {csr:>12} {csr / dense:>9.3f}")
    return "\n".join(lines)


def _read(path, max_bytes=None) -> dict[str, np.ndarray]:
    """The arrays of the archive, read by the checked reader (bounded inflation, no pickles)."""
    from ._npyfile import read_npz

    return read_npz(path, "model", max_bytes=max_bytes)


def _layer_matrix(arrays, k, src):
    import scipy.sparse

    parts = {p: arrays.get(f"layer{k}.{p}") for p in _PARTS}
    missing = [p for p, a in parts.items() if a is None]
    if missing:
        raise ValueError(f"model: layer {k} of {src} lacks {missing}.")
    shape, data, indices, indptr = parts["shape"], parts["data"], parts["indices"], parts["indptr"]
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 1).any():
        raise ValueError(f"model: layer {k} of {src} has shape {shape.tolist()}; expected two positive integers.")
    n_out, n_in = (int(s) for s in shape)
    if n_out * n_in > _MAX_ELEMENTS:
        raise ValueError(f"model: layer {k} of {src} declares a {n_out} x {n_in} weight, over {_MAX_ELEMENTS} entries.")
    if data.ndim != 1 or data.dtype not in (np.float32, np.float64) or not np.isfinite(data).all():
        raise ValueError(f"model: layer {k} of {src}: data must be a 1-D finite float32/float64 array.")
    if (indices.ndim != 1 or indptr.shape != (n_out + 1,) or indices.dtype.kind not in "iu"
            or indptr.dtype.kind not in "iu" or len(indices) != len(data) or indptr[0] != 0
            or indptr[-1] != len(data) or (np.diff(indptr) < 0).any()
            or (len(indices) and (indices.min() < 0 or indices.max() >= n_in))):
        raise ValueError(f"model: layer {k} of {src}: indices/indptr do not describe a {n_out} x {n_in} CSR matrix.")
    m = scipy.sparse.csr_array((data, indices, indptr), shape=(n_out, n_in))
    if not m.has_canonical_format:
        raise ValueError(f"model: layer {k} of {src}: column indices repeat or are unsorted within a row.")
    return m.toarray()


def load_csr(path, *, max_bytes=None) -> Network:
    """Read a network written by :func:`save_csr` (``max_bytes``: see :func:`sparsify.load`)."""
    arrays = _read(path, max_bytes)
    src = repr(str(path))
    fmt, version = arrays.get("format"), arrays.get("format_version")
    if fmt is None or fmt.shape != () or str(fmt) != FORMAT_NAME:
        raise ValueError(f"model: {src} is not a sparsify CSR archive (format {fmt!r}, expected {FORMAT_NAME!r}).")
    if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise ValueError(f"model: {src} has format_version {version!r}; this sparsify reads {FORMAT_VERSION}.")
    acts = arrays.get("activations")
    if acts is None or acts.ndim != 1 or acts.dtype.kind != "U" or len(acts) == 0:
        raise ValueError(f"model: {src} lacks a valid 'activations' entry (1-D array of names).")
    kinds = arrays.get("kinds")
    if kinds is None or kinds.tolist() != ["dense"] * len(acts):
        raise ValueError(f"model: {src} has layer kinds {None if kinds is None else kinds.tolist()}; expected "
                         f"'dense' for each of its {len(acts)} layers.")
    layers = []
    for k, act in enumerate(acts.tolist()):
        try:
            layers.append(Dense(_layer_matrix(arrays, k, src), arrays.get(f"layer{k}.bias"), act))
        except (TypeError, ValueError) as exc:
            raise type(exc)(str(exc) if str(exc).startswith("model:") else f"model: layer {k} of {src}: {exc}") from None
    try:
        return Network(layers)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"model: {src}: {exc}") from None
