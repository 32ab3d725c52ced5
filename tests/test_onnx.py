"""ONNX files: graphs built with ``onnx.helper`` (as exporters write them) convert to networks
whose forward pass equals onnxruntime's; exported networks run in onnxruntime with the same
output and the exact kept weights; hostile or unsupported files are refused clearly."""
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings

import sparsify as sp
from sparsify.testing import strategies as sst

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-7}
ELEM = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}
needs_conv = pytest.mark.skipif(not hasattr(sp, "Conv2d"), reason="sparsify has no Conv2d layer yet")


def _run_ort(model_or_path, X):
    data = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(str(data) if isinstance(data, os.PathLike) else data,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})[0]


def _model(nodes, inits, n_in, n_out, opset=17, dtype=np.float32, in_shape=None):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", ELEM[dtype], in_shape or ["N", n_in])],
        [helper.make_tensor_value_info("y", ELEM[dtype], ["N", n_out])],
        [numpy_helper.from_array(np.asarray(a, dtype=dtype), name) for name, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model)
    return model


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _compare(model, tmp_path, dtype=np.float32, n_in=None, n_points=9):
    net = sp.load(_save(model, tmp_path))
    X = np.random.default_rng(3).standard_normal((n_points, n_in or net.n_in)).astype(dtype)
    expected = _run_ort(model, X)
    got = net.forward(X)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)
    return net


def _mlp_nodes(rng, widths, acts, style):
    """Nodes of an MLP as exporters write it: Flatten first, Gemm or MatMul+Add, activations, Dropout."""
    nodes, inits, x = [helper.make_node("Flatten", ["x"], ["f"], name="flat", axis=1)], {}, "f"
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        W, bias = rng.standard_normal((b, a)), rng.standard_normal(b)
        if style == "gemm":
            inits[f"W{k}"], inits[f"b{k}"] = W, bias
            nodes.append(helper.make_node("Gemm", [x, f"W{k}", f"b{k}"], [f"z{k}"], name=f"fc{k}", transB=1))
        else:
            inits[f"W{k}"], inits[f"b{k}"] = W.T, bias
            nodes.append(helper.make_node("MatMul", [x, f"W{k}"], [f"m{k}"], name=f"mm{k}"))
            nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [f"z{k}"], name=f"add{k}"))
        x = f"z{k}"
        if acts[k] != "identity":
            op = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "leaky_relu": "LeakyRelu"}[acts[k]]
            nodes.append(helper.make_node(op, [x], [f"a{k}"], name=f"act{k}"))
            x = f"a{k}"
        nodes.append(helper.make_node("Dropout", [x], [f"d{k}"], name=f"drop{k}"))
        x = f"d{k}"
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    return nodes, inits


@pytest.mark.parametrize("opset", range(13, 22))
@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_mlps_at_every_opset_match_onnxruntime(tmp_path, opset, style):
    rng = np.random.default_rng(opset)
    acts = ["relu", "tanh", "leaky_relu", "sigmoid"]
    nodes, inits = _mlp_nodes(rng, [5, 7, 6, 4, 3], acts, style)
    net = _compare(_model(nodes, inits, 5, 3, opset=opset), tmp_path)
    assert net.activations == acts
    assert [layer.weight.shape for layer in net.layers] == [(7, 5), (6, 7), (4, 6), (3, 4)]
    # weights of a plain Gemm/MatMul are taken bit for bit
    expected = inits["W0"] if style == "gemm" else inits["W0"].T
    assert net.layers[0].weight.tobytes() == np.asarray(expected, np.float32).tobytes()


def test_float64_graph_gives_a_float64_network(tmp_path):
    nodes, inits = _mlp_nodes(np.random.default_rng(0), [4, 5, 2], ["relu", "identity"], "gemm")
    net = _compare(_model(nodes, inits, 4, 2, dtype=np.float64), tmp_path, dtype=np.float64)
    assert net.dtype == np.float64


@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (-1.5, 0.25)])
@pytest.mark.parametrize("c_shape", [(4,), (1, 4), (1,), None])
def test_gemm_attributes(tmp_path, transB, alpha, beta, c_shape):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 3))
    inits = {"B": W if transB else W.T}
    ins = ["x", "B"]
    if c_shape is not None:
        inits["C"] = rng.standard_normal(c_shape)
        ins.append("C")
    node = helper.make_node("Gemm", ins, ["y"], name="g", transB=transB, alpha=alpha, beta=beta)
    net = _compare(_model([node], inits, 3, 4), tmp_path)
    assert net.layers[0].weight.shape == (4, 3)
    assert (net.layers[0].bias is None) == (c_shape is None)


def test_add_with_the_constant_first_and_a_constant_node(tmp_path):
    rng = np.random.default_rng(2)
    const = helper.make_node("Constant", [], ["Wc"], value=numpy_helper.from_array(
        rng.standard_normal((3, 4)).astype(np.float32)))
    nodes = [const, helper.make_node("MatMul", ["x", "Wc"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])]
    _compare(_model(nodes, {"b": rng.standard_normal(4)}, 3, 4), tmp_path)


@pytest.mark.parametrize("with_bias", [True, False])
def test_batchnorm_is_folded_into_the_preceding_linear_layer(tmp_path, with_bias):
    rng = np.random.default_rng(4)
    inits = {"W": rng.standard_normal((6, 5)), "scale": rng.uniform(0.5, 2, 6), "shift": rng.standard_normal(6),
             "mean": rng.standard_normal(6), "var": rng.uniform(0.1, 3, 6), "W2": rng.standard_normal((2, 6))}
    ins = ["x", "W"]
    if with_bias:
        inits["b"] = rng.standard_normal(6)
        ins.append("b")
    nodes = [helper.make_node("Gemm", ins, ["z"], transB=1),
             helper.make_node("BatchNormalization", ["z", "scale", "shift", "mean", "var"], ["n"], epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["a"]), helper.make_node("Gemm", ["a", "W2"], ["y"], transB=1)]
    net = _compare(_model(nodes, inits, 5, 2), tmp_path)
    assert len(net) == 2 and net.activations == ["relu", "identity"]
    # the fold by hand: rows scaled by scale / sqrt(var + eps), bias shifted
    s = inits["scale"] / np.sqrt(inits["var"] + 1e-3)
    b = inits.get("b", 0.0)
    np.testing.assert_allclose(net.layers[0].weight, (inits["W"] * s[:, None]).astype(np.float32), rtol=1e-6)
    np.testing.assert_allclose(net.layers[0].bias, s * (b - inits["mean"]) + inits["shift"], rtol=1e-5)


# --- export -----------------------------------------------------------------------------------------
def _pruned(dtype):
    net = sp.random_mlp([6, 12, 8, 3], "relu", rng=5, dtype=dtype)
    net = sp.Network([net.layers[0], sp.Dense(net.layers[1].weight, net.layers[1].bias, "leaky_relu"),
                      sp.Dense(net.layers[2].weight, None, "sigmoid")])
    X = np.random.default_rng(6).standard_normal((40, 6)).astype(dtype)
    return sp.prune(net, X, keep=0.3, method="hybrid", rng=0).network


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_export_of_a_pruned_network_runs_in_onnxruntime_and_round_trips(tmp_path, dtype):
    net = _pruned(dtype)
    path = sp.save(net, tmp_path / "p.onnx")
    assert os.listdir(tmp_path) == ["p.onnx"]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    for n_points in (1, 17):  # the batch dimension is symbolic
        X = np.random.default_rng(n_points).standard_normal((n_points, 6)).astype(dtype)
        out = _run_ort(path, X)
        assert out.dtype == dtype and out.shape == (n_points, 3)
        np.testing.assert_allclose(out, net.forward(X), rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith(".weight")}
    assert len(weights) == len(net)
    for k, layer in enumerate(net.layers):
        stored = weights[f"layer{k}.weight"]
        assert stored.tobytes() == layer.weight.tobytes()  # pruned weights are exact zeros
        assert np.count_nonzero(stored) == np.count_nonzero(layer.weight) < layer.weight.size
    again = sp.load(path)
    assert again.activations == net.activations
    for a, b in zip(again.layers, net.layers):
        assert a.weight.tobytes() == b.weight.tobytes()
        assert (a.bias is None) == (b.bias is None) and (a.bias is None or a.bias.tobytes() == b.bias.tobytes())


@settings(max_examples=8)
@given(sst.networks(activations=("relu", "tanh", "leaky_relu", "sigmoid", "identity"), dtypes=("float32",)))
def test_export_import_round_trip_property(tmp_path_factory, net):
    path = sp.save(net, tmp_path_factory.mktemp("h") / "n.onnx")
    again = sp.load(path)
    assert again.activations == [("identity" if a == "linear" else a) for a in net.activations]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(again.weights, net.weights))


# --- refusals ---------------------------------------------------------------------------------------
def _error(path, exc=ValueError, **kw):
    with pytest.raises(exc) as info:
        sp.load(path, **kw)
    return str(info.value)


def test_unsupported_op_is_named_with_its_position_and_the_supported_ops(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z"], name="fc", transB=1),
             helper.make_node("Softmax", ["z"], ["y"], name="probs")]
    msg = _error(_save(_model(nodes, {"W": np.ones((2, 3))}, 3, 2), tmp_path))
    assert "'probs'" in msg and "Softmax" in msg and "node 1 of 2" in msg
    assert "supported ops:" in msg and "Gemm" in msg and "BatchNormalization" in msg


@pytest.mark.parametrize("case,needle", [
    ("leaky", "slope"), ("transA", "transA"), ("bn_after_relu", "BatchNormalization"),
    ("relu_first", "graph input"), ("batch_bias", "one value per output"), ("two_relu", "activation"),
])
def test_graphs_sparsify_cannot_express_are_refused(tmp_path, case, needle):
    W = {"W": np.ones((2, 3))}
    gemm = helper.make_node("Gemm", ["x", "W"], ["z"], name="fc", transB=1)
    bn = {k: np.ones(2) for k in ("s", "b", "m", "v")}
    nodes, inits = {
        "leaky": ([gemm, helper.make_node("LeakyRelu", ["z"], ["y"], alpha=0.2)], W),
        "transA": ([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1)], {"W": np.ones((3, 2))}),
        "bn_after_relu": ([gemm, helper.make_node("Relu", ["z"], ["r"]),
                           helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])], {**W, **bn}),
        "relu_first": ([helper.make_node("Relu", ["x"], ["y"])], {}),
        "batch_bias": ([helper.make_node("Gemm", ["x", "W", "C"], ["y"], transB=1)], {**W, "C": np.ones((4, 2))}),
        "two_relu": ([gemm, helper.make_node("Relu", ["z"], ["r"]), helper.make_node("Tanh", ["r"], ["y"])], W),
    }[case]
    msg = _error(_save(_model(nodes, inits, 3, 2), tmp_path))
    assert needle in msg and "node" in msg


def test_external_data_outside_the_model_folder_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(6, np.float32).tobytes())
    inner = tmp_path / "models"
    inner.mkdir()
    model = _model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": np.ones((2, 3))}, 3, 2)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "24")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = inner / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert "outside the model's folder" in _error(path)
    w.external_data[0].value = str(secret)  # absolute path
    path.write_bytes(model.SerializeToString())
    assert "outside the model's folder" in _error(path)
    (inner / "w.bin").write_bytes(b"\0" * 8)  # inside, but shorter than declared
    w.external_data[0].value = "w.bin"
    path.write_bytes(model.SerializeToString())
    assert "truncated" in _error(path)


def test_corrupt_truncated_empty_and_missing_files(tmp_path):
    nodes, inits = _mlp_nodes(np.random.default_rng(0), [4, 5, 2], ["relu", "identity"], "gemm")
    data = _model(nodes, inits, 4, 2).SerializeToString()
    for name, blob in (("trunc.onnx", data[: len(data) // 2]), ("empty.onnx", b""),
                       ("junk.onnx", b"\xff\x00garbage" * 10), ("text.onnx", b"not a model")):
        (tmp_path / name).write_bytes(blob)
        assert "ONNX model" in _error(tmp_path / name), name
    assert "does not exist" in _error(tmp_path / "missing.onnx")


def test_activations_given_must_match_the_graph(tmp_path):
    path = sp.save(sp.random_mlp([3, 4, 2], rng=0), tmp_path / "m.onnx")
    assert sp.load(path, activations=["relu", "identity"]).activations == ["relu", "identity"]
    assert "differs" in _error(path, activations=["tanh", "identity"])


def test_missing_onnx_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"sparsify\[onnx\]"):
        sp.save(sp.random_mlp([3, 2], rng=0), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_unknown_suffix_lists_the_supported_ones_and_writes_nothing(tmp_path):
    for call in (lambda: sp.save(sp.random_mlp([3, 2], rng=0), tmp_path / "m.pt"), lambda: sp.load(tmp_path / "m.h5")):
        with pytest.raises(ValueError, match=r"\.npz, \.onnx, \.safetensors"):
            call()
    assert os.listdir(tmp_path) == []


# --- convolutional graphs (need sparsify's conv layers) -----------------------------------------------
def _conv_model(rng, residual=False, pool="MaxPool"):
    inits = {"K1": rng.standard_normal((4, 2, 3, 3)), "c1": rng.standard_normal(4),
             "s": rng.uniform(0.5, 2, 4), "b": rng.standard_normal(4), "m": rng.standard_normal(4),
             "v": rng.uniform(0.5, 2, 4), "K2": rng.standard_normal((4, 4, 3, 3)), "W": rng.standard_normal((3, 16))}
    nodes = [helper.make_node("Conv", ["x", "K1", "c1"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"])]
    x = "r"
    if residual:
        nodes += [helper.make_node("Conv", ["r", "K2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Add", ["c2", "r"], ["sum"]), helper.make_node("Relu", ["sum"], ["rr"])]
        x = "rr"
    nodes += [helper.make_node(pool, [x], ["p"], **({} if pool == "GlobalAveragePool" else
                                                     {"kernel_shape": [2, 2], "strides": [2, 2]}))]
    if pool == "GlobalAveragePool":
        inits["W"] = inits["W"][:, :4]
    nodes += [helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
    return _model(nodes, inits, None, 3, in_shape=["N", 2, 4, 4])


@needs_conv
@pytest.mark.parametrize("pool", ["MaxPool", "AveragePool", "GlobalAveragePool"])
@pytest.mark.parametrize("residual", [False, True])
def test_conv_graphs_match_onnxruntime(tmp_path, pool, residual):
    model = _conv_model(np.random.default_rng(7), residual, pool)
    net = sp.load(_save(model, tmp_path))
    X = np.random.default_rng(8).standard_normal((5, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(net.forward(X), _run_ort(model, X), rtol=1e-5, atol=1e-6)
    path = sp.save(net, tmp_path / "again.onnx")
    np.testing.assert_allclose(_run_ort(path, X), net.forward(X), rtol=1e-5, atol=1e-6)
    again = sp.load(path)
    assert [type(a) for a in again.layers] == [type(b) for b in net.layers]
    np.testing.assert_allclose(again.forward(X), net.forward(X), rtol=1e-6, atol=1e-7)


def test_conv_without_the_layer_is_refused_clearly(tmp_path):
    if hasattr(sp, "Conv2d"):
        pytest.skip("sparsify has Conv2d")
    msg = _error(_save(_conv_model(np.random.default_rng(7)), tmp_path))
    assert "Conv" in msg and "node 0" in msg and "not supported" in msg


# --- the converter's layer specs for conv graphs, checked with a NumPy evaluator ----------------------
def _conv_ref(X, W, b, stride, pad, dil):
    Xp = np.pad(X, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    kh, kw = W.shape[2:]
    H = (Xp.shape[2] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    Wd = (Xp.shape[3] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((X.shape[0], W.shape[0], H, Wd))
    for i in range(H):
        for j in range(Wd):
            patch = Xp[:, :, i * stride[0]: i * stride[0] + dil[0] * (kh - 1) + 1: dil[0],
                       j * stride[1]: j * stride[1] + dil[1] * (kw - 1) + 1: dil[1]]
            out[:, :, i, j] = np.einsum("ncuv,ocuv->no", patch, W)
    return out + (0 if b is None else b[None, :, None, None])


def _pool_ref(X, kind, kernel, stride, pad):
    fill = -np.inf if kind == "maxpool" else 0.0
    Xp = np.pad(X, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])), constant_values=fill)
    H = (Xp.shape[2] - kernel[0]) // stride[0] + 1
    Wd = (Xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.empty(X.shape[:2] + (H, Wd))
    for i in range(H):
        for j in range(Wd):
            win = Xp[:, :, i * stride[0]: i * stride[0] + kernel[0], j * stride[1]: j * stride[1] + kernel[1]]
            out[:, :, i, j] = win.max(axis=(2, 3)) if kind == "maxpool" else win.mean(axis=(2, 3))
    return out


def _eval_specs(specs, X):
    from sparsify.activations import get_activation

    for s in specs:
        act = get_activation(s.get("activation") or "identity")
        if s["kind"] == "dense":
            X = act(X @ s["weight"].T + (0 if s["bias"] is None else s["bias"]))
        elif s["kind"] == "conv":
            X = act(_conv_ref(X, s["weight"], s["bias"], s["stride"], s["padding"], s["dilation"]))
        elif s["kind"] in ("maxpool", "avgpool"):
            X = _pool_ref(X, s["kind"], s["kernel"], s["stride"], s["padding"])
        elif s["kind"] == "flatten":
            X = X.reshape(len(X), -1)
        else:
            skip = X if s["shortcut"] is None else _eval_specs([s["shortcut"]], X)
            X = act(_eval_specs(s["body"], X) + skip)
    return X


def _projection_model(rng):
    """A downsampling residual block: body conv(stride 2)-BN-ReLU-conv, shortcut 1x1 conv(stride 2)-BN."""
    bn = {f"{p}{k}": v for p in ("n1", "n2", "ns") for k, v in (("s", rng.uniform(0.5, 2, 4)), (
        "b", rng.standard_normal(4)), ("m", rng.standard_normal(4)), ("v", rng.uniform(0.5, 2, 4)))}
    inits = {"K1": rng.standard_normal((4, 2, 3, 3)), "K2": rng.standard_normal((4, 4, 3, 3)),
             "Ks": rng.standard_normal((4, 2, 1, 1)), "W": rng.standard_normal((3, 16)), "bw": rng.standard_normal(3),
             **bn}

    def norm(x, p, y):
        return helper.make_node("BatchNormalization", [x, f"{p}s", f"{p}b", f"{p}m", f"{p}v"], [y])
    nodes = [helper.make_node("Conv", ["x", "K1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
             norm("c1", "n1", "b1"), helper.make_node("Relu", ["b1"], ["r1"]),
             helper.make_node("Conv", ["r1", "K2"], ["c2"], kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
             norm("c2", "n2", "b2"),
             helper.make_node("Conv", ["x", "Ks"], ["cs"], kernel_shape=[1, 1], strides=[2, 2]), norm("cs", "ns", "bs"),
             helper.make_node("Add", ["bs", "b2"], ["sum"]), helper.make_node("Relu", ["sum"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "bw"], ["y"], transB=1)]
    const = helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([-1, 16], np.int64)))
    return _model([const] + nodes, inits, None, 3, in_shape=["N", 2, 4, 4])


@pytest.mark.parametrize("case", ["MaxPool", "AveragePool", "GlobalAveragePool", "residual", "projection"])
def test_conv_graph_specs_compute_what_onnxruntime_computes(tmp_path, monkeypatch, case):
    from sparsify.io.onnx import model_to_specs, read_model

    for name in ("Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Residual"):
        monkeypatch.setattr(sp, name, object, raising=False)  # the handlers only look the classes up
    rng = np.random.default_rng(11)
    model = _projection_model(rng) if case == "projection" else _conv_model(rng, case == "residual",
                                                                            "MaxPool" if case == "residual" else case)
    specs, dtype, shape = model_to_specs(read_model(_save(model, tmp_path)))
    assert shape == (2, 4, 4)
    assert dtype == np.float32
    kinds = [s["kind"] for s in specs]
    if case == "projection":
        assert kinds == ["residual", "flatten", "dense"] and specs[0]["shortcut"]["kind"] == "conv"
        assert specs[0]["activation"] == "relu" and [s["kind"] for s in specs[0]["body"]] == ["conv", "conv"]
    elif case == "residual":
        assert kinds == ["conv", "residual", "maxpool", "flatten", "dense"] and specs[1]["shortcut"] is None
    X = np.random.default_rng(12).standard_normal((5, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_eval_specs(specs, X.astype(np.float64)), _run_ort(model, X), rtol=1e-4, atol=1e-5)


def test_branches_a_residual_block_cannot_express_are_refused(tmp_path, monkeypatch):
    for name in ("Conv2d", "Residual"):
        monkeypatch.setattr(sp, name, object, raising=False)
    rng = np.random.default_rng(0)
    inits = {"K1": rng.standard_normal((2, 2, 3, 3)), "K2": rng.standard_normal((2, 2, 3, 3)), "W": np.ones((1, 32))}
    nodes = [helper.make_node("Conv", ["x", "K1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "K2"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["s"], name="join"),
             helper.make_node("Flatten", ["s"], ["f"]), helper.make_node("Gemm", ["f", "W"], ["y"], transB=1)]
    msg = _error(_save(_model(nodes, inits, None, 1, in_shape=["N", 2, 4, 4]), tmp_path))
    assert "'join'" in msg and "1x1 convolution" in msg


def test_max_bytes_refuses_larger_files(tmp_path):
    path = sp.save(sp.random_mlp([3, 4, 2], rng=0), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="max_bytes"):
        sp.load(path, max_bytes=path.stat().st_size - 1)
    assert len(sp.load(path, max_bytes=path.stat().st_size)) == 2


def test_activations_as_one_string_is_refused_for_every_format(tmp_path):
    net = sp.random_mlp([3, 2], rng=0)
    for name in ("m.onnx", "m.safetensors"):
        path = sp.save(net, tmp_path / name)
        with pytest.raises(TypeError, match="the string 'identity'"):
            sp.load(path, activations="identity")
        assert sp.load(path, activations=["identity"]).activations == ["identity"]
