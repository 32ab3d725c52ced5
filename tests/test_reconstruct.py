"""Least-squares reconstruction (docs/theory.md S16): kernel vs reference, masks kept, error never up."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsify as sp
from sparsify import reconstruct as R
from sparsify import reference as ref
from sparsify.baselines import prune_baseline

#: the per-row Cholesky solve and the reference lstsq agree to this relative tolerance (float64,
#: well-conditioned systems: the ridge keeps them so)
SOLVE_RTOL = 1e-7
SOLVE_ATOL = 1e-9


@pytest.fixture(scope="module")
def setup():
    net = sp.random_mlp([12, 20, 9, 4], rng=0)
    X = np.random.default_rng(1).standard_normal((60, 12))
    res = sp.prune(net, X, keep=0.3, method="det")
    return net, X, res


def _products(A_hat, Z):
    P = np.zeros((A_hat.shape[1] + 1, A_hat.shape[1] + 1 + Z.shape[1]))
    zz = np.zeros(Z.shape[1])
    R._accumulate(P, zz, A_hat, Z)
    return P, zz


@pytest.mark.parametrize("fit_bias", [True, False])
def test_refit_layer_equals_the_reference_lstsq(fit_bias):
    rng = np.random.default_rng(3)
    A_hat = np.maximum(rng.standard_normal((40, 10)), 0)
    Z = rng.standard_normal((40, 6))
    mask = rng.random((6, 10)) < 0.4
    mask[0] = False                                   # an empty row (bias only, or nothing)
    mask[1] = True                                    # a full row
    layer = sp.Dense(np.where(mask, 1.0, 0.0), np.zeros(6) if fit_bias else None, "relu")
    P, zz = _products(A_hat, Z)
    W, b, lam_abs, before, after = R.refit_layer(P, zz, mask, layer, 1e-3)
    W_ref, b_ref = ref.reconstruct_layer(A_hat, Z, mask, lam_abs, fit_bias)
    np.testing.assert_allclose(W, W_ref, rtol=SOLVE_RTOL, atol=SOLVE_ATOL)
    assert np.all(W[~mask] == 0)
    if fit_bias:
        np.testing.assert_allclose(b, b_ref, rtol=SOLVE_RTOL, atol=SOLVE_ATOL)
        np.testing.assert_allclose(b[0], Z[:, 0].mean(), rtol=1e-12)   # no weights: the bias is the mean
    else:
        assert b is None and np.all(W[0] == 0)
    assert after <= before


def test_reconstruct_matches_the_reference_layer_by_layer(setup):
    net, X, res = setup
    out = R.reconstruct(net, res.network, res.masks, X, lam=1e-3)
    a, a_hat = X, X
    for layer, mask, new in zip(net.layers, res.masks, out.layers):
        Z = a @ layer.weight.T + layer.bias
        P, _ = _products(a_hat, Z)
        lam_abs = 1e-3 * np.mean(np.diag(P)[:-1])
        W_ref, b_ref = ref.reconstruct_layer(a_hat, Z, mask, lam_abs)
        np.testing.assert_allclose(new.weight, W_ref, rtol=SOLVE_RTOL, atol=SOLVE_ATOL)
        np.testing.assert_allclose(new.bias, b_ref, rtol=SOLVE_RTOL, atol=SOLVE_ATOL)
        a, a_hat = layer.forward(a), new.forward(a_hat)


def test_streamed_calibration_gives_the_same_bits(setup):
    """Batches are regrouped into fixed blocks of BLOCK_POINTS, so any split gives the same sums."""
    net, X, res = setup
    X = np.concatenate([X] * 20)                           # 1200 points: two blocks
    whole = R.reconstruct(net, res.network, res.masks, X)
    parts = R.reconstruct(net, res.network, res.masks, [X[:7], X[7:1100], X[1100:]])
    for a, b in zip(whole.layers, parts.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), keep=st.floats(0.05, 1.0), n_points=st.integers(1, 30),
       log_lam=st.floats(-12, 0))
def test_refit_never_increases_the_layer_error_and_keeps_masks(seed, keep, n_points, log_lam):
    """Ridge optimum: err(refit) + λ‖w*‖² <= err(w0) + λ‖w0‖², so err(refit) <= err(w0) + λ‖w0‖²."""
    rng = np.random.default_rng(seed)
    net = sp.random_mlp([6, 7, 3], rng=seed)
    X = rng.standard_normal((n_points, 6))
    res = prune_baseline(net, X, keep=keep, method="magnitude-global")
    lam = 10.0 ** log_lam
    refit, stats = R.reconstruct_with_stats(net, res.network, res.masks, [X], lam)
    a_hat = X                                              # layer 0: the refit and the un-refitted
    layer, old, new, mask = net.layers[0], res.network.layers[0], refit.layers[0], res.masks[0]
    Z = a_hat @ layer.weight.T + layer.bias
    err_old = np.sum((a_hat @ old.weight.T + old.bias - Z) ** 2)
    err_new = np.sum((a_hat @ new.weight.T + new.bias - Z) ** 2)
    lam_abs = stats[0]["lam"]
    assert err_new <= err_old + lam_abs * np.sum(old.weight ** 2) + 1e-9 * (1 + np.sum(Z ** 2))
    for m, w in zip(res.masks, refit.weights):            # masks preserved, pruned weights exactly 0
        assert np.all(w[~m] == 0)
    # the report's relative errors (from the Gram products) obey the same inequality
    norm = np.sum(Z ** 2)
    slack = (lam_abs * np.sum(old.weight ** 2) + 1e-9 * (1 + norm)) / norm
    assert stats[0]["err_after"] ** 2 <= stats[0]["err_before"] ** 2 + slack
    np.testing.assert_allclose(stats[0]["err_after"] ** 2 * norm, err_new, rtol=1e-6, atol=1e-8)


def test_float32_network_keeps_its_dtype(setup):
    net, X, res = setup
    net32 = net.astype(np.float32)
    out = R.reconstruct(net32, res.network.astype(np.float32), res.masks, X.astype(np.float32))
    assert all(w.dtype == np.float32 for w in out.weights)
    for m, w in zip(res.masks, out.weights):
        assert np.all(w[~m] == 0)


def test_prune_with_reconstruct_marks_the_report_and_beats_no_refit(setup):
    net, X, _ = setup
    plain = sp.prune(net, X, keep=0.3, method="det")
    refit = sp.prune(net, X, keep=0.3, method="det", reconstruct=True, lam=1e-6)
    for a, b in zip(plain.masks, refit.masks):
        np.testing.assert_array_equal(a, b)
    assert refit.report.refit and "no bound applies" in refit.report.format_table()
    assert all(row["refit"] and np.isnan(row["eps_max"]) for row in refit.report.layers)
    first = refit.report.layers[0]
    assert first["refit_err_after"] <= first["refit_err_before"]
    Y = net(X)
    assert np.sum((refit.network(X) - Y) ** 2) < np.sum((plain.network(X) - Y) ** 2)


def test_baseline_with_reconstruct_and_calibration(setup):
    net, X, _ = setup
    extra = np.random.default_rng(5).standard_normal((40, 12))
    res = prune_baseline(net, X, keep=0.2, method="wanda", reconstruct=True, calibration=extra)
    assert "100 calibration points" in res.report.refit
    assert all(np.all(w[~m] == 0) for m, w in zip(res.masks, res.network.weights))


@pytest.mark.parametrize("method", ["rand", "hybrid", "random", "magnitude-layer"])
def test_the_refit_keeps_the_selection_of_the_same_seed(setup, method):
    # the experiment's "+ls" methods rely on this: same seed, same mask, only the values refitted
    net, X, _ = setup
    extra = np.random.default_rng(7).standard_normal((30, 12))

    def run(**options):
        if method in ("rand", "hybrid"):
            return sp.prune(net, X, budget=70, method=method, rng=11, **options)
        return prune_baseline(net, X, budget=70, method=method, rng=11, **options)

    plain, refit = run(), run(reconstruct=True, calibration=extra)
    for a, b in zip(plain.masks, refit.masks):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(plain.network.weights, refit.network.weights))


def test_experiment_refit_method_is_the_library_refit(setup):
    from sparsify.experiment import prune_with

    net, X, _ = setup
    extra = np.random.default_rng(8).standard_normal((25, 12))
    got = prune_with("sipp-hybrid+ls", net, X, None, 0.4, 3, delta=sp.bounds.DEFAULT_DELTA, C=sp.bounds.DEFAULT_C,
                     calibration=extra, lam=1e-3)
    budget = int(round(0.4 * net.n_weights))
    want = sp.prune(net, X, budget=budget, method="hybrid", rng=3, reconstruct=True, calibration=extra, lam=1e-3)
    for a, b in zip(got.network.weights, want.network.weights):
        np.testing.assert_array_equal(a, b)
    assert "85 calibration points" in got.report.refit  # 60 of S + 25
    obs = prune_with("obs", net, X, None, 0.4, 3, delta=sp.bounds.DEFAULT_DELTA, C=sp.bounds.DEFAULT_C,
                     calibration=extra, lam=1e-3)
    from sparsify.obs import prune_obs

    direct = prune_obs(net, np.concatenate([X, extra]), budget=budget)  # its own damping; lam is the refit's
    for a, b in zip(obs.network.weights, direct.network.weights):
        np.testing.assert_array_equal(a, b)


def test_experiment_refit_of_undecayed_keeps_the_run_weight_decay(setup):
    from sparsify.experiment import prune_with

    net, X, _ = setup
    y = np.arange(len(X)) % 4
    common = dict(delta=sp.bounds.DEFAULT_DELTA, C=sp.bounds.DEFAULT_C, weight_decay=0.3)
    plain = prune_with("undecayed", net, X, y, 0.3, 0, **common)
    refit = prune_with("undecayed+ls", net, X, y, 0.3, 0, **common)
    other = prune_with("undecayed", net, X, y, 0.3, 0, **dict(common, weight_decay=1e-5))
    assert any(not np.array_equal(a, b) for a, b in zip(plain.masks, other.masks))  # the lambda matters here
    for a, b in zip(plain.masks, refit.masks):
        np.testing.assert_array_equal(a, b)
    assert refit.report.refit


# --- bad input ------------------------------------------------------------------------
def test_bad_calibration_is_refused(setup):
    net, X, _ = setup
    with pytest.raises(ValueError, match="calibration: has 5 features"):
        sp.prune(net, X, keep=0.3, reconstruct=True, calibration=np.zeros((4, 5)))
    bad = np.zeros((4, 12))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="calibration: contains 1 NaN"):
        sp.prune(net, X, keep=0.3, reconstruct=True, calibration=bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="calibration: contains 1 NaN or infinite"):
        prune_baseline(net, X, keep=0.3, reconstruct=True, calibration=bad)
    with pytest.raises(ValueError, match="X_S: has 3 features"):
        R.reconstruct(net, net, [w != 0 for w in net.weights], np.zeros((4, 3)))


@pytest.mark.parametrize("lam", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_lam_is_refused(setup, lam):
    net, X, res = setup
    with pytest.raises(ValueError, match="lam: must be"):
        sp.prune(net, X, keep=0.3, reconstruct=True, lam=lam)
    with pytest.raises(ValueError, match="lam: must be"):
        R.reconstruct(net, res.network, res.masks, X, lam=lam)
    with pytest.raises(TypeError, match="lam: expected a real number"):
        R.reconstruct(net, res.network, res.masks, X, lam="small")


def test_calibration_or_lam_without_reconstruct_is_refused(setup):
    net, X, _ = setup
    with pytest.raises(ValueError, match="only used with reconstruct=True"):
        sp.prune(net, X, keep=0.3, calibration=X)


def test_masks_of_the_wrong_shape_are_refused(setup):
    net, X, res = setup
    with pytest.raises(ValueError, match=r"masks\[1\]"):
        R.reconstruct(net, res.network, [res.masks[0], res.masks[0], res.masks[2]], X)


# --- command line ------------------------------------------------------------------------
def test_cli_reconstruct_and_pattern(tmp_path, capsys):
    from sparsify.cli import main

    net = sp.random_mlp([8, 12, 4], rng=0)
    X = np.random.default_rng(1).standard_normal((30, 8))
    sp.save(net, tmp_path / "m.npz")
    np.save(tmp_path / "S.npy", X)
    np.save(tmp_path / "C.npy", X[:10] + 1)
    np.save(tmp_path / "bad.npy", X[:10, :5])
    code = main(["prune", str(tmp_path / "m.npz"), "--data", str(tmp_path / "S.npy"), "--pattern", "2:4",
                 "--reconstruct", "--calibration", str(tmp_path / "C.npy"), "--lam", "1e-3",
                 "--out", str(tmp_path / "o.npz")])
    out = capsys.readouterr().out
    assert code == 0 and "no bound applies" in out and "40 calibration points" in out
    expected = sp.prune(net, X, method="det", pattern="2:4", reconstruct=True, calibration=X[:10] + 1, lam=1e-3)
    for a, b in zip(sp.load(tmp_path / "o.npz").layers, expected.network.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.bias, b.bias)
    code = main(["prune", str(tmp_path / "m.npz"), "--data", str(tmp_path / "S.npy"), "--reconstruct",
                 "--calibration", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o2.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "calibration" in err and "5 features" in err
    assert not (tmp_path / "o2.npz").exists()
