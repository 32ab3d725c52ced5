"""Convolutions, pools and flattening (docs/theory.md S15): the im2col forward pass against
naive loops and scipy.signal.correlate, pools against loops and hand-computed values,
and the sensitivity over patches (max and mean) against the readable twin."""
import numpy as np
import pytest
from scipy.signal import correlate

import sparsify as sp
from sparsify import _patches, reference
from sparsify._config import ATOL, RTOL

DTYPES = [np.float64, np.float32]
#: forward passes: a sum of c_in*kh*kw products in another order than the loops
FORWARD_TOL = {np.dtype(np.float64): (1e-12, 1e-12), np.dtype(np.float32): (1e-5, 1e-5)}
#: the "mean" reduction sums P terms per weight in the layer's dtype (the twin sums in float64)
MEAN_TOL = {np.dtype(np.float64): (1e-11, 1e-13), np.dtype(np.float32): (1e-4, 1e-6)}

# (c_in, c_out, kernel, stride, padding, dilation, image)
GEOMETRIES = [
    (1, 1, (1, 1), 1, 0, 1, (4, 4)),          # one channel, 1x1
    (1, 2, (3, 3), 1, 0, 1, (5, 5)),          # one input channel
    (2, 3, (3, 3), 1, 1, 1, (5, 5)),          # "same" padding
    (3, 2, (3, 2), 2, 0, 1, (7, 6)),          # stride, non-square kernel
    (2, 2, (2, 3), (2, 1), (1, 2), 1, (5, 4)),  # per-axis stride and padding
    (2, 3, (3, 3), 1, 2, 2, (6, 6)),          # dilation with padding
    (1, 2, (2, 2), 3, 1, (2, 1), (8, 7)),     # stride > kernel, per-axis dilation
    (3, 4, (3, 3), 1, 0, 1, (3, 3)),          # one patch per point
]


def _case(geometry, dtype, seed=0, signed=True):
    c_in, c_out, kernel, stride, padding, dilation, hw = geometry
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((c_out, c_in, *kernel)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    X = rng.standard_normal((3, c_in, *hw)).astype(dtype)
    if not signed:
        X = np.abs(X)
    return sp.Conv2d(W, b, "identity", stride, padding, dilation), X


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_forward_equals_the_naive_loops(geometry, dtype):
    conv, X = _case(geometry, dtype)
    out = conv.forward(X)
    expected = reference.conv2d(X, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
    assert out.dtype == np.dtype(dtype) and out.shape == expected.shape
    assert out.shape[1:] == conv.output_shape(X.shape[1:])
    rtol, atol = FORWARD_TOL[np.dtype(dtype)]
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_conv_forward_equals_scipy_correlate(padding):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((3, 2, 3, 2))
    X = rng.standard_normal((2, 2, 6, 5))
    out = sp.Conv2d(W, None, padding=padding).forward(X)
    Xp = np.pad(X, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    expected = np.stack([np.stack([sum(correlate(Xp[n, c], W[o, c], mode="valid") for c in range(2))
                                   for o in range(3)]) for n in range(2)])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_conv_forward_in_several_blocks_equals_one_block():
    conv, X = _case(GEOMETRIES[2], np.float64)
    X = np.concatenate([X] * 5)
    whole = _patches.conv2d(X, conv.weight_matrix, conv.bias, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, rows=10 ** 6)
    blocks = _patches.conv2d(X, conv.weight_matrix, conv.bias, conv.kernel_size, conv.stride, conv.padding,
                             conv.dilation, rows=30)  # one point (25 patches) per block
    np.testing.assert_array_equal(whole, blocks)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_patch_matrix_rows_are_the_patches_of_each_point(geometry):
    conv, X = _case(geometry, np.float64)
    M = conv.input_matrix(X)
    expected = np.concatenate([reference.conv_patches_of_point(x, conv) for x in X])
    np.testing.assert_array_equal(M, expected)
    # the weight-matrix view times the patch matrix is the convolution (S15)
    z = (M @ conv.weight_matrix.T).reshape(X.shape[0], -1, conv.n_out)
    np.testing.assert_allclose(z.transpose(0, 2, 1).reshape(conv.forward(X).shape[0], conv.n_out, -1),
                               (conv.forward(X) - conv.bias[:, None, None]).reshape(X.shape[0], conv.n_out, -1),
                               rtol=1e-12, atol=1e-12)


def test_weight_matrix_view_and_with_weight():
    conv, _ = _case(GEOMETRIES[3], np.float64)
    assert conv.weight_matrix.shape == (2, 3 * 3 * 2) and not conv.weight_matrix.flags.writeable
    np.testing.assert_array_equal(conv.weight_matrix[1], conv.weight[1].ravel())
    zero = conv.with_weight(np.zeros(conv.weight_matrix.shape))
    assert zero.weight.shape == conv.weight.shape and not zero.weight.any()
    assert (zero.stride, zero.padding, zero.dilation) == (conv.stride, conv.padding, conv.dilation)
    with pytest.raises(ValueError, match="weight"):
        conv.with_weight(np.zeros((3, 3)))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 1, 1), ((2, 3), (1, 2), (1, 1)), (3, 2, 0)])
def test_pools_equal_the_naive_loops(kind, kernel, stride, padding):
    X = np.random.default_rng(5).standard_normal((2, 3, 7, 6))
    layer = (sp.MaxPool2d if kind == "max" else sp.AvgPool2d)(kernel, stride, padding)
    fn = reference.max_pool2d if kind == "max" else reference.avg_pool2d
    out = layer.forward(X)
    np.testing.assert_allclose(out, fn(X, kernel, stride, padding), rtol=1e-14, atol=1e-15)
    assert out.shape[1:] == layer.output_shape(X.shape[1:])


def test_pools_at_hand_computed_values():
    X = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(sp.MaxPool2d(2).forward(X)[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(sp.AvgPool2d(2).forward(X)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    ones = np.ones((1, 1, 2, 2))
    # padded zeros count: each corner window holds one 1 and three padded zeros
    np.testing.assert_array_equal(sp.AvgPool2d(2, padding=1).forward(ones)[0, 0], [[0.25, 0.25], [0.25, 0.25]])
    # padding never wins a maximum, even over negative values
    np.testing.assert_array_equal(sp.MaxPool2d(2, padding=1).forward(-ones)[0, 0], [[-1, -1], [-1, -1]])


def test_flatten_is_c_order_and_feeds_a_dense_layer():
    X = np.random.default_rng(6).standard_normal((2, 3, 2, 2))
    np.testing.assert_array_equal(sp.Flatten().forward(X)[1], np.concatenate([X[1, c].ravel() for c in range(3)]))
    W = np.random.default_rng(7).standard_normal((4, 12))
    net = sp.Network([sp.Flatten(), sp.Dense(W, None, "relu")], input_shape=(3, 2, 2))
    np.testing.assert_allclose(net(X), np.maximum(X.reshape(2, 12) @ W.T, 0), rtol=1e-14)
    np.testing.assert_allclose(reference.forward(net, X), net(X), rtol=1e-14)


def test_conv_and_pool_arguments_are_checked():
    W = np.ones((2, 1, 3, 3))
    with pytest.raises(ValueError, match="groups"):
        sp.Conv2d(W, groups=2)
    with pytest.raises(ValueError, match="stride"):
        sp.Conv2d(W, stride=0)
    with pytest.raises(TypeError, match="padding"):
        sp.Conv2d(W, padding=1.5)
    with pytest.raises(ValueError, match="weight"):
        sp.Conv2d(np.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="bias"):
        sp.Conv2d(W, np.ones(3))
    with pytest.raises(ValueError, match="padding"):
        sp.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="input_shape"):
        sp.Network([sp.Conv2d(W)])
    with pytest.raises(ValueError, match="does not fit"):
        sp.Network([sp.Conv2d(W)], input_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="input channels"):
        sp.Network([sp.Conv2d(W)], input_shape=(2, 5, 5))
    with pytest.raises(ValueError, match="Flatten"):
        sp.Network([sp.Conv2d(W), sp.Dense(np.ones((2, 18)))], input_shape=(1, 5, 5))
    with pytest.raises(TypeError, match="dtype"):
        sp.Network([sp.Conv2d(W), sp.Flatten(), sp.Dense(np.ones((2, 18), np.float32))], input_shape=(1, 5, 5))
    net = sp.Network([sp.Conv2d(W)], input_shape=(1, 5, 5))
    with pytest.raises(ValueError, match=r"\(n_points, 1, 5, 5\)"):
        net(np.ones((2, 25)))


def _net(dtype, seed=0):
    rng = np.random.default_rng(seed)
    layers = [sp.Conv2d(rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), "relu", padding=1),
              sp.MaxPool2d(2),
              sp.Conv2d(rng.standard_normal((2, 3, 2, 2)), None, "relu", stride=1, dilation=1),
              sp.Flatten(), sp.Dense(rng.standard_normal((4, 2 * 2 * 2)), rng.standard_normal(4))]
    return sp.Network(layers, input_shape=(2, 6, 6)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_forward_trace_and_astype(dtype):
    net = _net(dtype)
    X = np.random.default_rng(1).standard_normal((5, 2, 6, 6)).astype(dtype)
    out = net(X)
    assert out.dtype == np.dtype(dtype) and out.shape == (5, 4) and net.output_shape == (4,)
    rtol, atol = FORWARD_TOL[np.dtype(dtype)]
    np.testing.assert_allclose(out, reference.forward(net, X), rtol=rtol, atol=atol)
    tr = net.trace(X)
    assert [a.shape for a in tr] == [(5, 2, 6, 6), (5, 3, 3, 3), (5, 8)]
    for a, b in zip(tr, reference.trace(net, X)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    assert net.prunable_input_shapes == [(2, 6, 6), (3, 3, 3), (8,)]
    assert net.n_weights == 3 * 2 * 9 + 2 * 3 * 4 + 4 * 8 and net.n_biases == 3 + 4
    assert [w.shape for w in net.weights] == [(3, 2, 3, 3), (2, 3, 2, 2), (4, 8)]
    zeroed = net.with_weights([np.zeros(layer.weight_matrix.shape) for layer in net.prunable_layers])
    np.testing.assert_array_equal(zeroed(X), np.broadcast_to(net.prunable_layers[-1].bias, (5, 4)))  # only the last bias is left


# --- sensitivity over patches (S15) ---------------------------------------------------
def _check_sensitivity(conv, X, reduction, chunk_size=512):
    net = sp.Network([conv], input_shape=X.shape[1:])
    (s,) = sp.sensitivity(net, X, patch_reduction=reduction, chunk_size=chunk_size)
    expected = reference.sensitivity_conv_layer(X, conv, reduction)
    dt = np.dtype(conv.dtype)
    assert s.shape == conv.weight.shape and s.dtype == dt
    rtol, atol = (RTOL[dt], ATOL[dt]) if reduction == "max" else MEAN_TOL[dt]
    np.testing.assert_allclose(s, expected, rtol=rtol, atol=atol)
    assert np.all((0 <= s) & (s <= 1))
    return s


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("reduction", ["max", "mean"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_conv_sensitivity_equals_the_reference(geometry, dtype, reduction, signed):
    conv, X = _case(geometry, dtype, seed=11, signed=signed)
    _check_sensitivity(conv, X, reduction)


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_dead_filters_and_zero_inputs_have_zero_sensitivity(reduction):
    conv, X = _case(GEOMETRIES[2], np.float64, seed=2, signed=False)
    W = conv.weight.copy()
    W[1] = 0                       # a dead filter
    W[2][W[2] < 0] = 0             # a filter without a negative side
    conv = conv.with_weight(W)
    s = _check_sensitivity(conv, X, reduction)
    assert not s[1].any() and not s[2][W[2] == 0].any()
    s0 = _check_sensitivity(conv, np.zeros_like(X), reduction)
    assert not s0.any()


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_conv_sensitivity_does_not_depend_on_the_blocks(reduction, monkeypatch):
    conv, X = _case(GEOMETRIES[5], np.float64, seed=4)
    X = np.concatenate([X] * 4)
    whole = _check_sensitivity(conv, X, reduction)
    import sparsify._sensitivity_conv as sc

    monkeypatch.setattr(sc, "points_per_block", lambda P, rows=1: 1)  # one point per patch block
    np.testing.assert_array_equal(_check_sensitivity(conv, X, reduction, chunk_size=3), whole)


def test_mean_is_at_most_max_and_max_reaches_one_on_a_single_term_side():
    conv, X = _case(GEOMETRIES[3], np.float64, seed=8, signed=False)
    s_max = _check_sensitivity(conv, X, "max")
    s_mean = _check_sensitivity(conv, X, "mean")
    assert np.all(s_mean <= s_max + 1e-15)
    # one positive weight per filter: each (x, p) with a nonzero input gives g = 1 on that side
    W = np.zeros_like(conv.weight)
    W[:, 0, 0, 0] = 1.0
    s1 = _check_sensitivity(conv.with_weight(W), X, "max")
    np.testing.assert_array_equal(s1[:, 0, 0, 0], 1.0)


def test_sensitivity_of_a_whole_cnn_equals_the_reference():
    for reduction in ("max", "mean"):
        net = _net(np.float64, seed=3)
        X = np.random.default_rng(2).standard_normal((6, 2, 6, 6))
        s = sp.sensitivity(net, X, patch_reduction=reduction, chunk_size=4)
        expected = reference.sensitivity(net, X, reduction)
        assert [a.shape for a in s] == [w.shape for w in net.weights]
        for a, b in zip(s, expected):
            np.testing.assert_allclose(a, b, **dict(zip(("rtol", "atol"), MEAN_TOL[np.dtype(np.float64)])))
    with pytest.raises(ValueError, match="patch_reduction"):
        sp.sensitivity(net, X, patch_reduction="sum")
    with pytest.raises(ValueError, match="NCHW"):
        sp.sensitivity(net, X[:, :1])
    # a list of NCHW batches is a stream of batches
    streamed = sp.sensitivity(net, [X[:2], X[2:]], patch_reduction="max", chunk_size=4)
    for a, b in zip(streamed, sp.sensitivity(net, X, chunk_size=4)):
        np.testing.assert_array_equal(a, b)


# --- bounds: (P, k) per prunable layer ------------------------------------------------
def test_patch_sizes_give_patches_and_kernel_elements_per_layer():
    from sparsify import bounds

    net = _net(np.float64)
    # conv 3x3 pad 1 on 6x6: 36 patches of 2*9; after the 2x2 pool, conv 2x2 on 3x3: 4 patches of 3*4
    assert bounds.patch_sizes(net) == [(36, 18), (4, 12), (1, 1)]
    assert bounds.network_eta(net) == (3 + 2 + 4, 4)
    assert bounds.alpha(3.0, 0.1, *bounds.patch_sizes(net)[0]) == pytest.approx(6.0 * np.log(8 * 37 * 18 / 0.1))


# --- save / load (format version 2) ---------------------------------------------------
def _cnn_with_everything(dtype=np.float64):
    rng = np.random.default_rng(9)
    block = sp.Residual([sp.Conv2d(rng.standard_normal((3, 3, 3, 3)), rng.standard_normal(3), "relu", padding=1),
                         sp.Conv2d(rng.standard_normal((4, 3, 3, 3)), None, "identity", stride=2, padding=1)],
                        "relu", sp.Conv2d(rng.standard_normal((4, 3, 1, 1)), None, stride=2))
    inner = sp.Residual([sp.Residual([sp.Conv2d(rng.standard_normal((4, 4, 1, 1)))], "tanh")], "identity")
    layers = [sp.Conv2d(rng.standard_normal((3, 2, 3, 2)), None, "leaky_relu", (1, 2), (1, 0), (2, 1)),
              block, inner, sp.MaxPool2d(2, 1, 1), sp.AvgPool2d((2, 1)), sp.Flatten(),
              sp.Dense(rng.standard_normal((2, 4 * 2 * 3)), rng.standard_normal(2), "sigmoid")]
    return sp.Network(layers, input_shape=(2, 7, 8)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cnn_round_trips_bit_identically(tmp_path, dtype):
    net = _cnn_with_everything(dtype)
    again = sp.load(sp.save(net, tmp_path / "cnn.npz"))
    assert again.input_shape == net.input_shape and [l.kind for l in again.layers] == [l.kind for l in net.layers]
    assert len(again.prunable_layers) == len(net.prunable_layers) == 6
    for a, b in zip(net.prunable_layers, again.prunable_layers):
        assert a.kind == b.kind and a.activation == b.activation and a.weight.tobytes() == b.weight.tobytes()
        assert a.weight.dtype == b.weight.dtype and a.weight.shape == b.weight.shape
        assert (a.bias is None) == (b.bias is None)
        if a.kind == "conv2d":
            assert (a.stride, a.padding, a.dilation) == (b.stride, b.padding, b.dilation)
    for a, b in zip(net.layers, again.layers):
        if a.kind in ("maxpool2d", "avgpool2d"):
            assert (a.kernel_size, a.stride, a.padding) == (b.kernel_size, b.stride, b.padding)
    X = np.random.default_rng(1).standard_normal((3, 2, 7, 8)).astype(dtype)
    assert net(X).tobytes() == again(X).tobytes()
    with np.load(tmp_path / "cnn.npz", allow_pickle=False) as data:
        assert int(data["format_version"]) == 2 and data["input_shape"].tolist() == [2, 7, 8]


def test_a_dense_network_keeps_the_version_1_arrays_and_version_1_files_load(tmp_path):
    from sparsify.io import network_to_arrays

    net = sp.random_mlp([3, 4, 2], rng=0)
    arrays = network_to_arrays(net)
    assert set(arrays) == {"format", "format_version", "activations", "kinds", "W0", "b0", "W1", "b1"}
    arrays["format_version"] = np.array(1)
    np.savez(tmp_path / "v1.npz", **arrays)
    again = sp.load(tmp_path / "v1.npz")
    assert again(np.ones((1, 3))).tobytes() == net(np.ones((1, 3))).tobytes()


def test_bad_cnn_files_are_refused_with_the_layer_named(tmp_path):
    from sparsify.io import network_to_arrays

    good = network_to_arrays(_cnn_with_everything())
    cases = {
        "version 1 with conv": dict(good, format_version=np.array(1)),
        "no input shape": {k: v for k, v in good.items() if k != "input_shape"},
        "bad geometry": dict(good, conv0=np.array([1.0, 2.0, 1.0, 0.0, 2.0, 1.0])),
        "missing inner weight": {k: v for k, v in good.items() if k != "W1.s"},
        "unknown kind": dict(good, kinds=np.array(["conv2d", "residual", "residual", "maxpool2d", "avgpool2d",
                                                  "flatten", "lstm"])),
        "zero stride": dict(good, conv0=np.array([0, 2, 1, 0, 2, 1])),
        "wrong input shape": dict(good, input_shape=np.array([3, 7, 8])),
    }
    for name, arrays in cases.items():
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match="model") as info:
            sp.load(tmp_path / "bad.npz")
        assert str(tmp_path / "bad.npz") in str(info.value), name


# --- Hypothesis: drawn CNNs -----------------------------------------------------------
from hypothesis import given, settings  # noqa: E402

from sparsify.testing import strategies as sst  # noqa: E402


@settings(max_examples=20)
@given(sst.conv_networks_with_inputs(dtypes=("float64", "float32")))
def test_relative_importance_sums_to_one_on_every_live_side_of_every_patch(net_and_X):
    """S4 per (x, p): on each side with Z != 0, sum_j g_ij(x, p) = 1 (the readable twin)."""
    net, X = net_and_X
    tol = 1e-12 if net.dtype == np.float64 else 1e-5
    for A, layer in zip(reference.trace(net, X), net.prunable_layers):
        W = layer.weight_matrix
        rows = (np.concatenate([reference.conv_patches_of_point(x, layer) for x in A]) if layer.kind == "conv2d"
                else A)
        for a in reference.split_inputs(rows):
            g = reference.relative_importance_point(a, W)
            for side in (W > 0, W < 0):
                Z = np.where(side, W, 0) @ a
                sums = np.where(side, g, 0).sum(axis=1, dtype=np.float64)
                live = Z != 0
                np.testing.assert_allclose(sums[live], 1.0, rtol=0, atol=tol)
                assert not sums[~live].any()


@settings(max_examples=20)
@given(sst.conv_networks_with_inputs(dtypes=("float64", "float32")))
def test_drawn_cnns_forward_and_sensitivity_equal_the_twins(net_and_X):
    net, X = net_and_X
    dt = np.dtype(net.dtype)
    rtol, atol = FORWARD_TOL[dt]
    scale = max(1.0, float(np.abs(reference.forward(net, X)).max()))
    np.testing.assert_allclose(net(X), reference.forward(net, X), rtol=rtol, atol=atol * scale * 10)
    for reduction in ("max", "mean"):
        s = sp.sensitivity(net, X, patch_reduction=reduction)
        expected = reference.sensitivity(net, X, reduction)
        rt, at = (RTOL[dt], ATOL[dt]) if reduction == "max" else MEAN_TOL[dt]
        for a, b, layer in zip(s, expected, net.prunable_layers):
            assert a.shape == layer.weight.shape and a.dtype == dt
            np.testing.assert_allclose(a, b, rtol=rt, atol=at)


def test_conv_strategy_arguments_are_checked():
    with pytest.raises(TypeError, match="residual"):
        sst.conv_networks(residual="yes")
    with pytest.raises(ValueError, match="channels"):
        sst.conv_networks(channels=(3, 1))
    with pytest.raises(TypeError, match="network"):
        sst.conv_inputs(np.ones(3))


# --- prune end to end on a small CNN --------------------------------------------------
@pytest.fixture(scope="module")
def cnn_and_S():
    return _cnn_with_everything(), np.random.default_rng(0).standard_normal((12, 2, 7, 8))


@pytest.mark.parametrize("allocation", ["global", "balanced"])
@pytest.mark.parametrize("method", ["det", "rand", "hybrid"])
def test_prune_runs_end_to_end_on_a_cnn(cnn_and_S, method, allocation):
    from sparsify import bounds

    net, X = cnn_and_S
    res = sp.prune(net, X, keep=0.3, method=method, allocation=allocation, rng=0)
    assert res.report.requested == round(0.3 * net.n_weights)
    if method == "det":
        assert res.report.achieved == res.report.requested
    assert [m.shape for m in res.masks] == [w.shape for w in net.weights]
    assert [s.shape for s in res.sensitivities] == [w.shape for w in net.weights]
    assert len(res.report.layers) == len(net.prunable_layers) == 6
    assert sum(int(m.sum()) for m in res.masks) == res.report.achieved
    for m, a, b in zip(res.masks, net.prunable_layers, res.network.prunable_layers):
        np.testing.assert_array_equal(b.weight != 0, m)
        if method == "det":
            np.testing.assert_array_equal(b.weight[m], a.weight[m])  # kept as they are (S6)
    assert res.network(X).shape == (12, 2)
    # the allocation bound of each side uses its layer's P and k (S8, S15)
    for tab, (P, k) in zip(res.sides, bounds.patch_sizes(net)):
        partial = ~tab.sampled & (tab.kept < tab.nnz) & (tab.kept > 0) & ~tab.dead
        np.testing.assert_allclose(tab.eps_rand[partial],
                                   bounds.eps_rand(tab.target[partial], tab.mass[partial], 3.0, 1e-16, P, k),
                                   rtol=1e-12)


def test_prune_chooses_the_patch_reduction_per_method(cnn_and_S):
    net, X = cnn_and_S
    for method, reduction in (("det", "mean"), ("rand", "max"), ("hybrid", "max")):
        res = sp.prune(net, X, keep=0.5, method=method, rng=0)
        for a, b in zip(res.sensitivities, sp.sensitivity(net, X, patch_reduction=reduction)):
            np.testing.assert_array_equal(a, b)
    res = sp.prune(net, X, keep=0.5, method="det", rng=0, patch_reduction="max")
    for a, b in zip(res.sensitivities, sp.sensitivity(net, X, patch_reduction="max")):
        np.testing.assert_array_equal(a, b)


def test_det_error_on_every_patch_is_at_most_the_pruned_mass_and_the_report_measures_it(cnn_and_S):
    """S6 per (x, p) with the max reduction: the measured relative error of a side over all
    patch rows of S is at most the pruned sensitivity mass (eps_det / C); the report's
    errors are those of the readable twin on the same rows."""
    net, X = cnn_and_S
    res = sp.prune(net, X, keep=0.3, method="det", rng=0, patch_reduction="max", C=1.0)
    for A, layer, new, tab, row in zip(net.trace(X), net.prunable_layers, res.network.prunable_layers,
                                       res.sides, res.report.layers):
        rows = layer.input_matrix(A) if layer.kind == "conv2d" else A
        err = reference.side_errors(rows, layer.weight_matrix, new.weight_matrix)
        ok = ~np.isnan(err)
        assert np.all(err[ok] <= tab.eps_det[ok] + 1e-12)
        live = (tab.nnz > 0) & ~tab.dead & ok
        if live.any():
            assert row["err_max"] == pytest.approx(float(err[live].max()), rel=1e-9, abs=1e-12)
