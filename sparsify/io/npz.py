"""Saving and loading networks as self-describing ``.npz`` files.

Format (version 2): keys ``format`` (= "sparsify-network"), ``format_version``,
``activations`` (unicode array, one per layer), ``kinds`` (unicode array),
``W0, W1, ...`` and ``b0, b1, ...`` (a bias is simply absent when the layer
has none). Networks with convolutions, pools, flattening or residual blocks
add ``input_shape`` and the arrays of each kind (:mod:`sparsify.io._kinds`);
a network of dense layers has exactly the arrays of version 1, and version-1
files still load. Everything loads with ``allow_pickle=False``; user files are
never unpickled.

Plain exports from other frameworks (``W0, b0, W1, b1, ...`` arrays only, or
the ``weight_0``/``bias_0`` spelling) load with ``load(path, activations=[...])``.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..network import Dense, Network
from . import _kinds
from ._atomic import atomic_write, atomic_write_many  # noqa: F401  (re-exported)

FORMAT_NAME = "sparsify-network"
FORMAT_VERSION = 2
#: versions this sparsify reads (version 1: dense layers only)
READABLE_VERSIONS = (1, 2)
_MAX_LAYERS = 10_000


def network_to_arrays(net: Network) -> dict[str, np.ndarray]:
    """The dictionary of arrays that :func:`save` writes."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a sparsify.Network, got {type(net).__name__}.")
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION),
        "activations": np.array([getattr(layer, "activation", "") for layer in net.layers], dtype=str),
        "kinds": np.array([layer.kind for layer in net.layers], dtype=str),
    }
    for k, layer in enumerate(net.layers):
        arrays.update(_kinds.layer_arrays(layer, k))
    if any(layer.kind != "dense" for layer in net.layers):
        arrays["input_shape"] = np.array(net.input_shape)
    return arrays


def save(net: Network, path) -> Path:
    """Write ``net`` to ``path`` (a ``.npz`` file), atomically."""
    arrays = network_to_arrays(net)
    return atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _open_npz(path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model: file {str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"model: {str(path)!r} is a directory, expected a .npz file.")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not (magic.startswith(b"PK") or magic == b"\x93NUMPY"):
        raise ValueError(
            f"model: {str(path)!r} is not an .npz archive (it does not start like a zip or .npy file); "
            "save a model with sparsify.save or np.savez(path, W0=..., b0=..., ...)."
        )
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive of named arrays")
        with data:
            if len(data.files) > 4 * _MAX_LAYERS:
                raise ValueError(f"{len(data.files)} entries")
            return {key: data[key] for key in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc).lower():
            raise ValueError(
                f"model: {str(path)!r} contains pickled Python objects, which sparsify never loads "
                "for safety; re-save the arrays as plain numeric arrays."
            ) from None
        raise ValueError(f"model: {str(path)!r} is not a readable .npz model file ({exc}).") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"model: {str(path)!r} is not a readable .npz model file ({exc}).") from None


def _indexed(keys, patterns) -> dict[int, str]:
    found: dict[int, str] = {}
    for key in keys:
        for pat in patterns:
            m = re.fullmatch(pat, key)
            if m:
                found[int(m.group(1))] = key
    return found


def arrays_to_network(data: dict[str, np.ndarray], activations: Sequence[str] | None = None,
                      source: str = "arrays") -> Network:
    """Build a network from a dictionary of arrays (a sparsify file or a plain export)."""
    if "format" in data:
        fmt = data["format"]
        if fmt.shape != () or str(fmt) != FORMAT_NAME:
            raise ValueError(f"model: {source} has format {fmt!r}, expected {FORMAT_NAME!r}.")
        version = data.get("format_version")
        if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) not in READABLE_VERSIONS:
            raise ValueError(
                f"model: {source} has format_version {version!r}; this sparsify reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. "
                "Upgrade sparsify or re-save the model."
            )
        stored = data.get("activations")
        if stored is None or stored.ndim != 1 or stored.dtype.kind != "U":
            raise ValueError(f"model: {source} lacks a valid 'activations' entry (1-D array of names).")
        if activations is not None and list(activations) != stored.tolist():
            raise ValueError(
                f"activations: {source} stores {stored.tolist()}, which differs from the given {list(activations)}; "
                "omit activations= for sparsify files."
            )
        activations = stored.tolist()
        kinds = data.get("kinds")
        if kinds is not None and any(k != "dense" for k in kinds.tolist()):
            if int(version) < 2 or kinds.ndim != 1 or kinds.dtype.kind != "U":
                raise ValueError(f"model: {source} holds layer kinds {kinds.tolist()}, which need format version 2.")
            return _kinds.network_from_arrays(data, kinds.tolist(), activations, source)
        w_keys = _indexed(data, [r"W(\d+)"])
        b_keys = _indexed(data, [r"b(\d+)"])
    else:
        w_keys = _indexed(data, [r"W(\d+)", r"w(\d+)", r"weight_?(\d+)"])
        b_keys = _indexed(data, [r"b(\d+)", r"bias_?(\d+)"])
        if not w_keys:
            raise ValueError(
                f"model: {source} is neither a sparsify model nor a plain export; expected arrays named "
                f"W0, b0, W1, b1, ... but found {sorted(data)[:10]}."
            )
        if activations is None:
            raise ValueError(
                f"activations: {source} is a plain array export without activation names; pass one name per "
                f"layer ({len(w_keys)} layers), e.g. activations={['relu'] * (len(w_keys) - 1) + ['identity']} "
                "(CLI: --activations relu,relu,identity)."
            )
    n_layers = len(w_keys)
    if sorted(w_keys) != list(range(n_layers)):
        raise ValueError(f"model: {source} has weight indices {sorted(w_keys)}; expected 0..{n_layers - 1} without gaps.")
    extra_b = set(b_keys) - set(w_keys)
    if extra_b:
        raise ValueError(f"model: {source} has biases {sorted(extra_b)} without matching weights.")
    activations = list(activations)
    if len(activations) != n_layers:
        raise ValueError(
            f"activations: {source} has {n_layers} layers but {len(activations)} activation names were given: "
            f"{activations}."
        )
    layers = []
    for k in range(n_layers):
        W = data[w_keys[k]]
        b = data[b_keys[k]] if k in b_keys else None
        try:
            layers.append(Dense(W, b, activations[k]))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"model: layer {k} of {source}: {exc}") from None
    try:
        return Network(layers)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"model: {source}: {exc}") from None


def load(path, activations: Sequence[str] | None = None) -> Network:
    """Read a network from a ``.npz`` file.

    Sparsify files describe themselves. For a plain export holding arrays
    ``W0, b0, W1, b1, ...`` (biases optional), give ``activations``, one name
    per layer. Loading never unpickles anything.
    """
    data = _open_npz(path)
    return arrays_to_network(data, activations, source=repr(str(path)))
