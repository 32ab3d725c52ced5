"""The network data model: forward pass per activation against hand-written
NumPy, the trace, dtype preservation and read-only layer arrays."""
import numpy as np
import pytest

import sparsify as sp

ACTS = ["relu", "identity", "linear", "leaky_relu", "tanh", "sigmoid"]


def _expected_activation(name, z):
    """The activations written out independently of sparsify.activations."""
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name in ("identity", "linear"):
        return z.copy()
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)          # PyTorch's default slope
    if name == "tanh":
        return 1.0 - 2.0 / (np.exp(2.0 * z) + 1.0)    # tanh z = (e^2z - 1)/(e^2z + 1)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    raise AssertionError(name)


def _layer_params(rng, n_in, n_out):
    return rng.standard_normal((n_out, n_in)), rng.standard_normal(n_out)


@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_hand_written_numpy(act):
    rng = np.random.default_rng(0)
    W0, b0 = _layer_params(rng, 5, 7)
    W1, b1 = _layer_params(rng, 7, 3)
    X = rng.standard_normal((11, 5)) * 2
    net = sp.Network([sp.Dense(W0, b0, act), sp.Dense(W1, b1, act)])
    h = _expected_activation(act, np.einsum("oi,pi->po", W0, X) + b0)
    expected = _expected_activation(act, np.einsum("oi,pi->po", W1, h) + b1)
    np.testing.assert_allclose(net.forward(X), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(net(X), net.forward(X))


def test_activation_values_at_known_points():
    z = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    d = sp.Dense(np.eye(5), None, "leaky_relu")
    np.testing.assert_allclose(d.forward(z[None])[0], [-0.02, -0.005, 0.0, 0.5, 2.0], rtol=1e-15, atol=0)
    d = sp.Dense(np.eye(5), None, "sigmoid")
    np.testing.assert_allclose(d.forward(z[None])[0][2], 0.5, rtol=0, atol=0)


def test_sigmoid_is_stable_for_large_inputs():
    z = np.array([[-1000.0, -50.0, 50.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        out = sp.Dense(np.eye(4), None, "sigmoid").forward(z)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], [0.0, np.exp(-50.0), 1.0, 1.0], rtol=1e-12, atol=0)


def test_mixed_activations_and_no_bias():
    rng = np.random.default_rng(1)
    W0 = rng.standard_normal((4, 3))
    W1, b1 = _layer_params(rng, 4, 2)
    X = rng.standard_normal((6, 3))
    net = sp.Network([sp.Dense(W0, None, "tanh"), sp.Dense(W1, b1, "sigmoid")])
    expected = _expected_activation("sigmoid", _expected_activation("tanh", X @ W0.T) @ W1.T + b1)
    np.testing.assert_allclose(net(X), expected, rtol=1e-12, atol=1e-15)


def test_trace_returns_each_layers_input():
    rng = np.random.default_rng(2)
    layers = [(rng.standard_normal((6, 4)), rng.standard_normal(6), "relu"),
              (rng.standard_normal((5, 6)), None, "tanh"),
              (rng.standard_normal((2, 5)), rng.standard_normal(2), "identity")]
    net = sp.Network([sp.Dense(*p) for p in layers])
    X = rng.standard_normal((9, 4))
    trace = net.trace(X)
    assert len(trace) == 3
    a = X
    for k, (W, b, act) in enumerate(layers):
        np.testing.assert_allclose(trace[k], a, rtol=1e-13, atol=1e-15)
        a = _expected_activation(act, a @ W.T + (0 if b is None else b))
    np.testing.assert_allclose(net(X), a, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(trace[0], X)


@pytest.mark.parametrize("act", ACTS)
def test_float32_stays_float32_through_forward_and_trace(act):
    net = sp.random_mlp([5, 6, 3], act, output_activation=act, rng=0, dtype=np.float32)
    assert net.dtype == np.float32
    X = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    assert net(X).dtype == np.float32
    assert all(a.dtype == np.float32 for a in net.trace(X))
    # float64 data is cast to the network's precision, with the same result as float32 data
    assert net(X.astype(np.float64)).dtype == np.float32
    np.testing.assert_array_equal(net(X.astype(np.float64)), net(X))
    # and the result is close to the same network computed in float64
    np.testing.assert_allclose(net(X), net.astype(np.float64)(X), rtol=1e-4, atol=1e-5)


def test_float32_stays_float32_through_sensitivity_and_prune():
    net = sp.random_mlp([5, 8, 3], rng=0, dtype=np.float32)
    X = np.random.default_rng(0).standard_normal((10, 5)).astype(np.float32)
    assert all(s.dtype == np.float32 for s in sp.sensitivity(net, X))
    for method in ("det", "rand", "hybrid"):
        res = sp.prune(net, X, keep=0.3, method=method, rng=0, delta=0.5, C=1.0)
        assert res.network.dtype == np.float32
        assert all(layer.weight.dtype == np.float32 for layer in res.network.layers)
        assert all(layer.bias.dtype == np.float32 for layer in res.network.layers)
        assert all(s.dtype == np.float32 for s in res.sensitivities)


def test_integer_weights_become_float64():
    d = sp.Dense(np.arange(6).reshape(2, 3), np.array([1, 2]), "relu")
    assert d.weight.dtype == np.float64 and d.bias.dtype == np.float64


def test_layer_arrays_are_read_only_copies():
    W = np.ones((2, 3))
    b = np.zeros(2)
    d = sp.Dense(W, b, "relu")
    W[0, 0] = 99.0
    b[1] = -5.0
    assert d.weight[0, 0] == 1.0 and d.bias[1] == 0.0
    assert not d.weight.flags.writeable and not d.bias.flags.writeable
    with pytest.raises(ValueError):
        d.weight[0, 0] = 3.0
    with pytest.raises(ValueError):
        d.bias[0] = 3.0
    # the layer is frozen: its attributes cannot be rebound either
    with pytest.raises(AttributeError):
        d.weight = np.zeros((2, 3))


def test_read_only_input_arrays_do_not_leak_into_the_layer():
    W = np.ones((2, 3))
    W.setflags(write=False)
    d = sp.Dense(W, None)
    assert d.weight is not W and not np.shares_memory(d.weight, W)


def test_network_facts():
    net = sp.Network([sp.Dense(np.ones((4, 3)), np.ones(4), "relu"), sp.Dense(np.ones((2, 4)), None, "identity")])
    assert (net.n_in, net.n_out, len(net)) == (3, 2, 2)
    assert net.n_weights == 12 + 8 and net.n_biases == 4
    assert net.activations == ["relu", "identity"]
    assert "3-4-2" in repr(net)


def test_with_weights_keeps_biases_and_activations_and_checks_shapes():
    net = sp.random_mlp([3, 4, 2], rng=0)
    new = [np.zeros_like(w) for w in net.weights]
    out = net.with_weights(new)
    for a, b in zip(net.layers, out.layers):
        np.testing.assert_array_equal(a.bias, b.bias)
        assert a.activation == b.activation
    with pytest.raises(ValueError, match="weight"):
        net.with_weights([np.zeros((4, 4)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match="weights"):
        net.with_weights(new[:1])


def test_from_arrays_and_its_errors():
    rng = np.random.default_rng(0)
    W0, b0, W1 = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((2, 4))
    net = sp.from_arrays([W0, b0, W1, None], ["relu", "identity"])
    assert net.layers[1].bias is None
    np.testing.assert_array_equal(net.layers[0].weight, W0)
    with pytest.raises(ValueError, match="arrays"):
        sp.from_arrays([W0, b0, W1], ["relu", "identity"])
    with pytest.raises(ValueError, match="activations"):
        sp.from_arrays([W0, b0, W1, None], ["relu"])


def test_random_mlp_is_seeded_and_checks_widths():
    a, b = sp.random_mlp([3, 5, 2], rng=4), sp.random_mlp([3, 5, 2], rng=4)
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.weight, lb.weight)
    assert a.activations == ["relu", "identity"]
    assert sp.random_mlp([3, 2], bias=False, rng=0).layers[0].bias is None
    with pytest.raises(ValueError, match="widths"):
        sp.random_mlp([3], rng=0)
    with pytest.raises(ValueError, match="widths"):
        sp.random_mlp([3, 0, 2], rng=0)
