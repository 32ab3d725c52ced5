"""Everything downstream of the sensitivities on convolutional and residual networks
(docs/theory.md S15, S16): verify and sweep, the baselines, the CLI with NCHW data,
reconstruction and N:M patterns on convolutions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import sparsify as sp
from sparsify import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Network, Residual
from sparsify import baselines, reference
from sparsify.cli import main
from sparsify.testing.strategies import conv_networks_with_inputs
from sparsify.verify import side_check
from sparsify.verify.check import CHECK_RTOL


def _cnn(seed=0, dtype=np.float64):
    g = np.random.default_rng(seed)
    return Network([
        Conv2d(g.standard_normal((4, 2, 3, 3)) * 0.4, g.standard_normal(4) * 0.1, "relu", padding=1),
        MaxPool2d(2),
        Conv2d(g.standard_normal((4, 4, 3, 3)) * 0.3, None, "relu", stride=(1, 2)),
        Flatten(),
        Dense(g.standard_normal((3, 4 * 2 * 1)) * 0.3, np.zeros(3), "identity"),
    ], input_shape=(2, 8, 8)).astype(dtype)


def _resnet(seed=1):
    g = np.random.default_rng(seed)
    return Network([
        Conv2d(g.standard_normal((4, 2, 3, 3)) * 0.4, g.standard_normal(4) * 0.1, "relu", padding=1),
        Residual([Conv2d(g.standard_normal((4, 4, 3, 3)) * 0.3, None, "relu", padding=1),
                  Conv2d(g.standard_normal((4, 4, 3, 3)) * 0.3, g.standard_normal(4) * 0.1, "identity", padding=1)],
                 "relu"),
        Residual([Conv2d(g.standard_normal((8, 4, 3, 3)) * 0.3, None, "relu", padding=1, stride=2)], "relu",
                 shortcut=Conv2d(g.standard_normal((8, 4, 1, 1)) * 0.3, None, "identity", stride=2)),
        AvgPool2d(2),
        Flatten(),
        Dense(g.standard_normal((3, 8 * 2 * 2)) * 0.3, None, "identity"),
    ], input_shape=(2, 8, 8))


@pytest.fixture(scope="module")
def data():
    g = np.random.default_rng(5)
    return g.standard_normal((12, 2, 8, 8)), g.standard_normal((6, 2, 8, 8))


def _patch_rows(network, X):
    """Each prunable layer's input matrix at X (all patches at once: small test batches)."""
    return [layer.input_matrix(a) for layer, a in zip(network.prunable_layers, network.trace(X))]


# --- verify and sweep ----------------------------------------------------------------
@pytest.mark.parametrize("make", [_cnn, _resnet])
def test_verify_det_in_sample_never_fails_with_max_reduction(make, data):
    net, (X, T) = make(), data
    res = sp.verify.verify(net, X, T, keep=0.3, method="det", seeds=2, patch_reduction="max")
    assert len(res["layers"]) == len(net.prunable_layers)
    rows = _patch_rows(net, X)
    for row, layer, (P, _), A in zip(res["layers"], net.prunable_layers, sp.bounds.patch_sizes(net), rows):
        assert row["failures"] == 0 and row["pair_failure_rate"] == 0.0
        assert row["shape"] == "x".join(map(str, layer.weight.shape)) and row["patches"] == P
        assert A.shape[0] == X.shape[0] * P  # a convolution's points are its (x, p) rows (sign-split below)
        assert row["points"] == reference.split_inputs(A).shape[0]
    assert res["holds"]
    net_part = res["network"]
    assert not net_part["product_applicable"] and not net_part["forward_applicable"]
    assert "dense layers only" in net_part["product_reason"]
    assert net_part["in_sample"]["points"] == 2 * X.shape[0]
    text = sp.verify.format_table(res)
    assert "4x2x3x3/P64" in text and "not applicable" in text


def test_verify_side_check_matches_patch_rows_of_the_pruned_network(data):
    """The per-side check the verifier runs equals a direct comparison on the patch rows."""
    net, (X, _) = _cnn(), data
    res = sp.prune(net, X, keep=0.3, method="det", patch_reduction="max")
    for A, layer, new, tab in zip(_patch_rows(net, X), net.prunable_layers, res.network.prunable_layers, res.sides):
        A_split = reference.split_inputs(A)
        fails, errors, _ = side_check(A_split, layer.weight_matrix, new.weight_matrix, tab.eps, CHECK_RTOL[net.dtype])
        assert not fails.any()
        # the largest measured side error, from the pruned network's own pre-activations
        Z = reference.side_preactivations(A_split, layer.weight_matrix, new.weight_matrix)
        for col, (z, zh) in enumerate(Z):
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(z > 0, np.abs(zh - z) / np.where(z > 0, z, 1), 0).max(axis=0)
            np.testing.assert_allclose(errors[:, col], rel, rtol=1e-12, atol=0)


def test_sweep_on_a_residual_network(data):
    net, (X, _) = _resnet(), data
    out = sp.verify.sweep(net, X, [0.2, 0.6], ["det"], patch_reduction="max")["det"]
    n = len(net.prunable_layers)
    assert out["kept"].shape == (2, n)
    assert np.all(out["kept"][0] <= out["kept"][1])
    done = ~np.isnan(out["measured"])
    assert done.any() and np.all(out["measured"][done] <= out["bound"][done] * (1 + 1e-9))


# --- baselines -----------------------------------------------------------------------
@pytest.mark.parametrize("make", [_cnn, _resnet])
@pytest.mark.parametrize("method", ["magnitude-global", "magnitude-layer", "random", "wanda"])
def test_baselines_on_cnns_keep_the_budget(make, method, data):
    net, (X, _) = make(), data
    res = baselines.prune_baseline(net, X, keep=0.4, method=method, rng=0)
    assert res.report.achieved == res.report.requested == round(0.4 * net.n_weights)
    for mk, layer, new in zip(res.masks, net.prunable_layers, res.network.prunable_layers):
        assert mk.shape == layer.weight.shape
        np.testing.assert_array_equal(new.weight, np.where(mk, layer.weight, 0))
    if method == "wanda":  # every output channel keeps the same fraction (within one weight)
        for mk in res.masks:
            per_row = mk.reshape(mk.shape[0], -1).sum(axis=1)
            assert per_row.max() - per_row.min() <= 1


def test_wanda_scores_use_the_norm_over_all_patch_rows(data, monkeypatch):
    from sparsify import _patches

    net, (X, _) = _cnn(), data
    expected = [np.abs(layer.weight_matrix) * np.linalg.norm(A, axis=0)[None, :]
                for layer, A in zip(net.prunable_layers, _patch_rows(net, X))]
    monkeypatch.setattr(_patches, "ROWS_PER_BLOCK", 7)  # many blocks of points
    got = baselines.wanda_scores(net, X)
    got_batches = baselines.wanda_scores(net, [X[:5], X[5:]])
    for e, g, gb, layer in zip(expected, got, got_batches, net.prunable_layers):
        assert g.shape == layer.weight.shape
        np.testing.assert_allclose(g.reshape(e.shape), e, rtol=1e-12)
        np.testing.assert_allclose(gb.reshape(e.shape), e, rtol=1e-12)


def test_column_square_sums_blocks_agree_with_the_whole_patch_matrix(data):
    from sparsify._patches import column_square_sums, extract_patches

    X = data[0]
    geometry = ((3, 2), (2, 1), (1, 0), (1, 2))
    A = extract_patches(X, *geometry)
    for rows in (1, 5, 10_000):
        np.testing.assert_allclose(column_square_sums(X, *geometry, rows=rows), (A ** 2).sum(axis=0), rtol=1e-12)


def test_snip_on_a_cnn_works_or_says_why(data):
    net, (X, _) = _cnn(), data
    y = np.arange(X.shape[0]) % 3
    try:
        res = baselines.prune_baseline(net, X, keep=0.4, method="snip", y_S=y)
    except ValueError as exc:
        assert "snip" in str(exc) and "backward" in str(exc)
    else:
        assert res.report.achieved == res.report.requested


def test_report_shows_conv_shapes_and_patches(data):
    net, (X, _) = _cnn(), data
    rep = baselines.prune_baseline(net, X, keep=0.5, method="magnitude-global").report
    rows = rep.to_dict()["layers"]
    assert [r["shape"] for r in rows] == ["4x2x3x3", "4x4x3x3", "3x8"]
    assert [r["patches"] for r in rows] == [64, 2, 1]
    table = rep.format_table()
    assert "4x2x3x3 P=64" in table and "4x4x3x3 P=2" in table and " 3x8 " in table


# --- CLI with NCHW data ----------------------------------------------------------------
@pytest.fixture()
def files(tmp_path, data):
    X, T = data
    np.save(tmp_path / "S.npy", X)
    np.save(tmp_path / "T.npy", T)
    np.save(tmp_path / "flat.npy", X.reshape(X.shape[0], -1))
    sp.save(_resnet(), tmp_path / "res.npz")
    return tmp_path


@pytest.mark.parametrize("suffix", [".npz", ".onnx"])
def test_cli_prune_cnn_with_nchw_data_writes_the_format_of_the_suffix(files, suffix, data, capsys):
    if suffix == ".onnx":
        pytest.importorskip("onnx")
    d = files
    model = d / "res.npz"
    if suffix == ".onnx":
        model = d / "res.onnx"
        sp.save(_resnet(), model)
    out = d / f"pruned{suffix}"
    code = main(["prune", str(model), "--data", str(d / "S.npy"), "--keep", "0.3", "--method", "det",
                 "--out", str(out), "--quiet"])
    assert code == 0
    got = sp.load(out)
    want = sp.prune(_resnet(), data[0], keep=0.3, method="det").network
    assert got.input_shape == want.input_shape
    for a, b in zip(got.prunable_layers, want.prunable_layers):
        np.testing.assert_allclose(a.weight, b.weight, rtol=1e-6, atol=0)
        assert (a.weight != 0).sum() == (b.weight != 0).sum()


def test_cli_prune_refuses_flat_data_and_unknown_suffix_and_writes_nothing(files, capsys):
    d = files
    assert main(["prune", str(d / "res.npz"), "--data", str(d / "flat.npy"), "--out", str(d / "p.npz")]) == 2
    err = capsys.readouterr().err
    assert "(2, 8, 8)" in err and "reshape" in err
    assert main(["prune", str(d / "res.npz"), "--data", str(d / "S.npy"), "--out", str(d / "p.txt")]) == 2
    assert "suffix" in capsys.readouterr().err
    assert not (d / "p.npz").exists() and not (d / "p.txt").exists()


def test_cli_verify_cnn_with_nchw_data(files, capsys):
    import json

    d = files
    code = main(["verify", str(d / "res.npz"), "--data", str(d / "S.npy"), "--test", str(d / "T.npy"),
                 "--seeds", "2", "--method", "det", "--patch-reduction", "max", "--keep", "0.3",
                 "--json", str(d / "v.json"), "--quiet"])
    assert code == 0
    res = json.loads((d / "v.json").read_text())
    assert res["patch_reduction"] == "max" and res["holds"]
    assert len(res["layers"]) == len(_resnet().prunable_layers)


# --- reconstruction and N:M on convolutions ------------------------------------------------
def test_reconstruct_conv_layer_agrees_with_the_twin(data, monkeypatch):
    from sparsify import _patches
    from sparsify.reconstruct import DEFAULT_LAM, reconstruct

    g = np.random.default_rng(3)
    conv = Conv2d(g.standard_normal((3, 2, 3, 2)), g.standard_normal(3), "relu", stride=(2, 1), padding=1)
    net = Network([conv], input_shape=(2, 8, 8))
    X = data[0]
    masks = [g.random(conv.weight.shape) < 0.5]
    pruned = net.with_weights([np.where(masks[0], conv.weight, 0)])
    monkeypatch.setattr(_patches, "ROWS_PER_BLOCK", 13)  # the Gram matrix over many blocks of points
    got = reconstruct(net, pruned, masks, X).prunable_layers[0]
    A = conv.input_matrix(X)
    Z = A @ conv.weight_matrix.T + conv.bias
    lam_abs = DEFAULT_LAM * np.mean((A ** 2).sum(axis=0))
    W, b = reference.reconstruct_layer(A, Z, masks[0].reshape(3, -1), lam_abs)
    np.testing.assert_allclose(got.weight_matrix, W, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.bias, b, rtol=1e-7, atol=1e-9)
    assert (got.stride, got.padding, got.activation) == (conv.stride, conv.padding, conv.activation)


@pytest.mark.parametrize("make", [_cnn, _resnet])
def test_prune_reconstruct_on_cnns_keeps_masks_and_lowers_the_error(make, data):
    net, (X, _) = make(), data
    plain = sp.prune(net, X, keep=0.4, method="det")
    res = sp.prune(net, X, keep=0.4, method="det", reconstruct=True)
    for mk, mk0, new in zip(res.masks, plain.masks, res.network.prunable_layers):
        np.testing.assert_array_equal(mk, mk0)
        assert not np.any(new.weight[~mk])
    assert [type(a) for a in res.network.layers] == [type(a) for a in net.layers]
    for row in res.report.layers:
        assert row["refit_err_after"] <= row["refit_err_before"] + 1e-12
    err = lambda n: np.linalg.norm(n(X) - net(X))  # noqa: E731
    assert err(res.network) <= err(plain.network)


def test_reconstruct_residual_targets_are_the_dense_preactivations(data):
    """With every weight kept and a tiny ridge the refit gives back the dense network."""
    from sparsify.reconstruct import reconstruct

    net = _resnet()
    g = np.random.default_rng(0)
    X = g.standard_normal((40, 2, 8, 8))
    masks = [np.ones(layer.weight.shape, bool) for layer in net.prunable_layers]
    back = reconstruct(net, net, masks, X, lam=1e-12)
    np.testing.assert_allclose(back(X), net(X), rtol=1e-6, atol=1e-6)


def test_nm_pattern_on_convolutions_runs_along_the_flattened_kernel(data):
    g = np.random.default_rng(2)
    net = Network([Conv2d(g.standard_normal((4, 4, 3, 3)), None, "relu", padding=1),
                   Residual([Conv2d(g.standard_normal((4, 4, 3, 3)), None, "identity", padding=1)], "relu",
                            shortcut=Conv2d(g.standard_normal((4, 4, 1, 1)), None, "identity")),
                   MaxPool2d(3), Flatten(), Dense(g.standard_normal((2, 4 * 2 * 2)), None, "identity")],
                  input_shape=(4, 6, 6))
    X = g.standard_normal((5, 4, 6, 6))
    res = sp.prune(net, X, method="det", pattern="2:4")
    for mk in res.masks:
        groups = mk.reshape(mk.shape[0], -1, 4)
        assert np.all(groups.sum(axis=2) == 2)
    with pytest.raises(ValueError, match="18"):
        sp.prune(_cnn(), data[0], method="det", pattern="2:4")  # layer 0 has rows of 2*3*3 = 18


# --- property: prune on drawn CNNs ------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(conv_networks_with_inputs())
def test_prune_det_on_drawn_cnns_keeps_budget_masks_and_in_sample_bound(pair):
    net, X = pair
    res = sp.prune(net, X, keep=0.5, method="det", allocation="global", patch_reduction="max")
    nonzero = sum(int(np.count_nonzero(w)) for w in net.weights)
    assert res.report.achieved == min(res.report.requested, nonzero)
    rtol = CHECK_RTOL[net.dtype]
    for A, layer, new, mk, tab in zip(_patch_rows(net, X), net.prunable_layers, res.network.prunable_layers,
                                      res.masks, res.sides):
        assert not np.any(mk & (layer.weight == 0))  # masks within the nonzeros
        np.testing.assert_array_equal(new.weight != 0, mk)
        fails, _, _ = side_check(reference.split_inputs(np.asarray(A, np.float64)), layer.weight_matrix,
                                 new.weight_matrix, tab.eps, rtol)  # S6 per (x, p) row
        assert not fails.any()


# --- OBS on convolutions ------------------------------------------------------------------
def test_obs_on_a_conv_layer_uses_the_hessian_of_all_patch_rows(data, monkeypatch):
    from sparsify import _patches
    from sparsify.obs import DEFAULT_BLOCK, DEFAULT_LAM, damped_hessian, inverse_cholesky_upper, obs_sweep, prune_obs

    g = np.random.default_rng(4)
    conv = Conv2d(g.standard_normal((4, 2, 3, 3)), g.standard_normal(4), "relu", padding=1, dilation=(1, 2))
    net = Network([conv], input_shape=(2, 8, 8))
    X = data[0]
    monkeypatch.setattr(_patches, "ROWS_PER_BLOCK", 11)
    res = prune_obs(net, X, keep=0.5)
    A = conv.input_matrix(X)
    U = inverse_cholesky_upper(damped_hessian(A.T @ A, DEFAULT_LAM))
    counts = np.array([int(round(0.5 * conv.weight.size))])
    W, mask = obs_sweep(conv.weight_matrix, U, DEFAULT_BLOCK, keep_counts=counts)
    np.testing.assert_array_equal(res.masks[0].reshape(mask.shape), mask)
    np.testing.assert_allclose(res.network.prunable_layers[0].weight_matrix, np.where(mask, W, 0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", [_cnn, _resnet])
def test_obs_on_cnns_keeps_the_budget_and_its_masks(make, data):
    net, (X, _) = make(), data
    res = baselines.prune_baseline(net, X, keep=0.4, method="obs")
    assert res.report.achieved == res.report.requested == round(0.4 * net.n_weights)
    for mk, layer, new in zip(res.masks, net.prunable_layers, res.network.prunable_layers):
        assert mk.shape == layer.weight.shape and not np.any(new.weight[~mk])
    assert [type(a) for a in res.network.layers] == [type(a) for a in net.layers]


def test_verify_on_a_network_ending_in_a_pool_measures_the_output(data):
    g = np.random.default_rng(6)
    net = Network([Conv2d(g.standard_normal((3, 2, 3, 3)), None, "relu"), AvgPool2d(2)], input_shape=(2, 8, 8))
    X, T = data
    res = sp.verify.verify(net, X, T, keep=0.5, method="det", seeds=1, patch_reduction="max")
    assert res["holds"] and res["layers"][0]["failures"] == 0
    assert res["network"]["in_sample"]["points"] == X.shape[0]
    assert res["network"]["in_sample"]["measured_max"] > 0


def test_cli_prune_format_csr(files, tmp_path, capsys):
    d = files
    mlp = sp.random_mlp([6, 10, 3], rng=0)
    X = np.random.default_rng(1).standard_normal((20, 6))
    sp.save(mlp, d / "mlp.npz")
    np.save(d / "flatS.npy", X)
    assert main(["prune", str(d / "mlp.npz"), "--data", str(d / "flatS.npy"), "--keep", "0.3", "--method", "det",
                 "--format", "csr", "--out", str(d / "p.npz"), "--quiet"]) == 0
    want = sp.prune(mlp, X, keep=0.3, method="det").network
    for a, b in zip(sp.load(d / "p.npz").weights, want.weights):
        np.testing.assert_array_equal(a, b)
    # a CNN cannot be written as CSR: refused before the work, nothing written
    assert main(["prune", str(d / "res.npz"), "--data", str(d / "S.npy"), "--format", "csr",
                 "--out", str(d / "q.npz")]) == 2
    assert "--format csr" in capsys.readouterr().err and not (d / "q.npz").exists()
