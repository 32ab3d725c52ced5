"""OBS with compensating updates (SparseGPT-style): the single-weight formula, blocks, errors."""
import numpy as np
import pytest

import sparsify as sp
from sparsify import obs as O
from sparsify.baselines import prune_baseline

#: the sweep and the closed-form OBS update agree to this (float64, condition number ~1e2)
OBS_RTOL = 1e-9
OBS_ATOL = 1e-12


def _hessian(seed, n_points=40, n_in=7):
    A = np.random.default_rng(seed).standard_normal((n_points, n_in))
    return O.damped_hessian(A.T @ A, 1e-3)


def test_upper_factor_gives_the_inverse_hessian_of_the_columns_not_yet_visited():
    H = _hessian(0)
    U = O.inverse_cholesky_upper(H)
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(H), rtol=1e-10, atol=1e-12)
    for j in range(H.shape[0]):
        F = slice(j, None)
        np.testing.assert_allclose(U[j, j] ** 2, np.linalg.inv(H[F, F])[0, 0], rtol=1e-10)


@pytest.mark.parametrize("q", [0, 3, 6])
@pytest.mark.parametrize("block", [1, 2, 128])
def test_one_removed_weight_gets_the_optimal_brain_surgeon_update(q, block):
    """Columns before q are frozen by the sweep, so the update is OBS on the columns F = {q, ...}:
    δ_F = −(w_q / [H_FF⁻¹]_qq) H_FF⁻¹ e_q; for q = 0 that is the classic
    δw = −(w_q/[H⁻¹]_qq) H⁻¹_{:,q}."""
    H = _hessian(1)
    W = np.random.default_rng(2).standard_normal((3, 7))
    drop = np.zeros(W.shape, dtype=bool)
    drop[1, q] = True
    W_new, kept = O.obs_sweep(W, O.inverse_cholesky_upper(H), block, drop=drop)
    Hinv_F = np.linalg.inv(H[q:, q:])
    expected = W.copy()
    expected[1, q:] -= W[1, q] / Hinv_F[0, 0] * Hinv_F[:, 0]
    if q == 0:
        Hinv = np.linalg.inv(H)
        np.testing.assert_allclose(expected[1], W[1] - W[1, 0] / Hinv[0, 0] * Hinv[:, 0], rtol=1e-10)
    np.testing.assert_allclose(W_new, expected, rtol=OBS_RTOL, atol=OBS_ATOL)
    assert W_new[1, q] == 0 and kept.sum() == W.size - 1
    # the brute force: no other single-row update with w_q = 0 (prefix frozen) has a smaller cost
    d = W_new[1] - W[1]
    cost = d @ H @ d
    rng = np.random.default_rng(3)
    for _ in range(20):
        e = np.zeros(7)
        e[q + 1:] = rng.standard_normal(6 - q) * 0.1
        assert cost <= (d + e) @ H @ (d + e) + 1e-12


def test_block_size_changes_nothing_but_rounding():
    H = _hessian(4, n_in=10)
    U = O.inverse_cholesky_upper(H)
    W = np.random.default_rng(5).standard_normal((4, 10))
    drop = np.random.default_rng(6).random(W.shape) < 0.5
    ref, _ = O.obs_sweep(W, U, 10, drop=drop)
    for block in (1, 3, 4):
        out, _ = O.obs_sweep(W, U, block, drop=drop)
        np.testing.assert_allclose(out, ref, rtol=OBS_RTOL, atol=OBS_ATOL)


@pytest.fixture(scope="module")
def net_X():
    net = sp.random_mlp([16, 24, 8], rng=7)
    return net, np.random.default_rng(8).standard_normal((80, 16))


def test_obs_layer_error_is_below_magnitude_pruning_at_the_same_count(net_X):
    net, X = net_X
    obs = O.prune_obs(net, X, keep=0.3, lam=1e-4)
    mag = prune_baseline(net, X, keep=0.3, method="magnitude-layer")
    for mo, mm in zip(obs.masks, mag.masks):
        assert mo.sum() == mm.sum()                       # the same kept count per layer
    W = net.weights[0]
    err_obs = np.sum((X @ (obs.network.weights[0] - W).T) ** 2)
    err_mag = np.sum((X @ (mag.network.weights[0] - W).T) ** 2)
    assert err_obs <= err_mag
    assert np.sum((obs.network(X) - net(X)) ** 2) <= np.sum((mag.network(X) - net(X)) ** 2)


def test_obs_counts_and_patterns(net_X):
    net, X = net_X
    res = prune_baseline(net, X, keep=0.25, method="obs")
    assert res.report.method == "obs" and res.report.achieved == round(0.25 * net.n_weights)
    for m, w in zip(res.masks, res.network.weights):
        assert np.all(w[~m] == 0)
    nm = O.prune_obs(net, X, pattern="2:4", block_size=6)   # rounded up to 8, a multiple of M
    for m in nm.masks:
        assert np.all(m.reshape(m.shape[0], -1, 4).sum(axis=2) == 2)
    assert nm.report.allocation == "pattern 2:4"


def test_obs_bad_input(net_X):
    net, X = net_X
    with pytest.raises(ValueError, match="lam: must be"):
        O.prune_obs(net, X, keep=0.3, lam=0.0)
    with pytest.raises(ValueError, match="layer 1"):
        O.prune_obs(net, X, pattern="2:16")
    with pytest.raises(ValueError, match="1 <= N < M"):
        O.prune_obs(net, X, pattern="8:8")
    with pytest.raises(ValueError, match="fixes the kept fraction"):
        O.prune_obs(net, X, keep=0.5, pattern="2:4")
    with pytest.raises(ValueError, match="X_S: has 3 features"):
        O.prune_obs(net, np.zeros((5, 3)), keep=0.5)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prune_baseline(net, bad, keep=0.5, method="obs")
