"""Residual blocks (docs/theory.md S15): ``phi(f(x) + shortcut(x))`` against hand-written
NumPy and the loop twin, the order of prunable layers, and sensitivities through a block."""
import numpy as np
import pytest

import sparsify as sp
from sparsify import reference


def _conv_block(rng, c, shortcut):
    inner = [sp.Conv2d(rng.standard_normal((c, c, 3, 3)), rng.standard_normal(c), "relu", padding=1),
             sp.Conv2d(rng.standard_normal((4, c, 3, 3)), None, "identity", padding=1, stride=2 if shortcut else 1)]
    sc = sp.Conv2d(rng.standard_normal((4, c, 1, 1)), rng.standard_normal(4), stride=2) if shortcut else None
    return sp.Residual(inner, "relu", sc)


def test_identity_residual_of_dense_layers_is_phi_of_the_sum():
    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.standard_normal((5, 4)), rng.standard_normal(5), rng.standard_normal((4, 5))
    net = sp.Network([sp.Residual([sp.Dense(W1, b1, "relu"), sp.Dense(W2)], "tanh"),
                      sp.Dense(rng.standard_normal((2, 4)))])
    X = rng.standard_normal((7, 4))
    h = np.tanh(np.maximum(X @ W1.T + b1, 0) @ W2.T + X)
    np.testing.assert_allclose(net(X), h @ net.layers[1].weight.T, rtol=1e-12, atol=1e-13)
    assert [layer.weight.shape for layer in net.prunable_layers] == [(5, 4), (4, 5), (2, 4)]
    tr = net.trace(X)
    np.testing.assert_array_equal(tr[0], X)
    np.testing.assert_allclose(tr[2], h, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shortcut", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv_residual_equals_the_loop_twin(shortcut, dtype):
    rng = np.random.default_rng(1)
    c = 4 if not shortcut else 3
    net = sp.Network([_conv_block(rng, c, shortcut), sp.AvgPool2d(2), sp.Flatten(),
                      sp.Dense(rng.standard_normal((3, 4 * (1 if shortcut else 2) ** 2)))],
                     input_shape=(c, 4, 4)).astype(dtype)
    X = rng.standard_normal((3, c, 4, 4)).astype(dtype)
    out = net(X)
    tol = 1e-11 if dtype == np.float64 else 1e-4
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, reference.forward(net, X), rtol=tol, atol=tol)
    # order: the branch's layers, then the shortcut, then what follows the block
    kinds = [(layer.kind, layer.kernel_size if layer.kind == "conv2d" else None) for layer in net.prunable_layers]
    assert kinds == [("conv2d", (3, 3)), ("conv2d", (3, 3))] + ([("conv2d", (1, 1))] if shortcut else []) + [("dense", None)]
    for a, b in zip(net.trace(X), reference.trace(net, X)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_shortcut_by_hand():
    rng = np.random.default_rng(2)
    block = _conv_block(rng, 3, True)
    X = rng.standard_normal((2, 3, 4, 4))
    branch = block.layers[1].forward(block.layers[0].forward(X))
    Ws, bs = block.shortcut.weight[:, :, 0, 0], block.shortcut.bias
    short = np.einsum("oc,nchw->nohw", Ws, X[:, :, ::2, ::2]) + bs[None, :, None, None]
    np.testing.assert_allclose(block.forward(X), np.maximum(branch + short, 0), rtol=1e-12, atol=1e-12)


def test_residual_arguments_are_checked():
    rng = np.random.default_rng(3)
    conv = sp.Conv2d(rng.standard_normal((2, 2, 3, 3)), padding=1)
    with pytest.raises(ValueError, match="layers"):
        sp.Residual([], "relu")
    with pytest.raises(TypeError, match="layers\\[0\\]"):
        sp.Residual([np.eye(2)], "relu")
    with pytest.raises(ValueError, match="1x1"):
        sp.Residual([conv], "relu", shortcut=conv)
    with pytest.raises(ValueError, match="activation"):
        sp.Residual([conv], "nope")
    wide = sp.Conv2d(rng.standard_normal((3, 2, 3, 3)), padding=1)
    with pytest.raises(ValueError, match="shortcut"):  # 3 channels out, identity gives 2
        sp.Network([sp.Residual([wide], "relu")], input_shape=(2, 4, 4))


def test_with_weights_rebuilds_blocks_and_sensitivity_goes_through_them():
    rng = np.random.default_rng(4)
    net = sp.Network([sp.Conv2d(rng.standard_normal((3, 1, 3, 3)), None, "relu", padding=1),
                      _conv_block(rng, 3, True), sp.Flatten(), sp.Dense(rng.standard_normal((2, 16)))],
                     input_shape=(1, 4, 4))
    X = rng.standard_normal((5, 1, 4, 4))
    for reduction in ("max", "mean"):
        s = sp.sensitivity(net, X, patch_reduction=reduction, chunk_size=2)
        expected = reference.sensitivity(net, X, reduction)
        assert len(s) == len(net.prunable_layers) == 5
        for a, b in zip(s, expected):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    masks = [si > np.median(si) for si in s]
    pruned = net.with_weights([np.where(m, layer.weight, 0) for m, layer in zip(masks, net.prunable_layers)])
    assert isinstance(pruned.layers[1], sp.Residual) and pruned.layers[1].shortcut is not None
    for m, layer in zip(masks, pruned.prunable_layers):
        np.testing.assert_array_equal(layer.weight != 0, m)
    np.testing.assert_allclose(pruned(X), reference.forward(pruned, X), rtol=1e-11, atol=1e-12)
