"""Networks as ONNX files: ``load`` converts a graph, ``save`` writes one.

Import covers what ``torch.onnx.export`` and common converters emit for
these networks: Gemm (transB, alpha, beta), MatMul + Add, Relu, LeakyRelu
(sparsify's slope only), Tanh, Sigmoid, Flatten / Reshape to
(n_points, features), BatchNormalization folded into the preceding linear
layer, Identity and Dropout dropped, Constant nodes and initializers, any
batch size; and, once sparsify has the layers, Conv, MaxPool, AveragePool,
GlobalAveragePool and the Add of a residual branch. The op handlers live in
:mod:`sparsify.io._onnx_graph`. Anything else is refused naming the node, its
op type and its position.

Export writes one Gemm (``transB=1``, so the initializer is the
``(n_out, n_in)`` weight itself, zeros included) and one activation node per
dense layer, opset 17, with a symbolic batch dimension; onnxruntime's output
equals :meth:`Network.forward`.

``onnx`` (and ``onnxruntime`` for running the result) come with
``pip install "sparsify[onnx]"``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..activations import LEAKY_SLOPE
from ..network import Dense, Network
from ._atomic import atomic_write
from .safetensors import open_checked
from ._onnx_graph import _NEEDS, HANDLERS, _attrs, _path, _Refused, supported_ops

OPSET = 17
IR_VERSION = 8
_DTYPES = {1: np.float32, 11: np.float64}  # TensorProto.FLOAT, DOUBLE
_UNUSABLE = "unusable"


def _require():
    try:
        import onnx
    except ImportError:
        raise ImportError('reading or writing .onnx files needs the onnx package: pip install "sparsify[onnx]"') from None
    return onnx


# --- reading -------------------------------------------------------------------------------------------
def _check_external(model, folder: Path, source: str) -> None:
    """Refuse external-data tensors whose file lies outside the model's folder (or does not exist)."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    root = folder.resolve()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        loc = info.location or ""
        target = (root / loc).resolve()
        if not loc or os.path.isabs(loc) or (root != target and root not in target.parents):
            raise ValueError(f"model: tensor {tensor.name!r} of {source} keeps its data in {loc!r}, outside the "
                             f"model's folder {str(root)!r}; sparsify reads external data only from that folder.")
        if not target.is_file():
            raise ValueError(f"model: tensor {tensor.name!r} of {source} keeps its data in {loc!r}, which does "
                             "not exist beside the model.")
        size = target.stat().st_size
        offset, length = int(info.offset or 0), info.length
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + int(length) > size)):
            raise ValueError(f"model: tensor {tensor.name!r} of {source} declares bytes {offset}..{offset + (length or 0)} "
                             f"of {loc!r}, which holds {size} bytes (truncated or corrupt).")


def read_model(path, max_bytes=None):
    """Parse and check an ONNX file (external data only from its own folder); returns the ModelProto.

    ``max_bytes`` refuses a model file larger than that many bytes before it is parsed."""
    onnx = _require()
    path, fh = open_checked(path, max_bytes, "an .onnx file")
    source = repr(str(path))
    try:
        with fh:
            model = onnx.load_model(fh, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ValueError(f"model: {source} is not a readable ONNX model (truncated or corrupt? {exc}).") from None
    if not model.HasField("graph") or not model.opset_import:
        raise ValueError(f"model: {source} is not an ONNX model (no graph or opset; empty, truncated or another "
                         "kind of file).")
    _check_external(model, path.parent, source)
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ValueError(f"model: {source} is not a valid ONNX model ({type(exc).__name__}: {exc}).") from None
    return model


def _topological(nodes, known: set) -> list:
    """Nodes in an order where each runs after the nodes producing its inputs (stable otherwise)."""
    done, order, pending = set(known), [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(i == "" or i in done for i in n.input)]
        ready = [n for n in pending if all(i == "" or i in done for i in n.input)]
        if not ready:
            n = rest[0]
            missing = [i for i in n.input if i and i not in done]
            raise ValueError(f"model: node {n.name!r} (op {n.op_type}) reads {missing}, which no node, input or "
                             "initializer produces (or the graph has a cycle).")
        for n in ready:
            order.append(n)
            done.update(o for o in n.output if o)
        pending = rest
    return order


def _graph_input(graph, source):
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ValueError(f"model: {source} has {len(inputs)} inputs and {len(graph.output)} outputs; sparsify "
                         "networks have exactly one of each.")
    tt = inputs[0].type.tensor_type
    if tt.elem_type not in _DTYPES:
        raise ValueError(f"model: the input {inputs[0].name!r} of {source} has element type {tt.elem_type}; "
                         "only float32 (1) and float64 (11) are supported.")
    dims = list(tt.shape.dim) if tt.HasField("shape") else None
    if dims is not None and len(dims) < 2:
        raise ValueError(f"model: the input {inputs[0].name!r} of {source} has rank {len(dims)}; expected "
                         "(batch, features) or (batch, C, H, W).")
    shape = None
    if dims is not None and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:]):
        shape = tuple(d.dim_value for d in dims[1:])
    return inputs[0].name, np.dtype(_DTYPES[tt.elem_type]), shape


def model_to_specs(model, source: str = "the ONNX model") -> tuple[tuple, np.dtype, tuple | None]:
    """The layer specs (plain dicts, see :mod:`sparsify.io._onnx_graph`) computing the graph's
    output from its input, the network's dtype and the per-point input shape (None if symbolic)."""
    import sparsify
    from onnx import numpy_helper

    graph = model.graph
    name, dtype, shape = _graph_input(graph, source)
    values = {name: _path((), shape)}
    for t in graph.initializer:
        try:
            values[t.name] = numpy_helper.to_array(t)
        except Exception as exc:
            raise ValueError(f"model: initializer {t.name!r} of {source} is unreadable ({exc}).") from None
    order = _topological(graph.node, set(values))
    for pos, node in enumerate(order):
        where = f"node {pos} of {len(order)} ({node.name or '(unnamed)'!r}, op {node.op_type})"
        handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if handler is None or (node.op_type in _NEEDS and not hasattr(sparsify, _NEEDS[node.op_type])):
            raise ValueError(f"model: {where} of {source}: op {node.domain + '.' if node.domain else ''}"
                             f"{node.op_type} is not supported; supported ops: {', '.join(supported_ops())}.")
        ins = [values[i] if i else None for i in node.input]
        bad = [i for i, v in zip(node.input, ins) if isinstance(v, str)]
        if bad:
            raise ValueError(f"model: {where} of {source} reads {bad}, a training-only or auxiliary output "
                             "that sparsify does not compute.")
        try:
            outs = handler(ins, _attrs(node))
        except _Refused as exc:
            raise ValueError(f"model: {where} of {source}: {exc}; supported ops: {', '.join(supported_ops())}.") from None
        for k, out in enumerate(node.output):
            if out:
                values[out] = outs[k] if k < len(outs) else _UNUSABLE
    out = values[graph.output[0].name]
    if not isinstance(out, dict) or not out["layers"]:
        raise ValueError(f"model: the output of {source} is not computed by any layer from the input.")
    return out["layers"], dtype, shape


def model_to_network(model, source: str = "the ONNX model") -> Network:
    """Convert a checked ``onnx.ModelProto`` into a :class:`Network` (see the module docstring)."""
    import inspect

    specs, dtype, shape = model_to_specs(model, source)
    try:
        layers = [_build(spec, dtype) for spec in specs]
        if shape is not None and "input_shape" in inspect.signature(Network).parameters:
            return Network(layers, input_shape=shape)
        return Network(layers)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"model: {source}: {exc}") from None


def _build(spec, dtype):
    """A sparsify layer from a converter spec."""
    import sparsify

    def cast(a):
        return None if a is None else np.asarray(a, dtype=np.float64).astype(dtype)

    kind, act = spec["kind"], spec.get("activation") or "identity"
    if kind == "dense":
        return Dense(cast(spec["weight"]), cast(spec["bias"]), act)
    if kind == "conv":
        return sparsify.Conv2d(cast(spec["weight"]), cast(spec["bias"]), act, stride=spec["stride"],
                               padding=spec["padding"], dilation=spec["dilation"])
    if kind in ("maxpool", "avgpool"):
        cls = sparsify.MaxPool2d if kind == "maxpool" else sparsify.AvgPool2d
        return cls(spec["kernel"], spec["stride"], spec["padding"])
    if kind == "flatten":
        return sparsify.Flatten()
    if kind == "residual":
        body = [_build(s, dtype) for s in spec["body"]]
        shortcut = None if spec["shortcut"] is None else _build(spec["shortcut"], dtype)
        return sparsify.Residual(body, act, shortcut=shortcut)
    raise AssertionError(kind)  # pragma: no cover  (specs come from _onnx_graph only)


def load(path, *, activations=None, max_bytes=None) -> Network:
    """Read a network from an ONNX file. The graph names its activations, so
    ``activations`` is only checked against them."""
    net = model_to_network(read_model(path, max_bytes), source=repr(str(path)))
    if activations is not None and list(activations) != net.activations:
        raise ValueError(f"activations: {str(path)!r} computes {net.activations}, which differs from the given "
                         f"{list(activations)}; omit activations= for ONNX files.")
    return net


# --- writing -------------------------------------------------------------------------------------------
_KIND_ALIASES = {"conv2d": "conv", "maxpool2d": "maxpool", "avgpool2d": "avgpool"}
_ACT_OPS = {"relu": "Relu", "leaky_relu": "LeakyRelu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def _get(layer, *names):
    for n in names:
        if hasattr(layer, n):
            return getattr(layer, n)
    raise TypeError(f"net: a {type(layer).__name__} layer has none of the attributes {names} the ONNX writer needs.")


def _pair(v):
    return [int(x) for x in v] if np.ndim(v) else [int(v), int(v)]


def _emit(layers, x, out, prefix):
    """Append the nodes of ``layers`` reading tensor ``x`` to ``out``; returns the last tensor's name."""
    from onnx import helper, numpy_helper

    nodes, inits = out

    def const(name, a):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), f"{name}"))
        return name

    for k, layer in enumerate(layers):
        p = f"{prefix}layer{k}"
        kind = getattr(layer, "kind", type(layer).__name__)
        kind = _KIND_ALIASES.get(kind, kind)
        y = f"{p}.out"
        if kind in ("dense", "conv"):
            ins = [x, const(f"{p}.weight", layer.weight)]
            if layer.bias is not None:
                ins.append(const(f"{p}.bias", layer.bias))
        if kind == "dense":
            nodes.append(helper.make_node("Gemm", ins, [y], name=f"{p}/Gemm", transB=1))
        elif kind == "conv":
            pad = _pair(_get(layer, "padding"))
            nodes.append(helper.make_node("Conv", ins, [y], name=f"{p}/Conv",
                                          kernel_shape=list(layer.weight.shape[2:]),
                                          strides=_pair(_get(layer, "stride")), pads=pad + pad,
                                          dilations=_pair(_get(layer, "dilation"))))
        elif kind in ("maxpool", "avgpool"):
            pad = _pair(_get(layer, "padding"))
            extra = {"count_include_pad": 1} if kind == "avgpool" else {}
            op = "MaxPool" if kind == "maxpool" else "AveragePool"
            nodes.append(helper.make_node(op, [x], [y], name=f"{p}/{op}",
                                          kernel_shape=_pair(_get(layer, "kernel_size", "kernel")),
                                          strides=_pair(_get(layer, "stride")), pads=pad + pad, **extra))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [y], name=f"{p}/Flatten", axis=1))
        elif kind == "residual":
            body = _emit(_get(layer, "layers", "body"), x, out, f"{p}.body.")
            shortcut = _get(layer, "shortcut")
            skip = x if shortcut is None else _emit([shortcut], x, out, f"{p}.shortcut.")
            nodes.append(helper.make_node("Add", [body, skip], [y], name=f"{p}/Add"))
        else:
            raise TypeError(f"net: layer {p} of kind {kind!r} has no ONNX form in this sparsify.")
        act = getattr(layer, "activation", "identity")
        if act in _ACT_OPS:
            extra = {"alpha": LEAKY_SLOPE} if act == "leaky_relu" else {}
            nodes.append(helper.make_node(_ACT_OPS[act], [y], [f"{y}.{act}"], name=f"{p}/{_ACT_OPS[act]}", **extra))
            y = f"{y}.{act}"
        elif act not in ("identity", "linear"):
            raise ValueError(f"net: activation {act!r} of layer {p} has no ONNX form.")
        x = y
    return x


def network_to_model(net: Network):
    """The ``onnx.ModelProto`` of ``net``: input ``input`` (batch, ...), output ``output``."""
    onnx = _require()
    from onnx import helper

    if not isinstance(net, Network):
        raise TypeError(f"net: expected a sparsify.Network, got {type(net).__name__}.")
    elem = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}[np.dtype(net.dtype)]
    in_shape = tuple(getattr(net, "input_shape", None) or (net.n_in,))
    nodes, inits = [], []
    last = _emit(net.layers, "input", (nodes, inits), "")
    nodes[-1].output[0] = "output"
    del last
    out_shape = net.forward(np.zeros((1, *in_shape), dtype=net.dtype)).shape[1:]
    graph = helper.make_graph(
        nodes, "sparsify_network",
        [helper.make_tensor_value_info("input", elem, ["batch", *in_shape])],
        [helper.make_tensor_value_info("output", elem, ["batch", *out_shape])],
        inits,
    )
    import sparsify

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sparsify",
                              producer_version=sparsify.__version__)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def save(net: Network, path) -> Path:
    """Write ``net`` to ``path`` as an ONNX model, atomically."""
    return atomic_write(path, writer(net), "path")


def writer(net: Network):
    """``write(fileobj)`` for :func:`sparsify.io.atomic_write_many`: ``net`` as an ONNX model."""
    model = network_to_model(net)
    if model.ByteSize() >= 2**31:
        raise ValueError(f"net: the ONNX model would take {model.ByteSize()} bytes, over protobuf's 2 GiB limit.")
    data = model.SerializeToString()
    return lambda fh: fh.write(data)
