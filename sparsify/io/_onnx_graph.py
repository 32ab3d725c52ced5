"""ONNX graph -> sparsify layers: a table of op handlers walked in topological order.

Every tensor of the graph is either a constant (an initializer or a
``Constant`` node: a NumPy array) or a *path*: the tuple of layer specs that
turns the graph input into that tensor, with the per-point shape of the
tensor. A spec is a plain dict (``kind``, arrays, attributes); a linear spec
whose ``activation`` is still None is *open* and absorbs a following bias
``Add``, ``BatchNormalization`` or activation. Specs are never changed in
place: a handler that absorbs something returns a new spec, so two paths that
branch from one tensor share their prefix by identity, which is how an
``Add`` of two paths is recognised as a residual block.

Handlers for convolutions, pooling and residual blocks build their layers
only if the running sparsify has them (``sparsify.Conv2d`` etc.), imported
when the layers are built.
"""
from __future__ import annotations

import numpy as np

from ..activations import LEAKY_SLOPE


class _Refused(ValueError):
    """Raised inside a handler; the walker adds the node's name, op and position."""


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _path(layers, shape):
    return {"layers": tuple(layers), "shape": None if shape is None else tuple(int(d) for d in shape)}


def _is_path(v) -> bool:
    return isinstance(v, dict)


def _need_layer(name: str):
    import sparsify

    if not hasattr(sparsify, name):
        raise _Refused(f"this sparsify has no sparsify.{name} layer yet, so the op cannot be converted")
    return getattr(sparsify, name)


def _split(inputs, n_paths_expected=1):
    """The single path among the inputs (first position) and the constants after it."""
    if not inputs or not _is_path(inputs[0]):
        raise _Refused("its first input must be the network's running tensor (computed from the graph "
                       "input), not a constant")
    for v in inputs[1:]:
        if _is_path(v):
            raise _Refused("only its first input may depend on the graph input; the others must be "
                           "constants (initializers)")
    return inputs[0], inputs[1:]


def _open_linear(path, what: str):
    last = path["layers"][-1] if path["layers"] else None
    if last is None or last["kind"] not in ("dense", "conv") or last["activation"] is not None:
        prev = "the graph input" if last is None else (
            f"a {last['kind']} layer" + (f" with activation {last['activation']!r}" if last.get("activation") else ""))
        raise _Refused(f"{what} must directly follow a Gemm/MatMul/Conv without activation, but follows {prev}")
    return last


def _replace_last(path, spec, shape=None):
    return _path(path["layers"][:-1] + (spec,), path["shape"] if shape is None else shape)


def _append(path, spec, shape):
    return _path(path["layers"] + (spec,), shape)


def _flat_width(path, op):
    shape = path["shape"]
    if shape is not None and len(shape) != 1:
        raise _Refused(f"{op} needs a flat (n_points, features) input, but the tensor has per-point shape "
                       f"{shape}; add a Flatten before it")
    return None if shape is None else shape[0]


def _dense(path, W, b, op):
    W = np.asarray(W, dtype=np.float64)
    n_in = _flat_width(path, op)
    if n_in is not None and W.shape[1] != n_in:
        raise _Refused(f"its weight of shape {W.shape} (n_out, n_in) takes {W.shape[1]} inputs but the "
                       f"incoming tensor has {n_in} features")
    spec = {"kind": "dense", "weight": W, "bias": b, "activation": None}
    return _append(path, spec, (W.shape[0],))


def _vector(c, n, what):
    """A constant broadcast over the batch to one value per output: shapes (), (1,), (n,), (1, n)."""
    c = np.asarray(c, dtype=np.float64)
    if c.size not in (1, n) or any(d != 1 for d in c.shape[:-1]):
        raise _Refused(f"its {what} of shape {c.shape} is not one value per output ({n}); a bias that "
                       "differs between points is not a layer bias")
    return np.broadcast_to(c.reshape(-1), (n,)).copy()


# --- handlers: (inputs, attributes) -> list of output values ------------------------------------------
def _gemm(inputs, at):
    path, consts = _split(inputs)
    if not consts:
        raise _Refused("it has no weight input B")
    if at.get("transA", 0):
        raise _Refused("transA=1 transposes the batch of points; export the model with transA=0")
    B = np.asarray(consts[0], dtype=np.float64)
    if B.ndim != 2:
        raise _Refused(f"its weight B has shape {B.shape}; expected a matrix")
    W = B if at.get("transB", 0) else B.T
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    if alpha != 1.0:
        W = W * alpha
    b = None
    if len(consts) > 1 and consts[1] is not None:
        b = _vector(consts[1], W.shape[0], "bias C")
        if beta != 1.0:
            b = b * beta
    return [_dense(path, W, b, "Gemm")]


def _matmul(inputs, at):
    path, consts = _split(inputs)
    B = np.asarray(consts[0], dtype=np.float64)
    if B.ndim != 2:
        raise _Refused(f"its constant operand has shape {B.shape}; expected a matrix (n_in, n_out)")
    return [_dense(path, B.T, None, "MatMul")]


def _add(inputs, at):
    if len(inputs) == 2 and _is_path(inputs[0]) and _is_path(inputs[1]):
        return [_residual(inputs[0], inputs[1])]
    if not _is_path(inputs[0]):
        inputs = inputs[::-1]
    path, (c,) = _split(inputs)
    last = _open_linear(path, "an Add of a constant (a bias)")
    n = last["weight"].shape[0]
    if last["kind"] == "conv":
        c = np.asarray(c, dtype=np.float64)
        if c.ndim > 3 or (c.ndim == 3 and c.shape[1:] != (1, 1)) or c.ndim == 2:
            raise _Refused(f"its constant of shape {c.shape} is not one value per channel (C, 1, 1)")
        c = c.reshape(c.shape[0], -1)[:, 0] if c.ndim == 3 else c
    c = _vector(c, n, "constant")
    bias = c if last["bias"] is None else last["bias"] + c
    return [_replace_last(path, dict(last, bias=bias))]


def _activation(name):
    def handler(inputs, at):
        path, _ = _split(inputs)
        if name == "leaky_relu":
            alpha = np.float32(at.get("alpha", 0.01))
            if alpha != np.float32(LEAKY_SLOPE):
                raise _Refused(f"its slope alpha={float(alpha):g} differs from sparsify's leaky_relu slope "
                               f"{LEAKY_SLOPE} (sparsify.activations.LEAKY_SLOPE); only that slope is supported")
        last = path["layers"][-1] if path["layers"] else None
        if last is not None and last["kind"] == "residual" and last["activation"] is None:
            return [_replace_last(path, dict(last, activation=name))]
        last = _open_linear(path, f"an activation ({name})")
        return [_replace_last(path, dict(last, activation=name))]
    return handler


def _batchnorm(inputs, at):
    path, consts = _split(inputs)
    if len(consts) != 4 or any(c is None for c in consts):
        raise _Refused("it needs the four constants scale, B, mean and var")
    if at.get("training_mode", 0):
        raise _Refused("training_mode=1 normalises with batch statistics; export the model in eval mode")
    last = _open_linear(path, "a BatchNormalization")
    n = last["weight"].shape[0]
    scale, shift, mean, var = (_vector(c, n, "statistics") for c in consts)
    s = scale / np.sqrt(var + float(at.get("epsilon", 1e-5)))
    # BN(W a + b) = s (W a + b - mean) + B: scale the rows of W, shift the bias (docs/porting.md)
    W = last["weight"] * s.reshape((n,) + (1,) * (last["weight"].ndim - 1))
    b = (0.0 if last["bias"] is None else last["bias"]) - mean
    return [_replace_last(path, dict(last, weight=W, bias=s * b + shift))]


def _passthrough(inputs, at):
    return [inputs[0]]


def _constant(inputs, at):
    import onnx

    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in at:
            v = at[key]
            return [onnx.numpy_helper.to_array(v) if key == "value" else np.asarray(v)]
    raise _Refused(f"it holds none of the supported attributes value, value_float(s), value_int(s): {sorted(at)}")


def _flatten(inputs, at):
    path, _ = _split(inputs)
    if at.get("axis", 1) != 1:
        raise _Refused(f"axis={at.get('axis')} mixes the batch dimension with features; only axis=1 is supported")
    shape = path["shape"]
    if shape is not None and len(shape) == 1:
        return [path]  # (n_points, features) already: nothing to do
    if shape is None:
        raise _Refused("the per-point shape of its input is unknown; give the graph input a fixed shape")
    _need_layer("Flatten")
    return [_append(path, {"kind": "flatten"}, (int(np.prod(shape)),))]


def _reshape(inputs, at):
    path, consts = _split(inputs)
    target = [int(d) for d in np.asarray(consts[0]).reshape(-1)]
    shape = path["shape"]
    width = None if shape is None else int(np.prod(shape))
    ok = (len(target) == 2 and target[0] in (-1, 0) and target[1] in (-1, width) and target != [-1, -1])
    if not ok:
        raise _Refused(f"only a reshape to (n_points, features) is supported, got target shape {target} for "
                       f"an input of per-point shape {shape}")
    return _flatten([path], {"axis": 1})


def _pairs(value, n=2):
    value = [int(v) for v in value]
    return tuple(value) if len(value) == n else tuple(value) * n


def _spatial(at, kernel):
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise _Refused(f"auto_pad={at['auto_pad']!r} is not supported; export with explicit pads")
    pads = list(at.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Refused(f"pads={pads} are not symmetric (top=bottom, left=right)")
    stride = _pairs(at.get("strides", [1, 1]))
    dil = _pairs(at.get("dilations", [1, 1]))
    return stride, (pads[0], pads[1]), dil


def _out_hw(shape, kernel, stride, pad, dil):
    if shape is None or len(shape) != 3:
        raise _Refused(f"it needs an input of per-point shape (C, H, W), got {shape}; give the graph input "
                       "a fixed (N, C, H, W) shape")
    return tuple((shape[1 + i] + 2 * pad[i] - dil[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def _conv(inputs, at):
    path, consts = _split(inputs)
    _need_layer("Conv2d")
    W = np.asarray(consts[0], dtype=np.float64)
    if W.ndim != 4:
        raise _Refused(f"its weight has shape {W.shape}; only 2-D convolutions (c_out, c_in, kh, kw) are supported")
    if at.get("group", 1) != 1:
        raise _Refused(f"group={at['group']} (grouped/depthwise convolution) is not supported")
    stride, pad, dil = _spatial(at, W.shape[2:])
    if path["shape"] is not None and path["shape"][0] != W.shape[1]:
        raise _Refused(f"its weight takes {W.shape[1]} channels but the input has {path['shape'][0]}")
    hw = _out_hw(path["shape"], W.shape[2:], stride, pad, dil)
    b = _vector(consts[1], W.shape[0], "bias") if len(consts) > 1 and consts[1] is not None else None
    spec = {"kind": "conv", "weight": W, "bias": b, "activation": None, "stride": stride, "padding": pad,
            "dilation": dil}
    return [_append(path, spec, (W.shape[0],) + hw)]


def _pool(kind):
    def handler(inputs, at):
        path, _ = _split(inputs)
        _need_layer("MaxPool2d" if kind == "maxpool" else "AvgPool2d")
        if kind == "globalavg":
            shape = path["shape"]
            if shape is None or len(shape) != 3:
                raise _Refused(f"it needs an input of per-point shape (C, H, W), got {shape}")
            kernel, stride, pad = shape[1:], shape[1:], (0, 0)
        else:
            if at.get("ceil_mode", 0):
                raise _Refused("ceil_mode=1 is not supported; export with ceil_mode=0")
            kernel = _pairs(at["kernel_shape"])
            stride, pad, dil = _spatial(at, kernel)
            if dil != (1, 1):
                raise _Refused(f"dilations={dil} in pooling are not supported")
            if kind == "avgpool" and pad != (0, 0) and not at.get("count_include_pad", 0):
                raise _Refused("padding with count_include_pad=0 is not supported (PyTorch's AvgPool2d counts "
                               "the padding)")
        hw = _out_hw(path["shape"], kernel, stride, pad, (1, 1))
        spec = {"kind": "avgpool" if kind == "globalavg" else kind, "kernel": tuple(kernel),
                "stride": tuple(stride), "padding": tuple(pad)}
        return [_append(path, spec, (path["shape"][0],) + hw)]
    return handler


def _residual(pa, pb):
    _need_layer("Residual")
    a, b = pa["layers"], pb["layers"]
    c = 0
    while c < min(len(a), len(b)) and a[c] is b[c]:
        c += 1
    ra, rb = a[c:], b[c:]
    if len(ra) < len(rb):
        ra, rb = rb, ra
    if pa["shape"] != pb["shape"]:
        raise _Refused(f"its two branches have per-point shapes {pa['shape']} and {pb['shape']}")
    shortcut = None
    if rb:
        s = rb[0]
        conv_1x1 = s["kind"] == "conv" and s["weight"].shape[2:] == (1, 1)
        if len(rb) != 1 or not (conv_1x1 or s["kind"] == "dense") or s["activation"] is not None:
            raise _Refused("it adds two branches that a residual block cannot express: the shortcut must be the "
                           "identity, one 1x1 convolution or one linear layer (optionally batch-normalised), "
                           "without activation")
        shortcut = s
    if not ra:
        raise _Refused("it adds a tensor to itself")
    spec = {"kind": "residual", "body": tuple(ra), "shortcut": shortcut, "activation": None}
    return _path(a[:c] + (spec,), pa["shape"])


HANDLERS = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _add,
    "Relu": _activation("relu"),
    "LeakyRelu": _activation("leaky_relu"),
    "Tanh": _activation("tanh"),
    "Sigmoid": _activation("sigmoid"),
    "BatchNormalization": _batchnorm,
    "Identity": _passthrough,
    "Dropout": _passthrough,
    "Constant": _constant,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Conv": _conv,
    "MaxPool": _pool("maxpool"),
    "AveragePool": _pool("avgpool"),
    "GlobalAveragePool": _pool("globalavg"),
}

#: ops whose handler needs a layer class that may not exist yet
_NEEDS = {"Conv": "Conv2d", "MaxPool": "MaxPool2d", "AveragePool": "AvgPool2d", "GlobalAveragePool": "AvgPool2d"}


def supported_ops() -> list[str]:
    """The ONNX op types this sparsify converts (conv/pool ops once their layers exist)."""
    import sparsify

    return sorted(op for op in HANDLERS if op not in _NEEDS or hasattr(sparsify, _NEEDS[op]))
