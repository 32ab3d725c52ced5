"""Saving and loading networks as self-describing ``.npz`` files.

Format (version 2): keys ``format`` (= "sparsify-network"), ``format_version``,
``activations`` (unicode array, one per layer), ``kinds`` (unicode array),
``W0, W1, ...`` and ``b0, b1, ...`` (a bias is simply absent when the layer
has none). Networks with convolutions, pools, flattening or residual blocks
add ``input_shape`` and the arrays of each kind (:mod:`sparsify.io._kinds`);
a network of dense layers has exactly the arrays of version 1, and version-1
files still load. Everything loads with ``allow_pickle=False``; user files are
never unpickled.

Loading distrusts the file (:mod:`sparsify.io._npyfile`): each array's header
is read and checked before memory is reserved (its shape must fit the bytes
the archive really holds; object dtypes are refused), and the archive may
inflate to at most ``MAX_RATIO`` (200) times its file size plus 64 MiB, and
never beyond ``MAX_BYTES`` (4 GiB). For a trusted, larger model pass
``load(path, max_bytes=N)``, which replaces both limits by ``N`` bytes.
Saving writes atomically (:mod:`sparsify.io._atomic`): to an existing regular
file or a new path only, never leaving a partial file.

Plain exports from other frameworks (``W0, b0, W1, b1, ...`` arrays only, or
the ``weight_0``/``bias_0`` spelling) load with ``load(path, activations=[...])``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..network import Dense, Network
from .._validation import check_scalar
from . import _kinds
from ._atomic import atomic_write, atomic_write_many  # noqa: F401  (re-exported)
from ._npyfile import check_path, read_npz

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
    """Write ``net`` to ``path`` (a ``.npz`` file name: a new path or an existing
    regular file), atomically: on any failure nothing is written."""
    path = check_path(path, "path")
    return atomic_write(path, writer(net), "path")


def writer(net: Network):
    """``write(fileobj)`` for :func:`sparsify.io.atomic_write_many`: ``net`` as sparsify's ``.npz``."""
    arrays = network_to_arrays(net)
    return lambda fh: np.savez(fh, **arrays)


def _indexed(keys, patterns, source: str) -> dict[int, str]:
    """Layer index -> key for the keys matching one of ``patterns``; two keys for
    one index (``W0`` and ``weight_0``, or ``W0`` and ``W00``) are refused."""
    found: dict[int, str] = {}
    for key in sorted(keys):
        for pat in patterns:
            m = re.fullmatch(pat, key)
            if m:
                k = int(m.group(1))
                if k in found and found[k] != key:
                    raise ValueError(
                        f"model: {source} is ambiguous: entries {found[k]!r} and {key!r} both name layer {k}; "
                        "keep one spelling (W0, b0, W1, ... without leading zeros) and re-save."
                    )
                found[k] = key
    return found


def _check_activation_names(activations, source: str):
    if activations is None:
        return None
    if isinstance(activations, (str, bytes)):
        raise TypeError(
            f"activations: expected a sequence of names, one per layer, got the string {activations!r}; "
            f"for a one-layer network pass [{activations!r}] (CLI: --activations relu,relu,identity)."
        )
    try:
        return list(activations)
    except TypeError:
        raise TypeError(
            f"activations: expected a sequence of names, one per layer, got {type(activations).__name__}."
        ) from None


def _names_entry(data, key: str, source: str) -> list[str]:
    arr = np.asarray(data[key])
    if arr.ndim != 1 or arr.dtype.kind != "U":
        raise ValueError(
            f"model: {source} has an invalid {key!r} entry (dtype {arr.dtype}, shape {arr.shape}); expected a "
            "1-D array of names, one per layer; re-save the model with sparsify.save."
        )
    return arr.tolist()


def arrays_to_network(data: dict[str, np.ndarray], activations: Sequence[str] | None = None,
                      source: str = "arrays") -> Network:
    """Build a network from a dictionary of arrays (a sparsify file or a plain export)."""
    activations = _check_activation_names(activations, source)
    if "format" in data:
        fmt = data["format"]
        if not isinstance(fmt, np.ndarray) or fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT_NAME:
            raise ValueError(f"model: {source} has format {fmt!r}, expected {FORMAT_NAME!r}.")
        version = data.get("format_version")
        if version is None or version.shape != () or version.dtype.kind not in "iu" or int(version) not in READABLE_VERSIONS:
            raise ValueError(
                f"model: {source} has format_version {version!r}; this sparsify reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. "
                "Upgrade sparsify or re-save the model."
            )
        if "activations" not in data:
            raise ValueError(f"model: {source} lacks the 'activations' entry (1-D array of names); "
                             "re-save the model with sparsify.save.")
        stored = _names_entry(data, "activations", source)
        if activations is not None and activations != stored:
            raise ValueError(
                f"activations: {source} stores {stored}, which differs from the given {activations}; "
                "omit activations= for sparsify files."
            )
        w_keys = _indexed(data, [r"W(\d+)"], source)
        b_keys = _indexed(data, [r"b(\d+)"], source)
        activations = stored
        if "kinds" in data:
            kinds = _names_entry(data, "kinds", source)
            if any(k != "dense" for k in kinds):
                if int(version) < 2:
                    raise ValueError(f"model: {source} holds layer kinds {kinds}, which need format version 2.")
                return _kinds.network_from_arrays(data, kinds, activations, source)
            if len(kinds) != len(w_keys):
                raise ValueError(f"model: {source} stores {len(kinds)} layer kinds for {len(w_keys)} weight "
                                 "matrices; the file is damaged: re-save the model with sparsify.save.")
        if len(stored) != len(w_keys):
            raise ValueError(
                f"model: {source} stores {len(stored)} activation names {stored} for {len(w_keys)} weight "
                "matrices; the file is damaged: re-save the model with sparsify.save."
            )
    else:
        w_keys = _indexed(data, [r"W(\d+)", r"w(\d+)", r"weight_?(\d+)"], source)
        b_keys = _indexed(data, [r"b(\d+)", r"bias_?(\d+)"], source)
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


def load(path, activations: Sequence[str] | None = None, *, max_bytes: int | None = None) -> Network:
    """Read a network from a ``.npz`` file.

    Sparsify files describe themselves. For a plain export holding arrays
    ``W0, b0, W1, b1, ...`` (biases optional), give ``activations``, one name
    per layer. Loading never unpickles anything. ``max_bytes`` (default: the
    limits of the module docstring) caps the archive's uncompressed size.
    """
    path = check_path(path, "model")
    activations = _check_activation_names(activations, repr(str(path)))
    max_bytes = check_scalar(max_bytes, "max_bytes", kind="int", low=0, allow_none=True)
    data = read_npz(path, "model", max_bytes=max_bytes, max_members=4 * _MAX_LAYERS)
    return arrays_to_network(data, activations, source=repr(str(path)))
