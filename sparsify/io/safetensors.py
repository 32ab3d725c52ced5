"""Networks as ``.safetensors`` files with PyTorch ``state_dict`` names.

Reading: entries ``<name>.weight`` and ``<name>.bias`` (or the pruned form
``<name>.weight_orig`` + ``<name>.weight_mask``, whose product is the weight,
as in ``torch.nn.utils.prune``) form one layer per ``<name>``. The layer order
comes from the file's own metadata when sparsify wrote it, otherwise from the
names: they must differ only in their numbers (``0, 2, 4`` or ``fc1, fc2, fc10``
or ``layers.0.lin, layers.1.lin``), which are compared as numbers. Entry order
inside the file is no guide: writers sort the header by name. A 2-D weight is
a dense layer; a 4-D weight is a ``Conv2d`` (stride 1, no padding: a
state_dict does not record strides, padding or pooling, so write
convolutional networks as ONNX instead). ``activations`` gives one name per
layer unless the file records them.

Writing follows the ``torch.nn.utils.prune`` convention: ``<i>.weight_orig``
(the layer's weights, sampled weights already reweighted), ``<i>.weight_mask``
(uint8, 1 where the weight is kept) and ``<i>.bias``, with ``i`` the index the
layer has in an ``nn.Sequential`` that lists every activation as a module of
its own (``0, 2, 4`` for Linear-ReLU-Linear-ReLU-Linear). See docs/porting.md.

The header is parsed and checked here, before anything is allocated: sizes
past the end of the file, overlapping or gapped data ranges and shapes whose
byte count disagrees with their range are refused. ``pip install
"sparsify[safetensors]"`` provides the ``safetensors`` package.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

from ..network import Dense, Network
from ._atomic import atomic_write

#: bytes per element of each safetensors dtype; None marks dtypes NumPy cannot hold
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "I32": 4, "U32": 4, "I64": 8, "U64": 8,
             "F16": 2, "F32": 4, "F64": 8, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_NUMPY = {"BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4",
          "I64": "<i8", "U64": "<u8", "F16": "<f2", "F32": "<f4", "F64": "<f8"}
MAX_HEADER_BYTES = 100_000_000
_LEAVES = ("weight", "bias", "weight_orig", "weight_mask")
_BATCHNORM = ("running_mean", "running_var", "num_batches_tracked")
FORMAT_NAME = "sparsify-network"


def _require():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError('reading or writing .safetensors files needs the safetensors package: '
                          'pip install "sparsify[safetensors]"') from None
    return safetensors.numpy


def open_checked(path, max_bytes, what: str):
    """``(Path, open binary file)`` for a model file: a regular file of at most ``max_bytes``
    bytes (None: any size); each failure is a ValueError saying what the path is."""
    from ._npyfile import check_path, describe_os_error, open_for_reading

    path = check_path(path, "model")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(describe_os_error(exc, path, "model", reading=True)) from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"model: {str(path)!r} is a directory; give {what}.")
    if not stat.S_ISREG(mode):
        raise ValueError(f"model: {str(path)!r} is not a regular file (a FIFO, device or socket); give {what}.")
    check_size(path, max_bytes)
    return path, open_for_reading(path, "model")


def check_size(path: Path, max_bytes) -> None:
    """Refuse a file larger than ``max_bytes`` (None: no limit beyond the file itself)."""
    from .._validation import check_scalar

    max_bytes = check_scalar(max_bytes, "max_bytes", kind="int", low=0, allow_none=True)
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise ValueError(f"max_bytes: {str(path)!r} holds {path.stat().st_size} bytes, more than max_bytes="
                         f"{max_bytes}; raise max_bytes if you trust the file.")


# --- header --------------------------------------------------------------------------------------------
def read_header(path, max_bytes=None) -> tuple[dict, dict, int]:
    """Parse and check the header of a safetensors file without reading its data.

    Returns ``(entries, metadata, data_start)``: ``entries`` maps each tensor
    name to ``(dtype, shape, (begin, end))`` with offsets into the data block.
    """
    path, fh = open_checked(path, max_bytes, "a .safetensors file")
    src = repr(str(path))
    with fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"model: {src} is not a safetensors file: {size} bytes, shorter than the 8-byte header length.")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > MAX_HEADER_BYTES:
            raise ValueError(f"model: {src} declares a header of {n} bytes but only {size - 8} bytes follow "
                             f"(limit {MAX_HEADER_BYTES}); the file is truncated or not a safetensors file.")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model: the header of {src} is not valid JSON ({exc}); not a safetensors file.") from None
    if not isinstance(header, dict):
        raise ValueError(f"model: the header of {src} is a JSON {type(header).__name__}, expected an object.")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"model: the __metadata__ of {src} must map names to strings.")
    data_size = size - 8 - n
    entries = {}
    for name, info in header.items():
        entries[name] = _entry(name, info, data_size, src)
    spans = sorted((rng, name) for name, (_, _, rng) in entries.items())
    pos, prev = 0, None
    for (begin, end), name in spans:
        if begin < pos:
            raise ValueError(f"model: tensors {prev!r} and {name!r} of {src} have overlapping data ranges; "
                             "the file is corrupt.")
        if begin > pos:
            raise ValueError(f"model: {src} has unused bytes {pos}..{begin} before tensor {name!r}; the file is corrupt.")
        pos, prev = end, name
    if pos != data_size:
        raise ValueError(f"model: the tensors of {src} cover {pos} of its {data_size} data bytes; the file is corrupt.")
    return entries, metadata, 8 + n


def _entry(name, info, data_size, src):
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"model: entry {name!r} of {src} must hold exactly dtype, shape and data_offsets.")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _ITEMSIZE:
        raise ValueError(f"model: tensor {name!r} of {src} has unknown dtype {dtype!r}.")

    def ints(v, k):
        return isinstance(v, list) and len(v) <= k and all(type(d) is int and d >= 0 for d in v)

    if not ints(shape, 8):
        raise ValueError(f"model: tensor {name!r} of {src} has shape {shape!r}; expected up to 8 nonnegative integers.")
    if not ints(offsets, 2) or len(offsets) != 2 or offsets[0] > offsets[1] or offsets[1] > data_size:
        raise ValueError(f"model: tensor {name!r} of {src} has data_offsets {offsets!r} outside the file's "
                         f"{data_size} data bytes (truncated or corrupt).")
    nbytes = math.prod(shape) * _ITEMSIZE[dtype]  # exact integers: a huge shape cannot overflow
    if nbytes != offsets[1] - offsets[0]:
        raise ValueError(f"model: tensor {name!r} of {src} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                         f"its data range holds {offsets[1] - offsets[0]} bytes.")
    return dtype, tuple(shape), (offsets[0], offsets[1])


def read_tensors(path, max_bytes=None) -> tuple[dict[str, np.ndarray], dict]:
    """All tensors of a checked safetensors file as NumPy arrays, and its metadata."""
    st = _require()
    entries, metadata, start = read_header(path, max_bytes)
    bad = sorted(name for name, (dtype, _, _) in entries.items() if dtype not in _NUMPY)
    if bad:
        raise ValueError(f"model: tensors {bad[:5]} of {str(path)!r} have dtypes NumPy cannot hold "
                         f"({sorted({entries[b][0] for b in bad})}); save them as float32.")
    _, fh = open_checked(path, max_bytes, "a .safetensors file")
    with fh:
        data = fh.read()
    if len(data) != start + sum(end - begin for _, _, (begin, end) in entries.values()):
        raise ValueError(f"model: {str(path)!r} changed while it was read.")
    try:
        tensors = st.load(data)
    except Exception as exc:
        raise ValueError(f"model: {str(path)!r} is not a readable safetensors file ({exc}).") from None
    return tensors, metadata


# --- names -> layers -------------------------------------------------------------------------------------
def _natural(prefix: str):
    return tuple(int(d) for d in re.findall(r"\d+", prefix))


def layer_order(prefixes, source: str = "the file") -> list[str]:
    """Order layer names by their numbers; refuse names whose order they do not determine."""
    prefixes = list(prefixes)
    skeletons = sorted({re.sub(r"\d+", "#", p) for p in prefixes})
    keys = [_natural(p) for p in prefixes]
    if len(skeletons) > 1 or len(set(keys)) != len(keys):
        raise ValueError(
            f"model: the layer names of {source} ({sorted(prefixes)}) do not determine the layer order: they must "
            "differ only in their numbers (0, 2, 4 or fc1, fc2, ...). Rename the entries, or give the order with "
            "sparsify.io.safetensors.load(path, activations=..., order=[...]).")
    return [p for _, p in sorted(zip(keys, prefixes))]


def _group(tensors, source):
    groups: dict[str, dict[str, np.ndarray]] = {}
    for name, array in tensors.items():
        prefix, _, leaf = name.rpartition(".")
        if leaf in _BATCHNORM:
            raise ValueError(f"model: {source} holds batch-norm statistics ({name!r}); fold batch norms into the "
                             "preceding layer before saving, or export the model to ONNX (BN is folded on import).")
        if leaf not in _LEAVES:
            raise ValueError(f"model: entry {name!r} of {source} is not a layer parameter; expected names ending "
                             f"in {', '.join('.' + x for x in _LEAVES)}.")
        groups.setdefault(prefix, {})[leaf] = array
    return groups


def _weight(prefix, g, source):
    where = f"layer {prefix!r} of {source}"
    if "weight" in g and ("weight_orig" in g or "weight_mask" in g):
        raise ValueError(f"model: {where} holds both weight and weight_orig/weight_mask; keep one form.")
    if "weight" in g:
        return g["weight"]
    if "weight_orig" not in g or "weight_mask" not in g:
        raise ValueError(f"model: {where} has no weight (expected {prefix}.weight, or {prefix}.weight_orig with "
                         f"{prefix}.weight_mask).")
    orig, mask = g["weight_orig"], g["weight_mask"]
    if mask.shape != orig.shape or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"model: {where}: weight_mask (shape {mask.shape}) must be 0/1 of the shape of "
                         f"weight_orig {orig.shape}.")
    if orig.dtype.kind != "f":
        raise ValueError(f"model: {where}: weight_orig has dtype {orig.dtype}; expected float32 or float64.")
    return orig * mask.astype(orig.dtype)  # what torch.nn.utils.prune computes


def tensors_to_network(tensors, metadata=None, activations=None, order=None, source: str = "the file",
                       input_shape=None) -> Network:
    """Build a network from state_dict-named arrays (see the module docstring)."""
    import sparsify

    metadata = metadata or {}
    groups = _group(tensors, source)
    if not groups:
        raise ValueError(f"model: {source} holds no tensors.")
    stored_acts = None
    if metadata.get("format") == FORMAT_NAME:
        try:
            order = order or json.loads(metadata["layers"])
            stored_acts = json.loads(metadata["activations"])
        except (KeyError, json.JSONDecodeError):
            raise ValueError(f"model: the sparsify metadata of {source} is damaged (layers/activations).") from None
    if order is None:
        order = layer_order(groups, source)
    if sorted(map(str, order)) != sorted(groups):
        raise ValueError(f"model: the layer order {list(order)} does not name the layers of {source}: {sorted(groups)}.")
    if stored_acts is not None:
        if activations is not None and list(activations) != stored_acts:
            raise ValueError(f"activations: {source} stores {stored_acts}, which differs from the given "
                             f"{list(activations)}; omit activations= for files sparsify wrote.")
        activations = stored_acts
    if activations is None:
        raise ValueError(f"activations: {source} holds {len(order)} layers ({', '.join(order)}) but no activation "
                         f"names; pass one per layer, e.g. activations={['relu'] * (len(order) - 1) + ['identity']}.")
    activations = list(activations)
    if len(activations) != len(order):
        raise ValueError(f"activations: {source} has {len(order)} layers ({', '.join(order)}) but "
                         f"{len(activations)} activation names were given: {activations}.")
    layers = []
    for prefix, act in zip(order, activations):
        g = groups[prefix]
        W, b = _weight(prefix, g, source), g.get("bias")
        try:
            if W.ndim == 4:
                if not hasattr(sparsify, "Conv2d"):
                    raise ValueError(f"weight {prefix!r} has 4-D shape {W.shape} (a convolution) and this sparsify "
                                     "has no Conv2d layer")
                layers.append(sparsify.Conv2d(W, b, act))
            else:
                if layers and getattr(layers[-1], "kind", "dense") in ("conv", "conv2d"):
                    layers.append(sparsify.Flatten())
                layers.append(Dense(W, b, act))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"model: layer {prefix!r} of {source}: {exc}") from None
    try:
        return Network(layers) if input_shape is None else Network(layers, input_shape=tuple(input_shape))
    except (TypeError, ValueError) as exc:
        hint = (" (a state_dict does not record the input shape: pass input_shape= to "
                "sparsify.io.safetensors.load)" if "input_shape" in str(exc) else "")
        raise type(exc)(f"model: {source}: {exc}{hint}") from None


def load(path, *, activations=None, order=None, input_shape=None, max_bytes=None) -> Network:
    """Read a network from a safetensors file (see the module docstring).

    ``order`` lists the layer names (the part before ``.weight``) where the names
    themselves do not determine the order; ``input_shape`` gives the per-point
    shape ``(C, H, W)`` of a convolutional network; ``max_bytes`` refuses
    larger files.
    """
    tensors, metadata = read_tensors(path, max_bytes)
    return tensors_to_network(tensors, metadata, activations, order, source=repr(str(path)),
                              input_shape=input_shape)


# --- writing -------------------------------------------------------------------------------------------
def network_to_tensors(net: Network) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (prune convention) and metadata that :func:`save` writes."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a sparsify.Network, got {type(net).__name__}.")
    tensors, names, acts, index = {}, [], [], 0
    for k, layer in enumerate(net.layers):
        kind = getattr(layer, "kind", type(layer).__name__)
        if kind in ("dense", "conv", "conv2d"):
            name = str(index)
            tensors[f"{name}.weight_orig"] = np.ascontiguousarray(layer.weight)
            tensors[f"{name}.weight_mask"] = (layer.weight != 0).astype(np.uint8)
            if layer.bias is not None:
                tensors[f"{name}.bias"] = np.ascontiguousarray(layer.bias)
            names.append(name)
            acts.append(layer.activation)
            index += 1 if layer.activation in ("identity", "linear") else 2
        elif kind in ("flatten", "maxpool", "avgpool", "maxpool2d", "avgpool2d"):
            index += 1
        else:
            raise ValueError(f"net: layer {k} is a {kind} layer, which a flat state_dict cannot describe; "
                             "save the network as .onnx or .npz.")
    metadata = {"format": FORMAT_NAME, "format_version": "1", "layers": json.dumps(names),
                "activations": json.dumps(acts)}
    return tensors, metadata


def save(net: Network, path) -> Path:
    """Write ``net`` in the ``torch.nn.utils.prune`` convention, atomically."""
    return atomic_write(path, writer(net), "path")


def writer(net: Network):
    """``write(fileobj)`` for :func:`sparsify.io.atomic_write_many`: ``net`` as safetensors."""
    st = _require()
    tensors, metadata = network_to_tensors(net)
    data = st.save(tensors, metadata=metadata)
    return lambda fh: fh.write(data)
