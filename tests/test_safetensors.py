"""safetensors files: PyTorch state_dict names in, the torch.nn.utils.prune convention out, and a
header checked by sparsify before anything is allocated."""
import json
import os
import sys

import numpy as np
import pytest

import sparsify as sp

st = pytest.importorskip("safetensors.numpy")


def _net(dtype=np.float64):
    rng = np.random.default_rng(0)
    return sp.Network([
        sp.Dense(rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal(5).astype(dtype), "relu"),
        sp.Dense(rng.standard_normal((6, 5)).astype(dtype), None, "identity"),
        sp.Dense(rng.standard_normal((3, 6)).astype(dtype), rng.standard_normal(3).astype(dtype), "tanh"),
    ])


def _same(a, b):
    assert a.activations == b.activations and len(a) == len(b)
    for la, lb in zip(a.layers, b.layers):
        assert la.weight.dtype == lb.weight.dtype and la.weight.tobytes() == lb.weight.tobytes()
        assert (la.bias is None) == (lb.bias is None)
        assert la.bias is None or la.bias.tobytes() == lb.bias.tobytes()


def _error(path, **kw):
    with pytest.raises(ValueError) as info:
        sp.load(path, **kw)
    return str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pruned_network_is_saved_in_the_prune_convention_and_round_trips(tmp_path, dtype):
    dense = sp.random_mlp([6, 10, 8, 3], "relu", rng=1, dtype=dtype)
    X = np.random.default_rng(2).standard_normal((30, 6)).astype(dtype)
    net = sp.prune(dense, X, keep=0.3, method="rand", rng=0).network
    path = sp.save(net, tmp_path / "p.safetensors")
    assert os.listdir(tmp_path) == ["p.safetensors"]
    stored = st.load_file(str(path))
    # nn.Sequential(Linear, ReLU, Linear, ReLU, Linear) numbering
    assert sorted(stored) == sorted(f"{i}.{leaf}" for i in (0, 2, 4) for leaf in ("weight_orig", "weight_mask", "bias"))
    for i, layer, orig in zip((0, 2, 4), net.layers, dense.layers):
        mask = stored[f"{i}.weight_mask"]
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(mask, (layer.weight != 0).astype(np.uint8))
        # weight_orig holds the reweighted (sampled) values, not the dense weights
        assert stored[f"{i}.weight_orig"].tobytes() == layer.weight.tobytes()
        kept = mask.astype(bool)
        assert not np.array_equal(stored[f"{i}.weight_orig"][kept], orig.weight[kept])
        assert np.array_equal(stored[f"{i}.weight_orig"] * mask, layer.weight)
    _same(net, sp.load(path))


def test_plain_state_dict_with_sequential_indices(tmp_path):
    net = _net(np.float32)
    tensors = {"0.weight": net.layers[0].weight, "0.bias": net.layers[0].bias, "2.weight": net.layers[1].weight,
               "4.weight": net.layers[2].weight, "4.bias": net.layers[2].bias}
    st.save_file(tensors, str(tmp_path / "sd.safetensors"))
    _same(net, sp.load(tmp_path / "sd.safetensors", activations=net.activations))
    assert "activations" in _error(tmp_path / "sd.safetensors")
    assert "3 layers" in _error(tmp_path / "sd.safetensors", activations=["relu"])


def test_names_are_ordered_by_their_numbers_not_as_text(tmp_path):
    rng = np.random.default_rng(3)
    widths = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 2]
    layers = [sp.Dense(rng.standard_normal((b, a)), rng.standard_normal(b), "relu")
              for a, b in zip(widths[:-1], widths[1:])]
    net = sp.Network(layers)
    tensors = {}
    for k, layer in enumerate(layers, start=1):  # fc1 ... fc11: as text, fc10 < fc2
        tensors[f"model.fc{k}.weight"], tensors[f"model.fc{k}.bias"] = layer.weight, layer.bias
    st.save_file(tensors, str(tmp_path / "fc.safetensors"))
    _same(net, sp.load(tmp_path / "fc.safetensors", activations=net.activations))


def test_names_that_do_not_determine_the_order_are_refused(tmp_path):
    tensors = {"features.weight": np.ones((3, 2)), "classifier.weight": np.ones((1, 3))}
    st.save_file(tensors, str(tmp_path / "a.safetensors"))
    msg = _error(tmp_path / "a.safetensors", activations=["relu", "identity"])
    assert "do not determine the layer order" in msg and "order=" in msg
    from sparsify.io.safetensors import load

    net = load(tmp_path / "a.safetensors", activations=["relu", "identity"], order=["features", "classifier"])
    assert [layer.weight.shape for layer in net.layers] == [(3, 2), (1, 3)]


@pytest.mark.parametrize("tensors,needle", [
    ({"0.weight": np.ones((2, 2)), "0.running_mean": np.ones(2)}, "batch-norm"),
    ({"0.weight": np.ones((2, 2)), "0.scale": np.ones(2)}, "not a layer parameter"),
    ({"0.weight_orig": np.ones((2, 2))}, "no weight"),
    ({"0.weight_orig": np.ones((2, 2)), "0.weight_mask": np.full((2, 2), 2, np.uint8)}, "0/1"),
    ({"0.weight": np.ones((2, 2)), "0.weight_orig": np.ones((2, 2)), "0.weight_mask": np.ones((2, 2))}, "both"),
    ({"0.weight": np.ones((2, 3)), "1.weight": np.ones((2, 3))}, "inputs"),
    ({"0.weight": np.ones((2, 3, 1))}, "weight"),
])
def test_state_dicts_that_are_not_networks_are_refused(tmp_path, tensors, needle):
    st.save_file(tensors, str(tmp_path / "x.safetensors"))
    acts = ["relu"] * len({k.split(".")[0] for k in tensors})
    assert needle in _error(tmp_path / "x.safetensors", activations=acts)


@pytest.mark.skipif(hasattr(sp, "Conv2d"), reason="sparsify has Conv2d")
def test_conv_weights_are_refused_without_conv_layers(tmp_path):
    st.save_file({"0.weight": np.ones((2, 1, 3, 3))}, str(tmp_path / "c.safetensors"))
    assert "Conv2d" in _error(tmp_path / "c.safetensors", activations=["relu"])


@pytest.mark.skipif(not hasattr(sp, "Conv2d"), reason="sparsify has no Conv2d layer yet")
def test_conv_state_dict_needs_the_input_shape(tmp_path):
    from sparsify.io.safetensors import load

    rng = np.random.default_rng(4)
    net = sp.Network([sp.Conv2d(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), "relu"), sp.Flatten(),
                      sp.Dense(rng.standard_normal((4, 12)), None, "identity")], input_shape=(2, 4, 4))
    path = sp.save(net, tmp_path / "c.safetensors")
    assert sorted(st.load_file(str(path))) == ["0.bias", "0.weight_mask", "0.weight_orig", "3.weight_mask",
                                                 "3.weight_orig"]  # Conv, ReLU, Flatten, Linear
    assert "input_shape" in _error(path)
    again = load(path, input_shape=(2, 4, 4))
    X = rng.standard_normal((3, 2, 4, 4))
    assert again.forward(X).tobytes() == net.forward(X).tobytes()


# --- hostile headers ----------------------------------------------------------------------------------
def _raw(tmp_path, header, data=b"", name="h.safetensors", length=None):
    blob = json.dumps(header).encode()
    path = tmp_path / name
    path.write_bytes((len(blob) if length is None else length).to_bytes(8, "little") + blob + data)
    return path


def test_truncated_files_are_refused(tmp_path):
    sp.save(_net(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    for cut in (0, 5, 12, len(data) // 2, len(data) - 1):
        (tmp_path / "t.safetensors").write_bytes(data[:cut])
        assert "model:" in _error(tmp_path / "t.safetensors"), cut


@pytest.mark.parametrize("header,data,needle", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlapping"),
    ({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8, "declares shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2**62]}}, b"\0" * 8, "outside"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
    ({"a": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16, "cover"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "unused bytes"),
    ({"a": [1, 2]}, b"", "exactly"),
    ([1, 2], b"", "expected an object"),
])
def test_hostile_headers_are_refused_before_reading_data(tmp_path, header, data, needle):
    assert needle in _error(_raw(tmp_path, header, data), activations=["relu"])


def test_header_length_past_the_end_and_bad_json(tmp_path):
    assert "truncated" in _error(_raw(tmp_path, {}, length=2**63))
    path = tmp_path / "j.safetensors"
    path.write_bytes((5).to_bytes(8, "little") + b"{nope")
    assert "JSON" in _error(path)


def test_writing_refuses_and_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="directory"):
        sp.save(_net(), tmp_path / "missing" / "m.safetensors")
    with pytest.raises(TypeError, match="Network"):
        sp.save([np.ones((2, 2))], tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match=r"sparsify\[safetensors\]"):
        sp.save(_net(), tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == []


def test_max_bytes_refuses_larger_files(tmp_path):
    path = sp.save(_net(), tmp_path / "m.safetensors")
    size = path.stat().st_size
    with pytest.raises(ValueError, match="max_bytes"):
        sp.load(path, max_bytes=size - 1)
    _same(_net(), sp.load(path, max_bytes=size))


@pytest.mark.parametrize("suffix", [".safetensors", ".onnx"])
def test_paths_that_are_not_model_files_are_named(tmp_path, suffix):
    pytest.importorskip("onnx")
    (tmp_path / f"dir{suffix}").mkdir()
    assert "is a directory" in _error(tmp_path / f"dir{suffix}")
    os.symlink(tmp_path / f"b{suffix}", tmp_path / f"a{suffix}")
    os.symlink(tmp_path / f"a{suffix}", tmp_path / f"b{suffix}")
    assert "symbolic link loop" in _error(tmp_path / f"a{suffix}")
    os.mkfifo(tmp_path / f"pipe{suffix}")
    assert "not a regular file" in _error(tmp_path / f"pipe{suffix}")  # refused without blocking on open
    assert "does not exist" in _error(tmp_path / f"missing{suffix}")
