"""Training convolutional and residual networks: gradients against finite differences,
col2im as the adjoint of patch extraction, masks during fine-tuning, SNIP and wanda on
convolutions, and the lenet/resnet experiment end to end."""
import io
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsify import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, Residual
from sparsify import _backward, _patches
from sparsify import baselines as B
from sparsify import experiment as E
from sparsify import train as T
from sparsify.experiment.models import as_images, init_model
from sparsify.layers import replace_weight_layers


def rand(gen, *shape, scale=0.5):
    return gen.standard_normal(shape) * scale


def conv(gen, c_out, c_in, k, act="relu", bias=True, **geometry):
    return Conv2d(rand(gen, c_out, c_in, k, k), rand(gen, c_out, scale=0.1) if bias else None, act, **geometry)


def dense(gen, n_out, n_in, act="identity", bias=True):
    return Dense(rand(gen, n_out, n_in), rand(gen, n_out, scale=0.1) if bias else None, act)


def numeric_gradients(net, X, y, eps=1e-6):
    """Central differences of the mean cross-entropy for every weight and bias entry."""
    layers = net.prunable_layers
    weights = [np.array(layer.weight) for layer in layers]
    biases = [None if layer.bias is None else np.array(layer.bias) for layer in layers]

    def loss():
        new = [replace(layer, weight=w, bias=b) for layer, w, b in zip(layers, weights, biases)]
        return T.cross_entropy(Network(replace_weight_layers(net.layers, new), net.input_shape), X, y)

    def central(arr):
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = loss()
            arr[idx] = old - eps
            down = loss()
            arr[idx] = old
            g[idx] = (up - down) / (2 * eps)
        return g

    return [central(w) for w in weights], [None if b is None else central(b) for b in biases]


def check_gradients(net, X, y):
    loss, gW, gb = T.loss_and_gradients(net, X, y)
    assert loss == pytest.approx(T.cross_entropy(net, X, y), rel=1e-12)
    nW, nb = numeric_gradients(net, X, y)
    for k, (a, n) in enumerate(zip(gW, nW)):
        assert a.shape == net.prunable_layers[k].weight.shape
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8, err_msg=f"weight of layer {k}")
    for k, (a, n) in enumerate(zip(gb, nb)):
        if n is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-8, err_msg=f"bias of layer {k}")


def images(n=4, c=2, h=6, w=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)), np.arange(n) % 3


def tiny_networks():
    """One tiny float64 network per layer kind (and geometry) the backward pass handles."""
    g = np.random.default_rng(7)
    nets = {
        # two convolutions so that the input gradient (col2im) of the second is checked through the first
        "conv-stride-pad-dilation": [conv(g, 3, 2, 3, "tanh", padding=1), conv(g, 2, 3, 2, "sigmoid", stride=2,
                                                                              padding=1, dilation=2),
                                     Flatten(), dense(g, 3, 2 * 3 * 3)],
        "conv-no-bias-leaky": [conv(g, 3, 2, 3, "leaky_relu", bias=False), conv(g, 2, 3, 1, "relu", stride=(1, 2)),
                               Flatten(), dense(g, 3, 2 * 4 * 2)],
        "maxpool": [conv(g, 3, 2, 3, "tanh", padding=1), MaxPool2d(3, stride=2, padding=1),
                    conv(g, 2, 3, 2, "tanh"), Flatten(), dense(g, 3, 2 * 2 * 2)],
        "avgpool": [conv(g, 3, 2, 3, "tanh", padding=1), AvgPool2d(3, stride=2, padding=1),
                    conv(g, 2, 3, 2, "tanh"), Flatten(), dense(g, 3, 2 * 2 * 2)],
        "residual-identity": [conv(g, 3, 2, 3, "relu", padding=1),
                              Residual([conv(g, 3, 3, 3, "tanh", padding=1), conv(g, 3, 3, 3, "identity", padding=1)],
                                       "tanh"), Flatten(), dense(g, 3, 3 * 6 * 6)],
        "residual-1x1-shortcut": [conv(g, 3, 2, 3, "tanh", padding=1),
                                  Residual([conv(g, 4, 3, 3, "tanh", stride=2, padding=1),
                                            conv(g, 4, 4, 3, "identity", padding=1)], "tanh",
                                           conv(g, 4, 3, 1, "identity", stride=2)),
                                  AvgPool2d(3), Flatten(), dense(g, 3, 4)],
        "fully-convolutional": [conv(g, 3, 2, 3, "tanh"), conv(g, 3, 3, 4, "identity"), Flatten()],
    }
    return {name: Network(layers, input_shape=(2, 6, 6)) for name, layers in nets.items()}


@pytest.mark.parametrize("name", sorted(tiny_networks()))
def test_gradients_match_central_differences(name):
    X, y = images()
    check_gradients(tiny_networks()[name], X, y)


def test_dense_residual_gradients_match_central_differences():
    g = np.random.default_rng(3)
    net = Network([dense(g, 5, 4, "tanh"),
                   Residual([dense(g, 6, 5, "tanh"), dense(g, 6, 6)], "sigmoid", dense(g, 6, 5)),
                   Residual([dense(g, 6, 6, "relu"), dense(g, 6, 6)], "tanh"), dense(g, 3, 6)])
    X = g.standard_normal((5, 4))
    check_gradients(net, X, np.arange(5) % 3)
    # a dense network that is not a plain stack goes through the general backward pass, which on a
    # plain stack agrees with the dense one
    stack = Network([dense(g, 5, 4, "tanh"), dense(g, 3, 5)])
    biases = [layer.bias for layer in stack.layers]
    a = T._backprop(stack.weights, biases, stack.activations, X, np.arange(5) % 3)
    b = _backward.backprop(stack.layers, stack.weights, biases, X, np.arange(5) % 3)
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    for u, v in zip(a[1] + a[2], b[1] + b[2]):
        np.testing.assert_allclose(u, v, rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(1, 2),
       st.integers(0, 2 ** 31 - 1))
def test_col2im_is_the_adjoint_of_patch_extraction(k, c, stride, padding, dilation, seed):
    # <patches(X), G> == <X, col2im(G)> for every X and G
    gen = np.random.default_rng(seed)
    X = gen.standard_normal((2, c, 7, 6))
    geometry = ((k, k), (stride, stride), (padding, padding), (dilation, dilation))
    P = _patches.extract_patches(X, *geometry)
    G = gen.standard_normal(P.shape)
    back = _backward.col2im(G, X.shape, *geometry)
    assert back.shape == X.shape
    assert np.vdot(P, G) == pytest.approx(np.vdot(X, back), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_masks_hold_while_fine_tuning_a_cnn(dtype):
    X, y = images(n=24, seed=1)
    net = tiny_networks()["maxpool"].astype(dtype)
    gen = np.random.default_rng(0)
    masks = [gen.random(w.shape) < 0.5 for w in net.weights]
    # a convolution's mask may also come as its matrix view (as pruning produces it)
    given_masks = [m.reshape(layer.weight_matrix.shape) for m, layer in zip(masks, net.prunable_layers)]
    trained = T.train(net, X, y, epochs=3, batch_size=8, lr=0.05, weight_decay=1e-3, masks=given_masks, rng=0)
    assert [layer.kind for layer in trained.layers] == [layer.kind for layer in net.layers]
    assert trained.dtype == np.dtype(dtype)
    assert trained.prunable_layers[0].padding == (1, 1)
    for m, w, w0 in zip(masks, trained.weights, net.weights):
        np.testing.assert_array_equal(w[~m], 0.0)
        assert np.all(w[m] != w0[m])
    assert T.cross_entropy(trained, X, y) < T.cross_entropy(net.with_weights(
        [np.where(m, w, 0) for m, w in zip(masks, net.weights)]), X, y)
    # same seed, same bits
    again = T.train(net, X, y, epochs=3, batch_size=8, lr=0.05, weight_decay=1e-3, masks=masks, rng=0)
    for a, b in zip(trained.weights, again.weights):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="masks\\[0\\]"):
        T.train(net, X, y, epochs=1, masks=[np.ones((2, 2), bool)] + masks[1:])


def test_snip_scores_of_a_cnn_use_the_true_gradient():
    X, y = images(n=5, seed=2)
    net = tiny_networks()["residual-1x1-shortcut"]
    nW, _ = numeric_gradients(net, X, y)
    for s, w, n in zip(B.snip_scores(net, X, y), net.weights, nW):
        np.testing.assert_allclose(s, np.abs(w * n), rtol=1e-5, atol=1e-9)


def test_wanda_scores_of_a_convolution_use_patch_norms():
    X, _ = images(n=3, seed=4)
    layer = conv(np.random.default_rng(0), 2, 2, 3, "relu", stride=2, padding=1)
    net = Network([layer, Flatten(), dense(np.random.default_rng(1), 3, 2 * 3 * 3)], input_shape=(2, 6, 6))
    Xp = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros(layer.weight.shape)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                # every input value kernel entry (c, i, j) meets, over all points and output positions
                seen = Xp[:, c, i:i + 2 * 3:2, j:j + 2 * 3:2]
                expected[:, c, i, j] = np.abs(layer.weight[:, c, i, j]) * np.sqrt(np.sum(seen ** 2))
    got = B.wanda_scores(net, X)
    np.testing.assert_allclose(got[0], expected, rtol=1e-12)
    batched = B.wanda_scores(net, [X[:2], X[2:]])
    np.testing.assert_allclose(batched[0], expected, rtol=1e-12)
    masks = B.baseline_masks(net, X, keep=0.5, method="wanda")
    assert masks[0].shape == layer.weight.shape
    # wanda keeps the same fraction in every row (output channel) of the matrix view
    per_row = masks[0].reshape(2, -1).sum(axis=1)
    assert per_row[0] == per_row[1] == 9


@pytest.mark.parametrize("model", ["lenet", "resnet"])
def test_models_are_seeded_and_he_initialised(model):
    a, b, c = (init_model(model, 64, 10, rng=r) for r in (0, 0, 1))
    assert a.input_shape == (1, 8, 8) and a.output_shape == (10,)
    for u, v in zip(a.weights, b.weights):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a.weights[0], c.weights[0])
    for layer in a.prunable_layers:
        bound = np.sqrt(6.0 / layer.weight_matrix.shape[1])
        assert np.abs(layer.weight).max() <= bound
        assert np.abs(layer.weight).max() > 0.8 * bound or layer.weight.size < 20
        np.testing.assert_array_equal(layer.bias, 0.0)
    with pytest.raises(ValueError, match="square"):
        init_model(model, 60, 10, rng=0)


def tiny_cnn_config(model, **overrides):
    values = dict(data="generated", model=model, epochs=1, retrain_epochs=1, milestones=[], retrain_milestones=[],
                  keeps=[0.3], seeds=[0], s_size=8, lottery=False, mode="oneshot")
    values.update(overrides)
    return E.ExperimentConfig.from_dict(values)


def test_lenet_experiment_runs_every_method_end_to_end(tmp_path):
    cfg = tiny_cnn_config("lenet", methods=list(E.METHODS))
    res = E.run_experiment(cfg, tmp_path / "lenet", log=io.StringIO(), plots=False)
    rows = [r for r in res.rows if r["method"] != "dense"]
    assert sorted(r["method"] for r in rows) == sorted(E.METHODS)
    for r in rows:
        assert r["total_weights"] == init_model("lenet", 64, 10, rng=0).n_weights
        target = round(0.3 * r["total_weights"])
        if r["method"] == "sipp-rand":  # sampling hits the budget in expectation (docs/theory.md S11)
            assert abs(r["kept_weights"] - target) <= 0.02 * target, r
        else:
            assert r["kept_weights"] == target, r
        assert len(r["kept_per_layer"]) == 4
        assert 0.0 <= r["test_accuracy"] <= 1.0
    # the cached reference network is reloaded on resume (nothing is redone)
    again = E.run_experiment(cfg, tmp_path / "lenet", log=io.StringIO(), plots=False)
    assert len(again.rows) == len(res.rows)
    res_prune, X_S = E.reprune(cfg, tmp_path / "lenet", "wanda", 0.3, 0)
    assert X_S.shape == (8, 1, 8, 8)
    wanda_row = next(r for r in rows if r["method"] == "wanda")
    assert sum(np.count_nonzero(w) for w in res_prune.network.weights) == wanda_row["kept_weights"]
    # a cached reference network of another model is refused as a stale file, before anything is written
    from sparsify.io import save

    save(init_model("resnet", 64, 10, rng=0), tmp_path / "lenet" / "networks" / "dense-seed0.npz")
    with pytest.raises(ValueError, match="stale"):
        E.run_experiment(cfg, tmp_path / "lenet", log=io.StringIO(), plots=False)


def test_resnet_experiment_retrains_iterates_and_runs_the_lottery_panel(tmp_path):
    cfg = tiny_cnn_config("resnet", methods=["sipp-hybrid", "wanda"], mode="iterative", keeps=[0.5, 0.2],
                          lottery=True, lottery_keeps=[0.2])
    res = E.run_experiment(cfg, tmp_path / "resnet", log=io.StringIO(), plots=False)
    modes = sorted({(r["mode"], r["method"]) for r in res.rows})
    assert ("iterative", "wanda") in modes and ("lottery", "random") in modes and ("lottery", "sipp-hybrid") in modes
    chain = sorted((r for r in res.rows if r["mode"] == "iterative" and r["method"] == "sipp-hybrid"),
                   key=lambda r: -r["keep"])
    assert [r["kept_weights"] for r in chain] == [round(k * chain[0]["total_weights"]) for k in (0.5, 0.2)]
    lottery = [r for r in res.rows if r["mode"] == "lottery"]
    assert lottery[0]["kept_per_layer"] == lottery[1]["kept_per_layer"]  # random mask: same counts per layer
    assert len(lottery[0]["kept_per_layer"]) == 7


def test_model_setting_is_checked_and_images_are_reshaped():
    with pytest.raises(ValueError, match="model"):
        E.ExperimentConfig.from_dict(dict(model="vgg"))
    from sparsify.data import make_generated

    ds = make_generated(60)
    img = as_images(ds)
    assert img.X_train.shape[1:] == (1, 8, 8) and img.n_features == ds.n_features == 64
    np.testing.assert_array_equal(img.X_test.reshape(len(img.X_test), -1), ds.X_test)


def test_cnn_training_refuses_outputs_that_are_not_logits():
    g = np.random.default_rng(0)
    X, y = images(n=3)
    relu_out = Network([conv(g, 3, 2, 3, "relu"), Flatten()], input_shape=(2, 6, 6))
    with pytest.raises(ValueError, match="identity"):
        T.train(relu_out, X, y, epochs=1)
    # a residual block's activation produces the output when it is the last layer with one
    block_out = Network([conv(g, 3, 2, 3, "identity", padding=1),
                         Residual([conv(g, 3, 3, 3, "identity", padding=1)], "tanh"), AvgPool2d(6), Flatten()],
                        input_shape=(2, 6, 6))
    with pytest.raises(ValueError, match="'tanh'"):
        T.loss_and_gradients(block_out, X, y)


def test_config_json_names_the_model_unless_it_is_the_mlp():
    # folders written before the model setting existed (an MLP) still match their configuration
    assert "model" not in E.ExperimentConfig.from_dict({}).to_dict()
    assert E.ExperimentConfig.from_dict({"model": "resnet"}).to_dict()["model"] == "resnet"
