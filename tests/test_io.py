"""Model files: bit-identical round trips, plain exports, and every kind of bad
file refused with a ValueError that names ``model`` (or ``activations``) —
never by unpickling anything."""
import os
import pickle

import numpy as np
import pytest

import sparsify as sp
from sparsify.io import FORMAT_VERSION, network_to_arrays


def _mixed_net(dtype=np.float64):
    rng = np.random.default_rng(0)
    return sp.Network([
        sp.Dense(rng.standard_normal((5, 4)).astype(dtype), rng.standard_normal(5).astype(dtype), "relu"),
        sp.Dense(rng.standard_normal((6, 5)).astype(dtype), None, "leaky_relu"),
        sp.Dense(rng.standard_normal((3, 6)).astype(dtype), rng.standard_normal(3).astype(dtype), "sigmoid"),
    ])


def _assert_same_network(a, b):
    assert len(a) == len(b)
    assert a.activations == b.activations
    for la, lb in zip(a.layers, b.layers):
        assert la.weight.dtype == lb.weight.dtype
        assert la.weight.shape == lb.weight.shape
        assert la.weight.tobytes() == lb.weight.tobytes()
        assert (la.bias is None) == (lb.bias is None)
        if la.bias is not None:
            assert la.bias.dtype == lb.bias.dtype
            assert la.bias.tobytes() == lb.bias.tobytes()


def _model_error(path, **kw):
    with pytest.raises(ValueError) as info:
        sp.load(path, **kw)
    return str(info.value)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_save_load_round_trip_is_bit_identical(tmp_path, dtype):
    net = _mixed_net(dtype)
    path = sp.save(net, tmp_path / "model.npz")
    assert path == tmp_path / "model.npz"
    again = sp.load(path)
    _assert_same_network(net, again)
    assert again.dtype == dtype
    X = np.random.default_rng(1).standard_normal((3, 4)).astype(dtype)
    assert net(X).tobytes() == again(X).tobytes()


def test_round_trip_of_special_values(tmp_path):
    W = np.array([[0.0, -0.0, 5e-324, -1e308], [np.nextafter(1.0, 2.0), 1e-300, -2.5, 3.0]])
    net = sp.Network([sp.Dense(W, None, "identity")])
    _assert_same_network(net, sp.load(sp.save(net, tmp_path / "m.npz")))


def test_pruned_network_round_trips(tmp_path):
    net = _mixed_net()
    X = np.random.default_rng(2).standard_normal((8, 4))
    res = sp.prune(net, X, keep=0.3, method="rand", rng=0, delta=0.5, C=1.0)
    _assert_same_network(res.network, sp.load(sp.save(res.network, tmp_path / "p.npz")))


def test_saved_file_loads_without_pickle_and_is_self_describing(tmp_path):
    sp.save(_mixed_net(), tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        keys = set(data.files)
        assert str(data["format"]) == "sparsify-network"
        assert int(data["format_version"]) == FORMAT_VERSION
        assert data["activations"].tolist() == ["relu", "leaky_relu", "sigmoid"]
    assert keys == {"format", "format_version", "activations", "kinds", "W0", "b0", "W1", "W2", "b2"}


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    sp.save(_mixed_net(), tmp_path / "m.npz")
    sp.save(_mixed_net(np.float32), tmp_path / "m.npz")  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    assert sp.load(tmp_path / "m.npz").dtype == np.float32


def test_save_refuses_a_missing_directory_and_non_networks(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        sp.save(_mixed_net(), tmp_path / "nope" / "m.npz")
    with pytest.raises(TypeError, match="net"):
        sp.save([np.ones((2, 2))], tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# --- plain exports ----------------------------------------------------------------------
def test_plain_export_with_activations_loads(tmp_path):
    net = _mixed_net()
    arrays = {}
    for k, layer in enumerate(net.layers):
        arrays[f"W{k}"] = layer.weight
        if layer.bias is not None:
            arrays[f"b{k}"] = layer.bias
    np.savez(tmp_path / "plain.npz", **arrays)
    again = sp.load(tmp_path / "plain.npz", activations=net.activations)
    _assert_same_network(net, again)


def test_weight_underscore_spelling_loads(tmp_path):
    net = _mixed_net()
    np.savez(tmp_path / "plain.npz", weight_0=net.layers[0].weight, bias_0=net.layers[0].bias,
             weight_1=net.layers[1].weight, weight_2=net.layers[2].weight, bias_2=net.layers[2].bias)
    _assert_same_network(net, sp.load(tmp_path / "plain.npz", activations=net.activations))


def test_plain_export_with_more_than_ten_layers_keeps_numeric_order(tmp_path):
    widths = list(range(2, 15))
    net = sp.random_mlp(widths, rng=0)
    arrays = {}
    for k, layer in enumerate(net.layers):
        arrays[f"W{k}"], arrays[f"b{k}"] = layer.weight, layer.bias
    np.savez(tmp_path / "plain.npz", **arrays)
    _assert_same_network(net, sp.load(tmp_path / "plain.npz", activations=net.activations))


def test_plain_export_without_activations_is_refused(tmp_path):
    net = _mixed_net()
    np.savez(tmp_path / "plain.npz", W0=net.layers[0].weight, W1=net.layers[1].weight)
    msg = _model_error(tmp_path / "plain.npz")
    assert "activations" in msg and "2 layers" in msg


@pytest.mark.parametrize("acts", [["relu"], ["relu", "relu", "identity"], []])
def test_wrong_number_of_activations_is_refused(tmp_path, acts):
    net = _mixed_net()
    np.savez(tmp_path / "plain.npz", W0=net.layers[0].weight, W1=net.layers[1].weight)
    msg = _model_error(tmp_path / "plain.npz", activations=acts)
    assert "activations" in msg and "2 layers" in msg


def test_unknown_activation_in_a_plain_export_names_the_layer(tmp_path):
    np.savez(tmp_path / "plain.npz", W0=np.ones((2, 3)))
    msg = _model_error(tmp_path / "plain.npz", activations=["swish"])
    assert "layer 0" in msg and "swish" in msg


def test_activations_that_contradict_a_sparsify_file_are_refused(tmp_path):
    sp.save(_mixed_net(), tmp_path / "m.npz")
    msg = _model_error(tmp_path / "m.npz", activations=["relu", "relu", "relu"])
    assert "activations" in msg
    # the same names are accepted
    sp.load(tmp_path / "m.npz", activations=["relu", "leaky_relu", "sigmoid"])


def test_plain_export_with_a_gap_or_stray_bias_is_refused(tmp_path):
    np.savez(tmp_path / "gap.npz", W0=np.ones((2, 3)), W2=np.ones((1, 2)))
    assert "0..1" in _model_error(tmp_path / "gap.npz", activations=["relu", "identity"])
    np.savez(tmp_path / "stray.npz", W0=np.ones((2, 3)), b1=np.ones(2))
    assert "bias" in _model_error(tmp_path / "stray.npz", activations=["relu"])


def test_plain_export_with_mismatched_layers_is_refused(tmp_path):
    np.savez(tmp_path / "mis.npz", W0=np.ones((5, 4)), W1=np.ones((3, 4)))
    msg = _model_error(tmp_path / "mis.npz", activations=["relu", "identity"])
    assert "model" in msg and "layers[1]" in msg


@pytest.mark.parametrize("key", ["W0", "b0"])
def test_non_finite_values_in_a_file_are_refused(tmp_path, key):
    arrays = {"W0": np.ones((2, 3)), "b0": np.zeros(2)}
    arrays[key][0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    msg = _model_error(tmp_path / "nan.npz", activations=["relu"])
    assert "layer 0" in msg and ("weight" if key == "W0" else "bias") in msg


# --- bad files ------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    msg = _model_error(tmp_path / "absent.npz")
    assert "model" in msg and "does not exist" in msg


def test_directory_instead_of_file(tmp_path):
    assert "directory" in _model_error(tmp_path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", None])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(np.random.default_rng(0).bytes(512) if content is None else content)
    msg = _model_error(path)
    assert "model" in msg and "corrupt.npz" in msg


def test_npz_with_other_keys_is_not_a_model(tmp_path):
    np.savez(tmp_path / "other.npz", foo=np.ones(3), bar=np.zeros(2))
    msg = _model_error(tmp_path / "other.npz")
    assert "model" in msg and "W0" in msg and "foo" in msg


def test_future_format_version_is_refused(tmp_path):
    arrays = network_to_arrays(_mixed_net())
    arrays["format_version"] = np.array(FORMAT_VERSION + 1)
    np.savez(tmp_path / "future.npz", **arrays)
    msg = _model_error(tmp_path / "future.npz")
    assert "format_version" in msg and "Upgrade" in msg


def test_other_format_name_is_refused(tmp_path):
    arrays = network_to_arrays(_mixed_net())
    arrays["format"] = np.array("someone-else")
    np.savez(tmp_path / "fmt.npz", **arrays)
    assert "format" in _model_error(tmp_path / "fmt.npz")


class _Payload:
    """Unpickling this creates a file: proof that a loader unpickled user data."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_inside_an_npz_are_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    np.savez(tmp_path / "evil.npz", W0=np.array([_Payload(marker)], dtype=object))
    msg = _model_error(tmp_path / "evil.npz", activations=["relu"])
    assert "model" in msg and "pickled" in msg
    assert not marker.exists()


def test_a_pickle_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps({"W0": _Payload(marker)}))
    msg = _model_error(tmp_path / "evil.npz")
    assert "model" in msg
    assert not marker.exists()


def test_a_single_npy_array_is_not_a_model(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((3, 3)))
    msg = _model_error(tmp_path / "m.npy")
    assert "model" in msg
